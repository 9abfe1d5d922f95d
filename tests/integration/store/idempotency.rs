//! Keyed money movements in the store: the states a key goes through, told apart
//! deterministically, and the purge of old records.

use simplebank::store::prelude::*;
use std::time::Duration;

use simplebank::domain::{Currency, IdempotencyKey};
use simplebank::store::{KeyedOutcome, MoneyMove, StoreError};

use crate::helpers::{
    TestDb, assert_ledger_consistent, funded_account, new_transfer, username, wait_for_lock_waiters,
};

fn key(raw: &str) -> IdempotencyKey {
    IdempotencyKey::parse(raw).unwrap()
}

/// Advisory locks held in this database right now. Each keyed call must end its transaction
/// before returning: a lock left on an idle pooled connection makes the next retry of the same
/// key read as "still in flight".
async fn advisory_locks(db: &TestDb) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database \
         WHERE l.locktype = 'advisory' AND d.datname = current_database()",
    )
    .fetch_one(db.pool())
    .await
    .unwrap()
}

#[tokio::test]
async fn a_key_is_in_flight_while_its_first_request_runs_then_replays_it() {
    let db = TestDb::with_pool_size(6).await;
    let alice = funded_account(&db.store, "alice", Currency::Usd, 1_000).await;
    let bob = funded_account(&db.store, "bob", Currency::Usd, 0).await;
    let movement = MoneyMove::Transfer {
        transfer: new_transfer(alice.id, bob.id, 100, Currency::Usd),
        owner: Some(username("alice")),
    };

    // Another transaction holds Bob's row, so the first keyed request waits inside its
    // transaction — holding the key — until we let go.
    let mut blocker = db.pool().begin().await.unwrap();
    sqlx::query("SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE")
        .bind(bob.id.get())
        .execute(&mut *blocker)
        .await
        .unwrap();
    let first = {
        let store = db.store.clone();
        let movement = movement.clone();
        tokio::spawn(async move {
            store
                .move_money_once(&movement, &username("alice"), &key("k"))
                .await
        })
    };
    // Wait until the first request is blocked on the row lock (it then holds the key).
    wait_for_lock_waiters(db.pool(), 1).await;

    let second = db
        .store
        .move_money_once(&movement, &username("alice"), &key("k"))
        .await
        .unwrap();
    assert!(matches!(second, KeyedOutcome::InFlight), "{second:?}");
    assert_eq!(
        advisory_locks(&db).await,
        1,
        "only the running request holds the key"
    );

    blocker.rollback().await.unwrap();
    let first = first.await.unwrap().unwrap();
    let KeyedOutcome::Done(Ok(receipt)) = first else {
        panic!("the first request ran: {first:?}")
    };
    let third = db
        .store
        .move_money_once(&movement, &username("alice"), &key("k"))
        .await
        .unwrap();
    let KeyedOutcome::Replayed(Ok(replayed)) = third else {
        panic!("the third is a replay: {third:?}")
    };
    assert_eq!(replayed, receipt);
    assert_eq!(
        advisory_locks(&db).await,
        0,
        "a replay leaves no lock behind"
    );
    for _ in 0..5 {
        let again = db
            .store
            .move_money_once(&movement, &username("alice"), &key("k"))
            .await
            .unwrap();
        assert!(matches!(again, KeyedOutcome::Replayed(Ok(_))), "{again:?}");
    }
    assert_eq!(db.store.get_account(alice.id).await.unwrap().balance, 900);
    assert_ledger_consistent(db.pool()).await;
}

#[tokio::test]
async fn refusals_are_remembered_and_replayed_with_their_details() {
    let db = TestDb::new().await;
    let alice = funded_account(&db.store, "alice", Currency::Usd, 10).await;
    let euro = funded_account(&db.store, "bob", Currency::Eur, 0).await;
    let movement = MoneyMove::Transfer {
        transfer: new_transfer(alice.id, euro.id, 5, Currency::Usd),
        owner: Some(username("alice")),
    };
    for expect_replay in [false, true, true] {
        let outcome = db
            .store
            .move_money_once(&movement, &username("alice"), &key("eur"))
            .await
            .unwrap();
        let (replayed, result) = match outcome {
            KeyedOutcome::Done(result) => (false, result),
            KeyedOutcome::Replayed(result) => (true, result),
            other => panic!("{other:?}"),
        };
        assert_eq!(replayed, expect_replay);
        match result {
            Err(StoreError::CurrencyMismatch {
                account,
                expected,
                actual,
            }) => assert_eq!(
                (account, expected, actual),
                (euro.id, Currency::Usd, Currency::Eur)
            ),
            other => panic!("{other:?}"),
        }
        assert_eq!(advisory_locks(&db).await, 0);
    }
    assert_eq!(db.store.get_account(alice.id).await.unwrap().balance, 10);
}

#[tokio::test]
async fn records_older_than_the_retention_are_purged_and_the_key_is_free_again() {
    let db = TestDb::new().await;
    let alice = funded_account(&db.store, "alice", Currency::Usd, 1_000).await;
    let bob = funded_account(&db.store, "bob", Currency::Usd, 0).await;
    let movement = MoneyMove::Transfer {
        transfer: new_transfer(alice.id, bob.id, 1, Currency::Usd),
        owner: Some(username("alice")),
    };
    for k in ["old", "new"] {
        db.store
            .move_money_once(&movement, &username("alice"), &key(k))
            .await
            .unwrap();
    }
    sqlx::query(
        "UPDATE idempotency_keys SET created_at = now() - interval '25 hours' WHERE key = 'old'",
    )
    .execute(db.pool())
    .await
    .unwrap();

    let day = Duration::from_secs(24 * 3600);
    assert_eq!(db.store.purge_idempotency_keys(day).await.unwrap(), 1);
    assert_eq!(db.store.purge_idempotency_keys(day).await.unwrap(), 0);
    let left: Vec<String> = sqlx::query_scalar("SELECT key FROM idempotency_keys")
        .fetch_all(db.pool())
        .await
        .unwrap();
    assert_eq!(left, ["new"]);

    let again = db
        .store
        .move_money_once(&movement, &username("alice"), &key("old"))
        .await
        .unwrap();
    assert!(matches!(again, KeyedOutcome::Done(Ok(_))), "{again:?}");
    assert_eq!(db.store.get_account(alice.id).await.unwrap().balance, 997);
}

#[tokio::test]
async fn requests_stuck_on_one_account_hold_only_its_share_of_the_pool() {
    // Eight connections: a quarter of them (two) for any one account.
    let db = TestDb::with_pool_size(8).await;
    let victim = funded_account(&db.store, "victim", Currency::Usd, 0).await;
    let mut payers = Vec::new();
    for n in 0..8 {
        payers.push(funded_account(&db.store, &format!("payer{n}"), Currency::Usd, 100).await);
    }
    let dave = funded_account(&db.store, "dave", Currency::Usd, 1_000).await;
    let erin = funded_account(&db.store, "erin", Currency::Usd, 0).await;

    let mut blocker = db.pool().begin().await.unwrap();
    sqlx::query("SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE")
        .bind(victim.id.get())
        .execute(&mut *blocker)
        .await
        .unwrap();
    // Eight keyed payments into the stuck account: without a bound they would hold seven
    // connections, and with the blocker's, the whole pool.
    let stuck: Vec<_> = payers
        .iter()
        .enumerate()
        .map(|(n, payer)| {
            let store = db.store.clone();
            let movement = MoneyMove::Transfer {
                transfer: new_transfer(payer.id, victim.id, 10, Currency::Usd),
                owner: Some(username(&format!("payer{n}"))),
            };
            tokio::spawn(async move {
                store
                    .move_money_once(&movement, &username(&format!("payer{n}")), &key("pay"))
                    .await
            })
        })
        .collect();
    // Two of them wait on the row (the first on the holder, the next on the row's queue).
    for _ in 0..500 {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(db.pool())
        .await
        .unwrap();
        assert!(waiting <= 2, "{waiting} sessions wait on the stuck account");
        if waiting == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Other customers' transfers go on meanwhile, several at once.
    let bystanders: Vec<_> = (0..4)
        .map(|_| {
            let store = db.store.clone();
            let transfer = new_transfer(dave.id, erin.id, 1, Currency::Usd);
            tokio::spawn(async move { store.transfer(&transfer, None).await })
        })
        .collect();
    for bystander in bystanders {
        bystander
            .await
            .unwrap()
            .expect("a bystander's transfer goes through");
    }
    blocker.rollback().await.unwrap();
    for payment in stuck {
        let outcome = payment.await.unwrap().unwrap();
        assert!(matches!(outcome, KeyedOutcome::Done(Ok(_))), "{outcome:?}");
    }
    assert_eq!(db.store.get_account(victim.id).await.unwrap().balance, 80);
    assert_eq!(db.store.get_account(erin.id).await.unwrap().balance, 4);
    assert_ledger_consistent(db.pool()).await;
}
