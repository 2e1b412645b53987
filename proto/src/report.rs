//! The size of what workers report: a ReportResults request has a bound both
//! sides know, output is clipped to the campaign's `keep_bytes`, and a
//! worker splits its results so no request passes the bound.

use prost::Message as _;

use crate::v1::TargetResult;

/// The largest ReportResults request (encoded) a worker sends and a
/// controller accepts; well under gRPC's 64 MiB message limit in muster.
pub const MAX_REPORT_BYTES: usize = 16 * 1024 * 1024;

/// Room for the request's own fields (task id, lease id, framing).
const REQUEST_OVERHEAD: usize = 1024;

/// Cuts every step's stdout and stderr of `result` to at most `keep` bytes,
/// on a character boundary, and marks what was cut. True if anything was.
pub fn clip_output(result: &mut TargetResult, keep: usize) -> bool {
    let mut clipped = false;
    for step in &mut result.steps {
        for (text, truncated) in [
            (&mut step.stdout, &mut step.stdout_truncated),
            (&mut step.stderr, &mut step.stderr_truncated),
        ] {
            if text.len() > keep {
                let mut end = keep;
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                text.truncate(end);
                *truncated = true;
                clipped = true;
            }
        }
    }
    clipped
}

/// Splits `results` into groups that each fit one ReportResults request of
/// at most `max_bytes`, in order. A result too large on its own has its
/// output clipped until it fits (marked truncated), never dropped.
pub fn split_by_size(results: Vec<TargetResult>, max_bytes: usize) -> Vec<Vec<TargetResult>> {
    let budget = max_bytes.saturating_sub(REQUEST_OVERHEAD).max(1);
    let mut groups: Vec<Vec<TargetResult>> = Vec::new();
    let mut size = 0;
    for mut result in results {
        let mut len = entry_len(&result);
        let mut keep = result
            .steps
            .iter()
            .map(|s| s.stdout.len().max(s.stderr.len()))
            .max()
            .unwrap_or(0);
        while len > budget && keep > 0 {
            keep /= 2;
            clip_output(&mut result, keep);
            len = entry_len(&result);
        }
        match groups.last_mut() {
            Some(group) if size + len <= budget => group.push(result),
            _ => {
                groups.push(vec![result]);
                size = 0;
            }
        }
        size += len;
    }
    groups
}

/// What one result adds to an encoded ReportResultsRequest.
fn entry_len(result: &TargetResult) -> usize {
    let len = result.encoded_len();
    // Field tag and length prefix.
    1 + prost::encoding::encoded_len_varint(len as u64) + len
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{ReportResultsRequest, StepOutput};

    fn result(id: &str, stdout: usize) -> TargetResult {
        TargetResult {
            instance_id: id.into(),
            steps: vec![StepOutput {
                stdout: "x".repeat(stdout),
                stderr: "é".repeat(10),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn output_is_clipped_on_a_character_boundary_and_marked() {
        let mut r = result("i-1", 100);
        assert!(clip_output(&mut r, 15));
        let step = &r.steps[0];
        assert_eq!(step.stdout.len(), 15);
        assert!(step.stdout_truncated);
        assert_eq!(step.stderr, "é".repeat(7), "15 bytes hold 7 two-byte characters");
        assert!(step.stderr_truncated);
        let mut small = result("i-2", 3);
        assert!(!clip_output(&mut small, 1_000), "nothing to cut");
        assert!(!small.steps[0].stdout_truncated);
    }

    #[test]
    fn reports_are_split_under_the_bound_in_order_and_nothing_is_dropped() {
        let results: Vec<TargetResult> = (0..50).map(|i| result(&format!("i-{i:02}"), 100_000)).collect();
        let groups = split_by_size(results, 1_000_000);
        assert!(groups.len() >= 6, "{} groups", groups.len());
        let ids: Vec<String> = groups.iter().flatten().map(|r| r.instance_id.clone()).collect();
        let expected: Vec<String> = (0..50).map(|i| format!("i-{i:02}")).collect();
        assert_eq!(ids, expected, "every result, in order");
        for group in &groups {
            let request = ReportResultsRequest {
                task_id: "t".repeat(36),
                lease_id: u64::MAX,
                results: group.clone(),
            };
            assert!(request.encoded_len() <= 1_000_000, "{}", request.encoded_len());
            assert!(
                group.iter().all(|r| !r.steps[0].stdout_truncated),
                "none needed cutting"
            );
        }
    }

    #[test]
    fn a_result_too_large_alone_is_clipped_to_fit() {
        let groups = split_by_size(vec![result("i-big", 3_000_000), result("i-small", 10)], 1_000_000);
        assert_eq!(groups.len(), 1, "clipped, the big one leaves room for the small one");
        let (big, small) = (&groups[0][0], &groups[0][1]);
        assert!(big.steps[0].stdout_truncated);
        assert!(big.steps[0].stdout.len() > 100_000, "clipped to fit, not emptied");
        assert!(!small.steps[0].stdout_truncated);
        let request = ReportResultsRequest {
            results: groups[0].clone(),
            ..Default::default()
        };
        assert!(request.encoded_len() <= 1_000_000);
    }
}
