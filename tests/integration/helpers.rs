//! A fresh database per test, factories for users and funded accounts, and the ledger invariants.

use simplebank::store::prelude::*;
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use secrecy::SecretString;
use simplebank::config::DatabaseSettings;
use simplebank::domain::{
    Account, AccountId, Amount, Currency, Email, FullName, NewTransfer, NewUser, NewVerification,
    Role, User, Username, VerificationCode,
};
use simplebank::store::{MIGRATOR, Store};
use sqlx::postgres::PgConnectOptions;
use sqlx::{AssertSqlSafe, Connection, PgConnection, PgPool};

/// A database of its own for one test, migrated, dropped when the test passes. A failing test
/// keeps its database and prints its name, to be inspected with psql.
pub struct TestDb {
    pub store: Store,
    /// A `DB_SOURCE` for this database, for an `Application` under test.
    pub url: String,
    name: String,
    server: PgConnectOptions,
}

impl TestDb {
    pub async fn new() -> Self {
        Self::with_pool_size(5).await
    }

    pub async fn with_pool_size(max_connections: u32) -> Self {
        let db = Self::unmigrated(max_connections).await;
        MIGRATOR.run(db.pool()).await.expect("migrations apply");
        db
    }

    /// An empty database, for the migration tests.
    pub async fn unmigrated(max_connections: u32) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let url = std::env::var("DB_SOURCE")
            .expect("DB_SOURCE must name a PostgreSQL server (`make test` starts one and sets it)");
        let server = PgConnectOptions::from_str(&url).expect("DB_SOURCE is a PostgreSQL URL");
        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_micros();
        let name = format!(
            "sbtest_{}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed),
            stamp % 1_000_000_000
        );
        let mut admin = PgConnection::connect_with(&server)
            .await
            .expect("the PostgreSQL server of DB_SOURCE is reachable");
        sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("create the test database");
        admin.close().await.ok();

        // The production pool configuration, pointed at this test's database.
        let settings = DatabaseSettings {
            max_connections,
            acquire_timeout: Duration::from_secs(30),
            ..DatabaseSettings::new(SecretString::from(url.clone()))
        };
        let pool = settings
            .pool_options()
            .connect_with(server.clone().database(&name))
            .await
            .expect("connect to the test database");
        TestDb {
            store: Store::new(pool),
            url: with_database(&url, &name),
            name,
            server,
        }
    }

    pub fn pool(&self) -> &PgPool {
        self.store.pool()
    }
}

/// `url` with its database (the path) replaced by `name`, keeping credentials and parameters.
fn with_database(url: &str, name: &str) -> String {
    let scheme_end = url.find("://").map_or(0, |i| i + 3);
    let path_start = url[scheme_end..]
        .find('/')
        .map_or(url.len(), |i| scheme_end + i);
    let query = url[path_start..]
        .find('?')
        .map_or("", |i| &url[path_start + i..]);
    format!("{}/{name}{query}", &url[..path_start])
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test failed: keeping database {} for inspection", self.name);
            return;
        }
        // Drop cannot await, and the test's runtime may be single-threaded and busy with us:
        // drop the database from a thread with a runtime of its own. FORCE closes the pool's
        // remaining connections.
        let server = self.server.clone();
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            rt.block_on(async {
                if let Ok(mut admin) = PgConnection::connect_with(&server).await {
                    let _ = sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut admin).await;
                }
            });
        })
        .join()
        .ok();
    }
}

pub fn username(raw: &str) -> Username {
    Username::parse(raw).unwrap()
}

pub fn amount(minor_units: i64) -> Amount {
    Amount::new(minor_units).unwrap()
}

pub fn new_transfer(from: AccountId, to: AccountId, minor_units: i64, c: Currency) -> NewTransfer {
    NewTransfer::new(from, to, amount(minor_units), c).unwrap()
}

pub async fn create_user(store: &Store, name: &str) -> User {
    store
        .create_user(
            &NewUser {
                username: username(name),
                hashed_password: SecretString::from(
                    "$argon2id$v=19$m=19456,t=2,p=1$not-a-real-hash",
                ),
                full_name: FullName::parse(&format!("{name} Example")).unwrap(),
                email: Email::parse(&format!("{name}@example.com")).unwrap(),
                role: Role::Depositor,
            },
            &verification(),
        )
        .await
        .expect("create user")
}

/// A 15-minute email verification with a fresh code, as the service starts one.
pub fn verification() -> NewVerification {
    NewVerification {
        code: VerificationCode::generate(),
        valid_for: Duration::from_secs(15 * 60),
    }
}

/// A new user with one account in `currency`, funded by a deposit of `balance` (if non-zero).
pub async fn funded_account(
    store: &Store,
    owner: &str,
    currency: Currency,
    balance: i64,
) -> Account {
    create_user(store, owner).await;
    let account = store
        .create_account(&username(owner), currency)
        .await
        .expect("create account");
    if balance > 0 {
        store
            .deposit(
                account.id,
                amount(balance),
                currency,
                simplebank::domain::Label::default(),
            )
            .await
            .expect("deposit")
            .to_account
    } else {
        account
    }
}

/// Waits (up to 5 s) until `n` sessions of this database are blocked on a row lock: the
/// deterministic way to know that a request has reached the point where it waits.
pub async fn wait_for_lock_waiters(pool: &PgPool, n: i64) {
    wait_for_lock_waiters_where(pool, |waiting| waiting >= n, &format!("at least {n}")).await;
}

/// Until no session of the test database waits for a row lock (at most 5 s).
pub async fn wait_for_no_lock_waiters(pool: &PgPool) {
    wait_for_lock_waiters_where(pool, |waiting| waiting == 0, "zero").await;
}

async fn wait_for_lock_waiters_where(pool: &PgPool, done: impl Fn(i64) -> bool, what: &str) {
    for _ in 0..500 {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND wait_event_type = 'Lock' AND wait_event = 'transactionid'",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        if done(waiting) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the number of sessions blocked on a lock never became {what}");
}

/// Counts of ledger rows, to show that a refused operation changed nothing.
#[derive(Debug, PartialEq, Eq)]
pub struct LedgerSnapshot {
    pub transfers: i64,
    pub entries: i64,
    pub balances: Vec<(i64, i64)>,
}

pub async fn snapshot(pool: &PgPool) -> LedgerSnapshot {
    let (transfers, entries): (i64, i64) =
        sqlx::query_as("SELECT (SELECT count(*) FROM transfers), (SELECT count(*) FROM entries)")
            .fetch_one(pool)
            .await
            .unwrap();
    let balances = sqlx::query_as("SELECT id, balance FROM accounts ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap();
    LedgerSnapshot {
        transfers,
        entries,
        balances,
    }
}

/// The double-entry invariants. Any row listed is a broken invariant; all lists must be empty.
pub async fn assert_ledger_consistent(pool: &PgPool) {
    let checks: [(&str, &'static str); 13] = [
        (
            "every balance equals the sum of its entries",
            "SELECT a.id FROM accounts a LEFT JOIN entries e ON e.account_id = a.id \
             GROUP BY a.id, a.balance HAVING a.balance <> coalesce(sum(e.amount), 0)",
        ),
        (
            "every transfer has exactly two entries summing to zero",
            "SELECT t.id FROM transfers t LEFT JOIN entries e ON e.transfer_id = t.id \
             GROUP BY t.id HAVING count(e.id) <> 2 OR coalesce(sum(e.amount), 0) <> 0",
        ),
        (
            "entries debit the from-account and credit the to-account by the amount",
            "SELECT t.id FROM transfers t \
             WHERE NOT EXISTS (SELECT 1 FROM entries e WHERE e.transfer_id = t.id \
                               AND e.account_id = t.from_account_id AND e.amount = -t.amount) \
                OR NOT EXISTS (SELECT 1 FROM entries e WHERE e.transfer_id = t.id \
                               AND e.account_id = t.to_account_id AND e.amount = t.amount)",
        ),
        (
            "each balance_after is the running sum of the account's entries",
            "SELECT id FROM (SELECT id, balance_after, \
                 sum(amount) OVER (PARTITION BY account_id ORDER BY id) AS running FROM entries) s \
             WHERE balance_after <> running",
        ),
        (
            "every transfer has exactly one event, which names it",
            "SELECT t.id FROM transfers t LEFT JOIN events e ON e.transfer_id = t.id \
             GROUP BY t.id HAVING count(e.id) <> 1",
        ),
        (
            "money only moves within a currency: each currency sums to zero with settlement",
            "SELECT 0::bigint FROM accounts GROUP BY currency HAVING sum(balance) <> 0",
        ),
        (
            "no customer balance is below minus its overdraft limit",
            "SELECT id FROM accounts WHERE kind = 'customer' AND balance < -overdraft_limit",
        ),
        (
            "a closed account holds nothing",
            "SELECT id FROM accounts WHERE status = 'closed' AND balance <> 0",
        ),
        (
            "no account's pending holds reserve more than its balance and overdraft allow",
            "SELECT id FROM accounts \
             WHERE kind = 'customer' AND account_held(id) > balance + overdraft_limit",
        ),
        (
            "holds_pending is the sum of the account's holds still marked pending",
            "SELECT a.id FROM accounts a \
             LEFT JOIN holds h ON h.from_account_id = a.id AND h.status = 'pending' \
             GROUP BY a.id, a.holds_pending HAVING a.holds_pending <> coalesce(sum(h.amount), 0)",
        ),
        (
            "each captured hold has exactly one transfer, of its captured amount",
            "SELECT h.id FROM holds h LEFT JOIN transfers t ON t.hold_id = h.id \
             WHERE h.status = 'captured' \
             GROUP BY h.id, h.captured_amount \
             HAVING count(t.id) <> 1 OR min(t.amount) <> h.captured_amount",
        ),
        (
            "a capture's transfer is between the hold's accounts, of a captured hold",
            "SELECT t.id FROM transfers t JOIN holds h ON h.id = t.hold_id \
             WHERE h.status <> 'captured' OR t.from_account_id <> h.from_account_id \
                OR t.to_account_id <> h.to_account_id OR t.currency <> h.currency",
        ),
        (
            "no transfer into or out of a closed account after its closing",
            "SELECT t.id FROM transfers t \
             JOIN accounts a ON a.id IN (t.from_account_id, t.to_account_id) \
             WHERE a.closed_at IS NOT NULL AND t.created_at >= a.closed_at",
        ),
    ];
    for (invariant, sql) in checks {
        let broken: Vec<i64> = sqlx::query_scalar(sql).fetch_all(pool).await.unwrap();
        assert!(broken.is_empty(), "{invariant}: broken for {broken:?}");
    }
}

/// Sum of the customer balances of one currency.
pub async fn customer_total(pool: &PgPool, currency: Currency) -> i64 {
    sqlx::query_scalar::<_, Option<i64>>(
        "SELECT sum(balance)::bigint FROM accounts WHERE kind = 'customer' AND currency = $1",
    )
    .bind(currency.code())
    .fetch_one(pool)
    .await
    .unwrap()
    .unwrap_or(0)
}

/// A tiny deterministic generator: reproducible load without a dependency.
pub struct XorShift(u64);

impl XorShift {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}
