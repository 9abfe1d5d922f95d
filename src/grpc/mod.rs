//! The gRPC API (tonic) over the same `BankService` as the HTTP API: the same parsers, the same
//! token verifier, the same authorization (in the service) and the same error table.

mod api;
mod convert;
mod error;
mod guard;
mod rpc_log;

pub use api::GrpcApi;
pub use error::{ERROR_DOMAIN, code_of, to_status};
pub use guard::Guarded;
pub use rpc_log::RpcLogLayer;

/// The code generated from `proto/simplebank/v1/simplebank.proto` by `build.rs`.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod pb {
    tonic::include_proto!("simplebank.v1");

    /// The compiled proto files, served by reflection so evans and grpcurl need no `.proto`.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/simplebank_descriptor.bin"));
}
