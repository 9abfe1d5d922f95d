//! Black-box tests of the store against a real PostgreSQL (`DB_SOURCE`; `make test` starts one).
//! Each test creates its own database, so tests run in parallel and in any order.
//!
//! One binary for all of them: one link step, one place for the helpers.

mod helpers;

mod concurrency;
mod constraints;
mod migrations;
mod pagination;
mod sessions_and_updates;
mod transfers;
mod users_and_accounts;
