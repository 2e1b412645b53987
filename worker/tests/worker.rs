//! The worker against moto + muster-sim and the real controller in this
//! process, its WorkerService behind a fault layer: each test is one
//! behaviour of the worker as an operator would notice it.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use muster_controller::store::records::task_state;
use muster_proto::v1::{CampaignState, OutputConfig, Platform, TagFilter, Target, TargetStatus, TaskKind, TaskRef};
use muster_sim::ssm::output::filler;
use muster_sim::testkit::{Sandbox, test_tunables};
use muster_sim::{FaultKind, FaultRule, Quota};
use support::{World, eventually};

const EAST: &str = "us-east-1";
const WEST: &str = "eu-west-1";

/// Three accounts in two regions, Linux and Windows, one failing script per
/// region, and one account whose execution role is missing.
const FLEET: &str = r#"
name = "w"
external_id = "ext-w"
output_bucket = "out"
log_group = "/muster/test"

[[accounts]]
name = "alpha"
regions = ["us-east-1", "eu-west-1"]
  [[accounts.instances]]
  count = 3
  tags = { Role = "web", "muster-sim:duration" = "0.5" }
  [[accounts.instances]]
  count = 2
  platform = "windows"
  tags = { Role = "win", "muster-sim:duration" = "0.5" }
  [[accounts.instances]]
  count = 1
  tags = { Role = "fail", "muster-sim:exit-code" = "3", "muster-sim:duration" = "0.5" }
  [[accounts.instances]]
  count = 1
  tags = { Role = "offline", "muster-sim:agent" = "offline" }

[[accounts]]
name = "beta"
regions = ["us-east-1", "eu-west-1"]
  [[accounts.instances]]
  count = 2
  tags = { Role = "web", "muster-sim:duration" = "0.5" }
  [[accounts.instances]]
  count = 1
  platform = "windows"
  tags = { Role = "win", "muster-sim:duration" = "0.5" }
  [[accounts.instances]]
  count = 1
  tags = { Role = "big", "muster-sim:stdout-bytes" = "100000", "muster-sim:duration" = "0.2" }
  [[accounts.instances]]
  count = 2
  tags = { Role = "slow", "muster-sim:duration" = "8" }

[[accounts]]
name = "gamma"
regions = ["us-east-1", "eu-west-1"]
  [[accounts.instances]]
  count = 2
  tags = { Role = "web", "muster-sim:duration" = "0.5" }

[[accounts]]
name = "norole"
regions = ["us-east-1"]
execution_role = false
  [[accounts.instances]]
  count = 2
  tags = { Role = "web" }
"#;

fn success(target: &Target) -> bool {
    target.status == TargetStatus::Success as i32
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovers_and_executes_across_accounts_regions_and_platforms() {
    let w = World::new(FLEET, Duration::from_secs(10)).await;
    let worker = w.start_worker(Duration::from_secs(5)).await;
    let accounts = ["alpha", "beta", "gamma"];
    let roles = ["web", "win", "fail", "offline"];
    let mut spec = w.spec("alpha", EAST, &[], &["echo patched"]);
    let targets = spec.targets.as_mut().unwrap();
    targets.account_ids = accounts.iter().map(|a| w.account(a)).collect();
    targets.regions = vec![EAST.into(), WEST.into()];
    targets.tags = vec![TagFilter {
        key: "Role".into(),
        values: roles.iter().map(|r| r.to_string()).collect(),
    }];
    let id = w.submit(spec).await;
    let campaign = w.wait_done(&id, Duration::from_secs(90)).await;
    let found = w.targets(&id).await;

    // Discovery: every instance with those roles reported, the offline one
    // skipped with why; execution: Linux and Windows in every scope.
    let mut expected = 0;
    for account in accounts {
        for region in [EAST, WEST] {
            let seeded = &w.fleet.account(account).unwrap().instances[region];
            for seed in seeded {
                let role = seed.tags.get("Role").map(String::as_str).unwrap_or_default();
                if !roles.contains(&role) {
                    assert!(!found.contains_key(&seed.id), "{} is not a target", seed.id);
                    continue;
                }
                expected += 1;
                let target = &found[&seed.id];
                let windows = seed.platform == muster_sim::seed::fleet_file::PlatformSpec::Windows;
                assert_eq!(target.platform == Platform::Windows as i32, windows, "{target:?}");
                match role {
                    "offline" => {
                        assert_eq!(target.status, TargetStatus::Skipped as i32, "{target:?}");
                        assert!(target.reason.contains("offline"), "{target:?}");
                    }
                    "fail" => {
                        assert_eq!(target.status, TargetStatus::Failed as i32, "{target:?}");
                        assert_eq!(target.exit_code, Some(3));
                        assert_eq!(target.reason, "exit code 3");
                        assert!(target.steps[0].stderr.contains("exit code 3"));
                    }
                    _ => {
                        assert!(success(target), "{target:?}");
                        assert_eq!(target.exit_code, Some(0));
                        let document = if windows {
                            "AWS-RunPowerShellScript"
                        } else {
                            "AWS-RunShellScript"
                        };
                        assert!(target.steps[0].stdout.contains(document), "{:?}", target.steps[0]);
                    }
                }
                if role != "offline" {
                    assert!(!target.command_id.is_empty(), "{target:?}");
                }
            }
        }
    }
    assert_eq!(found.len(), expected, "no target beyond the seeded ones");
    assert_eq!(
        CampaignState::try_from(campaign.state),
        Ok(CampaignState::CompletedWithErrors),
        "one script fails per scope"
    );

    // The audit log: Windows batches used PowerShell, in the target's
    // account through its execution role, and nothing ran twice.
    for entry in w.sb.audit() {
        let windows = entry
            .instance_ids
            .iter()
            .all(|i| found[i].platform == Platform::Windows as i32);
        let linux = entry
            .instance_ids
            .iter()
            .all(|i| found[i].platform != Platform::Windows as i32);
        assert!(windows || linux, "one platform per batch: {entry:?}");
        let document = if windows {
            "AWS-RunPowerShellScript"
        } else {
            "AWS-RunShellScript"
        };
        assert_eq!(entry.document_name, document);
        assert!(
            entry.principal.contains(":assumed-role/muster-execution/muster-"),
            "{}",
            entry.principal
        );
    }
    let sends = w.sends_per_instance();
    assert_eq!(sends.len(), found.values().filter(|t| !t.command_id.is_empty()).count());
    assert!(sends.values().all(|n| *n == 1), "{sends:?}");
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_output_comes_back_whole_from_s3_and_cloudwatch_and_marked_truncated_without() {
    let w = World::new(FLEET, Duration::from_secs(10)).await;
    let worker = w.start_worker(Duration::from_secs(5)).await;
    let big = w.ids("beta", EAST, "big");
    let expected = filler(&big[0], "stdout", 100_000);

    let outputs = [
        OutputConfig {
            s3_bucket: "out".into(),
            s3_key_prefix: "muster/test".into(),
            ..Default::default()
        },
        OutputConfig {
            cloudwatch_log_group: "/muster/test".into(),
            ..Default::default()
        },
        OutputConfig::default(),
    ];
    let mut ids = Vec::new();
    for output in outputs {
        let mut spec = w.spec("beta", EAST, &big, &["cat big"]);
        spec.output = Some(OutputConfig {
            keep_bytes: 200_000,
            ..output
        });
        ids.push(w.submit(spec).await);
    }
    let mut steps = Vec::new();
    for id in &ids {
        w.wait_done(id, Duration::from_secs(60)).await;
        steps.push(w.targets(id).await[&big[0]].steps[0].clone());
    }

    let s3 = &steps[0];
    assert_eq!(s3.stdout.len(), 100_000);
    assert_eq!(s3.stdout, expected, "whole, in order, from S3");
    assert!(!s3.stdout_truncated);
    assert!(s3.stdout_url.starts_with("s3://out/muster/test/"), "{}", s3.stdout_url);
    let logs = &steps[1];
    assert_eq!(logs.stdout, expected, "whole, in order, from CloudWatch Logs");
    assert!(!logs.stdout_truncated);
    assert!(
        logs.stdout_url.starts_with("cloudwatch:///muster/test/"),
        "{}",
        logs.stdout_url
    );
    let plain = &steps[2];
    assert_eq!(plain.stdout.len(), 24_000, "the API's limit");
    assert_eq!(plain.stdout, expected[..24_000]);
    assert!(plain.stdout_truncated, "the cut is marked");
    assert_eq!(plain.stdout_url, "", "and there is nowhere else to read it");
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_and_5xx_fail_no_target() {
    let mut tunables = test_tunables();
    tunables.throttling = true;
    tunables.quotas = vec![
        Quota::new("ssm", "SendCommand", 2.0, 2.0),
        Quota::new("ssm", "ListCommandInvocations", 5.0, 5.0),
    ];
    tunables.faults = vec![
        FaultRule::new("ssm", "SendCommand", FaultKind::Error500).every(4),
        FaultRule::new("ssm", "ListCommandInvocations", FaultKind::Error503).every(6),
        FaultRule::new("ec2", "DescribeInstances", FaultKind::Drop)
            .every(2)
            .limit(3),
    ];
    let sb = Sandbox::start_with(tunables).await;
    let fleet = r#"
name = "t"
external_id = "ext-t"
[[accounts]]
name = "many"
regions = ["us-east-1"]
  [[accounts.instances]]
  count = 500
  tags = { Role = "web", "muster-sim:duration" = "1" }
"#;
    let w = World::with_sandbox(sb, fleet, Duration::from_secs(15)).await;
    let worker = w.start_worker(Duration::from_secs(5)).await;
    // 50 batches of 10, each allowed more calls than the quota: the sim
    // throttles.
    let mut spec = w.spec("many", EAST, &[], &["true"]);
    let rate = spec.rate.as_mut().unwrap();
    rate.batch_size = 10;
    rate.api_calls_per_second = 10.0;
    let id = w.submit(spec).await;
    w.wait_done(&id, Duration::from_secs(180)).await;

    let targets = w.targets(&id).await;
    assert_eq!(targets.len(), 500, "discovery found every instance");
    let mut statuses = BTreeMap::new();
    for target in targets.values() {
        *statuses
            .entry(TargetStatus::try_from(target.status).unwrap().short_name())
            .or_insert(0) += 1;
    }
    assert_eq!(statuses, [("success", 500)].into(), "zero failed targets");
    let throttled =
        w.sb.count("ssm", "SendCommand", "throttled") + w.sb.count("ssm", "ListCommandInvocations", "throttled");
    let faults = w.sb.count("ssm", "SendCommand", "fault") + w.sb.count("ssm", "ListCommandInvocations", "fault");
    println!(
        "throttled calls: {throttled} (worker saw {}), injected faults: {faults}, SendCommand accepted: {}",
        worker.ctx.stats.total("throttled"),
        w.sb.count("ssm", "SendCommand", "ok")
    );
    assert!(throttled > 0, "the quota was exceeded and throttled");
    assert!(faults > 0, "faults were injected");
    assert!(
        w.sends_per_instance().values().all(|n| *n == 1),
        "a failed SendCommand is never a sent one"
    );
    // Each 500 refused its SendCommand before SSM took it: the lookup finds
    // nothing, and the worker sends again (or leaves it to the next attempt
    // after three), which /metrics shows.
    let stats = &worker.ctx.stats;
    let refused = w.sb.count("ssm", "SendCommand", "fault");
    assert!(stats.lost_sends("sent_again") > 0, "sent again after a refused send");
    assert_eq!(
        stats.lost_sends("sent_again") + stats.lost_sends("left_to_next_attempt"),
        refused,
        "every refused send, looked up and then sent again or left"
    );
    assert_eq!(
        stats.lost_sends("adopted"),
        0,
        "nothing to adopt: SSM took none of them"
    );
    let metrics = worker.ctx.render_metrics();
    assert!(
        metrics.contains(&format!(
            "muster_worker_lost_sends_total{{outcome=\"sent_again\"}} {}",
            stats.lost_sends("sent_again")
        )),
        "{metrics}"
    );
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_is_replaced_and_every_instance_runs_once() {
    let w = World::new(FLEET, Duration::from_secs(4)).await;
    let slow = w.ids("beta", EAST, "slow");
    let id = w.submit(w.spec("beta", EAST, &slow, &["sleep 8"])).await;

    let mut first = w.spawn_worker_process("first");
    let (world, campaign) = (&w, id.as_str());
    eventually(
        &w,
        "the first worker's SendCommand",
        Duration::from_secs(60),
        || async move { !world.sb.audit().is_empty() },
    )
    .await;
    eventually(
        &w,
        "the dispatch to be recorded",
        Duration::from_secs(10),
        || async move { !world.dispatches(campaign).await.is_empty() },
    )
    .await;
    first.kill().expect("SIGKILL");
    let _ = first.wait();

    let mut second = w.spawn_worker_process("second");
    w.wait_done(&id, Duration::from_secs(90)).await;
    let _ = second.kill();
    let _ = second.wait();

    let tasks = w.tasks(&id, TaskKind::Execute).await;
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].row.state, task_state::COMPLETED, "{:?}", tasks[0]);
    assert!(tasks[0].row.attempt >= 2, "a second attempt took over: {:?}", tasks[0]);
    let targets = w.targets(&id).await;
    assert_eq!(targets.len(), slow.len(), "every result arrived");
    assert!(targets.values().all(success), "{targets:?}");
    assert_eq!(
        w.sb.audit().len(),
        1,
        "the second worker adopted the command instead of sending again"
    );
    assert!(w.sends_per_instance().values().all(|n| *n == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_that_was_never_reported_is_found_by_its_comment() {
    // The controller never records the first worker's dispatch: the worker
    // dies between SendCommand and ReportDispatch, as far as anyone can tell.
    let w = World::new(FLEET, Duration::from_secs(4)).await;
    w.faults.lock().unwrap().refuse_dispatches = true;
    let slow = w.ids("beta", WEST, "slow");
    let id = w.submit(w.spec("beta", WEST, &slow, &["sleep 8"])).await;

    let mut first = w.spawn_worker_process("first");
    let world = &w;
    eventually(
        &w,
        "the first worker's SendCommand",
        Duration::from_secs(60),
        || async move { !world.sb.audit().is_empty() },
    )
    .await;
    first.kill().expect("SIGKILL");
    let _ = first.wait();
    assert!(
        w.dispatches(&id).await.is_empty(),
        "the controller knows nothing of the send"
    );
    w.faults.lock().unwrap().refuse_dispatches = false;

    let mut second = w.spawn_worker_process("second");
    w.wait_done(&id, Duration::from_secs(90)).await;
    let _ = second.kill();
    let _ = second.wait();

    assert_eq!(
        w.dispatches(&id).await.len(),
        1,
        "the second attempt reported the adopted command"
    );
    let targets = w.targets(&id).await;
    assert_eq!(targets.len(), slow.len());
    assert!(targets.values().all(success), "{targets:?}");
    assert_eq!(w.sb.audit().len(), 1, "no second SendCommand");
    assert!(w.log("second").contains("adopting a command"), "{}", w.log("second"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_task_ids_and_garbage_run_nothing() {
    let w = World::new(FLEET, Duration::from_secs(10)).await;
    let assumed_before = w.sb.count("sts", "AssumeRole", "ok");
    let worker = w.start_worker(Duration::from_secs(5)).await;
    w.enqueue(&TaskRef {
        campaign_id: uuid::Uuid::new_v4().to_string(),
        task_id: uuid::Uuid::new_v4().to_string(),
        attempt: 1,
    })
    .await;
    let sqs = aws_sdk_sqs::Client::new(&w.sb.hub_config(EAST));
    sqs.send_message()
        .queue_url(&w.queue_url)
        .message_body("rm -rf / # not a task reference")
        .send()
        .await
        .unwrap();
    let counts = || async {
        let attrs = sqs
            .get_queue_attributes()
            .queue_url(&w.queue_url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::All)
            .send()
            .await
            .unwrap()
            .attributes
            .unwrap_or_default();
        let get = |name| attrs.get(&name).and_then(|v| v.parse::<u32>().ok()).unwrap_or(0);
        (
            get(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages),
            get(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        )
    };
    // The unknown task's message is deleted; the garbage stays for the DLQ.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (visible, in_flight) = counts().await;
        if visible + in_flight == 1 && in_flight == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "queue still holds {visible} + {in_flight}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Both were handled, and neither leased: a positive signal that nothing
    // will run, not a pause.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while worker.ctx.stats.handled("unknown_task") == 0 || worker.ctx.stats.handled("malformed") == 0 {
        assert!(std::time::Instant::now() < deadline, "both messages handled");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(worker.ctx.stats.handled("granted"), 0, "nothing was leased");
    assert!(w.sb.audit().is_empty(), "nothing ran");
    assert_eq!(
        w.sb.count("sts", "AssumeRole", "ok"),
        assumed_before + 1,
        "no execution role was assumed (only the worker's own role)"
    );
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_role_fails_that_account_naming_account_and_role() {
    let w = World::new(FLEET, Duration::from_secs(10)).await;
    let worker = w.start_worker(Duration::from_secs(5)).await;
    let mut spec = w.spec("norole", EAST, &[], &["true"]);
    spec.targets.as_mut().unwrap().account_ids.push(w.account("gamma"));
    spec.targets.as_mut().unwrap().tags = vec![TagFilter {
        key: "Role".into(),
        values: vec!["web".into()],
    }];
    let id = w.submit(spec).await;
    w.wait_done(&id, Duration::from_secs(60)).await;

    let account = w.account("norole");
    let role = format!("arn:aws:iam::{account}:role/muster-execution");
    let discoveries = w.tasks(&id, TaskKind::Discover).await;
    let norole: Vec<_> = discoveries.iter().filter(|t| t.row.account_id == account).collect();
    assert_eq!(norole.len(), 1);
    let task = norole[0];
    assert_eq!(task.row.state, task_state::FAILED, "{task:?}");
    assert_eq!(
        task.leases.len(),
        1,
        "another attempt cannot fix a missing role: {task:?}"
    );
    let reason = &task.row.last_error;
    assert!(
        reason.contains(&account) && reason.contains(&role),
        "names account and role: {reason}"
    );
    assert!(reason.contains("AccessDenied"), "{reason}");

    let targets = w.targets(&id).await;
    let scope = targets
        .values()
        .find(|t| t.account_id == account)
        .expect("the scope's target");
    assert_eq!(scope.status, TargetStatus::Error as i32);
    assert_eq!(&scope.reason, reason, "the campaign's results say why");
    let gamma: Vec<&Target> = targets
        .values()
        .filter(|t| t.account_id == w.account("gamma"))
        .collect();
    assert_eq!(gamma.len(), w.ids("gamma", EAST, "web").len());
    assert!(gamma.iter().all(|t| success(t)), "{gamma:?}");
    assert!(w.sb.audit().iter().all(|e| e.account != account));
    worker.stop().await;
}

/// Runs `sleep 8` on beta's two slow instances and cancels the campaign
/// once the batch is sent: it ends Cancelled, and each instance says it was
/// cancelled under the command it was sent.
async fn cancel_a_sent_batch(w: &World) {
    let slow = w.ids("beta", EAST, "slow");
    let id = w.submit(w.spec("beta", EAST, &slow, &["sleep 8"])).await;
    let campaign = id.as_str();
    eventually(w, "the dispatch", Duration::from_secs(30), || async move {
        !w.dispatches(campaign).await.is_empty()
    })
    .await;
    w.cancel(&id).await;
    let ended = w.wait_done(&id, Duration::from_secs(30)).await;
    assert_eq!(CampaignState::try_from(ended.state), Ok(CampaignState::Cancelled));
    let targets = w.targets(&id).await;
    assert_eq!(targets.len(), 2);
    for target in targets.values() {
        assert_eq!(target.status, TargetStatus::Cancelled as i32, "{target:?}");
        assert!(!target.command_id.is_empty(), "it was sent: {target:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_commands_in_flight() {
    let w = World::new(FLEET, Duration::from_secs(3)).await;
    let worker = w.start_worker(Duration::from_secs(5)).await;
    cancel_a_sent_batch(&w).await;
    assert_eq!(w.sb.count("ssm", "CancelCommand", "ok"), 1);
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_answered_while_the_first_command_runs_stops_the_second() {
    // A lease of a minute is renewed every 20 s, long after the first
    // command (8 s) ends and the second would go out: the worker asks the
    // controller right before it sends, and hears of the cancel then. The
    // controller's long poll does not tell of the cancel (as an older
    // controller's would not), so the running command is not cancelled
    // and the guard before the send is what stops the second.
    let w = World::new(FLEET, Duration::from_secs(60)).await;
    w.faults.lock().unwrap().cancels_untold = true;
    let worker = w.start_worker(Duration::from_secs(5)).await;
    let slow = w.ids("beta", EAST, "slow");
    let mut spec = w.spec("beta", EAST, &slow, &["sleep 8"]);
    spec.then = spec.command.clone().into_iter().collect();
    let id = w.submit(spec).await;
    let (world, campaign) = (&w, id.as_str());
    eventually(
        &w,
        "the first command's dispatch",
        Duration::from_secs(30),
        || async move { !world.dispatches(campaign).await.is_empty() },
    )
    .await;
    w.cancel(&id).await;
    let ended = w.wait_done(&id, Duration::from_secs(60)).await;
    assert_eq!(CampaignState::try_from(ended.state), Ok(CampaignState::Cancelled));
    let sent: Vec<String> = w.sb.audit().into_iter().map(|e| e.comment).collect();
    assert_eq!(sent.len(), 1, "the first command only: {sent:?}");
    assert!(!sent[0].contains(" command 2"), "{sent:?}");
    let targets = w.targets(&id).await;
    assert_eq!(targets.len(), 2);
    for target in targets.values() {
        assert_eq!(target.status, TargetStatus::Cancelled as i32, "{target:?}");
        assert_eq!(
            target.reason, "command 2 of 2: cancelled before it was sent",
            "{target:?}"
        );
    }
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_reaches_running_commands_at_once_not_at_the_next_renewal() {
    // A lease of a minute is renewed every 20 s; the command runs 12 s.
    // Heard only from renewals, the cancel would come after the command
    // had run to its end on every instance. The worker's long poll names
    // the campaign, and the controller answers it as soon as the cancel is
    // asked for (here without Run Command events: the long poll serves
    // cancels either way).
    let w = World::new(FLEET, Duration::from_secs(60)).await;
    let worker = w.start_worker(Duration::from_secs(5)).await;
    let slow = w.ids("beta", EAST, "slow");
    let id = w.submit(w.spec("beta", EAST, &slow, &["sleep 12"])).await;
    let (world, campaign) = (&w, id.as_str());
    eventually(&w, "the dispatch", Duration::from_secs(30), || async move {
        !world.dispatches(campaign).await.is_empty()
    })
    .await;
    let asked = std::time::Instant::now();
    w.cancel(&id).await;
    let ended = w.wait_done(&id, Duration::from_secs(60)).await;
    // A figure for people, not a check: the check is how the targets ended.
    eprintln!("the campaign ended CANCELLED {:?} after the cancel", asked.elapsed());
    assert_eq!(CampaignState::try_from(ended.state), Ok(CampaignState::Cancelled));
    assert_eq!(w.sb.count("ssm", "CancelCommand", "ok"), 1);
    let targets = w.targets(&id).await;
    assert_eq!(targets.len(), 2);
    for target in targets.values() {
        assert_eq!(
            target.status,
            TargetStatus::Cancelled as i32,
            "cancelled while it ran, not run to its end: {target:?}"
        );
        assert!(!target.command_id.is_empty(), "it was sent: {target:?}");
    }
    assert_eq!(w.sb.audit().len(), 1, "one command, sent once");
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_whose_answer_was_lost_is_made_again_and_the_batch_ends_cancelled() {
    // SSM cancels the command, but its answer is a 500: the worker cancels
    // again (CancelCommand is safe to repeat: the instances already ended
    // stay as they ended) and reports where each instance ended.
    let mut tunables = test_tunables();
    tunables.faults = vec![
        FaultRule::new("ssm", "CancelCommand", FaultKind::Error500)
            .after_effect()
            .limit(1),
    ];
    let w = World::with_sandbox(Sandbox::start_with(tunables).await, FLEET, Duration::from_secs(3)).await;
    let worker = w.start_worker(Duration::from_secs(5)).await;
    cancel_a_sent_batch(&w).await;
    assert_eq!(
        w.sb.count("ssm", "CancelCommand", "fault_after"),
        1,
        "the first cancel took effect and lost its answer"
    );
    assert_eq!(
        w.sb.count("ssm", "CancelCommand", "ok"),
        2,
        "SSM served it, and its repeat"
    );
    assert_eq!(w.sb.audit().len(), 1, "one command, never sent again");
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_in_hands_work_back_and_loses_nothing() {
    let w = World::new(FLEET, Duration::from_secs(10)).await;
    let first = w.start_worker(Duration::from_millis(500)).await;
    let slow = w.ids("beta", WEST, "slow");
    let id = w.submit(w.spec("beta", WEST, &slow, &["sleep 8"])).await;
    let (world, campaign) = (&w, id.as_str());
    eventually(&w, "the dispatch", Duration::from_secs(30), || async move {
        !world.dispatches(campaign).await.is_empty()
    })
    .await;
    // SIGTERM: half a second of grace, then the task goes back to the
    // controller, which keeps its attempts.
    first.stop().await;
    assert_handed_back(&w, &id, TaskKind::Execute, "worker stopping").await;
    finish_on_another_worker(&w, &id, &slow, "adopted, not sent again").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_in_hands_back_a_discovery_still_waiting_on_aws() {
    let w = World::new(FLEET, Duration::from_secs(10)).await;
    // EC2 answers every DescribeInstances 20 s late, so the discovery is
    // still waiting on it when the worker stops, well past its grace.
    w.sb.tune(|t| t.faults = vec![FaultRule::slow("ec2", "DescribeInstances", 20_000)]);
    let first = w.start_worker(Duration::from_millis(500)).await;
    let web = w.ids("alpha", WEST, "web");
    let id = w.submit(w.spec("alpha", WEST, &web, &["echo found"])).await;
    let world = &w;
    eventually(
        &w,
        "the discovery's DescribeInstances",
        Duration::from_secs(30),
        || async move { world.sb.count("ec2", "DescribeInstances", "fault:slow") > 0 },
    )
    .await;
    first.stop().await;
    // Handed back, not finished by the stopping worker nor left to expire:
    // no attempt spent, and another worker lists the scope again.
    assert_handed_back(
        &w,
        &id,
        TaskKind::Discover,
        "worker stopping; the next attempt lists the scope again",
    )
    .await;
    assert!(w.targets(&id).await.is_empty(), "nothing discovered yet");

    w.sb.tune(|t| t.faults.clear());
    finish_on_another_worker(&w, &id, &web, "one command, sent once").await;
}

/// The campaign's one task of `kind` went back at the worker's stop: one
/// lease, handed back with `why` as its error, queued again with no attempt
/// spent.
async fn assert_handed_back(w: &World, id: &str, kind: TaskKind, why: &str) {
    let task = w.tasks(id, kind).await.remove(0);
    assert_eq!(task.leases, [(1, "handed back".to_owned())], "{task:?}");
    assert!(task.row.last_error.contains(why), "{task:?}");
    assert_eq!(task.row.state, task_state::QUEUED, "queued for another attempt");
}

/// Another worker takes the campaign to its end: each of `ids` succeeded,
/// from one SendCommand in all (`one_send` says why one).
async fn finish_on_another_worker(w: &World, id: &str, ids: &[String], one_send: &str) {
    let second = w.start_worker(Duration::from_secs(5)).await;
    w.wait_done(id, Duration::from_secs(60)).await;
    let targets = w.targets(id).await;
    assert_eq!(targets.keys().collect::<BTreeSet<_>>(), ids.iter().collect());
    assert!(targets.values().all(success), "{targets:?}");
    assert_eq!(w.sb.audit().len(), 1, "{one_send}");
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_shorter_than_the_work_are_refreshed_in_time() {
    let w = World::new(FLEET, Duration::from_secs(10)).await;
    // Every session lasts 6 s; the commands take 8 s.
    w.sb.tune(|t| t.session_ttl_seconds = Some(6));
    let worker = w.start_worker(Duration::from_secs(5)).await;
    let slow = w.ids("beta", EAST, "slow");
    let id = w.submit(w.spec("beta", EAST, &slow, &["sleep 8"])).await;
    w.wait_done(&id, Duration::from_secs(60)).await;
    let targets = w.targets(&id).await;
    assert_eq!(targets.len(), slow.len());
    assert!(targets.values().all(success), "{targets:?}");
    let expired: u64 =
        w.sb.state()
            .counters
            .lock()
            .unwrap()
            .iter()
            .filter(|((_, _, outcome), _)| outcome == "expired_token")
            .map(|(_, n)| n)
            .sum();
    assert_eq!(expired, 0, "no call was made with expired credentials");
    assert!(
        worker.ctx.credentials.refreshes() >= 2,
        "the session was refreshed before it expired"
    );
    worker.stop().await;
}

/// One account with `count` quick Linux instances.
fn one_scope(count: usize) -> String {
    format!(
        r#"
name = "t"
external_id = "ext-t"
[[accounts]]
name = "many"
regions = ["us-east-1"]
  [[accounts.instances]]
  count = {count}
  tags = {{ Role = "web", "muster-sim:duration" = "0.5" }}
"#
    )
}

fn after_effect(kind: FaultKind, every: u64) -> FaultRule {
    FaultRule::new("ssm", "SendCommand", kind).every(every).after_effect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_whose_answer_was_lost_is_adopted_not_sent_again() {
    // SSM accepts every SendCommand; every second answer is a 500 and every
    // third of the rest a dropped connection. A retry would run the batch twice.
    let mut tunables = test_tunables();
    tunables.faults = vec![after_effect(FaultKind::Error500, 2), after_effect(FaultKind::Drop, 3)];
    let w = World::with_sandbox(
        Sandbox::start_with(tunables).await,
        &one_scope(120),
        Duration::from_secs(10),
    )
    .await;
    let worker = w.start_worker(Duration::from_secs(5)).await;
    let ids = w.ids("many", EAST, "web");
    let mut spec = w.spec("many", EAST, &[], &["echo once"]);
    spec.rate.as_mut().unwrap().batch_size = 10;
    let id = w.submit(spec).await;
    w.wait_done(&id, Duration::from_secs(120)).await;

    let lost = w.sb.count("ssm", "SendCommand", "fault_after");
    assert!(lost >= 6, "answers were lost after the effect: {lost}");
    let sends = w.sends_per_instance();
    assert_eq!(sends.len(), ids.len(), "every instance got the command");
    let twice: Vec<_> = sends.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "instances that ran more than once: {twice:?}");
    let tasks = w.tasks(&id, TaskKind::Execute).await;
    assert_eq!(tasks.len(), 12, "batches of 10");
    for task in &tasks {
        assert_eq!(task.row.state, task_state::COMPLETED, "{task:?}");
        assert_eq!(
            task.dispatches.len(),
            1,
            "one command per batch, adopted or sent: {task:?}"
        );
    }
    let targets = w.targets(&id).await;
    assert!(targets.values().all(success), "{targets:?}");
    let stats = &worker.ctx.stats;
    assert_eq!(
        stats.lost_sends("adopted"),
        lost,
        "each lost answer's command was found and adopted"
    );
    assert_eq!(stats.lost_sends("sent_again"), 0, "none sent again");
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_waiting_out_throttling_is_not_made_once_the_lease_is_lost() {
    // One SendCommand token: the first campaign takes it, the second's batch
    // waits in throttling backoff while its lease runs out.
    let mut tunables = test_tunables();
    tunables.throttling = true;
    tunables.quotas = vec![Quota::new("ssm", "SendCommand", 0.0001, 1.0)];
    let w = World::with_sandbox(
        Sandbox::start_with(tunables).await,
        &one_scope(20),
        Duration::from_secs(3),
    )
    .await;
    let worker = w.start_worker(Duration::from_secs(5)).await;
    let ids = w.ids("many", EAST, "web");
    let first = w.submit(w.spec("many", EAST, &ids[..10], &["echo once"])).await;
    w.wait_done(&first, Duration::from_secs(60)).await;

    let second = w.submit(w.spec("many", EAST, &ids[10..], &["echo once"])).await;
    let world = &w;
    eventually(
        &w,
        "the second batch to be throttled",
        Duration::from_secs(60),
        || async move { world.sb.count("ssm", "SendCommand", "throttled") >= 1 },
    )
    .await;
    // The worker loses touch with the controller over this task: its
    // renewals fail, the lease runs out, and the controller queues another
    // attempt (which this worker cannot lease either).
    {
        let mut faults = w.faults.lock().unwrap();
        faults.unreachable_renewals.insert(second.clone());
        faults.unreachable_leases.insert(second.clone());
    }
    let campaign = second.as_str();
    eventually(&w, "the lease to expire", Duration::from_secs(30), || async move {
        world
            .tasks(campaign, TaskKind::Execute)
            .await
            .iter()
            .any(|t| t.row.attempt >= 2)
    })
    .await;
    // Back in touch, the worker hears that the lease is gone.
    w.faults.lock().unwrap().unreachable_renewals.clear();
    let worker = &worker;
    eventually(
        &w,
        "the worker to drop the task",
        Duration::from_secs(60),
        || async move { worker.ctx.stats.running_tasks() == 0 },
    )
    .await;
    w.sb.tune(|t| t.throttling = false);

    let audit = w.sb.audit();
    assert_eq!(audit.len(), 1, "only the first batch was sent: {audit:?}");
    assert!(
        ids[10..].iter().all(|id| !w.sends_per_instance().contains_key(id)),
        "the second batch never went out"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_ssm_stays_silent_about_is_cancelled_then_reported_error() {
    // One instance's agent is lost mid-run: SSM says InProgress for good,
    // past every timeout, and the cancel never reaches it. The worker
    // cancels the overdue command (so it cannot run on unseen), gives SSM
    // its grace, then reports that instance ERROR naming the command.
    let fleet = r#"
name = "t"
external_id = "ext-t"
[[accounts]]
name = "many"
regions = ["us-east-1"]
  [[accounts.instances]]
  count = 2
  tags = { Role = "web", "muster-sim:duration" = "0.5" }
  [[accounts.instances]]
  count = 1
  tags = { Role = "lost", "muster-sim:stuck" = "true" }
"#;
    let w = World::new(fleet, Duration::from_secs(10)).await;
    let worker = w
        .start_worker_tuned(Duration::from_secs(5), |ctx| {
            ctx.overdue_margin = Duration::from_secs(1);
            ctx.abandon_grace = Duration::from_secs(2);
        })
        .await;
    let lost = w.ids("many", EAST, "lost");
    let mut spec = w.spec("many", EAST, &[], &["echo once"]);
    let command = spec.command.as_mut().unwrap();
    command.delivery_timeout_seconds = 30;
    command.execution_timeout_seconds = 2;
    let id = w.submit(spec).await;
    // 30 s delivery + 2 s execution + 1 s margin, found by a poll at most
    // 20 s later, then the 2 s grace.
    w.wait_done(&id, Duration::from_secs(120)).await;

    let dispatches = w.dispatches(&id).await;
    assert_eq!(dispatches.len(), 1, "{dispatches:?}");
    let command_id = &dispatches[0];
    let targets = w.targets(&id).await;
    assert_eq!(targets.len(), 3);
    for (instance, target) in &targets {
        if lost.contains(instance) {
            assert_eq!(target.status, TargetStatus::Error as i32, "{target:?}");
            assert_eq!(&target.command_id, command_id, "the result names the command");
            assert!(
                target
                    .reason
                    .starts_with(&format!("SSM gave no final status for command {command_id} within")),
                "{}",
                target.reason
            );
            assert!(target.reason.ends_with("it was cancelled"), "{}", target.reason);
        } else {
            assert!(success(target), "{target:?}");
        }
    }
    assert_eq!(
        w.sb.count("ssm", "CancelCommand", "ok"),
        1,
        "the overdue command was cancelled once"
    );
    assert_eq!(w.sb.audit().len(), 1, "and never sent again");
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_heard_of_after_its_ttl_sends_nothing() {
    // The controller grants attempt 1, but the worker hears of it only after
    // the TTL (it was paused, or the network was slow): by then the lease
    // has expired and attempt 2 has been handed out. Counting the TTL from
    // the answer, the worker sent attempt 1's command as well as attempt
    // 2's: every instance of the batch ran twice (chaos seed 2083).
    let w = World::new(&one_scope(3), Duration::from_secs(2)).await;
    w.faults.lock().unwrap().late_execute_grant = Some((1, Duration::from_millis(3_500)));
    let worker = w.start_worker(Duration::from_secs(5)).await;
    let ids = w.ids("many", EAST, "web");
    let id = w.submit(w.spec("many", EAST, &ids, &["echo once"])).await;
    w.wait_done(&id, Duration::from_secs(60)).await;

    let tasks = w.tasks(&id, TaskKind::Execute).await;
    assert_eq!(tasks.len(), 1);
    assert!(
        tasks[0].row.attempt >= 2,
        "attempt 1's lease expired before it was heard of: {:?}",
        tasks[0]
    );
    let sends = w.sends_per_instance();
    assert_eq!(sends.len(), ids.len(), "every instance got the command");
    let twice: Vec<_> = sends.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "instances that ran more than once: {twice:?}");
    let targets = w.targets(&id).await;
    assert!(targets.values().all(success), "{targets:?}");
    worker.stop().await;
}
