//! Every malformed request gets SPEC §4's error shape and changes nothing.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::harness::TestApp;

#[tokio::test]
async fn bad_sign_ups_name_every_bad_field() {
    let app = TestApp::spawn().await;
    let reply = app
        .post(
            "/v1/users",
            None,
            json!({ "username": "Al", "full_name": "", "email": "nope", "password": "short" }),
        )
        .await;
    reply.assert_error(StatusCode::BAD_REQUEST, "invalid_argument");
    let fields: Vec<&str> = reply.body["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["username", "full_name", "email", "password"]);

    app.signup("alice").await;
    let duplicate = json!({ "username": "alice", "full_name": "A", "email": "other@example.com", "password": "password123" });
    app.post("/v1/users", None, duplicate)
        .await
        .assert_error(StatusCode::CONFLICT, "already_exists");
    let same_email = json!({ "username": "alice2", "full_name": "A", "email": "ALICE@example.com", "password": "password123" });
    app.post("/v1/users", None, same_email)
        .await
        .assert_error(StatusCode::CONFLICT, "already_exists");
}

#[tokio::test]
async fn malformed_bodies_answer_in_the_error_shape() {
    let app = TestApp::spawn_with(&[("HTTP_BODY_LIMIT", "2048")]).await;
    let r = app
        .post_raw("/v1/users", "application/json", "{\"username\":")
        .await;
    r.assert_error(StatusCode::BAD_REQUEST, "invalid_argument");
    let r = app
        .post_raw("/v1/users", "text/plain", "username=alice")
        .await;
    r.assert_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "invalid_argument");
    let r = app
        .post("/v1/users", None, json!({ "username": "alice", "full_name": "A", "email": "a@b.co", "password": "password123", "admin": true }))
        .await;
    r.assert_error(StatusCode::BAD_REQUEST, "invalid_argument");
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("admin")
    );
    let r = app.post("/v1/users", None, json!({ "username": 5 })).await;
    r.assert_error(StatusCode::BAD_REQUEST, "invalid_argument");
    let big = format!("{{\"username\":\"{}\"}}", "x".repeat(4096));
    let r = app.post_raw("/v1/users", "application/json", big).await;
    r.assert_error(StatusCode::PAYLOAD_TOO_LARGE, "invalid_argument");
    // Nothing of the above created anything.
    let users: i64 =
        sqlx::query_scalar("SELECT count(*) FROM users WHERE username <> 'simplebank'")
            .fetch_one(app.db.pool())
            .await
            .unwrap();
    assert_eq!(users, 0);
}

#[tokio::test]
async fn bad_paths_queries_and_routes_answer_in_the_error_shape() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    app.get("/v1/accounts/abc", &alice)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_argument");
    app.get("/v1/accounts/0", &alice)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_argument");
    app.get("/v1/accounts/123456", &alice)
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    app.get("/v1/transfers/123456", &alice)
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    app.get("/v1/users/NOT_VALID", &alice)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_argument");
    app.get("/v1/accounts?colour=red", &alice)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_argument");
    app.get("/v1/accounts?page_size=0", &alice)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_argument");
    app.get("/v1/accounts?page_size=101", &alice)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_argument");
    app.get("/v1/accounts?page_token=zzz", &alice)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_argument");
    app.get("/v1/nowhere", &alice)
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    app.call(Method::DELETE, "/v1/accounts", Some(&alice), None)
        .await
        .assert_error(StatusCode::METHOD_NOT_ALLOWED, "invalid_argument");
    app.post("/v1/accounts", Some(&alice), json!({ "currency": "usd" }))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_argument");
    app.open_account(&alice, "USD").await;
    app.post("/v1/accounts", Some(&alice), json!({ "currency": "USD" }))
        .await
        .assert_error(StatusCode::CONFLICT, "already_exists");
}

#[tokio::test]
async fn requests_without_a_valid_access_token_are_unauthenticated() {
    let app = TestApp::spawn().await;
    let login = {
        app.signup("alice").await;
        app.login("alice").await
    };
    let refresh = login["refresh_token"].as_str().unwrap();
    for token in [None, Some("garbage"), Some("v4.local.AAAA"), Some(refresh)] {
        let reply = app.call(Method::GET, "/v1/accounts", token, None).await;
        reply.assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
    }
    // Not Bearer.
    let reply = reqwest::Client::new()
        .get(format!("{}/v1/accounts", app.address))
        .header("authorization", "Basic YWxpY2U6cGFzc3dvcmQ=")
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::UNAUTHORIZED);
    // A token made with another key.
    let other = simplebank::auth::TokenMaker::new(b"another key, also 32 bytes long!").unwrap();
    let forged = other
        .issue(
            uuid::Uuid::new_v4(),
            &simplebank::domain::Username::parse("alice").unwrap(),
            simplebank::domain::Role::Banker,
            simplebank::auth::TokenType::Access,
            std::time::Duration::from_secs(60),
            chrono::Utc::now(),
        )
        .unwrap();
    use secrecy::ExposeSecret;
    app.get("/v1/accounts", forged.token.expose_secret())
        .await
        .assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
}

#[tokio::test]
async fn login_does_not_reveal_which_usernames_exist() {
    let app = TestApp::spawn().await;
    app.signup("alice").await;
    let wrong = app
        .post(
            "/v1/users/login",
            None,
            json!({ "username": "alice", "password": "wrong password" }),
        )
        .await;
    let unknown = app
        .post(
            "/v1/users/login",
            None,
            json!({ "username": "nobody", "password": "wrong password" }),
        )
        .await;
    wrong.assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
    assert_eq!(wrong.body, unknown.body);
    assert_eq!(wrong.status, unknown.status);
    // The bank's own user cannot log in either.
    app.post(
        "/v1/users/login",
        None,
        json!({ "username": "simplebank", "password": "whatever123" }),
    )
    .await
    .assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
}

#[tokio::test]
async fn a_database_that_cannot_take_writes_is_not_ready_and_the_server_recovers_by_itself() {
    // What a replica sees when its connections reach a standby (a leader demoted by a
    // switchover): reads work, every write fails with SQLSTATE 25006. Here the database itself
    // is made read-only for new sessions, and the server restarted onto it.
    let mut app = TestApp::spawn().await;
    let banker = app.banker("banker").await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let from = app.open_account(&alice, "USD").await;
    let to = app.open_account(&bob, "USD").await;
    app.deposit(&banker, from, 1_000, "USD").await;
    let pool = app.db.store.pool().clone();
    let set_read_only = |on: bool| {
        let pool = pool.clone();
        async move {
            let mut conn = pool.acquire().await.unwrap();
            // BEGIN READ WRITE: this session may itself have started read-only.
            let sql = if on {
                "BEGIN READ WRITE; DO $$ BEGIN EXECUTE format( \
                 'ALTER DATABASE %I SET default_transaction_read_only = on', current_database()); \
                 END $$; COMMIT"
            } else {
                "BEGIN READ WRITE; DO $$ BEGIN EXECUTE format( \
                 'ALTER DATABASE %I RESET default_transaction_read_only', current_database()); \
                 END $$; COMMIT"
            };
            sqlx::raw_sql(sql).execute(&mut *conn).await.unwrap();
            conn.detach();
        }
    };
    set_read_only(true).await;
    app.restart().await;
    app.call(Method::GET, "/readyz", None, None)
        .await
        .assert_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    let transfer =
        json!({ "from_account_id": from, "to_account_id": to, "amount": 10, "currency": "USD" });
    let reply = app
        .post("/v1/transfers", Some(&alice), transfer.clone())
        .await;
    reply.assert_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    assert!(
        !reply.body.to_string().contains("read-only"),
        "{}",
        reply.body
    );
    // Writable again: the same process notices (its read-only connections are retired) and
    // serves again, with nothing written meanwhile.
    set_read_only(false).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (status, _) = app.call_raw(Method::GET, "/readyz").await;
        if status == StatusCode::OK {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "/readyz never came back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    app.post("/v1/transfers", Some(&alice), transfer)
        .await
        .assert(StatusCode::CREATED);
    let transfers: i64 = sqlx::query_scalar("SELECT count(*) FROM transfers WHERE amount = 10")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        transfers, 1,
        "only the transfer made after the database came back"
    );
}

#[tokio::test]
async fn an_unreachable_database_answers_unavailable_fast_while_the_process_stays_alive() {
    // Nothing listens on port 1: every database call fails once the pool's deadline passes.
    let db = crate::helpers::TestDb::unmigrated(1).await;
    let app = TestApp::spawn_on(
        db,
        "postgresql://root:secret@127.0.0.1:1/nowhere".into(),
        &[("DB_ACQUIRE_TIMEOUT", "300ms")],
        false,
    )
    .await;
    app.call(Method::GET, "/healthz", None, None)
        .await
        .assert(StatusCode::OK);
    let started = std::time::Instant::now();
    app.call(Method::GET, "/readyz", None, None)
        .await
        .assert_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    let reply = app
        .post(
            "/v1/users/login",
            None,
            json!({ "username": "alice", "password": "password123" }),
        )
        .await;
    reply.assert_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    // The client learns nothing about the database.
    let text = reply.body.to_string();
    assert!(
        !text.contains("127.0.0.1") && !text.contains("pool"),
        "{text}"
    );
    // Bounded by the deadline, not hanging (generous margin: this is not a timing test).
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}
