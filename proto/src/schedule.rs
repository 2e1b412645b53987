//! A schedule in words, as the CLI and the console show it.

use crate::v1::{AfterWindow, RunOutcome, ScheduleSpec, WindowEnd};

impl ScheduleSpec {
    /// When its runs start: `cron "0 2 * * TUE" Europe/Berlin`, or `once at`
    /// its instant as `time` writes it.
    pub fn runs_in_words(&self, time: impl FnOnce(Option<&prost_types::Timestamp>) -> String) -> String {
        if self.cron.is_empty() {
            format!("once at {}", time(self.at.as_ref()))
        } else {
            let zone = if self.time_zone.is_empty() {
                "UTC"
            } else {
                &self.time_zone
            };
            format!("cron \"{}\" {zone}", self.cron)
        }
    }

    /// Its maintenance window: "none (runs to its end)", or how long it is
    /// and what becomes of the batches in flight and the targets not sent
    /// when it closes: "4h; then in-flight batches finish, targets not sent
    /// end terminated".
    pub fn window_in_words(&self) -> String {
        if self.window_seconds == 0 {
            return "none (runs to its end)".into();
        }
        let in_flight = if self.on_window_end == WindowEnd::Cancel as i32 {
            "cancelled"
        } else {
            "finish"
        };
        let rest = if self.after_window == AfterWindow::NextWindow as i32 {
            "wait for the next window"
        } else {
            "end terminated"
        };
        format!(
            "{}; then in-flight batches {in_flight}, targets not sent {rest}",
            length(self.window_seconds)
        )
    }
}

/// A window's length: "4h", "1h 30m", "7d", "90s" is "1m 30s".
fn length(seconds: u32) -> String {
    let parts = [
        (seconds / 86_400, "d"),
        (seconds / 3_600 % 24, "h"),
        (seconds / 60 % 60, "m"),
        (seconds % 60, "s"),
    ];
    let said: Vec<String> = parts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect();
    said.join(" ")
}

impl RunOutcome {
    /// The short lowercase name people see: "started", "missed".
    pub fn short_name(self) -> &'static str {
        match self {
            RunOutcome::Unspecified => "",
            RunOutcome::Started => "started",
            RunOutcome::Resumed => "resumed",
            RunOutcome::Missed => "missed",
            RunOutcome::Skipped => "skipped",
            RunOutcome::Refused => "refused",
            RunOutcome::Paused => "paused",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schedule_is_said_as_people_read_it() {
        let mut spec = ScheduleSpec {
            cron: "0 2 * * TUE".into(),
            time_zone: "Europe/Berlin".into(),
            window_seconds: 4 * 3_600,
            on_window_end: WindowEnd::Finish as i32,
            after_window: AfterWindow::NextWindow as i32,
            ..Default::default()
        };
        assert_eq!(
            spec.runs_in_words(|_| unreachable!()),
            "cron \"0 2 * * TUE\" Europe/Berlin"
        );
        assert_eq!(
            spec.window_in_words(),
            "4h; then in-flight batches finish, targets not sent wait for the next window"
        );
        spec.cron.clear();
        spec.at = Some(prost_types::Timestamp { seconds: 7, nanos: 0 });
        assert_eq!(spec.runs_in_words(|at| at.unwrap().seconds.to_string()), "once at 7");
        spec.window_seconds = 5_400;
        spec.on_window_end = WindowEnd::Cancel as i32;
        spec.after_window = AfterWindow::End as i32;
        assert_eq!(
            spec.window_in_words(),
            "1h 30m; then in-flight batches cancelled, targets not sent end terminated"
        );
        spec.window_seconds = 0;
        assert_eq!(spec.window_in_words(), "none (runs to its end)");
        assert_eq!(length(604_800), "7d");
        assert_eq!(length(90), "1m 30s");
        assert_eq!(RunOutcome::Refused.short_name(), "refused");
    }
}
