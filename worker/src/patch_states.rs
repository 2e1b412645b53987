//! What a patch document's run left on each instance. When invocations of
//! AWS-RunPatchBaseline (or its kin) end, one DescribeInstancePatchStates
//! per 50 of them reads Patch Manager's state, and each result that ran
//! carries its own, if it is this run's: a state whose operation ended
//! before the command was sent is an earlier run's, and is left out.
//!
//! The state tells about the run; it is not the run. A call that fails (an
//! execution role deployed before muster asked for it, a throttle that
//! outlasts the retries) leaves the results without it and says so in the
//! log, and the results are reported as they are.

use std::collections::HashMap;

use aws_sdk_ssm::types::InstancePatchState;
use muster_proto::v1::{PatchState, TargetResult};

use crate::api::Api;
use crate::scope_clients::ScopeClients;

/// Instance ids one DescribeInstancePatchStates takes.
const PER_CALL: usize = 50;

/// A result that ended, and when its command was sent (SSM's clock).
pub type Ended = (TargetResult, Option<aws_smithy_types::DateTime>);

/// Sets the patch state of each of `ended` that ran and has one from this
/// run. Returns how many got one.
pub async fn attach(scope: &ScopeClients, task_id: &str, ended: &mut [Ended]) -> usize {
    let ran: Vec<String> = ended
        .iter()
        .filter(|(result, _)| result.exit_code.is_some())
        .map(|(result, _)| result.instance_id.clone())
        .collect();
    let mut found: HashMap<String, InstancePatchState> = HashMap::with_capacity(ran.len());
    for ids in ran.chunks(PER_CALL) {
        match read(scope, ids).await {
            Ok(states) => found.extend(states.into_iter().map(|s| (s.instance_id.clone(), s))),
            Err(error) => {
                tracing::warn!(
                    task_id,
                    %error,
                    instances = ids.len(),
                    "the patch states of a patch run could not be read; its results go without them"
                );
            }
        }
    }
    let mut attached = 0;
    for (result, sent) in ended.iter_mut() {
        let Some(state) = found.get(&result.instance_id) else {
            continue;
        };
        if this_run(state.operation_end_time(), sent.as_ref()) {
            result.patch_state = Some(patch_state(state));
            attached += 1;
        }
    }
    attached
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
