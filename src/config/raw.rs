//! The settings as written: one serde struct whose field names are the settings' names (lower
//! case in the file, upper case in the environment), merged from defaults < a TOML file
//! (`app.toml` in the working directory, or `--config PATH`) < the environment.
//!
//! Adding a setting means adding a field here (its type checks its value, see `values.rs`),
//! using it in `Settings`' conversion, and documenting it in `app.example.toml` and the README;
//! the file layer, the environment layer and the error messages follow from the field.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use secrecy::SecretString;
use serde::Deserialize;

use super::ConfigError;
use super::values::{
    Address, Bounded, CommitWindow, Environment, Flag, GoDuration, HoldTtl, LinkBase, MailFrom,
    MailSenderKind, Origins, ShutdownWait, TokenKey,
};
use crate::mail::SmtpTls;
use crate::service::TrustedProxies;
use crate::telemetry::LogFormat;

type TomlFile = config::File<config::FileSourceFile, config::FileFormat>;

/// Every setting; `None` where no layer sets it. Defaults and the rules between settings are
/// applied by the conversion into [`super::Settings`].
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawSettings {
    pub environment: Option<Environment>,
    pub log_format: Option<LogFormat>,
    pub db_source: Option<SecretString>,
    pub db_max_connections: Option<Bounded<1, 1000>>,
    pub db_acquire_timeout: Option<GoDuration>,
    pub group_commit: Option<Flag>,
    pub group_commit_window: Option<CommitWindow>,
    pub group_commit_lanes: Option<Bounded<1, 16>>,
    pub http_server_address: Option<Address>,
    pub grpc_server_address: Option<Address>,
    pub token_symmetric_key: Option<TokenKey>,
    pub access_token_duration: Option<GoDuration>,
    pub refresh_token_duration: Option<GoDuration>,
    pub http_body_limit: Option<Bounded<1024, { 16 * 1024 * 1024 }>>,
    pub http_header_read_timeout: Option<GoDuration>,
    pub idempotency_key_retention: Option<GoDuration>,
    pub mail_sender: Option<MailSenderKind>,
    pub mail_dir: Option<PathBuf>,
    pub smtp_host: Option<String>,
    pub smtp_port: Option<Bounded<1, 65535>>,
    pub smtp_tls: Option<SmtpTls>,
    pub smtp_username: Option<String>,
    pub smtp_password: Option<SecretString>,
    pub smtp_from: Option<MailFrom>,
    pub verify_email_base_url: Option<LinkBase>,
    pub verify_email_ttl: Option<GoDuration>,
    pub hold_ttl: Option<HoldTtl>,
    pub allowed_origins: Option<Origins>,
    pub simple_bank_compat: Option<Flag>,
    pub max_concurrent_requests: Option<Bounded<1, 1_000_000>>,
    pub user_max_concurrent_requests: Option<Bounded<1, 1_000_000>>,
    pub user_requests_per_second: Option<Bounded<1, 1_000_000>>,
    pub anonymous_requests_per_second: Option<Bounded<1, 1_000_000>>,
    pub request_timeout: Option<GoDuration>,
    pub login_attempts_per_ip: Option<Bounded<0, 1_000_000>>,
    pub login_failures_per_username: Option<Bounded<0, 1_000_000>>,
    pub password_hash_concurrency: Option<Bounded<1, 256>>,
    pub password_hash_queue: Option<Bounded<0, 100_000>>,
    pub trusted_proxies: Option<TrustedProxies>,
    pub webhook_secret_key: Option<TokenKey>,
    pub webhook_allow_private: Option<Flag>,
    pub webhook_retry_for: Option<GoDuration>,
    pub webhook_timeout: Option<GoDuration>,
    pub events_poll_interval: Option<GoDuration>,
    pub max_streams: Option<Bounded<1, 100_000>>,
    pub max_streams_per_user: Option<Bounded<1, 100_000>>,
    pub shutdown_delay: Option<ShutdownWait>,
    pub shutdown_grace: Option<ShutdownWait>,
}

impl RawSettings {
    /// The settings' names, as the file writes them: the struct's field names, read from what
    /// serde's derive hands a deserializer, so this list cannot drift from the struct.
    pub fn names() -> &'static [&'static str] {
        static NAMES: LazyLock<&'static [&'static str]> =
            LazyLock::new(introspect::field_names::<RawSettings>);
        &NAMES
    }

    /// The names as environment variables.
    pub fn variables() -> impl Iterator<Item = String> {
        Self::names().iter().map(|name| name.to_ascii_uppercase())
    }

    /// The file at `path` (which must exist), or `app.toml` in the working directory if there is
    /// one; the environment over it (only the settings' own variables are read).
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
        Self::merge(Some((file, name)), |variable| std::env::var(variable).ok())
    }

    /// The settings that `get` returns by environment variable name, over the defaults (tests,
    /// and the environment layer of [`RawSettings::load`]).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Self::merge(None, get)
    }

    /// `LOG_FORMAT`, by default JSON in production and readable text otherwise. Known before the
    /// rest is converted, since the conversion itself logs.
    pub fn log_format(&self) -> LogFormat {
        self.log_format
            .unwrap_or(match self.environment.unwrap_or(Environment::Development) {
                Environment::Production => LogFormat::Json,
                Environment::Development => LogFormat::Pretty,
            })
    }

    fn merge(
        file: Option<(TomlFile, String)>,
        variable: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder();
        if let Some((file, name)) = file {
            let file_error = |reason: String| ConfigError::File {
                file: name.clone(),
                reason,
            };
            // Unknown names are found here, before any value is read, so the message can say
            // which file has the typo; serde's `deny_unknown_fields` would say it too, unplaced.
            let alone = config::Config::builder()
                .add_source(file.clone())
                .build()
                .map_err(|e| file_error(e.to_string()))?;
            let table: HashMap<String, config::Value> = alone
                .try_deserialize()
                .map_err(|e| file_error(e.to_string()))?;
            if let Some(key) = table
                .keys()
                .find(|key| !Self::names().contains(&key.as_str()))
            {
                return Err(file_error(format!(
                    "unknown setting `{key}` (settings have the environment variables' names, \
                     in lower case: db_source, http_server_address, ...)"
                )));
            }
            builder = builder.add_source(file);
        }
        for name in Self::names() {
            if let Some(value) = variable(&name.to_ascii_uppercase()) {
                builder = builder
                    .set_override(*name, value)
                    .expect("a settings name is a valid config key");
            }
        }
        builder
            .build()
            .and_then(config::Config::try_deserialize)
            .map_err(value_error)
    }
}

/// A value that did not deserialize, as the setting it belongs to and what it must be. The
/// `config` crate places the error at its key; the message is the value type's own (which does
/// not repeat the value) or, for a value of the wrong kind (a table where text belongs), names
/// the kind expected.
fn value_error(error: config::ConfigError) -> ConfigError {
    match error {
        config::ConfigError::At {
            error,
            key: Some(key),
            ..
        } => ConfigError::Invalid {
            key: key.to_ascii_uppercase(),
            reason: match *error {
                config::ConfigError::Message(reason) => reason,
                other => other.to_string(),
            },
        },
        config::ConfigError::Type {
            unexpected,
            key: Some(key),
            ..
        } => ConfigError::Invalid {
            key: key.to_ascii_uppercase(),
            reason: format!("must be one value (text, a number or true/false), not a {unexpected}"),
        },
        other => ConfigError::File {
            file: "settings".into(),
            reason: other.to_string(),
        },
    }
}

/// The field names of a derived struct: serde's derive passes them to `deserialize_struct`,
/// which this deserializer records and then stops.
mod introspect {
    use serde::Deserialize;
    use serde::de::{self, Visitor};

    pub fn field_names<T: Deserialize<'static>>() -> &'static [&'static str] {
        let mut names: &'static [&'static str] = &[];
        let _ = T::deserialize(Names(&mut names));
        names
    }

    struct Names<'a>(&'a mut &'static [&'static str]);

    impl<'de> de::Deserializer<'de> for Names<'_> {
        type Error = de::value::Error;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("only the names are read"))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(de::Error::custom("only the names are read"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }
}
