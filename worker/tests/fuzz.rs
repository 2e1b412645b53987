//! Fuzzing what the worker takes off SQS: every message is untrusted, so
//! decoding must reject garbage cleanly and accept only well-formed TaskRefs.
//! Bounded in time (MUSTER_FUZZ_SECONDS); see muster_common::fuzz.

use base64::Engine as _;
use muster_common::fuzz::{self, Outcome};
use muster_proto::v1::TaskRef;
use muster_proto::{decode_task_ref, encode_task_ref};
use proptest::prelude::*;
use prost::Message as _;

fn well_formed(id: &str) -> bool {
    uuid::Uuid::parse_str(id).is_ok_and(|u| u.hyphenated().to_string() == id)
}

/// Decoding never panics; what it accepts is well-formed and round-trips.
fn check(body: &str) -> Outcome {
    let Ok(task) = decode_task_ref(body) else {
        return Ok(false);
    };
    if !well_formed(&task.campaign_id) || !well_formed(&task.task_id) {
        return Err(format!("accepted ids that are not lowercase UUIDs: {task:?}"));
    }
    if task.attempt == 0 {
        return Err("accepted attempt 0".into());
    }
    let again = decode_task_ref(&encode_task_ref(&task)).map_err(|e| format!("does not round-trip: {e}"))?;
    if again != task {
        return Err(format!("round-trip changed it: {task:?} -> {again:?}"));
    }
    Ok(true)
}

fn valid_ref() -> impl Strategy<Value = TaskRef> {
    (any::<u128>(), any::<u128>(), 1u32..5).prop_map(|(c, t, attempt)| TaskRef {
        campaign_id: uuid::Uuid::from_u128(c).to_string(),
        task_id: uuid::Uuid::from_u128(t).to_string(),
        attempt,
    })
}

fn bodies() -> impl Strategy<Value = String> {
    let b64 = |bytes: Vec<u8>| base64::engine::general_purpose::STANDARD.encode(bytes);
    prop_oneof![
        // Any text at all.
        2 => any::<String>(),
        // Protobuf-shaped garbage.
        2 => proptest::collection::vec(any::<u8>(), 0..200).prop_map(b64),
        // A valid reference with bytes flipped, cut short or extended.
        3 => (valid_ref(), proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4), any::<prop::sample::Index>(), proptest::collection::vec(any::<u8>(), 0..8))
            .prop_map(move |(task, flips, cut, tail)| {
                let mut bytes = task.encode_to_vec();
                for (at, byte) in flips {
                    let i = at.index(bytes.len());
                    bytes[i] ^= byte;
                }
                bytes.truncate(cut.index(bytes.len() + 1));
                bytes.extend(tail);
                b64(bytes)
            }),
        // Valid ones, with whitespace around.
        1 => valid_ref().prop_map(|t| format!(" {}\n", encode_task_ref(&t))),
        // Huge.
        1 => (0usize..100_000).prop_map(|n| "A".repeat(n)),
    ]
}

#[test]
fn fuzz_task_ref_decoding() {
    let report = fuzz::run("fuzz_task_ref_decoding", bodies(), |body: &String| check(body));
    assert!(report.cases > 100, "too few cases to mean anything: {report:?}");
    assert!(report.accepted > 0, "no valid reference was generated: {report:?}");
    assert!(report.accepted < report.cases, "nothing was rejected: {report:?}");
}
