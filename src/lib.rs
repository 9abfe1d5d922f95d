//! simplebank: a banking server. Users own accounts; money moves between them only by transfers,
//! each recorded as one transfer row and two entries (double entry) in PostgreSQL, atomically.
//!
//! The map of the house, from the edge inwards:
//!
//! - [`config`] reads settings once at start-up; secrets stay wrapped.
//! - [`telemetry`] sets up structured logging.
//! - [`auth`] makes and verifies PASETO tokens and hashes passwords; it yields the `Principal`
//!   (who is calling) that the service authorizes.
//! - [`domain`] holds the value types every input is parsed into exactly once (`Username`,
//!   `Amount`, `Currency`, ...) and the records the store returns. A value of one of these types
//!   is valid by construction.
//! - [`store`] owns every SQL statement, including the transfer transaction: both account rows
//!   locked in ascending id order, rules checked under the locks, all writes in one statement.
//!   It turns constraint names and SQLSTATEs into [`store::StoreError`] variants, never text.
//!
//! - [`service`] is `BankService`: one method per operation, where every authorization rule
//!   lives, returning `ServiceError`s whose `code()` is a row of the one error table.
//!
//! - [`http`] is the axum JSON API over the service; [`startup`] builds the `Application` that
//!   `simplebank serve` and the black-box tests run.
//!
//! The gRPC adapter joins `http` over the same service (see `doc/architecture.md`).

pub mod auth;
pub mod background;
pub mod config;
pub mod domain;
pub mod grpc;
pub mod http;
pub mod mail;
pub mod metrics;
pub mod service;
pub mod startup;
pub mod store;
pub mod telemetry;
