//! Email verification end to end: sign up, the email the outbox worker sends, the link.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::harness::TestApp;

fn link(id: i64, code: &str) -> String {
    format!("/v1/verify_email?email_id={id}&secret_code={code}")
}

#[tokio::test]
async fn the_link_in_the_sign_up_email_verifies_the_address_once() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let me = app
        .get("/v1/users/alice", &alice)
        .await
        .assert(StatusCode::OK);
    assert_eq!(me["user"]["is_email_verified"], false);

    let (id, code) = app.mail.verification_link("alice@example.com").await;
    let verified = app
        .call(Method::GET, &link(id, &code), None, None)
        .await
        .assert(StatusCode::OK);
    assert_eq!(verified, json!({ "is_verified": true }));
    let me = app
        .get("/v1/users/alice", &alice)
        .await
        .assert(StatusCode::OK);
    assert_eq!(me["user"]["is_email_verified"], true);

    // A second click is refused, and says why.
    let again = app.call(Method::GET, &link(id, &code), None, None).await;
    again.assert_error(StatusCode::BAD_REQUEST, "invalid_argument");
    assert_eq!(again.body["error"]["details"][0]["field"], "secret_code");
    assert_eq!(app.mail.count_to("alice@example.com"), 1);
}

#[tokio::test]
async fn bad_links_get_client_errors_never_internal_ones() {
    let app = TestApp::spawn().await;
    app.signup("alice").await;
    let (id, code) = app.mail.verification_link("alice@example.com").await;
    let other = "0".repeat(64);
    for (path, status, field) in [
        (
            link(id, &other),
            StatusCode::BAD_REQUEST,
            Some("secret_code"),
        ),
        (link(id + 100, &code), StatusCode::NOT_FOUND, None),
        (
            link(id, "short"),
            StatusCode::BAD_REQUEST,
            Some("secret_code"),
        ),
        (link(0, &code), StatusCode::BAD_REQUEST, Some("email_id")),
        (
            format!("/v1/verify_email?email_id={id}"),
            StatusCode::BAD_REQUEST,
            Some("query"),
        ),
        (
            format!("/v1/verify_email?email_id=x&secret_code={code}"),
            StatusCode::BAD_REQUEST,
            Some("query"),
        ),
        (
            format!("{}&extra=1", link(id, &code)),
            StatusCode::BAD_REQUEST,
            Some("query"),
        ),
    ] {
        let reply = app.call(Method::GET, &path, None, None).await;
        assert_eq!(reply.status, status, "{path}: {}", reply.body);
        if let Some(field) = field {
            assert_eq!(reply.body["error"]["details"][0]["field"], field, "{path}");
        }
    }
    // None of that used the code up.
    app.call(Method::GET, &link(id, &code), None, None)
        .await
        .assert(StatusCode::OK);
}

#[tokio::test]
async fn changing_the_email_unverifies_it_and_mails_the_new_address() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let (id, code) = app.mail.verification_link("alice@example.com").await;
    app.call(Method::GET, &link(id, &code), None, None)
        .await
        .assert(StatusCode::OK);

    let changed = app
        .call(
            Method::PATCH,
            "/v1/users/alice",
            Some(&alice),
            Some(json!({ "email": "alice@elsewhere.org", "current_password": "password123" })),
        )
        .await
        .assert(StatusCode::OK);
    assert_eq!(changed["user"]["is_email_verified"], false);
    let (new_id, new_code) = app.mail.verification_link("alice@elsewhere.org").await;
    assert_ne!(new_id, id);
    app.call(Method::GET, &link(new_id, &new_code), None, None)
        .await
        .assert(StatusCode::OK);
    let me = app
        .get("/v1/users/alice", &alice)
        .await
        .assert(StatusCode::OK);
    assert_eq!(me["user"]["is_email_verified"], true);
}
