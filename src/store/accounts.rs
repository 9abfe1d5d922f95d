//! Accounts and their statements (the entries of one account).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::postgres::PgRow;

use super::idempotency::{KeyedOutcome, KeyedWrite, Recorded, TxError, in_own_task, retrying_tx};
use super::{Page, Store, StoreError, decode};
use crate::domain::{
    Account, AccountId, AccountKind, AccountStatus, Currency, Entry, EntryId, IdempotencyKey,
    PageSize, RequestFingerprint, TransferId, Username,
};

/// Accounts (`$1`), row-locked in ascending id order, with `held` read once the
/// locks are taken (see `MOVE_MONEY` for why through `account_held`).
pub(super) const LOCK_ACCOUNTS: &str = "WITH locked AS MATERIALIZED ( \
         SELECT id, owner, currency, balance, kind, status, overdraft_limit, holds_pending, \
                created_at \
         FROM accounts WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE) \
     SELECT *, CASE WHEN holds_pending > 0 THEN account_held(id) ELSE 0 END AS held \
     FROM locked";

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
    /// Every entry of `account` with `since <= created_at < until`, oldest first, as CSV
    /// chunks streamed from the database (`statement.rs`).
    fn statement_csv(
        &self,
        account: AccountId,
        currency: Currency,
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
    ) -> tokio::sync::mpsc::Receiver<Result<Vec<u8>, StoreError>>;
    /// The account's balance at `at`: the `balance_after` of its last entry at or before `at`
    /// (by `created_at`, then id), 0 before its first. One probe of `entries_account_time_idx`.
    async fn balance_at(&self, account: AccountId, at: DateTime<Utc>) -> Result<i64, StoreError>;
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
    /// Either change under an idempotency key: done once per (`caller`, `key`), and answered
    /// the same way again (a refusal too; the account as it stands now on success).
    async fn control_account_once(
        &self,
        control: &AccountControl,
        caller: &Username,
        key: &IdempotencyKey,
    ) -> Result<KeyedOutcome<Account>, StoreError>;
}

/// A banker's change of a customer account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountControl {
    Status {
        id: AccountId,
        status: AccountStatus,
        reason: Option<String>,
    },
    OverdraftLimit {
        id: AccountId,
        limit: i64,
    },
}

impl AccountControl {
    fn id(&self) -> AccountId {
        match self {
            AccountControl::Status { id, .. } | AccountControl::OverdraftLimit { id, .. } => *id,
        }
    }

    /// Whether `current` already is as this change would leave it: then it changes nothing.
    fn unchanged(&self, current: &Account) -> bool {
        match self {
            AccountControl::Status { status, .. } => current.status == *status,
            AccountControl::OverdraftLimit { limit, .. } => current.overdraft_limit == *limit,
        }
    }

    fn update(&self) -> sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments> {
        match self {
            AccountControl::Status { id, status, reason } => sqlx::query(concat!(
                "UPDATE accounts SET status = $2, status_reason = $3, \
                     closed_at = CASE WHEN $2 = 'closed' THEN clock_timestamp() END \
                 WHERE id = $1 RETURNING ",
                account_columns!()
            ))
            .bind(id.get())
            .bind(status.as_str())
            .bind(reason.as_deref()),
            AccountControl::OverdraftLimit { id, limit } => sqlx::query(concat!(
                "UPDATE accounts SET overdraft_limit = $2 WHERE id = $1 RETURNING ",
                account_columns!()
            ))
            .bind(id.get())
            .bind(*limit),
        }
    }

    /// The refusal a violated constraint stands for.
    fn refusal(&self, constraint: &str) -> Option<StoreError> {
        let id = self.id();
        match constraint {
            "accounts_closed_empty" => Some(StoreError::AccountNotEmpty(id)),
            "accounts_closed_without_holds" => Some(StoreError::PendingHolds(id)),
            "accounts_balance_within_limit" => Some(StoreError::LimitBelowDebt(id)),
            _ => None,
        }
    }
}

impl KeyedWrite for AccountControl {
    type Answer = Account;

    fn kind(&self) -> &'static str {
        match self {
            AccountControl::Status { .. } => "status",
            AccountControl::OverdraftLimit { .. } => "overdraft_limit",
        }
    }

    fn fingerprint(&self) -> RequestFingerprint {
        match self {
            AccountControl::Status { id, status, reason } => RequestFingerprint::of(
                self.kind(),
                &[
                    &id.to_string(),
                    status.as_str(),
                    reason.as_deref().unwrap_or(""),
                ],
            ),
            AccountControl::OverdraftLimit { id, limit } => {
                RequestFingerprint::of(self.kind(), &[&id.to_string(), &limit.to_string()])
            }
        }
    }

    fn run<'a>(
        &'a self,
        tx: &'a mut sqlx::PgConnection,
    ) -> impl Future<Output = Result<Result<Account, StoreError>, TxError>> + Send + 'a {
        control_in(tx, self)
    }

    fn outcome(answer: &Account) -> Recorded {
        Recorded::account(answer.id)
    }

    async fn replay(&self, tx: &mut sqlx::PgConnection, _row: &PgRow) -> Result<Account, TxError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            account_columns!(),
            " FROM accounts WHERE id = $1"
        ))
        .bind(self.id().get())
        .fetch_one(&mut *tx)
        .await?;
        // As first answered: the status or limit it set (a success means it was set), the
        // rest as it stands now.
        let now = account_from_row(&row)?;
        Ok(match self {
            AccountControl::Status { status, .. } => Account {
                status: *status,
                ..now
            },
            AccountControl::OverdraftLimit { limit, .. } => Account {
                overdraft_limit: *limit,
                ..now
            },
        })
    }
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

    fn statement_csv(
        &self,
        account: AccountId,
        currency: Currency,
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
    ) -> tokio::sync::mpsc::Receiver<Result<Vec<u8>, StoreError>> {
        Store::statement_csv(self, account, currency, since, until)
    }

    async fn balance_at(&self, account: AccountId, at: DateTime<Utc>) -> Result<i64, StoreError> {
        let balance: Option<i64> = sqlx::query_scalar(
            "SELECT balance_after FROM entries WHERE account_id = $1 AND created_at <= $2 \
             ORDER BY created_at DESC, id DESC LIMIT 1",
        )
        .bind(account.get())
        .bind(at)
        .fetch_optional(&self.pool)
        .await?;
        Ok(balance.unwrap_or(0))
    }

    async fn set_account_status(
        &self,
        id: AccountId,
        status: AccountStatus,
        reason: Option<String>,
    ) -> Result<Account, StoreError> {
        self.control_account(&AccountControl::Status { id, status, reason })
            .await
    }

    async fn set_overdraft_limit(&self, id: AccountId, limit: i64) -> Result<Account, StoreError> {
        self.control_account(&AccountControl::OverdraftLimit { id, limit })
            .await
    }

    async fn control_account_once(
        &self,
        control: &AccountControl,
        caller: &Username,
        key: &IdempotencyKey,
    ) -> Result<KeyedOutcome<Account>, StoreError> {
        self.before_control(control).await?;
        let (store, control, caller, key) =
            (self.clone(), control.clone(), caller.clone(), key.clone());
        in_own_task("account control", async move {
            store.write_once(&control, &caller, &key).await
        })
        .await
    }
}

impl Store {
    async fn control_account(&self, control: &AccountControl) -> Result<Account, StoreError> {
        self.before_control(control).await?;
        retrying_tx(|| async {
            let mut tx = self.pool.begin().await?;
            let done = control_in(&mut tx, control).await;
            match &done {
                Ok(Ok(_)) => tx.commit().await?,
                _ => tx.rollback().await?,
            }
            done
        })
        .await?
    }

    /// Before closing: holds past their expiry no longer count but are still marked pending;
    /// mark them (in their own transactions, in the holds' lock order), so only a live hold
    /// stands in the way (`accounts_closed_without_holds`).
    async fn before_control(&self, control: &AccountControl) -> Result<(), StoreError> {
        if let AccountControl::Status {
            id,
            status: AccountStatus::Closed,
            ..
        } = control
        {
            while self.expire_holds(500, Some(*id)).await? > 0 {}
        }
        Ok(())
    }
}

/// A banker's change of one customer account inside `tx`, under its row lock (so a debit is
/// ordered before or after it, never beside it). Nothing changes when the account already is as
/// asked; a closed account refuses any change; a violated constraint is the refusal it stands
/// for. The changed account must still cover its holds (`held <= balance + overdraft_limit`,
/// which no constraint can hold: `held` depends on the clock), `LimitBelowDebt` otherwise —
/// the caller then rolls back.
async fn control_in(
    tx: &mut sqlx::PgConnection,
    control: &AccountControl,
) -> Result<Result<Account, StoreError>, TxError> {
    let id = control.id();
    let current = match lock_customer_account(tx, id).await {
        Ok(account) => account,
        Err(refused @ (StoreError::AccountNotFound(_) | StoreError::NotCustomerAccount(_))) => {
            return Ok(Err(refused));
        }
        Err(other) => return Err(other.into()),
    };
    if control.unchanged(&current) {
        return Ok(Ok(current));
    }
    if current.status == AccountStatus::Closed {
        return Ok(Err(StoreError::AccountClosed(id)));
    }
    // A statement after the lock: its snapshot, and so `held`, is current.
    let changed = match control.update().fetch_one(&mut *tx).await {
        Ok(row) => account_from_row(&row)?,
        Err(err) => {
            let refusal = match &err {
                sqlx::Error::Database(db) => db.constraint().and_then(|c| control.refusal(c)),
                _ => None,
            };
            return match refusal {
                Some(refused) => Ok(Err(refused)),
                None => Err(err.into()),
            };
        }
    };
    if i128::from(changed.held) > i128::from(changed.balance) + i128::from(changed.overdraft_limit)
    {
        return Ok(Err(StoreError::LimitBelowDebt(id)));
    }
    Ok(Ok(changed))
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
