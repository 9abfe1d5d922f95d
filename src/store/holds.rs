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

use super::accounts::{LOCK_ACCOUNTS, account_columns, account_from_row};
use super::idempotency::{KeyedOutcome, KeyedWrite, Recorded, TxError, in_own_task, retrying_tx};
use super::rules::{Movement, MovementKind, Verdict};
use super::transfers::{Links, move_money_query, receipt_from_row};
use super::{Entity, Page, Store, StoreError, decode, retrying};
use crate::domain::{
    Account, AccountId, Amount, HOLD_TTL_DEFAULT, Hold, HoldId, HoldStatus, IdempotencyKey, Label,
    Metadata, NewHold, PageSize, Reference, RequestFingerprint, TransferReceipt, Username,
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

/// A hold judged as the transfer it may become, by the rules' one text (`movement_verdict`,
/// see `MOVE_MONEY`): both accounts row-locked in ascending id order, `held` read once they are,
/// and the verdict of a transfer of $4 in $5 from $1 to $2 (with $3, the payer's owner). One row
/// per account that exists, each with the verdict; one row of NULLs and the verdict if neither.
const JUDGE_HOLD: &str = "WITH locked AS MATERIALIZED ( \
         SELECT id, owner, currency, balance, kind, status, overdraft_limit, holds_pending, \
                created_at \
         FROM accounts WHERE id = $1 OR id = $2 ORDER BY id FOR NO KEY UPDATE), \
     sides AS MATERIALIZED ( \
         SELECT *, CASE WHEN holds_pending > 0 THEN account_held(id) ELSE 0 END AS held \
         FROM locked) \
     SELECT v.verdict, s.* FROM ( \
         SELECT movement_verdict('transfer', $3, $4, $5, f.id, f.owner, f.kind, f.status, \
                                 f.currency, f.balance, f.held, f.overdraft_limit, \
                                 t.id, t.kind, t.status, t.currency, t.balance) AS verdict \
         FROM (VALUES (1)) AS one (x) \
         LEFT JOIN sides f ON f.id = $1 LEFT JOIN sides t ON t.id = $2) v \
     LEFT JOIN sides s ON true";

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

/// A hold write, as a keyed request names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HoldOp {
    /// With `owner`, the payer's account must be theirs.
    Place {
        hold: NewHold,
        owner: Option<Username>,
    },
    /// `amount: None` captures all of it. With `payee`, the to-account must be theirs.
    Capture {
        id: HoldId,
        amount: Option<Amount>,
        payee: Option<Username>,
    },
    Void {
        id: HoldId,
        payee: Option<Username>,
    },
}

impl HoldOp {
    /// `hold`, `capture` or `void`: the operation's name in key records and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            HoldOp::Place { .. } => "hold",
            HoldOp::Capture { .. } => "capture",
            HoldOp::Void { .. } => "void",
        }
    }

    /// What identifies the request under a key: a retry must be the same request.
    fn fingerprint(&self) -> RequestFingerprint {
        let user = |u: &Option<Username>| u.as_ref().map_or("", Username::as_str).to_owned();
        let fields: Vec<String> = match self {
            HoldOp::Place { hold, owner } => vec![
                hold.from.to_string(),
                hold.to.to_string(),
                hold.amount.minor_units().to_string(),
                hold.currency.code().to_owned(),
                hold.expires_in
                    .map_or(String::new(), |d| d.as_secs().to_string()),
                hold.reference
                    .as_ref()
                    .map_or(String::new(), |r| r.as_str().to_owned()),
                hold.metadata
                    .as_ref()
                    .map_or(String::new(), Metadata::to_json),
                user(owner),
            ],
            HoldOp::Capture { id, amount, payee } => vec![
                id.to_string(),
                amount.map_or(String::new(), |a| a.minor_units().to_string()),
                user(payee),
            ],
            HoldOp::Void { id, payee } => vec![id.to_string(), user(payee)],
        };
        let fields: Vec<&str> = fields.iter().map(String::as_str).collect();
        RequestFingerprint::of(self.kind(), &fields)
    }
}

/// What a hold write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HoldAnswer {
    Placed(PlacedHold),
    /// Boxed: a receipt is most of the enum's size.
    Captured(Box<CapturedHold>),
    Voided(Hold),
}

/// Holds, as the service sees them.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait HoldStore: Send + Sync {
    /// Runs a hold write: `Place` reserves `hold.amount` of the payer's funds, refused by the
    /// rules of a transfer (`rules::judge`: statuses, currencies, available funds under the
    /// payer's lock); `Capture` takes all or part of a pending hold as one ordinary transfer
    /// naming the hold (the rest is released); `Void` releases it.
    async fn write_hold(&self, op: &HoldOp) -> Result<HoldAnswer, StoreError>;
    /// `write_hold` once per (`caller`, `key`), in the transaction that records it; a retry is
    /// answered with the first outcome, success or refusal (see `idempotency.rs`).
    async fn write_hold_once(
        &self,
        op: &HoldOp,
        caller: &Username,
        key: &IdempotencyKey,
    ) -> Result<KeyedOutcome<HoldAnswer>, StoreError>;
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
    async fn write_hold(&self, op: &HoldOp) -> Result<HoldAnswer, StoreError> {
        if let HoldOp::Place { hold, .. } = op
            && hold.from == hold.to
        {
            return Err(StoreError::SameAccount);
        }
        let _pass = self.gate.enter(&self.hold_accounts(op).await?).await?;
        retrying_tx(|| async {
            let mut tx = self.pool.begin().await?;
            let done = run_hold_op(&mut tx, op).await;
            match &done {
                Ok(Ok(_)) => tx.commit().await?,
                _ => tx.rollback().await?,
            }
            done
        })
        .await?
    }

    async fn write_hold_once(
        &self,
        op: &HoldOp,
        caller: &Username,
        key: &IdempotencyKey,
    ) -> Result<KeyedOutcome<HoldAnswer>, StoreError> {
        if let HoldOp::Place { hold, .. } = op
            && hold.from == hold.to
        {
            return Ok(KeyedOutcome::Done(Err(StoreError::SameAccount)));
        }
        let (store, op, caller, key) = (self.clone(), op.clone(), caller.clone(), key.clone());
        in_own_task("hold", async move {
            store.run_keyed_hold(&op, &caller, &key).await
        })
        .await
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
        self.expire_holds(limit, payer).await
    }
}

impl Store {
    /// `HoldStore::expire_due_holds`, also for closing an account (`accounts.rs`).
    pub(super) async fn expire_holds(
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

    /// The accounts a hold write touches, for their share of the pool (`account_gate.rs`).
    async fn hold_accounts(&self, op: &HoldOp) -> Result<Vec<AccountId>, StoreError> {
        Ok(match op {
            HoldOp::Place { hold, .. } => vec![hold.from, hold.to],
            HoldOp::Capture { id, .. } | HoldOp::Void { id, .. } => {
                let hold = self.get_hold(*id).await?.hold;
                vec![hold.from_account_id, hold.to_account_id]
            }
        })
    }

    async fn run_keyed_hold(
        &self,
        op: &HoldOp,
        caller: &Username,
        key: &IdempotencyKey,
    ) -> Result<KeyedOutcome<HoldAnswer>, StoreError> {
        let accounts = match self.hold_accounts(op).await {
            Ok(accounts) => accounts,
            // No such hold: nothing to protect, nothing to remember.
            Err(StoreError::NotFound(Entity::Hold)) => {
                return Ok(KeyedOutcome::Done(Err(StoreError::NotFound(Entity::Hold))));
            }
            Err(other) => return Err(other),
        };
        let _pass = self.gate.enter(&accounts).await?;
        self.write_once(op, caller, key).await
    }
}

impl KeyedWrite for HoldOp {
    type Answer = HoldAnswer;

    fn kind(&self) -> &'static str {
        HoldOp::kind(self)
    }

    fn fingerprint(&self) -> RequestFingerprint {
        HoldOp::fingerprint(self)
    }

    fn run<'a>(
        &'a self,
        tx: &'a mut sqlx::PgConnection,
    ) -> impl Future<Output = Result<Result<HoldAnswer, StoreError>, TxError>> + Send + 'a {
        run_hold_op(tx, self)
    }

    fn outcome(answer: &HoldAnswer) -> Recorded {
        match answer {
            HoldAnswer::Placed(placed) => Recorded::hold(placed.hold.id),
            HoldAnswer::Captured(captured) => Recorded {
                transfer: Some(captured.receipt.transfer.id.get()),
                ..Recorded::hold(captured.hold.id)
            },
            HoldAnswer::Voided(hold) => Recorded::hold(hold.id),
        }
    }

    fn replay<'a>(
        &'a self,
        tx: &'a mut sqlx::PgConnection,
        row: &'a PgRow,
    ) -> impl Future<Output = Result<HoldAnswer, TxError>> + Send + 'a {
        replay(tx, row, self)
    }
}

/// The first answer again, from the key's record (`FIND_KEY`'s row). A capture and a void are
/// final, so their hold reads as it was answered; a placed hold is shown as placed (pending),
/// whatever became of it since, with the payer's account as it stands now.
async fn replay(
    tx: &mut sqlx::PgConnection,
    row: &PgRow,
    op: &HoldOp,
) -> Result<HoldAnswer, TxError> {
    let hold_id = decode(row, "key_hold_id", |id: Option<i64>| {
        HoldId::new(id.unwrap_or(0))
    })?;
    let hold = hold_from_row(
        &sqlx::query(concat!(
            "SELECT ",
            hold_columns!(),
            " FROM holds WHERE id = $1"
        ))
        .bind(hold_id.get())
        .fetch_one(&mut *tx)
        .await?,
    )?;
    Ok(match op {
        HoldOp::Place { .. } => {
            let from_account = account_from_row(
                &sqlx::query(concat!(
                    "SELECT ",
                    account_columns!(),
                    " FROM accounts WHERE id = $1"
                ))
                .bind(hold.from_account_id.get())
                .fetch_one(&mut *tx)
                .await?,
            )?;
            HoldAnswer::Placed(PlacedHold {
                hold: Hold {
                    status: HoldStatus::Pending,
                    captured_amount: None,
                    resolved_at: None,
                    ..hold
                },
                from_account,
            })
        }
        HoldOp::Capture { .. } => {
            let movement = Movement {
                from: hold.from_account_id,
                to: hold.to_account_id,
                amount: hold.captured_amount.unwrap_or(hold.amount),
                currency: hold.currency,
                kind: MovementKind::Transfer,
                owner: None,
                label: hold.label(),
            };
            let receipt = receipt_from_row(row, &movement)?;
            HoldAnswer::Captured(Box::new(CapturedHold { hold, receipt }))
        }
        HoldOp::Void { .. } => HoldAnswer::Voided(hold),
    })
}

/// One hold write inside `tx`, which the caller ends: committed on `Ok(Ok(_))`, rolled back
/// otherwise (a refusal may come after a write, as a capture's transfer refused).
async fn run_hold_op(
    tx: &mut sqlx::PgConnection,
    op: &HoldOp,
) -> Result<Result<HoldAnswer, StoreError>, TxError> {
    Ok(match op {
        HoldOp::Place { hold, owner } => place_in(tx, hold, owner.clone())
            .await?
            .map(HoldAnswer::Placed),
        HoldOp::Capture { id, amount, payee } => capture_in(tx, *id, *amount, payee.as_ref())
            .await?
            .map(|captured| HoldAnswer::Captured(Box::new(captured))),
        HoldOp::Void { id, payee } => void_in(tx, *id, payee.as_ref())
            .await?
            .map(HoldAnswer::Voided),
    })
}

async fn place_in(
    tx: &mut sqlx::PgConnection,
    new: &NewHold,
    owner: Option<Username>,
) -> Result<Result<PlacedHold, StoreError>, TxError> {
    // A hold is judged as the transfer it may become: both accounts customers', open, the
    // payer not frozen, one currency, the amount available.
    let movement = Movement {
        from: new.from,
        to: new.to,
        amount: new.amount,
        currency: new.currency,
        kind: MovementKind::Transfer,
        owner,
        label: Label::default(),
    };
    let rows = sqlx::query(JUDGE_HOLD)
        .bind(new.from.get())
        .bind(new.to.get())
        .bind(movement.owner.as_ref().map(Username::as_str))
        .bind(new.amount.minor_units())
        .bind(new.currency.code())
        .fetch_all(&mut *tx)
        .await?;
    let mut from = None;
    let mut to = None;
    for row in &rows {
        if row.try_get::<Option<i64>, _>("id")?.is_none() {
            continue;
        }
        let account = account_from_row(row)?;
        if account.id == new.from {
            from = Some(account);
        } else {
            to = Some(account);
        }
    }
    let verdict = match rows.first() {
        Some(row) => Verdict::parse(&row.try_get::<String, _>("verdict")?)?,
        None => return Err(TxError::from(sqlx::Error::RowNotFound)),
    };
    let actual = match verdict.currency_column() {
        Some("from_currency") => from.as_ref().map(|a| a.currency),
        Some(_) => to.as_ref().map(|a| a.currency),
        None => None,
    };
    if let Some(refusal) = verdict.refusal(&movement, actual) {
        return Ok(Err(refusal));
    }
    let row = sqlx::query(PLACE)
        .bind(new.from.get())
        .bind(new.to.get())
        .bind(new.amount.minor_units())
        .bind(new.currency.code())
        .bind(new.expires_in.unwrap_or(HOLD_TTL_DEFAULT).as_secs_f64())
        .bind(new.reference.as_ref().map(Reference::as_str))
        .bind(new.metadata.as_ref().map(Metadata::to_json))
        .fetch_one(&mut *tx)
        .await?;
    let mut from_account = from.expect("an accepted hold has its payer");
    from_account.held += new.amount.minor_units();
    Ok(Ok(PlacedHold {
        hold: hold_from_row(&row)?,
        from_account,
    }))
}

async fn capture_in(
    tx: &mut sqlx::PgConnection,
    id: HoldId,
    amount: Option<Amount>,
    payee: Option<&Username>,
) -> Result<Result<CapturedHold, StoreError>, TxError> {
    let hold = match lock_pending(tx, id, payee).await? {
        Ok(hold) => hold,
        Err(refusal) => return Ok(Err(refusal)),
    };
    let captured = amount.unwrap_or(hold.amount);
    if captured > hold.amount {
        return Ok(Err(StoreError::CaptureExceedsHold {
            hold: id,
            reserved: hold.amount,
        }));
    }
    // Both accounts, ascending, before the payer's `holds_pending` changes: the order every
    // money movement takes them in.
    lock_pair(tx, hold.from_account_id, hold.to_account_id).await?;
    let resolved = sqlx::query(RESOLVE)
        .bind(id.get())
        .bind(HoldStatus::Captured.as_str())
        .bind(captured.minor_units())
        .fetch_one(&mut *tx)
        .await?;
    // The hold no longer counts in `held`, so the capture may use what it reserved. The rest of
    // the rules are a transfer's: a frozen payer or a closed payee refuses it (and the caller
    // rolls the resolution back).
    let movement = Movement {
        from: hold.from_account_id,
        to: hold.to_account_id,
        amount: captured,
        currency: hold.currency,
        kind: MovementKind::Transfer,
        owner: None,
        // The capture carries the hold's reference and metadata: "which payment was order 42".
        label: hold.label(),
    };
    let row = move_money_query(
        &movement,
        Links {
            hold: Some(id),
            ..Links::default()
        },
    )
    .fetch_one(&mut *tx)
    .await?;
    let hold = hold_from_row(&resolved)?;
    Ok(receipt_from_row(&row, &movement).map(|receipt| CapturedHold { hold, receipt }))
}

async fn void_in(
    tx: &mut sqlx::PgConnection,
    id: HoldId,
    payee: Option<&Username>,
) -> Result<Result<Hold, StoreError>, TxError> {
    if let Err(refusal) = lock_pending(tx, id, payee).await? {
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
    Ok(Ok(hold_from_row(&row)?))
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
