//! Benchmark (issue 3): one `muster-worker` process holding 5,000 batches in
//! flight against the sandbox, and what that costs it in memory and CPU.
//!
//! 25 accounts x 2 regions x 100 instances, batch size 1, every command
//! running for MUSTER_BENCH_HOLD_SECONDS (default 120) in the sim. The real
//! controller releases up to 100 batches per (account, region) at once, so
//! all 5,000 are out together; the worker sends each, then polls them until
//! they end. RSS and CPU are read from /proc while all are in flight.
//!
//!     cargo build --release --bins
//!     cargo bench -p muster-tests --bench worker_inflight
//!
//! MUSTER_BENCH_PER_REGION (default 100) scales the fleet.

use std::time::{Duration, Instant};

use muster_proto::v1::{CampaignState, RateControl};
use muster_tests::client::{get, script_spec, submit, wait_done};
use muster_tests::fleets;
use muster_tests::procs::{System, SystemOptions};
use muster_tests::procstat::{cpu_seconds, rss_mib};

const REGIONS: [&str; 2] = ["us-east-1", "eu-west-1"];
const ACCOUNTS: u32 = 25;

#[tokio::main]
async fn main() {
    let hold: u64 = std::env::var("MUSTER_BENCH_HOLD_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    let per_region: u32 = std::env::var("MUSTER_BENCH_PER_REGION")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let batches = (ACCOUNTS * per_region) as u64 * REGIONS.len() as u64;
    let started = Instant::now();
    let mut system = System::start(
        &fleets::grid(ACCOUNTS, &REGIONS, per_region, hold as f64),
        SystemOptions {
            workers: 1,
            lease_ttl: 60,
            controller_args: ["--max-tasks-per-scope", "100", "--max-queued", "6000"]
                .map(String::from)
                .to_vec(),
            worker_args: ["--max-tasks", "6000", "--pollers", "4"].map(String::from).to_vec(),
            ..Default::default()
        },
    )
    .await;
    println!(
        "sandbox with {batches} instances up in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let pid = system.worker_pid(0).expect("the worker runs");
    // Started and polling an empty queue.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (idle_rss, _) = rss_mib(pid).expect("the worker's RSS");
    let accounts: Vec<String> = system.fleet.accounts.iter().map(|a| a.id.clone()).collect();
    let mut spec = script_spec(&accounts, &REGIONS, &["true"], &[]);
    spec.rate = Some(RateControl {
        max_concurrency: "100%".into(),
        max_errors: String::new(),
        batch_size: 1,
        api_calls_per_second: 50.0,
    });
    let id = submit(&mut system.client, spec).await;

    // Wait until every batch is out.
    let started = Instant::now();
    let mut peak_running = 0;
    loop {
        let counters = get(&mut system.client, &id).await.counters.unwrap_or_default();
        peak_running = peak_running.max(counters.running);
        if counters.running >= batches {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(hold),
            "only {} of {batches} batches in flight after {:.0}s (commands run {hold}s; raise \
             MUSTER_BENCH_HOLD_SECONDS)",
            counters.running,
            started.elapsed().as_secs_f64()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let ramp = started.elapsed();
    println!(
        "{batches} batches in flight after {:.1}s ({:.0} SendCommand/s)",
        ramp.as_secs_f64(),
        batches as f64 / ramp.as_secs_f64()
    );

    // Steady state: all in flight, the worker polling them.
    let window = Duration::from_secs(20.min(hold.saturating_sub(ramp.as_secs() + 5)).max(5));
    let cpu_before = cpu_seconds(pid).expect("the worker's CPU time");
    let sampled = Instant::now();
    let mut rss_samples = Vec::new();
    while sampled.elapsed() < window {
        rss_samples.push(rss_mib(pid).expect("the worker's RSS").0);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let cpu = (cpu_seconds(pid).expect("the worker's CPU time") - cpu_before) / sampled.elapsed().as_secs_f64();
    let running = get(&mut system.client, &id).await.counters.unwrap_or_default().running;
    let (_, peak) = rss_mib(pid).expect("the worker's RSS");
    let mean = rss_samples.iter().sum::<f64>() / rss_samples.len() as f64;
    println!(
        "worker with {running} batches in flight: RSS {mean:.0} MiB (idle {idle_rss:.0} MiB, peak {peak:.0} MiB), \
         CPU {:.0}% of one core over {:.0}s",
        cpu * 100.0,
        window.as_secs_f64()
    );
    println!(
        "per batch in flight: {:.1} KiB",
        (mean - idle_rss) * 1024.0 / running.max(1) as f64
    );

    // Let them finish: every instance ran once.
    let campaign = wait_done(&mut system.client, &id, Duration::from_secs(hold + 600)).await;
    let counters = campaign.counters.unwrap_or_default();
    println!(
        "campaign ended {:?}: {} succeeded of {}; peak running {peak_running}",
        campaign.state(),
        counters.success,
        counters.total
    );
    assert_eq!(campaign.state(), CampaignState::Succeeded);
    let sends = system.sends_per_instance();
    assert_eq!(sends.len() as u64, batches);
    assert!(sends.values().all(|n| *n == 1), "an instance got its command twice");
}
