//! Logging: one subscriber for the whole process, filtered by `RUST_LOG` (default `info`),
//! human-readable in development and one JSON object per line in production (`LOG_FORMAT`,
//! chosen by `config::RawSettings::log_format`).

use http::{HeaderMap, HeaderValue};
use tracing_subscriber::EnvFilter;

/// The header (HTTP) and metadata key (gRPC) carrying the request id, both ways.
pub const REQUEST_ID: &str = "x-request-id";

/// Longest caller-supplied request id kept; a longer one is replaced rather than logged.
const MAX_REQUEST_ID_LEN: usize = 128;

/// The caller's `x-request-id` if it is sane (visible ASCII, at most 128 bytes: it goes into
/// log lines), a fresh UUID otherwise.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    headers
        .get(REQUEST_ID)
        .filter(|v| {
            let bytes = v.as_bytes();
            !bytes.is_empty()
                && bytes.len() <= MAX_REQUEST_ID_LEN
                && bytes.iter().all(|b| b.is_ascii_graphic())
        })
        .cloned()
        .unwrap_or_else(|| {
            HeaderValue::from_str(&uuid::Uuid::new_v4().to_string())
                .expect("a UUID is a valid header value")
        })
}

/// What is logged when `RUST_LOG` is unset. Postgres NOTICEs ("relation already exists,
/// skipping" on every `migrate up`) are routine and stay below the default level.
const DEFAULT_FILTER: &str = "info,sqlx::postgres::notice=warn";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// For people at a terminal.
    Pretty,
    /// One JSON object per line, for a log pipeline.
    Json,
}

/// Installs the global subscriber.
pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // `try_init`: a second call (tests) keeps the first subscriber instead of panicking.
    let _ = match format {
        LogFormat::Pretty => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_or_oversized_request_ids_are_replaced() {
        for bad in ["", "has space", &"x".repeat(MAX_REQUEST_ID_LEN + 1)] {
            let mut headers = HeaderMap::new();
            headers.insert(REQUEST_ID, HeaderValue::from_str(bad).unwrap());
            let id = request_id(&headers);
            assert!(
                uuid::Uuid::parse_str(id.to_str().unwrap()).is_ok(),
                "{bad:?}"
            );
        }
        let mut headers = HeaderMap::new();
        headers.insert(REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&headers), "abc-123");
    }
}
