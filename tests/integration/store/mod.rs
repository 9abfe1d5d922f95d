//! The store against a real PostgreSQL.

mod concurrency;
mod constraints;
mod group_commit;
mod idempotency;
mod migrations;
mod pagination;
mod rules_agree;
mod sessions_and_updates;
mod transfers;
mod users_and_accounts;
mod verification;
