//! The muster worker: takes task references from SQS, leases each task from
//! the controller, assumes the execution role of the task's account, and
//! discovers instances or runs one batch through SSM Run Command, reporting
//! every result.
//!
//! The pipeline, one module each: [`consumer`] (SQS) -> [`lease`]
//! (controller) -> [`credentials`] (STS) -> [`discovery`] / [`executor`]
//! (EC2, SSM; polled at the [`cadence`]) -> [`output`] (S3, CloudWatch
//! Logs) -> [`reporter`].

pub mod api;
pub mod cadence;
pub mod config;
pub mod consumer;
pub mod controller;
pub mod credentials;
pub mod discovery;
pub mod documents;
pub mod endings;
pub mod executor;
pub mod lease;
pub mod lru_map;
pub mod output;
pub mod patch_states;
pub mod reporter;
pub mod scope_clients;
pub mod stats;
pub mod task;
pub mod trace;

use std::sync::Arc;
use std::time::Duration;

use aws_config::SdkConfig;
use muster_common::ratelimit::ApiLimiter;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cadence::BatchDurations;
use crate::controller::{Controller, ControllerError, WorkerCalls};
use crate::credentials::{AssumeError, CredentialCache};
use crate::reporter::Reporter;
use crate::scope_clients::{CallError, ScopeClientCache};
use crate::stats::Stats;

/// The controller's default lease TTL: what a worker assumes until a lease
/// says otherwise.
pub const DEFAULT_LEASE_TTL: std::time::Duration = std::time::Duration::from_secs(30);

/// A lease TTL as the controller gave it, if it is one (not zero, not
/// negative).
pub(crate) fn given_ttl(ttl: prost_types::Duration) -> Option<std::time::Duration> {
    std::time::Duration::try_from(ttl).ok().filter(|d| !d.is_zero())
}

/// What every task of the process shares.
pub struct Context {
    /// This worker's id, for the controller's logs.
    pub worker_id: String,
    /// The controller.
    pub controller: Controller,
    /// Batches results to the controller.
    pub reporter: Reporter,
    /// AWS configuration with the worker's own (hub) credentials.
    pub sdk: SdkConfig,
    /// Target-account credentials.
    pub credentials: Arc<CredentialCache>,
    /// SDK clients per (role session, region).
    pub targets: ScopeClientCache,
    /// Per-(account, region, API) rates.
    pub limiter: Arc<ApiLimiter>,
    /// How long each campaign's batches took, for the poll cadence.
    pub durations: BatchDurations,
    /// Counters.
    pub stats: Arc<Stats>,
    /// Why the worker cannot take tasks now, if it cannot.
    pub not_ready: std::sync::Mutex<Option<String>>,
    /// When SSM is still silent about a command this long past its delivery
    /// and execution timeouts, the command is cancelled (5 minutes).
    pub overdue_margin: std::time::Duration,
    /// After that cancel, how long SSM has to say where the instances ended
    /// before they are reported ERROR (2 minutes).
    pub abandon_grace: std::time::Duration,
    /// Documents as read from SSM: what discovery checks a campaign's
    /// parameters against, and how long their commands may run.
    pub documents: documents::Documents,
    /// Which commands ended, from Run Command's events.
    pub endings: endings::Endings,
    /// Stops asking for endings when the context goes.
    _endings_stop: tokio_util::sync::DropGuard,
    /// The lease TTL the controller last gave, in milliseconds.
    lease_ttl_ms: std::sync::atomic::AtomicU64,
}

impl Context {
    /// A context over these clients.
    pub fn new(worker_id: &str, controller: impl WorkerCalls, sdk: SdkConfig) -> Self {
        let controller: Controller = Arc::new(controller);
        let endings_stop = CancellationToken::new();
        let workers = controller.workers();
        Self {
            worker_id: worker_id.to_owned(),
            reporter: Reporter::spawn(controller.clone()),
            endings: endings::Endings::spawn(controller.clone(), endings_stop.clone()),
            _endings_stop: endings_stop.drop_guard(),
            controller,
            credentials: Arc::new(
                CredentialCache::new(aws_sdk_sts::Client::new(&sdk), credentials::DEFAULT_ASSUME_ROLE_RATE)
                    .sharing_with(workers),
            ),
            sdk,
            targets: ScopeClientCache::default(),
            limiter: Arc::new(ApiLimiter::default()),
            durations: BatchDurations::default(),
            stats: Arc::new(Stats::default()),
            not_ready: std::sync::Mutex::new(None),
            overdue_margin: std::time::Duration::from_secs(300),
            abandon_grace: std::time::Duration::from_secs(120),
            documents: documents::Documents::default(),
            lease_ttl_ms: std::sync::atomic::AtomicU64::new(DEFAULT_LEASE_TTL.as_millis() as u64),
        }
    }

    /// The lease TTL the controller last gave ([`DEFAULT_LEASE_TTL`] until
    /// it gave one).
    pub fn lease_ttl(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.lease_ttl_ms.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Remembers the TTL of a lease the controller gave; a TTL that is not
    /// one (zero, negative) is ignored.
    pub fn heard_lease_ttl(&self, ttl: prost_types::Duration) {
        if let Some(ttl) = given_ttl(ttl) {
            let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
            self.lease_ttl_ms.store(ms, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Paces AssumeRole at `rate` calls per second for the whole fleet,
    /// this worker at its share (the default is
    /// [`credentials::DEFAULT_ASSUME_ROLE_RATE`]).
    pub fn with_assume_role_rate(mut self, rate: f64) -> Self {
        self.credentials = Arc::new(
            CredentialCache::new(aws_sdk_sts::Client::new(&self.sdk), rate).sharing_with(self.controller.workers()),
        );
        self
    }

    /// Marks the worker ready (`None`) or not, with the reason.
    pub fn set_not_ready(&self, reason: Option<String>) {
        *self.not_ready.lock().expect("readiness lock") = reason;
    }

    /// Whether the worker takes tasks: the queue answers and it is not
    /// stopping.
    pub fn readiness(&self) -> Result<(), String> {
        match self.not_ready.lock().expect("readiness lock").clone() {
            None => Ok(()),
            Some(reason) => Err(reason),
        }
    }

    /// The metrics in the OpenMetrics text format.
    pub fn render_metrics(&self) -> String {
        self.stats.render(stats::Extra {
            credential_refreshes: self.credentials.refreshes(),
            cached_targets: self.targets.len(),
            ready: self.readiness().is_ok(),
        })
    }

    /// What the metrics endpoint serves for this worker.
    pub fn metrics_endpoint(self: &Arc<Self>) -> muster_common::telemetry::Endpoint {
        muster_common::telemetry::Endpoint::new(
            self.clone(),
            |ctx| async move { ctx.render_metrics() },
            |ctx| async move { ctx.readiness() },
        )
    }
}

/// Why a task stopped before its end.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// The execution role could not be assumed.
    #[error(transparent)]
    Assume(#[from] AssumeError),
    /// An AWS call failed for good.
    #[error(transparent)]
    Aws(#[from] CallError),
    /// The controller refused or could not be reached.
    #[error(transparent)]
    Controller(ControllerError),
    /// SSM would refuse what the task sends (a document missing in the
    /// scope, parameters it does not take): nothing was sent, and another
    /// attempt would be refused the same.
    #[error("{0}")]
    Refused(String),
    /// The lease passed to someone else.
    #[error("lease lost")]
    LeaseLost,
    /// The worker is stopping and hands the task back.
    #[error("handed back")]
    HandedBack,
}

/// How the worker runs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Worker id.
    pub worker_id: String,
    /// The task queue.
    pub queue_url: String,
    /// Concurrent receive loops.
    pub pollers: usize,
    /// Most tasks at once.
    pub max_tasks: usize,
    /// How long running tasks may go on after a stop request before they are
    /// handed back to the controller.
    pub shutdown_grace: Duration,
}

/// How long a stopping worker waits, after its grace, for the tasks it
/// hands back to let go.
pub const HAND_BACK_BUDGET: Duration = Duration::from_secs(30);
/// How long it then waits for the queue deletes still going out.
pub const LAST_DELETES_BUDGET: Duration = Duration::from_secs(5);

/// The longest a worker takes to stop after SIGTERM with `shutdown_grace`:
/// what the platform must wait before it kills it (ECS's StopTimeout, the
/// sandbox's stop), or leases are lost instead of handed back.
pub fn stop_budget(shutdown_grace: Duration) -> Duration {
    shutdown_grace + HAND_BACK_BUDGET + LAST_DELETES_BUDGET
}

/// Runs the worker until `shutdown` fires, then stops in order: no more
/// receiving; running tasks get `shutdown_grace` to finish; what is left is
/// handed back (FailTask, retryable), so scale-in loses nothing. It is done
/// within [`stop_budget`].
pub async fn run(ctx: Arc<Context>, settings: Settings, shutdown: CancellationToken) {
    let (queue, deleting) = consumer::Queue::new(aws_sdk_sqs::Client::new(&ctx.sdk), settings.queue_url.clone());
    let tracker = TaskTracker::new();
    let hand_back = CancellationToken::new();
    let consuming = tokio::spawn(consumer::run(
        ctx.clone(),
        Arc::new(queue),
        settings.pollers,
        settings.max_tasks,
        shutdown.clone(),
        hand_back.clone(),
        tracker.clone(),
    ));
    shutdown.cancelled().await;
    ctx.set_not_ready(Some("stopping".into()));
    // Receiving stops (a long poll in flight finishes and gives back what it
    // gets) while running tasks have their grace period.
    tracker.close();
    let running = ctx.stats.running_tasks();
    tracing::info!(
        running,
        grace_s = settings.shutdown_grace.as_secs(),
        "stopping: no new tasks; letting running tasks finish"
    );
    if tokio::time::timeout(settings.shutdown_grace, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            running = ctx.stats.running_tasks(),
            "grace period over; handing the rest back to the controller"
        );
        hand_back.cancel();
        let _ = tokio::time::timeout(HAND_BACK_BUDGET, tracker.wait()).await;
    }
    let _ = consuming.await;
    // The last deletes go out once every task has let go of the queue.
    let _ = tokio::time::timeout(LAST_DELETES_BUDGET, deleting).await;
    tracing::info!("worker stopped");
}
