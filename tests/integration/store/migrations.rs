//! Migrations apply, revert completely, and apply again.

use simplebank::store::MIGRATOR;

use crate::helpers::TestDb;

async fn tables(db: &TestDb) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename",
    )
    .fetch_all(db.pool())
    .await
    .unwrap()
}

#[tokio::test]
async fn migrations_are_reversible() {
    let db = TestDb::unmigrated(2).await;
    MIGRATOR.run(db.pool()).await.unwrap();
    assert_eq!(
        tables(&db).await,
        [
            "_sqlx_migrations",
            "accounts",
            "currencies",
            "email_outbox",
            "entries",
            "idempotency_keys",
            "sessions",
            "transfers",
            "users",
            "verify_emails"
        ]
    );

    MIGRATOR.undo(db.pool(), 0).await.unwrap();
    assert_eq!(tables(&db).await, ["_sqlx_migrations"]);

    MIGRATOR.run(db.pool()).await.unwrap();
    // Running again is a no-op.
    MIGRATOR.run(db.pool()).await.unwrap();
    let settlement: i64 =
        sqlx::query_scalar("SELECT count(*) FROM accounts WHERE kind = 'settlement'")
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert_eq!(settlement, simplebank::domain::Currency::ALL.len() as i64);
}
