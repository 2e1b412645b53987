//! What a scenario must leave true, checked against the sim's audit log
//! and the controller.

use super::*;

/// Every target ended with a reason, its status agrees with the audit log,
/// the counters add up, nobody got a command twice, and the output of
/// those that ran reads back whole.
pub(super) async fn check(
    system: &mut System,
    id: &str,
    campaign: &muster_proto::v1::Campaign,
    shape: Shape,
    report: &mut Report,
) {
    let all = targets(&mut system.client, id, true).await;
    let sends = system.sends_per_instance();
    let per_command = system.sends_per_command();
    // What a target that succeeded printed: each command of the sequence.
    let printed = if shape == Shape::Sequence {
        2 * B_OUTPUT
    } else {
        B_OUTPUT
    };
    let b = system
        .fleet
        .accounts
        .iter()
        .find(|a| a.name == "b")
        .map(|a| a.id.clone())
        .unwrap_or_default();
    report.duplicates = per_command.values().filter(|n| **n > 1).count();
    for ((instance, command), n) in per_command.iter().filter(|(_, n)| **n > 1) {
        report
            .violations
            .push(format!("{instance} got command {command} {n} times"));
    }
    let counters = campaign.counters.unwrap_or_default();
    if counters.total as usize != all.len() {
        report.violations.push(format!(
            "counters say {} targets, ListTargets {}",
            counters.total,
            all.len()
        ));
    }
    let mut by_status: BTreeMap<i32, u64> = BTreeMap::new();
    for target in &all {
        *by_status.entry(target.status).or_default() += 1;
        let status = TargetStatus::try_from(target.status).unwrap_or(TargetStatus::Unspecified);
        let sent = sends.contains_key(&target.instance_id);
        let wrong = if !status.is_terminal() {
            Some("is not in a terminal status")
        } else if target.reason.is_empty() {
            Some("has no reason")
        } else if matches!(status, TargetStatus::Success | TargetStatus::Failed) && !sent {
            Some("ran, says its status, but SSM never got it")
        } else if matches!(status, TargetStatus::Skipped | TargetStatus::Terminated) && sent {
            Some("was sent, yet its status says it never was")
        } else {
            None
        };
        let stdout: usize = target.steps.iter().map(|s| s.stdout.len()).sum();
        if status == TargetStatus::Success && target.account_id == b && stdout != printed {
            report.violations.push(format!(
                "{} printed {printed} bytes; {stdout} read back",
                target.instance_id
            ));
        }
        if let Some(wrong) = wrong {
            report.lost += 1;
            report.violations.push(format!(
                "{} {wrong}: {} ({})",
                target.instance_id,
                status.short_name(),
                target.reason
            ));
        }
    }
    let counted = [
        (TargetStatus::Success, counters.success),
        (TargetStatus::Failed, counters.failed),
        (TargetStatus::Error, counters.error),
        (TargetStatus::Cancelled, counters.cancelled),
    ];
    for (status, n) in counted {
        let listed = by_status.get(&(status as i32)).copied().unwrap_or(0);
        if listed != n {
            report
                .violations
                .push(format!("{} counted {n}, listed {listed}", status.short_name()));
        }
    }
}

/// When each SendCommand was accepted, by instance and command, from the
/// sim's audit log.
fn sends_at(system: &System) -> Vec<(String, u32, SystemTime)> {
    let mut sends = Vec::new();
    for entry in system.sb.audit() {
        let command = crate::procs::command_of(&entry.comment);
        let at: SystemTime = chrono::DateTime::parse_from_rfc3339(&entry.at)
            .expect("the audit log's times are RFC 3339")
            .into();
        for id in entry.instance_ids {
            sends.push((id, command, at));
        }
    }
    sends
}

fn system_time(ts: &Option<prost_types::Timestamp>) -> Option<SystemTime> {
    ts.as_ref().and_then(|t| SystemTime::try_from(*t).ok())
}

/// What the campaign's shape promises, beyond what every campaign does.
/// `decided`: when the person's last call (promote, cancel) was answered.
pub(super) async fn check_shape(
    system: &mut System,
    id: &str,
    campaign: &muster_proto::v1::Campaign,
    plan: &Plan,
    decided: Option<SystemTime>,
    report: &mut Report,
) {
    let all = targets(&mut system.client, id, false).await;
    let sends = sends_at(system);
    let state = CampaignState::try_from(campaign.state).unwrap_or_default();
    let violations = &mut report.violations;
    match plan.shape {
        Shape::Plain => {}
        Shape::Sequence => {
            let second: std::collections::BTreeSet<&str> =
                sends.iter().filter(|s| s.1 == 2).map(|s| s.0.as_str()).collect();
            for target in &all {
                let got_second = second.contains(target.instance_id.as_str());
                let status = TargetStatus::try_from(target.status).unwrap_or_default();
                // Only the failing instances fail, at the first command.
                if status == TargetStatus::Success && !got_second {
                    violations.push(format!("{} succeeded without its second command", target.instance_id));
                }
                if status == TargetStatus::Failed && got_second {
                    violations.push(format!(
                        "{} got the second command though the first failed",
                        target.instance_id
                    ));
                }
            }
        }
        Shape::Waves => {
            for stage in &campaign.stages {
                if stage.phase != StagePhase::Passed as i32 {
                    violations.push(format!(
                        "stage '{}' ended {}",
                        stage.name,
                        StagePhase::try_from(stage.phase).unwrap_or_default().short_name()
                    ));
                }
            }
            let canary_ended = all
                .iter()
                .filter(|t| t.stage == "canary")
                .filter_map(|t| system_time(&t.finished_at))
                .max();
            let rest: std::collections::BTreeSet<&str> = all
                .iter()
                .filter(|t| t.stage == "rest")
                .map(|t| t.instance_id.as_str())
                .collect();
            let first_of_rest = sends.iter().filter(|s| rest.contains(s.0.as_str())).map(|s| s.2).min();
            if let (Some(canary), Some(first)) = (canary_ended, first_of_rest)
                && first < canary
            {
                violations.push(format!(
                    "the rest was sent {:?} before the canary's last target ended",
                    canary.duration_since(first).unwrap_or_default()
                ));
            }
            if decided.is_none() {
                violations.push("the canary's promotion was never answered".into());
            }
        }
        Shape::Cancelled { .. } => {
            let Some(acknowledged) = decided else {
                violations.push("the cancel was never answered".into());
                return;
            };
            let ended_before = system_time(&campaign.finished_at).is_some_and(|f| f <= acknowledged);
            if state != CampaignState::Cancelled && !ended_before {
                violations.push(format!(
                    "cancelled, it ended {} ({})",
                    state.short_name(),
                    campaign.state_reason
                ));
            }
            // A worker sends only within its lease, renewed at most a TTL
            // before the cancel, or after a pause of its own (SIGSTOP
            // between its check and its call).
            let paused: Duration = plan
                .actions
                .iter()
                .map(|(_, action)| match action {
                    Action::PauseWorker { for_ } => *for_,
                    _ => Duration::ZERO,
                })
                .sum();
            report.sent_after_cancel = sends.iter().filter_map(|s| s.2.duration_since(acknowledged).ok()).max();
            let horizon = acknowledged + Duration::from_secs(LEASE_TTL) + Duration::from_secs(2) + paused;
            for (instance, command, at) in sends.iter().filter(|s| s.2 > horizon) {
                violations.push(format!(
                    "{instance} was sent command {command} {:?} after the cancel was answered",
                    at.duration_since(acknowledged).unwrap_or_default()
                ));
            }
        }
        Shape::ErrorThreshold => {
            let passed = campaign.errors > campaign.error_threshold.unwrap_or(0);
            if passed != (state == CampaignState::Failed) {
                violations.push(format!(
                    "{} errors of max_errors 0, yet it ended {} ({})",
                    campaign.errors,
                    state.short_name(),
                    campaign.state_reason
                ));
            }
        }
    }
}

/// Nothing left leased or waiting in the store, and both queues drained
/// (workers delete duplicate messages as they meet them; the controller
/// drains dead letters, whose receives the sim may drop too, hiding them
/// for the drain's 30 s visibility timeout).
pub(super) async fn check_drained(system: &System, report: &mut Report) {
    let sqs = aws_sdk_sqs::Client::new(&system.sb.hub_config(EAST));
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let store = open_tasks(system).await;
        let main = depth(&sqs, &system.fleet.queue_url).await;
        let dead = depth(&sqs, &system.fleet.dlq_url).await;
        if store == 0 && main == 0 && dead == 0 {
            return;
        }
        if Instant::now() >= deadline {
            report.violations.push(format!(
                "left behind: {store} tasks leased or queued in the store, {main} messages on the task queue, {dead} dead letters"
            ));
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Tasks waiting, queued or leased, from the controller's metrics.
async fn open_tasks(system: &System) -> u64 {
    let (_, text) = crate::otlp::http_get(system.controller_metrics_port(), "/metrics").await;
    text.lines()
        .filter(|l| l.starts_with("muster_controller_tasks{"))
        .filter(|l| {
            ["\"waiting\"", "\"queued\"", "\"leased\""]
                .iter()
                .any(|s| l.contains(s))
        })
        .filter_map(|l| l.rsplit(' ').next().and_then(|n| n.parse::<f64>().ok()))
        .sum::<f64>() as u64
}

async fn depth(sqs: &aws_sdk_sqs::Client, url: &str) -> u64 {
    let (visible, in_flight) = crate::checks::queue_depth(sqs, url).await;
    visible + in_flight
}

/// Adds the sim's injected faults to the report, and the logs when
/// something was wrong.
pub(super) fn finish(mut report: Report, system: &System) -> Report {
    report.expired = system
        .muster_warnings()
        .iter()
        .filter(|line| line.contains("muster_controller::reconcile") && line.contains("lease expired"))
        .count();
    report.handed_back = system
        .muster_warnings()
        .iter()
        .filter(|line| line.contains("muster_worker::task") && line.contains("worker stopping"))
        .count();
    let lost = system.logs().matches("lose point worker_api.").count() as u64;
    if lost > 0 {
        *report
            .faults
            .entry("worker API answer lost after the effect".into())
            .or_default() += lost;
    }
    for (service, api) in [
        ("ssm", "SendCommand"),
        ("sqs", "SendMessageBatch"),
        ("sqs", "ReceiveMessage"),
        ("ssm", "ListCommandInvocations"),
        ("sts", "AssumeRole"),
    ] {
        for kind in [
            FaultKind::Error500,
            FaultKind::Error503,
            FaultKind::Drop,
            FaultKind::Slow,
            FaultKind::Duplicate,
        ] {
            for (when, label) in [("fault_after", "after the effect"), ("fault", "before")] {
                let n = system.sb.count(service, api, &format!("{when}:{}", kind.name()));
                if n > 0 {
                    *report
                        .faults
                        .entry(format!("{api} {} {label}", kind.name()))
                        .or_default() += n;
                }
            }
        }
    }
    let throttled = system.sb.count("ssm", "SendCommand", "throttled")
        + system.sb.count("ssm", "ListCommandInvocations", "throttled");
    if throttled > 0 {
        *report.faults.entry("throttled".into()).or_default() += throttled;
    }
    let expired: u64 = [
        "SendCommand",
        "ListCommandInvocations",
        "DescribeInstances",
        "DescribeInstanceInformation",
    ]
    .iter()
    .map(|api| system.sb.count("ssm", api, "expired_token") + system.sb.count("ec2", api, "expired_token"))
    .sum();
    if expired > 0 {
        *report.faults.entry("expired credentials".into()).or_default() += expired;
    }
    if !report.ok() {
        eprintln!(
            "chaos seed {} failed (replay: MUSTER_CHAOS_SEED={}):\n  {}\n{}",
            report.seed,
            report.seed,
            report.violations.join("\n  "),
            system.logs()
        );
    }
    report
}
