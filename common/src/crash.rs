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
//!
//! `MUSTER_LOSE_AT=<point>@<n>[,<point>@<n>...]` loses answers: a call that
//! passes [`answer_lost`] after its effect, on that point's n-th pass, tells
//! its caller UNAVAILABLE, as a connection cut after the server committed
//! would. The process goes on; only that answer is lost.

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
static LOSE: OnceLock<Vec<Armed>> = OnceLock::new();

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

/// The points `MUSTER_LOSE_AT` names, parsed once; an entry that does not
/// parse is logged and left out.
fn lose_points() -> &'static [Armed] {
    LOSE.get_or_init(|| {
        let Ok(value) = std::env::var("MUSTER_LOSE_AT") else {
            return Vec::new();
        };
        value
            .split(',')
            .filter_map(|entry| match parse(entry) {
                Some((point, nth)) => {
                    tracing::warn!(point, nth, "MUSTER_LOSE_AT armed: this process will lose that answer");
                    Some(Armed {
                        point,
                        nth,
                        passed: AtomicU64::new(0),
                    })
                }
                None => {
                    tracing::error!(entry, "MUSTER_LOSE_AT: expected <point>@<n> with n >= 1; ignored");
                    None
                }
            })
            .collect()
    })
}

/// Passes the point `name`, where a call has taken effect and is about to
/// answer: true if `MUSTER_LOSE_AT` names it and this is its n-th pass, when
/// the caller must answer UNAVAILABLE instead, as if the connection had been
/// cut after the effect. Unset, false at the cost of one atomic load.
pub fn answer_lost(name: &str) -> bool {
    // Every entry counts its passes, so a point named twice loses both.
    let lost = lose_points()
        .iter()
        .map(|armed| reached(Some(armed), name))
        .fold(None, Option::or);
    if let Some(nth) = lost {
        eprintln!("muster: lose point {name} reached on pass {nth}: the answer is lost");
    }
    lost.is_some()
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
