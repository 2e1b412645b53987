//! When to poll a batch. ListCommandInvocations is most of muster's calls,
//! and a command's duration is unknown until it ends, so fewer polls cost a
//! later finish. Without knowledge the waits grow: the first poll comes soon
//! (undeliverable batches and quick commands end early), each wait 1.5x the
//! one before, up to 20 s. With knowledge (how long this campaign's batches
//! took so far, on SSM's own clock) the second poll comes when the batch is
//! expected to end, and from there the waits grow again from the first.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::recent::Recent;

/// First poll this long after sending.
pub const FIRST_POLL: Duration = Duration::from_millis(1_500);
/// Each wait is this much longer than the one before...
const POLL_GROWTH: f64 = 1.5;
/// ...up to this.
const MAX_POLL: Duration = Duration::from_secs(20);
/// How far past the expected end the poll comes: instances of one batch end
/// a little apart.
const PAST_EXPECTED: Duration = Duration::from_millis(250);
/// Batch durations remembered per campaign.
const REMEMBERED: usize = 8;
/// Campaigns remembered.
const CAMPAIGNS: usize = 256;

/// The waits between one batch's polls.
#[derive(Debug, Clone)]
pub struct Cadence {
    next: Duration,
    expected: Option<Duration>,
}

impl Cadence {
    /// A cadence for a batch expected to take `expected` from send to its
    /// last instance's end, if anything is known.
    pub fn new(expected: Option<Duration>) -> Self {
        Self {
            next: FIRST_POLL,
            expected,
        }
    }

    /// The wait before the next poll, `elapsed` after the send.
    pub fn wait(&mut self, elapsed: Duration) -> Duration {
        if elapsed >= FIRST_POLL
            && let Some(expected) = self.expected.take()
        {
            let end = expected + PAST_EXPECTED;
            // Only a jump that skips at least one poll of the usual waits.
            if end > elapsed + self.next {
                self.next = FIRST_POLL;
                return end - elapsed;
            }
        }
        let wait = self.next;
        self.next = MAX_POLL.min(self.next.mul_f64(POLL_GROWTH));
        wait
    }
}

/// How long recent batches of each campaign took, from send to their last
/// instance's end.
pub struct BatchDurations {
    campaigns: Recent<String, Arc<Mutex<VecDeque<Duration>>>>,
}

impl Default for BatchDurations {
    fn default() -> Self {
        Self {
            campaigns: Recent::new(CAMPAIGNS),
        }
    }
}

impl BatchDurations {
    fn of(&self, campaign_id: &str) -> Arc<Mutex<VecDeque<Duration>>> {
        self.campaigns
            .get_or_insert_with(&campaign_id.to_owned(), Default::default)
    }

    /// Records a batch of `campaign_id` that took `took`.
    pub fn record(&self, campaign_id: &str, took: Duration) {
        let durations = self.of(campaign_id);
        let mut durations = durations.lock().expect("durations lock");
        if durations.len() >= REMEMBERED {
            durations.pop_front();
        }
        durations.push_back(took);
    }

    /// When a new batch of `campaign_id` is expected to end: the shortest of
    /// the recent batches, so that polls come early rather than late.
    pub fn expected(&self, campaign_id: &str) -> Option<Duration> {
        let durations = self.of(campaign_id);
        let durations = durations.lock().expect("durations lock");
        durations.iter().min().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The poll times (seconds after the send) until `end`, inclusive.
    fn polls(mut cadence: Cadence, end: f64) -> Vec<f64> {
        let mut at = Duration::ZERO;
        let mut times = Vec::new();
        while at.as_secs_f64() < end {
            at += cadence.wait(at);
            times.push((at.as_secs_f64() * 100.0).round() / 100.0);
        }
        times
    }

    #[test]
    fn without_knowledge_waits_grow_from_1_5_s_by_half_up_to_20_s() {
        assert_eq!(polls(Cadence::new(None), 30.2), [1.5, 3.75, 7.13, 12.19, 19.78, 31.17]);
        let long = polls(Cadence::new(None), 120.0);
        let waits: Vec<f64> = long.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(waits.iter().all(|w| *w <= 20.0 + 1e-9), "{waits:?}");
        assert!((waits.last().unwrap() - 20.0).abs() < 0.01);
    }

    #[test]
    fn a_known_duration_makes_the_second_poll_the_one_that_finds_the_end() {
        let expected = Duration::from_secs_f64(30.2);
        assert_eq!(polls(Cadence::new(Some(expected)), 30.2), [1.5, 30.45]);
        // A batch that runs longer than expected is still found soon after.
        assert_eq!(polls(Cadence::new(Some(expected)), 33.0), [1.5, 30.45, 31.95, 34.2]);
    }

    #[test]
    fn a_short_expected_duration_changes_nothing() {
        // Expected to end before the next usual poll: no jump.
        let expected = Some(Duration::from_secs(3));
        assert_eq!(polls(Cadence::new(expected), 5.0), polls(Cadence::new(None), 5.0));
    }

    #[test]
    fn the_shortest_of_the_last_eight_batches_is_expected() {
        let durations = BatchDurations::default();
        assert_eq!(durations.expected("c1"), None);
        durations.record("c1", Duration::from_secs(9));
        for _ in 0..8 {
            durations.record("c1", Duration::from_secs(30));
        }
        assert_eq!(
            durations.expected("c1"),
            Some(Duration::from_secs(30)),
            "the 9 s batch is nine batches ago"
        );
        durations.record("c1", Duration::from_secs(28));
        assert_eq!(durations.expected("c1"), Some(Duration::from_secs(28)));
        assert_eq!(durations.expected("c2"), None, "per campaign");
    }
}
