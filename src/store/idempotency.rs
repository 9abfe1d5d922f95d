//! Idempotency keys: a write done once per (user, key) and answered the same way again, success
//! or refusal — money movements (`keyed_transfers.rs`), hold writes, account controls and
//! reversals alike.
//!
//! The lock says "running", the record says what happened, and the record is written in the
//! write's own transaction:
//!
//! 1. `pg_try_advisory_xact_lock` on a 64-bit digest of (user, key) (`advisory_lock_key`).
//!    Whoever holds it is "the request running under this key"; a second request that cannot
//!    take it answers `InFlight` at once rather than queueing behind the first. The lock ends
//!    with the transaction, commit or rollback — a crashed request leaves nothing behind.
//! 2. With the lock held, look the key up (`claim`, `FIND_KEY`). READ COMMITTED takes a fresh
//!    snapshot per statement, and a previous holder's commit is visible before its lock is
//!    released, so a record written under the lock is always seen here.
//! 3. No record: run the write and record its outcome before committing both together.
//!
//! A record therefore never exists without its outcome, and the primary key (user, key) backs the
//! lock up: should two requests ever both get past step 2, the second insert fails and rolls its
//! write back with it. A money movement does all three in one statement (`MOVE_MONEY_KEYED`);
//! other writes are a `KeyedWrite`: what it is called, what identifies the request, how to run it
//! inside a transaction, what of its answer to record, and how to answer again from the record.
//! The write runs under a savepoint: a write may refuse after it has changed rows (a capture
//! whose transfer is refused), and only the record of the refusal may stay.

use sha2::{Digest, Sha256};
use sqlx::Row;
use sqlx::postgres::PgRow;

use super::{Entity, Store, StoreError};
use crate::domain::{
    AccountId, Amount, Currency, HoldId, IdempotencyKey, RequestFingerprint, TransferReceipt,
    Username,
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

/// What a keyed request came to: a money movement's (`TransferReceipt`) or a hold write's.
#[derive(Debug)]
pub enum KeyedOutcome<T = TransferReceipt> {
    /// First use of the key: the request ran now (committed, or refused by a business rule).
    Done(Result<T, StoreError>),
    /// The key was used before for this same request: its first outcome, unchanged.
    Replayed(Result<T, StoreError>),
    /// Another request with this key is running right now.
    InFlight,
    /// The key was used before for a different request.
    Mismatch,
}

/// The key's record joined to everything needed to answer as the first time, under the same
/// column names as `MOVE_MONEY`'s result so one decoder reads both. Balances are the entries'
/// `balance_after`: the accounts' balances right after the transfer, as first reported.
pub(super) const FIND_KEY: &str = r#"
SELECT k.request_hash,
       COALESCE(k.refusal, 'ok') AS status,
       k.refusal_currency AS from_currency, k.refusal_currency AS to_currency,
       tr.id AS transfer_id, tr.created_at AS transfer_created_at, tr.hold_id AS transfer_hold_id,
       tr.reverses_transfer_id AS transfer_reverses,
       fe.id AS from_entry_id, fe.balance_after AS from_entry_balance_after,
       fe.created_at AS from_entry_created_at,
       te.id AS to_entry_id, te.balance_after AS to_entry_balance_after,
       te.created_at AS to_entry_created_at,
       fa.owner AS from_owner, fe.balance_after AS from_balance, fa.kind AS from_kind,
       fa.status AS from_status, fa.overdraft_limit AS from_overdraft_limit,
       CASE WHEN fa.holds_pending > 0 THEN account_held(fa.id) ELSE 0 END AS from_held,
       fa.created_at AS from_created_at,
       ta.owner AS to_owner, te.balance_after AS to_balance, ta.kind AS to_kind,
       ta.status AS to_status, ta.overdraft_limit AS to_overdraft_limit,
       CASE WHEN ta.holds_pending > 0 THEN account_held(ta.id) ELSE 0 END AS to_held,
       ta.created_at AS to_created_at,
       k.refusal, k.refusal_detail, k.hold_id AS key_hold_id, k.account_id AS key_account_id
FROM idempotency_keys k
LEFT JOIN transfers tr ON tr.id = k.transfer_id
LEFT JOIN entries fe ON fe.transfer_id = tr.id AND fe.account_id = tr.from_account_id
LEFT JOIN entries te ON te.transfer_id = tr.id AND te.account_id = tr.to_account_id
LEFT JOIN accounts fa ON fa.id = tr.from_account_id
LEFT JOIN accounts ta ON ta.id = tr.to_account_id
WHERE k.username = $1 AND k.key = $2
"#;

/// What a key says by itself, before anything runs under it.
pub(super) enum Claim {
    /// Another request holds it now.
    InFlight,
    /// Its record (`FIND_KEY`'s row).
    Found(sqlx::postgres::PgRow),
}

/// Lock the key (`lock`, see `advisory_lock_key`) and look it up: `Some` when the key answers by
/// itself (in flight elsewhere, or already recorded), `None` when this transaction holds it and
/// nothing is recorded. Takes no row lock, so it never waits. Hold writes use it too.
pub(super) async fn claim(
    tx: &mut sqlx::PgConnection,
    lock: i64,
    caller: &Username,
    key: &IdempotencyKey,
) -> Result<Option<Claim>, sqlx::Error> {
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
        .bind(lock)
        .fetch_one(&mut *tx)
        .await?;
    if !locked {
        return Ok(Some(Claim::InFlight));
    }
    Ok(sqlx::query(FIND_KEY)
        .bind(caller.as_str())
        .bind(key.as_str())
        .fetch_optional(&mut *tx)
        .await?
        .map(Claim::Found))
}

/// The advisory lock standing for "a request with this key is running": the first 8 bytes of a
/// SHA-256 over the user and the key (length-prefixed, so no two pairs collide by
/// concatenation). Two different pairs sharing a lock would take a 2^-64 chance, and cost only
/// a spurious `conflict` the client retries.
pub(super) fn advisory_lock_key(caller: &Username, key: &IdempotencyKey) -> i64 {
    let mut hash = Sha256::new();
    hash.update(b"simplebank idempotency\0");
    for part in [caller.as_str(), key.as_str()] {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part.as_bytes());
    }
    let digest = hash.finalize();
    i64::from_be_bytes(digest[..8].try_into().expect("SHA-256 has 32 bytes"))
}

impl Store {
    /// Deletes records older than `retention`, in batches so no statement holds many row locks
    /// or runs long. Returns how many went.
    pub async fn purge_idempotency_keys(
        &self,
        retention: std::time::Duration,
    ) -> Result<u64, StoreError> {
        const BATCH: i64 = 1_000;
        let cutoff = chrono::Utc::now()
            - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
        let mut purged = 0;
        loop {
            let done = sqlx::query(
                "DELETE FROM idempotency_keys WHERE ctid = ANY (ARRAY( \
                     SELECT ctid FROM idempotency_keys WHERE created_at < $1 LIMIT $2))",
            )
            .bind(cutoff)
            .bind(BATCH)
            .execute(&self.pool)
            .await?
            .rows_affected();
            purged += done;
            if done < BATCH as u64 {
                return Ok(purged);
            }
        }
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

    #[test]
    fn lock_keys_depend_on_user_and_key_and_their_boundary() {
        let user = |s: &str| Username::parse(s).unwrap();
        let key = |s: &str| IdempotencyKey::parse(s).unwrap();
        let a = advisory_lock_key(&user("alice"), &key("k1"));
        assert_eq!(a, advisory_lock_key(&user("alice"), &key("k1")));
        assert_ne!(a, advisory_lock_key(&user("bob"), &key("k1")));
        assert_ne!(a, advisory_lock_key(&user("alice"), &key("k2")));
        assert_ne!(
            advisory_lock_key(&user("ali"), &key("cek1")),
            advisory_lock_key(&user("alice"), &key("k1"))
        );
    }
}
