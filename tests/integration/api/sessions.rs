//! Token lifetimes, renewal, logout and password changes.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::harness::{TestApp, token};

#[tokio::test]
async fn an_expired_access_token_is_refused_and_renewal_gives_a_working_one() {
    let app = TestApp::spawn_with(&[("ACCESS_TOKEN_DURATION", "1s")]).await;
    app.signup("alice").await;
    let login = app.login("alice").await;
    let access = token(&login);
    let refresh = login["refresh_token"].as_str().unwrap();
    app.get("/v1/users/alice", &access)
        .await
        .assert(StatusCode::OK);

    tokio::time::sleep(Duration::from_millis(1_100)).await;
    app.get("/v1/users/alice", &access)
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");

    let renewed = app
        .post(
            "/v1/tokens/renew_access",
            None,
            json!({ "refresh_token": refresh }),
        )
        .await
        .assert(StatusCode::OK);
    assert!(renewed["access_token_expires_at"].is_string());
    app.get("/v1/users/alice", &token(&renewed))
        .await
        .assert(StatusCode::OK);
    // An access token cannot renew.
    app.post(
        "/v1/tokens/renew_access",
        None,
        json!({ "refresh_token": access }),
    )
    .await
    .assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
}

#[tokio::test]
async fn a_logged_out_session_cannot_renew() {
    let app = TestApp::spawn().await;
    app.signup("alice").await;
    let login = app.login("alice").await;
    let refresh = login["refresh_token"].as_str().unwrap();
    let reply = app
        .post(
            "/v1/users/logout",
            None,
            json!({ "refresh_token": refresh }),
        )
        .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    app.post(
        "/v1/tokens/renew_access",
        None,
        json!({ "refresh_token": refresh }),
    )
    .await
    .assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
    // The session row keeps only a hash of the token.
    let stored: Vec<u8> = sqlx::query_scalar("SELECT refresh_token_hash FROM sessions")
        .fetch_one(app.db.pool())
        .await
        .unwrap();
    assert_eq!(stored.len(), 32);
    assert!(!String::from_utf8_lossy(&stored).contains(refresh));
}

#[tokio::test]
async fn a_password_change_revokes_the_other_sessions_and_the_new_password_works() {
    let app = TestApp::spawn().await;
    app.signup("alice").await;
    let here = app.login("alice").await;
    let elsewhere = app.login("alice").await;
    app.call(
        Method::PATCH,
        "/v1/users/alice",
        Some(&token(&here)),
        Some(json!({ "password": "a brand new one", "current_password": "password123" })),
    )
    .await
    .assert(StatusCode::OK);
    let renew = |login: &serde_json::Value| json!({ "refresh_token": login["refresh_token"] });
    app.post("/v1/tokens/renew_access", None, renew(&elsewhere))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
    app.post("/v1/tokens/renew_access", None, renew(&here))
        .await
        .assert(StatusCode::OK);
    app.post(
        "/v1/users/login",
        None,
        json!({ "username": "alice", "password": "password123" }),
    )
    .await
    .assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
    app.post(
        "/v1/users/login",
        None,
        json!({ "username": "alice", "password": "a brand new one" }),
    )
    .await
    .assert(StatusCode::OK);
}

#[tokio::test]
async fn an_email_change_resets_verification_and_an_empty_update_is_refused() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let updated = app
        .call(
            Method::PATCH,
            "/v1/users/alice",
            Some(&alice),
            Some(json!({
                "email": "alice@new.example.org",
                "full_name": "Alice N.",
                "current_password": "password123",
            })),
        )
        .await
        .assert(StatusCode::OK);
    assert_eq!(updated["user"]["email"], "alice@new.example.org");
    assert_eq!(updated["user"]["full_name"], "Alice N.");
    assert_eq!(updated["user"]["is_email_verified"], false);
    app.call(
        Method::PATCH,
        "/v1/users/alice",
        Some(&alice),
        Some(json!({})),
    )
    .await
    .assert_error(StatusCode::BAD_REQUEST, "invalid_argument");
}

#[tokio::test]
async fn a_stolen_access_token_cannot_change_the_password_or_email_on_either_api() {
    use crate::grpc::rpcs::{authed, client, table_code, violated_fields};
    use simplebank::grpc::pb;

    let app = TestApp::spawn_with(&[("LOGIN_FAILURES_PER_USERNAME", "3")]).await;
    let alice = app.user("alice").await;
    let change = |body: serde_json::Value| {
        app.call(Method::PATCH, "/v1/users/alice", Some(&alice), Some(body))
    };
    // Without current_password: refused by field, nothing changed.
    let missing = change(json!({ "password": "a thief's choice" })).await;
    missing.assert_error(StatusCode::BAD_REQUEST, "invalid_argument");
    assert_eq!(
        missing.body["error"]["details"][0]["field"],
        "current_password"
    );
    // Wrong, over HTTP and over gRPC: unauthenticated.
    change(json!({ "email": "thief@example.com", "current_password": "a wild guess" }))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
    let mut grpc = client(&app).await;
    let attempt = |current: Option<&str>| {
        authed(
            &alice,
            pb::UpdateUserRequest {
                username: "alice".into(),
                password: Some("a thief's choice".into()),
                current_password: current.map(Into::into),
                ..Default::default()
            },
        )
    };
    let status = grpc.update_user(attempt(None)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(violated_fields(&status), ["current_password"]);
    let status = grpc
        .update_user(attempt(Some("another guess")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    // Each wrong one counted against this session: the third fills its bucket, and then even
    // the right password is refused to the stolen token. The owner is not locked out: a real
    // login (slowed: the username is under attack) still works.
    change(json!({ "email": "thief@example.com", "current_password": "third guess" }))
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
    app.post(
        "/v1/users/login",
        None,
        json!({ "username": "alice", "password": "password123" }),
    )
    .await
    .assert(StatusCode::OK);
    let status = grpc
        .update_user(attempt(Some("password123")))
        .await
        .unwrap_err();
    assert_eq!(table_code(&status), "rate_limited");
    // Nothing changed: the old password is still hers, the address too.
    let me = app
        .get("/v1/users/alice", &alice)
        .await
        .assert(StatusCode::OK);
    assert_eq!(me["user"]["email"], "alice@example.com");
    assert_eq!(me["user"]["password_changed_at"], "0001-01-01T00:00:00Z");
}
