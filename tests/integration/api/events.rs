//! Events (SPEC §7): written with the change that causes them, watched as Server-Sent Events
//! (resumable, bounded), and delivered to webhooks signed, retried and logged.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::harness::{Reply, TestApp};
use crate::helpers::assert_ledger_consistent;

/// One parsed SSE message.
#[derive(Debug, Clone)]
pub struct Message {
    pub id: Option<i64>,
    pub event: String,
    pub data: Value,
}

/// Reads an SSE response message by message.
pub struct SseReader {
    response: reqwest::Response,
    buffer: String,
}

impl SseReader {
    pub async fn open(app: &TestApp, token: &str, path: &str, last_event_id: Option<i64>) -> Self {
        let mut request = app
            .client
            .get(format!("{}{path}", app.address))
            .bearer_auth(token);
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id.to_string());
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        Self {
            response,
            buffer: String::new(),
        }
    }

    /// The next message (keep-alive comments skipped), or `None` when the stream ended or
    /// nothing came within `wait`.
    pub async fn next(&mut self, wait: Duration) -> Option<Message> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (None, String::from("message"), None);
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id: ") {
                        id = v.parse().ok();
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        event = v.to_owned();
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        data = Some(serde_json::from_str(v).unwrap());
                    }
                }
                if let Some(data) = data {
                    return Some(Message { id, event, data });
                }
                continue;
            }
            match tokio::time::timeout(wait, self.response.chunk()).await {
                Ok(Ok(Some(chunk))) => self.buffer.push_str(std::str::from_utf8(&chunk).unwrap()),
                _ => return None,
            }
        }
    }
}

/// The ids of the events concerning `account`, from the table itself.
async fn account_event_ids(app: &TestApp, account: i64) -> Vec<i64> {
    sqlx::query_scalar(
        "SELECT id FROM events WHERE account_id = $1 OR counter_account_id = $1 ORDER BY id",
    )
    .bind(account)
    .fetch_all(app.db.pool())
    .await
    .unwrap()
}

async fn events_of_type(app: &TestApp, kind: &str) -> Vec<Value> {
    sqlx::query_scalar(
        "SELECT event_data(data, transfer_id) FROM events WHERE type = $1 ORDER BY id",
    )
    .bind(kind)
    .fetch_all(app.db.pool())
    .await
    .unwrap()
}

/// `a` and `b` with their timestamps compared as instants (the API prints as many fraction
/// digits as it needs; events always six).
fn assert_same_resource(event: &Value, api: &Value) {
    let mut event = event.clone();
    let mut api = api.clone();
    for field in ["created_at", "expires_at", "resolved_at"] {
        if let (Some(e), Some(a)) = (event.get(field), api.get(field)) {
            let parse = |v: &Value| {
                chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap())
                    .unwrap()
                    .timestamp_micros()
            };
            assert_eq!(parse(e), parse(a), "{field}");
            event[field] = Value::Null;
            api[field] = Value::Null;
        }
    }
    assert_eq!(event, api);
}

async fn transfer(app: &TestApp, token: &str, from: i64, to: i64, amount: i64) -> Reply {
    app.post(
        "/v1/transfers",
        Some(token),
        json!({ "from_account_id": from, "to_account_id": to, "amount": amount, "currency": "USD" }),
    )
    .await
}

#[tokio::test]
async fn every_change_writes_its_event_with_the_resource_as_the_api_shows_it() {
    let app = TestApp::spawn().await;
    let banker = app.banker("clerk").await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let a = app.open_account(&alice, "USD").await;
    let b = app.open_account(&bob, "USD").await;
    let opened = events_of_type(&app, "account.created").await;
    assert_eq!(
        opened
            .iter()
            .map(|e| e["id"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        [a, b]
    );
    let account_view = app
        .get(&format!("/v1/accounts/{a}"), &alice)
        .await
        .assert(StatusCode::OK);
    assert_same_resource(&opened[0], &account_view["account"]);

    app.deposit(&banker, a, 10_000, "USD").await;
    let paid = transfer(&app, &alice, a, b, 1_500)
        .await
        .assert(StatusCode::CREATED);
    let read = app
        .get(&format!("/v1/transfers/{}", paid["transfer"]["id"]), &alice)
        .await
        .assert(StatusCode::OK);
    assert_same_resource(
        &events_of_type(&app, "transfer.created").await[0],
        &read["transfer"],
    );
    assert_eq!(events_of_type(&app, "deposit.created").await.len(), 1);

    // A hold placed, captured (which is a transfer too), another placed and voided.
    let hold = app
        .post(
            "/v1/holds",
            Some(&alice),
            json!({ "from_account_id": a, "to_account_id": b, "amount": 700, "currency": "USD" }),
        )
        .await
        .assert(StatusCode::CREATED);
    let hold_id = hold["hold"]["id"].as_i64().unwrap();
    assert_same_resource(
        &events_of_type(&app, "hold.created").await[0],
        &hold["hold"],
    );
    let captured = app
        .call(
            Method::POST,
            &format!("/v1/holds/{hold_id}/capture"),
            Some(&bob),
            None,
        )
        .await
        .assert(StatusCode::CREATED);
    assert_same_resource(
        &events_of_type(&app, "hold.captured").await[0],
        &captured["hold"],
    );
    let second = app
        .post(
            "/v1/holds",
            Some(&alice),
            json!({ "from_account_id": a, "to_account_id": b, "amount": 50, "currency": "USD" }),
        )
        .await
        .assert(StatusCode::CREATED);
    let voided = app
        .call(
            Method::POST,
            &format!("/v1/holds/{}/void", second["hold"]["id"]),
            Some(&bob),
            None,
        )
        .await
        .assert(StatusCode::OK);
    assert_same_resource(
        &events_of_type(&app, "hold.voided").await[0],
        &voided["hold"],
    );

    let reversed = app
        .call(
            Method::POST,
            &format!("/v1/transfers/{}/reversal", paid["transfer"]["id"]),
            Some(&banker),
            None,
        )
        .await
        .assert(StatusCode::CREATED);
    assert_same_resource(
        &events_of_type(&app, "transfer.reversed").await[0],
        &reversed["transfer"],
    );

    app.post(
        &format!("/v1/accounts/{a}/withdrawals"),
        Some(&banker),
        json!({ "amount": 100, "currency": "USD" }),
    )
    .await
    .assert(StatusCode::CREATED);
    let frozen = app
        .call(
            Method::PUT,
            &format!("/v1/accounts/{a}/status"),
            Some(&banker),
            Some(json!({ "status": "frozen", "reason": "test" })),
        )
        .await
        .assert(StatusCode::OK);
    let changed = events_of_type(&app, "account.status_changed").await;
    assert_eq!(changed.len(), 1);
    assert_same_resource(&changed[0], &frozen["account"]);

    // Every money movement has exactly one event, in the same transaction as its transfer row.
    let (transfers, movement_events): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM transfers), (SELECT count(*) FROM events WHERE type IN \
         ('transfer.created', 'deposit.created', 'withdrawal.created', 'transfer.reversed'))",
    )
    .fetch_one(app.db.pool())
    .await
    .unwrap();
    assert_eq!((transfers, movement_events), (5, 5));
    let kinds: Vec<String> = sqlx::query_scalar("SELECT type FROM events ORDER BY id")
        .fetch_all(app.db.pool())
        .await
        .unwrap();
    assert_eq!(
        kinds,
        [
            "account.created",
            "account.created",
            "deposit.created",
            "transfer.created",
            "hold.created",
            "hold.captured",
            "transfer.created",
            "hold.created",
            "hold.voided",
            "transfer.reversed",
            "withdrawal.created",
            "account.status_changed",
        ]
    );
    // A refused movement writes nothing, its event included.
    transfer(&app, &bob, b, a, 1_000_000)
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "insufficient_funds");
    let after: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(app.db.pool())
        .await
        .unwrap();
    assert_eq!(after, 12);
}

#[tokio::test]
async fn verifying_an_email_is_an_event() {
    let app = TestApp::spawn().await;
    app.signup("alice").await;
    let (id, code) = app.mail.verification_link("alice@example.com").await;
    app.call(
        Method::GET,
        &format!("/v1/verify_email?email_id={id}&secret_code={code}"),
        None,
        None,
    )
    .await
    .assert(StatusCode::OK);
    let verified = events_of_type(&app, "user.email_verified").await;
    assert_eq!(verified.len(), 1);
    assert_eq!(verified[0]["username"], "alice");
    assert_eq!(verified[0]["is_email_verified"], true);
    assert!(verified[0].get("hashed_password").is_none());
}

/// Many clients move money over both paths (group commit and keyed) while a watcher follows one
/// of the accounts: the watcher sees each of its events exactly once, in id order, although
/// transactions commit out of id order.
#[tokio::test]
async fn a_watcher_sees_every_event_of_its_account_once_in_order_under_concurrent_load() {
    let app = Arc::new(TestApp::spawn_with(&[("EVENTS_POLL_INTERVAL", "20ms")]).await);
    let banker = app.banker("clerk").await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let a = app.open_account(&alice, "USD").await;
    let b = app.open_account(&bob, "USD").await;
    app.deposit(&banker, a, 1_000_000, "USD").await;
    app.deposit(&banker, b, 1_000_000, "USD").await;

    let mut watcher = SseReader::open(
        &app,
        &alice,
        &format!("/v1/accounts/{a}/events?after=0"),
        None,
    )
    .await;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let reading = {
        let seen = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Some(message) = watcher.next(Duration::from_secs(5)).await {
                seen.lock().unwrap().push(message.id.unwrap());
            }
        })
    };
    let mut clients = JoinSet::new();
    for client in 0..16 {
        let app = Arc::clone(&app);
        let (alice, bob) = (alice.clone(), bob.clone());
        clients.spawn(async move {
            for n in 0..15 {
                let (token, from, to) = if (client + n) % 2 == 0 { (&alice, a, b) } else { (&bob, b, a) };
                let mut headers = Vec::new();
                let key = format!("watch-{client}-{n}");
                if client % 2 == 0 {
                    headers.push(("Idempotency-Key", key.as_str()));
                }
                app.call_with(
                    Method::POST,
                    "/v1/transfers",
                    Some(token),
                    &headers,
                    Some(json!({ "from_account_id": from, "to_account_id": to, "amount": 1 + n, "currency": "USD" })),
                )
                .await
                .assert(StatusCode::CREATED);
            }
        });
    }
    while let Some(done) = clients.join_next().await {
        done.unwrap();
    }
    let expected = account_event_ids(&app, a).await;
    // 1 account.created + 1 deposit + 240 transfers.
    assert_eq!(expected.len(), 242);
    for _ in 0..200 {
        if seen.lock().unwrap().len() >= expected.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        *seen.lock().unwrap(),
        expected,
        "every event once, in order"
    );
    reading.abort();
    assert_ledger_consistent(app.db.pool()).await;
}

#[tokio::test]
async fn a_stream_resumes_from_the_last_event_id_without_gaps_or_duplicates() {
    let app = TestApp::spawn_with(&[("EVENTS_POLL_INTERVAL", "20ms")]).await;
    let banker = app.banker("clerk").await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let a = app.open_account(&alice, "USD").await;
    let b = app.open_account(&bob, "USD").await;
    app.deposit(&banker, a, 10_000, "USD").await;
    for n in 1..=5 {
        transfer(&app, &alice, a, b, n)
            .await
            .assert(StatusCode::CREATED);
    }
    let path = format!("/v1/accounts/{a}/events?after=0");
    let mut first = SseReader::open(&app, &alice, &path, None).await;
    let mut got = Vec::new();
    for _ in 0..3 {
        let message = first.next(Duration::from_secs(5)).await.unwrap();
        assert_eq!(message.data["id"].as_i64(), message.id);
        assert_eq!(message.data["type"].as_str().unwrap(), message.event);
        got.push(message.id.unwrap());
    }
    drop(first);
    // More commits while nobody watches; the browser-style resume (Last-Event-ID) wins over
    // `after`.
    for n in 6..=8 {
        transfer(&app, &alice, a, b, n)
            .await
            .assert(StatusCode::CREATED);
    }
    let mut second = SseReader::open(&app, &alice, &path, got.last().copied()).await;
    while let Some(message) = second.next(Duration::from_secs(2)).await {
        got.push(message.id.unwrap());
    }
    assert_eq!(got, account_event_ids(&app, a).await);
    assert_eq!(got.len(), 1 + 1 + 8);

    // Without a cursor only what commits from now on arrives.
    let mut fresh = SseReader::open(&app, &alice, &format!("/v1/accounts/{a}/events"), None).await;
    transfer(&app, &alice, a, b, 9)
        .await
        .assert(StatusCode::CREATED);
    let next = fresh.next(Duration::from_secs(5)).await.unwrap();
    assert_eq!(next.event, "transfer.created");
    assert_eq!(next.data["data"]["amount"], 9);
}

#[tokio::test]
async fn watching_is_for_the_owner_and_bankers_and_streams_are_bounded() {
    let app = TestApp::spawn_with(&[("MAX_STREAMS", "1")]).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let a = app.open_account(&alice, "USD").await;
    app.get(&format!("/v1/accounts/{a}/events"), &bob)
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    app.get("/v1/accounts/999999/events", &alice)
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    app.get(&format!("/v1/accounts/{a}/events?after=-1"), &alice)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_argument");
    app.call_with(
        Method::GET,
        &format!("/v1/accounts/{a}/events"),
        Some(&alice),
        &[("Last-Event-ID", "x")],
        None,
    )
    .await
    .assert_error(StatusCode::BAD_REQUEST, "invalid_argument");
    let open = SseReader::open(&app, &alice, &format!("/v1/accounts/{a}/events"), None).await;
    app.get(&format!("/v1/accounts/{a}/events"), &alice)
        .await
        .assert_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    drop(open);
    // The place comes back when the client leaves.
    let mut reopened = false;
    for _ in 0..100 {
        let response = app
            .client
            .get(format!("{}/v1/accounts/{a}/events", app.address))
            .bearer_auth(&alice)
            .send()
            .await
            .unwrap();
        if response.status() == StatusCode::OK {
            reopened = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(reopened);
}

/// SPEC §10's attack on streams: one user opening idle streams until the replica has none left.
/// Each user has their own bound (before: one cap of 256 per replica for everyone, so 256 idle
/// `curl -N` of one user refused every other watcher).
#[tokio::test]
async fn one_users_idle_streams_never_take_another_users_place() {
    let app = TestApp::spawn_with(&[("MAX_STREAMS", "3"), ("MAX_STREAMS_PER_USER", "2")]).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let a = app.open_account(&alice, "USD").await;
    let b = app.open_account(&bob, "USD").await;
    let path = format!("/v1/accounts/{a}/events");
    let _first = SseReader::open(&app, &alice, &path, None).await;
    let _second = SseReader::open(&app, &alice, &path, None).await;
    let refused = app.get(&path, &alice).await;
    refused.assert_error(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    assert!(!refused.header("retry-after").is_empty());
    let _bobs = SseReader::open(&app, &bob, &format!("/v1/accounts/{b}/events"), None).await;
}

/// A stream lives no longer than the token that opened it: it ends with `token_expired` and
/// where to resume, and the client comes back with a fresh token.
#[tokio::test]
async fn a_stream_ends_when_the_token_that_opened_it_expires() {
    let app = TestApp::spawn_with(&[("ACCESS_TOKEN_DURATION", "2s")]).await;
    let alice = app.user("alice").await;
    let a = app.open_account(&alice, "USD").await;
    let mut stream = SseReader::open(&app, &alice, &format!("/v1/accounts/{a}/events"), None).await;
    let mut last = None;
    while let Some(message) = stream.next(Duration::from_secs(20)).await {
        last = Some(message);
    }
    let end = last.expect("the stream said why it ended");
    assert_eq!(end.event, "end");
    assert_eq!(end.data["reason"], "token_expired", "{:?}", end.data);
}

/// A stream ends when the session that opened it is revoked (here by logging out): before, it
/// outlived logout, a password change and the loss of the banker role.
#[tokio::test]
async fn a_stream_ends_when_its_session_is_revoked() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice").await;
    let a = app.open_account(&alice, "USD").await;
    let session = app.login("alice").await;
    let token = session["access_token"].as_str().unwrap();
    let mut stream = SseReader::open(&app, token, &format!("/v1/accounts/{a}/events"), None).await;
    app.post(
        "/v1/users/logout",
        Some(token),
        json!({ "refresh_token": session["refresh_token"] }),
    )
    .await
    .assert(StatusCode::NO_CONTENT);
    let mut last = None;
    while let Some(message) = stream.next(Duration::from_secs(60)).await {
        last = Some(message);
    }
    let end = last.expect("the stream said why it ended");
    assert_eq!(
        (end.event.as_str(), &end.data["reason"]),
        ("end", &json!("revoked"))
    );
    // The other session's stream is not touched: alice's first login still watches.
    let mut other = SseReader::open(&app, &alice, &format!("/v1/accounts/{a}/events"), None).await;
    let banker = app.banker("clerk").await;
    app.deposit(&banker, a, 5, "USD").await;
    let seen = other.next(Duration::from_secs(30)).await.expect("an event");
    assert_eq!(seen.event, "deposit.created");
}

/// A client that stops reading is not buffered for without bound: once its buffer has been
/// full for the grace period the stream ends, saying where to resume.
#[tokio::test]
async fn a_slow_consumer_is_ended_with_where_to_resume() {
    use simplebank::events::{EndReason, EventHub, EventSettings, Terms, WatchStream};
    use tokio_stream::StreamExt;
    let app = TestApp::spawn().await;
    let banker = app.banker("clerk").await;
    let alice = app.user("alice").await;
    let a = app.open_account(&alice, "USD").await;
    for _ in 0..6 {
        app.deposit(&banker, a, 10, "USD").await;
    }
    let store = simplebank::store::Store::new(app.db.pool().clone());
    let hub = EventHub::new(
        Arc::new(store),
        EventSettings {
            poll: Duration::from_millis(10),
            max_streams: 4,
            max_streams_per_user: 4,
            stream_buffer: 2,
        },
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(hub.clone().run(stopped));
    while hub.horizon() < account_event_ids(&app, a).await.last().copied().unwrap() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let account = simplebank::domain::AccountId::new(a).unwrap();
    let mut stream = WatchStream::start(
        &hub,
        account,
        Some(0),
        Box::new(hub.stream_place().unwrap()),
        Arc::default(),
        Terms {
            grace: Duration::from_millis(200),
            ..Terms::default()
        },
    );
    // Not reading while the producer fills the buffer and waits out the grace.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let mut items = Vec::new();
    while let Some(item) = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .unwrap()
    {
        items.push(item);
    }
    let ids = account_event_ids(&app, a).await;
    assert_eq!(items.len(), 3, "{items:?}");
    assert_eq!(items[0].as_ref().unwrap().id, ids[0]);
    assert_eq!(items[1].as_ref().unwrap().id, ids[1]);
    let end = items[2].as_ref().unwrap_err();
    assert_eq!(end.reason, EndReason::SlowConsumer);
    assert_eq!(end.resume_after, ids[1]);
    stop.send(true).unwrap();
}

/// A scripted receiver: answers each delivery with the next status of `script` (then 200), and
/// records what arrived.
#[derive(Clone, Default)]
struct Receiver {
    script: Arc<Mutex<Vec<u16>>>,
    seen: Arc<Mutex<Vec<(axum::http::HeaderMap, String)>>>,
}

impl Receiver {
    async fn start(script: Vec<u16>) -> (Self, String) {
        let receiver = Receiver {
            script: Arc::new(Mutex::new(script)),
            ..Receiver::default()
        };
        let state = receiver.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
                let state = state.clone();
                async move {
                    state.seen.lock().unwrap().push((headers, body));
                    let mut script = state.script.lock().unwrap();
                    let status = if script.is_empty() {
                        200
                    } else {
                        script.remove(0)
                    };
                    StatusCode::from_u16(status).unwrap()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (receiver, url)
    }

    async fn wait_for(&self, n: usize) -> Vec<(axum::http::HeaderMap, String)> {
        for _ in 0..300 {
            if self.seen.lock().unwrap().len() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.seen.lock().unwrap().clone()
    }
}

fn verify(secret: &str, headers: &axum::http::HeaderMap, body: &str) -> bool {
    use base64::Engine;
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let expected = simplebank::events::webhooks::sign(
        &key,
        headers["webhook-id"].to_str().unwrap(),
        headers["webhook-timestamp"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap(),
        body,
    );
    headers["webhook-signature"]
        .to_str()
        .unwrap()
        .split(' ')
        .any(|s| s == expected)
}

#[tokio::test]
async fn webhooks_are_signed_retried_logged_and_redelivered() {
    let app = TestApp::spawn_with(&[("EVENTS_POLL_INTERVAL", "20ms")]).await;
    let banker = app.banker("clerk").await;
    let alice = app.user("alice").await;
    let a = app.open_account(&alice, "USD").await;
    let (receiver, url) = Receiver::start(vec![500]).await;
    let created = app
        .post("/v1/webhooks", Some(&banker), json!({ "url": url, "event_types": ["deposit.created"], "description": "wallet credits" }))
        .await
        .assert(StatusCode::CREATED);
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"));
    let id = created["webhook"]["id"].as_i64().unwrap();
    let listed = app
        .get("/v1/webhooks", &banker)
        .await
        .assert(StatusCode::OK);
    assert_eq!(
        listed["webhooks"][0]["event_types"],
        json!(["deposit.created"])
    );
    assert!(
        !listed.to_string().contains(&secret),
        "the secret is shown once"
    );

    app.deposit(&banker, a, 250, "USD").await;
    // The first attempt gets 500; the retry (seconds later) 200.
    let seen = receiver.wait_for(2).await;
    assert_eq!(seen.len(), 2, "one retry");
    for (headers, body) in &seen {
        assert!(verify(&secret, headers, body));
        let body: Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["type"], "deposit.created");
        assert_eq!(body["data"]["amount"], 250);
    }
    assert_eq!(seen[0].0["webhook-id"], seen[1].0["webhook-id"]);
    // The receiver has answered the retry; the worker records that a moment later: wait for the
    // log to show it (bounded), rather than racing the worker.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let log = loop {
        let log = app
            .get(&format!("/v1/webhooks/{id}/deliveries"), &banker)
            .await
            .assert(StatusCode::OK);
        if log["deliveries"].as_array().unwrap().len() >= 2 || std::time::Instant::now() > deadline
        {
            break log;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let attempts = log["deliveries"].as_array().unwrap();
    assert_eq!(attempts.len(), 2);
    assert_eq!(
        (
            attempts[0]["attempt"].as_i64(),
            attempts[0]["status_code"].as_i64()
        ),
        (Some(2), Some(200))
    );
    assert_eq!(
        (
            attempts[1]["attempt"].as_i64(),
            attempts[1]["status_code"].as_i64()
        ),
        (Some(1), Some(500))
    );
    assert_eq!(attempts[0]["delivery_status"], "delivered");

    // Redelivery: the same event, the same webhook-id, once more.
    let event_id = attempts[0]["event_id"].as_i64().unwrap();
    app.post(
        &format!("/v1/webhooks/{id}/redeliver"),
        Some(&banker),
        json!({ "event_id": event_id }),
    )
    .await
    .assert(StatusCode::ACCEPTED);
    let seen = receiver.wait_for(3).await;
    assert_eq!(
        seen[2].0["webhook-id"].to_str().unwrap(),
        event_id.to_string()
    );

    // A rotation: both secrets sign for a while.
    let rotated = app
        .call(
            Method::POST,
            &format!("/v1/webhooks/{id}/rotate_secret"),
            Some(&banker),
            None,
        )
        .await
        .assert(StatusCode::OK);
    let new_secret = rotated["secret"].as_str().unwrap();
    assert_ne!(new_secret, secret);
    app.deposit(&banker, a, 5, "USD").await;
    let seen = receiver.wait_for(4).await;
    assert!(verify(new_secret, &seen[3].0, &seen[3].1) && verify(&secret, &seen[3].0, &seen[3].1));

    // Events of other types are not sent; a deleted endpoint gets nothing more.
    app.post(
        "/v1/transfers",
        Some(&alice),
        json!({ "from_account_id": a, "to_account_id": a + 1, "amount": 1, "currency": "USD" }),
    )
    .await;
    app.call(
        Method::DELETE,
        &format!("/v1/webhooks/{id}"),
        Some(&banker),
        None,
    )
    .await
    .assert(StatusCode::NO_CONTENT);
    app.deposit(&banker, a, 5, "USD").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.seen.lock().unwrap().len(), 4);
    app.call(
        Method::DELETE,
        &format!("/v1/webhooks/{id}"),
        Some(&banker),
        None,
    )
    .await
    .assert_error(StatusCode::NOT_FOUND, "not_found");
    app.post(
        &format!("/v1/webhooks/{id}/redeliver"),
        Some(&banker),
        json!({ "event_id": event_id }),
    )
    .await
    .assert_error(StatusCode::NOT_FOUND, "not_found");
}

/// The attack: a banker names any event id, to copy the event history out through an
/// endpoint of their choosing. Only events the endpoint was (or would have been) sent qualify.
#[tokio::test]
async fn redelivery_sends_only_subscribed_events_from_after_the_endpoint_was_created() {
    let app = TestApp::spawn_with(&[("EVENTS_POLL_INTERVAL", "20ms")]).await;
    let banker = app.banker("clerk").await;
    let alice = app.user("alice").await;
    let a = app.open_account(&alice, "USD").await;
    app.deposit(&banker, a, 100, "USD").await;
    let (receiver, url) = Receiver::start(vec![]).await;
    let created = app
        .post(
            "/v1/webhooks",
            Some(&banker),
            json!({ "url": url, "event_types": ["deposit.created"] }),
        )
        .await
        .assert(StatusCode::CREATED);
    let id = created["webhook"]["id"].as_i64().unwrap();
    let bob = app.user("bob").await;
    let b = app.open_account(&bob, "USD").await;
    app.deposit(&banker, a, 7, "USD").await;
    app.post(
        "/v1/transfers",
        Some(&alice),
        json!({ "from_account_id": a, "to_account_id": b, "amount": 1, "currency": "USD" }),
    )
    .await
    .assert(StatusCode::CREATED);
    receiver.wait_for(1).await;
    let events: Vec<(i64, String)> = sqlx::query_as("SELECT id, type FROM events ORDER BY id")
        .fetch_all(app.db.pool())
        .await
        .unwrap();
    let deposits: Vec<i64> = events
        .iter()
        .filter(|(_, kind)| kind == "deposit.created")
        .map(|(id, _)| *id)
        .collect();
    let (before, after) = (deposits[0], *deposits.last().unwrap());
    let other_type = events
        .iter()
        .find(|(id, kind)| *id > before && kind != "deposit.created")
        .expect("an event of another type after the endpoint")
        .0;
    for refused in [before, other_type] {
        app.post(
            &format!("/v1/webhooks/{id}/redeliver"),
            Some(&banker),
            json!({ "event_id": refused }),
        )
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    }
    app.post(
        &format!("/v1/webhooks/{id}/redeliver"),
        Some(&banker),
        json!({ "event_id": after }),
    )
    .await
    .assert(StatusCode::ACCEPTED);
    let seen = receiver.wait_for(2).await;
    assert_eq!(seen.len(), 2);
    assert!(
        seen.iter()
            .all(|(headers, _)| headers["webhook-id"].to_str().unwrap() == after.to_string()),
        "only the subscribed event, twice"
    );
}

#[tokio::test]
async fn webhook_urls_that_reach_private_networks_are_refused_in_production_mode() {
    let app = TestApp::spawn_with(&[("WEBHOOK_ALLOW_PRIVATE", "false")]).await;
    let banker = app.banker("clerk").await;
    let alice = app.user("alice").await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://localhost/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.7/",
        "http://[::1]/",
        "ftp://example.com/",
    ] {
        app.post("/v1/webhooks", Some(&banker), json!({ "url": url }))
            .await
            .assert_error(StatusCode::BAD_REQUEST, "invalid_argument");
    }
    app.post(
        "/v1/webhooks",
        Some(&banker),
        json!({ "url": "https://hooks.example.com/x", "event_types": ["money.printed"] }),
    )
    .await
    .assert_error(StatusCode::BAD_REQUEST, "invalid_argument");
    app.post(
        "/v1/webhooks",
        Some(&alice),
        json!({ "url": "https://hooks.example.com/x" }),
    )
    .await
    .assert_error(StatusCode::FORBIDDEN, "permission_denied");
    let nothing: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_endpoints")
        .fetch_one(app.db.pool())
        .await
        .unwrap();
    assert_eq!(nothing, 0);
}
