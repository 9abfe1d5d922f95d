//! Unit tests of the service over a mocked store: who may do what, how store failures read to a
//! client, and the session rules. A mock with no expectation set panics when called, so "the store
//! was never reached" is asserted simply by not setting one.

use std::sync::Arc;

use chrono::{Duration as Span, Utc};
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use super::*;
use crate::auth::{Passwords, Principal, TokenMaker, TokenType};
use crate::domain::{
    Account, AccountId, AccountKind, AccountStatus, Amount, Currency, Email, FullName,
    IdempotencyKey, Label, NewTransfer, Password, Role, Session, Transfer, TransferId,
    TransferParties, User, Username, VerificationCode, VerifyOutcome,
};
use crate::store::{
    Entity, KeyedOutcome, MockAccountStore, MockHoldStore, MockIdempotentStore, MockReversalStore,
    MockSessionStore, MockTransferStore, MockUserStore, MockWebhookStore, MoneyMove, Page,
    StoreError,
};

const KEY: &[u8; 32] = b"an example key of 32 bytes......";

fn name(raw: &str) -> Username {
    Username::parse(raw).unwrap()
}

fn principal(user: &str, role: Role) -> Principal {
    Principal {
        username: name(user),
        role,
        session_id: Uuid::new_v4(),
        expires_at: Utc::now() + chrono::Duration::hours(1),
        share: None,
    }
}

/// An anonymous caller's client information.
fn anyone() -> ClientInfo {
    ClientInfo {
        user_agent: "curl/8".into(),
        client_ip: "127.0.0.1".into(),
    }
}

/// The store answers that account `n` belongs to `owner` (the early payer check asks it).
fn owns(store: &mut Mocks, n: i64, owner: &'static str) {
    store
        .accounts
        .expect_get_account()
        .withf(move |asked| *asked == id(n))
        .returning(move |_| Ok(account(n, owner)));
}

/// One mock per store concern; one with no expectation set panics when called.
#[derive(Default)]
struct Mocks {
    users: MockUserStore,
    sessions: MockSessionStore,
    accounts: MockAccountStore,
    transfers: MockTransferStore,
    holds: MockHoldStore,
    reversals: MockReversalStore,
    keyed: MockIdempotentStore,
    webhooks: MockWebhookStore,
}

fn service(store: Mocks) -> BankService {
    BankService::new(
        StorePorts {
            users: Arc::new(store.users),
            sessions: Arc::new(store.sessions),
            accounts: Arc::new(store.accounts),
            transfers: Arc::new(store.transfers),
            holds: Arc::new(store.holds),
            reversals: Arc::new(store.reversals),
            keyed: Arc::new(store.keyed),
            webhooks: Arc::new(store.webhooks),
        },
        Arc::new(TokenMaker::new(KEY).unwrap()),
        TokenLifetimes::default(),
    )
}

fn user(username: &str, role: Role, hash: &str) -> User {
    User {
        username: name(username),
        hashed_password: SecretString::from(hash),
        full_name: FullName::parse("Some One").unwrap(),
        email: Email::parse(&format!("{username}@example.com")).unwrap(),
        role,
        is_email_verified: false,
        password_changed_at: Utc::now(),
        created_at: Utc::now(),
    }
}

fn account(id: i64, owner: &str) -> Account {
    Account {
        id: AccountId::new(id).unwrap(),
        owner: name(owner),
        currency: Currency::Usd,
        balance: 100,
        kind: AccountKind::Customer,
        status: AccountStatus::Active,
        overdraft_limit: 0,
        held: 0,
        created_at: Utc::now(),
    }
}

fn id(raw: i64) -> AccountId {
    AccountId::new(raw).unwrap()
}

fn sql_error(text: &str) -> sqlx::Error {
    sqlx::Error::Protocol(text.to_owned())
}

// --- authorization -----------------------------------------------------------------------------

#[tokio::test]
async fn an_account_is_readable_by_its_owner_and_bankers_only() {
    for (caller, role, allowed) in [
        ("alice", Role::Depositor, true),
        ("bob", Role::Depositor, false),
        ("bank_clerk", Role::Banker, true),
    ] {
        let mut store = Mocks::default();
        store
            .accounts
            .expect_get_account()
            .returning(|_| Ok(account(7, "alice")));
        let result = service(store)
            .get_account(&principal(caller, role), id(7))
            .await;
        match (allowed, result) {
            (true, Ok(found)) => assert_eq!(found.owner, name("alice")),
            // Not "not yours": the same answer as an account that does not exist.
            (false, Err(err)) => assert_eq!(err.code(), ErrorCode::NotFound),
            (_, other) => panic!("{caller}: unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_statement_follows_the_accounts_rule() {
    let mut store = Mocks::default();
    store
        .accounts
        .expect_get_account()
        .returning(|_| Ok(account(7, "alice")));
    // No list_entries expectation: a stranger must not get that far.
    let err = service(store)
        .list_entries(
            &principal("bob", Role::Depositor),
            id(7),
            PageRequest::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::NotFound);
}

#[tokio::test]
async fn depositors_list_only_their_own_accounts_and_bankers_anyones() {
    let mut store = Mocks::default();
    store
        .accounts
        .expect_list_accounts()
        .withf(|owner, _, _| owner.as_ref() == Some(&name("alice")))
        .times(1)
        .returning(|_, _, _| {
            Ok(Page {
                items: vec![account(1, "alice")],
                next: Some(id(1)),
            })
        });
    let page = service(store)
        .list_accounts(
            &principal("alice", Role::Depositor),
            None,
            PageRequest::default(),
        )
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1);
    let token = page.next_page_token.expect("a next page");
    let decoded = crate::domain::PageToken::decode(&token, crate::domain::PageKind::Accounts);
    assert_eq!(decoded.unwrap().key(), 1);

    let err = service(Mocks::default())
        .list_accounts(
            &principal("alice", Role::Depositor),
            Some(name("bob")),
            PageRequest::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::PermissionDenied);

    let mut store = Mocks::default();
    store
        .accounts
        .expect_list_accounts()
        .withf(|owner, _, _| owner.is_none())
        .times(1)
        .returning(|_, _, _| {
            Ok(Page {
                items: vec![],
                next: None,
            })
        });
    let page = service(store)
        .list_accounts(
            &principal("clerk", Role::Banker),
            None,
            PageRequest::default(),
        )
        .await
        .unwrap();
    assert_eq!(page.next_page_token, None);
}

#[tokio::test]
async fn only_bankers_deposit_withdraw_and_set_roles() {
    let depositor = principal("alice", Role::Depositor);
    let svc = service(Mocks::default());
    let amount = Amount::new(5).unwrap();
    let results = [
        svc.deposit(
            &depositor,
            id(1),
            amount,
            Currency::Usd,
            Label::default(),
            None,
        )
        .await
        .outcome
        .err(),
        svc.withdraw(
            &depositor,
            id(1),
            amount,
            Currency::Usd,
            Label::default(),
            None,
        )
        .await
        .outcome
        .err(),
        svc.set_user_role(&depositor, &name("alice"), Role::Banker)
            .await
            .err(),
    ];
    for err in results {
        assert_eq!(err.expect("refused").code(), ErrorCode::PermissionDenied);
    }
}

#[tokio::test]
async fn users_are_readable_and_updatable_by_themselves_and_bankers() {
    let svc = service(Mocks::default());
    let bob = principal("bob", Role::Depositor);
    let err = svc.get_user(&bob, &name("alice")).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::PermissionDenied);
    let update = UpdateUserRequest {
        full_name: Some(FullName::parse("Mallory").unwrap()),
        ..Default::default()
    };
    let err = svc
        .update_user(&bob, &name("alice"), update)
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::PermissionDenied);

    let mut store = Mocks::default();
    store
        .users
        .expect_get_user()
        .returning(|u| Ok(user(u.as_str(), Role::Depositor, "h")));
    let found = service(store)
        .get_user(&principal("clerk", Role::Banker), &name("alice"))
        .await
        .unwrap();
    assert_eq!(found.username, name("alice"));
}

#[tokio::test]
async fn a_transfer_is_sent_as_the_caller_even_for_a_banker() {
    let mut store = Mocks::default();
    store
        .transfers
        .expect_transfer()
        .withf(|_, owner| owner.as_ref() == Some(&name("clerk")))
        .returning(|_, _| Err(StoreError::NotOwner(AccountId::new(1).unwrap())));
    let cmd = NewTransfer::new(id(1), id(2), Amount::new(5).unwrap(), Currency::Usd).unwrap();
    let err = service(store)
        .create_transfer(&principal("clerk", Role::Banker), cmd, None)
        .await
        .outcome
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::PermissionDenied);
}

/// SPEC §10's attack: a customer names another customer's account as the payer. Refused as
/// `not_found` from one lookup by id, before the store moves or locks anything (no transfer
/// expectation: a call would panic), keyed or not; the owner's own account is looked up once
/// and then known.
#[tokio::test]
async fn a_stranger_naming_anothers_account_as_payer_is_refused_before_the_store_moves_anything() {
    let mut store = Mocks::default();
    owns(&mut store, 1, "alice");
    let svc = service(store);
    for key in [None, Some(key("k1")), Some(key("k2"))] {
        let cmd = NewTransfer::new(id(1), id(2), Amount::new(5).unwrap(), Currency::Usd).unwrap();
        let err = svc
            .create_transfer(&principal("mallory", Role::Depositor), cmd, key)
            .await
            .outcome
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::NotFound);
        assert_eq!(err.message(), "account 1 not found");
    }

    let mut store = Mocks::default();
    store
        .accounts
        .expect_get_account()
        .times(1)
        .returning(|_| Ok(account(1, "alice")));
    store
        .transfers
        .expect_transfer()
        .times(2)
        .returning(|_, _| Err(StoreError::InsufficientFunds(id(1))));
    let svc = service(store);
    for _ in 0..2 {
        let cmd = NewTransfer::new(id(1), id(2), Amount::new(5).unwrap(), Currency::Usd).unwrap();
        let err = svc
            .create_transfer(&principal("alice", Role::Depositor), cmd, None)
            .await
            .outcome
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::InsufficientFunds);
    }
}

#[tokio::test]
async fn a_settlement_account_in_a_transfer_is_reported_against_the_right_field() {
    // A banker is told which field; a customer paying a settlement account finds no account.
    for (settlement, field, caller) in [
        (1, "from_account_id", principal("alice", Role::Depositor)),
        (2, "to_account_id", principal("clerk", Role::Banker)),
    ] {
        let mut store = Mocks::default();
        owns(&mut store, 1, "alice");
        store
            .transfers
            .expect_transfer()
            .returning(move |_, _| Err(StoreError::NotCustomerAccount(id(settlement))));
        let cmd = NewTransfer::new(id(1), id(2), Amount::new(5).unwrap(), Currency::Usd).unwrap();
        let err = service(store)
            .create_transfer(&caller, cmd, None)
            .await
            .outcome
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidArgument);
        assert_eq!(err.details()[0].field, field);
    }
    let mut store = Mocks::default();
    owns(&mut store, 1, "alice");
    store
        .transfers
        .expect_transfer()
        .returning(|_, _| Err(StoreError::NotCustomerAccount(id(2))));
    let cmd = NewTransfer::new(id(1), id(2), Amount::new(5).unwrap(), Currency::Usd).unwrap();
    let err = service(store)
        .create_transfer(&principal("alice", Role::Depositor), cmd, None)
        .await
        .outcome
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::NotFound);
}

#[tokio::test]
async fn a_transfer_is_readable_by_either_party_and_bankers() {
    for (caller, role, allowed) in [
        ("alice", Role::Depositor, true),
        ("bob", Role::Depositor, true),
        ("carol", Role::Depositor, false),
        ("clerk", Role::Banker, true),
    ] {
        let mut store = Mocks::default();
        store.transfers.expect_get_transfer().returning(|tid| {
            Ok(TransferParties {
                transfer: Transfer {
                    id: tid,
                    from_account_id: id(1),
                    to_account_id: id(2),
                    amount: Amount::new(5).unwrap(),
                    currency: Currency::Usd,
                    hold_id: None,
                    label: Label::default(),
                    reverses: None,
                    created_at: Utc::now(),
                },
                from_owner: name("alice"),
                to_owner: name("bob"),
            })
        });
        let result = service(store)
            .get_transfer(&principal(caller, role), TransferId::new(9).unwrap())
            .await;
        assert_eq!(result.is_ok(), allowed, "{caller}");
        if let Err(err) = result {
            assert_eq!(err.code(), ErrorCode::PermissionDenied);
        }
    }
}

// --- error mapping -----------------------------------------------------------------------------

#[tokio::test]
async fn a_database_outage_reads_as_unavailable_without_its_text() {
    let mut store = Mocks::default();
    store.accounts.expect_get_account().returning(|_| {
        Err(StoreError::Unavailable(sql_error(
            "connection refused to 10.0.0.5",
        )))
    });
    let err = service(store)
        .get_account(&principal("alice", Role::Depositor), id(1))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Unavailable);
    assert!(!err.message().contains("10.0.0.5"));
    // The cause is kept for the log.
    assert!(std::error::Error::source(&err).is_some());
}

#[tokio::test]
async fn an_unexpected_error_reads_as_internal_without_its_text() {
    for store_error in [
        StoreError::Internal(sql_error("relation \"accounts\" does not exist")),
        StoreError::ConstraintViolated("accounts_kind_valid".to_owned()),
    ] {
        let mut store = Mocks::default();
        store
            .accounts
            .expect_create_account()
            .return_once(move |_, _| Err(store_error));
        let err = service(store)
            .create_account(&principal("alice", Role::Depositor), Currency::Usd)
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::Internal);
        assert_eq!(err.message(), "an internal error occurred");
    }
}

#[test]
fn every_store_refusal_maps_to_its_row_of_the_table() {
    let cases = [
        (StoreError::NotFound(Entity::User), ErrorCode::NotFound),
        (StoreError::AccountNotFound(id(3)), ErrorCode::NotFound),
        (
            StoreError::AlreadyExists(crate::store::Unique::Username),
            ErrorCode::AlreadyExists,
        ),
        (
            StoreError::AlreadyExists(crate::store::Unique::Email),
            ErrorCode::AlreadyExists,
        ),
        (
            StoreError::AlreadyExists(crate::store::Unique::AccountCurrency),
            ErrorCode::AlreadyExists,
        ),
        (
            StoreError::AlreadyExists(crate::store::Unique::IdempotencyKey),
            ErrorCode::Conflict,
        ),
        (StoreError::NotOwner(id(3)), ErrorCode::PermissionDenied),
        (
            StoreError::NotCustomerAccount(id(3)),
            ErrorCode::InvalidArgument,
        ),
        (
            StoreError::CurrencyMismatch {
                account: id(3),
                expected: Currency::Usd,
                actual: Currency::Eur,
            },
            ErrorCode::CurrencyMismatch,
        ),
        (
            StoreError::InsufficientFunds(id(3)),
            ErrorCode::InsufficientFunds,
        ),
        (
            StoreError::BalanceOverflow(id(3)),
            ErrorCode::InvalidArgument,
        ),
        (StoreError::SameAccount, ErrorCode::InvalidArgument),
        (StoreError::Contended, ErrorCode::Conflict),
    ];
    for (store_error, code) in cases {
        let text = format!("{store_error:?}");
        let err = ServiceError::from(store_error);
        assert_eq!(err.code(), code, "{text}");
        assert!(!err.message().is_empty());
    }
    let mismatch = ServiceError::from(StoreError::CurrencyMismatch {
        account: id(3),
        expected: Currency::Usd,
        actual: Currency::Eur,
    });
    assert_eq!(mismatch.message(), "account 3 holds EUR, not USD");
}

// --- sessions ----------------------------------------------------------------------------------

async fn stored_user(username: &str, password: &str, role: Role) -> User {
    let hash = Passwords::default()
        .hash(Password::parse(password).unwrap())
        .await
        .unwrap();
    user(username, role, hash.expose_secret())
}

#[tokio::test]
async fn login_refuses_unknown_users_and_wrong_passwords_alike() {
    let alice = stored_user("alice", "right password", Role::Depositor).await;
    let mut store = Mocks::default();
    store.users.expect_get_user().returning(move |u| {
        if u.as_str() == "alice" {
            Ok(alice.clone())
        } else {
            Err(StoreError::NotFound(Entity::User))
        }
    });
    let svc = service(store);
    let wrong = svc
        .login(
            name("alice"),
            Password::parse("wrong password").unwrap(),
            ClientInfo::default(),
        )
        .await
        .unwrap_err();
    let unknown = svc
        .login(
            name("nobody"),
            Password::parse("right password").unwrap(),
            ClientInfo::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), ErrorCode::Unauthenticated);
    assert_eq!(
        (wrong.code(), wrong.message()),
        (unknown.code(), unknown.message())
    );
}

#[tokio::test]
async fn login_stores_a_hash_of_the_refresh_token_and_returns_both_tokens() {
    let alice = stored_user("alice", "right password", Role::Banker).await;
    let mut store = Mocks::default();
    store
        .users
        .expect_get_user()
        .returning(move |_| Ok(alice.clone()));
    store
        .sessions
        .expect_create_session()
        .withf(|new| new.user_agent == "curl/8" && new.refresh_token_hash.len() == 32)
        .times(1)
        .returning(|new| {
            Ok(Session {
                id: new.id,
                username: new.username.clone(),
                refresh_token_hash: new.refresh_token_hash.clone(),
                user_agent: new.user_agent.clone(),
                client_ip: new.client_ip.clone(),
                is_blocked: false,
                expires_at: new.expires_at,
                created_at: Utc::now(),
            })
        });
    let svc = service(store);
    let client = ClientInfo {
        user_agent: "curl/8".into(),
        client_ip: "127.0.0.1".into(),
    };
    let login = svc
        .login(
            name("alice"),
            Password::parse("right password").unwrap(),
            client,
        )
        .await
        .unwrap();
    let caller = svc
        .authenticate(login.access_token.token.expose_secret())
        .unwrap();
    assert_eq!(
        (caller.username, caller.role),
        (name("alice"), Role::Banker)
    );
    assert_eq!(caller.session_id, login.session_id);
    assert_eq!(login.refresh_token.claims.session_id, login.session_id);
    // A refresh token is never an access token.
    assert!(
        svc.authenticate(login.refresh_token.token.expose_secret())
            .is_err()
    );
}

/// A store holding one session for alice, made from `refresh`, in the given state.
fn store_with_session(refresh: &str, session_id: Uuid, blocked: bool, role: Role) -> Mocks {
    let hash = super::users::token_hash(refresh);
    let mut store = Mocks::default();
    store.sessions.expect_get_session().returning(move |sid| {
        Ok((sid == session_id).then(|| Session {
            id: sid,
            username: Username::parse("alice").unwrap(),
            refresh_token_hash: hash.clone(),
            user_agent: String::new(),
            client_ip: String::new(),
            is_blocked: blocked,
            expires_at: Utc::now() + Span::hours(1),
            created_at: Utc::now(),
        }))
    });
    store
        .users
        .expect_get_user()
        .returning(move |u| Ok(user(u.as_str(), role, "h")));
    store
}

fn refresh_token(session_id: Uuid) -> String {
    TokenMaker::new(KEY)
        .unwrap()
        .issue(
            session_id,
            &name("alice"),
            Role::Depositor,
            TokenType::Refresh,
            std::time::Duration::from_secs(3600),
            Utc::now(),
        )
        .unwrap()
        .token
        .expose_secret()
        .to_owned()
}

#[tokio::test]
async fn renewal_needs_a_live_session_and_picks_up_the_current_role() {
    let sid = Uuid::new_v4();
    let token = refresh_token(sid);

    let svc = service(store_with_session(&token, sid, false, Role::Banker));
    let access = svc.renew_access_token(&token).await.unwrap();
    assert_eq!(
        access.claims.role,
        Role::Banker,
        "role read again at renewal"
    );
    assert_eq!(access.claims.token_type, TokenType::Access);

    let revoked = service(store_with_session(&token, sid, true, Role::Depositor));
    assert_eq!(
        revoked.renew_access_token(&token).await.unwrap_err().code(),
        ErrorCode::Unauthenticated
    );
    // An authentic token whose hash is not the session's (say, the session was re-keyed).
    let other = service(store_with_session(
        &refresh_token(sid),
        sid,
        false,
        Role::Depositor,
    ));
    assert_eq!(
        other.renew_access_token(&token).await.unwrap_err().code(),
        ErrorCode::Unauthenticated
    );
    // A session that does not exist.
    let gone = service(store_with_session(
        &token,
        Uuid::new_v4(),
        false,
        Role::Depositor,
    ));
    assert_eq!(
        gone.renew_access_token(&token).await.unwrap_err().code(),
        ErrorCode::Unauthenticated
    );
}

#[tokio::test]
async fn a_new_password_revokes_the_users_other_sessions_in_the_same_statement() {
    let me = principal("alice", Role::Depositor);
    let my_session = me.session_id;
    let alice = stored_user("alice", "old password", Role::Depositor).await;
    let mut store = Mocks::default();
    store
        .users
        .expect_get_user()
        .returning(move |_| Ok(alice.clone()));
    store
        .users
        .expect_update_user()
        .withf(move |_, update, _| {
            update.hashed_password.is_some() && update.keep_session == Some(my_session)
        })
        .times(1)
        .returning(|u, _, _| Ok(user(u.as_str(), Role::Depositor, "h")));
    let request = UpdateUserRequest {
        password: Some(Password::parse("a new password").unwrap()),
        current_password: Some(Password::parse("old password").unwrap()),
        ..Default::default()
    };
    service(store)
        .update_user(&me, &name("alice"), request)
        .await
        .unwrap();

    // A banker resetting someone's password proves the banker's own password, and every
    // session of that user is revoked.
    let clerk = stored_user("clerk", "clerk password", Role::Banker).await;
    let mut store = Mocks::default();
    store
        .users
        .expect_get_user()
        .withf(|u| u.as_str() == "clerk")
        .returning(move |_| Ok(clerk.clone()));
    store
        .users
        .expect_update_user()
        .withf(|_, update, _| update.keep_session.is_none())
        .times(1)
        .returning(|u, _, _| Ok(user(u.as_str(), Role::Depositor, "h")));
    let request = UpdateUserRequest {
        password: Some(Password::parse("a new password").unwrap()),
        current_password: Some(Password::parse("clerk password").unwrap()),
        ..Default::default()
    };
    service(store)
        .update_user(&principal("clerk", Role::Banker), &name("alice"), request)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_password_or_email_change_needs_the_callers_current_password() {
    let me = principal("alice", Role::Depositor);
    // Missing: a field error, and nothing is looked up or changed.
    for request in [
        UpdateUserRequest {
            password: Some(Password::parse("a new password").unwrap()),
            ..Default::default()
        },
        UpdateUserRequest {
            email: Some(Email::parse("mallory@example.com").unwrap()),
            ..Default::default()
        },
    ] {
        let err = service(Mocks::default())
            .update_user(&me, &name("alice"), request)
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidArgument);
        assert_eq!(err.details()[0].field, "current_password");
    }

    // Wrong: unauthenticated, nothing changed, and each counts as a failed login: after the
    // username's failures run out, even the right password is throttled.
    let alice = stored_user("alice", "old password", Role::Depositor).await;
    let mut store = Mocks::default();
    store
        .users
        .expect_get_user()
        .returning(move |_| Ok(alice.clone()));
    store.users.expect_update_user().never();
    let svc = service(store).with_login_limits(LoginLimits {
        per_ip: 0,
        per_username: 2,
    });
    let attempt = |current: &str| UpdateUserRequest {
        email: Some(Email::parse("mallory@example.com").unwrap()),
        current_password: Some(Password::parse(current).unwrap()),
        ..Default::default()
    };
    for _ in 0..2 {
        let err = svc
            .update_user(&me, &name("alice"), attempt("guess number"))
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::Unauthenticated);
    }
    let err = svc
        .update_user(&me, &name("alice"), attempt("old password"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::RateLimited);
}

#[tokio::test]
async fn an_empty_update_is_refused() {
    let err = service(Mocks::default())
        .update_user(
            &principal("alice", Role::Depositor),
            &name("alice"),
            UpdateUserRequest::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidArgument);
}

#[tokio::test]
async fn logout_revokes_the_tokens_session() {
    let sid = Uuid::new_v4();
    let mut store = Mocks::default();
    store
        .sessions
        .expect_block_session()
        .withf(move |id, u| *id == sid && u.as_str() == "alice")
        .times(1)
        .returning(|_, _| Ok(true));
    service(store).logout(&refresh_token(sid)).await.unwrap();
    let err = service(Mocks::default())
        .logout("v4.local.garbage")
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Unauthenticated);
}

fn key(raw: &str) -> IdempotencyKey {
    IdempotencyKey::parse(raw).unwrap()
}

#[tokio::test]
async fn keyed_transfers_name_in_flight_and_mismatched_keys_in_the_error_table() {
    let cases: [(fn() -> KeyedOutcome, ErrorCode); 2] = [
        (|| KeyedOutcome::InFlight, ErrorCode::Conflict),
        (|| KeyedOutcome::Mismatch, ErrorCode::IdempotencyMismatch),
    ];
    for (outcome, code) in cases {
        let mut store = Mocks::default();
        owns(&mut store, 8, "alice");
        store
            .keyed
            .expect_move_money_once()
            .withf(|movement, caller, key| {
                matches!(movement, MoneyMove::Transfer { owner: Some(o), .. } if o == &name("alice"))
                    && caller == &name("alice")
                    && key.as_str() == "order-1"
            })
            .returning(move |_, _, _| Ok(outcome()));
        let cmd = NewTransfer::new(id(8), id(9), Amount::new(5).unwrap(), Currency::Usd).unwrap();
        let answer = service(store)
            .create_transfer(
                &principal("alice", Role::Depositor),
                cmd,
                Some(key("order-1")),
            )
            .await;
        assert!(!answer.replayed);
        assert_eq!(answer.outcome.unwrap_err().code(), code);
    }
}

#[tokio::test]
async fn a_replayed_refusal_reads_exactly_like_the_first_one() {
    let mut store = Mocks::default();
    owns(&mut store, 8, "alice");
    store.keyed.expect_move_money_once().returning(|_, _, _| {
        Ok(KeyedOutcome::Replayed(Err(StoreError::NotCustomerAccount(
            id(9),
        ))))
    });
    let cmd = NewTransfer::new(id(8), id(9), Amount::new(5).unwrap(), Currency::Usd).unwrap();
    let answer = service(store)
        .create_transfer(&principal("alice", Role::Depositor), cmd, Some(key("k")))
        .await;
    assert!(answer.replayed);
    // As the first answer read: the settlement account is not found to a customer.
    let err = answer.outcome.unwrap_err();
    assert_eq!(err.code(), ErrorCode::NotFound);
    assert_eq!(err.message(), "account 9 not found");
}

#[tokio::test]
async fn a_keyed_deposit_by_a_depositor_is_refused_before_the_store_is_asked() {
    // No expectations: a call into the store would panic.
    let svc = service(Mocks::default());
    let answer = svc
        .deposit(
            &principal("alice", Role::Depositor),
            id(8),
            Amount::new(5).unwrap(),
            Currency::Usd,
            Label::default(),
            Some(key("k")),
        )
        .await;
    assert!(!answer.replayed);
    assert_eq!(
        answer.outcome.unwrap_err().code(),
        ErrorCode::PermissionDenied
    );
}

#[tokio::test]
async fn every_failed_verification_is_the_clients_problem_never_internal() {
    for (outcome, code) in [
        (VerifyOutcome::NotFound, ErrorCode::NotFound),
        (VerifyOutcome::WrongCode, ErrorCode::InvalidArgument),
        (VerifyOutcome::Used, ErrorCode::InvalidArgument),
        (VerifyOutcome::Expired, ErrorCode::InvalidArgument),
        (VerifyOutcome::Superseded, ErrorCode::InvalidArgument),
    ] {
        let mut store = Mocks::default();
        store
            .users
            .expect_verify_email()
            .withf(|id, _| *id == 7)
            .returning(move |_, _| Ok(outcome));
        let err = service(store)
            .verify_email(7, VerificationCode::generate(), &anyone())
            .await
            .unwrap_err();
        assert_eq!(err.code(), code, "{outcome:?}");
    }
    let mut store = Mocks::default();
    store
        .users
        .expect_verify_email()
        .returning(|_, _| Ok(VerifyOutcome::Verified));
    assert!(
        service(store)
            .verify_email(7, VerificationCode::generate(), &anyone())
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn sign_up_starts_a_verification_with_a_fresh_code_and_the_configured_lifetime() {
    let mut store = Mocks::default();
    store
        .users
        .expect_create_user()
        .withf(|_, verification| {
            verification.valid_for == std::time::Duration::from_secs(3600)
                && verification.code.expose().len() == 64
        })
        .returning(|new, _| Ok(user(new.username.as_str(), Role::Depositor, "h")));
    let svc = service(store).with_verification_ttl(std::time::Duration::from_secs(3600));
    let request =
        NewUserRequest::parse("alice", "Alice", "alice@example.com", "password123").unwrap();
    svc.create_user(request, &anyone()).await.unwrap();
}

#[tokio::test]
async fn csv_exports_beyond_the_bounds_are_refused_until_one_ends() {
    let mut store = Mocks::default();
    store
        .accounts
        .expect_get_account()
        .returning(|id| Ok(account(id.get(), "alice")));
    store
        .accounts
        .expect_statement_csv()
        .returning(|_, _, _, _| tokio::sync::mpsc::channel(1).1);
    let svc = service(store);
    // One per user: alice's second export waits for her first, other users are not touched.
    let alice = principal("alice", Role::Depositor);
    let first = svc.statement_csv(&alice, id(1), None, None).await.unwrap();
    let mine = svc
        .statement_csv(&alice, id(1), None, None)
        .await
        .unwrap_err();
    assert_eq!(mine.code(), ErrorCode::RateLimited);
    drop(first);
    // MAX_EXPORTS per replica, whoever asks.
    let mut running = vec![svc.statement_csv(&alice, id(1), None, None).await.unwrap()];
    for n in 1..crate::service::MAX_EXPORTS {
        let clerk = principal(&format!("clerk{n}"), Role::Banker);
        running.push(svc.statement_csv(&clerk, id(1), None, None).await.unwrap());
    }
    let refused = svc
        .statement_csv(&principal("clerk9", Role::Banker), id(1), None, None)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), ErrorCode::Unavailable);
    // A finished (dropped) export frees its place.
    running.pop();
    assert!(
        svc.statement_csv(&principal("clerk9", Role::Banker), id(1), None, None)
            .await
            .is_ok()
    );
    // A backwards range is refused before any place is taken.
    let later = Utc::now();
    let earlier = later - chrono::Duration::seconds(1);
    let backwards = svc
        .statement_csv(
            &principal("clerk8", Role::Banker),
            id(1),
            Some(later),
            Some(earlier),
        )
        .await
        .unwrap_err();
    assert_eq!(backwards.code(), ErrorCode::InvalidArgument);
}

#[tokio::test]
async fn only_bankers_manage_webhooks_and_the_store_is_never_asked_otherwise() {
    // No expectations: any call on the webhook store would panic.
    let bank = service(Mocks::default());
    let alice = principal("alice", Role::Depositor);
    let request =
        crate::service::parse_webhook(Some("https://hooks.example.com/x".into()), vec![], None)
            .unwrap();
    for outcome in [
        bank.create_webhook(&alice, request).await.map(|_| ()),
        bank.list_webhooks(&alice).await.map(|_| ()),
        bank.delete_webhook(&alice, 1).await,
        bank.rotate_webhook_secret(&alice, 1).await.map(|_| ()),
        bank.list_webhook_deliveries(&alice, 1).await.map(|_| ()),
        bank.redeliver_webhook(&alice, 1, 1).await.map(|_| ()),
    ] {
        assert!(
            matches!(outcome, Err(ServiceError::PermissionDenied(_))),
            "{outcome:?}"
        );
    }
}

#[test]
fn a_webhook_request_names_every_bad_field() {
    let err = crate::service::parse_webhook(
        None,
        vec!["transfer.created".into(), "money.printed".into()],
        Some("x".repeat(300)),
    )
    .unwrap_err();
    let ServiceError::InvalidArgument(problems) = err else {
        panic!("{err:?}")
    };
    let fields: Vec<&str> = problems.iter().map(|p| p.field).collect();
    assert_eq!(fields, ["url", "event_types", "description"]);
    let ok = crate::service::parse_webhook(
        Some("https://h.example/".into()),
        vec!["hold.captured".into(), "hold.captured".into()],
        None,
    )
    .unwrap();
    assert_eq!(ok.event_types, ["hold.captured"]);
}
