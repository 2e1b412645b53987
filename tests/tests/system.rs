//! Whole-system scenarios: `muster-controller` and `muster-worker` as real
//! processes against moto + muster-sim. Every scenario checks the counters,
//! each target's status, and the sim's audit log: no instance is ever sent a
//! command twice (invariant 1), and every target ends (invariant 2).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use muster_proto::v1::SubmitCampaignRequest;
use muster_proto::v1::{CampaignSpec, CampaignState, CancelCampaignRequest, Platform, RateControl, TargetStatus};
use muster_sim::Quota;
use muster_sim::testkit::test_tunables;
use muster_tests::checks::assert_ran_once;
use muster_tests::client::{script_spec, submit, wait_done, wait_for};
use muster_tests::fleets;
use muster_tests::procs::{HUB_SECRET, System, SystemOptions, scaler_decisions};

const EAST: &str = "us-east-1";
const WEST: &str = "eu-west-1";

fn role_of(system: &System, instance: &str) -> String {
    system
        .fleet
        .instances()
        .find(|(_, _, i)| i.id == instance)
        .and_then(|(_, _, i)| i.tags.get("Role").cloned())
        .unwrap_or_default()
}

fn mixed_spec(system: &System) -> CampaignSpec {
    let accounts: Vec<String> = ["prod-a", "prod-b", "dev-a"]
        .iter()
        .map(|a| system.account(a))
        .collect();
    script_spec(&accounts, &[EAST, WEST], &["echo patched"], &["Write-Output patched"])
}

fn timed(name: &str, started: Instant) {
    println!("scenario {name}: {:.1}s", started.elapsed().as_secs_f64());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn happy_path_on_a_mixed_fleet_with_skipped_instances() {
    let started = Instant::now();
    let mut system = System::start(fleets::MIXED, SystemOptions::default()).await;
    let spec = mixed_spec(&system);
    let id = submit(&mut system.client, spec).await;
    let campaign = wait_done(&mut system.client, &id, Duration::from_secs(120)).await;
    assert_eq!(
        campaign.state,
        CampaignState::CompletedWithErrors as i32,
        "{}",
        campaign.state_reason
    );
    let all = assert_ran_once(&mut system, &id, &campaign).await;
    let c = campaign.counters.unwrap();
    assert_eq!((c.total, c.success, c.failed, c.skipped), (32, 26, 2, 4));
    for target in &all {
        match role_of(&system, &target.instance_id).as_str() {
            "offline" => {
                assert_eq!(target.status, TargetStatus::Skipped as i32);
                assert_eq!(target.reason, "SSM agent offline (PingStatus ConnectionLost)");
            }
            "unmanaged" => {
                assert_eq!(target.status, TargetStatus::Skipped as i32);
                assert!(target.reason.starts_with("not managed by SSM"));
            }
            "fail" => assert_eq!(
                (target.status, target.exit_code),
                (TargetStatus::Failed as i32, Some(2))
            ),
            _ => assert_eq!(target.status, TargetStatus::Success as i32, "{target:?}"),
        }
    }
    // Windows batches ran PowerShell, Linux batches the shell.
    let windows: BTreeSet<String> = all
        .iter()
        .filter(|t| t.platform == Platform::Windows as i32)
        .map(|t| t.instance_id.clone())
        .collect();
    for entry in system.sb.audit() {
        let expected = if entry.instance_ids.iter().any(|i| windows.contains(i)) {
            "AWS-RunPowerShellScript"
        } else {
            "AWS-RunShellScript"
        };
        assert_eq!(entry.document_name, expected);
        assert!(
            entry
                .instance_ids
                .iter()
                .all(|i| windows.contains(i) == (expected == "AWS-RunPowerShellScript")),
            "one platform per batch"
        );
        assert!(entry.comment.starts_with("muster task "));
    }
    // Failed commands and skipped instances are the targets' news, not
    // muster's: nothing went wrong in muster, so it warned of nothing.
    let warnings = system.muster_warnings();
    assert!(warnings.is_empty(), "{}", warnings.join("\n"));
    timed("happy path", started);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ou_targeting_with_an_excluded_account() {
    let started = Instant::now();
    let mut system = System::start(fleets::MIXED, SystemOptions::default()).await;
    let mut spec = mixed_spec(&system);
    let targets_of = spec.targets.as_mut().unwrap();
    targets_of.account_ids.clear();
    targets_of.organizational_unit_ids = vec![system.fleet.ous["Prod"].clone()];
    targets_of.exclude_account_ids = vec![system.account("prod-b")];
    let id = submit(&mut system.client, spec).await;
    let campaign = wait_done(&mut system.client, &id, Duration::from_secs(120)).await;
    let all = assert_ran_once(&mut system, &id, &campaign).await;
    let accounts: BTreeSet<&str> = all.iter().map(|t| t.account_id.as_str()).collect();
    let prod_a = system.account("prod-a");
    assert_eq!(
        accounts,
        [prod_a.as_str()].into(),
        "only prod-a: the Prod OU minus prod-b"
    );
    assert!(system.sb.audit().iter().all(|e| e.account == prod_a));
    assert_eq!(campaign.counters.unwrap().total, 16);
    timed("OU targeting", started);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_error_threshold_stops_the_rollout() {
    let started = Instant::now();
    let mut system = System::start(&fleets::uniform(30, 12, 0.3), SystemOptions::default()).await;
    let mut spec = script_spec(&[system.account("only")], &[EAST], &["patch"], &[]);
    spec.rate = Some(RateControl {
        max_concurrency: "2".into(),
        max_errors: "2".into(),
        batch_size: 1,
        ..Default::default()
    });
    let id = submit(&mut system.client, spec).await;
    let campaign = wait_done(&mut system.client, &id, Duration::from_secs(120)).await;
    assert_eq!(
        campaign.state,
        CampaignState::Failed as i32,
        "{}",
        campaign.state_reason
    );
    assert_ran_once(&mut system, &id, &campaign).await;
    let c = campaign.counters.unwrap();
    assert!(
        (3..=4).contains(&c.failed),
        "stopped at the 3rd error, one more in flight at most: {c:?}"
    );
    assert!(c.terminated > 0);
    assert_eq!(c.success + c.failed + c.terminated, 30);
    timed("error threshold", started);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_mid_run() {
    let started = Instant::now();
    let mut system = System::start(&fleets::uniform(20, 0, 60.0), SystemOptions::default()).await;
    let mut spec = script_spec(&[system.account("only")], &[EAST], &["sleep 60"], &[]);
    spec.rate = Some(RateControl {
        max_concurrency: "10".into(),
        batch_size: 5,
        ..Default::default()
    });
    let id = submit(&mut system.client, spec).await;
    wait_for(&mut system.client, &id, Duration::from_secs(60), "10 running", |c| {
        c.counters.is_some_and(|c| c.running == 10)
    })
    .await;
    system
        .client
        .cancel_campaign(CancelCampaignRequest {
            campaign_id: id.clone(),
            reason: "freeze".into(),
        })
        .await
        .unwrap();
    let campaign = wait_done(&mut system.client, &id, Duration::from_secs(60)).await;
    assert_eq!(campaign.state, CampaignState::Cancelled as i32);
    assert_ran_once(&mut system, &id, &campaign).await;
    assert_eq!(campaign.counters.unwrap().cancelled, 20);
    assert_eq!(system.sends_per_instance().len(), 10);
    timed("cancel", started);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_campaign_loses_nothing() {
    let started = Instant::now();
    let mut system = System::start(
        &fleets::uniform(20, 0, 8.0),
        SystemOptions {
            workers: 1,
            ..Default::default()
        },
    )
    .await;
    let mut spec = script_spec(&[system.account("only")], &[EAST], &["sleep 8"], &[]);
    spec.rate = Some(RateControl {
        max_concurrency: "10".into(),
        batch_size: 5,
        ..Default::default()
    });
    let id = submit(&mut system.client, spec).await;
    wait_for(
        &mut system.client,
        &id,
        Duration::from_secs(60),
        "commands running",
        |c| c.counters.is_some_and(|c| c.running >= 5),
    )
    .await;
    system.kill_worker(0);
    system.start_worker();
    let campaign = wait_done(&mut system.client, &id, Duration::from_secs(120)).await;
    assert_eq!(
        campaign.state,
        CampaignState::Succeeded as i32,
        "{}\n{}",
        campaign.state_reason,
        system.logs()
    );
    assert_ran_once(&mut system, &id, &campaign).await;
    assert_eq!(campaign.counters.unwrap().success, 20);
    assert!(
        system.worker_log(1).contains("task leased"),
        "the new worker took the work over"
    );
    timed("worker SIGKILL", started);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_controller_killed_and_restarted_mid_campaign_loses_nothing() {
    let started = Instant::now();
    let mut system = System::start(
        &fleets::uniform(30, 0, 3.0),
        SystemOptions {
            workers: 2,
            ..Default::default()
        },
    )
    .await;
    let mut spec = script_spec(&[system.account("only")], &[EAST], &["sleep 3"], &[]);
    spec.rate = Some(RateControl {
        max_concurrency: "10".into(),
        batch_size: 5,
        ..Default::default()
    });
    let id = submit(&mut system.client, spec).await;
    wait_for(&mut system.client, &id, Duration::from_secs(60), "some results", |c| {
        c.counters.is_some_and(|c| c.success >= 5)
    })
    .await;
    system.kill_controller();
    tokio::time::sleep(Duration::from_secs(2)).await;
    system.start_controller().await;
    let campaign = wait_done(&mut system.client, &id, Duration::from_secs(120)).await;
    assert_eq!(
        campaign.state,
        CampaignState::Succeeded as i32,
        "{}\n{}",
        campaign.state_reason,
        system.logs()
    );
    assert_ran_once(&mut system, &id, &campaign).await;
    assert_eq!(campaign.counters.unwrap().success, 30);
    assert_eq!(system.sends_per_instance().len(), 30);
    timed("controller SIGKILL", started);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttling_storm_fails_no_target() {
    let started = Instant::now();
    let mut tunables = test_tunables();
    tunables.throttling = true;
    tunables.quotas = vec![
        Quota::new("ssm", "SendCommand", 1.0, 1.0),
        Quota::new("ssm", "ListCommandInvocations", 2.0, 2.0),
        Quota::new("ssm", "DescribeInstanceInformation", 1.0, 1.0),
        Quota::new("ec2", "*", 1.0, 1.0),
        Quota::new("sts", "AssumeRole", 2.0, 2.0),
    ];
    let mut system = System::start(
        &fleets::uniform(60, 0, 1.0),
        SystemOptions {
            tunables,
            workers: 2,
            ..Default::default()
        },
    )
    .await;
    let mut spec = script_spec(&[system.account("only")], &[EAST], &["true"], &[]);
    spec.rate = Some(RateControl {
        max_concurrency: "100%".into(),
        batch_size: 3,
        api_calls_per_second: 40.0,
        ..Default::default()
    });
    let id = submit(&mut system.client, spec).await;
    let campaign = wait_done(&mut system.client, &id, Duration::from_secs(240)).await;
    assert_eq!(
        campaign.state,
        CampaignState::Succeeded as i32,
        "{}",
        campaign.state_reason
    );
    assert_ran_once(&mut system, &id, &campaign).await;
    assert_eq!(campaign.counters.unwrap().success, 60);
    let throttled: u64 = system
        .sb
        .state()
        .counters
        .lock()
        .unwrap()
        .iter()
        .filter(|((_, _, outcome), _)| outcome == "throttled")
        .map(|(_, n)| n)
        .sum();
    println!("throttled calls: {throttled}");
    assert!(throttled > 0, "the storm happened");
    timed("throttling storm", started);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_share_the_load() {
    let started = Instant::now();
    let mut system = System::start(
        &fleets::uniform(40, 0, 2.0),
        SystemOptions {
            workers: 2,
            ..Default::default()
        },
    )
    .await;
    let mut spec = script_spec(&[system.account("only")], &[EAST], &["true"], &[]);
    spec.rate = Some(RateControl {
        max_concurrency: "100%".into(),
        batch_size: 2,
        ..Default::default()
    });
    let id = submit(&mut system.client, spec).await;
    let campaign = wait_done(&mut system.client, &id, Duration::from_secs(120)).await;
    assert_eq!(campaign.state, CampaignState::Succeeded as i32);
    assert_ran_once(&mut system, &id, &campaign).await;
    let leased: Vec<usize> = (0..2)
        .map(|i| system.worker_log(i).matches("task leased").count())
        .collect();
    println!("tasks leased per worker: {leased:?}");
    assert!(leased.iter().all(|n| *n > 0), "both workers worked: {leased:?}");
    assert_eq!(
        leased.iter().sum::<usize>(),
        21,
        "1 discovery + 20 batches, each leased once"
    );
    timed("two workers", started);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_shorter_than_the_campaign_never_expire_under_it() {
    let started = Instant::now();
    let mut system = System::start(&fleets::uniform(10, 0, 25.0), SystemOptions::default()).await;
    // Every session the sim hands out from now on lasts 12 seconds.
    system.sb.tune(|t| t.session_ttl_seconds = Some(12));
    let spec = script_spec(&[system.account("only")], &[EAST], &["sleep 25"], &[]);
    let id = submit(&mut system.client, spec).await;
    let campaign = wait_done(&mut system.client, &id, Duration::from_secs(120)).await;
    assert_eq!(
        campaign.state,
        CampaignState::Succeeded as i32,
        "{}\n{}",
        campaign.state_reason,
        system.logs()
    );
    assert_ran_once(&mut system, &id, &campaign).await;
    let counters = system.sb.state().counters.lock().unwrap().clone();
    let expired: u64 = counters
        .iter()
        .filter(|((_, _, o), _)| o == "expired_token")
        .map(|(_, n)| n)
        .sum();
    let assumed = counters
        .get(&("sts".to_owned(), "AssumeRole".to_owned(), "ok".to_owned()))
        .copied()
        .unwrap_or(0);
    assert_eq!(expired, 0, "no call was made with expired credentials");
    assert!(
        assumed >= 4,
        "sessions were refreshed during the campaign ({assumed} AssumeRole calls)"
    );
    timed("short credentials", started);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_process_logs_a_secret() {
    let started = Instant::now();
    let mut system = System::start(
        fleets::MIXED,
        SystemOptions {
            workers: 2,
            ..Default::default()
        },
    )
    .await;
    let spec = mixed_spec(&system);
    let id = submit(&mut system.client, spec.clone()).await;
    // Callers the controller refuses, with the tokens they present.
    let wrong_token = "mst_wrong-token-that-must-not-be-logged";
    for token in [wrong_token, system.creds.read_token.as_str()] {
        let mut caller = system.creds.token_client(system.campaign_port(), Some(token));
        let refused = caller
            .submit_campaign(SubmitCampaignRequest {
                spec: Some(spec.clone()),
            })
            .await
            .expect_err("refused");
        assert!(matches!(
            refused.code(),
            tonic::Code::Unauthenticated | tonic::Code::PermissionDenied
        ));
    }
    wait_done(&mut system.client, &id, Duration::from_secs(120)).await;
    // Every secret the sim handed out (each session's secret key and token),
    // the hub's own secret key, the API tokens and the private keys: none may
    // be in any process's log.
    let logs = system.logs();
    assert!(
        logs.contains("task leased") && logs.contains("dispatch recorded"),
        "the logs are the real thing"
    );
    assert!(
        logs.contains("call refused: unauthenticated") && logs.contains("call refused"),
        "the refused calls are logged"
    );
    let secrets = system.sb.issued_secrets();
    assert!(secrets.len() >= 8, "sessions were handed out: {}", secrets.len());
    let ours = [
        HUB_SECRET.to_owned(),
        wrong_token.to_owned(),
        system.creds.read_token.clone(),
        system.creds.submit_token.clone(),
        system.fleet.external_id.clone(),
    ];
    for secret in secrets.iter().chain(&ours) {
        assert!(!logs.contains(secret.as_str()), "a secret or session token is in a log");
    }
    let (_, worker_key) = system.creds.worker_files("worker-0");
    let worker_key = std::fs::read_to_string(worker_key).expect("worker-0's key");
    let keys = [
        &system.creds.pki.controller.key,
        &system.creds.pki.worker_ca.key,
        &worker_key,
    ];
    for key in keys {
        let body: String = key.lines().filter(|l| !l.starts_with("-----")).collect();
        assert!(!logs.contains(&body[..40]), "a private key is in a log");
    }
    timed("no secrets in logs", started);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_scales_out_on_the_controllers_signal_and_back_in_losing_nothing() {
    // Workers that hold two tasks at most, 16 batches of 3 s that may all
    // run at once: one worker is the limit. The scaler aims for 2 tasks per
    // worker from the controller's TaskDemandPerWorker, up to 5 workers,
    // and scales in 3 s after demand falls: workers stop while others still
    // run, handing back what they hold.
    let mut system = System::start(
        &fleets::grid(4, &[EAST, WEST], 4, 3.0),
        SystemOptions {
            workers: 0,
            lease_ttl: 5,
            controller_args: ["--scaling-namespace", "Muster", "--scaling-interval", "1"]
                .map(str::to_owned)
                .to_vec(),
            worker_args: vec!["--max-tasks".into(), "2".into()],
            ..Default::default()
        },
    )
    .await;
    let record = system.start_scaler(&[
        "--target",
        "2",
        "--min",
        "1",
        "--max",
        "5",
        "--interval",
        "1",
        "--scale-in-cooldown",
        "3",
        "--stop-timeout",
        "60",
    ]);
    let accounts: Vec<String> = (0..4).map(|a| system.account(&format!("a{a:03}"))).collect();
    let mut spec = script_spec(&accounts, &[EAST, WEST], &["echo scaled"], &[]);
    spec.rate = Some(RateControl {
        batch_size: 2,
        max_concurrency: "100%".into(),
        ..Default::default()
    });
    let id = submit(&mut system.client, spec).await;
    let campaign = wait_done(&mut system.client, &id, Duration::from_secs(240)).await;
    assert_eq!(
        campaign.state,
        CampaignState::Succeeded as i32,
        "{}\n{}",
        campaign.state_reason,
        system.logs()
    );
    assert_eq!(campaign.counters.unwrap().success, 32);
    assert_ran_once(&mut system, &id, &campaign).await;

    // Back to one worker once the work is done.
    let deadline = Instant::now() + Duration::from_secs(60);
    while scaler_decisions(&record).last().is_none_or(|d| d.workers > 1) {
        assert!(
            Instant::now() < deadline,
            "the fleet did not scale back in: {:?}",
            scaler_decisions(&record)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let decisions = scaler_decisions(&record);
    let peak = decisions.iter().filter_map(|d| d.working).max().unwrap_or(0);
    assert!(
        peak >= 3,
        "demand of 16 tasks at 2 a worker puts several workers to work: {decisions:?}"
    );
    let scaler = std::fs::read_to_string(record.with_file_name("scaler.log")).unwrap_or_default();
    assert!(!scaler.contains("exited with"), "no worker failed: {scaler}");
    assert!(
        scaler.contains("stopping scaler-"),
        "scale-in stopped workers: {scaler}"
    );
    system.stop_scaler();
}
