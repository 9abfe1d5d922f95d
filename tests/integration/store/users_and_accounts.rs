//! Users and accounts: create, read, role changes, and the errors a caller can meet.

use simplebank::store::prelude::*;
use std::time::Duration;

use simplebank::domain::{AccountId, AccountKind, Currency, Role};
use simplebank::store::{Entity, Store, StoreError, Unique};
use sqlx::postgres::PgPoolOptions;

use crate::helpers::{TestDb, create_user, username, verification};

#[tokio::test]
async fn a_created_user_reads_back_with_its_defaults() {
    let db = TestDb::new().await;
    let created = create_user(&db.store, "alice").await;
    let read = db.store.get_user(&username("alice")).await.unwrap();
    assert_eq!(read.username, created.username);
    assert_eq!(read.email.as_str(), "alice@example.com");
    assert_eq!(read.full_name.as_str(), "alice Example");
    assert_eq!(read.role, Role::Depositor);
    assert!(!read.is_email_verified);
    assert!(
        read.password_changed_at < read.created_at,
        "never changed yet"
    );
    // The hash is kept, but never printed.
    assert!(!format!("{read:?}").contains("argon2"));
}

#[tokio::test]
async fn duplicates_and_unknown_users_are_told_apart() {
    let db = TestDb::new().await;
    create_user(&db.store, "alice").await;
    let mut again = simplebank::domain::NewUser {
        username: username("alice"),
        hashed_password: "h".into(),
        full_name: simplebank::domain::FullName::parse("Alice").unwrap(),
        email: simplebank::domain::Email::parse("fresh@example.com").unwrap(),
        role: Role::Depositor,
    };
    assert!(matches!(
        db.store.create_user(&again, &verification()).await,
        Err(StoreError::AlreadyExists(Unique::Username))
    ));
    again.username = username("alice_two");
    again.email = simplebank::domain::Email::parse("Alice@EXAMPLE.com").unwrap();
    assert!(matches!(
        db.store.create_user(&again, &verification()).await,
        Err(StoreError::AlreadyExists(Unique::Email))
    ));
    assert!(matches!(
        db.store.get_user(&username("nobody")).await,
        Err(StoreError::NotFound(Entity::User))
    ));
}

#[tokio::test]
async fn roles_can_change_except_the_banks_own() {
    let db = TestDb::new().await;
    create_user(&db.store, "alice").await;
    let banker = db
        .store
        .set_user_role(&username("alice"), Role::Banker)
        .await
        .unwrap();
    assert_eq!(banker.role, Role::Banker);
    assert_eq!(
        db.store.get_user(&username("alice")).await.unwrap().role,
        Role::Banker
    );
    assert!(matches!(
        db.store
            .set_user_role(&username("nobody"), Role::Banker)
            .await,
        Err(StoreError::NotFound(Entity::User))
    ));
    assert!(matches!(
        db.store
            .set_user_role(&username("simplebank"), Role::Banker)
            .await,
        Err(StoreError::NotFound(Entity::User))
    ));
}

#[tokio::test]
async fn accounts_open_empty_and_read_back() {
    let db = TestDb::new().await;
    create_user(&db.store, "alice").await;
    let account = db
        .store
        .create_account(&username("alice"), Currency::Cad)
        .await
        .unwrap();
    assert_eq!(account.balance, 0);
    assert_eq!(account.currency, Currency::Cad);
    assert_eq!(account.kind, AccountKind::Customer);
    assert_eq!(db.store.get_account(account.id).await.unwrap(), account);

    let ghost = AccountId::new(424_242).unwrap();
    assert!(matches!(
        db.store.get_account(ghost).await,
        Err(StoreError::AccountNotFound(id)) if id == ghost
    ));
    assert!(matches!(
        db.store
            .get_transfer(simplebank::domain::TransferId::new(1).unwrap())
            .await,
        Err(StoreError::NotFound(Entity::Transfer))
    ));
}

#[tokio::test]
async fn an_unreachable_database_reads_as_unavailable() {
    // Nothing listens on port 1; the pool gives up after its acquire timeout.
    let pool = PgPoolOptions::new()
        .acquire_timeout(Duration::from_millis(500))
        .connect_lazy("postgresql://nobody:nothing@127.0.0.1:1/none")
        .unwrap();
    let store = Store::new(pool);
    assert!(matches!(
        store.ping().await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        store.get_user(&username("alice")).await,
        Err(StoreError::Unavailable(_))
    ));
}
