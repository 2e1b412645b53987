//! The chaos suite's CI set: a few fixed seeds, each a whole campaign under
//! a schedule of process and AWS faults (see `muster_tests::chaos`). The
//! soak over 100+ seeds is a benchmark: `cargo bench -p muster-tests --bench
//! chaos_soak`. A failing seed replays with `MUSTER_CHAOS_SEED=<seed>`.

use muster_tests::chaos;

/// The seeds CI runs, each with the shape it pins (or the one it draws);
/// `MUSTER_CHAOS_SEED` runs one instead, with the shape it draws, as the
/// soak ran it.
fn seeds(default: u64, shape: Option<chaos::Shape>) -> Vec<(u64, Option<chaos::Shape>)> {
    match std::env::var("MUSTER_CHAOS_SEED") {
        Ok(seed) => vec![(seed.parse().expect("MUSTER_CHAOS_SEED is a number"), None)],
        Err(_) => vec![(default, shape)],
    }
}

/// Runs the scenario of `default` (or of `MUSTER_CHAOS_SEED`) with the
/// campaign `shape`, or the one its seed draws.
async fn scenario(default: u64, shape: Option<chaos::Shape>) {
    for (seed, shape) in seeds(default, shape) {
        let mut plan = chaos::plan(seed, chaos::Mode::Faults);
        if let Some(shape) = shape {
            plan.shape = shape;
        }
        let shape = plan.shape;
        let report = chaos::run_plan(plan).await;
        println!(
            "seed {seed} ({shape:?}, {} controller(s)): {:?} in {:.1}s, {} leases expired, {} tasks handed back, last send after the cancel's answer: {:?}",
            report.controllers,
            report.faults,
            report.makespan.as_secs_f64(),
            report.expired,
            report.handed_back,
            report.sent_after_cancel
        );
        assert!(
            report.ok(),
            "chaos seed {seed} (replay: MUSTER_CHAOS_SEED={seed}):\n  {}",
            report.violations.join("\n  ")
        );
    }
}

// One command: these seeds' faults found bugs before campaigns had shapes.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_seed_1() {
    scenario(1, Some(chaos::Shape::Plain)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_seed_29() {
    scenario(29, Some(chaos::Shape::Plain)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_seed_3() {
    scenario(3, Some(chaos::Shape::Plain)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_seed_33() {
    scenario(33, Some(chaos::Shape::Plain)).await;
}

// Each other shape, as its seed draws it.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_seed_4_error_threshold() {
    scenario(4, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_seed_7_cancelled() {
    scenario(7, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_seed_9_waves() {
    scenario(9, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_seed_15_sequence() {
    scenario(15, None).await;
}
