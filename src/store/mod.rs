//! All SQL lives here. Nothing above this module writes a query; nothing in it knows HTTP or gRPC.
//!
//! Queries are runtime-checked (`query` + explicit decoding) and exercised against a real
//! PostgreSQL by `tests/store`; rows are parsed into domain types on the way out, so a value that
//! leaves the store is as trustworthy as one that came through an adapter.

use prometheus_client::metrics::counter::Counter;

mod account_gate;
mod accounts;
mod error;
mod events;
mod group_commit;
mod holds;
mod idempotency;
mod keyed_transfers;
mod reversals;
mod rules;
mod sessions;
mod statement;
mod transfers;
mod users;
mod verification;

use std::collections::HashMap;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::Row;
use sqlx::postgres::PgRow;
use tokio::sync::OnceCell;

use crate::domain::{AccountId, Currency, ValidationError};

/// The store's traits, for callers of `Store` outside the service: `use store::prelude::*`.
pub mod prelude {
    pub use super::{
        AccountStore, EventStore, HoldStore, IdempotentStore, ReversalStore, SessionStore,
        TransferStore, UserStore, WebhookStore,
    };
}

#[cfg(test)]
pub use accounts::MockAccountStore;
pub use accounts::{AccountControl, AccountStore};
pub use error::{Entity, StoreError, Unique, is_retired};
#[cfg(test)]
pub use events::MockWebhookStore;
pub use events::{
    AttemptOutcome, DeliveryAttempt, DueDelivery, Event, EventStore, FanOut, HorizonProbe,
    MAX_WEBHOOK_ENDPOINTS, NextStep, SigningSalts, WebhookEndpoint, WebhookStore,
};
/// The money path's statements as sent, for `make bench` to run them under pgbench.
pub use group_commit::MOVE_MONEY_BATCH;
pub use group_commit::{GroupCommitSettings, MAX_GROUP_COMMIT_WINDOW};
#[cfg(test)]
pub use holds::MockHoldStore;
pub use holds::{CapturedHold, HoldAnswer, HoldOp, HoldParties, HoldStore, PlacedHold};
pub use idempotency::KeyedOutcome;
pub use keyed_transfers::IdempotentStore;
#[cfg(test)]
pub use keyed_transfers::MockIdempotentStore;
#[cfg(test)]
pub use reversals::MockReversalStore;
pub use reversals::{Reversal, ReversalStore};
pub use rules::{Movement, MovementKind};
#[cfg(test)]
pub use sessions::MockSessionStore;
pub use sessions::{NewSession, SessionStore};
pub use statement::{STATEMENT_HEADER, decimal};
pub use transfers::MOVE_MONEY;
#[cfg(test)]
pub use transfers::MockTransferStore;
pub use transfers::MoneyMove;
pub use transfers::{Direction, TransferFilter, TransferStore};
#[cfg(test)]
pub use users::MockUserStore;
pub use users::UserStore;

/// The migrations of `migrations/`, embedded in the binary at compile time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The username of the bank itself, owner of the settlement accounts (created by a migration).
pub const BANK_USERNAME: &str = "simplebank";

/// How many times a transaction that hit a deadlock or serialization failure is tried in all.
const MAX_ATTEMPTS: u32 = 5;

/// A handle on the database: cheap to clone (the pool is reference-counted).
#[derive(Clone, Debug)]
pub struct Store {
    pool: PgPool,
    /// Settlement account per currency. They are created by the first migration and never change,
    /// so they are read once instead of once per deposit or withdrawal.
    settlement: std::sync::Arc<OnceCell<HashMap<Currency, AccountId>>>,
    /// Set by `with_group_commit`: unkeyed money movements then queue for a shared transaction.
    group_commit: Option<std::sync::Arc<group_commit::GroupCommit>>,
    /// Each customer account's share of the pool, for single-movement transactions.
    gate: std::sync::Arc<account_gate::AccountGate>,
    /// How many database calls the unkeyed money paths made (shared by clones).
    calls: MoneyCalls,
}

/// Database calls of the unkeyed money paths, one round trip each (`/metrics`, and `make bench`'s
/// round trips per transfer). Counted per attempt, retries included.
#[derive(Debug, Clone, Default)]
pub struct MoneyCalls {
    /// `MOVE_MONEY` statements for one movement (group commit off, a lone request, a fall-back, a
    /// keyed request).
    pub single: Counter,
    /// `move_money_batch` calls.
    pub batches: Counter,
    /// Movements those batch calls carried.
    pub batched: Counter,
}

/// One page of a keyset-paginated list. `next` is the key to continue after; `None` on the last
/// page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T, K> {
    pub items: Vec<T>,
    pub next: Option<K>,
}

impl<T, K> Page<T, K> {
    /// Builds a page from up to `size + 1` rows: the extra row only says that another page exists.
    fn from_overfetch(mut rows: Vec<T>, size: i64, key: impl Fn(&T) -> K) -> Self {
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        let next = if rows.len() > size {
            rows.truncate(size);
            rows.last().map(key)
        } else {
            None
        };
        Page { items: rows, next }
    }
}

impl Store {
    pub fn new(pool: PgPool) -> Self {
        let options = pool.options();
        let gate = account_gate::AccountGate::for_pool(
            options.get_max_connections(),
            options.get_acquire_timeout(),
        );
        Self {
            pool,
            settlement: Default::default(),
            group_commit: None,
            gate: std::sync::Arc::new(gate),
            calls: MoneyCalls::default(),
        }
    }

    /// The money paths' call counters, for `/metrics`.
    pub fn money_calls(&self) -> &MoneyCalls {
        &self.calls
    }

    /// This store with group commit on (see `group_commit/`): money movements without an
    /// idempotency key that arrive while others are in flight share one transaction. Starts a
    /// task on the current tokio runtime; it ends when the last clone of the store is dropped.
    pub fn with_group_commit(self, settings: GroupCommitSettings) -> Self {
        let single = Self {
            group_commit: None,
            ..self.clone()
        };
        Self {
            group_commit: Some(std::sync::Arc::new(group_commit::GroupCommit::start(
                single, settings,
            ))),
            ..self
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies every pending migration.
    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        MIGRATOR.run(&self.pool).await
    }

    /// Closes every pooled connection opened up to now as it is next taken (see
    /// `error::retire_connections`); the health checker calls it when the database comes back.
    pub fn retire_connections(&self) {
        error::retire_connections();
    }

    /// Whether the database answers and can take writes, for readiness checks. A server in
    /// recovery (a standby, or a leader being demoted) answers reads but refuses every write, so
    /// a replica connected to one must leave the load balancer's rotation: its connections are
    /// retired, and the next check connects afresh (through the address, to the new leader).
    pub async fn ping(&self) -> Result<(), StoreError> {
        // `transaction_read_only` too: a database set read-only for maintenance
        // (`default_transaction_read_only`) cannot take writes either.
        let read_only: bool = sqlx::query_scalar(
            "SELECT pg_is_in_recovery() OR current_setting('transaction_read_only') = 'on'",
        )
        .fetch_one(&self.pool)
        .await?;
        if read_only {
            error::retire_connections();
            return Err(StoreError::Unavailable(sqlx::Error::Protocol(
                "the database cannot take writes (a standby, or read-only)".into(),
            )));
        }
        Ok(())
    }

    async fn settlement_account(&self, currency: Currency) -> Result<AccountId, StoreError> {
        let accounts = self
            .settlement
            .get_or_try_init(|| async {
                let rows = sqlx::query(
                    "SELECT currency, id FROM accounts WHERE owner = $1 AND kind = 'settlement'",
                )
                .bind(BANK_USERNAME)
                .fetch_all(&self.pool)
                .await?;
                rows.iter()
                    .map(|row| {
                        Ok((
                            decode(row, "currency", |s: String| s.parse())?,
                            decode(row, "id", AccountId::new)?,
                        ))
                    })
                    .collect::<Result<HashMap<_, _>, StoreError>>()
            })
            .await?;
        accounts.get(&currency).copied().ok_or_else(|| {
            StoreError::ConstraintViolated(format!("no settlement account for {currency}"))
        })
    }
}

/// Runs `attempt` again after a deadlock or serialization failure, a bounded number of times with
/// a short growing pause, so that neither ever reaches a client.
///
/// Only for work that is one transaction (or one statement): a failed attempt has rolled back
/// completely, so trying again cannot apply anything twice.
async fn retrying<T, F, Fut>(attempt: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, sqlx::Error>>,
{
    retrying_when(error::is_retryable, attempt)
        .await
        .map_err(StoreError::from)
}

/// `retrying` for attempts with an error of their own: `conflicted` says which errors are a
/// deadlock or serialization failure of a transaction that rolled back completely.
async fn retrying_when<T, E, F, Fut>(
    conflicted: impl Fn(&E) -> bool,
    mut attempt: F,
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut tries = 0;
    loop {
        tries += 1;
        match attempt().await {
            Err(err) if conflicted(&err) && tries < MAX_ATTEMPTS => {
                tracing::debug!(tries, "transaction conflicted; retrying");
                tokio::time::sleep(Duration::from_millis(2u64 << tries)).await;
            }
            other => return other,
        }
    }
}

/// Reads a column and parses it into a domain type. A value the domain refuses means the database
/// holds something it should not; that is reported as a decode error, never passed on.
fn decode<'r, Raw, T, E>(
    row: &'r PgRow,
    column: &str,
    parse: impl FnOnce(Raw) -> Result<T, E>,
) -> Result<T, StoreError>
where
    Raw: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
    E: Into<ValidationError>,
{
    let raw: Raw = row.try_get(column)?;
    parse(raw).map_err(|e| {
        let e: ValidationError = e.into();
        StoreError::Internal(sqlx::Error::ColumnDecode {
            index: column.to_owned(),
            source: Box::new(e),
        })
    })
}

/// The two paths of a money movement, called directly: for the test that requires them to agree
/// (`tests/integration/store/rules_agree.rs`). Not for serving: these skip the checks `transfer`,
/// `deposit` and `withdraw` make first (two different accounts) and group commit's queue.
#[doc(hidden)]
pub mod paths {
    use super::rules::Movement;
    use super::{Store, StoreError};
    use crate::domain::TransferReceipt;

    /// `movements` as one group-commit batch: one transaction, judged in order.
    pub async fn as_one_batch(
        store: &Store,
        movements: &[Movement],
    ) -> Result<Vec<Result<TransferReceipt, StoreError>>, String> {
        let refs: Vec<&Movement> = movements.iter().collect();
        super::group_commit::apply_batch(store.pool(), &refs).await
    }

    /// One movement through the one-statement path (`MOVE_MONEY`), its own transaction.
    pub async fn alone(store: &Store, movement: &Movement) -> Result<TransferReceipt, StoreError> {
        store.move_money_alone(movement).await
    }
}
