//! The gRPC API, black-box: the same `Application` (see `harness`), driven by a tonic client.

mod authorization;
mod boundaries;
mod limits;
mod parity;
mod reflection;
pub mod rpcs;
