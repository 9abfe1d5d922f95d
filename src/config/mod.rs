//! Settings, read once at start-up: defaults < a TOML file (`app.toml` in the working directory,
//! or `--config PATH`) < environment variables with simple_bank's names (SPEC §5).
//!
//! `raw` merges the layers into one serde struct whose fields are the settings (each value checked
//! by its type, `values`); converting it into [`Settings`] applies the defaults and the rules
//! between settings. A bad value stops the start with a message naming the variable (never
//! echoing a secret). The file uses the same names in lower case (`db_source = "..."`), and a
//! name it does not know is refused rather than ignored: a typo must not silently fall back to a
//! default.

mod raw;
mod values;

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretBox, SecretString};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::auth::HashLimits;
use crate::auth::TokenMaker;
use crate::domain::HOLD_TTL_DEFAULT;
use crate::events::EventSettings;
use crate::events::webhooks::WebhookSettings;
use crate::mail::{OutboxSettings, SmtpSettings, SmtpTls};
use crate::service::{
    ANONYMOUS_REQUESTS_PER_SECOND, DEFAULT_VERIFICATION_TTL, LoginLimits, RequestLimits,
    TokenLifetimes, TrustedProxies, UserLimits,
};
use crate::startup::ShutdownSettings;
use crate::store::GroupCommitSettings;
use crate::telemetry::LogFormat;

pub use raw::RawSettings;
use values::{Bounded, Flag, GoDuration, HoldTtl, MailSenderKind, TokenKey};
pub use values::{Environment, parse_duration};

/// Where verification emails go.
#[derive(Debug)]
pub enum MailSenderChoice {
    /// Logged, not sent.
    Log,
    /// Logged and written to a file in this directory (`MAIL_DIR`), not sent (the development
    /// default).
    File(std::path::PathBuf),
    Smtp(SmtpSettings),
}

/// Email verification and its delivery.
#[derive(Debug)]
pub struct MailSettings {
    /// `MAIL_SENDER`: `file` (default in development), `log`, or `smtp` (default in production).
    pub sender: MailSenderChoice,
    /// The outbox worker; `link_base` from `VERIFY_EMAIL_BASE_URL`.
    pub outbox: OutboxSettings,
    /// `VERIFY_EMAIL_TTL`, default 15 minutes.
    pub verification_ttl: Duration,
}

/// Where the database is and how many connections to keep to it.
#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// `postgresql://user:password@host:port/db?sslmode=disable`. Secret: it holds a password.
    pub url: SecretString,
    pub max_connections: u32,
    /// How long a request waits for a free connection before failing as unavailable.
    pub acquire_timeout: Duration,
    /// PostgreSQL's `lock_timeout` for every connection: the longest any statement waits for a
    /// row lock. The server sets it to `REQUEST_TIMEOUT`, so the database work of a request
    /// answered `unavailable` at its deadline ends then too, instead of holding a connection
    /// for as long as some other session holds the row.
    ///
    /// It is also `idle_in_transaction_session_timeout`: a replica frozen in the middle of a
    /// transaction (SIGSTOP, a stalled node, a partition) would otherwise hold its row locks,
    /// and every transfer touching those accounts would wait, until it woke. No request of
    /// ours leaves a transaction idle for that long, and its caller was answered by then.
    pub lock_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Names the variable but never echoes its value: it may contain a password.
    #[error("{0} is not a valid PostgreSQL URL (postgresql://user:password@host:port/database)")]
    InvalidDatabaseUrl(&'static str),
    #[error("{0} is not set")]
    Missing(&'static str),
    #[error("{key} is invalid: {reason}")]
    Invalid { key: String, reason: String },
    #[error("configuration file {file}: {reason}")]
    File { file: String, reason: String },
}

impl DatabaseSettings {
    pub fn new(url: SecretString) -> Self {
        Self {
            url,
            max_connections: 10,
            acquire_timeout: Duration::from_secs(5),
            lock_timeout: RequestLimits::default().request_timeout,
        }
    }

    pub fn connect_options(&self) -> Result<PgConnectOptions, ConfigError> {
        let url = self.url.expose_secret();
        // sqlx's parser ignores the scheme; a mysql:// URL must not pass as a Postgres one.
        if !(url.starts_with("postgresql://") || url.starts_with("postgres://")) {
            return Err(ConfigError::InvalidDatabaseUrl("DB_SOURCE"));
        }
        let options = PgConnectOptions::from_str(url)
            .map_err(|_| ConfigError::InvalidDatabaseUrl("DB_SOURCE"))?;
        let lock_timeout = format!("{}ms", self.lock_timeout.as_millis().max(1));
        Ok(options.options([
            ("lock_timeout", lock_timeout.as_str()),
            ("idle_in_transaction_session_timeout", lock_timeout.as_str()),
        ]))
    }

    /// How every pool of the process is configured (the tests use it too).
    ///
    /// `test_before_acquire(false)`: sqlx otherwise pings the server each time a connection leaves
    /// the pool, doubling the round trips of a one-statement transfer. A connection that died
    /// meanwhile fails its query instead, which the store reports as `Unavailable`, and the pool
    /// discards it.
    ///
    /// `before_acquire` costs no round trip: it closes a connection opened before the database
    /// tier was last seen to change (a failover, a standby answering; `store::is_retired`).
    pub fn pool_options(&self) -> PgPoolOptions {
        PgPoolOptions::new()
            .max_connections(self.max_connections)
            .acquire_timeout(self.acquire_timeout)
            .test_before_acquire(false)
            .before_acquire(|_, meta| {
                Box::pin(std::future::ready(Ok(!crate::store::is_retired(meta.age))))
            })
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

/// Everything `simplebank serve` needs.
#[derive(Debug)]
pub struct Settings {
    pub environment: Environment,
    /// `LOG_FORMAT`: `json` (default in production) or `pretty`.
    pub log_format: LogFormat,
    pub database: DatabaseSettings,
    /// `HTTP_SERVER_ADDRESS`, default `0.0.0.0:8080`; port 0 picks a free one (tests).
    pub http_address: SocketAddr,
    /// `GRPC_SERVER_ADDRESS`, default `0.0.0.0:9090`.
    pub grpc_address: SocketAddr,
    /// `TOKEN_SYMMETRIC_KEY`: exactly 32 bytes.
    pub token_key: SecretBox<[u8; TokenMaker::KEY_LEN]>,
    pub token_lifetimes: TokenLifetimes,
    /// `HTTP_BODY_LIMIT` in bytes, default 64 KiB.
    pub body_limit: usize,
    /// `HTTP_HEADER_READ_TIMEOUT`, default 30s: how long a client has to send a request's
    /// head, and how long a kept-alive HTTP/1.1 connection may sit idle.
    pub header_read_timeout: Duration,
    /// `IDEMPOTENCY_KEY_RETENTION`, default 24 h: how long a retry with the same key is answered
    /// from the first request; older records are purged.
    pub idempotency_retention: Duration,
    /// `HOLD_TTL`, default 7 days, at most 30: how long a hold lives when its payer does not say.
    pub hold_ttl: Duration,
    pub mail: MailSettings,
    /// `ALLOWED_ORIGINS`: browser origins allowed to call the HTTP API (CORS), comma-separated,
    /// e.g. `http://localhost:3000,https://bank.example.com`. Empty (the default): none.
    pub allowed_origins: Vec<http::HeaderValue>,
    /// `SIMPLE_BANK_COMPAT`: also serve simple_bank's routes and shapes (default false).
    pub simple_bank_compat: bool,
    /// `GROUP_COMMIT` (default true), `GROUP_COMMIT_WINDOW` (default 0, at most 2ms) and
    /// `GROUP_COMMIT_LANES` (default 4, or half of `DB_MAX_CONNECTIONS` if fewer; 1 to 16): money
    /// movements arriving under load share transactions. `None`: one transaction each.
    pub group_commit: Option<GroupCommitSettings>,
    /// `LOGIN_ATTEMPTS_PER_IP` (default 30) and `LOGIN_FAILURES_PER_USERNAME` (default 10), per
    /// minute; 0 turns one off.
    pub login_limits: LoginLimits,
    /// `MAX_CONCURRENT_REQUESTS` (default 1024) and `REQUEST_TIMEOUT` (default 30s), both APIs
    /// together.
    pub request_limits: RequestLimits,
    /// `USER_MAX_CONCURRENT_REQUESTS` (default 32) and `USER_REQUESTS_PER_SECOND` (default 200):
    /// each authenticated user's share of the server, both APIs together.
    pub user_limits: UserLimits,
    /// `ANONYMOUS_REQUESTS_PER_SECOND` (default 20): sign-ups and email verifications per
    /// client address, as many at once.
    pub anonymous_per_second: u32,
    /// `PASSWORD_HASH_CONCURRENCY` (default: the number of cores) and `PASSWORD_HASH_QUEUE`
    /// (default: four per thread): password hashes at once, and how many may wait.
    pub password_limits: HashLimits,
    /// `TRUSTED_PROXIES`: CIDR blocks whose `X-Forwarded-For` / `Forwarded` name the client
    /// (default: none, so the TCP peer is the client).
    pub trusted_proxies: TrustedProxies,
    /// `WEBHOOK_SECRET_KEY` (exactly 32 bytes; required in production), `WEBHOOK_ALLOW_PRIVATE`
    /// (default: true in development only), `WEBHOOK_RETRY_FOR` (default 24h) and
    /// `WEBHOOK_TIMEOUT` (default 10s).
    pub webhooks: WebhookSettings,
    /// `EVENTS_POLL_INTERVAL` (default 100ms: how late a stream or webhook may be, beyond the
    /// commit), `MAX_STREAMS` (default 256 live streams per replica) and `MAX_STREAMS_PER_USER`
    /// (default 8).
    pub events: EventSettings,
    /// `SHUTDOWN_DELAY` (default 0 in development, 5s in production) and `SHUTDOWN_GRACE`
    /// (default 20s): how a stopping server leaves its balancers' rotation, then drains.
    pub shutdown: ShutdownSettings,
    /// Apply pending migrations before serving (`serve --no-migrate` turns it off).
    pub run_migrations: bool,
}

/// The development `WEBHOOK_SECRET_KEY`: fixed, so webhook secrets survive a restart of
/// `make run`; production refuses to start without a key of its own.
const DEVELOPMENT_WEBHOOK_KEY: &[u8; 32] = b"simplebank-development-webhooks!";

impl Settings {
    /// The settings that `get` returns by environment variable name, over the defaults.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Self::try_from(RawSettings::from_lookup(get)?)
    }
}

/// Defaults, and the rules between settings. Each value was checked by its type already.
///
/// In development a missing token key is replaced by a random one (tokens then die with the
/// process, and the log says so); production refuses to start without one.
impl TryFrom<RawSettings> for Settings {
    type Error = ConfigError;

    fn try_from(raw: RawSettings) -> Result<Self, ConfigError> {
        let log_format = raw.log_format();
        let environment = raw.environment.unwrap_or(Environment::Development);
        let production = environment == Environment::Production;
        let request_defaults = RequestLimits::default();
        let request_limits = RequestLimits {
            max_concurrent_requests: raw
                .max_concurrent_requests
                .map_or(request_defaults.max_concurrent_requests, Bounded::get),
            request_timeout: duration(raw.request_timeout, request_defaults.request_timeout),
        };
        let mut database =
            DatabaseSettings::new(raw.db_source.ok_or(ConfigError::Missing("DB_SOURCE"))?);
        database.connect_options()?;
        database.max_connections = raw
            .db_max_connections
            .map_or(database.max_connections, Bounded::get);
        database.acquire_timeout = duration(raw.db_acquire_timeout, database.acquire_timeout);
        database.lock_timeout = request_limits.request_timeout;

        let token_key = match raw.token_symmetric_key {
            Some(TokenKey(key)) if production => {
                if let Err(reason) = strong_enough(key.expose_secret()) {
                    return Err(ConfigError::Invalid {
                        key: "TOKEN_SYMMETRIC_KEY".into(),
                        reason,
                    });
                }
                key
            }
            Some(TokenKey(key)) => key,
            None if production => return Err(ConfigError::Missing("TOKEN_SYMMETRIC_KEY")),
            None => {
                tracing::warn!(
                    "TOKEN_SYMMETRIC_KEY is not set: using a random key; tokens will not survive a restart"
                );
                // The OS CSPRNG, as for verification codes (a UUID v4 is random too, but not
                // promised to come from a cryptographic source, and 6 of its bits are fixed).
                let mut bytes = [0u8; TokenMaker::KEY_LEN];
                getrandom::fill(&mut bytes).map_err(|_| ConfigError::Invalid {
                    key: "TOKEN_SYMMETRIC_KEY".into(),
                    reason: "is not set, and the OS random source failed to make one".into(),
                })?;
                SecretBox::new(Box::new(bytes))
            }
        };
        let lifetimes = TokenLifetimes::default();
        let webhook_key = match raw.webhook_secret_key {
            Some(TokenKey(key)) => *key.expose_secret(),
            None if production => return Err(ConfigError::Missing("WEBHOOK_SECRET_KEY")),
            None => *DEVELOPMENT_WEBHOOK_KEY,
        };
        let webhook_defaults = WebhookSettings::new(webhook_key);
        let webhooks = WebhookSettings {
            allow_private: raw.webhook_allow_private.map_or(!production, |Flag(on)| on),
            retry_for: duration(raw.webhook_retry_for, webhook_defaults.retry_for),
            timeout: duration(raw.webhook_timeout, webhook_defaults.timeout),
            ..webhook_defaults
        };
        let event_defaults = EventSettings::default();
        let events = EventSettings {
            poll: duration(raw.events_poll_interval, event_defaults.poll)
                .clamp(Duration::from_millis(10), Duration::from_secs(10)),
            max_streams: raw
                .max_streams
                .map_or(event_defaults.max_streams, Bounded::get),
            max_streams_per_user: raw
                .max_streams_per_user
                .map_or(event_defaults.max_streams_per_user, Bounded::get),
            ..event_defaults
        };

        let sender = match raw.mail_sender.unwrap_or(if production {
            MailSenderKind::Smtp
        } else {
            MailSenderKind::File
        }) {
            // Both write verification links, which are secrets, where operators and log
            // pipelines can read them: development only.
            MailSenderKind::File | MailSenderKind::Log if production => {
                return Err(ConfigError::Invalid {
                    key: "MAIL_SENDER".into(),
                    reason: "must be smtp in production: file and log expose verification links"
                        .into(),
                });
            }
            MailSenderKind::File => {
                MailSenderChoice::File(raw.mail_dir.unwrap_or_else(|| ".mail".into()))
            }
            MailSenderKind::Log => MailSenderChoice::Log,
            MailSenderKind::Smtp => {
                let tls = raw.smtp_tls.unwrap_or(SmtpTls::StartTls);
                if raw.smtp_username.is_some() != raw.smtp_password.is_some() {
                    return Err(ConfigError::Invalid {
                        key: "SMTP_USERNAME".into(),
                        reason: "SMTP_USERNAME and SMTP_PASSWORD go together".into(),
                    });
                }
                MailSenderChoice::Smtp(SmtpSettings {
                    from: raw.smtp_from.ok_or(ConfigError::Missing("SMTP_FROM"))?.0,
                    host: raw.smtp_host.ok_or(ConfigError::Missing("SMTP_HOST"))?,
                    port: raw.smtp_port.map_or(tls.default_port(), Bounded::get),
                    tls,
                    username: raw.smtp_username,
                    password: raw.smtp_password,
                })
            }
        };

        let group_commit = raw.group_commit.is_none_or(|Flag(on)| on).then(|| {
            let defaults = GroupCommitSettings::default();
            GroupCommitSettings {
                window: raw.group_commit_window.map_or(defaults.window, |w| w.0),
                lanes: raw.group_commit_lanes.map_or_else(
                    || GroupCommitSettings::default_lanes(database.max_connections as usize),
                    Bounded::get,
                ),
                ..defaults
            }
        });
        // Every busy lane holds a pooled connection: lanes that could take the whole pool would
        // leave every other request waiting for DB_ACQUIRE_TIMEOUT.
        if let (Some(lanes), Some(settings)) = (raw.group_commit_lanes, &group_commit)
            && settings.lanes >= database.max_connections as usize
        {
            return Err(ConfigError::Invalid {
                key: "GROUP_COMMIT_LANES".into(),
                reason: format!(
                    "{} must be less than DB_MAX_CONNECTIONS ({}): each lane holds a connection",
                    lanes.get::<u32>(),
                    database.max_connections
                ),
            });
        }
        let shutdown = ShutdownSettings {
            delay: raw.shutdown_delay.map_or_else(
                || ShutdownSettings::default_delay(production),
                |wait| wait.0,
            ),
            grace: raw
                .shutdown_grace
                .map_or(ShutdownSettings::DEFAULT_GRACE, |wait| wait.0),
        };
        let login_defaults = LoginLimits::default();
        let hash_defaults = HashLimits::default();
        let concurrency = raw
            .password_hash_concurrency
            .map_or(hash_defaults.concurrency, Bounded::get);
        Ok(Settings {
            environment,
            log_format,
            database,
            http_address: raw
                .http_server_address
                .map_or(SocketAddr::from(([0, 0, 0, 0], 8080)), |a| a.0),
            grpc_address: raw
                .grpc_server_address
                .map_or(SocketAddr::from(([0, 0, 0, 0], 9090)), |a| a.0),
            token_key,
            token_lifetimes: TokenLifetimes {
                access: duration(raw.access_token_duration, lifetimes.access),
                refresh: duration(raw.refresh_token_duration, lifetimes.refresh),
            },
            body_limit: raw.http_body_limit.map_or(64 * 1024, Bounded::get),
            header_read_timeout: duration(
                raw.http_header_read_timeout,
                crate::http::serve::HEADER_READ_TIMEOUT,
            ),
            hold_ttl: raw.hold_ttl.map_or(HOLD_TTL_DEFAULT, |HoldTtl(ttl)| ttl),
            idempotency_retention: duration(
                raw.idempotency_key_retention,
                Duration::from_secs(24 * 60 * 60),
            ),
            mail: MailSettings {
                sender,
                outbox: OutboxSettings {
                    link_base: raw
                        .verify_email_base_url
                        .map_or_else(|| "http://localhost:8080".into(), |base| base.0),
                    ..OutboxSettings::default()
                },
                verification_ttl: duration(raw.verify_email_ttl, DEFAULT_VERIFICATION_TTL),
            },
            allowed_origins: raw.allowed_origins.unwrap_or_default().0,
            simple_bank_compat: raw.simple_bank_compat.is_some_and(|Flag(on)| on),
            group_commit,
            login_limits: LoginLimits {
                per_ip: raw
                    .login_attempts_per_ip
                    .map_or(login_defaults.per_ip, Bounded::get),
                per_username: raw
                    .login_failures_per_username
                    .map_or(login_defaults.per_username, Bounded::get),
            },
            request_limits,
            user_limits: {
                let defaults = UserLimits::default();
                UserLimits {
                    concurrent: raw
                        .user_max_concurrent_requests
                        .map_or(defaults.concurrent, Bounded::get),
                    per_second: raw
                        .user_requests_per_second
                        .map_or(defaults.per_second, Bounded::get),
                }
            },
            anonymous_per_second: raw
                .anonymous_requests_per_second
                .map_or(ANONYMOUS_REQUESTS_PER_SECOND, Bounded::get),
            webhooks,
            events,
            password_limits: HashLimits {
                concurrency,
                queue: raw
                    .password_hash_queue
                    .map_or(4 * concurrency, Bounded::get),
            },
            trusted_proxies: raw.trusted_proxies.unwrap_or_default(),
            shutdown,
            run_migrations: true,
        })
    }
}

/// Token keys anyone can read: simple_bank's development key, which its `app.env`, its tutorial
/// and our docker-compose.yml publish. With one of these, anyone mints a banker's token offline.
const PUBLISHED_KEYS: [&[u8; 32]; 1] = [b"12345678901234567890123456789012"];

/// Refuses a production token key that is published or plainly not random: fewer than 8
/// distinct bytes, a pattern that repeats itself every 16 bytes or fewer (`1234567890` twice and
/// a bit), or a run of a few fixed steps (`abcdef...`). A key of 32 random bytes, hex or base64
/// characters never trips these (checked over 800,000 generated keys); a phrase may pass, and is
/// still a bad idea.
fn strong_enough(key: &[u8; TokenMaker::KEY_LEN]) -> Result<(), String> {
    const GENERATE: &str = "generate one, e.g. `openssl rand -hex 16`";
    if PUBLISHED_KEYS.contains(&key) {
        return Err(format!(
            "is a published key (simple_bank's and docker-compose.yml's); {GENERATE}"
        ));
    }
    let distinct = key.iter().collect::<std::collections::HashSet<_>>().len();
    let periodic = (1..=16).any(|period| key.iter().zip(&key[period..]).all(|(a, b)| a == b));
    let steps = key
        .windows(2)
        .map(|pair| pair[1].wrapping_sub(pair[0]))
        .collect::<std::collections::HashSet<_>>()
        .len();
    if distinct < 8 || periodic || steps < 4 {
        return Err(format!("is not random enough for production; {GENERATE}"));
    }
    Ok(())
}

fn duration(value: Option<GoDuration>, default: Duration) -> Duration {
    value.map_or(default, |GoDuration(d)| d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::path::Path;

    fn settings(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(|k| vars.get(k).cloned())
    }

    /// A production token key that passes `strong_enough` (`openssl rand -hex 16`).
    const PRODUCTION_KEY: &str = "9f2c4e71b08a3d56e1c97f40a2b8d3e5";

    #[test]
    fn production_refuses_published_and_plainly_non_random_token_keys() {
        let production = |key: &str| {
            settings(&[
                DB,
                ("ENVIRONMENT", "production"),
                ("TOKEN_SYMMETRIC_KEY", key),
                ("WEBHOOK_SECRET_KEY", "abcdefghijabcdefghijabcdefghij12"),
                ("SMTP_HOST", "smtp.example.com"),
                ("SMTP_FROM", "simplebank <no-reply@example.com>"),
            ])
        };
        let published = production("12345678901234567890123456789012")
            .unwrap_err()
            .to_string();
        assert!(
            published.contains("TOKEN_SYMMETRIC_KEY") && published.contains("published"),
            "{published}"
        );
        for weak in [
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "abababababababababababababababab",
            "00000000000000000000000000000001",
            "abcdefghijklmnopqrstuvwxyz012345",
            "0123456789abcdef0123456789abcdef",
        ] {
            let err = production(weak).unwrap_err().to_string();
            assert!(err.contains("not random enough"), "{weak}: {err}");
        }
        assert!(production(PRODUCTION_KEY).is_ok());
        // Development takes any 32 bytes: `make run` and the compose file use simple_bank's.
        assert!(
            settings(&[
                DB,
                ("TOKEN_SYMMETRIC_KEY", "12345678901234567890123456789012")
            ])
            .is_ok()
        );
    }

    const DB: (&str, &str) = (
        "DB_SOURCE",
        "postgresql://root:secret@localhost:5432/simple_bank",
    );

    #[test]
    fn durations_parse_like_simple_banks() {
        // What Go's time.ParseDuration accepts.
        for (raw, expected) in [
            ("15m", Duration::from_secs(900)),
            ("24h", Duration::from_secs(86_400)),
            ("1h30m", Duration::from_secs(5_400)),
            ("500ms", Duration::from_millis(500)),
            ("300ms", Duration::from_millis(300)),
            ("1.5h", Duration::from_secs(5_400)),
            ("2h45m30.5s", Duration::from_millis(9_930_500)),
            (".5s", Duration::from_millis(500)),
            ("1.s", Duration::from_secs(1)),
            ("250us", Duration::from_micros(250)),
            ("250\u{b5}s", Duration::from_micros(250)),
            ("1500ns", Duration::from_nanos(1_500)),
            ("1m0.000000001s", Duration::from_nanos(60_000_000_001)),
        ] {
            assert_eq!(parse_duration(raw), Some(expected), "{raw:?}");
        }
        // Refused: no unit, no number, zero, units Go lacks, signs, spaces, overflow.
        for bad in [
            "",
            "15",
            "m",
            ".s",
            "0s",
            "0",
            "1d",
            "-5m",
            "+5m",
            "15 m",
            " 5m",
            "1.5",
            "1e3s",
            "99999999999999999999h",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }

    fn file(contents: &str) -> (tempdir::Dir, std::path::PathBuf) {
        let dir = tempdir::Dir::new();
        let path = dir.0.join("simplebank.toml");
        std::fs::write(&path, contents).unwrap();
        (dir, path)
    }

    /// A directory removed on drop (std only: no tempfile crate for three tests).
    mod tempdir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Self {
                let path = std::env::temp_dir().join(format!(
                    "simplebank-config-{}-{}",
                    std::process::id(),
                    uuid::Uuid::new_v4()
                ));
                std::fs::create_dir_all(&path).unwrap();
                Self(path)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn no_statement_waits_for_a_row_lock_nor_holds_one_idle_longer_than_a_request_may_run() {
        for (vars, expected) in [
            (
                vec![DB],
                "-c lock_timeout=30000ms -c idle_in_transaction_session_timeout=30000ms",
            ),
            (
                vec![DB, ("REQUEST_TIMEOUT", "2s")],
                "-c lock_timeout=2000ms -c idle_in_transaction_session_timeout=2000ms",
            ),
        ] {
            let settings = settings(&vars).unwrap();
            let options = settings.database.connect_options().unwrap();
            assert_eq!(options.get_options(), Some(expected), "{vars:?}");
        }
    }

    #[test]
    fn a_toml_file_sets_values_under_their_lower_case_names() {
        // Settings the test environment does not set, so the file's values show through;
        // numbers and booleans may be written bare.
        let (_dir, path) = file(
            "http_body_limit = 70000\nverify_email_ttl = \"30m\"\nsmtp_tls = \"tls\"\n\
             group_commit = false\n",
        );
        let mut raw = RawSettings::load(Some(&path)).unwrap();
        raw.db_source = Some(SecretString::from("postgresql://u:p@localhost/db"));
        let settings = Settings::try_from(raw).unwrap();
        assert_eq!(settings.body_limit, 70_000);
        assert_eq!(settings.mail.verification_ttl, Duration::from_secs(1800));
        assert!(settings.group_commit.is_none());
    }

    #[test]
    fn unknown_names_missing_files_and_bad_toml_are_refused_by_name() {
        let (_dir, path) = file("db_sorce = \"postgresql://x\"\n");
        let err = RawSettings::load(Some(&path)).unwrap_err().to_string();
        assert!(
            err.contains("db_sorce") && err.contains("simplebank.toml"),
            "{err}"
        );

        let (_dir, path) = file("[database]\nurl = \"x\"\n");
        let err = RawSettings::load(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("database"), "{err}");

        let (_dir, path) = file("http_body_limit = \n");
        assert!(RawSettings::load(Some(&path)).is_err());

        // A bad value in the file is reported like one in the environment, by its name.
        let (_dir, path) = file("http_body_limit = 12\n");
        let err = RawSettings::load(Some(&path)).unwrap_err().to_string();
        assert!(
            err.contains("HTTP_BODY_LIMIT") && err.contains("1024"),
            "{err}"
        );

        let missing = std::path::Path::new("/nonexistent/simplebank.toml");
        let err = RawSettings::load(Some(missing)).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/simplebank.toml"), "{err}");
    }

    #[test]
    fn the_example_file_is_valid_and_complete() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("app.example.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let raw = RawSettings::load(Some(&path)).unwrap();
        assert!(Settings::try_from(raw).is_ok());
        // Every setting is at least mentioned, commented out or not.
        for name in RawSettings::names() {
            assert!(
                text.contains(&format!("{name} =")),
                "app.example.toml lacks {name}"
            );
        }
    }

    #[test]
    fn the_readme_documents_every_setting() {
        let readme =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
                .unwrap();
        let table = &readme[readme.find("## Configuration").unwrap()..];
        for variable in RawSettings::variables() {
            assert!(
                table.contains(&format!("`{variable}`")),
                "the README's configuration table lacks {variable}"
            );
        }
    }

    #[test]
    fn the_names_are_the_structs_fields() {
        let names = RawSettings::names();
        assert_eq!(names.len(), 48, "{names:?}");
        assert!(names.contains(&"db_source") && names.contains(&"trusted_proxies"));
        assert!(RawSettings::variables().any(|v| v == "TOKEN_SYMMETRIC_KEY"));
    }

    #[test]
    fn settings_never_print_their_secrets() {
        let raw = RawSettings::from_lookup(|key| match key {
            "TOKEN_SYMMETRIC_KEY" => Some("12345678901234567890123456789012".into()),
            "DB_SOURCE" => Some("postgresql://root:hunter2@localhost/db".into()),
            "SMTP_PASSWORD" => Some("hunter3".into()),
            _ => None,
        })
        .unwrap();
        let shown = format!("{raw:?}");
        assert!(
            shown.contains("token_symmetric_key")
                && !shown.contains("1234567890")
                && !shown.contains("hunter"),
            "{shown}"
        );
    }

    #[test]
    fn json_logs_in_production_unless_asked_otherwise() {
        let format = |vars: &[(&str, &str)]| {
            let vars: HashMap<&str, &str> = vars.iter().copied().collect();
            RawSettings::from_lookup(|k| vars.get(k).map(|v| v.to_string()))
                .map(|raw| raw.log_format())
        };
        assert_eq!(
            format(&[("ENVIRONMENT", "production")]).unwrap(),
            LogFormat::Json
        );
        assert_eq!(format(&[]).unwrap(), LogFormat::Pretty);
        assert_eq!(
            format(&[("ENVIRONMENT", "production"), ("LOG_FORMAT", "pretty")]).unwrap(),
            LogFormat::Pretty
        );
        assert_eq!(format(&[("LOG_FORMAT", "json")]).unwrap(), LogFormat::Json);
        let err = format(&[("LOG_FORMAT", "xml")]).unwrap_err().to_string();
        assert!(
            err.contains("LOG_FORMAT") && err.contains("json or pretty"),
            "{err}"
        );
    }

    #[test]
    fn defaults_follow_simple_bank() {
        let s = settings(&[DB]).unwrap();
        assert_eq!(s.environment, Environment::Development);
        assert_eq!(s.http_address.to_string(), "0.0.0.0:8080");
        assert_eq!(s.grpc_address.to_string(), "0.0.0.0:9090");
        assert_eq!(s.token_lifetimes.access, Duration::from_secs(900));
        assert_eq!(s.token_lifetimes.refresh, Duration::from_secs(86_400));
        assert_eq!(s.body_limit, 65_536);
        assert!(s.allowed_origins.is_empty());
        let s = settings(&[
            DB,
            (
                "ALLOWED_ORIGINS",
                "http://localhost:3000, https://bank.example.com",
            ),
        ])
        .unwrap();
        assert_eq!(s.allowed_origins.len(), 2);
    }

    #[test]
    fn group_commit_is_on_without_a_window_unless_one_is_set_or_it_is_turned_off() {
        let on = settings(&[DB]).unwrap().group_commit.unwrap();
        assert_eq!((on.window, on.lanes), (Duration::ZERO, 4));
        // A small pool keeps half its connections for everything else.
        let small = settings(&[DB, ("DB_MAX_CONNECTIONS", "5")]).unwrap();
        assert_eq!(small.group_commit.unwrap().lanes, 2);
        let tiny = settings(&[DB, ("DB_MAX_CONNECTIONS", "1")]).unwrap();
        assert_eq!(tiny.group_commit.unwrap().lanes, 1);
        let short = settings(&[DB, ("GROUP_COMMIT_WINDOW", "500us")]).unwrap();
        assert_eq!(
            short.group_commit.unwrap().window,
            Duration::from_micros(500)
        );
        let most = settings(&[DB, ("GROUP_COMMIT_WINDOW", "2ms")]).unwrap();
        assert_eq!(most.group_commit.unwrap().window, Duration::from_millis(2));
        let wide = settings(&[DB, ("GROUP_COMMIT_LANES", "4")]).unwrap();
        assert_eq!(wide.group_commit.unwrap().lanes, 4);
        let crowded = settings(&[DB, ("GROUP_COMMIT_LANES", "10")])
            .unwrap_err()
            .to_string();
        assert!(
            crowded.contains("GROUP_COMMIT_LANES") && crowded.contains("DB_MAX_CONNECTIONS (10)"),
            "{crowded}"
        );
        assert!(
            settings(&[DB, ("GROUP_COMMIT", "false")])
                .unwrap()
                .group_commit
                .is_none()
        );
        for (key, bad) in [
            ("GROUP_COMMIT_WINDOW", "3ms"),
            ("GROUP_COMMIT_WINDOW", "soon"),
            ("GROUP_COMMIT", "maybe"),
            ("GROUP_COMMIT_LANES", "0"),
            ("GROUP_COMMIT_LANES", "17"),
        ] {
            let err = settings(&[DB, (key, bad)]).unwrap_err().to_string();
            assert!(err.contains(key), "{err}");
        }
    }

    #[test]
    fn a_server_behind_a_balancer_in_production_waits_before_it_stops_accepting() {
        let dev = settings(&[DB]).unwrap().shutdown;
        assert_eq!(
            (dev.delay, dev.grace),
            (Duration::ZERO, Duration::from_secs(20))
        );
        let production = settings(&[
            DB,
            ("ENVIRONMENT", "production"),
            ("TOKEN_SYMMETRIC_KEY", PRODUCTION_KEY),
            ("WEBHOOK_SECRET_KEY", "abcdefghijabcdefghijabcdefghij12"),
            ("SMTP_HOST", "smtp.example.com"),
            ("SMTP_FROM", "simplebank <no-reply@example.com>"),
        ])
        .unwrap()
        .shutdown;
        assert_eq!(production.delay, Duration::from_secs(5));
        let set = settings(&[DB, ("SHUTDOWN_DELAY", "3s"), ("SHUTDOWN_GRACE", "1m")])
            .unwrap()
            .shutdown;
        assert_eq!(
            (set.delay, set.grace),
            (Duration::from_secs(3), Duration::from_secs(60))
        );
        for key in ["SHUTDOWN_DELAY", "SHUTDOWN_GRACE"] {
            let err = settings(&[DB, (key, "2h")]).unwrap_err().to_string();
            assert!(err.contains(key), "{err}");
        }
    }

    #[test]
    fn production_refuses_to_start_without_a_token_key() {
        let err = settings(&[DB, ("ENVIRONMENT", "production")]).unwrap_err();
        assert!(err.to_string().contains("TOKEN_SYMMETRIC_KEY"));
        let ok = settings(&[
            DB,
            ("ENVIRONMENT", "production"),
            ("TOKEN_SYMMETRIC_KEY", PRODUCTION_KEY),
            ("WEBHOOK_SECRET_KEY", "abcdefghijabcdefghijabcdefghij12"),
            ("SMTP_HOST", "smtp.example.com"),
            ("SMTP_FROM", "simplebank <no-reply@example.com>"),
        ]);
        assert!(ok.is_ok());
    }

    #[test]
    fn production_needs_its_own_webhook_key_and_refuses_private_webhook_urls() {
        let base = [
            DB,
            ("ENVIRONMENT", "production"),
            ("TOKEN_SYMMETRIC_KEY", PRODUCTION_KEY),
            ("SMTP_HOST", "smtp.example.com"),
            ("SMTP_FROM", "simplebank <no-reply@example.com>"),
        ];
        let err = settings(&base).unwrap_err().to_string();
        assert!(err.contains("WEBHOOK_SECRET_KEY"), "{err}");
        let mut keyed = base.to_vec();
        keyed.push(("WEBHOOK_SECRET_KEY", "abcdefghijabcdefghijabcdefghij12"));
        let s = settings(&keyed).unwrap();
        assert!(!s.webhooks.allow_private);
        assert_eq!(s.webhooks.retry_for, Duration::from_secs(24 * 60 * 60));
        keyed.push(("WEBHOOK_ALLOW_PRIVATE", "true"));
        keyed.push(("WEBHOOK_RETRY_FOR", "1h"));
        let s = settings(&keyed).unwrap();
        assert!(s.webhooks.allow_private);
        assert_eq!(s.webhooks.retry_for, Duration::from_secs(3600));
        // Development allows loopback receivers, and its key is fixed so secrets survive restarts.
        let dev = settings(&[DB]).unwrap();
        assert!(dev.webhooks.allow_private);
        assert_eq!(
            dev.webhooks.secret_key.expose_secret(),
            DEVELOPMENT_WEBHOOK_KEY
        );
    }

    #[test]
    fn production_mails_over_smtp_unless_told_otherwise() {
        let production = [
            DB,
            ("ENVIRONMENT", "production"),
            ("TOKEN_SYMMETRIC_KEY", PRODUCTION_KEY),
            ("WEBHOOK_SECRET_KEY", "abcdefghijabcdefghijabcdefghij12"),
        ];
        let err = settings(&production).unwrap_err().to_string();
        assert!(err.contains("SMTP_"), "{err}");

        let mut smtp = production.to_vec();
        smtp.extend([
            ("SMTP_HOST", "smtp.example.com"),
            ("SMTP_FROM", "simplebank <no-reply@example.com>"),
            ("SMTP_USERNAME", "bank"),
            ("SMTP_PASSWORD", "hunter2"),
        ]);
        let s = settings(&smtp).unwrap();
        let MailSenderChoice::Smtp(config) = &s.mail.sender else {
            panic!("SMTP expected")
        };
        assert_eq!((config.port, config.tls), (587, SmtpTls::StartTls));
        assert!(!format!("{config:?}").contains("hunter2"));

        // Development logs emails and keeps them in .mail/; the link base and code lifetime
        // are configurable.
        let s = settings(&[
            DB,
            ("VERIFY_EMAIL_BASE_URL", "https://bank.example/"),
            ("VERIFY_EMAIL_TTL", "1h"),
        ])
        .unwrap();
        assert!(
            matches!(&s.mail.sender, MailSenderChoice::File(dir) if dir == std::path::Path::new(".mail"))
        );
        assert_eq!(s.mail.outbox.link_base, "https://bank.example");
        assert_eq!(s.mail.verification_ttl, Duration::from_secs(3600));
        assert_eq!(s.idempotency_retention, Duration::from_secs(86_400));
        assert_eq!(s.hold_ttl, HOLD_TTL_DEFAULT);
        let s = settings(&[DB, ("MAIL_SENDER", "log")]).unwrap();
        assert!(matches!(s.mail.sender, MailSenderChoice::Log));
    }

    #[test]
    fn production_refuses_mail_senders_that_expose_verification_links() {
        for sender in ["log", "file"] {
            let err = settings(&[
                DB,
                ("ENVIRONMENT", "production"),
                ("TOKEN_SYMMETRIC_KEY", PRODUCTION_KEY),
                ("WEBHOOK_SECRET_KEY", "abcdefghijabcdefghijabcdefghij12"),
                ("WEBHOOK_SECRET_KEY", "abcdefghijabcdefghijabcdefghij12"),
                ("MAIL_SENDER", sender),
            ])
            .unwrap_err()
            .to_string();
            assert!(err.contains("MAIL_SENDER") && err.contains("smtp"), "{err}");
        }
    }

    #[test]
    fn password_hashing_and_trusted_proxies_have_bounds_and_defaults() {
        let s = settings(&[DB]).unwrap();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(s.password_limits.concurrency, cores);
        assert_eq!(s.password_limits.queue, 4 * cores);
        assert!(s.trusted_proxies.is_empty());
        let s = settings(&[
            DB,
            ("PASSWORD_HASH_CONCURRENCY", "3"),
            ("TRUSTED_PROXIES", "10.0.0.0/8, 192.168.1.7"),
        ])
        .unwrap();
        assert_eq!(s.password_limits.concurrency, 3);
        assert_eq!(s.password_limits.queue, 12, "four per thread unless set");
        assert!(!s.trusted_proxies.is_empty());
        let err = settings(&[DB, ("TRUSTED_PROXIES", "10.0.0.0/8,the ingress")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("TRUSTED_PROXIES"), "{err}");
    }

    #[test]
    fn a_bad_value_names_its_variable_and_hides_secrets() {
        for (key, value) in [
            ("TOKEN_SYMMETRIC_KEY", "too short"),
            ("ACCESS_TOKEN_DURATION", "soon"),
            ("HTTP_SERVER_ADDRESS", "localhost"),
            ("GRPC_SERVER_ADDRESS", "nine-oh-nine-oh"),
            ("ENVIRONMENT", "staging"),
            ("HTTP_BODY_LIMIT", "lots"),
            ("DB_ACQUIRE_TIMEOUT", "forever"),
            ("IDEMPOTENCY_KEY_RETENTION", "a while"),
            ("MAIL_SENDER", "pigeon"),
            ("VERIFY_EMAIL_BASE_URL", "ftp://bank"),
            ("VERIFY_EMAIL_TTL", "brief"),
            ("PASSWORD_HASH_CONCURRENCY", "0"),
            ("PASSWORD_HASH_QUEUE", "many"),
            (
                "ALLOWED_ORIGINS",
                "https://ok.example,https://bad.example/path",
            ),
        ] {
            let err = settings(&[DB, (key, value)]).unwrap_err().to_string();
            assert!(err.contains(key), "{err}");
            assert!(!err.contains(value) || key == "ENVIRONMENT", "{err}");
        }
        let err = settings(&[("DB_SOURCE", "mysql://root:hunter2@x/y")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("DB_SOURCE") && !err.contains("hunter2"),
            "{err}"
        );
        assert!(settings(&[]).unwrap_err().to_string().contains("DB_SOURCE"));
    }
}
