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

/// That the controller lost each of `points`' answers after its effect
/// (`MUSTER_LOSE_AT`, "worker_api.Method@pass"), as its `logs` say.
pub fn assert_answers_lost(logs: &str, points: &[&str]) {
    for point in points {
        let (name, nth) = point.split_once('@').expect("a lose point is METHOD@PASS");
        assert!(
            logs.contains(&format!("lose point {name} reached on pass {nth}")),
            "the answer of {name} was lost on pass {nth}: {logs}"
        );
    }
}

/// The patch states of `targets`, summed as a campaign sums them.
pub fn patch_sum(targets: &[Target]) -> muster_proto::v1::PatchCounters {
    let mut summed = muster_proto::v1::PatchCounters::default();
    targets
        .iter()
        .filter_map(|t| t.patch_state.as_ref())
        .for_each(|p| summed.add(p));
    summed
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

/// The columns of the Athena table `muster.campaign_targets` that
/// `deploy/cloudformation/hub.yaml` creates, as its template says.
pub fn athena_table() -> Vec<serde_json::Value> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/cloudformation/hub.yaml");
    let table = muster_sim::cfn::Template::load(&path)
        .expect("hub.yaml")
        .with_params([(
            "AWS::AccountId".to_owned(),
            muster_sim::cfn::Param::Str("123456789012".into()),
        )])
        .properties("CampaignTargetsTable", "AWS::Glue::Table")
        .expect("the campaign_targets table");
    table["TableInput"]["StorageDescriptor"]["Columns"]
        .as_array()
        .expect("its columns")
        .clone()
}

/// The fields of `column`, a struct (or an array of structs) of `columns`.
pub fn struct_fields(columns: &[serde_json::Value], column: &str) -> std::collections::BTreeSet<String> {
    let kind = columns
        .iter()
        .find(|c| c["Name"] == column)
        .unwrap_or_else(|| panic!("no column {column}"))["Type"]
        .as_str()
        .expect("a type")
        .trim();
    let kind = kind
        .strip_prefix("array<")
        .and_then(|s| s.strip_suffix('>'))
        .unwrap_or(kind);
    kind.strip_prefix("struct<")
        .and_then(|s| s.strip_suffix('>'))
        .unwrap_or_else(|| panic!("{column} is not a struct: {kind}"))
        .split(',')
        .map(|f| f.split(':').next().unwrap_or_default().to_owned())
        .collect()
}
