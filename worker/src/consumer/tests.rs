use std::collections::VecDeque;
use std::sync::Mutex;

use muster_proto::v1::{FailTaskRequest, Lease, LeaseTaskRequest, LeaseTaskResponse, Task};

use super::*;
use crate::controller::ControllerError;
use crate::controller::scripted::Scripted;

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
        .made::<LeaseTaskRequest>()
        .into_iter()
        .filter_map(|r| r.task.map(|t| (r.worker_id, t.task_id, t.attempt)))
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
        .made::<LeaseTaskRequest>()
        .into_iter()
        .map(|r| r.request_id)
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

/// One message, whose LeaseTask gets `answers` in turn, by a worker
/// told to stop `stopping`: consumed until a FailTask comes.
async fn until_failed(answers: Vec<Result<LeaseTaskResponse, ControllerError>>, stopping: Stopping) -> Consumer {
    let consumer = consume_stopping(
        vec![message(1, muster_proto::encode_task_ref(&task_ref(1)))],
        answers,
        stopping,
    );
    consumer
        .until("a FailTask", |c| !c.controller.made::<FailTaskRequest>().is_empty())
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
async fn a_lease_refused_outright_is_asked_once_and_its_message_left_to_come_back() {
    // A controller whose worker protocol is newer than this worker's refuses
    // it (FAILED_PRECONDITION): asking again would change nothing, and the
    // message must stay on the queue for a worker that speaks it.
    let consumer = consume(
        vec![message(1, muster_proto::encode_task_ref(&task_ref(1)))],
        vec![Err(ControllerError::LeaseLost(
            "protocol: worker 'w1' speaks worker protocol 1, older than this controller's 2".into(),
        ))],
        false,
    );
    consumer
        .until("the message handled", |c| c.ctx.stats.handled("refused") == 1)
        .await;
    assert_eq!(consumer.ctx.stats.handled("unanswered"), 0);
    let (controller, queue) = consumer.stop().await;
    assert!(queue.deleted.lock().unwrap().is_empty(), "the message comes back");
    let asks = controller.made::<LeaseTaskRequest>();
    assert_eq!(asks.len(), 1, "asked once");
    assert_eq!(
        asks[0].protocol,
        muster_proto::WORKER_PROTOCOL,
        "the worker says its protocol"
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
    let fails = controller.made::<FailTaskRequest>();
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
    assert!(
        controller.made::<FailTaskRequest>().is_empty(),
        "nothing leased, nothing handed back"
    );
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
    let fail = controller.made::<FailTaskRequest>().remove(0);
    assert_eq!(
        (fail.task_id.as_str(), fail.lease_id),
        (id(2, 1).as_str(), 9),
        "{}",
        fail.reason
    );
    assert!(fail.reason.contains("unknown kind") && !fail.retryable, "{fail:?}");
}
