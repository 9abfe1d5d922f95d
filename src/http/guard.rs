//! What every HTTP request goes through before any route: limits that keep one client or one slow
//! dependency from taking the server down, and the security headers of every response.
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

use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

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

pub async fn guard(State(admission): State<Admission>, request: Request, next: Next) -> Response {
    with_security_headers(admit(&admission, request, next).await)
}

/// The limits, in order: header size, then for the bank's routes the admission (database up, a
/// free slot) and the deadline.
async fn admit(admission: &Admission, request: Request, next: Next) -> Response {
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
        Err(refused) => return retry_soon(refused),
    };
    match admission.within_deadline(next.run(request)).await {
        Ok(response) => response,
        Err(late) => ApiError::from(late).into_response(),
    }
}

/// A refusal whose cause should pass within seconds: `Retry-After: 1`.
fn retry_soon(error: ServiceError) -> Response {
    let mut response = ApiError::from(error).into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// Headers that make a browser treat our answers as data only: never sniffed into something
/// executable, never framed, never cached, never followed by a referrer. The content security
/// policy goes on JSON only; the Swagger UI pages need their own scripts and styles.
fn with_security_headers(mut response: Response) -> Response {
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    let headers = response.headers_mut();
    let mut set = |name: HeaderName, value: &'static str| {
        headers
            .entry(name)
            .or_insert(HeaderValue::from_static(value));
    };
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(header::X_FRAME_OPTIONS, "DENY");
    set(header::REFERRER_POLICY, "no-referrer");
    set(header::CACHE_CONTROL, "no-store");
    set(
        header::STRICT_TRANSPORT_SECURITY,
        "max-age=31536000; includeSubDomains",
    );
    if is_json {
        set(
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; frame-ancestors 'none'",
        );
    }
    response
}
