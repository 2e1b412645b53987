//! What the console's pages show, computed from the API's messages: the one
//! place that decides how a count becomes a colour share, a word and a
//! label, for the first render and for every live update alike.

use std::collections::{BTreeMap, BTreeSet};

use muster_proto::v1::{
    Campaign, CampaignState, Command, ScopeState, ScopeSummary, StagePhase, StatusCounters, Target, TargetSelector,
    TargetStatus, command,
};
use serde::Serialize;

/// Targets in the five groups the heat map shows. Every target is in
/// exactly one: `total` is their sum.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Buckets {
    /// Succeeded.
    pub ok: u64,
    /// Failed, timed out, undeliverable, or errors (SSM's and discovery's).
    pub failed: u64,
    /// Queued on a worker or running on the instance.
    pub running: u64,
    /// Ended without running: skipped, cancelled, terminated.
    pub not_run: u64,
    /// Not yet released.
    pub waiting: u64,
    /// Every target.
    pub total: u64,
}

impl Buckets {
    /// The groups of `c`.
    pub fn of(c: &StatusCounters) -> Self {
        let ok = c.success;
        let failed = c.failed + c.timed_out + c.undeliverable + c.error;
        let running = c.queued + c.running;
        let not_run = c.skipped + c.cancelled + c.terminated;
        let waiting = c.pending;
        Self {
            ok,
            failed,
            running,
            not_run,
            waiting,
            total: ok + failed + running + not_run + waiting,
        }
    }

    /// Targets that reached a terminal status.
    pub fn done(&self) -> u64 {
        self.ok + self.failed + self.not_run
    }

    /// One word for the whole group, which the cell also shows as text (a
    /// colour is never the only signal): failures first.
    pub fn word(&self) -> &'static str {
        if self.failed > 0 {
            "failed"
        } else if self.running > 0 {
            "running"
        } else if self.total == 0 {
            "empty"
        } else if self.done() == self.total {
            if self.ok > 0 { "succeeded" } else { "not run" }
        } else {
            "waiting"
        }
    }

    /// The full sentence screen readers and tooltips give.
    pub fn sentence(&self) -> String {
        format!(
            "{} succeeded, {} failed, {} running, {} not run, {} waiting, of {}",
            self.ok, self.failed, self.running, self.not_run, self.waiting, self.total
        )
    }
}

/// The people's name of a campaign state: "completed with errors".
pub fn state_word(state: i32) -> String {
    CampaignState::try_from(state)
        .unwrap_or(CampaignState::Unspecified)
        .short_name()
        .replace('_', " ")
}

/// Whether a campaign in `state` has ended.
pub fn is_terminal(state: i32) -> bool {
    CampaignState::try_from(state).is_ok_and(CampaignState::is_terminal)
}

/// The people's name of a target status: "timed out".
pub fn status_word(status: i32) -> String {
    TargetStatus::try_from(status)
        .unwrap_or(TargetStatus::Unspecified)
        .short_name()
        .replace('_', " ")
}

/// The CSS class of a target status's group (the colour; the word is
/// always printed next to it).
pub fn status_class(status: i32) -> &'static str {
    match TargetStatus::try_from(status).unwrap_or(TargetStatus::Unspecified) {
        TargetStatus::Success => "ok",
        TargetStatus::Failed | TargetStatus::TimedOut | TargetStatus::Undeliverable | TargetStatus::Error => "failed",
        TargetStatus::Queued | TargetStatus::Running => "running",
        TargetStatus::Skipped | TargetStatus::Cancelled | TargetStatus::Terminated => "not-run",
        TargetStatus::Pending | TargetStatus::Unspecified => "waiting",
    }
}

/// What a command runs: its document, or "a script" with the documents
/// that run it.
pub fn command_words(command: &Command) -> String {
    match &command.kind {
        Some(command::Kind::Document(d)) if d.version.is_empty() => d.name.clone(),
        Some(command::Kind::Document(d)) => format!("{} (version {})", d.name, d.version),
        Some(command::Kind::Script(_)) => "a script (AWS-RunShellScript / AWS-RunPowerShellScript)".into(),
        None => String::new(),
    }
}

/// What a selector reaches, in a line: "2 accounts and 1 OU in us-east-1,
/// eu-west-1; tag Role=web".
pub fn targets_words(targets: Option<&TargetSelector>) -> String {
    let Some(t) = targets else {
        return String::new();
    };
    let count = |n: usize, one: &str, many: &str| match n {
        0 => None,
        1 => Some(format!("1 {one}")),
        n => Some(format!("{n} {many}")),
    };
    let reached: Vec<String> = [
        count(t.account_ids.len(), "account", "accounts"),
        count(t.organizational_unit_ids.len(), "OU", "OUs"),
    ]
    .into_iter()
    .flatten()
    .collect();
    let mut said = Vec::new();
    if !reached.is_empty() {
        let mut line = reached.join(" and ");
        if !t.regions.is_empty() {
            line.push_str(&format!(" in {}", t.regions.join(", ")));
        }
        said.push(line);
    }
    said.extend(count(t.scopes.len(), "account and region", "accounts and regions"));
    if let Some(from) = &t.from_campaign {
        said.push(format!(
            "the targets of {} that are {}",
            from.campaign_id,
            from.in_words()
        ));
    }
    said.extend(count(
        t.exclude_account_ids.len(),
        "account excluded",
        "accounts excluded",
    ));
    said.extend(
        t.tags
            .iter()
            .map(|tag| format!("tag {}={}", tag.key, tag.values.join("|"))),
    );
    said.extend(count(t.instance_ids.len(), "instance named", "instances named"));
    said.join("; ")
}

/// A timestamp as people read it, in UTC; empty when unset.
pub fn when(at: Option<&prost_types::Timestamp>) -> String {
    at.and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default()
}

/// Seconds since the epoch of a timestamp, 0 when unset (for the page's
/// own rate and ETA).
pub fn epoch(at: Option<&prost_types::Timestamp>) -> i64 {
    at.map(|t| t.seconds).unwrap_or(0)
}

/// Percent-encodes one path segment (account ids, regions and instance ids
/// need none, but nothing a page links to is trusted to be plain).
pub fn segment(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// One (account, region) cell of the heat map.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    /// Its element id.
    pub id: String,
    /// The account.
    pub account: String,
    /// The region.
    pub region: String,
    /// Its targets' page.
    pub href: String,
    /// Share of each group, in the order ok, failed, running, not run,
    /// waiting (flex-grow weights).
    pub grow: [u64; 5],
    /// Its word (the status in text).
    pub word: &'static str,
    /// Done of total, and failures when there are any.
    pub label: String,
    /// The full sentence.
    pub sentence: String,
}

impl Cell {
    /// The cell of `scope` in campaign `campaign_id`; a plan's (`plan`)
    /// says what would run, not what is done.
    pub fn of(campaign_id: &str, scope: &ScopeSummary, plan: bool) -> Self {
        let b = Buckets::of(&scope.counters.unwrap_or_default());
        let discovery_failed = scope.state == ScopeState::Failed as i32;
        let word = if discovery_failed {
            "discovery failed"
        } else if scope.state == ScopeState::Pending as i32 && b.total == 0 {
            "discovering"
        } else if plan {
            if b.waiting > 0 { "would run" } else { "none would run" }
        } else {
            b.word()
        };
        let (label, counts) = if plan {
            // The word says "would run": the label gives how many.
            let mut parts = Vec::new();
            if b.waiting > 0 {
                parts.push(b.waiting.to_string());
            }
            if b.not_run > 0 {
                parts.push(format!("{} skipped", b.not_run));
            }
            let label = parts.join(" · ");
            let counts = format!("{} would run, {} skipped, of {}", b.waiting, b.not_run, b.total);
            (label, counts)
        } else {
            let mut label = format!("{}/{}", b.done(), b.total);
            if b.failed > 0 {
                label.push_str(&format!(" · {} failed", b.failed));
            }
            (label, b.sentence())
        };
        let mut sentence = format!("{} {}: {word}; {counts}", scope.account_id, scope.region);
        if !scope.error.is_empty() {
            sentence.push_str(&format!("; {}", scope.error));
        }
        Self {
            id: cell_id(&scope.account_id, &scope.region),
            href: format!(
                "/console/campaigns/{}/scopes/{}/{}",
                segment(campaign_id),
                segment(&scope.account_id),
                segment(&scope.region)
            ),
            account: scope.account_id.clone(),
            region: scope.region.clone(),
            grow: [b.ok, b.failed, b.running, b.not_run, b.waiting],
            word,
            label,
            sentence,
        }
    }

    /// The CSS class of its word.
    pub fn class(&self) -> String {
        self.word.replace(' ', "-")
    }
}

/// The element id of the cell of (account, region).
pub fn cell_id(account: &str, region: &str) -> String {
    let clean = |s: &str| -> String { s.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').collect() };
    format!("cell-{}-{}", clean(account), clean(region))
}

/// The heat map: accounts down, regions across.
#[derive(Debug, Clone, Default)]
pub struct HeatMap {
    /// Column headings.
    pub regions: Vec<String>,
    /// One row per account: its id and a cell (or none) per region.
    pub rows: Vec<(String, Vec<Option<Cell>>)>,
    /// Accounts/regions left out: discovered, and no instance matched.
    pub folded: usize,
}

impl HeatMap {
    /// The map of `campaign`'s scopes, without those that matched nothing
    /// (so a campaign over every region shows the regions it runs in).
    pub fn of(campaign: &Campaign) -> Self {
        let (shown, folded): (Vec<_>, Vec<_>) = campaign.scopes.iter().partition(|s| !s.matched_nothing());
        let regions: BTreeSet<&str> = shown.iter().map(|s| s.region.as_str()).collect();
        let regions: Vec<String> = regions.into_iter().map(str::to_owned).collect();
        let mut rows: BTreeMap<&str, Vec<Option<Cell>>> = BTreeMap::new();
        for scope in shown {
            let row = rows
                .entry(scope.account_id.as_str())
                .or_insert_with(|| vec![None; regions.len()]);
            if let Some(i) = regions.iter().position(|r| *r == scope.region) {
                row[i] = Some(Cell::of(&campaign.id, scope, campaign.dry_run));
            }
        }
        Self {
            regions,
            rows: rows.into_iter().map(|(a, cells)| (a.to_owned(), cells)).collect(),
            folded: folded.len(),
        }
    }
}

/// The campaign's totals, as the page's header and rollout panel show them.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Groups of every target.
    pub buckets: Buckets,
    /// Terminal targets.
    pub done: u64,
    /// Percent done, rounded down.
    pub percent: u64,
    /// Errors as SSM counts them.
    pub errors: u64,
    /// max_errors resolved, or "unlimited".
    pub threshold: String,
    /// max_concurrency resolved.
    pub concurrency: u64,
}

impl Summary {
    /// From the counters and limits.
    pub fn new(counters: &StatusCounters, errors: u64, threshold: Option<u64>, concurrency: u64) -> Self {
        let buckets = Buckets::of(counters);
        let done = buckets.done();
        Self {
            buckets,
            done,
            percent: (done * 100).checked_div(buckets.total).unwrap_or(0),
            errors,
            threshold: threshold.map_or_else(|| "unlimited".to_owned(), |t| t.to_string()),
            concurrency,
        }
    }

    /// A campaign's.
    pub fn of(campaign: &Campaign) -> Self {
        Self::new(
            &campaign.counters.unwrap_or_default(),
            campaign.errors,
            campaign.error_threshold,
            campaign.concurrency_limit,
        )
    }
}

/// One target row (a failure in the stream, a row of a scope's table).
#[derive(Debug, Clone, Serialize)]
pub struct TargetRow {
    /// The account.
    pub account: String,
    /// The region.
    pub region: String,
    /// The instance (empty for a scope that could not be discovered).
    pub instance: String,
    /// Its Name tag.
    pub name: String,
    /// Its status, in words.
    pub status: String,
    /// The status's group class.
    pub class: &'static str,
    /// Why.
    pub reason: String,
    /// The exit code, when it ran.
    pub exit_code: String,
    /// The SSM command.
    pub command_id: String,
    /// When it ended.
    pub finished: String,
    /// Its page.
    pub href: String,
    /// What its patch run left, in words ("compliant", "3 missing"); empty
    /// for other commands.
    pub patches: String,
}

impl TargetRow {
    /// The row of `target`.
    pub fn of(target: &Target) -> Self {
        Self {
            href: target_href(target),
            account: target.account_id.clone(),
            region: target.region.clone(),
            instance: target.instance_id.clone(),
            name: target.name.clone(),
            status: status_word(target.status),
            class: status_class(target.status),
            reason: target.reason.clone(),
            exit_code: target.exit_code.map(|c| c.to_string()).unwrap_or_default(),
            command_id: target.command_id.clone(),
            finished: when(target.finished_at.as_ref()),
            patches: target.patch_state.as_ref().map(|p| p.in_words()).unwrap_or_default(),
        }
    }
}

/// The page of one target.
pub fn target_href(t: &Target) -> String {
    let instance = if t.instance_id.is_empty() { "-" } else { &t.instance_id };
    format!(
        "/console/campaigns/{}/targets/{}/{}/{}",
        segment(&t.campaign_id),
        segment(&t.account_id),
        segment(&t.region),
        segment(instance)
    )
}

/// A stage's line in the rollout panel (and in a plan).
#[derive(Debug, Clone)]
pub struct StageRow {
    /// Its name.
    pub name: String,
    /// Its phase, in words.
    pub phase: String,
    /// Its targets.
    pub targets: u64,
    /// Done of total.
    pub progress: String,
    /// Errors of its threshold.
    pub errors: String,
    /// How many at once, and how many errors stop it.
    pub limits: String,
    /// What follows it: its bake and gate, or the campaign's end.
    pub follows: String,
}

impl StageRow {
    /// The rows of `campaign`'s stages.
    pub fn all(campaign: &Campaign) -> Vec<Self> {
        let specs = campaign.spec.as_ref().map_or(&[][..], |spec| &spec.stages[..]);
        let last = campaign.stages.len().saturating_sub(1);
        campaign
            .stages
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let b = Buckets::of(&s.counters.unwrap_or_default());
                Self {
                    name: s.name.clone(),
                    phase: StagePhase::try_from(s.phase)
                        .map(|p| p.as_str_name().trim_start_matches("STAGE_PHASE_").replace('_', " "))
                        .unwrap_or_default()
                        .to_lowercase(),
                    targets: b.total,
                    progress: format!("{}/{}", b.done(), b.total),
                    errors: format!(
                        "{} of {}",
                        s.errors,
                        s.error_threshold
                            .map_or_else(|| "unlimited".to_owned(), |t| t.to_string())
                    ),
                    limits: s.limits(),
                    follows: specs
                        .iter()
                        .find(|spec| spec.name == s.name)
                        .map(|spec| spec.what_follows(i == last))
                        .unwrap_or_default(),
                }
            })
            .collect()
    }
}

/// The stage an action names: the one in `phase`.
pub fn stage_in(campaign: &Campaign, phase: StagePhase) -> Option<String> {
    campaign
        .stages
        .iter()
        .find(|s| s.phase == phase as i32)
        .map(|s| s.name.clone())
}

/// A link to the full output: the AWS console's page of an `s3://` object
/// or a `cloudwatch://group/stream` log stream; none for anything else.
pub fn output_link(url: &str, region: &str) -> Option<String> {
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, key) = rest.split_once('/')?;
        return Some(format!(
            "https://s3.console.aws.amazon.com/s3/object/{}?prefix={}",
            segment(bucket),
            segment(key)
        ));
    }
    if let Some(rest) = url.strip_prefix("cloudwatch://") {
        // Both names may hold '/': Run Command's streams start with the
        // command id (a UUID), which no log group name of ours ends before.
        let parts: Vec<&str> = rest.split('/').collect();
        let at = (1..parts.len()).find(|&i| uuid::Uuid::parse_str(parts[i]).is_ok())?;
        let (group, stream) = (parts[..at].join("/"), parts[at..].join("/"));
        // The console's own escaping of a path in its fragment: '%' as '$25'.
        let escape = |s: &str| segment(s).replace('%', "$25");
        return Some(format!(
            "https://{region}.console.aws.amazon.com/cloudwatch/home?region={region}#logsV2:log-groups/log-group/{}/log-events/{}",
            escape(&group),
            escape(&stream)
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_selector_and_a_command_are_said_in_a_line() {
        let mut t = TargetSelector {
            account_ids: vec!["111111111111".into(), "222222222222".into()],
            organizational_unit_ids: vec!["ou-ab12-cdefgh34".into()],
            regions: vec!["us-east-1".into(), "eu-west-1".into()],
            tags: vec![muster_proto::v1::TagFilter {
                key: "Role".into(),
                values: vec!["web".into(), "api".into()],
            }],
            ..Default::default()
        };
        assert_eq!(
            targets_words(Some(&t)),
            "2 accounts and 1 OU in us-east-1, eu-west-1; tag Role=web|api"
        );
        t = TargetSelector {
            scopes: vec![Default::default()],
            exclude_account_ids: vec!["333333333333".into()],
            ..Default::default()
        };
        assert_eq!(targets_words(Some(&t)), "1 account and region; 1 account excluded");
        t = TargetSelector {
            from_campaign: Some(muster_proto::v1::CampaignTargets {
                campaign_id: "c-1".into(),
                non_compliant: true,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(targets_words(Some(&t)), "the targets of c-1 that are non-compliant");
        assert_eq!(targets_words(None), "");
        let document = Command {
            kind: Some(command::Kind::Document(muster_proto::v1::Document {
                name: "AWS-RunPatchBaseline".into(),
                version: "3".into(),
                ..Default::default()
            })),
            ..Default::default()
        };
        assert_eq!(command_words(&document), "AWS-RunPatchBaseline (version 3)");
    }

    fn counters(f: impl FnOnce(&mut StatusCounters)) -> StatusCounters {
        let mut c = StatusCounters::default();
        f(&mut c);
        c.total = c.pending
            + c.queued
            + c.running
            + c.success
            + c.failed
            + c.timed_out
            + c.cancelled
            + c.undeliverable
            + c.terminated
            + c.skipped
            + c.error;
        c
    }

    #[test]
    fn every_status_is_in_exactly_one_group() {
        let c = counters(|c| {
            (
                c.pending,
                c.queued,
                c.running,
                c.success,
                c.failed,
                c.timed_out,
                c.cancelled,
                c.undeliverable,
                c.terminated,
                c.skipped,
                c.error,
            ) = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
        });
        let b = Buckets::of(&c);
        assert_eq!(b.total, c.total);
        assert_eq!(b.ok + b.failed + b.running + b.not_run + b.waiting, c.total);
        assert_eq!((b.ok, b.failed, b.running, b.not_run, b.waiting), (8, 1200, 6, 832, 1));
        assert_eq!(b.done(), 8 + 1200 + 832);
    }

    #[test]
    fn a_cell_says_in_words_what_its_colour_shows() {
        let scope = |c: StatusCounters, state: ScopeState| ScopeSummary {
            account_id: "111111111111".into(),
            region: "eu-west-1".into(),
            state: state as i32,
            counters: Some(c),
            ..Default::default()
        };
        let failed = Cell::of(
            "c1",
            &scope(
                counters(|c| (c.success, c.failed, c.running) = (47, 2, 1)),
                ScopeState::Discovered,
            ),
            false,
        );
        assert_eq!(failed.word, "failed", "failures win over running");
        assert_eq!(failed.label, "49/50 · 2 failed");
        assert_eq!(failed.grow, [47, 2, 1, 0, 0]);
        assert!(
            failed
                .sentence
                .starts_with("111111111111 eu-west-1: failed; 47 succeeded, 2 failed, 1 running")
        );
        assert_eq!(failed.href, "/console/campaigns/c1/scopes/111111111111/eu-west-1");
        assert_eq!(failed.id, "cell-111111111111-eu-west-1");

        let done = Cell::of(
            "c1",
            &scope(counters(|c| (c.success, c.skipped) = (3, 1)), ScopeState::Discovered),
            false,
        );
        assert_eq!((done.word, done.label.as_str()), ("succeeded", "4/4"));
        let waiting = Cell::of("c1", &scope(counters(|c| c.pending = 5), ScopeState::Discovered), false);
        assert_eq!(waiting.word, "waiting");
        let discovering = Cell::of("c1", &scope(StatusCounters::default(), ScopeState::Pending), false);
        assert_eq!(discovering.word, "discovering");
        let broken = Cell::of("c1", &scope(counters(|c| c.error = 1), ScopeState::Failed), false);
        assert_eq!(broken.word, "discovery failed");

        // A plan's cell says what would run: nothing is waiting or done.
        let planned = Cell::of(
            "c1",
            &scope(counters(|c| (c.pending, c.skipped) = (4, 1)), ScopeState::Discovered),
            true,
        );
        assert_eq!((planned.word, planned.label.as_str()), ("would run", "4 · 1 skipped"));
        assert_eq!(
            planned.sentence,
            "111111111111 eu-west-1: would run; 4 would run, 1 skipped, of 5"
        );
        let none = Cell::of("c1", &scope(counters(|c| c.skipped = 2), ScopeState::Discovered), true);
        assert_eq!((none.word, none.label.as_str()), ("none would run", "2 skipped"));
        let broken = Cell::of("c1", &scope(counters(|c| c.error = 1), ScopeState::Failed), true);
        assert_eq!(broken.word, "discovery failed");
    }

    #[test]
    fn the_map_has_a_row_per_account_and_a_column_per_region() {
        let scope = |a: &str, r: &str| ScopeSummary {
            account_id: a.into(),
            region: r.into(),
            counters: Some(counters(|c| c.pending = 1)),
            ..Default::default()
        };
        let campaign = Campaign {
            id: "c".into(),
            scopes: vec![
                scope("2", "us-east-1"),
                scope("1", "eu-west-1"),
                scope("1", "us-east-1"),
            ],
            ..Default::default()
        };
        let map = HeatMap::of(&campaign);
        assert_eq!(map.regions, ["eu-west-1", "us-east-1"]);
        assert_eq!(map.rows.len(), 2);
        assert_eq!(map.rows[0].0, "1");
        assert!(map.rows[0].1.iter().all(Option::is_some));
        assert!(map.rows[1].1[0].is_none(), "account 2 has no eu-west-1 scope");
        assert_eq!(map.folded, 0);

        // Accounts/regions that matched no instance are left out, and
        // counted: a region no account has instances in is no column.
        let mut wide = campaign;
        wide.scopes.push(ScopeSummary {
            account_id: "1".into(),
            region: "ap-south-1".into(),
            state: ScopeState::Discovered as i32,
            counters: Some(StatusCounters::default()),
            ..Default::default()
        });
        let map = HeatMap::of(&wide);
        assert_eq!(map.regions, ["eu-west-1", "us-east-1"]);
        assert_eq!(map.folded, 1);
    }

    #[test]
    fn the_summary_counts_percent_and_threshold() {
        let c = counters(|c| (c.success, c.failed, c.pending) = (6, 1, 3));
        let s = Summary::new(&c, 1, Some(2), 5);
        assert_eq!((s.done, s.percent, s.threshold.as_str()), (7, 70, "2"));
        assert_eq!(Summary::new(&StatusCounters::default(), 0, None, 0).percent, 0);
        assert_eq!(Summary::new(&c, 0, None, 1).threshold, "unlimited");
    }

    #[test]
    fn full_output_links_open_the_aws_console() {
        assert_eq!(
            output_link("s3://muster-output/c1/i-1/stdout", "eu-west-1").as_deref(),
            Some("https://s3.console.aws.amazon.com/s3/object/muster-output?prefix=c1%2Fi-1%2Fstdout")
        );
        let cw = output_link(
            "cloudwatch:///muster/ssm/0b6f4f8e-1c2d-4e5f-8a9b-0c1d2e3f4a5b/i-1/aws-runShellScript/stdout",
            "us-east-2",
        )
        .unwrap();
        assert_eq!(
            cw,
            "https://us-east-2.console.aws.amazon.com/cloudwatch/home?region=us-east-2#logsV2:log-groups/log-group/\
             $252Fmuster$252Fssm/log-events/0b6f4f8e-1c2d-4e5f-8a9b-0c1d2e3f4a5b$252Fi-1$252Faws-runShellScript$252Fstdout"
        );
        assert_eq!(output_link("", "us-east-1"), None);
        assert_eq!(output_link("ftp://x/y", "us-east-1"), None);
    }
}
