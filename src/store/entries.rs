//! Account statements: the entries of one account.

use sqlx::Row;
use sqlx::postgres::PgRow;

use super::{Page, Store, StoreError, decode};
use crate::domain::{AccountId, Entry, EntryId, PageSize, TransferId};

/// The column list every query of this table returns (a macro so queries stay `&'static str`).
macro_rules! entry_columns {
    () => {
        "id, account_id, transfer_id, amount, balance_after, created_at"
    };
}

impl Store {
    /// The statement of one account, newest entry first, one page before the key `before`.
    ///
    /// Entries of one account are written under that account's row lock, so their ids grow in
    /// commit order: a page read while transfers commit never skips or repeats an older entry.
    /// Served by the `entries_account_id_idx (account_id, id)` index, scanned backwards.
    pub async fn list_entries(
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
