//! Client-side API rate limiting per (account, region, API), so muster stays
//! within AWS's quotas instead of discovering them.
//!
//! Each lease brings a share of its (account, region)'s budget (the controller
//! divides the campaign's rate among the leases it allows at once); a process
//! holding several leases in one scope adds their shares. Every API of the
//! scope gets a token bucket at that rate. A throttling answer halves the rate
//! of that key (multiplicative decrease); a run of successes brings it back
//! slowly (additive increase). Generic over the clock, so tests never sleep.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

/// The slowest a key is ever made to go, as a fraction of its budget.
const MIN_FACTOR: f64 = 1.0 / 64.0;
/// Successes in a row before the rate is raised again.
const CALM_STREAK: u32 = 20;
/// How much a calm streak raises the rate, as a fraction of the budget.
const RECOVERY_STEP: f64 = 0.1;

type Direct<C> = RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// Identifies one bucket.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LimitKey {
    /// Target account.
    pub account: String,
    /// Target region.
    pub region: String,
    /// API name, e.g. "SendCommand".
    pub api: &'static str,
}

struct ApiSlot<C: Clock> {
    /// The AIMD multiplier, MIN_FACTOR to 1.
    factor: f64,
    /// Successes since the last change.
    calm: u32,
    /// The rate the bucket was built for.
    built_for: f64,
    limiter: Arc<Direct<C>>,
}

/// Per-key token buckets with AIMD on throttling.
pub struct ApiLimiter<C: Clock + Clone = DefaultClock> {
    clock: C,
    budgets: Mutex<HashMap<(String, String), f64>>,
    slots: Mutex<HashMap<LimitKey, ApiSlot<C>>>,
    throttled: AtomicU64,
}

impl Default for ApiLimiter<DefaultClock> {
    fn default() -> Self {
        Self::with_clock(DefaultClock::default())
    }
}

/// Holds a share of a scope's budget; dropping it gives the share back.
pub struct ShareGuard<C: Clock + Clone = DefaultClock> {
    limiter: Arc<ApiLimiter<C>>,
    scope: (String, String),
    rate: f64,
}

impl<C: Clock + Clone> Drop for ShareGuard<C> {
    fn drop(&mut self) {
        let mut budgets = self.limiter.budgets.lock().expect("budgets lock");
        if let Some(budget) = budgets.get_mut(&self.scope) {
            *budget -= self.rate;
            if *budget <= 1e-9 {
                budgets.remove(&self.scope);
            }
        }
    }
}

fn bucket<C: Clock + Clone>(rate: f64, clock: &C) -> Arc<Direct<C>> {
    let period = Duration::from_secs_f64(1.0 / rate.max(1e-3));
    // Allow a second's worth of calls at once, at least one.
    let burst = NonZeroU32::new(rate.floor().max(1.0) as u32).expect("burst is at least one");
    let quota = Quota::with_period(period)
        .expect("period is positive")
        .allow_burst(burst);
    Arc::new(RateLimiter::direct_with_clock(quota, clock.clone()))
}

impl<C: Clock + Clone> ApiLimiter<C> {
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
        *self
            .budgets
            .lock()
            .expect("budgets lock")
            .entry(scope.clone())
            .or_insert(0.0) += rate;
        ShareGuard {
            limiter: self.clone(),
            scope,
            rate,
        }
    }

    /// The rate a key may use now: its scope's budget times its factor.
    /// `None` when the scope has no budget (unlimited).
    pub fn rate(&self, key: &LimitKey) -> Option<f64> {
        let budget = self
            .budgets
            .lock()
            .expect("budgets lock")
            .get(&(key.account.clone(), key.region.clone()))
            .copied()
            .filter(|b| *b > 0.0)?;
        let factor = self
            .slots
            .lock()
            .expect("slots lock")
            .get(key)
            .map_or(1.0, |slot| slot.factor);
        Some(budget * factor)
    }

    fn limiter(&self, key: &LimitKey) -> Option<Arc<Direct<C>>> {
        let rate = self.rate(key)?;
        let mut slots = self.slots.lock().expect("slots lock");
        let slot = slots.entry(key.clone()).or_insert_with(|| ApiSlot {
            factor: 1.0,
            calm: 0,
            built_for: rate,
            limiter: bucket(rate, &self.clock),
        });
        if (slot.built_for - rate).abs() > 1e-9 {
            slot.built_for = rate;
            slot.limiter = bucket(rate, &self.clock);
        }
        Some(slot.limiter.clone())
    }

    /// Takes a token if one is there; otherwise says how long to wait.
    pub fn try_acquire(&self, key: &LimitKey) -> Result<(), Duration> {
        match self.limiter(key) {
            None => Ok(()),
            Some(limiter) => limiter
                .check()
                .map_err(|not_until| not_until.wait_time_from(self.clock.now())),
        }
    }

    /// The key was throttled by AWS: halve its rate.
    pub fn throttled(&self, key: &LimitKey) {
        self.throttled.fetch_add(1, Ordering::Relaxed);
        let mut slots = self.slots.lock().expect("slots lock");
        if let Some(slot) = slots.get_mut(key) {
            slot.factor = (slot.factor / 2.0).max(MIN_FACTOR);
            slot.calm = 0;
        }
    }

    /// A call of the key succeeded: after a calm streak, raise its rate a
    /// little towards the budget.
    pub fn succeeded(&self, key: &LimitKey) {
        let mut slots = self.slots.lock().expect("slots lock");
        if let Some(slot) = slots.get_mut(key)
            && slot.factor < 1.0
        {
            slot.calm += 1;
            if slot.calm >= CALM_STREAK {
                slot.factor = (slot.factor + RECOVERY_STEP).min(1.0);
                slot.calm = 0;
            }
        }
    }

    /// Throttling answers seen so far.
    pub fn throttled_count(&self) -> u64 {
        self.throttled.load(Ordering::Relaxed)
    }
}

impl ApiLimiter<DefaultClock> {
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
    use governor::clock::FakeRelativeClock;

    fn key(api: &'static str) -> LimitKey {
        LimitKey {
            account: "222222222222".into(),
            region: "us-east-1".into(),
            api,
        }
    }

    fn admitted(limiter: &ApiLimiter<FakeRelativeClock>, key: &LimitKey, tries: usize) -> usize {
        (0..tries).filter(|_| limiter.try_acquire(key).is_ok()).count()
    }

    #[test]
    fn shares_add_up_and_are_given_back() {
        let clock = FakeRelativeClock::default();
        let limiter = Arc::new(ApiLimiter::with_clock(clock));
        let k = key("SendCommand");
        assert_eq!(limiter.rate(&k), None, "no lease, no limit");
        let a = limiter.share("222222222222", "us-east-1", 2.0);
        let b = limiter.share("222222222222", "us-east-1", 3.0);
        assert_eq!(limiter.rate(&k), Some(5.0));
        drop(a);
        assert_eq!(limiter.rate(&k), Some(3.0));
        drop(b);
        assert_eq!(limiter.rate(&k), None);
    }

    #[test]
    fn a_bucket_admits_its_rate_per_second() {
        let clock = FakeRelativeClock::default();
        let limiter = Arc::new(ApiLimiter::with_clock(clock.clone()));
        let _share = limiter.share("222222222222", "us-east-1", 5.0);
        let k = key("SendCommand");
        assert_eq!(admitted(&limiter, &k, 100), 5, "a second's burst");
        clock.advance(Duration::from_secs(1));
        assert_eq!(admitted(&limiter, &k, 100), 5);
        // Another API of the scope has its own bucket.
        assert_eq!(admitted(&limiter, &key("ListCommandInvocations"), 100), 5);
        // Waiting is quoted, not guessed.
        let wait = limiter.try_acquire(&k).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(200));
    }

    #[test]
    fn throttling_halves_the_rate_and_calm_restores_it_slowly() {
        let clock = FakeRelativeClock::default();
        let limiter = Arc::new(ApiLimiter::with_clock(clock));
        let _share = limiter.share("222222222222", "us-east-1", 8.0);
        let k = key("SendCommand");
        assert!(limiter.try_acquire(&k).is_ok());
        limiter.throttled(&k);
        assert_eq!(limiter.rate(&k), Some(4.0));
        limiter.throttled(&k);
        limiter.throttled(&k);
        assert_eq!(limiter.rate(&k), Some(1.0));
        for _ in 0..100 {
            limiter.throttled(&k);
        }
        assert_eq!(limiter.rate(&k), Some(8.0 * MIN_FACTOR), "never stops entirely");
        for _ in 0..CALM_STREAK {
            limiter.succeeded(&k);
        }
        let raised = limiter.rate(&k).unwrap();
        assert!(
            raised > 8.0 * MIN_FACTOR && raised < 2.0,
            "recovery is gradual: {raised}"
        );
        for _ in 0..CALM_STREAK * 20 {
            limiter.succeeded(&k);
        }
        assert_eq!(limiter.rate(&k), Some(8.0));
        assert_eq!(limiter.throttled_count(), 103);
    }
}
