//! What the worker has done, for tests, benchmarks and (later) metrics.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};

use crate::api::Api;

/// Counters shared by every task of the process.
#[derive(Debug, Default)]
pub struct Stats {
    calls: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    in_flight_batches: AtomicI64,
    running_tasks: AtomicI64,
}

impl Stats {
    /// Counts one AWS call outcome: "ok", "throttled", "transient",
    /// "expired", "error".
    pub fn call(&self, api: Api, outcome: &'static str) {
        *self
            .calls
            .lock()
            .expect("stats lock")
            .entry((api.name(), outcome))
            .or_insert(0) += 1;
    }

    /// Calls by (API, outcome).
    pub fn calls(&self) -> BTreeMap<(&'static str, &'static str), u64> {
        self.calls.lock().expect("stats lock").clone()
    }

    /// Calls with `outcome`, over every API.
    pub fn total(&self, outcome: &str) -> u64 {
        self.calls
            .lock()
            .expect("stats lock")
            .iter()
            .filter(|((_, o), _)| *o == outcome)
            .map(|(_, n)| n)
            .sum()
    }

    /// A batch was sent and is being polled (+1) or finished (-1).
    pub fn batches(&self, delta: i64) {
        self.in_flight_batches.fetch_add(delta, Ordering::Relaxed);
    }

    /// Batches being polled now.
    pub fn in_flight_batches(&self) -> i64 {
        self.in_flight_batches.load(Ordering::Relaxed)
    }

    /// A task started (+1) or ended (-1).
    pub fn tasks(&self, delta: i64) {
        self.running_tasks.fetch_add(delta, Ordering::Relaxed);
    }

    /// Tasks running now.
    pub fn running_tasks(&self) -> i64 {
        self.running_tasks.load(Ordering::Relaxed)
    }
}
