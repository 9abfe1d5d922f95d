//! Every named constraint refuses what it should, and the refusal arrives as the right
//! `StoreError`, whatever path a bad row takes into the database.

use simplebank::domain::Currency;
use simplebank::store::prelude::*;
use simplebank::store::{Entity, StoreError, Unique};
use sqlx::PgPool;

use crate::helpers::{TestDb, create_user, funded_account, new_transfer, username};

/// Runs one statement and returns the store's reading of its failure.
async fn refusal(pool: &PgPool, sql: impl sqlx::SqlSafeStr) -> StoreError {
    let err = sqlx::query(sql)
        .execute(pool)
        .await
        .expect_err("the statement must be refused");
    StoreError::from(err)
}

fn violated(err: StoreError) -> String {
    match err {
        StoreError::ConstraintViolated(name) => name,
        other => panic!("expected a constraint violation, got {other:?}"),
    }
}

#[tokio::test]
async fn user_constraints_refuse_bad_rows() {
    let db = TestDb::new().await;
    let pool = db.pool();
    create_user(&db.store, "alice").await;

    assert!(matches!(
        refusal(pool, "INSERT INTO users (username, hashed_password, full_name, email) VALUES ('alice', 'h', 'A', 'other@example.com')").await,
        StoreError::AlreadyExists(Unique::Username)
    ));
    // Email uniqueness ignores letter case.
    assert!(matches!(
        refusal(pool, "INSERT INTO users (username, hashed_password, full_name, email) VALUES ('alice2', 'h', 'A', 'ALICE@Example.COM')").await,
        StoreError::AlreadyExists(Unique::Email)
    ));
    let cases: [(&'static str, &str); 5] = [
        (
            "INSERT INTO users (username, hashed_password, full_name, email) VALUES ('Al', 'h', 'A', 'a@b.co')",
            "users_username_format",
        ),
        (
            "INSERT INTO users (username, hashed_password, full_name, email) VALUES ('bob', 'h', '', 'b@b.co')",
            "users_full_name_length",
        ),
        (
            "INSERT INTO users (username, hashed_password, full_name, email) VALUES ('bob', 'h', 'B', 'not an email')",
            "users_email_format",
        ),
        (
            "INSERT INTO users (username, hashed_password, full_name, email, role) VALUES ('bob', 'h', 'B', 'b@b.co', 'admin')",
            "users_role_valid",
        ),
        (
            "INSERT INTO users (username, hashed_password, full_name, email) VALUES ('bob', 'h', repeat('x', 101), 'b@b.co')",
            "users_full_name_length",
        ),
    ];
    for (sql, constraint) in cases {
        assert_eq!(violated(refusal(pool, sql).await), constraint, "{sql}");
    }
}

#[tokio::test]
async fn account_constraints_refuse_bad_rows() {
    let db = TestDb::new().await;
    let pool = db.pool();
    funded_account(&db.store, "alice", Currency::Usd, 0).await;

    // Through the store: a second USD account for alice, an account for nobody.
    assert!(matches!(
        db.store
            .create_account(&username("alice"), Currency::Usd)
            .await,
        Err(StoreError::AlreadyExists(Unique::AccountCurrency))
    ));
    assert!(matches!(
        db.store
            .create_account(&username("nobody"), Currency::Usd)
            .await,
        Err(StoreError::NotFound(Entity::User))
    ));

    let cases: [(&'static str, &str); 11] = [
        (
            "INSERT INTO accounts (owner, currency) VALUES ('alice', 'XXX')",
            "accounts_currency_fkey",
        ),
        (
            "INSERT INTO accounts (owner, currency, balance) VALUES ('alice', 'EUR', -1)",
            "accounts_balance_within_limit",
        ),
        (
            "INSERT INTO accounts (owner, currency, kind) VALUES ('alice', 'EUR', 'vault')",
            "accounts_kind_valid",
        ),
        (
            "INSERT INTO accounts (owner, currency, status) VALUES ('alice', 'EUR', 'asleep')",
            "accounts_status_valid",
        ),
        (
            "INSERT INTO accounts (owner, currency, balance, overdraft_limit) \
             VALUES ('alice', 'EUR', 5, -1)",
            "accounts_overdraft_limit_nonnegative",
        ),
        (
            "INSERT INTO accounts (owner, currency, balance, overdraft_limit) \
             VALUES ('alice', 'EUR', -101, 100)",
            "accounts_balance_within_limit",
        ),
        (
            "INSERT INTO accounts (owner, currency, balance, status, closed_at) \
             VALUES ('alice', 'EUR', 5, 'closed', now())",
            "accounts_closed_empty",
        ),
        (
            "INSERT INTO accounts (owner, currency, status) VALUES ('alice', 'EUR', 'closed')",
            "accounts_closed_at_when_closed",
        ),
        (
            "INSERT INTO accounts (owner, currency, status, closed_at, holds_pending) \
             VALUES ('alice', 'EUR', 'closed', now(), 5)",
            "accounts_closed_without_holds",
        ),
        (
            "INSERT INTO accounts (owner, currency, holds_pending) VALUES ('alice', 'EUR', -1)",
            "accounts_holds_pending_nonnegative",
        ),
        (
            "UPDATE accounts SET status = 'frozen' WHERE kind = 'settlement'",
            "accounts_settlement_uncontrolled",
        ),
    ];
    for (sql, constraint) in cases {
        assert_eq!(violated(refusal(pool, sql).await), constraint, "{sql}");
    }
    // A customer balance may not go below zero even by a direct update ...
    assert_eq!(
        violated(
            refusal(
                pool,
                "UPDATE accounts SET balance = -1 WHERE owner = 'alice'"
            )
            .await
        ),
        "accounts_balance_within_limit"
    );
    // ... but as far as its overdraft limit allows ...
    sqlx::query("UPDATE accounts SET overdraft_limit = 10, balance = -10 WHERE owner = 'alice'")
        .execute(pool)
        .await
        .expect("a balance down to minus the limit");
    // ... and closing is final.
    sqlx::query("UPDATE accounts SET balance = 0, status = 'closed', closed_at = now() WHERE owner = 'alice'")
        .execute(pool)
        .await
        .expect("an empty account closes");
    assert_eq!(
        violated(
            refusal(
                pool,
                "UPDATE accounts SET status = 'active' WHERE owner = 'alice'"
            )
            .await
        ),
        "accounts_closed_is_final"
    );
    // ... while the bank's settlement accounts may.
    sqlx::query("UPDATE accounts SET balance = -5 WHERE kind = 'settlement' AND currency = 'EUR'")
        .execute(pool)
        .await
        .expect("settlement balances may be negative");
}

#[tokio::test]
async fn transfer_and_entry_constraints_refuse_bad_rows() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let a = funded_account(&db.store, "alice", Currency::Usd, 100).await;
    let b = funded_account(&db.store, "bob", Currency::Usd, 0).await;
    db.store
        .transfer(&new_transfer(a.id, b.id, 10, Currency::Usd), None)
        .await
        .unwrap();
    assert_eq!(
        violated(refusal(pool, "INSERT INTO transfers (from_account_id, to_account_id, amount, currency) SELECT min(id), max(id), 0, 'USD' FROM accounts WHERE kind = 'customer'").await),
        "transfers_amount_positive"
    );
    assert_eq!(
        violated(refusal(pool, "INSERT INTO transfers (from_account_id, to_account_id, amount, currency) SELECT min(id), max(id), -3, 'USD' FROM accounts WHERE kind = 'customer'").await),
        "transfers_amount_positive"
    );
    assert!(matches!(
        refusal(pool, "INSERT INTO transfers (from_account_id, to_account_id, amount, currency) SELECT min(id), min(id), 3, 'USD' FROM accounts WHERE kind = 'customer'").await,
        StoreError::SameAccount
    ));
    assert!(matches!(
        refusal(pool, "INSERT INTO transfers (from_account_id, to_account_id, amount, currency) SELECT min(id), 999999, 3, 'USD' FROM accounts").await,
        StoreError::NotFound(Entity::Account)
    ));
    assert_eq!(
        violated(refusal(pool, "INSERT INTO transfers (from_account_id, to_account_id, amount, currency) SELECT min(id), max(id), 3, 'XYZ' FROM accounts WHERE kind = 'customer'").await),
        "transfers_currency_fkey"
    );
    assert_eq!(
        violated(refusal(pool, "INSERT INTO entries (account_id, transfer_id, amount, balance_after) SELECT min(a.id), max(t.id), 0, 0 FROM accounts a, transfers t").await),
        "entries_amount_nonzero"
    );
    // A second entry for the same account in the same transfer.
    assert_eq!(
        violated(refusal(pool, "INSERT INTO entries (account_id, transfer_id, amount, balance_after) SELECT account_id, transfer_id, 1, 1 FROM entries LIMIT 1").await),
        "entries_transfer_account_key"
    );
    assert!(matches!(
        refusal(pool, "INSERT INTO entries (account_id, transfer_id, amount, balance_after) SELECT min(id), 999999, 1, 1 FROM accounts").await,
        StoreError::NotFound(Entity::Transfer)
    ));
}

#[tokio::test]
async fn hold_constraints_refuse_bad_rows() {
    let db = TestDb::new().await;
    let pool = db.pool();
    let a = funded_account(&db.store, "alice", Currency::Usd, 100).await;
    let b = funded_account(&db.store, "bob", Currency::Usd, 0).await;
    let insert = |columns: &str, values: &str| {
        format!(
            "INSERT INTO holds (from_account_id, to_account_id, currency, expires_at, {columns}) \
             VALUES ({}, {}, 'USD', now() + interval '1 hour', {values})",
            a.id, b.id
        )
    };
    let cases = [
        (insert("amount", "0"), "holds_amount_positive"),
        (
            insert("amount, status, resolved_at", "5, 'held', now()"),
            "holds_status_valid",
        ),
        (
            insert("amount, status, resolved_at", "5, 'captured', now()"),
            "holds_captured_amount_valid",
        ),
        (
            insert(
                "amount, status, captured_amount, resolved_at",
                "5, 'captured', 6, now()",
            ),
            "holds_captured_amount_valid",
        ),
        (
            insert("amount, captured_amount", "5, 5"),
            "holds_captured_amount_valid",
        ),
        (
            insert("amount, status", "5, 'voided'"),
            "holds_resolved_when_final",
        ),
        (
            insert("amount, resolved_at", "5, now()"),
            "holds_resolved_when_final",
        ),
        (
            insert("amount, created_at", "5, now() + interval '2 hours'"),
            "holds_expiry_after_creation",
        ),
        (
            insert("amount, reference", "5, ''"),
            "holds_reference_format",
        ),
        (
            insert("amount, reference", "5, E'a\\tb'"),
            "holds_reference_format",
        ),
        (
            insert("amount, metadata", "5, '[1]'"),
            "holds_metadata_object",
        ),
    ];
    for (sql, constraint) in cases {
        assert_eq!(
            violated(refusal(pool, sqlx::AssertSqlSafe(sql.clone())).await),
            constraint,
            "{sql}"
        );
    }
    let unknown_currency = format!(
        "INSERT INTO holds (from_account_id, to_account_id, amount, currency, expires_at) \
         VALUES ({}, {}, 5, 'XYZ', now() + interval '1 hour')",
        a.id, b.id
    );
    assert_eq!(
        violated(refusal(pool, sqlx::AssertSqlSafe(unknown_currency)).await),
        "holds_currency_fkey"
    );
    let same = format!(
        "INSERT INTO holds (from_account_id, to_account_id, amount, currency, expires_at) \
         VALUES ({0}, {0}, 5, 'USD', now() + interval '1 hour')",
        a.id
    );
    assert!(matches!(
        refusal(pool, sqlx::AssertSqlSafe(same)).await,
        StoreError::SameAccount
    ));
    let nowhere = format!(
        "INSERT INTO holds (from_account_id, to_account_id, amount, currency, expires_at) \
         VALUES ({}, 999999, 5, 'USD', now() + interval '1 hour')",
        a.id
    );
    assert!(matches!(
        refusal(pool, sqlx::AssertSqlSafe(nowhere)).await,
        StoreError::NotFound(Entity::Account)
    ));

    // One transfer per hold, and only a hold that exists.
    let hold: i64 =
        sqlx::query_scalar(sqlx::AssertSqlSafe(insert("amount", "5") + " RETURNING id"))
            .fetch_one(pool)
            .await
            .unwrap();
    let capture = |hold: i64| {
        format!(
            "INSERT INTO transfers (from_account_id, to_account_id, amount, currency, hold_id) \
             VALUES ({}, {}, 5, 'USD', {hold})",
            a.id, b.id
        )
    };
    sqlx::query(sqlx::AssertSqlSafe(capture(hold)))
        .execute(pool)
        .await
        .unwrap();
    assert_eq!(
        violated(refusal(pool, sqlx::AssertSqlSafe(capture(hold))).await),
        "transfers_hold_key"
    );
    assert!(matches!(
        refusal(pool, sqlx::AssertSqlSafe(capture(999_999))).await,
        StoreError::NotFound(Entity::Hold)
    ));
}

#[tokio::test]
async fn session_verification_and_idempotency_constraints_refuse_bad_rows() {
    let db = TestDb::new().await;
    let pool = db.pool();
    create_user(&db.store, "alice").await;

    assert!(matches!(
        refusal(pool, "INSERT INTO sessions (id, username, refresh_token_hash, expires_at) VALUES (gen_random_uuid(), 'ghost', '\\x00', now())").await,
        StoreError::NotFound(Entity::User)
    ));
    assert!(matches!(
        refusal(pool, "INSERT INTO verify_emails (username, email, secret_code_hash) VALUES ('ghost', 'g@x.io', repeat('a', 64))").await,
        StoreError::NotFound(Entity::User)
    ));
    // Only a SHA-256 hex digest is ever stored, never a code.
    assert_eq!(
        violated(refusal(pool, "INSERT INTO verify_emails (username, email, secret_code_hash) VALUES ('alice', 'a@x.io', 'plain-code')").await),
        "verify_emails_secret_code_hash_sha256"
    );
    // An outbox row keeps its code exactly until it is settled, and is settled once.
    let verification = "(SELECT min(id) FROM verify_emails)";
    for (columns, values, constraint) in [
        (
            "secret_code, sent_at",
            "NULL, NULL",
            "email_outbox_code_until_settled",
        ),
        (
            "secret_code, sent_at",
            "'c', now()",
            "email_outbox_code_until_settled",
        ),
        (
            "sent_at, abandoned_at",
            "now(), now()",
            "email_outbox_settled_once",
        ),
    ] {
        let sql = format!(
            "INSERT INTO email_outbox (verify_email_id, {columns}) VALUES ({verification}, {values})"
        );
        assert_eq!(
            violated(refusal(pool, sqlx::AssertSqlSafe(sql)).await),
            constraint
        );
    }

    // A 32-byte fingerprint and exactly one outcome: a refusal here.
    let hash = "'\\x0101010101010101010101010101010101010101010101010101010101010101'";
    let insert = |key: &str, hash: &str, operation: &str, outcome: &str| {
        format!(
            "INSERT INTO idempotency_keys (username, key, request_hash, operation, transfer_id, refusal) \
             VALUES ('alice', '{key}', {hash}, '{operation}', {outcome})"
        )
    };
    sqlx::query(sqlx::AssertSqlSafe(insert(
        "k1",
        hash,
        "transfer",
        "NULL, 'insufficient_funds'",
    )))
    .execute(pool)
    .await
    .unwrap();
    let refused = |sql: String| async move { refusal(pool, sqlx::AssertSqlSafe(sql)).await };
    assert!(matches!(
        refused(insert("k1", hash, "transfer", "NULL, 'insufficient_funds'")).await,
        StoreError::AlreadyExists(Unique::IdempotencyKey)
    ));
    for (sql, constraint) in [
        (
            insert("", hash, "transfer", "NULL, 'x'"),
            "idempotency_keys_key_length",
        ),
        (
            insert("k2", "'\\x01'", "transfer", "NULL, 'x'"),
            "idempotency_keys_request_hash_sha256",
        ),
        (
            insert("k2", hash, "refund", "NULL, 'x'"),
            "idempotency_keys_operation_known",
        ),
        (
            insert("k2", hash, "transfer", "NULL, NULL"),
            "idempotency_keys_one_outcome",
        ),
    ] {
        assert_eq!(violated(refused(sql).await), constraint);
    }
    // A record naming a transfer that does not exist is a bug, not a client's mistake.
    assert_eq!(
        violated(refused(insert("k2", hash, "transfer", "999999, NULL")).await),
        "idempotency_keys_transfer_fkey"
    );
}

#[tokio::test]
async fn the_currency_table_matches_the_domain_list() {
    let db = TestDb::new().await;
    let rows: Vec<(String, i16)> =
        sqlx::query_as("SELECT code, exponent FROM currencies ORDER BY code")
            .fetch_all(db.pool())
            .await
            .unwrap();
    let domain: Vec<(String, i16)> = Currency::ALL
        .iter()
        .map(|c| (c.code().to_owned(), i16::from(c.exponent())))
        .collect();
    assert_eq!(rows, domain);

    // And the bank holds exactly one settlement account in each, starting at zero.
    let settlement: Vec<(String, i64)> = sqlx::query_as(
        "SELECT currency, balance FROM accounts WHERE owner = 'simplebank' AND kind = 'settlement' ORDER BY currency",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    let expected: Vec<(String, i64)> = Currency::ALL
        .iter()
        .map(|c| (c.code().to_owned(), 0))
        .collect();
    assert_eq!(settlement, expected);
}
