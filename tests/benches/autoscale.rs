//! Benchmark (issue 22): workers that are the limit (each holds at most
//! MUSTER_BENCH_MAX_TASKS tasks, default 25) on the large fleet (50 accounts
//! x 4 regions x 50 instances, batches of 50, 30 s commands: 200 tasks), run
//! with 1, 2, 4 and 8 fixed workers and with the sandbox's autoscaler
//! (`deploy/local/scaler.py`, 1 to 8 workers, target
//! MUSTER_BENCH_TARGET tasks a worker, default 20) on the controller's
//! scaling signal. MUSTER_BENCH_ACCOUNTS, _PER_REGION, _COMMAND_SECONDS and
//! MUSTER_BENCH_FLEETS ("1,2,4,8,auto") make it smaller. For each fleet it
//! prints makespan, the worker count over time and its peak,
//! the scale-out reaction time (submit to the second worker running), AWS
//! calls per instance, and idle AWS calls per worker-minute (the sim's
//! counters over MUSTER_BENCH_IDLE_SECONDS, default 30, with the workers
//! idle, less the same window with none). CloudWatch calls (the signal and
//! the scaler reading it) are left out of both.
//!
//!     cargo build --release --bins
//!     cargo bench -p muster-tests --bench autoscale

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use muster_proto::v1::{CampaignState, RateControl};
use muster_tests::client::{script_spec, submit, wait_done};
use muster_tests::fleets;
use muster_tests::procs::{System, SystemOptions, scaler_decisions};

const REGIONS: [&str; 4] = ["us-east-1", "us-west-2", "eu-west-1", "ap-southeast-2"];
const BATCH: u32 = 50;

/// The fleet and the workers' limits.
#[derive(Debug, Clone, Copy)]
struct Setup {
    accounts: u32,
    per_region: u32,
    command_seconds: f64,
    max_tasks: u32,
    target: u32,
    idle: Duration,
}

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Every call the sim counted, all outcomes, but CloudWatch's: the scaling
/// signal's own puts (every second here, every minute in production) and
/// the scaler's reads of it are the autoscaler's cost, not the workers'.
fn calls(system: &System) -> u64 {
    system
        .sb
        .state()
        .counters
        .lock()
        .expect("counters")
        .iter()
        .filter(|((service, _, _), _)| service != "monitoring")
        .map(|(_, n)| n)
        .sum()
}

/// Calls the sim counts over `window`.
async fn calls_over(system: &System, window: Duration) -> u64 {
    let before = calls(system);
    tokio::time::sleep(window).await;
    calls(system) - before
}

struct Row {
    fleet: String,
    makespan: f64,
    peak: u32,
    reaction: Option<f64>,
    calls_per_instance: f64,
    idle_per_worker_minute: f64,
    over_time: String,
}

async fn run(fixed: Option<usize>, setup: Setup) -> Row {
    let instances = u64::from(setup.accounts * setup.per_region) * REGIONS.len() as u64;
    let idle = setup.idle;
    let mut system = System::start(
        &fleets::grid(setup.accounts, &REGIONS, setup.per_region, setup.command_seconds),
        SystemOptions {
            workers: 0,
            lease_ttl: 10,
            controller_args: ["--scaling-namespace", "Muster", "--scaling-interval", "1"]
                .map(String::from)
                .to_vec(),
            worker_args: vec!["--max-tasks".into(), setup.max_tasks.to_string()],
            ..Default::default()
        },
    )
    .await;
    let baseline = calls_over(&system, idle).await;
    let (workers_idle, record, scaler_started) = match fixed {
        Some(n) => {
            for _ in 0..n {
                system.start_worker();
            }
            (n, None, None)
        }
        None => {
            let started = Instant::now();
            let target = setup.target.to_string();
            let record = system.start_scaler(&[
                "--target",
                &target,
                "--min",
                "1",
                "--max",
                "8",
                "--interval",
                "1",
                "--scale-in-cooldown",
                "10",
                "--stop-timeout",
                "60",
            ]);
            (1, Some(record), Some(started))
        }
    };
    // Started and polling an empty queue.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle_calls = calls_over(&system, idle).await.saturating_sub(baseline);
    let idle_per_worker_minute = idle_calls as f64 / workers_idle as f64 / (idle.as_secs_f64() / 60.0);

    let accounts: Vec<String> = system.fleet.accounts.iter().map(|a| a.id.clone()).collect();
    let mut spec = script_spec(&accounts, &REGIONS, &["true"], &[]);
    spec.rate = Some(RateControl {
        max_concurrency: "100%".into(),
        max_errors: String::new(),
        batch_size: BATCH,
        api_calls_per_second: 50.0,
    });
    let before = calls(&system);
    let submitted = Instant::now();
    let id = submit(&mut system.client, spec).await;
    let campaign = wait_done(&mut system.client, &id, Duration::from_secs(1800)).await;
    let makespan = submitted.elapsed().as_secs_f64();
    assert_eq!(campaign.state(), CampaignState::Succeeded, "{}", campaign.state_reason);
    let calls_per_instance = (calls(&system) - before) as f64 / instances as f64;

    let (peak, reaction, over_time) = match (&record, scaler_started) {
        (Some(record), Some(started)) => {
            // Back to the minimum before the figures are read.
            let deadline = Instant::now() + Duration::from_secs(120);
            while scaler_decisions(record).last().is_none_or(|d| d.workers > 1) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            let rows: Vec<(f64, u32)> = scaler_decisions(record)
                .iter()
                .map(|d| (d.seconds, d.workers))
                .collect();
            let offset = (submitted - started).as_secs_f64();
            let peak = rows.iter().map(|(_, n)| *n).max().unwrap_or(0);
            let reaction = rows
                .iter()
                .find(|(t, n)| *t >= offset && *n > 1)
                .map(|(t, _)| t - offset);
            // The count every 5 s from submit, as "t:n".
            let mut shown = BTreeMap::new();
            for (t, n) in &rows {
                if *t >= offset {
                    shown.entry(((t - offset) / 5.0) as u64 * 5).or_insert(*n);
                }
            }
            let over_time = shown
                .iter()
                .map(|(t, n)| format!("{t}:{n}"))
                .collect::<Vec<_>>()
                .join(" ");
            (peak, reaction, over_time)
        }
        _ => {
            let n = fixed.unwrap_or(0) as u32;
            (n, None, format!("{n} throughout"))
        }
    };
    system.stop_scaler();
    Row {
        fleet: fixed.map_or_else(|| "autoscaled 1-8".to_owned(), |n| format!("fixed {n}")),
        makespan,
        peak,
        reaction,
        calls_per_instance,
        idle_per_worker_minute,
        over_time,
    }
}

#[tokio::main]
async fn main() {
    let setup = Setup {
        accounts: env("MUSTER_BENCH_ACCOUNTS", 50),
        per_region: env("MUSTER_BENCH_PER_REGION", 50),
        command_seconds: env("MUSTER_BENCH_COMMAND_SECONDS", 30.0),
        max_tasks: env("MUSTER_BENCH_MAX_TASKS", 25),
        target: env("MUSTER_BENCH_TARGET", 20),
        idle: Duration::from_secs(env("MUSTER_BENCH_IDLE_SECONDS", 30)),
    };
    let fleets: Vec<Option<usize>> = env::<String>("MUSTER_BENCH_FLEETS", "1,2,4,8,auto".into())
        .split(',')
        .map(|f| f.trim().parse().ok())
        .collect();
    let instances = setup.accounts * setup.per_region * REGIONS.len() as u32;
    println!(
        "{instances} instances in {} scopes, batches of {BATCH} ({} tasks), {}s commands, --max-tasks {}, autoscaler target {}",
        setup.accounts * REGIONS.len() as u32,
        instances.div_ceil(BATCH),
        setup.command_seconds,
        setup.max_tasks,
        setup.target
    );
    let mut rows = Vec::new();
    for fleet in fleets {
        let row = run(fleet, setup).await;
        println!(
            "{}: makespan {:.1}s, peak {} workers, calls/instance {:.3}, idle calls per worker-minute {:.1}, workers over time {}",
            row.fleet, row.makespan, row.peak, row.calls_per_instance, row.idle_per_worker_minute, row.over_time
        );
        rows.push(row);
    }
    let slowest = rows.iter().map(|r| r.makespan).fold(0.0, f64::max);
    println!(
        "\n| workers | makespan | vs slowest | peak | scale-out reaction | calls/instance | idle calls per worker-minute | workers over time (s:n from submit) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for row in &rows {
        println!(
            "| {} | {:.1} s | {:.2} | {} | {} | {:.3} | {:.1} | {} |",
            row.fleet,
            row.makespan,
            row.makespan / slowest,
            row.peak,
            row.reaction.map_or_else(|| "-".to_owned(), |r| format!("{r:.1} s")),
            row.calls_per_instance,
            row.idle_per_worker_minute,
            row.over_time
        );
    }
}
