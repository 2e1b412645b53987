//! The chaos soak (issue 16): many seeded scenarios of `muster_tests::chaos`,
//! each a whole campaign under process faults (SIGKILL and SIGSTOP of the
//! controller and workers, a worker killed right after a SendCommand,
//! outages past the lease TTL and the dead-letter horizon) and AWS faults
//! (answers lost after SendCommand, SendMessageBatch, ReceiveMessage and
//! AssumeRole took effect, 503s, throttling storms, expiring sessions).
//! Prints one line per scenario and a table for BENCHMARKS.md: scenarios,
//! faults by kind, duplicate sends, lost results, stuck campaigns, and the
//! makespan with faults against the same seeds' campaigns without them.
//!
//!     cargo build --bins
//!     cargo bench -p muster-tests --bench chaos_soak
//!
//! MUSTER_CHAOS_SCENARIOS (default 100), MUSTER_CHAOS_FIRST_SEED (1000) and
//! MUSTER_CHAOS_CALM (how many seeds also run without faults, default 10).
//! A failing seed replays with
//! `MUSTER_CHAOS_SEED=<seed> cargo nextest run -p muster-tests --test chaos chaos_seed_1`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use muster_tests::chaos;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values.get(values.len() / 2).copied().unwrap_or_default()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let scenarios = env("MUSTER_CHAOS_SCENARIOS", 100);
    let first = env("MUSTER_CHAOS_FIRST_SEED", 1000);
    let calm_runs = env("MUSTER_CHAOS_CALM", 10).min(scenarios);
    let started = Instant::now();
    let mut faults: BTreeMap<String, u64> = BTreeMap::new();
    let (mut duplicates, mut lost, mut stuck, mut failed) = (0, 0, 0, Vec::new());
    let mut with_faults = Vec::new();
    let mut calm = Vec::new();
    let mut faulted_of_calm = Vec::new();
    for seed in first..first + scenarios {
        let report = chaos::run(seed, true).await;
        println!(
            "seed {seed}: {} in {:.1}s, {} duplicates, {} lost, stuck {}; {:?}",
            if report.ok() { "ok" } else { "FAILED" },
            report.makespan.as_secs_f64(),
            report.duplicates,
            report.lost,
            report.stuck,
            report.faults
        );
        for (kind, n) in &report.faults {
            *faults.entry(kind.clone()).or_default() += n;
        }
        duplicates += report.duplicates;
        lost += report.lost;
        stuck += usize::from(report.stuck);
        if !report.ok() {
            failed.push(seed);
        } else {
            with_faults.push(report.makespan);
        }
        if seed < first + calm_runs {
            let quiet = chaos::run(seed, false).await;
            println!("seed {seed} without faults: {:.1}s", quiet.makespan.as_secs_f64());
            if quiet.ok() && report.ok() {
                calm.push(quiet.makespan);
                faulted_of_calm.push(report.makespan);
            }
        }
    }
    println!(
        "\n| scenarios | failed | duplicate sends | lost results | stuck campaigns | median makespan with faults | same seeds without | ratio | wall |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let (with, without) = (median(faulted_of_calm), median(calm));
    println!(
        "| {scenarios} | {} | {duplicates} | {lost} | {stuck} | {:.1} s (all: {:.1} s) | {:.1} s | {:.2} | {:.0} min |",
        failed.len(),
        with.as_secs_f64(),
        median(with_faults).as_secs_f64(),
        without.as_secs_f64(),
        with.as_secs_f64() / without.as_secs_f64().max(0.001),
        started.elapsed().as_secs_f64() / 60.0
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
