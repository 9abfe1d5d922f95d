//! Holds over HTTP (SPEC §6): the payer authorises, the payee captures (in all or in part) or
//! releases, the funds are reserved meanwhile on both money paths, and a hold stops reserving at
//! its expiry.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use simplebank::store::prelude::*;
use tokio::task::JoinSet;

use crate::harness::{Reply, TestApp};
use crate::helpers::assert_ledger_consistent;

async fn place(app: &TestApp, token: &str, from: i64, to: i64, amount: i64) -> Reply {
    place_with(app, token, json!({ "from_account_id": from, "to_account_id": to, "amount": amount, "currency": "USD" })).await
}

async fn place_with(app: &TestApp, token: &str, body: Value) -> Reply {
    app.post("/v1/holds", Some(token), body).await
}

async fn capture(app: &TestApp, token: &str, hold: i64, amount: Option<i64>) -> Reply {
    let body = amount.map(|a| json!({ "amount": a }));
    app.call(
        Method::POST,
        &format!("/v1/holds/{hold}/capture"),
        Some(token),
        body,
    )
    .await
}

async fn void(app: &TestApp, token: &str, hold: i64) -> Reply {
    app.call(
        Method::POST,
        &format!("/v1/holds/{hold}/void"),
        Some(token),
        None,
    )
    .await
}

async fn transfer(app: &TestApp, token: &str, from: i64, to: i64, amount: i64) -> Reply {
    app.post(
        "/v1/transfers",
        Some(token),
        json!({ "from_account_id": from, "to_account_id": to, "amount": amount, "currency": "USD" }),
    )
    .await
}

async fn account(app: &TestApp, token: &str, id: i64) -> Value {
    app.get(&format!("/v1/accounts/{id}"), token)
        .await
        .assert(StatusCode::OK)["account"]
        .clone()
}

fn id(hold: &Value) -> i64 {
    hold["hold"]["id"].as_i64().unwrap()
}

/// Alice (payer) and Bob (payee) with a USD account each, Carol a stranger, and a banker.
struct World {
    app: TestApp,
    alice: String,
    bob: String,
    carol: String,
    banker: String,
    a: i64,
    b: i64,
}

impl World {
    async fn new() -> Self {
        Self::with(&[]).await
    }

    async fn with(overrides: &[(&str, &str)]) -> Self {
        let app = TestApp::spawn_with(overrides).await;
        let alice = app.user("alice").await;
        let bob = app.user("bob").await;
        let carol = app.user("carol").await;
        let banker = app.banker("clerk").await;
        let a = app.open_account(&alice, "USD").await;
        let b = app.open_account(&bob, "USD").await;
        Self {
            app,
            alice,
            bob,
            carol,
            banker,
            a,
            b,
        }
    }
}

#[tokio::test]
async fn a_hold_reserves_funds_and_a_partial_capture_releases_the_rest() {
    let World {
        app,
        alice,
        bob,
        banker,
        a,
        b,
        ..
    } = World::new().await;
    app.deposit(&banker, a, 10_000, "USD").await;

    let placed = place(&app, &alice, a, b, 6_000)
        .await
        .assert(StatusCode::CREATED);
    assert_eq!(placed["hold"]["status"], "pending");
    assert_eq!(placed["hold"]["amount"], 6_000);
    assert_eq!(placed["from_account"]["balance"], 10_000);
    assert_eq!(placed["from_account"]["available_balance"], 4_000);
    let hold = id(&placed);
    assert_eq!(account(&app, &alice, a).await["available_balance"], 4_000);

    // Every debit sees what is reserved: a transfer, a withdrawal, another hold.
    transfer(&app, &alice, a, b, 4_001)
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "insufficient_funds");
    app.post(
        &format!("/v1/accounts/{a}/withdrawals"),
        Some(&banker),
        json!({ "amount": 4_001, "currency": "USD" }),
    )
    .await
    .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "insufficient_funds");
    place(&app, &alice, a, b, 4_001)
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "insufficient_funds");

    // The payee captures part; the rest goes back to the payer's available balance.
    let captured = capture(&app, &bob, hold, Some(2_500))
        .await
        .assert(StatusCode::CREATED);
    assert_eq!(captured["hold"]["status"], "captured");
    assert_eq!(captured["hold"]["captured_amount"], 2_500);
    assert!(captured["hold"]["resolved_at"].is_string());
    assert_eq!(captured["transfer"]["amount"], 2_500);
    assert_eq!(captured["transfer"]["hold_id"], hold);
    assert_eq!(captured["transfer"]["from_account_id"], a);
    assert_eq!(captured["to_entry"]["balance_after"], 2_500);
    let payer = account(&app, &alice, a).await;
    assert_eq!(
        (
            payer["balance"].as_i64(),
            payer["available_balance"].as_i64()
        ),
        (Some(7_500), Some(7_500))
    );

    // Final: a second capture or a void is refused, and so is reading it as anyone else's.
    capture(&app, &bob, hold, None)
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "hold_not_pending");
    void(&app, &bob, hold)
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "hold_not_pending");
    let read = app
        .get(&format!("/v1/holds/{hold}"), &alice)
        .await
        .assert(StatusCode::OK);
    assert_eq!(read["hold"]["captured_amount"], 2_500);
    // The transfer is an ordinary one: both parties read it.
    let transfer_id = captured["transfer"]["id"].as_i64().unwrap();
    app.get(&format!("/v1/transfers/{transfer_id}"), &alice)
        .await
        .assert(StatusCode::OK);
    assert_ledger_consistent(app.db.pool()).await;
}

#[tokio::test]
async fn the_payer_authorises_the_payee_resolves_and_strangers_see_nothing() {
    let World {
        app,
        alice,
        bob,
        carol,
        banker,
        a,
        b,
    } = World::new().await;
    app.deposit(&banker, a, 1_000, "USD").await;

    // Only the payer's owner (or a banker) places a hold from an account.
    place(&app, &bob, a, b, 100)
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    let hold = id(&place(&app, &alice, a, b, 100)
        .await
        .assert(StatusCode::CREATED));
    let by_banker = id(&place(&app, &banker, a, b, 100)
        .await
        .assert(StatusCode::CREATED));

    // The payer cannot capture its own hold, nor release it: the promise is the payee's.
    capture(&app, &alice, hold, None)
        .await
        .assert_error(StatusCode::FORBIDDEN, "permission_denied");
    void(&app, &alice, hold)
        .await
        .assert_error(StatusCode::FORBIDDEN, "permission_denied");
    // A stranger can neither read nor touch it, nor list the accounts' holds.
    app.get(&format!("/v1/holds/{hold}"), &carol)
        .await
        .assert_error(StatusCode::FORBIDDEN, "permission_denied");
    capture(&app, &carol, hold, None)
        .await
        .assert_error(StatusCode::FORBIDDEN, "permission_denied");
    app.get(&format!("/v1/accounts/{a}/holds"), &carol)
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    for reader in [&alice, &bob, &banker] {
        app.get(&format!("/v1/holds/{hold}"), reader)
            .await
            .assert(StatusCode::OK);
    }
    app.get("/v1/holds/999999", &alice)
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");

    let voided = void(&app, &bob, hold).await.assert(StatusCode::OK);
    assert_eq!(voided["hold"]["status"], "voided");
    assert!(voided["hold"].get("captured_amount").is_none());
    // No body captures all of it, with a JSON content type or without one.
    let captured = app
        .call_with(
            Method::POST,
            &format!("/v1/holds/{by_banker}/capture"),
            Some(&banker),
            &[("Content-Type", "application/json")],
            None,
        )
        .await
        .assert(StatusCode::CREATED);
    assert_eq!(captured["hold"]["captured_amount"], 100);
    assert_eq!(account(&app, &alice, a).await["available_balance"], 900);

    // A hold is judged as the transfer it may become.
    let settlement: i64 = sqlx::query_scalar(
        "SELECT id FROM accounts WHERE kind = 'settlement' AND currency = 'USD'",
    )
    .fetch_one(app.db.pool())
    .await
    .unwrap();
    let refused = place(&app, &banker, a, settlement, 10).await;
    refused.assert_error(StatusCode::BAD_REQUEST, "invalid_argument");
    assert_eq!(
        refused.body["error"]["details"][0]["field"],
        "to_account_id"
    );
    let eur = app.open_account(&carol, "EUR").await;
    // Carol's EUR account takes no USD: to Alice it is not found (SPEC §10).
    place(&app, &alice, a, eur, 10)
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    place(&app, &alice, a, 999_999, 10)
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    assert_ledger_consistent(app.db.pool()).await;
}

#[tokio::test]
async fn bad_hold_requests_name_every_field_and_change_nothing() {
    let World {
        app,
        alice,
        bob,
        banker,
        a,
        b,
        ..
    } = World::new().await;
    app.deposit(&banker, a, 1_000, "USD").await;

    let refused = place_with(
        &app,
        &alice,
        json!({
            "from_account_id": a, "to_account_id": a, "amount": 0, "currency": "XXX",
            "expires_in": 2_592_001, "reference": "caf\u{e9}",
            "metadata": { "k": "v".repeat(5_000) },
        }),
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
    assert_eq!(
        fields,
        [
            "amount",
            "currency",
            "expires_in",
            "metadata",
            "reference",
            "to_account_id"
        ]
    );
    // Metadata values must be strings; unknown fields are refused.
    place_with(
        &app,
        &alice,
        json!({ "from_account_id": a, "to_account_id": b, "amount": 5, "currency": "USD", "metadata": { "n": 1 } }),
    )
    .await
    .assert_error(StatusCode::BAD_REQUEST, "invalid_argument");
    place_with(
        &app,
        &alice,
        json!({ "from_account_id": a, "to_account_id": b, "amount": 5, "currency": "USD", "memo": "x" }),
    )
    .await
    .assert_error(StatusCode::BAD_REQUEST, "invalid_argument");

    let placed = place_with(
        &app,
        &alice,
        json!({
            "from_account_id": a, "to_account_id": b, "amount": 300, "currency": "USD",
            "expires_in": 3_600, "reference": "order-1042", "metadata": { "sku": "A-7" },
        }),
    )
    .await
    .assert(StatusCode::CREATED);
    assert_eq!(placed["hold"]["reference"], "order-1042");
    assert_eq!(placed["hold"]["metadata"]["sku"], "A-7");
    let hold = id(&placed);
    let over = capture(&app, &bob, hold, Some(301)).await;
    over.assert_error(StatusCode::BAD_REQUEST, "invalid_argument");
    assert_eq!(over.body["error"]["details"][0]["field"], "amount");
    capture(&app, &bob, hold, Some(-1))
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_argument");
    app.get("/v1/holds/abc", &alice)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_argument");
    // Still pending, still all of it.
    let read = app
        .get(&format!("/v1/holds/{hold}"), &bob)
        .await
        .assert(StatusCode::OK);
    assert_eq!(read["hold"]["status"], "pending");
    assert_eq!(account(&app, &alice, a).await["available_balance"], 700);
    assert_ledger_consistent(app.db.pool()).await;
}

#[tokio::test]
async fn a_hold_stops_reserving_at_its_expiry_before_any_sweep() {
    let World {
        app,
        alice,
        bob,
        banker,
        a,
        b,
        ..
    } = World::new().await;
    app.deposit(&banker, a, 1_000, "USD").await;
    let placed = place_with(
        &app,
        &alice,
        json!({ "from_account_id": a, "to_account_id": b, "amount": 800, "currency": "USD", "expires_in": 1 }),
    )
    .await
    .assert(StatusCode::CREATED);
    let hold = id(&placed);
    assert_eq!(placed["from_account"]["available_balance"], 200);

    // Wait on what the server says, not on a clock of our own.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let read = app
            .get(&format!("/v1/holds/{hold}"), &alice)
            .await
            .assert(StatusCode::OK);
        if read["hold"]["status"] == "expired" {
            assert_eq!(read["hold"]["resolved_at"], read["hold"]["expires_at"]);
            break;
        }
        assert!(Instant::now() < deadline, "the hold never expired: {read}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // No sweep has run: the row still says pending, yet nothing is reserved.
    let marked: String = sqlx::query_scalar("SELECT status FROM holds WHERE id = $1")
        .bind(hold)
        .fetch_one(app.db.pool())
        .await
        .unwrap();
    assert_eq!(marked, "pending");
    assert_eq!(account(&app, &alice, a).await["available_balance"], 1_000);
    capture(&app, &bob, hold, None)
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "hold_not_pending");
    void(&app, &bob, hold)
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "hold_not_pending");
    transfer(&app, &alice, a, b, 1_000)
        .await
        .assert(StatusCode::CREATED);
    let expired = app
        .get(&format!("/v1/accounts/{a}/holds?status=expired"), &alice)
        .await
        .assert(StatusCode::OK);
    assert_eq!(expired["holds"].as_array().unwrap().len(), 1);

    // The sweep tidies the row and the payer's count, and finds nothing the second time.
    assert_eq!(app.db.store.expire_due_holds(100, None).await.unwrap(), 1);
    assert_eq!(app.db.store.expire_due_holds(100, None).await.unwrap(), 0);
    let (status, pending): (String, i64) = sqlx::query_as(
        "SELECT h.status, a.holds_pending FROM holds h JOIN accounts a ON a.id = h.from_account_id \
         WHERE h.id = $1",
    )
    .bind(hold)
    .fetch_one(app.db.pool())
    .await
    .unwrap();
    assert_eq!((status.as_str(), pending), ("expired", 0));
    assert_ledger_consistent(app.db.pool()).await;
}

#[tokio::test]
async fn frozen_payers_cannot_hold_or_be_captured_and_pending_holds_block_closing() {
    let World {
        app,
        alice,
        bob,
        banker,
        a,
        b,
        ..
    } = World::new().await;
    app.deposit(&banker, a, 500, "USD").await;
    let first = id(&place(&app, &alice, a, b, 200)
        .await
        .assert(StatusCode::CREATED));
    let second = id(&place(&app, &alice, a, b, 200)
        .await
        .assert(StatusCode::CREATED));

    let status = |s: &'static str, account: i64| {
        let app = &app;
        let banker = &banker;
        async move {
            app.call(
                Method::PUT,
                &format!("/v1/accounts/{account}/status"),
                Some(banker),
                Some(json!({ "status": s })),
            )
            .await
        }
    };
    status("frozen", a).await.assert(StatusCode::OK);
    place(&app, &alice, a, b, 10)
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "account_frozen");
    capture(&app, &bob, first, None)
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "account_frozen");
    // A refused capture leaves the hold as it was; a release is always allowed.
    let read = app
        .get(&format!("/v1/holds/{first}"), &bob)
        .await
        .assert(StatusCode::OK);
    assert_eq!(read["hold"]["status"], "pending");
    void(&app, &bob, first).await.assert(StatusCode::OK);
    status("active", a).await.assert(StatusCode::OK);

    // Lowering the limit may not leave the holds uncovered.
    app.call(
        Method::PUT,
        &format!("/v1/accounts/{a}/overdraft_limit"),
        Some(&banker),
        Some(json!({ "limit": 100 })),
    )
    .await
    .assert(StatusCode::OK);
    transfer(&app, &alice, a, b, 400)
        .await
        .assert(StatusCode::CREATED);
    // Balance 100, held 200, limit 100: the limit cannot go lower.
    let lower = app
        .call(
            Method::PUT,
            &format!("/v1/accounts/{a}/overdraft_limit"),
            Some(&banker),
            Some(json!({ "limit": 99 })),
        )
        .await;
    lower.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "failed_precondition");
    assert_eq!(lower.body["error"]["details"][0]["field"], "limit");

    // Empty the account by capturing, but with another hold pending it cannot close.
    capture(&app, &bob, second, Some(100))
        .await
        .assert(StatusCode::CREATED);
    let third = id(&place(&app, &alice, a, b, 50)
        .await
        .assert(StatusCode::CREATED));
    assert_eq!(account(&app, &alice, a).await["balance"], 0);
    let refused = status("closed", a).await;
    refused.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "failed_precondition");
    assert_eq!(refused.body["error"]["details"][0]["field"], "status");
    void(&app, &bob, third).await.assert(StatusCode::OK);
    // A hold into the account, placed before it closes, can then only be released.
    app.deposit(&banker, b, 100, "USD").await;
    let into_a = id(&place(&app, &bob, b, a, 10)
        .await
        .assert(StatusCode::CREATED));
    status("closed", a).await.assert(StatusCode::OK);
    capture(&app, &alice, into_a, None)
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "account_closed");
    // To a stranger paying in, a closed account is not found.
    place(&app, &bob, b, a, 10)
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    void(&app, &alice, into_a).await.assert(StatusCode::OK);
    assert_ledger_consistent(app.db.pool()).await;
}

#[tokio::test]
async fn an_accounts_holds_page_newest_first_and_filter_by_status() {
    let World {
        app,
        alice,
        bob,
        banker,
        a,
        b,
        ..
    } = World::new().await;
    app.deposit(&banker, a, 1_000, "USD").await;
    app.deposit(&banker, b, 1_000, "USD").await;
    let mut placed = Vec::new();
    for n in 1..=5 {
        placed.push(id(&place(&app, &alice, a, b, n)
            .await
            .assert(StatusCode::CREATED)));
    }
    // One the other way round: b's payer side, a's payee side.
    placed.push(id(&place(&app, &bob, b, a, 7)
        .await
        .assert(StatusCode::CREATED)));
    void(&app, &bob, placed[0]).await.assert(StatusCode::OK);

    let mut seen = Vec::new();
    let mut url = format!("/v1/accounts/{a}/holds?page_size=4");
    loop {
        let page = app.get(&url, &alice).await.assert(StatusCode::OK);
        seen.extend(
            page["holds"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| h["id"].as_i64().unwrap()),
        );
        match page["next_page_token"].as_str() {
            Some(token) => url = format!("/v1/accounts/{a}/holds?page_size=4&page_token={token}"),
            None => break,
        }
    }
    let mut newest_first = placed.clone();
    newest_first.reverse();
    assert_eq!(seen, newest_first);

    let pending = app
        .get(&format!("/v1/accounts/{a}/holds?status=pending"), &alice)
        .await
        .assert(StatusCode::OK);
    assert_eq!(pending["holds"].as_array().unwrap().len(), 5);
    let voided = app
        .get(&format!("/v1/accounts/{a}/holds?status=voided"), &banker)
        .await
        .assert(StatusCode::OK);
    assert_eq!(voided["holds"][0]["id"], placed[0]);
    app.get(&format!("/v1/accounts/{a}/holds?status=held"), &alice)
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_argument");
    // A token of another list is refused.
    let entries = app
        .get(&format!("/v1/accounts/{a}/entries?page_size=1"), &alice)
        .await
        .assert(StatusCode::OK);
    let token = entries["next_page_token"].as_str().unwrap_or("6513a31");
    app.get(
        &format!("/v1/accounts/{a}/holds?page_token={token}"),
        &alice,
    )
    .await
    .assert_error(StatusCode::BAD_REQUEST, "invalid_argument");
}

/// Many tasks placing, capturing and voiding holds on three thin accounts while others transfer
/// out of them and a banker freezes and thaws them, with group commit on and off: every answer
/// is a success or a refusal, and afterwards no account is overdrawn, no hold is uncovered, each
/// captured hold has exactly one transfer, and the ledger adds up.
#[tokio::test]
async fn holds_and_transfers_racing_for_the_last_units_never_overdraw() {
    for group_commit in ["true", "false"] {
        let app = std::sync::Arc::new(TestApp::spawn_with(&[("GROUP_COMMIT", group_commit)]).await);
        let banker = app.banker("clerk").await;
        let mut accounts = Vec::new();
        for name in ["ann", "ben", "cat"] {
            let token = app.user(name).await;
            let id = app.open_account(&token, "USD").await;
            app.deposit(&banker, id, 40, "USD").await;
            accounts.push((token, id));
        }
        let mut tasks = JoinSet::new();
        for task in 0..18 {
            let app = app.clone();
            let (payer, from) = accounts[task % 3].clone();
            let (payee, to) = accounts[(task + 1) % 3].clone();
            tasks.spawn(async move {
                let mut statuses = Vec::new();
                for round in 0..6 {
                    if task % 3 == 0 {
                        statuses.push(transfer(&app, &payer, from, to, 3).await.status);
                        continue;
                    }
                    let placed = place(&app, &payer, from, to, 5).await;
                    statuses.push(placed.status);
                    if placed.status != StatusCode::CREATED {
                        continue;
                    }
                    let hold = id(&placed.body);
                    let resolved = match (task + round) % 3 {
                        0 => void(&app, &payee, hold).await,
                        1 => capture(&app, &payee, hold, Some(2)).await,
                        _ => capture(&app, &payee, hold, None).await,
                    };
                    statuses.push(resolved.status);
                }
                statuses
            });
        }
        {
            let app = app.clone();
            let banker = banker.clone();
            let ids: Vec<i64> = accounts.iter().map(|(_, id)| *id).collect();
            tasks.spawn(async move {
                for round in 0..6 {
                    let status = if round % 2 == 0 { "frozen" } else { "active" };
                    for id in &ids {
                        app.call(
                            Method::PUT,
                            &format!("/v1/accounts/{id}/status"),
                            Some(&banker),
                            Some(json!({ "status": status })),
                        )
                        .await
                        .assert(StatusCode::OK);
                    }
                }
                Vec::new()
            });
        }
        let mut created = 0;
        while let Some(statuses) = tasks.join_next().await {
            for status in statuses.unwrap() {
                assert!(
                    [
                        StatusCode::OK,
                        StatusCode::CREATED,
                        StatusCode::UNPROCESSABLE_ENTITY
                    ]
                    .contains(&status),
                    "{status}"
                );
                created += usize::from(status == StatusCode::CREATED);
            }
        }
        assert!(
            created > 0,
            "group commit {group_commit}: nothing succeeded"
        );
        let captured: i64 =
            sqlx::query_scalar("SELECT count(*) FROM holds WHERE status = 'captured'")
                .fetch_one(app.db.pool())
                .await
                .unwrap();
        assert!(captured > 0, "group commit {group_commit}: no capture won");
        assert_ledger_consistent(app.db.pool()).await;
    }
}

/// The race the VOLATILE `account_held` exists for: with the payer's lock contended, two holds
/// that each fit but not together must not both be placed, on any path.
#[tokio::test]
async fn two_holds_never_both_take_the_last_funds() {
    let World {
        app,
        alice,
        banker,
        a,
        b,
        ..
    } = World::new().await;
    let app = std::sync::Arc::new(app);
    for round in 0..20 {
        app.deposit(&banker, a, 10, "USD").await;
        let mut tasks = JoinSet::new();
        for _ in 0..4 {
            let app = app.clone();
            let alice = alice.clone();
            tasks.spawn(async move { place(&app, &alice, a, b, 6).await.status });
        }
        let mut placed = 0;
        while let Some(status) = tasks.join_next().await {
            placed += usize::from(status.unwrap() == StatusCode::CREATED);
        }
        assert_eq!(placed, 1, "round {round}");
        // Release it, and spend what is left so the next round starts from 0.
        let holds = app
            .get(&format!("/v1/accounts/{a}/holds?status=pending"), &alice)
            .await
            .assert(StatusCode::OK);
        let hold = holds["holds"][0]["id"].as_i64().unwrap();
        app.call(
            Method::POST,
            &format!("/v1/holds/{hold}/void"),
            Some(&banker),
            None,
        )
        .await
        .assert(StatusCode::OK);
        transfer(&app, &alice, a, b, 10)
            .await
            .assert(StatusCode::CREATED);
    }
    assert_ledger_consistent(app.db.pool()).await;
}

async fn keyed(app: &TestApp, token: &str, path: &str, key: &str, body: Option<Value>) -> Reply {
    app.call_with(
        Method::POST,
        path,
        Some(token),
        &[("Idempotency-Key", key)],
        body,
    )
    .await
}

#[tokio::test]
async fn hold_writes_under_a_key_happen_once_and_answer_the_same_way_again() {
    let World {
        app,
        alice,
        bob,
        banker,
        a,
        b,
        ..
    } = World::new().await;
    app.deposit(&banker, a, 1_000, "USD").await;
    let body = json!({ "from_account_id": a, "to_account_id": b, "amount": 400, "currency": "USD", "reference": "cart-9" });

    let first = keyed(&app, &alice, "/v1/holds", "place-1", Some(body.clone())).await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(first.header("idempotent-replayed"), "");
    let again = keyed(&app, &alice, "/v1/holds", "place-1", Some(body.clone())).await;
    assert_eq!(again.status, StatusCode::CREATED);
    assert_eq!(again.header("idempotent-replayed"), "true");
    assert_eq!(again.body["hold"], first.body["hold"]);
    let hold = id(&first.body);
    assert_eq!(account(&app, &alice, a).await["available_balance"], 600);
    // Another request under the same key is refused, and changes nothing.
    let other =
        json!({ "from_account_id": a, "to_account_id": b, "amount": 401, "currency": "USD" });
    keyed(&app, &alice, "/v1/holds", "place-1", Some(other))
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "idempotency_mismatch");
    let holds: i64 = sqlx::query_scalar("SELECT count(*) FROM holds")
        .fetch_one(app.db.pool())
        .await
        .unwrap();
    assert_eq!(holds, 1);

    // A refusal is the answer too: replayed even once its cause is gone.
    app.call(
        Method::PUT,
        &format!("/v1/accounts/{a}/status"),
        Some(&banker),
        Some(json!({ "status": "frozen" })),
    )
    .await
    .assert(StatusCode::OK);
    let path = format!("/v1/holds/{hold}/capture");
    keyed(&app, &bob, &path, "cap-1", Some(json!({ "amount": 150 })))
        .await
        .assert_error(StatusCode::UNPROCESSABLE_ENTITY, "account_frozen");
    app.call(
        Method::PUT,
        &format!("/v1/accounts/{a}/status"),
        Some(&banker),
        Some(json!({ "status": "active" })),
    )
    .await
    .assert(StatusCode::OK);
    let replayed_refusal = keyed(&app, &bob, &path, "cap-1", Some(json!({ "amount": 150 }))).await;
    replayed_refusal.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "account_frozen");
    assert_eq!(replayed_refusal.header("idempotent-replayed"), "true");

    // A capture under a fresh key: once, then the same transfer again.
    let captured = keyed(&app, &bob, &path, "cap-2", Some(json!({ "amount": 150 })))
        .await
        .assert(StatusCode::CREATED);
    // The capture's transfer carries the hold's reference: found as the order it paid for.
    assert_eq!(captured["transfer"]["reference"], "cart-9");
    let retried = keyed(&app, &bob, &path, "cap-2", Some(json!({ "amount": 150 }))).await;
    assert_eq!(retried.status, StatusCode::CREATED);
    assert_eq!(retried.header("idempotent-replayed"), "true");
    assert_eq!(retried.body["transfer"], captured["transfer"]);
    assert_eq!(retried.body["to_entry"], captured["to_entry"]);
    assert_eq!(retried.body["hold"], captured["hold"]);
    // The placement's replay still shows the hold as it was placed.
    let placed_again = keyed(&app, &alice, "/v1/holds", "place-1", Some(body)).await;
    assert_eq!(placed_again.body["hold"]["status"], "pending");

    // A void under a key, replayed rather than refused as no longer pending.
    let second = id(&place(&app, &alice, a, b, 100)
        .await
        .assert(StatusCode::CREATED));
    let path = format!("/v1/holds/{second}/void");
    let voided = keyed(&app, &bob, &path, "void-1", None)
        .await
        .assert(StatusCode::OK);
    let revoid = keyed(&app, &bob, &path, "void-1", None).await;
    assert_eq!(revoid.status, StatusCode::OK);
    assert_eq!(revoid.header("idempotent-replayed"), "true");
    assert_eq!(revoid.body["hold"], voided["hold"]);
    let transfers: i64 =
        sqlx::query_scalar("SELECT count(*) FROM transfers WHERE hold_id IS NOT NULL")
            .fetch_one(app.db.pool())
            .await
            .unwrap();
    assert_eq!(transfers, 1);
    assert_ledger_consistent(app.db.pool()).await;
}

#[tokio::test]
async fn concurrent_retries_of_one_keyed_hold_place_it_once() {
    let World {
        app,
        alice,
        banker,
        a,
        b,
        ..
    } = World::new().await;
    app.deposit(&banker, a, 1_000, "USD").await;
    let app = std::sync::Arc::new(app);
    let body =
        json!({ "from_account_id": a, "to_account_id": b, "amount": 300, "currency": "USD" });
    let mut tasks = JoinSet::new();
    for _ in 0..8 {
        let (app, alice, body) = (app.clone(), alice.clone(), body.clone());
        tasks.spawn(async move { keyed(&app, &alice, "/v1/holds", "same", Some(body)).await });
    }
    let mut ids = Vec::new();
    while let Some(reply) = tasks.join_next().await {
        let reply = reply.unwrap();
        match reply.status {
            StatusCode::CREATED => ids.push(id(&reply.body)),
            StatusCode::CONFLICT => assert_eq!(reply.code(), "conflict"),
            other => panic!("{other}: {}", reply.body),
        }
    }
    assert!(!ids.is_empty());
    assert!(ids.iter().all(|h| *h == ids[0]), "{ids:?}");
    let holds: i64 = sqlx::query_scalar("SELECT count(*) FROM holds")
        .fetch_one(app.db.pool())
        .await
        .unwrap();
    assert_eq!(holds, 1);
    assert_ledger_consistent(app.db.pool()).await;
}

/// Closing races with credits and captures into the account, on both paths: the banker empties
/// it and tries to close it while others keep paying into it (until their thin accounts run
/// dry). Whenever it closes, nothing moved in or out after (`closed_at`, checked with the other
/// invariants), and every payment either landed before or was refused.
#[tokio::test]
async fn an_account_closes_between_payments_never_under_one() {
    for group_commit in ["true", "false"] {
        let app = std::sync::Arc::new(TestApp::spawn_with(&[("GROUP_COMMIT", group_commit)]).await);
        let banker = app.banker("clerk").await;
        let dan = app.user("dan").await;
        let d = app.open_account(&dan, "USD").await;
        let mut payers = Vec::new();
        for name in ["ann", "ben"] {
            let token = app.user(name).await;
            let id = app.open_account(&token, "USD").await;
            // Thin: once the payers run dry the close must win.
            app.deposit(&banker, id, 40, "USD").await;
            payers.push((token, id));
        }
        let closed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut tasks = JoinSet::new();
        for task in 0..8 {
            let (app, closed, dan) = (app.clone(), closed.clone(), dan.clone());
            let (payer, from) = payers[task % 2].clone();
            tasks.spawn(async move {
                let mut refused_closed = 0;
                while !closed.load(std::sync::atomic::Ordering::Relaxed) {
                    let reply = if task % 2 == 0 {
                        transfer(&app, &payer, from, d, 1).await
                    } else {
                        let placed = place(&app, &payer, from, d, 2).await;
                        if placed.status != StatusCode::CREATED {
                            placed
                        } else {
                            capture(&app, &dan, id(&placed.body), None).await
                        }
                    };
                    match reply.status {
                        StatusCode::CREATED => {}
                        // A payer is a stranger to dan: dan's closed account is not found.
                        StatusCode::NOT_FOUND => {
                            assert_eq!(reply.code(), "not_found", "{}", reply.body);
                            refused_closed += 1;
                        }
                        StatusCode::UNPROCESSABLE_ENTITY => {
                            let code = reply.code();
                            assert!(
                                ["account_closed", "insufficient_funds"].contains(&code),
                                "{}",
                                reply.body
                            );
                            refused_closed += usize::from(code == "account_closed");
                        }
                        other => panic!("{other}: {}", reply.body),
                    }
                }
                refused_closed
            });
        }
        // Empty it and try to close it, until a close wins between two payments.
        let mut attempts = 0;
        loop {
            attempts += 1;
            assert!(attempts < 500, "group commit {group_commit}: never closed");
            let balance = account(&app, &banker, d).await["balance"].as_i64().unwrap();
            if balance > 0 {
                let out = app
                    .post(
                        &format!("/v1/accounts/{d}/withdrawals"),
                        Some(&banker),
                        json!({ "amount": balance, "currency": "USD" }),
                    )
                    .await;
                assert!(
                    [StatusCode::CREATED, StatusCode::UNPROCESSABLE_ENTITY].contains(&out.status),
                    "{}",
                    out.body
                );
            }
            let close = app
                .call(
                    Method::PUT,
                    &format!("/v1/accounts/{d}/status"),
                    Some(&banker),
                    Some(json!({ "status": "closed" })),
                )
                .await;
            if close.status == StatusCode::OK {
                break;
            }
            close.assert_error(StatusCode::UNPROCESSABLE_ENTITY, "failed_precondition");
        }
        closed.store(true, std::sync::atomic::Ordering::Relaxed);
        while let Some(refused) = tasks.join_next().await {
            refused.unwrap();
        }
        assert_eq!(account(&app, &banker, d).await["status"], "closed");
        assert_ledger_consistent(app.db.pool()).await;
    }
}
