//! Account controls over HTTP (SPEC §6): freezing, closing and overdraft limits, set by bankers,
//! refused to everyone else, and what each does to the money that moves.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::harness::TestApp;
use crate::helpers::assert_ledger_consistent;

async fn set_status(
    app: &TestApp,
    token: &str,
    account: i64,
    status: &str,
) -> crate::harness::Reply {
    app.call(
        Method::PUT,
        &format!("/v1/accounts/{account}/status"),
        Some(token),
        Some(json!({ "status": status, "reason": "test" })),
    )
    .await
}

async fn set_limit(app: &TestApp, token: &str, account: i64, limit: i64) -> crate::harness::Reply {
    app.call(
        Method::PUT,
        &format!("/v1/accounts/{account}/overdraft_limit"),
        Some(token),
        Some(json!({ "limit": limit })),
    )
    .await
}

async fn transfer(
    app: &TestApp,
    token: &str,
    from: i64,
    to: i64,
    amount: i64,
) -> crate::harness::Reply {
    app.post(
        "/v1/transfers",
        Some(token),
        json!({ "from_account_id": from, "to_account_id": to, "amount": amount, "currency": "USD" }),
    )
    .await
}

/// A deposit or withdrawal (`kind`: "deposits" or "withdrawals") by a banker.
async fn money(
    app: &TestApp,
    banker: &str,
    kind: &str,
    account: i64,
    amount: i64,
) -> crate::harness::Reply {
    app.post(
        &format!("/v1/accounts/{account}/{kind}"),
        Some(banker),
        json!({ "amount": amount, "currency": "USD" }),
    )
    .await
}

/// Alice and Bob with a USD account each, and a banker.
struct World {
    app: TestApp,
    alice: String,
    bob: String,
    banker: String,
    a: i64,
    b: i64,
}

impl World {
    async fn new() -> Self {
        let app = TestApp::spawn().await;
        let alice = app.user("alice").await;
        let bob = app.user("bob").await;
        let banker = app.banker("clerk").await;
        let a = app.open_account(&alice, "USD").await;
        let b = app.open_account(&bob, "USD").await;
        Self {
            app,
            alice,
            bob,
            banker,
            a,
            b,
        }
    }
}

fn balance(account: &Value) -> i64 {
    account["balance"].as_i64().unwrap()
}

#[tokio::test]
async fn a_frozen_account_takes_credits_but_no_debits_until_unfrozen() {
    let World {
        app,
        alice,
        bob,
        banker,
        a,
        b,
    } = World::new().await;
    app.deposit(&banker, a, 1_000, "USD").await;
    app.deposit(&banker, b, 1_000, "USD").await;

    let frozen = set_status(&app, &banker, a, "frozen")
        .await
        .assert(StatusCode::OK);
    assert_eq!(frozen["account"]["status"], "frozen");
    assert_eq!(
        app.get(&format!("/v1/accounts/{a}"), &alice)
            .await
            .assert(StatusCode::OK)["account"]["status"],
        "frozen"
    );

    transfer(&app, &alice, a, b, 10)
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "account_frozen");
    money(&app, &banker, "withdrawals", a, 10)
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "account_frozen");
    // Credits still land, by transfer and by deposit.
    transfer(&app, &bob, b, a, 100)
        .await
        .assert(StatusCode::CREATED);
    money(&app, &banker, "deposits", a, 50)
        .await
        .assert(StatusCode::CREATED);

    set_status(&app, &banker, a, "active")
        .await
        .assert(StatusCode::OK);
    let sent = transfer(&app, &alice, a, b, 10)
        .await
        .assert(StatusCode::CREATED);
    assert_eq!(balance(&sent["from_account"]), 1_140);
    assert_ledger_consistent(app.db.pool()).await;
}

#[tokio::test]
async fn only_an_empty_account_closes_and_closing_is_final() {
    let World {
        app,
        alice,
        bob,
        banker,
        a,
        b,
    } = World::new().await;
    app.deposit(&banker, a, 100, "USD").await;

    let refused = set_status(&app, &banker, a, "closed").await;
    refused.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "failed_precondition");
    assert_eq!(
        refused.body["error"]["details"][0]["field"], "status",
        "{}",
        refused.body
    );

    transfer(&app, &alice, a, b, 100)
        .await
        .assert(StatusCode::CREATED);
    let closed = set_status(&app, &banker, a, "closed")
        .await
        .assert(StatusCode::OK);
    assert_eq!(closed["account"]["status"], "closed");
    // Closing again changes nothing; anything else is refused.
    set_status(&app, &banker, a, "closed")
        .await
        .assert(StatusCode::OK);
    for status in ["active", "frozen"] {
        set_status(&app, &banker, a, status)
            .await
            .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "account_closed");
    }
    set_limit(&app, &banker, a, 100)
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "account_closed");
    // Nothing moves in or out. To a stranger paying in, a closed account is not found.
    transfer(&app, &bob, b, a, 10)
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    money(&app, &banker, "deposits", a, 10)
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "account_closed");
    transfer(&app, &alice, a, b, 10)
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "account_closed");
    assert_ledger_consistent(app.db.pool()).await;
}

#[tokio::test]
async fn an_overdraft_limit_lets_the_balance_go_that_far_below_zero_and_no_further() {
    let World {
        app,
        alice,
        banker,
        a,
        b,
        ..
    } = World::new().await;

    transfer(&app, &alice, a, b, 1)
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "insufficient_funds");
    let limited = set_limit(&app, &banker, a, 100)
        .await
        .assert(StatusCode::OK);
    assert_eq!(limited["account"]["overdraft_limit"], 100);
    let sent = transfer(&app, &alice, a, b, 60)
        .await
        .assert(StatusCode::CREATED);
    assert_eq!(balance(&sent["from_account"]), -60);
    transfer(&app, &alice, a, b, 41)
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "insufficient_funds");
    transfer(&app, &alice, a, b, 40)
        .await
        .assert(StatusCode::CREATED);

    // Not below what the account owes now.
    let refused = set_limit(&app, &banker, a, 99).await;
    refused.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "failed_precondition");
    assert_eq!(refused.body["error"]["details"][0]["field"], "limit");
    set_limit(&app, &banker, a, -1)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_argument");
    // An account in debt cannot close.
    set_status(&app, &banker, a, "closed")
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "failed_precondition");
    assert_ledger_consistent(app.db.pool()).await;
}

#[tokio::test]
async fn only_bankers_set_controls_and_never_on_settlement_accounts() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let banker = app.banker("clerk").await;
    let a = app.open_account(&alice, "USD").await;

    set_status(&app, &alice, a, "active")
        .await
        .assert_error(StatusCode::FORBIDDEN, "permission_denied");
    set_limit(&app, &alice, a, 1_000_000)
        .await
        .assert_error(StatusCode::FORBIDDEN, "permission_denied");
    set_status(&app, &banker, a, "asleep")
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_argument");
    set_status(&app, &banker, 999_999, "frozen")
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");

    let settlement: i64 = sqlx::query_scalar(
        "SELECT id FROM accounts WHERE kind = 'settlement' AND currency = 'USD'",
    )
    .fetch_one(app.db.pool())
    .await
    .unwrap();
    set_status(&app, &banker, settlement, "frozen")
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_argument");
    set_limit(&app, &banker, settlement, 10)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_argument");
}

/// Many clients draining thin accounts into their overdrafts, with and without group commit,
/// while a banker freezes and unfreezes them: every answer is a transfer or a refusal, no
/// balance ever passes its limit, and the ledger adds up.
#[tokio::test]
async fn racing_debits_never_pass_the_limit_while_accounts_freeze_and_thaw() {
    for group_commit in ["true", "false"] {
        let app = std::sync::Arc::new(TestApp::spawn_with(&[("GROUP_COMMIT", group_commit)]).await);
        let banker = app.banker("clerk").await;
        let mut accounts = Vec::new();
        for name in ["ann", "ben", "cat"] {
            let token = app.user(name).await;
            let id = app.open_account(&token, "USD").await;
            app.deposit(&banker, id, 30, "USD").await;
            set_limit(&app, &banker, id, 20)
                .await
                .assert(StatusCode::OK);
            accounts.push((token, id));
        }
        let mut tasks = JoinSet::new();
        for task in 0..24 {
            let app = app.clone();
            let (token, from) = accounts[task % 3].clone();
            let to = accounts[(task + 1) % 3].1;
            tasks.spawn(async move {
                let mut outcomes = Vec::new();
                for _ in 0..8 {
                    let reply = transfer(&app, &token, from, to, 7).await;
                    outcomes.push(reply.status);
                }
                outcomes
            });
        }
        {
            let app = app.clone();
            let banker = banker.clone();
            let ids: Vec<i64> = accounts.iter().map(|(_, id)| *id).collect();
            tasks.spawn(async move {
                for round in 0..6 {
                    let status = if round % 2 == 0 { "frozen" } else { "active" };
                    for id in &ids {
                        set_status(&app, &banker, *id, status)
                            .await
                            .assert(StatusCode::OK);
                    }
                }
                Vec::new()
            });
        }
        while let Some(outcomes) = tasks.join_next().await {
            for status in outcomes.unwrap() {
                assert!(
                    [StatusCode::CREATED, StatusCode::UNPROCESSABLE_ENTITY].contains(&status),
                    "{status}"
                );
            }
        }
        let below: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM accounts WHERE kind = 'customer' AND balance < -overdraft_limit",
        )
        .fetch_one(app.db.pool())
        .await
        .unwrap();
        assert_eq!(below, 0, "group commit {group_commit}");
        assert_ledger_consistent(app.db.pool()).await;
    }
}

#[tokio::test]
async fn account_controls_under_a_key_happen_once_and_answer_the_same_way_again() {
    let World { app, banker, a, .. } = World::new().await;
    app.deposit(&banker, a, 100, "USD").await;
    let put = |path: String, key: &'static str, body: Value| {
        let app = &app;
        let banker = &banker;
        async move {
            app.call_with(
                Method::PUT,
                &path,
                Some(banker),
                &[("Idempotency-Key", key)],
                Some(body),
            )
            .await
        }
    };
    let status = format!("/v1/accounts/{a}/status");
    let frozen = put(
        status.clone(),
        "freeze-1",
        json!({ "status": "frozen", "reason": "review" }),
    )
    .await
    .assert(StatusCode::OK);
    assert_eq!(frozen["account"]["status"], "frozen");
    set_status(&app, &banker, a, "active")
        .await
        .assert(StatusCode::OK);
    // The retry is answered as the first time, and does not freeze the account again.
    let again = put(
        status.clone(),
        "freeze-1",
        json!({ "status": "frozen", "reason": "review" }),
    )
    .await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.header("idempotent-replayed"), "true");
    assert_eq!(again.body["account"]["status"], "frozen");
    let now = app
        .get(&format!("/v1/accounts/{a}"), &banker)
        .await
        .assert(StatusCode::OK);
    assert_eq!(now["account"]["status"], "active");
    put(status.clone(), "freeze-1", json!({ "status": "closed" }))
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "idempotency_mismatch");

    // A refusal is replayed too, even once its cause is gone.
    put(status.clone(), "close-1", json!({ "status": "closed" }))
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "failed_precondition");
    money(&app, &banker, "withdrawals", a, 100)
        .await
        .assert(StatusCode::CREATED);
    let refused = put(status.clone(), "close-1", json!({ "status": "closed" })).await;
    refused.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "failed_precondition");
    assert_eq!(refused.header("idempotent-replayed"), "true");

    let limit = format!("/v1/accounts/{a}/overdraft_limit");
    let first = put(limit.clone(), "limit-1", json!({ "limit": 500 }))
        .await
        .assert(StatusCode::OK);
    set_limit(&app, &banker, a, 0).await.assert(StatusCode::OK);
    let replayed = put(limit, "limit-1", json!({ "limit": 500 })).await;
    assert_eq!(replayed.header("idempotent-replayed"), "true");
    assert_eq!(
        replayed.body["account"]["overdraft_limit"],
        first["account"]["overdraft_limit"]
    );
    let now = app
        .get(&format!("/v1/accounts/{a}"), &banker)
        .await
        .assert(StatusCode::OK);
    assert_eq!(now["account"]["overdraft_limit"], 0);
    assert_ledger_consistent(app.db.pool()).await;
}
