//! The reconcile loop. Each pass rebuilds its view from the store and moves
//! every active campaign one step: expired leases are retried, batches are
//! released within the rollout limits (in each scope as soon as it is
//! discovered, not once every scope is), discovery ends, thresholds stop the
//! rollout, cancels wind down, campaigns end. Then new work goes to the queue
//! and finished campaigns are exported. Nothing important lives only in
//! memory: a controller killed at any line resumes from the store.

use std::collections::HashMap;
use std::sync::Arc;

use crate::store::sql::{Sql, params};
use muster_common::domain::RateLimit;
use muster_proto::v1::{CampaignState, Lease, Platform, StageGate, StagePhase, StatusCounters, TargetStatus, TaskKind};
use tokio_util::sync::CancellationToken;

use crate::Controller;
use crate::rollout::{self, Limits, ScopeLoad};
use crate::store::campaigns::{self, CampaignRow};
use crate::store::leadership::Fence;
use crate::store::leases::{self, LeaseAnswer, LeaseSettings};
use crate::store::records::now_ms;
use crate::store::targets::{PendingGroup, Window};
use crate::store::tasks::TaskRow;
use crate::store::{StoreResult, queue, stages, targets, tasks};
use progress::publish_progress;

mod progress;

/// (account, region).
type Scope = (String, String);

/// Where each active campaign's round-robin release resumes: the last scope
/// a batch went to. Kept in memory: a controller that starts again (or a new
/// leader) resumes from the first scope, which costs fairness for one round,
/// never a target.
pub type Rotation = HashMap<String, Scope>;

/// Fewest pending scopes a release reads, however little room it has: it
/// skips scopes already at their limit of batches out and finds others.
const MIN_WINDOW: usize = 100;

/// Runs passes until `shutdown`: after every wake-up (a result, a submit, a
/// cancel) and at least every reconcile interval.
pub async fn run(ctl: Arc<Controller>, shutdown: CancellationToken) {
    let mut rotation = Rotation::new();
    let mut told = HashMap::new();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = ctl.wake.notified() => {}
            () = tokio::time::sleep(ctl.settings.reconcile_interval) => {}
        }
        // Every controller tells its watchers; the leader alone moves
        // campaigns, enqueues and exports.
        let fence = ctl.leader.fence();
        if let Some(fence) = &fence
            && let Err(error) = pass(&ctl, fence, &mut rotation).await
        {
            tracing::warn!(%error, "reconcile pass failed; retrying");
        }
        publish_progress(&ctl, &mut told).await;
        if let Some(fence) = &fence {
            crate::dispatcher::enqueue(&ctl, fence).await;
            crate::export::export_finished(&ctl, fence).await;
        }
    }
}

/// One pass over every active campaign.
pub async fn pass(ctl: &Controller, fence: &Fence, rotation: &mut Rotation) -> StoreResult<()> {
    let now = now_ms();
    // Where a leader paused at the worst moment (holding a term it may no
    // longer have) is put to the test.
    muster_common::crash::point("controller.leader_write");
    let expired = ctl
        .store
        .write_fenced(fence, move |txn| leases::expire_leases(txn, now))
        .await?;
    ctl.metrics.lease_expired(expired.len());
    for (task, outcome) in &expired {
        tracing::warn!(task_id = %task.id, worker = task.lease_owner.as_deref().unwrap_or_default(), attempt = task.attempt, ?outcome, "lease expired");
    }
    let active = ctl
        .store
        .read(|conn| {
            campaigns::in_states(
                conn,
                &[
                    CampaignState::Discovering,
                    CampaignState::Running,
                    CampaignState::Cancelling,
                    CampaignState::Paused,
                    CampaignState::AwaitingPromotion,
                    CampaignState::PendingApproval,
                    CampaignState::WaitingForWindow,
                ],
            )
        })
        .await?;
    rotation.retain(|id, _| active.iter().any(|c| &c.id == id));
    for campaign in active {
        let settings = ctl.settings.clone();
        let mut after = rotation.remove(&campaign.id);
        let id = campaign.id.clone();
        // A window closing with its commands to cancel wakes the workers
        // waiting in AwaitCommands at the commit (see
        // `campaigns::set_window_cancelling`).
        let change = ctl
            .store
            .write_fenced(fence, move |txn| {
                let change = step(txn, &id, &settings, &mut after)?;
                Ok((change, after))
            })
            .await?;
        let (change, after) = change;
        if let Some(after) = after {
            rotation.insert(campaign.id.clone(), after);
        }
        if let Some((state, reason)) = change {
            // Watchers hear of it from `publish_progress`, on every controller.
            tracing::info!(campaign_id = %campaign.id, state = state.short_name(), reason, "campaign state changed");
        }
    }
    Ok(())
}

/// Moves one campaign one step; returns its new state if it changed.
fn step(
    conn: &dyn Sql,
    id: &str,
    settings: &crate::Settings,
    after: &mut Option<Scope>,
) -> StoreResult<Option<(CampaignState, String)>> {
    let Some(campaign) = campaigns::get(conn, id)? else {
        return Ok(None);
    };
    if campaign.state.is_terminal() {
        return Ok(None);
    }
    if campaign.cancel_requested {
        return cancel_step(conn, &campaign);
    }
    if campaign.window.closed(now_ms()) && matches!(campaign.state, CampaignState::Discovering | CampaignState::Running)
    {
        return window_closed_step(conn, &campaign, settings, after);
    }
    match campaign.state {
        CampaignState::Discovering => discovery_step(conn, &campaign, settings, after),
        CampaignState::Running if !campaign.spec.stages.is_empty() => staged_step(conn, &campaign, settings, after),
        CampaignState::Running => running_step(conn, &campaign, settings, after),
        CampaignState::PendingApproval => crate::approvals::expire(conn, &campaign, now_ms()),
        // PAUSED and AWAITING_PROMOTION wait for an operator,
        // WAITING_FOR_WINDOW for its schedule's next run time.
        _ => Ok(None),
    }
}

/// [`step`], for benchmarks that drive the store without a controller.
#[cfg(any(test, feature = "testkit"))]
pub fn step_for_benchmarks(
    conn: &dyn Sql,
    id: &str,
    settings: &crate::Settings,
    after: &mut Option<Scope>,
) -> StoreResult<Option<(CampaignState, String)>> {
    step(conn, id, settings, after)
}

fn change(
    conn: &dyn Sql,
    id: &str,
    state: CampaignState,
    reason: String,
) -> StoreResult<Option<(CampaignState, String)>> {
    campaigns::set_state(conn, id, state, &reason)?;
    Ok(Some((state, reason)))
}

fn cancel_step(conn: &dyn Sql, campaign: &CampaignRow) -> StoreResult<Option<(CampaignState, String)>> {
    let held = tasks::cancel_unleased(conn, &campaign.id, "cancelled before it was sent")?;
    targets::end_pending(
        conn,
        &campaign.id,
        TargetStatus::Cancelled,
        "cancelled before it was released",
    )?;
    if held {
        // Workers holding leases hear of the cancel on renew, cancel their
        // commands and report what they reached.
        return Ok(None);
    }
    let reason = campaign.state_reason.clone();
    change(conn, &campaign.id, CampaignState::Cancelled, reason)
}

/// A campaign whose maintenance window has closed releases nothing more;
/// its batches in flight finish (or, as its schedule says, are cancelled);
/// then the targets not sent wait for the next window or end TERMINATED.
fn window_closed_step(
    conn: &dyn Sql,
    campaign: &CampaignRow,
    settings: &crate::Settings,
    after: &mut Option<Scope>,
) -> StoreResult<Option<(CampaignState, String)>> {
    let window = &campaign.window;
    let closed_at = crate::schedules::shown(window.end_ms.unwrap_or_default());
    if window.cancel_in_flight && !window.cancelling {
        // Workers hear of it on renew, as of a cancel, and cancel their
        // commands; batches not yet sent end here.
        campaigns::set_window_cancelling(conn, &campaign.id, true)?;
        let reason = format!("cancelled before it was sent: the maintenance window closed at {closed_at}");
        tasks::cancel_unleased(conn, &campaign.id, &reason)?;
    }
    if campaign.state == CampaignState::Discovering {
        // Nothing is released while the window is closed (see
        // `discovering_limits`); discovery ends as usual.
        return discovery_step(conn, campaign, settings, after);
    }
    let totals = campaigns::totals(conn, &campaign.id)?;
    if totals.queued + totals.running > 0 || tasks::active(conn, &campaign.id, TaskKind::Execute)? > 0 {
        return Ok(None);
    }
    if totals.pending == 0 {
        return finish(conn, campaign, &totals);
    }
    if window.next_window {
        campaigns::set_window_cancelling(conn, &campaign.id, false)?;
        return change(
            conn,
            &campaign.id,
            CampaignState::WaitingForWindow,
            format!(
                "the maintenance window closed at {closed_at}: {} targets wait for the next window of schedule {}",
                totals.pending, window.schedule
            ),
        );
    }
    let unsent = targets::end_pending(
        conn,
        &campaign.id,
        TargetStatus::Terminated,
        &format!("not sent: the maintenance window closed at {closed_at}"),
    )?;
    let totals = campaigns::totals(conn, &campaign.id)?;
    let (_, summary) = outcome(&totals);
    change(
        conn,
        &campaign.id,
        CampaignState::CompletedWithErrors,
        format!("the maintenance window closed at {closed_at} with {unsent} targets not sent; {summary}"),
    )
}

fn discovery_step(
    conn: &dyn Sql,
    campaign: &CampaignRow,
    settings: &crate::Settings,
    after: &mut Option<Scope>,
) -> StoreResult<Option<(CampaignState, String)>> {
    let totals = campaigns::totals(conn, &campaign.id)?;
    let eligible = campaigns::eligible(conn, &campaign.id, &totals)?;
    if tasks::active(conn, &campaign.id, TaskKind::Discover)? > 0 {
        release_discovered(conn, campaign, settings, &totals, eligible, after)?;
        return Ok(None);
    }
    let unconfirmed = settings
        .guardrails
        .needs_confirmation(eligible, campaign.spec.confirm_large);
    let staged = if campaign.spec.stages.is_empty() {
        None
    } else {
        Some(assign_stages(conn, campaign)?)
    };
    if campaign.dry_run {
        let mut reason = format!(
            "discovery finished: {eligible} targets would run, {} skipped, {} scopes could not be discovered",
            totals.skipped, totals.error
        );
        if let Some(limit) = settings
            .guardrails
            .confirm_above_targets
            .filter(|_| unconfirmed.is_some())
        {
            reason.push_str(&format!(
                "; above the controller's confirm_above_targets ({limit}), so it runs only with confirm_large"
            ));
        }
        if let Some(staged) = &staged {
            reason.push_str(&format!("; {staged}"));
        }
        if crate::approvals::needed(campaign, eligible) {
            reason.push_str(&format!(
                "; it would wait for an approval under policy rule '{}' ({})",
                campaign.approval.rule, campaign.approval.reason
            ));
        }
        return change(conn, &campaign.id, CampaignState::Planned, reason);
    }
    if let Some(reason) = unconfirmed {
        targets::end_pending(conn, &campaign.id, TargetStatus::Terminated, &reason)?;
        return change(conn, &campaign.id, CampaignState::Failed, reason);
    }
    if crate::approvals::needed(campaign, eligible) {
        return crate::approvals::request(conn, campaign, now_ms());
    }
    let why = staged.map(|summary| format!("{summary}; ")).unwrap_or_default();
    begin(conn, &campaign.id, &why)
}

/// Starts a campaign whose discovery has ended (and that needs no approval,
/// or has it): its first stage, or every target under its limits; ends it
/// when nothing is left to run. `why` starts the reason.
pub fn begin(conn: &dyn Sql, id: &str, why: &str) -> StoreResult<Option<(CampaignState, String)>> {
    let Some(campaign) = campaigns::get(conn, id)? else {
        return Ok(None);
    };
    let totals = campaigns::totals(conn, id)?;
    let eligible = campaigns::eligible(conn, id, &totals)?;
    let (concurrency, _) = record_limits(conn, &campaign, eligible)?;
    if eligible == 0 {
        return finish(conn, &campaign, &totals);
    }
    if !campaign.spec.stages.is_empty() {
        return match stages::start(conn, &campaign, 0, why)? {
            Some(reason) => Ok(Some((CampaignState::Running, reason))),
            None => finish(conn, &campaign, &totals),
        };
    }
    change(
        conn,
        id,
        CampaignState::Running,
        format!("{why}{eligible} targets to run, at most {concurrency} at once"),
    )
}

/// Whether a campaign's discovered scopes may start while others are still
/// being listed: not for a plan, not for waves (a stage's share is of the
/// final count), not while an approval may be asked, and not while a confirm_above_targets
/// guardrail could still stop the whole campaign once the count is known.
fn starts_before_discovery_ends(campaign: &CampaignRow, settings: &crate::Settings) -> bool {
    !campaign.dry_run
        && campaign.spec.stages.is_empty()
        && campaign.approval.rule.is_empty()
        && (settings.guardrails.confirm_above_targets.is_none() || campaign.spec.confirm_large)
}

/// Resolves max_concurrency and max_errors against `eligible` targets and
/// records them on the campaign, for GetCampaign and the next passes.
fn record_limits(conn: &dyn Sql, campaign: &CampaignRow, eligible: u64) -> StoreResult<(u64, Option<u64>)> {
    let rate = campaign.spec.rate.clone().unwrap_or_default();
    let concurrency = RateLimit::parse(&rate.max_concurrency, 1)
        .map(|l| l.concurrency(eligible))
        .unwrap_or(50);
    let threshold = (!rate.max_errors.trim().is_empty())
        .then(|| RateLimit::parse(&rate.max_errors, 0).ok())
        .flatten()
        .map(|l| l.errors(eligible));
    if campaign.eligible != eligible as i64
        || campaign.concurrency_limit != concurrency as i64
        || campaign.error_threshold != threshold.map(|t| t as i64)
    {
        conn.prepare_cached(
            "UPDATE campaigns SET eligible = ?2, concurrency_limit = ?3, error_threshold = ?4 WHERE id = ?1",
        )?
        .execute(params![
            campaign.id,
            eligible as i64,
            concurrency as i64,
            threshold.map(|t| t as i64)
        ])?;
    }
    Ok((concurrency, threshold))
}

/// While other scopes are still being listed, releases batches in the
/// scopes already discovered, so that one slow account does not hold back
/// the rest.
fn release_discovered(
    conn: &dyn Sql,
    campaign: &CampaignRow,
    settings: &crate::Settings,
    totals: &StatusCounters,
    eligible: u64,
    after: &mut Option<Scope>,
) -> StoreResult<()> {
    let Some(room) = discovering_limits(conn, campaign, settings, totals, eligible)? else {
        return Ok(());
    };
    let pending =
        |conn: &dyn Sql, window: Window<'_>| targets::pending_by_discovered_scope(conn, &campaign.id, None, window);
    release(conn, campaign, &room, settings, after, (pending, None))
}

/// The limits a campaign still being discovered may release under now, with
/// its instances in flight and errors; `None` when nothing may go. They are
/// resolved against the targets found so far: targets are only ever added,
/// so these never exceed the final limits. An error threshold passed against
/// this partial count only pauses the release; the final count decides once
/// discovery has ended. Only whole batches go meanwhile, so a scope is not
/// cut into pieces by a limit that is still growing.
fn discovering_limits(
    conn: &dyn Sql,
    campaign: &CampaignRow,
    settings: &crate::Settings,
    totals: &StatusCounters,
    eligible: u64,
) -> StoreResult<Option<Room>> {
    if eligible == 0 || !starts_before_discovery_ends(campaign, settings) || campaign.window.closed(now_ms()) {
        return Ok(None);
    }
    let (concurrency, error_threshold) = record_limits(conn, campaign, eligible)?;
    let limits = Limits {
        concurrency,
        error_threshold,
        batch_size: batch_size(campaign),
        max_tasks_per_scope: u64::from(settings.max_tasks_per_scope),
        whole_batches: true,
    };
    let in_flight = totals.queued + totals.running;
    let errors = campaign.errors.max(0) as u64;
    if totals.pending == 0 || in_flight >= limits.concurrency || rollout::halted(&limits, errors) {
        return Ok(None);
    }
    Ok(Some(Room {
        limits,
        in_flight,
        errors,
    }))
}

/// When a worker completes a Discover task, hands it the first batches of
/// that scope, at most `capacity`: released as the reconcile pass would
/// release them, leased to the worker at once and never put on the queue.
/// The worker already holds the account's role, and the batches skip a
/// round through SQS. Only first batches: room that later completions free
/// goes round-robin over every scope, in the reconcile pass. The leases are
/// recorded as granted for `granted_for`, so that a repeat of the
/// completion finds them again ([`leases::held_for`]).
pub fn hand_off(
    conn: &dyn Sql,
    discovered: &TaskRow,
    capacity: u32,
    settings: &crate::Settings,
    lease: LeaseSettings,
    granted_for: &str,
) -> StoreResult<Vec<Lease>> {
    let Some(worker) = discovered.lease_owner.as_deref() else {
        return Ok(Vec::new());
    };
    if capacity == 0 || discovered.kind != TaskKind::Discover {
        return Ok(Vec::new());
    }
    let Some(campaign) = campaigns::get(conn, &discovered.campaign_id)? else {
        return Ok(Vec::new());
    };
    if campaign.state != CampaignState::Discovering || campaign.cancel_requested {
        return Ok(Vec::new());
    }
    let totals = campaigns::totals(conn, &campaign.id)?;
    let eligible = campaigns::eligible(conn, &campaign.id, &totals)?;
    let Some(room) = discovering_limits(conn, &campaign, settings, &totals, eligible)? else {
        return Ok(Vec::new());
    };
    let scope = (discovered.account_id.as_str(), discovered.region.as_str());
    // One scope fits any window: read it in one statement, not the two a
    // bounded window takes.
    let pending = |conn: &dyn Sql, _: Window<'_>| {
        targets::pending_by_discovered_scope(conn, &campaign.id, Some(scope), Window::ALL)
    };
    release(conn, &campaign, &room, settings, &mut None, (pending, None))?;
    let mut leases = Vec::new();
    for task in queue::unqueued(conn, &campaign.id, scope, TaskKind::Execute, capacity)? {
        // Recorded as on the queue, so the dispatcher never sends it there.
        queue::mark_enqueued(conn, std::slice::from_ref(&task), now_ms())?;
        if let LeaseAnswer::Granted(granted) = leases::lease_for(conn, &task, worker, lease, granted_for)? {
            leases.push(*granted);
        }
    }
    Ok(leases)
}

/// How many scopes `groups` (ordered by scope) cover.
fn scopes_in(groups: &[PendingGroup]) -> usize {
    groups.chunk_by(|a, b| a.0 == b.0).count()
}

fn batch_size(campaign: &CampaignRow) -> u64 {
    u64::from(campaign.spec.rate.as_ref().map_or(50, |r| r.batch_size))
}

fn running_step(
    conn: &dyn Sql,
    campaign: &CampaignRow,
    settings: &crate::Settings,
    after: &mut Option<Scope>,
) -> StoreResult<Option<(CampaignState, String)>> {
    let totals = campaigns::totals(conn, &campaign.id)?;
    let in_flight = totals.queued + totals.running;
    let limits = Limits {
        concurrency: campaign.concurrency_limit.max(1) as u64,
        error_threshold: campaign.error_threshold.map(|t| t.max(0) as u64),
        batch_size: batch_size(campaign),
        max_tasks_per_scope: u64::from(settings.max_tasks_per_scope),
        whole_batches: false,
    };
    let errors = campaign.errors.max(0) as u64;
    if rollout::halted(&limits, errors) {
        let threshold = limits.error_threshold.unwrap_or_default();
        if totals.pending > 0 {
            let reason = format!("not sent: {errors} errors passed the campaign's max_errors ({threshold})");
            targets::end_pending(conn, &campaign.id, TargetStatus::Terminated, &reason)?;
        }
        if in_flight == 0 {
            return change(
                conn,
                &campaign.id,
                CampaignState::Failed,
                format!("error threshold exceeded: {errors} errors, max_errors allows {threshold}"),
            );
        }
        return Ok(None);
    }
    if totals.pending > 0 && in_flight < limits.concurrency {
        let pending = |conn: &dyn Sql, window: Window<'_>| targets::pending_by_scope(conn, &campaign.id, None, window);
        let room = Room {
            limits,
            in_flight,
            errors,
        };
        release(conn, campaign, &room, settings, after, (pending, None))?;
        return Ok(None);
    }
    if totals.pending == 0 && in_flight == 0 && tasks::active(conn, &campaign.id, TaskKind::Execute)? == 0 {
        return finish(conn, campaign, &totals);
    }
    Ok(None)
}

/// Gives each target its stage once discovery has ended; a target no stage
/// takes ends SKIPPED. Returns a summary for the campaign's reason.
fn assign_stages(conn: &dyn Sql, campaign: &CampaignRow) -> StoreResult<String> {
    let (sizes, left_out) = stages::assign(conn, campaign)?;
    if left_out > 0 {
        targets::end_pending_of(
            conn,
            &campaign.id,
            Some(stages::NO_STAGE),
            TargetStatus::Skipped,
            "in no stage of the campaign",
        )?;
    }
    stages::set_phase(conn, &campaign.id, 0, StagePhase::Waiting, None, 0)?;
    let per_stage = campaign
        .spec
        .stages
        .iter()
        .zip(&sizes)
        .map(|(stage, size)| format!("{} {size}", stage.name))
        .collect::<Vec<_>>()
        .join(", ");
    let mut summary = format!("{} stages: {per_stage}", sizes.len());
    if left_out > 0 {
        summary.push_str(&format!(" ({left_out} targets in no stage, skipped)"));
    }
    Ok(summary)
}

/// One step of a campaign with waves: the current stage releases within its
/// own limits; when it passes its max_errors the campaign pauses once its
/// in-flight batches end; when it ends it bakes, then its gate lets the next
/// stage start or waits for a promotion.
fn staged_step(
    conn: &dyn Sql,
    campaign: &CampaignRow,
    settings: &crate::Settings,
    after: &mut Option<Scope>,
) -> StoreResult<Option<(CampaignState, String)>> {
    let index = campaign.stage_index.max(0) as usize;
    let Some(stage) = campaign.spec.stages.get(index) else {
        return finish(conn, campaign, &campaigns::totals(conn, &campaign.id)?);
    };
    let counts = stages::counts(conn, &campaign.id)?
        .remove(&(index as i64))
        .unwrap_or_default();
    let c = counts.counters;
    match campaign.stage_phase {
        StagePhase::Running => {}
        StagePhase::Baking if campaign.stage_until_ms.is_some_and(|until| now_ms() < until) => return Ok(None),
        StagePhase::Baking => return gate(conn, campaign, index, c.total > 0),
        _ => return Ok(None),
    }
    let (concurrency, error_threshold) = crate::waves::limits(&campaign.spec, stage, c.total);
    let limits = Limits {
        concurrency,
        error_threshold,
        batch_size: batch_size(campaign),
        max_tasks_per_scope: u64::from(settings.max_tasks_per_scope),
        whole_batches: false,
    };
    let accepted = campaign.stage_errors_accepted.max(0) as u64;
    let errors = counts.errors.saturating_sub(accepted);
    let in_flight = c.queued + c.running;
    if rollout::halted(&limits, errors) {
        if in_flight > 0 {
            return Ok(None);
        }
        return pause_stage(
            conn,
            campaign,
            (index, stage),
            errors,
            error_threshold.unwrap_or_default(),
        );
    }
    if c.pending > 0 {
        if in_flight < concurrency {
            let stage = Some(index as i64);
            let pending =
                |conn: &dyn Sql, window: Window<'_>| targets::pending_by_scope(conn, &campaign.id, stage, window);
            let room = Room {
                limits,
                in_flight,
                errors,
            };
            release(conn, campaign, &room, settings, after, (pending, stage))?;
        }
        return Ok(None);
    }
    if in_flight > 0 || tasks::active(conn, &campaign.id, TaskKind::Execute)? > 0 {
        return Ok(None);
    }
    stage_ended(conn, campaign, (index, stage), errors, c.total)
}

/// Stage `index` passed its max_errors: paused until resumed or cancelled.
fn pause_stage(
    conn: &dyn Sql,
    campaign: &CampaignRow,
    (index, stage): (usize, &muster_proto::v1::Stage),
    errors: u64,
    threshold: u64,
) -> StoreResult<Option<(CampaignState, String)>> {
    let accepted = campaign.stage_errors_accepted.max(0) as u64;
    stages::set_phase(conn, &campaign.id, index, StagePhase::Paused, None, accepted)?;
    change(
        conn,
        &campaign.id,
        CampaignState::Paused,
        format!(
            "stage '{}': {errors} error{} passed its max_errors ({threshold}); nothing more runs until it is \
             resumed (muster resume) or cancelled",
            stage.name,
            if errors == 1 { "" } else { "s" }
        ),
    )
}

/// Stage `index` ended within its max_errors: the campaign finishes after
/// its last stage; otherwise the stage bakes, then meets its gate.
fn stage_ended(
    conn: &dyn Sql,
    campaign: &CampaignRow,
    (index, stage): (usize, &muster_proto::v1::Stage),
    errors: u64,
    total: u64,
) -> StoreResult<Option<(CampaignState, String)>> {
    let accepted = campaign.stage_errors_accepted.max(0) as u64;
    if index + 1 == campaign.spec.stages.len() {
        stages::set_phase(conn, &campaign.id, index, StagePhase::Passed, None, accepted)?;
        return finish(conn, campaign, &campaigns::totals(conn, &campaign.id)?);
    }
    if stage.bake_seconds > 0 && total > 0 {
        let until = now_ms() + i64::from(stage.bake_seconds) * 1000;
        stages::set_phase(conn, &campaign.id, index, StagePhase::Baking, Some(until), accepted)?;
        return change(
            conn,
            &campaign.id,
            CampaignState::Running,
            format!(
                "stage '{}' ended with {errors} error{}; baking {}s before its gate",
                stage.name,
                if errors == 1 { "" } else { "s" },
                stage.bake_seconds
            ),
        );
    }
    gate(conn, campaign, index, total > 0)
}

/// A stage that ended (and baked) meets its gate: a manual one waits for a
/// promotion, an automatic one (or a stage that had no targets) starts the
/// next stage.
fn gate(
    conn: &dyn Sql,
    campaign: &CampaignRow,
    index: usize,
    ran: bool,
) -> StoreResult<Option<(CampaignState, String)>> {
    let stage = &campaign.spec.stages[index];
    let manual = stage.gate == StageGate::Manual as i32;
    if manual && ran {
        let accepted = campaign.stage_errors_accepted.max(0) as u64;
        stages::set_phase(conn, &campaign.id, index, StagePhase::AwaitingPromotion, None, accepted)?;
        let next = campaign.spec.stages.get(index + 1).map_or("", |s| s.name.as_str());
        return change(
            conn,
            &campaign.id,
            CampaignState::AwaitingPromotion,
            format!(
                "stage '{}' passed; stage '{next}' starts when it is promoted (muster promote)",
                stage.name
            ),
        );
    }
    stages::set_phase(conn, &campaign.id, index, StagePhase::Passed, None, 0)?;
    let why = if ran {
        format!("stage '{}' passed; ", stage.name)
    } else {
        format!("stage '{}' had no targets; ", stage.name)
    };
    match stages::start(conn, campaign, index + 1, &why)? {
        Some(reason) => Ok(Some((CampaignState::Running, reason))),
        None => finish(conn, campaign, &campaigns::totals(conn, &campaign.id)?),
    }
}

/// How much a campaign may release now: its limits, with its instances in
/// flight and its errors.
struct Room {
    limits: Limits,
    in_flight: u64,
    errors: u64,
}

/// Creates the Execute tasks the rollout plan allows for the targets
/// `pending` reads (of stage `stage` only, when given), round-robin over
/// scopes from the one after `after`, which it moves to the last scope a
/// batch went to. It reads only the scopes the room could fill (at least
/// [`MIN_WINDOW`] of them), so a step costs what it releases, not what waits.
fn release(
    conn: &dyn Sql,
    campaign: &CampaignRow,
    room: &Room,
    settings: &crate::Settings,
    after: &mut Option<Scope>,
    (pending, stage): (
        impl Fn(&dyn Sql, Window<'_>) -> StoreResult<Vec<PendingGroup>>,
        Option<i64>,
    ),
) -> StoreResult<()> {
    let scopes = usize::try_from(room.limits.concurrency.saturating_sub(room.in_flight))
        .unwrap_or(usize::MAX)
        .max(MIN_WINDOW);
    let bound = after.as_ref().map(|(a, r)| (a.as_str(), r.as_str()));
    let mut groups_read = pending(
        conn,
        Window {
            after: bound,
            up_to: None,
            scopes,
        },
    )?;
    let found = scopes_in(&groups_read);
    if found < scopes && bound.is_some() {
        // Round the end: from the first scope up to the one last served.
        groups_read.extend(pending(
            conn,
            Window {
                after: None,
                up_to: bound,
                scopes: scopes - found,
            },
        )?);
    }
    // One scope's batches (a hand-off) read that scope's tasks alone.
    let only = match groups_read.as_slice() {
        [(first, ..), rest @ ..] if rest.iter().all(|(scope, ..)| scope == first) => {
            Some((first.0.as_str(), first.1.as_str()))
        }
        _ => None,
    };
    let active = tasks::active_per_scope(conn, &campaign.id, only)?;
    let mut keys: Vec<(String, String)> = Vec::new();
    let mut loads: Vec<ScopeLoad> = Vec::new();
    for (scope, platform, count) in groups_read {
        if keys.last() != Some(&scope) {
            keys.push(scope.clone());
            loads.push(ScopeLoad {
                pending: Vec::new(),
                active_tasks: active.get(&scope).copied().unwrap_or(0),
            });
        }
        loads.last_mut().expect("just pushed").pending.push((platform, count));
    }
    let releases = rollout::plan(&room.limits, room.in_flight, room.errors, &loads, 0);
    // The next release starts after the last scope served; after the whole
    // window when none could take a batch (all at their limit).
    let last = releases.iter().map(|r| r.scope).max().or(keys.len().checked_sub(1));
    *after = last.map(|i| keys[i].clone());
    for release in releases {
        let (account, region) = &keys[release.scope];
        let instances = targets::pending_instances(
            conn,
            &campaign.id,
            (account, region),
            release.platform,
            stage,
            release.size,
        )?;
        if instances.is_empty() {
            continue;
        }
        let platform = Platform::try_from(release.platform).unwrap_or(Platform::Linux);
        tasks::create_execute(
            conn,
            campaign,
            account,
            region,
            platform,
            &instances,
            settings.max_attempts,
        )?;
    }
    Ok(())
}

/// Ends a campaign whose targets have all ended.
fn finish(
    conn: &dyn Sql,
    campaign: &CampaignRow,
    totals: &StatusCounters,
) -> StoreResult<Option<(CampaignState, String)>> {
    let (state, summary) = outcome(totals);
    change(conn, &campaign.id, state, summary)
}

/// The terminal state of a campaign whose targets have all ended, and its
/// counts for people.
fn outcome(totals: &StatusCounters) -> (CampaignState, String) {
    let problems = totals.failed + totals.timed_out + totals.undeliverable + totals.error;
    let summary = ended_counts(totals);
    let state = if problems > 0 {
        CampaignState::CompletedWithErrors
    } else {
        CampaignState::Succeeded
    };
    (state, summary)
}

/// How a campaign's targets ended, for people: how many succeeded, then
/// each other ending that some target had ("13 succeeded, 1 failed, 6
/// skipped").
fn ended_counts(totals: &StatusCounters) -> String {
    let mut parts = vec![format!("{} succeeded", totals.success)];
    for (count, one, many) in [
        (totals.failed, "failed", "failed"),
        (totals.timed_out, "timed out", "timed out"),
        (totals.undeliverable, "undeliverable", "undeliverable"),
        (totals.error, "error", "errors"),
        (totals.cancelled, "cancelled", "cancelled"),
        (totals.terminated, "terminated", "terminated"),
        (totals.skipped, "skipped", "skipped"),
    ] {
        if count > 0 {
            parts.push(format!("{count} {}", if count == 1 { one } else { many }));
        }
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::campaigns::NewCampaign;
    use crate::store::testing::store_matrix;
    use muster_proto::v1::{DiscoveredInstance, PingStatus, RateControl, TaskRef};

    /// The controller's default settings.
    fn settings() -> crate::Settings {
        use clap::Parser as _;
        let dir = tempfile::tempdir().unwrap();
        let args = crate::config::Args::try_parse_from([
            "muster-controller",
            "--queue-url",
            "http://127.0.0.1:1/queue/test",
            "--insecure",
            "--aws-endpoint-url",
            "http://127.0.0.1:1",
            "--data-dir",
            &dir.path().display().to_string(),
        ])
        .unwrap();
        crate::config::Config::resolve(args).unwrap().settings
    }

    /// A RUNNING campaign "c" of `scopes` scopes with `per_scope` instances
    /// each, batches of one, at most `concurrency` at once, all discovered.
    fn running(conn: &dyn Sql, settings: &crate::Settings, scopes: usize, per_scope: usize, concurrency: u32) {
        let mut new = NewCampaign::for_test("c", settings.max_attempts);
        new.scopes = (0..scopes)
            .map(|i| (format!("{:012}", 100_000_000_000 + i), "us-east-1".to_owned()))
            .collect();
        new.spec.rate = Some(RateControl {
            max_concurrency: concurrency.to_string(),
            batch_size: 1,
            ..Default::default()
        });
        campaigns::insert(conn, &new).unwrap();
        campaigns::set_state(conn, "c", CampaignState::Discovering, "test").unwrap();
        let lease = LeaseSettings {
            ttl_ms: 60_000,
            max_tasks_per_scope: settings.max_tasks_per_scope,
        };
        let ids: Vec<String> = conn
            .prepare_cached("SELECT id FROM tasks WHERE campaign_id = 'c' ORDER BY id")
            .unwrap()
            .query_map((), |r| r.get(0))
            .unwrap()
            .collect::<StoreResult<_>>()
            .unwrap();
        for (scope, id) in ids.iter().enumerate() {
            let task_ref = TaskRef {
                campaign_id: "c".into(),
                task_id: id.clone(),
                attempt: 1,
            };
            let LeaseAnswer::Granted(granted) = leases::lease(conn, &task_ref, "w", lease).unwrap() else {
                panic!("the Discover task is leased");
            };
            let task = leases::current(conn, id, granted.lease_id).unwrap();
            let found: Vec<DiscoveredInstance> = (0..per_scope)
                .map(|i| DiscoveredInstance {
                    instance_id: format!("i-{scope:08x}{i:09x}"),
                    platform: Platform::Linux as i32,
                    ping_status: PingStatus::Online as i32,
                    ..Default::default()
                })
                .collect();
            targets::insert_discovered(conn, &task, &found).unwrap();
            leases::complete(conn, id, granted.lease_id).unwrap();
        }
        let changed = step(conn, "c", settings, &mut None).unwrap();
        assert_eq!(changed.map(|(state, _)| state), Some(CampaignState::Running));
    }

    /// The accounts of the campaign's Execute tasks that are not in `seen`,
    /// which takes them in.
    fn new_batches(conn: &dyn Sql, seen: &mut std::collections::HashSet<String>) -> Vec<String> {
        let all: Vec<(String, String)> = conn
            .prepare_cached("SELECT id, account_id FROM tasks WHERE campaign_id = 'c' AND kind = ?1")
            .unwrap()
            .query_map([TaskKind::Execute as i32], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<StoreResult<_>>()
            .unwrap();
        all.into_iter()
            .filter(|(id, _)| seen.insert(id.clone()))
            .map(|(_, account)| account)
            .collect()
    }

    store_matrix! {
        fn a_release_goes_round_every_scope_in_turn_past_the_window_and_back_to_the_first(conn) {
            // More scopes than one window reads, two batches each: each
            // room for one batch goes to the next scope in turn, round the
            // end and again, never twice to one scope in a round.
            let settings = settings();
            let scopes = MIN_WINDOW + 30;
            running(&*conn, &settings, scopes, 2, 1);
            let (mut after, mut seen, mut order) = (None, Default::default(), Vec::new());
            for round in 0..2 * scopes {
                if round > 0 {
                    conn.execute("UPDATE campaigns SET concurrency_limit = concurrency_limit + 1 WHERE id = 'c'", ())
                        .unwrap();
                }
                step(&*conn, "c", &settings, &mut after).unwrap();
                let new = new_batches(&*conn, &mut seen);
                assert_eq!(new.len(), 1, "step {round}: the room for one batch is used at once");
                order.extend(new);
            }
            let accounts: Vec<String> = (0..scopes).map(|i| format!("{:012}", 100_000_000_000 + i)).collect();
            let want: Vec<String> = accounts.iter().chain(&accounts).cloned().collect();
            assert_eq!(order.len(), 2 * scopes, "one batch per room made");
            assert_eq!(order, want, "round-robin over every scope, twice");
            assert_eq!(campaigns::totals(&*conn, "c").unwrap().pending, 0);
        }

        fn a_release_with_room_for_all_reads_every_scope_at_once(conn) {
            // Room for every target: one step releases every scope's batches.
            let settings = settings();
            let scopes = 3 * MIN_WINDOW;
            running(&*conn, &settings, scopes, 2, 10_000);
            step(&*conn, "c", &settings, &mut None).unwrap();
            let totals = campaigns::totals(&*conn, "c").unwrap();
            assert_eq!((totals.pending, totals.queued), (0, 2 * scopes as u64));
        }
    }

    #[test]
    fn an_ended_campaign_names_only_the_endings_it_had() {
        let totals = StatusCounters {
            success: 13,
            failed: 1,
            skipped: 6,
            total: 20,
            ..Default::default()
        };
        assert_eq!(
            outcome(&totals),
            (
                CampaignState::CompletedWithErrors,
                "13 succeeded, 1 failed, 6 skipped".into()
            )
        );
        let all = StatusCounters {
            success: 1,
            failed: 2,
            timed_out: 3,
            undeliverable: 4,
            error: 1,
            cancelled: 5,
            terminated: 6,
            skipped: 7,
            total: 29,
            ..Default::default()
        };
        assert_eq!(
            ended_counts(&all),
            "1 succeeded, 2 failed, 3 timed out, 4 undeliverable, 1 error, 5 cancelled, 6 terminated, 7 skipped"
        );
        let clean = StatusCounters {
            success: 4,
            total: 4,
            ..Default::default()
        };
        assert_eq!(outcome(&clean), (CampaignState::Succeeded, "4 succeeded".into()));
    }
}
