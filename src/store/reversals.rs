//! Reversals (SPEC §6): a banker's transfer back of an earlier one, in all or in part, at most
//! once per transfer. The original is never modified; the new transfer names it in
//! `reverses_transfer_id`, whose unique key settles two bankers racing.

use async_trait::async_trait;
use sqlx::postgres::PgRow;

use super::idempotency::{KeyedOutcome, KeyedWrite, Recorded, TxError, in_own_task, retrying_tx};
use super::rules::{Movement, MovementKind};
use super::transfers::{Links, move_money_query, receipt_from_row, transfer_from_row};
use super::{Entity, Store, StoreError};
use crate::domain::{
    Amount, IdempotencyKey, Label, RequestFingerprint, Transfer, TransferId, TransferReceipt,
    Username,
};

/// A reversal to make: of which transfer, how much (all of it when `None`), with what label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reversal {
    pub of: TransferId,
    pub amount: Option<Amount>,
    pub label: Label,
}

impl Reversal {
    /// The movement back: from the original's recipient to its sender.
    fn movement(&self, original: &Transfer) -> Movement {
        Movement {
            from: original.to_account_id,
            to: original.from_account_id,
            amount: self.amount.unwrap_or(original.amount),
            currency: original.currency,
            kind: MovementKind::Reversal,
            owner: None,
            label: self.label.clone(),
        }
    }
}

/// Reversals, as the service sees them.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait ReversalStore: Send + Sync {
    /// Moves the money back. Refused when the transfer was reversed already
    /// (`AlreadyReversed`), for more than it moved, and by the rules of any debit (available
    /// funds, closed accounts) — but not for a frozen payer.
    async fn reverse_transfer(&self, reversal: &Reversal) -> Result<TransferReceipt, StoreError>;
    /// `reverse_transfer` once per (`caller`, `key`).
    async fn reverse_transfer_once(
        &self,
        reversal: &Reversal,
        caller: &Username,
        key: &IdempotencyKey,
    ) -> Result<KeyedOutcome<TransferReceipt>, StoreError>;
}

#[async_trait]
impl ReversalStore for Store {
    async fn reverse_transfer(&self, reversal: &Reversal) -> Result<TransferReceipt, StoreError> {
        retrying_tx(|| async {
            let mut tx = self.pool.begin().await?;
            let done = reverse_in(&mut tx, reversal).await;
            match &done {
                Ok(Ok(_)) => tx.commit().await?,
                _ => tx.rollback().await?,
            }
            done
        })
        .await?
    }

    async fn reverse_transfer_once(
        &self,
        reversal: &Reversal,
        caller: &Username,
        key: &IdempotencyKey,
    ) -> Result<KeyedOutcome<TransferReceipt>, StoreError> {
        let (store, reversal, caller, key) =
            (self.clone(), reversal.clone(), caller.clone(), key.clone());
        in_own_task("reversal", async move {
            store.write_once(&reversal, &caller, &key).await
        })
        .await
    }
}

const ORIGINAL: &str = "SELECT id, from_account_id, to_account_id, amount, currency, hold_id, \
     reference, metadata::text AS metadata, reverses_transfer_id, created_at, \
     EXISTS (SELECT 1 FROM transfers r WHERE r.reverses_transfer_id = t.id) AS reversed \
     FROM transfers t WHERE id = $1";

async fn original(
    tx: &mut sqlx::PgConnection,
    id: TransferId,
) -> Result<Option<(Transfer, bool)>, TxError> {
    let Some(row) = sqlx::query(ORIGINAL)
        .bind(id.get())
        .fetch_optional(&mut *tx)
        .await?
    else {
        return Ok(None);
    };
    let reversed: bool = sqlx::Row::try_get(&row, "reversed")?;
    Ok(Some((transfer_from_row(&row)?, reversed)))
}

/// The reversal inside `tx`, which the caller ends.
async fn reverse_in(
    tx: &mut sqlx::PgConnection,
    reversal: &Reversal,
) -> Result<Result<TransferReceipt, StoreError>, TxError> {
    let id = reversal.of;
    let Some((original, reversed)) = original(tx, id).await? else {
        return Ok(Err(StoreError::NotFound(Entity::Transfer)));
    };
    if reversal
        .amount
        .is_some_and(|amount| amount > original.amount)
    {
        return Ok(Err(StoreError::ReversalExceedsTransfer {
            transfer: id,
            original: original.amount,
        }));
    }
    if reversed {
        return Ok(Err(StoreError::AlreadyReversed(id)));
    }
    let movement = reversal.movement(&original);
    let links = Links {
        reverses: Some(id),
        ..Links::default()
    };
    // A reversal committed since the check above (another banker's) surfaces here, as the
    // unique key's violation once that transaction has committed.
    match move_money_query(&movement, links).fetch_one(&mut *tx).await {
        Ok(row) => Ok(receipt_from_row(&row, &movement)),
        Err(sqlx::Error::Database(db)) if db.constraint() == Some("transfers_reverses_key") => {
            Ok(Err(StoreError::AlreadyReversed(id)))
        }
        Err(other) => Err(other.into()),
    }
}

impl KeyedWrite for Reversal {
    type Answer = TransferReceipt;

    fn kind(&self) -> &'static str {
        "reversal"
    }

    fn fingerprint(&self) -> RequestFingerprint {
        RequestFingerprint::of(
            self.kind(),
            &[
                &self.of.to_string(),
                &self
                    .amount
                    .map_or(String::new(), |a| a.minor_units().to_string()),
                self.label.reference_str().unwrap_or(""),
                &self.label.metadata_json().unwrap_or_default(),
            ],
        )
    }

    fn run<'a>(
        &'a self,
        tx: &'a mut sqlx::PgConnection,
    ) -> impl Future<Output = Result<Result<TransferReceipt, StoreError>, TxError>> + Send + 'a
    {
        reverse_in(tx, self)
    }

    fn outcome(answer: &TransferReceipt) -> Recorded {
        Recorded {
            transfer: Some(answer.transfer.id.get()),
            ..Recorded::default()
        }
    }

    /// The reversal's transfer and entries as written (`FIND_KEY` joins them).
    async fn replay(
        &self,
        tx: &mut sqlx::PgConnection,
        row: &PgRow,
    ) -> Result<TransferReceipt, TxError> {
        let (original, _) = original(tx, self.of)
            .await?
            .ok_or(StoreError::NotFound(Entity::Transfer))?;
        // The original never changes, so the movement back is the one the first answer made.
        Ok(receipt_from_row(row, &self.movement(&original))?)
    }
}
