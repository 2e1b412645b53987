//! The workers this controller hears from, so that each can be told its
//! share of the quotas the whole fleet shares: AssumeRole's is the hub
//! account's, whichever worker calls it.
//!
//! A worker is heard when it leases, renews or completes a task; one that
//! stops calling is forgotten after a window of twice the lease TTL (a
//! worker holding a lease renews it three times a TTL). Each controller
//! counts the workers that call it: behind a load balancer spreading
//! workers over several controllers, each counts fewer than there are, and
//! the workers learn the rest from throttling, as they would without it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most workers remembered (the rest are counted as that many).
const MOST: usize = 10_000;

/// The workers heard from lately.
pub struct Fleet {
    heard: Mutex<HashMap<String, Instant>>,
    window: Duration,
}

impl Fleet {
    /// Workers are forgotten `window` after their last call.
    pub fn new(window: Duration) -> Self {
        Self {
            heard: Mutex::new(HashMap::new()),
            window,
        }
    }

    /// Records a call from `worker`; how many workers called within the
    /// window, it included.
    pub fn heard(&self, worker: &str) -> u32 {
        self.heard_at(worker, Instant::now())
    }

    fn heard_at(&self, worker: &str, now: Instant) -> u32 {
        let mut heard = self.heard.lock().expect("fleet lock");
        heard.retain(|_, at| now.saturating_duration_since(*at) < self.window);
        if heard.len() < MOST || heard.contains_key(worker) {
            heard.insert(worker.to_owned(), now);
        }
        u32::try_from(heard.len()).unwrap_or(u32::MAX).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_count_while_they_call_and_are_forgotten_after_the_window() {
        let fleet = Fleet::new(Duration::from_secs(60));
        let start = Instant::now();
        let at = |seconds| start + Duration::from_secs(seconds);
        assert_eq!(fleet.heard_at("w1", at(0)), 1);
        assert_eq!(fleet.heard_at("w2", at(1)), 2);
        assert_eq!(fleet.heard_at("w1", at(2)), 2, "a worker counts once");
        assert_eq!(fleet.heard_at("w3", at(30)), 3);
        // w2 last called at 1 s: gone at 61 s; w1 (2 s) at 62 s.
        assert_eq!(fleet.heard_at("w3", at(61)), 2);
        assert_eq!(fleet.heard_at("w3", at(62)), 1);
    }
}
