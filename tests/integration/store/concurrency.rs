//! Many transfers at once. Afterwards the ledger must balance exactly, and the only refusal a
//! client may ever have seen is "insufficient funds": no deadlock, no serialization failure, no
//! lost update leaks out of the store.

use std::collections::BTreeMap;
use std::sync::Arc;

use simplebank::domain::{Account, AccountId, Currency};
use simplebank::store::{Store, StoreError};
use tokio::task::JoinSet;

use crate::helpers::{
    TestDb, XorShift, assert_ledger_consistent, customer_total, funded_account, new_transfer,
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_transfers_among_ten_accounts_keep_the_ledger_balanced() {
    // Fewer connections than tasks: tasks also queue for the pool, as a server's requests do.
    let db = TestDb::with_pool_size(10).await;
    let accounts = accounts(&db.store, 10, 1_000).await;
    let total_before = customer_total(db.pool(), Currency::Usd).await;
    let ids: Vec<AccountId> = accounts.iter().map(|a| a.id).collect();

    let outcomes = run_tasks(&db.store, move |_, _, rng| {
        let from = rng.below(10) as usize;
        let to = (from + 1 + rng.below(9) as usize) % 10;
        // Amounts up to half a starting balance: some transfers must find the account short.
        (ids[from], ids[to], 1 + rng.below(500) as i64)
    })
    .await;

    eprintln!("ten accounts: {outcomes:?}");
    assert_every_transfer_accounted_for(&db, &outcomes, total_before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hot_pair_in_both_directions_neither_deadlocks_nor_loses_updates() {
    let db = TestDb::with_pool_size(20).await;
    let pair = accounts(&db.store, 2, 500).await;
    let (a, b) = (pair[0].id, pair[1].id);
    let total_before = customer_total(db.pool(), Currency::Usd).await;

    // Half the tasks start a→b, half b→a, and each alternates: maximal opposite-order contention.
    let outcomes = run_tasks(&db.store, move |task, i, rng| {
        let forward = (task + i) % 2 == 0;
        let units = 1 + rng.below(300) as i64;
        if forward {
            (a, b, units)
        } else {
            (b, a, units)
        }
    })
    .await;

    eprintln!("hot pair: {outcomes:?}");
    assert_every_transfer_accounted_for(&db, &outcomes, total_before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_withdrawals_never_overdraw() {
    // 20 tasks each try to withdraw 10 from an account holding 100: exactly 10 may succeed.
    let db = TestDb::with_pool_size(20).await;
    let account = funded_account(&db.store, "alice", Currency::Usd, 100).await;
    let mut tasks = JoinSet::new();
    for _ in 0..20 {
        let store = db.store.clone();
        tasks.spawn(async move {
            store
                .withdraw(account.id, crate::helpers::amount(10), Currency::Usd)
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
