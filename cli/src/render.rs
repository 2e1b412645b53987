//! How things look: colour only where it helps (a terminal, no NO_COLOR),
//! tables for people, JSON and CSV for scripts.

use std::io::IsTerminal as _;

use comfy_table::{Attribute, Cell, Color as CellColor, ContentArrangement, Table, presets};
use muster_proto::v1::{CampaignState, StatusCounters, TargetStatus, TimeoutKind};
use owo_colors::OwoColorize as _;
use serde_json::Value;

use crate::args::{Color, Output};

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

/// What a command runs, in one line for people: a document with its
/// version and parameters, or a script's first line per platform and how
/// many more there are.
pub fn command_line(command: &muster_proto::v1::Command) -> String {
    use muster_proto::v1::command::Kind;
    match &command.kind {
        Some(Kind::Document(d)) => {
            let mut line = d.name.clone();
            if !d.version.is_empty() {
                line.push_str(&format!(" (version {})", d.version));
            }
            for (name, values) in &d.parameters {
                line.push_str(&format!(" {name}={}", values.values.join(",")));
            }
            line
        }
        Some(Kind::Script(script)) => {
            let first = |platform: &str, lines: &[String]| {
                let mut kept = lines.iter().filter(|l| !l.trim().is_empty());
                kept.next().map(|line| {
                    let more = kept.count();
                    let line: String = line.trim().chars().take(60).collect();
                    match more {
                        0 => format!("{platform}: {line}"),
                        n => format!("{platform}: {line} (+{n} line{})", if n == 1 { "" } else { "s" }),
                    }
                })
            };
            [
                first("linux", &script.linux_lines),
                first("windows", &script.windows_lines),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join("; ")
        }
        None => String::new(),
    }
}

/// The line under a table that left out `folded` empty accounts/regions.
pub fn folded_line(folded: usize) -> Option<String> {
    let s = if folded == 1 { "" } else { "s" };
    (folded > 0).then(|| format!("{folded} more account{s}/region{s} matched no instance (-o wide lists them)"))
}

/// The line under a list that `--limit` cut short after `shown` rows.
pub fn limit_line(shown: usize) -> String {
    format!("the newest {shown} shown; there may be more (--limit N shows up to N)")
}

/// The notes of a table of accounts and regions (why a scope cannot run),
/// each said once: a row's note leaves out the row's own account and
/// region, and a note that several rows share is written once under the
/// table and marked `[1]`, `[2]`... in them, so a fleet-wide refusal reads
/// as one line instead of a wall of copies.
pub struct Notes {
    /// Each distinct note, in first-seen order.
    notes: Vec<Note>,
    /// Where each note is in `notes`: a table of thousands of scopes looks
    /// each row's note up once.
    index: std::collections::HashMap<String, usize>,
}

/// A distinct note of [`Notes`].
struct Note {
    text: String,
    /// How many rows have it.
    rows: usize,
    /// Its mark, `[1]`, `[2]`..., when rows share it.
    mark: Option<usize>,
}

impl Notes {
    /// Counts the notes of `(account, region, note)` rows; empty notes are
    /// none.
    pub fn of<'a>(rows: impl IntoIterator<Item = (&'a str, &'a str, &'a str)>) -> Self {
        let mut notes: Vec<Note> = Vec::new();
        let mut index: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
        for (account, region, note) in rows {
            if note.is_empty() {
                continue;
            }
            let text = Self::short(account, region, note);
            match index.get(&text) {
                Some(&i) => notes[i].rows += 1,
                None => {
                    index.insert(text.clone(), notes.len());
                    notes.push(Note {
                        text,
                        rows: 1,
                        mark: None,
                    });
                }
            }
        }
        let mut marks = 0;
        for note in notes.iter_mut().filter(|note| note.rows > 1) {
            marks += 1;
            note.mark = Some(marks);
        }
        Self { notes, index }
    }

    /// What a row's note cell says: its note, or the mark of a shared one.
    pub fn cell(&self, account: &str, region: &str, note: &str) -> String {
        if note.is_empty() {
            return String::new();
        }
        let note = Self::short(account, region, note);
        match self.index.get(&note).and_then(|&i| self.notes[i].mark) {
            Some(mark) => format!("[{mark}]"),
            None => note,
        }
    }

    /// The shared notes, one line each, for under the table.
    pub fn footer(&self) -> Vec<String> {
        self.notes
            .iter()
            .filter_map(|note| {
                let mark = note.mark?;
                Some(format!("[{mark}] {} accounts/regions: {}", note.rows, note.text))
            })
            .collect()
    }

    /// A note without the account and region its row already names.
    fn short(account: &str, region: &str, note: &str) -> String {
        note.replace(&format!(" in account {account} region {region}"), "")
            .replace(&format!(" in account {account}"), "")
    }
}

/// Targets that have ended.
pub fn done(c: &StatusCounters) -> u64 {
    c.total - c.pending - c.queued - c.running
}

/// The counters by status, in one order everywhere: `ok` always, then
/// each status that has targets, by the name `muster results --status`
/// takes, with queued and running together as `running`. They add up to
/// the total.
pub fn tally(c: &StatusCounters) -> Vec<(&'static str, u64)> {
    let mut parts = vec![("ok", c.success)];
    parts.extend(
        [
            ("failed", c.failed),
            ("timed_out", c.timed_out),
            ("error", c.error),
            ("undeliverable", c.undeliverable),
            ("cancelled", c.cancelled),
            ("terminated", c.terminated),
            ("skipped", c.skipped),
            ("pending", c.pending),
            ("running", c.queued + c.running),
        ]
        .into_iter()
        .filter(|&(_, n)| n > 0),
    );
    parts
}

/// Targets that ended without running their command to success, short of
/// a timeout: the command failed, muster could not run it (error), or the
/// agent never took it (undeliverable). The "failed" of a table that has a
/// "timed out" column.
pub fn failed(c: &StatusCounters) -> u64 {
    c.failed + c.error + c.undeliverable
}

/// A scope's state in a word ("discovering", "done").
pub fn scope_state(state: i32) -> String {
    muster_proto::v1::ScopeState::try_from(state)
        .map(|x| x.as_str_name().trim_start_matches("SCOPE_STATE_").to_ascii_lowercase())
        .unwrap_or_default()
}

/// A timeout's kind in a word, or "".
pub fn timeout_kind(kind: i32) -> &'static str {
    match TimeoutKind::try_from(kind).unwrap_or(TimeoutKind::Unspecified) {
        TimeoutKind::Delivery => "delivery",
        TimeoutKind::Execution => "execution",
        TimeoutKind::Unspecified => "",
    }
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

/// Prints a document for scripts: pretty JSON, or YAML.
pub fn print_document(value: &Value, output: Output) {
    let text = match output {
        Output::Yaml => serde_yaml_ng::to_string(value).unwrap_or_default(),
        _ => serde_json::to_string_pretty(value).unwrap_or_default() + "\n",
    };
    print!("{text}");
}

/// Prints one of the API's messages for scripts: proto3's canonical JSON
/// mapping (see [`muster_proto::json`]), or the same as YAML.
pub fn print_message<M: prost::Message + prost::Name>(message: &M, output: Output) {
    print_document(&muster_proto::json::to_json(message), output);
}

/// Rows as CSV (RFC 4180: a field is quoted when it holds a comma, a quote
/// or a line break) under a header line.
pub fn csv_text(header: &[&str], rows: impl IntoIterator<Item = Vec<String>>) -> String {
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record(header).expect("CSV into memory");
    for row in rows {
        writer.write_record(&row).expect("CSV into memory");
    }
    String::from_utf8(writer.into_inner().expect("CSV into memory")).expect("CSV of UTF-8 fields is UTF-8")
}

/// Prints rows as CSV under a header line (see [`csv_text`]).
pub fn print_csv(header: &[&str], rows: impl IntoIterator<Item = Vec<String>>) {
    print!("{}", csv_text(header, rows));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_only_when_needed() {
        let text = csv_text(
            &["id", "reason"],
            [
                vec!["plain".into(), "a,b".into()],
                vec!["say \"hi\"".into(), "two\nlines".into()],
            ],
        );
        assert_eq!(text, "id,reason\nplain,\"a,b\"\n\"say \"\"hi\"\"\",\"two\nlines\"\n");
    }

    #[test]
    fn notes_shared_by_rows_are_written_once_without_the_rows_own_names() {
        let denied =
            |account: &str| format!("assume role arn:aws:iam::{account}:role/x in account {account}: AccessDenied");
        let refused = |account: &str, region: &str| {
            format!("document D in account {account} region {region}: 'X' is not one of A, B")
        };
        let rows = [
            ("111111111111", "us-east-1", refused("111111111111", "us-east-1")),
            ("111111111111", "eu-west-1", refused("111111111111", "eu-west-1")),
            ("222222222222", "us-east-1", denied("222222222222")),
            ("333333333333", "us-east-1", String::new()),
            ("444444444444", "us-east-1", refused("444444444444", "us-east-1")),
        ];
        let notes = Notes::of(rows.iter().map(|(a, r, n)| (*a, *r, n.as_str())));
        let cells: Vec<String> = rows.iter().map(|(a, r, n)| notes.cell(a, r, n)).collect();
        assert_eq!(
            cells,
            [
                "[1]",
                "[1]",
                "assume role arn:aws:iam::222222222222:role/x: AccessDenied",
                "",
                "[1]"
            ]
        );
        assert_eq!(
            notes.footer(),
            ["[1] 3 accounts/regions: document D: 'X' is not one of A, B"]
        );
        // Another account's name in a note is not the row's: it stays.
        let other = Notes::of([("111111111111", "us-east-1", "peered with account 222222222222")]);
        assert_eq!(
            other.cell("111111111111", "us-east-1", "peered with account 222222222222"),
            "peered with account 222222222222"
        );
        assert!(other.footer().is_empty());
    }

    #[test]
    fn the_folded_line_counts_what_was_left_out() {
        assert_eq!(folded_line(0), None);
        assert_eq!(
            folded_line(1).unwrap(),
            "1 more account/region matched no instance (-o wide lists them)"
        );
        assert!(folded_line(30).unwrap().starts_with("30 more accounts/regions"));
    }

    #[test]
    fn a_command_reads_in_one_line() {
        use muster_proto::v1::{Command, Document, ParameterValues, Script, command::Kind};
        let script = Command {
            kind: Some(Kind::Script(Script {
                linux_lines: vec!["set -e".into(), "".into(), "dnf -y update".into(), "reboot".into()],
                windows_lines: vec!["Install-WindowsUpdate".into()],
                working_directory: String::new(),
            })),
            ..Default::default()
        };
        assert_eq!(
            command_line(&script),
            "linux: set -e (+2 lines); windows: Install-WindowsUpdate"
        );
        let document = Command {
            kind: Some(Kind::Document(Document {
                name: "AWS-RunPatchBaseline".into(),
                version: "3".into(),
                parameters: [(
                    "Operation".to_owned(),
                    ParameterValues {
                        values: vec!["Install".into()],
                    },
                )]
                .into(),
            })),
            ..Default::default()
        };
        assert_eq!(
            command_line(&document),
            "AWS-RunPatchBaseline (version 3) Operation=Install"
        );
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(duration(5.2), "5s");
        assert_eq!(duration(72.0), "1m12s");
        assert_eq!(duration(3725.0), "1h02m");
        assert_eq!(duration(f64::INFINITY), "-");
    }

    #[test]
    fn the_tally_names_every_target_once() {
        let c = StatusCounters {
            pending: 1,
            queued: 2,
            running: 3,
            success: 4,
            failed: 5,
            timed_out: 6,
            cancelled: 7,
            undeliverable: 8,
            terminated: 9,
            skipped: 10,
            error: 11,
            total: 66,
        };
        let parts = tally(&c);
        assert_eq!(parts.iter().map(|&(_, n)| n).sum::<u64>(), c.total);
        assert_eq!(parts.first(), Some(&("ok", 4)));
        assert!(parts.contains(&("running", 5)), "{parts:?}");
        // Statuses without targets are left out; ok is always there.
        let only_errors = StatusCounters {
            error: 24,
            total: 24,
            ..Default::default()
        };
        assert_eq!(tally(&only_errors), [("ok", 0), ("error", 24)]);
        assert_eq!(failed(&only_errors), 24);
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
