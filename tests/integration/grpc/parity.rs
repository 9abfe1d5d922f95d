//! The same scenario through HTTP and through gRPC, on two fresh databases, ends the same:
//! balances, statements and error codes.

use reqwest::StatusCode;
use serde_json::json;
use simplebank::grpc::pb;
use simplebank::store::prelude::*;

use super::rpcs::{authed, client, open_account, sign_up_and_log_in, table_code};
use crate::harness::TestApp;

/// What a scenario leaves behind: (owner, balance) per account, each statement's amounts, and the
/// error code of the failing transfer.
type Outcome = (Vec<(String, i64)>, Vec<Vec<i64>>, String);

async fn make_banker(app: &TestApp, name: &str) {
    app.db
        .store
        .set_user_role(
            &simplebank::domain::Username::parse(name).unwrap(),
            simplebank::domain::Role::Banker,
        )
        .await
        .unwrap();
}

async fn over_http() -> Outcome {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    app.signup("clerk").await;
    make_banker(&app, "clerk").await;
    let clerk = crate::harness::token(&app.login("clerk").await);
    let a = app.open_account(&alice, "USD").await;
    let b = app.open_account(&bob, "USD").await;
    app.deposit(&clerk, a, 1_000, "USD").await;
    for (from_token, from, to, amount) in
        [(&alice, a, b, 300), (&bob, b, a, 100), (&alice, a, b, 50)]
    {
        app.post("/v1/transfers", Some(from_token), json!({ "from_account_id": from, "to_account_id": to, "amount": amount, "currency": "USD" }))
            .await.assert(StatusCode::CREATED);
    }
    let failing = app.post("/v1/transfers", Some(&bob), json!({ "from_account_id": b, "to_account_id": a, "amount": 10_000, "currency": "USD" })).await;
    let mut balances = Vec::new();
    let mut statements = Vec::new();
    for (token, id) in [(&alice, a), (&bob, b)] {
        let account = app
            .get(&format!("/v1/accounts/{id}"), token)
            .await
            .assert(StatusCode::OK);
        balances.push((
            account["account"]["owner"].as_str().unwrap().to_owned(),
            account["account"]["balance"].as_i64().unwrap(),
        ));
        let entries = app
            .get(&format!("/v1/accounts/{id}/entries"), token)
            .await
            .assert(StatusCode::OK);
        statements.push(
            entries["entries"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["amount"].as_i64().unwrap())
                .collect(),
        );
    }
    (balances, statements, failing.code().to_owned())
}

async fn over_grpc() -> Outcome {
    let app = TestApp::spawn().await;
    let mut c = client(&app).await;
    let alice = sign_up_and_log_in(&mut c, "alice").await;
    let bob = sign_up_and_log_in(&mut c, "bob").await;
    c.create_user(pb::CreateUserRequest {
        username: "clerk".into(),
        full_name: "Clerk".into(),
        email: "clerk@example.com".into(),
        password: "password123".into(),
    })
    .await
    .unwrap();
    make_banker(&app, "clerk").await;
    let clerk = c
        .login_user(pb::LoginUserRequest {
            username: "clerk".into(),
            password: "password123".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .access_token;
    let a = open_account(&mut c, &alice, "USD").await.id;
    let b = open_account(&mut c, &bob, "USD").await.id;
    c.deposit(authed(
        &clerk,
        pb::DepositRequest {
            account_id: a,
            amount: 1_000,
            currency: "USD".into(),
            ..Default::default()
        },
    ))
    .await
    .unwrap();
    for (from_token, from, to, amount) in
        [(&alice, a, b, 300), (&bob, b, a, 100), (&alice, a, b, 50)]
    {
        c.create_transfer(authed(
            from_token,
            pb::CreateTransferRequest {
                from_account_id: from,
                to_account_id: to,
                amount,
                currency: "USD".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    }
    let failing = c
        .create_transfer(authed(
            &bob,
            pb::CreateTransferRequest {
                from_account_id: b,
                to_account_id: a,
                amount: 10_000,
                currency: "USD".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    let mut balances = Vec::new();
    let mut statements = Vec::new();
    for (token, id) in [(&alice, a), (&bob, b)] {
        let account = c
            .get_account(authed(token, pb::GetAccountRequest { id }))
            .await
            .unwrap()
            .into_inner()
            .account
            .unwrap();
        balances.push((account.owner, account.balance));
        let entries = c
            .list_entries(authed(
                token,
                pb::ListEntriesRequest {
                    account_id: id,
                    page_size: 0,
                    page_token: String::new(),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        statements.push(entries.entries.iter().map(|e| e.amount).collect());
    }
    (balances, statements, table_code(&failing))
}

#[tokio::test]
async fn one_scenario_ends_the_same_over_http_and_grpc() {
    let (http, grpc) = tokio::join!(over_http(), over_grpc());
    assert_eq!(http, grpc);
    assert_eq!(http.0, [("alice".to_owned(), 750), ("bob".to_owned(), 250)]);
    assert_eq!(http.1, [vec![-50, 100, -300, 1_000], vec![50, -100, 300]]);
    assert_eq!(http.2, "insufficient_funds");
}
