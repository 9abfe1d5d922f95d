//! Webhook endpoints (bankers) and an account's events as Server-Sent Events (SPEC §7).

use std::convert::Infallible;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use tokio_stream::{Stream, StreamExt};

use super::AppState;
use super::dto::*;
use super::error::{ApiResult, ErrorBody};
use super::extract::{ApiJson, ApiQuery, Auth};
use crate::domain::AccountId;
use crate::events::StreamEnd;
use crate::service::{ServiceError, parse_id, parse_webhook};
use crate::store::Event;

fn webhook_in_path(raw: &str) -> ApiResult<i64> {
    let id = raw
        .parse::<i64>()
        .map_err(|_| ServiceError::invalid("id", "must be a positive integer"))?;
    Ok(parse_id("id", id)?)
}

#[utoipa::path(
    post,
    path = "/v1/webhooks",
    tag = "webhooks",
    request_body = WebhookBody,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The endpoint, and its signing secret (shown only here)", body = WebhookCreated),
        (status = 400, description = "Invalid input: a bad or forbidden URL, an unknown event type", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired access token", body = ErrorBody),
        (status = 403, description = "Only bankers manage webhooks", body = ErrorBody),
        (status = 409, description = "already_exists: the bank's limit of 100 endpoints is reached", body = ErrorBody),
    )
)]
pub async fn create_webhook(
    State(app): State<AppState>,
    Auth(caller): Auth,
    ApiJson(body): ApiJson<WebhookBody>,
) -> ApiResult<(StatusCode, Json<WebhookCreated>)> {
    let request = parse_webhook(body.url, body.event_types, body.description)?;
    let created = app.service.create_webhook(&caller, request).await?;
    Ok((StatusCode::CREATED, Json(created.into())))
}

#[utoipa::path(
    get,
    path = "/v1/webhooks",
    tag = "webhooks",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Every live endpoint (never their secrets)", body = WebhookList),
        (status = 401, description = "Missing, invalid or expired access token", body = ErrorBody),
        (status = 403, description = "Only bankers manage webhooks", body = ErrorBody),
    )
)]
pub async fn list_webhooks(
    State(app): State<AppState>,
    Auth(caller): Auth,
) -> ApiResult<Json<WebhookList>> {
    let webhooks = app.service.list_webhooks(&caller).await?;
    Ok(Json(WebhookList {
        webhooks: webhooks.into_iter().map(Into::into).collect(),
    }))
}

#[utoipa::path(
    delete,
    path = "/v1/webhooks/{id}",
    tag = "webhooks",
    params(("id" = i64, Path, description = "The endpoint id")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted: nothing more is sent to it"),
        (status = 400, description = "Invalid input: the id is not a positive integer", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired access token", body = ErrorBody),
        (status = 403, description = "Only bankers manage webhooks", body = ErrorBody),
        (status = 404, description = "No such endpoint", body = ErrorBody),
    )
)]
pub async fn delete_webhook(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let id = webhook_in_path(&id)?;
    app.service.delete_webhook(&caller, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/v1/webhooks/{id}/rotate_secret",
    tag = "webhooks",
    params(("id" = i64, Path, description = "The endpoint id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The new secret, shown only here; for 24 hours deliveries carry a signature by the old secret too", body = WebhookCreated),
        (status = 400, description = "Invalid input: the id is not a positive integer", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired access token", body = ErrorBody),
        (status = 403, description = "Only bankers manage webhooks", body = ErrorBody),
        (status = 404, description = "No such endpoint", body = ErrorBody),
    )
)]
pub async fn rotate_webhook_secret(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<WebhookCreated>> {
    let id = webhook_in_path(&id)?;
    let rotated = app.service.rotate_webhook_secret(&caller, id).await?;
    Ok(Json(rotated.into()))
}

#[utoipa::path(
    get,
    path = "/v1/webhooks/{id}/deliveries",
    tag = "webhooks",
    params(("id" = i64, Path, description = "The endpoint id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The delivery log: the newest 100 attempts, newest first", body = DeliveryList),
        (status = 400, description = "Invalid input: the id is not a positive integer", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired access token", body = ErrorBody),
        (status = 403, description = "Only bankers manage webhooks", body = ErrorBody),
        (status = 404, description = "No such endpoint", body = ErrorBody),
    )
)]
pub async fn list_webhook_deliveries(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<DeliveryList>> {
    let id = webhook_in_path(&id)?;
    let attempts = app.service.list_webhook_deliveries(&caller, id).await?;
    Ok(Json(DeliveryList {
        deliveries: attempts.into_iter().map(Into::into).collect(),
    }))
}

#[utoipa::path(
    post,
    path = "/v1/webhooks/{id}/redeliver",
    tag = "webhooks",
    params(("id" = i64, Path, description = "The endpoint id")),
    request_body = RedeliverBody,
    security(("bearer" = [])),
    responses(
        (status = 202, description = "Queued: the event goes to the endpoint again, with the same webhook-id", body = RedeliverResult),
        (status = 400, description = "Invalid input", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired access token", body = ErrorBody),
        (status = 403, description = "Only bankers manage webhooks", body = ErrorBody),
        (status = 404, description = "No such endpoint or event", body = ErrorBody),
    )
)]
pub async fn redeliver_webhook(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<RedeliverBody>,
) -> ApiResult<(StatusCode, Json<RedeliverResult>)> {
    let id = webhook_in_path(&id)?;
    let event = parse_id("event_id", body.event_id)?;
    let delivery_id = app.service.redeliver_webhook(&caller, id, event).await?;
    Ok((StatusCode::ACCEPTED, Json(RedeliverResult { delivery_id })))
}

/// One SSE message per event: `id` (what `Last-Event-ID` resumes from), `event` (the type) and
/// `data` (`{"id", "type", "timestamp", "data"}`); and a last `end` message when the server ends
/// the stream, saying why and where to resume.
fn sse_message(item: Result<Event, StreamEnd>) -> SseEvent {
    match item {
        Ok(event) => SseEvent::default()
            .id(event.id.to_string())
            .event(event.kind.as_str())
            .data(event.to_json()),
        Err(end) => SseEvent::default().event("end").data(format!(
            r#"{{"reason":"{}","resume_after":{}}}"#,
            end.reason.as_str(),
            end.resume_after
        )),
    }
}

#[utoipa::path(
    get,
    path = "/v1/accounts/{id}/events",
    tag = "accounts",
    params(("id" = i64, Path, description = "The account id"), EventsQuery,
        ("Last-Event-ID" = Option<i64>, Header, description = "Resume after this event id (what an EventSource sends on reconnecting)")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Server-Sent Events: the account's events after the cursor, then each as it commits. Each message has `id`, `event` (the type) and `data` (`{\"id\", \"type\", \"timestamp\", \"data\"}`). A client that does not keep up (64 events waiting for 5 s) gets a last `end` message `{\"reason\": \"slow_consumer\", \"resume_after\": <id>}` and resumes from there.",
            content_type = "text/event-stream", body = String),
        (status = 400, description = "Invalid input", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired access token", body = ErrorBody),
        (status = 404, description = "No such account, or not the caller's: the same answer (SPEC §10)", body = ErrorBody),
        (status = 503, description = "Too many event streams open", body = ErrorBody),
    )
)]
pub async fn watch_account_events(
    State(app): State<AppState>,
    Auth(caller): Auth,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<EventsQuery>,
) -> ApiResult<Response> {
    let account = id.parse::<AccountId>()?;
    let last_event_id = match headers.get("last-event-id") {
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<i64>().ok())
                .ok_or_else(|| ServiceError::invalid("Last-Event-ID", "must be an event id"))?,
        ),
        None => None,
    };
    let stream = app
        .service
        .watch_account(&caller, account, last_event_id.or(query.after))
        .await?;
    let messages: std::pin::Pin<Box<dyn Stream<Item = Result<SseEvent, Infallible>> + Send>> =
        Box::pin(stream.map(|item| Ok(sse_message(item))));
    Ok(Sse::new(messages)
        .keep_alive(KeepAlive::default())
        .into_response())
}
