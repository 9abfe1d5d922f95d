//! Token lifetimes, renewal, logout and password changes.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;

use super::harness::{TestApp, token};

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
        Some(json!({ "password": "a brand new one" })),
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
            Some(json!({ "email": "alice@new.example.org", "full_name": "Alice N." })),
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
