//! Sessions (revocation) and partial user updates.

use chrono::{Duration, Utc};
use simplebank::domain::{Email, FullName, UserUpdate};
use simplebank::store::prelude::*;
use simplebank::store::{Entity, NewSession, StoreError, Unique};
use uuid::Uuid;

use crate::helpers::{TestDb, create_user, username, verification};

fn new_session(user: &str) -> NewSession {
    NewSession {
        id: Uuid::new_v4(),
        username: username(user),
        refresh_token_hash: vec![1, 2, 3],
        user_agent: "curl/8".into(),
        client_ip: "127.0.0.1".into(),
        expires_at: Utc::now() + Duration::hours(24),
    }
}

#[tokio::test]
async fn sessions_are_stored_and_revoked_one_or_all() {
    let db = TestDb::new().await;
    create_user(&db.store, "alice").await;
    create_user(&db.store, "bob").await;
    let a1 = db
        .store
        .create_session(&new_session("alice"))
        .await
        .unwrap();
    let a2 = db
        .store
        .create_session(&new_session("alice"))
        .await
        .unwrap();
    let a3 = db
        .store
        .create_session(&new_session("alice"))
        .await
        .unwrap();
    let b1 = db.store.create_session(&new_session("bob")).await.unwrap();

    let read = db.store.get_session(a1.id).await.unwrap().unwrap();
    assert_eq!(read, a1);
    assert!(!read.is_blocked);
    assert_eq!(read.refresh_token_hash, vec![1, 2, 3]);
    assert_eq!(db.store.get_session(Uuid::new_v4()).await.unwrap(), None);

    // One session, and only by its own user.
    assert!(
        !db.store
            .block_session(a1.id, &username("bob"))
            .await
            .unwrap()
    );
    assert!(
        db.store
            .block_session(a1.id, &username("alice"))
            .await
            .unwrap()
    );
    assert!(
        db.store
            .get_session(a1.id)
            .await
            .unwrap()
            .unwrap()
            .is_blocked
    );

    // Every other live session of alice: a3 is kept, bob's is untouched.
    assert_eq!(
        db.store
            .block_user_sessions(&username("alice"), Some(a3.id))
            .await
            .unwrap(),
        1
    );
    assert!(
        db.store
            .get_session(a2.id)
            .await
            .unwrap()
            .unwrap()
            .is_blocked
    );
    assert!(
        !db.store
            .get_session(a3.id)
            .await
            .unwrap()
            .unwrap()
            .is_blocked
    );
    assert!(
        !db.store
            .get_session(b1.id)
            .await
            .unwrap()
            .unwrap()
            .is_blocked
    );
    assert_eq!(
        db.store
            .block_user_sessions(&username("alice"), None)
            .await
            .unwrap(),
        1
    );

    assert!(matches!(
        db.store.create_session(&new_session("ghost")).await,
        Err(StoreError::NotFound(Entity::User))
    ));
}

#[tokio::test]
async fn a_partial_update_changes_only_what_it_names() {
    let db = TestDb::new().await;
    let before = create_user(&db.store, "alice").await;
    sqlx::query("UPDATE users SET is_email_verified = true WHERE username = 'alice'")
        .execute(db.pool())
        .await
        .unwrap();

    let renamed = db
        .store
        .update_user(
            &username("alice"),
            &UserUpdate {
                full_name: Some(FullName::parse("Alice Liddell").unwrap()),
                ..Default::default()
            },
            &verification(),
        )
        .await
        .unwrap();
    assert_eq!(renamed.full_name.as_str(), "Alice Liddell");
    assert_eq!(renamed.email, before.email);
    assert!(renamed.is_email_verified);
    assert_eq!(renamed.password_changed_at, before.password_changed_at);

    // A change of letter case keeps the verification; a new address resets it.
    let recased = db
        .store
        .update_user(
            &username("alice"),
            &UserUpdate {
                email: Some(Email::parse("ALICE@example.com").unwrap()),
                ..Default::default()
            },
            &verification(),
        )
        .await
        .unwrap();
    assert!(recased.is_email_verified);
    let moved = db
        .store
        .update_user(
            &username("alice"),
            &UserUpdate {
                email: Some(Email::parse("alice@elsewhere.org").unwrap()),
                ..Default::default()
            },
            &verification(),
        )
        .await
        .unwrap();
    assert_eq!(moved.email.as_str(), "alice@elsewhere.org");
    assert!(!moved.is_email_verified);

    let rehashed = db
        .store
        .update_user(
            &username("alice"),
            &UserUpdate {
                hashed_password: Some("$argon2id$new".into()),
                ..Default::default()
            },
            &verification(),
        )
        .await
        .unwrap();
    assert!(rehashed.password_changed_at > before.password_changed_at);
}

#[tokio::test]
async fn updates_refuse_a_taken_email_and_unknown_or_system_users() {
    let db = TestDb::new().await;
    create_user(&db.store, "alice").await;
    create_user(&db.store, "bob").await;
    let taken = UserUpdate {
        email: Some(Email::parse("BOB@example.com").unwrap()),
        ..Default::default()
    };
    assert!(matches!(
        db.store
            .update_user(&username("alice"), &taken, &verification())
            .await,
        Err(StoreError::AlreadyExists(Unique::Email))
    ));
    let rename = UserUpdate {
        full_name: Some(FullName::parse("X").unwrap()),
        ..Default::default()
    };
    for who in ["ghost", "simplebank"] {
        assert!(matches!(
            db.store
                .update_user(&username(who), &rename, &verification())
                .await,
            Err(StoreError::NotFound(Entity::User))
        ));
    }
}
