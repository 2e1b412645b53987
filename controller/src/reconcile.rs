//! The reconcile loop. Each pass rebuilds its view from the store and moves
//! every active campaign one step: expired leases are retried, discovery
//! ends, batches are released within the rollout limits, thresholds stop the
//! rollout, cancels wind down, campaigns end. Then new work goes to the queue
//! and finished campaigns are exported. Nothing important lives only in
//! memory: a controller killed at any line resumes from the store.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use muster_common::domain::RateLimit;
use muster_proto::v1::{
    CampaignState, Platform, Progress, StateChange, StatusCounters, TargetStatus, TaskKind, WatchCampaignResponse,
    watch_campaign_response,
};
use rusqlite::{Connection, params};
use tokio_util::sync::CancellationToken;

use crate::Controller;
use crate::rollout::{self, Limits, ScopeLoad};
use crate::store::campaigns::{self, CampaignRow};
use crate::store::records::{now_ms, timestamp};
use crate::store::{StoreResult, targets, tasks};

/// Runs passes until `shutdown`: after every wake-up (a result, a submit, a
/// cancel) and at least every reconcile interval.
pub async fn run(ctl: Arc<Controller>, shutdown: CancellationToken) {
    let cursor = AtomicUsize::new(0);
    let mut told = Told::new();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = ctl.wake.notified() => {}
            () = tokio::time::sleep(ctl.settings.reconcile_interval) => {}
        }
        if let Err(error) = pass(&ctl, &cursor).await {
            tracing::warn!(%error, "reconcile pass failed; retrying");
        }
        publish_progress(&ctl, &mut told).await;
        crate::dispatcher::enqueue(&ctl).await;
        crate::export::export_finished(&ctl).await;
    }
}

/// One pass over every active campaign.
pub async fn pass(ctl: &Controller, cursor: &AtomicUsize) -> StoreResult<()> {
    let now = now_ms();
    let expired = ctl.store.write(move |txn| tasks::expire_leases(txn, now)).await?;
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
        let change = ctl.store.write(move |txn| step(txn, &id, &settings, start)).await?;
        if let Some((state, reason)) = change {
            tracing::info!(campaign_id = %campaign.id, state = state.short_name(), reason, "campaign state changed");
            ctl.hub.publish(
                &campaign.id,
                WatchCampaignResponse {
                    event: Some(watch_campaign_response::Event::State(StateChange {
                        state: state as i32,
                        reason,
                        at: Some(timestamp(now_ms())),
                    })),
                },
            );
        }
    }
    Ok(())
}

/// Moves one campaign one step; returns its new state if it changed.
fn step(
    conn: &Connection,
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
        CampaignState::Discovering => discovery_step(conn, &campaign, settings),
        CampaignState::Running => running_step(conn, &campaign, settings, start),
        _ => Ok(None),
    }
}

fn change(
    conn: &Connection,
    id: &str,
    state: CampaignState,
    reason: String,
) -> StoreResult<Option<(CampaignState, String)>> {
    campaigns::set_state(conn, id, state, &reason)?;
    Ok(Some((state, reason)))
}

fn cancel_step(conn: &Connection, campaign: &CampaignRow) -> StoreResult<Option<(CampaignState, String)>> {
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
    conn: &Connection,
    campaign: &CampaignRow,
    settings: &crate::Settings,
) -> StoreResult<Option<(CampaignState, String)>> {
    if tasks::active(conn, &campaign.id, TaskKind::Discover)? > 0 {
        return Ok(None);
    }
    let totals = campaigns::totals(conn, &campaign.id)?;
    let eligible = totals.pending;
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
    let rate = campaign.spec.rate.clone().unwrap_or_default();
    let concurrency = RateLimit::parse(&rate.max_concurrency, 1)
        .map(|l| l.concurrency(eligible))
        .unwrap_or(50);
    let threshold = (!rate.max_errors.trim().is_empty())
        .then(|| RateLimit::parse(&rate.max_errors, 0).ok())
        .flatten()
        .map(|l| l.errors(eligible) as i64);
    conn.prepare_cached(
        "UPDATE campaigns SET eligible = ?2, concurrency_limit = ?3, error_threshold = ?4 WHERE id = ?1",
    )?
    .execute(params![campaign.id, eligible as i64, concurrency as i64, threshold])?;
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

fn running_step(
    conn: &Connection,
    campaign: &CampaignRow,
    settings: &crate::Settings,
    start: usize,
) -> StoreResult<Option<(CampaignState, String)>> {
    let totals = campaigns::totals(conn, &campaign.id)?;
    let in_flight = totals.queued + totals.running;
    let limits = Limits {
        concurrency: campaign.concurrency_limit.max(1) as u64,
        error_threshold: campaign.error_threshold.map(|t| t.max(0) as u64),
        batch_size: u64::from(campaign.spec.rate.as_ref().map_or(50, |r| r.batch_size)),
        max_tasks_per_scope: u64::from(settings.max_tasks_per_scope),
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
        release(conn, campaign, &limits, in_flight, errors, settings, start)?;
        return Ok(None);
    }
    if totals.pending == 0 && in_flight == 0 && tasks::active(conn, &campaign.id, TaskKind::Execute)? == 0 {
        return finish(conn, campaign, &totals);
    }
    Ok(None)
}

fn release(
    conn: &Connection,
    campaign: &CampaignRow,
    limits: &Limits,
    in_flight: u64,
    errors: u64,
    settings: &crate::Settings,
    start: usize,
) -> StoreResult<()> {
    let pending = targets::pending_by_scope(conn, &campaign.id)?;
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
    conn: &Connection,
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

/// What watchers were last told: totals and each scope's counters.
type Told = HashMap<String, (StatusCounters, HashMap<(String, String), StatusCounters>)>;

/// Sends progress to watchers of campaigns whose counters moved, with only
/// the scopes that moved.
async fn publish_progress(ctl: &Controller, told: &mut Told) {
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
                    row.errors,
                )))
            })
            .await;
        let Ok(Some((totals, scopes, errors))) = read else {
            continue;
        };
        let (last_totals, last_scopes) = told.entry(id.clone()).or_default();
        if *last_totals == totals {
            continue;
        }
        *last_totals = totals;
        let moved: Vec<_> = scopes
            .into_iter()
            .filter(|scope| {
                let key = (scope.account_id.clone(), scope.region.clone());
                let counters = scope.counters.unwrap_or_default();
                let changed = last_scopes.get(&key) != Some(&counters);
                last_scopes.insert(key, counters);
                changed
            })
            .collect();
        ctl.hub.publish(
            &id,
            WatchCampaignResponse {
                event: Some(watch_campaign_response::Event::Progress(Progress {
                    counters: Some(totals),
                    scopes: moved,
                    errors: errors.max(0) as u64,
                    at: Some(timestamp(now_ms())),
                })),
            },
        );
    }
}
