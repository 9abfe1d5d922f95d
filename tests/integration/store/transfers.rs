//! The transfer transaction, one request at a time: what it writes, and that every refusal
//! writes nothing.

use simplebank::domain::{AccountKind, Currency};
use simplebank::store::StoreError;
use simplebank::store::prelude::*;

use crate::helpers::{
    TestDb, amount, assert_ledger_consistent, funded_account, new_transfer, snapshot, username,
};

#[tokio::test]
async fn a_transfer_writes_one_transfer_two_entries_and_both_balances() {
    let db = TestDb::new().await;
    let alice = funded_account(&db.store, "alice", Currency::Usd, 1_000).await;
    let bob = funded_account(&db.store, "bob", Currency::Usd, 50).await;

    let receipt = db
        .store
        .transfer(
            &new_transfer(alice.id, bob.id, 300, Currency::Usd),
            Some(username("alice")),
        )
        .await
        .expect("transfer");

    let t = &receipt.transfer;
    assert_eq!((t.from_account_id, t.to_account_id), (alice.id, bob.id));
    assert_eq!((t.amount, t.currency), (amount(300), Currency::Usd));
    assert_eq!(receipt.from_account.balance, 700);
    assert_eq!(receipt.to_account.balance, 350);
    assert_eq!(receipt.from_account.owner, username("alice"));
    assert_eq!(receipt.from_account.kind, AccountKind::Customer);

    assert_eq!(receipt.from_entry.amount, -300);
    assert_eq!(receipt.to_entry.amount, 300);
    assert_eq!(receipt.from_entry.amount + receipt.to_entry.amount, 0);
    assert_eq!(receipt.from_entry.balance_after, 700);
    assert_eq!(receipt.to_entry.balance_after, 350);
    assert_eq!(receipt.from_entry.transfer_id, t.id);
    assert_eq!(receipt.to_entry.account_id, bob.id);

    // What the receipt says is what the database holds.
    let parties = db.store.get_transfer(t.id).await.unwrap();
    assert_eq!(parties.transfer, *t);
    assert_eq!(
        (parties.from_owner, parties.to_owner),
        (username("alice"), username("bob"))
    );
    assert_eq!(
        db.store.get_account(alice.id).await.unwrap(),
        receipt.from_account
    );
    assert_eq!(
        db.store.get_account(bob.id).await.unwrap(),
        receipt.to_account
    );
    let statement = db
        .store
        .list_entries(alice.id, None, Default::default())
        .await
        .unwrap();
    assert_eq!(statement.items[0], receipt.from_entry);
    assert_ledger_consistent(db.pool()).await;
}

#[tokio::test]
async fn a_transfer_may_empty_an_account_exactly() {
    let db = TestDb::new().await;
    let alice = funded_account(&db.store, "alice", Currency::Jpy, 500).await;
    let bob = funded_account(&db.store, "bob", Currency::Jpy, 0).await;
    let receipt = db
        .store
        .transfer(&new_transfer(alice.id, bob.id, 500, Currency::Jpy), None)
        .await
        .unwrap();
    assert_eq!(receipt.from_account.balance, 0);
    assert_ledger_consistent(db.pool()).await;
}

#[tokio::test]
async fn transfer_with_insufficient_funds_is_rejected_and_changes_nothing() {
    let db = TestDb::new().await;
    let alice = funded_account(&db.store, "alice", Currency::Usd, 100).await;
    let bob = funded_account(&db.store, "bob", Currency::Usd, 0).await;
    let before = snapshot(db.pool()).await;

    let err = db
        .store
        .transfer(&new_transfer(alice.id, bob.id, 101, Currency::Usd), None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::InsufficientFunds(id) if id == alice.id),
        "{err:?}"
    );
    assert_eq!(snapshot(db.pool()).await, before);
}

#[tokio::test]
async fn transfer_in_the_wrong_currency_is_rejected_and_changes_nothing() {
    let db = TestDb::new().await;
    let alice = funded_account(&db.store, "alice", Currency::Usd, 100).await;
    let bob = funded_account(&db.store, "bob", Currency::Eur, 0).await;
    let before = snapshot(db.pool()).await;

    // Both accounts are named in the error: first the from-account, then the to-account.
    let err = db
        .store
        .transfer(&new_transfer(alice.id, bob.id, 10, Currency::Eur), None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::CurrencyMismatch { account, expected: Currency::Eur, actual: Currency::Usd } if account == alice.id),
        "{err:?}"
    );
    let err = db
        .store
        .transfer(&new_transfer(alice.id, bob.id, 10, Currency::Usd), None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::CurrencyMismatch { account, expected: Currency::Usd, actual: Currency::Eur } if account == bob.id),
        "{err:?}"
    );
    assert_eq!(snapshot(db.pool()).await, before);
}

#[tokio::test]
async fn transfer_with_an_unknown_account_is_rejected_and_changes_nothing() {
    let db = TestDb::new().await;
    let alice = funded_account(&db.store, "alice", Currency::Usd, 100).await;
    let ghost = simplebank::domain::AccountId::new(987_654).unwrap();
    let before = snapshot(db.pool()).await;

    let err = db
        .store
        .transfer(&new_transfer(alice.id, ghost, 10, Currency::Usd), None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::AccountNotFound(id) if id == ghost),
        "{err:?}"
    );
    let err = db
        .store
        .transfer(&new_transfer(ghost, alice.id, 10, Currency::Usd), None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::AccountNotFound(id) if id == ghost),
        "{err:?}"
    );
    assert!(matches!(
        db.store.deposit(ghost, amount(5), Currency::Usd, simplebank::domain::Label::default()).await,
        Err(StoreError::AccountNotFound(id)) if id == ghost
    ));
    assert_eq!(snapshot(db.pool()).await, before);
}

#[tokio::test]
async fn transfer_to_the_same_account_cannot_be_expressed() {
    let db = TestDb::new().await;
    let alice = funded_account(&db.store, "alice", Currency::Usd, 100).await;
    let err = simplebank::domain::NewTransfer::new(alice.id, alice.id, amount(1), Currency::Usd)
        .unwrap_err();
    assert_eq!(err.field, "to_account_id");
}

#[tokio::test]
async fn transfer_from_someone_elses_account_is_refused_before_anything_is_revealed() {
    let db = TestDb::new().await;
    let alice = funded_account(&db.store, "alice", Currency::Usd, 100).await;
    let bob = funded_account(&db.store, "bob", Currency::Usd, 0).await;
    let mallory = username("mallory");
    let before = snapshot(db.pool()).await;

    let err = db
        .store
        .transfer(
            &new_transfer(alice.id, bob.id, 10, Currency::Usd),
            Some(mallory.clone()),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::NotOwner(id) if id == alice.id),
        "{err:?}"
    );
    // Not "to-account not found", not "currency mismatch", not "insufficient funds": a
    // stranger learns nothing about the other account or the balance.
    let ghost = simplebank::domain::AccountId::new(987_654).unwrap();
    for (to, amount_units, currency) in [
        (ghost, 10, Currency::Usd),
        (bob.id, 10, Currency::Eur),
        (bob.id, 10_000, Currency::Usd),
    ] {
        let err = db
            .store
            .transfer(
                &new_transfer(alice.id, to, amount_units, currency),
                Some(mallory.clone()),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::NotOwner(_)), "{err:?}");
    }
    assert_eq!(snapshot(db.pool()).await, before);
}

#[tokio::test]
async fn customers_cannot_transfer_to_or_from_settlement_accounts() {
    let db = TestDb::new().await;
    let alice = funded_account(&db.store, "alice", Currency::Usd, 100).await;
    let bank_usd: i64 = sqlx::query_scalar(
        "SELECT id FROM accounts WHERE kind = 'settlement' AND currency = 'USD'",
    )
    .fetch_one(db.pool())
    .await
    .unwrap();
    let bank_usd = simplebank::domain::AccountId::new(bank_usd).unwrap();
    let before = snapshot(db.pool()).await;

    assert!(matches!(
        db.store.transfer(&new_transfer(alice.id, bank_usd, 10, Currency::Usd), None).await,
        Err(StoreError::NotCustomerAccount(id)) if id == bank_usd
    ));
    assert!(matches!(
        db.store.transfer(&new_transfer(bank_usd, alice.id, 10, Currency::Usd), None).await,
        Err(StoreError::NotCustomerAccount(id)) if id == bank_usd
    ));
    // Nor can the bank deposit into, or withdraw from, its own settlement account.
    assert!(matches!(
        db.store
            .deposit(
                bank_usd,
                amount(10),
                Currency::Usd,
                simplebank::domain::Label::default()
            )
            .await,
        Err(StoreError::NotCustomerAccount(_)) | Err(StoreError::SameAccount)
    ));
    assert!(matches!(
        db.store
            .withdraw(
                bank_usd,
                amount(10),
                Currency::Usd,
                simplebank::domain::Label::default()
            )
            .await,
        Err(StoreError::NotCustomerAccount(_)) | Err(StoreError::SameAccount)
    ));
    assert_eq!(snapshot(db.pool()).await, before);
}

#[tokio::test]
async fn deposits_and_withdrawals_move_money_through_the_settlement_account() {
    let db = TestDb::new().await;
    let alice = funded_account(&db.store, "alice", Currency::Gbp, 0).await;

    let deposit = db
        .store
        .deposit(
            alice.id,
            amount(1_500),
            Currency::Gbp,
            simplebank::domain::Label::default(),
        )
        .await
        .unwrap();
    assert_eq!(deposit.to_account.balance, 1_500);
    assert_eq!(deposit.from_account.kind, AccountKind::Settlement);
    assert_eq!(deposit.from_account.balance, -1_500);
    assert_eq!(deposit.to_entry.balance_after, 1_500);

    let withdrawal = db
        .store
        .withdraw(
            alice.id,
            amount(400),
            Currency::Gbp,
            simplebank::domain::Label::default(),
        )
        .await
        .unwrap();
    assert_eq!(withdrawal.from_account.balance, 1_100);
    assert_eq!(withdrawal.to_account.balance, -1_100);
    assert_eq!(withdrawal.from_entry.amount, -400);

    let before = snapshot(db.pool()).await;
    assert!(matches!(
        db.store.withdraw(alice.id, amount(1_101), Currency::Gbp, simplebank::domain::Label::default()).await,
        Err(StoreError::InsufficientFunds(id)) if id == alice.id
    ));
    assert!(matches!(
        db.store.deposit(alice.id, amount(1), Currency::Usd, simplebank::domain::Label::default()).await,
        Err(StoreError::CurrencyMismatch { account, .. }) if account == alice.id
    ));
    assert_eq!(snapshot(db.pool()).await, before);
    assert_ledger_consistent(db.pool()).await;
}

#[tokio::test]
async fn balances_never_overflow() {
    let db = TestDb::new().await;
    let alice = funded_account(&db.store, "alice", Currency::Usd, i64::MAX).await;
    let bob = funded_account(&db.store, "bob", Currency::Usd, 1).await;
    // The settlement account now stands at -(i64::MAX) - 1 = i64::MIN.
    let before = snapshot(db.pool()).await;

    assert!(matches!(
        db.store.transfer(&new_transfer(bob.id, alice.id, 1, Currency::Usd), None).await,
        Err(StoreError::BalanceOverflow(id)) if id == alice.id
    ));
    assert!(matches!(
        db.store
            .deposit(
                alice.id,
                amount(1),
                Currency::Usd,
                simplebank::domain::Label::default()
            )
            .await,
        Err(StoreError::BalanceOverflow(_))
    ));
    // The settlement account cannot go below i64::MIN either.
    let carol = funded_account(&db.store, "carol", Currency::Usd, 0).await;
    let snapshot_with_carol = snapshot(db.pool()).await;
    assert!(matches!(
        db.store
            .deposit(
                carol.id,
                amount(1),
                Currency::Usd,
                simplebank::domain::Label::default()
            )
            .await,
        Err(StoreError::BalanceOverflow(_))
    ));
    assert_eq!(snapshot(db.pool()).await, snapshot_with_carol);
    assert_eq!(before.transfers, snapshot_with_carol.transfers);
    assert_ledger_consistent(db.pool()).await;
}
