//! Generates the muster.v1 code with tonic/prost. protoc comes from
//! `protoc-bin-vendored`, so a build needs nothing installed on the system.

use std::path::{Path, PathBuf};

const PROTOS: [&str; 4] = [
    "proto/muster/v1/common.proto",
    "proto/muster/v1/campaign.proto",
    "proto/muster/v1/schedule.proto",
    "proto/muster/v1/worker.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    // Ordered maps encode deterministically, so a spec's SHA-256 (audit,
    // client-token idempotency) does not depend on hash order.
    config.btree_map(["."]);
    // Each message knows its full name (prost::Name), to find its descriptor
    // for the proto3 JSON mapping.
    config.enable_type_names();
    let include = protoc_bin_vendored::include_path()?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let protos: Vec<&Path> = PROTOS.iter().map(Path::new).collect();
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("muster_v1_descriptor.bin"))
        .compile_with_config(config, &protos, &[Path::new("proto"), include.as_path()])?;
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    Ok(())
}
