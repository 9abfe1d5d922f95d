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

/// The whole movement in **one call, so one round trip**: the database function `move_money`
/// (migration `20261204000001_money_functions`, where its statement and the reasons for its shape
/// are) locks both accounts in ascending id order, applies every rule under the locks and, only
/// if the verdict is `ok`, writes the transfer, its two entries and both balances. Sent in
/// autocommit mode it is its own transaction, and sqlx sends it as a cached prepared statement
/// (Bind/Execute/Sync in one write). Group commit's batches call `move_money_batch`, which runs
/// this same function for each movement: one text of the rules for both paths.
///
/// The one row returned is the verdict, and what was written when it was `ok`.
/// `accounts_balance_within_limit` and `accounts_closed_empty` back the verdict up inside the
/// database.
pub(super) const MOVE_MONEY: &str =
    "SELECT * FROM move_money($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";

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
        self.move_money(Movement {
            from: cmd.from(),
            to: cmd.to(),
            amount: cmd.amount(),
            currency: cmd.currency(),
            kind: MovementKind::Transfer,
            owner,
            label: cmd.label().clone(),
        })
        .await
    }
    async fn deposit(
        &self,
        account: AccountId,
        amount: Amount,
        currency: Currency,
        label: Label,
    ) -> Result<TransferReceipt, StoreError> {
        self.move_money(Movement {
            from: self.settlement_account(currency).await?,
            to: account,
            amount,
            currency,
            kind: MovementKind::Deposit,
            owner: None,
            label,
        })
        .await
    }
    async fn withdraw(
        &self,
        account: AccountId,
        amount: Amount,
        currency: Currency,
        label: Label,
    ) -> Result<TransferReceipt, StoreError> {
        self.move_money(Movement {
            from: account,
            to: self.settlement_account(currency).await?,
            amount,
            currency,
            kind: MovementKind::Withdrawal,
            owner: None,
            label,
        })
        .await
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
    sqlx::query(MOVE_MONEY)
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
