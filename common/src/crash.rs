//! Crash points: the process aborts at a named line, for fault tests that
//! must die at a precise moment (right after a SendCommand was accepted,
//! right after a store commit), which a signal from outside cannot aim at.
//!
//! `MUSTER_CRASH_AT=<point>@<n>` aborts the process the n-th time it passes
//! `point` (n from 1). Unset, a point costs one atomic load. The abort is a
//! SIGABRT: no destructors, no flushes, like SIGKILL. Production never sets
//! the variable; the points are named in the code where they are passed.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The armed point and its count, parsed once.
struct Armed {
    point: String,
    nth: u64,
    passed: AtomicU64,
}

static ARMED: OnceLock<Option<Armed>> = OnceLock::new();

/// Parses `point@n`; `None` for anything else (an unset variable, a typo).
fn parse(value: &str) -> Option<(String, u64)> {
    let (point, nth) = value.trim().rsplit_once('@')?;
    let nth: u64 = nth.parse().ok().filter(|n| *n >= 1)?;
    (!point.is_empty()).then(|| (point.to_owned(), nth))
}

fn armed() -> Option<&'static Armed> {
    ARMED
        .get_or_init(|| {
            let value = std::env::var("MUSTER_CRASH_AT").ok()?;
            let Some((point, nth)) = parse(&value) else {
                tracing::error!(value, "MUSTER_CRASH_AT: expected <point>@<n> with n >= 1; ignored");
                return None;
            };
            tracing::warn!(
                point,
                nth,
                "crash point armed (MUSTER_CRASH_AT): this process will abort there"
            );
            Some(Armed {
                point,
                nth,
                passed: AtomicU64::new(0),
            })
        })
        .as_ref()
}

/// Passes the crash point `name`: aborts the process if it is the armed
/// point and this is its n-th pass.
pub fn point(name: &str) {
    let Some(armed) = armed() else { return };
    if armed.point == name && armed.passed.fetch_add(1, Ordering::SeqCst) + 1 == armed.nth {
        eprintln!("muster: crash point {name} reached on pass {}: aborting", armed.nth);
        std::process::abort();
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn a_point_and_its_pass() {
        assert_eq!(parse("store.after_commit@7"), Some(("store.after_commit".into(), 7)));
        assert_eq!(parse("a@b@2"), Some(("a@b".into(), 2)));
    }

    #[test]
    fn anything_else_arms_nothing() {
        for value in ["", "store.after_commit", "@3", "x@0", "x@-1", "x@many"] {
            assert_eq!(parse(value), None, "{value:?}");
        }
    }
}
