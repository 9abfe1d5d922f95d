//! The one error table (SPEC §4). Every failure of every operation is a `ServiceError`; its
//! `code()` picks the row, and the adapters map that code to an HTTP status or a gRPC code in
//! exhaustive matches. Messages are written here, from domain values only: no database or library
//! text ever reaches a client. The cause of an internal failure is kept as a `source`, for the log.

use crate::domain::ValidationError;
use crate::store::{StoreError, Unique};

/// The error codes of SPEC §4, as clients see them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    InvalidArgument,
    Unauthenticated,
    PermissionDenied,
    NotFound,
    AlreadyExists,
    Conflict,
    InsufficientFunds,
    CurrencyMismatch,
    IdempotencyMismatch,
    AccountFrozen,
    AccountClosed,
    HoldNotPending,
    AlreadyReversed,
    FailedPrecondition,
    RateLimited,
    Unavailable,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidArgument => "invalid_argument",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::PermissionDenied => "permission_denied",
            ErrorCode::NotFound => "not_found",
            ErrorCode::AlreadyExists => "already_exists",
            ErrorCode::Conflict => "conflict",
            ErrorCode::InsufficientFunds => "insufficient_funds",
            ErrorCode::CurrencyMismatch => "currency_mismatch",
            ErrorCode::IdempotencyMismatch => "idempotency_mismatch",
            ErrorCode::AccountFrozen => "account_frozen",
            ErrorCode::AccountClosed => "account_closed",
            ErrorCode::HoldNotPending => "hold_not_pending",
            ErrorCode::AlreadyReversed => "already_reversed",
            ErrorCode::FailedPrecondition => "failed_precondition",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }
}

type Cause = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// One entry per refused field.
    #[error("invalid argument: {0:?}")]
    InvalidArgument(Vec<ValidationError>),
    #[error("{0}")]
    Unauthenticated(&'static str),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    InsufficientFunds(String),
    #[error("{0}")]
    CurrencyMismatch(String),
    #[error("{0}")]
    AccountFrozen(String),
    #[error("{0}")]
    AccountClosed(String),
    #[error("{0}")]
    HoldNotPending(String),
    #[error("{0}")]
    AlreadyReversed(String),
    #[error("{0}")]
    IdempotencyMismatch(&'static str),
    /// A well-formed request the resource's current state refuses (closing an account that is
    /// not empty, a limit below the debt), one entry per field it concerns.
    #[error("failed precondition: {0:?}")]
    FailedPrecondition(Vec<ValidationError>),
    /// Too many attempts; the client may try again after `retry_after`.
    #[error("rate limited for {retry_after:?}")]
    RateLimited { retry_after: std::time::Duration },
    #[error("database unavailable")]
    Unavailable(#[source] Cause),
    #[error("internal error")]
    Internal(#[source] Cause),
}

impl ServiceError {
    pub fn code(&self) -> ErrorCode {
        match self {
            ServiceError::InvalidArgument(_) => ErrorCode::InvalidArgument,
            ServiceError::Unauthenticated(_) => ErrorCode::Unauthenticated,
            ServiceError::PermissionDenied(_) => ErrorCode::PermissionDenied,
            ServiceError::NotFound(_) => ErrorCode::NotFound,
            ServiceError::AlreadyExists(_) => ErrorCode::AlreadyExists,
            ServiceError::Conflict(_) => ErrorCode::Conflict,
            ServiceError::InsufficientFunds(_) => ErrorCode::InsufficientFunds,
            ServiceError::CurrencyMismatch(_) => ErrorCode::CurrencyMismatch,
            ServiceError::AccountFrozen(_) => ErrorCode::AccountFrozen,
            ServiceError::AccountClosed(_) => ErrorCode::AccountClosed,
            ServiceError::HoldNotPending(_) => ErrorCode::HoldNotPending,
            ServiceError::AlreadyReversed(_) => ErrorCode::AlreadyReversed,
            ServiceError::IdempotencyMismatch(_) => ErrorCode::IdempotencyMismatch,
            ServiceError::FailedPrecondition(_) => ErrorCode::FailedPrecondition,
            ServiceError::RateLimited { .. } => ErrorCode::RateLimited,
            ServiceError::Unavailable(_) => ErrorCode::Unavailable,
            ServiceError::Internal(_) => ErrorCode::Internal,
        }
    }

    /// The text a client may see.
    pub fn message(&self) -> String {
        match self {
            ServiceError::InvalidArgument(violations)
            | ServiceError::FailedPrecondition(violations) => match violations.as_slice() {
                [one] => format!("{}: {}", one.field, one.description),
                _ => "some fields are invalid; see details".to_owned(),
            },
            ServiceError::Unauthenticated(message) | ServiceError::IdempotencyMismatch(message) => {
                (*message).to_owned()
            }
            ServiceError::PermissionDenied(message)
            | ServiceError::NotFound(message)
            | ServiceError::AlreadyExists(message)
            | ServiceError::Conflict(message)
            | ServiceError::InsufficientFunds(message)
            | ServiceError::CurrencyMismatch(message)
            | ServiceError::AccountFrozen(message)
            | ServiceError::AccountClosed(message)
            | ServiceError::HoldNotPending(message)
            | ServiceError::AlreadyReversed(message) => message.clone(),
            ServiceError::RateLimited { .. } => format!(
                "too many attempts; try again in {} s",
                self.retry_after_secs().unwrap_or(1)
            ),
            ServiceError::Unavailable(_) => {
                "the service is temporarily unavailable; try again shortly".to_owned()
            }
            ServiceError::Internal(_) => "an internal error occurred".to_owned(),
        }
    }

    /// Whole seconds until a retry can succeed (at least 1), the value of an HTTP `Retry-After`
    /// header: for `rate_limited` when the bucket refills, for `unavailable` one second (what
    /// refuses now — a full queue, the database seen down — passes within seconds).
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            ServiceError::RateLimited { retry_after } => {
                Some(retry_after.as_secs_f64().ceil().max(1.0) as u64)
            }
            ServiceError::Unavailable(_) => Some(1),
            _ => None,
        }
    }

    /// The refused fields of an `invalid_argument` or a `failed_precondition`; empty for every
    /// other code.
    pub fn details(&self) -> &[ValidationError] {
        match self {
            ServiceError::InvalidArgument(violations)
            | ServiceError::FailedPrecondition(violations) => violations,
            _ => &[],
        }
    }

    pub fn invalid(field: &'static str, description: impl Into<String>) -> Self {
        ServiceError::InvalidArgument(vec![ValidationError::new(field, description)])
    }

    /// `failed_precondition` on one field.
    pub fn refused_by_state(field: &'static str, description: impl Into<String>) -> Self {
        ServiceError::FailedPrecondition(vec![ValidationError::new(field, description)])
    }

    pub(crate) fn internal(cause: impl Into<Cause>) -> Self {
        ServiceError::Internal(cause.into())
    }
}

impl From<ValidationError> for ServiceError {
    fn from(violation: ValidationError) -> Self {
        ServiceError::InvalidArgument(vec![violation])
    }
}

impl From<StoreError> for ServiceError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound(entity) => ServiceError::NotFound(format!("{entity} not found")),
            StoreError::AccountNotFound(id) => {
                ServiceError::NotFound(format!("account {id} not found"))
            }
            StoreError::AlreadyExists(unique) => match unique {
                Unique::Username => ServiceError::AlreadyExists("username is taken".to_owned()),
                Unique::Email => {
                    ServiceError::AlreadyExists("email is already registered".to_owned())
                }
                Unique::AccountCurrency => ServiceError::AlreadyExists(
                    "the owner already has an account in that currency".to_owned(),
                ),
                Unique::IdempotencyKey => ServiceError::Conflict(
                    "a request with this idempotency key is in progress".to_owned(),
                ),
            },
            // Under the lock, after the early check (`ownership.rs`) let a customer through only
            // for their own accounts: what is left is a banker sending from a customer's account,
            // or a payer resolving its own hold, who may be told why.
            StoreError::NotOwner(id) => {
                ServiceError::PermissionDenied(format!("account {id} does not belong to you"))
            }
            StoreError::NotCustomerAccount(id) => ServiceError::invalid(
                "account_id",
                format!("account {id} is a bank settlement account"),
            ),
            StoreError::CurrencyMismatch {
                account,
                expected,
                actual,
            } => ServiceError::CurrencyMismatch(format!(
                "account {account} holds {actual}, not {expected}"
            )),
            StoreError::AccountFrozen(id) => ServiceError::AccountFrozen(format!(
                "account {id} is frozen: it takes no debits until a banker unfreezes it"
            )),
            StoreError::AccountClosed(id) => ServiceError::AccountClosed(format!(
                "account {id} is closed: nothing moves in or out of it"
            )),
            StoreError::AccountNotEmpty(id) => ServiceError::refused_by_state(
                "status",
                format!("account {id} can be closed only at a zero balance"),
            ),
            StoreError::PendingHolds(id) => ServiceError::refused_by_state(
                "status",
                format!("account {id} can be closed only with no pending hold"),
            ),
            StoreError::HoldNotPending { hold, status } => ServiceError::HoldNotPending(format!(
                "hold {hold} is {}, not pending: capture, void and expiry are final",
                status.as_str()
            )),
            StoreError::CaptureExceedsHold { hold, reserved } => ServiceError::invalid(
                "amount",
                format!(
                    "must be at most the {} minor units hold {hold} reserves",
                    reserved.minor_units()
                ),
            ),
            StoreError::AlreadyReversed(id) => ServiceError::AlreadyReversed(format!(
                "transfer {id} has been reversed already: at most one reversal per transfer"
            )),
            StoreError::ReversalExceedsTransfer { transfer, original } => ServiceError::invalid(
                "amount",
                format!(
                    "must be at most the {} minor units transfer {transfer} moved",
                    original.minor_units()
                ),
            ),
            StoreError::LimitBelowDebt(id) => ServiceError::refused_by_state(
                "limit",
                format!("must cover what account {id} owes and has on hold now"),
            ),
            StoreError::InsufficientFunds(id) => {
                ServiceError::InsufficientFunds(format!("account {id} has insufficient funds"))
            }
            StoreError::BalanceOverflow(id) => ServiceError::invalid(
                "amount",
                format!("would overflow the balance of account {id}"),
            ),
            StoreError::SameAccount => {
                ServiceError::invalid("to_account_id", "must differ from from_account_id")
            }
            StoreError::LimitReached(what) => ServiceError::AlreadyExists(format!(
                "the bank's limit of {what} is reached; delete one first"
            )),
            StoreError::Contended => ServiceError::Conflict(
                "the request conflicted with concurrent ones; try again".to_owned(),
            ),
            StoreError::Unavailable(cause) => ServiceError::Unavailable(cause.into()),
            err @ (StoreError::ConstraintViolated(_) | StoreError::Internal(_)) => {
                ServiceError::internal(err)
            }
        }
    }
}
