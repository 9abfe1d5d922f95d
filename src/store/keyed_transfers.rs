//! Money movements named by an idempotency key (see `idempotency.rs` for the key's life): one
//! statement per keyed request, `MOVE_MONEY_KEYED` (transfers.rs), sent in autocommit mode. It
//! claims the key, and if no record is found moves the money and records the outcome, success
//! or refusal, in the same commit: one round trip. A key already recorded is read back
//! (`FIND_KEY`, a second round trip) to answer as the first time.

use async_trait::async_trait;
use sqlx::Row;

use super::idempotency::{Claim, FIND_KEY, KeyedOutcome, advisory_lock_key, claim, in_own_task};
use super::rules::Movement;
use super::transfers::{Links, MOVE_MONEY_KEYED, MoneyMove, bind_movement, receipt_from_row};
use super::{Store, StoreError, retrying_when};
use crate::domain::{IdempotencyKey, RequestFingerprint, Username};

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
}
