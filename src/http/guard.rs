//! What every HTTP request goes through before any route: limits that keep one client or one slow
//! dependency from taking the server down, and the security headers of every response
//! (tower-http's `SetResponseHeaderLayer`s, `security_headers`).
//!
//! Each refusal is in SPEC §4's shape, with the status that names the problem:
//! - headers over `MAX_HEADER_BYTES` in all: 431 `invalid_argument`;
//! - while the health checker finds the database down: 503 `unavailable` at once instead of after
//!   `DB_ACQUIRE_TIMEOUT`, with `Retry-After: 1`;
//! - more than `MAX_CONCURRENT_REQUESTS` requests in progress on both APIs together: 503
//!   `unavailable` at once, with `Retry-After: 1`;
//! - a request still running after `REQUEST_TIMEOUT`: 503 `unavailable`.
//!
//! The last three are the service's `Admission`, which the gRPC side applies too. Health,
//! metrics and the API documents skip it (`/readyz` asks the database itself).

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::set_header::SetResponseHeaderLayer;

use super::error::ApiError;
use crate::service::{Admission, ServiceError};

/// The most header bytes (names and values) a request may carry: far above any real client's
/// (a PASETO token is a few hundred bytes), far below what it takes to tie up memory.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Routes that are not the bank: probes, metrics and documents. They need no database (or, like
/// `/readyz`, ask it themselves), are cheap, and must answer while the bank is saturated.
fn is_infrastructure(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics")
        || path.starts_with("/swagger-ui")
        || path.starts_with("/api-docs")
}

/// The limits, in order: header size, then for the bank's routes the admission (database up, a
/// free slot) and the deadline. A refusal is the error table's answer, `Retry-After` included.
pub async fn guard(State(admission): State<Admission>, request: Request, next: Next) -> Response {
    let header_bytes: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if header_bytes > MAX_HEADER_BYTES {
        return ApiError::with_status(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ServiceError::invalid(
                "headers",
                format!("must total at most {MAX_HEADER_BYTES} bytes"),
            ),
        )
        .into_response();
    }
    if is_infrastructure(request.uri().path()) {
        return next.run(request).await;
    }
    let _slot = match admission.admit() {
        Ok(slot) => slot,
        Err(refused) => return ApiError::from(refused).into_response(),
    };
    match admission.within_deadline(next.run(request)).await {
        Ok(response) => response,
        Err(late) => ApiError::from(late).into_response(),
    }
}

/// Headers that make a browser treat our answers as data only: never sniffed into something
/// executable, never framed, never cached, never followed by a referrer. The content security
/// policy goes on JSON only; the Swagger UI pages need their own scripts and styles.
pub fn security_headers<S: Clone + Send + Sync + 'static>(router: Router<S>) -> Router<S> {
    let json_only = |response: &Response| {
        response
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/json"))
            .then_some(HeaderValue::from_static(
                "default-src 'none'; frame-ancestors 'none'",
            ))
    };
    let always = |name: HeaderName, value: &'static str| {
        SetResponseHeaderLayer::if_not_present(name, HeaderValue::from_static(value))
    };
    router
        .layer(always(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .layer(always(header::X_FRAME_OPTIONS, "DENY"))
        .layer(always(header::REFERRER_POLICY, "no-referrer"))
        .layer(always(header::CACHE_CONTROL, "no-store"))
        .layer(always(
            header::STRICT_TRANSPORT_SECURITY,
            "max-age=31536000; includeSubDomains",
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CONTENT_SECURITY_POLICY,
            json_only,
        ))
}
