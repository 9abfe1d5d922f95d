//! Settings, read once at start-up.
//!
//! For now only the database; the full layered configuration (defaults < `app.toml` <
//! environment) arrives with the server. Variable names follow simple_bank's (`DB_SOURCE`).

use std::str::FromStr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

/// Where the database is and how many connections to keep to it.
#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// `postgresql://user:password@host:port/db?sslmode=disable`. Secret: it holds a password.
    pub url: SecretString,
    pub max_connections: u32,
    /// How long a request waits for a free connection before failing as unavailable.
    pub acquire_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Names the variable but never echoes its value: it may contain a password.
    #[error("{0} is not a valid PostgreSQL URL (postgresql://user:password@host:port/database)")]
    InvalidDatabaseUrl(&'static str),
}

impl DatabaseSettings {
    pub fn new(url: SecretString) -> Self {
        Self {
            url,
            max_connections: 10,
            acquire_timeout: Duration::from_secs(5),
        }
    }

    pub fn connect_options(&self) -> Result<PgConnectOptions, ConfigError> {
        PgConnectOptions::from_str(self.url.expose_secret())
            .map_err(|_| ConfigError::InvalidDatabaseUrl("DB_SOURCE"))
    }

    /// How every pool of the process is configured (the tests use it too).
    ///
    /// `test_before_acquire(false)`: sqlx otherwise pings the server each time a connection leaves
    /// the pool, doubling the round trips of a one-statement transfer. A connection that died
    /// meanwhile fails its query instead, which the store reports as `Unavailable`, and the pool
    /// discards it.
    pub fn pool_options(&self) -> PgPoolOptions {
        PgPoolOptions::new()
            .max_connections(self.max_connections)
            .acquire_timeout(self.acquire_timeout)
            .test_before_acquire(false)
    }

    /// A pool with one connection opened now, so a command-line tool reports a wrong address or
    /// password as such instead of as a timeout.
    pub async fn connect(&self) -> Result<PgPool, sqlx::Error> {
        let options = self
            .connect_options()
            .map_err(|e| sqlx::Error::Configuration(e.into()))?;
        self.pool_options().connect_with(options).await
    }

    /// A pool that connects on first use, so a server can start (and report itself not ready)
    /// while the database is still coming up.
    pub fn lazy_pool(&self) -> Result<PgPool, ConfigError> {
        Ok(self
            .pool_options()
            .connect_lazy_with(self.connect_options()?))
    }
}
