//! Holds (SPEC §6): placing, capturing, voiding and expiring them, and reading them back.
//!
//! A hold moves no money; it reserves the payer's funds. Its amount counts in the payer's `held`
//! while it is pending and `expires_at` is ahead, and every debit of the payer (on both paths of
//! `MOVE_MONEY`, and a new hold here) checks `amount <= balance - held + overdraft_limit` under
//! the payer's row lock. `accounts.holds_pending` is the sum of the payer's holds still *marked*
//! pending (expired or not); every change of a hold's status adjusts it in the same transaction,
//! under the same lock, so the money path can skip the holds table for an account at 0.
//!
//! Lock order, everywhere: a hold's row before any account row, and account rows in ascending id
//! order. Placing locks only accounts (the hold is new); capturing and voiding lock the hold,
//! then the accounts; the sweep skips holds someone else has locked.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::postgres::PgRow;

use super::accounts::account_from_row;
use super::rules::{self, Movement, MovementKind, Side};
use super::transfers::{move_money_query, receipt_from_row};
use super::{Entity, Page, Store, StoreError, decode, retrying};
use crate::domain::{
    Account, AccountId, Amount, HOLD_TTL_DEFAULT, Hold, HoldId, HoldStatus, Metadata, NewHold,
    PageSize, Reference, TransferReceipt, Username,
};

/// The column list of every read of `holds`, with the status as of the statement's clock: a
/// pending hold past `expires_at` reads as `expired`, resolved at its expiry, before the sweep
/// marks it.
macro_rules! hold_columns {
    () => {
        "id, from_account_id, to_account_id, amount, currency, \
         CASE WHEN status = 'pending' AND expires_at <= now() THEN 'expired' ELSE status END \
             AS status, \
         captured_amount, expires_at, created_at, \
         CASE WHEN status = 'pending' AND expires_at <= now() THEN expires_at ELSE resolved_at END \
             AS resolved_at, \
         reference, metadata::text AS metadata"
    };
}

/// Both accounts of a movement, row-locked in ascending id order, with `held` read once the
/// locks are taken (see `MOVE_MONEY` for why through `account_held`).
pub(super) const LOCK_ACCOUNTS: &str = "WITH locked AS MATERIALIZED ( \
         SELECT id, owner, currency, balance, kind, status, overdraft_limit, holds_pending, \
                created_at \
         FROM accounts WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE) \
     SELECT *, CASE WHEN holds_pending > 0 THEN account_held(id) ELSE 0 END AS held \
     FROM locked";

const PLACE: &str = concat!(
    "WITH hold AS ( \
         INSERT INTO holds (from_account_id, to_account_id, amount, currency, expires_at, \
                            reference, metadata) \
         VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5), $6, $7::jsonb) \
         RETURNING *), \
     payer AS ( \
         UPDATE accounts SET holds_pending = holds_pending + $3 WHERE id = $1) \
     SELECT ",
    hold_columns!(),
    " FROM hold"
);

/// A hold and the owners of both its accounts, locked for the rest of the transaction.
const LOCK_HOLD: &str = concat!(
    "SELECT h.*, f.owner AS from_owner, t.owner AS to_owner FROM (SELECT ",
    hold_columns!(),
    " FROM holds WHERE id = $1 FOR UPDATE) h \
     JOIN accounts f ON f.id = h.from_account_id \
     JOIN accounts t ON t.id = h.to_account_id"
);

/// Resolves a pending hold (`$2` the new status, `$3` the captured amount or NULL) and takes its
/// amount off the payer's `holds_pending`.
const RESOLVE: &str = concat!(
    "WITH hold AS ( \
         UPDATE holds SET status = $2, captured_amount = $3, resolved_at = now() \
         WHERE id = $1 AND status = 'pending' \
         RETURNING *), \
     payer AS ( \
         UPDATE accounts a SET holds_pending = a.holds_pending - hold.amount \
         FROM hold WHERE a.id = hold.from_account_id) \
     SELECT ",
    hold_columns!(),
    " FROM hold"
);

/// The sweep's next holds past their expiry, locked, skipping any a capture, a void or another
/// replica's sweep holds now.
const DUE_HOLDS: &str = "SELECT id, from_account_id FROM holds \
     WHERE status = 'pending' AND expires_at <= now() \
       AND ($2::bigint IS NULL OR from_account_id = $2) \
     ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED";

const EXPIRE: &str = "WITH hold AS ( \
         UPDATE holds SET status = 'expired', resolved_at = expires_at \
         WHERE id = ANY($1) RETURNING from_account_id, amount), \
     payer AS ( \
         SELECT from_account_id AS id, sum(amount)::bigint AS amount FROM hold \
         GROUP BY from_account_id) \
     UPDATE accounts a SET holds_pending = a.holds_pending - payer.amount \
     FROM payer WHERE a.id = payer.id";

/// A hold and the owners of its two accounts (who may read it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldParties {
    pub hold: Hold,
    pub from_owner: Username,
    pub to_owner: Username,
}

/// A placed hold, and the payer's account with it reserved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacedHold {
    pub hold: Hold,
    pub from_account: Account,
}

/// A captured hold, and the one transfer that captured it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturedHold {
    pub hold: Hold,
    pub receipt: TransferReceipt,
}

/// Holds, as the service sees them.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait HoldStore: Send + Sync {
    /// Reserves `hold.amount` of the payer's funds for the payee. With `owner`, the payer's
    /// account must be theirs. Refused by the rules of a transfer (`rules::judge`: statuses,
    /// currencies, available funds under the payer's lock).
    async fn place_hold(
        &self,
        hold: &NewHold,
        owner: Option<Username>,
    ) -> Result<PlacedHold, StoreError>;
    /// Captures `amount` (all of it when `None`) of a pending hold as one ordinary transfer
    /// naming the hold; the rest is released. With `payee`, the to-account must be theirs.
    async fn capture_hold(
        &self,
        id: HoldId,
        amount: Option<Amount>,
        payee: Option<Username>,
    ) -> Result<CapturedHold, StoreError>;
    /// Releases a pending hold. With `payee`, the to-account must be theirs.
    async fn void_hold(&self, id: HoldId, payee: Option<Username>) -> Result<Hold, StoreError>;
    async fn get_hold(&self, id: HoldId) -> Result<HoldParties, StoreError>;
    /// The holds an account pays or receives, newest first, one page before the key `before`;
    /// with `status`, only those in it (as of now: `pending` leaves out the expired).
    async fn list_holds(
        &self,
        account: AccountId,
        status: Option<HoldStatus>,
        before: Option<HoldId>,
        size: PageSize,
    ) -> Result<Page<Hold, HoldId>, StoreError>;
    /// Marks up to `limit` holds past their expiry `expired` (of one payer, with `payer`), and
    /// says how many. They stopped counting at `expires_at` already; this tidies the rows and
    /// `holds_pending`.
    async fn expire_due_holds(
        &self,
        limit: i64,
        payer: Option<AccountId>,
    ) -> Result<u64, StoreError>;
}

#[async_trait]
impl HoldStore for Store {
    async fn place_hold(
        &self,
        new: &NewHold,
        owner: Option<Username>,
    ) -> Result<PlacedHold, StoreError> {
        if new.from == new.to {
            return Err(StoreError::SameAccount);
        }
        // A hold is judged as the transfer it may become: both accounts customers', open, the
        // payer not frozen, one currency, the amount available.
        let movement = Movement {
            from: new.from,
            to: new.to,
            amount: new.amount,
            currency: new.currency,
            kind: MovementKind::Transfer,
            owner,
        };
        let _pass = self.gate.enter(&movement.customer_accounts()).await?;
        let metadata = new.metadata.as_ref().map(Metadata::to_json);
        retrying_tx(|| async {
            let mut tx = self.pool.begin().await?;
            let [from, to] = lock_pair(&mut tx, new.from, new.to).await?;
            let verdict = rules::judge(
                &movement,
                from.as_ref().map(Side::of),
                to.as_ref().map(Side::of),
            );
            let actual = match verdict.currency_column() {
                Some("from_currency") => from.as_ref().map(|a| a.currency),
                Some(_) => to.as_ref().map(|a| a.currency),
                None => None,
            };
            if let Some(refusal) = verdict.refusal(&movement, actual) {
                tx.rollback().await?;
                return Ok(Err(refusal));
            }
            let row = sqlx::query(PLACE)
                .bind(new.from.get())
                .bind(new.to.get())
                .bind(new.amount.minor_units())
                .bind(new.currency.code())
                .bind(new.expires_in.unwrap_or(HOLD_TTL_DEFAULT).as_secs_f64())
                .bind(new.reference.as_ref().map(Reference::as_str))
                .bind(metadata.as_deref())
                .fetch_one(&mut *tx)
                .await?;
            tx.commit().await?;
            let mut from_account = from.expect("an accepted hold has its payer");
            from_account.held += new.amount.minor_units();
            Ok(Ok(PlacedHold {
                hold: hold_from_row(&row)?,
                from_account,
            }))
        })
        .await?
    }

    async fn capture_hold(
        &self,
        id: HoldId,
        amount: Option<Amount>,
        payee: Option<Username>,
    ) -> Result<CapturedHold, StoreError> {
        let parties = self.get_hold(id).await?;
        let accounts = [parties.hold.from_account_id, parties.hold.to_account_id];
        let _pass = self.gate.enter(&accounts).await?;
        retrying_tx(|| async {
            let mut tx = self.pool.begin().await?;
            let hold = match lock_pending(&mut tx, id, payee.as_ref()).await? {
                Ok(hold) => hold,
                Err(refusal) => {
                    tx.rollback().await?;
                    return Ok(Err(refusal));
                }
            };
            let captured = amount.unwrap_or(hold.amount);
            if captured > hold.amount {
                tx.rollback().await?;
                return Ok(Err(StoreError::CaptureExceedsHold {
                    hold: id,
                    reserved: hold.amount,
                }));
            }
            // Both accounts, ascending, before the payer's `holds_pending` changes: the order
            // every money movement takes them in.
            lock_pair(&mut tx, hold.from_account_id, hold.to_account_id).await?;
            let resolved = sqlx::query(RESOLVE)
                .bind(id.get())
                .bind(HoldStatus::Captured.as_str())
                .bind(captured.minor_units())
                .fetch_one(&mut *tx)
                .await?;
            // The hold no longer counts in `held`, so the capture may use what it reserved. The
            // rest of the rules are a transfer's: a frozen payer or a closed payee refuses it.
            let movement = Movement {
                from: hold.from_account_id,
                to: hold.to_account_id,
                amount: captured,
                currency: hold.currency,
                kind: MovementKind::Transfer,
                owner: None,
            };
            let row = move_money_query(&movement, Some(id))
                .fetch_one(&mut *tx)
                .await?;
            match receipt_from_row(&row, &movement) {
                Ok(receipt) => {
                    tx.commit().await?;
                    Ok(Ok(CapturedHold {
                        hold: hold_from_row(&resolved)?,
                        receipt,
                    }))
                }
                Err(refusal) => {
                    tx.rollback().await?;
                    Ok(Err(refusal))
                }
            }
        })
        .await?
    }

    async fn void_hold(&self, id: HoldId, payee: Option<Username>) -> Result<Hold, StoreError> {
        retrying_tx(|| async {
            let mut tx = self.pool.begin().await?;
            if let Err(refusal) = lock_pending(&mut tx, id, payee.as_ref()).await? {
                tx.rollback().await?;
                return Ok(Err(refusal));
            }
            // Only the payer's `holds_pending` changes: a hold on a frozen account may still be
            // released.
            let row = sqlx::query(RESOLVE)
                .bind(id.get())
                .bind(HoldStatus::Voided.as_str())
                .bind(None::<i64>)
                .fetch_one(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(Ok(hold_from_row(&row)?))
        })
        .await?
    }

    async fn get_hold(&self, id: HoldId) -> Result<HoldParties, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT h.*, f.owner AS from_owner, t.owner AS to_owner FROM (SELECT ",
            hold_columns!(),
            " FROM holds WHERE id = $1) h \
             JOIN accounts f ON f.id = h.from_account_id \
             JOIN accounts t ON t.id = h.to_account_id"
        ))
        .bind(id.get())
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound(Entity::Hold))?;
        parties_from_row(&row)
    }

    async fn list_holds(
        &self,
        account: AccountId,
        status: Option<HoldStatus>,
        before: Option<HoldId>,
        size: PageSize,
    ) -> Result<Page<Hold, HoldId>, StoreError> {
        // Each side through its own index, newest first, merged: an OR of the two columns would
        // read every hold of the account before the LIMIT.
        let rows = sqlx::query(concat!(
            "SELECT * FROM ( \
                 (SELECT ",
            hold_columns!(),
            " FROM holds WHERE from_account_id = $1 AND id < $2 ORDER BY id DESC) \
                 UNION ALL \
                 (SELECT ",
            hold_columns!(),
            " FROM holds WHERE to_account_id = $1 AND id < $2 ORDER BY id DESC) \
             ) h \
             WHERE $3::text IS NULL OR h.status = $3 \
             ORDER BY id DESC LIMIT $4"
        ))
        .bind(account.get())
        .bind(before.map_or(i64::MAX, HoldId::get))
        .bind(status.map(HoldStatus::as_str))
        .bind(size.get() + 1)
        .fetch_all(&self.pool)
        .await?;
        let holds = rows
            .iter()
            .map(hold_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_overfetch(holds, size.get(), |h| h.id))
    }

    async fn expire_due_holds(
        &self,
        limit: i64,
        payer: Option<AccountId>,
    ) -> Result<u64, StoreError> {
        retrying(|| async {
            let mut tx = self.pool.begin().await?;
            let due = sqlx::query(DUE_HOLDS)
                .bind(limit)
                .bind(payer.map(AccountId::get))
                .fetch_all(&mut *tx)
                .await?;
            if due.is_empty() {
                tx.rollback().await?;
                return Ok(0);
            }
            let mut ids = Vec::with_capacity(due.len());
            let mut payers = Vec::with_capacity(due.len());
            for row in &due {
                ids.push(row.try_get::<i64, _>("id")?);
                payers.push(row.try_get::<i64, _>("from_account_id")?);
            }
            payers.sort_unstable();
            payers.dedup();
            // The payers, ascending, before their `holds_pending` changes.
            sqlx::query(LOCK_ACCOUNTS)
                .bind(&payers)
                .fetch_all(&mut *tx)
                .await?;
            sqlx::query(EXPIRE).bind(&ids).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(ids.len() as u64)
        })
        .await
    }
}

/// `retrying` for a transaction whose business refusals are values (`Ok(Err(_))`), so only a
/// database error that rolled it back (deadlock, serialization failure) is tried again.
async fn retrying_tx<T, F, Fut>(attempt: F) -> Result<Result<T, StoreError>, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Result<T, StoreError>, TxError>>,
{
    super::retrying_when(|e: &TxError| e.retryable(), attempt)
        .await
        .map_err(TxError::into_store)
}

/// A failed step of a hold's transaction: a database error (maybe a conflict to retry), or a
/// row that did not decode.
#[derive(Debug)]
enum TxError {
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

/// Both accounts row-locked, ascending, each `None` if it does not exist.
async fn lock_pair(
    tx: &mut sqlx::PgConnection,
    from: AccountId,
    to: AccountId,
) -> Result<[Option<Account>; 2], TxError> {
    let rows = sqlx::query(LOCK_ACCOUNTS)
        .bind([from.get(), to.get()].as_slice())
        .fetch_all(&mut *tx)
        .await?;
    let mut pair = [None, None];
    for row in &rows {
        let account = account_from_row(row)?;
        let slot = if account.id == from { 0 } else { 1 };
        pair[slot] = Some(account);
    }
    Ok(pair)
}

/// The hold, row-locked, if it is pending and the caller (`payee`, when given) owns its
/// to-account; otherwise the refusal.
async fn lock_pending(
    tx: &mut sqlx::PgConnection,
    id: HoldId,
    payee: Option<&Username>,
) -> Result<Result<Hold, StoreError>, TxError> {
    let Some(row) = sqlx::query(LOCK_HOLD)
        .bind(id.get())
        .fetch_optional(&mut *tx)
        .await?
    else {
        return Ok(Err(StoreError::NotFound(Entity::Hold)));
    };
    let parties = parties_from_row(&row)?;
    if payee.is_some_and(|payee| *payee != parties.to_owner) {
        return Ok(Err(StoreError::NotOwner(parties.hold.to_account_id)));
    }
    if parties.hold.status != HoldStatus::Pending {
        return Ok(Err(StoreError::HoldNotPending {
            hold: id,
            status: parties.hold.status,
        }));
    }
    Ok(Ok(parties.hold))
}

fn parties_from_row(row: &PgRow) -> Result<HoldParties, StoreError> {
    Ok(HoldParties {
        hold: hold_from_row(row)?,
        from_owner: decode(row, "from_owner", |s: String| Username::parse(&s))?,
        to_owner: decode(row, "to_owner", |s: String| Username::parse(&s))?,
    })
}

pub(super) fn hold_from_row(row: &PgRow) -> Result<Hold, StoreError> {
    Ok(Hold {
        id: decode(row, "id", HoldId::new)?,
        from_account_id: decode(row, "from_account_id", AccountId::new)?,
        to_account_id: decode(row, "to_account_id", AccountId::new)?,
        amount: decode(row, "amount", Amount::new)?,
        currency: decode(row, "currency", |s: String| s.parse())?,
        status: decode(row, "status", |s: String| s.parse())?,
        captured_amount: decode(row, "captured_amount", |a: Option<i64>| {
            a.map(Amount::new).transpose()
        })?,
        expires_at: row.try_get("expires_at")?,
        created_at: row.try_get("created_at")?,
        resolved_at: row.try_get::<Option<DateTime<Utc>>, _>("resolved_at")?,
        reference: decode(row, "reference", |r: Option<String>| {
            r.as_deref().map(Reference::parse).transpose()
        })?,
        metadata: decode(row, "metadata", |m: Option<String>| {
            m.as_deref().map(Metadata::from_json).transpose()
        })?,
    })
}
