//! Accounts.

use sqlx::Row;
use sqlx::postgres::PgRow;

use super::{Page, Store, StoreError, decode};
use crate::domain::{Account, AccountId, Currency, PageSize, Username};

/// The column list every query of this table returns (a macro so queries stay `&'static str`).
macro_rules! account_columns {
    () => {
        "id, owner, currency, balance, kind, created_at"
    };
}

impl Store {
    /// Opens a customer account with a zero balance. Fails with
    /// `AlreadyExists(AccountCurrency)` if the owner has one in that currency already, and with
    /// `NotFound(User)` if the owner does not exist.
    pub async fn create_account(
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

    pub async fn get_account(&self, id: AccountId) -> Result<Account, StoreError> {
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

    /// Accounts in ascending id order (oldest first), one page after the key `after`.
    /// `owner: None` lists every account (for bankers).
    ///
    /// Keyset, not offset: a page costs the same however deep it is, and rows created meanwhile
    /// never shift a row onto two pages.
    pub async fn list_accounts(
        &self,
        owner: Option<&Username>,
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
        .bind(owner.map(Username::as_str))
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
}

pub(super) fn account_from_row(row: &PgRow) -> Result<Account, StoreError> {
    Ok(Account {
        id: decode(row, "id", AccountId::new)?,
        owner: decode(row, "owner", |s: String| Username::parse(&s))?,
        currency: decode(row, "currency", |s: String| s.parse())?,
        balance: row.try_get("balance")?,
        kind: decode(row, "kind", |s: String| s.parse())?,
        created_at: row.try_get("created_at")?,
    })
}
