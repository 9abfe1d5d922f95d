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
                // connection_exception class, admin/crash shutdown, cannot_connect_now,
                // too_many_connections: the database is not there for us right now.
                c if c.starts_with("08") || matches!(c, "57P01" | "57P02" | "57P03" | "53300") => {
                    return StoreError::Unavailable(err);
                }
                _ => {}
            }
            if !constraint.is_empty() {
                return StoreError::ConstraintViolated(constraint.to_owned());
            }
            return StoreError::Internal(err);
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
