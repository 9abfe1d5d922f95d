//! The rows of the bank as the rest of the code sees them: already parsed into domain types.

use chrono::{DateTime, Utc};
use secrecy::SecretString;

use super::{
    AccountId, AccountKind, AccountStatus, Amount, Currency, Email, EntryId, FullName, HoldId,
    Label, Role, TransferId, Username, ValidationError, VerificationCode,
};

#[derive(Debug, Clone)]
pub struct User {
    pub username: Username,
    /// An argon2 PHC string; secret-wrapped so `Debug` never prints it.
    pub hashed_password: SecretString,
    pub full_name: FullName,
    pub email: Email,
    pub role: Role,
    pub is_email_verified: bool,
    pub password_changed_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

/// What a new user is created with; the rest takes its defaults.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub username: Username,
    pub hashed_password: SecretString,
    pub full_name: FullName,
    pub email: Email,
    pub role: Role,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub id: AccountId,
    pub owner: Username,
    pub currency: Currency,
    /// Minor units. Never below `-overdraft_limit` for customer accounts (a database constraint
    /// holds it).
    pub balance: i64,
    pub kind: AccountKind,
    pub status: AccountStatus,
    /// How far below zero a banker lets this customer account go; 0 for settlement accounts.
    pub overdraft_limit: i64,
    /// What its pending, unexpired holds reserve (as payer), as of reading.
    pub held: i64,
    pub created_at: DateTime<Utc>,
}

impl Account {
    /// What a debit may take before the overdraft limit: `balance - held` (SPEC §6).
    pub fn available_balance(&self) -> i64 {
        // `held <= balance + overdraft_limit` and `balance >= -overdraft_limit` for customer
        // accounts, and settlement accounts hold nothing, so this stays in range.
        self.balance.saturating_sub(self.held)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    pub id: TransferId,
    pub from_account_id: AccountId,
    pub to_account_id: AccountId,
    pub amount: Amount,
    pub currency: Currency,
    /// The hold this transfer captured, if it was a capture.
    pub hold_id: Option<HoldId>,
    /// The client's reference and metadata.
    pub label: Label,
    /// The transfer this one reverses, if it is a reversal.
    pub reverses: Option<TransferId>,
    pub created_at: DateTime<Utc>,
}

/// One line of an account statement: the signed movement and the balance right after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: EntryId,
    pub account_id: AccountId,
    pub transfer_id: TransferId,
    pub amount: i64,
    pub balance_after: i64,
    pub created_at: DateTime<Utc>,
}

/// The changes of a partial user update; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct UserUpdate {
    pub full_name: Option<FullName>,
    /// A new address resets `is_email_verified` unless it differs only in letter case.
    pub email: Option<Email>,
    /// Also sets `password_changed_at`, and revokes every session of the user but
    /// `keep_session`, in the same statement.
    pub hashed_password: Option<SecretString>,
    /// With a new password: the one session that stays (the caller's own, when users change
    /// their own password); `None` revokes them all.
    pub keep_session: Option<uuid::Uuid>,
}

/// An email verification to start with a new or changed address: the code to send and how long
/// it stays valid.
#[derive(Debug)]
pub struct NewVerification {
    pub code: VerificationCode,
    pub valid_for: std::time::Duration,
}

/// A verification email waiting in the outbox, claimed by a worker for one delivery attempt.
#[derive(Debug)]
pub struct DueEmail {
    pub outbox_id: i64,
    /// 1 on the first attempt.
    pub attempt: i32,
    /// The `email_id` of the verification link.
    pub email_id: i64,
    pub username: Username,
    pub to: Email,
    pub code: VerificationCode,
    pub expires_at: DateTime<Utc>,
}

/// How a verification attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyOutcome {
    /// The address is verified now.
    Verified,
    /// No verification has this id.
    NotFound,
    /// The code is not this verification's.
    WrongCode,
    /// Used already (verifying twice is refused, not silently accepted).
    Used,
    Expired,
    /// The user has changed address since: this code verified the old one, which is gone.
    Superseded,
}

/// A login session: what a refresh token is checked against. Only a hash of the token is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id: uuid::Uuid,
    pub username: Username,
    pub refresh_token_hash: Vec<u8>,
    pub user_agent: String,
    pub client_ip: String,
    pub is_blocked: bool,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

/// A transfer together with the owners of its two accounts, for authorizing who may read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferParties {
    pub transfer: Transfer,
    pub from_owner: Username,
    pub to_owner: Username,
}

/// Everything one committed transfer wrote: the transfer, both entries and both accounts as they
/// stand after it. Adapters choose what to show; the recipient's balance is not for the sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransferReceipt {
    pub transfer: Transfer,
    pub from_entry: Entry,
    pub to_entry: Entry,
    pub from_account: Account,
    pub to_account: Account,
}

/// A request to move `amount` between two different customer accounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTransfer {
    from: AccountId,
    to: AccountId,
    amount: Amount,
    currency: Currency,
    label: Label,
}

impl NewTransfer {
    pub fn new(
        from: AccountId,
        to: AccountId,
        amount: Amount,
        currency: Currency,
    ) -> Result<Self, ValidationError> {
        if from == to {
            return Err(ValidationError::new(
                "to_account_id",
                "must differ from from_account_id",
            ));
        }
        Ok(Self {
            from,
            to,
            amount,
            currency,
            label: Label::default(),
        })
    }

    /// The same transfer with the client's reference and metadata.
    pub fn with_label(self, label: Label) -> Self {
        Self { label, ..self }
    }

    pub fn label(&self) -> &Label {
        &self.label
    }

    pub fn from(&self) -> AccountId {
        self.from
    }
    pub fn to(&self) -> AccountId {
        self.to
    }
    pub fn amount(&self) -> Amount {
        self.amount
    }
    pub fn currency(&self) -> Currency {
        self.currency
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transfer_needs_two_different_accounts() {
        let a = AccountId::new(1).unwrap();
        let b = AccountId::new(2).unwrap();
        let amount = Amount::new(5).unwrap();
        let err = NewTransfer::new(a, a, amount, Currency::Usd).unwrap_err();
        assert_eq!(err.field, "to_account_id");
        let ok = NewTransfer::new(a, b, amount, Currency::Usd).unwrap();
        assert_eq!((ok.from(), ok.to(), ok.amount()), (a, b, amount));
    }
}
