//! Building and running the server: the same `Application` for `simplebank serve` and for the
//! black-box tests (which bind port 0 and point it at a database of their own).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tower_http::trace::TraceLayer;

use crate::auth::TokenMaker;
use crate::config::Settings;
use crate::http::{self, AppState};
use crate::service::BankService;
use crate::store::Store;

pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    store: Store,
}

impl Application {
    /// Connects (lazily), migrates if asked, and binds the listener — so `http_port()` is known
    /// before serving starts.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let store = Store::new(settings.database.lazy_pool()?);
        if settings.run_migrations {
            store
                .migrate()
                .await
                .context("applying database migrations")?;
        }
        let tokens = TokenMaker::new(settings.token_key.expose_secret())?;
        let service = BankService::new(
            Arc::new(store.clone()),
            Arc::new(tokens),
            settings.token_lifetimes,
        );
        let state = AppState {
            service,
            store: store.clone(),
        };
        let router = http::router(state, settings.body_limit).layer(TraceLayer::new_for_http());
        let listener = TcpListener::bind(settings.http_address)
            .await
            .with_context(|| format!("binding HTTP to {}", settings.http_address))?;
        Ok(Self {
            listener,
            router,
            store,
        })
    }

    pub fn http_port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Serves until `shutdown` completes, then lets in-flight requests finish and closes the pool.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        tracing::info!(address = %self.listener.local_addr()?, "HTTP API listening");
        axum::serve(
            self.listener,
            self.router
                .into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await?;
        self.store.pool().close().await;
        tracing::info!("stopped");
        Ok(())
    }
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
