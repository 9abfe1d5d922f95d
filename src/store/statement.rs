//! An account's statement as CSV (SPEC §6), streamed page by page: memory stays flat however
//! long the range, and the export holds a database connection only while it reads a page —
//! never while it waits for its client (SPEC §10).

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::Row;
use tokio::sync::mpsc;

use super::{Store, StoreError};
use crate::domain::{AccountId, Currency};

/// The header row; each later row is one entry, oldest first.
pub const STATEMENT_HEADER: &str = "entry_id,created_at,transfer_id,amount,amount_decimal,\
     balance_after,balance_after_decimal,currency,reference\n";

/// Entries read per query. Each page is read whole and the connection given back before any of
/// it is sent: a client that stops reading holds no cursor and no connection.
const PAGE: i64 = 1000;
/// Rows are sent in chunks of about this many bytes.
const CHUNK: usize = 32 * 1024;
/// Chunks in flight between the reader and a slow client: with `CHUNK`, what one export may
/// buffer beyond the socket's own buffers.
const CHUNKS_IN_FLIGHT: usize = 4;
/// A client that takes nothing for this long is not waited on any longer: its export ends.
pub const UNREAD_TIMEOUT: Duration = Duration::from_secs(30);

impl Store {
    /// Every entry of `account` with `since <= created_at < until`, oldest first, as CSV
    /// chunks (the header first). A task reads page after page (keyset on the entry id, which
    /// grows in commit order for one account) and sends the chunks; it stops when the receiver
    /// is dropped (the client went away), when the client has taken nothing for
    /// `UNREAD_TIMEOUT`, or on a database error, which ends the stream with that error.
    pub(super) fn statement_csv(
        &self,
        account: AccountId,
        currency: Currency,
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
    ) -> mpsc::Receiver<Result<Vec<u8>, StoreError>> {
        let (tx, rx) = mpsc::channel(CHUNKS_IN_FLIGHT);
        let pool = self.pool.clone();
        tokio::spawn(async move {
            let send = |chunk| {
                let tx = tx.clone();
                async move {
                    match tokio::time::timeout(UNREAD_TIMEOUT, tx.send(chunk)).await {
                        Ok(Ok(())) => true,
                        Ok(Err(_)) => false, // the client went away
                        Err(_) => {
                            tracing::info!(%account, "statement export unread for 30 s; ended");
                            false
                        }
                    }
                }
            };
            let mut chunk = Vec::with_capacity(CHUNK + 512);
            chunk.extend_from_slice(STATEMENT_HEADER.as_bytes());
            let mut after = 0_i64;
            loop {
                let rows = sqlx::query(
                    "SELECT e.id, e.created_at, e.transfer_id, e.amount, e.balance_after, \
                            t.reference \
                     FROM entries e JOIN transfers t ON t.id = e.transfer_id \
                     WHERE e.account_id = $1 AND e.id > $4 \
                       AND ($2::timestamptz IS NULL OR e.created_at >= $2) \
                       AND ($3::timestamptz IS NULL OR e.created_at < $3) \
                     ORDER BY e.id LIMIT $5",
                )
                .bind(account.get())
                .bind(since)
                .bind(until)
                .bind(after)
                .bind(PAGE)
                .fetch_all(&pool)
                .await;
                let rows = match rows {
                    Ok(rows) => rows,
                    Err(err) => {
                        let _ = send(Err(StoreError::from(err))).await;
                        return;
                    }
                };
                let last_page = (rows.len() as i64) < PAGE;
                for row in &rows {
                    match csv_line(row, currency) {
                        Ok((id, line)) => {
                            after = id;
                            chunk.extend_from_slice(line.as_bytes());
                        }
                        Err(err) => {
                            let _ = send(Err(StoreError::from(err))).await;
                            return;
                        }
                    }
                    if chunk.len() >= CHUNK {
                        let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK + 512));
                        if !send(Ok(full)).await {
                            return;
                        }
                    }
                }
                if last_page {
                    break;
                }
            }
            let _ = send(Ok(chunk)).await;
        });
        rx
    }
}

/// The entry's id and its CSV line.
fn csv_line(row: &sqlx::postgres::PgRow, currency: Currency) -> Result<(i64, String), sqlx::Error> {
    let id: i64 = row.try_get("id")?;
    let created_at: DateTime<Utc> = row.try_get("created_at")?;
    let amount: i64 = row.try_get("amount")?;
    let balance: i64 = row.try_get("balance_after")?;
    let reference: Option<String> = row.try_get("reference")?;
    let line = format!(
        "{},{},{},{},{},{},{},{},{}\n",
        id,
        created_at.to_rfc3339_opts(SecondsFormat::Micros, true),
        row.try_get::<i64, _>("transfer_id")?,
        amount,
        decimal(amount, currency.exponent()),
        balance,
        decimal(balance, currency.exponent()),
        currency.code(),
        reference.as_deref().map(csv_text).unwrap_or_default(),
    );
    Ok((id, line))
}

/// Minor units as a decimal string in the currency's minor unit: 12345 cents is `123.45`,
/// -5 is `-0.05`, 700 yen is `700`.
pub fn decimal(minor: i64, exponent: u8) -> String {
    if exponent == 0 {
        return minor.to_string();
    }
    let sign = if minor < 0 { "-" } else { "" };
    let digits = minor.unsigned_abs().to_string();
    let exponent = usize::from(exponent);
    let padded = format!("{digits:0>width$}", width = exponent + 1);
    let (whole, fraction) = padded.split_at(padded.len() - exponent);
    format!("{sign}{whole}.{fraction}")
}

/// A client's text as one CSV field: quoted when it holds a comma or a quote, and never read by
/// a spreadsheet as a formula (a leading `=`, `+`, `-` or `@` gets a `'`).
fn csv_text(text: &str) -> String {
    let text = if text.starts_with(['=', '+', '-', '@']) {
        format!("'{text}")
    } else {
        text.to_owned()
    };
    if text.contains([',', '"']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_follow_the_currency_exponent() {
        assert_eq!(decimal(12_345, 2), "123.45");
        assert_eq!(decimal(-5, 2), "-0.05");
        assert_eq!(decimal(0, 2), "0.00");
        assert_eq!(decimal(700, 0), "700");
        assert_eq!(decimal(i64::MIN, 2), "-92233720368547758.08");
    }

    #[test]
    fn client_text_never_breaks_a_row_or_becomes_a_formula() {
        assert_eq!(csv_text("INV-2291"), "INV-2291");
        assert_eq!(csv_text("a,b"), "\"a,b\"");
        assert_eq!(csv_text("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_text("=1+1"), "'=1+1");
        assert_eq!(csv_text("-2,3"), "\"'-2,3\"");
    }
}
