//! Benchmark (issue 4): how fast the controller takes results in, how its
//! read API answers meanwhile, and its memory with 100,000 targets.
//!
//! The real `muster-controller` process (TLS on) against the sandbox. This
//! program plays the workers over gRPC with the worker certificate: it
//! discovers 100,000 instances over 20 (account, region) scopes, leases and
//! dispatches all 2,000 execute batches of 50, then reports every result
//! (ReportResults, 8 callers at once, MUSTER_BENCH_CALLERS) while a ninth caller measures
//! GetCampaign, ListCampaigns and the first answer of WatchCampaign.
//!
//!     cargo build --release --bins
//!     cargo bench -p muster-tests --bench controller_ingest
//!
//! MUSTER_BENCH_TARGETS changes the 100,000; MUSTER_BENCH_WATCH_TARGETS=1
//! keeps a watcher of every target's result open meanwhile, as a console
//! on the campaign does. MUSTER_BENCH_OUTPUT_BYTES gives each result that
//! much standard output, a patch run's log (default: one line, about 50
//! bytes); a patch run's is 1-8 KiB (ListCommandInvocations shows up to
//! 2,500 characters a step). Long output goes compressed, as workers send
//! it to a controller that takes it; MUSTER_BENCH_PLAIN_OUTPUT=1 sends it
//! plain, as a worker before that did, for an A/B in one session.
//! MUSTER_BENCH_PATCH_BEHIND=N makes the campaign a patch Scan whose every
//! result carries a patch state, one in N of them behind (a third of those
//! on a critical patch), and times, once the campaign has ended, the
//! listings that choose by patch state against one of every target.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use muster_proto::v1::worker_service_client::WorkerServiceClient;
use muster_proto::v1::{
    CampaignState, CompleteTaskRequest, DiscoveredInstance, GetCampaignRequest, LeaseOutcome, LeaseTaskRequest,
    ListCampaignsRequest, ListTargetsRequest, PatchState, PingStatus, Platform, RateControl, ReportDispatchRequest,
    ReportResultsRequest, ReportTargetsRequest, StepOutput, TargetResult, TargetStatus, TaskKind, TaskRef,
    WatchCampaignRequest,
};
use muster_tests::client::{get, patch_command, script_spec, submit, wait_done};
use muster_tests::fleets;
use muster_tests::procs::{System, SystemOptions};
use muster_tests::procstat::{cpu_seconds, percentiles, rss_mib, threads_cpu_seconds};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use tonic::transport::Channel;

const REGIONS: [&str; 2] = ["us-east-1", "eu-west-1"];
const ACCOUNTS: u32 = 10;
const BATCH: usize = 50;

type Workers = WorkerServiceClient<Channel>;

/// The name of the controller's store writer thread.
const WRITER: &str = "muster-store-writer";

/// Takes `count` task references off the queue.
async fn receive(system: &System, count: usize) -> Vec<TaskRef> {
    let sqs = aws_sdk_sqs::Client::new(&system.sb.hub_config("us-east-1"));
    let mut refs = Vec::with_capacity(count);
    let deadline = Instant::now() + Duration::from_secs(600);
    while refs.len() < count {
        assert!(
            Instant::now() < deadline,
            "only {} of {count} tasks arrived",
            refs.len()
        );
        let got = sqs
            .receive_message()
            .queue_url(&system.fleet.queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .send()
            .await
            .expect("ReceiveMessage");
        for message in got.messages.unwrap_or_default() {
            sqs.delete_message()
                .queue_url(&system.fleet.queue_url)
                .receipt_handle(message.receipt_handle().unwrap_or_default())
                .send()
                .await
                .expect("DeleteMessage");
            refs.push(muster_proto::decode_task_ref(message.body().unwrap_or_default()).expect("a TaskRef"));
        }
    }
    refs
}

/// A result's standard output: one line, or `bytes` of lines like a
/// package manager's.
fn stdout(instance: &str, bytes: Option<usize>) -> String {
    match bytes {
        None => format!("patched {instance}: 3 packages updated, no reboot needed\n"),
        Some(n) => patch_log(instance, n),
    }
}

/// `bytes` of what AWS-RunPatchBaseline prints on Amazon Linux: its
/// log's preamble, then the packages it upgraded, with versions and
/// sizes that differ from one instance to the next as a fleet's do. (A
/// line repeated would flatter anything that compresses it.)
fn patch_log(instance: &str, bytes: usize) -> String {
    const PACKAGES: [&str; 24] = [
        "kernel",
        "openssl-libs",
        "glibc",
        "glibc-common",
        "systemd",
        "systemd-libs",
        "curl",
        "libcurl",
        "python3",
        "python3-libs",
        "sudo",
        "bash",
        "tzdata",
        "ca-certificates",
        "nss",
        "krb5-libs",
        "libxml2",
        "expat",
        "vim-minimal",
        "openssh-server",
        "rsync",
        "gnupg2",
        "amazon-ssm-agent",
        "cloud-init",
    ];
    let mut rng = StdRng::seed_from_u64(instance.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    }));
    let mut clock = rng.random_range(0..80_000u32);
    let mut log = String::with_capacity(bytes + 128);
    let mut info = |rng: &mut StdRng, line: &str| {
        clock += rng.random_range(0..3);
        let (h, m, s) = (clock / 3600, clock / 60 % 60, clock % 60);
        format!("12/05/2026 {h:02}:{m:02}:{s:02} root [INFO]: {line}\n")
    };
    let preamble = [
        format!(
            "Downloading payload from https://s3.dualstack.us-east-1.amazonaws.com/aws-ssm-us-east-1/\
             patchbaselineoperations/linux/payloads/patch-baseline-operations-1.{}.tar.gz",
            rng.random_range(60..99)
        ),
        "Attempting to import entrance file os_selector".to_owned(),
        format!("Instance Id: {instance}"),
        "Product: AmazonLinux2023".to_owned(),
        format!("Patch Group: prod-{}", rng.random_range(0..10)),
        "Operation type: Install".to_owned(),
        format!("Snapshot Id: {:032x}", rng.random::<u128>()),
    ];
    for line in &preamble {
        log += &info(&mut rng, line);
    }
    log += "Dependencies resolved.\nUpgrading:\n";
    while log.len() < bytes {
        let package = PACKAGES[rng.random_range(0..PACKAGES.len())];
        log += &format!(
            " {package:<28} x86_64 {}.{}.{}-{}.amzn2023.0.{}  amazonlinux  {} k\n",
            rng.random_range(1..9),
            rng.random_range(0..40),
            rng.random_range(0..300),
            rng.random_range(1..900),
            rng.random_range(1..9),
            rng.random_range(10..9000)
        );
    }
    log.truncate(bytes);
    log
}

/// A leased and dispatched batch: its task, lease and instances.
type Batch = (String, u64, Vec<String>);

/// Every instance of a batch succeeded, with `output_bytes` of output.
/// A report as a worker makes it: long output compressed when `compress`
/// (the lease says the controller takes it, as this one does, unless
/// MUSTER_BENCH_PLAIN_OUTPUT=1 plays a worker that sends it plain); each
/// result with a patch state when `behind` says one in how many is behind.
fn report(
    (task_id, lease_id, instances): &Batch,
    output_bytes: Option<usize>,
    compress: bool,
    behind: Option<usize>,
) -> ReportResultsRequest {
    let results = instances
        .iter()
        .map(|i| {
            let mut result = TargetResult {
                patch_state: behind.map(|n| patch_state(i, n)),
                instance_id: i.clone(),
                status: TargetStatus::Success as i32,
                exit_code: Some(0),
                reason: "exit code 0".into(),
                steps: vec![StepOutput {
                    name: "aws:runShellScript".into(),
                    stdout: stdout(i, output_bytes),
                    ..Default::default()
                }],
                ..Default::default()
            };
            if compress {
                muster_proto::compress_result(&mut result);
            }
            result
        })
        .collect();
    ReportResultsRequest {
        task_id: task_id.clone(),
        lease_id: *lease_id,
        results,
    }
}

/// What a Scan left on instance `id`: one in `n` instances (by the number
/// its id ends in) misses 3 patches, every third of those one critical.
fn patch_state(id: &str, n: usize) -> PatchState {
    let (number, n) = (
        usize::from_str_radix(id.trim_start_matches("i-"), 16).unwrap_or(0),
        n.max(1),
    );
    let (missing, critical) = if number.is_multiple_of(n) {
        (3, u32::from((number / n).is_multiple_of(3)))
    } else {
        (0, 0)
    };
    PatchState {
        operation: "Scan".into(),
        installed: 40,
        missing,
        critical_non_compliant: critical,
        security_non_compliant: missing,
        ..Default::default()
    }
}

/// Every page of the campaign's targets that `request` chooses: how many,
/// and how long the pages took.
async fn list_all(system: &System, request: ListTargetsRequest) -> (usize, Duration) {
    let mut client = system.client.clone();
    let mut token = String::new();
    let mut listed = 0;
    let started = Instant::now();
    loop {
        let page = client
            .list_targets(ListTargetsRequest {
                page_token: token,
                ..request.clone()
            })
            .await
            .expect("ListTargets")
            .into_inner();
        listed += page.targets.len();
        token = page.next_page_token;
        if token.is_empty() {
            return (listed, started.elapsed());
        }
    }
}

fn rss(system: &System) -> String {
    system
        .controller_pid()
        .and_then(rss_mib)
        .map(|(now, peak)| format!("{now:.0} MiB (peak {peak:.0} MiB)"))
        .unwrap_or_else(|| "unknown".into())
}

#[tokio::main]
async fn main() {
    let targets: usize = std::env::var("MUSTER_BENCH_TARGETS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let callers: usize = std::env::var("MUSTER_BENCH_CALLERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8);
    let output_bytes: Option<usize> = std::env::var("MUSTER_BENCH_OUTPUT_BYTES")
        .ok()
        .and_then(|s| s.parse().ok());
    let behind: Option<usize> = std::env::var("MUSTER_BENCH_PATCH_BEHIND")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&n| n > 0);
    let scopes = ACCOUNTS as usize * REGIONS.len();
    let per_scope = targets / scopes;
    let batches = scopes * per_scope.div_ceil(BATCH);
    let mut system = System::start(
        &fleets::grid(ACCOUNTS, &REGIONS, 1, 0.1),
        SystemOptions {
            workers: 0,
            lease_ttl: 3600,
            controller_args: ["--max-tasks-per-scope", "100", "--max-queued", "5000"]
                .map(String::from)
                .to_vec(),
            ..Default::default()
        },
    )
    .await;
    println!(
        "store: {}",
        if muster_tests::on_postgres() {
            "PostgreSQL (MUSTER_TEST_STORE=postgres)"
        } else {
            "SQLite"
        }
    );
    println!(
        "output per result: {}",
        output_bytes.map_or("one line (MUSTER_BENCH_OUTPUT_BYTES unset)".to_owned(), |n| format!(
            "{n} bytes"
        ))
    );
    println!(
        "output sent: {}",
        if std::env::var("MUSTER_BENCH_PLAIN_OUTPUT").is_ok_and(|v| v == "1") {
            "plain, as a worker older than compressed output (MUSTER_BENCH_PLAIN_OUTPUT=1)"
        } else {
            "compressed by the workers where the lease says the controller takes it"
        }
    );
    println!("controller RSS idle: {}", rss(&system));
    let accounts: Vec<String> = system.fleet.accounts.iter().map(|a| a.id.clone()).collect();
    let mut spec = script_spec(&accounts, &REGIONS, &["true"], &[]);
    if behind.is_some() {
        spec.command = Some(patch_command(&[("Operation", "Scan")]));
    }
    if let Some(n) = behind {
        println!("patch state: every result, one in {n} behind (MUSTER_BENCH_PATCH_BEHIND)");
    }
    spec.rate = Some(RateControl {
        max_concurrency: "100%".into(),
        max_errors: String::new(),
        batch_size: BATCH as u32,
        api_calls_per_second: 0.0,
    });
    let id = submit(&mut system.client, spec).await;
    let workers: Workers = WorkerServiceClient::new(
        system
            .creds
            .worker_endpoint(system.worker_port(), "bench")
            .connect_lazy(),
    )
    .max_decoding_message_size(64 * 1024 * 1024)
    .max_encoding_message_size(64 * 1024 * 1024);

    // Discovery: every scope finds its share of the instances.
    let started = Instant::now();
    let mut next_instance = 0u64;
    for task in receive(&system, scopes).await {
        let lease = lease(&workers, &task).await;
        let instances: Vec<DiscoveredInstance> = (0..per_scope)
            .map(|_| {
                next_instance += 1;
                DiscoveredInstance {
                    instance_id: format!("i-{next_instance:017x}"),
                    platform: Platform::Linux as i32,
                    ping_status: PingStatus::Online as i32,
                    ..Default::default()
                }
            })
            .collect();
        workers
            .clone()
            .report_targets(ReportTargetsRequest {
                task_id: task.task_id.clone(),
                lease_id: lease.0,
                instances,
            })
            .await
            .expect("ReportTargets");
        complete(&workers, &task.task_id, lease.0).await;
    }
    println!(
        "discovery of {} targets in {scopes} scopes: {:.1}s; controller RSS {}",
        next_instance,
        started.elapsed().as_secs_f64(),
        rss(&system)
    );

    // Lease and dispatch every batch (not timed: SQS here is moto).
    let started = Instant::now();
    let mut leased = Vec::with_capacity(batches);
    let plain = std::env::var("MUSTER_BENCH_PLAIN_OUTPUT").is_ok_and(|v| v == "1");
    let mut compress = !plain;
    for task in receive(&system, batches).await {
        let (lease_id, instances, takes) = lease(&workers, &task).await;
        compress &= takes;
        workers
            .clone()
            .report_dispatch(ReportDispatchRequest {
                task_id: task.task_id.clone(),
                lease_id,
                command_id: uuid::Uuid::new_v4().to_string(),
                instance_ids: instances.clone(),
                ..Default::default()
            })
            .await
            .expect("ReportDispatch");
        leased.push((task.task_id, lease_id, instances));
    }
    println!(
        "{} batches leased and dispatched in {:.1}s",
        leased.len(),
        started.elapsed().as_secs_f64()
    );

    // A console open on the campaign (MUSTER_BENCH_WATCH_TARGETS=1): a
    // watcher of every target's result through the ingest.
    let target_watcher = if std::env::var("MUSTER_BENCH_WATCH_TARGETS").is_ok_and(|v| v == "1") {
        Some(watch_targets(system.client.clone(), id.clone()).await)
    } else {
        None
    };

    // Ingest, with the read API measured alongside.
    let ingesting = Arc::new(AtomicBool::new(true));
    let probe = tokio::spawn(probe_reads(system.client.clone(), id.clone(), ingesting.clone()));
    // The reports are made before the clock starts: making a patch run's
    // log is the load generator's work, not the controller's.
    let chunks: Vec<Vec<(ReportResultsRequest, Batch)>> = {
        let mut chunks = vec![Vec::new(); callers];
        for (i, batch) in leased.into_iter().enumerate() {
            chunks[i % callers].push((report(&batch, output_bytes, compress, behind), batch));
        }
        chunks
    };
    let controller_pid = system.controller_pid().expect("the controller runs");
    let metrics_port = system.metrics_port_of(0);
    let commits_before = commits(metrics_port).await;
    let cpu_before = cpu_seconds(controller_pid).unwrap_or(0.0);
    let writer_before = threads_cpu_seconds(controller_pid, WRITER).unwrap_or(0.0);
    let started = Instant::now();
    let mut handles = Vec::new();
    for chunk in chunks {
        let workers = workers.clone();
        handles.push(tokio::spawn(async move {
            let mut accepted = 0u64;
            let mut reported = Vec::with_capacity(chunk.len());
            for (report, batch) in chunk {
                let answer = workers
                    .clone()
                    .report_results(report)
                    .await
                    .expect("ReportResults")
                    .into_inner();
                accepted += u64::from(answer.accepted);
                reported.push(batch);
            }
            (accepted, reported)
        }));
    }
    let mut accepted = 0;
    let mut done = Vec::new();
    for caller in handles {
        let (n, chunk) = caller.await.expect("a caller");
        accepted += n;
        done.extend(chunk);
    }
    let ingest = started.elapsed();
    let controller_cpu = cpu_seconds(controller_pid).unwrap_or(f64::NAN) - cpu_before;
    let writer_cpu = threads_cpu_seconds(controller_pid, WRITER).unwrap_or(f64::NAN) - writer_before;
    ingesting.store(false, Ordering::Relaxed);
    let (gets, lists, watches) = probe.await.expect("the probe");
    println!(
        "ReportResults ingest: {accepted} results in {:.2}s = {:.0} results/s ({callers} callers, {BATCH} per call, TLS)",
        ingest.as_secs_f64(),
        accepted as f64 / ingest.as_secs_f64()
    );
    // The load generator shares the machine: what the controller alone
    // spends per result says what it ingests with the cores to itself
    // (the probe's reads are in it too, a small share).
    println!(
        "controller CPU during ingest: {controller_cpu:.2}s = {:.1} us per result = {:.0} results per CPU-second",
        controller_cpu * 1e6 / accepted as f64,
        accepted as f64 / controller_cpu
    );
    // The store's writer is one thread: its CPU per result bounds what
    // the controller ingests however many cores it has (waits on the
    // disk come on top).
    println!(
        "store writer CPU during ingest: {writer_cpu:.2}s = {:.1} us per result = {:.0} results per writer CPU-second",
        writer_cpu * 1e6 / accepted as f64,
        accepted as f64 / writer_cpu
    );
    // Each commit waits for the disk (synchronous=FULL): writes per
    // commit is what group commit saves.
    let (commits_after, writes_after) = commits(metrics_port).await;
    let (commits, writes) = (commits_after - commits_before.0, writes_after - commits_before.1);
    println!(
        "store commits during ingest: {commits:.0} holding {writes:.0} writes = {:.1} writes per commit",
        writes / commits
    );
    for (name, mut samples) in [
        ("GetCampaign", gets),
        ("ListCampaigns", lists),
        ("WatchCampaign", watches),
    ] {
        let n = samples.len();
        let (p50, p99) = percentiles(&mut samples);
        println!("  {name:<14} during ingest: p50 {p50:.1} ms, p99 {p99:.1} ms ({n} calls)");
    }
    println!("controller RSS after ingest: {}", rss(&system));
    if !muster_tests::on_postgres() {
        // The database file and its write-ahead log together.
        let bytes: u64 = ["muster.db", "muster.db-wal"]
            .iter()
            .filter_map(|f| std::fs::metadata(system.data_dir(0).join(f)).ok())
            .map(|m| m.len())
            .sum();
        println!(
            "SQLite store after ingest: {:.0} MB, {:.0} bytes per target",
            bytes as f64 / 1e6,
            bytes as f64 / targets as f64
        );
    }
    if let Some((heard, watcher)) = target_watcher {
        let deadline = Instant::now() + Duration::from_secs(30);
        while heard.load(Ordering::Relaxed) < accepted && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        watcher.abort();
        println!(
            "a watcher with include_targets heard {} of {accepted} target events",
            heard.load(Ordering::Relaxed)
        );
    }

    for (task_id, lease_id, _) in &done {
        complete(&workers, task_id, *lease_id).await;
    }
    let campaign = wait_done(&mut system.client, &id, Duration::from_secs(600)).await;
    let counters = campaign.counters.unwrap_or_default();
    assert_eq!(campaign.state(), CampaignState::Succeeded, "{campaign:?}");
    assert_eq!(
        counters.success as usize, next_instance as usize,
        "every result counted once"
    );
    assert_eq!(accepted as usize, next_instance as usize);
    println!(
        "campaign {} succeeded: {} targets; controller RSS {}",
        id,
        counters.total,
        rss(&system)
    );
    let _ = get(&mut system.client, &id).await;
    if behind.is_none() {
        return;
    }
    // What `muster results` reads: every target, then only those behind,
    // in pages of 5,000 (the CLI's) and of 500 (the console's).
    for page_size in [5_000, 500] {
        let every = ListTargetsRequest {
            campaign_id: id.clone(),
            page_size,
            ..Default::default()
        };
        for (name, request) in [
            ("every target", every.clone()),
            (
                "non_compliant",
                ListTargetsRequest {
                    non_compliant: true,
                    ..every.clone()
                },
            ),
            (
                "critical",
                ListTargetsRequest {
                    critical: true,
                    ..every.clone()
                },
            ),
        ] {
            let (listed, took) = list_all(&system, request).await;
            println!(
                "ListTargets {name:<13} pages of {page_size}: {listed} targets in {:.0} ms",
                took.as_secs_f64() * 1e3
            );
        }
    }
}

/// The store's (commits, writes) so far, from the controller's /metrics.
async fn commits(port: u16) -> (f64, f64) {
    let scrape = muster_tests::metrics::scrape(port).await;
    (
        muster_tests::metrics::sum(&scrape, "muster_controller_store_commits_total", &[]),
        muster_tests::metrics::sum(&scrape, "muster_controller_store_writes_total", &[]),
    )
}

/// The lease id, the batch's instances, and whether the controller takes
/// compressed output.
async fn lease(workers: &Workers, task: &TaskRef) -> (u64, Vec<String>, bool) {
    let answer = workers
        .clone()
        .lease_task(LeaseTaskRequest {
            protocol: muster_proto::WORKER_PROTOCOL,
            task: Some(task.clone()),
            worker_id: "bench".into(),
            capacity: 0,
            ..Default::default()
        })
        .await
        .expect("LeaseTask")
        .into_inner();
    assert_eq!(answer.outcome(), LeaseOutcome::Granted, "{answer:?}");
    let lease = answer.lease.expect("a lease");
    let task = lease.task.expect("a task");
    let instances = if task.kind() == TaskKind::Execute {
        task.execute.expect("an execute spec").instance_ids
    } else {
        Vec::new()
    };
    (lease.lease_id, instances, lease.takes_compressed_steps)
}

async fn complete(workers: &Workers, task_id: &str, lease_id: u64) {
    workers
        .clone()
        .complete_task(CompleteTaskRequest {
            protocol: muster_proto::WORKER_PROTOCOL,
            task_id: task_id.to_owned(),
            lease_id,
            // Takes every batch from the queue, as the benchmark measures.
            capacity: 0,
        })
        .await
        .expect("CompleteTask");
}

type Samples = Vec<Duration>;

/// Watches the campaign's targets as the console does; counts the target
/// events heard.
async fn watch_targets(
    mut client: muster_proto::v1::campaign_service_client::CampaignServiceClient<Channel>,
    id: String,
) -> (Arc<std::sync::atomic::AtomicU64>, tokio::task::JoinHandle<()>) {
    let mut stream = client
        .watch_campaign(WatchCampaignRequest {
            campaign_id: id,
            include_targets: true,
        })
        .await
        .expect("WatchCampaign")
        .into_inner();
    stream.message().await.expect("a snapshot").expect("a first message");
    let heard = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counting = heard.clone();
    let watcher = tokio::spawn(async move {
        while let Ok(Some(event)) = stream.message().await {
            if matches!(
                event.event,
                Some(muster_proto::v1::watch_campaign_response::Event::Target(_))
            ) {
                counting.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    (heard, watcher)
}

/// Get, List and the first Watch answer, one after another, while ingesting.
async fn probe_reads(
    mut client: muster_proto::v1::campaign_service_client::CampaignServiceClient<Channel>,
    id: String,
    ingesting: Arc<AtomicBool>,
) -> (Samples, Samples, Samples) {
    let (mut gets, mut lists, mut watches) = (Vec::new(), Vec::new(), Vec::new());
    while ingesting.load(Ordering::Relaxed) {
        let started = Instant::now();
        client
            .get_campaign(GetCampaignRequest {
                campaign_id: id.clone(),
                ..Default::default()
            })
            .await
            .expect("GetCampaign");
        gets.push(started.elapsed());
        let started = Instant::now();
        client
            .list_campaigns(ListCampaignsRequest {
                page_size: 50,
                ..Default::default()
            })
            .await
            .expect("ListCampaigns");
        lists.push(started.elapsed());
        let started = Instant::now();
        let mut stream = client
            .watch_campaign(WatchCampaignRequest {
                campaign_id: id.clone(),
                ..Default::default()
            })
            .await
            .expect("WatchCampaign")
            .into_inner();
        stream.message().await.expect("a snapshot").expect("a first message");
        watches.push(started.elapsed());
        drop(stream);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (gets, lists, watches)
}
