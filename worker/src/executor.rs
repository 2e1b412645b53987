//! Execute tasks: one SendCommand for a batch of at most 50 instances, then
//! polling until every instance has a final status; then the same for each
//! command after it (`then`) on the instances that succeeded.
//!
//! At most once per instance (invariant 1): SendCommand has no idempotency
//! token, so the Comment carries the task id; a retried task first adopts
//! what earlier attempts sent (from the lease, then from ListCommands by
//! Comment), and sends only to instances no command covers. A send is
//! recorded with the controller (ReportDispatch) before polling starts, and
//! never made under a lease that may have passed to someone else.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use aws_sdk_ssm::types::{CloudWatchOutputConfig, CommandFilter, CommandFilterKey};
use muster_proto::v1::{
    ExecuteSpec, PatchState, ReportDispatchRequest, StepOutput, TargetResult, TargetStatus, Task, TaskKind, TimeoutKind,
};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::api::Api;
use crate::cadence::{Cadence, Fallback};
use crate::controller::ControllerError;
use crate::lease::{LeaseHandle, LeaseState};
use crate::reporter::{self, Ack};
use crate::scope_clients::{CallError, Guard, ScopeClients, Unsent};
use crate::{Context, TaskError, output, patch_states, trace};

/// Unanswered SendCommands one attempt looks up and tries again after; past
/// this the task fails (retryable) and the next attempt looks once more.
const UNANSWERED_SENDS: u32 = 3;
/// Waits before each look for an unanswered send: SSM lists a new command
/// only after a moment.
const LOST_SEND_LOOKUPS: [Duration; 3] = [Duration::from_secs(1), Duration::from_secs(2), Duration::from_secs(4)];
/// How far before a task's creation to look for its commands (clock skew).
const LIST_SKEW: chrono::Duration = chrono::Duration::minutes(5);

/// A command being followed.
struct Tracked {
    command_id: String,
    /// Instances without a final status yet.
    pending: BTreeSet<String>,
    sent: Instant,
    /// When it was cancelled for giving no final status in time.
    abandoned: Option<Instant>,
}

/// A batch's way through its sequence of commands (ExecuteSpec and its
/// `then`). An instance that succeeds at a command with more after it is
/// held, with that command's steps, and goes on to the next; any other
/// result is final and carries the steps of every command the instance ran,
/// named "<n>/<step>" when there are several.
#[derive(Debug, Default)]
struct Sequence {
    /// Commands in the sequence.
    commands: usize,
    /// The one running now, from 0.
    step: usize,
    /// What the instances that passed earlier commands ran, when they
    /// started, and the patch state the latest patch run left.
    held: HashMap<String, Held>,
    /// Instances that passed the running command.
    passed: BTreeSet<String>,
}

/// What an instance brings from the earlier commands of a sequence: when
/// it started, its steps, the patch state of its latest patch run.
type Held = (Option<prost_types::Timestamp>, Vec<StepOutput>, Option<PatchState>);

impl Sequence {
    fn new(commands: usize) -> Self {
        Self {
            commands,
            ..Default::default()
        }
    }

    /// The result to report for `result` of the running command, or none
    /// while the instance goes on to the next command.
    fn take(&mut self, mut result: TargetResult) -> Option<TargetResult> {
        if self.commands > 1 {
            let n = self.step + 1;
            for step in &mut result.steps {
                step.name = format!("{n}/{}", step.name);
            }
            if result.status != TargetStatus::Success as i32 {
                result.reason = format!("command {n} of {}: {}", self.commands, result.reason);
            }
        }
        let id = result.instance_id.clone();
        let (started, mut steps, patch_state) = self.held.remove(&id).unwrap_or_default();
        steps.append(&mut result.steps);
        result.steps = steps;
        if started.is_some() {
            result.started_at = started;
        }
        if result.patch_state.is_none() {
            result.patch_state = patch_state;
        }
        if self.step + 1 < self.commands && result.status == TargetStatus::Success as i32 {
            self.held
                .insert(id.clone(), (result.started_at, result.steps, result.patch_state));
            self.passed.insert(id);
            return None;
        }
        Some(result)
    }

    /// Moves on to the next command: the instances that go on to it.
    fn next(&mut self) -> BTreeSet<String> {
        self.step += 1;
        std::mem::take(&mut self.passed)
    }
}

/// Where a batch's results go: through its [`Sequence`] to the reporter.
struct Results<'a> {
    ctx: &'a Context,
    lease: &'a LeaseHandle,
    sequence: Sequence,
    acks: Vec<Ack>,
}

impl Results<'_> {
    fn report(&mut self, result: TargetResult) {
        if let Some(result) = self.sequence.take(result) {
            self.acks.push(self.ctx.reporter.report(
                &self.lease.task.task_id,
                self.lease.lease_id,
                result,
                self.lease.lease.takes_compressed_steps,
            ));
        }
    }
}

/// Runs an Execute task until every instance's result is recorded; the
/// caller then completes the task.
pub async fn execute(
    ctx: &Context,
    lease: &LeaseHandle,
    scope: &ScopeClients,
    hand_back: &CancellationToken,
) -> Result<(), TaskError> {
    let spec = lease.task.execute.clone().unwrap_or_default();
    let finished: BTreeSet<String> = lease.lease.finished_instance_ids.iter().cloned().collect();
    let mut going: BTreeSet<String> = spec
        .instance_ids
        .iter()
        .filter(|i| !finished.contains(*i))
        .cloned()
        .collect();
    let commands: Vec<ExecuteSpec> = std::iter::once(ExecuteSpec {
        then: Vec::new(),
        ..spec.clone()
    })
    .chain(spec.then.iter().cloned())
    .collect();
    let mut results = Results {
        ctx,
        lease,
        sequence: Sequence::new(commands.len()),
        acks: Vec::new(),
    };
    let mut outcome = Ok(());
    for (step, command) in commands.iter().enumerate() {
        outcome = run_command(ctx, lease, scope, (command, step), &going, &mut results, hand_back).await;
        going = results.sequence.next();
        if outcome.is_err() || going.is_empty() {
            break;
        }
    }
    // Whatever happened, results already observed are facts: record them.
    let recorded = reporter::all_recorded(results.acks)
        .await
        .map_err(TaskError::Controller);
    outcome?;
    recorded
}

/// Runs command `step` of the sequence on the instances `going` on to it:
/// adopts what earlier attempts sent, sends to the rest, and polls until
/// each has a final status.
async fn run_command(
    ctx: &Context,
    lease: &LeaseHandle,
    scope: &ScopeClients,
    (spec, step): (&ExecuteSpec, usize),
    going: &BTreeSet<String>,
    results: &mut Results<'_>,
    hand_back: &CancellationToken,
) -> Result<(), TaskError> {
    let task = &lease.task;
    // 1. Adopt what earlier attempts sent.
    let mut commands: Vec<Tracked> = lease
        .lease
        .prior_dispatches
        .iter()
        .filter(|d| d.step as usize == step)
        .map(|d| Tracked {
            command_id: d.command_id.clone(),
            pending: d.instance_ids.iter().filter(|i| going.contains(*i)).cloned().collect(),
            sent: Instant::now(),
            abandoned: None,
        })
        .collect();
    if task.attempt > 1 {
        for (command_id, instances) in sent_but_unreported(scope, task, spec, &commands).await? {
            tracing::warn!(task_id = %task.task_id, command_id, step, instances = instances.len(), "adopting a command an earlier attempt sent but never reported");
            record_dispatch(ctx, lease, (&command_id, step), &instances, true).await?;
            commands.push(Tracked {
                command_id,
                pending: instances.into_iter().filter(|i| going.contains(i)).collect(),
                sent: Instant::now(),
                abandoned: None,
            });
        }
    }

    // 2. Send to the instances nothing covers yet.
    let covered: BTreeSet<&String> = commands.iter().flat_map(|c| c.pending.iter()).collect();
    let mut unsent: Vec<String> = going.iter().filter(|i| !covered.contains(i)).cloned().collect();
    if !unsent.is_empty() {
        match lease.state() {
            LeaseState::Lost => return Err(TaskError::LeaseLost),
            LeaseState::Cancelled => cancel_unsent(&mut unsent, results),
            LeaseState::Held => {}
        }
    }
    if !unsent.is_empty() {
        dispatch(ctx, lease, scope, (spec, step), unsent, &mut commands, results).await?;
    }

    // 3. Poll until every instance has a final status.
    let runs_for = ctx.documents.timeout(scope, spec).await;
    let deadline_after = Duration::from_secs(u64::from(spec.delivery_timeout_seconds) + runs_for) + ctx.overdue_margin;
    ctx.stats.batches(1);
    let polled = poll(
        ctx,
        lease,
        scope,
        spec,
        &mut commands,
        results,
        deadline_after,
        hand_back,
    )
    .await;
    ctx.stats.batches(-1);
    polled
}

/// Ends `unsent`, none of which any attempt sent, CANCELLED.
fn cancel_unsent(unsent: &mut Vec<String>, results: &mut Results<'_>) {
    for id in unsent.drain(..) {
        results.report(unsent_result(
            &id,
            TargetStatus::Cancelled,
            "cancelled before it was sent",
        ));
    }
}

/// Sends the command to `unsent` and records where it went. A send that got
/// no answer may have run: its Comment is looked up before anything is sent
/// again, and what is found is adopted. Nothing is sent without a live
/// lease, asked right before each try: the guard ([`LeaseHandle`]'s) asks
/// the controller whether the campaign still runs when its last answer is
/// more than a moment old.
async fn dispatch(
    ctx: &Context,
    lease: &LeaseHandle,
    scope: &ScopeClients,
    (spec, step): (&ExecuteSpec, usize),
    mut unsent: Vec<String>,
    commands: &mut Vec<Tracked>,
    results: &mut Results<'_>,
) -> Result<(), TaskError> {
    let task = &lease.task;
    let mut unanswered = 0;
    while !unsent.is_empty() {
        let error = match send(scope, spec, &unsent, lease).await {
            Ok(command_id) => {
                muster_common::crash::point("worker.after_send");
                record_dispatch(ctx, lease, (&command_id, step), &unsent, false).await?;
                commands.push(Tracked {
                    command_id,
                    pending: unsent.into_iter().collect(),
                    sent: Instant::now(),
                    abandoned: None,
                });
                return Ok(());
            }
            Err(Unsent::NotAllowed) if unanswered == 0 && lease.state() == LeaseState::Cancelled => {
                // Heard right before the send (the guard asks the
                // controller): nothing of this batch went out.
                cancel_unsent(&mut unsent, results);
                return Ok(());
            }
            // After an unanswered send, the next attempt looks for it first.
            Err(Unsent::NotAllowed) => return Err(TaskError::LeaseLost),
            Err(Unsent::Refused(error)) if error.is_retryable() => return Err(TaskError::Aws(error)),
            Err(Unsent::Refused(error)) => {
                // SSM refused the batch for good (access denied, invalid
                // instances): every unsent instance ends ERROR with why.
                let why = format!(
                    "SendCommand refused in account {} region {}: {}",
                    scope.account, scope.region, error.message
                );
                for id in unsent.drain(..) {
                    results.report(unsent_result(&id, TargetStatus::Error, &why));
                }
                return Ok(());
            }
            Err(Unsent::Unanswered(error)) => error,
        };
        unanswered += 1;
        tracing::warn!(task_id = %task.task_id, error = %error, "SendCommand got no answer; looking it up by its comment before sending again");
        let found = find_lost_send(scope, task, spec, commands).await?;
        if !found.is_empty() {
            ctx.stats.lost_send("adopted");
        }
        for (command_id, instances) in found {
            tracing::warn!(task_id = %task.task_id, command_id, instances = instances.len(), "the unanswered SendCommand was accepted; adopting it");
            record_dispatch(ctx, lease, (&command_id, step), &instances, true).await?;
            unsent.retain(|id| !instances.contains(id));
            commands.push(Tracked {
                command_id,
                pending: instances.into_iter().collect(),
                sent: Instant::now(),
                abandoned: None,
            });
        }
        if unsent.is_empty() {
            continue;
        }
        if unanswered >= UNANSWERED_SENDS {
            // The next attempt looks again (by Comment) before it sends.
            ctx.stats.lost_send("left_to_next_attempt");
            return Err(TaskError::Aws(error));
        }
        // The one way an instance can run twice: SSM took the send and
        // lists it later than the lookups looked.
        ctx.stats.lost_send("sent_again");
        tracing::warn!(
            task_id = %task.task_id,
            instances = unsent.len(),
            looked_for = ?LOST_SEND_LOOKUPS.iter().sum::<Duration>(),
            "the unanswered SendCommand was not found by its comment; sending again (if SSM took it and lists it later, these instances run twice)"
        );
    }
    Ok(())
}

/// Records command `step` of the sequence with the controller before it
/// is polled.
async fn record_dispatch(
    ctx: &Context,
    lease: &LeaseHandle,
    (command_id, step): (&str, usize),
    instance_ids: &[String],
    adopted: bool,
) -> Result<(), TaskError> {
    ctx.controller
        .report_dispatch(ReportDispatchRequest {
            task_id: lease.task.task_id.clone(),
            lease_id: lease.lease_id,
            command_id: command_id.to_owned(),
            instance_ids: instance_ids.to_vec(),
            sent_at: (!adopted).then(|| prost_types::Timestamp::from(std::time::SystemTime::now())),
            adopted,
            step: step as u32,
        })
        .await
        .map_err(TaskError::Controller)
}

/// Commands with this task's Comment that nobody knows of, after a send
/// went unanswered: looked for as SSM's listings catch up, a few times.
async fn find_lost_send(
    scope: &ScopeClients,
    task: &Task,
    spec: &ExecuteSpec,
    known: &[Tracked],
) -> Result<Vec<(String, Vec<String>)>, TaskError> {
    for wait in LOST_SEND_LOOKUPS {
        tokio::time::sleep(wait).await;
        let found = sent_but_unreported(scope, task, spec, known).await?;
        if !found.is_empty() {
            return Ok(found);
        }
    }
    Ok(Vec::new())
}

/// A result for an instance that never got the command.
fn unsent_result(instance_id: &str, status: TargetStatus, reason: &str) -> TargetResult {
    TargetResult {
        instance_id: instance_id.to_owned(),
        status: status as i32,
        timeout_kind: TimeoutKind::Unspecified as i32,
        reason: reason.to_owned(),
        finished_at: Some(prost_types::Timestamp::from(std::time::SystemTime::now())),
        ..Default::default()
    }
}

async fn send(
    scope: &ScopeClients,
    spec: &ExecuteSpec,
    instance_ids: &[String],
    guard: &dyn Guard,
) -> Result<String, Unsent> {
    let parameters: HashMap<String, Vec<String>> = spec
        .parameters
        .iter()
        .map(|(name, values)| (name.clone(), values.values.clone()))
        .collect();
    let answer = scope
        .call_once(Api::SendCommand, guard, || {
            let mut request = scope
                .ssm
                .send_command()
                .document_name(&spec.document_name)
                .set_instance_ids(Some(instance_ids.to_vec()))
                .set_parameters(Some(parameters.clone()))
                .comment(&spec.comment)
                .timeout_seconds(spec.delivery_timeout_seconds as i32)
                // Every instance of the batch runs; muster counts errors
                // across batches itself (max_errors).
                .max_concurrency("50")
                .max_errors("100%");
            if !spec.document_version.is_empty() {
                request = request.document_version(&spec.document_version);
            }
            if !spec.output_s3_bucket.is_empty() {
                request = request
                    .output_s3_bucket_name(&spec.output_s3_bucket)
                    .output_s3_key_prefix(&spec.output_s3_key_prefix);
            }
            if !spec.cloudwatch_log_group.is_empty() {
                request = request.cloud_watch_output_config(
                    CloudWatchOutputConfig::builder()
                        .cloud_watch_output_enabled(true)
                        .cloud_watch_log_group_name(&spec.cloudwatch_log_group)
                        .build(),
                );
            }
            request.send()
        })
        .await?;
    let command_id = answer.command.and_then(|c| c.command_id).unwrap_or_default();
    tracing::info!(account = %scope.account, region = %scope.region, command_id, instances = instance_ids.len(), document = %spec.document_name, "command sent");
    Ok(command_id)
}

/// Commands with this task's Comment that the lease does not know about:
/// an earlier attempt sent them and died before reporting.
async fn sent_but_unreported(
    scope: &ScopeClients,
    task: &Task,
    spec: &ExecuteSpec,
    known: &[Tracked],
) -> Result<Vec<(String, Vec<String>)>, TaskError> {
    let created = task
        .created_at
        .as_ref()
        .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32))
        .unwrap_or_else(chrono::Utc::now)
        - LIST_SKEW;
    let filter = CommandFilter::builder()
        .key(CommandFilterKey::InvokedAfter)
        .value(created.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .build()
        .expect("key and value are set");
    let mut found = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = scope
            .call(Api::ListCommands, || {
                scope
                    .ssm
                    .list_commands()
                    .filters(filter.clone())
                    .max_results(50)
                    .set_next_token(token.clone())
                    .send()
            })
            .await
            .map_err(TaskError::Aws)?;
        for command in page.commands() {
            let id = command.command_id().unwrap_or_default();
            if command.comment() == Some(spec.comment.as_str()) && !known.iter().any(|k| k.command_id == id) {
                found.push((id.to_owned(), command.instance_ids().to_vec()));
            }
        }
        token = page.next_token().filter(|t| !t.is_empty()).map(str::to_owned);
        if token.is_none() {
            break;
        }
    }
    Ok(found)
}

/// Follows the batch's commands until every instance has a result: read
/// when Run Command's event says one ended, else polled on the cadence
/// that the campaign's run times suggest; cancelled when the campaign is,
/// given up on when overdue. (Long on purpose: one loop whose wake-ups, a
/// poll due, an event, a lease change, a cancel heard by the long poll, a
/// hand-back, a sibling batch's run time, share the cadence state; what
/// each wake-up does is in `cancel_pending`, `report_ended` and
/// `give_up_on`.)
#[allow(clippy::too_many_arguments)]
async fn poll(
    ctx: &Context,
    lease: &LeaseHandle,
    scope: &ScopeClients,
    spec: &ExecuteSpec,
    commands: &mut [Tracked],
    results: &mut Results<'_>,
    give_up_after: Duration,
    hand_back: &CancellationToken,
) -> Result<(), TaskError> {
    let task_id = &lease.task.task_id;
    let campaign_id = &lease.task.campaign_id;
    let started = Instant::now();
    let mut expectation = ctx.durations.watch(campaign_id);
    let expected = ctx.durations.expected(campaign_id);
    let mut cadence = Cadence::new(expected);
    // Where Run Command's events announce the end, polls are a fallback.
    let mut fallback = Fallback::new(expected);
    let following = ctx.endings.follow(
        &scope.account,
        &scope.region,
        campaign_id,
        &commands
            .iter()
            .filter(|c| !c.pending.is_empty())
            .map(|c| c.command_id.clone())
            .collect::<Vec<_>>(),
    );
    // The next poll, after the send.
    let mut next = cadence.wait(Duration::ZERO);
    let mut cancel_sent = false;
    // From SendCommand to the last instance's end, on SSM's clock.
    let mut longest: Option<Duration> = None;
    let mut state = lease.watch();
    while commands.iter().any(|c| !c.pending.is_empty()) {
        let events = ctx.endings.trusted(&scope.account, &scope.region);
        // A lease cancelled (or lost) before this loop began is acted on
        // at once: only a change of state wakes the wait below.
        let due = match lease.state() {
            LeaseState::Cancelled if !cancel_sent => Duration::ZERO,
            LeaseState::Lost => Duration::ZERO,
            _ if events => fallback.due(),
            _ => next,
        };
        let mut by_event = false;
        tokio::select! {
            () = tokio::time::sleep_until((started + due).into()) => {}
            () = following.ended() => by_event = true,
            _ = state.changed() => {}
            // The controller's long poll heard of the cancel before the
            // lease's next renewal: act on it now.
            () = following.cancelling(), if lease.state() == LeaseState::Held => lease.cancelling(),
            () = hand_back.cancelled() => return Err(TaskError::HandedBack),
            expected = expectation.changed(), if cadence.uninformed() => {
                // Another batch of the campaign ended: poll when this one
                // should, if that is sooner than planned.
                fallback.learn(expected);
                if let Some(sooner) = cadence.learn(expected, next) {
                    tracing::debug!(task_id, expected_ms = expected.as_millis() as u64, "poll brought forward");
                    next = sooner;
                }
                continue;
            }
        }
        let elapsed = started.elapsed();
        next = elapsed + cadence.wait(elapsed);
        if events && !by_event {
            fallback.polled(elapsed);
        }
        ctx.stats.poll(by_event);
        tracing::debug!(
            task_id,
            by_event,
            events,
            elapsed_ms = elapsed.as_millis() as u64,
            "polling the batch"
        );
        let pending_before = commands.iter().filter(|c| !c.pending.is_empty()).count();
        match lease.state() {
            LeaseState::Lost => return Err(TaskError::LeaseLost),
            LeaseState::Cancelled if !cancel_sent => {
                cancel_pending(scope, task_id, commands).await?;
                cancel_sent = true;
                cadence = Cadence::new(None);
                next = started.elapsed() + cadence.wait(Duration::ZERO);
                fallback.soon(started.elapsed());
            }
            _ => {}
        }
        for command in commands.iter_mut().filter(|c| !c.pending.is_empty()) {
            if let Some(took) = report_ended(scope, spec, command, results).await? {
                longest = longest.max(Some(took));
            }
            if command.pending.is_empty() || command.sent.elapsed() <= give_up_after {
                continue;
            }
            if give_up_on(ctx, scope, task_id, command, results, give_up_after).await {
                // SSM's answer to a cancel comes soon: poll from the start.
                cadence = Cadence::new(None);
                next = started.elapsed() + cadence.wait(Duration::ZERO);
                fallback.soon(started.elapsed());
            }
        }
        let pending_after = commands.iter().filter(|c| !c.pending.is_empty()).count();
        if by_event && pending_after > 0 {
            // The listing lags the event, or another command still runs.
            fallback.soon(started.elapsed());
        } else if events && !by_event && !cancel_sent && pending_after < pending_before {
            // A fallback poll found an end whose event never came (a
            // cancelled batch, polled soon after its cancel, proves
            // nothing of the kind).
            ctx.endings.missed(&scope.account, &scope.region);
        }
    }
    drop(following);
    // A cancelled batch says nothing about how long the command takes.
    if let Some(took) = longest.filter(|_| !cancel_sent) {
        ctx.durations.record(campaign_id, took);
    }
    Ok(())
}

/// Cancels the batch's commands that still have instances running: the
/// campaign was cancelled.
async fn cancel_pending(scope: &ScopeClients, task_id: &str, commands: &[Tracked]) -> Result<(), TaskError> {
    for command in commands.iter().filter(|c| !c.pending.is_empty()) {
        let id = command.command_id.clone();
        scope
            .call(Api::CancelCommand, || scope.ssm.cancel_command().command_id(&id).send())
            .await
            .map_err(TaskError::Aws)?;
        tracing::info!(task_id, command_id = %command.command_id, "campaign cancelled; command cancelled");
    }
    Ok(())
}

/// Reads one listing of `command`'s invocations and reports each pending
/// instance that ended, with its output; the longest of their run times.
async fn report_ended(
    scope: &ScopeClients,
    spec: &ExecuteSpec,
    command: &mut Tracked,
    results: &mut Results<'_>,
) -> Result<Option<Duration>, TaskError> {
    let invocations = list_invocations(scope, &command.command_id)
        .instrument(trace::step("poll", "internal"))
        .await
        .map_err(TaskError::Aws)?;
    let mut longest = None;
    let mut ended: Vec<patch_states::Ended> = Vec::new();
    for invocation in invocations {
        let id = invocation.instance_id().unwrap_or_default().to_owned();
        let status = invocation.status().map(|s| s.as_str()).unwrap_or_default();
        if !command.pending.contains(&id) || !output::is_final(status) {
            continue;
        }
        let result = output::result_of(scope, spec, &invocation)
            .instrument(trace::step("fetch output", "internal"))
            .await
            .map_err(TaskError::Aws)?;
        if let Some(took) = ran_for(&invocation, &result) {
            longest = longest.max(Some(took));
        }
        command.pending.remove(&id);
        ended.push((result, invocation.requested_date_time().copied()));
    }
    if !ended.is_empty() && muster_proto::reports_patch_state(&spec.document_name) {
        patch_states::attach(scope, &results.lease.task.task_id, &mut ended)
            .instrument(trace::step("read patch states", "internal"))
            .await;
    }
    for (result, _) in ended {
        results.report(result);
    }
    Ok(longest)
}

/// An overdue command: first cancelled, so it cannot run on unseen (its
/// instances stay running, and count against max_concurrency, until SSM
/// says where they ended); its instances end ERROR only if SSM still says
/// nothing `abandon_grace` after that. True when the cancel was sent now.
async fn give_up_on(
    ctx: &Context,
    scope: &ScopeClients,
    task_id: &str,
    command: &mut Tracked,
    results: &mut Results<'_>,
    give_up_after: Duration,
) -> bool {
    match command.abandoned {
        None => {
            let id = command.command_id.clone();
            let cancelled = scope
                .call(Api::CancelCommand, || scope.ssm.cancel_command().command_id(&id).send())
                .await;
            tracing::warn!(task_id, command_id = %command.command_id, cancelled = cancelled.is_ok(), "no final status in time; command cancelled");
            command.abandoned = Some(Instant::now());
            true
        }
        Some(at) if at.elapsed() > ctx.abandon_grace => {
            let why = format!(
                "SSM gave no final status for command {} within {}s; it was cancelled",
                command.command_id,
                (give_up_after + ctx.abandon_grace).as_secs()
            );
            for id in std::mem::take(&mut command.pending) {
                let mut result = unsent_result(&id, TargetStatus::Error, &why);
                result.command_id = command.command_id.clone();
                results.report(result);
            }
            false
        }
        Some(_) => false,
    }
}

/// From the send to an instance's end, on SSM's clock.
fn ran_for(invocation: &aws_sdk_ssm::types::CommandInvocation, result: &TargetResult) -> Option<Duration> {
    let requested = std::time::SystemTime::try_from(*invocation.requested_date_time()?).ok()?;
    let finished = std::time::SystemTime::try_from(result.finished_at?).ok()?;
    finished.duration_since(requested).ok()
}

/// Every invocation of a command (one page for a batch of 50). Invisible
/// right after the send: an empty list then means "not yet", not failure.
async fn list_invocations(
    scope: &ScopeClients,
    command_id: &str,
) -> Result<Vec<aws_sdk_ssm::types::CommandInvocation>, CallError> {
    let mut all = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = scope
            .call(Api::ListCommandInvocations, || {
                scope
                    .ssm
                    .list_command_invocations()
                    .command_id(command_id)
                    .details(true)
                    .max_results(50)
                    .set_next_token(token.clone())
                    .send()
            })
            .await?;
        all.extend(page.command_invocations().iter().cloned());
        token = page.next_token().filter(|t| !t.is_empty()).map(str::to_owned);
        if token.is_none() {
            return Ok(all);
        }
    }
}

/// Why an Execute or Discover task stopped early, and whether another
/// attempt may succeed.
pub fn describe(error: &TaskError, kind: TaskKind) -> (String, bool) {
    match error {
        TaskError::Assume(e) => (e.to_string(), e.class.is_retryable()),
        TaskError::Aws(e) => (e.to_string(), e.is_retryable()),
        TaskError::Controller(ControllerError::Unreachable(m)) => (format!("controller unreachable: {m}"), true),
        TaskError::Controller(e) => (e.to_string(), false),
        TaskError::Refused(why) => (format!("{why}; nothing was sent"), false),
        TaskError::LeaseLost => ("lease lost".into(), true),
        TaskError::HandedBack if kind == TaskKind::Discover => {
            ("worker stopping; the next attempt lists the scope again".into(), true)
        }
        TaskError::HandedBack => (
            "worker stopping; the next attempt adopts the commands already sent".into(),
            true,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ssm::types::CommandInvocation;

    fn result(id: &str, status: TargetStatus, step: &str, started: i64) -> TargetResult {
        TargetResult {
            instance_id: id.into(),
            status: status as i32,
            reason: format!("{status:?}"),
            steps: vec![StepOutput {
                name: step.into(),
                ..Default::default()
            }],
            started_at: Some(prost_types::Timestamp {
                seconds: started,
                nanos: 0,
            }),
            ..Default::default()
        }
    }

    fn names(result: &TargetResult) -> Vec<&str> {
        result.steps.iter().map(|s| s.name.as_str()).collect()
    }

    #[test]
    fn an_instance_goes_on_while_it_succeeds_and_ends_with_every_step_it_ran() {
        let mut sequence = Sequence::new(2);
        assert!(
            sequence
                .take(result("i-1", TargetStatus::Success, "PatchLinux", 10))
                .is_none()
        );
        let failed = sequence
            .take(result("i-2", TargetStatus::Failed, "PatchLinux", 11))
            .expect("a failure ends the sequence");
        assert_eq!(names(&failed), ["1/PatchLinux"]);
        assert_eq!(failed.reason, "command 1 of 2: Failed");
        assert_eq!(sequence.next().into_iter().collect::<Vec<_>>(), ["i-1"]);

        let done = sequence
            .take(result("i-1", TargetStatus::Success, "PatchLinux", 20))
            .expect("the last command's result is final");
        assert_eq!(names(&done), ["1/PatchLinux", "2/PatchLinux"]);
        assert_eq!(done.reason, "Success");
        assert_eq!(done.started_at.unwrap().seconds, 10, "it started at the first command");
        assert!(sequence.next().is_empty());
    }

    #[test]
    fn a_sequence_ends_with_the_patch_state_of_its_latest_patch_run() {
        let state = |missing: u32| PatchState {
            operation: "Scan".into(),
            missing,
            ..Default::default()
        };
        let mut sequence = Sequence::new(3);
        let mut scanned = result("i-1", TargetStatus::Success, "PatchLinux", 10);
        scanned.patch_state = Some(state(3));
        assert!(sequence.take(scanned).is_none());
        sequence.next();
        let mut installed = result("i-1", TargetStatus::Success, "PatchLinux", 20);
        installed.patch_state = Some(state(0));
        assert!(sequence.take(installed).is_none());
        sequence.next();
        // A last command that is no patch run (a reboot) reports none.
        let done = sequence
            .take(result("i-1", TargetStatus::Success, "aws:runShellScript", 30))
            .unwrap();
        assert_eq!(done.patch_state, Some(state(0)), "the install's, not the scan's");
    }

    #[test]
    fn a_single_command_reports_as_it_always_did() {
        let mut sequence = Sequence::new(1);
        let done = sequence
            .take(result("i-1", TargetStatus::Success, "aws:runShellScript", 5))
            .unwrap();
        assert_eq!(names(&done), ["aws:runShellScript"]);
        let failed = sequence
            .take(result("i-2", TargetStatus::Failed, "aws:runShellScript", 5))
            .unwrap();
        assert_eq!(failed.reason, "Failed");
    }

    #[test]
    fn a_batch_ran_from_its_request_to_the_instance_end_on_ssms_clock() {
        let invocation = CommandInvocation::builder()
            .requested_date_time(aws_smithy_types::DateTime::from_secs(1_000))
            .build();
        let finished_at = |seconds, nanos| TargetResult {
            finished_at: Some(prost_types::Timestamp { seconds, nanos }),
            ..Default::default()
        };
        assert_eq!(
            ran_for(&invocation, &finished_at(1_030, 500_000_000)),
            Some(Duration::from_millis(30_500))
        );
        assert_eq!(
            ran_for(&invocation, &finished_at(999, 0)),
            None,
            "clock skew teaches nothing"
        );
        assert_eq!(
            ran_for(&invocation, &TargetResult::default()),
            None,
            "no end, no duration"
        );
    }
}
