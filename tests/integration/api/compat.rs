//! simple_bank's routes and shapes (`SIMPLE_BANK_COMPAT=true`), played as a simple_bank client
//! would: sign up, log in, renew, open and page through accounts, transfer, fail a transfer.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::harness::TestApp;

fn keys(value: &Value) -> Vec<&str> {
    let mut keys: Vec<&str> = value
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

const USER_KEYS: [&str; 5] = [
    "created_at",
    "email",
    "full_name",
    "password_changed_at",
    "username",
];

async fn compat_app() -> TestApp {
    TestApp::spawn_with(&[("SIMPLE_BANK_COMPAT", "true")]).await
}

fn signup_body(name: &str) -> Value {
    json!({
        "username": name,
        "full_name": format!("{name} Example"),
        "email": format!("{name}@example.com"),
        "password": "password123",
        "ignored_by_simple_bank_too": true,
    })
}

#[tokio::test]
async fn a_simple_bank_client_session_works_unchanged() {
    let app = compat_app().await;

    // gin sign-up: 200 and the bare user; grpc-gateway sign-up: {"user": ...}.
    let alice = app
        .post("/users", None, signup_body("alice"))
        .await
        .assert(StatusCode::OK);
    assert_eq!(keys(&alice), USER_KEYS);
    let bob = app
        .post("/v1/create_user", None, signup_body("bob"))
        .await
        .assert(StatusCode::OK);
    assert_eq!(keys(&bob["user"]), USER_KEYS);
    app.post("/users", None, signup_body("alice"))
        .await
        .assert_error(StatusCode::CONFLICT, "already_exists");

    let login = |path: &'static str, name: &'static str| {
        let app = &app;
        async move {
            app.post(
                path,
                None,
                json!({ "username": name, "password": "password123" }),
            )
            .await
            .assert(StatusCode::OK)
        }
    };
    let alice_login = login("/users/login", "alice").await;
    assert_eq!(
        keys(&alice_login),
        [
            "access_token",
            "access_token_expires_at",
            "refresh_token",
            "refresh_token_expires_at",
            "session_id",
            "user"
        ]
    );
    assert_eq!(keys(&alice_login["user"]), USER_KEYS);
    let bob_token = login("/v1/login_user", "bob").await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let renewed = app
        .post(
            "/tokens/renew_access",
            None,
            json!({ "refresh_token": alice_login["refresh_token"] }),
        )
        .await
        .assert(StatusCode::OK);
    let alice_token = renewed["access_token"].as_str().unwrap().to_owned();

    // Accounts: 200 and bare objects, balance 0.
    let mut alice_accounts = Vec::new();
    for currency in ["USD", "EUR", "CAD", "GBP", "JPY", "AUD", "CHF"] {
        let account = app
            .post(
                "/accounts",
                Some(&alice_token),
                json!({ "currency": currency }),
            )
            .await
            .assert(StatusCode::OK);
        assert_eq!(
            keys(&account),
            ["balance", "created_at", "currency", "id", "owner"]
        );
        assert_eq!(account["balance"], 0);
        alice_accounts.push(account["id"].as_i64().unwrap());
    }
    let a = alice_accounts[0];
    let b = app
        .post("/accounts", Some(&bob_token), json!({ "currency": "USD" }))
        .await
        .assert(StatusCode::OK)["id"]
        .as_i64()
        .unwrap();
    let got = app
        .get(&format!("/accounts/{a}"), &alice_token)
        .await
        .assert(StatusCode::OK);
    assert_eq!(got["owner"], "alice");
    app.get(&format!("/accounts/{b}"), &alice_token)
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");

    // Offset pages of a bare array.
    let page = |id: i64, size: i64| {
        let app = &app;
        let token = alice_token.clone();
        async move {
            app.get(&format!("/accounts?page_id={id}&page_size={size}"), &token)
                .await
        }
    };
    let first = page(1, 5).await.assert(StatusCode::OK);
    let second = page(2, 5).await.assert(StatusCode::OK);
    let ids: Vec<i64> = first
        .as_array()
        .unwrap()
        .iter()
        .chain(second.as_array().unwrap())
        .map(|a| a["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, alice_accounts);
    assert_eq!(page(3, 5).await.assert(StatusCode::OK), json!([]));
    page(1, 4)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_argument");
    page(0, 5)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_argument");

    // A transfer: simple_bank's five parts, without the recipient's balance.
    let banker = app.banker("clerk").await;
    app.deposit(&banker, a, 1_000, "USD").await;
    let sent = app
        .post(
            "/transfers",
            Some(&alice_token),
            json!({ "from_account_id": a, "to_account_id": b, "amount": 300, "currency": "USD" }),
        )
        .await
        .assert(StatusCode::OK);
    assert_eq!(
        keys(&sent),
        [
            "from_account",
            "from_entry",
            "to_account",
            "to_entry",
            "transfer"
        ]
    );
    assert_eq!(sent["from_account"]["balance"], 700);
    assert!(sent["to_account"].get("balance").is_none(), "{sent}");
    assert_eq!(sent["to_account"]["id"], b);
    assert_eq!(
        keys(&sent["transfer"]),
        [
            "amount",
            "created_at",
            "from_account_id",
            "id",
            "to_account_id"
        ]
    );
    assert_eq!(
        keys(&sent["from_entry"]),
        ["account_id", "amount", "created_at", "id"]
    );
    assert_eq!(
        (
            sent["from_entry"]["amount"].as_i64(),
            sent["to_entry"]["amount"].as_i64()
        ),
        (Some(-300), Some(300))
    );
    app.post(
        "/transfers",
        Some(&alice_token),
        json!({ "from_account_id": a, "to_account_id": b, "amount": 10_000, "currency": "USD" }),
    )
    .await
    .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "insufficient_funds");
    let balance = app
        .get(&format!("/accounts/{a}"), &alice_token)
        .await
        .assert(StatusCode::OK)["balance"]
        .clone();
    assert_eq!(balance, 700);

    // grpc-gateway's update: the username in the body.
    let updated = app
        .call(
            Method::PATCH,
            "/v1/update_user",
            Some(&alice_token),
            Some(json!({ "username": "alice", "full_name": "Alice Liddell" })),
        )
        .await
        .assert(StatusCode::OK);
    assert_eq!(updated["user"]["full_name"], "Alice Liddell");
    app.call(
        Method::PATCH,
        "/v1/update_user",
        Some(&bob_token),
        Some(json!({ "username": "alice", "full_name": "Mallory" })),
    )
    .await
    .assert_error(StatusCode::FORBIDDEN, "permission_denied");
}

#[tokio::test]
async fn the_compat_routes_are_absent_unless_switched_on() {
    let app = TestApp::spawn().await;
    for path in [
        "/users",
        "/users/login",
        "/v1/create_user",
        "/v1/login_user",
    ] {
        app.post(path, None, signup_body("alice"))
            .await
            .assert_error(StatusCode::NOT_FOUND, "not_found");
    }
    let doc = app
        .call(Method::GET, "/api-docs/openapi.json", None, None)
        .await
        .assert(StatusCode::OK);
    assert!(doc["paths"].get("/transfers").is_none());
}

#[tokio::test]
async fn openapi_documents_the_compat_routes_under_their_tag() {
    let app = compat_app().await;
    let doc = app
        .call(Method::GET, "/api-docs/openapi.json", None, None)
        .await
        .assert(StatusCode::OK);
    for (method, path) in [
        ("post", "/users"),
        ("post", "/users/login"),
        ("post", "/tokens/renew_access"),
        ("post", "/accounts"),
        ("get", "/accounts"),
        ("get", "/accounts/{id}"),
        ("post", "/transfers"),
        ("post", "/v1/create_user"),
        ("post", "/v1/login_user"),
        ("patch", "/v1/update_user"),
    ] {
        let tags = &doc["paths"][path][method]["tags"];
        assert_eq!(
            tags,
            &json!(["simple_bank compatibility"]),
            "{method} {path}"
        );
    }
}
