//! What a patch document's run left on each instance. When invocations of
//! AWS-RunPatchBaseline (or its kin) end, one DescribeInstancePatchStates
//! per 50 of them reads Patch Manager's state, and each result that ran
//! carries its own, if it is this run's: a state whose operation ended
//! before the command was sent is an earlier run's, and is left out.
//!
//! Patch Manager may show a run's state a moment after the run's status:
//! the runs that succeeded without one are asked about again, after 2 s and
//! 5 s, before the results go.
//!
//! The state tells about the run; it is not the run. A call that fails (an
//! execution role deployed before muster asked for it, a throttle that
//! outlasts the retries) leaves the results without it and says so in the
//! log, and the results are reported as they are.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_ssm::types::InstancePatchState;
use muster_proto::v1::{PatchState, TargetResult};

use crate::api::Api;
use crate::scope_clients::ScopeClients;

/// Instance ids one DescribeInstancePatchStates takes.
const PER_CALL: usize = 50;

/// A result that ended, and when its command was sent (SSM's clock).
pub type Ended = (TargetResult, Option<aws_smithy_types::DateTime>);

/// When to read again the states that runs which succeeded have not shown
/// yet: Patch Manager may show a run's state a moment after the run's own
/// status. Bounded, so a state that never comes delays the batch's report
/// by their sum at most.
const AGAIN_AFTER: [Duration; 2] = [Duration::from_secs(2), Duration::from_secs(5)];

/// Sets the patch state of each of `ended` that ran and has one from this
/// run; those that succeeded without one are asked again, twice at most.
pub async fn attach(scope: &ScopeClients, task_id: &str, ended: &mut [Ended]) {
    let ran: Vec<String> = ended
        .iter()
        .filter(|(result, _)| result.exit_code.is_some())
        .map(|(result, _)| result.instance_id.clone())
        .collect();
    if !read_into(scope, task_id, &ran, ended).await {
        return;
    }
    for wait in AGAIN_AFTER {
        let awaited: Vec<String> = ended
            .iter()
            .filter(|(result, _)| result.exit_code == Some(0) && result.patch_state.is_none())
            .map(|(result, _)| result.instance_id.clone())
            .collect();
        if awaited.is_empty() {
            break;
        }
        tokio::time::sleep(wait).await;
        if !read_into(scope, task_id, &awaited, ended).await {
            break;
        }
    }
}

/// Reads the states of `ids` and sets each that is this run's on its
/// result in `ended`; false when a call failed (logged).
async fn read_into(scope: &ScopeClients, task_id: &str, ids: &[String], ended: &mut [Ended]) -> bool {
    let mut found: HashMap<String, InstancePatchState> = HashMap::with_capacity(ids.len());
    let mut failed = false;
    for chunk in ids.chunks(PER_CALL) {
        match read(scope, chunk).await {
            Ok(states) => found.extend(states.into_iter().map(|s| (s.instance_id.clone(), s))),
            Err(error) => {
                failed = true;
                tracing::warn!(
                    task_id,
                    %error,
                    instances = chunk.len(),
                    "the patch states of a patch run could not be read; its results go without them"
                );
            }
        }
    }
    for (result, sent) in ended.iter_mut().filter(|(result, _)| result.patch_state.is_none()) {
        let Some(state) = found.get(&result.instance_id) else {
            continue;
        };
        if this_run(state.operation_end_time(), sent.as_ref()) {
            result.patch_state = Some(patch_state(state));
        }
    }
    !failed
}

/// Whether a patch state whose operation ended at `end` is the run of a
/// command sent at `sent` (both on SSM's clock): an earlier run's ended
/// before the send. Without the send's time, nothing says it is another
/// run's.
fn this_run(end: &aws_smithy_types::DateTime, sent: Option<&aws_smithy_types::DateTime>) -> bool {
    sent.is_none_or(|sent| end.as_nanos() >= sent.as_nanos())
}

/// The patch states of `ids`, all pages.
async fn read(
    scope: &ScopeClients,
    ids: &[String],
) -> Result<Vec<InstancePatchState>, crate::scope_clients::CallError> {
    let mut all = Vec::with_capacity(ids.len());
    let mut token: Option<String> = None;
    loop {
        let page = scope
            .call(Api::DescribeInstancePatchStates, || {
                scope
                    .ssm
                    .describe_instance_patch_states()
                    .set_instance_ids(Some(ids.to_vec()))
                    .max_results(50)
                    .set_next_token(token.clone())
                    .send()
            })
            .await?;
        all.extend(page.instance_patch_states().iter().cloned());
        token = page.next_token().filter(|t| !t.is_empty()).map(str::to_owned);
        if token.is_none() {
            return Ok(all);
        }
    }
}

fn count(n: Option<i32>) -> u32 {
    n.and_then(|n| u32::try_from(n).ok()).unwrap_or(0)
}

/// SSM's patch state as muster carries it.
fn patch_state(state: &InstancePatchState) -> PatchState {
    PatchState {
        operation: state.operation().as_str().to_owned(),
        operation_end_time: Some(prost_types::Timestamp {
            seconds: state.operation_end_time().secs(),
            nanos: state.operation_end_time().subsec_nanos() as i32,
        }),
        installed: count(Some(state.installed_count())),
        installed_other: count(Some(state.installed_other_count())),
        installed_pending_reboot: count(state.installed_pending_reboot_count()),
        installed_rejected: count(state.installed_rejected_count()),
        missing: count(Some(state.missing_count())),
        failed: count(Some(state.failed_count())),
        not_applicable: count(Some(state.not_applicable_count())),
        critical_non_compliant: count(state.critical_non_compliant_count()),
        security_non_compliant: count(state.security_non_compliant_count()),
        reboot_option: state.reboot_option().map(|r| r.as_str().to_owned()).unwrap_or_default(),
        baseline_id: state.baseline_id().to_owned(),
        patch_group: state.patch_group().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use aws_smithy_types::DateTime;

    use super::this_run;

    #[test]
    fn a_state_from_before_the_send_is_an_earlier_runs() {
        let sent = DateTime::from_secs(1_000);
        assert!(this_run(&DateTime::from_secs(1_030), Some(&sent)));
        assert!(this_run(&sent, Some(&sent)));
        assert!(!this_run(&DateTime::from_secs(999), Some(&sent)), "last week's scan");
        assert!(this_run(&DateTime::from_secs(999), None));
    }
}
