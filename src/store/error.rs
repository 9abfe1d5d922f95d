//! What can go wrong in the store, told apart by meaning rather than by database text.
//!
//! PostgreSQL reports a violated constraint by name and a failure class by SQLSTATE; both are
//! turned into variants here, once. Nothing from a database message travels further: the one
//! variant that carries a `sqlx::Error` (`Internal`/`Unavailable`) keeps it only as a `source`
//! for the log.

use crate::domain::{AccountId, Amount, Currency, HoldId, HoldStatus, TransferId};

/// A row the caller asked for, by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entity {
    User,
    Account,
    Transfer,
    Hold,
    Webhook,
    Event,
}

impl std::fmt::Display for Entity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Entity::User => "user",
            Entity::Account => "account",
            Entity::Transfer => "transfer",
            Entity::Hold => "hold",
            Entity::Webhook => "webhook",
            Entity::Event => "event",
        })
    }
}

/// A uniqueness rule, named after what it protects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unique {
    /// `users_pkey`: the username is taken.
    Username,
    /// `users_email_key`: the email is taken, in any letter case.
    Email,
    /// `accounts_owner_currency_key`: the owner already has an account in that currency.
    AccountCurrency,
    /// `idempotency_keys_pkey`: the user already used that idempotency key.
    IdempotencyKey,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(Entity),
    #[error("account {0} not found")]
    AccountNotFound(AccountId),
    #[error("already exists: {0:?}")]
    AlreadyExists(Unique),
    #[error("account {0} is not owned by the caller")]
    NotOwner(AccountId),
    #[error("account {0} is a settlement account")]
    NotCustomerAccount(AccountId),
    #[error("account {account} holds {actual}, not {expected}")]
    CurrencyMismatch {
        account: AccountId,
        expected: Currency,
        actual: Currency,
    },
    #[error("account {0} is frozen")]
    AccountFrozen(AccountId),
    #[error("account {0} is closed")]
    AccountClosed(AccountId),
    #[error("account {0} still holds money")]
    AccountNotEmpty(AccountId),
    #[error("account {0} has pending holds")]
    PendingHolds(AccountId),
    #[error("hold {hold} is {status}, not pending", status = .status.as_str())]
    HoldNotPending { hold: HoldId, status: HoldStatus },
    #[error("hold {hold} reserves {reserved}; cannot capture more")]
    CaptureExceedsHold { hold: HoldId, reserved: Amount },
    #[error("transfer {0} has been reversed already")]
    AlreadyReversed(TransferId),
    #[error("transfer {transfer} moved {original}; a reversal cannot move more")]
    ReversalExceedsTransfer {
        transfer: TransferId,
        original: Amount,
    },
    #[error("the overdraft limit of account {0} would be below its debt")]
    LimitBelowDebt(AccountId),
    #[error("insufficient funds in account {0}")]
    InsufficientFunds(AccountId),
    #[error("the balance of account {0} would overflow")]
    BalanceOverflow(AccountId),
    #[error("a transfer needs two different accounts")]
    SameAccount,
    /// As many as the bank allows already exist (the name says of what).
    #[error("the limit of {0} is reached")]
    LimitReached(&'static str),
    /// A row broke a rule the domain types should already have enforced: a bug, not bad input.
    #[error("constraint {0} violated")]
    ConstraintViolated(String),
    /// Deadlocks or serialization failures persisted through every retry.
    #[error("the transaction kept conflicting with concurrent ones")]
    Contended,
    #[error("database unavailable")]
    Unavailable(#[source] sqlx::Error),
    #[error("database error")]
    Internal(#[source] sqlx::Error),
}

/// SQLSTATEs that end the session rather than the statement: the connection_exception class,
/// admin/crash shutdown and cannot_connect_now. A `COMMIT` (or an autocommit statement) cut off by
/// one may have committed: PostgreSQL shutting down while it waits for a synchronous standby
/// keeps the transaction committed locally and still sends 57P01, and a planned switchover
/// replicates it to the new leader.
fn ends_session(code: &str) -> bool {
    code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03")
}

/// Whether the database's answer proves the statement rolled back (so it may be run again): an
/// error it answered with, other than one that ended the session, or no connection at all.
pub(crate) fn rolled_back(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Database(db) => !ends_session(db.code().as_deref().unwrap_or_default()),
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => true,
        _ => false,
    }
}

/// Process-wide: connections opened before this moment (milliseconds after `CLOCK_ZERO`, 0 for
/// never) are closed when next taken from a pool instead of being used (the `before_acquire` of
/// `DatabaseSettings::pool_options`). Set when a connection turns out to reach a server that cannot take writes
/// (a demoted leader, a standby) or has gone: after a failover every connection opened before it
/// leads to the old leader, and each would otherwise fail one request before the pool drops it.
/// One clock for every pool: a stale address is a property of the database tier, not of a pool,
/// and a pool that reconnects needlessly costs a handful of connects, nothing else.
static RETIRED_BEFORE_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static CLOCK_ZERO: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

fn clock_ms() -> u64 {
    let zero = *CLOCK_ZERO.get_or_init(std::time::Instant::now);
    u64::try_from(zero.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Retires every connection opened up to now (see `RETIRED_BEFORE_MS`).
pub(crate) fn retire_connections() {
    let now = clock_ms().max(1);
    let before = RETIRED_BEFORE_MS.fetch_max(now, std::sync::atomic::Ordering::Relaxed);
    // Once per episode in the log, not once per failed request.
    if now.saturating_sub(before) > 1_000 {
        tracing::warn!("the database changed under us: closing connections opened before now");
    }
}

/// Whether a pooled connection of this age was opened before the last retirement.
pub fn is_retired(age: std::time::Duration) -> bool {
    opened_by(
        RETIRED_BEFORE_MS.load(std::sync::atomic::Ordering::Relaxed),
        clock_ms(),
        age,
    )
}

/// Whether a connection `age` old at `now_ms` was opened at or before `retired_ms` (0: never).
fn opened_by(retired_ms: u64, now_ms: u64, age: std::time::Duration) -> bool {
    if retired_ms == 0 {
        return false;
    }
    let age_ms = u64::try_from(age.as_millis()).unwrap_or(u64::MAX);
    now_ms.saturating_sub(age_ms) <= retired_ms
}

/// SQLSTATEs after which the same transaction may simply be tried again: deadlock_detected and
/// serialization_failure.
pub(crate) fn is_retryable(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("40P01" | "40001")))
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &err {
            let code = db.code().unwrap_or_default();
            let constraint = db.constraint().unwrap_or_default();
            match code.as_ref() {
                // unique_violation
                "23505" => match constraint {
                    "users_pkey" => return StoreError::AlreadyExists(Unique::Username),
                    "users_email_key" => return StoreError::AlreadyExists(Unique::Email),
                    "accounts_owner_currency_key" => {
                        return StoreError::AlreadyExists(Unique::AccountCurrency);
                    }
                    "idempotency_keys_pkey" => {
                        return StoreError::AlreadyExists(Unique::IdempotencyKey);
                    }
                    _ => {}
                },
                // foreign_key_violation: the referenced row is missing.
                "23503" => match constraint {
                    "accounts_owner_fkey"
                    | "sessions_username_fkey"
                    | "verify_emails_username_fkey"
                    | "idempotency_keys_username_fkey" => {
                        return StoreError::NotFound(Entity::User);
                    }
                    "transfers_from_account_fkey"
                    | "transfers_to_account_fkey"
                    | "holds_from_account_fkey"
                    | "holds_to_account_fkey"
                    | "entries_account_fkey" => return StoreError::NotFound(Entity::Account),
                    "transfers_hold_fkey" => return StoreError::NotFound(Entity::Hold),
                    "entries_transfer_fkey" => return StoreError::NotFound(Entity::Transfer),
                    _ => {}
                },
                // check_violation; the other checks fall through to `ConstraintViolated` below.
                "23514"
                    if constraint == "transfers_distinct_accounts"
                        || constraint == "holds_distinct_accounts" =>
                {
                    return StoreError::SameAccount;
                }
                "40P01" | "40001" => return StoreError::Contended,
                // lock_not_available: a row stayed locked past `lock_timeout` (REQUEST_TIMEOUT,
                // see `DatabaseSettings`) — someone else holds it; not worth retrying at once.
                "55P03" => return StoreError::Unavailable(err),
                // The session ended under us (see `ends_session`): this connection, and the
                // others opened as long ago, lead to a server that is gone or going.
                c if ends_session(c) => {
                    retire_connections();
                    return StoreError::Unavailable(err);
                }
                // read_only_sql_transaction: the connection reached a standby (a leader demoted
                // by a switchover, or a balancer that had not yet noticed); nothing was written.
                "25006" => {
                    retire_connections();
                    return StoreError::Unavailable(err);
                }
                // too_many_connections: the database is not there for us right now.
                "53300" => return StoreError::Unavailable(err),
                _ => {}
            }
            if !constraint.is_empty() {
                return StoreError::ConstraintViolated(constraint.to_owned());
            }
            return StoreError::Internal(err);
        }
        if matches!(err, sqlx::Error::Io(_) | sqlx::Error::Tls(_)) {
            retire_connections();
        }
        match err {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable(err),
            other => StoreError::Internal(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn only_connections_opened_by_the_retirement_are_retired() {
        // Never retired: nothing is.
        assert!(!opened_by(0, 10_000, Duration::from_secs(9)));
        // Retired at 5 s; now 10 s: opened at 1 s and at 5 s are, opened at 6 s is not.
        assert!(opened_by(5_000, 10_000, Duration::from_secs(9)));
        assert!(opened_by(5_000, 10_000, Duration::from_secs(5)));
        assert!(!opened_by(5_000, 10_000, Duration::from_secs(4)));
        // An age beyond the clock (opened before the process's clock zero) is retired.
        assert!(opened_by(5_000, 10_000, Duration::from_secs(3_600)));
    }

    #[test]
    fn an_ended_session_leaves_the_outcome_unknown() {
        for code in ["08006", "08003", "57P01", "57P02", "57P03"] {
            assert!(ends_session(code), "{code}");
        }
        for code in ["40P01", "40001", "55P03", "25006", "23505", "53300"] {
            assert!(!ends_session(code), "{code}");
        }
        // No connection at all: nothing was sent.
        assert!(rolled_back(&sqlx::Error::PoolTimedOut));
        // The connection broke after the call was sent: it may have committed.
        let broken = sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
        assert!(!rolled_back(&broken));
    }
}
