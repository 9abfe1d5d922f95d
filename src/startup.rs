//! Building and running the server: the same `Application` for `simplebank serve` and for the
//! black-box tests (which bind port 0 and point it at a database of their own).
//!
//! HTTP and gRPC listen on separate addresses (SPEC §5), each with its own layers — a layer on a
//! shared router would wrap gRPC in HTTP semantics. One shutdown signal stops both, and the
//! workers, before the pool closes, in two steps (doc/reliability.md, "During a deploy"):
//!
//! 1. **Draining** (`SHUTDOWN_DELAY`): `/readyz` and gRPC health say not ready while every
//!    request is still served, so balancers take the replica out of rotation first. A request
//!    that arrives now is answered like any other: nothing is refused or reset.
//! 2. **Stopping** (`SHUTDOWN_GRACE`): both listeners close, HTTP/2 connections get GOAWAY with
//!    the last stream id (a stream above it was never seen, so a client or balancer may retry it
//!    elsewhere), event streams end with their `shutting_down` message, and in-flight requests
//!    finish. Whatever still runs when the grace is over is closed.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::auth::TokenMaker;
use crate::background;
use crate::config::{MailSenderChoice, Settings};
use crate::events::EventHub;
use crate::events::webhooks::{self, Secrets, WebhookWorker};
use crate::grpc::{self, GrpcApi};
use crate::http::{self, AppParts, AppState};
use crate::mail::{FileSender, LogSender, MailSender, OutboxWorker, SmtpSender};
use crate::metrics::Metrics;
use crate::service::{BankService, EventPorts, PerUserPlaces, StorePorts};
use crate::store::Store;

/// How often gRPC health re-checks the database.
const HEALTH_INTERVAL: Duration = Duration::from_secs(2);
const HEALTH_INTERVAL_WHILE_DOWN: Duration = Duration::from_millis(250);

/// Calls one gRPC connection may have open at once (HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS`).
const GRPC_STREAMS_PER_CONNECTION: u32 = 128;

/// The name gRPC health reports `simplebank.v1.SimpleBank` under.
const GRPC_SERVICE_NAME: &str = "simplebank.v1.SimpleBank";

/// `SHUTDOWN_DELAY` and `SHUTDOWN_GRACE`: the two steps of a graceful stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownSettings {
    /// How long a stopping server keeps serving while it reports itself not ready. A lone
    /// server has no balancer to wait for (0 in development); behind one it must outlast the
    /// balancer's health checks (interval × failures to mark down).
    pub delay: Duration,
    /// How long in-flight requests then get to finish before they are closed.
    pub grace: Duration,
}

impl ShutdownSettings {
    pub const DEFAULT_GRACE: Duration = Duration::from_secs(20);

    /// 5 s in production: a Kubernetes readiness probe every 2 s, failing twice, plus the
    /// endpoint update reaching the ingress; nothing to wait for in development.
    pub fn default_delay(production: bool) -> Duration {
        if production {
            Duration::from_secs(5)
        } else {
            Duration::ZERO
        }
    }
}

pub struct Application {
    http_listener: TcpListener,
    grpc_listener: TcpListener,
    router: axum::Router,
    service: BankService,
    store: Store,
    idempotency_retention: Duration,
    /// `HTTP_BODY_LIMIT`, which bounds a gRPC request message too.
    message_limit: usize,
    outbox: OutboxWorker,
    /// The horizon prober and stream hub (`events`), and webhook delivery.
    hub: EventHub,
    webhooks: WebhookWorker,
    metrics: Arc<Metrics>,
    /// `serve --ready-file`: where to say, in JSON, that the server is ready and where it is.
    ready_file: Option<PathBuf>,
    shutdown: ShutdownSettings,
    /// `HTTP_HEADER_READ_TIMEOUT`: also the idle timeout of kept-alive HTTP/1.1 connections.
    header_read_timeout: Duration,
}

impl Application {
    /// Connects (lazily), migrates if asked, and binds both listeners — so the ports are known
    /// before serving starts. Emails go where `settings.mail` says.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let mailer: Arc<dyn MailSender> = match &settings.mail.sender {
            MailSenderChoice::Log => Arc::new(LogSender),
            MailSenderChoice::File(dir) => Arc::new(FileSender::new(dir.clone())),
            MailSenderChoice::Smtp(smtp) => {
                Arc::new(SmtpSender::new(smtp).context("configuring SMTP")?)
            }
        };
        Self::build_with_mailer(settings, mailer).await
    }

    /// `build`, with emails handed to `mailer` (tests capture them this way).
    pub async fn build_with_mailer(
        settings: Settings,
        mailer: Arc<dyn MailSender>,
    ) -> anyhow::Result<Self> {
        let mut store = Store::new(settings.database.lazy_pool()?);
        if settings.run_migrations {
            store
                .migrate()
                .await
                .context("applying database migrations")?;
        }
        if let Some(group_commit) = settings.group_commit {
            store = store.with_group_commit(group_commit);
        }
        let tokens = TokenMaker::new(settings.token_key.expose_secret())?;
        let metrics = Arc::new(Metrics::new().with_money_calls(store.money_calls()));
        let hub = EventHub::new(Arc::new(store.clone()), settings.events);
        let webhook_settings = Arc::new(settings.webhooks);
        let webhooks = WebhookWorker::new(
            store.clone(),
            Arc::clone(&webhook_settings),
            Arc::clone(&metrics),
        )
        .context("building the webhook client")?;
        let service = BankService::new(
            StorePorts::from(store.clone()),
            Arc::new(tokens),
            settings.token_lifetimes,
        )
        .with_verification_ttl(settings.mail.verification_ttl)
        .with_hold_ttl(settings.hold_ttl)
        .with_login_limits(settings.login_limits)
        .with_request_limits(settings.request_limits)
        .with_user_limits(settings.user_limits)
        .with_anonymous_limit(settings.anonymous_per_second)
        .with_password_limits(settings.password_limits)
        .with_trusted_proxies(settings.trusted_proxies.clone())
        .with_metrics(Arc::clone(&metrics))
        .with_events(EventPorts {
            hub: hub.clone(),
            streams_per_user: PerUserPlaces::new(settings.events.max_streams_per_user),
            secrets: Secrets::new(&webhook_settings.secret_key),
            allow_private: webhook_settings.allow_private,
        });
        let outbox = OutboxWorker::new(store.clone(), mailer, settings.mail.outbox.clone())
            .with_wakeup(service.mail_queued());
        let state = AppState::new(AppParts {
            service: service.clone(),
            store: store.clone(),
            metrics: Arc::clone(&metrics),
        });
        let router = http::router(
            state,
            http::HttpOptions {
                body_limit: settings.body_limit,
                allowed_origins: settings.allowed_origins.clone(),
                simple_bank_compat: settings.simple_bank_compat,
            },
        );
        let http_listener = TcpListener::bind(settings.http_address)
            .await
            .with_context(|| format!("binding HTTP to {}", settings.http_address))?;
        let grpc_listener = TcpListener::bind(settings.grpc_address)
            .await
            .with_context(|| format!("binding gRPC to {}", settings.grpc_address))?;
        Ok(Self {
            http_listener,
            grpc_listener,
            router,
            service,
            store,
            idempotency_retention: settings.idempotency_retention,
            message_limit: settings.body_limit,
            outbox,
            hub,
            webhooks,
            metrics,
            ready_file: None,
            shutdown: settings.shutdown,
            header_read_timeout: settings.header_read_timeout,
        })
    }

    /// Once both listeners are bound and the database has answered, write
    /// `{"http": "127.0.0.1:8080", "grpc": "127.0.0.1:9090", "pid": 1234}` to `path` (written
    /// whole, then renamed into place, so a reader never sees half of it); removed at shutdown.
    /// Scripts that start the server read its ports from here instead of from its log.
    pub fn with_ready_file(mut self, path: PathBuf) -> Self {
        self.ready_file = Some(path);
        self
    }

    pub fn http_port(&self) -> u16 {
        self.http_listener
            .local_addr()
            .map(|a| a.port())
            .unwrap_or(0)
    }

    pub fn grpc_port(&self) -> u16 {
        self.grpc_listener
            .local_addr()
            .map(|a| a.port())
            .unwrap_or(0)
    }

    /// Serves HTTP and gRPC until `shutdown` completes; then drains (not ready, still serving)
    /// for `SHUTDOWN_DELAY`, stops accepting, lets in-flight requests finish within
    /// `SHUTDOWN_GRACE`, and closes the pool. A second Ctrl-C or SIGTERM while draining skips
    /// the rest of the delay.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (stop, stopped) = watch::channel(false);
        let (drain, draining) = watch::channel(false);
        let admission = self.service.admission().clone();
        let ShutdownSettings { delay, grace } = self.shutdown;
        tokio::spawn(async move {
            shutdown.await;
            admission.start_draining();
            let _ = drain.send(true);
            if !delay.is_zero() {
                tracing::info!(
                    ?delay,
                    "draining: not ready, still serving, until balancers stop sending (SHUTDOWN_DELAY)"
                );
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = shutdown_signal() => {}
                }
            }
            tracing::info!(
                ?grace,
                "stopping: listeners closed, finishing in-flight requests (SHUTDOWN_GRACE)"
            );
            let _ = stop.send(true);
        });
        let until_stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };

        let (health, health_service) = tonic_health::server::health_reporter();
        // Known from the first request on, NOT_SERVING until the first database check passes.
        health
            .set_service_status("", ServingStatus::NotServing)
            .await;
        health
            .set_service_status(GRPC_SERVICE_NAME, ServingStatus::NotServing)
            .await;
        let reflection_v1 = reflection().build_v1()?;
        let reflection_v1alpha = reflection().build_v1alpha()?;
        let bank = GrpcApi::server(self.service.clone(), self.message_limit);

        let (http_address, grpc_address) = (
            self.http_listener.local_addr()?,
            self.grpc_listener.local_addr()?,
        );
        tracing::info!(address = %http_address, "HTTP API listening");
        tracing::info!(address = %grpc_address, "gRPC API listening");
        let ready = self.ready_file.clone().map(|path| ReadyFile {
            path,
            http: http_address,
            grpc: grpc_address,
        });
        // TCP_NODELAY on every accepted connection, both APIs: with Nagle's algorithm a small
        // write that follows another unacknowledged one waits for the peer's delayed ACK (up to
        // 40 ms). HTTP/2 writes a response as several small frames, so gRPC answers sat behind
        // that timer: `make bench` showed it as a 42 ms p99 at 16 clients.
        let http = http::serve::serve(
            self.http_listener,
            self.router,
            until_stopped(stopped.clone()),
            self.header_read_timeout,
        );
        let grpc = tonic::transport::Server::builder()
            // A connection is bounded in what it holds: at most GRPC_STREAMS_PER_CONNECTION
            // calls at once (a client that opens more waits for HTTP/2 flow control, it does not
            // get more of the server), and a peer that stops answering HTTP/2 pings is dropped
            // (a half-open connection would otherwise hold its streams forever).
            .max_concurrent_streams(GRPC_STREAMS_PER_CONNECTION)
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .tcp_keepalive(Some(Duration::from_secs(60)))
            .layer(
                crate::telemetry::request_id_layers().layer(grpc::RpcLogLayer::new(
                    Arc::clone(&self.metrics),
                    self.service.trusted_proxies(),
                )),
            )
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(bank)
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(self.grpc_listener)
                    .with_nodelay(Some(true)),
                until_stopped(stopped.clone()),
            );
        let checker = check_health(
            self.store.clone(),
            self.service.clone(),
            health,
            ready.as_ref(),
            draining,
            stopped.clone(),
        );
        let purger = background::purge_idempotency_keys(
            self.store.clone(),
            self.idempotency_retention,
            stopped.clone(),
        );
        let mailer = self.outbox.run(stopped.clone());
        let sweeper = background::sweep_expired_holds(self.store.clone(), stopped.clone());
        let events = self.hub.clone().run(stopped.clone());
        let fan_out = webhooks::fan_out(
            self.store.clone(),
            self.hub.clone(),
            self.webhooks.wakeup(),
            Arc::clone(&self.metrics),
            stopped.clone(),
        );
        let deliverer = self.webhooks.run(stopped.clone());

        let trimmer = background::release_free_memory(stopped.clone());
        let everything = async {
            tokio::join!(
                http, grpc, checker, purger, mailer, sweeper, trimmer, events, fan_out, deliverer
            )
        };
        let mut grace_over = stopped.clone();
        let grace_over = async move {
            let _ = grace_over.wait_for(|stop| *stop).await;
            tokio::time::sleep(grace).await;
        };
        tokio::select! {
            (http, grpc, (), (), (), (), (), (), (), ()) = everything => {
                http.context("HTTP server")?;
                grpc.context("gRPC server")?;
                self.store.pool().close().await;
            }
            () = grace_over => {
                // Dropping the servers' futures leaves their connection tasks to end with the
                // runtime; the pool is not awaited, since a request still holding a
                // connection would hold the exit too.
                tracing::warn!(
                    ?grace,
                    "SHUTDOWN_GRACE is over with requests still in flight; closing them"
                );
            }
        }
        if let Some(ready) = &ready {
            ready.remove();
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// The `--ready-file` and what goes into it.
struct ReadyFile {
    path: PathBuf,
    http: SocketAddr,
    grpc: SocketAddr,
}

impl ReadyFile {
    fn write(&self) -> std::io::Result<()> {
        let body = serde_json::json!({
            "http": self.http.to_string(),
            "grpc": self.grpc.to_string(),
            "pid": std::process::id(),
        });
        let partial = partial_path(&self.path);
        std::fs::write(&partial, format!("{body}\n"))?;
        std::fs::rename(&partial, &self.path)
    }

    fn remove(&self) {
        if let Err(err) = std::fs::remove_file(&self.path)
            && err.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.path.display(), error = %err, "cannot remove the ready file");
        }
    }
}

/// `ready.json` -> `ready.json.partial`, beside it (a rename within one directory is atomic).
fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

/// Server reflection over everything a client may meet: the bank, health, and the
/// `google.rpc` error details (so evans, grpcurl and `buf curl` can decode an `ErrorInfo`).
fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(grpc::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
}

/// Reports SERVING over gRPC health only while the database answers and the server is not
/// draining, re-checked every `HEALTH_INTERVAL` and at once when draining starts, until
/// shutdown (then NOT_SERVING).
async fn check_health(
    store: Store,
    service: BankService,
    health: HealthReporter,
    mut ready: Option<&ReadyFile>,
    mut draining: watch::Receiver<bool>,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        let reachable = store.ping().await.is_ok();
        if reachable && !service.admission().database_reachable() {
            // Back: connections opened while it was down may lead to where it was down (a
            // standby, a server going away); only connections opened from now on serve.
            store.retire_connections();
        }
        if reachable && let Some(file) = ready.take() {
            match file.write() {
                Ok(()) => tracing::info!(path = %file.path.display(), "ready file written"),
                Err(err) => {
                    tracing::error!(path = %file.path.display(), error = %err, "cannot write the ready file")
                }
            }
        }
        // Requests fail fast while this says down (`Admission::check_database`).
        service.admission().set_database_reachable(reachable);
        let status = if reachable && !service.admission().draining() {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        health.set_service_status("", status).await;
        health.set_service_status(GRPC_SERVICE_NAME, status).await;
        // Down, look again soon: every request is refused until the database is seen back.
        let pause = if reachable {
            HEALTH_INTERVAL
        } else {
            HEALTH_INTERVAL_WHILE_DOWN
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = draining.wait_for(|drain| *drain), if !*draining.borrow() => {}
            _ = stopped.wait_for(|stop| *stop) => break,
        }
    }
    health
        .set_service_status("", ServingStatus::NotServing)
        .await;
    health
        .set_service_status(GRPC_SERVICE_NAME, ServingStatus::NotServing)
        .await;
}

/// Resolves on Ctrl-C or SIGTERM (what `docker stop` and Kubernetes send).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown signal received; finishing in-flight requests");
}
