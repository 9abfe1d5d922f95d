//! Hostile and greedy clients: login throttling on both APIs, oversized headers, more requests at
//! once than the server takes, and the security headers on every answer.

use reqwest::StatusCode;
use serde_json::json;
use simplebank::grpc::pb;
use tonic_types::StatusExt;

use crate::grpc::rpcs::client;
use crate::harness::TestApp;

async fn bad_login(app: &TestApp, username: &str) -> crate::harness::Reply {
    app.post(
        "/v1/users/login",
        None,
        json!({ "username": username, "password": "not-the-password" }),
    )
    .await
}

#[tokio::test]
async fn failed_logins_for_one_username_are_throttled_existing_or_not() {
    let app = TestApp::spawn_with(&[("LOGIN_FAILURES_PER_USERNAME", "3")]).await;
    app.signup("alice").await;
    for name in ["alice", "nobody"] {
        for _ in 0..3 {
            bad_login(&app, name)
                .await
                .assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
        }
        // The fourth is refused before the password is even checked — for a user who exists
        // exactly as for one who does not, so the refusal tells nothing about which is which.
        let refused = bad_login(&app, name).await;
        refused.assert_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
        let wait: u64 = refused.header("retry-after").parse().unwrap();
        assert!(
            (1..=20).contains(&wait),
            "3 per minute: one every 20 s, got {wait}"
        );
    }
    // Even the right password waits: a guesser who found it must not learn so.
    app.post(
        "/v1/users/login",
        None,
        json!({ "username": "alice", "password": "password123" }),
    )
    .await
    .assert_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    // Other users are not affected.
    app.signup("bob").await;
    app.login("bob").await;
}

#[tokio::test]
async fn one_address_gets_a_burst_of_logins_then_waits_on_both_apis() {
    let app = TestApp::spawn_with(&[("LOGIN_ATTEMPTS_PER_IP", "4")]).await;
    app.signup("alice").await;
    for _ in 0..4 {
        app.login("alice").await;
    }
    app.post(
        "/v1/users/login",
        None,
        json!({ "username": "alice", "password": "password123" }),
    )
    .await
    .assert_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");

    // gRPC shares the limiter: same address, same bucket.
    let mut grpc = client(&app).await;
    let status = grpc
        .login_user(pb::LoginUserRequest {
            username: "alice".into(),
            password: "password123".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    let secs: u64 = status
        .metadata()
        .get("retry-after")
        .expect("retry-after metadata")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=15).contains(&secs), "{secs}");
    let details = status.get_error_details();
    assert!(details.retry_info().is_some(), "RetryInfo detail");
    assert_eq!(
        details.error_info().unwrap().metadata["code"],
        "rate_limited"
    );
}

#[tokio::test]
async fn oversized_headers_are_refused_in_the_error_shape() {
    let app = TestApp::spawn().await;
    let big = "x".repeat(simplebank::http::MAX_HEADER_BYTES);
    let reply = app
        .call_with(
            reqwest::Method::GET,
            "/healthz",
            None,
            &[("x-padding", big.as_str())],
            None,
        )
        .await;
    reply.assert_error(
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "invalid_argument",
    );
}

#[tokio::test]
async fn every_answer_carries_the_security_headers() {
    let app = TestApp::spawn().await;
    let token = app.user("alice").await;
    for reply in [
        app.get("/v1/accounts", &token).await,
        app.call(reqwest::Method::GET, "/nowhere", None, None).await,
        bad_login(&app, "alice").await,
    ] {
        assert_eq!(reply.header("x-content-type-options"), "nosniff");
        assert_eq!(reply.header("x-frame-options"), "DENY");
        assert_eq!(reply.header("cache-control"), "no-store");
        assert_eq!(reply.header("referrer-policy"), "no-referrer");
        assert!(
            reply
                .header("content-security-policy")
                .contains("default-src 'none'")
        );
    }
}

#[tokio::test]
async fn beyond_the_concurrent_request_limit_the_server_sheds_load_at_once() {
    // One request at a time: a slow login (argon2) holds the only slot.
    let app = TestApp::spawn_with(&[("MAX_CONCURRENT_REQUESTS", "1")]).await;
    app.signup("alice").await;
    let mut shed = 0;
    let mut ok = 0;
    let replies = burst_of_logins(&app, 8).await;
    for status in replies {
        match status {
            StatusCode::OK => ok += 1,
            StatusCode::SERVICE_UNAVAILABLE => shed += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert!(ok >= 1 && shed >= 1, "ok {ok}, shed {shed}");
    // Once the burst is over the server answers normally.
    app.login("alice").await;
}

/// `n` logins at once; their statuses.
async fn burst_of_logins(app: &TestApp, n: usize) -> Vec<StatusCode> {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let client = reqwest::Client::new();
        let url = format!("{}/v1/users/login", app.address);
        tasks.spawn(async move {
            let response = client
                .post(url)
                .json(&json!({ "username": "alice", "password": "password123" }))
                .send()
                .await
                .unwrap();
            let status = response.status();
            if status == StatusCode::SERVICE_UNAVAILABLE {
                assert_eq!(response.headers()["retry-after"], "1");
                let body: serde_json::Value = response.json().await.unwrap();
                assert_eq!(body["error"]["code"], "unavailable");
            }
            status
        });
    }
    let mut statuses = Vec::new();
    while let Some(status) = tasks.join_next().await {
        statuses.push(status.unwrap());
    }
    statuses
}

/// A login from `client` (claimed in `X-Forwarded-For`): its status.
async fn login_as_forwarded(app: &TestApp, client: &str) -> StatusCode {
    app.call_with(
        reqwest::Method::POST,
        "/v1/users/login",
        None,
        &[("x-forwarded-for", client)],
        Some(json!({ "username": "alice", "password": "password123" })),
    )
    .await
    .status
}

/// The attack of SPEC §10: a stranger fails logins for someone else's username to lock them
/// out. Their own address is refused; the owner, from theirs, logs in (slowed, not closed) on
/// both APIs.
#[tokio::test]
async fn a_strangers_failed_logins_never_lock_the_owner_out_on_both_apis() {
    let app = TestApp::spawn_with(&[
        ("TRUSTED_PROXIES", "127.0.0.0/8"),
        ("LOGIN_FAILURES_PER_USERNAME", "3"),
    ])
    .await;
    app.signup("alice").await;
    let app = &app;
    let attempt = |client: &'static str, password: &'static str| async move {
        app.call_with(
            reqwest::Method::POST,
            "/v1/users/login",
            None,
            &[("x-forwarded-for", client)],
            Some(json!({ "username": "alice", "password": password })),
        )
        .await
    };
    for _ in 0..3 {
        attempt("203.0.113.66", "a wrong guess")
            .await
            .assert_error(StatusCode::UNAUTHORIZED, "unauthenticated");
    }
    attempt("203.0.113.66", "a wrong guess")
        .await
        .assert_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    // Before: 10 failures a minute from anywhere closed the username for everyone, bankers too.
    attempt("198.51.100.7", "password123")
        .await
        .assert(StatusCode::OK);
    let mut grpc = client(app).await;
    let mut request = tonic::Request::new(pb::LoginUserRequest {
        username: "alice".into(),
        password: "password123".into(),
    });
    request
        .metadata_mut()
        .insert("x-forwarded-for", "198.51.100.8".parse().unwrap());
    grpc.login_user(request).await.unwrap();
}

/// The anonymous routes that cost work are bounded per client address: one address hammering
/// email verification (or sign-up) is refused at once, another is not.
#[tokio::test]
async fn one_address_hammering_the_anonymous_routes_is_refused_and_another_is_not() {
    let app = TestApp::spawn_with(&[
        ("TRUSTED_PROXIES", "127.0.0.0/8"),
        ("ANONYMOUS_REQUESTS_PER_SECOND", "2"),
    ])
    .await;
    let app = &app;
    let verify = |client: &'static str| async move {
        app.call_with(
            reqwest::Method::GET,
            &format!("/v1/verify_email?email_id=1&secret_code={}", "0".repeat(64)),
            None,
            &[("x-forwarded-for", client)],
            None,
        )
        .await
    };
    let mut refused = 0;
    for _ in 0..20 {
        let reply = verify("203.0.113.9").await;
        if reply.status == StatusCode::TOO_MANY_REQUESTS {
            reply.assert_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
            assert!(!reply.header("retry-after").is_empty());
            refused += 1;
        }
    }
    assert!(
        refused > 0,
        "20 at once from one address, 2 a second allowed"
    );
    assert_ne!(
        verify("198.51.100.4").await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_client_has_its_own_login_bucket_on_both_apis() {
    // The test connects from 127.0.0.1, standing in for the ingress.
    let app = TestApp::spawn_with(&[
        ("TRUSTED_PROXIES", "127.0.0.0/8"),
        ("LOGIN_ATTEMPTS_PER_IP", "2"),
    ])
    .await;
    app.signup("alice").await;
    // Two customers behind the one proxy: two each, then the first is refused, not the second.
    for _ in 0..2 {
        assert_eq!(
            login_as_forwarded(&app, "198.51.100.1").await,
            StatusCode::OK
        );
    }
    assert_eq!(
        login_as_forwarded(&app, "198.51.100.1").await,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        login_as_forwarded(&app, "198.51.100.2").await,
        StatusCode::OK
    );
    // A forged entry left of the proxy's own is not believed: the proxy appended .2.
    assert_eq!(
        login_as_forwarded(&app, "203.0.113.66, 198.51.100.2").await,
        StatusCode::OK
    );
    assert_eq!(
        login_as_forwarded(&app, "203.0.113.66, 198.51.100.2").await,
        StatusCode::TOO_MANY_REQUESTS
    );
    // The session records the customer's address, not the proxy's.
    let ips: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT client_ip FROM sessions ORDER BY client_ip")
            .fetch_all(app.db.pool())
            .await
            .unwrap();
    assert_eq!(ips, ["198.51.100.1", "198.51.100.2"]);

    // gRPC reads the same metadata: a third customer has a full bucket there.
    let mut grpc = client(&app).await;
    let login = |client: &str| {
        let mut request = tonic::Request::new(pb::LoginUserRequest {
            username: "alice".into(),
            password: "password123".into(),
        });
        request
            .metadata_mut()
            .insert("x-forwarded-for", client.parse().unwrap());
        request
    };
    grpc.login_user(login("198.51.100.3")).await.unwrap();
    let status = grpc.login_user(login("198.51.100.1")).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
}

#[tokio::test]
async fn forwarding_headers_from_an_untrusted_peer_are_ignored() {
    // No TRUSTED_PROXIES: every peer is the client, whatever it claims.
    let app = TestApp::spawn_with(&[("LOGIN_ATTEMPTS_PER_IP", "2")]).await;
    app.signup("alice").await;
    for client in ["198.51.100.1", "198.51.100.2"] {
        assert_eq!(login_as_forwarded(&app, client).await, StatusCode::OK);
    }
    assert_eq!(
        login_as_forwarded(&app, "198.51.100.3").await,
        StatusCode::TOO_MANY_REQUESTS
    );
    let ips: Vec<String> = sqlx::query_scalar("SELECT DISTINCT client_ip FROM sessions")
        .fetch_all(app.db.pool())
        .await
        .unwrap();
    assert_eq!(ips, ["127.0.0.1"]);
}

#[tokio::test]
async fn password_hashing_beyond_its_threads_and_queue_is_refused_at_once_on_both_apis() {
    // One hash at a time and no queue: of a burst, one at a time gets through and the rest
    // are told to come back (503 + Retry-After 1, checked in burst_of_logins) at once.
    let app = TestApp::spawn_with(&[
        ("PASSWORD_HASH_CONCURRENCY", "1"),
        ("PASSWORD_HASH_QUEUE", "0"),
        ("LOGIN_ATTEMPTS_PER_IP", "0"),
    ])
    .await;
    app.signup("alice").await;
    let statuses = burst_of_logins(&app, 16).await;
    let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    let busy = statuses
        .iter()
        .filter(|s| **s == StatusCode::SERVICE_UNAVAILABLE)
        .count();
    assert_eq!(ok + busy, 16, "{statuses:?}");
    assert!(ok >= 1 && busy >= 1, "ok {ok}, busy {busy}");

    // gRPC: UNAVAILABLE with retry-after metadata, from the same pool.
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let mut grpc = client(&app).await;
        tasks.spawn(async move {
            grpc.login_user(pb::LoginUserRequest {
                username: "alice".into(),
                password: "password123".into(),
            })
            .await
        });
    }
    let mut unavailable = 0;
    while let Some(outcome) = tasks.join_next().await {
        if let Err(status) = outcome.unwrap() {
            assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
            assert_eq!(status.metadata().get("retry-after").unwrap(), "1");
            unavailable += 1;
        }
    }
    assert!(unavailable >= 1);
    // After the burst, a login works. The last accepted hash frees its slot just after its
    // answer is written (with TCP_NODELAY that answer can arrive first), so the login retries
    // on 503 as a client honouring `retry-after` would, until the slot is observed free.
    let mut attempts = 0;
    loop {
        let reply = app.login_reply("alice").await;
        if reply.status != StatusCode::SERVICE_UNAVAILABLE || attempts == 50 {
            reply.assert(StatusCode::OK);
            break;
        }
        attempts += 1;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn refusals_of_the_guard_carry_cors_headers_for_allowed_origins() {
    let app = TestApp::spawn_with(&[("ALLOWED_ORIGINS", "http://app.example")]).await;
    let big = "x".repeat(simplebank::http::MAX_HEADER_BYTES);
    let reply = app
        .call_with(
            reqwest::Method::GET,
            "/v1/accounts",
            None,
            &[
                ("origin", "http://app.example"),
                ("x-padding", big.as_str()),
            ],
            None,
        )
        .await;
    reply.assert_error(
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "invalid_argument",
    );
    // Without this a browser would report a CORS failure instead of the answer.
    assert_eq!(
        reply.header("access-control-allow-origin"),
        "http://app.example"
    );
}

/// Slowloris: a client that opens a connection and sends a request head a byte at a time, or
/// never, or keeps a connection idle after its answer, is disconnected after
/// `HTTP_HEADER_READ_TIMEOUT` instead of holding a socket forever (before: no timeout at all).
#[tokio::test]
async fn connections_that_send_nothing_or_sit_idle_are_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = TestApp::spawn_with(&[("HTTP_HEADER_READ_TIMEOUT", "1s")]).await;
    let address = app.address.trim_start_matches("http://").to_owned();
    /// Reads until the server closes; what it sent. Bounded by a minute, a liveness bound.
    async fn until_closed(tcp: &mut tokio::net::TcpStream) -> String {
        let mut seen = Vec::new();
        let mut buffer = [0u8; 4096];
        loop {
            match tokio::time::timeout(std::time::Duration::from_secs(60), tcp.read(&mut buffer))
                .await
                .expect("the server closed the connection")
            {
                Ok(0) | Err(_) => return String::from_utf8_lossy(&seen).into_owned(),
                Ok(n) => seen.extend_from_slice(&buffer[..n]),
            }
        }
    }
    // Half a request head, then nothing.
    let mut slow = tokio::net::TcpStream::connect(&address).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let answer = until_closed(&mut slow).await;
    assert!(!answer.contains("200 OK"), "{answer}");
    // A whole request, its answer, then an idle keep-alive connection.
    let mut idle = tokio::net::TcpStream::connect(&address).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = until_closed(&mut idle).await;
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
}
