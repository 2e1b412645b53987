//! The failures that matter, one scenario each, against the real processes
//! and the sandbox: a controller outage past the dead-letter horizon, a
//! controller that is down longer than the lease TTL several times during
//! one long batch, and a batch whose output passes gRPC's message limit.
//! Each asserts
//! what an operator would see: every instance ran once, every target ended
//! with a true status, the campaign ended.

use std::time::Duration;

use muster_proto::v1::{CampaignState, CancelCampaignRequest, RateControl, TargetStatus};
use muster_tests::checks::{assert_answers_lost, assert_ran_once, queue_depth};
use muster_tests::client::{assert_counters_add_up, script_spec, submit, targets, wait_done};
use muster_tests::fleets;
use muster_tests::procs::{System, SystemOptions, until_crashed};

const EAST: &str = "us-east-1";

/// Polls `check` every 200 ms until it holds, or fails naming `what`.
async fn until<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn visible_messages(sqs: &aws_sdk_sqs::Client, url: &str) -> u64 {
    queue_depth(sqs, url).await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_dead_lettered_during_a_controller_outage_still_run_once_it_is_back() {
    let mut system = System::start(
        &fleets::uniform(12, 0, 0.5),
        SystemOptions {
            workers: 0,
            ..Default::default()
        },
    )
    .await;
    // A short redrive horizon (2 receives x 2 s) stands in for the hub's
    // 5 x 30 s: the outage below outlasts it.
    let sqs = aws_sdk_sqs::Client::new(&system.sb.hub_config(EAST));
    system.shorten_redrive(2, 2).await;

    let mut spec = script_spec(&[system.account("only")], &[EAST], &["echo once"], &[]);
    spec.rate = Some(RateControl {
        max_concurrency: "100%".into(),
        batch_size: 4,
        ..Default::default()
    });
    let id = submit(&mut system.client, spec).await;
    // The controller records a message as queued after SendMessageBatch
    // answers. Killed before that commit, it sends the task afresh when it is
    // back, and the dead letter found later is stale: a true outcome, but not
    // the one this test is about. So the store must have recorded it.
    let port = system.controller_metrics_port();
    until(
        "the discovery message on the queue and recorded as queued",
        Duration::from_secs(30),
        || async {
            let recorded = muster_tests::metrics::scrape(port).await;
            visible_messages(&sqs, &system.fleet.queue_url).await >= 1
                && muster_tests::metrics::sum(
                    &recorded,
                    "muster_controller_tasks",
                    &[("kind", "discover"), ("state", "queued")],
                ) >= 1.0
        },
    )
    .await;
    // The controller dies; a worker (started by autoscaling on the visible
    // message) receives it again and again but cannot lease it.
    system.kill_controller();
    system.start_worker();
    until(
        "the message to reach the dead-letter queue",
        Duration::from_secs(90),
        || async { visible_messages(&sqs, &system.fleet.dlq_url).await >= 1 },
    )
    .await;
    assert_eq!(
        visible_messages(&sqs, &system.fleet.queue_url).await,
        0,
        "the task queue is empty"
    );

    system.start_controller().await;
    let campaign = wait_done(&mut system.client, &id, Duration::from_secs(120)).await;
    assert_eq!(
        campaign.state,
        CampaignState::Succeeded as i32,
        "{}\n{}",
        campaign.state_reason,
        system.logs()
    );
    assert_eq!(campaign.counters.unwrap().success, 12);
    assert_ran_once(&mut system, &id, &campaign).await;
    until(
        "the dead-letter queue to be drained",
        Duration::from_secs(30),
        || async { visible_messages(&sqs, &system.fleet.dlq_url).await == 0 },
    )
    .await;
    // The controller says what it found in the dead-letter queue: the task
    // still waiting (queued again from there), or, when the worker's last
    // LeaseTask (asked again for a lease TTL) reached it back first and
    // leased the task, a dead letter of a task that no longer waits.
    let logs = system.logs();
    assert!(
        logs.contains("tasks found in the dead-letter queue still wait for a worker")
            || logs.contains("dead letters of tasks that no longer wait for them deleted"),
        "the controller says what it found: {logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_outages_longer_than_the_lease_cost_a_long_batch_nothing() {
    // Three outages of more than two lease TTLs each while one batch runs:
    // each used to expire the lease and spend an attempt, and the third
    // turned every target of the batch into ERROR while SSM still ran it.
    let mut system = System::start(
        &fleets::uniform(6, 0, 60.0),
        SystemOptions {
            workers: 1,
            lease_ttl: 5,
            ..Default::default()
        },
    )
    .await;
    let spec = script_spec(&[system.account("only")], &[EAST], &["sleep 60"], &[]);
    let id = submit(&mut system.client, spec).await;
    until("the batch to be sent", Duration::from_secs(60), || async {
        system.sends_per_instance().len() == 6
    })
    .await;
    for _ in 0..3 {
        system.kill_controller();
        tokio::time::sleep(Duration::from_secs(11)).await;
        system.start_controller().await;
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let campaign = wait_done(&mut system.client, &id, Duration::from_secs(120)).await;
    assert_eq!(
        campaign.state,
        CampaignState::Succeeded as i32,
        "{}\n{}",
        campaign.state_reason,
        system.logs()
    );
    assert_eq!(campaign.counters.unwrap().success, 6, "the batch's true end");
    assert_ran_once(&mut system, &id, &campaign).await;
    let logs = system.logs();
    assert!(!logs.contains("lease expired"), "no lease expired:\n{logs}");
    assert!(logs.contains("leases found at takeover extended by one TTL"));
    assert!(logs.contains("lease renewed after the controller came back"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_piled_up_past_the_message_limit_are_all_recorded_whole() {
    // 50 instances, each with 1 MiB of stdout and 1 MiB of stderr, kept
    // whole (keep_bytes 1 MiB). The controller is down while they finish,
    // so the worker's results pile up: about 100 MiB for one task, more
    // than gRPC's 64 MiB. Sent as one report, it was refused and lost.
    let fleet = r#"
name = "loud"
external_id = "ext-loud"
output_bucket = "muster-output"
[[accounts]]
name = "only"
regions = ["us-east-1"]
  [[accounts.instances]]
  count = 50
  tags = { Role = "web", "muster-sim:duration" = "2", "muster-sim:stdout-bytes" = "1048576", "muster-sim:stderr-bytes" = "1048576" }
"#;
    let mut system = System::start(fleet, SystemOptions::default()).await;
    let mut spec = script_spec(&[system.account("only")], &[EAST], &["cat big"], &[]);
    let output = spec.output.as_mut().unwrap();
    output.s3_bucket = "muster-output".into();
    output.keep_bytes = 1024 * 1024;
    let id = submit(&mut system.client, spec).await;
    until("the batch to be sent", Duration::from_secs(60), || async {
        system.sends_per_instance().len() == 50
    })
    .await;
    system.kill_controller();
    // The command ends 2 s after the send; give the worker time to read all
    // 100 MiB from S3 while nobody takes its reports.
    tokio::time::sleep(Duration::from_secs(15)).await;
    system.start_controller().await;
    let campaign = wait_done(&mut system.client, &id, Duration::from_secs(180)).await;
    assert_eq!(
        campaign.state,
        CampaignState::Succeeded as i32,
        "{}\n{}",
        campaign.state_reason,
        system.logs()
    );
    assert_eq!(campaign.counters.unwrap().success, 50);
    let all = targets(&mut system.client, &id, true).await;
    assert_counters_add_up(&campaign, &all);
    for target in &all {
        let step = &target.steps[0];
        assert_eq!(step.stdout.len(), 1024 * 1024, "{}: stdout whole", target.instance_id);
        assert_eq!(step.stderr.len(), 1024 * 1024, "{}: stderr whole", target.instance_id);
        assert!(!step.stdout_truncated && !step.stderr_truncated);
    }
    assert_ran_once(&mut system, &id, &campaign).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_reaches_a_command_whose_worker_died() {
    // The only worker dies while its batch runs; its lease expires. A cancel
    // then used to mark the targets "cancelled before it was sent" while the
    // command ran on; now the next worker cancels the command in SSM and
    // reports where each instance ended.
    let mut system = System::start(
        &fleets::uniform(6, 0, 60.0),
        SystemOptions {
            workers: 1,
            lease_ttl: 5,
            ..Default::default()
        },
    )
    .await;
    let spec = script_spec(&[system.account("only")], &[EAST], &["sleep 60"], &[]);
    let id = submit(&mut system.client, spec).await;
    until("the batch to be sent", Duration::from_secs(60), || async {
        system.sends_per_instance().len() == 6
    })
    .await;
    system.kill_worker(0);
    until("the dead worker's lease to expire", Duration::from_secs(60), || async {
        system.logs().contains("lease expired")
    })
    .await;
    system
        .client
        .cancel_campaign(CancelCampaignRequest {
            campaign_id: id.clone(),
            reason: "stop the patch".into(),
        })
        .await
        .expect("cancel");
    system.start_worker();
    let campaign = wait_done(&mut system.client, &id, Duration::from_secs(120)).await;
    assert_eq!(
        campaign.state,
        CampaignState::Cancelled as i32,
        "{}\n{}",
        campaign.state_reason,
        system.logs()
    );
    assert!(
        system.sb.count("ssm", "CancelCommand", "ok") >= 1,
        "the running command was cancelled in SSM"
    );
    let all = targets(&mut system.client, &id, false).await;
    for target in &all {
        assert_eq!(
            target.status,
            TargetStatus::Cancelled as i32,
            "{}: {}",
            target.instance_id,
            target.reason
        );
        assert!(
            !target.reason.contains("before it was sent"),
            "{} was sent; its reason says where SSM left it: {}",
            target.instance_id,
            target.reason
        );
        assert!(
            !target.command_id.is_empty(),
            "{} names its command",
            target.instance_id
        );
    }
    assert_ran_once(&mut system, &id, &campaign).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_dead_between_send_command_and_report_dispatch_costs_no_second_send() {
    // The worker aborts right after SSM accepted its SendCommand, before the
    // controller heard of the command: the next attempt must find it by its
    // Comment and adopt it, not send it again.
    let mut system = System::start(
        &fleets::uniform(6, 0, 3.0),
        SystemOptions {
            workers: 0,
            lease_ttl: 5,
            ..Default::default()
        },
    )
    .await;
    let doomed = system.start_worker_with(&[("MUSTER_CRASH_AT", "worker.after_send@1")]);
    let spec = script_spec(&[system.account("only")], &[EAST], &["echo once"], &[]);
    let id = submit(&mut system.client, spec).await;
    until_crashed(&mut system, "the worker", |s| s.reap_worker(doomed)).await;
    assert_eq!(
        system.sb.audit().len(),
        1,
        "SSM took the one command before the worker died"
    );
    system.start_worker();
    let campaign = wait_done(&mut system.client, &id, Duration::from_secs(120)).await;
    assert_eq!(campaign.counters.unwrap().success, 6, "{}", system.logs());
    assert_ran_once(&mut system, &id, &campaign).await;
    assert_eq!(system.sb.audit().len(), 1, "and no second command was sent");
    assert!(
        system
            .logs()
            .contains("adopting a command an earlier attempt sent but never reported"),
        "the next attempt says it adopted the command"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_dead_between_the_commands_of_a_sequence_sends_each_once() {
    // Scan, then install: the worker aborts right after SSM accepted the
    // second command, before the controller heard of it. The next attempt
    // finds the first command's results again, adopts the second by its
    // Comment, and sends neither twice.
    let mut system = System::start(
        &fleets::uniform(6, 0, 2.0),
        SystemOptions {
            workers: 0,
            lease_ttl: 5,
            ..Default::default()
        },
    )
    .await;
    let doomed = system.start_worker_with(&[("MUSTER_CRASH_AT", "worker.after_send@2")]);
    let mut spec = script_spec(&[system.account("only")], &[EAST], &["echo scan"], &[]);
    spec.then = script_spec(&[], &[], &["echo install"], &[])
        .command
        .into_iter()
        .collect();
    let id = submit(&mut system.client, spec).await;
    until_crashed(&mut system, "the worker", |s| s.reap_worker(doomed)).await;
    assert_eq!(
        system.sb.audit().len(),
        2,
        "SSM took both commands before the worker died"
    );
    system.start_worker();
    let campaign = wait_done(&mut system.client, &id, Duration::from_secs(120)).await;
    assert_eq!(campaign.counters.unwrap().success, 6, "{}", system.logs());
    let all = assert_ran_once(&mut system, &id, &campaign).await;
    assert_eq!(system.sb.audit().len(), 2, "and no third command was sent");
    for target in &all {
        let names: Vec<&str> = target.steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["1/aws:runShellScript", "2/aws:runShellScript"], "{target:?}");
    }
    assert!(
        system
            .logs()
            .contains("adopting a command an earlier attempt sent but never reported"),
        "the next attempt says it adopted the command"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_dead_around_its_commits_and_sends_loses_and_repeats_nothing() {
    // The controller aborts right after a store commit (the writes are
    // durable, their callers never told), right before one (the writes are
    // lost, their callers never told) and right after an SQS send (the
    // messages are out, the store does not know): each time it comes back,
    // and the campaign still runs every instance once.
    let mut system = System::start(
        &fleets::uniform(12, 2, 2.0),
        SystemOptions {
            workers: 2,
            lease_ttl: 5,
            ..Default::default()
        },
    )
    .await;
    let mut spec = script_spec(&[system.account("only")], &[EAST], &["echo once"], &[]);
    spec.rate = Some(RateControl {
        batch_size: 2,
        max_concurrency: "4".into(),
        ..Default::default()
    });
    let id = submit(&mut system.client, spec).await;
    for point in [
        "controller.after_enqueue@1",
        "store.after_commit@5",
        "store.before_commit@5",
    ] {
        system.kill_controller();
        system.start_controller_with(&[("MUSTER_CRASH_AT", point)]).await;
        until_crashed(&mut system, point, System::reap_controller).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    system.start_controller().await;
    let campaign = wait_done(&mut system.client, &id, Duration::from_secs(180)).await;
    let counters = campaign.counters.unwrap();
    assert_eq!((counters.success, counters.failed), (10, 2), "{}", system.logs());
    assert_ran_once(&mut system, &id, &campaign).await;
    let crashes = system.logs().matches("reached on pass").count();
    assert_eq!(crashes, 3, "each controller said where it died");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_lost_after_their_effect_are_given_again_and_cost_no_attempt() {
    // The controller loses the answer of each call that changes something,
    // after the call took effect (MUSTER_LOSE_AT), as a connection cut
    // before the answer would; the discovery's lease four times in a row,
    // as a controller that died after granting it and came back would. The
    // worker asks again; each repeat is
    // answered as the first would have been: the discovery's lease granted
    // again, the completion's hand-off of batches given again, results and
    // dispatches recorded once. So no lease is left to expire (each would
    // cost a TTL's wait and an attempt) and no instance runs twice.
    let lost = [
        "worker_api.LeaseTask@1",
        "worker_api.LeaseTask@2",
        "worker_api.LeaseTask@3",
        "worker_api.LeaseTask@4",
        "worker_api.ReportTargets@1",
        "worker_api.CompleteTask@1",
        "worker_api.ReportDispatch@1",
        "worker_api.RenewLease@1",
        "worker_api.ReportResults@1",
        "worker_api.CompleteTask@2",
    ];
    let mut system = System::start(
        &fleets::uniform(12, 2, 4.0),
        SystemOptions {
            workers: 1,
            controller_env: vec![("MUSTER_LOSE_AT".into(), lost.join(","))],
            ..Default::default()
        },
    )
    .await;
    let mut spec = script_spec(&[system.account("only")], &[EAST], &["echo once"], &[]);
    spec.rate = Some(RateControl {
        batch_size: 4,
        max_concurrency: "100%".into(),
        ..Default::default()
    });
    let id = submit(&mut system.client, spec).await;
    let campaign = wait_done(&mut system.client, &id, Duration::from_secs(120)).await;
    let logs = system.logs();
    let counters = campaign.counters.unwrap();
    assert_eq!((counters.success, counters.failed), (10, 2), "{logs}");
    assert_ran_once(&mut system, &id, &campaign).await;
    assert!(!logs.contains("lease expired"), "no lease was left to expire: {logs}");
    assert_answers_lost(&logs, &lost);
    assert!(
        logs.contains("LeaseTask repeated; answered as before"),
        "the lost lease was granted again: {logs}"
    );
    let handed_again = logs
        .lines()
        .filter(|line| line.contains("CompleteTask repeated; answered as before"))
        .any(|line| !line.contains("handed_off=0"));
    assert!(
        handed_again,
        "the discovery's completion handed its batches on again: {logs}"
    );
}
