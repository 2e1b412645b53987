//! One leased task, from lease to complete (or fail): credentials first, then
//! discovery or execution, then the verdict to the controller.

use std::sync::Arc;

use muster_common::retry::ErrorClass;
use muster_common::telemetry::attr;
use muster_proto::v1::{Task, TaskKind};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::credentials::RoleKey;
use crate::executor::{self, describe};
use crate::lease::{Granted, LeaseHandle};
use crate::{Context, TaskError, discovery, trace};

/// Most leases to take with one answer (a lease or a completion): the
/// controller's most, a scope's whole first release.
const MAX_HANDED_ON: usize = 100;

/// A lease the controller handed on with a completion, and the slot it runs in.
pub type HandedOn = (Granted, OwnedSemaphorePermit);

/// Free slots, at most MAX_HANDED_ON, held for leases the controller may
/// hand on with an answer; none for a worker that is stopping or cannot
/// reach its queue.
pub(crate) fn reserve_room(ctx: &Context, slots: &Arc<Semaphore>) -> Option<OwnedSemaphorePermit> {
    ctx.readiness().ok()?;
    let spare = slots.available_permits().min(MAX_HANDED_ON);
    slots.clone().try_acquire_many_owned(spare as u32).ok()
}

/// The span of one task attempt. Its trace starts on the controller: at the
/// enqueue span for a task from the queue, at the hand-off span for one
/// handed on with a completion; `traceparent` links to it.
pub fn span(campaign_id: &str, task_id: &str, attempt: u32, traceparent: Option<&str>) -> tracing::Span {
    let span = tracing::info_span!(
        parent: None,
        "task",
        otel.name = "task",
        muster.campaign.id = %campaign_id,
        muster.task.id = %task_id,
        muster.task.attempt = attempt,
        cloud.account.id = tracing::field::Empty,
        cloud.region = tracing::field::Empty,
        muster.task.kind = tracing::field::Empty,
    );
    if let Some(parent) = traceparent.filter(|p| !p.is_empty()) {
        muster_common::telemetry::set_parent(&span, parent);
    }
    span
}

/// Runs a granted lease to its end, in the current (task) span. `slots` are
/// the worker's free task slots: completing a Discover task offers some of
/// them to the controller, which may hand on that scope's first batches;
/// those come back, each with its slot, for the caller to run.
pub async fn run(
    ctx: &Context,
    lease: Granted,
    slots: &Arc<Semaphore>,
    hand_back: &CancellationToken,
) -> Vec<HandedOn> {
    let task = lease.lease.task.clone().unwrap_or_default();
    let kind = TaskKind::try_from(task.kind).unwrap_or(TaskKind::Unspecified);
    let span = tracing::Span::current();
    span.record(attr::ACCOUNT, task.account_id.as_str());
    span.record(attr::REGION, task.region.as_str());
    span.record(attr::TASK_KIND, kind.as_str_name());
    let scope = Arc::new(trace::Scope {
        campaign_id: task.campaign_id.clone(),
        task_id: task.task_id.clone(),
        account: task.account_id.clone(),
        region: task.region.clone(),
    });
    trace::scoped(scope, Box::pin(run_scoped(ctx, lease, slots, hand_back))).await
}

async fn run_scoped(
    ctx: &Context,
    lease: Granted,
    slots: &Arc<Semaphore>,
    hand_back: &CancellationToken,
) -> Vec<HandedOn> {
    let lease = LeaseHandle::start(ctx.controller.clone(), lease);
    let task = lease.task.clone();
    let kind = TaskKind::try_from(task.kind).unwrap_or(TaskKind::Unspecified);
    tracing::info!(task_id = %task.task_id, campaign_id = %task.campaign_id, account = %task.account_id, region = %task.region, attempt = task.attempt, kind = kind.as_str_name(), "task leased");
    ctx.stats.tasks(1);
    // This lease's share of the scope's API budget, for as long as it runs.
    let _share = ctx
        .limiter
        .share(&task.account_id, &task.region, task.api_calls_per_second);
    let outcome = perform(ctx, &lease, kind, hand_back).await;
    let handed_on = conclude(ctx, lease, kind, outcome, slots).await;
    ctx.stats.tasks(-1);
    handed_on
}

/// Gives a lease back unrun: granted to a worker that is stopping (the
/// answer to an ask in flight as the stop came), it starts no task there.
/// A hand-back costs the task no attempt, and another worker takes it at
/// once instead of after the lease runs out.
pub async fn hand_back_unrun(ctx: &Context, granted: Granted) {
    let lease = LeaseHandle::start(ctx.controller.clone(), granted);
    let task_id = lease.task.task_id.clone();
    let reason = "worker stopping; handed back before it ran";
    tracing::warn!(task_id = %task_id, reason, "leased as the worker stops; handing it back");
    if let Err(error) = lease.fail(reason, true, true).await {
        tracing::warn!(task_id = %task_id, %error, "could not hand the lease back; it runs out and the task is retried");
    }
}

/// The role session a task's calls in its account use.
fn role_of(task: &Task) -> RoleKey {
    RoleKey {
        role_arn: task.role_arn.clone(),
        external_id: Some(task.external_id.clone()).filter(|e| !e.is_empty()),
        session_name: task.role_session_name.clone(),
        source_identity: Some(task.source_identity.clone()).filter(|s| !s.is_empty()),
        campaign_id: task.campaign_id.clone(),
        duration_seconds: task.session_duration_seconds.max(900),
    }
}

/// Does the task's work in its account: assumes the role, then discovers
/// or executes. A task this worker cannot run fails before any role is
/// assumed.
async fn perform(
    ctx: &Context,
    lease: &LeaseHandle,
    kind: TaskKind,
    hand_back: &CancellationToken,
) -> Result<(), TaskError> {
    let task = &lease.task;
    let unknown = || {
        TaskError::Aws(crate::scope_clients::CallError {
            api: "LeaseTask",
            account: task.account_id.clone(),
            region: task.region.clone(),
            class: ErrorClass::Final,
            code: None,
            message: "the controller sent a task of unknown kind; is this worker older than the controller?".into(),
        })
    };
    if kind == TaskKind::Unspecified {
        return Err(unknown());
    }
    let role = role_of(task);
    ctx.credentials
        .get(&role)
        .instrument(trace::step("assume role", "internal"))
        .await
        .map_err(TaskError::Assume)?;
    let scope = ctx.targets.get(
        &ctx.sdk,
        &task.region,
        &role,
        &ctx.credentials,
        &ctx.limiter,
        &ctx.stats,
    );
    match kind {
        TaskKind::Discover => {
            let spec = task.discover.clone().unwrap_or_default();
            let discovering = discovery::discover(
                &scope,
                &spec,
                (ctx.controller.as_ref(), &ctx.documents),
                &task.task_id,
                lease.lease_id,
            )
            .instrument(trace::step("discover", "internal"));
            // Discovery only reads AWS, and the controller takes instances
            // under the current lease only, so a stopping worker lets go of
            // it at once, wherever it is: the next attempt lists the scope
            // again, and nothing waits out the hand-back budget.
            tokio::select! {
                biased;
                found = discovering => found.map(|_| ()),
                () = hand_back.cancelled() => Err(TaskError::HandedBack),
            }
        }
        TaskKind::Execute => {
            executor::execute(ctx, lease, &scope, hand_back)
                .instrument(trace::step("execute", "internal"))
                .await
        }
        TaskKind::Unspecified => Err(unknown()),
    }
}

/// Tells the controller how the task ended: completed (a Discover's
/// completion may hand on leases of its scope, returned with their slots),
/// failed (retryable or not, or handed back by a stopping worker), or
/// nothing when the lease was lost.
async fn conclude(
    ctx: &Context,
    lease: LeaseHandle,
    kind: TaskKind,
    outcome: Result<(), TaskError>,
    slots: &Arc<Semaphore>,
) -> Vec<HandedOn> {
    let task_id = lease.task.task_id.clone();
    let mut handed_on = Vec::new();
    match outcome {
        Ok(()) => {
            // Only a Discover completion hands on work.
            let mut reserved = if kind == TaskKind::Discover {
                reserve_room(ctx, slots)
            } else {
                None
            };
            let capacity = reserved.as_ref().map_or(0, |r| r.num_permits() as u32);
            match lease.complete(capacity).await {
                Ok(next) => {
                    tracing::info!(task_id = %task_id, handed_on = next.len(), "task complete");
                    for lease in next {
                        match reserved.as_mut().and_then(|r| r.split(1)) {
                            Some(permit) => handed_on.push((lease, permit)),
                            // More than asked for: not this worker's to run; the
                            // lease expires and the controller retries it.
                            None => {
                                tracing::warn!(task_id = %task_id, "the controller handed on more tasks than asked")
                            }
                        }
                    }
                }
                Err(error) => tracing::warn!(task_id = %task_id, %error, "could not complete the task"),
            }
        }
        Err(TaskError::LeaseLost) => {
            tracing::warn!(task_id = %task_id, "lease lost; the controller hands the task to another attempt");
        }
        Err(error) => {
            let (reason, retryable) = describe(&error, kind);
            tracing::warn!(task_id = %task_id, reason, retryable, "task failed");
            let handed_back = matches!(error, TaskError::HandedBack);
            if let Err(error) = lease.fail(&reason, retryable, handed_back).await {
                tracing::warn!(task_id = %task_id, %error, "could not report the failure");
            }
        }
    }
    handed_on
}
