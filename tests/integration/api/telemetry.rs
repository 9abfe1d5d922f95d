//! Request ids and Prometheus metrics, seen from outside.

use reqwest::{Method, StatusCode};
use serde_json::json;
use simplebank::grpc::pb;

use crate::grpc::rpcs::{authed, client};
use crate::harness::TestApp;

#[tokio::test]
async fn every_response_carries_the_request_id_given_or_a_new_one() {
    let app = TestApp::spawn().await;
    let given = app
        .call_with(
            Method::GET,
            "/healthz",
            None,
            &[("x-request-id", "ticket-42")],
            None,
        )
        .await;
    assert_eq!(given.header("x-request-id"), "ticket-42");
    for path in ["/readyz", "/no/such/route", "/v1/accounts/1"] {
        let reply = app.call(Method::GET, path, None, None).await;
        let id = reply.header("x-request-id");
        assert!(uuid::Uuid::parse_str(id).is_ok(), "{path}: {id:?}");
    }
}

#[tokio::test]
async fn metrics_count_requests_by_route_rpcs_and_money_by_outcome() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let banker = app.banker("clerk").await;
    let a = app.open_account(&alice, "USD").await;
    let b = app.open_account(&app.user("bob").await, "USD").await;
    app.deposit(&banker, a, 100, "USD").await;
    for amount in [30, 1_000] {
        app.post(
            "/v1/transfers",
            Some(&alice),
            json!({ "from_account_id": a, "to_account_id": b, "amount": amount, "currency": "USD" }),
        )
        .await;
    }
    app.get(&format!("/v1/accounts/{a}"), &alice)
        .await
        .assert(StatusCode::OK);
    app.call(Method::GET, "/probe/12345", None, None).await;
    let mut grpc = client(&app).await;
    grpc.get_account(authed(&alice, pb::GetAccountRequest { id: a }))
        .await
        .unwrap();

    let reply = app.call_raw(Method::GET, "/metrics").await;
    assert_eq!(reply.0, StatusCode::OK);
    let text = reply.1;
    for expected in [
        r#"http_requests_total{method="GET",route="/v1/accounts/{id}",status="200"} 1"#,
        r#"http_requests_total{method="POST",route="/v1/transfers",status="201"} 1"#,
        r#"http_requests_total{method="POST",route="/v1/transfers",status="422"} 1"#,
        r#"http_requests_total{method="GET",route="unmatched",status="404"} 1"#,
        r#"grpc_requests_total{method="/simplebank.v1.SimpleBank/GetAccount",code="OK"} 1"#,
        r#"money_movements_total{kind="deposit",outcome="committed"} 1"#,
        r#"money_movements_total{kind="transfer",outcome="committed"} 1"#,
        r#"money_movements_total{kind="transfer",outcome="insufficient_funds"} 1"#,
        "db_pool_max_connections 10",
        "# TYPE http_request_duration_seconds histogram",
    ] {
        assert!(text.contains(expected), "missing {expected} in\n{text}");
    }
    assert!(!text.contains("12345"), "raw paths never become labels");
}

/// The attack: an anonymous client invents a method and a path per request (8 KB methods once
/// grew `/metrics` to 461 MB). Every label comes from a fixed set, so nothing grows.
#[tokio::test]
async fn invented_methods_and_paths_add_no_metrics_series() {
    async fn invent(app: &TestApp, n: usize) {
        let method = Method::from_bytes(format!("{}{n}", "A".repeat(1024)).as_bytes()).unwrap();
        app.client
            .request(method, format!("{}/", app.address))
            .send()
            .await
            .expect("answered");
        app.call(Method::GET, &format!("/made/up/{n}"), None, None)
            .await;
    }
    let app = TestApp::spawn().await;
    invent(&app, 0).await;
    let (status, before) = app.call_raw(Method::GET, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    for n in 1..1000 {
        invent(&app, n).await;
    }
    let (_, after) = app.call_raw(Method::GET, "/metrics").await;
    let series = |text: &str| text.lines().filter(|l| !l.starts_with('#')).count();
    // Only the counts grew (by a few digits each), and the two requests to /metrics themselves.
    assert!(
        series(&after) <= series(&before) + 20,
        "{} series before, {} after",
        series(&before),
        series(&after)
    );
    assert!(after.len() < 64 * 1024, "/metrics is {} bytes", after.len());
    assert!(
        after
            .contains(r#"http_requests_total{method="other",route="unmatched",status="404"} 1000"#)
    );
    assert!(!after.contains("AAAA") && !after.contains("/made/up"));
}

#[tokio::test]
async fn browsers_on_allowed_origins_get_cors_headers_and_others_do_not() {
    let app = TestApp::spawn_with(&[("ALLOWED_ORIGINS", "https://app.example")]).await;
    let preflight = app
        .call_with(
            Method::OPTIONS,
            "/v1/transfers",
            None,
            &[
                ("origin", "https://app.example"),
                ("access-control-request-method", "POST"),
                (
                    "access-control-request-headers",
                    "authorization,content-type,idempotency-key",
                ),
            ],
            None,
        )
        .await;
    assert_eq!(preflight.status, StatusCode::OK);
    assert_eq!(
        preflight.header("access-control-allow-origin"),
        "https://app.example"
    );
    assert!(
        preflight
            .header("access-control-allow-headers")
            .contains("idempotency-key")
    );

    let allowed = app
        .call_with(
            Method::GET,
            "/healthz",
            None,
            &[("origin", "https://app.example")],
            None,
        )
        .await;
    assert_eq!(
        allowed.header("access-control-allow-origin"),
        "https://app.example"
    );
    assert!(
        allowed
            .header("access-control-expose-headers")
            .contains("x-request-id")
    );
    let other = app
        .call_with(
            Method::GET,
            "/healthz",
            None,
            &[("origin", "https://evil.example")],
            None,
        )
        .await;
    assert_eq!(other.header("access-control-allow-origin"), "");
}
