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

#[tokio::test]
async fn an_accounts_transfers_by_direction_and_time_page_newest_first() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let carol = app.user("carol").await;
    let banker = app.banker("clerk").await;
    let a = app.open_account(&alice, "USD").await;
    let b = app.open_account(&bob, "USD").await;
    let c = app.open_account(&carol, "USD").await;
    app.deposit(&banker, a, 100, "USD").await;
    app.deposit(&banker, b, 100, "USD").await;
    let send = |token: &str, from: i64, to: i64, amount: i64| {
        let app = &app;
        let token = token.to_owned();
        async move {
            app.post(
                "/v1/transfers",
                Some(&token),
                json!({ "from_account_id": from, "to_account_id": to, "amount": amount, "currency": "USD" }),
            )
            .await
            .assert(StatusCode::CREATED)["transfer"]
                .clone()
        }
    };
    let t1 = send(&alice, a, b, 10).await;
    let t2 = send(&bob, b, a, 5).await;
    let t3 = send(&alice, a, c, 7).await;
    let list = |query: String, token: &str| {
        let app = &app;
        let token = token.to_owned();
        async move {
            app.get(&format!("/v1/accounts/{a}/transfers{query}"), &token)
                .await
        }
    };
    let ids = |page: &serde_json::Value| -> Vec<i64> {
        page["transfers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_i64().unwrap())
            .collect()
    };
    let id = |t: &serde_json::Value| t["id"].as_i64().unwrap();
    let everything = list(String::new(), &alice).await.assert(StatusCode::OK);
    let all = ids(&everything);
    assert_eq!(all.len(), 4, "{everything}");
    assert_eq!(&all[..3], [id(&t3), id(&t2), id(&t1)]);
    // The deposit is the oldest; no balance of anyone's is shown.
    assert!(!everything.to_string().contains("balance"), "{everything}");
    let out = list("?direction=out".into(), &alice)
        .await
        .assert(StatusCode::OK);
    assert_eq!(ids(&out), [id(&t3), id(&t1)]);
    let into = list("?direction=in".into(), &banker)
        .await
        .assert(StatusCode::OK);
    assert_eq!(ids(&into), [id(&t2), all[3]]);

    // Page by page, nothing skipped or repeated.
    let mut seen = Vec::new();
    let mut query = "?page_size=1".to_owned();
    loop {
        let page = list(query.clone(), &alice).await.assert(StatusCode::OK);
        seen.extend(ids(&page));
        match page["next_page_token"].as_str() {
            Some(token) => query = format!("?page_size=1&page_token={token}"),
            None => break,
        }
    }
    assert_eq!(seen, all);

    // since is inclusive, until exclusive.
    let since = t2["created_at"].as_str().unwrap();
    let until = t3["created_at"].as_str().unwrap();
    let window = list(format!("?since={since}&until={until}"), &alice)
        .await
        .assert(StatusCode::OK);
    assert_eq!(ids(&window), [id(&t2)]);
    let backwards = list(format!("?since={until}&until={since}"), &alice).await;
    backwards.assert_error(StatusCode::BAD_REQUEST, "invalid_argument");
    assert_eq!(backwards.body["error"]["details"][0]["field"], "until");
    let bad = list("?direction=sideways&since=soon".into(), &alice).await;
    bad.assert_error(StatusCode::BAD_REQUEST, "invalid_argument");
    assert_eq!(bad.body["error"]["details"].as_array().unwrap().len(), 2);
    list(String::new(), &carol)
        .await
        .assert_error(StatusCode::FORBIDDEN, "permission_denied");
    // The recipient lists its side without the sender's balance either.
    let bobs = app
        .get(&format!("/v1/accounts/{b}/transfers?direction=in"), &bob)
        .await
        .assert(StatusCode::OK);
    assert_eq!(ids(&bobs)[0], id(&t1));
}
