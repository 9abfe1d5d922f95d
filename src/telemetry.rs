//! Logging: one subscriber for the whole process, filtered by `RUST_LOG` (default `info`),
//! human-readable in development and one JSON object per line in production (`LOG_FORMAT`,
//! chosen by `config::RawSettings::log_format`).

use http::{HeaderName, Request};
use tower::layer::util::{Identity, Stack};
use tower::util::MapRequestLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tracing_subscriber::EnvFilter;

/// The header (HTTP) and metadata key (gRPC) carrying the request id, both ways.
pub const REQUEST_ID: &str = "x-request-id";

/// Longest caller-supplied request id kept; a longer one is replaced rather than logged.
const MAX_REQUEST_ID_LEN: usize = 128;

/// The request-id layers both transports put outermost, in order: ours, which removes a
/// caller's `x-request-id` unless it is sane (visible ASCII, at most 128 bytes: it goes into log
/// lines), then tower-http's, which give a request without one a fresh UUID and echo the id in
/// the response. tower-http's keep any id the caller sent, hence the sanitizer before them.
pub type RequestIdLayers<B> = tower::ServiceBuilder<
    Stack<
        PropagateRequestIdLayer,
        Stack<
            SetRequestIdLayer<MakeRequestUuid>,
            Stack<MapRequestLayer<fn(Request<B>) -> Request<B>>, Identity>,
        >,
    >,
>;

pub fn request_id_layers<B>() -> RequestIdLayers<B> {
    let header = HeaderName::from_static(REQUEST_ID);
    tower::ServiceBuilder::new()
        .layer(MapRequestLayer::new(
            drop_unsafe_request_id::<B> as fn(Request<B>) -> Request<B>,
        ))
        .layer(SetRequestIdLayer::new(header.clone(), MakeRequestUuid))
        .layer(PropagateRequestIdLayer::new(header))
}

fn drop_unsafe_request_id<B>(mut request: Request<B>) -> Request<B> {
    let sane = request.headers().get(REQUEST_ID).is_none_or(|v| {
        let bytes = v.as_bytes();
        !bytes.is_empty()
            && bytes.len() <= MAX_REQUEST_ID_LEN
            && bytes.iter().all(|b| b.is_ascii_graphic())
    });
    if !sane {
        request.headers_mut().remove(REQUEST_ID);
    }
    request
}

/// The request's id, as the layers above left it.
pub fn request_id(headers: &http::HeaderMap) -> &str {
    headers
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
}

/// One request's log line: at `warn` when the server is at fault (`$fault`), `info` otherwise.
/// (tracing's macros take their level as a constant, hence the two arms.)
#[macro_export]
macro_rules! request_line {
    ($fault:expr, $($field:tt)+) => {
        if $fault {
            tracing::warn!($($field)+)
        } else {
            tracing::info!($($field)+)
        }
    };
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

    #[tokio::test]
    async fn unsafe_or_oversized_request_ids_are_replaced_and_every_id_is_echoed() {
        use tower::{Service, ServiceExt};
        let mut service = request_id_layers::<()>().service(tower::service_fn(
            |request: Request<()>| async move {
                // What the handlers (and the log line) see.
                let seen = request_id(request.headers()).to_owned();
                Ok::<_, std::convert::Infallible>(http::Response::new(seen))
            },
        ));
        let long = "x".repeat(MAX_REQUEST_ID_LEN + 1);
        for (sent, kept) in [
            (Some("abc-123"), true),
            (None, false),
            (Some(""), false),
            (Some("has space"), false),
            (Some(long.as_str()), false),
        ] {
            let mut request = Request::new(());
            if let Some(id) = sent {
                request
                    .headers_mut()
                    .insert(REQUEST_ID, http::HeaderValue::from_str(id).unwrap());
            }
            let response = service.ready().await.unwrap().call(request).await.unwrap();
            let echoed = response.headers()[REQUEST_ID].to_str().unwrap().to_owned();
            assert_eq!(&echoed, response.body(), "{sent:?}");
            if kept {
                assert_eq!(Some(echoed.as_str()), sent);
            } else {
                assert!(uuid::Uuid::parse_str(&echoed).is_ok(), "{sent:?}: {echoed}");
            }
        }
    }
}
