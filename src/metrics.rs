//! Prometheus metrics, served as text at `GET /metrics`.
//!
//! - `http_requests_total` / `http_request_duration_seconds` by method (a standard method or
//!   `other`), route (the route template, never the raw path: ids would make every account its
//!   own series; `unmatched` when no route matched) and status;
//! - `grpc_requests_total` / `grpc_request_duration_seconds` by RPC (one the server serves, or
//!   `unmatched`) and status code;
//!
//! Every label value comes from a set fixed in the code, so no request, however made up, can add
//! a series: a client that invents methods or paths costs the same memory as one that does not.
//! - `money_movements_total` by kind (transfer, deposit, withdrawal, hold, capture, void) and
//!   outcome (`committed`,
//!   `replayed`, or the error code that refused it);
//! - `webhook_deliveries_total` by outcome, `webhook_outbox_lag_seconds` (the oldest event not
//!   yet delivered everywhere), `event_streams` open and `event_streams_ended_total` by reason;
//! - `db_money_single_calls_total`, `db_money_batch_calls_total` and
//!   `db_money_batched_movements_total`: the database calls of the unkeyed money paths (one
//!   round trip each) and what the batches carried;
//! - `db_pool_connections` (open, idle) and `db_pool_max_connections`, read at scrape time.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use sqlx::PgPool;

use crate::store::MoneyCalls;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: &'static str,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabels {
    method: &'static str,
    code: &'static str,
}

/// An HTTP method as a label: one of RFC 9110's methods and PATCH, or `other`.
pub fn method_label(method: &http::Method) -> &'static str {
    use http::Method;
    const STANDARD: [Method; 9] = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::CONNECT,
        Method::OPTIONS,
        Method::TRACE,
        Method::PATCH,
    ];
    STANDARD
        .iter()
        .find(|standard| *standard == method)
        .map_or("other", |standard| match *standard {
            Method::GET => "GET",
            Method::HEAD => "HEAD",
            Method::POST => "POST",
            Method::PUT => "PUT",
            Method::DELETE => "DELETE",
            Method::CONNECT => "CONNECT",
            Method::OPTIONS => "OPTIONS",
            Method::TRACE => "TRACE",
            _ => "PATCH",
        })
}

/// A gRPC path as a label: the path itself when the server serves that method (the bank's,
/// health's and reflection's, read from their descriptors once), else `unmatched`.
pub fn rpc_label(path: &str) -> &'static str {
    static KNOWN: std::sync::LazyLock<std::collections::HashSet<&'static str>> =
        std::sync::LazyLock::new(|| {
            use prost::Message as _;
            [
                crate::grpc::pb::FILE_DESCRIPTOR_SET,
                tonic_health::pb::FILE_DESCRIPTOR_SET,
                tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            ]
            .into_iter()
            .filter_map(|bytes| prost_types::FileDescriptorSet::decode(bytes).ok())
            .flat_map(|set| set.file)
            .flat_map(|file| {
                let package = file.package.clone().unwrap_or_default();
                file.service.into_iter().flat_map(move |service| {
                    let prefix = format!("/{package}.{}/", service.name());
                    service
                        .method
                        .into_iter()
                        .map(move |method| format!("{prefix}{}", method.name()))
                })
            })
            // A fixed set of a few dozen names, made once: leaking them gives `'static` labels.
            .map(|path| &*Box::leak(path.into_boxed_str()))
            .collect()
        });
    KNOWN.get(path).copied().unwrap_or("unmatched")
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MoneyLabels {
    kind: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    state: &'static str,
}

type Timings<L> = Family<L, Histogram, fn() -> Histogram>;

/// Latency buckets from 0.5 ms to about 8 s, doubling.
fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 15))
}

/// Every metric of the process. Cheap to share (`Arc`); recording is lock-free after the first
/// use of a label set.
pub struct Metrics {
    registry: Registry,
    http_requests: Family<HttpLabels, Counter>,
    http_duration: Timings<HttpLabels>,
    rpc_requests: Family<RpcLabels, Counter>,
    rpc_duration: Timings<RpcLabels>,
    money: Family<MoneyLabels, Counter>,
    pool_connections: Family<PoolLabels, Gauge>,
    pool_max: Gauge,
    webhook_deliveries: Family<OutcomeLabels, Counter>,
    webhook_lag: Gauge<f64, std::sync::atomic::AtomicU64>,
    event_streams: Gauge,
    event_streams_ended: Family<OutcomeLabels, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let http_requests = Family::<HttpLabels, Counter>::default();
        let http_duration: Timings<HttpLabels> = Family::new_with_constructor(latency);
        let rpc_requests = Family::<RpcLabels, Counter>::default();
        let rpc_duration: Timings<RpcLabels> = Family::new_with_constructor(latency);
        let money = Family::<MoneyLabels, Counter>::default();
        let pool_connections = Family::<PoolLabels, Gauge>::default();
        let pool_max = Gauge::default();
        let webhook_deliveries = Family::<OutcomeLabels, Counter>::default();
        let webhook_lag = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        let event_streams = Gauge::default();
        let event_streams_ended = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "webhook_deliveries",
            "Webhook delivery attempts, by outcome (delivered, retrying, failed)",
            webhook_deliveries.clone(),
        );
        registry.register(
            "webhook_outbox_lag_seconds",
            "Age of the oldest event not yet delivered to every webhook endpoint",
            webhook_lag.clone(),
        );
        registry.register(
            "event_streams",
            "Live event streams (SSE and WatchAccount) open now",
            event_streams.clone(),
        );
        registry.register(
            "event_streams_ended",
            "Event streams the server ended, by reason",
            event_streams_ended.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests answered",
            http_requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request",
            http_duration.clone(),
        );
        registry.register("grpc_requests", "gRPC calls answered", rpc_requests.clone());
        registry.register(
            "grpc_request_duration_seconds",
            "Time to answer a gRPC call",
            rpc_duration.clone(),
        );
        registry.register(
            "money_movements",
            "Transfers, deposits and withdrawals, by outcome",
            money.clone(),
        );
        registry.register(
            "db_pool_connections",
            "Database connections held by the pool",
            pool_connections.clone(),
        );
        registry.register(
            "db_pool_max_connections",
            "Most connections the pool may open",
            pool_max.clone(),
        );
        Self {
            registry,
            http_requests,
            http_duration,
            rpc_requests,
            rpc_duration,
            money,
            pool_connections,
            pool_max,
            webhook_deliveries,
            webhook_lag,
            event_streams,
            event_streams_ended,
        }
    }

    /// `outcome`: delivered, retrying or failed.
    pub fn webhook_delivery(&self, outcome: &'static str) {
        self.webhook_deliveries
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    pub fn set_webhook_lag(&self, seconds: f64) {
        self.webhook_lag.set(seconds);
    }

    /// A stream opened (`1`) or closed (`-1`).
    pub fn event_stream(&self, delta: i64) {
        self.event_streams.inc_by(delta);
    }

    /// The server ended a stream (`EndReason::as_str`).
    pub fn event_stream_ended(&self, reason: &'static str) {
        self.event_streams_ended
            .get_or_create(&OutcomeLabels { outcome: reason })
            .inc();
    }

    pub fn shared() -> Arc<Self> {
        Arc::new(Self::new())
    }

    /// Adds the store's counters of money-path database calls (`MoneyCalls`).
    pub fn with_money_calls(mut self, calls: &MoneyCalls) -> Self {
        self.registry.register(
            "db_money_single_calls",
            "Database calls moving one unkeyed movement (one round trip each)",
            calls.single.clone(),
        );
        self.registry.register(
            "db_money_batch_calls",
            "Group-commit batches sent (one database call, one round trip, each)",
            calls.batches.clone(),
        );
        self.registry.register(
            "db_money_batched_movements",
            "Movements carried by group-commit batches",
            calls.batched.clone(),
        );
        self
    }

    /// `route`: a matched route's template, or `unmatched` (never a raw path).
    pub fn http_request(&self, method: &http::Method, route: &str, status: u16, took: Duration) {
        let labels = HttpLabels {
            method: method_label(method),
            route: route.to_owned(),
            status,
        };
        self.http_requests.get_or_create(&labels).inc();
        self.http_duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// `path`: the request's `/package.Service/Method`, counted under `unmatched` unless the
    /// server serves it.
    pub fn rpc(&self, path: &str, code: &'static str, took: Duration) {
        let labels = RpcLabels {
            method: rpc_label(path),
            code,
        };
        self.rpc_requests.get_or_create(&labels).inc();
        self.rpc_duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// `kind`: transfer, deposit or withdrawal; `outcome`: committed, replayed, or an error code.
    pub fn money_movement(&self, kind: &'static str, outcome: &'static str) {
        self.money
            .get_or_create(&MoneyLabels { kind, outcome })
            .inc();
    }

    /// The text exposition, with the pool gauges read now.
    pub fn render(&self, pool: &PgPool) -> String {
        let open = i64::from(pool.size());
        let idle = i64::try_from(pool.num_idle()).unwrap_or(i64::MAX);
        self.pool_connections
            .get_or_create(&PoolLabels { state: "open" })
            .set(open);
        self.pool_connections
            .get_or_create(&PoolLabels { state: "idle" })
            .set(idle);
        self.pool_max
            .set(i64::from(pool.options().get_max_connections()));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn recorded_values_show_up_in_the_text_format() {
        let metrics = Metrics::new();
        let post = http::Method::POST;
        metrics.http_request(&post, "/v1/transfers", 201, Duration::from_millis(3));
        metrics.http_request(&post, "/v1/transfers", 201, Duration::from_millis(5));
        metrics.rpc(
            "/simplebank.v1.SimpleBank/CreateTransfer",
            "OK",
            Duration::from_millis(2),
        );
        metrics.money_movement("transfer", "insufficient_funds");
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(7)
            .connect_lazy("postgresql://u:p@127.0.0.1:1/db")
            .unwrap();
        let text = metrics.render(&pool);
        for expected in [
            r#"http_requests_total{method="POST",route="/v1/transfers",status="201"} 2"#,
            r#"http_request_duration_seconds_count{method="POST",route="/v1/transfers",status="201"} 2"#,
            r#"grpc_requests_total{method="/simplebank.v1.SimpleBank/CreateTransfer",code="OK"} 1"#,
            r#"money_movements_total{kind="transfer",outcome="insufficient_funds"} 1"#,
            r#"db_pool_max_connections 7"#,
            r#"db_pool_connections{state="idle"} 0"#,
        ] {
            assert!(text.contains(expected), "missing {expected} in\n{text}");
        }
    }

    #[tokio::test]
    async fn invented_methods_and_rpcs_share_one_series_each() {
        let metrics = Metrics::new();
        let pool = sqlx::postgres::PgPoolOptions::new()
            .connect_lazy("postgresql://u:p@127.0.0.1:1/db")
            .unwrap();
        let once = |n: usize| {
            let method = http::Method::from_bytes(format!("INVENTED{n}").as_bytes()).unwrap();
            metrics.http_request(&method, "unmatched", 404, Duration::from_millis(1));
            metrics.rpc(
                &format!("/simplebank.v1.SimpleBank/Invented{n}"),
                "UNIMPLEMENTED",
                Duration::from_millis(1),
            );
        };
        once(0);
        let before = metrics.render(&pool);
        for n in 1..1000 {
            once(n);
        }
        let text = metrics.render(&pool);
        // The same series; only their numbers grew a few digits.
        assert_eq!(text.lines().count(), before.lines().count());
        assert!(
            text.len() < before.len() + 1024,
            "{} -> {}",
            before.len(),
            text.len()
        );
        assert!(text.contains(
            r#"http_requests_total{method="other",route="unmatched",status="404"} 1000"#
        ));
        assert!(
            text.contains(r#"grpc_requests_total{method="unmatched",code="UNIMPLEMENTED"} 1000"#)
        );
        assert_eq!(method_label(&http::Method::PATCH), "PATCH");
        assert_eq!(
            rpc_label("/grpc.health.v1.Health/Check"),
            "/grpc.health.v1.Health/Check"
        );
        assert_eq!(
            rpc_label("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"),
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
        );
    }
}
