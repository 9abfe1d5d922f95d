//! Money movements named by an idempotency key: done once, answered the same way every time.
//!
//! One statement per keyed request, `MOVE_MONEY_KEYED` (transfers.rs), sent in autocommit mode:
//!
//! 1. `pg_try_advisory_xact_lock` on a 64-bit digest of (user, key). Whoever holds it is "the
//!    request running under this key"; a second request that cannot take it answers `InFlight`
//!    at once rather than queueing behind the first. The lock ends with the transaction, commit
//!    or rollback — a crashed request leaves nothing behind to clean up.
//! 2. With the lock held, look the key up. A record: nothing runs, and the record is read back
//!    (`FIND_KEY`, a second round trip) to answer as the first time.
//! 3. No record: the movement runs and the record — the transfer it made, or the rule that
//!    refused it — is written by the same statement, so both commit together. A crash between
//!    them is impossible: they are one commit.
//!
//! A record therefore never exists without its outcome, and the primary key (user, key) backs the
//! lock up: should two requests ever both get past step 2, the second insert fails and rolls its
//! transfer back with it, and that request runs again and finds the record.

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use sqlx::Row;

use super::keyed::in_own_task;
use super::rules::{Movement, MovementKind};
use super::transfers::{Links, MOVE_MONEY_KEYED, bind_movement, receipt_from_row};
use super::{Store, StoreError, retrying_when};
use crate::domain::{
    AccountId, Amount, Currency, IdempotencyKey, Label, NewTransfer, RequestFingerprint,
    TransferReceipt, Username,
};

/// A money movement as a keyed request names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MoneyMove {
    /// Customer to customer; with `owner`, the from-account must be theirs.
    Transfer {
        transfer: NewTransfer,
        owner: Option<Username>,
    },
    Deposit {
        account: AccountId,
        amount: Amount,
        currency: Currency,
        label: Label,
    },
    Withdrawal {
        account: AccountId,
        amount: Amount,
        currency: Currency,
        label: Label,
    },
}

impl MoneyMove {
    /// `transfer`, `deposit` or `withdrawal`: the operation's name in records and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            MoneyMove::Transfer { .. } => "transfer",
            MoneyMove::Deposit { .. } => "deposit",
            MoneyMove::Withdrawal { .. } => "withdrawal",
        }
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
const FIND_KEY: &str = r#"
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

/// One try of a keyed movement, inside a transaction the caller ends.
struct Attempt<'a> {
    lock: i64,
    caller: &'a Username,
    key: &'a IdempotencyKey,
    fingerprint: RequestFingerprint,
    movement: Movement,
}

impl Attempt<'_> {
    /// `claim` for this attempt.
    async fn claim(&self, tx: &mut sqlx::PgConnection) -> Result<Option<Step>, sqlx::Error> {
        Ok(claim(tx, self.lock, self.caller, self.key)
            .await?
            .map(|found| match found {
                Claim::InFlight => Step::InFlight,
                Claim::Found(row) => Step::Found(row),
            }))
    }
}

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

/// What the transaction found or did, before decoding (decoding is not retried).
enum Step {
    InFlight,
    Found(sqlx::postgres::PgRow),
    Ran(sqlx::postgres::PgRow),
}

/// Money movements under an idempotency key, as the service sees them.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait IdempotentStore: Send + Sync {
    /// Runs `movement` once per (`caller`, `key`); see the module comment.
    ///
    /// The transaction runs in a task of its own. If the caller stops waiting — the client hung
    /// up, or the request ran past its timeout — a future dropped mid-transaction would leave its
    /// advisory and row locks on a pooled connection until that connection is next used; as a
    /// task it finishes and ends its transaction, and the client's retry with the same key finds
    /// the outcome.
    async fn move_money_once(
        &self,
        movement: &MoneyMove,
        caller: &Username,
        key: &IdempotencyKey,
    ) -> Result<KeyedOutcome, StoreError>;
}

#[async_trait]
impl IdempotentStore for Store {
    async fn move_money_once(
        &self,
        movement: &MoneyMove,
        caller: &Username,
        key: &IdempotencyKey,
    ) -> Result<KeyedOutcome, StoreError> {
        let (store, movement, caller, key) =
            (self.clone(), movement.clone(), caller.clone(), key.clone());
        in_own_task("movement", async move {
            store.run_keyed(&movement, &caller, &key).await
        })
        .await
    }
}

impl Store {
    async fn run_keyed(
        &self,
        movement: &MoneyMove,
        caller: &Username,
        key: &IdempotencyKey,
    ) -> Result<KeyedOutcome, StoreError> {
        let movement = self.resolve(movement).await?;
        let Movement {
            from,
            to,
            amount,
            currency,
            ..
        } = movement;
        if from == to {
            // Refused before any transaction: nothing to remember.
            return Ok(KeyedOutcome::Done(Err(StoreError::SameAccount)));
        }
        let fingerprint = RequestFingerprint::of(
            movement.kind.as_str(),
            &[
                &from.to_string(),
                &to.to_string(),
                &amount.minor_units().to_string(),
                currency.code(),
                movement.owner.as_ref().map_or("", Username::as_str),
                movement.label.reference_str().unwrap_or(""),
                &movement.label.metadata_json().unwrap_or_default(),
            ],
        );
        let lock = advisory_lock_key(caller, key);

        let attempt = Attempt {
            lock,
            caller,
            key,
            fingerprint,
            movement,
        };
        // Each account's share of the pool, before a connection is held for the movement
        // (`account_gate.rs`). When the share is in use, first answer what needs no money moved
        // — a key in flight (409) or already recorded (replay) — with a short look that takes
        // no row lock, so a retry is never kept waiting behind its own first attempt.
        let accounts = attempt.movement.customer_accounts();
        let _pass = match self.gate.try_enter(&accounts) {
            Some(pass) => pass,
            None => {
                let mut tx = self.pool.begin().await?;
                let answered = attempt.claim(&mut tx).await;
                let _ = tx.rollback().await;
                if let Some(step) = answered? {
                    return self.keyed_outcome(step, &attempt);
                }
                self.gate.enter(&accounts).await?
            }
        };
        let step = self.move_money_keyed(&attempt).await?;
        self.keyed_outcome(step, &attempt)
    }

    /// `MOVE_MONEY_KEYED`, run again should its record collide with a first request that
    /// committed after its snapshot was taken (see the statement); a record found is read back.
    async fn move_money_keyed(&self, attempt: &Attempt<'_>) -> Result<Step, StoreError> {
        const TRIES: usize = 3;
        for _ in 0..TRIES {
            let ran = retrying_when(super::error::is_retryable, || {
                self.calls.single.inc();
                bind_movement(
                    sqlx::query(MOVE_MONEY_KEYED),
                    &attempt.movement,
                    Links::default(),
                )
                .bind(attempt.lock)
                .bind(attempt.caller.as_str())
                .bind(attempt.key.as_str())
                .bind(&attempt.fingerprint.as_bytes()[..])
                .fetch_one(&self.pool)
            })
            .await;
            let row = match ran {
                Err(sqlx::Error::Database(db))
                    if db.constraint() == Some("idempotency_keys_pkey") =>
                {
                    continue;
                }
                other => other?,
            };
            if !row.try_get::<bool, _>("claimed")? {
                return Ok(Step::InFlight);
            }
            if !row.try_get::<bool, _>("recorded")? {
                return Ok(Step::Ran(row));
            }
            let found = sqlx::query(FIND_KEY)
                .bind(attempt.caller.as_str())
                .bind(attempt.key.as_str())
                .fetch_one(&self.pool)
                .await?;
            return Ok(Step::Found(found));
        }
        Err(StoreError::Internal(sqlx::Error::Protocol(
            "an idempotency key's record kept colliding".to_owned(),
        )))
    }

    fn keyed_outcome(&self, step: Step, attempt: &Attempt<'_>) -> Result<KeyedOutcome, StoreError> {
        let Attempt {
            movement,
            fingerprint,
            ..
        } = attempt;
        Ok(match step {
            Step::InFlight => KeyedOutcome::InFlight,
            Step::Ran(row) => KeyedOutcome::Done(receipt_from_row(&row, movement)),
            Step::Found(row) => {
                let stored: Vec<u8> = row.try_get("request_hash")?;
                if RequestFingerprint::from_bytes(&stored) != Some(*fingerprint) {
                    KeyedOutcome::Mismatch
                } else {
                    // Same fingerprint, so the same accounts, amount and currency as this request.
                    KeyedOutcome::Replayed(receipt_from_row(&row, movement))
                }
            }
        })
    }

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

    /// The accounts and rules of `movement` (deposits and withdrawals go through the settlement
    /// account of their currency).
    async fn resolve(&self, movement: &MoneyMove) -> Result<Movement, StoreError> {
        Ok(match movement {
            MoneyMove::Transfer { transfer, owner } => Movement {
                from: transfer.from(),
                to: transfer.to(),
                amount: transfer.amount(),
                currency: transfer.currency(),
                kind: MovementKind::Transfer,
                owner: owner.clone(),
                label: transfer.label().clone(),
            },
            MoneyMove::Deposit {
                account,
                amount,
                currency,
                label,
            } => Movement {
                from: self.settlement_account(*currency).await?,
                to: *account,
                amount: *amount,
                currency: *currency,
                kind: MovementKind::Deposit,
                owner: None,
                label: label.clone(),
            },
            MoneyMove::Withdrawal {
                account,
                amount,
                currency,
                label,
            } => Movement {
                from: *account,
                to: self.settlement_account(*currency).await?,
                amount: *amount,
                currency: *currency,
                kind: MovementKind::Withdrawal,
                owner: None,
                label: label.clone(),
            },
        })
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
