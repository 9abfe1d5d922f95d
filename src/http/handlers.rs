//! One handler per route: parse the request into domain values, call the service, shape the
//! response. No rule is decided here.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use super::AppState;
use super::dto::*;
use super::error::ApiError;
use super::extract::{ApiJson, ApiQuery, Auth, Client};
use crate::domain::{
    AccountId, Amount, Currency, NewTransfer, PageKind, Role, TransferId, Username,
};
use crate::service::{NewUserRequest, UpdateUserRequest};

type ApiResult<T> = Result<T, ApiError>;

fn username_in_path(raw: &str) -> ApiResult<Username> {
    Ok(Username::parse(raw)?)
}

fn account_in_path(raw: &str) -> ApiResult<AccountId> {
    Ok(raw.parse::<AccountId>()?)
}

pub async fn create_user(
    State(app): State<AppState>,
    ApiJson(body): ApiJson<CreateUserBody>,
) -> ApiResult<(StatusCode, Json<UserResponse>)> {
    let request = NewUserRequest::try_from(body)?;
    let user = app.service.create_user(request).await?;
    Ok((
        StatusCode::CREATED,
        Json(UserResponse { user: user.into() }),
    ))
}

pub async fn login_user(
    State(app): State<AppState>,
    Client(client): Client,
    ApiJson(body): ApiJson<LoginBody>,
) -> ApiResult<Json<LoginResponse>> {
    let (username, password) = <(Username, _)>::try_from(body)?;
    let login = app.service.login(username, password, client).await?;
    Ok(Json(login.into()))
}

pub async fn renew_access_token(
    State(app): State<AppState>,
    ApiJson(body): ApiJson<RefreshTokenBody>,
) -> ApiResult<Json<RenewResponse>> {
    let token = app.service.renew_access_token(&body.refresh_token).await?;
    Ok(Json(token.into()))
}

pub async fn logout_user(
    State(app): State<AppState>,
    ApiJson(body): ApiJson<RefreshTokenBody>,
) -> ApiResult<StatusCode> {
    app.service.logout(&body.refresh_token).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn get_user(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(username): Path<String>,
) -> ApiResult<Json<UserResponse>> {
    let username = username_in_path(&username)?;
    let user = app.service.get_user(&caller, &username).await?;
    Ok(Json(UserResponse { user: user.into() }))
}

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

pub async fn list_entries(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> ApiResult<Json<EntryList>> {
    let id = account_in_path(&id)?;
    let page = query.parse(PageKind::Entries)?;
    let found = app.service.list_entries(&caller, id, page).await?;
    Ok(Json(EntryList {
        entries: found.items.into_iter().map(Into::into).collect(),
        next_page_token: found.next_page_token,
    }))
}

pub async fn create_transfer(
    State(app): State<AppState>,
    Auth(caller): Auth,
    ApiJson(body): ApiJson<TransferBody>,
) -> ApiResult<(StatusCode, Json<TransferResult>)> {
    let transfer = NewTransfer::try_from(body)?;
    let receipt = app.service.create_transfer(&caller, transfer).await?;
    Ok((
        StatusCode::CREATED,
        Json(TransferResult {
            transfer: receipt.transfer.into(),
            from_account: receipt.from_account.into(),
            from_entry: receipt.from_entry.into(),
            to_entry: receipt.to_entry.into(),
        }),
    ))
}

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

pub async fn deposit(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<MoneyBody>,
) -> ApiResult<(StatusCode, Json<MoneyResult>)> {
    let id = account_in_path(&id)?;
    let (amount, currency) = <(Amount, Currency)>::try_from(body)?;
    let receipt = app.service.deposit(&caller, id, amount, currency).await?;
    Ok((
        StatusCode::CREATED,
        Json(MoneyResult {
            transfer: receipt.transfer.into(),
            account: receipt.to_account.into(),
            entry: receipt.to_entry.into(),
        }),
    ))
}

pub async fn withdraw(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<MoneyBody>,
) -> ApiResult<(StatusCode, Json<MoneyResult>)> {
    let id = account_in_path(&id)?;
    let (amount, currency) = <(Amount, Currency)>::try_from(body)?;
    let receipt = app.service.withdraw(&caller, id, amount, currency).await?;
    Ok((
        StatusCode::CREATED,
        Json(MoneyResult {
            transfer: receipt.transfer.into(),
            account: receipt.from_account.into(),
            entry: receipt.from_entry.into(),
        }),
    ))
}

/// The process is up.
pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// The database answers; 503 `unavailable` when it does not.
pub async fn readyz(State(app): State<AppState>) -> ApiResult<Json<serde_json::Value>> {
    app.store
        .ping()
        .await
        .map_err(crate::service::ServiceError::from)?;
    Ok(Json(serde_json::json!({ "status": "ready" })))
}
