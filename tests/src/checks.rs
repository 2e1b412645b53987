//! What every whole-system test asserts the same way: the invariants of a
//! finished campaign, and how many messages a queue holds.

use aws_sdk_sqs::types::QueueAttributeName;
use muster_proto::v1::{Campaign, Target, TargetStatus};

use crate::client::{assert_counters_add_up, targets};
use crate::procs::System;

/// Checks invariants 1 and 2 for a finished campaign and returns its
/// targets (with output): no instance got a command twice (each command of
/// a sequence once at most); every target
/// ended, with a reason; a status that says it ran was sent, one that says
/// it never was was not; the counters add up.
pub async fn assert_ran_once(system: &mut System, id: &str, campaign: &Campaign) -> Vec<Target> {
    let all = targets(&mut system.client, id, true).await;
    assert_counters_add_up(campaign, &all);
    for ((instance, n), count) in system.sends_per_command() {
        assert_eq!(count, 1, "instance {instance} got command {n} {count} times");
    }
    let sends = system.sends_per_instance();
    for target in &all {
        let status = TargetStatus::try_from(target.status).unwrap_or(TargetStatus::Unspecified);
        assert!(
            status.is_terminal(),
            "target {} ended {}",
            target.instance_id,
            status.short_name()
        );
        assert!(!target.reason.is_empty(), "target {} has a reason", target.instance_id);
        let sent = sends.contains_key(&target.instance_id);
        if matches!(
            status,
            TargetStatus::Success | TargetStatus::Failed | TargetStatus::TimedOut
        ) {
            assert!(sent, "{} ran, so it was sent", target.instance_id);
        }
        if matches!(status, TargetStatus::Skipped | TargetStatus::Terminated) {
            assert!(
                !sent,
                "{} was {} and never sent",
                target.instance_id,
                status.short_name()
            );
        }
    }
    all
}

/// Messages on a queue: (visible, in flight); zeros when SQS cannot say.
pub async fn queue_depth(sqs: &aws_sdk_sqs::Client, url: &str) -> (u64, u64) {
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .ok()
        .and_then(|a| a.attributes)
        .unwrap_or_default();
    let get = |name: QueueAttributeName| attributes.get(&name).and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
    (
        get(QueueAttributeName::ApproximateNumberOfMessages),
        get(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
    )
}
