//! Campaigns: created whole in one transaction (campaign, scopes, Discover
//! tasks, audit event), read back as the API's `Campaign`.

use std::collections::{BTreeMap, BTreeSet};

use crate::store::sql::{OptionalExtension as _, Row, Sql, params};
use muster_proto::v1::{
    Approval, Campaign, CampaignSpec, CampaignState, CampaignWindow, PatchCounters, ResultsExport, ScopeState,
    ScopeSummary, StagePhase, StatusCounters, TargetStatus, TaskKind,
};
use prost::Message as _;

use super::records::{event, now_ms, task_state, timestamp};
use super::{StoreError, StoreResult};

/// A campaign row.
#[derive(Debug, Clone)]
pub struct CampaignRow {
    /// Id.
    pub id: String,
    /// Submitted at.
    pub created_ms: i64,
    /// Who submitted it.
    pub submitted_by: String,
    /// Idempotency token.
    pub client_token: String,
    /// The validated spec.
    pub spec: CampaignSpec,
    /// SHA-256 of the spec as submitted.
    pub spec_sha256: String,
    /// A plan.
    pub dry_run: bool,
    /// State.
    pub state: CampaignState,
    /// Why.
    pub state_reason: String,
    /// First release.
    pub started_ms: Option<i64>,
    /// Terminal since.
    pub finished_ms: Option<i64>,
    /// Targets that may run (discovered, not skipped).
    pub eligible: i64,
    /// Resolved max_concurrency.
    pub concurrency_limit: i64,
    /// Resolved max_errors.
    pub error_threshold: Option<i64>,
    /// Errors as SSM counts them.
    pub errors: i64,
    /// Cancel requested.
    pub cancel_requested: bool,
    /// Export location.
    pub export_url: String,
    /// Exported at.
    pub exported_ms: Option<i64>,
    /// Last export failure.
    pub export_error: String,
    /// The campaign this one reruns; empty for a first run.
    pub rerun_of: String,
    /// The current stage (0 without stages).
    pub stage_index: i64,
    /// Where it is; UNSPECIFIED before stages are assigned.
    pub stage_phase: StagePhase,
    /// BAKING: when the bake ends.
    pub stage_until_ms: Option<i64>,
    /// Errors of the current stage an operator resumed past.
    pub stage_errors_accepted: i64,
    /// The approval a policy rule asks of it (empty rule: none).
    pub approval: ApprovalRow,
    /// The schedule that started it and its maintenance window (empty
    /// schedule: submitted by hand).
    pub window: WindowRow,
}

/// The schedule a campaign came from and its maintenance window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WindowRow {
    /// The schedule's name; empty for a campaign submitted by hand.
    pub schedule: String,
    /// The schedule version it runs.
    pub version: i64,
    /// When the current (or last) window opened.
    pub opened_ms: Option<i64>,
    /// When it closes; none for a schedule without a window.
    pub end_ms: Option<i64>,
    /// In-flight batches are cancelled (rather than finished) at its end.
    pub cancel_in_flight: bool,
    /// The targets not yet sent wait for the next window (rather than end).
    pub next_window: bool,
    /// The window ended and its in-flight commands are being cancelled.
    pub cancelling: bool,
}

impl WindowRow {
    /// Whether the window has closed at `now`.
    pub fn closed(&self, now: i64) -> bool {
        self.end_ms.is_some_and(|end| now >= end)
    }

    /// As the API shows `on_window_end`.
    pub fn on_end(&self) -> &'static str {
        if self.cancel_in_flight { "cancel" } else { "finish" }
    }

    /// As the API shows `after_window`.
    pub fn after(&self) -> &'static str {
        if self.next_window { "next_window" } else { "end" }
    }
}

/// The approval a policy rule asked of a campaign when it was submitted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApprovalRow {
    /// The rule's name; empty when no rule asks.
    pub rule: String,
    /// What the campaign reaches that the rule names.
    pub reason: String,
    /// The rule holds from this many targets up.
    pub min_targets: i64,
    /// How long the request waits, in seconds.
    pub expires_s: i64,
    /// When the request expires, once it was made (discovery ended).
    pub deadline_ms: Option<i64>,
    /// Who decided.
    pub decided_by: String,
    /// When.
    pub decided_ms: Option<i64>,
    /// Approved (rather than rejected), once decided.
    pub approved: bool,
}

const COLUMNS: &str = "id, created_ms, submitted_by, client_token, spec, spec_sha256, dry_run, state, state_reason, \
    started_ms, finished_ms, eligible, concurrency_limit, error_threshold, errors, cancel_requested, export_url, \
    exported_ms, export_error, rerun_of, stage_index, stage_phase, stage_until_ms, stage_errors_accepted, \
    approval_rule, approval_reason, approval_min_targets, approval_expires_s, approval_deadline_ms, \
    approval_decided_by, approval_decided_ms, approval_approved, schedule_name, schedule_version, window_opened_ms, \
    window_end_ms, window_on_end, window_after, window_cancelling";

fn from_row(row: &Row<'_>) -> StoreResult<CampaignRow> {
    let spec: Vec<u8> = row.get(4)?;
    Ok(CampaignRow {
        id: row.get(0)?,
        created_ms: row.get(1)?,
        submitted_by: row.get(2)?,
        client_token: row.get(3)?,
        spec: CampaignSpec::decode(spec.as_slice()).unwrap_or_default(),
        spec_sha256: row.get(5)?,
        dry_run: row.get(6)?,
        state: CampaignState::try_from(row.get::<_, i32>(7)?).unwrap_or(CampaignState::Unspecified),
        state_reason: row.get(8)?,
        started_ms: row.get(9)?,
        finished_ms: row.get(10)?,
        eligible: row.get(11)?,
        concurrency_limit: row.get(12)?,
        error_threshold: row.get(13)?,
        errors: row.get(14)?,
        cancel_requested: row.get(15)?,
        export_url: row.get(16)?,
        exported_ms: row.get(17)?,
        export_error: row.get(18)?,
        rerun_of: row.get(19)?,
        stage_index: row.get(20)?,
        stage_phase: StagePhase::try_from(row.get::<_, i32>(21)?).unwrap_or(StagePhase::Unspecified),
        stage_until_ms: row.get(22)?,
        stage_errors_accepted: row.get(23)?,
        approval: ApprovalRow {
            rule: row.get(24)?,
            reason: row.get(25)?,
            min_targets: row.get(26)?,
            expires_s: row.get(27)?,
            deadline_ms: row.get(28)?,
            decided_by: row.get(29)?,
            decided_ms: row.get(30)?,
            approved: row.get::<_, i64>(31)? != 0,
        },
        window: WindowRow {
            schedule: row.get(32)?,
            version: row.get(33)?,
            opened_ms: row.get(34)?,
            end_ms: row.get(35)?,
            cancel_in_flight: row.get::<_, String>(36)? == "cancel",
            next_window: row.get::<_, String>(37)? == "next_window",
            cancelling: row.get::<_, i64>(38)? != 0,
        },
    })
}

/// One campaign.
pub fn get(conn: &dyn Sql, id: &str) -> StoreResult<Option<CampaignRow>> {
    conn.prepare_cached(&format!("SELECT {COLUMNS} FROM campaigns WHERE id = ?1"))?
        .query_row([id], from_row)
        .optional()
}

/// How many bytes of each step's stdout and stderr the campaign keeps (its
/// validated `output.keep_bytes`).
pub fn keep_bytes(conn: &dyn Sql, id: &str) -> StoreResult<usize> {
    let spec: Option<Vec<u8>> = conn
        .prepare_cached("SELECT spec FROM campaigns WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?;
    let spec = spec.ok_or_else(|| StoreError::Corrupt(format!("no campaign {id}")))?;
    let spec = CampaignSpec::decode(spec.as_slice()).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let keep = spec.output.map_or(0, |o| o.keep_bytes);
    Ok(if keep == 0 {
        crate::validate::DEFAULT_KEEP_BYTES as usize
    } else {
        keep as usize
    })
}

/// Campaigns in these states (all when empty).
pub fn in_states(conn: &dyn Sql, states: &[CampaignState]) -> StoreResult<Vec<CampaignRow>> {
    let list = states
        .iter()
        .map(|s| (*s as i32).to_string())
        .collect::<Vec<_>>()
        .join(",");
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM campaigns WHERE state IN ({list}) ORDER BY created_ms"
    ))?;
    let rows = stmt.query_map((), from_row)?.collect::<StoreResult<Vec<_>>>()?;
    Ok(rows)
}

/// Where a page of campaigns ends: (created_ms, id).
pub type CampaignCursor = (i64, String);

/// Counters of one campaign: (account, region) to (status, count) pairs.
pub type ScopeCounts = BTreeMap<(String, String), Vec<(i32, i64)>>;

/// A page of campaigns, newest first, after `cursor`.
pub fn list(
    conn: &dyn Sql,
    states: &[CampaignState],
    include_plans: bool,
    page_size: usize,
    cursor: Option<CampaignCursor>,
) -> StoreResult<super::Page<CampaignRow, CampaignCursor>> {
    let mut sql = format!("SELECT {COLUMNS} FROM campaigns WHERE 1 = 1");
    if !states.is_empty() {
        let list = states
            .iter()
            .map(|s| (*s as i32).to_string())
            .collect::<Vec<_>>()
            .join(",");
        sql.push_str(&format!(" AND state IN ({list})"));
    }
    if !include_plans {
        sql.push_str(" AND dry_run = 0");
    }
    let (after_ms, after_id) = cursor.unwrap_or((i64::MAX, String::new()));
    sql.push_str(" AND (created_ms < ?1 OR (created_ms = ?1 AND id < ?2)) ORDER BY created_ms DESC, id DESC LIMIT ?3");
    let after_id = if after_ms == i64::MAX {
        "\u{10ffff}".to_owned()
    } else {
        after_id
    };
    let mut stmt = conn.prepare(&sql)?;
    let mut rows = stmt
        .query_map(params![after_ms, after_id, page_size as i64 + 1], from_row)?
        .collect::<StoreResult<Vec<_>>>()?;
    let next = if rows.len() > page_size {
        rows.truncate(page_size);
        rows.last().map(|r| (r.created_ms, r.id.clone()))
    } else {
        None
    };
    Ok((rows, next))
}

/// Builds StatusCounters from (status, count) pairs.
pub fn status_counters(counts: impl IntoIterator<Item = (i32, i64)>) -> StatusCounters {
    let mut c = StatusCounters::default();
    for (status, count) in counts {
        let count = count.max(0) as u64;
        let slot = match TargetStatus::try_from(status).unwrap_or(TargetStatus::Unspecified) {
            TargetStatus::Pending => &mut c.pending,
            TargetStatus::Queued => &mut c.queued,
            TargetStatus::Running => &mut c.running,
            TargetStatus::Success => &mut c.success,
            TargetStatus::Failed => &mut c.failed,
            TargetStatus::TimedOut => &mut c.timed_out,
            TargetStatus::Cancelled => &mut c.cancelled,
            TargetStatus::Undeliverable => &mut c.undeliverable,
            TargetStatus::Terminated => &mut c.terminated,
            TargetStatus::Skipped => &mut c.skipped,
            TargetStatus::Error => &mut c.error,
            TargetStatus::Unspecified => continue,
        };
        *slot += count;
        c.total += count;
    }
    c
}

/// Counters by (account, region) and status.
pub fn scope_counts(conn: &dyn Sql, id: &str) -> StoreResult<ScopeCounts> {
    let mut stmt = conn.prepare_cached(
        "SELECT account_id, region, status, count FROM counters WHERE campaign_id = ?1 AND count != 0",
    )?;
    let mut map = ScopeCounts::new();
    for row in stmt.query_map([id], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i32>(2)?,
            r.get::<_, i64>(3)?,
        ))
    })? {
        let (account, region, status, count) = row?;
        map.entry((account, region)).or_default().push((status, count));
    }
    Ok(map)
}

/// The campaign's totals by status: one row per status, whatever the
/// number of its scopes (`campaign_counters`, which the store's triggers
/// keep equal to the sum of the scopes' `counters`).
pub fn totals(conn: &dyn Sql, id: &str) -> StoreResult<StatusCounters> {
    let mut stmt = conn.prepare_cached("SELECT status, count FROM campaign_counters WHERE campaign_id = ?1")?;
    let counts = stmt
        .query_map([id], |r| Ok((r.get::<_, i32>(0)?, r.get::<_, i64>(1)?)))?
        .collect::<StoreResult<Vec<_>>>()?;
    Ok(status_counters(counts))
}

/// Targets that may run: all found so far but the SKIPPED ones and the one
/// ERROR target that stands for each scope that could not be discovered.
/// It only grows while discovery goes on, so limits resolved against it
/// never exceed the limits resolved against the final count.
pub fn eligible(conn: &dyn Sql, id: &str, totals: &StatusCounters) -> StoreResult<u64> {
    let undiscoverable: i64 = conn
        .prepare_cached("SELECT COUNT(*) FROM scopes WHERE campaign_id = ?1 AND state = ?2")?
        .query_row(params![id, ScopeState::Failed as i32], |r| r.get(0))?;
    Ok(totals
        .total
        .saturating_sub(totals.skipped)
        .saturating_sub(undiscoverable.max(0) as u64))
}

/// Every scope with its counters.
pub fn scopes(conn: &dyn Sql, id: &str) -> StoreResult<Vec<ScopeSummary>> {
    let counts = scope_counts(conn, id)?;
    let mut stmt = conn.prepare_cached(
        "SELECT account_id, region, state, error, managed, offline, unmanaged FROM scopes WHERE campaign_id = ?1 ORDER BY account_id, region",
    )?;
    let rows = stmt.query_map([id], |r| {
        Ok(ScopeSummary {
            account_id: r.get(0)?,
            region: r.get(1)?,
            state: r.get(2)?,
            error: r.get(3)?,
            counters: None,
            managed: r.get::<_, i64>(4)? as u64,
            offline: r.get::<_, i64>(5)? as u64,
            unmanaged: r.get::<_, i64>(6)? as u64,
        })
    })?;
    let mut scopes = Vec::new();
    for scope in rows {
        let mut scope = scope?;
        let key = (scope.account_id.clone(), scope.region.clone());
        scope.counters = Some(status_counters(counts.get(&key).cloned().unwrap_or_default()));
        scopes.push(scope);
    }
    Ok(scopes)
}

/// The spec as the API shows it: without an ExternalId (campaigns stored
/// before ExternalIds moved to the configuration kept it in the spec).
pub fn shown_spec(spec: &CampaignSpec) -> CampaignSpec {
    let mut spec = spec.clone();
    if let Some(access) = spec.access.as_mut() {
        access.external_id.clear();
    }
    // The scopes an earlier campaign's targets were taken as are the
    // controller's: the spec shows what was asked, and submitted again,
    // takes them again.
    if let Some(targets) = spec.targets.as_mut().filter(|t| t.from_campaign.is_some()) {
        targets.scopes.clear();
    }
    spec
}

/// Which configured ExternalId an account's role gets in a campaign, and
/// the one its submitter gave: (reference, submitted).
pub fn external_id_ref(conn: &dyn Sql, campaign_id: &str, account_id: &str) -> StoreResult<(String, String)> {
    conn.prepare_cached(
        "SELECT s.external_id_ref, c.external_id FROM scopes s JOIN campaigns c ON c.id = s.campaign_id
         WHERE s.campaign_id = ?1 AND s.account_id = ?2 LIMIT 1",
    )?
    .query_row(params![campaign_id, account_id], |r| Ok((r.get(0)?, r.get(1)?)))
    .optional()
    .map(Option::unwrap_or_default)
}

/// The ExternalId a campaign's submitter gave (empty for none).
pub fn submitted_external_id(conn: &dyn Sql, campaign_id: &str) -> StoreResult<String> {
    conn.prepare_cached("SELECT external_id FROM campaigns WHERE id = ?1")?
        .query_row([campaign_id], |r| r.get(0))
        .optional()
        .map(Option::unwrap_or_default)
}

/// The accounts and regions a campaign reaches (its scopes').
pub fn reach(conn: &dyn Sql, campaign_id: &str) -> StoreResult<(BTreeSet<String>, BTreeSet<String>)> {
    let mut accounts = BTreeSet::new();
    let mut regions = BTreeSet::new();
    for row in conn
        .prepare_cached("SELECT DISTINCT account_id, region FROM scopes WHERE campaign_id = ?1")?
        .query_map([campaign_id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
    {
        let (account, region) = row?;
        accounts.insert(account);
        regions.insert(region);
    }
    Ok((accounts, regions))
}

/// How much of a campaign [`to_proto`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    /// Its row and counters: a list's line, a page's crumb.
    Summary,
    /// And its stages' statuses: the console's redraw of the rollout.
    Stages,
    /// And its scopes and reruns: GetCampaign.
    Full,
}

/// The API's view of a campaign.
pub fn to_proto(conn: &dyn Sql, row: &CampaignRow, detail: Detail) -> StoreResult<Campaign> {
    Ok(Campaign {
        id: row.id.clone(),
        spec: Some(shown_spec(&row.spec)),
        state: row.state as i32,
        state_reason: row.state_reason.clone(),
        dry_run: row.dry_run,
        created_at: Some(timestamp(row.created_ms)),
        started_at: row.started_ms.map(timestamp),
        finished_at: row.finished_ms.map(timestamp),
        counters: Some(totals(conn, &row.id)?),
        scopes: if detail == Detail::Full {
            scopes(conn, &row.id)?
        } else {
            Vec::new()
        },
        errors: row.errors.max(0) as u64,
        error_threshold: row.error_threshold.map(|t| t.max(0) as u64),
        concurrency_limit: row.concurrency_limit.max(0) as u64,
        submitted_by: row.submitted_by.clone(),
        spec_sha256: row.spec_sha256.clone(),
        export: (!row.export_url.is_empty() || !row.export_error.is_empty()).then(|| ResultsExport {
            url: row.export_url.clone(),
            exported_at: row.exported_ms.map(timestamp),
            error: row.export_error.clone(),
        }),
        rerun_of: row.rerun_of.clone(),
        reruns: if detail == Detail::Full {
            reruns(conn, &row.id)?
        } else {
            Vec::new()
        },
        stages: if detail != Detail::Summary {
            super::stages::statuses(conn, row)?
        } else {
            Vec::new()
        },
        approval: (!row.approval.rule.is_empty()).then(|| Approval {
            rule: row.approval.rule.clone(),
            reason: row.approval.reason.clone(),
            expires_at: row.approval.deadline_ms.map(timestamp),
            decided_by: row.approval.decided_by.clone(),
            decided_at: row.approval.decided_ms.map(timestamp),
            approved: row.approval.approved,
        }),
        window: (!row.window.schedule.is_empty()).then(|| CampaignWindow {
            schedule: row.window.schedule.clone(),
            schedule_version: u32::try_from(row.window.version).unwrap_or_default(),
            opened_at: row.window.opened_ms.map(timestamp),
            closes_at: row.window.end_ms.map(timestamp),
            on_window_end: row.window.on_end().to_owned(),
            after_window: row.window.after().to_owned(),
        }),
        // A list's lines leave it out; only patch runs have it.
        patch_counters: if detail != Detail::Summary && runs_patches(&row.spec) {
            patch_counters(conn, &row.id)?
        } else {
            None
        },
    })
}

/// Whether a command of the campaign is a patch document.
pub fn runs_patches(spec: &CampaignSpec) -> bool {
    spec.command
        .iter()
        .chain(&spec.then)
        .any(|command| match &command.kind {
            Some(muster_proto::v1::command::Kind::Document(d)) => muster_proto::reports_patch_state(&d.name),
            _ => false,
        })
}

/// The patch states its targets reported, summed; `None` before the
/// first.
pub fn patch_counters(conn: &dyn Sql, id: &str) -> StoreResult<Option<PatchCounters>> {
    let mut stmt = conn.prepare_cached(
        "SELECT reported, compliant, missing_targets, missing_patches, failed_targets, failed_patches,
            pending_reboot_targets, pending_reboot_patches, critical_targets, critical_patches,
            security_targets, security_patches
         FROM patch_counters WHERE campaign_id = ?1",
    )?;
    let mut rows = stmt.query_map([id], |r| {
        let n = |i: usize| -> StoreResult<u64> { Ok(r.get::<_, i64>(i)?.max(0) as u64) };
        Ok(PatchCounters {
            reported: n(0)?,
            compliant: n(1)?,
            missing_targets: n(2)?,
            missing_patches: n(3)?,
            failed_targets: n(4)?,
            failed_patches: n(5)?,
            pending_reboot_targets: n(6)?,
            pending_reboot_patches: n(7)?,
            critical_targets: n(8)?,
            critical_patches: n(9)?,
            security_targets: n(10)?,
            security_patches: n(11)?,
        })
    })?;
    rows.next().transpose()
}

/// The campaigns that rerun `id` directly, oldest first.
pub fn reruns(conn: &dyn Sql, id: &str) -> StoreResult<Vec<String>> {
    let mut stmt = conn.prepare_cached("SELECT id FROM campaigns WHERE rerun_of = ?1 ORDER BY created_ms, id")?;
    let rows = stmt.query_map([id], |r| r.get(0))?;
    rows.collect()
}

/// Most campaigns one rerun chain follows: a bound on the work of one
/// listing, far beyond what people make by hand.
pub const MAX_CHAIN: usize = 100;

/// `id` and every campaign that reruns it, or reruns one of those, in the
/// order they were made (a later one's results supersede an earlier one's).
/// At most [`MAX_CHAIN`].
pub fn rerun_chain(conn: &dyn Sql, id: &str) -> StoreResult<Vec<String>> {
    let mut chain = vec![(0_i64, id.to_owned())];
    let mut next = 0;
    while next < chain.len() && chain.len() < MAX_CHAIN {
        let parent = chain[next].1.clone();
        next += 1;
        let mut stmt = conn.prepare_cached("SELECT created_ms, id FROM campaigns WHERE rerun_of = ?1")?;
        let children = stmt
            .query_map([parent.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<StoreResult<Vec<(i64, String)>>>()?;
        chain.extend(children);
    }
    chain.truncate(MAX_CHAIN);
    chain[1..].sort();
    Ok(chain.into_iter().map(|(_, id)| id).collect())
}

/// A new campaign, ready to store.
#[derive(Debug, Clone)]
pub struct NewCampaign {
    /// Id.
    pub id: String,
    /// Who.
    pub submitted_by: String,
    /// The validated spec.
    pub spec: CampaignSpec,
    /// SHA-256 of the spec as submitted.
    pub spec_sha256: String,
    /// A plan.
    pub dry_run: bool,
    /// Every (account, region).
    pub scopes: Vec<(String, String)>,
    /// Attempts per task.
    pub max_attempts: u32,
    /// Which configured ExternalId each account's role gets (its name, see
    /// [`crate::access`]); an account not here needs none.
    pub external_id_refs: std::collections::BTreeMap<String, String>,
    /// The ExternalId the submitter gave, when the configuration allows it.
    pub submitted_external_id: String,
    /// Who submitted, and from where, for the audit trail.
    pub actor: super::audit::Actor,
    /// The campaign it reruns; empty for a first run.
    pub rerun_of: String,
    /// The approval a policy rule asks of it (rule, reason, min_targets,
    /// expires_s; the rest unset).
    pub approval: ApprovalRow,
    /// The schedule that starts it and its first window (cancelling unset).
    pub window: WindowRow,
}

impl NewCampaign {
    /// A campaign of one scope in account 111111111111, us-east-1, for the
    /// store's own tests and benchmarks.
    #[cfg(any(test, feature = "testkit"))]
    pub fn for_test(id: &str, max_attempts: u32) -> Self {
        Self {
            id: id.into(),
            submitted_by: "tester".into(),
            spec: CampaignSpec {
                access: Some(muster_proto::v1::AccessConfig {
                    role_name: "muster-execution".into(),
                    ..Default::default()
                }),
                ..Default::default()
            },
            spec_sha256: "sha".into(),
            dry_run: false,
            scopes: vec![("111111111111".into(), "us-east-1".into())],
            max_attempts,
            external_id_refs: Default::default(),
            submitted_external_id: String::new(),
            actor: super::audit::Actor {
                principal: "tester".into(),
                ..Default::default()
            },
            rerun_of: String::new(),
            approval: ApprovalRow::default(),
            window: WindowRow::default(),
        }
    }
}

/// How an insert went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inserted {
    /// Stored.
    Created(String),
    /// The client token matched this campaign, with the same spec.
    Existing(String),
    /// The client token matched a campaign with another spec.
    TokenReused(String),
    /// A rerun of the same campaign has not ended yet (this one): two at
    /// once would run the same targets twice.
    RerunInProgress(String),
}

/// The campaign `submitted_by` already made with client token `token`, if
/// any: [`Inserted::Existing`] when its spec hashes to `spec_sha256`,
/// [`Inserted::TokenReused`] when not. An empty token names none.
pub fn by_client_token(
    conn: &dyn Sql,
    submitted_by: &str,
    token: &str,
    spec_sha256: &str,
) -> StoreResult<Option<Inserted>> {
    if token.is_empty() {
        return Ok(None);
    }
    let existing: Option<(String, String)> = conn
        .prepare_cached("SELECT id, spec_sha256 FROM campaigns WHERE submitted_by = ?1 AND client_token = ?2")?
        .query_row(params![submitted_by, token], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    Ok(existing.map(|(id, sha)| {
        if sha == spec_sha256 {
            Inserted::Existing(id)
        } else {
            Inserted::TokenReused(id)
        }
    }))
}

/// Stores a campaign with its scopes and Discover tasks, or finds the one
/// its client token already names.
pub fn insert(conn: &dyn Sql, new: &NewCampaign) -> StoreResult<Inserted> {
    let token = &new.spec.client_token;
    if let Some(found) = by_client_token(conn, &new.submitted_by, token, &new.spec_sha256)? {
        return Ok(found);
    }
    if !new.rerun_of.is_empty() {
        for id in reruns(conn, &new.rerun_of)? {
            let ended = get(conn, &id)?.is_none_or(|row| row.state.is_terminal());
            if !ended {
                return Ok(Inserted::RerunInProgress(id));
            }
        }
    }
    let now = now_ms();
    conn.prepare_cached(
        "INSERT INTO campaigns (id, created_ms, submitted_by, client_token, spec, spec_sha256, dry_run, state, external_id,
            rerun_of, approval_rule, approval_reason, approval_min_targets, approval_expires_s,
            schedule_name, schedule_version, window_opened_ms, window_end_ms, window_on_end, window_after)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)",
    )?
    .execute(params![
        new.id,
        now,
        new.submitted_by,
        token,
        new.spec.encode_to_vec(),
        new.spec_sha256,
        new.dry_run,
        CampaignState::Discovering as i32,
        new.submitted_external_id,
        new.rerun_of,
        new.approval.rule,
        new.approval.reason,
        new.approval.min_targets,
        new.approval.expires_s,
        new.window.schedule,
        new.window.version,
        new.window.opened_ms,
        new.window.end_ms,
        if new.window.schedule.is_empty() { "" } else { new.window.on_end() },
        if new.window.schedule.is_empty() { "" } else { new.window.after() }
    ])?;
    insert_scopes(conn, new, now)?;
    let mut detail = serde_json::json!({
        "by": new.submitted_by,
        "spec_sha256": new.spec_sha256,
        "scopes": new.scopes.len(),
        "dry_run": new.dry_run,
    });
    if !new.window.schedule.is_empty() {
        detail["schedule"] = new.window.schedule.clone().into();
        detail["schedule_version"] = new.window.version.into();
    }
    let action = if new.dry_run {
        "planned"
    } else if new.rerun_of.is_empty() {
        "submitted"
    } else {
        detail["rerun_of"] = new.rerun_of.clone().into();
        "rerun"
    };
    event(conn, &new.id, action, &detail.to_string())?;
    super::audit::record(conn, &new.actor, action, &new.id, &detail.to_string())?;
    Ok(Inserted::Created(new.id.clone()))
}

/// The campaign's scopes, each pending with its discovery task queued.
fn insert_scopes(conn: &dyn Sql, new: &NewCampaign, now: i64) -> StoreResult<()> {
    let mut scope = conn.prepare_cached(
        "INSERT INTO scopes (campaign_id, account_id, region, state, external_id_ref) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    let mut task = conn.prepare_cached(
        "INSERT INTO tasks (id, campaign_id, kind, account_id, region, state, attempt, max_attempts, created_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, 1, ?7, ?8)",
    )?;
    for (account, region) in &new.scopes {
        let reference = new.external_id_refs.get(account).map_or("", String::as_str);
        scope.execute(params![new.id, account, region, ScopeState::Pending as i32, reference])?;
        task.execute(params![
            uuid::Uuid::now_v7().to_string(),
            new.id,
            TaskKind::Discover as i32,
            account,
            region,
            task_state::QUEUED,
            new.max_attempts,
            now
        ])?;
    }
    Ok(())
}

/// Moves a campaign to a new state, recording why.
pub fn set_state(conn: &dyn Sql, id: &str, state: CampaignState, reason: &str) -> StoreResult<()> {
    let now = now_ms();
    let started = (state == CampaignState::Running).then_some(now);
    let finished = state.is_terminal().then_some(now);
    conn.prepare_cached(
        "UPDATE campaigns SET state = ?2, state_reason = ?3,
            started_ms = COALESCE(started_ms, ?4),
            finished_ms = COALESCE(?5, finished_ms)
         WHERE id = ?1",
    )?
    .execute(params![id, state as i32, reason, started, finished])?;
    event(
        conn,
        id,
        "state",
        &serde_json::json!({"state": state.short_name(), "reason": reason}).to_string(),
    )
}

/// Records a cancel request; false if the campaign has already ended. The
/// workers waiting on any controller hear of it at the commit
/// ([`super::wakes`]).
pub fn request_cancel(conn: &dyn Sql, id: &str, actor: &super::audit::Actor, reason: &str) -> StoreResult<bool> {
    let by = actor.principal.as_str();
    let row = get(conn, id)?.ok_or_else(|| StoreError::Corrupt(format!("no campaign {id}")))?;
    if row.state.is_terminal() {
        return Ok(false);
    }
    super::audit::record(
        conn,
        actor,
        "cancel_requested",
        id,
        &serde_json::json!({"reason": reason, "already_requested": row.cancel_requested}).to_string(),
    )?;
    if !row.cancel_requested {
        conn.execute("UPDATE campaigns SET cancel_requested = 1 WHERE id = ?1", [id])?;
        super::wakes::tell(conn)?;
        event(
            conn,
            id,
            "cancel_requested",
            &serde_json::json!({"by": by, "reason": reason}).to_string(),
        )?;
        set_state(
            conn,
            id,
            CampaignState::Cancelling,
            &format!("cancel requested by {by}: {reason}"),
        )?;
    }
    Ok(true)
}

/// Marks the in-flight commands of a campaign whose window closed as to be
/// cancelled (workers hear it on renew, and waiting in AwaitCommands, see
/// [`super::wakes`]), or clears the mark.
pub fn set_window_cancelling(conn: &dyn Sql, id: &str, cancelling: bool) -> StoreResult<()> {
    conn.prepare_cached("UPDATE campaigns SET window_cancelling = ?2 WHERE id = ?1")?
        .execute(params![id, i64::from(cancelling)])?;
    if cancelling {
        event(conn, id, "window_closed", r#"{"in_flight":"cancel"}"#)?;
        super::wakes::tell(conn)?;
    }
    Ok(())
}

/// Asks for the approval the campaign's rule wants: PENDING_APPROVAL until
/// `deadline_ms`.
pub fn request_approval(conn: &dyn Sql, campaign: &CampaignRow, deadline_ms: i64, reason: &str) -> StoreResult<()> {
    conn.prepare_cached("UPDATE campaigns SET approval_deadline_ms = ?2 WHERE id = ?1")?
        .execute(params![campaign.id, deadline_ms])?;
    set_state(conn, &campaign.id, CampaignState::PendingApproval, reason)
}

/// Records who approved or rejected a campaign's approval request.
pub fn decide_approval(conn: &dyn Sql, id: &str, by: &str, approved: bool) -> StoreResult<()> {
    conn.prepare_cached(
        "UPDATE campaigns SET approval_decided_by = ?2, approval_decided_ms = ?3, approval_approved = ?4 WHERE id = ?1",
    )?
    .execute(params![id, by, now_ms(), i64::from(approved)])?;
    Ok(())
}
