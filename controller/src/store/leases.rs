//! Leases: which worker runs a task now. Every lease gets a fresh,
//! unguessable lease id (the fencing token): only the current holder may
//! renew, complete or fail its task, and a lease that is not renewed
//! expires. How a failed attempt goes on is [`decide`], a pure function.
//! Facts (dispatches, results) are recorded from any lease of the task
//! (see `targets`).

use crate::store::sql::{OptionalExtension as _, Sql, params, placeholders};
use muster_proto::v1::{
    CampaignSpec, Dispatch, Lease, LeaseOutcome, ScopeState, TargetStatus, Task, TaskKind, TaskRef,
};

use super::campaigns::{self, CampaignRow};
use super::records::{bump, event, now_ms, task_state, terminal, timestamp};
use super::tasks::{COLUMNS, TaskRow, end_open_targets, from_row, get, may_have_sent, task_instances};
use super::{StoreError, StoreResult};
use crate::resolve;

/// A lease's outcome once its task completed under it.
const COMPLETED: &str = "completed";
/// A lease's outcome once it ran out without its worker ending it.
const EXPIRED: &str = "expired";

/// Lease settings.
#[derive(Debug, Clone, Copy)]
pub struct LeaseSettings {
    /// Lease time to live.
    pub ttl_ms: i64,
    /// Most leases at once per (account, region); divides the API rate.
    pub max_tasks_per_scope: u32,
}

/// The answer to a LeaseTask.
#[derive(Debug, Clone)]
pub enum LeaseAnswer {
    /// Granted.
    Granted(Box<Lease>),
    /// Not granted, and why.
    Refused(LeaseOutcome, String),
}

/// Leases the task a TaskRef names, if it may run now.
pub fn lease(conn: &dyn Sql, task_ref: &TaskRef, worker_id: &str, settings: LeaseSettings) -> StoreResult<LeaseAnswer> {
    lease_for(conn, task_ref, worker_id, settings, "")
}

/// As [`lease`], recording the answer that grants it: `granted_for` is the
/// key by which a repeat of the call finds it ([`held_for`]; empty for none).
pub fn lease_for(
    conn: &dyn Sql,
    task_ref: &TaskRef,
    worker_id: &str,
    settings: LeaseSettings,
    granted_for: &str,
) -> StoreResult<LeaseAnswer> {
    let refuse = |outcome, detail: &str| Ok(LeaseAnswer::Refused(outcome, detail.to_owned()));
    let Some(task) = get(conn, &task_ref.task_id)? else {
        return refuse(LeaseOutcome::UnknownTask, "no such task");
    };
    if task.campaign_id != task_ref.campaign_id {
        return refuse(LeaseOutcome::UnknownTask, "the task belongs to another campaign");
    }
    if matches!(
        task.state,
        task_state::COMPLETED | task_state::FAILED | task_state::CANCELLED
    ) {
        return refuse(LeaseOutcome::Finished, "the task has finished");
    }
    let campaign = campaigns::get(conn, &task.campaign_id)?
        .ok_or_else(|| StoreError::Corrupt(format!("task {} without campaign", task.id)))?;
    // A cancelled campaign's task runs only to cancel what an earlier
    // attempt may have sent.
    let cancelled = cancelling(&campaign);
    if campaign.state.is_terminal() || (cancelled && !may_have_sent(conn, &task)?) {
        return refuse(LeaseOutcome::CampaignInactive, "the campaign is cancelled or over");
    }
    if task_ref.attempt < task.attempt {
        return refuse(
            LeaseOutcome::StaleAttempt,
            &format!("the task is at attempt {}", task.attempt),
        );
    }
    if task.state == task_state::LEASED {
        return refuse(
            LeaseOutcome::LeasedElsewhere,
            &format!("leased by {}", task.lease_owner.unwrap_or_default()),
        );
    }
    let lease_id = new_lease_id(conn)?;
    let now = now_ms();
    conn.prepare_cached(
        "UPDATE tasks SET state = ?2, lease_id = ?3, lease_owner = ?4, lease_expires_ms = ?5 WHERE id = ?1",
    )?
    .execute(params![
        task.id,
        task_state::LEASED,
        lease_id,
        worker_id,
        now + settings.ttl_ms
    ])?;
    conn.prepare_cached(
        "INSERT INTO leases (lease_id, task_id, attempt, worker_id, granted_ms, granted_for)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![lease_id, task.id, task.attempt, worker_id, now, granted_for])?;
    let lease = held_lease(conn, &task, &campaign, lease_id as u64, settings)?;
    Ok(LeaseAnswer::Granted(Box::new(lease)))
}

/// Whether the campaign is being cancelled: a cancel, or the end of a
/// maintenance window that cancels what is in flight. The same test in SQL
/// is [`being_cancelled!`].
fn cancelling(campaign: &CampaignRow) -> bool {
    campaign.cancel_requested || campaign.window.cancelling
}

/// [`cancelling`] as a condition on a `campaigns` row, for the queries that
/// need not read the whole row.
macro_rules! being_cancelled {
    () => {
        "(cancel_requested <> 0 OR window_cancelling <> 0)"
    };
}

/// The Lease message of `task`, held under `lease_id`.
fn held_lease(
    conn: &dyn Sql,
    task: &TaskRow,
    campaign: &CampaignRow,
    lease_id: u64,
    settings: LeaseSettings,
) -> StoreResult<Lease> {
    Ok(Lease {
        lease_id,
        ttl: Some(prost_types::Duration {
            seconds: settings.ttl_ms / 1000,
            nanos: ((settings.ttl_ms % 1000) * 1_000_000) as i32,
        }),
        task: Some(task_message(conn, task, campaign, settings)?),
        prior_dispatches: dispatches(conn, &task.id)?,
        finished_instance_ids: finished_instances(conn, &task.id)?,
        // Set by the caller when it hands the lease out itself.
        traceparent: String::new(),
        campaign_cancelled: cancelling(campaign),
        takes_compressed_steps: true,
    })
}

/// The leases granted for `granted_for` (see [`lease_for`]) that are still
/// held, as (task id, lease id), in the order granted. Nobody has used
/// them if their answer was lost, since only that answer named them. Empty
/// for an empty key.
pub fn held_for(conn: &dyn Sql, granted_for: &str) -> StoreResult<Vec<(String, u64)>> {
    if granted_for.is_empty() {
        return Ok(Vec::new());
    }
    conn.prepare_cached(
        "SELECT leases.task_id, leases.lease_id FROM leases
           JOIN tasks ON tasks.id = leases.task_id AND tasks.lease_id = leases.lease_id
          WHERE leases.granted_for = ?1 AND leases.ended_ms IS NULL AND tasks.state = ?2
          ORDER BY leases.granted_ms, leases.task_id",
    )?
    .query_map(params![granted_for, task_state::LEASED], |r| {
        Ok((r.get(0)?, r.get::<_, i64>(1)? as u64))
    })?
    .collect()
}

/// The leases `held` (from [`held_for`]) as they were answered, each renewed
/// for a full TTL from now: the answer again, for a call repeated because
/// the first answer was lost.
pub fn answer_again(conn: &dyn Sql, held: &[(String, u64)], settings: LeaseSettings) -> StoreResult<Vec<Lease>> {
    let mut leases = Vec::with_capacity(held.len());
    for (task_id, lease_id) in held {
        let task = current(conn, task_id, *lease_id)?;
        let campaign = campaigns::get(conn, &task.campaign_id)?
            .ok_or_else(|| StoreError::Corrupt(format!("task {} without campaign", task.id)))?;
        conn.prepare_cached("UPDATE tasks SET lease_expires_ms = ?2 WHERE id = ?1")?
            .execute(params![task.id, now_ms() + settings.ttl_ms])?;
        leases.push(held_lease(conn, &task, &campaign, *lease_id, settings)?);
    }
    Ok(leases)
}

/// Whether `task_id` was completed under `lease_id`: a CompleteTask that
/// finds its lease no longer current is a repeat of one that took effect.
pub fn completed_under(conn: &dyn Sql, task_id: &str, lease_id: u64) -> StoreResult<bool> {
    let outcome: Option<String> = conn
        .prepare_cached("SELECT outcome FROM leases WHERE lease_id = ?1 AND task_id = ?2")?
        .query_row(params![i64::try_from(lease_id).unwrap_or(-1), task_id], |r| r.get(0))
        .optional()?;
    Ok(outcome.as_deref() == Some(COMPLETED))
}

/// Whether the task's worker failed it (or handed it back) under this very
/// lease, and if so whether the task was queued again: what a repeated
/// FailTask, whose first answer was lost, is told again. None when the
/// lease ended otherwise (completed, expired) or is still current.
pub fn failed_under(conn: &dyn Sql, task_id: &str, lease_id: u64) -> StoreResult<Option<bool>> {
    let ended: Option<(String, i64, i64)> = conn
        .prepare_cached(
            "SELECT l.outcome, l.attempt, t.attempt FROM leases l JOIN tasks t ON t.id = l.task_id
              WHERE l.lease_id = ?1 AND l.task_id = ?2",
        )?
        .query_row(params![i64::try_from(lease_id).unwrap_or(-1), task_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    Ok(ended
        .filter(|(outcome, _, _)| Ending::ALL.iter().any(|e| e.lease_outcome() == outcome))
        // A retry moved the task on to its next attempt; giving up did not.
        .map(|(_, failed_at, now_at)| now_at > failed_at))
}

/// How many leases the task's (account, region) may hold at once from now
/// on: for an Execute task, the scope's batches out now plus those its
/// pending targets still make, at most `max_tasks_per_scope`; one for a
/// discovery. Once a scope is discovered this only shrinks, so leases
/// handed out over time never share out more than the scope's rate
/// together, and a scope of one batch gets all of it (not a
/// `max_tasks_per_scope`th, which made its polls wait on the worker's own
/// bucket).
fn scope_leases(conn: &dyn Sql, task: &TaskRow, batch_size: u32, max_tasks_per_scope: u32) -> StoreResult<u32> {
    if task.kind != TaskKind::Execute {
        return Ok(1);
    }
    let out = super::tasks::active_in_scope(conn, &task.campaign_id, (&task.account_id, &task.region))?;
    let pending: i64 = conn
        .prepare_cached(
            "SELECT COUNT(*) FROM targets WHERE campaign_id = ?1 AND pending AND account_id = ?2 AND region = ?3",
        )?
        .query_row(params![task.campaign_id, task.account_id, task.region], |r| r.get(0))?;
    let batches = out.max(1) + (pending.max(0) as u64).div_ceil(u64::from(batch_size.max(1)));
    Ok(u32::try_from(batches)
        .unwrap_or(u32::MAX)
        .clamp(1, max_tasks_per_scope.max(1)))
}

/// The Task a worker gets: the campaign's spec resolved for this scope.
fn task_message(conn: &dyn Sql, task: &TaskRow, campaign: &CampaignRow, settings: LeaseSettings) -> StoreResult<Task> {
    let spec: &CampaignSpec = &campaign.spec;
    let access = spec.access.clone().unwrap_or_default();
    let rate = spec.rate.clone().unwrap_or_default();
    let mut message = Task {
        task_id: task.id.clone(),
        campaign_id: task.campaign_id.clone(),
        kind: task.kind as i32,
        attempt: task.attempt,
        max_attempts: task.max_attempts,
        account_id: task.account_id.clone(),
        region: task.region.clone(),
        role_arn: crate::validate::role_arn(spec, &task.account_id),
        external_id: access.external_id,
        role_session_name: muster_common::domain::session_name(&task.campaign_id),
        session_duration_seconds: access.session_duration_seconds,
        // The scope's rate, shared by the leases it may have at once.
        api_calls_per_second: rate.api_calls_per_second
            / f64::from(scope_leases(conn, task, rate.batch_size, settings.max_tasks_per_scope)?),
        created_at: Some(timestamp(task.created_ms)),
        discover: None,
        execute: None,
        source_identity: muster_common::domain::source_identity(&campaign.submitted_by),
    };
    match task.kind {
        TaskKind::Discover => {
            message.discover = Some(resolve::discover_spec(spec, &task.account_id, &task.region));
        }
        TaskKind::Execute => {
            let instances = task_instances(conn, &task.id)?;
            message.execute = Some(resolve::execute_spec(
                &task.campaign_id,
                &task.id,
                spec,
                (task.platform, &task.region),
                instances,
            ));
        }
        TaskKind::Unspecified => {}
    }
    Ok(message)
}

fn dispatches(conn: &dyn Sql, task_id: &str) -> StoreResult<Vec<Dispatch>> {
    let mut stmt = conn
        .prepare_cached("SELECT command_id, instance_ids, sent_ms, attempt, step FROM dispatches WHERE task_id = ?1")?;
    let rows = stmt.query_map([task_id], |r| {
        let ids: String = r.get(1)?;
        Ok(Dispatch {
            command_id: r.get(0)?,
            instance_ids: serde_json::from_str(&ids).unwrap_or_default(),
            sent_at: r.get::<_, Option<i64>>(2)?.map(timestamp),
            attempt: r.get(3)?,
            step: r.get::<_, i64>(4)? as u32,
        })
    })?;
    rows.collect::<StoreResult<Vec<_>>>()
}

fn finished_instances(conn: &dyn Sql, task_id: &str) -> StoreResult<Vec<String>> {
    let mut stmt = conn.prepare_cached("SELECT instance_id, status FROM targets WHERE task_id = ?1")?;
    let rows = stmt.query_map([task_id], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i32>(1)?)))?;
    let mut done = Vec::new();
    for row in rows {
        let (id, status) = row?;
        if terminal(status) {
            done.push(id);
        }
    }
    Ok(done)
}

/// Why an ownership change was refused ([`StoreError::Lease`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Fenced {
    /// No such task.
    #[error("task_id: no such task")]
    Unknown,
    /// The lease is not the current one.
    #[error("lease_id: not the task's current lease")]
    Stale,
}

/// The task, if `lease_id` is its current lease; else
/// [`StoreError::Lease`]. Call it before writing anything: a refusal is an
/// error, so the whole transaction rolls back, writes made before it too.
pub fn current(conn: &dyn Sql, task_id: &str, lease_id: u64) -> StoreResult<TaskRow> {
    let Some(task) = get(conn, task_id)? else {
        return Err(StoreError::Lease(Fenced::Unknown));
    };
    if task.state != task_state::LEASED || task.lease_id != Some(lease_id) {
        return Err(StoreError::Lease(Fenced::Stale));
    }
    Ok(task)
}

/// Checks that lease `lease_id` is a lease of task `task_id` (current or
/// earlier) and, when the caller is known by its certificate, that the
/// caller holds it. Refuses with [`StoreError::Denied`] otherwise. A
/// lease's task and holder never change once it is granted, so the check
/// may run on a reader before the write it guards.
pub fn check_holder(conn: &dyn Sql, task_id: &str, lease_id: u64, caller: Option<&str>) -> StoreResult<()> {
    let lease: Option<(String, String)> = conn
        .prepare_cached("SELECT task_id, worker_id FROM leases WHERE lease_id = ?1")?
        .query_row([i64::try_from(lease_id).unwrap_or(-1)], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((_, holder)) = lease.filter(|(task, _)| task == task_id) else {
        return Err(StoreError::Denied {
            rule: "lease_task",
            message: format!("lease_id: {lease_id} is not a lease of task {task_id}"),
        });
    };
    match caller {
        Some(caller) if caller != holder => Err(StoreError::Denied {
            rule: "lease_holder",
            message: format!(
                "lease_id: lease {lease_id} of task {task_id} is held by worker {holder}, not by the caller {caller}; \
                 only a lease's holder may use it"
            ),
        }),
        _ => Ok(()),
    }
}

/// Extends a current lease; says whether the campaign was cancelled.
pub fn renew(conn: &dyn Sql, task_id: &str, lease_id: u64, ttl_ms: i64) -> StoreResult<bool> {
    let task = current(conn, task_id, lease_id)?;
    conn.prepare_cached("UPDATE tasks SET lease_expires_ms = ?2 WHERE id = ?1")?
        .execute(params![task_id, now_ms() + ttl_ms])?;
    let cancelling = conn
        .prepare_cached(concat!(
            "SELECT 1 FROM campaigns WHERE id = ?1 AND ",
            being_cancelled!()
        ))?
        .query_row([&task.campaign_id], |_| Ok(()))
        .optional()?;
    Ok(cancelling.is_some())
}

/// Those of `campaign_ids` being cancelled (as [`renew`] tells a lease's
/// holder), for workers that follow their commands.
pub fn cancelling_among(conn: &dyn Sql, campaign_ids: &[String]) -> StoreResult<Vec<String>> {
    if campaign_ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut stmt = conn.prepare(&format!(
        concat!("SELECT id FROM campaigns WHERE id IN ({}) AND ", being_cancelled!()),
        placeholders(1, campaign_ids.len())
    ))?;
    let rows = stmt.query_map(campaign_ids, |r| r.get::<_, String>(0))?;
    rows.collect()
}

fn end_lease(conn: &dyn Sql, lease_id: Option<u64>, outcome: &str) -> StoreResult<()> {
    if let Some(lease_id) = lease_id {
        conn.prepare_cached("UPDATE leases SET ended_ms = ?2, outcome = ?3 WHERE lease_id = ?1 AND ended_ms IS NULL")?
            .execute(params![lease_id as i64, now_ms(), outcome])?;
    }
    Ok(())
}

/// Completes a task under its current lease.
pub fn complete(conn: &dyn Sql, task_id: &str, lease_id: u64) -> StoreResult<TaskRow> {
    let task = current(conn, task_id, lease_id)?;
    conn.prepare_cached("UPDATE tasks SET state = ?2, lease_expires_ms = NULL WHERE id = ?1")?
        .execute(params![task_id, task_state::COMPLETED])?;
    end_lease(conn, task.lease_id, COMPLETED)?;
    match task.kind {
        TaskKind::Discover => {
            conn.prepare_cached(
                "UPDATE scopes SET state = ?4 WHERE campaign_id = ?1 AND account_id = ?2 AND region = ?3",
            )?
            .execute(params![
                task.campaign_id,
                task.account_id,
                task.region,
                ScopeState::Discovered as i32
            ])?;
        }
        TaskKind::Execute => {
            // A worker that completes without a result for every instance is
            // a bug; the targets must still end, and say why.
            end_open_targets(
                conn,
                &task,
                TargetStatus::Error,
                "the worker completed the task without a result for this instance",
            )?;
        }
        TaskKind::Unspecified => {}
    }
    Ok(task)
}

/// What became of a failed task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailOutcome {
    /// Queued again with the next attempt.
    Retrying,
    /// Failed for good; its open targets ended ERROR.
    Failed,
    /// Not queued again, because its campaign has ended: cancelled.
    CampaignOver,
}

/// How an attempt ended without completing its task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// For good: another attempt cannot fix it.
    Failed,
    /// For now: retried while attempts last.
    Retryable,
    /// A stopping worker gave it back unfinished: retried, and the attempt
    /// is not counted against the task's budget.
    HandedBack,
}

impl Ending {
    /// Every ending, as FailTask may ask for it.
    const ALL: [Ending; 3] = [Self::Failed, Self::Retryable, Self::HandedBack];

    /// How the lease ended, as the leases table records it.
    fn lease_outcome(self) -> &'static str {
        match self {
            Self::Failed => "failed",
            Self::Retryable => "failed (retryable)",
            Self::HandedBack => "handed back",
        }
    }
}

/// Fails a task under its current lease (`lease_id`), or after its lease
/// expired (`None`), as [`decide`] says: queued again for another attempt,
/// or failed for good with its open targets.
pub fn fail(
    conn: &dyn Sql,
    task_id: &str,
    lease_id: Option<u64>,
    reason: &str,
    ending: Ending,
) -> StoreResult<FailOutcome> {
    let task = match lease_id {
        Some(lease_id) => current(conn, task_id, lease_id)?,
        None => get(conn, task_id)?.ok_or(StoreError::Lease(Fenced::Unknown))?,
    };
    // A lease that ran out is told apart from one its worker failed: only
    // the latter answers a repeated FailTask (see [`failed_under`]).
    let outcome = if lease_id.is_some() {
        ending.lease_outcome()
    } else {
        EXPIRED
    };
    end_lease(conn, task.lease_id, outcome)?;
    match decide(ending, task.attempt, task.max_attempts, reason) {
        // A campaign that has ended sends nothing more: a task queued again
        // would wait for good, and go back on the queue at every
        // `requeue_after` for workers to be refused. This happens when the
        // campaign ends (its targets all ended) while a worker holds one of
        // its tasks, and that lease runs out or fails after.
        Decision::Retry { .. } if campaign_over(conn, &task.campaign_id)? => {
            conn.prepare_cached(
                "UPDATE tasks SET state = ?2, lease_id = NULL, lease_owner = NULL, lease_expires_ms = NULL,
                    last_error = ?3 WHERE id = ?1",
            )?
            .execute(params![
                task_id,
                task_state::CANCELLED,
                format!("{reason}; not retried: its campaign has ended")
            ])?;
            if task.kind == TaskKind::Execute {
                end_open_targets(conn, &task, TargetStatus::Cancelled, "its campaign ended before it ran")?;
            }
            Ok(FailOutcome::CampaignOver)
        }
        Decision::Retry { extra_attempt } => {
            conn.prepare_cached(
                "UPDATE tasks SET state = ?2, attempt = attempt + 1, max_attempts = max_attempts + ?4, lease_id = NULL,
                    lease_owner = NULL, lease_expires_ms = NULL, last_error = ?3 WHERE id = ?1",
            )?
            .execute(params![task_id, task_state::QUEUED, reason, i64::from(extra_attempt)])?;
            Ok(FailOutcome::Retrying)
        }
        Decision::GiveUp { reason } => {
            give_up(conn, &task, &reason)?;
            Ok(FailOutcome::Failed)
        }
    }
}

/// Whether the campaign has ended (or is gone).
fn campaign_over(conn: &dyn Sql, campaign_id: &str) -> StoreResult<bool> {
    Ok(campaigns::get(conn, campaign_id)?.is_none_or(|c| c.state.is_terminal()))
}

/// What becomes of a task whose attempt ended without completing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Queued again for the next attempt; `extra_attempt` adds one to its
    /// budget, so the attempt that ended is not counted against it.
    Retry {
        /// One more attempt to the budget.
        extra_attempt: bool,
    },
    /// Failed for good, for this reason.
    GiveUp {
        /// What the task's targets and events say.
        reason: String,
    },
}

/// The retry decision, apart from the store. A task handed back by a
/// stopping worker is always retried and keeps its budget; a retryable
/// failure is retried while attempts last (`attempt` is the one that
/// ended, of `max_attempts`), and the last one's reason says how many were
/// made; a failure for good is final at once.
pub fn decide(ending: Ending, attempt: u32, max_attempts: u32, reason: &str) -> Decision {
    match ending {
        Ending::HandedBack => Decision::Retry { extra_attempt: true },
        Ending::Retryable if attempt < max_attempts => Decision::Retry { extra_attempt: false },
        Ending::Retryable => Decision::GiveUp {
            reason: format!("{reason} (gave up after {attempt} attempts)"),
        },
        Ending::Failed => Decision::GiveUp {
            reason: reason.to_owned(),
        },
    }
}

/// Fails `task` for good: the task, what it stood for (a discovery's scope,
/// an Execute batch's open targets), and the campaign's event.
fn give_up(conn: &dyn Sql, task: &TaskRow, reason: &str) -> StoreResult<()> {
    conn.prepare_cached("UPDATE tasks SET state = ?2, lease_expires_ms = NULL, last_error = ?3 WHERE id = ?1")?
        .execute(params![task.id, task_state::FAILED, reason])?;
    match task.kind {
        TaskKind::Discover => fail_scope(conn, task, reason)?,
        TaskKind::Execute => {
            end_open_targets(conn, task, TargetStatus::Error, reason)?;
        }
        TaskKind::Unspecified => {}
    }
    event(
        conn,
        &task.campaign_id,
        "task_failed",
        &serde_json::json!({"task": task.id, "account": task.account_id, "region": task.region, "reason": reason})
            .to_string(),
    )
}

/// A scope that could not be looked into: it fails, and one ERROR target
/// stands for it, so the campaign's results show it.
fn fail_scope(conn: &dyn Sql, task: &TaskRow, reason: &str) -> StoreResult<()> {
    conn.prepare_cached(
        "UPDATE scopes SET state = ?4, error = ?5 WHERE campaign_id = ?1 AND account_id = ?2 AND region = ?3",
    )?
    .execute(params![
        task.campaign_id,
        task.account_id,
        task.region,
        ScopeState::Failed as i32,
        reason
    ])?;
    let inserted = conn
        .prepare_cached(
            "INSERT INTO targets (campaign_id, account_id, region, instance_id, status, reason, finished_ms)
             VALUES (?1, ?2, ?3, '', ?4, ?5, ?6) ON CONFLICT DO NOTHING",
        )?
        .execute(params![
            task.campaign_id,
            task.account_id,
            task.region,
            TargetStatus::Error as i32,
            reason,
            now_ms()
        ])?;
    bump(
        conn,
        &task.campaign_id,
        &task.account_id,
        &task.region,
        TargetStatus::Error as i32,
        inserted as i64,
    )
}

/// After a controller restart: every lease gets a whole TTL from `now`, so
/// a worker that is still alive keeps its task by renewing, and an outage
/// longer than the TTL costs no attempt. Only a lease that is not renewed
/// after the restart expires. Returns how many were extended.
pub fn extend_leases(conn: &dyn Sql, now: i64, ttl_ms: i64) -> StoreResult<usize> {
    conn.prepare_cached("UPDATE tasks SET lease_expires_ms = ?2 WHERE state = ?1 AND lease_expires_ms < ?2")?
        .execute(params![task_state::LEASED, now + ttl_ms])
}

/// Leases that ran out before `now`: each is failed as retryable (the worker
/// stopped renewing), which re-queues it while attempts last.
pub fn expire_leases(conn: &dyn Sql, now: i64) -> StoreResult<Vec<(TaskRow, FailOutcome)>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM tasks WHERE state = ?1 AND lease_expires_ms < ?2 LIMIT 1000"
    ))?;
    let expired = stmt
        .query_map(params![task_state::LEASED, now], from_row)?
        .collect::<StoreResult<Vec<_>>>()?;
    let mut out = Vec::new();
    for task in expired {
        let reason = format!(
            "lease expired: worker {} stopped renewing it",
            task.lease_owner.clone().unwrap_or_default()
        );
        match fail(conn, &task.id, None, &reason, Ending::Retryable) {
            Ok(outcome) => out.push((task, outcome)),
            // Gone since it was read: nothing to expire.
            Err(StoreError::Lease(_)) => {}
            Err(error) => return Err(error),
        }
    }
    Ok(out)
}

/// A lease id nobody can guess: 63 random bits from the thread's CSPRNG,
/// never one the store has handed out before (the `sequences` row that
/// numbered them 1, 2, 3... is no longer read).
fn new_lease_id(conn: &dyn Sql) -> StoreResult<i64> {
    loop {
        let id = i64::try_from(rand::random::<u64>() >> 1).unwrap_or(i64::MAX);
        if id == 0 {
            continue;
        }
        let taken: bool = conn
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM leases WHERE lease_id = ?1)")?
            .query_row([id], |r| r.get(0))?;
        if !taken {
            return Ok(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retryable_failure_is_retried_while_attempts_last_then_says_how_many() {
        assert_eq!(
            decide(Ending::Retryable, 1, 3, "throttled"),
            Decision::Retry { extra_attempt: false }
        );
        assert_eq!(
            decide(Ending::Retryable, 2, 3, "throttled"),
            Decision::Retry { extra_attempt: false }
        );
        assert_eq!(
            decide(Ending::Retryable, 3, 3, "throttled"),
            Decision::GiveUp {
                reason: "throttled (gave up after 3 attempts)".into()
            }
        );
    }

    #[test]
    fn a_failure_for_good_is_final_on_any_attempt() {
        for attempt in [1, 2, 3] {
            assert_eq!(
                decide(Ending::Failed, attempt, 3, "AccessDenied"),
                Decision::GiveUp {
                    reason: "AccessDenied".into()
                }
            );
        }
    }

    #[test]
    fn a_hand_back_is_retried_with_its_attempt_given_back_even_on_the_last() {
        for attempt in [1, 3, 7] {
            assert_eq!(
                decide(Ending::HandedBack, attempt, 3, "stopping"),
                Decision::Retry { extra_attempt: true }
            );
        }
    }
}
