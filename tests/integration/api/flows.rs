//! Whole journeys through the API: what a client does, what it sees.

use reqwest::StatusCode;
use serde_json::json;
use tokio::task::JoinSet;

use crate::harness::TestApp;
use crate::helpers::assert_ledger_consistent;

#[tokio::test]
async fn sign_up_log_in_open_fund_transfer_and_read_the_statement() {
    let app = TestApp::spawn().await;
    let created = app.signup("alice").await;
    assert_eq!(created["user"]["username"], "alice");
    assert_eq!(created["user"]["role"], "depositor");
    assert_eq!(created["user"]["is_email_verified"], false);
    assert!(created["user"].get("hashed_password").is_none());

    let login = app.login("alice").await;
    for field in [
        "session_id",
        "access_token",
        "access_token_expires_at",
        "refresh_token",
        "refresh_token_expires_at",
    ] {
        assert!(login[field].is_string(), "{field}: {login}");
    }
    assert_eq!(login["user"]["username"], "alice");
    let alice = login["access_token"].as_str().unwrap().to_owned();
    let bob = app.user("bob").await;
    let banker = app.banker("clerk").await;

    let a = app.open_account(&alice, "USD").await;
    let b = app.open_account(&bob, "USD").await;
    app.deposit(&banker, a, 10_000, "USD").await;

    let reply = app
        .post(
            "/v1/transfers",
            Some(&alice),
            json!({ "from_account_id": a, "to_account_id": b, "amount": 2_500, "currency": "USD" }),
        )
        .await
        .assert(StatusCode::CREATED);
    assert_eq!(reply["transfer"]["amount"], 2_500);
    assert_eq!(reply["from_account"]["id"], a);
    assert_eq!(reply["from_account"]["balance"], 7_500);
    assert_eq!(reply["from_entry"]["amount"], -2_500);
    assert_eq!(reply["from_entry"]["balance_after"], 7_500);
    assert_eq!(reply["to_entry"]["amount"], 2_500);
    // The recipient's balance is not the sender's business: no to_account, and the recipient's
    // entry carries no balance_after.
    assert!(reply.get("to_account").is_none());
    assert_eq!(reply["to_entry"]["account_id"], b);
    assert!(reply["to_entry"].get("balance_after").is_none(), "{reply}");
    let transfer_id = reply["transfer"]["id"].as_i64().unwrap();

    let got = app
        .get(&format!("/v1/transfers/{transfer_id}"), &bob)
        .await
        .assert(StatusCode::OK);
    assert_eq!(got["transfer"]["from_account_id"], a);

    let statement = app
        .get(&format!("/v1/accounts/{a}/entries"), &alice)
        .await
        .assert(StatusCode::OK);
    let amounts: Vec<i64> = statement["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["amount"].as_i64().unwrap())
        .collect();
    assert_eq!(amounts, [-2_500, 10_000], "newest first");
    assert!(statement.get("next_page_token").is_none());

    let account = app
        .get(&format!("/v1/accounts/{b}"), &bob)
        .await
        .assert(StatusCode::OK);
    assert_eq!(account["account"]["balance"], 2_500);
    assert_eq!(account["account"]["currency"], "USD");
    assert_ledger_consistent(app.db.pool()).await;
}

#[tokio::test]
async fn refused_transfers_say_why_and_move_nothing() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let banker = app.banker("clerk").await;
    let a = app.open_account(&alice, "USD").await;
    let b = app.open_account(&bob, "USD").await;
    let e = app.open_account(&bob, "EUR").await;
    app.deposit(&banker, a, 100, "USD").await;
    let transfer = |to: i64, amount: i64, currency: &str| json!({ "from_account_id": a, "to_account_id": to, "amount": amount, "currency": currency });

    app.post("/v1/transfers", Some(&alice), transfer(b, 101, "USD"))
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "insufficient_funds");
    // Bob's EUR account takes no USD: to Alice it is not found, as if it did not exist (what
    // currency someone else's account holds is not hers to learn).
    app.post("/v1/transfers", Some(&alice), transfer(e, 10, "USD"))
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    app.post("/v1/transfers", Some(&alice), transfer(999_999, 10, "USD"))
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    app.post("/v1/transfers", Some(&alice), transfer(a, 10, "USD"))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_argument");
    app.post("/v1/transfers", Some(&alice), transfer(b, 0, "USD"))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_argument");
    // The bank's USD settlement account cannot receive a customer transfer: not found either.
    let settlement: i64 = sqlx::query_scalar(
        "SELECT id FROM accounts WHERE kind = 'settlement' AND currency = 'USD'",
    )
    .fetch_one(app.db.pool())
    .await
    .unwrap();
    let reply = app
        .post(
            "/v1/transfers",
            Some(&alice),
            transfer(settlement, 10, "USD"),
        )
        .await;
    reply.assert_error(StatusCode::NOT_FOUND, "not_found");
    assert_eq!(
        reply.body["error"]["message"],
        format!("account {settlement} not found")
    );
    // Bob cannot send from Alice's account.
    app.post("/v1/transfers", Some(&bob), transfer(b, 10, "USD"))
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");

    let balance = app
        .get(&format!("/v1/accounts/{a}"), &alice)
        .await
        .assert(StatusCode::OK);
    assert_eq!(balance["account"]["balance"], 100);
    assert_ledger_consistent(app.db.pool()).await;
}

#[tokio::test]
async fn deposits_and_withdrawals_answer_with_the_customers_account() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let banker = app.banker("clerk").await;
    let a = app.open_account(&alice, "JPY").await;
    let deposit = app
        .post(
            &format!("/v1/accounts/{a}/deposits"),
            Some(&banker),
            json!({ "amount": 5_000, "currency": "JPY" }),
        )
        .await
        .assert(StatusCode::CREATED);
    assert_eq!(deposit["account"]["id"], a);
    assert_eq!(deposit["account"]["balance"], 5_000);
    assert_eq!(deposit["entry"]["amount"], 5_000);
    let withdrawal = app
        .post(
            &format!("/v1/accounts/{a}/withdrawals"),
            Some(&banker),
            json!({ "amount": 1_200, "currency": "JPY" }),
        )
        .await
        .assert(StatusCode::CREATED);
    assert_eq!(withdrawal["account"]["balance"], 3_800);
    assert_eq!(withdrawal["entry"]["amount"], -1_200);
    app.post(
        &format!("/v1/accounts/{a}/withdrawals"),
        Some(&banker),
        json!({ "amount": 3_801, "currency": "JPY" }),
    )
    .await
    .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "insufficient_funds");
    assert_ledger_consistent(app.db.pool()).await;
}

#[tokio::test]
async fn lists_page_with_opaque_tokens() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let banker = app.banker("clerk").await;
    let mut opened = Vec::new();
    for currency in ["USD", "EUR", "GBP", "CAD", "JPY"] {
        opened.push(app.open_account(&alice, currency).await);
    }
    let mut seen = Vec::new();
    let mut path = "/v1/accounts?page_size=2".to_owned();
    loop {
        let page = app.get(&path, &alice).await.assert(StatusCode::OK);
        seen.extend(
            page["accounts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a["id"].as_i64().unwrap()),
        );
        match page["next_page_token"].as_str() {
            Some(token) => path = format!("/v1/accounts?page_size=2&page_token={token}"),
            None => break,
        }
    }
    assert_eq!(seen, opened);

    for i in 1..=5 {
        app.deposit(&banker, opened[0], i, "USD").await;
    }
    let first = app
        .get(
            &format!("/v1/accounts/{}/entries?page_size=3", opened[0]),
            &alice,
        )
        .await
        .assert(StatusCode::OK);
    let token = first["next_page_token"].as_str().unwrap();
    let second = app
        .get(
            &format!(
                "/v1/accounts/{}/entries?page_size=3&page_token={token}",
                opened[0]
            ),
            &alice,
        )
        .await
        .assert(StatusCode::OK);
    let amounts: Vec<i64> = first["entries"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second["entries"].as_array().unwrap())
        .map(|e| e["amount"].as_i64().unwrap())
        .collect();
    assert_eq!(amounts, [5, 4, 3, 2, 1]);
    assert!(second.get("next_page_token").is_none());
    // An accounts token is no statement token.
    let accounts_token = app
        .get("/v1/accounts?page_size=1", &alice)
        .await
        .assert(StatusCode::OK)["next_page_token"]
        .as_str()
        .unwrap()
        .to_owned();
    app.get(
        &format!(
            "/v1/accounts/{}/entries?page_token={accounts_token}",
            opened[0]
        ),
        &alice,
    )
    .await
    .assert_error(StatusCode::BAD_REQUEST, "invalid_argument");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_transfers_through_the_api_keep_the_ledger_balanced() {
    let app = TestApp::spawn().await;
    let banker = app.banker("clerk").await;
    let mut users = Vec::new();
    for i in 0..6 {
        let token = app.user(&format!("user_{i}")).await;
        let account = app.open_account(&token, "USD").await;
        // Little money and amounts up to 400: some transfers must find the account short.
        app.deposit(&banker, account, 300, "USD").await;
        users.push((token, account));
    }
    let app = std::sync::Arc::new(app);
    let mut tasks = JoinSet::new();
    for task in 0..12usize {
        let app = app.clone();
        let users = users.clone();
        tasks.spawn(async move {
            let mut outcomes = Vec::new();
            for i in 0..20usize {
                let from = (task + i) % users.len();
                let to = (from + 1 + i % (users.len() - 1)) % users.len();
                let reply = app
                    .post(
                        "/v1/transfers",
                        Some(&users[from].0),
                        json!({ "from_account_id": users[from].1, "to_account_id": users[to].1,
                                "amount": 1 + (task * 37 + i * 11) % 400, "currency": "USD" }),
                    )
                    .await;
                outcomes.push((reply.status, reply.code().to_owned()));
            }
            outcomes
        });
    }
    let (mut committed, mut short) = (0, 0);
    while let Some(outcomes) = tasks.join_next().await {
        for (status, code) in outcomes.unwrap() {
            match status {
                StatusCode::CREATED => committed += 1,
                StatusCode::UNPROCESSABLE_ENTITY if code == "insufficient_funds" => short += 1,
                other => panic!("unexpected {other} {code}"),
            }
        }
    }
    eprintln!("api concurrency: {committed} committed, {short} insufficient funds");
    assert_eq!(committed + short, 12 * 20);
    assert!(committed > 0 && short > 0, "both outcomes must occur");
    let total: i64 =
        sqlx::query_scalar("SELECT sum(balance)::bigint FROM accounts WHERE kind = 'customer'")
            .fetch_one(app.db.pool())
            .await
            .unwrap();
    assert_eq!(total, 6 * 300);
    assert_ledger_consistent(app.db.pool()).await;
}

#[tokio::test]
async fn health_and_readiness_answer() {
    let app = TestApp::spawn().await;
    let health = app
        .call(reqwest::Method::GET, "/healthz", None, None)
        .await
        .assert(StatusCode::OK);
    assert_eq!(health["status"], "ok");
    let ready = app
        .call(reqwest::Method::GET, "/readyz", None, None)
        .await
        .assert(StatusCode::OK);
    assert_eq!(ready["status"], "ready");
}
