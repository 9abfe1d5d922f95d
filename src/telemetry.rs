//! Logging: one subscriber for the whole process, filtered by `RUST_LOG` (default `info`).

use tracing_subscriber::EnvFilter;

/// What is logged when `RUST_LOG` is unset. Postgres NOTICEs ("relation already exists,
/// skipping" on every `migrate up`) are routine and stay below the default level.
const DEFAULT_FILTER: &str = "info,sqlx::postgres::notice=warn";

/// Installs the global subscriber. Human-readable for now; JSON for production arrives with the
/// server's configuration.
pub fn init() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    // `try_init`: a second call (tests) keeps the first subscriber instead of panicking.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
