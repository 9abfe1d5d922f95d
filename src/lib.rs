//! simplebank: a banking server. Users own accounts; money moves between them only by transfers,
//! each recorded as one transfer row and two entries (double entry) in PostgreSQL, atomically.
//!
//! The map of the house, from the edge inwards:
//!
//! - [`config`] reads settings once at start-up (defaults < `app.toml` < environment); secrets
//!   stay wrapped. [`telemetry`] sets up structured logging (pretty or JSON).
//! - [`startup`] builds the `Application` that `simplebank serve` and the black-box tests run:
//!   both listeners, the background tasks, one shutdown signal for all of them, and the
//!   `--ready-file` scripts read the bound ports from.
//! - [`http`] is the axum JSON API (with the OpenAPI document, Swagger UI, the simple_bank
//!   compatibility routes, probes and `/metrics`); [`grpc`] is the tonic API over the same
//!   service, with reflection and health. Both are thin: parse into domain values, call the
//!   service, shape the answer.
//! - [`service`] is `BankService`: one method per operation, where every authorization rule
//!   lives, plus admission (request slots, deadline, database up) and login throttling; it
//!   returns `ServiceError`s whose `code()` is a row of the one error table.
//! - [`auth`] makes and verifies PASETO tokens and hashes passwords; it yields the `Principal`
//!   (who is calling) that the service authorizes.
//! - [`domain`] holds the value types every input is parsed into exactly once (`Username`,
//!   `Amount`, `Currency`, ...) and the records the store returns. A value of one of these types
//!   is valid by construction.
//! - [`store`] owns every SQL statement, including the transfer transaction (both account rows
//!   locked in ascending id order, rules checked under the locks) and group commit (unkeyed
//!   movements under load sharing one transaction). It turns constraint names and SQLSTATEs into
//!   [`store::StoreError`] variants, never text.
//! - [`mail`] sends the verification emails queued in the outbox table (SMTP; in development
//!   the log and `.mail/`), with retries; [`background`] purges expired idempotency keys;
//!   [`metrics`] holds the Prometheus series both transports record into.

pub mod auth;
pub mod background;
pub mod config;
pub mod domain;
pub mod events;
pub mod grpc;
pub mod http;
pub mod mail;
pub mod metrics;
pub mod outbox;
pub mod service;
pub mod startup;
pub mod store;
pub mod telemetry;
