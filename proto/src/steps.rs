//! A target's output compressed: one zstd frame of a [`StepOutputs`], as a
//! worker sends it (`TargetResult.compressed_steps`) and the controller's
//! store keeps it. A patch run's log is 1-8 KiB of text that compresses
//! 2-4 times at zstd's fastest level; compressing it was a third of the
//! controller's CPU during an ingest (BENCHMARKS.md, "Compressed output"),
//! so the workers, which scale out, do it and the controller checks it.

use std::cell::RefCell;

use prost::Message as _;

use crate::v1::{StepOutput, StepOutputs, TargetResult};

/// Output up to this many encoded bytes is kept as it is: a line or two
/// gains little and would pay a frame's 10-odd bytes of header.
pub const COMPRESS_FROM: usize = 256;

/// zstd's fastest regular level: on a patch run's log of 2.6-8 KiB, 99%
/// of level 3's ratio in 85% of its time; deflate's fastest level took
/// twice as long for less.
const LEVEL: i32 = 1;

/// The first bytes of every zstd frame, and never of a `StepOutputs`
/// encoding (which is empty or starts with field 1's tag, 0x0a).
pub const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

thread_local! {
    /// A context per thread: making one costs more than compressing (or
    /// expanding) a few KiB with it.
    static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// `steps` as one zstd frame of a [`StepOutputs`], when that is worth it:
/// none for output of a line or two, or that does not get shorter.
pub fn compress_steps(steps: &[StepOutput]) -> Option<Vec<u8>> {
    let encoded = StepOutputs { steps: steps.to_vec() }.encode_to_vec();
    compress_encoded(&encoded)
}

/// Moves the steps of `result` into `compressed_steps` when that is worth
/// it (see [`compress_steps`]), as a worker sends them to a controller
/// that takes them.
pub fn compress_result(result: &mut TargetResult) {
    let outputs = StepOutputs {
        steps: std::mem::take(&mut result.steps),
    };
    match compress_encoded(&outputs.encode_to_vec()) {
        Some(frame) => result.compressed_steps = frame,
        None => result.steps = outputs.steps,
    }
}

/// The frame of an encoded [`StepOutputs`] (see [`compress_steps`]).
pub fn compress_encoded(encoded: &[u8]) -> Option<Vec<u8>> {
    if encoded.len() < COMPRESS_FROM {
        return None;
    }
    let frame = COMPRESSOR.with_borrow_mut(|compressor| {
        if compressor.is_none() {
            *compressor = zstd::bulk::Compressor::new(LEVEL).ok();
        }
        compressor.as_mut()?.compress(encoded).ok()
    })?;
    (frame.len() < encoded.len()).then_some(frame)
}

/// Why a frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepsError {
    #[error("not one zstd frame")]
    NotAFrame,
    #[error("the frame does not state its content size")]
    SizeUnstated,
    #[error("the frame holds {size} bytes; at most {limit} here")]
    TooLarge { size: u64, limit: usize },
    #[error("the frame cannot be expanded: {0}")]
    Corrupt(String),
    #[error("the frame does not hold a StepOutputs: {0}")]
    NotSteps(String),
}

/// The bytes `frame` states it expands to; 0 when it states none (which
/// [`expand_steps`] refuses), for sizing the work before doing it.
pub fn stated_size(frame: &[u8]) -> usize {
    match zstd::zstd_safe::get_frame_content_size(frame) {
        Ok(Some(size)) => usize::try_from(size).unwrap_or(usize::MAX),
        _ => 0,
    }
}

/// The steps in `frame`, and how many bytes they took expanded. The frame
/// must be a single zstd frame that states its content size, at most
/// `limit` bytes: nothing larger is ever allocated for it.
pub fn expand_steps(frame: &[u8], limit: usize) -> Result<(Vec<StepOutput>, usize), StepsError> {
    if !frame.starts_with(&ZSTD_MAGIC) || zstd::zstd_safe::find_frame_compressed_size(frame) != Ok(frame.len()) {
        return Err(StepsError::NotAFrame);
    }
    let size = match zstd::zstd_safe::get_frame_content_size(frame) {
        Ok(Some(size)) => size,
        Ok(None) => return Err(StepsError::SizeUnstated),
        Err(_) => return Err(StepsError::NotAFrame),
    };
    if size > limit as u64 {
        return Err(StepsError::TooLarge { size, limit });
    }
    let encoded = DECOMPRESSOR.with_borrow_mut(|decompressor| {
        if decompressor.is_none() {
            *decompressor = Some(zstd::bulk::Decompressor::new().map_err(|e| StepsError::Corrupt(e.to_string()))?);
        }
        let decompressor = decompressor.as_mut().expect("made above");
        // The capacity is the stated size: a frame holding more fails.
        decompressor
            .decompress(frame, size as usize)
            .map_err(|e| StepsError::Corrupt(e.to_string()))
    })?;
    if encoded.len() as u64 != size {
        return Err(StepsError::Corrupt(format!("{} bytes, {size} stated", encoded.len())));
    }
    let steps = StepOutputs::decode(encoded.as_slice()).map_err(|e| StepsError::NotSteps(e.to_string()))?;
    Ok((steps.steps, encoded.len()))
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

    fn log() -> String {
        (0..60)
            .map(|i| format!("Updated: openssl-libs-3.0.{i}-1.amzn2023.0.12 x86_64\n"))
            .collect()
    }

    #[test]
    fn a_log_goes_as_a_frame_that_expands_to_the_same_steps_and_a_line_goes_as_it_is() {
        let steps = vec![step(&log()), step("done\n")];
        let frame = compress_steps(&steps).expect("a log is worth compressing");
        assert!(frame.starts_with(&ZSTD_MAGIC));
        let plain = StepOutputs { steps: steps.clone() }.encoded_len();
        assert!(frame.len() * 2 < plain, "{plain} bytes went as {}", frame.len());
        assert_eq!(stated_size(&frame), plain);
        assert_eq!(expand_steps(&frame, plain), Ok((steps, plain)));
        assert_eq!(compress_steps(&[step("up to date\n")]), None);
        assert_eq!(compress_steps(&[]), None);
    }

    #[test]
    fn a_frame_is_refused_when_it_would_expand_past_the_limit_or_is_not_one_frame_of_steps() {
        let steps = vec![step(&log())];
        let frame = compress_steps(&steps).unwrap();
        let plain = StepOutputs { steps }.encoded_len();
        assert_eq!(
            expand_steps(&frame, plain - 1),
            Err(StepsError::TooLarge {
                size: plain as u64,
                limit: plain - 1
            })
        );
        let twice = [frame.clone(), frame.clone()].concat();
        assert_eq!(expand_steps(&twice, usize::MAX), Err(StepsError::NotAFrame));
        assert_eq!(
            expand_steps(&frame[..frame.len() - 3], usize::MAX),
            Err(StepsError::NotAFrame)
        );
        assert_eq!(expand_steps(b"\x0a\x02hi", usize::MAX), Err(StepsError::NotAFrame));
        // A frame without its size, as a stream compressor writes one.
        let mut unsized_frame = Vec::new();
        let mut encoder = zstd::stream::Encoder::new(&mut unsized_frame, 1).unwrap();
        encoder.include_contentsize(false).unwrap();
        std::io::Write::write_all(
            &mut encoder,
            &StepOutputs {
                steps: vec![step(&log())],
            }
            .encode_to_vec(),
        )
        .unwrap();
        encoder.finish().unwrap();
        assert_eq!(expand_steps(&unsized_frame, usize::MAX), Err(StepsError::SizeUnstated));
        // A frame of something else.
        let junk = zstd::bulk::compress(&[0xff; 300], 1).unwrap();
        assert!(matches!(expand_steps(&junk, usize::MAX), Err(StepsError::NotSteps(_))));
    }
}
