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
    };
    let (answer, asked) = ask_for_lease(ctx, &request, &runner.hand_back).await;
    let answer = match answer {
        Ok(answer) => answer,
        Err(error) => {
            ctx.stats.count_handled("unanswered");
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
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use muster_proto::v1::{FailTaskRequest, Lease, LeaseTaskResponse, Task};

    use super::*;
    use crate::controller::ControllerError;
    use crate::controller::scripted::{Call, Scripted};

    /// A task queue in memory: what it hands out, deletes and releases.
    #[derive(Default)]
    struct Memory {
        ready: Mutex<VecDeque<Delivery>>,
        deleted: Mutex<Vec<String>>,
        released: Mutex<Vec<String>>,
        /// Cancelled as messages are handed out: a stop that comes during
        /// the long poll that got them.
        stop_on_receive: Option<CancellationToken>,
    }

    #[tonic::async_trait]
    impl TaskQueue for Memory {
        async fn receive(&self, max: usize) -> Result<Vec<Delivery>, String> {
            let taken: Vec<Delivery> = {
                let mut ready = self.ready.lock().unwrap();
                let n = max.min(ready.len());
                ready.drain(..n).collect()
            };
            if taken.is_empty() {
                // A short long poll: a stop waits for the one in flight.
                tokio::time::sleep(Duration::from_millis(50)).await;
            } else if let Some(stop) = &self.stop_on_receive {
                stop.cancel();
            }
            Ok(taken)
        }

        async fn release(&self, delivery: &Delivery) {
            self.released.lock().unwrap().push(delivery.message_id.clone());
        }

        fn delete(&self, delivery: &Delivery) {
            self.deleted.lock().unwrap().push(delivery.message_id.clone());
        }
    }

    /// A well-formed id (queue messages carry UUIDs) numbered `n`.
    fn id(kind: u32, n: u32) -> String {
        format!("00000000-0000-4000-8000-{kind:04}{n:08}")
    }

    fn task_ref(n: u32) -> TaskRef {
        TaskRef {
            campaign_id: id(1, n),
            task_id: id(2, n),
            attempt: 1,
        }
    }

    fn message(n: u32, body: String) -> Delivery {
        Delivery {
            message_id: format!("m{n}"),
            body,
            receipt: Some(format!("r{n}")),
            traceparent: None,
        }
    }

    fn answer(outcome: LeaseOutcome) -> Result<LeaseTaskResponse, ControllerError> {
        Ok(LeaseTaskResponse {
            outcome: outcome as i32,
            ..Default::default()
        })
    }

    struct Consumer {
        ctx: Arc<Context>,
        controller: Arc<Scripted>,
        queue: Arc<Memory>,
        stop: CancellationToken,
        done: tokio::task::JoinHandle<()>,
    }

    /// One poller over `messages`, the controller answering `answers` in
    /// order.
    fn consume(
        messages: Vec<Delivery>,
        answers: Vec<Result<LeaseTaskResponse, ControllerError>>,
        stop_on_receive: bool,
    ) -> Consumer {
        let stopping = if stop_on_receive {
            Stopping::OnReceive
        } else {
            Stopping::Not
        };
        start(messages, answers, stopping, crate::DEFAULT_LEASE_TTL)
    }

    /// [`consume`], by a worker that heard the controller's leases last
    /// `lease_ttl`.
    fn consume_with_ttl(
        messages: Vec<Delivery>,
        answers: Vec<Result<LeaseTaskResponse, ControllerError>>,
        lease_ttl: Duration,
    ) -> Consumer {
        start(messages, answers, Stopping::Not, lease_ttl)
    }

    /// When the worker under test is told to stop.
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Stopping {
        /// Not before the test ends.
        Not,
        /// As the queue hands out messages.
        OnReceive,
        /// While its first LeaseTask is in flight.
        WhileLeasing,
        /// While its first LeaseTask is in flight, with no grace: it hands
        /// its work back at once.
        HandingBackWhileLeasing,
    }

    /// [`consume`], by a worker told to stop `stopping`.
    fn consume_stopping(
        messages: Vec<Delivery>,
        answers: Vec<Result<LeaseTaskResponse, ControllerError>>,
        stopping: Stopping,
    ) -> Consumer {
        start(messages, answers, stopping, crate::DEFAULT_LEASE_TTL)
    }

    fn start(
        messages: Vec<Delivery>,
        answers: Vec<Result<LeaseTaskResponse, ControllerError>>,
        stopping: Stopping,
        lease_ttl: Duration,
    ) -> Consumer {
        let controller = Arc::new(Scripted::default());
        controller.leases.lock().unwrap().extend(answers);
        // AWS on a closed loopback port, tried once: nothing leaves the
        // machine, and a call fails at once.
        let sdk = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url("http://127.0.0.1:9")
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .credentials_provider(aws_credential_types::provider::SharedCredentialsProvider::new(
                aws_credential_types::Credentials::for_tests(),
            ))
            .build();
        let ctx = Arc::new(Context::new("w1", controller.clone(), sdk));
        ctx.heard_lease_ttl(lease_ttl.try_into().unwrap());
        let stop = CancellationToken::new();
        let queue = Arc::new(Memory {
            ready: Mutex::new(messages.into()),
            stop_on_receive: (stopping == Stopping::OnReceive).then(|| stop.clone()),
            ..Default::default()
        });
        let hand_back = CancellationToken::new();
        match stopping {
            Stopping::WhileLeasing => controller.while_leasing.lock().unwrap().push(stop.clone()),
            Stopping::HandingBackWhileLeasing => controller
                .while_leasing
                .lock()
                .unwrap()
                .extend([stop.clone(), hand_back.clone()]),
            Stopping::Not | Stopping::OnReceive => {}
        }
        let done = tokio::spawn(run(
            ctx.clone(),
            queue.clone(),
            1,
            4,
            stop.clone(),
            hand_back,
            TaskTracker::new(),
        ));
        Consumer {
            ctx,
            controller,
            queue,
            stop,
            done,
        }
    }

    impl Consumer {
        async fn until(&self, what: &str, check: impl Fn(&Self) -> bool) {
            for _ in 0..600 {
                if check(self) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            panic!("never happened: {what}");
        }

        async fn stop(self) -> (Arc<Scripted>, Arc<Memory>) {
            self.stop.cancel();
            self.done.await.unwrap();
            (self.controller, self.queue)
        }
    }

    #[tokio::test]
    async fn a_message_that_is_no_task_reference_is_left_for_the_redrive_policy() {
        let consumer = consume(vec![message(1, "rm -rf / # not a task".into())], vec![], false);
        consumer
            .until("the message handled", |c| c.ctx.stats.handled("malformed") == 1)
            .await;
        let (controller, queue) = consumer.stop().await;
        assert!(
            controller.calls().is_empty(),
            "nothing leased: {:?}",
            controller.calls()
        );
        assert!(queue.deleted.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn messages_the_controller_has_nothing_to_run_for_are_deleted() {
        let outcomes = [
            LeaseOutcome::UnknownTask,
            LeaseOutcome::Finished,
            LeaseOutcome::StaleAttempt,
            LeaseOutcome::LeasedElsewhere,
        ];
        let messages = (1..=4)
            .map(|n| message(n, muster_proto::encode_task_ref(&task_ref(n))))
            .collect();
        let consumer = consume(messages, outcomes.iter().map(|o| answer(*o)).collect(), false);
        consumer
            .until("four messages deleted", |c| c.queue.deleted.lock().unwrap().len() == 4)
            .await;
        for label in ["unknown_task", "finished", "stale_attempt", "leased_elsewhere"] {
            assert_eq!(consumer.ctx.stats.handled(label), 1, "{label}");
        }
        assert_eq!(consumer.ctx.stats.handled("granted"), 0);
        let (controller, _) = consumer.stop().await;
        let asked: Vec<(String, String, u32)> = controller
            .calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Lease(r) => r.task.map(|t| (r.worker_id, t.task_id, t.attempt)),
                _ => None,
            })
            .collect();
        let mut expected: Vec<(String, String, u32)> = (1..=4).map(|n| ("w1".to_owned(), id(2, n), 1)).collect();
        let mut asked_sorted = asked;
        asked_sorted.sort();
        expected.sort();
        assert_eq!(
            asked_sorted, expected,
            "one LeaseTask per message, under the worker's name"
        );
    }

    /// The request ids of the LeaseTask calls made.
    fn lease_asks(controller: &Scripted) -> Vec<String> {
        controller
            .calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Lease(r) => Some(r.request_id),
                _ => None,
            })
            .collect()
    }

    /// Lease 9 on task 1's first attempt, of a kind this worker does not
    /// know: it runs, and ends with a FailTask under its lease, for good,
    /// before any AWS call.
    fn granted() -> LeaseTaskResponse {
        LeaseTaskResponse {
            outcome: LeaseOutcome::Granted as i32,
            lease: Some(Lease {
                lease_id: 9,
                ttl: Some(Duration::from_secs(30).try_into().unwrap()),
                task: Some(Task {
                    task_id: id(2, 1),
                    campaign_id: id(1, 1),
                    attempt: 1,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// The FailTask calls made.
    fn failures(controller: &Scripted) -> Vec<FailTaskRequest> {
        controller
            .calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Fail(f) => Some(f),
                _ => None,
            })
            .collect()
    }

    /// One message, whose LeaseTask gets `answers` in turn, by a worker
    /// told to stop `stopping`: consumed until a FailTask comes.
    async fn until_failed(answers: Vec<Result<LeaseTaskResponse, ControllerError>>, stopping: Stopping) -> Consumer {
        let consumer = consume_stopping(
            vec![message(1, muster_proto::encode_task_ref(&task_ref(1)))],
            answers,
            stopping,
        );
        consumer
            .until("a FailTask", |c| !failures(&c.controller).is_empty())
            .await;
        consumer
    }

    /// One message, whose LeaseTask gets `answers` in turn, the last of them
    /// [`granted`]: consumed until the task's verdict, once granted.
    async fn run_to_its_verdict(answers: Vec<Result<LeaseTaskResponse, ControllerError>>) -> Consumer {
        let consumer = until_failed(answers, Stopping::Not).await;
        assert_eq!(consumer.ctx.stats.handled("granted"), 1);
        consumer
    }

    fn unanswered() -> Result<LeaseTaskResponse, ControllerError> {
        Err(ControllerError::Unreachable("connection refused".into()))
    }

    #[tokio::test]
    async fn a_lease_request_left_unanswered_is_asked_again_until_a_lease_could_have_run_out() {
        // The controller, whose leases last 3 s, never answers (far more
        // refusals are queued than 3 s of asks use): the asks stop once a
        // lease the first one granted would have expired, and the message
        // comes back. (Asking on would use up the refusals and get an
        // answer of no outcome.)
        let consumer = consume_with_ttl(
            vec![message(1, muster_proto::encode_task_ref(&task_ref(1)))],
            (0..1_000).map(|_| unanswered()).collect(),
            Duration::from_secs(3),
        );
        consumer
            .until("the message handled", |c| c.ctx.stats.handled("unanswered") == 1)
            .await;
        assert_eq!(consumer.ctx.stats.handled("unspecified"), 0);
        let (controller, queue) = consumer.stop().await;
        assert!(
            queue.deleted.lock().unwrap().is_empty(),
            "the message comes back after its timeout"
        );
        let asks = lease_asks(&controller);
        assert!(
            (4..100).contains(&asks.len()),
            "asked again and again, then stopped: {} asks",
            asks.len()
        );
        assert!(
            !asks[0].is_empty() && asks.iter().all(|id| *id == asks[0]),
            "each time the same request, so a repeat of one that took effect is answered alike: {asks:?}"
        );
    }

    #[tokio::test]
    async fn a_lease_whose_answers_were_lost_a_while_is_run_when_an_answer_comes() {
        // Four answers lost (a controller that died after granting, and came
        // back): the fifth ask, the same request, gets the lease, and the
        // task runs under it rather than waiting for it to expire.
        let mut answers: Vec<_> = (0..4).map(|_| unanswered()).collect();
        answers.push(Ok(granted()));
        let consumer = run_to_its_verdict(answers).await;
        assert_eq!(consumer.ctx.stats.handled("unanswered"), 0);
        let (controller, queue) = consumer.stop().await;
        assert_eq!(*queue.deleted.lock().unwrap(), ["m1"]);
        let asks = lease_asks(&controller);
        assert_eq!(asks.len(), 5, "{asks:?}");
        assert!(asks.iter().all(|id| *id == asks[0]), "one request: {asks:?}");
    }

    /// Runs one message whose LeaseTask gets `answers`, by a worker told to
    /// stop `stopping`, until the lease it is granted is handed back, and
    /// checks that it went back unrun, under the lease, costing no attempt;
    /// returns the LeaseTask request ids.
    async fn handed_back_unrun(
        answers: Vec<Result<LeaseTaskResponse, ControllerError>>,
        stopping: Stopping,
    ) -> Vec<String> {
        let (controller, queue) = until_failed(answers, stopping).await.stop().await;
        assert_eq!(*queue.deleted.lock().unwrap(), ["m1"], "the controller owns the task");
        let fails = failures(&controller);
        assert_eq!(fails.len(), 1, "{fails:?}");
        let fail = &fails[0];
        assert_eq!((fail.task_id.as_str(), fail.lease_id), (id(2, 1).as_str(), 9));
        // Run, its unknown kind would have failed it for good.
        assert!(
            fail.handed_back && fail.retryable && !fail.reason.contains("unknown kind"),
            "handed back without running: {fail:?}"
        );
        lease_asks(&controller)
    }

    #[tokio::test]
    async fn a_lease_granted_as_the_worker_stops_is_handed_back_unrun() {
        // SIGTERM while the ask is in flight: the lease that answers it
        // starts no task on a worker that said "no new tasks".
        let asks = handed_back_unrun(vec![Ok(granted())], Stopping::WhileLeasing).await;
        assert_eq!(asks.len(), 1, "{asks:?}");
    }

    #[tokio::test]
    async fn a_lease_granted_to_the_last_ask_of_a_worker_handing_back_is_handed_straight_back() {
        // The first answer lost, and the worker hands its work back: it asks
        // once more, the same request, and the lease that ask gets goes
        // back at once, rather than running out (an attempt spent, a TTL
        // waited).
        let asks = handed_back_unrun(vec![unanswered(), Ok(granted())], Stopping::HandingBackWhileLeasing).await;
        assert_eq!(asks.len(), 2, "{asks:?}");
        assert_eq!(asks[0], asks[1], "the last ask repeats the first");
    }

    #[tokio::test]
    async fn a_worker_handing_back_asks_once_more_and_leaves_an_unanswered_message_to_come_back() {
        // Answers lost to the end: one last ask, then the message is left to
        // come back after its visibility timeout (the asks a worker that is
        // not stopping would go on making are queued, and never made).
        let consumer = consume_stopping(
            vec![message(1, muster_proto::encode_task_ref(&task_ref(1)))],
            vec![unanswered(), unanswered(), Ok(granted())],
            Stopping::HandingBackWhileLeasing,
        );
        consumer
            .until("the message handled", |c| c.ctx.stats.handled("unanswered") == 1)
            .await;
        let (controller, queue) = consumer.stop().await;
        assert_eq!(lease_asks(&controller).len(), 2);
        assert!(queue.deleted.lock().unwrap().is_empty(), "the message comes back");
        assert!(failures(&controller).is_empty(), "nothing leased, nothing handed back");
    }

    #[tokio::test]
    async fn messages_received_as_the_worker_stops_go_straight_back() {
        let messages = (1..=3)
            .map(|n| message(n, muster_proto::encode_task_ref(&task_ref(n))))
            .collect();
        let consumer = consume(messages, vec![], true);
        consumer
            .until("the messages released", |c| c.queue.released.lock().unwrap().len() == 3)
            .await;
        let (controller, queue) = consumer.stop().await;
        assert_eq!(*queue.released.lock().unwrap(), ["m1", "m2", "m3"]);
        assert!(controller.calls().is_empty(), "nothing leased while stopping");
        assert!(queue.deleted.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_granted_lease_deletes_its_message_and_its_task_runs_to_a_verdict() {
        // A task of a kind this worker does not know: it runs, and ends with
        // a FailTask under its lease, for good, before any AWS call.
        let consumer = run_to_its_verdict(vec![Ok(granted())]).await;
        let (controller, queue) = consumer.stop().await;
        assert_eq!(
            *queue.deleted.lock().unwrap(),
            ["m1"],
            "the controller owns the task now"
        );
        let fail = failures(&controller).remove(0);
        assert_eq!(
            (fail.task_id.as_str(), fail.lease_id),
            (id(2, 1).as_str(), 9),
            "{}",
            fail.reason
        );
        assert!(fail.reason.contains("unknown kind") && !fail.retryable, "{fail:?}");
    }
}
