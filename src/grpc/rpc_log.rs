//! One log line per RPC: method, gRPC status code, duration and request id.
//!
//! A tower layer on the gRPC server alone (the HTTP side has its own). It cannot log when the
//! handler returns: a gRPC status travels either in the response headers (a "trailers-only"
//! response, which is how tonic sends errors) or in the trailers after the last message. So the
//! layer looks at the headers first and otherwise wraps the body and logs when the trailers pass
//! by — or, if the client goes away before that, when the body is dropped (`CANCELLED`).
//!
//! The request id was settled by the layers outside this one (`telemetry::request_id_layers`,
//! which also echo it, so a client can quote it when reporting a problem).
//!
//! tower-http's `TraceLayer::new_for_grpc` classifies the same two places, but it has no callback
//! for a response body dropped before its trailers (a client that reset the stream), which this
//! layer logs as CANCELLED; and its callbacks see the response only, while the line and the
//! metrics need the request's method and client. So this layer stays ours.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame, SizeHint};
use tower_layer::Layer;
use tower_service::Service;

use crate::metrics::Metrics;
use crate::service::{ClientAddress, TrustedProxies};
use crate::telemetry::request_id;

/// Logs and counts (`Metrics::rpc`) every RPC.
#[derive(Clone, Debug, Default)]
pub struct RpcLogLayer {
    metrics: Arc<Metrics>,
    proxies: Arc<TrustedProxies>,
}

impl RpcLogLayer {
    /// `proxies`: whose forwarding metadata names the client (`TRUSTED_PROXIES`).
    pub fn new(metrics: Arc<Metrics>, proxies: Arc<TrustedProxies>) -> Self {
        Self { metrics, proxies }
    }
}

impl<S> Layer<S> for RpcLogLayer {
    type Service = RpcLog<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcLog {
            inner,
            metrics: Arc::clone(&self.metrics),
            proxies: Arc::clone(&self.proxies),
        }
    }
}

#[derive(Clone, Debug)]
pub struct RpcLog<S> {
    inner: S,
    metrics: Arc<Metrics>,
    proxies: Arc<TrustedProxies>,
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for RpcLog<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Send + 'static,
{
    type Response = Response<LoggedBody<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let id = request_id(request.headers()).to_owned();
        // Found once here, for the log line and for the handlers (sessions, login throttling).
        let client = request
            .extensions()
            .get::<tonic::transport::server::TcpConnectInfo>()
            .and_then(|info| info.remote_addr())
            .map(|peer| {
                ClientAddress(crate::service::client_from_headers(
                    &self.proxies,
                    peer.ip(),
                    request.headers(),
                ))
            });
        if let Some(client) = client {
            request.extensions_mut().insert(client);
        }
        let mut record = Pending(Some(Rpc {
            method: request.uri().path().to_owned(),
            client,
            request_id: id,
            started: Instant::now(),
            metrics: Arc::clone(&self.metrics),
        }));
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = match response.await {
                Ok(response) => response,
                Err(error) => {
                    // The transport failed before any status existed.
                    record.finish("UNKNOWN");
                    return Err(error);
                }
            };
            if let Some(code) = status_code(response.headers()) {
                record.finish(code);
            }
            Ok(response.map(|inner| LoggedBody { inner, record }))
        })
    }
}

/// The canonical name of the `grpc-status` in `headers`, if there is one.
fn status_code(headers: &HeaderMap) -> Option<&'static str> {
    let value = headers.get("grpc-status")?;
    let code = value
        .to_str()
        .ok()
        .and_then(|s| s.parse::<i32>().ok())
        .unwrap_or(2);
    Some(code_name(code))
}

/// gRPC's own spelling of each status code, as other servers' logs print it.
fn code_name(code: i32) -> &'static str {
    match code {
        0 => "OK",
        1 => "CANCELLED",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "UNKNOWN",
    }
}

/// Codes that mean the server, not the caller, has a problem: logged at `warn`.
fn is_server_fault(code: &str) -> bool {
    matches!(
        code,
        "UNKNOWN" | "INTERNAL" | "UNAVAILABLE" | "DATA_LOSS" | "DEADLINE_EXCEEDED"
    )
}

struct Rpc {
    method: String,
    client: Option<ClientAddress>,
    request_id: String,
    started: Instant,
    metrics: Arc<Metrics>,
}

/// An RPC whose line is not written yet. Written at most once: by `finish`, or on drop as
/// `CANCELLED` (the client reset the stream before the status was sent).
struct Pending(Option<Rpc>);

impl Pending {
    fn finish(&mut self, code: &'static str) {
        let Some(rpc) = self.0.take() else { return };
        let took = rpc.started.elapsed();
        // A method the server does not serve is counted as `unmatched`, whatever the answer
        // (UNIMPLEMENTED, or UNAUTHENTICATED from a guard before it), so invented names cannot
        // grow the metrics. The log line keeps the raw path.
        rpc.metrics.rpc(&rpc.method, code, took);
        let duration_ms = took.as_secs_f64() * 1000.0;
        let request_id = rpc.request_id.as_str();
        let client = rpc
            .client
            .map_or_else(|| "-".to_owned(), |c| c.0.to_string());
        crate::request_line!(
            is_server_fault(code),
            target: "simplebank::grpc",
            method = %rpc.method,
            code,
            client,
            duration_ms,
            request_id,
            "rpc"
        );
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.finish("CANCELLED");
    }
}

/// The response body, passed through untouched; logs the RPC when its trailers go out.
pub struct LoggedBody<B> {
    inner: B,
    record: Pending,
}

impl<B> Body for LoggedBody<B>
where
    B: Body + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    this.record
                        .finish(status_code(trailers).unwrap_or("UNKNOWN"));
                }
            }
            // The body broke off: the client sees a reset stream, not a status.
            Poll::Ready(Some(Err(_))) => this.record.finish("UNKNOWN"),
            // Ended with no trailers at all (never from tonic): no status was sent.
            Poll::Ready(None) => this.record.finish("UNKNOWN"),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use bytes::Bytes;
    use http_body_util::{BodyExt, Empty, StreamBody};
    use tower::ServiceExt;

    use super::*;
    use crate::telemetry::REQUEST_ID;
    use http::HeaderValue;

    /// Everything the subscriber writes, for assertions.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Captured {
        fn lines(&self) -> Vec<String> {
            String::from_utf8(self.0.lock().unwrap().clone())
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect()
        }
    }

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn capture() -> (Captured, tracing::subscriber::DefaultGuard) {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        (captured, tracing::subscriber::set_default(subscriber))
    }

    fn call(path: &str, request_id: Option<&str>) -> Request<Empty<Bytes>> {
        let mut request = Request::builder().uri(path);
        if let Some(id) = request_id {
            request = request.header(REQUEST_ID, id);
        }
        request.body(Empty::new()).unwrap()
    }

    #[tokio::test]
    async fn a_trailers_only_error_is_logged_once_with_its_code_and_the_callers_request_id() {
        let (captured, _guard) = capture();
        let service = crate::telemetry::request_id_layers()
            .layer(RpcLogLayer::default())
            .service(tower::service_fn(|_: Request<Empty<Bytes>>| async {
                let response = Response::builder()
                    .header("grpc-status", "9")
                    .body(Empty::<Bytes>::new())
                    .unwrap();
                Ok::<_, Infallible>(response)
            }));

        let response = service
            .oneshot(call(
                "/simplebank.v1.SimpleBank/CreateTransfer",
                Some("req-42"),
            ))
            .await
            .unwrap();
        assert_eq!(response.headers()[REQUEST_ID], "req-42");
        response.into_body().collect().await.unwrap();

        let lines = captured.lines();
        assert_eq!(lines.len(), 1, "{lines:?}");
        let line = &lines[0];
        assert!(line.contains("INFO"), "{line}");
        assert!(
            line.contains("method=/simplebank.v1.SimpleBank/CreateTransfer"),
            "{line}"
        );
        assert!(line.contains("code=\"FAILED_PRECONDITION\""), "{line}");
        assert!(line.contains("request_id=\"req-42\""), "{line}");
        assert!(line.contains("duration_ms="), "{line}");
    }

    #[tokio::test]
    async fn a_streamed_response_is_logged_when_its_trailers_pass() {
        let (captured, _guard) = capture();
        let service = crate::telemetry::request_id_layers()
            .layer(RpcLogLayer::default())
            .service(tower::service_fn(|_: Request<Empty<Bytes>>| async {
                let mut trailers = HeaderMap::new();
                trailers.insert("grpc-status", HeaderValue::from_static("0"));
                let frames = vec![
                    Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"message"))),
                    Ok(Frame::trailers(trailers)),
                ];
                let body = StreamBody::new(tokio_stream::iter(frames));
                Ok::<_, Infallible>(Response::new(body))
            }));

        let response = service
            .oneshot(call("/simplebank.v1.SimpleBank/GetAccount", None))
            .await
            .unwrap();
        let generated = response.headers()[REQUEST_ID].to_str().unwrap().to_owned();
        assert!(uuid::Uuid::parse_str(&generated).is_ok(), "{generated}");
        assert!(
            captured.lines().is_empty(),
            "logged before the status was known"
        );

        let collected = response.into_body().collect().await.unwrap();
        assert_eq!(collected.trailers().unwrap()["grpc-status"], "0");
        let lines = captured.lines();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].contains("code=\"OK\""), "{}", lines[0]);
        assert!(
            lines[0].contains(&format!("request_id=\"{generated}\"")),
            "{}",
            lines[0]
        );
    }

    #[tokio::test]
    async fn a_response_dropped_before_its_status_is_logged_as_cancelled_at_most_once() {
        let (captured, _guard) = capture();
        let service = crate::telemetry::request_id_layers()
            .layer(RpcLogLayer::default())
            .service(tower::service_fn(|_: Request<Empty<Bytes>>| async {
                Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
            }));
        let response = service
            .oneshot(call("/simplebank.v1.SimpleBank/ListEntries", None))
            .await
            .unwrap();
        drop(response);
        let lines = captured.lines();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].contains("code=\"CANCELLED\""), "{}", lines[0]);
    }

    #[test]
    fn server_faults_are_told_apart_from_caller_mistakes() {
        assert_eq!(code_name(13), "INTERNAL");
        assert_eq!(code_name(99), "UNKNOWN");
        assert!(is_server_fault("INTERNAL"));
        assert!(!is_server_fault("FAILED_PRECONDITION"));
        assert!(!is_server_fault("UNAUTHENTICATED"));
    }
}
