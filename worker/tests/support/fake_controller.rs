//! A small, real gRPC implementation of WorkerService for testing the worker
//! before (and apart from) the controller: tasks in memory, leases with a TTL
//! and fencing ids, re-enqueue of expired or retryable tasks with attempt + 1,
//! and every report recorded for the test to inspect.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use muster_proto::v1::worker_service_server::{WorkerService, WorkerServiceServer};
use muster_proto::v1::*;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    Queued,
    Leased,
    Completed,
    Failed,
}

#[derive(Debug, Clone)]
pub struct FakeTask {
    pub task: Task,
    pub phase: Phase,
    pub lease: Option<(u64, Instant)>,
    pub dispatches: Vec<Dispatch>,
    pub results: BTreeMap<String, TargetResult>,
    pub discovered: Vec<DiscoveredInstance>,
    pub failures: Vec<(String, bool)>,
    pub duplicate_results: u32,
}

#[derive(Default)]
pub struct State {
    pub tasks: HashMap<String, FakeTask>,
    pub next_lease: u64,
    pub cancelled_campaigns: Vec<String>,
    /// ReportDispatch answers Unavailable for these attempts (a worker that
    /// dies before its report is recorded).
    pub refuse_dispatch_of_attempt: Option<u32>,
    /// A granted lease of this attempt is answered this late (a worker
    /// paused, or a slow network, between asking and hearing).
    pub delay_lease_answer_of_attempt: Option<(u32, Duration)>,
    pub lease_ttl: Duration,
}

#[derive(Clone)]
pub struct FakeController {
    pub state: Arc<Mutex<State>>,
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    pub addr: SocketAddr,
    stop: CancellationToken,
}

struct Service {
    ctl: FakeController,
}

impl FakeController {
    /// Serves on a loopback port; re-enqueues expired leases every 200 ms.
    pub async fn start(sqs: aws_sdk_sqs::Client, queue_url: &str, lease_ttl: Duration) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let ctl = FakeController {
            state: Arc::new(Mutex::new(State {
                lease_ttl,
                ..Default::default()
            })),
            sqs,
            queue_url: queue_url.to_owned(),
            addr,
            stop: CancellationToken::new(),
        };
        let service = WorkerServiceServer::new(Service { ctl: ctl.clone() });
        let stop = ctl.stop.clone();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    stop.cancelled(),
                )
                .await
                .unwrap();
        });
        let reaper = ctl.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = reaper.stop.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
                reaper.expire_leases().await;
            }
        });
        ctl
    }

    /// Stops serving (the port closes; workers see it as down).
    pub fn stop(&self) {
        self.stop.cancel();
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Adds a task and puts its TaskRef on the queue.
    pub async fn add(&self, task: Task) {
        let task_ref = TaskRef {
            campaign_id: task.campaign_id.clone(),
            task_id: task.task_id.clone(),
            attempt: task.attempt,
        };
        self.state.lock().unwrap().tasks.insert(
            task.task_id.clone(),
            FakeTask {
                task,
                phase: Phase::Queued,
                lease: None,
                dispatches: Vec::new(),
                results: BTreeMap::new(),
                discovered: Vec::new(),
                failures: Vec::new(),
                duplicate_results: 0,
            },
        );
        self.enqueue(&task_ref).await;
    }

    pub async fn enqueue(&self, task_ref: &TaskRef) {
        self.sqs
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(muster_proto::encode_task_ref(task_ref))
            .send()
            .await
            .expect("SendMessage");
    }

    async fn expire_leases(&self) {
        let expired: Vec<TaskRef> = {
            let mut state = self.state.lock().unwrap();
            state
                .tasks
                .values_mut()
                .filter(|t| t.phase == Phase::Leased && t.lease.is_some_and(|(_, until)| until <= Instant::now()))
                .map(|t| {
                    t.phase = Phase::Queued;
                    t.lease = None;
                    t.task.attempt += 1;
                    TaskRef {
                        campaign_id: t.task.campaign_id.clone(),
                        task_id: t.task.task_id.clone(),
                        attempt: t.task.attempt,
                    }
                })
                .collect()
        };
        for task_ref in expired {
            self.enqueue(&task_ref).await;
        }
    }

    pub fn cancel_campaign(&self, campaign_id: &str) {
        self.state
            .lock()
            .unwrap()
            .cancelled_campaigns
            .push(campaign_id.to_owned());
    }

    pub fn task(&self, task_id: &str) -> FakeTask {
        self.state.lock().unwrap().tasks[task_id].clone()
    }

    /// Waits until every task is completed or failed for good.
    pub async fn wait_all_done(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let open: Vec<String> = {
                let state = self.state.lock().unwrap();
                state
                    .tasks
                    .values()
                    .filter(|t| !matches!(t.phase, Phase::Completed | Phase::Failed))
                    .map(|t| format!("{} ({:?}, attempt {})", t.task.task_id, t.phase, t.task.attempt))
                    .collect()
            };
            if open.is_empty() {
                return;
            }
            assert!(Instant::now() < deadline, "tasks still open after {within:?}: {open:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn lease_ok(&self, task_id: &str, lease_id: u64) -> Result<(), Status> {
        let state = self.state.lock().unwrap();
        let task = state
            .tasks
            .get(task_id)
            .ok_or_else(|| Status::not_found("no such task"))?;
        match task.lease {
            Some((id, until)) if id == lease_id && until > Instant::now() && task.phase == Phase::Leased => Ok(()),
            _ => Err(Status::failed_precondition("lease is not current")),
        }
    }
}

impl Service {
    fn grant(&self, request: Request<LeaseTaskRequest>) -> Result<Response<LeaseTaskResponse>, Status> {
        let request = request.into_inner();

        let task_ref = request
            .task
            .ok_or_else(|| Status::invalid_argument("task is required"))?;
        let mut state = self.ctl.state.lock().unwrap();
        let ttl = state.lease_ttl;
        state.next_lease += 1;
        let lease_id = state.next_lease;
        let cancelled = state.cancelled_campaigns.clone();
        let outcome = |outcome: LeaseOutcome| {
            Ok(Response::new(LeaseTaskResponse {
                outcome: outcome as i32,
                lease: None,
                detail: String::new(),
                same_account: Vec::new(),
                workers: 0,
            }))
        };
        let Some(task) = state
            .tasks
            .get_mut(&task_ref.task_id)
            .filter(|t| t.task.campaign_id == task_ref.campaign_id)
        else {
            return outcome(LeaseOutcome::UnknownTask);
        };
        if matches!(task.phase, Phase::Completed | Phase::Failed) {
            return outcome(LeaseOutcome::Finished);
        }
        if task_ref.attempt < task.task.attempt {
            return outcome(LeaseOutcome::StaleAttempt);
        }
        if task.phase == Phase::Leased {
            return outcome(LeaseOutcome::LeasedElsewhere);
        }
        task.phase = Phase::Leased;
        task.lease = Some((lease_id, Instant::now() + ttl));
        let campaign_cancelled = cancelled.contains(&task.task.campaign_id);
        let lease = Lease {
            lease_id,
            ttl: Some(ttl.try_into().unwrap()),
            task: Some(task.task.clone()),
            prior_dispatches: task.dispatches.clone(),
            finished_instance_ids: task.results.keys().cloned().collect(),
            traceparent: String::new(),
            campaign_cancelled,
        };
        Ok(Response::new(LeaseTaskResponse {
            outcome: LeaseOutcome::Granted as i32,
            lease: Some(lease),
            detail: String::new(),
            same_account: Vec::new(),
            workers: 0,
        }))
    }
}

#[tonic::async_trait]
impl WorkerService for Service {
    /// This controller reads no command events: workers poll.
    async fn await_commands(
        &self,
        _request: Request<AwaitCommandsRequest>,
    ) -> Result<Response<AwaitCommandsResponse>, Status> {
        Ok(Response::new(AwaitCommandsResponse::default()))
    }

    async fn lease_task(&self, request: Request<LeaseTaskRequest>) -> Result<Response<LeaseTaskResponse>, Status> {
        let attempt = request.get_ref().task.as_ref().map_or(0, |t| t.attempt);
        let delay = self
            .ctl
            .state
            .lock()
            .unwrap()
            .delay_lease_answer_of_attempt
            .filter(|(of, _)| *of == attempt)
            .map(|(_, delay)| delay);
        let answer = self.grant(request);
        if let Some(delay) = delay
            && answer.as_ref().is_ok_and(|a| a.get_ref().lease.is_some())
        {
            tokio::time::sleep(delay).await;
        }
        answer
    }

    async fn renew_lease(&self, request: Request<RenewLeaseRequest>) -> Result<Response<RenewLeaseResponse>, Status> {
        let request = request.into_inner();
        self.ctl.lease_ok(&request.task_id, request.lease_id)?;
        let mut state = self.ctl.state.lock().unwrap();
        let ttl = state.lease_ttl;
        let cancelled = {
            let campaign = state.tasks[&request.task_id].task.campaign_id.clone();
            state.cancelled_campaigns.contains(&campaign)
        };
        let task = state.tasks.get_mut(&request.task_id).unwrap();
        task.lease = Some((request.lease_id, Instant::now() + ttl));
        Ok(Response::new(RenewLeaseResponse {
            ttl: Some(ttl.try_into().unwrap()),
            campaign_cancelled: cancelled,
            workers: 0,
        }))
    }

    async fn report_targets(
        &self,
        request: Request<ReportTargetsRequest>,
    ) -> Result<Response<ReportTargetsResponse>, Status> {
        let request = request.into_inner();
        let mut state = self.ctl.state.lock().unwrap();
        let task = state
            .tasks
            .get_mut(&request.task_id)
            .ok_or_else(|| Status::not_found("no such task"))?;
        let accepted = request.instances.len() as u32;
        task.discovered.extend(request.instances);
        Ok(Response::new(ReportTargetsResponse { accepted }))
    }

    async fn report_dispatch(
        &self,
        request: Request<ReportDispatchRequest>,
    ) -> Result<Response<ReportDispatchResponse>, Status> {
        let request = request.into_inner();
        let mut state = self.ctl.state.lock().unwrap();
        let refuse = state.refuse_dispatch_of_attempt;
        let task = state
            .tasks
            .get_mut(&request.task_id)
            .ok_or_else(|| Status::not_found("no such task"))?;
        if refuse == Some(task.task.attempt) {
            return Err(Status::unavailable("fake controller: pretending to be down"));
        }
        if !task.dispatches.iter().any(|d| d.command_id == request.command_id) {
            task.dispatches.push(Dispatch {
                command_id: request.command_id,
                instance_ids: request.instance_ids,
                sent_at: request.sent_at,
                attempt: task.task.attempt,
                step: request.step,
            });
        }
        Ok(Response::new(ReportDispatchResponse {}))
    }

    async fn report_results(
        &self,
        request: Request<ReportResultsRequest>,
    ) -> Result<Response<ReportResultsResponse>, Status> {
        let request = request.into_inner();
        let mut state = self.ctl.state.lock().unwrap();
        let task = state
            .tasks
            .get_mut(&request.task_id)
            .ok_or_else(|| Status::not_found("no such task"))?;
        let (mut accepted, mut duplicates) = (0, 0);
        for result in request.results {
            if task.results.contains_key(&result.instance_id) {
                duplicates += 1;
                task.duplicate_results += 1;
            } else {
                accepted += 1;
                task.results.insert(result.instance_id.clone(), result);
            }
        }
        Ok(Response::new(ReportResultsResponse { accepted, duplicates }))
    }

    async fn complete_task(
        &self,
        request: Request<CompleteTaskRequest>,
    ) -> Result<Response<CompleteTaskResponse>, Status> {
        let request = request.into_inner();
        self.ctl.lease_ok(&request.task_id, request.lease_id)?;
        let mut state = self.ctl.state.lock().unwrap();
        let task = state.tasks.get_mut(&request.task_id).unwrap();
        task.phase = Phase::Completed;
        task.lease = None;
        Ok(Response::new(CompleteTaskResponse::default()))
    }

    async fn fail_task(&self, request: Request<FailTaskRequest>) -> Result<Response<FailTaskResponse>, Status> {
        let request = request.into_inner();
        self.ctl.lease_ok(&request.task_id, request.lease_id)?;
        let requeue = {
            let mut state = self.ctl.state.lock().unwrap();
            let task = state.tasks.get_mut(&request.task_id).unwrap();
            task.failures.push((request.reason.clone(), request.retryable));
            task.lease = None;
            if request.retryable && task.task.attempt < task.task.max_attempts {
                task.phase = Phase::Queued;
                task.task.attempt += 1;
                Some(TaskRef {
                    campaign_id: task.task.campaign_id.clone(),
                    task_id: task.task.task_id.clone(),
                    attempt: task.task.attempt,
                })
            } else {
                task.phase = Phase::Failed;
                None
            }
        };
        let will_retry = requeue.is_some();
        if let Some(task_ref) = requeue {
            self.ctl.enqueue(&task_ref).await;
        }
        Ok(Response::new(FailTaskResponse { will_retry }))
    }
}
