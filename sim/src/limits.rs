//! AWS's limits, modelled: token buckets per (account, region, API) that answer
//! with the service's throttling error, injected faults, and added latency.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

use crate::config::{FaultRule, LatencyRange, Quota};

/// The key of one bucket.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CallKey {
    /// Account the call acts in.
    pub account: String,
    /// Signing region.
    pub region: String,
    /// Signing service.
    pub service: String,
    /// API name.
    pub api: String,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    rate: f64,
    burst: f64,
    last: Instant,
}

impl Bucket {
    fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Token buckets for every key that has a quota.
#[derive(Debug, Default)]
pub struct RateLimits {
    buckets: Mutex<HashMap<CallKey, Bucket>>,
}

impl RateLimits {
    /// Takes a token for `key` under `quotas`; false means "throttle this
    /// call". Calls with no matching quota always pass.
    pub fn admit(&self, key: &CallKey, quotas: &[Quota]) -> bool {
        let Some(quota) = quota_for(quotas, &key.service, &key.api) else {
            return true;
        };
        let now = Instant::now();
        let mut buckets = self.buckets.lock().expect("buckets lock");
        let bucket = buckets.entry(key.clone()).or_insert_with(|| Bucket {
            tokens: quota.burst,
            rate: quota.rate,
            burst: quota.burst,
            last: now,
        });
        // A changed quota takes effect at once, keeping the tokens in hand.
        if bucket.rate != quota.rate || bucket.burst != quota.burst {
            bucket.rate = quota.rate;
            bucket.burst = quota.burst;
            bucket.tokens = bucket.tokens.min(quota.burst);
        }
        bucket.take(now)
    }

    /// Refills every bucket (on reset or new quotas).
    pub fn clear(&self) {
        self.buckets.lock().expect("buckets lock").clear();
    }
}

/// The most specific quota for a call: exact API first, then "*".
pub fn quota_for<'a>(quotas: &'a [Quota], service: &str, api: &str) -> Option<&'a Quota> {
    quotas
        .iter()
        .find(|q| q.service == service && q.api == api)
        .or_else(|| quotas.iter().find(|q| q.service == service && q.api == "*"))
}

/// Decides injected faults; keeps per-rule counters so `every` and `limit`
/// are deterministic, and a seeded generator so `probability` replays.
#[derive(Debug)]
pub struct Faults {
    state: Mutex<FaultState>,
}

#[derive(Debug)]
struct FaultState {
    seen: HashMap<usize, (u64, u64)>,
    rng: StdRng,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            state: Mutex::new(FaultState {
                seen: HashMap::new(),
                rng: rng_for(None),
            }),
        }
    }
}

fn rng_for(seed: Option<u64>) -> StdRng {
    match seed {
        Some(seed) => StdRng::seed_from_u64(seed),
        None => StdRng::from_os_rng(),
    }
}

impl Faults {
    /// The fault to inject into this call, if any.
    pub fn pick(&self, rules: &[FaultRule], service: &str, api: &str) -> Option<FaultRule> {
        let mut state = self.state.lock().expect("faults lock");
        let FaultState { seen, rng } = &mut *state;
        for (index, rule) in rules.iter().enumerate() {
            let matches = (rule.service == "*" || rule.service == service) && (rule.api == "*" || rule.api == api);
            if !matches {
                continue;
            }
            let (calls, injected) = seen.entry(index).or_insert((0, 0));
            *calls += 1;
            if rule.limit.is_some_and(|limit| *injected >= limit) {
                continue;
            }
            let fire = match rule.every {
                Some(every) => *calls % every == 0,
                None => rng.random_bool(rule.probability),
            };
            if fire {
                *injected += 1;
                return Some(rule.clone());
            }
        }
        None
    }

    /// Forgets counts and restarts the generator from `seed` (on reset or
    /// new rules).
    pub fn clear(&self, seed: Option<u64>) {
        let mut state = self.state.lock().expect("faults lock");
        state.seen.clear();
        state.rng = rng_for(seed);
    }
}

/// The latency to add to one call.
pub fn latency(range: LatencyRange) -> Option<Duration> {
    if range.max == 0 {
        return None;
    }
    let millis = if range.min == range.max {
        range.min
    } else {
        rand::rng().random_range(range.min..=range.max)
    };
    Some(Duration::from_millis(millis))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FaultKind;

    fn key(api: &str) -> CallKey {
        CallKey {
            account: "222222222222".into(),
            region: "us-east-1".into(),
            service: "ssm".into(),
            api: api.into(),
        }
    }

    #[test]
    fn buckets_admit_burst_then_throttle() {
        let limits = RateLimits::default();
        let quotas = vec![Quota::new("ssm", "SendCommand", 0.001, 3.0)];
        let admitted = (0..10).filter(|_| limits.admit(&key("SendCommand"), &quotas)).count();
        assert_eq!(admitted, 3);
        // Another API of the same service has no quota here.
        assert!((0..10).all(|_| limits.admit(&key("ListCommands"), &quotas)));
    }

    #[test]
    fn buckets_are_per_account_and_region() {
        let limits = RateLimits::default();
        let quotas = vec![Quota::new("ssm", "*", 0.001, 1.0)];
        assert!(limits.admit(&key("SendCommand"), &quotas));
        assert!(!limits.admit(&key("SendCommand"), &quotas));
        let mut other = key("SendCommand");
        other.region = "eu-west-1".into();
        assert!(limits.admit(&other, &quotas));
    }

    #[test]
    fn a_seed_replays_the_same_probabilistic_faults() {
        let rules = vec![
            FaultRule::new("*", "*", FaultKind::Drop)
                .probability(0.3)
                .after_effect(),
        ];
        let draw = |faults: &Faults| -> Vec<bool> {
            (0..200)
                .map(|_| faults.pick(&rules, "ssm", "SendCommand").is_some())
                .collect()
        };
        let faults = Faults::default();
        faults.clear(Some(42));
        let first = draw(&faults);
        faults.clear(Some(42));
        assert_eq!(draw(&faults), first, "the same seed, the same faults");
        faults.clear(Some(43));
        assert_ne!(draw(&faults), first, "another seed, other faults");
        let fired = first.iter().filter(|f| **f).count();
        assert!((30..=90).contains(&fired), "about 30% of 200 calls: {fired}");
    }

    #[test]
    fn every_nth_fault_is_deterministic_and_limited() {
        let faults = Faults::default();
        let rules = vec![FaultRule::new("ssm", "*", FaultKind::Error500).every(3).limit(2)];
        let fired: Vec<bool> = (0..12)
            .map(|_| faults.pick(&rules, "ssm", "SendCommand").is_some())
            .collect();
        assert_eq!(
            fired,
            vec![
                false, false, true, false, false, true, false, false, false, false, false, false
            ]
        );
        assert!(faults.pick(&rules, "ec2", "DescribeInstances").is_none());
    }
}
