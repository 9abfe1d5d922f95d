//! Writes under an idempotency key beside money movements — hold writes and account controls —
//! done once per (user, key) and answered the same way again, success or refusal.
//!
//! The same key table, advisory lock and claim as money movements (`idempotency.rs`): the lock
//! says "running", the record says what happened, and the record is written in the write's own
//! transaction. Each write is a `KeyedWrite`: what it is called, what identifies the request,
//! how to run it inside a transaction, what of its answer to record, and how to answer again
//! from the record. The write runs under a savepoint: a write may refuse after it has changed
//! rows (a capture whose transfer is refused), and only the record of the refusal may stay.

use sqlx::Row;
use sqlx::postgres::PgRow;

use super::idempotency::{Claim, KeyedOutcome, advisory_lock_key, claim};
use super::{Entity, Store, StoreError};
use crate::domain::{
    AccountId, Amount, Currency, HoldId, IdempotencyKey, RequestFingerprint, Username,
};

/// What a record names of a successful write.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Recorded {
    pub transfer: Option<i64>,
    pub hold: Option<i64>,
    pub account: Option<i64>,
}

impl Recorded {
    pub fn hold(id: HoldId) -> Self {
        Self {
            hold: Some(id.get()),
            ..Self::default()
        }
    }

    pub fn account(id: AccountId) -> Self {
        Self {
            account: Some(id.get()),
            ..Self::default()
        }
    }
}

/// A write that can run under an idempotency key.
pub(super) trait KeyedWrite: Sync {
    type Answer: Send + std::fmt::Debug;
    /// The operation's name in the record (`idempotency_keys_operation_known`).
    fn kind(&self) -> &'static str;
    /// What identifies the request: a retry under the key must be the same.
    fn fingerprint(&self) -> RequestFingerprint;
    /// The write inside `tx` (a savepoint), which the caller ends.
    fn run<'a>(
        &'a self,
        tx: &'a mut sqlx::PgConnection,
    ) -> impl Future<Output = Result<Result<Self::Answer, StoreError>, TxError>> + Send + 'a;
    /// The rows a successful answer names.
    fn outcome(answer: &Self::Answer) -> Recorded;
    /// The successful answer again, from the record (`FIND_KEY`'s row).
    fn replay<'a>(
        &'a self,
        tx: &'a mut sqlx::PgConnection,
        row: &'a PgRow,
    ) -> impl Future<Output = Result<Self::Answer, TxError>> + Send + 'a;
}

/// Runs a keyed request's transaction in a task of its own. If the caller stops waiting — the
/// client hung up, or the request ran past its timeout — a future dropped mid-transaction would
/// leave its advisory and row locks on a pooled connection until that connection is next used;
/// as a task it finishes and ends its transaction, and the client's retry with the same key
/// finds the outcome. `what` names it in the error should the task itself fail.
pub(super) async fn in_own_task<T: Send + 'static>(
    what: &str,
    work: impl Future<Output = Result<T, StoreError>> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::spawn(work).await.unwrap_or_else(|failed| {
        Err(StoreError::Internal(sqlx::Error::Protocol(format!(
            "keyed {what} task failed: {failed}"
        ))))
    })
}

const RECORD: &str = "INSERT INTO idempotency_keys \
     (username, key, request_hash, operation, transfer_id, hold_id, account_id, refusal, \
      refusal_detail) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";

impl Store {
    /// `write` once per (`caller`, `key`), in one transaction (retried on a deadlock).
    pub(super) async fn write_once<W: KeyedWrite>(
        &self,
        write: &W,
        caller: &Username,
        key: &IdempotencyKey,
    ) -> Result<KeyedOutcome<W::Answer>, StoreError> {
        let lock = advisory_lock_key(caller, key);
        let fingerprint = write.fingerprint();
        retrying_tx(|| async {
            let mut tx = self.pool.begin().await?;
            let done = keyed_in(&mut tx, write, lock, fingerprint, caller, key).await;
            match &done {
                Ok(Ok(KeyedOutcome::Done(_))) => tx.commit().await?,
                _ => tx.rollback().await?,
            }
            done
        })
        .await?
    }
}

/// Claims the key, or answers from its record; else runs the write under a savepoint and
/// records its outcome, success or refusal, in `tx`. `Ok(Err(_))`: a failure that is not the
/// request's answer (never recorded; the caller rolls back).
async fn keyed_in<W: KeyedWrite>(
    tx: &mut sqlx::PgConnection,
    write: &W,
    lock: i64,
    fingerprint: RequestFingerprint,
    caller: &Username,
    key: &IdempotencyKey,
) -> Result<Result<KeyedOutcome<W::Answer>, StoreError>, TxError> {
    match claim(tx, lock, caller, key).await? {
        Some(Claim::InFlight) => return Ok(Ok(KeyedOutcome::InFlight)),
        Some(Claim::Found(row)) => {
            let stored: Vec<u8> = row.try_get("request_hash")?;
            if RequestFingerprint::from_bytes(&stored) != Some(fingerprint) {
                return Ok(Ok(KeyedOutcome::Mismatch));
            }
            if let Some(name) = row.try_get::<Option<String>, _>("refusal")? {
                let detail: Option<String> = row.try_get("refusal_detail")?;
                let refusal = refusal_from_record(&name, detail.as_deref())?;
                return Ok(Ok(KeyedOutcome::Replayed(Err(refusal))));
            }
            let answer = write.replay(tx, &row).await?;
            return Ok(Ok(KeyedOutcome::Replayed(Ok(answer))));
        }
        None => {}
    }
    let mut attempt = sqlx::Connection::begin(&mut *tx).await?;
    let outcome = write.run(&mut attempt).await?;
    match &outcome {
        Ok(_) => attempt.commit().await?,
        Err(_) => attempt.rollback().await?,
    }
    let record = match &outcome {
        Ok(answer) => Some((W::outcome(answer), None, None)),
        Err(refused) => {
            refusal_record(refused).map(|(name, detail)| (Recorded::default(), Some(name), detail))
        }
    };
    let Some((recorded, refusal, detail)) = record else {
        return Ok(Err(outcome.expect_err("only a refusal goes unrecorded")));
    };
    sqlx::query(RECORD)
        .bind(caller.as_str())
        .bind(key.as_str())
        .bind(&fingerprint.as_bytes()[..])
        .bind(write.kind())
        .bind(recorded.transfer)
        .bind(recorded.hold)
        .bind(recorded.account)
        .bind(refusal)
        .bind(detail)
        .execute(&mut *tx)
        .await?;
    Ok(Ok(KeyedOutcome::Done(outcome)))
}

/// A business refusal as a key record keeps it (`refusal`, `refusal_detail`); `None` for a
/// failure that is not the request's answer (the database down), which is never recorded.
pub(super) fn refusal_record(refusal: &StoreError) -> Option<(&'static str, Option<String>)> {
    let id = |account: &AccountId| Some(account.to_string());
    Some(match refusal {
        StoreError::AccountNotFound(a) => ("account_not_found", id(a)),
        StoreError::NotOwner(a) => ("not_owner", id(a)),
        StoreError::NotCustomerAccount(a) => ("not_customer_account", id(a)),
        StoreError::AccountFrozen(a) => ("account_frozen", id(a)),
        StoreError::AccountClosed(a) => ("account_closed", id(a)),
        StoreError::InsufficientFunds(a) => ("insufficient_funds", id(a)),
        StoreError::BalanceOverflow(a) => ("balance_overflow", id(a)),
        StoreError::AccountNotEmpty(a) => ("account_not_empty", id(a)),
        StoreError::PendingHolds(a) => ("pending_holds", id(a)),
        StoreError::LimitBelowDebt(a) => ("limit_below_debt", id(a)),
        StoreError::CurrencyMismatch {
            account,
            expected,
            actual,
        } => (
            "currency_mismatch",
            Some(format!("{account}:{}:{}", expected.code(), actual.code())),
        ),
        StoreError::SameAccount => ("same_account", None),
        StoreError::NotFound(Entity::Hold) => ("hold_not_found", None),
        StoreError::NotFound(Entity::Transfer) => ("transfer_not_found", None),
        StoreError::AlreadyReversed(t) => ("already_reversed", Some(t.to_string())),
        StoreError::ReversalExceedsTransfer { transfer, original } => (
            "reversal_exceeds_transfer",
            Some(format!("{transfer}:{}", original.minor_units())),
        ),
        StoreError::HoldNotPending { hold, status } => (
            "hold_not_pending",
            Some(format!("{hold}:{}", status.as_str())),
        ),
        StoreError::CaptureExceedsHold { hold, reserved } => (
            "capture_exceeds_hold",
            Some(format!("{hold}:{}", reserved.minor_units())),
        ),
        _ => return None,
    })
}

/// `refusal_record` read back; a record this server cannot read is a broken invariant.
pub(super) fn refusal_from_record(
    name: &str,
    detail: Option<&str>,
) -> Result<StoreError, StoreError> {
    let broken = || StoreError::ConstraintViolated(format!("unreadable hold refusal {name}"));
    let parts: Vec<&str> = detail.map(|d| d.split(':').collect()).unwrap_or_default();
    let account = |i: usize| -> Result<AccountId, StoreError> {
        parts.get(i).and_then(|p| p.parse().ok()).ok_or_else(broken)
    };
    let hold = || -> Result<HoldId, StoreError> {
        parts
            .first()
            .and_then(|p| p.parse().ok())
            .ok_or_else(broken)
    };
    let currency = |i: usize| -> Result<Currency, StoreError> {
        parts.get(i).and_then(|p| p.parse().ok()).ok_or_else(broken)
    };
    Ok(match name {
        "account_not_found" => StoreError::AccountNotFound(account(0)?),
        "not_owner" => StoreError::NotOwner(account(0)?),
        "not_customer_account" => StoreError::NotCustomerAccount(account(0)?),
        "account_frozen" => StoreError::AccountFrozen(account(0)?),
        "account_closed" => StoreError::AccountClosed(account(0)?),
        "insufficient_funds" => StoreError::InsufficientFunds(account(0)?),
        "balance_overflow" => StoreError::BalanceOverflow(account(0)?),
        "account_not_empty" => StoreError::AccountNotEmpty(account(0)?),
        "pending_holds" => StoreError::PendingHolds(account(0)?),
        "limit_below_debt" => StoreError::LimitBelowDebt(account(0)?),
        "currency_mismatch" => StoreError::CurrencyMismatch {
            account: account(0)?,
            expected: currency(1)?,
            actual: currency(2)?,
        },
        "same_account" => StoreError::SameAccount,
        "hold_not_found" => StoreError::NotFound(Entity::Hold),
        "transfer_not_found" => StoreError::NotFound(Entity::Transfer),
        "already_reversed" => StoreError::AlreadyReversed(
            parts
                .first()
                .and_then(|p| p.parse().ok())
                .ok_or_else(broken)?,
        ),
        "reversal_exceeds_transfer" => StoreError::ReversalExceedsTransfer {
            transfer: parts
                .first()
                .and_then(|p| p.parse().ok())
                .ok_or_else(broken)?,
            original: parts
                .get(1)
                .and_then(|p| p.parse::<i64>().ok())
                .and_then(|n| Amount::new(n).ok())
                .ok_or_else(broken)?,
        },
        "hold_not_pending" => StoreError::HoldNotPending {
            hold: hold()?,
            status: parts
                .get(1)
                .and_then(|p| p.parse().ok())
                .ok_or_else(broken)?,
        },
        "capture_exceeds_hold" => StoreError::CaptureExceedsHold {
            hold: hold()?,
            reserved: parts
                .get(1)
                .and_then(|p| p.parse::<i64>().ok())
                .and_then(|n| Amount::new(n).ok())
                .ok_or_else(broken)?,
        },
        _ => return Err(broken()),
    })
}

/// `retrying` for a transaction whose business refusals are values (`Ok(Err(_))`), so only a
/// database error that rolled it back (deadlock, serialization failure) is tried again.
pub(super) async fn retrying_tx<T, F, Fut>(attempt: F) -> Result<Result<T, StoreError>, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Result<T, StoreError>, TxError>>,
{
    super::retrying_when(|e: &TxError| e.retryable(), attempt)
        .await
        .map_err(TxError::into_store)
}

/// A failed step of a keyed or hold transaction: a database error (maybe a conflict to retry), or a
/// row that did not decode.
#[derive(Debug)]
pub(super) enum TxError {
    Sql(sqlx::Error),
    Store(StoreError),
}

impl TxError {
    fn retryable(&self) -> bool {
        matches!(self, TxError::Sql(e) if super::error::is_retryable(e))
    }

    fn into_store(self) -> StoreError {
        match self {
            TxError::Sql(e) => e.into(),
            TxError::Store(e) => e,
        }
    }
}

impl From<sqlx::Error> for TxError {
    fn from(e: sqlx::Error) -> Self {
        TxError::Sql(e)
    }
}

impl From<StoreError> for TxError {
    fn from(e: StoreError) -> Self {
        TxError::Store(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{HoldStatus, TransferId};

    #[test]
    fn every_recorded_refusal_reads_back_as_it_was() {
        let account = AccountId::new(7).unwrap();
        let hold = HoldId::new(9).unwrap();
        let refusals = [
            StoreError::AccountNotFound(account),
            StoreError::NotOwner(account),
            StoreError::NotCustomerAccount(account),
            StoreError::AccountFrozen(account),
            StoreError::AccountClosed(account),
            StoreError::InsufficientFunds(account),
            StoreError::BalanceOverflow(account),
            StoreError::AccountNotEmpty(account),
            StoreError::PendingHolds(account),
            StoreError::LimitBelowDebt(account),
            StoreError::CurrencyMismatch {
                account,
                expected: Currency::Usd,
                actual: Currency::Jpy,
            },
            StoreError::SameAccount,
            StoreError::NotFound(Entity::Hold),
            StoreError::HoldNotPending {
                hold,
                status: HoldStatus::Expired,
            },
            StoreError::CaptureExceedsHold {
                hold,
                reserved: Amount::new(500).unwrap(),
            },
            StoreError::NotFound(Entity::Transfer),
            StoreError::AlreadyReversed(TransferId::new(3).unwrap()),
            StoreError::ReversalExceedsTransfer {
                transfer: TransferId::new(3).unwrap(),
                original: Amount::new(70).unwrap(),
            },
        ];
        for refusal in refusals {
            let (name, detail) = refusal_record(&refusal).expect("a business refusal");
            let back = refusal_from_record(name, detail.as_deref()).unwrap();
            assert_eq!(format!("{back:?}"), format!("{refusal:?}"));
        }
        assert!(refusal_record(&StoreError::Contended).is_none());
        assert!(refusal_from_record("hold_not_pending", Some("9")).is_err());
        assert!(refusal_from_record("maybe", None).is_err());
    }
}
