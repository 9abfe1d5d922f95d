//! One handler per route: parse the request into domain values, call the service, shape the
//! response. No rule is decided here.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::dto::*;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiJson, ApiQuery, Auth, Client, IDEMPOTENT_REPLAYED, IdemKey, OptionalJson};
use crate::domain::{
    AccountId, Amount, Currency, Label, NewTransfer, PageKind, Role, TransferId, Username,
};
use crate::service::{
    MoneyAnswer, NewUserRequest, PageRequest, UpdateUserRequest, parse_account_status,
    parse_moment, parse_overdraft_limit, parse_reversal, parse_transfer_filter, parse_verification,
};

fn username_in_path(raw: &str) -> ApiResult<Username> {
    Ok(Username::parse(raw)?)
}

fn account_in_path(raw: &str) -> ApiResult<AccountId> {
    Ok(raw.parse::<AccountId>()?)
}

#[utoipa::path(
    post,
    path = "/v1/users",
    tag = "users",
    request_body = CreateUserBody,
    responses(
        (status = 201, description = "The new user", body = UserResponse),
        (status = 400, description = "Invalid input; `details` names each bad field", body = ErrorBody),
        (status = 409, description = "Username or email taken", body = ErrorBody),
        (status = 429, description = "rate_limited: past this client address's share of sign-ups (ANONYMOUS_REQUESTS_PER_SECOND); see Retry-After", body = ErrorBody),
    )
)]
pub async fn create_user(
    State(app): State<AppState>,
    Client(client): Client,
    ApiJson(body): ApiJson<CreateUserBody>,
) -> ApiResult<(StatusCode, Json<UserResponse>)> {
    let request = NewUserRequest::try_from(body)?;
    let user = app.service.create_user(request, &client).await?;
    Ok((
        StatusCode::CREATED,
        Json(UserResponse { user: user.into() }),
    ))
}

#[utoipa::path(
    post,
    path = "/v1/users/login",
    tag = "users",
    request_body = LoginBody,
    responses(
        (status = 200, description = "Tokens and the user", body = LoginResponse),
        (status = 400, description = "Invalid input; `details` names each bad field", body = ErrorBody),
        (status = 401, description = "Invalid username or password", body = ErrorBody),
    )
)]
pub async fn login_user(
    State(app): State<AppState>,
    Client(client): Client,
    ApiJson(body): ApiJson<LoginBody>,
) -> ApiResult<Json<LoginResponse>> {
    let (username, password) = <(Username, _)>::try_from(body)?;
    let login = app.service.login(username, password, client).await?;
    Ok(Json(login.into()))
}

#[utoipa::path(
    post,
    path = "/v1/tokens/renew_access",
    tag = "users",
    request_body = RefreshTokenBody,
    responses(
        (status = 200, description = "A new access token", body = RenewResponse),
        (status = 400, description = "Invalid input; `details` names each bad field", body = ErrorBody),
        (status = 401, description = "Refresh token invalid, expired or revoked", body = ErrorBody),
    )
)]
pub async fn renew_access_token(
    State(app): State<AppState>,
    ApiJson(body): ApiJson<RefreshTokenBody>,
) -> ApiResult<Json<RenewResponse>> {
    let token = app.service.renew_access_token(&body.refresh_token).await?;
    Ok(Json(token.into()))
}

#[utoipa::path(
    post,
    path = "/v1/users/logout",
    tag = "users",
    request_body = RefreshTokenBody,
    responses(
        (status = 204, description = "The session is revoked"),
        (status = 400, description = "Invalid input; `details` names each bad field", body = ErrorBody),
        (status = 401, description = "Refresh token invalid or expired", body = ErrorBody),
    )
)]
pub async fn logout_user(
    State(app): State<AppState>,
    ApiJson(body): ApiJson<RefreshTokenBody>,
) -> ApiResult<StatusCode> {
    app.service.logout(&body.refresh_token).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    get,
    path = "/v1/users/{username}",
    tag = "users",
    params(("username" = String, Path, description = "The username")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The user", body = UserResponse),
        (status = 400, description = "Invalid input; `details` names each bad field", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired access token", body = ErrorBody),
        (status = 403, description = "Not allowed for the caller", body = ErrorBody),
        (status = 404, description = "No such resource", body = ErrorBody),
    )
)]
pub async fn get_user(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(username): Path<String>,
) -> ApiResult<Json<UserResponse>> {
    let username = username_in_path(&username)?;
    let user = app.service.get_user(&caller, &username).await?;
    Ok(Json(UserResponse { user: user.into() }))
}

#[utoipa::path(
    patch,
    path = "/v1/users/{username}",
    tag = "users",
    params(("username" = String, Path, description = "The username")),
    request_body = UpdateUserBody,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The updated user", body = UserResponse),
        (status = 400, description = "Invalid input; `details` names each bad field", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired access token", body = ErrorBody),
        (status = 403, description = "Not allowed for the caller", body = ErrorBody),
        (status = 404, description = "No such resource", body = ErrorBody),
        (status = 409, description = "Email taken", body = ErrorBody),
    )
)]
pub async fn update_user(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(username): Path<String>,
    ApiJson(body): ApiJson<UpdateUserBody>,
) -> ApiResult<Json<UserResponse>> {
    let username = username_in_path(&username)?;
    let request = UpdateUserRequest::try_from(body)?;
    let user = app.service.update_user(&caller, &username, request).await?;
    Ok(Json(UserResponse { user: user.into() }))
}

/// The link of the verification email points here, so it is a GET anyone can follow.
#[utoipa::path(
    get,
    path = "/v1/verify_email",
    tag = "users",
    params(VerifyEmailQuery),
    responses(
        (status = 200, description = "The address is verified", body = VerifyEmailResult),
        (status = 400, description = "Malformed, wrong, used or expired code; `details` says which", body = ErrorBody),
        (status = 404, description = "No verification has this email_id", body = ErrorBody),
        (status = 429, description = "rate_limited: past this client address's share (ANONYMOUS_REQUESTS_PER_SECOND); see Retry-After", body = ErrorBody),
    )
)]
pub async fn verify_email(
    State(app): State<AppState>,
    Client(client): Client,
    ApiQuery(query): ApiQuery<VerifyEmailQuery>,
) -> ApiResult<Json<VerifyEmailResult>> {
    let (email_id, code) = parse_verification(query.email_id, &query.secret_code)?;
    app.service.verify_email(email_id, code, &client).await?;
    Ok(Json(VerifyEmailResult { is_verified: true }))
}

#[utoipa::path(
    put,
    path = "/v1/users/{username}/role",
    tag = "users",
    params(("username" = String, Path, description = "The username")),
    request_body = RoleBody,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The user with the new role", body = UserResponse),
        (status = 400, description = "Invalid input; `details` names each bad field", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired access token", body = ErrorBody),
        (status = 403, description = "Not allowed for the caller", body = ErrorBody),
        (status = 404, description = "No such resource", body = ErrorBody),
    )
)]
pub async fn set_user_role(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(username): Path<String>,
    ApiJson(body): ApiJson<RoleBody>,
) -> ApiResult<Json<UserResponse>> {
    let username = username_in_path(&username)?;
    let role: Role = body.role.parse()?;
    let user = app.service.set_user_role(&caller, &username, role).await?;
    Ok(Json(UserResponse { user: user.into() }))
}

#[utoipa::path(
    post,
    path = "/v1/accounts",
    tag = "accounts",
    request_body = CreateAccountBody,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The new account", body = AccountResponse),
        (status = 400, description = "Invalid input; `details` names each bad field", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired access token", body = ErrorBody),
        (status = 409, description = "The caller has an account in that currency", body = ErrorBody),
    )
)]
pub async fn create_account(
    State(app): State<AppState>,
    Auth(caller): Auth,
    ApiJson(body): ApiJson<CreateAccountBody>,
) -> ApiResult<(StatusCode, Json<AccountResponse>)> {
    let currency: Currency = body.currency.parse()?;
    let account = app.service.create_account(&caller, currency).await?;
    Ok((
        StatusCode::CREATED,
        Json(AccountResponse {
            account: account.into(),
        }),
    ))
}

#[utoipa::path(
    put,
    path = "/v1/accounts/{id}/status",
    tag = "accounts",
    params(("id" = i64, Path, description = "The account id"), IdempotencyKeyHeader),
    request_body = AccountStatusBody,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The account with its new status", body = AccountResponse,
            headers(("Idempotent-Replayed" = String, description = "`true` when this is the stored answer to an earlier request with the same Idempotency-Key"))),
        (status = 409, description = "A request with the same Idempotency-Key is still in progress", body = ErrorBody),
        (status = 400, description = "Invalid input (an unknown status, a settlement account); `details` names each bad field", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired access token", body = ErrorBody),
        (status = 403, description = "Bankers only", body = ErrorBody),
        (status = 404, description = "No such resource", body = ErrorBody),
        (status = 422, description = "failed_precondition (closing an account that holds money or has a pending hold; `details` names `status`); account_closed: closing is final; idempotency_mismatch", body = ErrorBody),
    )
)]
pub async fn set_account_status(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    IdemKey(key): IdemKey,
    ApiJson(body): ApiJson<AccountStatusBody>,
) -> ApiResult<Response> {
    let id = account_in_path(&id)?;
    let (status, reason) = parse_account_status(&body.status, body.reason.as_deref())?;
    let answer = app
        .service
        .set_account_status(&caller, id, status, reason, key)
        .await;
    Ok(money_response(answer, StatusCode::OK, |account| {
        AccountResponse {
            account: account.into(),
        }
    }))
}

#[utoipa::path(
    put,
    path = "/v1/accounts/{id}/overdraft_limit",
    tag = "accounts",
    params(("id" = i64, Path, description = "The account id"), IdempotencyKeyHeader),
    request_body = OverdraftLimitBody,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The account with its new limit", body = AccountResponse,
            headers(("Idempotent-Replayed" = String, description = "`true` when this is the stored answer to an earlier request with the same Idempotency-Key"))),
        (status = 409, description = "A request with the same Idempotency-Key is still in progress", body = ErrorBody),
        (status = 400, description = "Invalid input (a negative limit, a settlement account); `details` names each bad field", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired access token", body = ErrorBody),
        (status = 403, description = "Bankers only", body = ErrorBody),
        (status = 404, description = "No such resource", body = ErrorBody),
        (status = 422, description = "failed_precondition (a limit below what the account owes and has on hold; `details` names `limit`); account_closed", body = ErrorBody),
    )
)]
pub async fn set_overdraft_limit(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    IdemKey(key): IdemKey,
    ApiJson(body): ApiJson<OverdraftLimitBody>,
) -> ApiResult<Response> {
    let id = account_in_path(&id)?;
    let limit = parse_overdraft_limit(body.limit)?;
    let answer = app
        .service
        .set_overdraft_limit(&caller, id, limit, key)
        .await;
    Ok(money_response(answer, StatusCode::OK, |account| {
        AccountResponse {
            account: account.into(),
        }
    }))
}

#[utoipa::path(
    get,
    path = "/v1/accounts/{id}",
    tag = "accounts",
    params(("id" = i64, Path, description = "The account id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The account", body = AccountResponse),
        (status = 400, description = "Invalid input; `details` names each bad field", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired access token", body = ErrorBody),
        (status = 403, description = "Not allowed for the caller", body = ErrorBody),
        (status = 404, description = "No such resource", body = ErrorBody),
    )
)]
pub async fn get_account(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<AccountResponse>> {
    let id = account_in_path(&id)?;
    let account = app.service.get_account(&caller, id).await?;
    Ok(Json(AccountResponse {
        account: account.into(),
    }))
}

#[utoipa::path(
    get,
    path = "/v1/accounts",
    tag = "accounts",
    params(AccountsQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "One page of accounts", body = AccountList),
        (status = 400, description = "Invalid input; `details` names each bad field", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired access token", body = ErrorBody),
        (status = 403, description = "Not allowed for the caller", body = ErrorBody),
    )
)]
pub async fn list_accounts(
    State(app): State<AppState>,
    Auth(caller): Auth,
    ApiQuery(query): ApiQuery<AccountsQuery>,
) -> ApiResult<Json<AccountList>> {
    let owner = query
        .owner
        .as_deref()
        .map(|raw| Username::parse(raw).map_err(|e| e.for_field("owner")))
        .transpose()?;
    let page = PageQuery {
        page_size: query.page_size,
        page_token: query.page_token,
    }
    .parse(PageKind::Accounts)?;
    let found = app.service.list_accounts(&caller, owner, page).await?;
    Ok(Json(AccountList {
        accounts: found.items.into_iter().map(Into::into).collect(),
        next_page_token: found.next_page_token,
    }))
}

#[utoipa::path(
    get,
    path = "/v1/accounts/{id}/entries",
    tag = "accounts",
    params(("id" = i64, Path, description = "The account id"), EntriesQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "With `Accept: application/json` (the default), one page of the statement, newest first. With `Accept: text/csv`, every entry from `since` to `until`, oldest first, streamed as CSV with a header row: entry_id, created_at, transfer_id, amount, amount_decimal, balance_after, balance_after_decimal, currency, reference (decimals in the currency's minor unit)",
            content((EntryList = "application/json"), (String = "text/csv"))),
        (status = 400, description = "Invalid input; `details` names each bad field", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired access token", body = ErrorBody),
        (status = 403, description = "Not allowed for the caller", body = ErrorBody),
        (status = 404, description = "No such resource", body = ErrorBody),
        (status = 503, description = "Too many CSV exports at once; retry", body = ErrorBody),
    )
)]
pub async fn list_entries(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
    ApiQuery(query): ApiQuery<EntriesQuery>,
) -> ApiResult<Response> {
    let id = account_in_path(&id)?;
    let wants_csv = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/csv"));
    if wants_csv {
        let since = parse_moment(query.since.as_deref(), "since")?;
        let until = parse_moment(query.until.as_deref(), "until")?;
        let statement = app.service.statement_csv(&caller, id, since, until).await?;
        return Ok(csv_response(statement));
    }
    if query.since.is_some() || query.until.is_some() {
        return Err(crate::service::ServiceError::invalid(
            "since",
            "since and until need Accept: text/csv; JSON pages use page_token",
        )
        .into());
    }
    let page = PageRequest::parse(
        query.page_size,
        query.page_token.as_deref(),
        PageKind::Entries,
    )?;
    let found = app.service.list_entries(&caller, id, page).await?;
    Ok(Json(EntryList {
        entries: found.items.into_iter().map(Into::into).collect(),
        next_page_token: found.next_page_token,
    })
    .into_response())
}

/// A CSV statement as a streamed body. A database error mid-way ends the body with an error,
/// which the client sees as a broken transfer rather than a short file that looks complete.
fn csv_response(statement: crate::service::Statement) -> Response {
    let stream = tokio_stream::StreamExt::map(statement.into_stream(), |chunk| {
        chunk
            .map(axum::body::Bytes::from)
            .map_err(std::io::Error::other)
    });
    (
        [
            (axum::http::header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                axum::http::header::CONTENT_DISPOSITION,
                "attachment; filename=\"statement.csv\"",
            ),
        ],
        axum::body::Body::from_stream(stream),
    )
        .into_response()
}

#[utoipa::path(
    get,
    path = "/v1/accounts/{id}/transfers",
    tag = "accounts",
    params(("id" = i64, Path, description = "The account id"), TransfersQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "One page of the account's transfers, newest first", body = TransferList),
        (status = 400, description = "Invalid input; `details` names each bad field", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired access token", body = ErrorBody),
        (status = 403, description = "Not allowed for the caller", body = ErrorBody),
        (status = 404, description = "No such resource", body = ErrorBody),
    )
)]
pub async fn list_transfers(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<TransfersQuery>,
) -> ApiResult<Json<TransferList>> {
    let id = account_in_path(&id)?;
    let filter = parse_transfer_filter(
        query.direction.as_deref(),
        query.since.as_deref(),
        query.until.as_deref(),
        query.reference.as_deref(),
    );
    let page = PageRequest::parse(
        query.page_size,
        query.page_token.as_deref(),
        PageKind::Transfers,
    );
    let (filter, page) = crate::domain::both(filter, page)?;
    let found = app
        .service
        .list_transfers(&caller, id, filter, page)
        .await?;
    Ok(Json(TransferList {
        transfers: found.items.into_iter().map(Into::into).collect(),
        next_page_token: found.next_page_token,
    }))
}

#[utoipa::path(
    get,
    path = "/v1/accounts/{id}/balance",
    tag = "accounts",
    params(("id" = i64, Path, description = "The account id"), BalanceQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The balance at that moment", body = BalanceResponse),
        (status = 400, description = "Invalid input (a time that is not RFC 3339, or in the future); `details` names each bad field", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired access token", body = ErrorBody),
        (status = 403, description = "Not allowed for the caller", body = ErrorBody),
        (status = 404, description = "No such resource", body = ErrorBody),
    )
)]
pub async fn get_balance(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<BalanceQuery>,
) -> ApiResult<Json<BalanceResponse>> {
    let id = account_in_path(&id)?;
    let at = parse_moment(query.at.as_deref(), "at")?;
    let balance = app.service.balance_at(&caller, id, at).await?;
    Ok(Json(balance.into()))
}

#[utoipa::path(
    post,
    path = "/v1/transfers",
    tag = "transfers",
    params(IdempotencyKeyHeader),
    request_body = TransferBody,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The transfer, the caller's account after it and both entries", body = TransferResult,
            headers(("Idempotent-Replayed" = String, description = "`true` when this is the stored answer to an earlier request with the same Idempotency-Key"))),
        (status = 409, description = "A request with the same Idempotency-Key is still in progress", body = ErrorBody),
        (status = 400, description = "Invalid input; `details` names each bad field", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired access token", body = ErrorBody),
        (status = 403, description = "Not allowed for the caller", body = ErrorBody),
        (status = 404, description = "No such resource", body = ErrorBody),
        (status = 422, description = "Insufficient funds, currency mismatch, or an Idempotency-Key already used for a different request", body = ErrorBody),
    )
)]
pub async fn create_transfer(
    State(app): State<AppState>,
    Auth(caller): Auth,
    IdemKey(key): IdemKey,
    ApiJson(body): ApiJson<TransferBody>,
) -> ApiResult<Response> {
    let transfer = NewTransfer::try_from(body)?;
    let answer = app.service.create_transfer(&caller, transfer, key).await;
    Ok(money_response(answer, StatusCode::CREATED, |receipt| {
        TransferResult {
            transfer: receipt.transfer.into(),
            from_account: receipt.from_account.into(),
            from_entry: receipt.from_entry.into(),
            to_entry: receipt.to_entry.into(),
        }
    }))
}

#[utoipa::path(
    post,
    path = "/v1/transfers/{id}/reversal",
    tag = "transfers",
    params(("id" = i64, Path, description = "The transfer to reverse"), IdempotencyKeyHeader),
    request_body(content = ReversalBody, description = "Optional: without a body, all of the transfer goes back"),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The reversal: a new transfer back, naming the original, and both its entries", body = ReversalResult,
            headers(("Idempotent-Replayed" = String, description = "`true` when this is the stored answer to an earlier request with the same Idempotency-Key"))),
        (status = 400, description = "Invalid input (more than the original moved); `details` names each bad field", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired access token", body = ErrorBody),
        (status = 403, description = "Bankers only", body = ErrorBody),
        (status = 404, description = "No such resource", body = ErrorBody),
        (status = 409, description = "A request with the same Idempotency-Key is still in progress", body = ErrorBody),
        (status = 422, description = "already_reversed, insufficient_funds (of the recipient's available balance), account_closed, idempotency_mismatch", body = ErrorBody),
    )
)]
pub async fn reverse_transfer(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    IdemKey(key): IdemKey,
    OptionalJson(body): OptionalJson<ReversalBody>,
) -> ApiResult<Response> {
    let of = id.parse::<TransferId>()?;
    let reversal = parse_reversal(of, body.amount, body.reference.as_deref(), body.metadata)?;
    let answer = app.service.reverse_transfer(&caller, reversal, key).await;
    Ok(money_response(
        answer,
        StatusCode::CREATED,
        ReversalResult::from,
    ))
}

/// `success` with the rendered receipt, or the error in the table's shape; marked
/// `Idempotent-Replayed: true` when it is an earlier request's answer under the same key.
/// (The native routes answer 201; the simple_bank compatibility route 200.)
pub(super) fn money_response<R, T: serde::Serialize>(
    answer: MoneyAnswer<R>,
    success: StatusCode,
    render: impl FnOnce(R) -> T,
) -> Response {
    let mut response = match answer.outcome {
        Ok(receipt) => (success, Json(render(receipt))).into_response(),
        Err(error) => ApiError::from(error).into_response(),
    };
    if answer.replayed {
        response
            .headers_mut()
            .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    response
}

#[utoipa::path(
    get,
    path = "/v1/transfers/{id}",
    tag = "transfers",
    params(("id" = i64, Path, description = "The transfer id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The transfer", body = TransferResponse),
        (status = 400, description = "Invalid input; `details` names each bad field", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired access token", body = ErrorBody),
        (status = 403, description = "Not allowed for the caller", body = ErrorBody),
        (status = 404, description = "No such resource", body = ErrorBody),
    )
)]
pub async fn get_transfer(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<TransferResponse>> {
    let id: TransferId = id.parse()?;
    let transfer = app.service.get_transfer(&caller, id).await?;
    Ok(Json(TransferResponse {
        transfer: transfer.into(),
    }))
}

#[utoipa::path(
    post,
    path = "/v1/accounts/{id}/deposits",
    tag = "transfers",
    params(("id" = i64, Path, description = "The account id"), IdempotencyKeyHeader),
    request_body = MoneyBody,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The deposit and the account after it", body = MoneyResult,
            headers(("Idempotent-Replayed" = String, description = "`true` when this is the stored answer to an earlier request with the same Idempotency-Key"))),
        (status = 409, description = "A request with the same Idempotency-Key is still in progress", body = ErrorBody),
        (status = 400, description = "Invalid input; `details` names each bad field", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired access token", body = ErrorBody),
        (status = 403, description = "Not allowed for the caller", body = ErrorBody),
        (status = 404, description = "No such resource", body = ErrorBody),
        (status = 422, description = "Insufficient funds, currency mismatch, or an Idempotency-Key already used for a different request", body = ErrorBody),
    )
)]
pub async fn deposit(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    IdemKey(key): IdemKey,
    ApiJson(body): ApiJson<MoneyBody>,
) -> ApiResult<Response> {
    let id = account_in_path(&id)?;
    let (amount, currency, label) = <(Amount, Currency, Label)>::try_from(body)?;
    let answer = app
        .service
        .deposit(&caller, id, amount, currency, label, key)
        .await;
    Ok(money_response(
        answer,
        StatusCode::CREATED,
        MoneyResult::of_deposit,
    ))
}

#[utoipa::path(
    post,
    path = "/v1/accounts/{id}/withdrawals",
    tag = "transfers",
    params(("id" = i64, Path, description = "The account id"), IdempotencyKeyHeader),
    request_body = MoneyBody,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The withdrawal and the account after it", body = MoneyResult,
            headers(("Idempotent-Replayed" = String, description = "`true` when this is the stored answer to an earlier request with the same Idempotency-Key"))),
        (status = 409, description = "A request with the same Idempotency-Key is still in progress", body = ErrorBody),
        (status = 400, description = "Invalid input; `details` names each bad field", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired access token", body = ErrorBody),
        (status = 403, description = "Not allowed for the caller", body = ErrorBody),
        (status = 404, description = "No such resource", body = ErrorBody),
        (status = 422, description = "Insufficient funds, currency mismatch, or an Idempotency-Key already used for a different request", body = ErrorBody),
    )
)]
pub async fn withdraw(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    IdemKey(key): IdemKey,
    ApiJson(body): ApiJson<MoneyBody>,
) -> ApiResult<Response> {
    let id = account_in_path(&id)?;
    let (amount, currency, label) = <(Amount, Currency, Label)>::try_from(body)?;
    let answer = app
        .service
        .withdraw(&caller, id, amount, currency, label, key)
        .await;
    Ok(money_response(
        answer,
        StatusCode::CREATED,
        MoneyResult::of_withdrawal,
    ))
}

/// The process is up.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "health",
    responses(
        (status = 200, description = "The process is up", body = HealthStatus),
    )
)]
pub async fn healthz() -> Json<HealthStatus> {
    Json(HealthStatus { status: "ok" })
}

/// The database answers and takes writes; 503 `unavailable` when it does not, while the last
/// health check found it so (requests are refused then, so the replica is not ready), and from
/// the moment the server is told to stop (it drains; balancers should send it nothing new).
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    responses(
        (status = 200, description = "The database answers and takes writes", body = HealthStatus),
        (status = 503, description = "The database does not answer or cannot take writes, or the server is shutting down", body = ErrorBody),
    )
)]
pub async fn readyz(State(app): State<AppState>) -> ApiResult<Json<HealthStatus>> {
    app.service.admission().check_ready()?;
    app.store
        .ping()
        .await
        .map_err(crate::service::ServiceError::from)?;
    Ok(Json(HealthStatus { status: "ready" }))
}

/// Prometheus metrics in the text exposition format (see `crate::metrics`).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "health",
    responses(
        (status = 200, description = "Prometheus text exposition format", body = String, content_type = "text/plain"),
    )
)]
pub async fn metrics(State(app): State<AppState>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        app.metrics.render(app.store.pool()),
    )
}

/// What `/healthz` and `/readyz` answer when all is well.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct HealthStatus {
    #[schema(example = "ok")]
    pub status: &'static str,
}
