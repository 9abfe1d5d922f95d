//! The HTTP API, black-box: the real `Application` on port 0 with a fresh database.

mod abuse;
pub mod authorization;
mod compat;
mod controls;
mod errors;
mod events;
mod flows;
mod history;
mod holds;
mod idempotency;
mod openapi;
mod reversals;
mod sessions;
mod telemetry;
mod verification;
