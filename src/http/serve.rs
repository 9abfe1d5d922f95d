//! The HTTP server's accept loop: axum's router on hyper, with the connection bounds SPEC §10
//! asks for, which `axum::serve` cannot set (it gives hyper no timer, so hyper enforces no
//! header-read timeout at all):
//!
//! - HTTP/1.1: the request head must arrive within `HTTP_HEADER_READ_TIMEOUT` (default 30 s),
//!   and the same timer runs while a kept-alive connection waits for its next request, so it is
//!   the idle timeout too. A client that opens connections and sends nothing, or a byte a
//!   minute (slowloris), is disconnected instead of holding a socket forever.
//! - HTTP/2 (h2c): at most `STREAMS_PER_CONNECTION` requests at once per connection, and a peer
//!   that stops answering pings is dropped.
//!
//! Graceful shutdown as `axum::serve` does it: stop accepting, let every connection finish its
//! requests (HTTP/2 gets GOAWAY), then return.

use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Request};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::ServiceExt as _;

/// `HTTP_HEADER_READ_TIMEOUT`'s default: how long a client has to send a request's head, and
/// how long a kept-alive HTTP/1.1 connection may sit idle (hyper's own default, and nginx's
/// order of magnitude).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Requests at once on one HTTP/2 connection.
pub const STREAMS_PER_CONNECTION: u32 = 128;

/// Serves `router` on `listener` until `shutdown` completes, then drains.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()>,
    header_read_timeout: Duration,
) -> std::io::Result<()> {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(STREAMS_PER_CONNECTION)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(10));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: pass, as axum::serve does, rather
                    // than spin; connection-level errors just mean that client is gone.
                    tracing::debug!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // TCP_NODELAY: a small write after another unacknowledged one would otherwise wait for
        // the peer's delayed ACK (up to 40 ms).
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(error = %err, "could not set TCP_NODELAY");
        }
        let service =
            router
                .clone()
                .map_request(move |mut request: Request<hyper::body::Incoming>| {
                    request.extensions_mut().insert(ConnectInfo(peer));
                    request.map(axum::body::Body::new)
                });
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(tcp), TowerToHyperService::new(service))
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::trace!(error = %err, "connection ended");
            }
        });
    }
    // The listening socket closes now: new clients are refused, not left hanging.
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
