//! Boundary and malformed values through the gRPC adapter: zero, negative and extreme numbers,
//! empty and huge strings, unknown codes. Each is refused with the table's code and the field it
//! concerns — never INTERNAL — and none of them changes the ledger.

use simplebank::grpc::pb;
use tonic::{Code, Status};

use super::rpcs::{authed, client, open_account, sign_up_and_log_in, violated_fields};
use crate::harness::TestApp;
use crate::helpers::{assert_ledger_consistent, snapshot};

fn assert_invalid(result: Result<impl std::fmt::Debug, Status>, field: &str, what: &str) {
    let status = result.expect_err(what);
    assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
    let fields = violated_fields(&status);
    assert!(fields.iter().any(|f| f == field), "{what}: {fields:?}");
}

#[tokio::test]
async fn boundary_values_are_refused_by_field_and_change_nothing() {
    let app = TestApp::spawn().await;
    let mut c = client(&app).await;
    let alice = sign_up_and_log_in(&mut c, "alice").await;
    let bob = sign_up_and_log_in(&mut c, "bob").await;
    let a = open_account(&mut c, &alice, "USD").await.id;
    let b = open_account(&mut c, &bob, "USD").await.id;
    let before = snapshot(app.db.pool()).await;

    let transfer = |from: i64, to: i64, amount: i64, currency: &str| {
        authed(
            &alice,
            pb::CreateTransferRequest {
                from_account_id: from,
                to_account_id: to,
                amount,
                currency: currency.into(),
                ..Default::default()
            },
        )
    };
    for amount in [0, -1, i64::MIN] {
        assert_invalid(
            c.create_transfer(transfer(a, b, amount, "USD")).await,
            "amount",
            &format!("amount {amount}"),
        );
    }
    for id in [0, -1, i64::MIN] {
        assert_invalid(
            c.create_transfer(transfer(id, b, 1, "USD")).await,
            "from_account_id",
            &format!("from {id}"),
        );
        assert_invalid(
            c.create_transfer(transfer(a, id, 1, "USD")).await,
            "to_account_id",
            &format!("to {id}"),
        );
    }
    // Huge for a field, yet inside the 64 KiB message limit (a message over it is refused
    // whole: `limits.rs`).
    let huge = "X".repeat(10_000);
    for currency in ["", "usd", "XYZ", "€€€", huge.as_str()] {
        assert_invalid(
            c.create_transfer(transfer(a, b, 1, currency)).await,
            "currency",
            &format!("currency {:.10}", currency),
        );
    }
    // Valid shapes at the edge: the largest amount is judged, not mangled.
    let status = c
        .create_transfer(transfer(a, b, i64::MAX, "USD"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    let status = c
        .create_transfer(transfer(a, i64::MAX, 1, "USD"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");

    for (username, full_name, email, password, field) in [
        ("", "A", "a@example.com", "password123", "username"),
        (
            huge.as_str(),
            "A",
            "a@example.com",
            "password123",
            "username",
        ),
        ("carol", "", "c@example.com", "password123", "full_name"),
        (
            "carol",
            huge.as_str(),
            "c@example.com",
            "password123",
            "full_name",
        ),
        ("carol", "Carol", "", "password123", "email"),
        ("carol", "Carol", huge.as_str(), "password123", "email"),
        ("carol", "Carol", "c@example.com", "", "password"),
        ("carol", "Carol", "c@example.com", huge.as_str(), "password"),
        ("caröl", "Carol", "c@example.com", "password123", "username"),
    ] {
        assert_invalid(
            c.create_user(pb::CreateUserRequest {
                username: username.into(),
                full_name: full_name.into(),
                email: email.into(),
                password: password.into(),
            })
            .await,
            field,
            &format!("user {field}"),
        );
    }

    for page_size in [-1, 101, i32::MAX, i32::MIN] {
        assert_invalid(
            c.list_accounts(authed(
                &alice,
                pb::ListAccountsRequest {
                    page_size,
                    page_token: String::new(),
                    owner: String::new(),
                },
            ))
            .await,
            "page_size",
            &format!("page size {page_size}"),
        );
    }
    for page_token in ["!!!", "0", huge.as_str()] {
        assert_invalid(
            c.list_accounts(authed(
                &alice,
                pb::ListAccountsRequest {
                    page_size: 10,
                    page_token: page_token.into(),
                    owner: String::new(),
                },
            ))
            .await,
            "page_token",
            &format!("page token {:.10}", page_token),
        );
    }

    assert_eq!(snapshot(app.db.pool()).await, before, "nothing changed");
    assert_ledger_consistent(app.db.pool()).await;
}
