//! Observability of the real processes: one trace per task across
//! controller, SQS and worker, exported over OTLP to a receiver in the test;
//! Prometheus metrics that agree with the campaign and with the sim's own
//! counters; health endpoints; and no telemetry connection when none is
//! configured.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use muster_proto::v1::{CampaignState, RateControl, TargetStatus};
use muster_tests::client::{script_spec, submit, targets, wait_done};
use muster_tests::fleets;
use muster_tests::metrics::{parse, sum};
use muster_tests::otlp::{ReceivedSpan, Receiver, http_get};
use muster_tests::procs::{System, SystemOptions};

const EAST: &str = "us-east-1";
const WEST: &str = "eu-west-1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_task_is_one_trace_from_controller_over_sqs_to_worker_and_back() {
    let receiver = Receiver::start().await;
    let mut system = System::start(
        &fleets::uniform(6, 1, 0.5),
        SystemOptions {
            env: vec![
                (
                    "OTEL_EXPORTER_OTLP_ENDPOINT".into(),
                    format!("http://{}", receiver.addr),
                ),
                ("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()),
            ],
            ..Default::default()
        },
    )
    .await;
    let account = system.account("only");
    let mut spec = script_spec(std::slice::from_ref(&account), &[EAST], &["echo traced"], &[]);
    spec.rate = Some(RateControl {
        batch_size: 3,
        ..Default::default()
    });
    let id = submit(&mut system.client, spec).await;
    let campaign = wait_done(&mut system.client, &id, Duration::from_secs(120)).await;
    let counters = campaign.counters.unwrap_or_default();
    assert_eq!((counters.success, counters.failed), (5, 1), "one instance exits 1");

    // SIGTERM flushes what the batch exporters still hold.
    system.stop_worker(0);
    system.stop_controller();
    let deadline = Instant::now() + Duration::from_secs(30);
    let spans = loop {
        let spans = receiver.spans();
        let complete = spans
            .iter()
            .filter(|s| s.service == "muster-controller" && s.name == rpc("CompleteTask"))
            .count();
        if complete >= 3 || Instant::now() > deadline {
            break spans;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        !spans.is_empty(),
        "no spans arrived at the OTLP receiver:\n{}",
        system.logs()
    );

    let tasks: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| s.service == "muster-worker" && s.name == "task")
        .collect();
    let execute: Vec<&&ReceivedSpan> = tasks
        .iter()
        .filter(|s| s.attr("muster.task.kind") == "TASK_KIND_EXECUTE")
        .collect();
    assert_eq!(execute.len(), 2, "6 instances in batches of 3: {tasks:#?}");
    assert_eq!(tasks.len(), 3, "one discover task and two execute tasks");
    let trace_ids: HashSet<&str> = tasks.iter().map(|s| s.trace_id.as_str()).collect();
    assert_eq!(trace_ids.len(), 3, "each task has a trace of its own");

    let queue = system.fleet.queue_url.rsplit('/').next().expect("a queue URL");
    for task in &tasks {
        let task_id = task.attr("muster.task.id");
        let trace: Vec<&ReceivedSpan> = spans.iter().filter(|s| s.trace_id == task.trace_id).collect();
        let by_id: HashMap<&str, &ReceivedSpan> = trace.iter().map(|s| (s.span_id.as_str(), *s)).collect();

        // The controller starts every task's trace. The Discover task goes
        // controller -> SQS -> worker: the worker's task span is a child of the
        // enqueue span, through the message attribute. The Execute tasks are
        // handed to the worker with the Discover task's completion: a child of
        // the hand-off span, through the lease.
        let discover = task.attr("muster.task.kind") == "TASK_KIND_DISCOVER";
        let (started_by, leased_with) = if discover {
            // OpenTelemetry's messaging conventions: "send <queue>".
            (format!("send {queue}"), rpc("LeaseTask"))
        } else {
            ("hand off task".to_owned(), rpc("CompleteTask"))
        };
        let parent = by_id
            .get(task.parent_span_id.as_str())
            .unwrap_or_else(|| panic!("the task span's parent is not in its trace: {trace:#?}"));
        assert_eq!(
            (parent.service.as_str(), parent.name.as_str()),
            ("muster-controller", started_by.as_str())
        );
        assert!(parent.parent_span_id.is_empty(), "{started_by} starts the trace");
        if discover {
            assert_eq!(
                (
                    parent.attr("messaging.system"),
                    parent.attr("messaging.operation.type"),
                    parent.attr("messaging.destination.name")
                ),
                ("aws_sqs", "send", queue),
                "the enqueue is an SQS send"
            );
            assert!(
                trace
                    .iter()
                    .any(|s| s.service == "muster-worker" && s.name == rpc("LeaseTask")),
                "the queued task was leased with LeaseTask"
            );
            continue;
        }
        assert!(
            !trace.iter().any(|s| s.name == rpc("LeaseTask")),
            "a handed-off task is leased with the {leased_with} answer, not LeaseTask"
        );

        // Every step is there.
        let worker_steps: HashSet<&str> = trace
            .iter()
            .filter(|s| s.service == "muster-worker")
            .map(|s| s.name.as_str())
            .collect();
        for step in [
            "task".to_owned(),
            "assume role".to_owned(),
            "execute".to_owned(),
            "SSM.SendCommand".to_owned(),
            "poll".to_owned(),
            "fetch output".to_owned(),
            rpc("ReportDispatch"),
            rpc("ReportResults"),
            rpc("CompleteTask"),
        ] {
            assert!(
                worker_steps.contains(step.as_str()),
                "worker step {step} missing from {worker_steps:?}"
            );
        }

        // Worker -> controller: each gRPC call's server span is a child of
        // the worker's client span of the same name.
        for method in ["ReportDispatch", "ReportResults", "CompleteTask"] {
            let server = trace
                .iter()
                .find(|s| s.service == "muster-controller" && s.name == rpc(method))
                .unwrap_or_else(|| panic!("no controller span {method} in the task's trace"));
            let client = by_id
                .get(server.parent_span_id.as_str())
                .unwrap_or_else(|| panic!("{method}'s server span has no parent in the trace"));
            assert_eq!(
                (client.service.as_str(), client.name.as_str()),
                ("muster-worker", rpc(method).as_str())
            );
            for span in [server, *client] {
                assert_eq!(
                    (
                        span.attr("rpc.system"),
                        span.attr("rpc.service"),
                        span.attr("rpc.method")
                    ),
                    ("grpc", "muster.v1.WorkerService", method),
                    "{} of {} has the RPC conventions' attributes",
                    span.name,
                    span.service
                );
            }
        }
        let send = trace
            .iter()
            .find(|s| s.name == "SSM.SendCommand")
            .expect("a SendCommand span");
        assert_eq!(
            (
                send.attr("rpc.system"),
                send.attr("rpc.service"),
                send.attr("rpc.method")
            ),
            ("aws-api", "SSM", "SendCommand"),
            "AWS calls have the AWS SDK conventions' attributes"
        );

        // Parent links stay inside the trace, and every span says which
        // campaign, task, account and region it worked for.
        for span in &trace {
            assert!(
                span.parent_span_id.is_empty() || by_id.contains_key(span.parent_span_id.as_str()),
                "span {} of {} has a parent outside the trace",
                span.name,
                span.service
            );
            for (key, want) in [
                ("muster.campaign.id", id.as_str()),
                ("muster.task.id", task_id),
                ("cloud.account.id", account.as_str()),
                ("cloud.region", EAST),
            ] {
                assert_eq!(
                    span.attr(key),
                    want,
                    "span {} of {} carries {key}",
                    span.name,
                    span.service
                );
            }
        }
    }
}

/// A WorkerService method's span name (OpenTelemetry's RPC conventions).
fn rpc(method: &str) -> String {
    format!("muster.v1.WorkerService/{method}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_agree_with_the_campaign_and_the_sim_and_nothing_connects_to_a_collector() {
    // The default OTLP port: an exporter that ran without being configured
    // would connect here.
    let otlp_default = tokio::net::TcpListener::bind("127.0.0.1:4317")
        .await
        .expect("port 4317 (the OTLP default) must be free for this test");
    let mut system = System::start(fleets::MIXED, SystemOptions::default()).await;
    let accounts: Vec<String> = ["prod-a", "prod-b", "dev-a"]
        .iter()
        .map(|a| system.account(a))
        .collect();
    let spec = script_spec(&accounts, &[EAST, WEST], &["echo patched"], &["Write-Output patched"]);
    let id = submit(&mut system.client, spec).await;
    let campaign = wait_done(&mut system.client, &id, Duration::from_secs(180)).await;
    let all = targets(&mut system.client, &id, false).await;

    // Controller: targets by status are the campaign's.
    let (status, text) = http_get(system.controller_metrics_port(), "/metrics").await;
    assert_eq!(status, 200);
    let controller = parse(&text);
    let mut want: BTreeMap<&str, f64> = BTreeMap::new();
    for target in &all {
        *want
            .entry(TargetStatus::try_from(target.status).unwrap().short_name())
            .or_default() += 1.0;
    }
    assert!(want.len() >= 3, "the mixed fleet ends in several statuses: {want:?}");
    for status in muster_proto::ALL_TARGET_STATUSES {
        let name = status.short_name();
        assert_eq!(
            sum(&controller, "muster_controller_targets", &[("status", name)]),
            want.get(name).copied().unwrap_or(0.0),
            "muster_controller_targets{{status={name:?}}}\n{text}"
        );
    }
    let state = CampaignState::try_from(campaign.state).unwrap().short_name();
    assert_eq!(
        sum(&controller, "muster_controller_campaigns", &[("state", state)]),
        1.0
    );
    let sends = system.sends_per_instance();
    assert_eq!(
        sum(&controller, "muster_controller_results_ingested_total", &[]),
        sends.len() as f64,
        "one result recorded per instance that ran"
    );
    let protocol = muster_proto::WORKER_PROTOCOL.to_string();
    let schema = muster_controller::store::newest_known().to_string();
    assert_eq!(
        sum(
            &controller,
            "muster_controller_build_info",
            &[
                ("version", env!("CARGO_PKG_VERSION")),
                ("schema", &schema),
                ("worker_protocol", &protocol),
            ]
        ),
        1.0,
        "{text}"
    );
    // The store's writer committed the submit, leases, dispatches and
    // reports (at least one write per completed task), never more commits
    // than writes.
    let (commits, writes) = (
        sum(&controller, "muster_controller_store_commits_total", &[]),
        sum(&controller, "muster_controller_store_writes_total", &[]),
    );
    assert!(
        commits >= 1.0 && writes >= commits && writes >= 6.0,
        "{commits} commits, {writes} writes\n{text}"
    );
    // Writes undone inside a committed transaction are counted apart (the
    // store's unit test makes one fail).
    assert!(
        text.contains("\nmuster_controller_store_writes_rolled_back_total "),
        "{text}"
    );
    assert_eq!(sum(&controller, "muster_controller_backlog_tasks", &[]), 0.0);
    assert_eq!(sum(&controller, "muster_controller_tasks", &[("state", "leased")]), 0.0);
    assert!(sum(&controller, "muster_controller_tasks", &[("state", "completed")]) >= 6.0);

    // Worker: SendCommand calls are the sim's.
    let (status, text) = http_get(system.worker_metrics_port(0), "/metrics").await;
    assert_eq!(status, 200);
    let worker = parse(&text);
    let sim_sends = system.sb.count("ssm", "SendCommand", "ok");
    assert!(sim_sends > 0);
    assert_eq!(
        sum(
            &worker,
            "muster_worker_aws_calls_total",
            &[("api", "SendCommand"), ("outcome", "ok")]
        ),
        sim_sends as f64,
        "{text}"
    );
    assert_eq!(
        sum(&worker, "muster_worker_aws_calls_total", &[("api", "AssumeRole")]),
        0.0,
        "AssumeRole goes through the credential cache, counted on its own"
    );
    assert!(sum(&worker, "muster_worker_credential_refreshes_total", &[]) >= 1.0);
    assert_eq!(
        sum(
            &worker,
            "muster_worker_build_info",
            &[("version", env!("CARGO_PKG_VERSION")), ("worker_protocol", &protocol)]
        ),
        1.0,
        "{text}"
    );
    assert_eq!(sum(&worker, "muster_worker_batches_in_flight", &[]), 0.0);
    assert!(sum(&worker, "muster_worker_sqs_receive_seconds_count", &[]) >= 1.0);

    // Health: liveness, readiness and gRPC health on the metrics ports.
    for port in [system.controller_metrics_port(), system.worker_metrics_port(0)] {
        assert_eq!(http_get(port, "/healthz").await.0, 200);
        let (status, body) = http_get(port, "/readyz").await;
        assert_eq!(status, 200, "{body}");
        let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .expect("a URL")
            .connect()
            .await
            .expect("gRPC health answers");
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
        let answer = health
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .expect("health check")
            .into_inner();
        assert_eq!(
            answer.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        );
    }

    // Without OTEL_EXPORTER_OTLP_ENDPOINT nothing tried to export.
    let connected = tokio::time::timeout(Duration::from_millis(200), otlp_default.accept()).await;
    assert!(connected.is_err(), "a process connected to the default OTLP port");
    assert!(!system.logs().contains("exporting traces"), "no exporter was set up");
}
