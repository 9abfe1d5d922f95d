//! An account's history (SPEC §6): its balance at a moment.

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use reqwest::StatusCode;
use serde_json::json;

use crate::harness::TestApp;

fn moment(raw: &serde_json::Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(raw.as_str().unwrap())
        .unwrap()
        .with_timezone(&Utc)
}

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

#[tokio::test]
async fn the_balance_at_a_moment_is_the_last_entry_at_or_before_it() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let carol = app.user("carol").await;
    let banker = app.banker("clerk").await;
    let a = app.open_account(&alice, "USD").await;
    let b = app.open_account(&bob, "USD").await;
    let balance = |at: Option<String>, token: &str| {
        let path = match at {
            Some(at) => format!("/v1/accounts/{a}/balance?at={at}"),
            None => format!("/v1/accounts/{a}/balance"),
        };
        let app = &app;
        let token = token.to_owned();
        async move { app.get(&path, &token).await }
    };
    // Before any entry: 0.
    let empty = balance(None, &alice).await.assert(StatusCode::OK);
    assert_eq!(
        (empty["balance"].as_i64(), empty["currency"].as_str()),
        (Some(0), Some("USD"))
    );

    app.deposit(&banker, a, 100, "USD").await;
    app.post(
        "/v1/transfers",
        Some(&alice),
        json!({ "from_account_id": a, "to_account_id": b, "amount": 30, "currency": "USD" }),
    )
    .await
    .assert(StatusCode::CREATED);
    app.deposit(&banker, a, 50, "USD").await;
    let statement = app
        .get(&format!("/v1/accounts/{a}/entries"), &alice)
        .await
        .assert(StatusCode::OK);
    let entries = statement["entries"].as_array().unwrap();
    // Newest first: 120, 70, 100.
    let times: Vec<DateTime<Utc>> = entries
        .iter()
        .rev()
        .map(|e| moment(&e["created_at"]))
        .collect();
    for (at, expected) in times.iter().zip([100, 70, 120]) {
        let got = balance(Some(rfc3339(*at)), &alice)
            .await
            .assert(StatusCode::OK);
        assert_eq!(got["balance"], expected, "exactly at {at}");
        assert_eq!(moment(&got["at"]), *at);
    }
    let before = balance(Some(rfc3339(times[0] - Duration::microseconds(1))), &alice)
        .await
        .assert(StatusCode::OK);
    assert_eq!(before["balance"], 0);
    for at in [None, Some(rfc3339(Utc::now()))] {
        let now = balance(at, &banker).await.assert(StatusCode::OK);
        assert_eq!(now["balance"], 120);
    }

    let future = balance(Some(rfc3339(Utc::now() + Duration::hours(1))), &alice).await;
    future.assert_error(StatusCode::BAD_REQUEST, "invalid_argument");
    assert_eq!(future.body["error"]["details"][0]["field"], "at");
    balance(Some("yesterday".into()), &alice)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_argument");
    balance(None, &carol)
        .await
        .assert_error(StatusCode::FORBIDDEN, "permission_denied");
    app.get("/v1/accounts/999999/balance", &banker)
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
}
