//! When to poll a batch. ListCommandInvocations is most of muster's calls,
//! and a command's duration is unknown until it ends, so fewer polls cost a
//! later finish. Without knowledge the waits grow: the first poll comes soon
//! (undeliverable batches and quick commands end early), each wait 1.5x the
//! one before, up to 20 s. With knowledge (how long this campaign's batches
//! took so far, on SSM's own clock) the second poll comes when the batch is
//! expected to end, and from there the waits grow again from the first.
//! Knowledge that arrives while a batch waits (another batch of the first
//! wave ended) brings its next poll forward to the expected end.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::lru_map::LruMap;

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
    /// Whether an expected duration was given, at the start or since.
    informed: bool,
}

impl Cadence {
    /// A cadence for a batch expected to take `expected` from send to its
    /// last instance's end, if anything is known.
    pub fn new(expected: Option<Duration>) -> Self {
        Self {
            next: FIRST_POLL,
            expected,
            informed: expected.is_some(),
        }
    }

    /// Whether the cadence still polls without knowing what to expect.
    pub fn uninformed(&self) -> bool {
        !self.informed
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

    /// Learns, while waiting for the poll `scheduled` after the send, that
    /// the batch is expected to take `expected`. Returns when to poll
    /// instead (after the send; maybe already past), if that is sooner.
    /// Only the first knowledge counts: from there the usual waits go on.
    pub fn learn(&mut self, expected: Duration, scheduled: Duration) -> Option<Duration> {
        if self.informed {
            return None;
        }
        self.informed = true;
        let end = expected + PAST_EXPECTED;
        if end < scheduled {
            self.next = FIRST_POLL;
            Some(end)
        } else {
            // The poll already planned comes soon enough; the one after it
            // uses the knowledge as a batch that started with it would.
            self.expected = Some(expected);
            None
        }
    }
}

/// While Run Command's events announce a batch's end, polls are only a
/// fallback for an event lost or late: the first comes a grace after the
/// batch is expected to end (or a minute after the send, knowing nothing:
/// the campaign's other batches usually teach it sooner), then after 15 s,
/// each wait twice the one before, up to two minutes.
#[derive(Debug, Clone)]
pub struct Fallback {
    /// The next poll, after the send.
    next: Duration,
    wait: Duration,
    polled: bool,
}

/// The first fallback poll without knowledge.
pub const FALLBACK_FIRST: Duration = Duration::from_secs(60);
/// The wait after the first fallback poll; it doubles from there.
pub const FALLBACK_STEP: Duration = Duration::from_secs(15);
/// How long past the expected end an event may take before a poll looks.
pub const FALLBACK_GRACE: Duration = Duration::from_secs(5);
/// The longest wait between fallback polls.
pub const FALLBACK_MAX: Duration = Duration::from_secs(120);
/// How soon to look again when an event's listing was not yet complete, or
/// after a cancel.
pub const FALLBACK_SOON: Duration = Duration::from_secs(2);

impl Fallback {
    /// The fallback of a batch expected to take `expected`.
    pub fn new(expected: Option<Duration>) -> Self {
        Self {
            next: expected.map_or(FALLBACK_FIRST, |e| e + FALLBACK_GRACE),
            wait: FALLBACK_STEP,
            polled: false,
        }
    }

    /// When the next fallback poll is due, after the send.
    pub fn due(&self) -> Duration {
        self.next
    }

    /// Learns the batch is expected to take `expected`: before the first
    /// poll, that brings it forward (never back).
    pub fn learn(&mut self, expected: Duration) {
        if !self.polled {
            self.next = self.next.min(expected + FALLBACK_GRACE);
        }
    }

    /// A poll ran `elapsed` after the send: the next one waits longer.
    pub fn polled(&mut self, elapsed: Duration) {
        if self.polled {
            self.wait = FALLBACK_MAX.min(self.wait * 2);
        }
        self.polled = true;
        self.next = elapsed + self.wait;
    }

    /// Looks again soon, `elapsed` after the send.
    pub fn soon(&mut self, elapsed: Duration) {
        self.next = elapsed + FALLBACK_SOON;
    }
}

/// How long recent batches of one campaign took, and a signal for each new
/// one.
struct Campaign {
    durations: Mutex<VecDeque<Duration>>,
    recorded: watch::Sender<()>,
}

impl Default for Campaign {
    fn default() -> Self {
        Self {
            durations: Mutex::default(),
            recorded: watch::Sender::new(()),
        }
    }
}

impl Campaign {
    fn expected(&self) -> Option<Duration> {
        self.durations.lock().expect("durations lock").iter().min().copied()
    }
}

/// How long recent batches of each campaign took, from send to their last
/// instance's end.
pub struct BatchDurations {
    campaigns: LruMap<String, Arc<Campaign>>,
}

impl Default for BatchDurations {
    fn default() -> Self {
        Self {
            campaigns: LruMap::new(CAMPAIGNS),
        }
    }
}

impl BatchDurations {
    fn of(&self, campaign_id: &str) -> Arc<Campaign> {
        self.campaigns
            .get_or_insert_with(&campaign_id.to_owned(), Default::default)
    }

    /// Records a batch of `campaign_id` that took `took`, and tells the
    /// batches waiting on it.
    pub fn record(&self, campaign_id: &str, took: Duration) {
        let campaign = self.of(campaign_id);
        {
            let mut durations = campaign.durations.lock().expect("durations lock");
            if durations.len() >= REMEMBERED {
                durations.pop_front();
            }
            durations.push_back(took);
        }
        campaign.recorded.send_replace(());
    }

    /// When a new batch of `campaign_id` is expected to end: the shortest of
    /// the recent batches, so that polls come early rather than late.
    pub fn expected(&self, campaign_id: &str) -> Option<Duration> {
        self.of(campaign_id).expected()
    }

    /// What `campaign_id`'s batches are expected to take from now on, as it
    /// becomes known.
    pub fn watch(&self, campaign_id: &str) -> Expectation {
        let campaign = self.of(campaign_id);
        let recorded = campaign.recorded.subscribe();
        Expectation { campaign, recorded }
    }
}

/// A campaign's expected batch duration, as batches end.
pub struct Expectation {
    campaign: Arc<Campaign>,
    recorded: watch::Receiver<()>,
}

impl Expectation {
    /// Waits for the next recorded batch (since this was made or last
    /// returned) and answers what is expected now. Batches recorded after
    /// the campaign was forgotten (256 campaigns later) go unseen.
    pub async fn changed(&mut self) -> Duration {
        loop {
            // The sender lives in `campaign`, held here: never closed.
            if self.recorded.changed().await.is_err() {
                return std::future::pending().await;
            }
            if let Some(expected) = self.campaign.expected() {
                return expected;
            }
        }
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
    fn knowledge_that_arrives_while_waiting_brings_the_poll_forward_once() {
        let expected = Duration::from_secs_f64(30.2);
        // Uninformed, the poll after 19.78 s is planned at 31.17 s.
        let mut cadence = Cadence::new(None);
        assert_eq!(polls(cadence.clone(), 19.0), [1.5, 3.75, 7.13, 12.19, 19.78]);
        for _ in 0..5 {
            cadence.wait(Duration::ZERO);
        }
        assert!(cadence.uninformed());
        let sooner = cadence.learn(expected, Duration::from_secs_f64(31.17));
        assert_eq!(sooner, Some(Duration::from_secs_f64(30.45)));
        assert!(!cadence.uninformed());
        // From there the usual waits, from the first.
        assert_eq!(cadence.wait(Duration::from_secs_f64(30.45)), FIRST_POLL);
        // Later knowledge changes nothing.
        assert_eq!(cadence.learn(Duration::from_secs(5), Duration::from_secs(32)), None);
    }

    #[test]
    fn knowledge_of_a_later_end_waits_for_the_planned_poll_then_jumps() {
        // Learned at 2 s, while the poll at 3.75 s is planned: the batch
        // should end at 30.45 s, so that poll stays and the next jumps.
        let mut cadence = Cadence::new(None);
        cadence.wait(Duration::ZERO);
        cadence.wait(Duration::from_secs_f64(1.5));
        assert_eq!(
            cadence.learn(Duration::from_secs_f64(30.2), Duration::from_secs_f64(3.75)),
            None
        );
        let wait = cadence.wait(Duration::from_secs_f64(3.75));
        assert_eq!((wait.as_secs_f64() * 100.0).round() / 100.0, 26.7);
    }

    #[test]
    fn fallback_polls_come_a_grace_after_the_expected_end_then_seldom() {
        let mut fallback = Fallback::new(None);
        assert_eq!(fallback.due(), FALLBACK_FIRST);
        fallback.learn(Duration::from_secs(3));
        assert_eq!(fallback.due(), Duration::from_secs(8), "known sooner: brought forward");
        fallback.learn(Duration::from_secs(30));
        assert_eq!(fallback.due(), Duration::from_secs(8), "never pushed back");
        let mut at = fallback.due();
        let mut times = Vec::new();
        for _ in 0..6 {
            fallback.polled(at);
            at = fallback.due();
            times.push(at.as_secs());
        }
        assert_eq!(times, [23, 53, 113, 233, 353, 473]);
        fallback.learn(Duration::from_secs(1));
        assert_eq!(fallback.due().as_secs(), 473, "after a poll, learning changes nothing");
        fallback.soon(Duration::from_secs(500));
        assert_eq!(fallback.due(), Duration::from_secs(502));
        let informed = Fallback::new(Some(Duration::from_secs(30)));
        assert_eq!(informed.due(), Duration::from_secs(35));
        let blind = Fallback::new(None);
        assert_eq!(blind.due(), Duration::from_secs(60), "knowing nothing, a minute");
    }

    #[test]
    fn a_cadence_that_started_informed_learns_nothing_more() {
        let mut cadence = Cadence::new(Some(Duration::from_secs(30)));
        assert!(!cadence.uninformed());
        assert_eq!(cadence.learn(Duration::from_secs(5), Duration::from_secs(20)), None);
    }

    #[tokio::test]
    async fn a_recorded_batch_tells_the_batches_waiting_on_its_campaign() {
        let durations = BatchDurations::default();
        durations.record("c1", Duration::from_secs(40));
        // Only batches recorded after the watch began are news.
        let mut watch = durations.watch("c1");
        let mut other = durations.watch("c2");
        let wait = tokio::time::timeout(Duration::from_millis(50), watch.changed()).await;
        assert!(wait.is_err(), "nothing new yet");
        durations.record("c1", Duration::from_secs(30));
        let expected = tokio::time::timeout(Duration::from_secs(5), watch.changed()).await;
        assert_eq!(expected.ok(), Some(Duration::from_secs(30)), "the shortest recent");
        let wait = tokio::time::timeout(Duration::from_millis(50), other.changed()).await;
        assert!(wait.is_err(), "another campaign's batch is not news");
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
