//! Keyset pagination: every row exactly once, in order, even while rows are being added.

use simplebank::store::prelude::*;
use std::collections::BTreeSet;

use simplebank::domain::{AccountId, Currency, EntryId, PageSize};
use simplebank::store::Page;

use crate::helpers::{TestDb, amount, create_user, funded_account, username};

#[tokio::test]
async fn listing_an_owners_accounts_pages_through_all_of_them() {
    let db = TestDb::new().await;
    create_user(&db.store, "alice").await;
    create_user(&db.store, "bob").await;
    let mut expected = Vec::new();
    for currency in Currency::ALL {
        expected.push(
            db.store
                .create_account(&username("alice"), currency)
                .await
                .unwrap()
                .id,
        );
        db.store
            .create_account(&username("bob"), currency)
            .await
            .unwrap();
    }

    let mut seen = Vec::new();
    let mut after = None;
    let mut pages = 0;
    loop {
        let page = db
            .store
            .list_accounts(Some(username("alice")), after, PageSize::new(3).unwrap())
            .await
            .unwrap();
        pages += 1;
        assert!(page.items.len() <= 3);
        assert!(page.items.iter().all(|a| a.owner == username("alice")));
        seen.extend(page.items.iter().map(|a| a.id));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(
        seen, expected,
        "all of alice's accounts, oldest first, once each"
    );
    assert_eq!(pages, 3, "7 accounts in pages of 3");
}

#[tokio::test]
async fn an_exactly_full_last_page_says_there_is_no_next_page() {
    let db = TestDb::new().await;
    create_user(&db.store, "alice").await;
    for currency in [Currency::Usd, Currency::Eur] {
        db.store
            .create_account(&username("alice"), currency)
            .await
            .unwrap();
    }
    let page = db
        .store
        .list_accounts(Some(username("alice")), None, PageSize::new(2).unwrap())
        .await
        .unwrap();
    assert_eq!(page.items.len(), 2);
    assert_eq!(page.next, None);

    let none = db
        .store
        .list_accounts(Some(username("nobody")), None, PageSize::default())
        .await
        .unwrap();
    assert_eq!(
        none,
        Page {
            items: vec![],
            next: None
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_accounts_page_exactly_once_while_accounts_are_being_opened() {
    let db = TestDb::with_pool_size(6).await;
    for i in 0..40 {
        funded_account(&db.store, &format!("early_{i:02}"), Currency::Usd, 0).await;
    }
    let existing: BTreeSet<AccountId> = all_account_ids(&db).await;

    let writer = {
        let store = db.store.clone();
        tokio::spawn(async move {
            for i in 0..40 {
                crate::helpers::funded_account(&store, &format!("late_{i:02}"), Currency::Eur, 0)
                    .await;
            }
        })
    };
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = db
            .store
            .list_accounts(None, after, PageSize::new(5).unwrap())
            .await
            .unwrap();
        seen.extend(page.items.iter().map(|a| a.id));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
        tokio::task::yield_now().await;
    }
    writer.await.unwrap();

    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "ascending, no repeats"
    );
    let seen: BTreeSet<AccountId> = seen.into_iter().collect();
    assert!(
        existing.is_subset(&seen),
        "every account that existed is listed"
    );
}

async fn all_account_ids(db: &TestDb) -> BTreeSet<AccountId> {
    sqlx::query_scalar::<_, i64>("SELECT id FROM accounts")
        .fetch_all(db.pool())
        .await
        .unwrap()
        .into_iter()
        .map(|id| AccountId::new(id).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_pages_newest_first_exactly_once_while_money_keeps_arriving() {
    let db = TestDb::with_pool_size(6).await;
    let account = funded_account(&db.store, "alice", Currency::Usd, 0).await;
    for i in 1..=45 {
        db.store
            .deposit(
                account.id,
                amount(i),
                Currency::Usd,
                simplebank::domain::Label::default(),
            )
            .await
            .unwrap();
    }
    let existing: Vec<EntryId> = db
        .store
        .list_entries(account.id, None, PageSize::new(100).unwrap())
        .await
        .unwrap()
        .items
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(existing.len(), 45);

    let writer = {
        let store = db.store.clone();
        tokio::spawn(async move {
            for _ in 0..30 {
                store
                    .deposit(
                        account.id,
                        amount(7),
                        Currency::Usd,
                        simplebank::domain::Label::default(),
                    )
                    .await
                    .unwrap();
            }
        })
    };
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = db
            .store
            .list_entries(account.id, before, PageSize::new(4).unwrap())
            .await
            .unwrap();
        assert!(page.items.iter().all(|e| e.account_id == account.id));
        seen.extend(page.items.iter().map(|e| e.id));
        match page.next {
            Some(next) => before = Some(next),
            None => break,
        }
        tokio::task::yield_now().await;
    }
    writer.await.unwrap();

    assert!(
        seen.windows(2).all(|w| w[0] > w[1]),
        "newest first, no repeats"
    );
    let seen: BTreeSet<EntryId> = seen.into_iter().collect();
    assert!(
        existing.iter().all(|id| seen.contains(id)),
        "no existing entry skipped"
    );
}
