//! Black-box tests against a real PostgreSQL (`DB_SOURCE`; `make test` starts one). Each test
//! creates its own database, so tests run in parallel and in any order.
//!
//! One binary for all of them: one link step, one place for the helpers.
//! - `store`: the store's SQL, constraints, transfer transaction and concurrency.
//! - `api`: the real `Application` on port 0, driven over HTTP.
//! - `cli`: the binary's configuration layers.
//! - `grpc`: the same, driven by a tonic client; reflection, health, and parity with HTTP.
//! - `smtp`: the SMTP sender against a scripted mail server (no database).

mod helpers;

mod api;
mod cli;
mod grpc;
mod smtp;
mod store;
