//! When schedules run: their run times (a cron expression in a time zone,
//! or one time), which of the run times that passed are due and which were
//! missed, and the checks of a schedule's own fields. Pure: the store and
//! the loop that starts the runs are in [`crate::scheduler`].

use std::str::FromStr as _;

use chrono::{DateTime, TimeZone as _, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds};
use muster_proto::v1::{AfterWindow, ScheduleSpec, WindowEnd};

/// How late a run of a schedule without a window may still start; later,
/// it is MISSED.
pub const START_GRACE_MS: i64 = 300_000;
/// The longest window: a week.
pub const MAX_WINDOW_SECONDS: u32 = 604_800;
/// Most run times recorded MISSED at once; older ones are counted in the
/// reason of the newest.
pub const MAX_MISSED: usize = 100;

/// When a schedule's runs start.
#[derive(Debug, Clone)]
pub enum Trigger {
    /// Every match of a cron expression, in a time zone.
    Cron(Box<Cron>, Tz),
    /// Once.
    At(i64),
}

impl Trigger {
    /// The trigger of a spec, or the error naming the field and the rule.
    pub fn of(spec: &ScheduleSpec) -> Result<Self, String> {
        let zone = if spec.time_zone.is_empty() {
            Tz::UTC
        } else {
            Tz::from_str(&spec.time_zone).map_err(|_| {
                format!(
                    "time_zone: '{}' is not an IANA time zone name such as Europe/Berlin or UTC",
                    muster_common::domain::clip(&spec.time_zone)
                )
            })?
        };
        match (spec.cron.trim().is_empty(), &spec.at) {
            (false, Some(_)) => Err("cron, at: give one of them, not both".into()),
            (true, None) => Err("cron, at: one of them is required (when the runs start)".into()),
            (true, Some(at)) => {
                if !spec.time_zone.is_empty() && spec.time_zone != "UTC" {
                    return Err("time_zone: applies to cron only; `at` is an instant (give it with its offset)".into());
                }
                Ok(Self::At(at.seconds * 1000 + i64::from(at.nanos) / 1_000_000))
            }
            (false, None) => {
                let cron = CronParser::builder()
                    .seconds(Seconds::Optional)
                    .build()
                    .parse(spec.cron.trim())
                    .map_err(|error| {
                        format!(
                            "cron: '{}' is not a cron expression of five fields (minute hour day-of-month month \
                             day-of-week) or six (seconds first): {error}",
                            muster_common::domain::clip(&spec.cron)
                        )
                    })?;
                Ok(Self::Cron(Box::new(cron), zone))
            }
        }
    }

    /// The first run time strictly after `after_ms`; none when there is no
    /// other.
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        match self {
            Self::At(at) => (*at > after_ms).then_some(*at),
            Self::Cron(cron, zone) => {
                let after = zone.timestamp_millis_opt(after_ms).single()?;
                let next = cron.find_next_occurrence(&after, false).ok()?;
                Some(next.with_timezone(&Utc).timestamp_millis())
            }
        }
    }

    /// The newest run time at or before `at_ms` (`inclusive`), or strictly
    /// before it.
    pub fn previous(&self, at_ms: i64, inclusive: bool) -> Option<i64> {
        match self {
            Self::At(at) => (*at < at_ms || (inclusive && *at == at_ms)).then_some(*at),
            Self::Cron(cron, zone) => {
                let at = zone.timestamp_millis_opt(at_ms).single()?;
                let previous = cron.find_previous_occurrence(&at, inclusive).ok()?;
                Some(previous.with_timezone(&Utc).timestamp_millis())
            }
        }
    }

    /// Whether a later run time exists after the first (a window may wait
    /// for the next one).
    pub fn repeats(&self) -> bool {
        matches!(self, Self::Cron(..))
    }
}

/// What a schedule does at `now`, from the first run time it has not
/// handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// Run times whose window (or start grace) passed unrun, oldest first:
    /// the newest [`MAX_MISSED`].
    pub missed: Vec<i64>,
    /// More run times were missed before those listed.
    pub more_missed: bool,
    /// The run time to start now, when its window is still open.
    pub run: Option<i64>,
    /// The run time after `now`, when there is one.
    pub next: Option<i64>,
}

/// How long after its run time a run may still start: its window, or
/// [`START_GRACE_MS`] without one.
pub fn start_deadline_ms(window_seconds: u32) -> i64 {
    if window_seconds == 0 {
        START_GRACE_MS
    } else {
        i64::from(window_seconds) * 1000
    }
}

/// The run times from `first` (an unhandled run time) up to `now`: the
/// newest starts if it may still start, every other one was missed. Walked
/// back from `now`, so a long outage of a frequent cron costs no more than
/// a short one.
pub fn due(trigger: &Trigger, first: i64, now: i64, window_seconds: u32) -> Due {
    let mut passed = Vec::new();
    let mut at = trigger.previous(now, true).filter(|t| *t >= first);
    while let Some(time) = at {
        if passed.len() == MAX_MISSED + 1 {
            break;
        }
        passed.push(time);
        at = trigger.previous(time, false).filter(|t| *t >= first);
    }
    passed.reverse();
    let mut more_missed = at.is_some();
    let run = passed
        .last()
        .copied()
        .filter(|t| now < t + start_deadline_ms(window_seconds));
    if run.is_some() {
        passed.pop();
    } else if passed.len() > MAX_MISSED {
        passed.remove(0);
        more_missed = true;
    }
    Due {
        missed: passed,
        more_missed,
        run,
        next: trigger.next_after(now),
    }
}

/// The errors of a schedule's own fields (the campaign is checked as a
/// submitted one is), each "field: rule".
pub fn check(spec: &ScheduleSpec, now_ms: i64) -> Vec<String> {
    let mut errors = Vec::new();
    if !crate::validate::is_short_name(&spec.name) {
        errors.push(format!(
            "name: '{}' must be {}",
            muster_common::domain::clip(&spec.name),
            crate::validate::SHORT_NAME_RULE
        ));
    }
    if spec.description.chars().count() > 1024 {
        errors.push("description: at most 1024 characters".into());
    }
    if spec.campaign.is_none() {
        errors.push("campaign: is required (the campaign each run starts)".into());
    }
    if spec.campaign.as_ref().is_some_and(|c| !c.client_token.is_empty()) {
        errors.push("campaign.client_token: must be empty; each run gets its own".into());
    }
    if spec
        .campaign
        .as_ref()
        .and_then(|c| c.access.as_ref())
        .is_some_and(|a| !a.external_id.is_empty())
    {
        // A schedule is stored and shown whole: a secret has no place in it.
        errors.push(
            "campaign.access.external_id: must be empty; a schedule's runs get the target accounts' ExternalIds \
             from the controller's [access] configuration"
                .into(),
        );
    }
    if spec.window_seconds > MAX_WINDOW_SECONDS {
        errors.push(format!(
            "window_seconds: {}; at most {MAX_WINDOW_SECONDS} (a week)",
            spec.window_seconds
        ));
    }
    if WindowEnd::try_from(spec.on_window_end).is_err() {
        errors.push(format!("on_window_end: {} is not a WindowEnd", spec.on_window_end));
    }
    let after = AfterWindow::try_from(spec.after_window);
    if after.is_err() {
        errors.push(format!("after_window: {} is not an AfterWindow", spec.after_window));
    }
    if spec.window_seconds == 0 && (spec.on_window_end != 0 || spec.after_window != 0) {
        errors.push("on_window_end, after_window: need a window (window_seconds)".into());
    }
    match Trigger::of(spec) {
        Err(error) => errors.push(error),
        Ok(trigger) => {
            if after == Ok(AfterWindow::NextWindow) && !trigger.repeats() {
                errors.push(
                    "after_window: next_window needs a cron (a schedule `at` one time has no next window)".into(),
                );
            }
            match trigger {
                Trigger::At(at) if at <= now_ms => errors.push(format!("at: {} has passed", shown(at))),
                Trigger::At(_) => {}
                Trigger::Cron(..) => check_cron_spacing(&trigger, spec.window_seconds, now_ms, &mut errors),
            }
        }
    }
    errors
}

/// A cron must match again (and, with a window, not before the window
/// closes): checked over its next few run times.
fn check_cron_spacing(trigger: &Trigger, window_seconds: u32, now_ms: i64, errors: &mut Vec<String>) {
    let Some(first) = trigger.next_after(now_ms) else {
        errors.push("cron: never matches a future time".into());
        return;
    };
    let window_ms = i64::from(window_seconds) * 1000;
    let mut at = first;
    for _ in 0..16 {
        let Some(next) = trigger.next_after(at) else { break };
        if window_ms > 0 && next - at < window_ms {
            errors.push(format!(
                "window_seconds: {window_seconds} is longer than the {} s between the run times {} and {}; \
                 windows of one schedule must not overlap",
                (next - at) / 1000,
                shown(at),
                shown(next)
            ));
            return;
        }
        at = next;
    }
}

/// A time as messages show it: RFC 3339 in UTC, to the second.
pub fn shown(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| ms.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(text: &str) -> i64 {
        DateTime::parse_from_rfc3339(text).unwrap().timestamp_millis()
    }

    fn cron(expr: &str, zone: &str) -> ScheduleSpec {
        ScheduleSpec {
            name: "patch".into(),
            campaign: Some(Default::default()),
            cron: expr.into(),
            time_zone: zone.into(),
            ..Default::default()
        }
    }

    #[test]
    fn cron_runs_follow_the_time_zone_across_daylight_saving() {
        // Tuesdays 02:00 in Berlin: UTC+1 in winter, UTC+2 in summer.
        let trigger = Trigger::of(&cron("0 2 * * TUE", "Europe/Berlin")).unwrap();
        let winter = trigger.next_after(ms("2026-12-01T00:00:00Z")).unwrap();
        assert_eq!(shown(winter), "2026-12-01T01:00:00Z");
        let summer = trigger.next_after(ms("2026-07-01T00:00:00Z")).unwrap();
        assert_eq!(shown(summer), "2026-07-07T00:00:00Z");
        let seconds = Trigger::of(&cron("*/10 * * * * *", "")).unwrap();
        assert_eq!(
            shown(seconds.next_after(ms("2026-12-01T00:00:01Z")).unwrap()),
            "2026-12-01T00:00:10Z"
        );
    }

    #[test]
    fn the_newest_open_run_starts_and_older_ones_are_missed() {
        let trigger = Trigger::of(&cron("0 * * * *", "UTC")).unwrap();
        // Down from 00:59 to 03:20; windows of 30 minutes.
        let due = due(&trigger, ms("2026-12-01T01:00:00Z"), ms("2026-12-01T03:20:00Z"), 1800);
        let missed: Vec<String> = due.missed.iter().map(|t| shown(*t)).collect();
        assert_eq!(missed, ["2026-12-01T01:00:00Z", "2026-12-01T02:00:00Z"]);
        assert_eq!(due.run.map(shown).as_deref(), Some("2026-12-01T03:00:00Z"));
        assert_eq!(due.next.map(shown).as_deref(), Some("2026-12-01T04:00:00Z"));
        // At 03:30 the 03:00 window has closed: it is missed too.
        let late = super::due(&trigger, ms("2026-12-01T03:00:00Z"), ms("2026-12-01T03:30:00Z"), 1800);
        assert_eq!((late.missed.len(), late.run), (1, None));
        // Nothing due before the first run time.
        let early = super::due(&trigger, ms("2026-12-01T03:00:00Z"), ms("2026-12-01T02:59:59Z"), 1800);
        assert_eq!(
            (early.missed.len(), early.run, early.next),
            (0, None, Some(ms("2026-12-01T03:00:00Z")))
        );
    }

    #[test]
    fn without_a_window_a_run_may_start_within_the_grace_only() {
        let at = ms("2026-12-01T02:00:00Z");
        let trigger = Trigger::At(at);
        assert_eq!(due(&trigger, at, at + START_GRACE_MS - 1, 0).run, Some(at));
        let late = due(&trigger, at, at + START_GRACE_MS, 0);
        assert_eq!((late.missed, late.run, late.next), (vec![at], None, None));
    }

    #[test]
    fn a_long_outage_of_a_frequent_cron_is_counted_not_listed() {
        let trigger = Trigger::of(&cron("* * * * * *", "")).unwrap();
        let start = ms("2026-12-01T00:00:00Z");
        let due = due(&trigger, start, start + 86_400_000, 10);
        assert_eq!(due.missed.len(), MAX_MISSED);
        assert!(due.more_missed);
        assert_eq!(due.missed.last(), Some(&(start + 86_399_000)));
        assert_eq!(due.run, Some(start + 86_400_000));
    }

    #[test]
    fn every_bad_field_is_named() {
        let now = ms("2026-12-01T00:00:00Z");
        let mut spec = cron("0 2 * * TUE", "Mars/Olympus");
        spec.name = "no spaces".into();
        let errors = check(&spec, now);
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("name: 'no spaces' must be 1 to 64")),
            "{errors:?}"
        );
        assert!(
            errors.iter().any(|e| e.starts_with("time_zone: 'Mars/Olympus'")),
            "{errors:?}"
        );

        let bad_cron = check(&cron("61 * * * *", ""), now);
        assert!(
            bad_cron[0].starts_with("cron: '61 * * * *' is not a cron expression"),
            "{bad_cron:?}"
        );

        let mut overlapping = cron("0 * * * *", "");
        overlapping.window_seconds = 7200;
        let errors = check(&overlapping, now);
        assert!(
            errors[0].starts_with("window_seconds: 7200 is longer than the 3600 s"),
            "{errors:?}"
        );

        let mut once = cron("", "");
        once.at = Some(prost_types::Timestamp {
            seconds: now / 1000 - 1,
            nanos: 0,
        });
        once.window_seconds = 60;
        once.after_window = AfterWindow::NextWindow as i32;
        let errors = check(&once, now);
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("after_window: next_window needs a cron")),
            "{errors:?}"
        );
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("at: 2026-11-30T23:59:59Z has passed")),
            "{errors:?}"
        );

        let mut both = cron("0 2 * * *", "");
        both.at = Some(prost_types::Timestamp {
            seconds: now / 1000 + 60,
            nanos: 0,
        });
        assert_eq!(check(&both, now), ["cron, at: give one of them, not both"]);

        let mut no_window = cron("0 2 * * *", "");
        no_window.on_window_end = WindowEnd::Cancel as i32;
        assert_eq!(
            check(&no_window, now),
            ["on_window_end, after_window: need a window (window_seconds)"]
        );

        let mut token = cron("0 2 * * *", "");
        token.campaign.as_mut().unwrap().client_token = "t".into();
        assert_eq!(
            check(&token, now),
            ["campaign.client_token: must be empty; each run gets its own"]
        );
        assert!(check(&cron("0 2 * * TUE", "Europe/Berlin"), now).is_empty());
    }
}
