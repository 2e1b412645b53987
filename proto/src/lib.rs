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

/// The worker protocol: what a worker must understand of the tasks and
/// leases a controller hands out (`LeaseTaskRequest.protocol`). A controller
/// leases only to workers of its protocol or newer.
///
/// 0 is muster 0.1. 1 (muster 0.2) added what a 0.1 worker would get wrong:
/// command sequences (`ExecuteSpec.then`), leases of cancelled campaigns
/// that may only cancel (`Lease.campaign_cancelled`), stages by tag
/// (`DiscoverSpec.report_tag_keys`), a document's own timeout
/// (`execution_timeout_seconds` 0) and `Task.source_identity`, which the
/// execution roles' trust policy requires.
///
/// Raise it with any change to those messages that an older worker would
/// run wrongly rather than not at all.
pub const WORKER_PROTOCOL: u32 = 1;

pub mod json;
mod report;
mod status;
mod task_ref;

pub use report::{MAX_REPORT_BYTES, clip_output, split_by_size};
pub use status::{ALL_CAMPAIGN_STATES, ALL_TARGET_STATUSES};
pub use task_ref::{TaskRefError, decode_task_ref, encode_task_ref};
