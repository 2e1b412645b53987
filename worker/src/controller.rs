//! The worker's side of WorkerService: a gRPC client with the retry policy
//! each call needs. Facts (dispatches, results) are retried until the
//! controller records them; a lease lost is reported as such, never retried.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use muster_common::retry::backoff;
use muster_common::telemetry::attr;
use muster_common::tls::{ClientTls, TlsError};
use muster_proto::v1::worker_service_client::WorkerServiceClient;
use muster_proto::v1::{
    AwaitCommandsRequest, AwaitCommandsResponse, CompleteTaskRequest, CompleteTaskResponse, FailTaskRequest,
    FailTaskResponse, LeaseTaskRequest, LeaseTaskResponse, RenewLeaseRequest, RenewLeaseResponse,
    ReportDispatchRequest, ReportResultsRequest, ReportResultsResponse, ReportTargetsRequest, ReportTargetsResponse,
};
use tonic::transport::Channel;
use tonic::{Code, Status};
use tracing::Instrument as _;

/// How a controller call ended when it did not succeed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ControllerError {
    /// The lease is no longer ours (fenced): stop working on the task.
    #[error("lease lost: {0}")]
    LeaseLost(String),
    /// The controller refused the request for good.
    #[error("controller refused: {0}")]
    Refused(String),
    /// The controller could not be reached in time.
    #[error("controller unreachable: {0}")]
    Unreachable(String),
}

/// Whether a status is worth retrying. CANCELLED is among them: the
/// controller never answers it, and the worker never cancels the calls it
/// waits for, so it means the connection went away under the call (hyper's
/// "operation was canceled" when the controller is killed mid-request).
pub fn is_transient(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Unknown
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::Internal
            | Code::Cancelled
    )
}

fn classify(status: &Status) -> ControllerError {
    match status.code() {
        Code::FailedPrecondition => ControllerError::LeaseLost(status.message().to_owned()),
        _ if is_transient(status) => ControllerError::Unreachable(status.message().to_owned()),
        _ => ControllerError::Refused(format!("{}: {}", status.code(), status.message())),
    }
}

/// A cloneable client of the controller's WorkerService.
/// The service these calls are methods of, as traces name it.
const WORKER_SERVICE: &str = "muster.v1.WorkerService";

#[derive(Clone)]
pub struct ControllerClient {
    client: WorkerServiceClient<Channel>,
    /// The fleet's size as the controller's last answer said (0: not said).
    workers: Arc<AtomicU32>,
}

impl ControllerClient {
    /// Connects lazily to `url` (`https://muster.internal:7071`, or
    /// `http://127.0.0.1:7071` for local use): a controller that is down at
    /// start is retried, not fatal. `tls` carries the CA and the worker's
    /// client certificate; errors name the setting (`controller`, `tls_ca`).
    pub fn connect_lazy(url: &str, tls: &ClientTls) -> Result<Self, TlsError> {
        let channel = muster_common::tls::endpoint("controller", url, "tls", tls)?
            .timeout(Duration::from_secs(30))
            .connect_lazy();
        Ok(Self::from_channel(channel))
    }

    /// A client over an existing channel (TLS set up by the caller).
    pub fn from_channel(channel: Channel) -> Self {
        let client = WorkerServiceClient::new(channel)
            .max_decoding_message_size(64 * 1024 * 1024)
            .max_encoding_message_size(64 * 1024 * 1024);
        Self {
            client,
            workers: Arc::default(),
        }
    }

    fn heard(&self, workers: u32) {
        if workers > 0 {
            self.workers.store(workers, Ordering::Relaxed);
        }
    }

    /// Retries `call` on transient failures for up to `budget`, in a client
    /// span named `method` whose context travels in the request metadata.
    async fn retrying<T, F, Fut>(&self, method: &'static str, budget: Duration, call: F) -> Result<T, ControllerError>
    where
        F: FnMut(WorkerServiceClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, Status>>,
    {
        self.retrying_in_span(budget, call)
            .instrument(crate::trace::rpc("grpc", WORKER_SERVICE, method))
            .await
    }

    async fn retrying_in_span<T, F, Fut>(&self, budget: Duration, mut call: F) -> Result<T, ControllerError>
    where
        F: FnMut(WorkerServiceClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let started = std::time::Instant::now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            match call(self.client.clone()).await {
                Ok(response) => return Ok(response.into_inner()),
                Err(status) if is_transient(&status) && started.elapsed() < budget => {
                    tracing::debug!(code = ?status.code(), message = status.message(), attempt, "controller call failed; retrying");
                    tokio::time::sleep(backoff(attempt, Duration::from_millis(100), Duration::from_secs(5))).await;
                }
                Err(status) => return Err(classify(&status)),
            }
        }
    }
}

/// The worker's calls to the controller, as the rest of the worker makes
/// them: [`ControllerClient`] over gRPC, or a scripted stand-in where a unit
/// test needs one. Each method's retry policy is part of its contract.
#[tonic::async_trait]
pub trait WorkerCalls: Send + Sync + 'static {
    /// Asks for a task's lease. One attempt: the consumer asks again with
    /// the same request (its `request_id` makes a repeat safe), then leaves
    /// the queue message to come back after its visibility timeout.
    async fn lease_task(&self, request: LeaseTaskRequest) -> Result<LeaseTaskResponse, ControllerError>;
    /// Renews a lease. One attempt; the renew loop tries again next tick.
    async fn renew_lease(&self, request: RenewLeaseRequest) -> Result<RenewLeaseResponse, ControllerError>;
    /// Reports discovered instances; retried for as long as it takes.
    async fn report_targets(&self, request: ReportTargetsRequest) -> Result<ReportTargetsResponse, ControllerError>;
    /// Records a SendCommand; retried for as long as it takes, because a
    /// later attempt must know about it.
    async fn report_dispatch(&self, request: ReportDispatchRequest) -> Result<(), ControllerError>;
    /// Reports results; retried for as long as it takes.
    async fn report_results(&self, request: ReportResultsRequest) -> Result<ReportResultsResponse, ControllerError>;
    /// Completes a task; the answer may hand on leases of the same scope.
    async fn complete_task(&self, request: CompleteTaskRequest) -> Result<CompleteTaskResponse, ControllerError>;
    /// Fails a task.
    async fn fail_task(&self, request: FailTaskRequest) -> Result<FailTaskResponse, ControllerError>;
    /// Asks which of the commands named ended (waiting up to the request's
    /// wait). One attempt: it is a long poll that the caller repeats.
    async fn await_commands(&self, request: AwaitCommandsRequest) -> Result<AwaitCommandsResponse, ControllerError>;
    /// The fleet's size as the controller last said (0 until it did): how
    /// many workers share the hub account's quotas.
    fn workers(&self) -> Arc<AtomicU32>;
}

/// The controller, shared by everything in the worker that calls it.
pub type Controller = Arc<dyn WorkerCalls>;

#[tonic::async_trait]
impl WorkerCalls for ControllerClient {
    /// Asks for a task's lease, once.
    async fn lease_task(&self, request: LeaseTaskRequest) -> Result<LeaseTaskResponse, ControllerError> {
        let span = crate::trace::rpc("grpc", WORKER_SERVICE, "LeaseTask");
        if let Some(task) = &request.task {
            span.record(attr::CAMPAIGN_ID, task.campaign_id.as_str());
            span.record(attr::TASK_ID, task.task_id.as_str());
        }
        let answer = self
            .retrying_in_span(Duration::ZERO, |mut c| {
                let request = request.clone();
                async move { c.lease_task(muster_common::telemetry::traced(request)).await }
            })
            .instrument(span.clone())
            .await;
        if let Ok(answer) = &answer {
            self.heard(answer.workers);
        }
        // Where the task runs is known once it is granted.
        if let Ok(Some(task)) = answer.as_ref().map(|a| a.lease.as_ref().and_then(|l| l.task.as_ref())) {
            span.record(attr::ACCOUNT, task.account_id.as_str());
            span.record(attr::REGION, task.region.as_str());
        }
        answer
    }

    /// Renews a lease. One attempt; the renew loop tries again next tick.
    async fn renew_lease(&self, request: RenewLeaseRequest) -> Result<RenewLeaseResponse, ControllerError> {
        let answer = self
            .retrying("RenewLease", Duration::ZERO, |mut c| {
                let request = request.clone();
                async move { c.renew_lease(muster_common::telemetry::traced(request)).await }
            })
            .await;
        if let Ok(answer) = &answer {
            self.heard(answer.workers);
        }
        answer
    }

    /// Reports discovered instances; retried for as long as it takes.
    async fn report_targets(&self, request: ReportTargetsRequest) -> Result<ReportTargetsResponse, ControllerError> {
        self.retrying("ReportTargets", Duration::MAX, |mut c| {
            let request = request.clone();
            async move { c.report_targets(muster_common::telemetry::traced(request)).await }
        })
        .await
    }

    /// Records a SendCommand; retried for as long as it takes, because a
    /// later attempt must know about it.
    async fn report_dispatch(&self, request: ReportDispatchRequest) -> Result<(), ControllerError> {
        self.retrying("ReportDispatch", Duration::MAX, |mut c| {
            let request = request.clone();
            async move { c.report_dispatch(muster_common::telemetry::traced(request)).await }
        })
        .await
        .map(|_| ())
    }

    /// Reports results; retried for as long as it takes.
    async fn report_results(&self, request: ReportResultsRequest) -> Result<ReportResultsResponse, ControllerError> {
        self.retrying("ReportResults", Duration::MAX, |mut c| {
            let request = request.clone();
            async move { c.report_results(muster_common::telemetry::traced(request)).await }
        })
        .await
    }

    /// Completes a task; the answer may hand on leases of the same scope.
    async fn complete_task(&self, request: CompleteTaskRequest) -> Result<CompleteTaskResponse, ControllerError> {
        let answer = self
            .retrying("CompleteTask", Duration::from_secs(300), |mut c| {
                let request = request.clone();
                async move { c.complete_task(muster_common::telemetry::traced(request)).await }
            })
            .await;
        if let Ok(answer) = &answer {
            self.heard(answer.workers);
        }
        answer
    }

    /// Asks which of the commands named ended (waiting up to the request's
    /// wait). One attempt, outside any trace: it is a long poll that the
    /// caller repeats.
    async fn await_commands(&self, request: AwaitCommandsRequest) -> Result<AwaitCommandsResponse, ControllerError> {
        self.client
            .clone()
            .await_commands(request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| classify(&status))
    }

    /// Fails a task.
    async fn fail_task(&self, request: FailTaskRequest) -> Result<FailTaskResponse, ControllerError> {
        self.retrying("FailTask", Duration::from_secs(300), |mut c| {
            let request = request.clone();
            async move { c.fail_task(muster_common::telemetry::traced(request)).await }
        })
        .await
    }

    fn workers(&self) -> Arc<AtomicU32> {
        self.workers.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_cut_off_by_a_dying_controller_is_retried_a_refusal_is_not() {
        // What tonic reports when the connection dropped under the call.
        let cut = Status::cancelled("operation was canceled");
        assert!(is_transient(&cut));
        assert!(matches!(classify(&cut), ControllerError::Unreachable(_)));
        assert!(!is_transient(&Status::invalid_argument("results: at most 1000")));
        assert!(matches!(
            classify(&Status::failed_precondition("stale lease")),
            ControllerError::LeaseLost(_)
        ));
    }
}

/// A controller for unit tests: every call is recorded, and each answer is
/// the next one the test queued for that call (a default success when none
/// is left).
#[cfg(test)]
pub(crate) mod scripted {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use super::*;

    /// A call as the worker made it.
    #[derive(Debug, Clone)]
    pub enum Call {
        Lease(LeaseTaskRequest),
        Renew(RenewLeaseRequest),
        Results(ReportResultsRequest),
        Complete(CompleteTaskRequest),
        Fail(FailTaskRequest),
    }

    /// A request the scripted controller records, as [`Scripted::made`]
    /// lists them.
    pub trait Made: Sized {
        fn of(call: Call) -> Option<Self>;
    }

    macro_rules! made {
        ($($variant:ident($request:ty)),* $(,)?) => {$(
            impl Made for $request {
                fn of(call: Call) -> Option<Self> {
                    match call {
                        Call::$variant(request) => Some(request),
                        _ => None,
                    }
                }
            }
        )*};
    }

    made!(
        Lease(LeaseTaskRequest),
        Renew(RenewLeaseRequest),
        Results(ReportResultsRequest),
        Complete(CompleteTaskRequest),
        Fail(FailTaskRequest),
    );

    type Answers<T> = Mutex<VecDeque<Result<T, ControllerError>>>;

    #[derive(Default)]
    pub struct Scripted {
        pub calls: Mutex<Vec<Call>>,
        pub leases: Answers<LeaseTaskResponse>,
        pub renewals: Answers<RenewLeaseResponse>,
        pub results: Answers<ReportResultsResponse>,
        /// AwaitCommands answers; when none is left, the answer of a
        /// controller that reads no events and tells of no cancels.
        pub awaits: Answers<AwaitCommandsResponse>,
        /// The AwaitCommands calls (kept apart from `calls`: the endings'
        /// long poll asks whatever else the worker does).
        pub awaited: Mutex<Vec<AwaitCommandsRequest>>,
        /// Cancelled as the next LeaseTask comes, before it is answered:
        /// what happens while an ask is in flight (a SIGTERM, say).
        pub while_leasing: Mutex<Vec<tokio_util::sync::CancellationToken>>,
        workers: Arc<AtomicU32>,
    }

    impl Scripted {
        /// Queues an answer to RenewLease.
        pub fn renew_answers(&self, answer: Result<RenewLeaseResponse, ControllerError>) {
            self.renewals.lock().unwrap().push_back(answer);
        }

        /// The calls so far.
        pub fn calls(&self) -> Vec<Call> {
            self.calls.lock().unwrap().clone()
        }

        /// The calls of one kind so far, in order:
        /// `made::<FailTaskRequest>()`.
        pub fn made<T: Made>(&self) -> Vec<T> {
            self.calls().into_iter().filter_map(T::of).collect()
        }

        /// The RenewLease calls so far.
        pub fn renewals_made(&self) -> usize {
            self.made::<RenewLeaseRequest>().len()
        }

        fn next<T: Default>(&self, answers: &Answers<T>, call: Call) -> Result<T, ControllerError> {
            self.calls.lock().unwrap().push(call);
            answers.lock().unwrap().pop_front().unwrap_or_else(|| Ok(T::default()))
        }
    }

    #[tonic::async_trait]
    impl WorkerCalls for Arc<Scripted> {
        async fn lease_task(&self, request: LeaseTaskRequest) -> Result<LeaseTaskResponse, ControllerError> {
            for token in self.while_leasing.lock().unwrap().drain(..) {
                token.cancel();
            }
            self.next(&self.leases, Call::Lease(request))
        }

        async fn renew_lease(&self, request: RenewLeaseRequest) -> Result<RenewLeaseResponse, ControllerError> {
            self.next(&self.renewals, Call::Renew(request))
        }

        async fn report_targets(
            &self,
            request: ReportTargetsRequest,
        ) -> Result<ReportTargetsResponse, ControllerError> {
            Ok(ReportTargetsResponse {
                accepted: request.instances.len() as u32,
            })
        }

        async fn report_dispatch(&self, _request: ReportDispatchRequest) -> Result<(), ControllerError> {
            Ok(())
        }

        async fn report_results(
            &self,
            request: ReportResultsRequest,
        ) -> Result<ReportResultsResponse, ControllerError> {
            self.next(&self.results, Call::Results(request))
        }

        async fn complete_task(&self, request: CompleteTaskRequest) -> Result<CompleteTaskResponse, ControllerError> {
            self.calls.lock().unwrap().push(Call::Complete(request));
            Ok(CompleteTaskResponse::default())
        }

        async fn fail_task(&self, request: FailTaskRequest) -> Result<FailTaskResponse, ControllerError> {
            self.calls.lock().unwrap().push(Call::Fail(request));
            Ok(FailTaskResponse::default())
        }

        async fn await_commands(
            &self,
            request: AwaitCommandsRequest,
        ) -> Result<AwaitCommandsResponse, ControllerError> {
            self.awaited.lock().unwrap().push(request);
            self.awaits
                .lock()
                .unwrap()
                .pop_front()
                .unwrap_or_else(|| Ok(Default::default()))
        }

        fn workers(&self) -> Arc<AtomicU32> {
            self.workers.clone()
        }
    }
}
