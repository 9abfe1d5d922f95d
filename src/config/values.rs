//! The types of settings values, each read from its text.
//!
//! Environment variables are text, and so are most values in the file (`"15m"`,
//! `"0.0.0.0:8080"`); numbers and booleans may be written bare in the file, which the `config`
//! crate hands over as text too. Each type checks its own value here, so the error of a bad one
//! comes out of deserialization already tied to its setting's name. A message says what the
//! value must look like and never repeats it: some values are secrets.

use std::time::Duration;

use secrecy::SecretBox;
use serde::de::{Deserialize, Deserializer, Error as _};

use crate::auth::TokenMaker;
use crate::domain::HOLD_TTL_MAX;
use crate::mail::SmtpTls;
use crate::service::TrustedProxies;
use crate::store::MAX_GROUP_COMMIT_WINDOW;
use crate::telemetry::LogFormat;

/// A settings value read from its text; `Err` says what it must be ("must be ...").
pub trait FromText: Sized {
    fn from_text(text: &str) -> Result<Self, String>;
}

/// `Deserialize` for `FromText` types: one implementation per type, since a blanket one over a
/// trait of ours is not allowed for serde's trait.
macro_rules! deserialize_from_text {
    ($($ty:ty),* $(,)?) => {$(
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                <$ty as FromText>::from_text(&text).map_err(D::Error::custom)
            }
        }
    )*};
}

deserialize_from_text!(
    Environment,
    Address,
    Flag,
    GoDuration,
    ShutdownWait,
    CommitWindow,
    HoldTtl,
    TokenKey,
    Origins,
    LinkBase,
    MailSenderKind,
    MailFrom,
    SmtpTls,
    LogFormat,
    TrustedProxies,
);

impl<'de, const MIN: u64, const MAX: u64> Deserialize<'de> for Bounded<MIN, MAX> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::from_text(&text).map_err(D::Error::custom)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Development,
    Production,
}

impl FromText for Environment {
    fn from_text(text: &str) -> Result<Self, String> {
        match text {
            "development" => Ok(Self::Development),
            "production" => Ok(Self::Production),
            _ => Err("must be development or production".into()),
        }
    }
}

/// `true` or `false` (`1` / `0` too), as simple_bank's settings write them.
#[derive(Debug, Clone, Copy)]
pub struct Flag(pub bool);

impl FromText for Flag {
    fn from_text(text: &str) -> Result<Self, String> {
        match text {
            "true" | "1" => Ok(Self(true)),
            "false" | "0" => Ok(Self(false)),
            _ => Err("must be true or false".into()),
        }
    }
}

/// A listening address, `host:port` with a numeric host; port 0 picks a free one.
#[derive(Debug, Clone, Copy)]
pub struct Address(pub std::net::SocketAddr);

impl FromText for Address {
    fn from_text(text: &str) -> Result<Self, String> {
        text.parse()
            .map(Self)
            .map_err(|_| "must be host:port with a numeric host, e.g. 0.0.0.0:8080".into())
    }
}

/// A whole number from `MIN` to `MAX`.
#[derive(Debug, Clone, Copy)]
pub struct Bounded<const MIN: u64, const MAX: u64>(u64);

impl<const MIN: u64, const MAX: u64> Bounded<MIN, MAX> {
    /// The number as the type its consumer holds it in; every `MAX` used fits in a `u32`.
    pub fn get<T: TryFrom<u64>>(self) -> T {
        T::try_from(self.0)
            .ok()
            .expect("a settings bound fits the type that holds it")
    }

    fn from_text(text: &str) -> Result<Self, String> {
        text.parse::<u64>()
            .ok()
            .filter(|n| (MIN..=MAX).contains(n))
            .map(Self)
            .ok_or_else(|| format!("must be a number from {MIN} to {MAX}"))
    }
}

/// A positive duration in Go's `time.ParseDuration` syntax (see [`parse_duration`]).
#[derive(Debug, Clone, Copy)]
pub struct GoDuration(pub Duration);

impl FromText for GoDuration {
    fn from_text(text: &str) -> Result<Self, String> {
        parse_duration(text)
            .map(Self)
            .ok_or_else(|| "must be a duration like 15m, 24h, 90s, 1.5h or 300ms".into())
    }
}

/// `SHUTDOWN_DELAY` and `SHUTDOWN_GRACE`: a duration up to ten minutes, zero allowed (no
/// balancer to wait for; nothing to wait on).
#[derive(Debug, Clone, Copy)]
pub struct ShutdownWait(pub Duration);

impl FromText for ShutdownWait {
    fn from_text(text: &str) -> Result<Self, String> {
        parse_duration(text)
            .or_else(|| matches!(text.trim(), "0" | "0ms" | "0s").then_some(Duration::ZERO))
            .filter(|wait| *wait <= Duration::from_secs(600))
            .map(Self)
            .ok_or_else(|| "must be a duration from 0s to 10m, like 5s or 20s".into())
    }
}

/// `GROUP_COMMIT_WINDOW`: a duration up to [`MAX_GROUP_COMMIT_WINDOW`], zero allowed.
#[derive(Debug, Clone, Copy)]
pub struct CommitWindow(pub Duration);

impl FromText for CommitWindow {
    fn from_text(text: &str) -> Result<Self, String> {
        parse_duration(text)
            .or_else(|| matches!(text.trim(), "0" | "0us" | "0ms" | "0s").then_some(Duration::ZERO))
            .filter(|window| *window <= MAX_GROUP_COMMIT_WINDOW)
            .map(Self)
            .ok_or_else(|| "must be a duration from 0ms to 2ms, like 500us or 1ms".into())
    }
}

/// `HOLD_TTL`: a duration up to [`HOLD_TTL_MAX`], the longest a hold may live.
#[derive(Debug, Clone, Copy)]
pub struct HoldTtl(pub Duration);

impl FromText for HoldTtl {
    fn from_text(text: &str) -> Result<Self, String> {
        parse_duration(text)
            .filter(|ttl| *ttl >= Duration::from_secs(1) && *ttl <= HOLD_TTL_MAX)
            .map(Self)
            .ok_or_else(|| "must be a duration from 1s to 720h (30 days), like 168h".into())
    }
}

/// `TOKEN_SYMMETRIC_KEY`: exactly 32 bytes, kept in a box that is wiped on drop and never
/// printed.
pub struct TokenKey(pub SecretBox<[u8; TokenMaker::KEY_LEN]>);

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey([REDACTED])")
    }
}

impl FromText for TokenKey {
    fn from_text(text: &str) -> Result<Self, String> {
        let bytes: [u8; TokenMaker::KEY_LEN] = text
            .as_bytes()
            .try_into()
            .map_err(|_| format!("must be exactly {} bytes", TokenMaker::KEY_LEN))?;
        Ok(Self(SecretBox::new(Box::new(bytes))))
    }
}

/// `ALLOWED_ORIGINS`: comma-separated `scheme://host[:port]`, as browsers send `Origin`.
#[derive(Debug, Clone, Default)]
pub struct Origins(pub Vec<http::HeaderValue>);

impl FromText for Origins {
    fn from_text(text: &str) -> Result<Self, String> {
        let invalid = |origin: &str| {
            format!(
                "`{origin}` is not an origin like https://bank.example.com (no path, no trailing /)"
            )
        };
        text.split(',')
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
            .collect::<Result<_, _>>()
            .map(Self)
    }
}

/// `VERIFY_EMAIL_BASE_URL`: an http(s) URL without query or fragment, kept without its
/// trailing `/`.
#[derive(Debug, Clone)]
pub struct LinkBase(pub String);

impl FromText for LinkBase {
    fn from_text(text: &str) -> Result<Self, String> {
        let scheme_ok = text.starts_with("http://") || text.starts_with("https://");
        if !scheme_ok || text.contains(char::is_whitespace) || text.contains(['?', '#']) {
            return Err(
                "must be an http(s) URL without query, e.g. https://bank.example.com".into(),
            );
        }
        Ok(Self(text.trim_end_matches('/').to_owned()))
    }
}

/// `MAIL_SENDER`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailSenderKind {
    File,
    Log,
    Smtp,
}

impl FromText for MailSenderKind {
    fn from_text(text: &str) -> Result<Self, String> {
        match text {
            "file" => Ok(Self::File),
            "log" => Ok(Self::Log),
            "smtp" => Ok(Self::Smtp),
            _ => Err("must be file, log or smtp".into()),
        }
    }
}

/// `SMTP_FROM`: a mailbox such as `simplebank <no-reply@example.com>`.
#[derive(Debug, Clone)]
pub struct MailFrom(pub lettre::message::Mailbox);

impl FromText for MailFrom {
    fn from_text(text: &str) -> Result<Self, String> {
        text.parse()
            .map(Self)
            .map_err(|_| "must be an address like simplebank <no-reply@example.com>".into())
    }
}

impl FromText for SmtpTls {
    fn from_text(text: &str) -> Result<Self, String> {
        match text {
            "starttls" => Ok(Self::StartTls),
            "tls" => Ok(Self::Tls),
            "none" => Ok(Self::None),
            _ => Err("must be starttls, tls or none".into()),
        }
    }
}

impl FromText for LogFormat {
    fn from_text(text: &str) -> Result<Self, String> {
        match text {
            "json" => Ok(Self::Json),
            "pretty" => Ok(Self::Pretty),
            _ => Err("must be json or pretty".into()),
        }
    }
}

impl FromText for TrustedProxies {
    fn from_text(text: &str) -> Result<Self, String> {
        Self::parse(text)
    }
}

/// A positive duration as Go's `time.ParseDuration` writes it, which simple_bank's users know:
/// a sequence of decimal numbers, each with an optional fraction and a unit — `ns`, `us` (or
/// `µs`), `ms`, `s`, `m`, `h` — such as `300ms`, `1.5h` or `2h45m30.5s`. Zero, a sign, spaces
/// and units Go does not know (`d`) are refused, as is anything past `u64` nanoseconds.
///
/// Written here rather than taken from a crate: the well-kept duration parsers (humantime and
/// its kin) take other syntaxes — `1.5h` is refused, `1 day` accepted — and the point of this
/// one is to take exactly what simple_bank's `app.env` files hold.
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
