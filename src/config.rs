//! Settings, read once at start-up: defaults < a TOML file (`app.toml` in the working directory,
//! or `--config PATH`) < environment variables with simple_bank's names (SPEC §5).
//!
//! `Sources` merges the layers with the `config` crate; `Settings::from_lookup` parses every value
//! into its type, and a bad one stops the start with a message naming the variable (never echoing
//! a secret). The file uses the same names in lower case (`db_source = "..."`), and a name it does
//! not know is refused rather than ignored: a typo must not silently fall back to a default.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretBox, SecretString};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::auth::HashLimits;
use crate::auth::TokenMaker;
use crate::mail::{OutboxSettings, SmtpSettings, SmtpTls};
use crate::service::{
    DEFAULT_VERIFICATION_TTL, LoginLimits, RequestLimits, TokenLifetimes, TrustedProxies,
};
use crate::store::{GroupCommitSettings, MAX_GROUP_COMMIT_WINDOW};

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
    Invalid { key: &'static str, reason: String },
    #[error("configuration file {file}: {reason}")]
    File { file: String, reason: String },
}

/// Every setting, by its environment variable name.
pub const KNOWN_SETTINGS: &[&str] = &[
    "ENVIRONMENT",
    "DB_SOURCE",
    "DB_MAX_CONNECTIONS",
    "DB_ACQUIRE_TIMEOUT",
    "GROUP_COMMIT",
    "GROUP_COMMIT_WINDOW",
    "HTTP_SERVER_ADDRESS",
    "GRPC_SERVER_ADDRESS",
    "TOKEN_SYMMETRIC_KEY",
    "ACCESS_TOKEN_DURATION",
    "REFRESH_TOKEN_DURATION",
    "HTTP_BODY_LIMIT",
    "IDEMPOTENCY_KEY_RETENTION",
    "MAIL_SENDER",
    "MAIL_DIR",
    "SMTP_HOST",
    "SMTP_PORT",
    "SMTP_TLS",
    "SMTP_USERNAME",
    "SMTP_PASSWORD",
    "SMTP_FROM",
    "VERIFY_EMAIL_BASE_URL",
    "VERIFY_EMAIL_TTL",
    "LOG_FORMAT",
    "ALLOWED_ORIGINS",
    "SIMPLE_BANK_COMPAT",
    "MAX_CONCURRENT_REQUESTS",
    "REQUEST_TIMEOUT",
    "LOGIN_ATTEMPTS_PER_IP",
    "LOGIN_FAILURES_PER_USERNAME",
    "PASSWORD_HASH_CONCURRENCY",
    "PASSWORD_HASH_QUEUE",
    "TRUSTED_PROXIES",
];

/// The merged layers, as raw strings by setting name.
#[derive(Default)]
pub struct Sources {
    values: HashMap<String, String>,
}

impl std::fmt::Debug for Sources {
    /// Names only: values include passwords and the token key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&String> = self.values.keys().collect();
        names.sort();
        f.debug_struct("Sources").field("set", &names).finish()
    }
}

impl Sources {
    /// The file at `path` (which must exist), or `app.toml` in the working directory if there is
    /// one; then the environment over it.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let (file, name) = match path {
            Some(path) => (
                config::File::from(path)
                    .format(config::FileFormat::Toml)
                    .required(true),
                path.display().to_string(),
            ),
            None => (
                config::File::new("app.toml", config::FileFormat::Toml).required(false),
                "app.toml".to_owned(),
            ),
        };
        let file_error = |e: config::ConfigError| ConfigError::File {
            file: name.clone(),
            reason: e.to_string(),
        };
        let from_file = config::Config::builder()
            .add_source(file)
            .build()
            .map_err(file_error)?;
        let mut values = HashMap::new();
        let table: HashMap<String, config::Value> =
            from_file.try_deserialize().map_err(file_error)?;
        for (key, value) in table {
            let upper = key.to_ascii_uppercase();
            if !KNOWN_SETTINGS.contains(&upper.as_str()) {
                return Err(ConfigError::File {
                    file: name,
                    reason: format!(
                        "unknown setting `{key}` (settings have the environment variables' names, \
                         in lower case: db_source, http_server_address, ...)"
                    ),
                });
            }
            let text = value.into_string().map_err(|_| ConfigError::File {
                file: name.clone(),
                reason: format!("`{key}` must be a single value"),
            })?;
            values.insert(upper, text);
        }
        for key in KNOWN_SETTINGS {
            if let Ok(value) = std::env::var(key) {
                values.insert((*key).to_owned(), value);
            }
        }
        Ok(Self { values })
    }

    /// A setting from the highest layer that has it.
    pub fn get(&self, key: &str) -> Option<String> {
        self.values.get(key).cloned()
    }

    /// Sets a value above every layer (a command-line flag).
    pub fn set(&mut self, key: &str, value: String) {
        self.values.insert(key.to_owned(), value);
    }
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
        Ok(options.options([("lock_timeout", lock_timeout.as_str())]))
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Development,
    Production,
}

/// Everything `simplebank serve` needs.
#[derive(Debug)]
pub struct Settings {
    pub environment: Environment,
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
    /// `IDEMPOTENCY_KEY_RETENTION`, default 24 h: how long a retry with the same key is answered
    /// from the first request; older records are purged.
    pub idempotency_retention: Duration,
    pub mail: MailSettings,
    /// `ALLOWED_ORIGINS`: browser origins allowed to call the HTTP API (CORS), comma-separated,
    /// e.g. `http://localhost:3000,https://bank.example.com`. Empty (the default): none.
    pub allowed_origins: Vec<http::HeaderValue>,
    /// `SIMPLE_BANK_COMPAT`: also serve simple_bank's routes and shapes (default false).
    pub simple_bank_compat: bool,
    /// `GROUP_COMMIT` (default true) and `GROUP_COMMIT_WINDOW` (default 1ms, at most 2ms): money
    /// movements arriving under load share transactions. `None`: one transaction each.
    pub group_commit: Option<GroupCommitSettings>,
    /// `LOGIN_ATTEMPTS_PER_IP` (default 30) and `LOGIN_FAILURES_PER_USERNAME` (default 10), per
    /// minute; 0 turns one off.
    pub login_limits: LoginLimits,
    /// `MAX_CONCURRENT_REQUESTS` (default 1024) and `REQUEST_TIMEOUT` (default 30s), both APIs
    /// together.
    pub request_limits: RequestLimits,
    /// `PASSWORD_HASH_CONCURRENCY` (default: the number of cores) and `PASSWORD_HASH_QUEUE`
    /// (default: four per thread): password hashes at once, and how many may wait.
    pub password_limits: HashLimits,
    /// `TRUSTED_PROXIES`: CIDR blocks whose `X-Forwarded-For` / `Forwarded` name the client
    /// (default: none, so the TCP peer is the client).
    pub trusted_proxies: TrustedProxies,
    /// Apply pending migrations before serving (`serve --no-migrate` turns it off).
    pub run_migrations: bool,
}

impl Settings {
    /// Parses merged `sources`. In development a missing token key is replaced by a random one
    /// (tokens then die with the process, and the log says so); production refuses to start.
    pub fn from_sources(sources: &Sources) -> Result<Self, ConfigError> {
        Self::from_lookup(|key| sources.get(key))
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let environment = match get("ENVIRONMENT").as_deref() {
            None | Some("development") => Environment::Development,
            Some("production") => Environment::Production,
            Some(_) => {
                return Err(ConfigError::Invalid {
                    key: "ENVIRONMENT",
                    reason: "must be development or production".into(),
                });
            }
        };
        let url = get("DB_SOURCE").ok_or(ConfigError::Missing("DB_SOURCE"))?;
        let mut database = DatabaseSettings::new(SecretString::from(url));
        database.connect_options()?;
        database.max_connections = number_setting(
            &get,
            "DB_MAX_CONNECTIONS",
            database.max_connections,
            1..=1000,
        )?;
        if let Some(raw) = get("DB_ACQUIRE_TIMEOUT") {
            database.acquire_timeout = parse_duration(&raw).ok_or(ConfigError::Invalid {
                key: "DB_ACQUIRE_TIMEOUT",
                reason: "must be a duration like 5s or 500ms".into(),
            })?;
        }
        let http_address = get("HTTP_SERVER_ADDRESS")
            .unwrap_or_else(|| "0.0.0.0:8080".into())
            .parse()
            .map_err(|_| ConfigError::Invalid {
                key: "HTTP_SERVER_ADDRESS",
                reason: "must be host:port, e.g. 0.0.0.0:8080".into(),
            })?;
        let grpc_address = get("GRPC_SERVER_ADDRESS")
            .unwrap_or_else(|| "0.0.0.0:9090".into())
            .parse()
            .map_err(|_| ConfigError::Invalid {
                key: "GRPC_SERVER_ADDRESS",
                reason: "must be host:port, e.g. 0.0.0.0:9090".into(),
            })?;
        let token_key = match get("TOKEN_SYMMETRIC_KEY") {
            Some(key) => {
                let bytes: [u8; TokenMaker::KEY_LEN] =
                    key.as_bytes()
                        .try_into()
                        .map_err(|_| ConfigError::Invalid {
                            key: "TOKEN_SYMMETRIC_KEY",
                            reason: format!("must be exactly {} bytes", TokenMaker::KEY_LEN),
                        })?;
                SecretBox::new(Box::new(bytes))
            }
            None if environment == Environment::Production => {
                return Err(ConfigError::Missing("TOKEN_SYMMETRIC_KEY"));
            }
            None => {
                tracing::warn!(
                    "TOKEN_SYMMETRIC_KEY is not set: using a random key; tokens will not survive a restart"
                );
                // The OS CSPRNG, as for verification codes (a UUID v4 is random too, but not
                // promised to come from a cryptographic source, and 6 of its bits are fixed).
                let mut bytes = [0u8; TokenMaker::KEY_LEN];
                getrandom::fill(&mut bytes).map_err(|_| ConfigError::Invalid {
                    key: "TOKEN_SYMMETRIC_KEY",
                    reason: "is not set, and the OS random source failed to make one".into(),
                })?;
                SecretBox::new(Box::new(bytes))
            }
        };
        let lifetime = |key: &'static str, default: Duration| -> Result<Duration, ConfigError> {
            get(key).map_or(Ok(default), |raw| {
                parse_duration(&raw).ok_or(ConfigError::Invalid {
                    key,
                    reason: "must be a duration like 15m, 24h, 90s or 1h30m".into(),
                })
            })
        };
        let defaults = TokenLifetimes::default();
        let token_lifetimes = TokenLifetimes {
            access: lifetime("ACCESS_TOKEN_DURATION", defaults.access)?,
            refresh: lifetime("REFRESH_TOKEN_DURATION", defaults.refresh)?,
        };
        let idempotency_retention = lifetime(
            "IDEMPOTENCY_KEY_RETENTION",
            Duration::from_secs(24 * 60 * 60),
        )?;
        let mail = MailSettings {
            sender: mail_sender(&get, environment)?,
            outbox: OutboxSettings {
                link_base: link_base(&get)?,
                ..OutboxSettings::default()
            },
            verification_ttl: lifetime("VERIFY_EMAIL_TTL", DEFAULT_VERIFICATION_TTL)?,
        };
        let allowed_origins = allowed_origins(get("ALLOWED_ORIGINS").as_deref())?;
        let simple_bank_compat = parse_flag(&get, "SIMPLE_BANK_COMPAT", false)?;
        let request_defaults = RequestLimits::default();
        let request_limits = RequestLimits {
            max_concurrent_requests: number_setting(
                &get,
                "MAX_CONCURRENT_REQUESTS",
                request_defaults.max_concurrent_requests,
                1..=1_000_000,
            )?,
            request_timeout: lifetime("REQUEST_TIMEOUT", request_defaults.request_timeout)?,
        };
        database.lock_timeout = request_limits.request_timeout;
        let defaults = LoginLimits::default();
        let login_limits = LoginLimits {
            per_ip: number_setting(
                &get,
                "LOGIN_ATTEMPTS_PER_IP",
                defaults.per_ip,
                0..=1_000_000,
            )?,
            per_username: number_setting(
                &get,
                "LOGIN_FAILURES_PER_USERNAME",
                defaults.per_username,
                0..=1_000_000,
            )?,
        };
        let group_commit = if parse_flag(&get, "GROUP_COMMIT", true)? {
            let defaults = GroupCommitSettings::default();
            let window = match get("GROUP_COMMIT_WINDOW") {
                None => defaults.window,
                Some(raw) => parse_duration(&raw)
                    .or_else(|| {
                        matches!(raw.trim(), "0" | "0us" | "0ms" | "0s").then_some(Duration::ZERO)
                    })
                    .filter(|w| *w <= MAX_GROUP_COMMIT_WINDOW)
                    .ok_or(ConfigError::Invalid {
                        key: "GROUP_COMMIT_WINDOW",
                        reason: "must be a duration from 0ms to 2ms, like 500us or 1ms".into(),
                    })?,
            };
            Some(GroupCommitSettings { window, ..defaults })
        } else {
            None
        };
        let body_limit =
            number_setting(&get, "HTTP_BODY_LIMIT", 64 * 1024, 1024..=16 * 1024 * 1024)?;
        let hash_defaults = HashLimits::default();
        let concurrency = number_setting(
            &get,
            "PASSWORD_HASH_CONCURRENCY",
            hash_defaults.concurrency,
            1..=256,
        )?;
        let password_limits = HashLimits {
            concurrency,
            queue: number_setting(&get, "PASSWORD_HASH_QUEUE", 4 * concurrency, 0..=100_000)?,
        };
        let trusted_proxies = TrustedProxies::parse(&get("TRUSTED_PROXIES").unwrap_or_default())
            .map_err(|reason| ConfigError::Invalid {
                key: "TRUSTED_PROXIES",
                reason,
            })?;
        Ok(Settings {
            environment,
            database,
            http_address,
            grpc_address,
            token_key,
            token_lifetimes,
            body_limit,
            idempotency_retention,
            mail,
            allowed_origins,
            simple_bank_compat,
            group_commit,
            login_limits,
            request_limits,
            password_limits,
            trusted_proxies,
            run_migrations: true,
        })
    }
}

/// A true/false setting (`1`/`0` also accepted).
fn parse_flag(
    get: &impl Fn(&str) -> Option<String>,
    key: &'static str,
    default: bool,
) -> Result<bool, ConfigError> {
    match get(key).as_deref() {
        None => Ok(default),
        Some("true") | Some("1") => Ok(true),
        Some("false") | Some("0") => Ok(false),
        Some(_) => Err(ConfigError::Invalid {
            key,
            reason: "must be true or false".into(),
        }),
    }
}

/// `MAIL_SENDER` and, for `smtp`, the `SMTP_*` settings.
fn mail_sender(
    get: &impl Fn(&str) -> Option<String>,
    environment: Environment,
) -> Result<MailSenderChoice, ConfigError> {
    let choice = get("MAIL_SENDER").unwrap_or_else(|| match environment {
        Environment::Development => "file".into(),
        Environment::Production => "smtp".into(),
    });
    match choice.as_str() {
        // Both write verification links, which are secrets, where operators and log
        // pipelines can read them: development only.
        "file" | "log" if environment == Environment::Production => Err(ConfigError::Invalid {
            key: "MAIL_SENDER",
            reason: "must be smtp in production: file and log expose verification links".into(),
        }),
        "file" => Ok(MailSenderChoice::File(
            get("MAIL_DIR").unwrap_or_else(|| ".mail".into()).into(),
        )),
        "log" => Ok(MailSenderChoice::Log),
        "smtp" => {
            let tls = match get("SMTP_TLS").as_deref() {
                None | Some("starttls") => SmtpTls::StartTls,
                Some("tls") => SmtpTls::Tls,
                Some("none") => SmtpTls::None,
                Some(_) => {
                    return Err(ConfigError::Invalid {
                        key: "SMTP_TLS",
                        reason: "must be starttls, tls or none".into(),
                    });
                }
            };
            let port = number_setting(get, "SMTP_PORT", tls.default_port(), 1..=65535)?;
            let from = get("SMTP_FROM")
                .ok_or(ConfigError::Missing("SMTP_FROM"))?
                .parse()
                .map_err(|_| ConfigError::Invalid {
                    key: "SMTP_FROM",
                    reason: "must be an address like simplebank <no-reply@example.com>".into(),
                })?;
            let username = get("SMTP_USERNAME");
            let password = get("SMTP_PASSWORD").map(SecretString::from);
            if username.is_some() != password.is_some() {
                return Err(ConfigError::Invalid {
                    key: "SMTP_USERNAME",
                    reason: "SMTP_USERNAME and SMTP_PASSWORD go together".into(),
                });
            }
            Ok(MailSenderChoice::Smtp(SmtpSettings {
                host: get("SMTP_HOST").ok_or(ConfigError::Missing("SMTP_HOST"))?,
                port,
                tls,
                username,
                password,
                from,
            }))
        }
        _ => Err(ConfigError::Invalid {
            key: "MAIL_SENDER",
            reason: "must be file, log or smtp".into(),
        }),
    }
}

/// Each origin must be `scheme://host[:port]`, as browsers send it in `Origin`.
fn allowed_origins(raw: Option<&str>) -> Result<Vec<http::HeaderValue>, ConfigError> {
    let invalid = |origin: &str| ConfigError::Invalid {
        key: "ALLOWED_ORIGINS",
        reason: format!(
            "`{origin}` is not an origin like https://bank.example.com (no path, no trailing /)"
        ),
    };
    raw.unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|origin| !origin.is_empty())
        .map(|origin| {
            let rest = origin
                .strip_prefix("https://")
                .or_else(|| origin.strip_prefix("http://"))
                .ok_or_else(|| invalid(origin))?;
            if rest.is_empty() || rest.contains(['/', '?', '#', ' ', '*']) {
                return Err(invalid(origin));
            }
            http::HeaderValue::from_str(origin).map_err(|_| invalid(origin))
        })
        .collect()
}

/// `VERIFY_EMAIL_BASE_URL`: the public address of the HTTP API, which verification links point at.
fn link_base(get: &impl Fn(&str) -> Option<String>) -> Result<String, ConfigError> {
    let base = get("VERIFY_EMAIL_BASE_URL").unwrap_or_else(|| "http://localhost:8080".into());
    let scheme_ok = base.starts_with("http://") || base.starts_with("https://");
    if !scheme_ok || base.contains(char::is_whitespace) || base.contains(['?', '#']) {
        return Err(ConfigError::Invalid {
            key: "VERIFY_EMAIL_BASE_URL",
            reason: "must be an http(s) URL without query, e.g. https://bank.example.com".into(),
        });
    }
    Ok(base.trim_end_matches('/').to_owned())
}

/// A number setting: `default` when unset, otherwise parsed and within `range`.
fn number_setting<T>(
    get: &impl Fn(&str) -> Option<String>,
    key: &'static str,
    default: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<T, ConfigError>
where
    T: FromStr + PartialOrd + std::fmt::Display,
{
    get(key).map_or(Ok(default), |raw| parse_number(key, &raw, range))
}

fn parse_number<T>(
    key: &'static str,
    raw: &str,
    range: std::ops::RangeInclusive<T>,
) -> Result<T, ConfigError>
where
    T: FromStr + PartialOrd + std::fmt::Display,
{
    raw.parse::<T>()
        .ok()
        .filter(|n| range.contains(n))
        .ok_or_else(|| ConfigError::Invalid {
            key,
            reason: format!("must be a number from {} to {}", range.start(), range.end()),
        })
}

/// A positive duration as Go's `time.ParseDuration` writes it, which simple_bank's users know:
/// a sequence of decimal numbers, each with an optional fraction and a unit — `ns`, `us` (or
/// `µs`), `ms`, `s`, `m`, `h` — such as `300ms`, `1.5h` or `2h45m30.5s`. Zero, a sign, spaces
/// and units Go does not know (`d`) are refused, as is anything past `u64` nanoseconds.
pub fn parse_duration(raw: &str) -> Option<Duration> {
    const UNITS: [(&str, u128); 8] = [
        ("ns", 1),
        ("us", 1_000),
        ("\u{b5}s", 1_000),
        ("\u{3bc}s", 1_000),
        ("ms", 1_000_000),
        ("s", 1_000_000_000),
        ("m", 60_000_000_000),
        ("h", 3_600_000_000_000),
    ];
    let mut rest = raw;
    if rest.is_empty() {
        return None;
    }
    let mut total_nanos: u128 = 0;
    while !rest.is_empty() {
        let whole_len = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (whole, tail) = rest.split_at(whole_len);
        let (fraction, tail) = match tail.strip_prefix('.') {
            Some(after) => {
                let len = after
                    .find(|c: char| !c.is_ascii_digit())
                    .unwrap_or(after.len());
                after.split_at(len)
            }
            None => ("", tail),
        };
        if whole.is_empty() && fraction.is_empty() {
            return None;
        }
        // The longest unit that matches (`ms` before `m`).
        let (unit, scale) = UNITS
            .iter()
            .filter(|(unit, _)| tail.starts_with(unit))
            .max_by_key(|(unit, _)| unit.len())?;
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().ok()?
        };
        let mut nanos = whole.checked_mul(*scale)?;
        // Digits past nanosecond precision are dropped, as Go does.
        let mut place = *scale;
        for digit in fraction.bytes() {
            place /= 10;
            nanos = nanos.checked_add(u128::from(digit - b'0') * place)?;
        }
        total_nanos = total_nanos.checked_add(nanos)?;
        rest = &tail[unit.len()..];
    }
    let total = u64::try_from(total_nanos).ok()?;
    (total > 0).then(|| Duration::from_nanos(total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn settings(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(|k| vars.get(k).cloned())
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
    fn no_statement_waits_for_a_row_lock_longer_than_a_request_may_run() {
        for (vars, expected) in [
            (vec![DB], "-c lock_timeout=30000ms"),
            (
                vec![DB, ("REQUEST_TIMEOUT", "2s")],
                "-c lock_timeout=2000ms",
            ),
        ] {
            let settings = settings(&vars).unwrap();
            let options = settings.database.connect_options().unwrap();
            assert_eq!(options.get_options(), Some(expected), "{vars:?}");
        }
    }

    #[test]
    fn a_toml_file_sets_values_under_their_lower_case_names() {
        // Settings the test environment does not set, so the file's values show through.
        let (_dir, path) =
            file("http_body_limit = 70000\nverify_email_ttl = \"30m\"\nsmtp_tls = \"tls\"\n");
        let sources = Sources::load(Some(&path)).unwrap();
        assert_eq!(sources.get("HTTP_BODY_LIMIT").as_deref(), Some("70000"));
        assert_eq!(sources.get("VERIFY_EMAIL_TTL").as_deref(), Some("30m"));
        let mut sources = sources;
        sources.set("DB_SOURCE", "postgresql://u:p@localhost/db".into());
        let settings = Settings::from_sources(&sources).unwrap();
        assert_eq!(settings.body_limit, 70_000);
        assert_eq!(settings.mail.verification_ttl, Duration::from_secs(1800));
    }

    #[test]
    fn unknown_names_missing_files_and_bad_toml_are_refused_by_name() {
        let (_dir, path) = file("db_sorce = \"postgresql://x\"\n");
        let err = Sources::load(Some(&path)).unwrap_err().to_string();
        assert!(
            err.contains("db_sorce") && err.contains("simplebank.toml"),
            "{err}"
        );

        let (_dir, path) = file("[database]\nurl = \"x\"\n");
        let err = Sources::load(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("database"), "{err}");

        let (_dir, path) = file("http_body_limit = \n");
        assert!(Sources::load(Some(&path)).is_err());

        let missing = std::path::Path::new("/nonexistent/simplebank.toml");
        let err = Sources::load(Some(missing)).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/simplebank.toml"), "{err}");
    }

    #[test]
    fn the_example_file_is_valid_and_complete() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("app.example.toml");
        let text = std::fs::read_to_string(&path).unwrap();
        let sources = Sources::load(Some(&path)).unwrap();
        assert!(Settings::from_sources(&sources).is_ok());
        // Every setting is at least mentioned, commented out or not.
        for key in KNOWN_SETTINGS {
            let name = key.to_ascii_lowercase();
            assert!(
                text.contains(&format!("{name} =")),
                "app.example.toml lacks {name}"
            );
        }
    }

    #[test]
    fn sources_never_print_their_values() {
        let mut sources = Sources::default();
        sources.set(
            "TOKEN_SYMMETRIC_KEY",
            "12345678901234567890123456789012".into(),
        );
        let shown = format!("{sources:?}");
        assert!(
            shown.contains("TOKEN_SYMMETRIC_KEY") && !shown.contains("1234567890"),
            "{shown}"
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
    fn group_commit_is_on_with_a_short_window_unless_turned_off() {
        let on = settings(&[DB]).unwrap().group_commit.unwrap();
        assert_eq!(on.window, Duration::from_millis(1));
        let short = settings(&[DB, ("GROUP_COMMIT_WINDOW", "500us")]).unwrap();
        assert_eq!(
            short.group_commit.unwrap().window,
            Duration::from_micros(500)
        );
        let none = settings(&[DB, ("GROUP_COMMIT_WINDOW", "0")]).unwrap();
        assert_eq!(none.group_commit.unwrap().window, Duration::ZERO);
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
        ] {
            let err = settings(&[DB, (key, bad)]).unwrap_err().to_string();
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
            ("TOKEN_SYMMETRIC_KEY", "12345678901234567890123456789012"),
            ("SMTP_HOST", "smtp.example.com"),
            ("SMTP_FROM", "simplebank <no-reply@example.com>"),
        ]);
        assert!(ok.is_ok());
    }

    #[test]
    fn production_mails_over_smtp_unless_told_otherwise() {
        let production = [
            DB,
            ("ENVIRONMENT", "production"),
            ("TOKEN_SYMMETRIC_KEY", "12345678901234567890123456789012"),
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
        let s = settings(&[DB, ("MAIL_SENDER", "log")]).unwrap();
        assert!(matches!(s.mail.sender, MailSenderChoice::Log));
    }

    #[test]
    fn production_refuses_mail_senders_that_expose_verification_links() {
        for sender in ["log", "file"] {
            let err = settings(&[
                DB,
                ("ENVIRONMENT", "production"),
                ("TOKEN_SYMMETRIC_KEY", "12345678901234567890123456789012"),
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
