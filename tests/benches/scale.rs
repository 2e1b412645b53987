//! Benchmark (issue 9): a 10,000-instance campaign against per-(account,
//! region) API quotas with 20-50 ms of latency per call, with 1, 2 and 4
//! workers, next to the bound those quotas allow.
//!
//! The large fleet (50 accounts x 4 regions x 50 instances) on two moto
//! processes, the real controller and worker binaries, and one 30-second
//! command per instance at max concurrency 100% in batches of 50. Each run
//! prints makespan and the quota bound, AWS calls per instance by API (the
//! sim's counters), throttled calls, peak RSS and CPU seconds of every
//! process, and the time from submit to the first and last SendCommand, and
//! checks that every instance got the command exactly once.
//!
//! moto spends milliseconds of CPU describing each instance, which AWS does
//! not; so one plan (discovery only) of the same targets runs first, and its
//! time is printed as the cold discovery of the fleet. The sim keeps moto's
//! DescribeInstances answers (until an EC2 change), so the measured runs pay
//! the modelled latency and quotas, not moto's CPU.
//!
//!     cargo build --release --bins
//!     cargo bench -p muster-tests --bench scale
//!
//! MUSTER_BENCH_SHAPE (uniform, the default; skewed; huge; many: see
//! `Shape::named`), MUSTER_BENCH_WORKERS (default "1,2,4"),
//! MUSTER_BENCH_ACCOUNTS (50, for the uniform shape),
//! MUSTER_BENCH_COMMAND_SECONDS (30), MUSTER_BENCH_CONCURRENCY_PERCENT
//! (100; 25 runs the campaign in four waves) and MUSTER_BENCH_WORKER_MAX_TASKS
//! (each worker's `--max-tasks`, default the worker's own 2000; 50 makes the
//! workers the limit, to see more of them help) and
//! MUSTER_BENCH_WORKER_POLLERS (each worker's `--pollers`, default 2)
//! change the runs.
//!
//! Run Command's events reach the controller (200-800 ms after a command
//! ends, as EventBridge's hops take) and batches poll only as a fallback;
//! MUSTER_BENCH_EVENTS=0 runs without them (the controller reads none, the
//! workers poll at their usual cadence), MUSTER_BENCH_EVENT_DROP_PERCENT
//! loses that share of them.
//!
//! MUSTER_BENCH_WATCHERS (default 0) follows each campaign with that many
//! WatchCampaign streams with each target's result, as `muster watch` and
//! the console's live page do, and checks that every one heard every target.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use muster_proto::v1::campaign_service_client::CampaignServiceClient;
use muster_proto::v1::watch_campaign_response::Event;
use muster_proto::v1::{CampaignSpec, CampaignState, PlanCampaignRequest, RateControl, WatchCampaignRequest};
use muster_sim::{LatencyRange, Quota, Tunables};
use muster_tests::client::{get, script_spec, submit};
use muster_tests::fleets;
use muster_tests::procs::{System, SystemOptions};
use muster_tests::procstat::{cpu_seconds, rss_mib};

const REGIONS: [&str; 4] = ["us-east-1", "us-west-2", "eu-west-1", "ap-southeast-2"];
const PER_REGION: u32 = 50;
const BATCH: u32 = 50;
/// Per (account, region): SendCommand, ListCommandInvocations,
/// DescribeInstances (calls/s, burst).
const SEND: (f64, f64) = (5.0, 5.0);
const LIST: (f64, f64) = (10.0, 10.0);
const DESCRIBE: (f64, f64) = (10.0, 10.0);
const INFO: (f64, f64) = (10.0, 20.0);
/// In the hub account, for every worker's AssumeRole.
const ASSUME: (f64, f64) = (50.0, 100.0);
const LATENCY_MS: (u64, u64) = (20, 50);

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

fn quota(service: &str, api: &str, (rate, burst): (f64, f64)) -> Quota {
    Quota::new(service, api, rate, burst)
}

fn tunables() -> Tunables {
    let mut quotas = vec![
        quota("ssm", "SendCommand", SEND),
        quota("ssm", "ListCommandInvocations", LIST),
        quota("ssm", "GetCommandInvocation", LIST),
        quota("ssm", "DescribeInstanceInformation", INFO),
        quota("ec2", "*", DESCRIBE),
        quota("sts", "AssumeRole", ASSUME),
    ];
    quotas.push(quota("ssm", "CancelCommand", (10.0, 20.0)));
    Tunables {
        throttling: true,
        quotas,
        latency_ms: LatencyRange {
            min: LATENCY_MS.0,
            max: LATENCY_MS.1,
        },
        time_scale: 1.0,
        visibility_delay_ms: 300,
        delivery_delay_ms: 200,
        // moto spends milliseconds of CPU per instance it describes, which AWS
        // does not: the sim keeps its answers (until an EC2 change) for the
        // whole benchmark, and the warm-up plan fills them once.
        fleet_cache_ms: 3_600_000,
        ..Tunables::default()
    }
}

/// A fleet shape: how many instances each account has in each of its
/// regions.
struct Shape {
    name: String,
    per_region: Vec<u32>,
    regions: &'static [&'static str],
}

impl Shape {
    /// uniform: 50 x 4 x 50 (MUSTER_BENCH_ACCOUNTS changes the 50
    /// accounts); skewed: 4 accounts with 5-20 batches per region and 96
    /// with 2-9 instances, in 2 regions; huge: 5,000 instances in one
    /// (account, region); many: 500 accounts x 2 regions x 5.
    fn named(name: &str, accounts: u32) -> Self {
        let (per_region, regions): (Vec<u32>, &'static [&'static str]) = match name {
            "uniform" => (vec![PER_REGION; accounts as usize], &REGIONS),
            "skewed" => (
                [250, 500, 750, 1_000]
                    .into_iter()
                    .chain((0..96).map(|i| 2 + i % 8))
                    .collect(),
                &REGIONS[..2],
            ),
            "huge" => (vec![5_000], &REGIONS[..1]),
            "many" => (vec![5; 500], &REGIONS[..2]),
            other => panic!("MUSTER_BENCH_SHAPE: {other:?} is not uniform, skewed, huge or many"),
        };
        Self {
            name: name.to_owned(),
            per_region,
            regions,
        }
    }

    fn instances(&self) -> u64 {
        self.per_region.iter().map(|&n| u64::from(n)).sum::<u64>() * self.regions.len() as u64
    }

    fn scopes(&self) -> usize {
        self.per_region.len() * self.regions.len()
    }
}

/// The least makespan the quotas allow. Per (account, region) of `n`
/// instances, the calls that must follow one another, each at the mean
/// latency: the account's AssumeRole (after those of the accounts before
/// it beyond the hub's STS burst: the largest scopes first),
/// DescribeInstances pages of 1,000, DescribeInstanceInformation pages of
/// 50 (beyond the burst at the quota's rate), the sends (beyond
/// SendCommand's burst at its rate), the agent's delivery, the command, one
/// listing after it ends; for each further wave that the concurrency limit
/// makes (one for 100%), a send, the delivery, the command and a listing.
fn bound(shape: &Shape, command_seconds: f64, tunables: &Tunables, percent: u32) -> f64 {
    let latency = (LATENCY_MS.0 + LATENCY_MS.1) as f64 / 2000.0;
    let beyond = |calls: f64, (rate, burst): (f64, f64)| (calls - burst).max(0.0) / rate;
    let waves = f64::from(100u32.div_ceil(percent.clamp(1, 100)));
    let run = tunables.delivery_delay_ms as f64 / 1000.0 + command_seconds;
    let scope = |n: u32| {
        let describe_pages = f64::from(n.div_ceil(1_000).max(1));
        let info_pages = f64::from(n.div_ceil(50).max(1));
        let batches = f64::from(n.div_ceil(BATCH).max(1));
        latency * (1.0 + describe_pages)
            + latency
            + beyond(info_pages, INFO)
            + latency
            + beyond(batches, SEND)
            + run
            + latency
            + (waves - 1.0) * (2.0 * latency + run)
    };
    let mut accounts: Vec<f64> = shape.per_region.iter().map(|&n| scope(n)).collect();
    accounts.sort_by(|a, b| b.total_cmp(a));
    accounts
        .iter()
        .enumerate()
        .map(|(rank, chain)| beyond(rank as f64 + 1.0, ASSUME) + chain)
        .fold(0.0, f64::max)
}

/// The 30-second command on every instance, `percent` of them at once, in
/// batches of 50.
fn campaign_spec(accounts: &[String], regions: &[&str], percent: u32) -> CampaignSpec {
    let mut spec = script_spec(accounts, regions, &["true"], &[]);
    spec.rate = Some(RateControl {
        max_concurrency: format!("{percent}%"),
        max_errors: String::new(),
        batch_size: BATCH,
        api_calls_per_second: SEND.0.max(LIST.0),
    });
    spec
}

fn counters(system: &System) -> BTreeMap<(String, String, String), u64> {
    system.sb.state().counters.lock().expect("counters").clone()
}

#[tokio::main]
async fn main() {
    let worker_counts: Vec<usize> = env::<String>("MUSTER_BENCH_WORKERS", "1,2,4".into())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    let accounts: u32 = env("MUSTER_BENCH_ACCOUNTS", 50);
    let command_seconds: f64 = env("MUSTER_BENCH_COMMAND_SECONDS", 30.0);
    let percent: u32 = env("MUSTER_BENCH_CONCURRENCY_PERCENT", 100u32).clamp(1, 100);
    let max_tasks: Option<usize> = std::env::var("MUSTER_BENCH_WORKER_MAX_TASKS").ok().map(|n| {
        n.trim()
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .unwrap_or_else(|| panic!("MUSTER_BENCH_WORKER_MAX_TASKS: {n:?} is not a whole number above 0"))
    });
    let pollers: Option<usize> = std::env::var("MUSTER_BENCH_WORKER_POLLERS").ok().map(|n| {
        n.trim()
            .parse()
            .ok()
            .filter(|n| (1..=64).contains(n))
            .unwrap_or_else(|| panic!("MUSTER_BENCH_WORKER_POLLERS: {n:?} is not a whole number from 1 to 64"))
    });
    let events = env("MUSTER_BENCH_EVENTS", 1u8) != 0;
    let drop_percent: f64 = env("MUSTER_BENCH_EVENT_DROP_PERCENT", 0.0);
    let watchers: usize = env("MUSTER_BENCH_WATCHERS", 0);
    let shape = Shape::named(&env::<String>("MUSTER_BENCH_SHAPE", "uniform".into()), accounts);
    let instances = shape.instances();
    let tunables = tunables();
    let started = Instant::now();
    let mut system = System::start(
        &fleets::shaped(&shape.per_region, shape.regions, command_seconds),
        SystemOptions {
            tunables: tunables.clone(),
            workers: 0,
            lease_ttl: 30,
            moto_shards: 2,
            // Only the quotas limit a scope: as many batches out as it has.
            controller_args: ["--max-tasks-per-scope", "100", "--max-queued", "2000"]
                .map(String::from)
                .to_vec(),
            worker_args: max_tasks
                .map(|n| vec!["--max-tasks".to_owned(), n.to_string()])
                .into_iter()
                .chain(pollers.map(|n| vec!["--pollers".to_owned(), n.to_string()]))
                .flatten()
                .collect(),
            command_events: events,
            ..Default::default()
        },
    )
    .await;
    // Before the warm-up: a change of tunables forgets the kept answers.
    system.sb.tune(|t| {
        let routing = t.events.as_mut().expect("seeding routes events");
        routing.delay_ms = LatencyRange { min: 200, max: 800 };
        routing.drop_percent = drop_percent;
    });
    println!(
        "sandbox: fleet shape {}, {instances} instances in {} (account, region) scopes, seeded in {:.0}s",
        shape.name,
        shape.scopes(),
        started.elapsed().as_secs_f64()
    );
    let bound = bound(&shape, command_seconds, &tunables, percent);
    println!(
        "quotas per (account, region): SendCommand {}/s, ListCommandInvocations {}/s, DescribeInstances {}/s; \
         latency {}-{} ms; max concurrency {percent}%; bound {bound:.1}s; tasks per worker {}; {}{}",
        SEND.0,
        LIST.0,
        DESCRIBE.0,
        LATENCY_MS.0,
        LATENCY_MS.1,
        max_tasks.map_or("2000 (the default)".to_owned(), |n| n.to_string()),
        if watchers > 0 {
            format!("{watchers} watcher(s) with targets; ")
        } else {
            String::new()
        },
        if events {
            format!("Run Command events read, {drop_percent}% of them lost")
        } else {
            "no Run Command events (polling)".to_owned()
        }
    );
    let ids: Vec<String> = system.fleet.accounts.iter().map(|a| a.id.clone()).collect();
    let spec = campaign_spec(&ids, shape.regions, percent);

    // Warm-up: one plan (discovery only) of the same targets, so that every
    // run below finds moto's answers kept in the sim. Its time is what
    // discovering the fleet costs when moto describes every instance.
    system.start_worker();
    let planning = Instant::now();
    let plan = system
        .client
        .plan_campaign(PlanCampaignRequest {
            spec: Some(spec.clone()),
            wait_seconds: 600,
        })
        .await
        .expect("the plan is accepted")
        .into_inner();
    let planned = get(&mut system.client, &plan.campaign_id).await;
    assert_eq!(planned.state(), CampaignState::Planned, "{}", planned.state_reason);
    println!(
        "warm-up plan: {} in {:.1}s with 1 worker (moto describing every instance)",
        planned.state_reason,
        planning.elapsed().as_secs_f64()
    );

    let mut rows = Vec::new();
    for &workers in &worker_counts {
        while system.worker_count() < workers {
            system.start_worker();
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let pids: Vec<u32> = (0..workers).filter_map(|i| system.worker_pid(i)).collect();
        let controller = system.controller_pid().expect("the controller runs");
        let cpu_before: Vec<f64> = std::iter::once(controller)
            .chain(pids.iter().copied())
            .map(|p| cpu_seconds(p).unwrap_or(0.0))
            .collect();
        let calls_before = counters(&system);
        let audit_before = system.sb.audit().len();
        system.sb.state().events.counters.clear();

        let submitted = chrono::Utc::now();
        let clock = Instant::now();
        let id = submit(&mut system.client, spec.clone()).await;
        let watching: Vec<_> = (0..watchers)
            .map(|_| tokio::spawn(watch(system.client.clone(), id.clone())))
            .collect();
        let campaign = loop {
            let campaign = get(&mut system.client, &id).await;
            if campaign.state().is_terminal() {
                break campaign;
            }
            assert!(
                clock.elapsed() < Duration::from_secs(1800),
                "the campaign did not end in 30 minutes"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let makespan = clock.elapsed().as_secs_f64();
        let counters_now = campaign.counters.unwrap_or_default();

        let calls_after = counters(&system);
        let mut by_api: BTreeMap<String, u64> = BTreeMap::new();
        let (mut total, mut throttled) = (0u64, 0u64);
        for (key, after) in &calls_after {
            let delta = after - calls_before.get(key).copied().unwrap_or(0);
            if delta == 0 {
                continue;
            }
            let (service, api, outcome) = key;
            total += delta;
            if outcome == "throttled" {
                throttled += delta;
            }
            *by_api.entry(format!("{service}:{api}")).or_insert(0) += delta;
        }
        let audit = system.sb.audit();
        let sends = &audit[audit_before..];
        let offset = |at: &str| {
            chrono::DateTime::parse_from_rfc3339(at)
                .map(|t| (t.with_timezone(&chrono::Utc) - submitted).num_milliseconds() as f64 / 1000.0)
                .unwrap_or(f64::NAN)
        };
        let first = sends.iter().map(|e| offset(&e.at)).fold(f64::INFINITY, f64::min);
        let last = sends.iter().map(|e| offset(&e.at)).fold(f64::NEG_INFINITY, f64::max);
        let cpu: Vec<f64> = std::iter::once(controller)
            .chain(pids.iter().copied())
            .zip(&cpu_before)
            .map(|(p, before)| cpu_seconds(p).unwrap_or(0.0) - before)
            .collect();
        let controller_peak = rss_mib(controller).map(|r| r.1).unwrap_or(f64::NAN);
        let worker_peak = pids.iter().filter_map(|p| rss_mib(*p).map(|r| r.1)).fold(0.0, f64::max);

        println!("\n== {workers} worker(s): campaign {id} ended {:?}", campaign.state());
        println!(
            "makespan {makespan:.1}s, bound {bound:.1}s, ratio {:.2}; first SendCommand at {first:.1}s, last at {last:.1}s",
            makespan / bound
        );
        println!(
            "targets: {} succeeded of {}; SendCommand batches {}",
            counters_now.success,
            counters_now.total,
            sends.len()
        );
        println!(
            "AWS calls: {total} ({:.3} per instance), throttled {throttled} ({:.2}%)",
            total as f64 / instances as f64,
            100.0 * throttled as f64 / total.max(1) as f64
        );
        for (api, n) in &by_api {
            println!("  {api:<36} {n:>7}  {:.4}/instance", *n as f64 / instances as f64);
        }
        let events_seen = system.sb.state().events.counters.to_json();
        println!(
            "Run Command events: {} final statuses of commands, {} delivered, {} lost",
            events_seen["matched"], events_seen["delivered"], events_seen["dropped"]
        );
        println!(
            "controller: peak RSS {controller_peak:.0} MiB, CPU {:.1}s; workers: peak RSS {worker_peak:.0} MiB, CPU {}",
            cpu[0],
            cpu[1..]
                .iter()
                .map(|c| format!("{c:.1}s"))
                .collect::<Vec<_>>()
                .join(" + ")
        );
        for (i, watcher) in watching.into_iter().enumerate() {
            let heard = tokio::time::timeout(Duration::from_secs(60), watcher)
                .await
                .expect("a watcher's stream ends with the campaign")
                .expect("the watcher ran");
            println!(
                "watcher {i}: {} target results, {} progress messages with {} scope rows, fell behind {} time(s)",
                heard.targets, heard.progress, heard.scope_rows, heard.fell_behind
            );
            // A watcher that fell behind gets a new snapshot instead of the
            // results it missed, as `muster watch` does.
            if heard.fell_behind == 0 {
                assert_eq!(heard.targets, instances, "watcher {i} heard every target's result");
            }
        }
        assert_eq!(
            campaign.state(),
            CampaignState::Succeeded,
            "every instance must succeed"
        );
        let mut sent_to: BTreeMap<&str, u32> = BTreeMap::new();
        for id in sends.iter().flat_map(|e| &e.instance_ids) {
            *sent_to.entry(id.as_str()).or_insert(0) += 1;
        }
        assert_eq!(sent_to.len() as u64, instances, "every instance got the command");
        assert!(sent_to.values().all(|&n| n == 1), "no instance got the command twice");
        rows.push(format!(
            "| {workers} | {makespan:.1} s | {bound:.1} s | {:.2} | {:.3} | {:.2}% | {first:.1} s / {last:.1} s | {controller_peak:.0} MiB, {:.1} s | {worker_peak:.0} MiB, {:.1} s |",
            makespan / bound,
            total as f64 / instances as f64,
            100.0 * throttled as f64 / total.max(1) as f64,
            cpu[0],
            cpu[1..].iter().sum::<f64>()
        ));
    }
    println!(
        "\n| workers | makespan | bound | ratio | calls/instance | throttled | first / last SendCommand | controller peak RSS, CPU | worker peak RSS, CPU (sum) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for row in rows {
        println!("{row}");
    }
}

/// What one watcher heard.
#[derive(Default)]
struct Heard {
    /// Snapshots sent in place of the results the watcher fell behind on
    /// (neither the first nor the last word after the campaign ended).
    fell_behind: u64,
    targets: u64,
    progress: u64,
    scope_rows: u64,
}

/// Follows campaign `id` as `muster watch` does, with each target's result,
/// until its stream ends (after a terminal state).
async fn watch(mut client: CampaignServiceClient<tonic::transport::Channel>, id: String) -> Heard {
    let mut stream = client
        .watch_campaign(WatchCampaignRequest {
            campaign_id: id,
            include_targets: true,
        })
        .await
        .expect("the watch is accepted")
        .into_inner();
    let mut heard = Heard::default();
    let (mut snapshots, mut ended) = (0, false);
    while let Some(message) = stream.message().await.expect("the watch stream stays up") {
        match message.event {
            Some(Event::Snapshot(_)) => {
                if snapshots > 0 && !ended {
                    heard.fell_behind += 1;
                }
                snapshots += 1;
            }
            Some(Event::State(change)) => {
                ended = CampaignState::try_from(change.state).is_ok_and(CampaignState::is_terminal);
            }
            Some(Event::Target(_)) => heard.targets += 1,
            Some(Event::Progress(progress)) => {
                heard.progress += 1;
                heard.scope_rows += progress.scopes.len() as u64;
            }
            _ => {}
        }
    }
    heard
}
