//! Everything in this process: moto + muster-sim, a seeded fleet, a
//! controller on loopback ports, and workers. Fast to start, and every part
//! reachable for assertions.

use std::sync::Arc;
use std::time::Duration;

use aws_config::SdkConfig;
use aws_credential_types::provider::SharedCredentialsProvider;
use muster_controller::store::Store;
use muster_proto::v1::campaign_service_client::CampaignServiceClient;

use crate::creds::Creds;
use muster_sim::Tunables;
use muster_sim::seed::fleet_file::FleetState;
use muster_sim::testkit::{HUB_ACCOUNT, Sandbox, test_tunables};
use muster_worker::controller::ControllerClient;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

/// Options of a stack.
#[derive(Debug, Clone)]
pub struct Options {
    /// Sim tunables.
    pub tunables: Tunables,
    /// Workers to start.
    pub workers: usize,
    /// Lease TTL.
    pub lease_ttl: Duration,
    /// Batches out at once per scope.
    pub max_tasks_per_scope: u32,
    /// A task on the queue this long without a lease is sent again.
    pub requeue_after: Duration,
    /// Campaigns that ended longer ago leave the store at a retention pass.
    pub retention: Option<Duration>,
    /// The controller's guardrails, from the seeded fleet (account and OU
    /// ids are known only then).
    pub guardrails: fn(&FleetState) -> muster_controller::guardrails::Guardrails,
    /// Where campaign state changes are posted.
    pub notifications: muster_controller::notify::Notifications,
    /// Whether the controller reads Run Command's events (the sandbox
    /// routes them to its queue), so workers poll less.
    pub command_events: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            tunables: test_tunables(),
            workers: 1,
            lease_ttl: Duration::from_secs(10),
            max_tasks_per_scope: 4,
            requeue_after: Duration::from_secs(300),
            retention: None,
            guardrails: |_| Default::default(),
            notifications: Default::default(),
            command_events: true,
        }
    }
}

/// An in-process worker.
pub struct Worker {
    /// Its context (stats, credentials).
    pub ctx: Arc<muster_worker::Context>,
    stop: CancellationToken,
    done: tokio::task::JoinHandle<()>,
}

impl Worker {
    /// Stops it as SIGTERM would, and waits.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.done.await;
    }
}

/// The stack.
pub struct Stack {
    /// The sandbox.
    pub sb: Sandbox,
    /// What seeding made.
    pub fleet: FleetState,
    /// The running controller.
    pub controller: muster_controller::Running,
    /// Workers.
    pub workers: Vec<Worker>,
    /// A client of CampaignService.
    pub client: CampaignServiceClient<Channel>,
    /// Its TLS material and callers.
    pub creds: Creds,
    options: Options,
    data: tempfile::TempDir,
    /// The PostgreSQL database, when the tests run on PostgreSQL.
    _database: Option<muster_controller::store::testkit::TestDatabase>,
}

/// The controller settings the stack uses.
pub fn controller_settings(fleet: &FleetState, options: &Options) -> muster_controller::Settings {
    muster_controller::Settings {
        queue_url: fleet.queue_url.clone(),
        results_bucket: Some(fleet.results_bucket.clone()).filter(|b| !b.is_empty()),
        lease_ttl: options.lease_ttl,
        max_attempts: 3,
        max_tasks_per_scope: options.max_tasks_per_scope,
        max_queued: 500,
        requeue_after: options.requeue_after,
        leader_ttl: Duration::from_secs(15),
        retention: options.retention,
        dead_letter_queue_url: Some(fleet.dlq_url.clone()),
        command_events_queue_url: (options.command_events && !fleet.command_events_queue_url.is_empty())
            .then(|| fleet.command_events_queue_url.clone()),
        reconcile_interval: Duration::from_millis(200),
        defaults: muster_controller::validate::Defaults {
            role_name: "muster-execution".into(),
            api_calls_per_second: 20.0,
        },
        guardrails: (options.guardrails)(fleet),
        // The fleet's ExternalId, kept by the controller as in production.
        external_ids: muster_controller::access::ExternalIds::new(&muster_controller::access::AccessFile {
            external_id: Some(fleet.external_id.clone()),
            ..Default::default()
        })
        .expect("the fleet's ExternalId"),
        notifications: options.notifications.clone(),
        scaling: None,
    }
}

impl Stack {
    /// Sandbox, fleet, controller and workers.
    pub async fn start(fleet: &str, options: Options) -> Self {
        let sb = Sandbox::start_with(options.tunables.clone()).await;
        let fleet = sb.seed(fleet).await;
        let data = tempfile::tempdir().expect("a data dir");
        let database = crate::test_database();
        let store = match &database {
            Some(database) => {
                let target = muster_controller::store::PostgresTarget::parse(database.url(), None, None)
                    .expect("the test database URL");
                Store::connect(&target).expect("the store connects")
            }
            None => Store::open(data.path()).expect("the store opens"),
        };
        let creds = Creds::new();
        let controller = start_controller(&sb, &fleet, &options, store, &creds).await;
        let client = campaign_client(
            creds
                .endpoint(controller.campaign_addr.port(), Some(&creds.pki.admin))
                .connect_lazy(),
        );
        let mut stack = Self {
            sb,
            fleet,
            controller,
            workers: Vec::new(),
            client,
            creds,
            options,
            data,
            _database: database,
        };
        for _ in 0..stack.options.workers {
            let worker = stack.start_worker().await;
            stack.workers.push(worker);
        }
        stack
    }

    /// A client of ScheduleService, as the admin.
    pub fn schedules(&self) -> muster_proto::v1::schedule_service_client::ScheduleServiceClient<Channel> {
        muster_proto::v1::schedule_service_client::ScheduleServiceClient::new(
            self.creds
                .endpoint(self.controller.campaign_addr.port(), Some(&self.creds.pki.admin))
                .connect_lazy(),
        )
    }

    /// Another in-process worker.
    pub async fn start_worker(&self) -> Worker {
        let id = format!("worker-{}", uuid::Uuid::new_v4().simple());
        let controller = ControllerClient::from_channel(
            self.creds
                .worker_endpoint(self.controller.worker_addr.port(), &id)
                .timeout(Duration::from_secs(30))
                .connect_lazy(),
        );
        let ctx = Arc::new(muster_worker::Context::new(&id, controller, worker_sdk(&self.sb).await));
        let stop = CancellationToken::new();
        let done = tokio::spawn(muster_worker::run(
            ctx.clone(),
            muster_worker::Settings {
                worker_id: id,
                queue_url: self.fleet.queue_url.clone(),
                pollers: 2,
                max_tasks: 2000,
                shutdown_grace: Duration::from_secs(5),
            },
            stop.clone(),
        ));
        Worker { ctx, stop, done }
    }

    /// The controller's store (for assertions on durable state).
    pub fn store(&self) -> &Store {
        &self.controller.controller.store
    }

    /// Account id by fleet name.
    pub fn account(&self, name: &str) -> String {
        self.fleet.account(name).expect("account in the fleet").id.clone()
    }

    /// How many SendCommands each instance got (the sim's audit log).
    pub fn sends_per_instance(&self) -> std::collections::BTreeMap<String, usize> {
        let mut counts = std::collections::BTreeMap::new();
        for entry in self.sb.audit() {
            for id in entry.instance_ids {
                *counts.entry(id).or_insert(0) += 1;
            }
        }
        counts
    }

    /// The data directory of the controller's store.
    pub fn data_dir(&self) -> &std::path::Path {
        self.data.path()
    }
}

async fn start_controller(
    sb: &Sandbox,
    fleet: &FleetState,
    options: &Options,
    store: Store,
    creds: &Creds,
) -> muster_controller::Running {
    let sdk = sb.hub_config("us-east-1");
    let controller = muster_controller::Controller::new(store, controller_settings(fleet, options), &sdk);
    let campaign = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let worker = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let metrics = Some(tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port"));
    let listeners = muster_controller::Listeners {
        campaign,
        worker,
        metrics,
    };
    muster_controller::start(
        controller,
        listeners,
        creds.security(&sb.endpoint()),
        CancellationToken::new(),
    )
    .await
    .expect("the controller starts")
}

/// A CampaignService client over `channel`.
pub fn campaign_client(channel: Channel) -> CampaignServiceClient<Channel> {
    CampaignServiceClient::new(channel).max_decoding_message_size(64 * 1024 * 1024)
}

/// The hub worker role, as a worker has it.
pub async fn worker_sdk(sb: &Sandbox) -> SdkConfig {
    let hub = sb.hub_config("us-east-1");
    let provider =
        aws_config::sts::AssumeRoleProvider::builder(format!("arn:aws:iam::{HUB_ACCOUNT}:role/muster-worker"))
            .session_name("muster-worker-test")
            .configure(&hub)
            .build()
            .await;
    hub.to_builder()
        .credentials_provider(SharedCredentialsProvider::new(provider))
        .build()
}
