//! gRPC contracts between agents, the controller and consoles: `cinta/v1/agent.proto` and `cinta/v1/console.proto`, compiled at build time without a system protoc.

/// Package `cinta.v1`.
pub mod v1 {
    tonic::include_proto!("cinta.v1");
}

/// The encoded file descriptor set, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/cinta_descriptor.bin"));
