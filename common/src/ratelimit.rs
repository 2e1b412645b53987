//! Client-side API rate limiting per (account, region, API), so muster stays
//! within AWS's quotas instead of discovering them.
//!
//! Each lease brings a share of its (account, region)'s budget (the controller
//! divides the campaign's rate among the leases it allows at once); a process
//! holding several leases in one scope adds their shares. Every API of the
//! scope gets a token bucket at that rate.
//!
//! AWS does not publish most of its per-API quotas, and one campaign rate is
//! too fast for some APIs, so each key learns its own:
//! - a new bucket of a call that changes something (SendCommand) starts
//!   with one token, not a second's burst: AWS's buckets for such calls are
//!   small, and a scope's batches all leased at once would send together. A
//!   read's bucket starts full (pages of a listing go at once);
//! - a throttling answer cuts the key's rate by half (by a fifth when it was
//!   throttled lately, near the rate it has learned), once per second however
//!   many calls in flight were throttled together (they are one event), and
//!   empties its bucket; the rate it was throttled at becomes its ceiling;
//! - a run of successes raises the rate a step towards the budget, but not
//!   past nine tenths of the ceiling, which is forgotten after a quiet spell.
//!
//! A bucket keeps its tokens when the rate changes (a lease joining or
//! leaving), so a change never grants a fresh burst.
//!
//! Reads go at the most the scope's leases here have added up to since the
//! process last held none of them, not at what the leases still held add up
//! to: a scope's batches end one after another and each lists its results
//! then, and a budget shrinking lease by lease left the last of them waiting
//! on a trickle (20 s for the last of 100 batches each leased with a
//! hundredth of the rate). The controller may lease a share given back again
//! meanwhile, so reads may go faster than the scope's rate across workers
//! for a while: AWS's buckets for reads are the larger, and throttling cuts
//! the rate if not. Calls that change something go at what the leases held
//! add up to. Generic over the clock, so tests never sleep.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The slowest a key is ever made to go, as a fraction of its budget.
const MIN_FACTOR: f64 = 1.0 / 64.0;
/// Successes in a row before the rate is raised again.
const CALM_STREAK: u32 = 20;
/// How much a calm streak raises the rate, as a fraction of the budget.
const RECOVERY_STEP: f64 = 0.1;
/// Throttling answers within this long of a cut are the same event.
const CUT_WINDOW: Duration = Duration::from_secs(1);
/// The cut of a key never throttled, or not lately.
const FIRST_CUT: f64 = 0.5;
/// The cut of a key throttled lately: it is near what it learned.
const LATER_CUT: f64 = 0.8;
/// How close to the rate it was throttled at a key may climb back.
const CEILING_MARGIN: f64 = 0.9;
/// How long without throttling before a key forgets its ceiling.
const CEILING_MEMORY: Duration = Duration::from_secs(600);

/// A monotonic time source: the time since some fixed origin.
pub trait Clock: Clone {
    /// Now, as the time since the clock's origin.
    fn now(&self) -> Duration;
}

/// The process's monotonic clock.
#[derive(Clone, Copy)]
pub struct SystemClock(Instant);

impl Default for SystemClock {
    fn default() -> Self {
        Self(Instant::now())
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        self.0.elapsed()
    }
}

/// Identifies one bucket.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LimitKey {
    /// Target account.
    pub account: String,
    /// Target region.
    pub region: String,
    /// API name, e.g. "SendCommand".
    pub api: &'static str,
    /// Whether the API changes something (its bucket starts without a
    /// burst).
    pub mutates: bool,
}

/// A token bucket whose rate may change without refilling it.
struct Bucket {
    rate: f64,
    tokens: f64,
    at: Duration,
}

impl Bucket {
    /// Full, or with one token for a call that changes something.
    fn new(rate: f64, gently: bool, at: Duration) -> Self {
        let mut bucket = Self {
            rate: rate.max(1e-3),
            tokens: 1.0,
            at,
        };
        if !gently {
            bucket.tokens = bucket.burst();
        }
        bucket
    }

    /// A second's worth of calls, at least one.
    fn burst(&self) -> f64 {
        self.rate.floor().max(1.0)
    }

    fn refill(&mut self, now: Duration) {
        let elapsed = now.saturating_sub(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst());
        self.at = now;
    }

    fn set_rate(&mut self, rate: f64, now: Duration) {
        self.refill(now);
        self.rate = rate.max(1e-3);
        self.tokens = self.tokens.min(self.burst());
    }

    fn take(&mut self, now: Duration) -> Result<(), Duration> {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }
}

/// A scope's budget: what the shares of the leases held add up to, and the
/// most they added up to since none were held.
#[derive(Default)]
struct Budget {
    held: f64,
    peak: f64,
}

impl Budget {
    fn rate(&self, reads: bool) -> f64 {
        if reads { self.peak } else { self.held }
    }
}

struct ApiSlot {
    /// The AIMD multiplier, MIN_FACTOR to 1.
    factor: f64,
    /// Successes since the last change.
    calm: u32,
    /// When the rate was last cut.
    cut_at: Option<Duration>,
    /// The factor the key was last throttled at, while remembered.
    ceiling: Option<f64>,
    bucket: Bucket,
}

impl ApiSlot {
    /// Whether the key was throttled lately enough to remember its ceiling.
    fn remembers(&self, now: Duration) -> bool {
        self.ceiling.is_some() && self.cut_at.is_some_and(|cut| now.saturating_sub(cut) <= CEILING_MEMORY)
    }

    /// The highest factor calm may bring the key back to.
    fn cap(&self, now: Duration) -> f64 {
        match self.ceiling {
            Some(ceiling) if self.remembers(now) => (ceiling * CEILING_MARGIN).max(MIN_FACTOR),
            _ => 1.0,
        }
    }
}

/// Per-key token buckets that learn each key's quota from throttling.
pub struct ApiLimiter<C: Clock = SystemClock> {
    clock: C,
    budgets: Mutex<HashMap<(String, String), Budget>>,
    slots: Mutex<HashMap<LimitKey, ApiSlot>>,
    throttled: AtomicU64,
}

impl Default for ApiLimiter<SystemClock> {
    fn default() -> Self {
        Self::with_clock(SystemClock::default())
    }
}

/// Holds a share of a scope's budget; dropping it gives the share back.
pub struct ShareGuard<C: Clock = SystemClock> {
    limiter: Arc<ApiLimiter<C>>,
    scope: (String, String),
    rate: f64,
}

impl<C: Clock> Drop for ShareGuard<C> {
    fn drop(&mut self) {
        let mut budgets = self.limiter.budgets.lock().expect("budgets lock");
        if let Some(budget) = budgets.get_mut(&self.scope) {
            budget.held -= self.rate;
            if budget.held <= 1e-9 {
                budgets.remove(&self.scope);
            }
        }
    }
}

impl<C: Clock> ApiLimiter<C> {
    /// A limiter on `clock`.
    pub fn with_clock(clock: C) -> Self {
        Self {
            clock,
            budgets: Mutex::new(HashMap::new()),
            slots: Mutex::new(HashMap::new()),
            throttled: AtomicU64::new(0),
        }
    }

    /// Adds `rate` calls per second (per API) to the scope's budget for as
    /// long as the guard lives. A non-positive rate adds nothing.
    pub fn share(self: &Arc<Self>, account: &str, region: &str, rate: f64) -> ShareGuard<C> {
        let scope = (account.to_owned(), region.to_owned());
        let rate = rate.max(0.0);
        let mut budgets = self.budgets.lock().expect("budgets lock");
        let budget = budgets.entry(scope.clone()).or_default();
        budget.held += rate;
        budget.peak = budget.peak.max(budget.held);
        drop(budgets);
        ShareGuard {
            limiter: self.clone(),
            scope,
            rate,
        }
    }

    fn budget(&self, key: &LimitKey) -> Option<f64> {
        let scope = (key.account.clone(), key.region.clone());
        let rate = self
            .budgets
            .lock()
            .expect("budgets lock")
            .get(&scope)?
            .rate(!key.mutates);
        (rate > 1e-9).then_some(rate)
    }

    /// The rate a key may use now: its scope's budget times its factor.
    /// `None` when the scope has no budget (unlimited).
    pub fn rate(&self, key: &LimitKey) -> Option<f64> {
        let budget = self.budget(key)?;
        let factor = self
            .slots
            .lock()
            .expect("slots lock")
            .get(key)
            .map_or(1.0, |slot| slot.factor);
        Some(budget * factor)
    }

    /// Takes a token if one is there; otherwise says how long to wait.
    pub fn try_acquire(&self, key: &LimitKey) -> Result<(), Duration> {
        let Some(budget) = self.budget(key) else {
            return Ok(());
        };
        let now = self.clock.now();
        let mut slots = self.slots.lock().expect("slots lock");
        let slot = slots.entry(key.clone()).or_insert_with(|| ApiSlot {
            factor: 1.0,
            calm: 0,
            cut_at: None,
            ceiling: None,
            bucket: Bucket::new(budget, key.mutates, now),
        });
        let rate = budget * slot.factor;
        if (slot.bucket.rate - rate).abs() > 1e-9 {
            slot.bucket.set_rate(rate, now);
        }
        slot.bucket.take(now)
    }

    /// The key was throttled by AWS: halve its rate and empty its bucket,
    /// unless it was cut within the last second (the same burst).
    pub fn throttled(&self, key: &LimitKey) {
        self.throttled.fetch_add(1, Ordering::Relaxed);
        let now = self.clock.now();
        let mut slots = self.slots.lock().expect("slots lock");
        let Some(slot) = slots.get_mut(key) else {
            return;
        };
        slot.calm = 0;
        if slot.cut_at.is_some_and(|cut| now.saturating_sub(cut) < CUT_WINDOW) {
            return;
        }
        let cut = if slot.remembers(now) { LATER_CUT } else { FIRST_CUT };
        slot.ceiling = Some(slot.factor);
        slot.factor = (slot.factor * cut).max(MIN_FACTOR);
        slot.cut_at = Some(now);
        slot.bucket.refill(now);
        slot.bucket.tokens = slot.bucket.tokens.min(0.0);
    }

    /// A call of the key succeeded: after a calm streak, raise its rate a
    /// step towards the budget, short of the rate it was last throttled at.
    pub fn succeeded(&self, key: &LimitKey) {
        let now = self.clock.now();
        let mut slots = self.slots.lock().expect("slots lock");
        let Some(slot) = slots.get_mut(key) else {
            return;
        };
        let cap = slot.cap(now);
        if slot.factor >= cap {
            return;
        }
        slot.calm += 1;
        if slot.calm >= CALM_STREAK {
            slot.factor = (slot.factor + RECOVERY_STEP).min(cap);
            slot.calm = 0;
        }
    }

    /// Throttling answers seen so far.
    pub fn throttled_count(&self) -> u64 {
        self.throttled.load(Ordering::Relaxed)
    }
}

impl<C: Clock> ApiLimiter<C> {
    /// Waits for a token of `key`.
    pub async fn acquire(&self, key: &LimitKey) {
        while let Err(wait) = self.try_acquire(key) {
            tokio::time::sleep(wait.max(Duration::from_millis(1))).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A clock that moves only when told.
    #[derive(Clone, Default)]
    struct FakeClock(Arc<Mutex<Duration>>);

    impl FakeClock {
        fn advance(&self, by: Duration) {
            *self.0.lock().unwrap() += by;
        }
    }

    impl Clock for FakeClock {
        fn now(&self) -> Duration {
            *self.0.lock().unwrap()
        }
    }

    /// A call that changes something (its bucket starts with one token).
    fn key(api: &'static str) -> LimitKey {
        LimitKey {
            account: "222222222222".into(),
            region: "us-east-1".into(),
            api,
            mutates: true,
        }
    }

    fn read(api: &'static str) -> LimitKey {
        LimitKey {
            mutates: false,
            ..key(api)
        }
    }

    fn limiter(rate: f64) -> (FakeClock, Arc<ApiLimiter<FakeClock>>, ShareGuard<FakeClock>) {
        let clock = FakeClock::default();
        let limiter = Arc::new(ApiLimiter::with_clock(clock.clone()));
        let share = limiter.share("222222222222", "us-east-1", rate);
        (clock, limiter, share)
    }

    fn admitted(limiter: &ApiLimiter<FakeClock>, key: &LimitKey, tries: usize) -> usize {
        (0..tries).filter(|_| limiter.try_acquire(key).is_ok()).count()
    }

    #[test]
    fn shares_add_up_and_are_given_back() {
        let clock = FakeClock::default();
        let limiter = Arc::new(ApiLimiter::with_clock(clock));
        let k = key("SendCommand");
        assert_eq!(limiter.rate(&k), None, "no lease, no limit");
        assert_eq!(admitted(&limiter, &k, 100), 100, "no lease, no limit");
        let a = limiter.share("222222222222", "us-east-1", 2.0);
        let b = limiter.share("222222222222", "us-east-1", 3.0);
        assert_eq!(limiter.rate(&k), Some(5.0));
        drop(a);
        assert_eq!(limiter.rate(&k), Some(3.0));
        let list = read("ListCommandInvocations");
        assert_eq!(limiter.rate(&list), Some(5.0), "reads keep the scope's peak");
        let c = limiter.share("222222222222", "us-east-1", 4.0);
        assert_eq!(limiter.rate(&list), Some(7.0), "a higher peak");
        drop(b);
        drop(c);
        assert_eq!(limiter.rate(&k), None);
        assert_eq!(limiter.rate(&list), None, "the peak goes with the last lease");
        let _d = limiter.share("222222222222", "us-east-1", 1.0);
        assert_eq!(limiter.rate(&list), Some(1.0), "and starts afresh");
    }

    #[test]
    fn a_new_bucket_starts_with_one_token_then_admits_its_rate_per_second() {
        let (clock, limiter, _share) = limiter(5.0);
        let k = key("SendCommand");
        assert_eq!(admitted(&limiter, &k, 100), 1, "no burst at the start of a change");
        clock.advance(Duration::from_secs(1));
        assert_eq!(admitted(&limiter, &k, 100), 5);
        clock.advance(Duration::from_secs(10));
        assert_eq!(admitted(&limiter, &k, 100), 5, "a second's burst at most");
        // Another API of the scope has its own bucket; a read's starts full.
        assert_eq!(admitted(&limiter, &read("ListCommandInvocations"), 100), 5);
        // Waiting is quoted, not guessed.
        let wait = limiter.try_acquire(&k).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(200), "{wait:?}");
    }

    #[test]
    fn a_share_joining_raises_the_rate_without_a_fresh_burst() {
        let (clock, limiter, _first) = limiter(1.0);
        let k = key("SendCommand");
        assert_eq!(admitted(&limiter, &k, 100), 1);
        let _more: Vec<_> = (0..9)
            .map(|_| limiter.share("222222222222", "us-east-1", 1.0))
            .collect();
        assert_eq!(admitted(&limiter, &k, 100), 0, "ten leases, still one call so far");
        clock.advance(Duration::from_millis(500));
        assert_eq!(admitted(&limiter, &k, 100), 5, "at the ten leases' rate");
    }

    #[test]
    fn a_burst_of_throttling_is_one_cut_and_empties_the_bucket() {
        let (clock, limiter, _share) = limiter(8.0);
        let k = key("SendCommand");
        assert_eq!(admitted(&limiter, &k, 100), 1);
        clock.advance(Duration::from_secs(1));
        assert_eq!(admitted(&limiter, &k, 100), 8);
        // The eight calls in flight are all throttled: one cut, not eight.
        for _ in 0..8 {
            limiter.throttled(&k);
        }
        assert_eq!(limiter.rate(&k), Some(4.0));
        assert_eq!(limiter.throttled_count(), 8, "each answer is counted");
        assert_eq!(admitted(&limiter, &k, 100), 0, "the retries wait");
        clock.advance(Duration::from_millis(250));
        assert_eq!(admitted(&limiter, &k, 100), 1, "at the cut rate");
        // A second later it is a new event, near the rate learned: a gentler cut.
        clock.advance(Duration::from_secs(1));
        limiter.throttled(&k);
        assert_eq!(limiter.rate(&k), Some(4.0 * LATER_CUT));
        for _ in 0..40 {
            clock.advance(Duration::from_secs(1));
            limiter.throttled(&k);
        }
        assert_eq!(limiter.rate(&k), Some(8.0 * MIN_FACTOR), "never stops entirely");
    }

    #[test]
    fn calm_climbs_back_short_of_the_rate_that_was_throttled_until_it_is_forgotten() {
        let (clock, limiter, _share) = limiter(10.0);
        let k = key("SendCommand");
        assert!(limiter.try_acquire(&k).is_ok());
        limiter.throttled(&k);
        assert_eq!(limiter.rate(&k), Some(5.0));
        for _ in 0..CALM_STREAK - 1 {
            limiter.succeeded(&k);
        }
        assert_eq!(limiter.rate(&k), Some(5.0), "a streak is needed");
        limiter.succeeded(&k);
        assert_eq!(limiter.rate(&k), Some(6.0), "a step of a tenth of the budget");
        for _ in 0..CALM_STREAK * 20 {
            limiter.succeeded(&k);
        }
        assert_eq!(limiter.rate(&k), Some(9.0), "nine tenths of the rate throttled at");
        // Throttled again at 9: cut by a fifth, it settles under that.
        clock.advance(Duration::from_secs(2));
        limiter.throttled(&k);
        assert!((limiter.rate(&k).unwrap() - 9.0 * LATER_CUT).abs() < 1e-9);
        for _ in 0..CALM_STREAK * 20 {
            limiter.succeeded(&k);
        }
        let settled = limiter.rate(&k).unwrap();
        assert!((settled - 8.1).abs() < 1e-9, "{settled}");
        // A quiet spell forgets the ceiling.
        clock.advance(CEILING_MEMORY + Duration::from_secs(1));
        for _ in 0..CALM_STREAK * 20 {
            limiter.succeeded(&k);
        }
        assert_eq!(limiter.rate(&k), Some(10.0));
    }
}
