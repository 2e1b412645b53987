//! The SQS side: long-poll loops that receive TaskRefs, lease each task, and
//! run it. A message is deleted once its task is leased (the controller owns
//! retries from then on) or once the controller says there is nothing to run.
//! Every message is untrusted: one that is not a TaskRef is logged and left
//! for the queue's redrive policy.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_sqs::types::DeleteMessageBatchRequestEntry;
use muster_proto::v1::{LeaseOutcome, LeaseTaskRequest, LeaseTaskResponse, TaskRef};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::Context;
use crate::controller::ControllerError;
use crate::lease::Granted;

/// SQS's most messages per receive.
const RECEIVE_BATCH: usize = 10;
/// SQS's longest long-poll.
const LONG_POLL_SECONDS: i32 = 20;

/// How long a handled message waits for others to be deleted with it.
/// Deleting later costs nothing (the message stays hidden for its
/// visibility timeout), and a burst of leases then costs one call, not ten.
const DELETE_LINGER: Duration = Duration::from_millis(250);

/// A message from the task queue, as the consumer reads it.
#[derive(Debug, Clone, Default)]
pub struct Delivery {
    /// The queue's id of the message, for logs.
    pub message_id: String,
    /// What it says (a TaskRef, if it is what it should be).
    pub body: String,
    /// The handle that deletes or releases it.
    pub receipt: Option<String>,
    /// The controller's trace context, from the message's attributes.
    pub traceparent: Option<String>,
}

/// Where task references come from: SQS ([`Queue`]), or memory in unit
/// tests.
#[tonic::async_trait]
pub trait TaskQueue: Send + Sync + 'static {
    /// Up to `max` messages, waiting up to a long poll for the first; the
    /// error says why none could be had.
    async fn receive(&self, max: usize) -> Result<Vec<Delivery>, String>;
    /// Makes a received message visible to other workers right away.
    async fn release(&self, delivery: &Delivery);
    /// Deletes a handled message, batched with others handled about now.
    fn delete(&self, delivery: &Delivery);
}

/// The SQS task queue.
#[derive(Clone)]
pub struct Queue {
    /// SQS client (the worker's own credentials).
    pub sqs: aws_sdk_sqs::Client,
    /// The task queue.
    pub url: String,
    /// Receipt handles to delete, by message id.
    deletes: mpsc::UnboundedSender<(String, String)>,
}

impl Queue {
    /// A queue, and the task that deletes its handled messages in batches;
    /// that task flushes and ends once every clone of the queue is dropped.
    pub fn new(sqs: aws_sdk_sqs::Client, url: String) -> (Self, tokio::task::JoinHandle<()>) {
        let (deletes, pending) = mpsc::unbounded_channel();
        let deleting = tokio::spawn(delete_batches(sqs.clone(), url.clone(), pending));
        (Self { sqs, url, deletes }, deleting)
    }
}

#[tonic::async_trait]
impl TaskQueue for Queue {
    async fn receive(&self, max: usize) -> Result<Vec<Delivery>, String> {
        let answer = self
            .sqs
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max.clamp(1, RECEIVE_BATCH) as i32)
            .wait_time_seconds(LONG_POLL_SECONDS)
            .message_attribute_names("All")
            .send()
            .await
            .map_err(|error| muster_common::retry::describe(&error))?;
        Ok(answer
            .messages
            .unwrap_or_default()
            .into_iter()
            .map(|message| Delivery {
                traceparent: message
                    .message_attributes()
                    .and_then(|attributes| attributes.get("traceparent"))
                    .and_then(|value| value.string_value())
                    .map(str::to_owned),
                message_id: message.message_id.unwrap_or_default(),
                body: message.body.unwrap_or_default(),
                receipt: message.receipt_handle,
            })
            .collect())
    }

    async fn release(&self, delivery: &Delivery) {
        let Some(receipt) = &delivery.receipt else {
            return;
        };
        if let Err(error) = self
            .sqs
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(receipt)
            .visibility_timeout(0)
            .send()
            .await
        {
            tracing::warn!(message_id = delivery.message_id, error = %muster_common::retry::describe(&error), "could not release queue message");
        }
    }

    fn delete(&self, delivery: &Delivery) {
        let Some(receipt) = &delivery.receipt else {
            return;
        };
        // Only fails once the delete loop has ended, at exit: the message then
        // comes back after its visibility timeout and is deleted as finished.
        let _ = self.deletes.send((delivery.message_id.clone(), receipt.clone()));
    }
}

/// Deletes handled messages with DeleteMessageBatch, up to ten a call.
async fn delete_batches(sqs: aws_sdk_sqs::Client, url: String, mut pending: mpsc::UnboundedReceiver<(String, String)>) {
    while let Some(first) = pending.recv().await {
        let mut batch = vec![first];
        let linger = tokio::time::sleep(DELETE_LINGER);
        tokio::pin!(linger);
        while batch.len() < RECEIVE_BATCH {
            tokio::select! {
                () = &mut linger => break,
                next = pending.recv() => match next {
                    Some(next) => batch.push(next),
                    None => break,
                },
            }
        }
        let entries: Vec<DeleteMessageBatchRequestEntry> = batch
            .iter()
            .enumerate()
            .map(|(i, (_, receipt))| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(receipt)
                    .build()
                    .expect("id and receipt handle are set")
            })
            .collect();
        // A message not deleted comes back after its visibility timeout; the
        // controller then answers that its task is leased or finished, and it
        // is deleted then.
        match sqs
            .delete_message_batch()
            .queue_url(&url)
            .set_entries(Some(entries))
            .send()
            .await
        {
            Ok(answer) => {
                for failed in answer.failed() {
                    let message_id = failed
                        .id()
                        .parse::<usize>()
                        .ok()
                        .and_then(|i| batch.get(i))
                        .map_or("", |(id, _)| id.as_str());
                    tracing::warn!(
                        message_id,
                        code = failed.code(),
                        message = failed.message(),
                        "could not delete queue message"
                    );
                }
            }
            Err(error) => {
                tracing::warn!(messages = batch.len(), error = %muster_common::retry::describe(&error), "could not delete queue messages");
            }
        }
    }
}

/// Runs `pollers` receive loops until `stop` is cancelled. Tasks run on
/// `tracker`, at most `max_tasks` at once.
pub async fn run(
    ctx: Arc<Context>,
    queue: Arc<dyn TaskQueue>,
    pollers: usize,
    max_tasks: usize,
    stop: CancellationToken,
    hand_back: CancellationToken,
    tracker: TaskTracker,
) {
    let slots = Arc::new(Semaphore::new(max_tasks.max(1)));
    let mut loops = Vec::new();
    for poller in 0..pollers.max(1) {
        loops.push(tokio::spawn(receive_loop(
            poller,
            ctx.clone(),
            queue.clone(),
            slots.clone(),
            stop.clone(),
            hand_back.clone(),
            tracker.clone(),
        )));
    }
    for handle in loops {
        let _ = handle.await;
    }
}

async fn receive_loop(
    poller: usize,
    ctx: Arc<Context>,
    queue: Arc<dyn TaskQueue>,
    slots: Arc<Semaphore>,
    stop: CancellationToken,
    hand_back: CancellationToken,
    tracker: TaskTracker,
) {
    let mut failures = 0u32;
    while !stop.is_cancelled() {
        // Take room for the messages before asking for them, so a full
        // worker leaves work on the queue for others.
        let want = slots.available_permits().clamp(1, RECEIVE_BATCH);
        let permits = tokio::select! {
            () = stop.cancelled() => break,
            permits = slots.clone().acquire_many_owned(want as u32) => permits.expect("semaphore never closes"),
        };
        // Not abandoned on stop: SQS may already have handed messages to this
        // long poll, and they would stay hidden for the visibility timeout.
        let asked = std::time::Instant::now();
        let received = queue.receive(want).await;
        let messages = match received {
            Ok(messages) => {
                if failures > 0 && !stop.is_cancelled() {
                    ctx.set_not_ready(None);
                }
                failures = 0;
                ctx.stats.received(asked.elapsed(), messages.len());
                messages
            }
            Err(error) => {
                failures += 1;
                tracing::warn!(poller, error, "receiving from the task queue failed");
                if !stop.is_cancelled() {
                    ctx.set_not_ready(Some(format!("the task queue does not answer: {error}")));
                }
                tokio::time::sleep(muster_common::retry::backoff(
                    failures,
                    Duration::from_millis(500),
                    Duration::from_secs(20),
                ))
                .await;
                continue;
            }
        };
        if stop.is_cancelled() {
            // Stopping: give what arrived back to the queue at once.
            for message in &messages {
                queue.release(message).await;
            }
            break;
        }
        let mut permits = permits;
        let runner = Runner {
            ctx: ctx.clone(),
            slots: slots.clone(),
            tracker: tracker.clone(),
            stop: stop.clone(),
            hand_back: hand_back.clone(),
        };
        for message in messages {
            let permit = permits.split(1).expect("one permit per message");
            let queue = queue.clone();
            let runner = runner.clone();
            tracker.spawn(async move {
                Box::pin(handle(&runner, queue.as_ref(), message)).await;
                drop(permit);
            });
        }
    }
}

/// Runs leased tasks, then the leases the controller hands on with their
/// completion, each in a slot of its own on the same tracker (so shutdown
/// waits for them as for any task).
#[derive(Clone)]
struct Runner {
    ctx: Arc<Context>,
    slots: Arc<Semaphore>,
    tracker: TaskTracker,
    stop: CancellationToken,
    hand_back: CancellationToken,
}

impl Runner {
    async fn run(&self, lease: Granted) {
        // A stopping worker starts nothing new ("no new tasks"): a lease
        // that comes after the stop, the answer to an ask in flight or to
        // the last ask at hand-back, goes straight back.
        if self.stop.is_cancelled() {
            crate::task::hand_back_unrun(&self.ctx, lease).await;
            return;
        }
        for (lease, permit) in crate::task::run(&self.ctx, lease, &self.slots, &self.hand_back).await {
            self.spawn(lease, permit);
        }
    }

    fn spawn(&self, lease: Granted, permit: OwnedSemaphorePermit) {
        let task = lease.lease.task.clone().unwrap_or_default();
        let span = crate::task::span(
            &task.campaign_id,
            &task.task_id,
            task.attempt,
            Some(&lease.lease.traceparent),
        );
        let runner = self.clone();
        let running: Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(async move {
            runner.run(lease).await;
            drop(permit);
        });
        self.tracker.spawn(running.instrument(span));
    }
}

async fn handle(runner: &Runner, queue: &dyn TaskQueue, message: Delivery) {
    let message_id = message.message_id.clone();
    let task_ref = match muster_proto::decode_task_ref(&message.body) {
        Ok(task_ref) => task_ref,
        Err(error) => {
            runner.ctx.stats.count_handled("malformed");
            tracing::warn!(message_id, %error, "malformed queue message; leaving it for the redrive policy");
            return;
        }
    };
    // One span per task attempt, continuing the controller's trace.
    let span = crate::task::span(
        &task_ref.campaign_id,
        &task_ref.task_id,
        task_ref.attempt,
        message.traceparent.as_deref(),
    );
    leased(runner, queue, &message, task_ref).instrument(span).await;
}

async fn leased(runner: &Runner, queue: &dyn TaskQueue, message: &Delivery, task_ref: TaskRef) {
    let ctx = &runner.ctx;
    let task_id = task_ref.task_id.clone();
    // Room for the account's other Discover tasks, should this be one; what
    // the answer leaves unused goes back as soon as it comes.
    let mut reserved = crate::task::reserve_room(ctx, &runner.slots);
    let request = LeaseTaskRequest {
        task: Some(task_ref),
        worker_id: ctx.worker_id.clone(),
        capacity: reserved.as_ref().map_or(0, |r| r.num_permits() as u32),
        // Asked again unchanged when no answer comes: if the first ask took
        // effect, the controller answers the repeat with the same leases.
        request_id: format!("{:016x}", rand::random::<u64>()),
        protocol: muster_proto::WORKER_PROTOCOL,
    };
    let (answer, asked) = ask_for_lease(ctx, &request, &runner.hand_back).await;
    let answer = match answer {
        Ok(answer) => answer,
        Err(error) => {
            // Refused outright: this worker is older than the controller's
            // worker protocol, or the ask broke a rule; either way the
            // message comes back for another worker.
            let refused = !matches!(error, ControllerError::Unreachable(_));
            ctx.stats.count_handled(if refused { "refused" } else { "unanswered" });
            tracing::warn!(task_id, %error, "could not lease the task; the message will come back");
            return;
        }
    };
    let outcome = LeaseOutcome::try_from(answer.outcome).unwrap_or(LeaseOutcome::Unspecified);
    queue.delete(message);
    ctx.stats.count_handled(outcome_label(outcome));
    match (outcome, answer.lease) {
        (LeaseOutcome::Granted, Some(lease)) => {
            for sibling in answer.same_account {
                match reserved.as_mut().and_then(|r| r.split(1)) {
                    Some(permit) => runner.spawn(Granted { lease: sibling, asked }, permit),
                    // More than asked for: not this worker's to run; the
                    // lease expires and the controller retries it.
                    None => tracing::warn!(task_id, "the controller leased more tasks than asked"),
                }
            }
            drop(reserved);
            runner.run(Granted { lease, asked }).await;
        }
        // The everyday reasons: SQS delivers at least once, and leases
        // handed on with CompleteTask or a Discover lease leave their
        // messages behind. Not worth an operator's attention.
        (
            LeaseOutcome::LeasedElsewhere
            | LeaseOutcome::Finished
            | LeaseOutcome::StaleAttempt
            | LeaseOutcome::CampaignInactive,
            _,
        ) => {
            tracing::debug!(
                task_id,
                outcome = outcome.as_str_name(),
                detail = answer.detail,
                "not running task; message deleted"
            );
        }
        // A message the controller knows nothing of (another deployment's
        // queue?), or an answer that breaks the protocol.
        (outcome, _) => {
            tracing::warn!(
                task_id,
                outcome = outcome.as_str_name(),
                detail = answer.detail,
                "not running task; message deleted"
            );
        }
    }
}

/// Asks for a lease, and asks again (the same request) while the answer is
/// lost, for as long as a lease the first ask granted could still be held:
/// the lease TTL the controller last gave. A controller that took the ask
/// and died before answering, or lost the answer, gives the same lease
/// again once it answers, and the task spends no attempt. A worker handing
/// its work back asks once more, at once, and stops. Unanswered after
/// that, the queue message comes back after its visibility timeout. Also
/// says when the answered ask started: the lease's TTL counts from there,
/// not from the answer.
async fn ask_for_lease(
    ctx: &Context,
    request: &LeaseTaskRequest,
    hand_back: &CancellationToken,
) -> (Result<LeaseTaskResponse, ControllerError>, tokio::time::Instant) {
    let first = tokio::time::Instant::now();
    let held_until = first + ctx.lease_ttl();
    let mut asks = 0;
    let mut last = false;
    loop {
        asks += 1;
        let asked = tokio::time::Instant::now();
        let answer = ctx.controller.lease_task(request.clone()).await;
        let Err(ControllerError::Unreachable(error)) = &answer else {
            if let Some(ttl) = answer.as_ref().ok().and_then(|a| a.lease.as_ref()).and_then(|l| l.ttl) {
                ctx.heard_lease_ttl(ttl);
            }
            return (answer, asked);
        };
        let wait = muster_common::retry::backoff(asks, Duration::from_millis(200), Duration::from_secs(2));
        if last || tokio::time::Instant::now() + wait >= held_until {
            return (answer, asked);
        }
        tracing::debug!(asks, error, "LeaseTask unanswered; asking again");
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            // Handing back: one last ask at once. A lease an earlier ask
            // was granted is then handed straight back (no attempt spent),
            // not left to run out (an attempt spent, a TTL lost).
            () = hand_back.cancelled() => last = true,
        }
    }
}

/// The metric label of a lease outcome: its proto name without the prefix,
/// in lower case.
fn outcome_label(outcome: LeaseOutcome) -> &'static str {
    match outcome {
        LeaseOutcome::Unspecified => "unspecified",
        LeaseOutcome::Granted => "granted",
        LeaseOutcome::LeasedElsewhere => "leased_elsewhere",
        LeaseOutcome::Finished => "finished",
        LeaseOutcome::StaleAttempt => "stale_attempt",
        LeaseOutcome::CampaignInactive => "campaign_inactive",
        LeaseOutcome::UnknownTask => "unknown_task",
    }
}

#[cfg(test)]
mod tests;
