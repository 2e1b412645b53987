//! A held lease: renewed in the background while the task runs, with the
//! cancel signal and the fencing deadline the task checks before it sends
//! anything.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use muster_proto::v1::{CompleteTaskRequest, FailTaskRequest, Lease, RenewLeaseRequest, RenewLeaseResponse, Task};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::controller::{Controller, ControllerError};
use crate::scope_clients::Guard;

/// Never send a command closer than this to the lease's local deadline (or a
/// quarter of the TTL, if that is less): the controller may hand the task to
/// someone else right after it.
const SEND_MARGIN: Duration = Duration::from_secs(5);

/// How long [`LeaseHandle::refresh`] waits for the controller's answer
/// before it leaves the lease as the renewals left it.
const REFRESH_WITHIN: Duration = Duration::from_secs(2);

/// How recent the controller's last answer must be for a send to go by it
/// ([`Guard::allows`]); an older one (the send waited for the rate or a
/// throttling backoff since) is asked again.
const FRESH: Duration = Duration::from_millis(250);

/// What the renewals have learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseState {
    /// Ours, campaign running.
    Held,
    /// Ours, but the campaign was cancelled: cancel what was sent, report,
    /// complete.
    Cancelled,
    /// No longer ours (the controller said so): stop, send nothing more.
    Lost,
}

/// A lease as the controller granted it, and when it was asked for.
#[derive(Debug, Clone)]
pub struct Granted {
    /// The lease.
    pub lease: Lease,
    /// When the request that granted it was sent. The controller starts the
    /// TTL no earlier, so the lease runs out no later than `asked + ttl`;
    /// counting from the answer instead (which a paused worker or a slow
    /// network delivers late) lets a worker believe in a lease the
    /// controller has already given to someone else.
    pub asked: Instant,
}

/// A lease being held.
pub struct LeaseHandle {
    /// The task as leased.
    pub task: Task,
    /// The fencing id.
    pub lease_id: u64,
    /// What earlier attempts sent.
    pub lease: Lease,
    state: watch::Receiver<LeaseState>,
    learned: Arc<Learned>,
    send_margin: Duration,
    stop: CancellationToken,
    controller: Controller,
}

impl LeaseHandle {
    /// Starts renewing the lease every third of its TTL; its deadline counts
    /// from when it was asked for.
    pub fn start(controller: Controller, granted: Granted) -> Self {
        let Granted { lease, asked } = granted;
        let ttl = lease.ttl.and_then(crate::given_ttl).unwrap_or(crate::DEFAULT_LEASE_TTL);
        let task = lease.task.clone().unwrap_or_default();
        // A lease of a cancelled campaign exists only to cancel what an
        // earlier attempt sent.
        let (tx, rx) = watch::channel(if lease.campaign_cancelled {
            LeaseState::Cancelled
        } else {
            LeaseState::Held
        });
        let learned = Arc::new(Learned {
            answer: Mutex::new(Answer { asked, ttl }),
            state: tx,
        });
        let stop = CancellationToken::new();
        // Renewals belong to the task's trace and carry its fields.
        let renewing = renew_loop(
            controller.clone(),
            task.task_id.clone(),
            lease.lease_id,
            learned.clone(),
            stop.clone(),
        )
        .instrument(tracing::Span::current());
        match crate::trace::current() {
            Some(scope) => tokio::spawn(crate::trace::scoped(scope, renewing)),
            None => tokio::spawn(renewing),
        };
        Self {
            lease_id: lease.lease_id,
            task,
            lease,
            state: rx,
            learned,
            send_margin: SEND_MARGIN.min(ttl / 4),
            stop,
            controller,
        }
    }

    /// The state right now, as the controller last said. A lease past its
    /// deadline because the controller could not be reached is not lost: the
    /// task may send nothing ([`LeaseHandle::may_send`]) but goes on
    /// following what it sent, until the controller answers again (a
    /// restarted controller extends the leases it finds) or says the lease
    /// is gone.
    pub fn state(&self) -> LeaseState {
        *self.state.borrow()
    }

    /// A receiver that changes with the state (for `select!`).
    pub fn watch(&self) -> watch::Receiver<LeaseState> {
        self.state.clone()
    }

    /// Whether a command may still be sent under this lease: held, and far
    /// enough from its deadline that nobody else can have it.
    pub fn may_send(&self) -> bool {
        self.state() == LeaseState::Held && Instant::now() + self.send_margin < self.learned.deadline()
    }

    /// The controller said, other than by a renewal, that the campaign is
    /// being cancelled (its AwaitCommands answer): cancel what was sent.
    pub fn cancelling(&self) {
        self.learned.cancelling();
    }

    /// Asks the controller now, as a renewal does, whether the lease holds
    /// and the campaign still runs: called right before a SendCommand, so
    /// that a cancel answered a moment ago stops it. The renewals alone
    /// learn of a cancel up to a third of the TTL late, and a command sent
    /// meanwhile starts on its instances before the worker cancels it. A
    /// controller that does not answer within [`REFRESH_WITHIN`] leaves the
    /// lease as the renewals left it (its deadline still fences the send).
    async fn refresh(&self) {
        if self.state() != LeaseState::Held {
            return;
        }
        let asked = Instant::now();
        let request = RenewLeaseRequest {
            task_id: self.task.task_id.clone(),
            lease_id: self.lease_id,
        };
        match tokio::time::timeout(REFRESH_WITHIN, self.controller.renew_lease(request)).await {
            Ok(Ok(renewed)) => self.learned.renewed(&renewed, asked),
            Ok(Err(ControllerError::LeaseLost(reason) | ControllerError::Refused(reason))) => {
                self.learned.lost(&self.task.task_id, self.lease_id, &reason);
            }
            Ok(Err(ControllerError::Unreachable(_))) | Err(_) => {}
        }
    }

    /// Completes the task and stops renewing.
    /// `capacity` says how many more tasks this worker can start now; the
    /// answer's leases (at most that many) are this worker's to run.
    pub async fn complete(self, capacity: u32) -> Result<Vec<Granted>, ControllerError> {
        self.stop.cancel();
        let asked = Instant::now();
        self.controller
            .complete_task(CompleteTaskRequest {
                task_id: self.task.task_id.clone(),
                lease_id: self.lease_id,
                capacity,
                protocol: muster_proto::WORKER_PROTOCOL,
            })
            .await
            .map(|answer| answer.next.into_iter().map(|lease| Granted { lease, asked }).collect())
    }

    /// Fails the task and stops renewing (`handed_back`: the worker is
    /// stopping, which costs the task no attempt); true when the controller
    /// retries it.
    pub async fn fail(self, reason: &str, retryable: bool, handed_back: bool) -> Result<bool, ControllerError> {
        self.stop.cancel();
        self.controller
            .fail_task(FailTaskRequest {
                task_id: self.task.task_id.clone(),
                lease_id: self.lease_id,
                reason: reason.to_owned(),
                retryable,
                handed_back,
            })
            .await
            .map(|r| r.will_retry)
    }
}

/// A SendCommand under this lease goes out only if the lease holds and
/// the campaign still runs, as the controller said at most [`FRESH`] ago.
#[tonic::async_trait]
impl Guard for LeaseHandle {
    async fn allows(&self) -> bool {
        if self.learned.heard().elapsed() > FRESH {
            self.refresh().await;
        }
        self.may_send()
    }
}

impl Drop for LeaseHandle {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The controller's last word on a lease (the grant, a renewal or a
/// refresh).
#[derive(Clone, Copy)]
struct Answer {
    /// When the question it answered was asked.
    asked: Instant,
    /// The TTL it gave.
    ttl: Duration,
}

/// What the renewals (and refreshes) have learned of a lease.
struct Learned {
    answer: Mutex<Answer>,
    state: watch::Sender<LeaseState>,
}

impl Learned {
    fn answer(&self) -> Answer {
        *self.answer.lock().expect("answer lock")
    }

    /// No command is sent past this, less the send margin: the lease runs
    /// a TTL from when its last answer was asked for, no longer.
    fn deadline(&self) -> Instant {
        let Answer { asked, ttl } = self.answer();
        asked + ttl
    }

    fn heard(&self) -> Instant {
        self.answer().asked
    }

    /// The controller said the lease is gone: the task stops.
    fn lost(&self, task_id: &str, lease_id: u64, reason: &str) {
        tracing::warn!(task_id, lease_id, reason, "lease lost; stopping the task");
        let _ = self.state.send(LeaseState::Lost);
    }

    fn ttl(&self) -> Duration {
        self.answer().ttl
    }

    /// A renewal asked at `asked` was answered: the deadline counts from
    /// when it was asked (the controller's clock may have started later,
    /// never earlier), and a cancelled campaign is heard. An answer to an
    /// older question, arriving after a newer one's, shortens the deadline:
    /// safe, since the lease runs at least that long.
    fn renewed(&self, renewed: &RenewLeaseResponse, asked: Instant) {
        {
            let mut answer = self.answer.lock().expect("answer lock");
            answer.asked = asked;
            if let Some(ttl) = renewed
                .ttl
                .and_then(|d| Duration::try_from(d).ok())
                .filter(|d| !d.is_zero())
            {
                answer.ttl = ttl;
            }
        }
        if renewed.campaign_cancelled {
            self.cancelling();
        }
    }

    /// A held lease's campaign is being cancelled (a lost lease stays lost).
    fn cancelling(&self) {
        self.state.send_if_modified(|s| {
            let changed = *s == LeaseState::Held;
            if changed {
                *s = LeaseState::Cancelled;
            }
            changed
        });
    }
}

async fn renew_loop(
    controller: Controller,
    task_id: String,
    lease_id: u64,
    learned: Arc<Learned>,
    stop: CancellationToken,
) {
    let mut wait = learned.ttl() / 3;
    // Past the deadline without an answer (logged once).
    let mut overdue = false;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        wait = learned.ttl() / 3;
        let asked = Instant::now();
        match controller
            .renew_lease(RenewLeaseRequest {
                task_id: task_id.clone(),
                lease_id,
            })
            .await
        {
            Ok(renewed) => {
                learned.renewed(&renewed, asked);
                if std::mem::take(&mut overdue) {
                    tracing::info!(task_id, lease_id, "lease renewed after the controller came back");
                }
            }
            Err(ControllerError::LeaseLost(reason)) | Err(ControllerError::Refused(reason)) => {
                learned.lost(&task_id, lease_id, &reason);
                return;
            }
            Err(ControllerError::Unreachable(reason)) => {
                wait = wait.min(Duration::from_secs(2));
                let past = Instant::now() >= learned.deadline();
                if past && !overdue {
                    tracing::warn!(
                        task_id,
                        lease_id,
                        reason,
                        "lease past its deadline with the controller unreachable; sending nothing, following what was sent"
                    );
                } else if !past {
                    tracing::warn!(task_id, lease_id, reason, "lease renewal failed; will retry");
                }
                overdue = past;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use muster_proto::v1::Task;

    use super::*;
    use crate::controller::scripted::{Call, Scripted};

    /// Short enough that each test takes well under a second; renewals
    /// every 100 ms.
    const TTL: Duration = Duration::from_millis(300);

    fn lease(cancelled: bool) -> Lease {
        Lease {
            lease_id: 7,
            ttl: Some(TTL.try_into().unwrap()),
            task: Some(Task {
                task_id: "t1".into(),
                ..Default::default()
            }),
            campaign_cancelled: cancelled,
            ..Default::default()
        }
    }

    fn held(controller: &Arc<Scripted>, asked: Instant) -> LeaseHandle {
        LeaseHandle::start(
            Arc::new(controller.clone()),
            Granted {
                lease: lease(false),
                asked,
            },
        )
    }

    fn unreachable() -> Result<RenewLeaseResponse, ControllerError> {
        Err(ControllerError::Unreachable("connection refused".into()))
    }

    /// Waits (at most 5 s) until `check` holds.
    async fn until(what: &str, check: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !check() {
            assert!(Instant::now() < deadline, "never happened: {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn renewed_while_held_it_may_send_past_its_first_ttl() {
        let controller = Arc::new(Scripted::default());
        let handle = held(&controller, Instant::now());
        assert!(handle.may_send());
        until("three renewals", || controller.renewals_made() >= 3).await;
        let Call::Renew(request) = &controller.calls()[0] else {
            panic!("{:?}", controller.calls())
        };
        assert_eq!((request.task_id.as_str(), request.lease_id), ("t1", 7));
        // Each renewal moved the deadline: past the first TTL it may still
        // send.
        tokio::time::sleep(TTL).await;
        let made = controller.renewals_made();
        until("a renewal after it", || controller.renewals_made() > made).await;
        assert_eq!(handle.state(), LeaseState::Held);
        assert!(handle.may_send());
    }

    #[tokio::test]
    async fn a_lease_heard_of_after_its_ttl_may_send_nothing() {
        let controller = Arc::new(Scripted::default());
        let handle = held(&controller, Instant::now() - TTL);
        assert_eq!(handle.state(), LeaseState::Held);
        assert!(!handle.may_send(), "its TTL counts from the asking");
        // Nor close to the end: the margin is a quarter of the TTL (at most
        // five seconds).
        let near = held(&controller, Instant::now() - (TTL - TTL / 5));
        assert!(!near.may_send());
    }

    #[tokio::test]
    async fn a_controller_saying_the_lease_is_gone_stops_the_task_and_the_renewals() {
        let controller = Arc::new(Scripted::default());
        controller.renew_answers(Err(ControllerError::LeaseLost("lease_id: not current".into())));
        let handle = held(&controller, Instant::now());
        let mut watch = handle.watch();
        watch.changed().await.unwrap();
        assert_eq!(handle.state(), LeaseState::Lost);
        assert!(!handle.may_send());
        tokio::time::sleep(TTL).await;
        assert_eq!(controller.renewals_made(), 1, "no renewal after the answer");
    }

    #[tokio::test]
    async fn an_unreachable_controller_stops_sends_past_the_deadline_but_not_the_task() {
        let controller = Arc::new(Scripted::default());
        for _ in 0..1_000 {
            controller.renew_answers(unreachable());
        }
        let handle = held(&controller, Instant::now());
        until("the deadline to pass unrenewed", || !handle.may_send()).await;
        assert_eq!(handle.state(), LeaseState::Held, "not lost: it follows what it sent");
        assert!(controller.renewals_made() >= 2, "it kept trying");
        // The controller answers again (a restarted one extends the leases
        // it finds): sending may resume.
        controller.renewals.lock().unwrap().clear();
        until("sending to resume", || handle.may_send()).await;
        assert_eq!(handle.state(), LeaseState::Held);
    }

    /// A lease of a minute, granted now: renewed every 20 s, so none comes
    /// during a test.
    fn long(controller: &Arc<Scripted>) -> LeaseHandle {
        LeaseHandle::start(
            Arc::new(controller.clone()),
            Granted {
                lease: Lease {
                    ttl: Some(Duration::from_secs(60).try_into().unwrap()),
                    ..lease(false)
                },
                asked: Instant::now(),
            },
        )
    }

    #[tokio::test]
    async fn a_send_goes_by_an_answer_at_most_a_moment_old() {
        let controller = Arc::new(Scripted::default());
        let handle = long(&controller);
        assert!(handle.allows().await, "granted a moment ago");
        assert_eq!(controller.renewals_made(), 0, "nothing to ask");
        // A wait for the rate: the grant is no longer fresh.
        tokio::time::sleep(FRESH * 2).await;
        controller.renew_answers(Ok(RenewLeaseResponse {
            campaign_cancelled: true,
            ..Default::default()
        }));
        assert!(!handle.allows().await, "asked again, and the campaign was cancelled");
        assert_eq!(controller.renewals_made(), 1);
        assert_eq!(handle.state(), LeaseState::Cancelled);
    }

    #[tokio::test]
    async fn a_refresh_asks_at_once_and_hears_a_cancel_or_a_loss_before_the_next_renewal() {
        let controller = Arc::new(Scripted::default());
        controller.renew_answers(unreachable());
        let handle = long(&controller);
        handle.refresh().await;
        assert_eq!(controller.renewals_made(), 1, "asked at once");
        assert!(handle.may_send(), "unanswered: the lease is as the grant left it");
        controller.renew_answers(Ok(RenewLeaseResponse {
            campaign_cancelled: true,
            ..Default::default()
        }));
        handle.refresh().await;
        assert_eq!(handle.state(), LeaseState::Cancelled);
        assert!(!handle.may_send());
        // Cancelled, it has nothing more to ask before a send.
        handle.refresh().await;
        assert_eq!(controller.renewals_made(), 2);

        controller.renew_answers(Err(ControllerError::LeaseLost("lease_id: not current".into())));
        let other = long(&controller);
        other.refresh().await;
        assert_eq!(other.state(), LeaseState::Lost);
        assert!(!other.may_send());
        assert_eq!(controller.renewals_made(), 3);
    }

    #[tokio::test]
    async fn a_cancelled_campaign_is_told_by_the_renewal_or_the_grant() {
        let controller = Arc::new(Scripted::default());
        controller.renew_answers(Ok(RenewLeaseResponse {
            campaign_cancelled: true,
            ..Default::default()
        }));
        let handle = held(&controller, Instant::now());
        until("the cancel to be heard", || handle.state() == LeaseState::Cancelled).await;
        assert!(!handle.may_send(), "a cancelled campaign's lease sends nothing");
        let granted = LeaseHandle::start(
            Arc::new(controller.clone()),
            Granted {
                lease: lease(true),
                asked: Instant::now(),
            },
        );
        assert_eq!(granted.state(), LeaseState::Cancelled);
    }

    #[tokio::test]
    async fn completing_stops_the_renewals_and_names_the_lease() {
        let controller = Arc::new(Scripted::default());
        let handle = held(&controller, Instant::now());
        handle.complete(3).await.unwrap();
        tokio::time::sleep(TTL).await;
        let calls = controller.calls();
        assert!(
            matches!(&calls[..], [Call::Complete(c)] if c.task_id == "t1" && c.lease_id == 7 && c.capacity == 3),
            "{calls:?}"
        );
    }
}
