//! Beacon's gRPC contracts, generated at build time from `proto/`.

#![allow(clippy::all, missing_debug_implementations)]

pub mod analytics {
    pub mod v1 {
        tonic::include_proto!("beacon.analytics.v1");
    }
}

/// The encoded file descriptor set (for gRPC reflection).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/beacon_descriptor.bin"));

mod convert;
