//! Reversals (SPEC §6): a banker's transfer back, in all or in part, at most once per transfer,
//! the original never modified.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::harness::{Reply, TestApp};
use crate::helpers::assert_ledger_consistent;

struct World {
    app: TestApp,
    alice: String,
    bob: String,
    banker: String,
    a: i64,
    b: i64,
    /// Alice paid Bob 300 of her 1000.
    paid: Value,
}

async fn world() -> World {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let banker = app.banker("clerk").await;
    let a = app.open_account(&alice, "USD").await;
    let b = app.open_account(&bob, "USD").await;
    app.deposit(&banker, a, 1_000, "USD").await;
    let paid = app
        .post(
            "/v1/transfers",
            Some(&alice),
            json!({ "from_account_id": a, "to_account_id": b, "amount": 300, "currency": "USD", "reference": "INV-2291" }),
        )
        .await
        .assert(StatusCode::CREATED)["transfer"]
        .clone();
    World {
        app,
        alice,
        bob,
        banker,
        a,
        b,
        paid,
    }
}

async fn reverse(app: &TestApp, token: &str, transfer: i64, body: Option<Value>) -> Reply {
    app.call(
        Method::POST,
        &format!("/v1/transfers/{transfer}/reversal"),
        Some(token),
        body,
    )
    .await
}

async fn balance(app: &TestApp, token: &str, account: i64) -> i64 {
    app.get(&format!("/v1/accounts/{account}"), token)
        .await
        .assert(StatusCode::OK)["account"]["balance"]
        .as_i64()
        .unwrap()
}

#[tokio::test]
async fn a_reversal_moves_the_money_back_once_and_leaves_the_original_as_it_was() {
    let World {
        app,
        alice,
        bob,
        banker,
        a,
        b,
        paid,
    } = world().await;
    let id = paid["id"].as_i64().unwrap();
    reverse(&app, &alice, id, None)
        .await
        .assert_error(StatusCode::FORBIDDEN, "permission_denied");
    let back = reverse(
        &app,
        &banker,
        id,
        Some(json!({ "reference": "refund-INV-2291" })),
    )
    .await
    .assert(StatusCode::CREATED);
    let t = &back["transfer"];
    assert_eq!(
        (t["from_account_id"].as_i64(), t["to_account_id"].as_i64()),
        (Some(b), Some(a))
    );
    assert_eq!(
        (t["amount"].as_i64(), t["reverses_transfer_id"].as_i64()),
        (Some(300), Some(id))
    );
    assert_eq!(t["reference"], "refund-INV-2291");
    assert_eq!(back["from_entry"]["balance_after"], 0);
    assert_eq!(back["to_entry"]["balance_after"], 1_000);
    assert_eq!(balance(&app, &alice, a).await, 1_000);
    assert_eq!(balance(&app, &bob, b).await, 0);
    // The original is as it was; a second reversal, whole or part, is refused.
    let original = app
        .get(&format!("/v1/transfers/{id}"), &alice)
        .await
        .assert(StatusCode::OK);
    assert_eq!(original["transfer"], paid);
    for body in [None, Some(json!({ "amount": 1 }))] {
        reverse(&app, &banker, id, body)
            .await
            .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "already_reversed");
    }
    // Found by reference from Alice's side, refund included.
    let found = app
        .get(
            &format!("/v1/accounts/{a}/transfers?reference=refund-INV-2291"),
            &alice,
        )
        .await
        .assert(StatusCode::OK);
    assert_eq!(found["transfers"][0]["reverses_transfer_id"], id);
    reverse(&app, &banker, 999_999, None)
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    assert_ledger_consistent(app.db.pool()).await;
}

#[tokio::test]
async fn a_partial_reversal_is_refused_over_the_original_or_the_funds_and_allowed_when_frozen() {
    let World {
        app,
        bob,
        banker,
        a,
        b,
        paid,
        ..
    } = world().await;
    let id = paid["id"].as_i64().unwrap();
    let over = reverse(&app, &banker, id, Some(json!({ "amount": 301 }))).await;
    over.assert_error(StatusCode::BAD_REQUEST, "invalid_argument");
    assert_eq!(over.body["error"]["details"][0]["field"], "amount");
    reverse(&app, &banker, id, Some(json!({ "amount": -5 })))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_argument");

    // Bob spent all but 50 of it: the reversal of 100 finds too little available.
    app.post(
        "/v1/transfers",
        Some(&bob),
        json!({ "from_account_id": b, "to_account_id": a, "amount": 250, "currency": "USD" }),
    )
    .await
    .assert(StatusCode::CREATED);
    reverse(&app, &banker, id, Some(json!({ "amount": 100 })))
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "insufficient_funds");
    // A freeze stops Bob, not the bank's correction.
    app.call(
        Method::PUT,
        &format!("/v1/accounts/{b}/status"),
        Some(&banker),
        Some(json!({ "status": "frozen" })),
    )
    .await
    .assert(StatusCode::OK);
    let part = reverse(&app, &banker, id, Some(json!({ "amount": 50 })))
        .await
        .assert(StatusCode::CREATED);
    assert_eq!(part["transfer"]["amount"], 50);
    // The original and its reversal sum to what finally moved: 300 - 50.
    let moved: i64 = sqlx::query_scalar(
        "SELECT sum(CASE WHEN from_account_id = $1 THEN amount ELSE -amount END)::bigint \
         FROM transfers WHERE id = $2 OR reverses_transfer_id = $2",
    )
    .bind(a)
    .bind(id)
    .fetch_one(app.db.pool())
    .await
    .unwrap();
    assert_eq!(moved, 250);
    assert_eq!(balance(&app, &banker, b).await, 0);
    assert_ledger_consistent(app.db.pool()).await;
}

#[tokio::test]
async fn a_reversal_into_a_closed_account_is_refused_and_a_deposit_reverses_to_the_bank() {
    let World {
        app,
        banker,
        a,
        b,
        paid,
        ..
    } = world().await;
    // Alice empties her account and closes it: Bob's money cannot go back there.
    app.post(
        &format!("/v1/accounts/{a}/withdrawals"),
        Some(&banker),
        json!({ "amount": 700, "currency": "USD" }),
    )
    .await
    .assert(StatusCode::CREATED);
    app.call(
        Method::PUT,
        &format!("/v1/accounts/{a}/status"),
        Some(&banker),
        Some(json!({ "status": "closed" })),
    )
    .await
    .assert(StatusCode::OK);
    reverse(&app, &banker, paid["id"].as_i64().unwrap(), None)
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "account_closed");
    // A deposit reversed goes back to the bank's settlement account.
    let deposit = app
        .post(
            &format!("/v1/accounts/{b}/deposits"),
            Some(&banker),
            json!({ "amount": 40, "currency": "USD" }),
        )
        .await
        .assert(StatusCode::CREATED);
    let undone = reverse(
        &app,
        &banker,
        deposit["transfer"]["id"].as_i64().unwrap(),
        None,
    )
    .await
    .assert(StatusCode::CREATED);
    assert_eq!(
        undone["transfer"]["to_account_id"],
        deposit["transfer"]["from_account_id"]
    );
    assert_ledger_consistent(app.db.pool()).await;
}

/// Bankers racing to reverse one transfer, some with keys: exactly one reversal, every other
/// answer `already_reversed` (or the same reversal, replayed under its key).
#[tokio::test]
async fn bankers_racing_to_reverse_one_transfer_make_exactly_one_reversal() {
    let World {
        app, banker, paid, ..
    } = world().await;
    let app = std::sync::Arc::new(app);
    let id = paid["id"].as_i64().unwrap();
    let mut tasks = JoinSet::new();
    for task in 0..8 {
        let (app, banker) = (app.clone(), banker.clone());
        tasks.spawn(async move {
            let headers: &[(&str, &str)] = if task % 2 == 0 {
                &[("Idempotency-Key", "undo")]
            } else {
                &[]
            };
            app.call_with(
                Method::POST,
                &format!("/v1/transfers/{id}/reversal"),
                Some(&banker),
                headers,
                Some(json!({ "amount": 100 })),
            )
            .await
        });
    }
    let mut made = std::collections::HashSet::new();
    while let Some(reply) = tasks.join_next().await {
        let reply = reply.unwrap();
        match reply.status {
            StatusCode::CREATED => {
                made.insert(reply.body["transfer"]["id"].as_i64().unwrap());
            }
            StatusCode::UNPROCESSABLE_ENTITY => assert_eq!(reply.code(), "already_reversed"),
            StatusCode::CONFLICT => assert_eq!(reply.code(), "conflict"),
            other => panic!("{other}: {}", reply.body),
        }
    }
    assert_eq!(made.len(), 1, "{made:?}");
    let reversals: i64 =
        sqlx::query_scalar("SELECT count(*) FROM transfers WHERE reverses_transfer_id = $1")
            .bind(id)
            .fetch_one(app.db.pool())
            .await
            .unwrap();
    assert_eq!(reversals, 1);
    assert_ledger_consistent(app.db.pool()).await;
}
