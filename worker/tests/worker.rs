//! The worker against moto + muster-sim and an in-process WorkerService: each
//! test is one behaviour of issue 3 as an operator would notice it.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use muster_proto::v1::{Platform, TargetStatus, TaskRef};
use muster_sim::ssm::output::filler;
use muster_sim::testkit::{Sandbox, test_tunables};
use muster_sim::{FaultKind, FaultRule, FaultWhen, Quota};
use support::{Phase, World, eventually};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovers_and_executes_across_accounts_regions_and_platforms() {
    let w = World::new(FLEET, Duration::from_secs(10)).await;
    let worker = w.start_worker(Duration::from_secs(5)).await;

    // Discovery: every instance reported, the offline one skipped with why.
    let mut discover = Vec::new();
    for account in ["alpha", "beta", "gamma"] {
        for region in [EAST, WEST] {
            let task = w.discover_task(account, region);
            discover.push((account, region, task.task_id.clone()));
            w.ctl.add(task).await;
        }
    }
    w.ctl.wait_all_done(Duration::from_secs(60)).await;
    for (account, region, task_id) in &discover {
        let task = w.ctl.task(task_id);
        assert_eq!(task.phase, Phase::Completed, "{account}/{region}: {:?}", task.failures);
        let seeded = &w.fleet.account(account).unwrap().instances[*region];
        assert_eq!(
            task.discovered.len(),
            seeded.len(),
            "{account}/{region} reported every instance"
        );
        for found in &task.discovered {
            let seed = seeded
                .iter()
                .find(|s| s.id == found.instance_id)
                .expect("a seeded instance");
            let windows = seed.platform == muster_sim::seed::fleet_file::PlatformSpec::Windows;
            assert_eq!(
                found.platform == Platform::Windows as i32,
                windows,
                "platform of {}",
                found.instance_id
            );
            if seed.tags.get("Role").map(String::as_str) == Some("offline") {
                assert!(found.skip_reason.contains("offline"), "{found:?}");
            } else {
                assert_eq!(found.skip_reason, "", "{found:?}");
            }
        }
    }

    // Execution: Linux and Windows batches in every scope.
    let mut execute = Vec::new();
    for (account, region) in [
        ("alpha", EAST),
        ("alpha", WEST),
        ("beta", EAST),
        ("beta", WEST),
        ("gamma", EAST),
        ("gamma", WEST),
    ] {
        let linux: Vec<String> = ["web", "fail"].iter().flat_map(|r| w.ids(account, region, r)).collect();
        let windows = w.ids(account, region, "win");
        for (platform, ids) in [(Platform::Linux, linux), (Platform::Windows, windows)] {
            if ids.is_empty() {
                continue;
            }
            let task = w.execute_task(account, region, platform, &ids, &["echo patched"]);
            execute.push((account, region, platform, task.task_id.clone(), ids));
            w.ctl.add(task).await;
        }
    }
    w.ctl.wait_all_done(Duration::from_secs(60)).await;
    for (account, region, platform, task_id, ids) in &execute {
        let task = w.ctl.task(task_id);
        assert_eq!(task.phase, Phase::Completed, "{account}/{region}: {:?}", task.failures);
        assert_eq!(task.results.len(), ids.len(), "every instance has a result");
        for id in ids {
            let result = &task.results[id];
            let failing = w.ids(account, region, "fail").contains(id);
            if failing {
                assert_eq!(result.status, TargetStatus::Failed as i32);
                assert_eq!(result.exit_code, Some(3));
                assert_eq!(result.reason, "exit code 3");
                assert!(result.steps[0].stderr.contains("exit code 3"));
            } else {
                assert_eq!(result.status, TargetStatus::Success as i32, "{result:?}");
                assert_eq!(result.exit_code, Some(0));
                let expected = if *platform == Platform::Windows {
                    "AWS-RunPowerShellScript"
                } else {
                    "AWS-RunShellScript"
                };
                assert!(result.steps[0].stdout.contains(expected), "{:?}", result.steps[0]);
            }
            assert!(!result.command_id.is_empty());
        }
    }
    // The audit log: Windows batches used PowerShell, and nothing ran twice.
    let audit = w.sb.audit();
    for (account, region, platform, _, ids) in &execute {
        let wanted: BTreeSet<&String> = ids.iter().collect();
        let entry = audit
            .iter()
            .find(|e| {
                e.account == w.account(account)
                    && e.region == *region
                    && e.instance_ids.iter().collect::<BTreeSet<_>>() == wanted
            })
            .expect("the batch is in the audit log");
        let expected = if *platform == Platform::Windows {
            "AWS-RunPowerShellScript"
        } else {
            "AWS-RunShellScript"
        };
        assert_eq!(entry.document_name, expected);
        assert!(
            entry.principal.contains(":assumed-role/muster-execution/muster-"),
            "{}",
            entry.principal
        );
    }
    assert!(w.sends_per_instance().values().all(|n| *n == 1));
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_output_comes_back_whole_from_s3_and_cloudwatch_and_marked_truncated_without() {
    let w = World::new(FLEET, Duration::from_secs(10)).await;
    let worker = w.start_worker(Duration::from_secs(5)).await;
    let big = w.ids("beta", EAST, "big");
    let expected = filler(&big[0], "stdout", 100_000);

    let mut via_s3 = w.execute_task("beta", EAST, Platform::Linux, &big, &["cat big"]);
    let spec = via_s3.execute.as_mut().unwrap();
    spec.output_s3_bucket = "out".into();
    spec.output_s3_key_prefix = "muster/test".into();
    spec.keep_bytes = 200_000;
    let mut via_logs = w.execute_task("beta", EAST, Platform::Linux, &big, &["cat big"]);
    let spec = via_logs.execute.as_mut().unwrap();
    spec.cloudwatch_log_group = "/muster/test".into();
    spec.keep_bytes = 200_000;
    let mut plain = w.execute_task("beta", EAST, Platform::Linux, &big, &["cat big"]);
    plain.execute.as_mut().unwrap().keep_bytes = 200_000;
    let ids = [via_s3.task_id.clone(), via_logs.task_id.clone(), plain.task_id.clone()];
    for task in [via_s3, via_logs, plain] {
        w.ctl.add(task).await;
    }
    w.ctl.wait_all_done(Duration::from_secs(60)).await;

    let step = |task_id: &str| w.ctl.task(task_id).results[&big[0]].steps[0].clone();
    let s3 = step(&ids[0]);
    assert_eq!(s3.stdout.len(), 100_000);
    assert_eq!(s3.stdout, expected, "whole, in order, from S3");
    assert!(!s3.stdout_truncated);
    assert!(s3.stdout_url.starts_with("s3://out/muster/test/"), "{}", s3.stdout_url);
    let logs = step(&ids[1]);
    assert_eq!(logs.stdout, expected, "whole, in order, from CloudWatch Logs");
    assert!(!logs.stdout_truncated);
    assert!(
        logs.stdout_url.starts_with("cloudwatch:///muster/test/"),
        "{}",
        logs.stdout_url
    );
    let plain = step(&ids[2]);
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
        Quota {
            service: "ssm".into(),
            api: "SendCommand".into(),
            rate: 5.0,
            burst: 5.0,
        },
        Quota {
            service: "ssm".into(),
            api: "ListCommandInvocations".into(),
            rate: 5.0,
            burst: 5.0,
        },
    ];
    tunables.faults = vec![
        FaultRule {
            service: "ssm".into(),
            api: "SendCommand".into(),
            kind: FaultKind::Error500,
            probability: 0.0,
            every: Some(4),
            limit: None,
            when: FaultWhen::Before,
            delay_ms: 0,
        },
        FaultRule {
            service: "ssm".into(),
            api: "ListCommandInvocations".into(),
            kind: FaultKind::Error503,
            probability: 0.0,
            every: Some(6),
            limit: None,
            when: FaultWhen::Before,
            delay_ms: 0,
        },
        FaultRule {
            service: "ec2".into(),
            api: "DescribeInstances".into(),
            kind: FaultKind::Drop,
            probability: 0.0,
            every: Some(2),
            limit: Some(3),
            when: FaultWhen::Before,
            delay_ms: 0,
        },
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
    let discover = w.discover_task("many", EAST);
    let discover_id = discover.task_id.clone();
    w.ctl.add(discover).await;
    // 50 batches of 10, each lease allowed more than the quota: the sim throttles.
    let ids = w.ids("many", EAST, "web");
    let mut tasks = Vec::new();
    for chunk in ids.chunks(10) {
        let mut task = w.execute_task("many", EAST, Platform::Linux, chunk, &["true"]);
        task.api_calls_per_second = 10.0;
        tasks.push(task.task_id.clone());
        w.ctl.add(task).await;
    }
    w.ctl.wait_all_done(Duration::from_secs(180)).await;
    assert_eq!(w.ctl.task(&discover_id).discovered.len(), 500);
    let mut statuses = std::collections::BTreeMap::new();
    for task_id in &tasks {
        let task = w.ctl.task(task_id);
        assert_eq!(task.phase, Phase::Completed, "{:?}", task.failures);
        for result in task.results.values() {
            *statuses
                .entry(TargetStatus::try_from(result.status).unwrap().short_name())
                .or_insert(0) += 1;
        }
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
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_is_replaced_and_every_instance_runs_once() {
    let w = World::new(FLEET, Duration::from_secs(4)).await;
    let slow = w.ids("beta", EAST, "slow");
    let task = w.execute_task("beta", EAST, Platform::Linux, &slow, &["sleep 8"]);
    let task_id = task.task_id.clone();
    w.ctl.add(task).await;

    let mut first = w.spawn_worker_process("first");
    eventually(&w, "the first worker's SendCommand", Duration::from_secs(60), || {
        !w.sb.audit().is_empty()
    })
    .await;
    eventually(&w, "the dispatch to be recorded", Duration::from_secs(10), || {
        !w.ctl.task(&task_id).dispatches.is_empty()
    })
    .await;
    first.kill().expect("SIGKILL");
    let _ = first.wait();

    let mut second = w.spawn_worker_process("second");
    w.ctl.wait_all_done(Duration::from_secs(90)).await;
    let _ = second.kill();
    let _ = second.wait();

    let task = w.ctl.task(&task_id);
    assert_eq!(task.phase, Phase::Completed, "{:?}\n{}", task.failures, w.log("second"));
    assert!(task.task.attempt >= 2, "a second attempt took over");
    assert_eq!(task.results.len(), slow.len(), "every result arrived");
    assert!(task.results.values().all(|r| r.status == TargetStatus::Success as i32));
    assert_eq!(
        w.sb.audit().len(),
        1,
        "the second worker adopted the command instead of sending again"
    );
    assert!(w.sends_per_instance().values().all(|n| *n == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_that_was_never_reported_is_found_by_its_comment() {
    // The controller never records attempt 1's dispatch: the worker dies
    // between SendCommand and ReportDispatch, as far as anyone can tell.
    let w = World::new(FLEET, Duration::from_secs(4)).await;
    w.ctl.state.lock().unwrap().refuse_dispatch_of_attempt = Some(1);
    let slow = w.ids("beta", WEST, "slow");
    let task = w.execute_task("beta", WEST, Platform::Linux, &slow, &["sleep 8"]);
    let task_id = task.task_id.clone();
    w.ctl.add(task).await;

    let mut first = w.spawn_worker_process("first");
    eventually(&w, "the first worker's SendCommand", Duration::from_secs(60), || {
        !w.sb.audit().is_empty()
    })
    .await;
    first.kill().expect("SIGKILL");
    let _ = first.wait();
    assert!(
        w.ctl.task(&task_id).dispatches.is_empty(),
        "the controller knows nothing of the send"
    );

    let mut second = w.spawn_worker_process("second");
    w.ctl.wait_all_done(Duration::from_secs(90)).await;
    let _ = second.kill();
    let _ = second.wait();

    let task = w.ctl.task(&task_id);
    assert_eq!(task.phase, Phase::Completed, "{:?}", task.failures);
    assert_eq!(
        task.dispatches.len(),
        1,
        "the second attempt reported the adopted command"
    );
    assert_eq!(task.results.len(), slow.len());
    assert_eq!(w.sb.audit().len(), 1, "no second SendCommand");
    assert!(w.log("second").contains("adopting a command"), "{}", w.log("second"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_task_ids_and_garbage_run_nothing() {
    let w = World::new(FLEET, Duration::from_secs(10)).await;
    let assumed_before = w.sb.count("sts", "AssumeRole", "ok");
    let worker = w.start_worker(Duration::from_secs(5)).await;
    w.ctl
        .enqueue(&TaskRef {
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
    let norole_discover = w.discover_task("norole", EAST);
    let norole_execute = w.execute_task(
        "norole",
        EAST,
        Platform::Linux,
        &w.ids("norole", EAST, "web"),
        &["true"],
    );
    let fine = w.execute_task("gamma", EAST, Platform::Linux, &w.ids("gamma", EAST, "web"), &["true"]);
    let ids = [
        norole_discover.task_id.clone(),
        norole_execute.task_id.clone(),
        fine.task_id.clone(),
    ];
    for task in [norole_discover, norole_execute, fine] {
        w.ctl.add(task).await;
    }
    w.ctl.wait_all_done(Duration::from_secs(60)).await;
    let account = w.account("norole");
    let role = format!("arn:aws:iam::{account}:role/muster-execution");
    for task_id in &ids[..2] {
        let task = w.ctl.task(task_id);
        assert_eq!(task.phase, Phase::Failed);
        let (reason, retryable) = &task.failures[0];
        assert!(
            reason.contains(&account) && reason.contains(&role),
            "names account and role: {reason}"
        );
        assert!(reason.contains("AccessDenied"), "{reason}");
        assert!(!retryable, "another attempt cannot fix a missing role");
    }
    let fine = w.ctl.task(&ids[2]);
    assert_eq!(fine.phase, Phase::Completed);
    assert!(fine.results.values().all(|r| r.status == TargetStatus::Success as i32));
    assert!(w.sb.audit().iter().all(|e| e.account != account));
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_commands_in_flight() {
    let w = World::new(FLEET, Duration::from_secs(3)).await;
    let worker = w.start_worker(Duration::from_secs(5)).await;
    let slow = w.ids("beta", EAST, "slow");
    let task = w.execute_task("beta", EAST, Platform::Linux, &slow, &["sleep 8"]);
    let task_id = task.task_id.clone();
    w.ctl.add(task).await;
    eventually(&w, "the dispatch", Duration::from_secs(30), || {
        !w.ctl.task(&task_id).dispatches.is_empty()
    })
    .await;
    w.ctl.cancel_campaign(&w.campaign_id);
    w.ctl.wait_all_done(Duration::from_secs(30)).await;
    let task = w.ctl.task(&task_id);
    assert_eq!(task.phase, Phase::Completed);
    assert_eq!(task.results.len(), 2);
    assert!(
        task.results
            .values()
            .all(|r| r.status == TargetStatus::Cancelled as i32),
        "{:?}",
        task.results
    );
    assert_eq!(w.sb.count("ssm", "CancelCommand", "ok"), 1);
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_in_hands_work_back_and_loses_nothing() {
    let w = World::new(FLEET, Duration::from_secs(10)).await;
    let first = w.start_worker(Duration::from_millis(500)).await;
    let slow = w.ids("beta", WEST, "slow");
    let task = w.execute_task("beta", WEST, Platform::Linux, &slow, &["sleep 8"]);
    let task_id = task.task_id.clone();
    w.ctl.add(task).await;
    eventually(&w, "the dispatch", Duration::from_secs(30), || {
        !w.ctl.task(&task_id).dispatches.is_empty()
    })
    .await;
    // SIGTERM: half a second of grace, then the task goes back to the controller.
    first.stop().await;
    let handed_back = w.ctl.task(&task_id);
    assert_eq!(handed_back.failures.len(), 1);
    assert!(handed_back.failures[0].1, "handed back as retryable");
    assert!(
        handed_back.failures[0].0.contains("worker stopping"),
        "{:?}",
        handed_back.failures
    );

    let second = w.start_worker(Duration::from_secs(5)).await;
    w.ctl.wait_all_done(Duration::from_secs(60)).await;
    let task = w.ctl.task(&task_id);
    assert_eq!(task.phase, Phase::Completed);
    assert_eq!(task.results.len(), 2);
    assert_eq!(w.sb.audit().len(), 1, "adopted, not sent again");
    let ids: BTreeSet<&String> = task.results.keys().collect();
    assert_eq!(ids, slow.iter().collect());
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_shorter_than_the_work_are_refreshed_in_time() {
    let w = World::new(FLEET, Duration::from_secs(10)).await;
    // Every session lasts 6 s; the commands take 8 s.
    w.sb.tune(|t| t.session_ttl_seconds = Some(6));
    let worker = w.start_worker(Duration::from_secs(5)).await;
    let slow = w.ids("beta", EAST, "slow");
    let task = w.execute_task("beta", EAST, Platform::Linux, &slow, &["sleep 8"]);
    let task_id = task.task_id.clone();
    w.ctl.add(task).await;
    w.ctl.wait_all_done(Duration::from_secs(60)).await;
    let task = w.ctl.task(&task_id);
    assert_eq!(task.phase, Phase::Completed, "{:?}", task.failures);
    assert!(task.results.values().all(|r| r.status == TargetStatus::Success as i32));
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
    FaultRule {
        service: "ssm".into(),
        api: "SendCommand".into(),
        kind,
        probability: 0.0,
        every: Some(every),
        limit: None,
        when: FaultWhen::After,
        delay_ms: 0,
    }
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
    let mut tasks = Vec::new();
    for chunk in ids.chunks(10) {
        let task = w.execute_task("many", EAST, Platform::Linux, chunk, &["echo once"]);
        tasks.push(task.task_id.clone());
        w.ctl.add(task).await;
    }
    w.ctl.wait_all_done(Duration::from_secs(120)).await;

    let lost = w.sb.count("ssm", "SendCommand", "fault_after");
    assert!(lost >= 6, "answers were lost after the effect: {lost}");
    let sends = w.sends_per_instance();
    assert_eq!(sends.len(), ids.len(), "every instance got the command");
    let twice: Vec<_> = sends.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "instances that ran more than once: {twice:?}");
    for task_id in &tasks {
        let task = w.ctl.task(task_id);
        assert_eq!(task.phase, Phase::Completed, "{:?}", task.failures);
        assert_eq!(task.dispatches.len(), 1, "one command per batch, adopted or sent");
        assert!(
            task.results.values().all(|r| r.status == TargetStatus::Success as i32),
            "{:?}",
            task.results
        );
    }
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_waiting_out_throttling_is_not_made_once_the_lease_is_lost() {
    // One SendCommand token: the first batch takes it, the second waits in
    // throttling backoff while its lease is taken away.
    let mut tunables = test_tunables();
    tunables.throttling = true;
    tunables.quotas = vec![Quota {
        service: "ssm".into(),
        api: "SendCommand".into(),
        rate: 0.0001,
        burst: 1.0,
    }];
    let w = World::with_sandbox(
        Sandbox::start_with(tunables).await,
        &one_scope(20),
        Duration::from_secs(3),
    )
    .await;
    let worker = w.start_worker(Duration::from_secs(5)).await;
    let ids = w.ids("many", EAST, "web");
    let first = w.execute_task("many", EAST, Platform::Linux, &ids[..10], &["echo once"]);
    let first_id = first.task_id.clone();
    w.ctl.add(first).await;
    eventually(&w, "the first batch to end", Duration::from_secs(60), || {
        w.ctl.task(&first_id).phase == Phase::Completed
    })
    .await;

    let second = w.execute_task("many", EAST, Platform::Linux, &ids[10..], &["echo once"]);
    let second_id = second.task_id.clone();
    w.ctl.add(second).await;
    eventually(&w, "the second batch to be throttled", Duration::from_secs(60), || {
        w.sb.count("ssm", "SendCommand", "throttled") >= 1
    })
    .await;
    // The controller hands the task on: this lease may send nothing more.
    w.ctl.state.lock().unwrap().tasks.get_mut(&second_id).unwrap().lease = None;
    eventually(&w, "the worker to drop the task", Duration::from_secs(60), || {
        worker.ctx.stats.running_tasks() == 0
    })
    .await;
    w.sb.tune(|t| t.throttling = false);

    let audit = w.sb.audit();
    assert_eq!(audit.len(), 1, "only the first batch was sent: {audit:?}");
    assert!(
        ids[10..].iter().all(|id| !w.sends_per_instance().contains_key(id)),
        "the second batch never went out"
    );
    worker.stop().await;
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
    let mut ids = w.ids("many", EAST, "web");
    let lost = w.ids("many", EAST, "lost");
    ids.extend(lost.iter().cloned());
    let mut task = w.execute_task("many", EAST, Platform::Linux, &ids, &["echo once"]);
    let spec = task.execute.as_mut().unwrap();
    spec.delivery_timeout_seconds = 30;
    spec.execution_timeout_seconds = 2;
    spec.parameters.get_mut("executionTimeout").unwrap().values = vec!["2".into()];
    let task_id = task.task_id.clone();
    w.ctl.add(task).await;
    // 30 s delivery + 2 s execution + 1 s margin, found by a poll at most
    // 20 s later, then the 2 s grace.
    w.ctl.wait_all_done(Duration::from_secs(120)).await;

    let task = w.ctl.task(&task_id);
    assert_eq!(task.phase, Phase::Completed, "{:?}", task.failures);
    assert_eq!(task.dispatches.len(), 1, "{:?}", task.results);
    let command_id = task.dispatches[0].command_id.clone();
    for id in &ids {
        let result = &task.results[id];
        if lost.contains(id) {
            assert_eq!(result.status, TargetStatus::Error as i32, "{result:?}");
            assert_eq!(result.command_id, command_id, "the result names the command");
            assert!(
                result
                    .reason
                    .starts_with(&format!("SSM gave no final status for command {command_id} within")),
                "{}",
                result.reason
            );
            assert!(result.reason.ends_with("it was cancelled"), "{}", result.reason);
        } else {
            assert_eq!(result.status, TargetStatus::Success as i32, "{result:?}");
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
    w.ctl.state.lock().unwrap().delay_lease_answer_of_attempt = Some((1, Duration::from_millis(3_500)));
    let worker = w.start_worker(Duration::from_secs(5)).await;
    let ids = w.ids("many", EAST, "web");
    let task = w.execute_task("many", EAST, Platform::Linux, &ids, &["echo once"]);
    let task_id = task.task_id.clone();
    w.ctl.add(task).await;
    w.ctl.wait_all_done(Duration::from_secs(60)).await;

    let task = w.ctl.task(&task_id);
    assert_eq!(task.phase, Phase::Completed, "{:?}", task.failures);
    assert!(
        task.task.attempt >= 2,
        "attempt 1's lease expired before it was heard of"
    );
    let sends = w.sends_per_instance();
    assert_eq!(sends.len(), ids.len(), "every instance got the command");
    let twice: Vec<_> = sends.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "instances that ran more than once: {twice:?}");
    assert!(
        task.results.values().all(|r| r.status == TargetStatus::Success as i32),
        "{:?}",
        task.results
    );
    worker.stop().await;
}
