//! One batch of group commit: lock every account it touches, judge each movement by
//! `MOVE_MONEY`'s rules in arrival order, write the accepted ones in one statement, commit once.
//! The queue and the lanes that form batches are in `mod.rs`.

use std::collections::{BTreeSet, HashMap};

use sqlx::{PgPool, Row};

use crate::domain::{Account, AccountId, Entry, EntryId, Transfer, TransferId, TransferReceipt};
use crate::store::accounts::account_from_row;
use crate::store::holds::LOCK_ACCOUNTS;
use crate::store::rules::{self, Movement, Side, Verdict};
use crate::store::{StoreError, decode};

/// Why a batch did not commit, and whether it might have.
#[derive(Debug)]
pub(super) enum Failure {
    /// Failed before `COMMIT` was sent and rolled back: nothing happened.
    BeforeCommit(StoreError),
    /// `COMMIT` was sent and failed or went unanswered: it may or may not have happened.
    AtCommit(StoreError),
}

/// A batch waits at most this long for its row locks (sent with `BEGIN`, one round trip). Other
/// batches and single movements hold them for milliseconds; a lock held far longer (a stuck
/// transaction, a long manual one) would otherwise stall the whole lane and everything queued
/// behind it. On `lock_not_available` the batch rolls back and its movements run alone, so only
/// those touching the held row wait.
const BEGIN_BATCH: &str = "BEGIN; SET LOCAL lock_timeout = '250ms'";

/// Writes the accepted movements, in arrival order, in one statement: transfers, then two entries
/// each, then the accounts' final balances.
///
/// Ids are drawn from the identity sequences up front and handed out in ascending order to the
/// movements in arrival order (`row_number() OVER (ORDER BY id)` makes that independent of the
/// order in which the server evaluates `nextval`), so ids sort like the ledger happened and an
/// account's entries by id show its `balance_after` in sequence.
const WRITE_BATCH: &str = r#"
WITH input AS (
    SELECT *
    FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::text[], $5::bigint[], $6::bigint[],
                $9::text[], $10::text[])
         WITH ORDINALITY AS i (from_id, to_id, amount, currency, from_after, to_after, reference,
                               metadata, ord)
),
transfer_ids AS MATERIALIZED (
    SELECT id, row_number() OVER (ORDER BY id) AS ord
    FROM (SELECT nextval(pg_get_serial_sequence('transfers', 'id')) AS id FROM input) AS drawn
),
entry_ids AS MATERIALIZED (
    SELECT id, row_number() OVER (ORDER BY id) AS n
    FROM (SELECT nextval(pg_get_serial_sequence('entries', 'id')) AS id
          FROM input CROSS JOIN (VALUES (1), (2)) AS side (s)) AS drawn
),
transfer AS (
    INSERT INTO transfers (id, from_account_id, to_account_id, amount, currency, reference,
                           metadata)
    OVERRIDING SYSTEM VALUE
    SELECT t.id, i.from_id, i.to_id, i.amount, i.currency, i.reference, i.metadata::jsonb
    FROM input i JOIN transfer_ids t ON t.ord = i.ord
    RETURNING id, created_at
),
entry_rows AS (
    INSERT INTO entries (id, account_id, transfer_id, amount, balance_after)
    OVERRIDING SYSTEM VALUE
    SELECT e.id,
           CASE WHEN e.n % 2 = 1 THEN i.from_id ELSE i.to_id END,
           t.id,
           CASE WHEN e.n % 2 = 1 THEN -i.amount ELSE i.amount END,
           CASE WHEN e.n % 2 = 1 THEN i.from_after ELSE i.to_after END
    FROM input i
    JOIN transfer_ids t ON t.ord = i.ord
    JOIN entry_ids e ON e.n IN (2 * i.ord - 1, 2 * i.ord)
    RETURNING id, transfer_id, amount, created_at
),
updated AS (
    UPDATE accounts a SET balance = u.balance
    FROM unnest($7::bigint[], $8::bigint[]) AS u (id, balance)
    WHERE a.id = u.id
)
SELECT t.ord, tr.id AS transfer_id, tr.created_at AS transfer_created_at,
       fe.id AS from_entry_id, fe.created_at AS from_entry_created_at,
       te.id AS to_entry_id, te.created_at AS to_entry_created_at
FROM transfer_ids t
JOIN transfer tr ON tr.id = t.id
JOIN entry_rows fe ON fe.transfer_id = tr.id AND fe.amount < 0
JOIN entry_rows te ON te.transfer_id = tr.id AND te.amount > 0
ORDER BY t.ord
"#;

/// A movement the rules accepted: the balances it leaves behind.
#[derive(Debug, Clone, Copy)]
struct Accepted {
    from_after: i64,
    to_after: i64,
}

/// Runs the batch in one transaction. Every path ends the transaction explicitly: a dropped one
/// would roll back only when its connection is next used, holding its row locks until then.
pub(super) async fn apply(
    pool: &PgPool,
    batch: &[&Movement],
) -> Result<Vec<Result<TransferReceipt, StoreError>>, Failure> {
    let mut tx = pool
        .begin_with(BEGIN_BATCH)
        .await
        .map_err(|e| Failure::BeforeCommit(e.into()))?;
    match judge_and_write(&mut tx, batch).await {
        Ok(outcomes) => match tx.commit().await {
            Ok(()) => Ok(outcomes),
            Err(err) => Err(Failure::AtCommit(err.into())),
        },
        Err(err) => {
            let _ = tx.rollback().await;
            Err(Failure::BeforeCommit(err))
        }
    }
}

async fn judge_and_write(
    tx: &mut sqlx::PgConnection,
    batch: &[&Movement],
) -> Result<Vec<Result<TransferReceipt, StoreError>>, StoreError> {
    let ids: Vec<i64> = batch
        .iter()
        .flat_map(|job| [job.from.get(), job.to.get()])
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let rows = sqlx::query(LOCK_ACCOUNTS)
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?;
    // Each account as locked, its balance then moved along as the batch judges.
    let mut accounts = HashMap::with_capacity(rows.len());
    for row in &rows {
        let account = account_from_row(row)?;
        accounts.insert(account.id, account);
    }

    let verdicts: Vec<Result<Accepted, StoreError>> = batch
        .iter()
        .map(|job| {
            let accepted = judge(job, accounts.get(&job.from), accounts.get(&job.to))?;
            if let Some(from) = accounts.get_mut(&job.from) {
                from.balance = accepted.from_after;
            }
            if let Some(to) = accounts.get_mut(&job.to) {
                to.balance = accepted.to_after;
            }
            Ok(accepted)
        })
        .collect();

    let accepted: Vec<(&Movement, Accepted)> = batch
        .iter()
        .zip(&verdicts)
        .filter_map(|(job, verdict)| verdict.as_ref().ok().map(|a| (*job, *a)))
        .collect();
    let mut written = Vec::new().into_iter();
    if !accepted.is_empty() {
        let column =
            |f: fn(&(&Movement, Accepted)) -> i64| accepted.iter().map(f).collect::<Vec<_>>();
        let touched: BTreeSet<AccountId> = accepted
            .iter()
            .flat_map(|(job, _)| [job.from, job.to])
            .collect();
        let rows = sqlx::query(WRITE_BATCH)
            .bind(column(|(job, _)| job.from.get()))
            .bind(column(|(job, _)| job.to.get()))
            .bind(column(|(job, _)| job.amount.minor_units()))
            .bind(
                accepted
                    .iter()
                    .map(|(job, _)| job.currency.code())
                    .collect::<Vec<_>>(),
            )
            .bind(column(|(_, a)| a.from_after))
            .bind(column(|(_, a)| a.to_after))
            .bind(touched.iter().map(|id| id.get()).collect::<Vec<_>>())
            .bind(
                touched
                    .iter()
                    .map(|id| accounts[id].balance)
                    .collect::<Vec<_>>(),
            )
            .bind(
                accepted
                    .iter()
                    .map(|(job, _)| job.label.reference_str())
                    .collect::<Vec<_>>(),
            )
            .bind(
                accepted
                    .iter()
                    .map(|(job, _)| job.label.metadata_json())
                    .collect::<Vec<_>>(),
            )
            .fetch_all(&mut *tx)
            .await?;
        if rows.len() != accepted.len() {
            return Err(StoreError::ConstraintViolated(format!(
                "group commit wrote {} of {} transfers",
                rows.len(),
                accepted.len()
            )));
        }
        written = rows.into_iter();
    }

    batch
        .iter()
        .zip(verdicts)
        .map(|(job, verdict)| {
            Ok(match verdict {
                Err(refused) => Err(refused),
                Ok(accepted) => {
                    let row = written
                        .next()
                        .expect("one written row per accepted movement");
                    Ok(receipt(job, accepted, &accounts, &row)?)
                }
            })
        })
        .collect()
}

/// The rules (`rules::judge`) for one movement against the balances the batch has reached, and
/// the balances it leaves behind if accepted.
fn judge(
    movement: &Movement,
    from: Option<&Account>,
    to: Option<&Account>,
) -> Result<Accepted, StoreError> {
    let verdict = rules::judge(movement, from.map(Side::of), to.map(Side::of));
    let actual = match verdict {
        Verdict::FromCurrencyMismatch => from.map(|f| f.currency),
        Verdict::ToCurrencyMismatch => to.map(|t| t.currency),
        _ => None,
    };
    if let Some(refusal) = verdict.refusal(movement, actual) {
        return Err(refusal);
    }
    let (Some(f), Some(t)) = (from, to) else {
        unreachable!("an accepted movement has both its accounts");
    };
    // The verdict checked both for overflow.
    let amount = movement.amount.minor_units();
    Ok(Accepted {
        from_after: f.balance - amount,
        to_after: t.balance + amount,
    })
}

/// The same receipt the one-statement path gives: the accounts as this movement left them.
fn receipt(
    job: &Movement,
    accepted: Accepted,
    accounts: &HashMap<AccountId, Account>,
    row: &sqlx::postgres::PgRow,
) -> Result<TransferReceipt, StoreError> {
    let transfer_id = decode(row, "transfer_id", TransferId::new)?;
    let amount = job.amount.minor_units();
    let entry = |side: &str, account_id: AccountId, signed: i64, balance_after: i64| {
        Ok::<_, StoreError>(Entry {
            id: decode(row, &format!("{side}_entry_id"), EntryId::new)?,
            account_id,
            transfer_id,
            amount: signed,
            balance_after,
            created_at: row.try_get(format!("{side}_entry_created_at").as_str())?,
        })
    };
    let account = |id: AccountId, balance: i64| Account {
        balance,
        ..accounts[&id].clone()
    };
    Ok(TransferReceipt {
        transfer: Transfer {
            id: transfer_id,
            from_account_id: job.from,
            to_account_id: job.to,
            amount: job.amount,
            currency: job.currency,
            hold_id: None,
            label: job.label.clone(),
            reverses: None,
            created_at: row.try_get("transfer_created_at")?,
        },
        from_entry: entry("from", job.from, -amount, accepted.from_after)?,
        to_entry: entry("to", job.to, amount, accepted.to_after)?,
        from_account: account(job.from, accepted.from_after),
        to_account: account(job.to, accepted.to_after),
    })
}
