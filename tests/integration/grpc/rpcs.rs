//! Every RPC's happy path and the error codes a client meets, with their rich details.

use simplebank::grpc::pb::{self, simple_bank_client::SimpleBankClient};
use simplebank::store::prelude::*;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;

use crate::harness::TestApp;

pub type Client = SimpleBankClient<Channel>;

pub async fn client(app: &TestApp) -> Client {
    SimpleBankClient::connect(app.grpc_address.clone())
        .await
        .expect("the gRPC server answers")
}

/// A request carrying `authorization: Bearer <token>`.
pub fn authed<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// The SPEC §4 code carried in the status's ErrorInfo.
pub fn table_code(status: &Status) -> String {
    status
        .get_error_details()
        .error_info()
        .map(|info| info.metadata["code"].clone())
        .unwrap_or_default()
}

/// Opens an account of `currency` for the holder of `token`.
pub async fn open_account(client: &mut Client, token: &str, currency: &str) -> pb::Account {
    client
        .create_account(authed(
            token,
            pb::CreateAccountRequest {
                currency: currency.into(),
            },
        ))
        .await
        .expect("the account is opened")
        .into_inner()
        .account
        .expect("the response carries the account")
}

/// The fields named by the status's `BadRequest` violations, in order (none: empty).
pub fn violated_fields(status: &Status) -> Vec<String> {
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}

pub async fn sign_up_and_log_in(client: &mut Client, username: &str) -> String {
    client
        .create_user(pb::CreateUserRequest {
            username: username.into(),
            full_name: format!("{username} Example"),
            email: format!("{username}@example.com"),
            password: "password123".into(),
        })
        .await
        .unwrap();
    client
        .login_user(pb::LoginUserRequest {
            username: username.into(),
            password: "password123".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .access_token
}

#[tokio::test]
async fn every_rpc_works_for_the_caller_it_is_meant_for() {
    let app = TestApp::spawn().await;
    let mut c = client(&app).await;
    let alice = sign_up_and_log_in(&mut c, "alice").await;
    let bob = sign_up_and_log_in(&mut c, "bob").await;
    app.signup("clerk").await;
    app.db
        .store
        .set_user_role(
            &simplebank::domain::Username::parse("clerk").unwrap(),
            simplebank::domain::Role::Banker,
        )
        .await
        .unwrap();
    let login = c
        .login_user(pb::LoginUserRequest {
            username: "clerk".into(),
            password: "password123".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let clerk = login.access_token.clone();
    assert_eq!(login.user.unwrap().role, "banker");

    let a = open_account(&mut c, &alice, "USD").await;
    let b = open_account(&mut c, &bob, "USD").await;
    let deposit = c
        .deposit(authed(
            &clerk,
            pb::DepositRequest {
                account_id: a.id,
                amount: 1_000,
                currency: "USD".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deposit.account.unwrap().balance, 1_000);
    let withdrawal = c
        .withdraw(authed(
            &clerk,
            pb::WithdrawRequest {
                account_id: a.id,
                amount: 100,
                currency: "USD".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(withdrawal.entry.unwrap().amount, -100);

    let sent = c
        .create_transfer(authed(
            &alice,
            pb::CreateTransferRequest {
                from_account_id: a.id,
                to_account_id: b.id,
                amount: 250,
                currency: "USD".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sent.from_account.unwrap().balance, 650);
    assert_eq!(sent.from_entry.unwrap().balance_after, 650);
    assert_eq!(sent.to_entry.unwrap().amount, 250);
    let transfer = sent.transfer.unwrap();
    let got = c
        .get_transfer(authed(&bob, pb::GetTransferRequest { id: transfer.id }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.transfer.unwrap(), transfer);

    let account = c
        .get_account(authed(&bob, pb::GetAccountRequest { id: b.id }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(account.account.unwrap().balance, 250);
    let listed = c
        .list_accounts(authed(
            &alice,
            pb::ListAccountsRequest {
                page_size: 0,
                page_token: String::new(),
                owner: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.accounts.len(), 1);
    assert!(listed.next_page_token.is_empty());
    let first = c
        .list_entries(authed(
            &alice,
            pb::ListEntriesRequest {
                account_id: a.id,
                page_size: 2,
                page_token: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        first.entries.iter().map(|e| e.amount).collect::<Vec<_>>(),
        [-250, -100]
    );
    let second = c
        .list_entries(authed(
            &alice,
            pb::ListEntriesRequest {
                account_id: a.id,
                page_size: 2,
                page_token: first.next_page_token,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        second.entries.iter().map(|e| e.amount).collect::<Vec<_>>(),
        [1_000]
    );

    let user = c
        .get_user(authed(
            &alice,
            pb::GetUserRequest {
                username: "alice".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(user.user.unwrap().email, "alice@example.com");
    let updated = c
        .update_user(authed(
            &alice,
            pb::UpdateUserRequest {
                username: "alice".into(),
                full_name: Some("Alice L.".into()),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.user.unwrap().full_name, "Alice L.");
    let promoted = c
        .set_user_role(authed(
            &clerk,
            pb::SetUserRoleRequest {
                username: "bob".into(),
                role: "banker".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(promoted.user.unwrap().role, "banker");

    let renewed = c
        .renew_access_token(pb::RenewAccessTokenRequest {
            refresh_token: login.refresh_token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!renewed.access_token.is_empty());
    c.logout_user(pb::LogoutUserRequest {
        refresh_token: login.refresh_token.clone(),
    })
    .await
    .unwrap();
    let err = c
        .renew_access_token(pb::RenewAccessTokenRequest {
            refresh_token: login.refresh_token,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    crate::helpers::assert_ledger_consistent(app.db.pool()).await;
}

#[tokio::test]
async fn errors_carry_the_table_code_and_field_violations() {
    let app = TestApp::spawn().await;
    let mut c = client(&app).await;
    let alice = sign_up_and_log_in(&mut c, "alice").await;
    let bob = sign_up_and_log_in(&mut c, "bob").await;
    let a = open_account(&mut c, &alice, "USD").await;
    let b = open_account(&mut c, &bob, "EUR").await;

    let bad = c
        .create_user(pb::CreateUserRequest {
            username: "A".into(),
            full_name: String::new(),
            email: "x".into(),
            password: "1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (bad.code(), table_code(&bad).as_str()),
        (Code::InvalidArgument, "invalid_argument")
    );
    assert_eq!(
        violated_fields(&bad),
        ["username", "full_name", "email", "password"]
    );

    let none = c
        .get_account(pb::GetAccountRequest { id: a.id })
        .await
        .unwrap_err();
    assert_eq!(
        (none.code(), table_code(&none).as_str()),
        (Code::Unauthenticated, "unauthenticated")
    );
    let garbage = c
        .get_account(authed("garbage", pb::GetAccountRequest { id: a.id }))
        .await
        .unwrap_err();
    assert_eq!(garbage.code(), Code::Unauthenticated);
    let denied = c
        .get_account(authed(&bob, pb::GetAccountRequest { id: a.id }))
        .await
        .unwrap_err();
    // Someone else's account reads exactly like one that does not exist (SPEC §10).
    assert_eq!(
        (denied.code(), table_code(&denied).as_str()),
        (Code::NotFound, "not_found")
    );
    let missing = c
        .get_account(authed(&bob, pb::GetAccountRequest { id: 999_999 }))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    assert_eq!(
        denied.message().replace(&a.id.to_string(), "N"),
        missing.message().replace("999999", "N")
    );
    let zero = c
        .get_account(authed(&bob, pb::GetAccountRequest { id: 0 }))
        .await
        .unwrap_err();
    assert_eq!(zero.code(), Code::InvalidArgument);
    let twice = c
        .create_account(authed(
            &alice,
            pb::CreateAccountRequest {
                currency: "USD".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(twice.code(), Code::AlreadyExists);

    let short = c
        .create_transfer(authed(
            &alice,
            pb::CreateTransferRequest {
                from_account_id: a.id,
                to_account_id: b.id,
                amount: 5,
                currency: "USD".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    // Bob's account is EUR: to Alice, an account that takes no USD is not found (SPEC §10).
    assert_eq!(
        (short.code(), table_code(&short).as_str()),
        (Code::NotFound, "not_found")
    );
    let c_usd = open_account(&mut c, &bob, "USD").await;
    let short = c
        .create_transfer(authed(
            &alice,
            pb::CreateTransferRequest {
                from_account_id: a.id,
                to_account_id: c_usd.id,
                amount: 5,
                currency: "USD".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(
        (short.code(), table_code(&short).as_str()),
        (Code::FailedPrecondition, "insufficient_funds")
    );
    for amount in [0, -5, i64::MIN] {
        let err = c
            .create_transfer(authed(
                &alice,
                pb::CreateTransferRequest {
                    from_account_id: a.id,
                    to_account_id: c_usd.id,
                    amount,
                    currency: "USD".into(),
                    ..Default::default()
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{amount}");
    }
    let deposit = c
        .deposit(authed(
            &alice,
            pb::DepositRequest {
                account_id: a.id,
                amount: 5,
                currency: "USD".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(deposit.code(), Code::PermissionDenied);
    let huge = c
        .create_user(pb::CreateUserRequest {
            username: "x".repeat(10_000),
            full_name: "y".repeat(10_000),
            email: "z@z.zz".into(),
            password: "p".repeat(10_000),
        })
        .await
        .unwrap_err();
    assert_eq!(huge.code(), Code::InvalidArgument);
    let role = c
        .set_user_role(authed(
            &alice,
            pb::SetUserRoleRequest {
                username: "bob".into(),
                role: "emperor".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(role.code(), Code::InvalidArgument);
    crate::helpers::assert_ledger_consistent(app.db.pool()).await;
}

#[tokio::test]
async fn every_rpc_answers_with_the_request_id_it_was_given_or_a_new_one() {
    let app = TestApp::spawn().await;
    let mut c = client(&app).await;
    let token = sign_up_and_log_in(&mut c, "alice").await;

    let mut request = authed(
        &token,
        pb::GetUserRequest {
            username: "alice".into(),
        },
    );
    request
        .metadata_mut()
        .insert("x-request-id", "support-ticket-7".parse().unwrap());
    let reply = c.get_user(request).await.unwrap();
    assert_eq!(
        reply.metadata().get("x-request-id").unwrap(),
        "support-ticket-7"
    );

    // Errors carry it too (tonic sends them as trailers-only responses).
    let status = c
        .get_account(authed(&token, pb::GetAccountRequest { id: 999_999 }))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let generated = status
        .metadata()
        .get("x-request-id")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(uuid::Uuid::parse_str(generated).is_ok(), "{generated}");
}

#[tokio::test]
async fn a_keyed_transfer_over_grpc_replays_with_metadata_and_refuses_a_reused_key() {
    let app = TestApp::spawn().await;
    let mut c = client(&app).await;
    let alice = sign_up_and_log_in(&mut c, "alice").await;
    let banker = app.banker("clerk").await;
    let from = app.open_account(&alice, "USD").await;
    let to = app.open_account(&app.user("bob").await, "USD").await;
    app.deposit(&banker, from, 1_000, "USD").await;

    let keyed = |amount: i64, key: &str| {
        let mut request = authed(
            &alice,
            pb::CreateTransferRequest {
                from_account_id: from,
                to_account_id: to,
                amount,
                currency: "USD".into(),
                ..Default::default()
            },
        );
        request
            .metadata_mut()
            .insert("idempotency-key", key.parse().unwrap());
        request
    };
    let first = c.create_transfer(keyed(300, "grpc-1")).await.unwrap();
    assert!(first.metadata().get("idempotent-replayed").is_none());
    let again = c.create_transfer(keyed(300, "grpc-1")).await.unwrap();
    assert_eq!(again.metadata().get("idempotent-replayed").unwrap(), "true");
    assert_eq!(again.get_ref(), first.get_ref());

    let mismatch = c.create_transfer(keyed(301, "grpc-1")).await.unwrap_err();
    assert_eq!(mismatch.code(), Code::FailedPrecondition);
    assert_eq!(table_code(&mismatch), "idempotency_mismatch");

    // A refusal is replayed as a refusal, marked in the status's metadata.
    let refused = c
        .create_transfer(keyed(99_999, "grpc-2"))
        .await
        .unwrap_err();
    assert_eq!(table_code(&refused), "insufficient_funds");
    let replayed = c
        .create_transfer(keyed(99_999, "grpc-2"))
        .await
        .unwrap_err();
    assert_eq!(table_code(&replayed), "insufficient_funds");
    assert_eq!(
        replayed.metadata().get("idempotent-replayed").unwrap(),
        "true"
    );

    let bad = c
        .create_transfer(keyed(1, &"k".repeat(256)))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&bad)[0], "idempotency-key");

    let account = c
        .get_account(authed(&alice, pb::GetAccountRequest { id: from }))
        .await
        .unwrap()
        .into_inner()
        .account
        .unwrap();
    assert_eq!(account.balance, 700);
}

#[tokio::test]
async fn verify_email_over_grpc_uses_the_emailed_code_once() {
    let app = TestApp::spawn().await;
    let mut c = client(&app).await;
    sign_up_and_log_in(&mut c, "alice").await;
    let (email_id, secret_code) = app.mail.verification_link("alice@example.com").await;

    let request = || pb::VerifyEmailRequest {
        email_id,
        secret_code: secret_code.clone(),
    };
    let reply = c.verify_email(request()).await.unwrap().into_inner();
    assert!(reply.is_verified);
    let again = c.verify_email(request()).await.unwrap_err();
    assert_eq!(again.code(), Code::InvalidArgument);
    let missing = c
        .verify_email(pb::VerifyEmailRequest {
            email_id: email_id + 100,
            secret_code: secret_code.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    let malformed = c
        .verify_email(pb::VerifyEmailRequest::default())
        .await
        .unwrap_err();
    assert_eq!(malformed.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&malformed), ["email_id", "secret_code"]);
}

#[tokio::test]
async fn bankers_freeze_accounts_and_set_overdraft_limits_over_grpc() {
    let app = TestApp::spawn().await;
    let mut c = client(&app).await;
    let alice = sign_up_and_log_in(&mut c, "alice").await;
    let banker = app.banker("clerk").await;
    let from = app.open_account(&alice, "USD").await;
    let to = app.open_account(&app.user("bob").await, "USD").await;
    let send = |amount: i64| {
        authed(
            &alice,
            pb::CreateTransferRequest {
                from_account_id: from,
                to_account_id: to,
                amount,
                currency: "USD".into(),
                ..Default::default()
            },
        )
    };

    let limited = c
        .set_overdraft_limit(authed(
            &banker,
            pb::SetOverdraftLimitRequest {
                account_id: from,
                limit: 100,
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .account
        .unwrap();
    assert_eq!(
        (limited.overdraft_limit, limited.status.as_str()),
        (100, "active")
    );
    let sent = c.create_transfer(send(70)).await.unwrap().into_inner();
    assert_eq!(sent.from_account.unwrap().balance, -70);

    let frozen = c
        .set_account_status(authed(
            &banker,
            pb::SetAccountStatusRequest {
                account_id: from,
                status: "frozen".into(),
                reason: "fraud review".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .account
        .unwrap();
    assert_eq!(frozen.status, "frozen");
    let refused = c.create_transfer(send(10)).await.unwrap_err();
    assert_eq!(
        (refused.code(), table_code(&refused).as_str()),
        (Code::FailedPrecondition, "account_frozen")
    );

    // Depositors may not; a limit below the debt and an unknown status are field errors.
    let denied = c
        .set_account_status(authed(
            &alice,
            pb::SetAccountStatusRequest {
                account_id: from,
                status: "active".into(),
                reason: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    for (limit, status) in [(50, "active"), (100, "asleep")] {
        let limit_err = c
            .set_overdraft_limit(authed(
                &banker,
                pb::SetOverdraftLimitRequest {
                    account_id: from,
                    limit,
                },
            ))
            .await;
        let status_err = c
            .set_account_status(authed(
                &banker,
                pb::SetAccountStatusRequest {
                    account_id: from,
                    status: status.into(),
                    reason: String::new(),
                },
            ))
            .await;
        if limit == 50 {
            assert_eq!(limit_err.unwrap_err().code(), Code::FailedPrecondition);
            assert!(status_err.is_ok(), "unfrozen");
        } else {
            assert!(limit_err.is_ok());
            assert_eq!(status_err.unwrap_err().code(), Code::InvalidArgument);
        }
    }
}

#[tokio::test]
async fn holds_are_placed_captured_in_part_voided_and_listed_over_grpc() {
    let app = TestApp::spawn().await;
    let mut c = client(&app).await;
    let alice = sign_up_and_log_in(&mut c, "alice").await;
    let bob = app.user("bob").await;
    let banker = app.banker("clerk").await;
    let from = app.open_account(&alice, "USD").await;
    let to = app.open_account(&bob, "USD").await;
    app.deposit(&banker, from, 1_000, "USD").await;
    let hold_of = |amount: i64, reference: &str| {
        authed(
            &alice,
            pb::CreateHoldRequest {
                from_account_id: from,
                to_account_id: to,
                amount,
                currency: "USD".into(),
                expires_in: 0,
                reference: reference.into(),
                metadata: [("order".to_owned(), "42".to_owned())].into(),
            },
        )
    };

    let placed = c
        .create_hold(hold_of(600, "order-42"))
        .await
        .unwrap()
        .into_inner();
    let hold = placed.hold.unwrap();
    assert_eq!(
        (hold.status.as_str(), hold.amount, hold.reference.as_str()),
        ("pending", 600, "order-42")
    );
    assert_eq!(hold.metadata["order"], "42");
    assert!(hold.resolved_at.is_none());
    // HOLD_TTL's default, 7 days.
    let lifetime = hold.expires_at.unwrap().seconds - hold.created_at.unwrap().seconds;
    assert!(
        (7 * 86_400 - 2..=7 * 86_400 + 2).contains(&lifetime),
        "{lifetime}"
    );
    assert_eq!(placed.from_account.unwrap().available_balance, 400);
    let short = c.create_hold(hold_of(401, "")).await.unwrap_err();
    assert_eq!(
        (short.code(), table_code(&short).as_str()),
        (Code::FailedPrecondition, "insufficient_funds")
    );

    let captured = c
        .capture_hold(authed(
            &bob,
            pb::CaptureHoldRequest {
                hold_id: hold.id,
                amount: 250,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let transfer = captured.transfer.unwrap();
    assert_eq!((transfer.amount, transfer.hold_id), (250, hold.id));
    assert_eq!(captured.to_entry.unwrap().balance_after, 250);
    assert_eq!(captured.hold.unwrap().captured_amount, 250);
    let again = c
        .void_hold(authed(&bob, pb::VoidHoldRequest { hold_id: hold.id }))
        .await
        .unwrap_err();
    assert_eq!(
        (again.code(), table_code(&again).as_str()),
        (Code::FailedPrecondition, "hold_not_pending")
    );

    let second = c
        .create_hold(hold_of(100, ""))
        .await
        .unwrap()
        .into_inner()
        .hold
        .unwrap();
    let by_payer = c
        .void_hold(authed(&alice, pb::VoidHoldRequest { hold_id: second.id }))
        .await
        .unwrap_err();
    assert_eq!(by_payer.code(), Code::PermissionDenied);
    let voided = c
        .void_hold(authed(&bob, pb::VoidHoldRequest { hold_id: second.id }))
        .await
        .unwrap()
        .into_inner()
        .hold
        .unwrap();
    assert_eq!(voided.status, "voided");
    let read = c
        .get_hold(authed(&alice, pb::GetHoldRequest { hold_id: second.id }))
        .await
        .unwrap()
        .into_inner()
        .hold
        .unwrap();
    assert_eq!(read.status, "voided");

    let listed = c
        .list_holds(authed(
            &alice,
            pb::ListHoldsRequest {
                account_id: from,
                status: String::new(),
                page_size: 1,
                page_token: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.holds.len(), 1);
    assert_eq!(listed.holds[0].id, second.id);
    let rest = c
        .list_holds(authed(
            &alice,
            pb::ListHoldsRequest {
                account_id: from,
                status: String::new(),
                page_size: 10,
                page_token: listed.next_page_token,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        rest.holds.iter().map(|h| h.id).collect::<Vec<_>>(),
        [hold.id]
    );
    let bad = c
        .create_hold(authed(
            &alice,
            pb::CreateHoldRequest {
                from_account_id: from,
                to_account_id: from,
                amount: -1,
                currency: "USD".into(),
                expires_in: -5,
                reference: "\u{e9}".into(),
                metadata: Default::default(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    let mut fields = violated_fields(&bad);
    fields.sort();
    assert_eq!(
        fields,
        ["amount", "expires_in", "reference", "to_account_id"]
    );
    let account = c
        .get_account(authed(&alice, pb::GetAccountRequest { id: from }))
        .await
        .unwrap()
        .into_inner()
        .account
        .unwrap();
    assert_eq!((account.balance, account.available_balance), (750, 750));
}

#[tokio::test]
async fn get_balance_answers_for_now_and_for_a_past_moment() {
    let app = TestApp::spawn().await;
    let mut c = client(&app).await;
    let alice = sign_up_and_log_in(&mut c, "alice").await;
    let banker = app.banker("clerk").await;
    let a = app.open_account(&alice, "USD").await;
    let at_start = prost_types::Timestamp {
        seconds: chrono::Utc::now().timestamp() - 1,
        nanos: 0,
    };
    app.deposit(&banker, a, 250, "USD").await;
    let ask = |at: Option<prost_types::Timestamp>| {
        authed(&alice, pb::GetBalanceRequest { account_id: a, at })
    };
    let now = c.get_balance(ask(None)).await.unwrap().into_inner();
    assert_eq!((now.balance, now.currency.as_str()), (250, "USD"));
    let before = c
        .get_balance(ask(Some(at_start)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(before.balance, 0);
    let future = prost_types::Timestamp {
        seconds: chrono::Utc::now().timestamp() + 3_600,
        nanos: 0,
    };
    let refused = c.get_balance(ask(Some(future))).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert_eq!(violated_fields(&refused), ["at"]);

    let listed = c
        .list_transfers(authed(
            &alice,
            pb::ListTransfersRequest {
                account_id: a,
                direction: "in".into(),
                since: Some(at_start),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.transfers.len(), 1);
    assert_eq!(listed.transfers[0].amount, 250);
    let none_out = c
        .list_transfers(authed(
            &alice,
            pb::ListTransfersRequest {
                account_id: a,
                direction: "out".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(none_out.transfers.is_empty());
}
