//! The reconcile loop. Each pass rebuilds its view from the store and moves
//! every active campaign one step: expired leases are retried, batches are
//! released within the rollout limits (in each scope as soon as it is
//! discovered, not once every scope is), discovery ends, thresholds stop the
//! rollout, cancels wind down, campaigns end. Then new work goes to the queue
//! and finished campaigns are exported. Nothing important lives only in
//! memory: a controller killed at any line resumes from the store.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::store::sql::{Sql, params};
use muster_common::domain::RateLimit;
use muster_proto::v1::{
    CampaignState, Lease, Platform, Progress, StateChange, StatusCounters, TargetStatus, TaskKind,
    WatchCampaignResponse, watch_campaign_response,
};
use tokio_util::sync::CancellationToken;

use crate::Controller;
use crate::rollout::{self, Limits, ScopeLoad};
use crate::store::campaigns::{self, CampaignRow};
use crate::store::leadership::Fence;
use crate::store::records::{now_ms, timestamp};
use crate::store::tasks::{LeaseAnswer, LeaseSettings, TaskRow};
use crate::store::{StoreResult, queue, targets, tasks};

/// Runs passes until `shutdown`: after every wake-up (a result, a submit, a
/// cancel) and at least every reconcile interval.
pub async fn run(ctl: Arc<Controller>, shutdown: CancellationToken) {
    let cursor = AtomicUsize::new(0);
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
            && let Err(error) = pass(&ctl, fence, &cursor).await
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
pub async fn pass(ctl: &Controller, fence: &Fence, cursor: &AtomicUsize) -> StoreResult<()> {
    let now = now_ms();
    // Where a leader paused at the worst moment (holding a term it may no
    // longer have) is put to the test.
    muster_common::crash::point("controller.leader_write");
    let expired = ctl
        .store
        .write_fenced(fence, move |txn| tasks::expire_leases(txn, now))
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
                ],
            )
        })
        .await?;
    for campaign in active {
        let settings = ctl.settings.clone();
        let start = cursor.fetch_add(1, Ordering::Relaxed);
        let id = campaign.id.clone();
        let change = ctl
            .store
            .write_fenced(fence, move |txn| step(txn, &id, &settings, start))
            .await?;
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
    start: usize,
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
    match campaign.state {
        CampaignState::Discovering => discovery_step(conn, &campaign, settings, start),
        CampaignState::Running => running_step(conn, &campaign, settings, start),
        _ => Ok(None),
    }
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
    let held = tasks::cancel_unleased(conn, &campaign.id)?;
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

fn discovery_step(
    conn: &dyn Sql,
    campaign: &CampaignRow,
    settings: &crate::Settings,
    start: usize,
) -> StoreResult<Option<(CampaignState, String)>> {
    let totals = campaigns::totals(conn, &campaign.id)?;
    let eligible = campaigns::eligible(conn, &campaign.id, &totals)?;
    if tasks::active(conn, &campaign.id, TaskKind::Discover)? > 0 {
        release_discovered(conn, campaign, settings, &totals, eligible, start)?;
        return Ok(None);
    }
    let unconfirmed = settings
        .guardrails
        .needs_confirmation(eligible, campaign.spec.confirm_large);
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
        return change(conn, &campaign.id, CampaignState::Planned, reason);
    }
    if let Some(reason) = unconfirmed {
        targets::end_pending(conn, &campaign.id, TargetStatus::Terminated, &reason)?;
        return change(conn, &campaign.id, CampaignState::Failed, reason);
    }
    let (concurrency, _) = record_limits(conn, campaign, eligible)?;
    if eligible == 0 {
        return finish(conn, campaign, &totals);
    }
    change(
        conn,
        &campaign.id,
        CampaignState::Running,
        format!("{eligible} targets to run, at most {concurrency} at once"),
    )
}

/// Whether a campaign's discovered scopes may start while others are still
/// being listed: not for a plan, and not while a confirm_above_targets
/// guardrail could still stop the whole campaign once the count is known.
fn starts_before_discovery_ends(campaign: &CampaignRow, settings: &crate::Settings) -> bool {
    !campaign.dry_run && (settings.guardrails.confirm_above_targets.is_none() || campaign.spec.confirm_large)
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
    start: usize,
) -> StoreResult<()> {
    let Some((limits, in_flight, errors)) = discovering_limits(conn, campaign, settings, totals, eligible)? else {
        return Ok(());
    };
    let pending = targets::pending_by_discovered_scope(conn, &campaign.id, None)?;
    release(conn, campaign, &limits, in_flight, errors, settings, start, pending)
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
) -> StoreResult<Option<(Limits, u64, u64)>> {
    if eligible == 0 || !starts_before_discovery_ends(campaign, settings) {
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
    Ok(Some((limits, in_flight, errors)))
}

/// When a worker completes a Discover task, hands it the first batches of
/// that scope, at most `capacity`: released as the reconcile pass would
/// release them, leased to the worker at once and never put on the queue.
/// The worker already holds the account's role, and the batches skip a
/// round through SQS. Only first batches: room that later completions free
/// goes round-robin over every scope, in the reconcile pass.
pub fn hand_off(
    conn: &dyn Sql,
    discovered: &TaskRow,
    capacity: u32,
    settings: &crate::Settings,
    lease: LeaseSettings,
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
    let Some((limits, in_flight, errors)) = discovering_limits(conn, &campaign, settings, &totals, eligible)? else {
        return Ok(Vec::new());
    };
    let scope = (discovered.account_id.as_str(), discovered.region.as_str());
    let pending = targets::pending_by_discovered_scope(conn, &campaign.id, Some(scope))?;
    release(conn, &campaign, &limits, in_flight, errors, settings, 0, pending)?;
    let mut leases = Vec::new();
    for task in queue::unqueued(conn, &campaign.id, scope, TaskKind::Execute, capacity)? {
        // Recorded as on the queue, so the dispatcher never sends it there.
        queue::mark_enqueued(conn, std::slice::from_ref(&task), now_ms())?;
        if let LeaseAnswer::Granted(granted) = tasks::lease(conn, &task, worker, lease)? {
            leases.push(*granted);
        }
    }
    Ok(leases)
}

fn batch_size(campaign: &CampaignRow) -> u64 {
    u64::from(campaign.spec.rate.as_ref().map_or(50, |r| r.batch_size))
}

fn running_step(
    conn: &dyn Sql,
    campaign: &CampaignRow,
    settings: &crate::Settings,
    start: usize,
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
        let pending = targets::pending_by_scope(conn, &campaign.id)?;
        release(conn, campaign, &limits, in_flight, errors, settings, start, pending)?;
        return Ok(None);
    }
    if totals.pending == 0 && in_flight == 0 && tasks::active(conn, &campaign.id, TaskKind::Execute)? == 0 {
        return finish(conn, campaign, &totals);
    }
    Ok(None)
}

/// Creates the Execute tasks the rollout plan allows for `pending` targets.
#[allow(clippy::too_many_arguments)]
fn release(
    conn: &dyn Sql,
    campaign: &CampaignRow,
    limits: &Limits,
    in_flight: u64,
    errors: u64,
    settings: &crate::Settings,
    start: usize,
    pending: Vec<targets::PendingGroup>,
) -> StoreResult<()> {
    let active = tasks::active_per_scope(conn, &campaign.id)?;
    let mut keys: Vec<(String, String)> = Vec::new();
    let mut loads: Vec<ScopeLoad> = Vec::new();
    for (scope, platform, count) in pending {
        if keys.last() != Some(&scope) {
            keys.push(scope.clone());
            loads.push(ScopeLoad {
                pending: Vec::new(),
                active_tasks: active.get(&scope).copied().unwrap_or(0),
            });
        }
        loads.last_mut().expect("just pushed").pending.push((platform, count));
    }
    let releases = rollout::plan(limits, in_flight, errors, &loads, start);
    for release in releases {
        let (account, region) = &keys[release.scope];
        let instances =
            targets::pending_instances(conn, &campaign.id, account, region, release.platform, release.size)?;
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
    let problems = totals.failed + totals.timed_out + totals.undeliverable + totals.error;
    let summary = format!(
        "{} succeeded, {} failed, {} timed out, {} undeliverable, {} errors, {} skipped",
        totals.success, totals.failed, totals.timed_out, totals.undeliverable, totals.error, totals.skipped
    );
    let state = if problems > 0 {
        CampaignState::CompletedWithErrors
    } else {
        CampaignState::Succeeded
    };
    change(conn, &campaign.id, state, summary)
}

/// What watchers of one campaign were last told.
#[derive(Default)]
struct Told {
    totals: StatusCounters,
    scopes: HashMap<(String, String), StatusCounters>,
    state: Option<i32>,
}

/// Sends watchers of campaigns whose counters moved their progress, with
/// only the scopes that moved, then any change of state. Every controller
/// runs it for its own watchers, from the store, so a watcher sees every
/// change whichever controller (or worker report) made it. A campaign seen
/// for the first time is told its state only if it has ended (the watcher's
/// snapshot has the rest).
async fn publish_progress(ctl: &Controller, told: &mut HashMap<String, Told>) {
    let watched = ctl.hub.watched_campaigns();
    told.retain(|id, _| watched.contains(id));
    for id in watched {
        let key = id.clone();
        let read = ctl
            .store
            .read(move |conn| {
                let Some(row) = campaigns::get(conn, &key)? else {
                    return Ok(None);
                };
                Ok(Some((
                    campaigns::totals(conn, &key)?,
                    campaigns::scopes(conn, &key)?,
                    row,
                )))
            })
            .await;
        let Ok(Some((totals, scopes, row))) = read else {
            continue;
        };
        let last = told.entry(id.clone()).or_default();
        if last.totals != totals {
            last.totals = totals;
            let moved: Vec<_> = scopes
                .into_iter()
                .filter(|scope| {
                    let key = (scope.account_id.clone(), scope.region.clone());
                    let counters = scope.counters.unwrap_or_default();
                    let changed = last.scopes.get(&key) != Some(&counters);
                    last.scopes.insert(key, counters);
                    changed
                })
                .collect();
            ctl.hub.publish(
                &id,
                WatchCampaignResponse {
                    event: Some(watch_campaign_response::Event::Progress(Progress {
                        counters: Some(totals),
                        scopes: moved,
                        errors: row.errors.max(0) as u64,
                        at: Some(timestamp(now_ms())),
                    })),
                },
            );
        }
        let state = row.state as i32;
        let first_sight = last.state.is_none();
        if last.state.replace(state) != Some(state) && (!first_sight || row.state.is_terminal()) {
            ctl.hub.publish(
                &id,
                WatchCampaignResponse {
                    event: Some(watch_campaign_response::Event::State(StateChange {
                        state,
                        reason: row.state_reason.clone(),
                        at: Some(timestamp(row.finished_ms.unwrap_or_else(now_ms))),
                    })),
                },
            );
        }
    }
}
