//! simple_bank's own routes and JSON shapes, for clients written against it
//! (`SIMPLE_BANK_COMPAT=true`; off by default). Every handler parses with the same parsers and
//! calls the same `BankService` methods as the native routes: only paths and shapes differ.
//! `doc/simple_bank-compat.md` lists where our answers differ from simple_bank's, and why.
//!
//! Two families, as simple_bank has them:
//! - its gin server: `/users`, `/users/login`, `/tokens/renew_access`, `/accounts`,
//!   `/accounts/{id}`, `/transfers` — bare objects, status 200;
//! - its grpc-gateway: `/v1/create_user`, `/v1/login_user`, `/v1/update_user` (and
//!   `/v1/verify_email`, which is the native route already) — `{"user": ...}` wrappers.
//!
//! Unknown fields are ignored here, as simple_bank's binders ignore them (the native routes
//! refuse them).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;
use super::dto::RenewResponse;
use super::error::{ApiResult, ErrorBody};
use super::extract::{ApiJson, ApiQuery, Auth, Client, IdemKey};
use super::handlers::money_response;
use crate::domain::{
    Account, AccountId, Currency, Entry, NewTransfer, PageKind, Transfer, User, Username,
};
use crate::service::{
    NewUserRequest, OffsetPage, PageRequest, UpdateUserRequest, parse_credentials, parse_transfer,
};

/// The tag the compatibility routes carry in the OpenAPI document.
pub const TAG: &str = "simple_bank compatibility";

/// The compatibility routes, documented under `TAG`.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_user))
        .routes(routes!(login_user))
        .routes(routes!(renew_access_token))
        .routes(routes!(create_account, list_accounts))
        .routes(routes!(get_account))
        .routes(routes!(create_transfer))
        .routes(routes!(gateway_create_user))
        .routes(routes!(gateway_login_user))
        .routes(routes!(gateway_update_user))
}

// ---- shapes -----------------------------------------------------------------------------------

/// simple_bank's user: no role, no verification flag.
#[derive(Debug, Serialize, ToSchema)]
pub struct SbUser {
    pub username: String,
    pub full_name: String,
    pub email: String,
    pub password_changed_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

impl From<User> for SbUser {
    fn from(user: User) -> Self {
        SbUser {
            username: user.username.as_str().to_owned(),
            full_name: user.full_name.as_str().to_owned(),
            email: user.email.as_str().to_owned(),
            password_changed_at: user.password_changed_at,
            created_at: user.created_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SbAccount {
    pub id: i64,
    pub owner: String,
    pub balance: i64,
    pub currency: String,
    pub created_at: DateTime<Utc>,
}

impl From<Account> for SbAccount {
    fn from(account: Account) -> Self {
        SbAccount {
            id: account.id.get(),
            owner: account.owner.as_str().to_owned(),
            balance: account.balance,
            currency: account.currency.code().to_owned(),
            created_at: account.created_at,
        }
    }
}

/// The recipient's account as a transfer answer shows it: simple_bank includes its balance; we
/// leave the balance out (it is not the sender's to see).
#[derive(Debug, Serialize, ToSchema)]
pub struct SbCounterpartyAccount {
    pub id: i64,
    pub owner: String,
    pub currency: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SbTransfer {
    pub id: i64,
    pub from_account_id: i64,
    pub to_account_id: i64,
    pub amount: i64,
    pub created_at: DateTime<Utc>,
}

impl From<Transfer> for SbTransfer {
    fn from(transfer: Transfer) -> Self {
        SbTransfer {
            id: transfer.id.get(),
            from_account_id: transfer.from_account_id.get(),
            to_account_id: transfer.to_account_id.get(),
            amount: transfer.amount.minor_units(),
            created_at: transfer.created_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SbEntry {
    pub id: i64,
    pub account_id: i64,
    pub amount: i64,
    pub created_at: DateTime<Utc>,
}

impl From<Entry> for SbEntry {
    fn from(entry: Entry) -> Self {
        SbEntry {
            id: entry.id.get(),
            account_id: entry.account_id.get(),
            amount: entry.amount,
            created_at: entry.created_at,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct SbCreateUser {
    pub username: String,
    pub full_name: String,
    pub email: String,
    pub password: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct SbLogin {
    pub username: String,
    pub password: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SbLoginResponse {
    pub session_id: String,
    pub access_token: String,
    pub access_token_expires_at: DateTime<Utc>,
    pub refresh_token: String,
    pub refresh_token_expires_at: DateTime<Utc>,
    pub user: SbUser,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct SbRefreshToken {
    pub refresh_token: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct SbCreateAccount {
    pub currency: String,
}

/// simple_bank's offset pages: `page_id` from 1, `page_size` 5 to 10.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SbPage {
    /// Page number, from 1.
    pub page_id: i64,
    /// Accounts per page, 5 to 10.
    pub page_size: i64,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct SbTransferBody {
    pub from_account_id: i64,
    pub to_account_id: i64,
    pub amount: i64,
    pub currency: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SbTransferResult {
    pub transfer: SbTransfer,
    pub from_account: SbAccount,
    pub to_account: SbCounterpartyAccount,
    pub from_entry: SbEntry,
    pub to_entry: SbEntry,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SbUserResponse {
    pub user: SbUser,
}

/// grpc-gateway's UpdateUser body: the username is in the body, the rest optional.
#[derive(Debug, Deserialize, ToSchema)]
pub struct SbUpdateUser {
    pub username: String,
    pub full_name: Option<String>,
    pub email: Option<String>,
    pub password: Option<String>,
    /// Not in simple_bank: required here to change the email or the password.
    pub current_password: Option<String>,
}

// ---- handlers ---------------------------------------------------------------------------------

async fn sign_up(app: &AppState, client: Client, body: SbCreateUser) -> ApiResult<SbUser> {
    let request =
        NewUserRequest::parse(&body.username, &body.full_name, &body.email, &body.password)?;
    Ok(app.service.create_user(request, &client.0).await?.into())
}

async fn log_in(app: &AppState, client: Client, body: SbLogin) -> ApiResult<SbLoginResponse> {
    let (username, password) = parse_credentials(&body.username, &body.password)?;
    let login = app.service.login(username, password, client.0).await?;
    let native = super::dto::LoginResponse::from(login);
    Ok(SbLoginResponse {
        session_id: native.session_id,
        access_token: native.access_token,
        access_token_expires_at: native.access_token_expires_at,
        refresh_token: native.refresh_token,
        refresh_token_expires_at: native.refresh_token_expires_at,
        user: SbUser {
            username: native.user.username,
            full_name: native.user.full_name,
            email: native.user.email,
            password_changed_at: native.user.password_changed_at,
            created_at: native.user.created_at,
        },
    })
}

/// gin `POST /users`.
#[utoipa::path(
    post,
    path = "/users",
    tag = TAG,
    request_body = SbCreateUser,
    responses(
        (status = 200, description = "The new user (simple_bank's shape)", body = SbUser),
        (status = 400, description = "Invalid input", body = ErrorBody),
        (status = 409, description = "Username or email taken (simple_bank: 403)", body = ErrorBody),
        (status = 429, description = "rate_limited: past this client address's share of sign-ups (ANONYMOUS_REQUESTS_PER_SECOND); see Retry-After", body = ErrorBody),
    )
)]
pub async fn create_user(
    State(app): State<AppState>,
    client: Client,
    ApiJson(body): ApiJson<SbCreateUser>,
) -> ApiResult<Json<SbUser>> {
    Ok(Json(sign_up(&app, client, body).await?))
}

/// gin `POST /users/login`.
#[utoipa::path(
    post,
    path = "/users/login",
    tag = TAG,
    request_body = SbLogin,
    responses(
        (status = 200, description = "Tokens and the user", body = SbLoginResponse),
        (status = 400, description = "Invalid input", body = ErrorBody),
        (status = 401, description = "Invalid username or password (simple_bank: 404 for an unknown user)", body = ErrorBody),
    )
)]
pub async fn login_user(
    State(app): State<AppState>,
    client: Client,
    ApiJson(body): ApiJson<SbLogin>,
) -> ApiResult<Json<SbLoginResponse>> {
    Ok(Json(log_in(&app, client, body).await?))
}

/// gin `POST /tokens/renew_access` (the same shape as ours).
#[utoipa::path(
    post,
    path = "/tokens/renew_access",
    tag = TAG,
    request_body = SbRefreshToken,
    responses(
        (status = 200, description = "A new access token", body = RenewResponse),
        (status = 400, description = "Invalid input", body = ErrorBody),
        (status = 401, description = "Refresh token invalid, expired or revoked", body = ErrorBody),
    )
)]
pub async fn renew_access_token(
    State(app): State<AppState>,
    ApiJson(body): ApiJson<SbRefreshToken>,
) -> ApiResult<Json<RenewResponse>> {
    let token = app.service.renew_access_token(&body.refresh_token).await?;
    Ok(Json(token.into()))
}

/// gin `POST /accounts`: 200 and the bare account.
#[utoipa::path(
    post,
    path = "/accounts",
    tag = TAG,
    request_body = SbCreateAccount,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The new account", body = SbAccount),
        (status = 400, description = "Invalid input", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired access token", body = ErrorBody),
        (status = 409, description = "The caller has an account in this currency (simple_bank: 403)", body = ErrorBody),
    )
)]
pub async fn create_account(
    State(app): State<AppState>,
    Auth(caller): Auth,
    ApiJson(body): ApiJson<SbCreateAccount>,
) -> ApiResult<Json<SbAccount>> {
    let currency: Currency = body.currency.parse()?;
    Ok(Json(
        app.service.create_account(&caller, currency).await?.into(),
    ))
}

/// gin `GET /accounts/{id}`.
#[utoipa::path(
    get,
    path = "/accounts/{id}",
    tag = TAG,
    params(("id" = i64, Path, description = "The account id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The account", body = SbAccount),
        (status = 400, description = "Invalid input", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired access token", body = ErrorBody),
        (status = 404, description = "No such account, or not the caller's: the same answer", body = ErrorBody),
    )
)]
pub async fn get_account(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<SbAccount>> {
    let id: AccountId = id.parse()?;
    Ok(Json(app.service.get_account(&caller, id).await?.into()))
}

/// gin `GET /accounts?page_id=&page_size=`: the caller's accounts as a bare array, by offset.
///
/// One account per currency means a user has at most as many accounts as there are currencies,
/// so the caller's whole list is read through the native (keyset) listing and the offset page
/// cut from it: no second query, no second authorization rule.
#[utoipa::path(
    get,
    path = "/accounts",
    tag = TAG,
    params(SbPage),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "One page of the caller's accounts", body = Vec<SbAccount>),
        (status = 400, description = "Invalid page", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired access token", body = ErrorBody),
    )
)]
pub async fn list_accounts(
    State(app): State<AppState>,
    Auth(caller): Auth,
    ApiQuery(page): ApiQuery<SbPage>,
) -> ApiResult<Json<Vec<SbAccount>>> {
    let OffsetPage { skip, take } = OffsetPage::parse(page.page_id, page.page_size)?;
    let all = PageRequest::parse(Some(100), None, PageKind::Accounts)?;
    let mine = app
        .service
        .list_accounts(&caller, Some(caller.username.clone()), all)
        .await?;
    Ok(Json(
        mine.items
            .into_iter()
            .skip(skip)
            .take(take)
            .map(Into::into)
            .collect(),
    ))
}

/// gin `POST /transfers`: 200 and simple_bank's five-part answer, minus the recipient's balance.
/// Takes an `Idempotency-Key` like the native route.
#[utoipa::path(
    post,
    path = "/transfers",
    tag = TAG,
    request_body = SbTransferBody,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The transfer, both accounts (the recipient's without its balance) and both entries", body = SbTransferResult),
        (status = 400, description = "Invalid input", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired access token", body = ErrorBody),
        (status = 404, description = "No such account, or not the caller's: the same answer", body = ErrorBody),
        (status = 422, description = "Insufficient funds or currency mismatch (simple_bank: 400 / 500)", body = ErrorBody),
    )
)]
pub async fn create_transfer(
    State(app): State<AppState>,
    Auth(caller): Auth,
    IdemKey(key): IdemKey,
    ApiJson(body): ApiJson<SbTransferBody>,
) -> ApiResult<Response> {
    let transfer: NewTransfer = parse_transfer(
        body.from_account_id,
        body.to_account_id,
        body.amount,
        &body.currency,
    )?;
    let answer = app.service.create_transfer(&caller, transfer, key).await;
    Ok(money_response(answer, StatusCode::OK, |receipt| {
        SbTransferResult {
            transfer: receipt.transfer.into(),
            from_account: receipt.from_account.into(),
            to_account: SbCounterpartyAccount {
                id: receipt.to_account.id.get(),
                owner: receipt.to_account.owner.as_str().to_owned(),
                currency: receipt.to_account.currency.code().to_owned(),
                created_at: receipt.to_account.created_at,
            },
            from_entry: receipt.from_entry.into(),
            to_entry: receipt.to_entry.into(),
        }
    }))
}

/// grpc-gateway `POST /v1/create_user`: `{"user": ...}`.
#[utoipa::path(
    post,
    path = "/v1/create_user",
    tag = TAG,
    request_body = SbCreateUser,
    responses(
        (status = 200, description = "The new user", body = SbUserResponse),
        (status = 400, description = "Invalid input", body = ErrorBody),
        (status = 409, description = "Username or email taken", body = ErrorBody),
        (status = 429, description = "rate_limited: past this client address's share of sign-ups (ANONYMOUS_REQUESTS_PER_SECOND); see Retry-After", body = ErrorBody),
    )
)]
pub async fn gateway_create_user(
    State(app): State<AppState>,
    client: Client,
    ApiJson(body): ApiJson<SbCreateUser>,
) -> ApiResult<Json<SbUserResponse>> {
    Ok(Json(SbUserResponse {
        user: sign_up(&app, client, body).await?,
    }))
}

/// grpc-gateway `POST /v1/login_user`.
#[utoipa::path(
    post,
    path = "/v1/login_user",
    tag = TAG,
    request_body = SbLogin,
    responses(
        (status = 200, description = "Tokens and the user", body = SbLoginResponse),
        (status = 400, description = "Invalid input", body = ErrorBody),
        (status = 401, description = "Invalid username or password (simple_bank: 404)", body = ErrorBody),
    )
)]
pub async fn gateway_login_user(
    State(app): State<AppState>,
    client: Client,
    ApiJson(body): ApiJson<SbLogin>,
) -> ApiResult<Json<SbLoginResponse>> {
    Ok(Json(log_in(&app, client, body).await?))
}

/// grpc-gateway `PATCH /v1/update_user`: the username in the body; the user or a banker.
#[utoipa::path(
    patch,
    path = "/v1/update_user",
    tag = TAG,
    request_body = SbUpdateUser,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The updated user", body = SbUserResponse),
        (status = 400, description = "Invalid input", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired access token", body = ErrorBody),
        (status = 403, description = "Another user's profile", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
    )
)]
pub async fn gateway_update_user(
    State(app): State<AppState>,
    Auth(caller): Auth,
    ApiJson(body): ApiJson<SbUpdateUser>,
) -> ApiResult<Json<SbUserResponse>> {
    let username = Username::parse(&body.username)?;
    let request = UpdateUserRequest::parse(
        body.full_name.as_deref(),
        body.email.as_deref(),
        body.password.as_deref(),
        body.current_password.as_deref(),
    )?;
    let user = app.service.update_user(&caller, &username, request).await?;
    Ok(Json(SbUserResponse { user: user.into() }))
}
