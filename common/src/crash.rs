//! Crash points: the process aborts at a named line, for fault tests that
//! must die at a precise moment (right after a SendCommand was accepted,
//! right after a store commit), which a signal from outside cannot aim at.
//!
//! `MUSTER_CRASH_AT=<point>@<n>` aborts the process the n-th time it passes
//! `point` (n from 1). Unset, a point costs one atomic load. The abort is a
//! SIGABRT: no destructors, no flushes, like SIGKILL. Production never sets
//! the variable; the points are named in the code where they are passed.
//!
//! `MUSTER_STOP_AT=<point>@<n>` instead stops the process there with
//! SIGSTOP, as a pause of the whole host would (a long GC, a frozen VM):
//! everything in it stands still until a SIGCONT from outside.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The armed point and its count, parsed once.
struct Armed {
    point: String,
    nth: u64,
    passed: AtomicU64,
}

static ARMED: OnceLock<Option<Armed>> = OnceLock::new();
static STOP: OnceLock<Option<Armed>> = OnceLock::new();

/// Parses `point@n`; `None` for anything else (an unset variable, a typo).
fn parse(value: &str) -> Option<(String, u64)> {
    let (point, nth) = value.trim().rsplit_once('@')?;
    let nth: u64 = nth.parse().ok().filter(|n| *n >= 1)?;
    (!point.is_empty()).then(|| (point.to_owned(), nth))
}

fn arm(cell: &'static OnceLock<Option<Armed>>, variable: &str, what: &str) -> Option<&'static Armed> {
    cell.get_or_init(|| {
        let value = std::env::var(variable).ok()?;
        let Some((point, nth)) = parse(&value) else {
            tracing::error!(value, "{variable}: expected <point>@<n> with n >= 1; ignored");
            return None;
        };
        tracing::warn!(point, nth, "{variable} armed: this process will {what} there");
        Some(Armed {
            point,
            nth,
            passed: AtomicU64::new(0),
        })
    })
    .as_ref()
}

/// The pass number if this is the armed point's n-th pass.
fn reached(armed: Option<&'static Armed>, name: &str) -> Option<u64> {
    armed
        .filter(|armed| armed.point == name && armed.passed.fetch_add(1, Ordering::SeqCst) + 1 == armed.nth)
        .map(|armed| armed.nth)
}

/// Passes the point `name`: aborts the process if it is the point armed by
/// `MUSTER_CRASH_AT` and this is its n-th pass; stops it (SIGSTOP) if it is
/// the one armed by `MUSTER_STOP_AT`.
pub fn point(name: &str) {
    if let Some(nth) = reached(arm(&ARMED, "MUSTER_CRASH_AT", "abort"), name) {
        eprintln!("muster: crash point {name} reached on pass {nth}: aborting");
        std::process::abort();
    }
    if let Some(nth) = reached(arm(&STOP, "MUSTER_STOP_AT", "stop (SIGSTOP)"), name) {
        eprintln!("muster: stop point {name} reached on pass {nth}: stopping until SIGCONT");
        let _ = std::process::Command::new("kill")
            .args(["-STOP", &std::process::id().to_string()])
            .status();
        eprintln!("muster: stop point {name}: continued");
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
