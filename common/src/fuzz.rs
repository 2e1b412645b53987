//! A time-bounded fuzz loop over proptest strategies, for CI: run random
//! inputs through a check for a fixed wall-clock budget, catch panics as
//! failures, shrink a failing input, and print the seed that reproduces it.
//!
//! `MUSTER_FUZZ_SECONDS` sets the budget (default 5), `MUSTER_FUZZ_SEED` a
//! seed to replay (hex, as printed). Enabled by the `fuzz` feature, which only
//! tests turn on.

use std::fmt::Debug;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

/// What one fuzz run did.
#[derive(Debug, Clone, Copy)]
pub struct Report {
    /// Inputs checked.
    pub cases: u64,
    /// Inputs the check accepted as valid (the rest it rejected cleanly).
    pub accepted: u64,
}

/// The outcome of checking one input: `Ok(true)` accepted, `Ok(false)`
/// rejected cleanly, `Err` a broken property.
pub type Outcome = Result<bool, String>;

fn budget() -> Duration {
    let seconds = std::env::var("MUSTER_FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .unwrap_or(5.0);
    Duration::from_secs_f64(seconds)
}

fn seed() -> [u8; 32] {
    if let Ok(hex) = std::env::var("MUSTER_FUZZ_SEED") {
        let mut seed = [0u8; 32];
        for (i, byte) in seed.iter_mut().enumerate() {
            *byte = hex
                .get(i * 2..i * 2 + 2)
                .and_then(|b| u8::from_str_radix(b, 16).ok())
                .expect("MUSTER_FUZZ_SEED: 64 hex digits, as a failing run printed");
        }
        seed
    } else {
        rand::random()
    }
}

fn check_one<V>(check: &impl Fn(&V) -> Outcome, value: &V) -> Outcome {
    match catch_unwind(AssertUnwindSafe(|| check(value))) {
        Ok(outcome) => outcome,
        Err(panic) => Err(format!(
            "panicked: {}",
            panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)")
        )),
    }
}

/// Runs `check` on inputs from `strategy` until the budget is spent; panics
/// with the smallest failing input found, and the seed, on the first failure.
pub fn run<S>(name: &str, strategy: S, check: impl Fn(&S::Value) -> Outcome) -> Report
where
    S: Strategy,
    S::Value: Debug,
{
    let seed = seed();
    let seed_hex: String = seed.iter().map(|b| format!("{b:02x}")).collect();
    let mut runner = TestRunner::new_with_rng(Config::default(), TestRng::from_seed(RngAlgorithm::ChaCha, &seed));
    let budget = budget();
    let started = Instant::now();
    let mut report = Report { cases: 0, accepted: 0 };
    while started.elapsed() < budget {
        let mut tree = strategy
            .new_tree(&mut runner)
            .unwrap_or_else(|e| panic!("{name}: the strategy gave up: {e}"));
        report.cases += 1;
        match check_one(&check, &tree.current()) {
            Ok(accepted) => report.accepted += u64::from(accepted),
            Err(mut why) => {
                // Shrink: keep simplifying while it still fails.
                let mut smallest = tree.current();
                let mut steps = 0;
                while steps < 10_000 && tree.simplify() {
                    steps += 1;
                    match check_one(&check, &tree.current()) {
                        Err(still) => {
                            smallest = tree.current();
                            why = still;
                        }
                        Ok(_) => {
                            if !tree.complicate() {
                                break;
                            }
                        }
                    }
                }
                panic!(
                    "{name}: {why}\ninput: {smallest:#?}\nafter {} cases; replay with MUSTER_FUZZ_SEED={seed_hex}",
                    report.cases
                );
            }
        }
    }
    println!(
        "{name}: {} cases in {:.1}s, {} accepted, {} rejected cleanly, no failure (seed {seed_hex})",
        report.cases,
        started.elapsed().as_secs_f64(),
        report.accepted,
        report.cases - report.accepted
    );
    report
}
