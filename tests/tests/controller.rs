//! The controller with real workers against moto + muster-sim, in one
//! process: campaigns from submit to results, as issue 4 describes them.

use std::collections::BTreeSet;
use std::io::Read as _;
use std::time::Duration;

use muster_proto::v1::worker_service_client::WorkerServiceClient;
use muster_proto::v1::{
    CampaignSpec, CampaignState, CancelCampaignRequest, DiscoveredInstance, LeaseOutcome, LeaseTaskRequest,
    ListCampaignsRequest, PingStatus, PlanCampaignRequest, Platform, RateControl, RenewLeaseRequest,
    ReportDispatchRequest, ReportResultsRequest, ReportTargetsRequest, ScopeState, StepOutput, SubmitCampaignRequest,
    TargetResult, TargetStatus, TaskKind, TaskRef, WatchCampaignRequest, watch_campaign_response,
};
use muster_tests::client::{assert_counters_add_up, get, script_spec, submit, targets, wait_done, wait_for};
use muster_tests::fleets;
use muster_tests::stack::{Options, Stack};
use tonic::Code;

const EAST: &str = "us-east-1";
const WEST: &str = "eu-west-1";

fn mixed_spec(stack: &Stack) -> CampaignSpec {
    let accounts: Vec<String> = ["prod-a", "prod-b", "dev-a"].iter().map(|a| stack.account(a)).collect();
    let mut spec = script_spec(
        &accounts,
        &[EAST, WEST],
        &["echo patched"],
        &["Write-Output patched"],
        "ext-mixed",
    );
    spec.output.as_mut().unwrap().s3_bucket = "muster-output".into();
    spec
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_campaigns_are_refused_naming_the_field_and_nothing_is_stored() {
    let stack = Stack::start(
        fleets::MIXED,
        Options {
            workers: 0,
            ..Default::default()
        },
    )
    .await;
    let mut client = stack.client.clone();
    let base = mixed_spec(&stack);
    type Breaker = Box<dyn Fn(&mut CampaignSpec)>;
    let cases: Vec<(&str, Breaker)> = vec![
        (
            "targets.account_ids[0]: '12345' is not a 12-digit account id",
            Box::new(|s| s.targets.as_mut().unwrap().account_ids = vec!["12345".into()]),
        ),
        (
            "targets.regions[0]: 'us-middle-7' is not an AWS region",
            Box::new(|s| s.targets.as_mut().unwrap().regions = vec!["us-middle-7".into()]),
        ),
        (
            "rate.max_concurrency: '110%'",
            Box::new(|s| s.rate.as_mut().unwrap().max_concurrency = "110%".into()),
        ),
        (
            "rate.batch_size: 51 is more than 50",
            Box::new(|s| s.rate.as_mut().unwrap().batch_size = 51),
        ),
        (
            "command.script: is empty",
            Box::new(|s| {
                if let Some(muster_proto::v1::command::Kind::Script(script)) = s.command.as_mut().unwrap().kind.as_mut()
                {
                    script.linux_lines.clear();
                    script.windows_lines.clear();
                }
            }),
        ),
        (
            "targets.account_ids: 10000 accounts; at most 1000",
            Box::new(|s| {
                s.targets.as_mut().unwrap().account_ids =
                    (0..10_000).map(|i| format!("{:012}", 100_000_000_000u64 + i)).collect();
            }),
        ),
        (
            "command.script.linux_lines: 1048577 bytes; at most 102400",
            Box::new(|s| {
                if let Some(muster_proto::v1::command::Kind::Script(script)) = s.command.as_mut().unwrap().kind.as_mut()
                {
                    script.linux_lines = vec!["x".repeat(1024 * 1024)];
                }
            }),
        ),
        (
            "targets.organizational_unit_ids[0]: ou-abcd-12345678 is not an OU",
            Box::new(|s| {
                s.targets.as_mut().unwrap().organizational_unit_ids = vec!["ou-abcd-12345678".into()];
            }),
        ),
    ];
    for (expected, break_it) in cases {
        let mut spec = base.clone();
        break_it(&mut spec);
        let status = client
            .submit_campaign(SubmitCampaignRequest { spec: Some(spec) })
            .await
            .expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{expected}: {}", status.message());
        assert!(
            status.message().starts_with(expected),
            "expected '{expected}', got '{}'",
            status.message()
        );
    }
    let listed = client
        .list_campaigns(ListCampaignsRequest {
            include_plans: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(listed.campaigns.is_empty(), "nothing was stored");
    let stored: i64 = stack
        .store()
        .read(|conn| {
            Ok(conn.query_row(
                "SELECT (SELECT COUNT(*) FROM campaigns) + (SELECT COUNT(*) FROM tasks)",
                [],
                |r| r.get(0),
            )?)
        })
        .await
        .unwrap();
    assert_eq!(stored, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_runs_from_submit_to_exported_results() {
    let stack = Stack::start(
        fleets::MIXED,
        Options {
            workers: 2,
            ..Default::default()
        },
    )
    .await;
    let mut client = stack.client.clone();
    let mut spec = mixed_spec(&stack);
    spec.client_token = "patch-2026-11".into();
    spec.labels.insert("ticket".into(), "CHG-1".into());
    let submitted = client
        .submit_campaign(SubmitCampaignRequest {
            spec: Some(spec.clone()),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(submitted.created);
    let id = submitted.campaign_id;

    // The same client token and spec: the same campaign, not a second one.
    let again = client
        .submit_campaign(SubmitCampaignRequest {
            spec: Some(spec.clone()),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((again.campaign_id.as_str(), again.created), (id.as_str(), false));
    let mut other = spec.clone();
    other.name = "something else".into();
    let status = client
        .submit_campaign(SubmitCampaignRequest { spec: Some(other) })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::AlreadyExists);
    assert!(status.message().starts_with("spec.client_token:"));

    let campaign = wait_done(&mut client, &id, Duration::from_secs(120)).await;
    assert_eq!(
        campaign.state,
        CampaignState::CompletedWithErrors as i32,
        "{}",
        campaign.state_reason
    );
    let all = targets(&mut client, &id, true).await;
    assert_counters_add_up(&campaign, &all);
    let c = campaign.counters.unwrap();
    // 2 regions x (prod-a 8 + prod-b 4 + dev-a 4) = 32 targets.
    assert_eq!(c.total, 32);
    assert_eq!(c.failed, 2, "prod-a's failing instance in each region");
    assert_eq!(c.skipped, 4, "an offline and an unmanaged instance per region");
    assert_eq!(c.success, 26);
    assert_eq!(campaign.errors, 2);
    for target in &all {
        let role = stack
            .fleet
            .instances()
            .find(|(_, _, i)| i.id == target.instance_id)
            .and_then(|(_, _, i)| i.tags.get("Role").cloned())
            .unwrap_or_default();
        match role.as_str() {
            "fail" => {
                assert_eq!(target.status, TargetStatus::Failed as i32);
                assert_eq!(target.exit_code, Some(2));
                assert_eq!(target.reason, "exit code 2");
            }
            "offline" => assert!(target.reason.contains("offline"), "{target:?}"),
            "unmanaged" => assert!(target.reason.contains("not managed by SSM"), "{target:?}"),
            "win" => {
                assert_eq!(target.status, TargetStatus::Success as i32);
                assert_eq!(target.platform, Platform::Windows as i32);
                assert_eq!(target.document_name, "AWS-RunPowerShellScript");
                assert!(
                    target.steps[0].stdout_url.starts_with("s3://muster-output/"),
                    "{:?}",
                    target.steps
                );
            }
            _ => {
                assert_eq!(target.status, TargetStatus::Success as i32, "{target:?}");
                assert_eq!(target.document_name, "AWS-RunShellScript");
                assert!(target.steps[0].stdout.contains("AWS-RunShellScript"));
            }
        }
    }
    assert_eq!(campaign.scopes.len(), 6);
    assert!(campaign.scopes.iter().all(|s| s.state == ScopeState::Discovered as i32));
    let prod_a_east = campaign
        .scopes
        .iter()
        .find(|s| s.account_id == stack.account("prod-a") && s.region == EAST)
        .unwrap();
    assert_eq!(
        (prod_a_east.managed, prod_a_east.offline, prod_a_east.unmanaged),
        (7, 1, 0)
    );
    assert!(
        stack.sends_per_instance().values().all(|n| *n == 1),
        "no instance ran twice"
    );

    // The export: one JSON line per target, where the Athena table reads.
    let campaign = wait_for(&mut client, &id, Duration::from_secs(30), "the export", |c| {
        c.export.as_ref().is_some_and(|e| !e.url.is_empty())
    })
    .await;
    let url = campaign.export.unwrap().url;
    let key = url.strip_prefix("s3://muster-results/").expect("the results bucket");
    assert!(
        key.starts_with("campaigns/dt=") && key.ends_with(&format!("/campaign={id}/targets.jsonl.gz")),
        "{key}"
    );
    let s3 = aws_sdk_s3::Client::from_conf(muster_common::aws::s3_config(&stack.sb.hub_config(EAST)));
    let body = s3
        .get_object()
        .bucket("muster-results")
        .key(key)
        .send()
        .await
        .unwrap()
        .body
        .collect()
        .await
        .unwrap()
        .into_bytes();
    let mut text = String::new();
    flate2::read::GzDecoder::new(&body[..])
        .read_to_string(&mut text)
        .unwrap();
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 32);
    assert!(
        lines
            .iter()
            .all(|l| l["campaign_id"] == id.as_str() && l["labels"]["ticket"] == "CHG-1")
    );
    assert_eq!(lines.iter().filter(|l| l["status"] == "failed").count(), 2);

    // Every key is a column of the Athena table that hub.yaml creates, and
    // every column is a key: the export and the table cannot drift apart.
    let (columns, step_fields) = athena_columns();
    for line in &lines {
        let keys: BTreeSet<String> = line.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, columns, "export keys vs muster.campaign_targets columns");
        for step in line["steps"].as_array().unwrap() {
            let keys: BTreeSet<String> = step.as_object().unwrap().keys().cloned().collect();
            assert_eq!(keys, step_fields, "step keys vs the steps struct of the table");
        }
    }
}

/// The columns of `muster.campaign_targets` in hub.yaml, and the fields of its
/// `steps` struct.
fn athena_columns() -> (BTreeSet<String>, BTreeSet<String>) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/cloudformation/hub.yaml");
    let table = muster_sim::cfn::Template::load(&path)
        .unwrap()
        .with_params([(
            "AWS::AccountId".to_owned(),
            muster_sim::cfn::Param::Str("123456789012".into()),
        )])
        .properties("CampaignTargetsTable", "AWS::Glue::Table")
        .unwrap();
    let columns = table["TableInput"]["StorageDescriptor"]["Columns"].as_array().unwrap();
    let names = columns.iter().map(|c| c["Name"].as_str().unwrap().to_owned()).collect();
    let steps = columns.iter().find(|c| c["Name"] == "steps").unwrap()["Type"]
        .as_str()
        .unwrap()
        .trim();
    let fields = steps
        .strip_prefix("array<struct<")
        .and_then(|s| s.strip_suffix(">>"))
        .unwrap()
        .split(',')
        .map(|f| f.split(':').next().unwrap().to_owned())
        .collect();
    (names, fields)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ous_expand_recursively_minus_excluded_accounts() {
    let stack = Stack::start(fleets::MIXED, Options::default()).await;
    let mut client = stack.client.clone();
    let mut spec = mixed_spec(&stack);
    {
        let t = spec.targets.as_mut().unwrap();
        t.account_ids.clear();
        t.organizational_unit_ids = vec![stack.fleet.root_id.clone()];
        // The root holds the management (hub) account too; leave it and prod-b out.
        t.exclude_account_ids = vec![stack.account("prod-b"), stack.fleet.hub_account.clone()];
    }
    let plan = client
        .plan_campaign(PlanCampaignRequest {
            spec: Some(spec.clone()),
            wait_seconds: 60,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(plan.complete);
    let campaign = plan.campaign.unwrap();
    assert_eq!(campaign.state, CampaignState::Planned as i32);
    let accounts: BTreeSet<String> = campaign.scopes.iter().map(|s| s.account_id.clone()).collect();
    assert_eq!(
        accounts,
        [stack.account("prod-a"), stack.account("dev-a")].into(),
        "the root's OUs, recursively, minus prod-b"
    );
    assert_eq!(campaign.scopes.len(), 4);
    let c = campaign.counters.unwrap();
    assert_eq!(c.pending, 2 * (7 + 4), "would run: everything online");
    assert_eq!(c.skipped, 2, "prod-a's offline instance in each region");
    assert!(stack.sb.audit().is_empty(), "a plan runs nothing");

    // One OU only.
    spec.targets.as_mut().unwrap().organizational_unit_ids = vec![stack.fleet.ous["Dev"].clone()];
    spec.targets.as_mut().unwrap().exclude_account_ids.clear();
    let plan = client
        .plan_campaign(PlanCampaignRequest {
            spec: Some(spec),
            wait_seconds: 60,
        })
        .await
        .unwrap()
        .into_inner();
    let accounts: BTreeSet<String> = plan
        .campaign
        .unwrap()
        .scopes
        .iter()
        .map(|s| s.account_id.clone())
        .collect();
    assert_eq!(accounts, [stack.account("dev-a")].into());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_errors_stops_the_rollout_and_terminates_the_rest() {
    let stack = Stack::start(&fleets::uniform(40, 12, 0.3), Options::default()).await;
    let mut client = stack.client.clone();
    let mut spec = script_spec(&[stack.account("only")], &[EAST], &["patch"], &[], "ext-uniform");
    spec.rate = Some(RateControl {
        max_concurrency: "2".into(),
        max_errors: "3".into(),
        batch_size: 1,
        api_calls_per_second: 0.0,
    });
    let id = submit(&mut client, spec).await;
    let campaign = wait_done(&mut client, &id, Duration::from_secs(120)).await;
    assert_eq!(campaign.state, CampaignState::Failed as i32);
    assert!(
        campaign.state_reason.starts_with("error threshold exceeded"),
        "{}",
        campaign.state_reason
    );
    let c = campaign.counters.unwrap();
    assert!(c.failed >= 4, "the 4th error stopped it");
    assert!(
        c.failed <= 5,
        "in flight when it stopped: at most concurrency - 1 more ({} failed)",
        c.failed
    );
    assert!(c.terminated > 0);
    assert_eq!(c.success + c.failed + c.terminated, 40);
    let all = targets(&mut client, &id, false).await;
    assert_counters_add_up(&campaign, &all);
    let sent = stack.sends_per_instance();
    for target in &all {
        if target.status == TargetStatus::Terminated as i32 {
            assert!(
                !sent.contains_key(&target.instance_id),
                "a terminated target was never sent"
            );
            assert!(target.reason.contains("max_errors (3)"), "{}", target.reason);
        } else {
            assert_eq!(sent.get(&target.instance_id), Some(&1));
        }
    }
    assert_eq!(campaign.error_threshold, Some(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_releasing_and_cancels_commands_in_flight() {
    let stack = Stack::start(&fleets::uniform(20, 0, 60.0), Options::default()).await;
    let mut client = stack.client.clone();
    let mut spec = script_spec(&[stack.account("only")], &[EAST], &["sleep 60"], &[], "ext-uniform");
    spec.rate = Some(RateControl {
        max_concurrency: "10".into(),
        batch_size: 5,
        ..Default::default()
    });
    let id = submit(&mut client, spec).await;
    wait_for(&mut client, &id, Duration::from_secs(60), "10 running", |c| {
        c.counters.is_some_and(|c| c.running == 10)
    })
    .await;
    let answer = client
        .cancel_campaign(CancelCampaignRequest {
            campaign_id: id.clone(),
            reason: "change freeze".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.campaign.unwrap().state, CampaignState::Cancelling as i32);
    let campaign = wait_done(&mut client, &id, Duration::from_secs(60)).await;
    assert_eq!(campaign.state, CampaignState::Cancelled as i32);
    assert!(
        campaign.state_reason.contains("change freeze"),
        "{}",
        campaign.state_reason
    );
    let c = campaign.counters.unwrap();
    assert_eq!((c.cancelled, c.success, c.total), (20, 0, 20));
    let all = targets(&mut client, &id, false).await;
    assert_counters_add_up(&campaign, &all);
    assert_eq!(
        stack.sends_per_instance().len(),
        10,
        "nothing released after the cancel"
    );
    assert!(
        stack.sb.count("ssm", "CancelCommand", "ok") >= 2,
        "both batches in flight were cancelled"
    );
    assert_eq!(
        all.iter()
            .filter(|t| t.reason == "cancelled before it was released")
            .count(),
        10
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_api_fences_leases_and_counts_duplicates_once() {
    let stack = Stack::start(
        &fleets::uniform(3, 0, 0.1),
        Options {
            workers: 0,
            ..Default::default()
        },
    )
    .await;
    let mut client = stack.client.clone();
    let id = submit(
        &mut client,
        script_spec(&[stack.account("only")], &[EAST], &["true"], &[], "ext-uniform"),
    )
    .await;
    let mut workers = WorkerServiceClient::new(
        stack
            .creds
            .endpoint(stack.controller.worker_addr.port(), Some(&stack.creds.pki.worker))
            .connect_lazy(),
    );
    let sqs = aws_sdk_sqs::Client::new(&stack.sb.hub_config(EAST));
    let next_ref = || async {
        loop {
            let got = sqs
                .receive_message()
                .queue_url(&stack.fleet.queue_url)
                .wait_time_seconds(5)
                .send()
                .await
                .unwrap();
            if let Some(message) = got.messages.unwrap_or_default().into_iter().next() {
                sqs.delete_message()
                    .queue_url(&stack.fleet.queue_url)
                    .receipt_handle(message.receipt_handle().unwrap())
                    .send()
                    .await
                    .unwrap();
                return muster_proto::decode_task_ref(message.body().unwrap()).unwrap();
            }
        }
    };
    let lease = |task: TaskRef, worker: &str| LeaseTaskRequest {
        task: Some(task),
        worker_id: worker.into(),
        capacity: 0,
    };

    // Discover: lease, a second lease is refused, report, complete.
    let discover = next_ref().await;
    let granted = workers
        .lease_task(lease(discover.clone(), "a"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(granted.outcome, LeaseOutcome::Granted as i32);
    let lease_a = granted.lease.unwrap();
    assert_eq!(lease_a.task.as_ref().unwrap().kind, TaskKind::Discover as i32);
    let other = workers
        .lease_task(lease(discover.clone(), "b"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(other.outcome, LeaseOutcome::LeasedElsewhere as i32);
    let status = workers
        .renew_lease(RenewLeaseRequest {
            task_id: discover.task_id.clone(),
            lease_id: lease_a.lease_id + 1,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "a stale lease id is fenced");
    let ids: Vec<String> = stack.fleet.instances().map(|(_, _, i)| i.id.clone()).collect();
    let found: Vec<DiscoveredInstance> = ids
        .iter()
        .map(|id| DiscoveredInstance {
            instance_id: id.clone(),
            platform: Platform::Linux as i32,
            ping_status: PingStatus::Online as i32,
            ..Default::default()
        })
        .collect();
    for _ in 0..2 {
        workers
            .report_targets(ReportTargetsRequest {
                task_id: discover.task_id.clone(),
                lease_id: lease_a.lease_id,
                instances: found.clone(),
            })
            .await
            .unwrap();
    }
    workers
        .complete_task(muster_proto::v1::CompleteTaskRequest {
            task_id: discover.task_id.clone(),
            lease_id: lease_a.lease_id,
            // This test takes its Execute task from the queue.
            capacity: 0,
        })
        .await
        .unwrap();
    let finished = workers
        .lease_task(lease(discover.clone(), "c"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(finished.outcome, LeaseOutcome::Finished as i32);
    assert_eq!(
        get(&mut client, &id).await.counters.unwrap().total,
        3,
        "targets reported twice are recorded once"
    );

    // Execute: dispatch, results twice, counted once.
    let execute = next_ref().await;
    let granted = workers
        .lease_task(lease(execute.clone(), "a"))
        .await
        .unwrap()
        .into_inner()
        .lease
        .unwrap();
    let spec = granted.task.unwrap().execute.unwrap();
    assert_eq!(spec.instance_ids.len(), 3);
    assert_eq!(spec.comment, format!("muster task {}", execute.task_id));
    workers
        .report_dispatch(ReportDispatchRequest {
            task_id: execute.task_id.clone(),
            lease_id: granted.lease_id,
            command_id: "c0ffee00-0000-0000-0000-000000000000".into(),
            instance_ids: spec.instance_ids.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    let results: Vec<TargetResult> = spec
        .instance_ids
        .iter()
        .map(|i| TargetResult {
            instance_id: i.clone(),
            status: TargetStatus::Success as i32,
            exit_code: Some(0),
            reason: "exit code 0".into(),
            steps: vec![StepOutput {
                name: "aws:runShellScript".into(),
                stdout: "ok".into(),
                ..Default::default()
            }],
            ..Default::default()
        })
        .collect();
    let first = workers
        .report_results(ReportResultsRequest {
            task_id: execute.task_id.clone(),
            lease_id: granted.lease_id,
            results: results.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    let second = workers
        .report_results(ReportResultsRequest {
            task_id: execute.task_id.clone(),
            lease_id: granted.lease_id,
            results,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((first.accepted, first.duplicates), (3, 0));
    assert_eq!((second.accepted, second.duplicates), (0, 3));
    let unknown = workers
        .report_results(ReportResultsRequest {
            task_id: uuid::Uuid::new_v4().to_string(),
            lease_id: 1,
            results: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    workers
        .complete_task(muster_proto::v1::CompleteTaskRequest {
            task_id: execute.task_id.clone(),
            lease_id: granted.lease_id,
            capacity: 0,
        })
        .await
        .unwrap();
    let campaign = wait_done(&mut client, &id, Duration::from_secs(30)).await;
    assert_eq!(campaign.state, CampaignState::Succeeded as i32);
    assert_eq!(campaign.counters.unwrap().success, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_get_a_snapshot_then_progress_and_a_slow_one_stalls_nothing() {
    let stack = Stack::start(&fleets::uniform(30, 0, 0.5), Options::default()).await;
    let mut client = stack.client.clone();
    let mut spec = script_spec(&[stack.account("only")], &[EAST], &["true"], &[], "ext-uniform");
    spec.rate = Some(RateControl {
        max_concurrency: "10".into(),
        batch_size: 5,
        ..Default::default()
    });
    let id = submit(&mut client, spec).await;
    // A subscriber that never reads until the end: the campaign must finish anyway.
    let slow = client
        .watch_campaign(WatchCampaignRequest {
            campaign_id: id.clone(),
            include_targets: true,
        })
        .await
        .unwrap()
        .into_inner();
    let mut watchers = Vec::new();
    for include_targets in [true, false, false] {
        let mut stream = client
            .watch_campaign(WatchCampaignRequest {
                campaign_id: id.clone(),
                include_targets,
            })
            .await
            .unwrap()
            .into_inner();
        watchers.push(tokio::spawn(async move {
            let mut events = Vec::new();
            while let Some(event) = stream.message().await.unwrap() {
                events.push(event.event.unwrap());
            }
            events
        }));
    }
    let campaign = wait_done(&mut client, &id, Duration::from_secs(120)).await;
    assert_eq!(campaign.state, CampaignState::Succeeded as i32);
    for (i, watcher) in watchers.into_iter().enumerate() {
        let events = tokio::time::timeout(Duration::from_secs(10), watcher)
            .await
            .expect("the stream ends")
            .unwrap();
        assert!(
            matches!(events.first(), Some(watch_campaign_response::Event::Snapshot(_))),
            "a snapshot comes first"
        );
        assert!(
            events
                .iter()
                .any(|e| matches!(e, watch_campaign_response::Event::Progress(_))),
            "progress is streamed"
        );
        let targets = events
            .iter()
            .filter(|e| matches!(e, watch_campaign_response::Event::Target(_)))
            .count();
        assert_eq!(
            targets,
            if i == 0 { 30 } else { 0 },
            "target events only when asked for"
        );
        match events.last() {
            Some(watch_campaign_response::Event::Snapshot(last)) => {
                assert_eq!(last.state, CampaignState::Succeeded as i32);
                assert_eq!(last.counters, campaign.counters);
            }
            other => panic!("the stream ends with the final snapshot, not {other:?}"),
        }
    }
    drop(slow);
}
