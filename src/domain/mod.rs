//! Value types that cannot hold invalid data.
//!
//! Every value that arrives from outside (a JSON body, a proto message, a CLI argument) is parsed
//! into one of these exactly once, at the edge; everything below works with the parsed type and
//! never re-checks. Fields are private so the only way in is through a parser.

mod account;
mod hold;
mod idempotency;
mod label;
mod money;
mod page;
mod records;
mod user;
mod verification;

pub use account::{AccountId, AccountKind, AccountStatus, EntryId, HoldId, TransferId};
pub use hold::{HOLD_TTL_DEFAULT, HOLD_TTL_MAX, Hold, HoldStatus, NewHold, parse_expires_in};
pub use idempotency::{IdempotencyKey, RequestFingerprint};
pub use label::{Label, Metadata, Reference};
pub use money::{Amount, Currency};
pub use page::{PageKind, PageSize, PageToken};
pub use records::{
    Account, DueEmail, Entry, NewTransfer, NewUser, NewVerification, Session, Transfer,
    TransferParties, TransferReceipt, User, UserUpdate, VerifyOutcome,
};
pub use user::{Email, FullName, Password, Role, Username};
pub use verification::VerificationCode;

/// Why an untrusted value was refused, and which input field it came from.
///
/// `field` defaults to the natural name of the value (`"username"`, `"amount"`); an adapter that
/// reads the value from a differently named field renames it with [`ValidationError::for_field`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {description}")]
pub struct ValidationError {
    pub field: &'static str,
    pub description: String,
}

/// Collects the refusals of several fields, so a client learns about all of them in one response.
#[derive(Debug, Default)]
pub struct Violations(Vec<ValidationError>);

impl Violations {
    /// Keeps the value, or records why it was refused.
    pub fn check<T>(&mut self, result: Result<T, ValidationError>) -> Option<T> {
        result.map_err(|e| self.0.push(e)).ok()
    }

    /// The built value if nothing was refused, else every refusal.
    pub fn finish<T>(self, build: impl FnOnce() -> Option<T>) -> Result<T, Vec<ValidationError>> {
        match (self.0.is_empty(), build()) {
            (true, Some(value)) => Ok(value),
            _ => Err(self.0),
        }
    }
}

/// Two parsed halves of one request, or every refusal of both.
pub fn both<A, B>(
    a: Result<A, Vec<ValidationError>>,
    b: Result<B, Vec<ValidationError>>,
) -> Result<(A, B), Vec<ValidationError>> {
    match (a, b) {
        (Ok(a), Ok(b)) => Ok((a, b)),
        (a, b) => Err(a
            .err()
            .unwrap_or_default()
            .into_iter()
            .chain(b.err().unwrap_or_default())
            .collect()),
    }
}

impl ValidationError {
    pub fn new(field: &'static str, description: impl Into<String>) -> Self {
        Self {
            field,
            description: description.into(),
        }
    }

    /// The same refusal, reported against another input field.
    pub fn for_field(self, field: &'static str) -> Self {
        Self { field, ..self }
    }
}
