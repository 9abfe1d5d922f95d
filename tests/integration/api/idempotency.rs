//! Idempotency keys over HTTP: a retried money movement is answered from the first attempt and
//! never moves money twice.

use std::sync::Arc;

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::harness::{Reply, TestApp};
use crate::helpers::assert_ledger_consistent;

const REPLAYED: &str = "idempotent-replayed";

/// Alice with `balance` in a USD account, Bob with an empty one, and a banker.
struct World {
    app: TestApp,
    alice: String,
    bob: String,
    banker: String,
    a: i64,
    b: i64,
}

async fn world(balance: i64) -> World {
    world_with(balance, &[]).await
}

async fn world_with(balance: i64, settings: &[(&str, &str)]) -> World {
    let app = TestApp::spawn_with(settings).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let banker = app.banker("clerk").await;
    let a = app.open_account(&alice, "USD").await;
    let b = app.open_account(&bob, "USD").await;
    if balance > 0 {
        app.deposit(&banker, a, balance, "USD").await;
    }
    World {
        app,
        alice,
        bob,
        banker,
        a,
        b,
    }
}

impl World {
    async fn transfer(
        &self,
        token: &str,
        key: Option<&str>,
        from: i64,
        to: i64,
        amount: i64,
    ) -> Reply {
        let headers: Vec<(&str, &str)> = key.map(|k| ("Idempotency-Key", k)).into_iter().collect();
        self.app
            .call_with(
                Method::POST,
                "/v1/transfers",
                Some(token),
                &headers,
                Some(json!({ "from_account_id": from, "to_account_id": to, "amount": amount, "currency": "USD" })),
            )
            .await
    }

    async fn money(&self, route: &str, key: &str, account: i64, amount: i64) -> Reply {
        self.app
            .call_with(
                Method::POST,
                &format!("/v1/accounts/{account}/{route}"),
                Some(&self.banker),
                &[("Idempotency-Key", key)],
                Some(json!({ "amount": amount, "currency": "USD" })),
            )
            .await
    }

    async fn balance(&self, account: i64) -> i64 {
        self.app
            .get(&format!("/v1/accounts/{account}"), &self.banker)
            .await
            .assert(StatusCode::OK)["account"]["balance"]
            .as_i64()
            .unwrap()
    }

    async fn count(&self, sql: &'static str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(self.app.db.pool())
            .await
            .unwrap()
    }

    async fn customer_transfers(&self) -> i64 {
        self.count(
            "SELECT count(*) FROM transfers t JOIN accounts a ON a.id = t.from_account_id \
             WHERE a.kind = 'customer'",
        )
        .await
    }
}

#[tokio::test]
async fn a_retried_transfer_gets_the_first_answer_and_moves_money_once() {
    let w = world(1_000).await;
    let first = w.transfer(&w.alice, Some("order-1"), w.a, w.b, 100).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    assert_eq!(first.header(REPLAYED), "", "a first answer is not marked");

    // Money moves in between, so a recomputed answer would show another balance.
    w.transfer(&w.alice, None, w.a, w.b, 50)
        .await
        .assert(StatusCode::CREATED);

    for _ in 0..3 {
        let again = w.transfer(&w.alice, Some("order-1"), w.a, w.b, 100).await;
        assert_eq!(again.status, StatusCode::CREATED);
        assert_eq!(again.header(REPLAYED), "true");
        assert_eq!(
            again.body, first.body,
            "the same body, balance as first reported"
        );
    }
    assert_eq!(first.body["from_account"]["balance"], 900);
    assert_eq!(w.balance(w.a).await, 850);
    assert_eq!(w.customer_transfers().await, 2);
    assert_ledger_consistent(w.app.db.pool()).await;
}

#[tokio::test]
async fn the_same_key_for_a_different_request_is_a_mismatch_and_moves_nothing() {
    let w = world(1_000).await;
    w.transfer(&w.alice, Some("k"), w.a, w.b, 100)
        .await
        .assert(StatusCode::CREATED);
    let alice_eur = w.app.open_account(&w.alice, "EUR").await;
    for (amount, to) in [(101, w.b), (100, alice_eur)] {
        w.transfer(&w.alice, Some("k"), w.a, to, amount)
            .await
            .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "idempotency_mismatch");
    }
    // A key names one operation: a banker's deposit key is not a withdrawal key.
    w.money("deposits", "bank-1", w.a, 10)
        .await
        .assert(StatusCode::CREATED);
    w.money("withdrawals", "bank-1", w.a, 10)
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "idempotency_mismatch");
    assert_eq!(w.balance(w.a).await, 910);
    assert_ledger_consistent(w.app.db.pool()).await;
}

#[tokio::test]
async fn a_refused_first_attempt_is_replayed_as_refused() {
    let w = world(1_000).await;
    let first = w.transfer(&w.alice, Some("big"), w.a, w.b, 5_000).await;
    first.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "insufficient_funds");
    w.app.deposit(&w.banker, w.a, 10_000, "USD").await;

    let again = w.transfer(&w.alice, Some("big"), w.a, w.b, 5_000).await;
    again.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "insufficient_funds");
    assert_eq!(again.header(REPLAYED), "true");
    assert_eq!(again.body, first.body);
    // A new key is a new request.
    w.transfer(&w.alice, Some("big-2"), w.a, w.b, 5_000)
        .await
        .assert(StatusCode::CREATED);
    assert_eq!(w.balance(w.b).await, 5_000);
}

#[tokio::test]
async fn requests_that_never_reach_the_transaction_store_nothing() {
    let w = world(1_000).await;
    let too_long = "k".repeat(256);
    for bad_key in [too_long.as_str(), "naïve"] {
        let reply = w.transfer(&w.alice, Some(bad_key), w.a, w.b, 10).await;
        reply.assert_error(StatusCode::BAD_REQUEST, "invalid_argument");
        assert_eq!(
            reply.body["error"]["details"][0]["field"],
            "Idempotency-Key"
        );
    }
    // Bad input, a bad token, a caller without the right: refused before the transaction.
    w.transfer(&w.alice, Some("k"), w.a, w.b, 0)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_argument");
    w.transfer("not-a-token", Some("k"), w.a, w.b, 10)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
    w.app
        .call_with(
            Method::POST,
            &format!("/v1/accounts/{}/deposits", w.a),
            Some(&w.alice),
            &[("Idempotency-Key", "k")],
            Some(json!({ "amount": 10, "currency": "USD" })),
        )
        .await
        .assert_error(StatusCode::FORBIDDEN, "permission_denied");
    assert_eq!(w.count("SELECT count(*) FROM idempotency_keys").await, 0);

    let reply = w.transfer(&w.alice, Some("k"), w.a, w.b, 10).await;
    assert_eq!(reply.status, StatusCode::CREATED);
    assert_eq!(reply.header(REPLAYED), "", "the key was still unused");
}

#[tokio::test]
async fn twenty_concurrent_requests_with_one_key_make_exactly_one_transfer() {
    let w = Arc::new(world(1_000).await);
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let w = Arc::clone(&w);
            tokio::spawn(async move { w.transfer(&w.alice, Some("burst"), w.a, w.b, 100).await })
        })
        .collect();
    let mut fresh = Vec::new();
    let mut replayed = Vec::new();
    let mut conflicts = 0;
    for task in tasks {
        let reply = task.await.unwrap();
        match (reply.status, reply.header(REPLAYED)) {
            (StatusCode::CREATED, "") => fresh.push(reply.body),
            (StatusCode::CREATED, "true") => replayed.push(reply.body),
            (StatusCode::CONFLICT, _) => {
                reply.assert_error(StatusCode::CONFLICT, "conflict");
                conflicts += 1;
            }
            other => panic!("unexpected {other:?}: {}", reply.body),
        }
    }
    assert_eq!(fresh.len(), 1, "exactly one request ran");
    assert_eq!(fresh.len() + replayed.len() + conflicts, 20);
    assert!(replayed.iter().all(|body| *body == fresh[0]));
    // After the burst, a retry is always a replay.
    let late = w.transfer(&w.alice, Some("burst"), w.a, w.b, 100).await;
    assert_eq!(late.header(REPLAYED), "true");
    assert_eq!(late.body, fresh[0]);
    assert_eq!(w.balance(w.a).await, 900);
    assert_eq!(w.customer_transfers().await, 1);
    assert_ledger_consistent(w.app.db.pool()).await;
}

#[tokio::test]
async fn a_replay_survives_a_server_restart() {
    let mut w = world(1_000).await;
    let first = w
        .transfer(&w.alice, Some("before-restart"), w.a, w.b, 250)
        .await;
    assert_eq!(first.status, StatusCode::CREATED);
    w.app.restart().await;
    let again = w
        .transfer(&w.alice, Some("before-restart"), w.a, w.b, 250)
        .await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert_eq!(again.header(REPLAYED), "true");
    assert_eq!(again.body, first.body);
    assert_eq!(w.balance(w.a).await, 750);
}

#[tokio::test]
async fn keys_belong_to_their_user() {
    let w = world(1_000).await;
    w.app.deposit(&w.banker, w.b, 1_000, "USD").await;
    let alice = w.transfer(&w.alice, Some("same"), w.a, w.b, 10).await;
    let bob = w.transfer(&w.bob, Some("same"), w.b, w.a, 20).await;
    for reply in [&alice, &bob] {
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
        assert_eq!(reply.header(REPLAYED), "");
    }
    assert_ne!(alice.body["transfer"]["id"], bob.body["transfer"]["id"]);
    assert_eq!(w.balance(w.a).await, 1_010);
}

#[tokio::test]
async fn keyed_deposits_and_withdrawals_replay_too() {
    let w = world(0).await;
    let deposit = w.money("deposits", "dep-1", w.a, 500).await;
    assert_eq!(deposit.status, StatusCode::CREATED);
    let withdrawal = w.money("withdrawals", "wd-1", w.a, 200).await;
    assert_eq!(withdrawal.status, StatusCode::CREATED);
    for (route, key, first) in [
        ("deposits", "dep-1", &deposit),
        ("withdrawals", "wd-1", &withdrawal),
    ] {
        let amount = if route == "deposits" { 500 } else { 200 };
        let again = w.money(route, key, w.a, amount).await;
        assert_eq!(again.header(REPLAYED), "true");
        assert_eq!(again.body, first.body);
    }
    assert_eq!(deposit.body["account"]["balance"], 500);
    assert_eq!(w.balance(w.a).await, 300);
    assert_ledger_consistent(w.app.db.pool()).await;
}

/// The stored record names the transfer, so the replayed id is the original one.
#[tokio::test]
async fn the_record_names_the_transfer_it_made() {
    let w = world(1_000).await;
    let reply = w.transfer(&w.alice, Some("rec"), w.a, w.b, 1).await;
    let id = reply.body["transfer"]["id"].as_i64().unwrap();
    let (stored, operation): (Option<i64>, String) = sqlx::query_as(
        "SELECT transfer_id, operation FROM idempotency_keys WHERE username = 'alice' AND key = 'rec'",
    )
    .fetch_one(w.app.db.pool())
    .await
    .unwrap();
    assert_eq!((stored, operation.as_str()), (Some(id), "transfer"));
}

#[tokio::test]
async fn the_server_forgets_keys_after_their_retention() {
    let w = world_with(1_000, &[("IDEMPOTENCY_KEY_RETENTION", "1s")]).await;
    w.transfer(&w.alice, Some("short-lived"), w.a, w.b, 10)
        .await
        .assert(StatusCode::CREATED);
    // The purge runs every second here; give it a generous while on a busy machine.
    let mut waited = 0;
    while w.count("SELECT count(*) FROM idempotency_keys").await > 0 {
        waited += 1;
        assert!(waited < 150, "the record was never purged");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let again = w
        .transfer(&w.alice, Some("short-lived"), w.a, w.b, 10)
        .await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert_eq!(
        again.header(REPLAYED),
        "",
        "a forgotten key is a new request"
    );
    assert_eq!(w.balance(w.a).await, 980);
}
