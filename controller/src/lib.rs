//! The muster controller: takes campaigns over gRPC, stores them durably,
//! shards them into tasks per (account, region), puts task references on SQS
//! for workers, leases tasks to them, and rolls campaigns out within their
//! concurrency and error limits. Everything it decides it re-derives from the
//! store, so `kill -9` at any line loses nothing.
//!
//! api -> [`validate`] -> [`store`] <- [`reconcile`] loop -> [`dispatcher`]
//! -> SQS; [`worker_api`] takes leases and reports; [`export`] writes results
//! to S3 when a campaign ends.

pub mod access;
pub mod approvals;
pub mod auth;
pub mod campaign_api;
pub mod command_events;
pub mod config;
pub mod console;
pub mod dead_letters;
pub mod dispatcher;
pub mod expand;
pub mod export;
pub mod fleet;
pub mod guardrails;
pub mod leader;
pub mod metrics;
pub mod notify;
pub mod policy;
pub mod reconcile;
pub mod remote_results;
pub mod resolve;
pub mod retention;
pub mod rollout;
pub mod scaling;
pub mod schedule_api;
pub mod scheduler;
pub mod schedules;
pub mod signin;
pub mod status;
pub mod store;
pub mod validate;
pub mod watchers;
pub mod waves;
pub mod worker_api;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use aws_config::SdkConfig;
use muster_proto::v1::campaign_service_server::CampaignServiceServer;
use muster_proto::v1::schedule_service_server::ScheduleServiceServer;
use muster_proto::v1::worker_service_server::WorkerServiceServer;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use crate::store::Store;
use crate::validate::Defaults;
use crate::watchers::Watchers;

/// Every AWS action the controller calls, with its own (hub) role: enqueue
/// task references (SendMessageBatch needs sqs:SendMessage), drain the
/// dead-letter queue (receive and delete there), export results, read
/// the policy file when it is in S3, expand OUs and regions, put campaign
/// state changes on the hub's event bus and topic, publish the scaling
/// signal. The hub template's controller role
/// grants exactly these (a test checks). The controller never acts in target
/// accounts.
pub const AWS_ACTIONS: [&str; 11] = [
    "sqs:SendMessage",
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "s3:PutObject",
    "s3:GetObject",
    "organizations:ListAccountsForParent",
    "organizations:ListOrganizationalUnitsForParent",
    "ec2:DescribeRegions",
    "events:PutEvents",
    "sns:Publish",
    "cloudwatch:PutMetricData",
];

/// How the controller runs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The SQS task queue.
    pub queue_url: String,
    /// Bucket for results exports; none to skip exports.
    pub results_bucket: Option<String>,
    /// Lease time to live.
    pub lease_ttl: Duration,
    /// Attempts per task.
    pub max_attempts: u32,
    /// Most leased or queued Execute tasks per (account, region).
    pub max_tasks_per_scope: u32,
    /// Most tasks on the queue not yet leased.
    pub max_queued: usize,
    /// A task on the queue this long without a lease is sent again.
    pub requeue_after: Duration,
    /// The task queue's dead-letter queue, drained back into the store.
    pub dead_letter_queue_url: Option<String>,
    /// The hub's queue of Run Command status-change events; none: workers
    /// learn that commands ended by polling only.
    pub command_events_queue_url: Option<String>,
    /// How often the reconcile loop runs when nothing wakes it.
    pub reconcile_interval: Duration,
    /// How long a leader's term lasts without renewal (renewed every third).
    pub leader_ttl: Duration,
    /// Campaigns that ended longer ago leave the store; none: kept forever.
    pub retention: Option<Duration>,
    /// Defaults for empty spec fields.
    pub defaults: Defaults,
    /// Limits on every campaign.
    pub guardrails: crate::guardrails::Guardrails,
    /// The ExternalIds of target accounts' execution roles.
    pub external_ids: crate::access::ExternalIds,
    /// Where campaign state changes are posted.
    pub notifications: crate::notify::Notifications,
    /// Where the worker fleet's scaling signal goes; none: not published.
    pub scaling: Option<crate::scaling::ScalingSignal>,
}

impl Settings {
    /// Store time (ms) before which a queued, unleased task counts as
    /// overdue: its message may be lost and is sent again.
    pub fn requeue_cutoff_ms(&self, now_ms: i64) -> i64 {
        ms_before(now_ms, self.requeue_after)
    }

    /// How long a worker counts as active after it last took a lease: two
    /// lease TTLs, at least a minute (the metrics and the scaling signal).
    pub fn active_worker_window(&self) -> Duration {
        (self.lease_ttl * 2).max(Duration::from_secs(60))
    }

    /// Store time (ms) before which an ended campaign leaves the store;
    /// none when everything is kept.
    pub fn retention_cutoff_ms(&self, now_ms: i64) -> Option<i64> {
        self.retention.map(|horizon| ms_before(now_ms, horizon))
    }
}

/// `age` before `now_ms`, in store milliseconds.
fn ms_before(now_ms: i64, age: Duration) -> i64 {
    now_ms.saturating_sub(i64::try_from(age.as_millis()).unwrap_or(i64::MAX))
}

/// How the controller's APIs are protected.
#[derive(Debug, Clone)]
pub struct Security {
    /// TLS for both APIs; none serves plaintext (loopback only).
    pub tls: Option<ServerTls>,
    /// Who may call CampaignService, and what each may do where.
    pub auth: Arc<crate::auth::Auth>,
    /// How often the policy file is checked for changes.
    pub policy_poll: Duration,
    /// The bearer token `/metrics` demands, if any.
    pub metrics_token: Option<String>,
}

impl Security {
    /// Plaintext on loopback, every caller may do anything: development
    /// only.
    pub fn insecure() -> Self {
        Self::new(None, crate::auth::Auth::open())
    }

    /// TLS (or none) and callers; the policy file is checked every two
    /// seconds.
    pub fn new(tls: Option<ServerTls>, auth: crate::auth::Auth) -> Self {
        Self {
            tls,
            auth: Arc::new(auth),
            policy_poll: Duration::from_secs(2),
            metrics_token: None,
        }
    }
}

/// The controller's TLS material, PEM.
#[derive(Clone)]
pub struct ServerTls {
    /// Certificate chain.
    pub cert: Vec<u8>,
    /// Private key.
    pub key: Vec<u8>,
    /// CA of worker client certificates (WorkerService demands one).
    pub worker_ca: Vec<u8>,
    /// The SPIFFE trust domain of workers' identities
    /// (`spiffe://<domain>/worker/<name>`).
    pub worker_trust_domain: String,
    /// CA of CampaignService client certificates (optional mTLS).
    pub client_ca: Option<Vec<u8>>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("client_ca", &self.client_ca.is_some())
            .finish_non_exhaustive()
    }
}

/// Everything the services share.
pub struct Controller {
    /// Durable state.
    pub store: Store,
    /// Settings.
    pub settings: Settings,
    /// WatchCampaign fan-out.
    pub watchers: Watchers,
    /// Wakes the reconcile loop early.
    pub wake: Notify,
    /// SQS (task references).
    pub sqs: aws_sdk_sqs::Client,
    /// S3 (results exports).
    pub s3: aws_sdk_s3::Client,
    /// Organizations (OU expansion).
    pub organizations: aws_sdk_organizations::Client,
    /// EventBridge (notifications to the hub's bus).
    pub eventbridge: aws_sdk_eventbridge::Client,
    /// SNS, for notifications.
    pub sns: aws_sdk_sns::Client,
    /// CloudWatch, for the scaling signal.
    pub cloudwatch: aws_sdk_cloudwatch::Client,
    /// EC2 (enabled regions).
    pub ec2: aws_sdk_ec2::Client,
    /// When each pending export was last tried (retries are spaced out).
    pub export_attempts: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
    /// Prometheus counters.
    pub metrics: metrics::Metrics,
    /// Why the last SendMessageBatch failed, until one succeeds.
    pub queue_error: std::sync::Mutex<Option<String>>,
    /// Whether this controller leads, and its term.
    pub leader: leader::Leader,
    /// The accounts of OUs, as scopes and ExternalIds by OU need them.
    pub ou_members: expand::OuMembers,
    /// Commands that Run Command's events say ended, for AwaitCommands.
    pub command_endings: command_events::Endings,
    /// The workers calling this controller, for their share of the hub's
    /// quotas.
    pub fleet: fleet::Fleet,
}

impl Controller {
    /// A controller over an opened store and the hub account's AWS config.
    pub fn new(store: Store, settings: Settings, sdk: &SdkConfig) -> Arc<Self> {
        let fleet = fleet::Fleet::new(settings.lease_ttl * 2);
        Arc::new(Self {
            store,
            settings,
            watchers: Watchers::default(),
            wake: Notify::new(),
            sqs: aws_sdk_sqs::Client::new(sdk),
            s3: aws_sdk_s3::Client::from_conf(muster_common::aws::s3_config(sdk)),
            organizations: aws_sdk_organizations::Client::new(sdk),
            eventbridge: aws_sdk_eventbridge::Client::new(sdk),
            sns: aws_sdk_sns::Client::new(sdk),
            cloudwatch: aws_sdk_cloudwatch::Client::new(sdk),
            ec2: aws_sdk_ec2::Client::new(sdk),
            export_attempts: Default::default(),
            metrics: metrics::Metrics::default(),
            queue_error: std::sync::Mutex::new(None),
            leader: leader::Leader::new(),
            ou_members: expand::OuMembers::default(),
            command_endings: command_events::Endings::default(),
            fleet,
        })
    }
}

/// A controller serving on local ports.
pub struct Running {
    /// CampaignService address.
    pub campaign_addr: SocketAddr,
    /// WorkerService address.
    pub worker_addr: SocketAddr,
    /// Metrics endpoint address, when served.
    pub metrics_addr: Option<SocketAddr>,
    /// The shared state.
    pub controller: Arc<Controller>,
    shutdown: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Whether it stops or stopped: [`Self::stop`], a signal, or a newer
    /// controller's schema found under it.
    pub fn stopping(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    /// Stops serving and reconciling, in order.
    pub async fn stop(self) {
        self.shutdown.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// What the metrics endpoint serves for `ctl`.
pub fn metrics_endpoint(ctl: &Arc<Controller>) -> muster_common::telemetry::Endpoint {
    muster_common::telemetry::Endpoint::new(
        ctl.clone(),
        |ctl| async move { metrics::render(&ctl).await },
        |ctl| async move { metrics::readiness(&ctl).await },
    )
}

fn server(tls: Option<&ServerTls>, client_ca: Option<&[u8]>, required: bool) -> std::io::Result<Server> {
    // Every call gets a span, a child of the caller's traceparent. HTTP/2
    // pings keep long watches alive through load balancers' idle timeouts
    // and find dead clients.
    let builder = Server::builder()
        .trace_fn(muster_common::telemetry::grpc_server_span)
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)));
    let Some(tls) = tls else {
        return Ok(builder);
    };
    muster_common::tls::install_crypto_provider();
    let mut config = ServerTlsConfig::new()
        .identity(Identity::from_pem(&tls.cert, &tls.key))
        .timeout(Duration::from_secs(10));
    if let Some(ca) = client_ca {
        config = config
            .client_ca_root(Certificate::from_pem(ca))
            .client_auth_optional(!required);
    }
    builder.tls_config(config).map_err(std::io::Error::other)
}

/// Where the controller listens.
pub struct Listeners {
    /// CampaignService.
    pub campaign: TcpListener,
    /// WorkerService.
    pub worker: TcpListener,
    /// `/metrics`, `/healthz`, `/readyz`, gRPC health; none to serve no
    /// metrics.
    pub metrics: Option<TcpListener>,
}

/// Reflection v1, and v1alpha for the clients that speak only it
/// (grpcio-reflection, Postman, older grpcurl). Both list what the campaign
/// listener serves: WorkerService is on its own port.
fn reflection_builder() -> tonic_reflection::server::Builder<'static> {
    [
        "muster.v1.CampaignService",
        "muster.v1.ScheduleService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ]
    .into_iter()
    .fold(
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(muster_proto::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET),
        |builder, name| builder.with_service_name(name),
    )
}

/// Claims leadership once, then starts the controller's loops: leadership,
/// reconcile, notifications, schedules, the policy's reload, retention,
/// the scaling signal, other controllers' results for this one's watchers
/// and, when their queues are configured, Run Command events and the dead
/// letters.
async fn run_loops(
    controller: &Arc<Controller>,
    security: &Security,
    shutdown: &CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut loops = Vec::new();
    // The first claim before anything else: a lone controller leads (and
    // extends the leases it finds) before it answers its first request.
    leader::claim(controller, controller.settings.leader_ttl).await;
    loops.push(tokio::spawn(leader::run(controller.clone(), shutdown.clone())));
    loops.push(tokio::spawn(reconcile::run(controller.clone(), shutdown.clone())));
    loops.push(tokio::spawn(notify::run(controller.clone(), shutdown.clone())));
    loops.push(tokio::spawn(scheduler::run(
        controller.clone(),
        security.auth.clone(),
        shutdown.clone(),
    )));
    loops.push(tokio::spawn(auth::watch_policy(
        security.auth.clone(),
        controller.clone(),
        security.policy_poll,
        shutdown.clone(),
    )));
    loops.push(tokio::spawn(retention::run(controller.clone(), shutdown.clone())));
    loops.push(tokio::spawn(scaling::run(controller.clone(), shutdown.clone())));
    loops.push(tokio::spawn(remote_results::run(controller.clone(), shutdown.clone())));
    if let Some(url) = controller.settings.command_events_queue_url.clone() {
        loops.push(tokio::spawn(command_events::run(
            controller.clone(),
            url,
            shutdown.clone(),
        )));
    }
    let (stopping, endings) = (shutdown.clone(), controller.clone());
    loops.push(tokio::spawn(async move {
        stopping.cancelled().await;
        endings.command_endings.stopping.cancel();
    }));
    if let Some(url) = controller.settings.dead_letter_queue_url.clone() {
        loops.push(tokio::spawn(dead_letters::run(
            controller.clone(),
            url,
            shutdown.clone(),
        )));
    }
    loops
}

/// Runs one listener's server until it stops, saying why if it failed.
fn serving(
    what: &'static str,
    serve: impl std::future::Future<Output = Result<(), tonic::transport::Error>> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(error) = serve.await {
            tracing::error!(%error, "{what} stopped");
        }
    })
}

/// gRPC health for both listeners, every service serving.
async fn health() -> tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health> {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_serving::<CampaignServiceServer<campaign_api::CampaignApi>>()
        .await;
    reporter
        .set_serving::<ScheduleServiceServer<schedule_api::ScheduleApi>>()
        .await;
    reporter
        .set_serving::<WorkerServiceServer<worker_api::WorkerApi>>()
        .await;
    health
}

/// What the campaign listener serves: the web console (which shares its
/// TLS and its callers), health, reflection, CampaignService and
/// ScheduleService.
fn campaign_routes(
    controller: &Arc<Controller>,
    security: &Security,
    health: tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
) -> std::io::Result<tonic::service::Routes> {
    let reflection = reflection_builder().build_v1().map_err(std::io::Error::other)?;
    let reflection_v1alpha = reflection_builder().build_v1alpha().map_err(std::io::Error::other)?;
    let campaign_api = campaign_api::CampaignApi::new(controller.clone(), security.auth.clone());
    let console = console::router(
        campaign_api.clone(),
        schedule_api::ScheduleApi::new(controller.clone(), security.auth.clone()),
        security.auth.clone(),
        security.tls.as_ref().map(|t| t.key.as_slice()),
    );
    let campaign_service = CampaignServiceServer::new(campaign_api)
        // A valid spec is well under 1 MiB (validate.rs limits every list and
        // string); anything near this is refused before it is parsed.
        .max_decoding_message_size(4 * 1024 * 1024);
    let schedule_service = ScheduleServiceServer::new(schedule_api::ScheduleApi::new(
        controller.clone(),
        security.auth.clone(),
    ))
    .max_decoding_message_size(4 * 1024 * 1024);
    Ok(tonic::service::Routes::from(console)
        .add_service(health)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(campaign_service)
        .add_service(schedule_service))
}

/// Serves CampaignService and WorkerService (and metrics), and runs the
/// reconcile loop, until `shutdown`. Without TLS the API listeners must be
/// on loopback.
pub async fn start(
    controller: Arc<Controller>,
    listeners: Listeners,
    security: Security,
    shutdown: CancellationToken,
) -> std::io::Result<Running> {
    let Listeners {
        campaign,
        worker,
        metrics,
    } = listeners;
    let campaign_addr = campaign.local_addr()?;
    let worker_addr = worker.local_addr()?;
    if security.tls.is_none() {
        for (field, addr) in [("listen", campaign_addr), ("worker_listen", worker_addr)] {
            muster_common::tls::check_plaintext_bind(field, addr).map_err(std::io::Error::other)?;
        }
    }
    // A policy kept in S3 is read before anything is served: a controller
    // that cannot read it does not start. (A file was read by Auth::new.)
    if matches!(security.auth.policy_source(), Some(auth::PolicySource::S3 { .. }))
        && let Some(Err(error)) = security.auth.refresh(&controller.s3, true).await
    {
        return Err(std::io::Error::other(error));
    }
    let campaign_server = server(
        security.tls.as_ref(),
        security.tls.as_ref().and_then(|t| t.client_ca.as_deref()),
        false,
    )?;
    let mut worker_server = server(
        security.tls.as_ref(),
        security.tls.as_ref().map(|t| t.worker_ca.as_slice()),
        true,
    )?;
    let health = health().await;

    let routes = campaign_routes(&controller, &security, health.clone())?;
    let worker_service = WorkerServiceServer::new(worker_api::WorkerApi::new(
        controller.clone(),
        security.tls.as_ref().map(|t| t.worker_trust_domain.clone()),
    ))
    .max_decoding_message_size(64 * 1024 * 1024);

    let mut tasks = Vec::new();
    // Browsers speak HTTP/1.1 where there is no TLS (and ALPN) to offer
    // HTTP/2.
    let campaigns = campaign_server
        .accept_http1(true)
        .add_routes(routes)
        .serve_with_incoming_shutdown(
            muster_common::net::incoming(campaign),
            shutdown.clone().cancelled_owned(),
        );
    tasks.push(serving("campaign API", campaigns));
    let workers = worker_server
        .add_service(health)
        .add_service(worker_service)
        .serve_with_incoming_shutdown(muster_common::net::incoming(worker), shutdown.clone().cancelled_owned());
    tasks.push(serving("worker API", workers));
    tasks.extend(run_loops(&controller, &security, &shutdown).await);
    let metrics_addr = match metrics {
        Some(listener) => {
            let endpoint = metrics_endpoint(&controller).with_token(security.metrics_token.as_deref());
            let (addr, server) = muster_common::telemetry::serve_metrics(listener, endpoint, shutdown.clone()).await?;
            tasks.push(server);
            Some(addr)
        }
        None => None,
    };
    Ok(Running {
        campaign_addr,
        worker_addr,
        metrics_addr,
        controller,
        shutdown,
        tasks,
    })
}
