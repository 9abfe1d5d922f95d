//! Many transfers at once. Afterwards the ledger must balance exactly, and the only refusal a
//! client may ever have seen is "insufficient funds": no deadlock, no serialization failure, no
//! lost update leaks out of the store.
//!
//! Each scenario runs twice: one transaction per movement, and with group commit (movements
//! sharing transactions), where it must also be seen that batches really formed.

use simplebank::store::prelude::*;
use std::collections::BTreeMap;
use std::sync::Arc;

use simplebank::domain::{Account, AccountId, Currency, IdempotencyKey};
use simplebank::store::{GroupCommitSettings, KeyedOutcome, MoneyMove, Store, StoreError};
use tokio::task::JoinSet;

use crate::helpers::{
    TestDb, XorShift, assert_ledger_consistent, customer_total, funded_account, new_transfer,
    username,
};

const TASKS: u64 = 20;
const TRANSFERS_PER_TASK: u64 = 50;

/// What the tasks saw, by outcome.
#[derive(Debug, Default)]
struct Outcomes {
    committed: u64,
    insufficient_funds: u64,
    other: BTreeMap<String, u64>,
}

async fn run_tasks<F>(store: &Store, pick: F) -> Outcomes
where
    F: Fn(u64, u64, &mut XorShift) -> (AccountId, AccountId, i64) + Send + Sync + 'static,
{
    let pick = Arc::new(pick);
    let mut tasks = JoinSet::new();
    for task in 0..TASKS {
        let store = store.clone();
        let pick = Arc::clone(&pick);
        tasks.spawn(async move {
            let mut rng = XorShift::new(task + 1);
            let mut outcomes = Outcomes::default();
            for i in 0..TRANSFERS_PER_TASK {
                let (from, to, units) = pick(task, i, &mut rng);
                match store
                    .transfer(&new_transfer(from, to, units, Currency::Usd), None)
                    .await
                {
                    Ok(_) => outcomes.committed += 1,
                    Err(StoreError::InsufficientFunds(_)) => outcomes.insufficient_funds += 1,
                    Err(other) => *outcomes.other.entry(format!("{other:?}")).or_default() += 1,
                }
            }
            outcomes
        });
    }
    let mut all = Outcomes::default();
    while let Some(outcomes) = tasks.join_next().await {
        let outcomes = outcomes.expect("task panicked");
        all.committed += outcomes.committed;
        all.insufficient_funds += outcomes.insufficient_funds;
        for (k, v) in outcomes.other {
            *all.other.entry(k).or_default() += v;
        }
    }
    all
}

async fn accounts(store: &Store, n: usize, balance: i64) -> Vec<Account> {
    let mut accounts = Vec::with_capacity(n);
    for i in 0..n {
        accounts.push(funded_account(store, &format!("user_{i:02}"), Currency::Usd, balance).await);
    }
    accounts
}

/// Only "insufficient funds" was refused, every committed transfer is in the ledger, customer
/// money is conserved, and the double-entry invariants hold.
async fn assert_every_transfer_accounted_for(db: &TestDb, outcomes: &Outcomes, total_before: i64) {
    assert!(
        outcomes.other.is_empty(),
        "unexpected errors: {:?}",
        outcomes.other
    );
    assert_eq!(
        outcomes.committed + outcomes.insufficient_funds,
        TASKS * TRANSFERS_PER_TASK
    );
    assert!(outcomes.committed > 0);
    assert_eq!(transfer_count(&db.store).await, outcomes.committed as i64);
    assert_eq!(customer_total(db.pool(), Currency::Usd).await, total_before);
    assert_ledger_consistent(db.pool()).await;
}

async fn transfer_count(store: &Store) -> i64 {
    // Deposits that funded the accounts are transfers too; count only customer-to-customer ones.
    sqlx::query_scalar(
        "SELECT count(*) FROM transfers t JOIN accounts a ON a.id = t.from_account_id \
         WHERE a.kind = 'customer'",
    )
    .fetch_one(store.pool())
    .await
    .unwrap()
}

/// The store to load: the test database's own, or the same with group commit on.
fn store_for(db: &TestDb, grouped: bool) -> Store {
    if grouped {
        db.store
            .clone()
            .with_group_commit(GroupCommitSettings::default())
    } else {
        db.store.clone()
    }
}

/// With group commit, some transfers shared a transaction: fewer distinct timestamps (each
/// transaction has one) than transfers.
async fn assert_batches_formed(db: &TestDb, outcomes: &Outcomes) {
    let transactions: i64 = sqlx::query_scalar(
        "SELECT count(DISTINCT t.created_at) FROM transfers t \
         JOIN accounts a ON a.id = t.from_account_id WHERE a.kind = 'customer'",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    eprintln!(
        "{} transfers committed in {transactions} transactions",
        outcomes.committed
    );
    assert!(
        transactions < outcomes.committed as i64,
        "no batch formed: {transactions} transactions for {} transfers",
        outcomes.committed
    );
}

async fn ten_accounts(grouped: bool) {
    // Fewer connections than tasks: tasks also queue for the pool, as a server's requests do.
    let db = TestDb::with_pool_size(10).await;
    let accounts = accounts(&db.store, 10, 1_000).await;
    let total_before = customer_total(db.pool(), Currency::Usd).await;
    let ids: Vec<AccountId> = accounts.iter().map(|a| a.id).collect();

    let outcomes = run_tasks(&store_for(&db, grouped), move |_, _, rng| {
        let from = rng.below(10) as usize;
        let to = (from + 1 + rng.below(9) as usize) % 10;
        // Amounts up to half a starting balance: some transfers must find the account short.
        (ids[from], ids[to], 1 + rng.below(500) as i64)
    })
    .await;

    eprintln!("ten accounts (grouped: {grouped}): {outcomes:?}");
    assert_every_transfer_accounted_for(&db, &outcomes, total_before).await;
    if grouped {
        assert_batches_formed(&db, &outcomes).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_transfers_among_ten_accounts_keep_the_ledger_balanced() {
    ten_accounts(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grouped_transfers_among_ten_accounts_keep_the_ledger_balanced() {
    ten_accounts(true).await;
}

async fn hot_pair(grouped: bool) {
    let db = TestDb::with_pool_size(20).await;
    let pair = accounts(&db.store, 2, 500).await;
    let (a, b) = (pair[0].id, pair[1].id);
    let total_before = customer_total(db.pool(), Currency::Usd).await;

    // Half the tasks start a→b, half b→a, and each alternates: maximal opposite-order contention.
    let outcomes = run_tasks(&store_for(&db, grouped), move |task, i, rng| {
        let forward = (task + i) % 2 == 0;
        let units = 1 + rng.below(300) as i64;
        if forward {
            (a, b, units)
        } else {
            (b, a, units)
        }
    })
    .await;

    eprintln!("hot pair (grouped: {grouped}): {outcomes:?}");
    assert_every_transfer_accounted_for(&db, &outcomes, total_before).await;
    if grouped {
        assert_batches_formed(&db, &outcomes).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hot_pair_in_both_directions_neither_deadlocks_nor_loses_updates() {
    hot_pair(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_grouped_hot_pair_in_both_directions_neither_deadlocks_nor_loses_updates() {
    hot_pair(true).await;
}

async fn withdrawals(grouped: bool) {
    // 20 tasks each try to withdraw 10 from an account holding 100: exactly 10 may succeed.
    let db = TestDb::with_pool_size(20).await;
    let account = funded_account(&db.store, "alice", Currency::Usd, 100).await;
    let store = store_for(&db, grouped);
    let mut tasks = JoinSet::new();
    for _ in 0..20 {
        let store = store.clone();
        tasks.spawn(async move {
            store
                .withdraw(
                    account.id,
                    crate::helpers::amount(10),
                    Currency::Usd,
                    simplebank::domain::Label::default(),
                )
                .await
        });
    }
    let (mut ok, mut short) = (0, 0);
    while let Some(result) = tasks.join_next().await {
        match result.unwrap() {
            Ok(_) => ok += 1,
            Err(StoreError::InsufficientFunds(_)) => short += 1,
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }
    assert_eq!((ok, short), (10, 10));
    assert_eq!(db.store.get_account(account.id).await.unwrap().balance, 0);
    assert_ledger_consistent(db.pool()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_withdrawals_never_overdraw() {
    withdrawals(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grouped_withdrawals_never_overdraw() {
    withdrawals(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keyed_movements_beside_grouped_ones_neither_deadlock_nor_apply_twice() {
    // Keyed movements take their key's lock, then the two row locks; batches take all their rows
    // in ascending order. Both orders are compatible, on the same two hot accounts.
    let db = TestDb::with_pool_size(20).await;
    let pair = accounts(&db.store, 2, 500).await;
    let (a, b) = (pair[0].id, pair[1].id);
    let total_before = customer_total(db.pool(), Currency::Usd).await;
    let store = store_for(&db, true);

    let mut keyed = JoinSet::new();
    for task in 0..10u64 {
        let store = store.clone();
        keyed.spawn(async move {
            let mut refused = 0;
            for i in 0..20u64 {
                let (from, to, owner) = if (task + i) % 2 == 0 {
                    (a, b, "user_00")
                } else {
                    (b, a, "user_01")
                };
                let movement = MoneyMove::Transfer {
                    transfer: new_transfer(from, to, 1 + (task * 7 + i) as i64 % 90, Currency::Usd),
                    owner: Some(username(owner)),
                };
                let key = IdempotencyKey::parse(&format!("k-{task}-{i}")).unwrap();
                // Sent twice, as a client retrying after a lost answer would.
                for attempt in 0..2 {
                    match store
                        .move_money_once(&movement, &username(owner), &key)
                        .await
                        .unwrap()
                    {
                        KeyedOutcome::Done(Ok(_)) | KeyedOutcome::Replayed(Ok(_)) => {}
                        KeyedOutcome::Done(Err(StoreError::InsufficientFunds(_))) => refused += 1,
                        KeyedOutcome::Replayed(Err(StoreError::InsufficientFunds(_))) => {}
                        other => panic!("attempt {attempt} of {key:?}: {other:?}"),
                    }
                }
            }
            refused
        });
    }
    let unkeyed = run_tasks(&store, move |task, i, rng| {
        let units = 1 + rng.below(300) as i64;
        if (task + i) % 2 == 0 {
            (a, b, units)
        } else {
            (b, a, units)
        }
    })
    .await;
    let mut keyed_refused = 0;
    while let Some(refused) = keyed.join_next().await {
        keyed_refused += refused.unwrap();
    }

    assert!(unkeyed.other.is_empty(), "{:?}", unkeyed.other);
    let keyed_committed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM idempotency_keys WHERE transfer_id IS NOT NULL")
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert_eq!(keyed_committed + keyed_refused, 200, "one outcome per key");
    assert_eq!(
        transfer_count(&db.store).await,
        unkeyed.committed as i64 + keyed_committed,
        "each key moved money at most once"
    );
    assert_eq!(customer_total(db.pool(), Currency::Usd).await, total_before);
    assert_ledger_consistent(db.pool()).await;
}
