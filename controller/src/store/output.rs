//! A target's output as the store keeps it: its steps, protobuf-encoded
//! as a `StepOutputs`, and beyond a line or two compressed with zstd
//! (`muster_proto::compress_steps`). A worker that the lease tells so
//! sends long output already compressed, and the frame is kept as it
//! came once checked ([`Reported`](super::ingest::Reported)); output sent
//! plain is compressed here, before the store's one writer thread sees
//! it (BENCHMARKS.md, "Compressed output").
//!
//! A stored value is one of:
//! - a `StepOutputs` encoding, which is empty or starts with field 1's tag
//!   (0x0a): every value written before compression, and short output;
//! - a zstd frame of one, which starts with zstd's magic number
//!   (28 b5 2f fd), never a valid `StepOutputs` encoding's first bytes.
//!
//! No migration marks the change: a controller without it would read a
//! frame as no output, but none was released that shares a store (0.1
//! had one controller on SQLite, and `copy-store` brings its plain values).
//! A later change of format should come with a migration, so that older
//! controllers step aside (README, "Upgrading").

use muster_proto::ZSTD_MAGIC;
use muster_proto::v1::{StepOutput, StepOutputs};
use prost::Message as _;

/// `steps` as the store keeps them.
pub fn encode(steps: Vec<StepOutput>) -> Vec<u8> {
    let encoded = StepOutputs { steps }.encode_to_vec();
    // Short or incompressible: as it is, which reads the same.
    muster_proto::compress_encoded(&encoded).unwrap_or(encoded)
}

/// The steps of a stored value; none, with a warning, if it cannot be
/// read (a value is written only by [`encode`] or checked as a frame of
/// steps, so that is a damaged store). A frame is expanded as a report's
/// is ([`muster_proto::expand_steps`]): every one written states its size,
/// and none holds more than a report may carry.
pub fn decode(stored: &[u8]) -> Vec<StepOutput> {
    let steps = if stored.starts_with(&ZSTD_MAGIC) {
        muster_proto::expand_steps(stored, muster_proto::MAX_REPORT_BYTES)
            .map(|(steps, _)| steps)
            .map_err(|e| e.to_string())
    } else {
        StepOutputs::decode(stored)
            .map(|outputs| outputs.steps)
            .map_err(|e| e.to_string())
    };
    match steps {
        Ok(steps) => steps,
        Err(error) => {
            tracing::warn!(
                bytes = stored.len(),
                error,
                "a target's stored output cannot be read; it reads as none"
            );
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use muster_proto::COMPRESS_FROM;

    use super::*;

    fn step(stdout: &str) -> StepOutput {
        StepOutput {
            name: "aws:runShellScript".into(),
            stdout: stdout.into(),
            ..Default::default()
        }
    }

    #[test]
    fn long_output_is_kept_compressed_and_a_line_as_it_is_and_both_read_back() {
        let log = "Updated: openssl-libs-3.0.8-1.amzn2023.0.12 x86_64\n".repeat(60);
        let stored = encode(vec![step(&log), step("done\n")]);
        assert!(stored.starts_with(&ZSTD_MAGIC), "{:?}", &stored[..8]);
        assert!(
            stored.len() < log.len() / 10,
            "{} bytes kept as {}",
            log.len(),
            stored.len()
        );
        assert_eq!(decode(&stored), [step(&log), step("done\n")]);

        let line = encode(vec![step("up to date\n")]);
        assert_eq!(
            line,
            StepOutputs {
                steps: vec![step("up to date\n")]
            }
            .encode_to_vec()
        );
        assert_eq!(decode(&line), [step("up to date\n")]);
        assert_eq!(decode(&encode(Vec::new())), []);
    }

    #[test]
    fn output_stored_before_compression_reads_as_it_did() {
        let log = "Updated: kernel-6.1.112-122.189.amzn2023 x86_64\n".repeat(60);
        let plain = StepOutputs {
            steps: vec![step(&log)],
        }
        .encode_to_vec();
        assert_eq!(plain[0], 0x0a, "a StepOutputs encoding starts with field 1's tag");
        assert_eq!(decode(&plain), [step(&log)]);
    }

    #[test]
    fn output_of_a_line_or_two_is_kept_as_it_is_however_well_it_would_compress() {
        let short = "=".repeat(COMPRESS_FROM - 40);
        let stored = encode(vec![step(&short)]);
        assert!(stored.len() < COMPRESS_FROM);
        assert_eq!(
            stored,
            StepOutputs {
                steps: vec![step(&short)]
            }
            .encode_to_vec()
        );
        let longer = "=".repeat(COMPRESS_FROM);
        assert!(encode(vec![step(&longer)]).starts_with(&ZSTD_MAGIC));
    }

    #[test]
    fn a_damaged_value_reads_as_no_output() {
        let mut stored = encode(vec![step(&"Updated: bash-5.2.15\n".repeat(40))]);
        stored.truncate(stored.len() / 2);
        assert_eq!(decode(&stored), []);
    }
}
