//! The chaos suite's CI set: a few fixed seeds, each a whole campaign under
//! a schedule of process and AWS faults (see `muster_tests::chaos`). The
//! soak over 100+ seeds is a benchmark: `cargo bench -p muster-tests --bench
//! chaos_soak`. A failing seed replays with `MUSTER_CHAOS_SEED=<seed>`.

use muster_tests::chaos;

/// The seeds CI runs; `MUSTER_CHAOS_SEED` runs one instead.
fn seeds(default: &[u64]) -> Vec<u64> {
    match std::env::var("MUSTER_CHAOS_SEED") {
        Ok(seed) => vec![seed.parse().expect("MUSTER_CHAOS_SEED is a number")],
        Err(_) => default.to_vec(),
    }
}

async fn scenario(default: u64) {
    for seed in seeds(&[default]) {
        let report = chaos::run(seed, chaos::Mode::Faults).await;
        println!(
            "seed {seed}: {:?} in {:.1}s, {} leases expired, {} tasks handed back",
            report.faults,
            report.makespan.as_secs_f64(),
            report.expired,
            report.handed_back
        );
        assert!(
            report.ok(),
            "chaos seed {seed} (replay: MUSTER_CHAOS_SEED={seed}):\n  {}",
            report.violations.join("\n  ")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_seed_1() {
    scenario(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_seed_29() {
    scenario(29).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_seed_3() {
    scenario(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_seed_33() {
    scenario(33).await;
}
