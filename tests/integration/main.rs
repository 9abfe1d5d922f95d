//! Black-box tests against a real PostgreSQL (`DB_SOURCE`; `make test` starts one). Each test
//! creates its own database, so tests run in parallel and in any order.
//!
//! One binary for all of them: one link step, one place for the helpers.
//! - `helpers`: a fresh database per test, ledger snapshots and invariants.
//! - `harness`: `TestApp`, the production `Application` on port 0 over a fresh database, with
//!   an HTTP client; the gRPC tests connect to the same server. `TEST_LOG=1` (or a filter such
//!   as `TEST_LOG=simplebank=debug`) shows the server's log in the output of a failing test.
//! - `store`: the store's SQL, constraints, transfer transaction and concurrency.
//! - `api`: the real `Application` on port 0, driven over HTTP.
//! - `cli`: the binary's configuration layers.
//! - `grpc`: the same, driven by a tonic client; reflection, health, and parity with HTTP.
//! - `smtp`: the SMTP sender against a scripted mail server (no database).

mod harness;
mod helpers;

mod api;
mod cli;
mod grpc;
mod smtp;
mod store;
