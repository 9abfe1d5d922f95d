//! One batch of group commit: a single call of the database function `move_money_batch`, sent
//! in autocommit mode, so that locking every account the batch touches, judging each movement
//! by `movement_verdict` in arrival order, writing the accepted ones and committing are **one round
//! trip** (see migration `20261204000001_money_functions`). The queue and the lanes that form
//! batches are in `mod.rs`.

use sqlx::PgPool;

use crate::domain::{TransferReceipt, Username};
use crate::store::StoreError;
use crate::store::rules::Movement;
use crate::store::transfers::receipt_from_row;

/// Why a batch did not commit, and whether it might have.
#[derive(Debug)]
pub(super) enum Failure {
    /// The database refused the call and rolled it back: nothing happened.
    BeforeCommit(StoreError),
    /// The call was sent and its answer lost: it may or may not have committed.
    AtCommit(StoreError),
}

/// The batch, its movements as parallel arrays; one row comes back per movement, in order.
pub const MOVE_MONEY_BATCH: &str = "SELECT * FROM move_money_batch($1, $2, $3, $4, $5, $6, $7, $8)";

/// Runs the batch as one transaction and returns each movement's receipt or refusal, in order.
pub(super) async fn apply(
    pool: &PgPool,
    batch: &[&Movement],
) -> Result<Vec<Result<TransferReceipt, StoreError>>, Failure> {
    let column = |f: fn(&Movement) -> i64| batch.iter().map(|m| f(m)).collect::<Vec<_>>();
    let rows = sqlx::query(MOVE_MONEY_BATCH)
        .bind(column(|m| m.from.get()))
        .bind(column(|m| m.to.get()))
        .bind(column(|m| m.amount.minor_units()))
        .bind(batch.iter().map(|m| m.currency.code()).collect::<Vec<_>>())
        .bind(batch.iter().map(|m| m.kind.as_str()).collect::<Vec<_>>())
        .bind(
            batch
                .iter()
                .map(|m| m.owner.as_ref().map(Username::as_str))
                .collect::<Vec<_>>(),
        )
        .bind(
            batch
                .iter()
                .map(|m| m.label.reference_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            batch
                .iter()
                .map(|m| m.label.metadata_json())
                .collect::<Vec<_>>(),
        )
        .fetch_all(pool)
        .await
        .map_err(|err| {
            // An error the server answered the statement with means it, and so its implicit
            // transaction, rolled back; so does never getting a connection. Anything else (the
            // connection broke after the call was sent, or the server ended the session, as it
            // does when shut down while the commit waits for the synchronous standby) leaves
            // the outcome unknown: nobody may run the batch again.
            if crate::store::error::rolled_back(&err) {
                Failure::BeforeCommit(err.into())
            } else {
                Failure::AtCommit(err.into())
            }
        })?;
    if rows.len() != batch.len() {
        // Committed, but not as asked: no caller can be told its movement happened.
        return Err(Failure::AtCommit(StoreError::ConstraintViolated(format!(
            "group commit returned {} rows for {} movements",
            rows.len(),
            batch.len()
        ))));
    }
    Ok(batch
        .iter()
        .zip(&rows)
        .map(|(movement, row)| receipt_from_row(row, movement))
        .collect())
}
