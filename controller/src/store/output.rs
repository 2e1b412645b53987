//! A target's output as the store keeps it: its steps, protobuf-encoded,
//! and beyond a line or two compressed with zstd. A patch run's log is
//! 1-8 KiB of text that compresses about 2-4 times at zstd's fastest
//! level; the store's writer is a single thread whose cost grows with
//! the bytes it writes, so the compression is done before it, on the
//! thread that took the report (BENCHMARKS.md, "Compressed output").
//!
//! A stored value is one of:
//! - a `Steps` encoding, which is empty or starts with field 1's tag
//!   (0x0a): every value written before compression, and short output;
//! - a zstd frame of one, which starts with zstd's magic number
//!   (28 b5 2f fd), never a valid `Steps` encoding's first bytes.
//!
//! No migration marks the change: a controller without it would read a
//! frame as no output, but none was released that shares a store (0.1
//! had one controller on SQLite, and `copy-store` brings its plain values).
//! A later change of format should come with a migration, so that older
//! controllers step aside (README, "Upgrading").

use std::cell::RefCell;

use muster_proto::v1::StepOutput;
use prost::Message as _;

/// Keeps a list of steps in one column.
#[derive(Clone, PartialEq, prost::Message)]
struct Steps {
    #[prost(message, repeated, tag = "1")]
    steps: Vec<StepOutput>,
}

/// Output up to this many encoded bytes is kept as it is: a line or two
/// gains little and would pay a frame's 10-odd bytes of header.
const COMPRESS_FROM: usize = 256;

/// zstd's fastest regular level: on a patch run's log of 2.6-8 KiB, 99%
/// of level 3's ratio in 85% of its time; deflate's fastest level took
/// twice as long for less.
const LEVEL: i32 = 1;

const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

thread_local! {
    /// A compression context per thread: making one costs more than
    /// compressing a few KiB with it.
    static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
}

/// `steps` as the store keeps them.
pub fn encode(steps: Vec<StepOutput>) -> Vec<u8> {
    let encoded = Steps { steps }.encode_to_vec();
    if encoded.len() < COMPRESS_FROM {
        return encoded;
    }
    let compressed = COMPRESSOR.with_borrow_mut(|compressor| {
        if compressor.is_none() {
            *compressor = zstd::bulk::Compressor::new(LEVEL).ok();
        }
        compressor.as_mut()?.compress(&encoded).ok()
    });
    match compressed {
        Some(frame) if frame.len() < encoded.len() => frame,
        // Incompressible (or no context): as it is, which reads the same.
        _ => encoded,
    }
}

/// The steps of a stored value; none, with a warning, if it cannot be
/// read (a value is written only by [`encode`], so that is a damaged
/// store).
pub fn decode(stored: &[u8]) -> Vec<StepOutput> {
    let steps = if stored.starts_with(&ZSTD_MAGIC) {
        zstd::stream::decode_all(stored)
            .map_err(|e| e.to_string())
            .and_then(|encoded| Steps::decode(encoded.as_slice()).map_err(|e| e.to_string()))
    } else {
        Steps::decode(stored).map_err(|e| e.to_string())
    };
    match steps {
        Ok(steps) => steps.steps,
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
            Steps {
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
        let plain = Steps {
            steps: vec![step(&log)],
        }
        .encode_to_vec();
        assert_eq!(plain[0], 0x0a, "a Steps encoding starts with field 1's tag");
        assert_eq!(decode(&plain), [step(&log)]);
    }

    #[test]
    fn output_of_a_line_or_two_is_kept_as_it_is_however_well_it_would_compress() {
        let short = "=".repeat(COMPRESS_FROM - 40);
        let stored = encode(vec![step(&short)]);
        assert!(stored.len() < COMPRESS_FROM);
        assert_eq!(
            stored,
            Steps {
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
