//! How things look: colour only where it helps (a terminal, no NO_COLOR),
//! tables for people, JSON and CSV for scripts.

use std::io::IsTerminal as _;

use comfy_table::{Attribute, Cell, Color as CellColor, ContentArrangement, Table, presets};
use muster_proto::v1::{Campaign, CampaignState, ScopeSummary, StatusCounters, Target, TargetStatus, TimeoutKind};
use owo_colors::OwoColorize as _;
use serde_json::{Value, json};

use crate::args::Color;

/// Colour and layout choices for this run.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    /// Use colour.
    pub color: bool,
    /// Stdout is a terminal.
    pub terminal: bool,
}

impl Style {
    /// Decides from the flag, stdout and NO_COLOR.
    pub fn detect(choice: Color) -> Self {
        let terminal = std::io::stdout().is_terminal();
        let color = match choice {
            Color::Always => true,
            Color::Never => false,
            Color::Auto => terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        };
        Self { color, terminal }
    }

    /// A status word in its colour.
    pub fn status(&self, name: &str) -> String {
        if !self.color {
            return name.to_owned();
        }
        match name {
            "success" | "succeeded" | "planned" => name.green().to_string(),
            "failed" | "error" | "timed_out" | "undeliverable" | "completed_with_errors" => name.red().to_string(),
            "terminated" | "cancelled" | "cancelling" => name.yellow().to_string(),
            "skipped" => name.dimmed().to_string(),
            _ => name.cyan().to_string(),
        }
    }

    /// Emphasis.
    pub fn bold(&self, text: &str) -> String {
        if self.color {
            text.bold().to_string()
        } else {
            text.to_owned()
        }
    }

    /// De-emphasis.
    pub fn dim(&self, text: &str) -> String {
        if self.color {
            text.dimmed().to_string()
        } else {
            text.to_owned()
        }
    }

    /// Something wrong.
    pub fn red(&self, text: &str) -> String {
        if self.color {
            text.red().to_string()
        } else {
            text.to_owned()
        }
    }

    /// A table in the house style. Styling goes through comfy-table, which
    /// knows that escape codes take no width.
    pub fn table(&self, header: &[&str]) -> Table {
        let mut table = Table::new();
        table.load_preset(if self.terminal {
            presets::UTF8_FULL_CONDENSED
        } else {
            presets::NOTHING
        });
        table.set_content_arrangement(ContentArrangement::Dynamic);
        if self.color {
            table.enforce_styling();
        } else {
            table.force_no_tty();
        }
        table.set_header(header.iter().map(|h| Cell::new(h).add_attribute(Attribute::Bold)));
        table
    }

    /// A table cell for a status word, in its colour.
    pub fn status_cell(&self, name: &str) -> Cell {
        let cell = Cell::new(name);
        match name {
            "success" | "succeeded" | "planned" => cell.fg(CellColor::Green),
            "failed" | "error" | "timed_out" | "undeliverable" | "completed_with_errors" => cell.fg(CellColor::Red),
            "terminated" | "cancelled" | "cancelling" => cell.fg(CellColor::Yellow),
            "skipped" => cell.fg(CellColor::DarkGrey),
            _ => cell.fg(CellColor::Cyan),
        }
    }
}

/// The name of a target status.
pub fn target_status(status: i32) -> &'static str {
    TargetStatus::try_from(status)
        .unwrap_or(TargetStatus::Unspecified)
        .short_name()
}

/// The name of a campaign state.
pub fn campaign_state(state: i32) -> &'static str {
    CampaignState::try_from(state)
        .unwrap_or(CampaignState::Unspecified)
        .short_name()
}

/// An RFC 3339 time, or "".
pub fn time(ts: &Option<prost_types::Timestamp>) -> String {
    ts.as_ref()
        .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// A short duration like "1m12s".
pub fn duration(seconds: f64) -> String {
    if !seconds.is_finite() || seconds < 0.0 {
        return "-".into();
    }
    let s = seconds.round() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// Counters as JSON.
pub fn counters_json(c: &StatusCounters) -> Value {
    json!({
        "total": c.total, "pending": c.pending, "queued": c.queued, "running": c.running,
        "success": c.success, "failed": c.failed, "timed_out": c.timed_out, "cancelled": c.cancelled,
        "undeliverable": c.undeliverable, "terminated": c.terminated, "skipped": c.skipped, "error": c.error,
    })
}

/// Targets that have ended.
pub fn done(c: &StatusCounters) -> u64 {
    c.total - c.pending - c.queued - c.running
}

/// A scope as JSON.
pub fn scope_json(s: &ScopeSummary) -> Value {
    json!({
        "account_id": s.account_id,
        "region": s.region,
        "state": muster_proto::v1::ScopeState::try_from(s.state).map(|x| x.as_str_name().trim_start_matches("SCOPE_STATE_").to_ascii_lowercase()).unwrap_or_default(),
        "error": s.error,
        "managed": s.managed,
        "offline": s.offline,
        "unmanaged": s.unmanaged,
        "counters": counters_json(&s.counters.unwrap_or_default()),
    })
}

/// A campaign as JSON.
pub fn campaign_json(c: &Campaign) -> Value {
    let spec = c.spec.clone().unwrap_or_default();
    json!({
        "id": c.id,
        "name": spec.name,
        "state": campaign_state(c.state),
        "state_reason": c.state_reason,
        "dry_run": c.dry_run,
        "created_at": time(&c.created_at),
        "started_at": time(&c.started_at),
        "finished_at": time(&c.finished_at),
        "submitted_by": c.submitted_by,
        "spec_sha256": c.spec_sha256,
        "labels": spec.labels,
        "counters": counters_json(&c.counters.unwrap_or_default()),
        "errors": c.errors,
        "error_threshold": c.error_threshold,
        "concurrency_limit": c.concurrency_limit,
        "export_url": c.export.as_ref().map(|e| e.url.clone()).unwrap_or_default(),
        "scopes": c.scopes.iter().map(scope_json).collect::<Vec<_>>(),
        "rerun_of": c.rerun_of,
        "reruns": c.reruns,
        "window": c.window.as_ref().map(|w| json!({
            "schedule": w.schedule,
            "schedule_version": w.schedule_version,
            "opened_at": time(&w.opened_at),
            "closes_at": time(&w.closes_at),
            "on_window_end": w.on_window_end,
            "after_window": w.after_window,
        })),
        "approval": c.approval.as_ref().map(|a| json!({
            "rule": a.rule,
            "reason": a.reason,
            "expires_at": time(&a.expires_at),
            "decided_by": a.decided_by,
            "decided_at": time(&a.decided_at),
            "approved": a.approved,
        })),
        "stages": c.stages.iter().map(|s| json!({
            "name": s.name,
            "phase": muster_proto::v1::StagePhase::try_from(s.phase).map_or("unspecified", |p| p.short_name()),
            "counters": counters_json(&s.counters.unwrap_or_default()),
            "errors": s.errors,
            "error_threshold": s.error_threshold,
            "concurrency_limit": s.concurrency_limit,
            "bake_until": time(&s.bake_until),
        })).collect::<Vec<_>>(),
    })
}

/// A target as JSON.
pub fn target_json(t: &Target) -> Value {
    json!({
        "campaign_id": t.campaign_id,
        "stage": t.stage,
        "account_id": t.account_id,
        "region": t.region,
        "instance_id": t.instance_id,
        "name": t.name,
        "platform": platform(t.platform),
        "status": target_status(t.status),
        "timeout_kind": match TimeoutKind::try_from(t.timeout_kind).unwrap_or(TimeoutKind::Unspecified) {
            TimeoutKind::Delivery => "delivery",
            TimeoutKind::Execution => "execution",
            TimeoutKind::Unspecified => "",
        },
        "exit_code": t.exit_code,
        "reason": t.reason,
        "command_id": t.command_id,
        "document_name": t.document_name,
        "dispatched_at": time(&t.dispatched_at),
        "started_at": time(&t.started_at),
        "finished_at": time(&t.finished_at),
        "steps": t.steps.iter().map(|s| json!({
            "name": s.name, "status": s.status, "exit_code": s.exit_code,
            "stdout": s.stdout, "stderr": s.stderr,
            "stdout_truncated": s.stdout_truncated, "stderr_truncated": s.stderr_truncated,
            "stdout_url": s.stdout_url, "stderr_url": s.stderr_url,
        })).collect::<Vec<_>>(),
    })
}

/// A platform's name.
pub fn platform(p: i32) -> &'static str {
    match muster_proto::v1::Platform::try_from(p).unwrap_or(muster_proto::v1::Platform::Unspecified) {
        muster_proto::v1::Platform::Linux => "linux",
        muster_proto::v1::Platform::Windows => "windows",
        muster_proto::v1::Platform::Macos => "macos",
        muster_proto::v1::Platform::Unspecified => "",
    }
}

/// CSV-quotes a field.
pub fn csv(field: &str) -> String {
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_owned()
    }
}

/// Prints a JSON value, pretty.
pub fn print_json(value: &Value) {
    println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_only_when_needed() {
        assert_eq!(csv("plain"), "plain");
        assert_eq!(csv("a,b"), "\"a,b\"");
        assert_eq!(csv("say \"hi\""), "\"say \"\"hi\"\"\"");
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(duration(5.2), "5s");
        assert_eq!(duration(72.0), "1m12s");
        assert_eq!(duration(3725.0), "1h02m");
        assert_eq!(duration(f64::INFINITY), "-");
    }

    #[test]
    fn no_colour_when_asked() {
        let style = Style {
            color: false,
            terminal: false,
        };
        assert_eq!(style.status("failed"), "failed");
    }
}
