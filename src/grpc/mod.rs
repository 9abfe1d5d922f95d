//! The gRPC API (tonic) over the same `BankService` as the HTTP API.

/// The code generated from `proto/simplebank/v1/simplebank.proto` by `build.rs`.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod pb {
    tonic::include_proto!("simplebank.v1");

    /// The compiled proto files, served by reflection so evans and grpcurl need no `.proto`.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/simplebank_descriptor.bin"));
}
