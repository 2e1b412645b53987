//! Rollout decisions, as pure functions of counts: which batches to release
//! now, and when to stop. The reconcile loop reads the counts from the store
//! and writes the decisions back; nothing here does I/O or reads a clock.
//!
//! The rules, as SSM has them for one command and muster applies across a
//! whole campaign:
//! - instances in flight (queued or running) never exceed the concurrency
//!   limit;
//! - errors are FAILED targets and execution timeouts; once they exceed the
//!   threshold, nothing more is released, in-flight batches finish, and the
//!   unreleased targets end TERMINATED;
//! - a batch is one platform of one (account, region), at most `batch_size`
//!   (and SendCommand's 50) instances;
//! - each (account, region) has at most `max_tasks_per_scope` batches out at
//!   once, so that the workers' rate shares add up to the campaign's rate.

/// A campaign's limits, resolved against its target count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most instances in flight.
    pub concurrency: u64,
    /// Errors allowed; one more stops the rollout. `None`: no limit.
    pub error_threshold: Option<u64>,
    /// Most instances per batch (1 to 50).
    pub batch_size: u64,
    /// Most batches out at once per (account, region).
    pub max_tasks_per_scope: u64,
    /// Release only whole batches (the batch size, or all a scope has left):
    /// while discovery goes on the limits grow with every scope found, and a
    /// batch cut to today's room would split the scope into more commands.
    pub whole_batches: bool,
}

/// What one (account, region) has left.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScopeLoad {
    /// Pending (unreleased) targets per platform.
    pub pending: Vec<(i32, u64)>,
    /// Batches of the scope out now (queued or leased).
    pub active_tasks: u64,
}

/// One batch to release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Release {
    /// Index into the scopes given to [`plan`].
    pub scope: usize,
    /// The platform of every instance in the batch.
    pub platform: i32,
    /// How many instances.
    pub size: u64,
}

/// Whether the error threshold has been exceeded.
pub fn halted(limits: &Limits, errors: u64) -> bool {
    limits.error_threshold.is_some_and(|threshold| errors > threshold)
}

/// The batches to release now, round-robin over scopes starting at `start`
/// so that every (account, region) makes progress.
pub fn plan(limits: &Limits, in_flight: u64, errors: u64, scopes: &[ScopeLoad], start: usize) -> Vec<Release> {
    let mut releases = Vec::new();
    if halted(limits, errors) || scopes.is_empty() {
        return releases;
    }
    let batch = limits.batch_size.clamp(1, 50);
    let mut room = limits.concurrency.saturating_sub(in_flight);
    let mut left: Vec<ScopeLoad> = scopes.to_vec();
    while room > 0 {
        let mut progressed = false;
        for offset in 0..left.len() {
            if room == 0 {
                break;
            }
            let index = (start + offset) % left.len();
            let scope = &mut left[index];
            if scope.active_tasks >= limits.max_tasks_per_scope {
                continue;
            }
            let Some((platform, pending)) = scope.pending.iter_mut().find(|(_, n)| *n > 0) else {
                continue;
            };
            let whole = batch.min(*pending);
            if limits.whole_batches && room < whole {
                continue;
            }
            let size = whole.min(room);
            *pending -= size;
            scope.active_tasks += 1;
            room -= size;
            progressed = true;
            releases.push(Release {
                scope: index,
                platform: *platform,
                size,
            });
        }
        if !progressed {
            break;
        }
    }
    releases
}

#[cfg(test)]
mod tests {
    use super::*;
    use muster_common::domain::RateLimit;
    use proptest::prelude::*;

    const LINUX: i32 = 1;
    const WINDOWS: i32 = 2;

    fn limits(concurrency: u64, errors: Option<u64>, batch: u64) -> Limits {
        Limits {
            concurrency,
            error_threshold: errors,
            batch_size: batch,
            max_tasks_per_scope: 4,
            whole_batches: false,
        }
    }

    #[test]
    fn batches_are_one_platform_and_fill_the_concurrency() {
        let scopes = vec![
            ScopeLoad {
                pending: vec![(LINUX, 120), (WINDOWS, 3)],
                active_tasks: 0,
            },
            ScopeLoad {
                pending: vec![(LINUX, 10)],
                active_tasks: 0,
            },
        ];
        let plan = plan(&limits(100, None, 50), 0, 0, &scopes, 0);
        let total: u64 = plan.iter().map(|r| r.size).sum();
        assert_eq!(total, 100);
        assert!(plan.iter().all(|r| r.size <= 50));
        assert_eq!(
            plan[0],
            Release {
                scope: 0,
                platform: LINUX,
                size: 50
            }
        );
        assert_eq!(
            plan[1],
            Release {
                scope: 1,
                platform: LINUX,
                size: 10
            }
        );
        assert_eq!(
            plan[2],
            Release {
                scope: 0,
                platform: LINUX,
                size: 40
            }
        );
    }

    #[test]
    fn in_flight_and_scope_caps_hold() {
        let scopes = vec![ScopeLoad {
            pending: vec![(LINUX, 500)],
            active_tasks: 3,
        }];
        let plan = plan(&limits(1000, None, 10), 0, 0, &scopes, 0);
        assert_eq!(plan.len(), 1, "one more batch for this scope, then the cap");
        let scopes = vec![ScopeLoad {
            pending: vec![(LINUX, 500)],
            active_tasks: 0,
        }];
        let plan = super::plan(&limits(30, None, 50), 25, 0, &scopes, 0);
        assert_eq!(
            plan,
            vec![Release {
                scope: 0,
                platform: LINUX,
                size: 5
            }],
            "only the room left"
        );
    }

    #[test]
    fn while_discovering_only_whole_batches_go() {
        let scopes = vec![
            ScopeLoad {
                pending: vec![(LINUX, 50)],
                active_tasks: 0,
            },
            ScopeLoad {
                pending: vec![(LINUX, 8)],
                active_tasks: 0,
            },
        ];
        let whole = |concurrency| Limits {
            whole_batches: true,
            ..limits(concurrency, None, 50)
        };
        // 25% of the 58 targets found so far is 15: no room for a batch of 50,
        // room for the other scope's 8.
        assert_eq!(
            plan(&whole(15), 0, 0, &scopes, 0),
            vec![Release {
                scope: 1,
                platform: LINUX,
                size: 8
            }]
        );
        assert_eq!(plan(&whole(60), 0, 0, &scopes, 0).len(), 2, "both whole");
        // Once the count is final, the room left is filled as before.
        assert_eq!(plan(&limits(15, None, 50), 0, 0, &scopes, 0)[0].size, 15);
    }

    #[test]
    fn max_errors_3_stops_releasing_at_the_4th_error() {
        let l = limits(10, Some(RateLimit::parse("3", 0).unwrap().errors(100)), 5);
        let scopes = vec![ScopeLoad {
            pending: vec![(LINUX, 50)],
            active_tasks: 0,
        }];
        assert!(!plan(&l, 0, 3, &scopes, 0).is_empty(), "3 errors are allowed");
        assert!(plan(&l, 0, 4, &scopes, 0).is_empty(), "the 4th stops the rollout");
        assert!(halted(&l, 4) && !halted(&l, 3));
    }

    #[test]
    fn ten_percent_of_50_stops_releasing_at_the_6th_error() {
        let threshold = RateLimit::parse("10%", 0).unwrap().errors(50);
        let l = limits(10, Some(threshold), 5);
        assert!(!halted(&l, 5));
        assert!(halted(&l, 6));
    }

    /// A whole rollout, simulated: each step either releases what the plan
    /// allows or finishes one random in-flight target with a random outcome.
    fn simulate(targets: u64, concurrency: u64, threshold: Option<u64>, batch: u64, choices: &[(u8, bool)]) {
        let l = Limits {
            concurrency,
            error_threshold: threshold,
            batch_size: batch,
            max_tasks_per_scope: 1_000,
            whole_batches: false,
        };
        let mut pending = targets;
        let mut in_flight: Vec<u64> = Vec::new(); // batch sizes
        let (mut ok, mut failed, mut terminated) = (0u64, 0u64, 0u64);
        let mut choices = choices.iter().cycle();
        for _ in 0..10_000 {
            let released = plan(
                &l,
                in_flight.iter().sum(),
                failed,
                &[ScopeLoad {
                    pending: vec![(LINUX, pending)],
                    active_tasks: 0,
                }],
                0,
            );
            for r in &released {
                pending -= r.size;
                in_flight.push(r.size);
            }
            let flying: u64 = in_flight.iter().sum();
            assert!(flying <= concurrency, "in flight {flying} over {concurrency}");
            if halted(&l, failed) {
                assert!(released.is_empty(), "nothing is released past the threshold");
                terminated += pending;
                pending = 0;
            }
            if in_flight.is_empty() {
                break;
            }
            let (pick, fails) = *choices.next().unwrap();
            let index = pick as usize % in_flight.len();
            in_flight[index] -= 1;
            if in_flight[index] == 0 {
                in_flight.remove(index);
            }
            if fails {
                failed += 1
            } else {
                ok += 1
            }
            assert_eq!(
                ok + failed + terminated + pending + in_flight.iter().sum::<u64>(),
                targets,
                "counters add up"
            );
        }
        assert_eq!(ok + failed + terminated, targets, "every target ends");
        if let Some(threshold) = threshold {
            // In-flight batches may still fail after the threshold, but no
            // batch was released after it was passed.
            assert!(terminated == 0 || failed > threshold);
        }
    }

    proptest! {
        #[test]
        fn rollouts_respect_concurrency_and_thresholds_in_any_completion_order(
            targets in 1u64..300,
            concurrency in 1u64..80,
            threshold in proptest::option::of(0u64..20),
            batch in 1u64..=50,
            choices in proptest::collection::vec((any::<u8>(), proptest::bool::weighted(0.2)), 1..64),
        ) {
            simulate(targets, concurrency, threshold, batch, &choices);
        }
    }
}
