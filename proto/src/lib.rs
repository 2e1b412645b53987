//! The muster.v1 API, generated from `proto/muster/v1/*.proto`.
//!
//! The `.proto` files are the reference for clients in other languages; this
//! crate is the Rust view of them, plus the small conversions every muster
//! binary needs (TaskRef encoding, status helpers).

#![allow(clippy::large_enum_variant, clippy::doc_lazy_continuation)]

/// Generated messages and services of package `muster.v1`.
pub mod v1 {
    tonic::include_proto!("muster.v1");

    /// The encoded `FileDescriptorSet` of muster.v1, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("muster_v1_descriptor");
}

pub mod json;
mod patch;
mod protocol;
mod report;
mod schedule;
mod status;
mod steps;
mod task_ref;

pub use patch::{PATCH_DOCUMENTS, PatchChoice, reports_patch_state};
pub use protocol::WORKER_PROTOCOL;
pub use report::{MAX_REPORT_BYTES, clip_output, split_by_size};
pub use status::{ALL_CAMPAIGN_STATES, ALL_TARGET_STATUSES};
pub use steps::{
    COMPRESS_FROM, StepsError, ZSTD_MAGIC, compress_encoded, compress_result, compress_steps, expand_steps, stated_size,
};
pub use task_ref::{TaskRefError, decode_task_ref, encode_task_ref};
