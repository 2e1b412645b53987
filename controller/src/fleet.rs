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

/// How often the forgotten are swept out: every call would scan the whole
/// map on the lease path; a count a second late by this much is as good.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The workers heard from lately.
pub struct Fleet {
    heard: Mutex<Heard>,
    window: Duration,
}

#[derive(Default)]
struct Heard {
    last: HashMap<String, Instant>,
    swept: Option<Instant>,
}

impl Fleet {
    /// Workers are forgotten `window` after their last call.
    pub fn new(window: Duration) -> Self {
        Self {
            heard: Mutex::new(Heard::default()),
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
        if heard
            .swept
            .is_none_or(|swept| now.saturating_duration_since(swept) >= SWEEP_EVERY)
        {
            heard
                .last
                .retain(|_, at| now.saturating_duration_since(*at) < self.window);
            heard.swept = Some(now);
        }
        if heard.last.len() < MOST || heard.last.contains_key(worker) {
            heard.last.insert(worker.to_owned(), now);
        }
        u32::try_from(heard.last.len()).unwrap_or(u32::MAX).max(1)
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

    #[test]
    fn the_forgotten_are_swept_at_most_once_a_second() {
        let fleet = Fleet::new(Duration::from_millis(100));
        let start = Instant::now();
        let at = |millis| start + Duration::from_millis(millis);
        assert_eq!(fleet.heard_at("w1", at(0)), 1);
        // w1 is past the window at 500 ms, but the last sweep was 500 ms ago.
        assert_eq!(fleet.heard_at("w2", at(500)), 2);
        assert_eq!(
            fleet.heard_at("w2", at(1_000)),
            1,
            "swept a second after the last sweep"
        );
    }
}
