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
        .assert_error(StatusCode::NOT_FOUND, "not_found");
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
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    // The recipient lists its side without the sender's balance either.
    let bobs = app
        .get(&format!("/v1/accounts/{b}/transfers?direction=in"), &bob)
        .await
        .assert(StatusCode::OK);
    assert_eq!(ids(&bobs)[0], id(&t1));
}

/// References and metadata on transfers, deposits and withdrawals, on both paths: stored,
/// returned by every read, and searchable page by page.
#[tokio::test]
async fn references_are_kept_on_both_paths_and_found_page_by_page() {
    for group_commit in ["true", "false"] {
        let app = TestApp::spawn_with(&[("GROUP_COMMIT", group_commit)]).await;
        let alice = app.user("alice").await;
        let bob = app.user("bob").await;
        let banker = app.banker("clerk").await;
        let a = app.open_account(&alice, "USD").await;
        let b = app.open_account(&bob, "USD").await;
        let deposit = app
            .post(
                &format!("/v1/accounts/{a}/deposits"),
                Some(&banker),
                json!({ "amount": 1_000, "currency": "USD", "reference": "payroll-11", "metadata": { "employer": "acme" } }),
            )
            .await
            .assert(StatusCode::CREATED);
        assert_eq!(deposit["transfer"]["reference"], "payroll-11");
        assert_eq!(deposit["transfer"]["metadata"]["employer"], "acme");
        let mut paid = Vec::new();
        for n in 0..5 {
            let reference = if n % 2 == 0 { "INV-2291" } else { "INV-7" };
            let sent = app
                .post(
                    "/v1/transfers",
                    Some(&alice),
                    json!({ "from_account_id": a, "to_account_id": b, "amount": 10 + n, "currency": "USD",
                            "reference": reference, "metadata": { "n": n.to_string() } }),
                )
                .await
                .assert(StatusCode::CREATED);
            assert_eq!(sent["transfer"]["reference"], reference);
            if reference == "INV-2291" {
                paid.push(sent["transfer"]["id"].as_i64().unwrap());
            }
        }
        let one = app
            .get(&format!("/v1/transfers/{}", paid[0]), &bob)
            .await
            .assert(StatusCode::OK);
        assert_eq!(
            one["transfer"]["metadata"]["n"], "0",
            "group commit {group_commit}"
        );

        // Found from either side, one per page, newest first, nothing else.
        for (account, token) in [(a, &alice), (b, &bob)] {
            let mut seen = Vec::new();
            let mut query = "reference=INV-2291&page_size=1".to_owned();
            loop {
                let page = app
                    .get(&format!("/v1/accounts/{account}/transfers?{query}"), token)
                    .await
                    .assert(StatusCode::OK);
                for t in page["transfers"].as_array().unwrap() {
                    assert_eq!(t["reference"], "INV-2291");
                    seen.push(t["id"].as_i64().unwrap());
                }
                match page["next_page_token"].as_str() {
                    Some(next) => {
                        query = format!("reference=INV-2291&page_size=1&page_token={next}")
                    }
                    None => break,
                }
            }
            let mut newest_first = paid.clone();
            newest_first.reverse();
            assert_eq!(seen, newest_first, "group commit {group_commit}");
        }
        let none = app
            .get(
                &format!("/v1/accounts/{a}/transfers?reference=INV-0"),
                &alice,
            )
            .await
            .assert(StatusCode::OK);
        assert!(none["transfers"].as_array().unwrap().is_empty());
        let payroll = app
            .get(
                &format!("/v1/accounts/{a}/transfers?reference=payroll-11&direction=in"),
                &alice,
            )
            .await
            .assert(StatusCode::OK);
        assert_eq!(payroll["transfers"].as_array().unwrap().len(), 1);
    }
}

#[tokio::test]
async fn bad_references_and_metadata_are_field_errors_and_change_nothing() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let banker = app.banker("clerk").await;
    let a = app.open_account(&alice, "USD").await;
    let b = app.open_account(&app.user("bob").await, "USD").await;
    app.deposit(&banker, a, 100, "USD").await;
    let big = "x".repeat(5_000);
    let refused = app
        .post(
            "/v1/transfers",
            Some(&alice),
            json!({ "from_account_id": a, "to_account_id": b, "amount": 0, "currency": "USD",
                    "reference": "tab\there", "metadata": { "k": big } }),
        )
        .await;
    refused.assert_error(StatusCode::BAD_REQUEST, "invalid_argument");
    let mut fields: Vec<&str> = refused.body["error"]["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["field"].as_str().unwrap())
        .collect();
    fields.sort_unstable();
    assert_eq!(fields, ["amount", "metadata", "reference"]);
    app.post(
        &format!("/v1/accounts/{a}/withdrawals"),
        Some(&banker),
        json!({ "amount": 5, "currency": "USD", "reference": "" }),
    )
    .await
    .assert_error(StatusCode::BAD_REQUEST, "invalid_argument");
    app.get(&format!("/v1/accounts/{a}/transfers?reference=%09"), &alice)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_argument");
    let transfers: i64 = sqlx::query_scalar("SELECT count(*) FROM transfers")
        .fetch_one(app.db.pool())
        .await
        .unwrap();
    assert_eq!(transfers, 1, "only the deposit");

    // Under an idempotency key the label is part of the request.
    let keyed = |reference: &'static str| {
        let app = &app;
        let alice = &alice;
        async move {
            app.call_with(
                reqwest::Method::POST,
                "/v1/transfers",
                Some(alice),
                &[("Idempotency-Key", "rent")],
                Some(json!({ "from_account_id": a, "to_account_id": b, "amount": 5, "currency": "USD", "reference": reference })),
            )
            .await
        }
    };
    let first = keyed("rent-12").await.assert(StatusCode::CREATED);
    let again = keyed("rent-12").await;
    assert_eq!(again.header("idempotent-replayed"), "true");
    assert_eq!(again.body["transfer"], first["transfer"]);
    keyed("rent-01")
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "idempotency_mismatch");
}

/// SPEC §10's attack on exports: a client that starts a long CSV statement and stops reading.
/// While it waits, the export holds no database cursor or connection (before: the query stayed
/// open, and a slot with it, for up to 10 minutes); after 30 s unread it is ended.
#[tokio::test]
async fn an_export_its_client_does_not_read_holds_no_cursor_and_is_ended() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let a = app.open_account(&alice, "USD").await;
    // About 7 MB of CSV: more than the loopback socket buffers hold.
    const ENTRIES: i64 = 100_000;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "WITH bank AS (SELECT id FROM accounts WHERE kind = 'settlement' AND currency = 'USD'), \
         t AS (INSERT INTO transfers (from_account_id, to_account_id, amount, currency, reference) \
               SELECT bank.id, {a}, 1, 'USD', 'csv-' || g FROM generate_series(1, {ENTRIES}) g, bank \
               RETURNING id, from_account_id, to_account_id), \
         e AS (INSERT INTO entries (account_id, transfer_id, amount, balance_after) \
               SELECT to_account_id, id, 1, row_number() OVER (ORDER BY id) FROM t \
               UNION ALL \
               SELECT from_account_id, id, -1, -row_number() OVER (ORDER BY id) FROM t) \
         SELECT count(*) FROM t; \
         UPDATE accounts SET balance = {ENTRIES} WHERE id = {a}; \
         UPDATE accounts SET balance = balance - {ENTRIES} WHERE kind = 'settlement' AND currency = 'USD';"
    )))
    .execute(app.db.pool())
    .await
    .unwrap();
    // A raw client with a small receive buffer, which sends the request and reads nothing.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let address = app.address.trim_start_matches("http://").parse().unwrap();
    let mut tcp = socket.connect(address).await.unwrap();
    tcp.write_all(
        format!(
            "GET /v1/accounts/{a}/entries HTTP/1.1\r\nHost: x\r\nAccept: text/csv\r\n\
             Authorization: Bearer {alice}\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    // Not reading: the export fills its buffers and waits. Observed: no session of the
    // database is running or holding the statement's query meanwhile.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let busy: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND pid <> pg_backend_pid() AND query LIKE '%FROM entries e JOIN transfers%' \
             AND state <> 'idle'",
        )
        .fetch_one(app.db.pool())
        .await
        .unwrap();
        if busy == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the export kept its query open while its client did not read"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // Still not reading for the 30 s: then the server ends the export. What the client finds
    // afterwards is what was buffered, cut short.
    tokio::time::sleep(std::time::Duration::from_secs(35)).await;
    let mut text = Vec::new();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        match tokio::time::timeout(std::time::Duration::from_secs(60), tcp.read(&mut buffer)).await
        {
            Ok(Ok(n)) if n > 0 => text.extend_from_slice(&buffer[..n]),
            Ok(_) => break,
            Err(_) => panic!("the server neither sent nor closed for a minute"),
        }
    }
    assert!(text.starts_with(b"HTTP/1.1 200 OK"));
    let rows = text.iter().filter(|b| **b == b'\n').count() as i64;
    assert!(
        rows < ENTRIES,
        "{rows} rows: the export was not ended while unread"
    );
}

/// The CSV statement holds exactly the entries the JSON pages hold for the same range, oldest
/// first, with amounts as integers and as decimals in the currency's minor unit.
#[tokio::test]
async fn the_csv_statement_matches_the_json_pages_for_the_same_range() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let banker = app.banker("clerk").await;
    let a = app.open_account(&alice, "USD").await;
    let b = app.open_account(&bob, "USD").await;
    let yen = app.open_account(&alice, "JPY").await;
    app.deposit(&banker, a, 12_345, "USD").await;
    app.deposit(&banker, yen, 700, "JPY").await;
    for n in 0..30 {
        app.post(
            "/v1/transfers",
            Some(&alice),
            json!({ "from_account_id": a, "to_account_id": b, "amount": 5 + n, "currency": "USD",
                    "reference": if n == 3 { "=cmd,\"x\"" } else { "INV-1" } }),
        )
        .await
        .assert(StatusCode::CREATED);
    }
    // Every JSON page, newest first.
    let mut json_rows = Vec::new();
    let mut url = format!("/v1/accounts/{a}/entries?page_size=7");
    loop {
        let page = app.get(&url, &alice).await.assert(StatusCode::OK);
        json_rows.extend(page["entries"].as_array().unwrap().iter().cloned());
        match page["next_page_token"].as_str() {
            Some(t) => url = format!("/v1/accounts/{a}/entries?page_size=7&page_token={t}"),
            None => break,
        }
    }
    json_rows.reverse();
    let (status, headers, csv) = app
        .get_text(
            &format!("/v1/accounts/{a}/entries"),
            &alice,
            &[("Accept", "text/csv")],
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let mut lines = csv.lines();
    assert_eq!(
        lines.next().unwrap(),
        "entry_id,created_at,transfer_id,amount,amount_decimal,balance_after,balance_after_decimal,currency,reference"
    );
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), json_rows.len());
    for (row, entry) in rows.iter().zip(&json_rows) {
        let fields: Vec<&str> = row.splitn(9, ',').collect();
        assert_eq!(fields[0], entry["id"].to_string());
        assert_eq!(
            moment(&json!(fields[1])),
            moment(&entry["created_at"]),
            "{row}"
        );
        assert_eq!(fields[3], entry["amount"].to_string());
        assert_eq!(fields[5], entry["balance_after"].to_string());
        assert_eq!(fields[7], "USD");
    }
    assert!(rows[0].starts_with(&format!("{},", json_rows[0]["id"])));
    assert!(
        rows[0].contains(",12345,123.45,12345,123.45,USD,"),
        "{}",
        rows[0]
    );
    // A client's text stays one field and is never a formula.
    assert!(csv.contains(",\"'=cmd,\"\"x\"\"\"\n"), "{csv}");

    // A range: since inclusive, until exclusive, the same rows as the JSON entries in it.
    let since = json_rows[5]["created_at"].as_str().unwrap().to_owned();
    let until = json_rows[10]["created_at"].as_str().unwrap().to_owned();
    let (_, _, part) = app
        .get_text(
            &format!("/v1/accounts/{a}/entries?since={since}&until={until}"),
            &alice,
            &[("Accept", "text/csv")],
        )
        .await;
    let ids: Vec<String> = part
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap().to_owned())
        .collect();
    let expected: Vec<String> = json_rows[5..10]
        .iter()
        .map(|e| e["id"].to_string())
        .collect();
    assert_eq!(ids, expected);

    // No minor unit for yen.
    let (_, _, yen_csv) = app
        .get_text(
            &format!("/v1/accounts/{yen}/entries"),
            &alice,
            &[("Accept", "text/csv")],
        )
        .await;
    assert!(
        yen_csv
            .lines()
            .nth(1)
            .unwrap()
            .contains(",700,700,700,700,JPY,"),
        "{yen_csv}"
    );
    // The JSON form stays as it was: no ranges there; strangers get nothing either way.
    app.get(&format!("/v1/accounts/{a}/entries?since={since}"), &alice)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_argument");
    let (denied, _, _) = app
        .get_text(
            &format!("/v1/accounts/{a}/entries"),
            &bob,
            &[("Accept", "text/csv")],
        )
        .await;
    assert_eq!(denied, StatusCode::NOT_FOUND);
}
