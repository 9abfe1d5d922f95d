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
            "event_cursors",
            "events",
            "holds",
            "idempotency_keys",
            "sessions",
            "transfers",
            "users",
            "verify_emails",
            "webhook_attempts",
            "webhook_deliveries",
            "webhook_endpoints"
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

/// `(table, column, type, nullable)` as `doc/db.dbml` declares them.
fn dbml_columns() -> Vec<(String, String, String, bool)> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/doc/db.dbml"))
        .expect("doc/db.dbml exists");
    let mut columns = Vec::new();
    let mut table: Option<String> = None;
    let mut depth = 0;
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("Table ") {
            table = Some(rest.trim_end_matches('{').trim().to_owned());
            depth = 1;
            continue;
        }
        let Some(name) = &table else { continue };
        if line.ends_with('{') {
            depth += 1;
            continue;
        }
        if line == "}" {
            depth -= 1;
            if depth == 0 {
                table = None;
            }
            continue;
        }
        if depth != 1 || line.is_empty() || line.starts_with("//") || line.starts_with("Note") {
            continue;
        }
        let mut words = line.split_whitespace();
        let (column, kind) = (words.next().unwrap(), words.next().unwrap());
        let attributes = line.split_once('[').map_or("", |(_, a)| a);
        let nullable = !(attributes.starts_with("pk") || attributes.contains("not null"));
        let kind = match kind {
            "timestamptz" => "timestamp with time zone",
            "text[]" => "ARRAY",
            other => other,
        };
        columns.push((name.clone(), column.to_owned(), kind.to_owned(), nullable));
    }
    columns.sort();
    columns
}

#[tokio::test]
async fn the_dbml_document_matches_the_migrated_schema() {
    let db = TestDb::new().await;
    let rows: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT table_name::text, column_name::text, data_type::text, is_nullable::text \
         FROM information_schema.columns \
         WHERE table_schema = 'public' AND table_name <> '_sqlx_migrations'",
    )
    .fetch_all(db.pool())
    .await
    .unwrap();
    let mut migrated: Vec<(String, String, String, bool)> = rows
        .into_iter()
        .map(|(t, c, k, n)| (t, c, k, n == "YES"))
        .collect();
    migrated.sort();
    assert_eq!(
        dbml_columns(),
        migrated,
        "doc/db.dbml and migrations/ disagree"
    );
}
