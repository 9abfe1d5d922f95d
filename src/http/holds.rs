//! The hold routes (SPEC §6): place, capture, void, read, and an account's holds.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::AppState;
use super::dto::*;
use super::error::{ApiResult, ErrorBody};
use super::extract::{ApiJson, ApiQuery, Auth, IdemKey, OptionalJson};
use super::handlers::money_response;
use crate::domain::{AccountId, HoldId, NewHold, PageKind};
use crate::service::{PageRequest, parse_amount_or_all, parse_hold_status};

fn hold_in_path(raw: &str) -> ApiResult<HoldId> {
    Ok(raw.parse::<HoldId>()?)
}

#[utoipa::path(
    post,
    path = "/v1/holds",
    tag = "holds",
    params(IdempotencyKeyHeader),
    request_body = HoldBody,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The hold, and the payer's account with the amount reserved", body = PlacedHoldResult,
            headers(("Idempotent-Replayed" = String, description = "`true` when this is the stored answer to an earlier request with the same Idempotency-Key"))),
        (status = 409, description = "A request with the same Idempotency-Key is still in progress", body = ErrorBody),
        (status = 400, description = "Invalid input; `details` names each bad field", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired access token", body = ErrorBody),
        (status = 404, description = "No such account, or (for a customer) not theirs: the same answer", body = ErrorBody),
        (status = 422, description = "insufficient_funds (of the available balance), currency_mismatch, account_frozen, account_closed, idempotency_mismatch", body = ErrorBody),
    )
)]
pub async fn create_hold(
    State(app): State<AppState>,
    Auth(caller): Auth,
    IdemKey(key): IdemKey,
    ApiJson(body): ApiJson<HoldBody>,
) -> ApiResult<Response> {
    let hold = NewHold::try_from(body)?;
    let answer = app.service.create_hold(&caller, hold, key).await;
    Ok(money_response(
        answer,
        StatusCode::CREATED,
        PlacedHoldResult::from,
    ))
}

#[utoipa::path(
    post,
    path = "/v1/holds/{id}/capture",
    tag = "holds",
    params(("id" = i64, Path, description = "The hold id"), IdempotencyKeyHeader),
    request_body(content = CaptureBody, description = "Optional: without a body, all of the hold is captured"),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The captured hold, the one transfer that captured it and the payee's entry", body = CaptureResult,
            headers(("Idempotent-Replayed" = String, description = "`true` when this is the stored answer to an earlier request with the same Idempotency-Key"))),
        (status = 409, description = "A request with the same Idempotency-Key is still in progress", body = ErrorBody),
        (status = 400, description = "Invalid input (an amount over the hold's); `details` names each bad field", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired access token", body = ErrorBody),
        (status = 403, description = "The to-account is not the caller's", body = ErrorBody),
        (status = 404, description = "No such resource", body = ErrorBody),
        (status = 422, description = "hold_not_pending (captured, voided or expired), account_frozen (the payer), account_closed (the payee), idempotency_mismatch", body = ErrorBody),
    )
)]
pub async fn capture_hold(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    IdemKey(key): IdemKey,
    OptionalJson(body): OptionalJson<CaptureBody>,
) -> ApiResult<Response> {
    let id = hold_in_path(&id)?;
    let amount = parse_amount_or_all(body.amount)?;
    let answer = app.service.capture_hold(&caller, id, amount, key).await;
    Ok(money_response(
        answer,
        StatusCode::CREATED,
        CaptureResult::from,
    ))
}

#[utoipa::path(
    post,
    path = "/v1/holds/{id}/void",
    tag = "holds",
    params(("id" = i64, Path, description = "The hold id"), IdempotencyKeyHeader),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The released hold", body = HoldResponse,
            headers(("Idempotent-Replayed" = String, description = "`true` when this is the stored answer to an earlier request with the same Idempotency-Key"))),
        (status = 409, description = "A request with the same Idempotency-Key is still in progress", body = ErrorBody),
        (status = 400, description = "Invalid input", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired access token", body = ErrorBody),
        (status = 403, description = "The to-account is not the caller's", body = ErrorBody),
        (status = 404, description = "No such resource", body = ErrorBody),
        (status = 422, description = "hold_not_pending (captured, voided or expired), idempotency_mismatch", body = ErrorBody),
    )
)]
pub async fn void_hold(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    IdemKey(key): IdemKey,
) -> ApiResult<Response> {
    let id = hold_in_path(&id)?;
    let answer = app.service.void_hold(&caller, id, key).await;
    Ok(money_response(answer, StatusCode::OK, |hold| {
        HoldResponse { hold: hold.into() }
    }))
}

#[utoipa::path(
    get,
    path = "/v1/holds/{id}",
    tag = "holds",
    params(("id" = i64, Path, description = "The hold id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The hold, its status as of now", body = HoldResponse),
        (status = 400, description = "Invalid input", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired access token", body = ErrorBody),
        (status = 403, description = "Neither account is the caller's", body = ErrorBody),
        (status = 404, description = "No such resource", body = ErrorBody),
    )
)]
pub async fn get_hold(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<HoldResponse>> {
    let id = hold_in_path(&id)?;
    let hold = app.service.get_hold(&caller, id).await?;
    Ok(Json(HoldResponse { hold: hold.into() }))
}

#[utoipa::path(
    get,
    path = "/v1/accounts/{id}/holds",
    tag = "holds",
    params(("id" = i64, Path, description = "The account id"), HoldsQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "One page of the holds the account pays or receives, newest first", body = HoldList),
        (status = 400, description = "Invalid input; `details` names each bad field", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired access token", body = ErrorBody),
        (status = 403, description = "Not allowed for the caller", body = ErrorBody),
        (status = 404, description = "No such resource", body = ErrorBody),
    )
)]
pub async fn list_holds(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    ApiQuery(query): ApiQuery<HoldsQuery>,
) -> ApiResult<Json<HoldList>> {
    let id = id.parse::<AccountId>()?;
    let status = parse_hold_status(query.status.as_deref());
    let page = PageRequest::parse(
        query.page_size,
        query.page_token.as_deref(),
        PageKind::Holds,
    );
    let (status, page) = crate::domain::both(status.map_err(|e| vec![e]), page)?;
    let found = app.service.list_holds(&caller, id, status, page).await?;
    Ok(Json(HoldList {
        holds: found.items.into_iter().map(Into::into).collect(),
        next_page_token: found.next_page_token,
    }))
}
