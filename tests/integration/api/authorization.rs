//! The authorization matrix: depositor A (owner), depositor B (stranger) and a banker, on every
//! route that reads or changes someone's user, account or transfer.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::harness::TestApp;

/// Alice owns `account`, sent `transfer` and placed `hold` from it; Bob is a stranger to all
/// three; the banker is a clerk.
pub struct World {
    pub app: TestApp,
    pub alice: String,
    pub bob: String,
    pub banker: String,
    pub account: i64,
    pub transfer: i64,
    pub hold: i64,
}

pub async fn world() -> World {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let banker = app.banker("clerk").await;
    let account = app.open_account(&alice, "USD").await;
    let other = app.open_account(&app.user("carol").await, "USD").await;
    app.deposit(&banker, account, 1_000, "USD").await;
    let transfer = app
        .post("/v1/transfers", Some(&alice), json!({ "from_account_id": account, "to_account_id": other, "amount": 10, "currency": "USD" }))
        .await
        .assert(StatusCode::CREATED)["transfer"]["id"]
        .as_i64()
        .unwrap();
    let hold = app
        .post("/v1/holds", Some(&alice), json!({ "from_account_id": account, "to_account_id": other, "amount": 5, "currency": "USD" }))
        .await
        .assert(StatusCode::CREATED)["hold"]["id"]
        .as_i64()
        .unwrap();
    World {
        app,
        alice,
        bob,
        banker,
        account,
        transfer,
        hold,
    }
}

/// (method, path, body, expected for alice, for bob, for the banker). Someone else's account is
/// `not_found` to a customer, as one that does not exist (SPEC §10).
fn routes(w: &World) -> Vec<(Method, String, Option<Value>, [StatusCode; 3])> {
    use StatusCode as S;
    let a = w.account;
    vec![
        (
            Method::GET,
            format!("/v1/accounts/{a}"),
            None,
            [S::OK, S::NOT_FOUND, S::OK],
        ),
        (
            Method::GET,
            format!("/v1/accounts/{a}/entries"),
            None,
            [S::OK, S::NOT_FOUND, S::OK],
        ),
        (
            Method::GET,
            format!("/v1/transfers/{}", w.transfer),
            None,
            [S::OK, S::FORBIDDEN, S::OK],
        ),
        (
            Method::GET,
            format!("/v1/holds/{}", w.hold),
            None,
            [S::OK, S::FORBIDDEN, S::OK],
        ),
        (
            Method::GET,
            format!("/v1/accounts/{a}/holds"),
            None,
            [S::OK, S::NOT_FOUND, S::OK],
        ),
        (
            Method::GET,
            "/v1/users/alice".into(),
            None,
            [S::OK, S::FORBIDDEN, S::OK],
        ),
        (
            Method::PATCH,
            "/v1/users/alice".into(),
            Some(json!({ "full_name": "Alice L." })),
            [S::OK, S::FORBIDDEN, S::OK],
        ),
        (
            Method::GET,
            "/v1/accounts?owner=alice".into(),
            None,
            [S::OK, S::FORBIDDEN, S::OK],
        ),
        (
            Method::POST,
            format!("/v1/accounts/{a}/deposits"),
            Some(json!({ "amount": 5, "currency": "USD" })),
            [S::FORBIDDEN, S::FORBIDDEN, S::CREATED],
        ),
        (
            Method::POST,
            format!("/v1/accounts/{a}/withdrawals"),
            Some(json!({ "amount": 5, "currency": "USD" })),
            [S::FORBIDDEN, S::FORBIDDEN, S::CREATED],
        ),
        (
            Method::PUT,
            "/v1/users/bob/role".into(),
            Some(json!({ "role": "depositor" })),
            [S::FORBIDDEN, S::FORBIDDEN, S::OK],
        ),
    ]
}

#[tokio::test]
async fn owners_strangers_and_bankers_get_exactly_their_rights() {
    let w = world().await;
    for (method, path, body, expected) in routes(&w) {
        for (who, token, status) in [
            ("alice", &w.alice, expected[0]),
            ("bob", &w.bob, expected[1]),
            ("banker", &w.banker, expected[2]),
        ] {
            let reply = w
                .app
                .call(method.clone(), &path, Some(token), body.clone())
                .await;
            assert_eq!(
                reply.status, status,
                "{who} {method} {path}: {}",
                reply.body
            );
            if status == StatusCode::FORBIDDEN {
                assert_eq!(reply.code(), "permission_denied");
            }
            if status == StatusCode::NOT_FOUND {
                assert_eq!(reply.code(), "not_found");
            }
        }
    }
}

#[tokio::test]
async fn a_depositor_lists_only_their_own_accounts_and_a_banker_everyones() {
    let w = world().await;
    let mine = w
        .app
        .get("/v1/accounts", &w.alice)
        .await
        .assert(StatusCode::OK);
    assert!(
        mine["accounts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["owner"] == "alice")
    );
    let bobs = w
        .app
        .get("/v1/accounts", &w.bob)
        .await
        .assert(StatusCode::OK);
    assert_eq!(bobs["accounts"].as_array().unwrap().len(), 0);
    let all = w
        .app
        .get("/v1/accounts?page_size=100", &w.banker)
        .await
        .assert(StatusCode::OK);
    let owners: Vec<&str> = all["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["owner"].as_str().unwrap())
        .collect();
    assert!(
        owners.contains(&"alice") && owners.contains(&"carol"),
        "{owners:?}"
    );
}

#[tokio::test]
async fn a_role_change_reaches_the_user_at_their_next_token() {
    let w = world().await;
    w.app
        .call(
            Method::PUT,
            "/v1/users/bob/role",
            Some(&w.banker),
            Some(json!({ "role": "banker" })),
        )
        .await
        .assert(StatusCode::OK);
    // Bob's current access token still says depositor; a new login says banker.
    let path = format!("/v1/accounts/{}", w.account);
    w.app
        .get(&path, &w.bob)
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    let bob = crate::harness::token(&w.app.login("bob").await);
    w.app.get(&path, &bob).await.assert(StatusCode::OK);
    w.app
        .call(
            Method::PUT,
            "/v1/users/bob/role",
            Some(&w.banker),
            Some(json!({ "role": "king" })),
        )
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_argument");
}
