//! Group commit, made deterministic: with one lane, a movement blocked on a row lock keeps the
//! lane busy while the next ones queue, so they form exactly one batch when the lock is released.
//!
//! These tests run on tokio's current-thread runtime on purpose: spawned tasks then first run in
//! the order they were spawned, so the queued movements arrive in a known order.

use simplebank::store::prelude::*;
use std::time::Duration;

use chrono::{DateTime, Utc};
use simplebank::domain::{AccountId, Currency, TransferReceipt};
use simplebank::store::{GroupCommitSettings, Store, StoreError};
use tokio::task::JoinHandle;

use crate::helpers::{
    TestDb, amount, assert_ledger_consistent, customer_total, funded_account, new_transfer,
    snapshot, username, wait_for_lock_waiters,
};

/// One lane, so that batches form exactly where these tests say.
fn one_lane(db: &TestDb) -> Store {
    db.store.clone().with_group_commit(GroupCommitSettings {
        window: Duration::from_millis(1),
        lanes: 1,
        max_batch: 256,
    })
}

type Pending = JoinHandle<Result<TransferReceipt, StoreError>>;

fn transfer(store: &Store, from: AccountId, to: AccountId, units: i64, owner: &str) -> Pending {
    let store = store.clone();
    let owner = username(owner);
    tokio::spawn(async move {
        store
            .transfer(
                &new_transfer(from, to, units, Currency::Usd),
                Some(owner.clone()),
            )
            .await
    })
}

/// One funded account per (owner, currency, balance), in order.
async fn funded_accounts<const N: usize>(
    db: &TestDb,
    specs: [(&str, Currency, i64); N],
) -> [AccountId; N] {
    let mut ids = Vec::with_capacity(N);
    for (owner, currency, balance) in specs {
        ids.push(funded_account(&db.store, owner, currency, balance).await.id);
    }
    ids.try_into().expect("one id per spec")
}

async fn outcome(pending: Pending) -> Result<TransferReceipt, StoreError> {
    pending.await.expect("task panicked")
}

/// Starts a transfer that blocks on a lock the returned transaction holds on `locked`: while it
/// waits it occupies the only lane.
async fn occupy_the_lane(
    db: &TestDb,
    store: &Store,
    locked: AccountId,
    first: (AccountId, AccountId, &str),
) -> (sqlx::Transaction<'static, sqlx::Postgres>, Pending) {
    let mut blocker = db.pool().begin().await.unwrap();
    sqlx::query("SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE")
        .bind(locked.get())
        .execute(&mut *blocker)
        .await
        .unwrap();
    let pending = transfer(store, first.0, first.1, 10, first.2);
    wait_for_lock_waiters(db.pool(), 1).await;
    (blocker, pending)
}

#[tokio::test]
async fn a_batch_judges_each_movement_alone_in_arrival_order() {
    let db = TestDb::with_pool_size(6).await;
    let store = one_lane(&db);
    let [a, b, c, d] = funded_accounts(
        &db,
        [
            ("alice", Currency::Usd, 100),
            ("bob", Currency::Usd, 0),
            ("carol", Currency::Usd, 0),
            ("dave", Currency::Eur, 0),
        ],
    )
    .await;
    let nowhere = AccountId::new(999_999).unwrap();
    let total_before = customer_total(db.pool(), Currency::Usd).await;

    let (blocker, first) = occupy_the_lane(&db, &store, c, (a, c, "alice")).await;
    // Queued behind the first, in this order; the comments give the balances each one leaves.
    let queued = vec![
        transfer(&store, a, b, 50, "alice"),      // ok: a 40, b 50
        transfer(&store, a, c, 60, "alice"),      // a holds 40 now: insufficient funds
        transfer(&store, b, c, 30, "bob"),        // ok: b 20, c 10 + 30 = 40
        transfer(&store, c, a, 40, "carol"), // ok, spending what arrived in this batch: c 0, a 80
        transfer(&store, a, b, 80, "mallory"), // not mallory's account
        transfer(&store, a, d, 5, "alice"),  // dave's account holds EUR
        transfer(&store, a, nowhere, 5, "alice"), // no such account
        transfer(&store, a, b, 80, "alice"), // ok: a 0, b 100
        {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .deposit(
                        b,
                        amount(7),
                        Currency::Usd,
                        simplebank::domain::Label::default(),
                    )
                    .await
            }) // b 107
        },
        {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .withdraw(
                        a,
                        amount(1),
                        Currency::Usd,
                        simplebank::domain::Label::default(),
                    )
                    .await
            }) // a is empty
        },
    ];
    // Let every queued task run once (current-thread runtime: in spawn order) and queue.
    tokio::time::sleep(Duration::from_millis(50)).await;
    blocker.rollback().await.unwrap();

    let first = outcome(first).await.expect("the first transfer ran alone");
    let mut results = Vec::new();
    for pending in queued {
        results.push(outcome(pending).await);
    }
    let ok = |i: usize| -> &TransferReceipt {
        results[i]
            .as_ref()
            .unwrap_or_else(|e| panic!("movement {i} was refused: {e:?}"))
    };
    assert_eq!(
        (ok(0).from_account.balance, ok(0).to_account.balance),
        (40, 50)
    );
    assert!(matches!(results[1], Err(StoreError::InsufficientFunds(id)) if id == a));
    assert_eq!(
        (ok(2).from_account.balance, ok(2).to_account.balance),
        (20, 40)
    );
    assert_eq!(
        (ok(3).from_account.balance, ok(3).to_account.balance),
        (0, 80)
    );
    assert!(matches!(results[4], Err(StoreError::NotOwner(id)) if id == a));
    assert!(matches!(
        results[5],
        Err(StoreError::CurrencyMismatch { account, expected: Currency::Usd, actual: Currency::Eur }) if account == d
    ));
    assert!(matches!(results[6], Err(StoreError::AccountNotFound(id)) if id == nowhere));
    assert_eq!(
        (ok(7).from_account.balance, ok(7).to_account.balance),
        (0, 100)
    );
    assert_eq!(ok(8).to_account.balance, 107);
    assert!(matches!(results[9], Err(StoreError::InsufficientFunds(id)) if id == a));

    // Each receipt's entries agree with its balances, as the one-statement path reports them.
    let accepted: Vec<&TransferReceipt> = [0, 2, 3, 7, 8].into_iter().map(ok).collect();
    for r in &accepted {
        assert_eq!(r.from_entry.balance_after, r.from_account.balance);
        assert_eq!(r.to_entry.balance_after, r.to_account.balance);
        assert_eq!(r.from_entry.amount, -r.transfer.amount.minor_units());
        assert_eq!(r.to_entry.amount, r.transfer.amount.minor_units());
    }
    // One transaction: one timestamp, different from the first transfer's own transaction.
    let stamps: Vec<DateTime<Utc>> = accepted.iter().map(|r| r.transfer.created_at).collect();
    assert!(stamps.iter().all(|s| *s == stamps[0]), "{stamps:?}");
    assert_ne!(first.transfer.created_at, stamps[0]);
    // Ids follow arrival order, so the ledger reads in the order it happened.
    let ids: Vec<i64> = accepted.iter().map(|r| r.transfer.id.get()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert!(first.transfer.id.get() < ids[0]);

    let balance = |id: AccountId| {
        let store = db.store.clone();
        async move { store.get_account(id).await.unwrap().balance }
    };
    assert_eq!(
        (
            balance(a).await,
            balance(b).await,
            balance(c).await,
            balance(d).await
        ),
        (0, 107, 0, 0)
    );
    assert_eq!(
        customer_total(db.pool(), Currency::Usd).await,
        total_before + 7
    );
    assert_ledger_consistent(db.pool()).await;
}

#[tokio::test]
async fn a_batch_that_fails_runs_again_one_by_one_so_only_the_bad_movement_fails() {
    let db = TestDb::with_pool_size(6).await;
    let store = one_lane(&db);
    let [a, b] = funded_accounts(
        &db,
        [("alice", Currency::Usd, 1_000), ("bob", Currency::Usd, 0)],
    )
    .await;
    // A rule the store does not know about, so only the database refuses the amount 13: the
    // whole batch statement fails, as an unexpected error would make it.
    sqlx::query("ALTER TABLE transfers ADD CONSTRAINT unlucky CHECK (amount <> 13)")
        .execute(db.pool())
        .await
        .unwrap();

    let (blocker, first) = occupy_the_lane(&db, &store, b, (a, b, "alice")).await;
    let queued = [12, 13, 14].map(|units| transfer(&store, a, b, units, "alice"));
    tokio::time::sleep(Duration::from_millis(50)).await;
    blocker.rollback().await.unwrap();

    outcome(first).await.unwrap();
    let [twelve, thirteen, fourteen] = queued;
    let twelve = outcome(twelve).await.expect("12 is fine");
    assert!(
        matches!(outcome(thirteen).await, Err(StoreError::ConstraintViolated(name)) if name == "unlucky")
    );
    let fourteen = outcome(fourteen).await.expect("14 is fine");
    // They ran as separate transactions after the batch rolled back.
    assert_ne!(twelve.transfer.created_at, fourteen.transfer.created_at);
    assert_eq!(
        db.store.get_account(a).await.unwrap().balance,
        1_000 - 10 - 12 - 14
    );
    assert_ledger_consistent(db.pool()).await;
}

#[tokio::test]
async fn a_row_held_elsewhere_holds_up_only_the_movements_that_touch_it() {
    let db = TestDb::with_pool_size(8).await;
    let store = one_lane(&db);
    let [a, b, c, d] = funded_accounts(
        &db,
        [
            ("alice", Currency::Usd, 1_000),
            ("bob", Currency::Usd, 0),
            ("carol", Currency::Usd, 0),
            ("dave", Currency::Usd, 0),
        ],
    )
    .await;
    // Carol's row is held by a long transaction of somebody else's.
    let mut stuck = db.pool().begin().await.unwrap();
    sqlx::query("SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE")
        .bind(c.get())
        .execute(&mut *stuck)
        .await
        .unwrap();

    let (blocker, first) = occupy_the_lane(&db, &store, b, (a, b, "alice")).await;
    let to_carol = transfer(&store, a, c, 5, "alice");
    // Bob's 10 (from the first transfer) to dave: no account in common with the one that waits
    // (which, waiting for carol's row, holds alice's: rows are locked in id order).
    let to_dave = transfer(&store, b, d, 7, "bob");
    tokio::time::sleep(Duration::from_millis(50)).await;
    blocker.rollback().await.unwrap();
    outcome(first).await.unwrap();

    // The batch {to carol, bob to dave} gives up on carol's lock after 250 ms and runs each alone:
    // dave's arrives while carol's row is still held.
    let to_dave = tokio::time::timeout(Duration::from_secs(5), to_dave)
        .await
        .expect("the movement not touching the held row was not held up")
        .unwrap()
        .unwrap();
    assert_eq!(to_dave.to_account.balance, 7);
    assert!(!to_carol.is_finished(), "carol's row is still held");
    stuck.rollback().await.unwrap();
    assert_eq!(outcome(to_carol).await.unwrap().to_account.balance, 5);
    assert_ledger_consistent(db.pool()).await;
}

#[tokio::test]
async fn refused_movements_of_a_batch_write_nothing() {
    let db = TestDb::with_pool_size(6).await;
    let store = one_lane(&db);
    let [a, b] = funded_accounts(
        &db,
        [("alice", Currency::Usd, 10), ("bob", Currency::Usd, 0)],
    )
    .await;

    let before = snapshot(db.pool()).await;

    let (blocker, first) = occupy_the_lane(&db, &store, b, (a, b, "alice")).await;
    let queued = [1, 2, 3].map(|units| transfer(&store, a, b, units, "alice"));
    tokio::time::sleep(Duration::from_millis(50)).await;
    blocker.rollback().await.unwrap();
    outcome(first).await.unwrap();
    // alice is empty after the first: every queued one is refused, and the batch writes nothing.
    for pending in queued {
        assert!(matches!(
            outcome(pending).await,
            Err(StoreError::InsufficientFunds(_))
        ));
    }
    let after = snapshot(db.pool()).await;
    assert_eq!(
        (after.transfers, after.entries),
        (before.transfers + 1, before.entries + 2),
        "only the first transfer was written"
    );
    assert_ledger_consistent(db.pool()).await;
}
