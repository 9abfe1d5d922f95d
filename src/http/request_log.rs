//! One log line and one metrics sample per HTTP request: method, route, status, duration, client
//! and request id. The request id was settled by the layers outside this one
//! (`telemetry::request_id_layers`, which also echo it).
//!
//! The route is the matched template (`/v1/accounts/{id}`), which only the router knows: an inner
//! `route_layer` (`tag_route`) copies it onto the response, where this outer layer reads it.
//! Requests no route matched are counted under `unmatched`, so a scan of random paths cannot
//! create a metrics series per path.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::metrics::Metrics;
use crate::service::{ClientAddress, TrustedProxies, client_from_headers};
use crate::telemetry::request_id;

/// What the request log needs: where to count, and whose forwarding headers to believe.
#[derive(Clone)]
pub struct LogState {
    pub metrics: Arc<Metrics>,
    pub proxies: Arc<TrustedProxies>,
}

/// The route template of a matched request, carried on its response.
#[derive(Clone)]
pub struct RouteTag(pub String);

pub async fn tag_route(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned());
    let mut response = next.run(request).await;
    if let Some(route) = route {
        response.extensions_mut().insert(RouteTag(route));
    }
    response
}

pub async fn log_request(
    State(LogState { metrics, proxies }): State<LogState>,
    mut request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let id = request_id(request.headers()).to_owned();
    // Found once here, for the log line and for the handlers (sessions, login throttling).
    let client = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| {
            ClientAddress(client_from_headers(&proxies, peer.ip(), request.headers()))
        });
    if let Some(client) = client {
        request.extensions_mut().insert(client);
    }
    let client = client.map_or_else(|| "-".to_owned(), |c| c.0.to_string());
    let method = request.method().clone();
    let path = request.uri().path().to_owned();

    let response = next.run(request).await;

    let took = started.elapsed();
    let status = response.status();
    let route = response
        .extensions()
        .get::<RouteTag>()
        .map_or("unmatched", |tag| tag.0.as_str())
        .to_owned();
    metrics.http_request(&method, &route, status.as_u16(), took);
    let duration_ms = took.as_secs_f64() * 1000.0;
    let request_id = id.as_str();
    // The raw path is logged (it helps to read a 404), the template is what metrics group by.
    crate::request_line!(
        status.is_server_error(),
        target: "simplebank::http",
        method = %method,
        path,
        route,
        status = status.as_u16(),
        client,
        duration_ms,
        request_id,
        "request"
    );
    response
}
