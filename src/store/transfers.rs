//! The money-moving transaction, and reading transfers back.
//!
//! A transfer, a deposit and a withdrawal are the same statement: deposits move money from the
//! bank's settlement account of the currency, withdrawals to it.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::postgres::PgRow;

use super::rules::{Movement, MovementKind, Verdict};
use super::{Entity, Page, Store, StoreError, decode, retrying};
use crate::domain::{
    Account, AccountId, AccountKind, Amount, Currency, Entry, EntryId, HoldId, Label, Metadata,
    NewTransfer, PageSize, Reference, Transfer, TransferId, TransferParties, TransferReceipt,
    Username,
};

/// The whole movement in **one statement, so one round trip**. Sent in autocommit mode it is its
/// own transaction, and sqlx sends it as a cached prepared statement (Bind/Execute/Sync in one
/// write). $1 from, $2 to, $3 amount, $4 currency, $5 movement kind, $6 the owner the
/// from-account must have (NULL: anyone's), $7 the hold a capture names, $8 the reference, $9
/// the metadata (JSON text), $10 the transfer a reversal reverses.
///
/// 1. `locked` takes row locks on both accounts in ascending id order (`ORDER BY id` sits below
///    the lock in the plan), so two movements over the same pair in opposite directions queue
///    instead of deadlocking; group commit's batches (`move_money_batch`) lock in the same
///    order. `FOR NO KEY UPDATE` is the lock an UPDATE of a non-key column takes; it does not
///    block the foreign-key checks of unrelated inserts. Under READ COMMITTED a lock that had to
///    wait returns the row as the other transaction left it, so every check sees the latest
///    committed balance.
/// 2. `verdict` applies every rule: the SQL function `movement_verdict`, the one text of the
///    rules, which the batches and hold placement call too. `held` (what the payer's pending,
///    unexpired holds reserve) is read by the VOLATILE `account_held` once the row is locked: a
///    subquery would read the statement's snapshot, taken before any wait for the lock, and miss
///    a hold committed by the transaction that held it. `holds_pending` is 0 for most accounts
///    and spares them the call.
/// 3. Only if the verdict is `ok` do the inserts and the update write (each reads `transfer`):
///    the transfer, its two entries with their `balance_after`, its event (naming the transfer;
///    readers build the resource from it) and both balances.
///
/// The new balances are computed from `locked`, not from `accounts.balance`: the UPDATE scans
/// with the statement's snapshot, which predates any wait for the locks, and PostgreSQL would
/// check `accounts_balance_within_limit` on a row built from that stale version before
/// re-evaluating, failing it spuriously under contention. `accounts_balance_within_limit` and
/// `accounts_closed_empty` back the verdict up inside the database.
///
/// One row comes back: the verdict, and what was written when it was `ok`.
pub const MOVE_MONEY: &str = MOVE_MONEY_TEXT;

/// The movement's common table expressions; `$guard` is a condition every row lock also needs
/// (the keyed statement's: this request holds its key and finds no record of it).
macro_rules! movement_ctes {
    ($guard:literal) => {
        concat!(
            r#"
locked AS MATERIALIZED (
    SELECT id, owner, currency, balance, kind, status, overdraft_limit, holds_pending, created_at
    FROM accounts WHERE (id = $1 OR id = $2) AND "#,
            $guard,
            r#"
    ORDER BY id FOR NO KEY UPDATE),
sides AS MATERIALIZED (
    SELECT f.id AS from_id, f.owner AS from_owner, f.currency AS from_currency,
           f.balance AS from_balance, f.kind AS from_kind, f.status AS from_status,
           f.overdraft_limit AS from_overdraft_limit, f.created_at AS from_created_at,
           CASE WHEN f.holds_pending > 0 THEN account_held(f.id) ELSE 0 END AS from_held,
           t.id AS to_id, t.owner AS to_owner, t.currency AS to_currency,
           t.balance AS to_balance, t.kind AS to_kind, t.status AS to_status,
           t.overdraft_limit AS to_overdraft_limit, t.created_at AS to_created_at,
           CASE WHEN t.holds_pending > 0 THEN account_held(t.id) ELSE 0 END AS to_held
    FROM (VALUES (1)) AS one (x)
    LEFT JOIN locked f ON f.id = $1
    LEFT JOIN locked t ON t.id = $2),
verdict AS MATERIALIZED (
    SELECT s.*,
           movement_verdict($5, $6, $3, $4, s.from_id, s.from_owner, s.from_kind, s.from_status,
                            s.from_currency, s.from_balance, s.from_held,
                            s.from_overdraft_limit, s.to_id, s.to_kind, s.to_status,
                            s.to_currency, s.to_balance) AS status
    FROM sides s),
transfer AS (
    INSERT INTO transfers (from_account_id, to_account_id, amount, currency, hold_id, reference,
                           metadata, reverses_transfer_id)
    SELECT $1, $2, $3, $4, $7, $8, $9::jsonb, $10 FROM verdict WHERE status = 'ok'
    RETURNING id, created_at, hold_id, reverses_transfer_id),
entry_rows AS (
    INSERT INTO entries (account_id, transfer_id, amount, balance_after)
    SELECT $1, tr.id, -$3, v.from_balance - $3 FROM transfer tr, verdict v
    UNION ALL
    SELECT $2, tr.id, $3, v.to_balance + $3 FROM transfer tr, verdict v
    RETURNING id, account_id),
event AS (
    INSERT INTO events (type, account_id, counter_account_id, transfer_id)
    SELECT movement_event_type($5), $1, $2, tr.id FROM transfer tr),
updated AS (
    UPDATE accounts a
    SET balance = CASE WHEN a.id = $1 THEN v.from_balance - $3 ELSE v.to_balance + $3 END
    FROM transfer, verdict v
    WHERE a.id = $1 OR a.id = $2)"#
        )
    };
}

/// The receipt's columns and where they come from (after `movement_ctes!`).
macro_rules! receipt {
    () => {
        r#"v.status, v.from_currency, v.to_currency,
       tr.id AS transfer_id, tr.created_at AS transfer_created_at,
       tr.hold_id AS transfer_hold_id, tr.reverses_transfer_id AS transfer_reverses,
       fe.id AS from_entry_id, w.from_after AS from_entry_balance_after,
       tr.created_at AS from_entry_created_at,
       te.id AS to_entry_id, w.to_after AS to_entry_balance_after,
       tr.created_at AS to_entry_created_at,
       v.from_owner, w.from_after AS from_balance, v.from_kind, v.from_status,
       v.from_overdraft_limit, v.from_held, v.from_created_at,
       v.to_owner, w.to_after AS to_balance, v.to_kind, v.to_status,
       v.to_overdraft_limit, v.to_held, v.to_created_at
FROM verdict v
LEFT JOIN transfer tr ON true
-- The balances it left, only when it moved (a refusal for overflow must not compute them).
LEFT JOIN LATERAL (SELECT v.from_balance - $3 AS from_after, v.to_balance + $3 AS to_after
                   WHERE tr.id IS NOT NULL) w ON true
LEFT JOIN entry_rows fe ON fe.account_id = $1
LEFT JOIN entry_rows te ON te.account_id = $2
"#
    };
}

const MOVE_MONEY_TEXT: &str = concat!("WITH ", movement_ctes!("true"), "\nSELECT ", receipt!());

/// MOVE_MONEY under an idempotency key, in **one round trip** as well: the same movement,
/// guarded by the key, and the key's record written by the same statement. $11 the key's
/// advisory lock (`idempotency::advisory_lock_key`), $12 the user, $13 the key, $14 the
/// request's fingerprint. `claimed` false: another request holds the key now (nothing ran).
/// `recorded` true: the key has a record (nothing ran; read it with `FIND_KEY`). Otherwise the
/// movement ran and its outcome, success or refusal, is recorded in the same commit.
///
/// The record is looked for with the statement's snapshot, which is taken before the advisory
/// lock is: should the key's first request commit in between, this one moves the money again
/// and its record then collides with the first on `idempotency_keys_pkey`, which rolls all of
/// it back; the caller runs the statement again and finds the record.
pub(super) const MOVE_MONEY_KEYED: &str = concat!(
    r#"WITH claim AS MATERIALIZED (SELECT pg_try_advisory_xact_lock($11) AS claimed),
prior AS MATERIALIZED (
    SELECT 1 FROM idempotency_keys, claim WHERE claimed AND username = $12 AND key = $13),
go AS MATERIALIZED (SELECT 1 FROM claim WHERE claimed AND NOT EXISTS (SELECT 1 FROM prior)),
"#,
    movement_ctes!("EXISTS (SELECT 1 FROM go)"),
    r#",
record AS (
    INSERT INTO idempotency_keys (username, key, request_hash, operation, transfer_id, refusal,
                                  refusal_currency)
    SELECT $12, $13, $14, $5, tr.id, NULLIF(v.status, 'ok'),
           CASE v.status WHEN 'from_currency_mismatch' THEN v.from_currency
                         WHEN 'to_currency_mismatch' THEN v.to_currency END
    FROM go, verdict v LEFT JOIN transfer tr ON true)
SELECT (SELECT claimed FROM claim) AS claimed, EXISTS (SELECT 1 FROM prior) AS recorded, "#,
    receipt!()
);

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

/// Money movements without an idempotency key, and reading a transfer, as the service sees them.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait TransferStore: Send + Sync {
    /// Moves money between two customer accounts. With `owner`, the from-account must belong to
    /// that user (`NotOwner` otherwise); `None` is for callers allowed to move anyone's money.
    ///
    /// One round trip (see `MOVE_MONEY`); retried on deadlock or serialization failure.
    async fn transfer(
        &self,
        cmd: &NewTransfer,
        owner: Option<Username>,
    ) -> Result<TransferReceipt, StoreError>;
    /// Money entering the bank: from the currency's settlement account into `account`.
    /// Two round trips the first time (the settlement ids are then cached), one afterwards.
    async fn deposit(
        &self,
        account: AccountId,
        amount: Amount,
        currency: Currency,
        label: Label,
    ) -> Result<TransferReceipt, StoreError>;
    /// Money leaving the bank: from `account` into the currency's settlement account.
    async fn withdraw(
        &self,
        account: AccountId,
        amount: Amount,
        currency: Currency,
        label: Label,
    ) -> Result<TransferReceipt, StoreError>;
    /// A transfer and the owners of both its accounts (who may read it), in one query.
    async fn get_transfer(&self, id: TransferId) -> Result<TransferParties, StoreError>;
    /// The transfers into and out of `account` that `filter` keeps, newest first, one page
    /// before the entry `before`. Read through the account's entries (one per transfer it
    /// took part in, ids in commit order), so `entries_account_id_idx` serves it and a page
    /// read while transfers commit never skips or repeats one.
    async fn list_transfers(
        &self,
        account: AccountId,
        filter: &TransferFilter,
        before: Option<EntryId>,
        size: PageSize,
    ) -> Result<Page<Transfer, EntryId>, StoreError>;
}

/// The page, side and time conditions of an account's transfers (a macro so the queries stay
/// `&'static str`): `$2` the entry to continue before, `$3` the side, `$4`/`$5` the times, `$6`
/// the limit.
macro_rules! transfer_page_conditions {
    () => {
        "e.id < $2 \
         AND ($3 = 'any' OR ($3 = 'in' AND e.amount > 0) OR ($3 = 'out' AND e.amount < 0)) \
         AND ($4::timestamptz IS NULL OR e.created_at >= $4) \
         AND ($5::timestamptz IS NULL OR e.created_at < $5) \
         ORDER BY e.id DESC LIMIT $6"
    };
}

/// Which side of the account a listed transfer is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    /// Money into the account.
    In,
    /// Money out of it.
    Out,
    #[default]
    Any,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::In => "in",
            Direction::Out => "out",
            Direction::Any => "any",
        }
    }
}

/// What an account's transfers are filtered by: the side, `since <= created_at < until`, and
/// the client's reference.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransferFilter {
    pub direction: Direction,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub reference: Option<Reference>,
}

#[async_trait]
impl TransferStore for Store {
    async fn transfer(
        &self,
        cmd: &NewTransfer,
        owner: Option<Username>,
    ) -> Result<TransferReceipt, StoreError> {
        let movement = MoneyMove::Transfer {
            transfer: cmd.clone(),
            owner,
        };
        self.move_money(self.resolve(&movement).await?).await
    }
    async fn deposit(
        &self,
        account: AccountId,
        amount: Amount,
        currency: Currency,
        label: Label,
    ) -> Result<TransferReceipt, StoreError> {
        let movement = MoneyMove::Deposit {
            account,
            amount,
            currency,
            label,
        };
        self.move_money(self.resolve(&movement).await?).await
    }
    async fn withdraw(
        &self,
        account: AccountId,
        amount: Amount,
        currency: Currency,
        label: Label,
    ) -> Result<TransferReceipt, StoreError> {
        let movement = MoneyMove::Withdrawal {
            account,
            amount,
            currency,
            label,
        };
        self.move_money(self.resolve(&movement).await?).await
    }
    async fn list_transfers(
        &self,
        account: AccountId,
        filter: &TransferFilter,
        before: Option<EntryId>,
        size: PageSize,
    ) -> Result<Page<Transfer, EntryId>, StoreError> {
        // With a reference, from the few transfers that carry it (`transfers_reference_idx`) to
        // their entry for the account; without, along the account's entries. Two statements,
        // so each is planned for its own case.
        let sql = if filter.reference.is_some() {
            concat!(
                "SELECT t.id, t.from_account_id, t.to_account_id, t.amount, t.currency, \
                        t.hold_id, t.reference, t.metadata::text AS metadata, t.reverses_transfer_id, t.created_at, \
                        e.id AS entry_id \
                 FROM transfers t JOIN entries e ON e.transfer_id = t.id AND e.account_id = $1 \
                 WHERE t.reference = $7 AND ",
                transfer_page_conditions!()
            )
        } else {
            concat!(
                "SELECT t.id, t.from_account_id, t.to_account_id, t.amount, t.currency, \
                        t.hold_id, t.reference, t.metadata::text AS metadata, t.reverses_transfer_id, t.created_at, \
                        e.id AS entry_id \
                 FROM entries e JOIN transfers t ON t.id = e.transfer_id \
                 WHERE e.account_id = $1 AND ",
                transfer_page_conditions!()
            )
        };
        let mut query = sqlx::query(sql)
            .bind(account.get())
            .bind(before.map_or(i64::MAX, EntryId::get))
            .bind(filter.direction.as_str())
            .bind(filter.since)
            .bind(filter.until)
            .bind(size.get() + 1);
        if let Some(reference) = &filter.reference {
            query = query.bind(reference.as_str());
        }
        let rows = query.fetch_all(&self.pool).await?;
        let mut keyed = Vec::with_capacity(rows.len());
        for row in &rows {
            keyed.push((
                decode(row, "entry_id", EntryId::new)?,
                transfer_from_row(row)?,
            ));
        }
        let page = Page::from_overfetch(keyed, size.get(), |(entry, _)| *entry);
        Ok(Page {
            items: page
                .items
                .into_iter()
                .map(|(_, transfer)| transfer)
                .collect(),
            next: page.next,
        })
    }

    async fn get_transfer(&self, id: TransferId) -> Result<TransferParties, StoreError> {
        let row = sqlx::query(
            "SELECT t.id, t.from_account_id, t.to_account_id, t.amount, t.currency, t.hold_id, \
                    t.reference, t.metadata::text AS metadata, t.reverses_transfer_id, t.created_at, \
                    f.owner AS from_owner, r.owner AS to_owner \
             FROM transfers t \
             JOIN accounts f ON f.id = t.from_account_id \
             JOIN accounts r ON r.id = t.to_account_id \
             WHERE t.id = $1",
        )
        .bind(id.get())
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound(Entity::Transfer))?;
        Ok(TransferParties {
            transfer: transfer_from_row(&row)?,
            from_owner: decode(&row, "from_owner", |s: String| Username::parse(&s))?,
            to_owner: decode(&row, "to_owner", |s: String| Username::parse(&s))?,
        })
    }
}

impl Store {
    /// The accounts and rules of `movement` (deposits and withdrawals go through the settlement
    /// account of their currency).
    pub(super) async fn resolve(&self, movement: &MoneyMove) -> Result<Movement, StoreError> {
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

    async fn move_money(&self, movement: Movement) -> Result<TransferReceipt, StoreError> {
        if movement.from == movement.to {
            return Err(StoreError::SameAccount);
        }
        match &self.group_commit {
            Some(group) => group.submit(self, movement).await,
            None => self.move_money_alone(&movement).await,
        }
    }

    /// One movement in one statement, its own transaction.
    pub(super) async fn move_money_alone(
        &self,
        movement: &Movement,
    ) -> Result<TransferReceipt, StoreError> {
        // Each account's share of the pool first (`account_gate.rs`).
        let _pass = self.gate.enter(&movement.customer_accounts()).await?;
        let row = retrying(|| {
            self.calls.single.inc();
            move_money_query(movement, Links::default()).fetch_one(&self.pool)
        })
        .await?;
        receipt_from_row(&row, movement)
    }
}

/// A reference and metadata (as JSON text) from two columns of a row.
pub(super) fn label_from_row(
    row: &PgRow,
    reference: &str,
    metadata: &str,
) -> Result<Label, StoreError> {
    Ok(Label {
        reference: decode(row, reference, |r: Option<String>| {
            r.as_deref().map(Reference::parse).transpose()
        })?,
        metadata: decode(row, metadata, |m: Option<String>| {
            m.as_deref().map(Metadata::from_json).transpose()
        })?,
    })
}

/// A `transfers` row read under its own column names.
pub(super) fn transfer_from_row(row: &PgRow) -> Result<Transfer, StoreError> {
    Ok(Transfer {
        id: decode(row, "id", TransferId::new)?,
        from_account_id: decode(row, "from_account_id", AccountId::new)?,
        to_account_id: decode(row, "to_account_id", AccountId::new)?,
        amount: decode(row, "amount", Amount::new)?,
        currency: decode(row, "currency", |s: String| s.parse())?,
        hold_id: decode(row, "hold_id", |id: Option<i64>| {
            id.map(HoldId::new).transpose()
        })?,
        label: label_from_row(row, "reference", "metadata")?,
        reverses: decode(row, "reverses_transfer_id", |id: Option<i64>| {
            id.map(TransferId::new).transpose()
        })?,
        created_at: row.try_get("created_at")?,
    })
}

/// `MOVE_MONEY` with its parameters bound, to run alone or inside a transaction.
pub(super) fn move_money_query(
    movement: &Movement,
    links: Links,
) -> sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments> {
    bind_movement(sqlx::query(MOVE_MONEY), movement, links)
}

/// The movement's parameters, $1 to $10 of `MOVE_MONEY` and `MOVE_MONEY_KEYED`.
pub(super) fn bind_movement<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    movement: &'q Movement,
    links: Links,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    query
        .bind(movement.from.get())
        .bind(movement.to.get())
        .bind(movement.amount.minor_units())
        .bind(movement.currency.code())
        .bind(movement.kind.as_str())
        .bind(movement.owner.as_ref().map(Username::as_str))
        .bind(links.hold.map(HoldId::get))
        .bind(movement.label.reference_str())
        .bind(movement.label.metadata_json())
        .bind(links.reverses.map(TransferId::get))
}

/// What a transfer names besides its accounts: the hold it captures, the transfer it reverses.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Links {
    pub hold: Option<HoldId>,
    pub reverses: Option<TransferId>,
}

/// The receipt of `MOVE_MONEY` (or of a replayed record, under the same column names), or the
/// refusal its verdict names.
pub(super) fn receipt_from_row(
    row: &PgRow,
    movement: &Movement,
) -> Result<TransferReceipt, StoreError> {
    let verdict = Verdict::parse(&row.try_get::<String, _>("status")?)?;
    let actual = match verdict.currency_column() {
        Some(column) => Some(decode(row, column, |s: String| s.parse())?),
        None => None,
    };
    if let Some(refusal) = verdict.refusal(movement, actual) {
        return Err(refusal);
    }
    let (from, to, amount, currency) = (
        movement.from,
        movement.to,
        movement.amount,
        movement.currency,
    );

    let transfer_id = decode(row, "transfer_id", TransferId::new)?;
    let created_at = row.try_get("transfer_created_at")?;
    let entry = |side: &str, account_id: AccountId, signed: i64| -> Result<Entry, StoreError> {
        Ok(Entry {
            id: decode(row, &format!("{side}_entry_id"), EntryId::new)?,
            account_id,
            transfer_id,
            amount: signed,
            balance_after: row.try_get(format!("{side}_entry_balance_after").as_str())?,
            created_at: row.try_get(format!("{side}_entry_created_at").as_str())?,
        })
    };
    let account = |side: &str, id: AccountId| -> Result<Account, StoreError> {
        Ok(Account {
            id,
            owner: decode(row, &format!("{side}_owner"), |s: String| {
                Username::parse(&s)
            })?,
            currency,
            balance: row.try_get(format!("{side}_balance").as_str())?,
            kind: decode(row, &format!("{side}_kind"), |s: String| {
                s.parse::<AccountKind>()
            })?,
            status: decode(row, &format!("{side}_status"), |s: String| s.parse())?,
            overdraft_limit: row.try_get(format!("{side}_overdraft_limit").as_str())?,
            held: row.try_get(format!("{side}_held").as_str())?,
            created_at: row.try_get(format!("{side}_created_at").as_str())?,
        })
    };
    Ok(TransferReceipt {
        transfer: Transfer {
            id: transfer_id,
            from_account_id: from,
            to_account_id: to,
            amount,
            currency,
            hold_id: decode(row, "transfer_hold_id", |id: Option<i64>| {
                id.map(HoldId::new).transpose()
            })?,
            label: movement.label.clone(),
            reverses: decode(row, "transfer_reverses", |id: Option<i64>| {
                id.map(TransferId::new).transpose()
            })?,
            created_at,
        },
        from_entry: entry("from", from, -amount.minor_units())?,
        to_entry: entry("to", to, amount.minor_units())?,
        from_account: account("from", from)?,
        to_account: account("to", to)?,
    })
}
