//! An account's statement as CSV (SPEC §6), streamed: rows go from PostgreSQL to the client as
//! they come, through a bounded channel, so memory stays flat however long the range.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::Row;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;

use super::{Store, StoreError};
use crate::domain::{AccountId, Currency};

/// The header row; each later row is one entry, oldest first.
pub const STATEMENT_HEADER: &str = "entry_id,created_at,transfer_id,amount,amount_decimal,\
     balance_after,balance_after_decimal,currency,reference\n";

/// Rows are sent in chunks of about this many bytes.
const CHUNK: usize = 32 * 1024;
/// Chunks in flight between the database and a slow client: with `CHUNK`, what one export may
/// buffer beyond the socket's own buffers.
const CHUNKS_IN_FLIGHT: usize = 4;
/// An export that has not finished after this ends (its connection goes back to the pool).
const EXPORT_DEADLINE: Duration = Duration::from_secs(600);

impl Store {
    /// Every entry of `account` with `since <= created_at < until`, oldest first, as CSV
    /// chunks (the header first). A task reads the rows and sends the chunks; it stops when the
    /// receiver is dropped (the client went away), at `EXPORT_DEADLINE`, or on a database
    /// error, which ends the stream with that error.
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
            let export = async {
                let mut rows = sqlx::query(
                    "SELECT e.id, e.created_at, e.transfer_id, e.amount, e.balance_after, \
                            t.reference \
                     FROM entries e JOIN transfers t ON t.id = e.transfer_id \
                     WHERE e.account_id = $1 \
                       AND ($2::timestamptz IS NULL OR e.created_at >= $2) \
                       AND ($3::timestamptz IS NULL OR e.created_at < $3) \
                     ORDER BY e.id",
                )
                .bind(account.get())
                .bind(since)
                .bind(until)
                .fetch(&pool);
                let mut chunk = Vec::with_capacity(CHUNK + 512);
                chunk.extend_from_slice(STATEMENT_HEADER.as_bytes());
                while let Some(row) = rows.next().await {
                    let line = row
                        .map_err(StoreError::from)
                        .and_then(|row| csv_line(&row, currency).map_err(StoreError::from));
                    match line {
                        Ok(line) => chunk.extend_from_slice(line.as_bytes()),
                        Err(err) => {
                            let _ = tx.send(Err(err)).await;
                            return;
                        }
                    }
                    if chunk.len() >= CHUNK {
                        let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK + 512));
                        if tx.send(Ok(full)).await.is_err() {
                            return; // the client went away
                        }
                    }
                }
                let _ = tx.send(Ok(chunk)).await;
            };
            if tokio::time::timeout(EXPORT_DEADLINE, export).await.is_err() {
                tracing::warn!(%account, "statement export ran past its deadline; ended");
            }
        });
        rx
    }
}

fn csv_line(row: &sqlx::postgres::PgRow, currency: Currency) -> Result<String, sqlx::Error> {
    let created_at: DateTime<Utc> = row.try_get("created_at")?;
    let amount: i64 = row.try_get("amount")?;
    let balance: i64 = row.try_get("balance_after")?;
    let reference: Option<String> = row.try_get("reference")?;
    Ok(format!(
        "{},{},{},{},{},{},{},{},{}\n",
        row.try_get::<i64, _>("id")?,
        created_at.to_rfc3339_opts(SecondsFormat::Micros, true),
        row.try_get::<i64, _>("transfer_id")?,
        amount,
        decimal(amount, currency.exponent()),
        balance,
        decimal(balance, currency.exponent()),
        currency.code(),
        reference.as_deref().map(csv_text).unwrap_or_default(),
    ))
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
