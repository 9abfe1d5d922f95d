//! What every HTTP request goes through before any route: limits that keep one client or one slow
//! dependency from taking the server down, and the security headers of every response.
//!
//! Each refusal is in SPEC §4's shape, with the status that names the problem:
//! - headers over `MAX_HEADER_BYTES` in all: 431 `invalid_argument`;
//! - more than `MAX_CONCURRENT_REQUESTS` requests in progress: 503 `unavailable` at once, with
//!   `Retry-After: 1` — shedding load beats queueing it until everything times out;
//! - while the health checker finds the database down, every route that needs it: 503
//!   `unavailable` at once instead of after `DB_ACQUIRE_TIMEOUT` (`/readyz` still asks the
//!   database itself);
//! - a request still running after `REQUEST_TIMEOUT`: 503 `unavailable`. The handler is dropped,
//!   which is safe for money: grouped movements run in tasks of their own and answer only after
//!   they commit, and every transaction path ends its transaction explicitly.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

use super::error::ApiError;
use crate::service::{BankService, ServiceError};

/// The limits of `guard`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `MAX_CONCURRENT_REQUESTS`, default 1,024.
    pub max_concurrent_requests: usize,
    /// `REQUEST_TIMEOUT`, default 30 s.
    pub request_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_concurrent_requests: 1024,
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// The most header bytes (names and values) a request may carry: far above any real client's
/// (a PASETO token is a few hundred bytes), far below what it takes to tie up memory.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// The state of `guard`: the limits, the permits of requests in progress, and the service (for
/// whether the database is up).
#[derive(Clone)]
pub struct Guard {
    limits: Limits,
    in_progress: Arc<Semaphore>,
    service: BankService,
}

impl Guard {
    pub fn new(limits: Limits, service: BankService) -> Self {
        Self {
            limits,
            in_progress: Arc::new(Semaphore::new(limits.max_concurrent_requests.max(1))),
            service,
        }
    }
}

/// Routes that work without the database (or, like `/readyz`, find out about it themselves).
fn needs_database(path: &str) -> bool {
    !(matches!(path, "/healthz" | "/readyz" | "/metrics")
        || path.starts_with("/swagger-ui")
        || path.starts_with("/api-docs"))
}

pub async fn guard(State(guard): State<Guard>, request: Request, next: Next) -> Response {
    with_security_headers(admit(&guard, request, next).await)
}

/// The limits, in order: header size, database up, a free slot, then the request under its
/// deadline.
async fn admit(guard: &Guard, request: Request, next: Next) -> Response {
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
    if needs_database(request.uri().path())
        && let Err(down) = guard.service.check_database()
    {
        return retry_soon(down);
    }
    let Ok(_permit) = guard.in_progress.clone().try_acquire_owned() else {
        return retry_soon(ServiceError::Unavailable(
            "too many requests in progress".into(),
        ));
    };
    match tokio::time::timeout(guard.limits.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::from(ServiceError::Unavailable(
            format!(
                "the request did not finish within {:?}",
                guard.limits.request_timeout
            )
            .into(),
        ))
        .into_response(),
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
