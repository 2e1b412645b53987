//! The chaos soak (issue 16): many seeded scenarios of `muster_tests::chaos`,
//! each a whole campaign under process faults (SIGKILL and SIGSTOP of the
//! controller and workers, a worker killed right after a SendCommand,
//! scale-ins (SIGTERM: a worker hands back what outlasts its grace),
//! outages past the lease TTL and the dead-letter horizon, crashes at
//! crash points: after a store commit, before one, after an SQS send, after
//! a SendCommand) and AWS faults (answers lost or late after SendCommand,
//! SendMessageBatch, ReceiveMessage and AssumeRole took effect, duplicate
//! deliveries, 503s, throttling storms, expiring sessions).
//! Prints one line per scenario and a table for BENCHMARKS.md: scenarios,
//! faults by kind, duplicate sends, lost results, stuck campaigns, leases
//! that expired (attempts the faults cost), tasks handed back, and the
//! makespan with faults against the same seeds' campaigns without them.
//!
//!     cargo build --bins
//!     cargo bench -p muster-tests --bench chaos_soak
//!
//! MUSTER_CHAOS_SCENARIOS (default 100), MUSTER_CHAOS_FIRST_SEED (1000),
//! MUSTER_CHAOS_CALM (how many seeds also run without faults, default 10),
//! MUSTER_CHAOS_LONG_EVERY (every n-th seed adds a controller outage of
//! 3 minutes or more against the real redrive, default 10; 0 for none) and
//! MUSTER_CHAOS_PARALLEL (scenarios at once, each its own sandbox and
//! processes, default 2).
//! A failing seed replays with
//! `MUSTER_CHAOS_SEED=<seed> cargo nextest run -p muster-tests --test chaos chaos_seed_1`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use muster_tests::chaos::{self, Mode, Report};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values.get(values.len() / 2).copied().unwrap_or_default()
}

/// One seed: its run with faults and, for the first seeds, without.
struct Outcome {
    seed: u64,
    mode: Mode,
    report: Report,
    calm: Option<Report>,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let scenarios = env("MUSTER_CHAOS_SCENARIOS", 100);
    let first = env("MUSTER_CHAOS_FIRST_SEED", 1000);
    let calm_runs = env("MUSTER_CHAOS_CALM", 10).min(scenarios);
    let long_every = env("MUSTER_CHAOS_LONG_EVERY", 10);
    let parallel = env("MUSTER_CHAOS_PARALLEL", 2).max(1);
    let started = Instant::now();
    // Scenarios wait on processes most of the time: several share the two
    // runtime threads (polled together here, not spawned: the sandbox's
    // futures are not all Send).
    let scenario = |seed: u64| async move {
        let long = long_every > 0 && (seed - first) % long_every == long_every - 1;
        let mode = if long { Mode::LongOutage } else { Mode::Faults };
        let report = chaos::run(seed, mode).await;
        println!(
            "seed {seed}{} ({:?}, {} controller(s)): {} in {:.1}s, {} duplicates, {} lost, stuck {}, {} leases expired, {} handed back; {:?}",
            if long { " (long outage)" } else { "" },
            report.shape,
            report.controllers,
            if report.ok() { "ok" } else { "FAILED" },
            report.makespan.as_secs_f64(),
            report.duplicates,
            report.lost,
            report.stuck,
            report.expired,
            report.handed_back,
            report.faults
        );
        let calm = if seed < first + calm_runs && !long {
            let quiet = chaos::run(seed, Mode::Calm).await;
            println!("seed {seed} without faults: {:.1}s", quiet.makespan.as_secs_f64());
            Some(quiet)
        } else {
            None
        };
        Outcome {
            seed,
            mode,
            report,
            calm,
        }
    };
    let mut outcomes: Vec<Outcome> = futures::stream::iter(first..first + scenarios)
        .map(scenario)
        .buffer_unordered(parallel as usize)
        .collect()
        .await;
    outcomes.sort_by_key(|o| o.seed);

    let mut faults: BTreeMap<String, u64> = BTreeMap::new();
    let (mut duplicates, mut lost, mut stuck, mut expired, mut handed_back, mut failed) = (0, 0, 0, 0, 0, Vec::new());
    let (mut with_faults, mut calm, mut faulted_of_calm, mut long) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for Outcome {
        seed,
        mode,
        report,
        calm: quiet,
    } in &outcomes
    {
        for (kind, n) in &report.faults {
            *faults.entry(kind.clone()).or_default() += n;
        }
        duplicates += report.duplicates;
        lost += report.lost;
        stuck += usize::from(report.stuck);
        expired += report.expired;
        handed_back += report.handed_back;
        if !report.ok() {
            failed.push(*seed);
        } else if *mode == Mode::LongOutage {
            long.push(report.makespan);
        } else {
            with_faults.push(report.makespan);
        }
        if let Some(quiet) = quiet
            && quiet.ok()
            && report.ok()
        {
            calm.push(quiet.makespan);
            faulted_of_calm.push(report.makespan);
        }
    }
    println!(
        "\n| scenarios | of them with a 3-min outage | failed | duplicate sends | lost results | stuck campaigns | leases expired | handed back | median makespan with faults | same seeds without | ratio | with a 3-min outage | wall |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let (with, without) = (median(faulted_of_calm), median(calm));
    println!(
        "| {scenarios} | {} | {} | {duplicates} | {lost} | {stuck} | {expired} | {handed_back} | {:.1} s (all: {:.1} s) | {:.1} s | {:.2} | {:.1} s | {:.0} min |",
        outcomes.iter().filter(|o| o.mode == Mode::LongOutage).count(),
        failed.len(),
        with.as_secs_f64(),
        median(with_faults).as_secs_f64(),
        without.as_secs_f64(),
        with.as_secs_f64() / without.as_secs_f64().max(0.001),
        median(long).as_secs_f64(),
        started.elapsed().as_secs_f64() / 60.0
    );
    // The campaigns the faults met: a shape's name, without its draws.
    let mut shapes: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for o in &outcomes {
        let name = format!("{:?}", o.report.shape);
        let name = name.split_whitespace().next().unwrap_or_default().to_owned();
        let entry = shapes.entry(name).or_default();
        entry.0 += 1;
        entry.1 += usize::from(!o.report.ok());
    }
    println!("\n| campaign shape | scenarios | failed |\n|---|---|---|");
    for (name, (n, failed)) in &shapes {
        println!("| {name} | {n} | {failed} |");
    }
    // On PostgreSQL half the seeds run two controllers sharing the store.
    let mut controllers: BTreeMap<usize, (usize, usize)> = BTreeMap::new();
    for o in &outcomes {
        let entry = controllers.entry(o.report.controllers).or_default();
        entry.0 += 1;
        entry.1 += usize::from(!o.report.ok());
    }
    println!("\n| controllers | scenarios | failed |\n|---|---|---|");
    for (n_controllers, (n, failed)) in &controllers {
        println!("| {n_controllers} | {n} | {failed} |");
    }
    // How soon a cancel stops new sends: the last SendCommand that started
    // after the cancel was answered, over the cancelled seeds.
    let cancelled: Vec<&Report> = outcomes
        .iter()
        .map(|o| &o.report)
        .filter(|r| matches!(r.shape, chaos::Shape::Cancelled { .. }))
        .collect();
    let late: Vec<Duration> = cancelled.iter().filter_map(|r| r.sent_after_cancel).collect();
    println!(
        "\ncancelled campaigns: {}; with a SendCommand started after the cancel was answered: {} (the latest {:.2} s after)",
        cancelled.len(),
        late.len(),
        late.iter().max().copied().unwrap_or_default().as_secs_f64()
    );
    println!("\n| fault | injected |\n|---|---|");
    for (kind, n) in &faults {
        println!("| {kind} | {n} |");
    }
    if !failed.is_empty() {
        println!("\nfailed seeds: {failed:?}");
        std::process::exit(1);
    }
}
