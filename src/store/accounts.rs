//! Accounts and their statements (the entries of one account).

use async_trait::async_trait;
use sqlx::Row;
use sqlx::postgres::PgRow;

use super::holds::HoldStore;
use super::{Page, Store, StoreError, decode};
use crate::domain::{
    Account, AccountId, AccountKind, AccountStatus, Currency, Entry, EntryId, PageSize, TransferId,
    Username,
};

/// The column list every query of this table returns (a macro so queries stay `&'static str`),
/// with `held` as of the statement's snapshot. `holds_pending` (the payer's holds still marked
/// pending) is 0 for most accounts and spares them the subquery.
///
/// Only for statements that take no lock or run after their transaction took it: a statement
/// that waits for a row lock keeps its older snapshot for subqueries, and must read `held`
/// through `account_held` instead (see the holds migration and `MOVE_MONEY`).
macro_rules! account_columns {
    () => {
        "id, owner, currency, balance, kind, status, overdraft_limit, created_at, \
         CASE WHEN holds_pending > 0 THEN \
             (SELECT COALESCE(sum(h.amount), 0)::bigint FROM holds h \
              WHERE h.from_account_id = accounts.id AND h.status = 'pending' \
                AND h.expires_at > now()) \
         ELSE 0 END AS held"
    };
}
pub(super) use account_columns;

/// The column list every query of `entries` returns (a macro so queries stay `&'static str`).
macro_rules! entry_columns {
    () => {
        "id, account_id, transfer_id, amount, balance_after, created_at"
    };
}

/// Accounts and their statements, as the service sees them.
#[cfg_attr(test, mockall::automock)]
#[async_trait]
pub trait AccountStore: Send + Sync {
    /// Opens a customer account with a zero balance. Fails with
    /// `AlreadyExists(AccountCurrency)` if the owner has one in that currency already, and with
    /// `NotFound(User)` if the owner does not exist.
    async fn create_account(
        &self,
        owner: &Username,
        currency: Currency,
    ) -> Result<Account, StoreError>;
    async fn get_account(&self, id: AccountId) -> Result<Account, StoreError>;
    /// Accounts in ascending id order (oldest first), one page after the key `after`.
    /// `owner: None` lists every account (for bankers).
    ///
    /// Keyset, not offset: a page costs the same however deep it is, and rows created meanwhile
    /// never shift a row onto two pages.
    async fn list_accounts(
        &self,
        owner: Option<Username>,
        after: Option<AccountId>,
        size: PageSize,
    ) -> Result<Page<Account, AccountId>, StoreError>;
    /// The statement of one account, newest entry first, one page before the key `before`.
    ///
    /// Entries of one account are written under that account's row lock, so their ids grow in
    /// commit order: a page read while transfers commit never skips or repeats an older entry.
    /// Served by the `entries_account_id_idx (account_id, id)` index, scanned backwards.
    async fn list_entries(
        &self,
        account: AccountId,
        before: Option<EntryId>,
        size: PageSize,
    ) -> Result<Page<Entry, EntryId>, StoreError>;
    /// A banker's change of a customer account's status, with the reason kept beside it.
    /// Refused for a settlement account (`NotCustomerAccount`), for a closed one
    /// (`AccountClosed`: closing is final) and, when closing, for one that holds money
    /// (`AccountNotEmpty`). Setting the status it already has changes nothing.
    async fn set_account_status(
        &self,
        id: AccountId,
        status: AccountStatus,
        reason: Option<String>,
    ) -> Result<Account, StoreError>;
    /// A banker's overdraft limit: how far below zero the balance may go. Refused below the
    /// account's current debt (`LimitBelowDebt`), for a settlement or a closed account.
    async fn set_overdraft_limit(&self, id: AccountId, limit: i64) -> Result<Account, StoreError>;
}

#[async_trait]
impl AccountStore for Store {
    async fn create_account(
        &self,
        owner: &Username,
        currency: Currency,
    ) -> Result<Account, StoreError> {
        let row = sqlx::query(concat!(
            "INSERT INTO accounts (owner, currency) VALUES ($1, $2) RETURNING ",
            account_columns!()
        ))
        .bind(owner.as_str())
        .bind(currency.code())
        .fetch_one(&self.pool)
        .await?;
        account_from_row(&row)
    }
    async fn get_account(&self, id: AccountId) -> Result<Account, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            account_columns!(),
            " FROM accounts WHERE id = $1"
        ))
        .bind(id.get())
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::AccountNotFound(id))?;
        account_from_row(&row)
    }
    async fn list_accounts(
        &self,
        owner: Option<Username>,
        after: Option<AccountId>,
        size: PageSize,
    ) -> Result<Page<Account, AccountId>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            account_columns!(),
            " FROM accounts \
             WHERE ($1::text IS NULL OR owner = $1) AND id > $2 \
             ORDER BY id LIMIT $3"
        ))
        .bind(owner.as_ref().map(Username::as_str))
        .bind(after.map_or(0, AccountId::get))
        .bind(size.get() + 1)
        .fetch_all(&self.pool)
        .await?;
        let accounts = rows
            .iter()
            .map(account_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_overfetch(accounts, size.get(), |a| a.id))
    }
    async fn list_entries(
        &self,
        account: AccountId,
        before: Option<EntryId>,
        size: PageSize,
    ) -> Result<Page<Entry, EntryId>, StoreError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            entry_columns!(),
            " FROM entries \
             WHERE account_id = $1 AND id < $2 \
             ORDER BY id DESC LIMIT $3"
        ))
        .bind(account.get())
        .bind(before.map_or(i64::MAX, EntryId::get))
        .bind(size.get() + 1)
        .fetch_all(&self.pool)
        .await?;
        let entries = rows
            .iter()
            .map(entry_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Page::from_overfetch(entries, size.get(), |e| e.id))
    }

    async fn set_account_status(
        &self,
        id: AccountId,
        status: AccountStatus,
        reason: Option<String>,
    ) -> Result<Account, StoreError> {
        if status == AccountStatus::Closed {
            // Holds past their expiry no longer count but are still marked pending; mark them
            // first, so only a live hold stands in the way (`accounts_closed_without_holds`).
            while self.expire_due_holds(500, Some(id)).await? > 0 {}
        }
        let update = sqlx::query(concat!(
            "UPDATE accounts SET status = $2, status_reason = $3, \
                 closed_at = CASE WHEN $2 = 'closed' THEN clock_timestamp() END \
             WHERE id = $1 RETURNING ",
            account_columns!()
        ))
        .bind(id.get())
        .bind(status.as_str())
        .bind(reason);
        // Setting the status it has changes nothing, closed included.
        let unchanged = |current: &Account| current.status == status;
        // The lock keeps the balance and the holds as checked.
        self.change_customer_account(id, unchanged, update, |violated| match violated {
            "accounts_closed_empty" => Some(StoreError::AccountNotEmpty(id)),
            "accounts_closed_without_holds" => Some(StoreError::PendingHolds(id)),
            _ => None,
        })
        .await
    }

    async fn set_overdraft_limit(&self, id: AccountId, limit: i64) -> Result<Account, StoreError> {
        let update = sqlx::query(concat!(
            "UPDATE accounts SET overdraft_limit = $2 WHERE id = $1 RETURNING ",
            account_columns!()
        ))
        .bind(id.get())
        .bind(limit);
        self.change_customer_account(
            id,
            |current| current.overdraft_limit == limit,
            update,
            |violated| {
                (violated == "accounts_balance_within_limit")
                    .then_some(StoreError::LimitBelowDebt(id))
            },
        )
        .await
    }
}

impl Store {
    /// A banker's change of one customer account, under its row lock (so a debit is ordered
    /// before or after it, never beside it): `update` runs unless `unchanged` says it would
    /// change nothing; a closed account refuses any change; `refusal` names the refusal of a
    /// violated constraint. The changed account must still cover its holds
    /// (`held <= balance + overdraft_limit`, which no constraint can hold: `held` depends on the
    /// clock); `LimitBelowDebt` otherwise.
    async fn change_customer_account(
        &self,
        id: AccountId,
        unchanged: impl FnOnce(&Account) -> bool,
        update: sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
        refusal: impl FnOnce(&str) -> Option<StoreError>,
    ) -> Result<Account, StoreError> {
        let mut tx = self.pool.begin().await?;
        let current = lock_customer_account(&mut tx, id).await?;
        let same = unchanged(&current);
        if same || current.status == AccountStatus::Closed {
            tx.rollback().await?;
            return if same {
                Ok(current)
            } else {
                Err(StoreError::AccountClosed(id))
            };
        }
        // A statement after the lock: its snapshot, and so `held`, is current.
        let changed = update
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| match StoreError::from(e) {
                StoreError::ConstraintViolated(c) => {
                    refusal(&c).unwrap_or(StoreError::ConstraintViolated(c))
                }
                other => other,
            })?;
        let changed = account_from_row(&changed)?;
        if i128::from(changed.held)
            > i128::from(changed.balance) + i128::from(changed.overdraft_limit)
        {
            tx.rollback().await?;
            return Err(StoreError::LimitBelowDebt(id));
        }
        tx.commit().await?;
        Ok(changed)
    }
}

/// The account, row-locked for the rest of `tx`, if it is a customer's.
async fn lock_customer_account(
    tx: &mut sqlx::PgConnection,
    id: AccountId,
) -> Result<Account, StoreError> {
    let row = sqlx::query(concat!(
        "SELECT ",
        account_columns!(),
        " FROM accounts WHERE id = $1 FOR NO KEY UPDATE"
    ))
    .bind(id.get())
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(StoreError::AccountNotFound(id))?;
    let account = account_from_row(&row)?;
    if account.kind != AccountKind::Customer {
        return Err(StoreError::NotCustomerAccount(id));
    }
    Ok(account)
}

pub(super) fn account_from_row(row: &PgRow) -> Result<Account, StoreError> {
    Ok(Account {
        id: decode(row, "id", AccountId::new)?,
        owner: decode(row, "owner", |s: String| Username::parse(&s))?,
        currency: decode(row, "currency", |s: String| s.parse())?,
        balance: row.try_get("balance")?,
        kind: decode(row, "kind", |s: String| s.parse())?,
        status: decode(row, "status", |s: String| s.parse())?,
        overdraft_limit: row.try_get("overdraft_limit")?,
        held: row.try_get("held")?,
        created_at: row.try_get("created_at")?,
    })
}

pub(super) fn entry_from_row(row: &PgRow) -> Result<Entry, StoreError> {
    Ok(Entry {
        id: decode(row, "id", EntryId::new)?,
        account_id: decode(row, "account_id", AccountId::new)?,
        transfer_id: decode(row, "transfer_id", TransferId::new)?,
        amount: row.try_get("amount")?,
        balance_after: row.try_get("balance_after")?,
        created_at: row.try_get("created_at")?,
    })
}
