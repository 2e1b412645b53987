//! Test support for the worker: the sandbox, a seeded fleet, the real
//! controller in this process (its WorkerService behind a fault layer), and
//! workers in this process or as real processes.

#![allow(dead_code)]

pub mod faults;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use aws_credential_types::provider::SharedCredentialsProvider;
use muster_controller::store::Sql;
use muster_controller::store::tasks::TaskRow;
use muster_proto::v1::campaign_service_client::CampaignServiceClient;
use muster_proto::v1::worker_service_server::WorkerServiceServer;
use muster_proto::v1::{
    AccessConfig, Campaign, CampaignSpec, CampaignState, CancelCampaignRequest, Command as RunCommand,
    GetCampaignRequest, ListTargetsRequest, OutputConfig, RateControl, Script, SubmitCampaignRequest, Target,
    TargetSelector, TaskKind, TaskRef, command,
};
use muster_sim::seed::fleet_file::FleetState;
use muster_sim::testkit::{HUB_ACCOUNT, Sandbox};
use muster_worker::controller::ControllerClient;
use muster_worker::{Context, Settings};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

pub use faults::Faults;

pub const HUB_KEY: &str = "AKIAMUSTERTESTHUB";
pub const HUB_SECRET: &str = "muster-test";

pub struct World {
    pub sb: Sandbox,
    pub fleet: FleetState,
    /// The real controller, serving on loopback.
    pub controller: muster_controller::Running,
    /// The faults its WorkerService answers with.
    pub faults: Arc<Mutex<Faults>>,
    /// Where workers reach WorkerService (through the fault layer).
    worker_addr: SocketAddr,
    client: CampaignServiceClient<Channel>,
    pub queue_url: String,
    dir: tempfile::TempDir,
}

pub struct RunningWorker {
    pub ctx: Arc<Context>,
    pub shutdown: CancellationToken,
    pub done: tokio::task::JoinHandle<()>,
}

impl RunningWorker {
    /// SIGTERM-like stop; waits until the worker has wound down.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.done.await;
    }
}

/// What the controller's store says of one task.
#[derive(Debug, Clone)]
pub struct TaskFacts {
    pub row: TaskRow,
    /// Command ids its attempts recorded, in the order recorded.
    pub dispatches: Vec<String>,
    /// Each lease of it: (attempt, outcome).
    pub leases: Vec<(u32, String)>,
}

/// The controller's settings for a worker test: the fleet's queue and
/// ExternalId, a quick reconcile loop, and no Run Command events (the
/// workers poll, so these tests watch the polling path).
fn controller_settings(fleet: &FleetState, lease_ttl: Duration) -> muster_controller::Settings {
    muster_controller::Settings {
        queue_url: fleet.queue_url.clone(),
        results_bucket: None,
        lease_ttl,
        max_attempts: 3,
        max_tasks_per_scope: 25,
        max_queued: 500,
        requeue_after: Duration::from_secs(300),
        leader_ttl: Duration::from_secs(15),
        retention: None,
        dead_letter_queue_url: None,
        command_events_queue_url: None,
        reconcile_interval: Duration::from_millis(200),
        defaults: muster_controller::validate::Defaults {
            role_name: "muster-execution".into(),
            api_calls_per_second: 20.0,
        },
        guardrails: Default::default(),
        external_ids: muster_controller::access::ExternalIds::new(&muster_controller::access::AccessFile {
            external_id: Some(fleet.external_id.clone()),
            ..Default::default()
        })
        .expect("the fleet's ExternalId"),
        notifications: Default::default(),
        scaling: None,
    }
}

impl World {
    pub async fn new(fleet: &str, lease_ttl: Duration) -> Self {
        Self::with_sandbox(Sandbox::start().await, fleet, lease_ttl).await
    }

    pub async fn with_sandbox(sb: Sandbox, fleet: &str, lease_ttl: Duration) -> Self {
        let fleet = sb.seed(fleet).await;
        let dir = tempfile::tempdir().unwrap();
        let store = muster_controller::store::Store::open(dir.path()).expect("the store opens");
        let controller = muster_controller::Controller::new(
            store,
            controller_settings(&fleet, lease_ttl),
            &sb.hub_config("us-east-1"),
        );
        let listen = || async { tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port") };
        let listeners = muster_controller::Listeners {
            campaign: listen().await,
            worker: listen().await,
            metrics: None,
        };
        let controller = muster_controller::start(
            controller,
            listeners,
            muster_controller::Security::insecure(),
            CancellationToken::new(),
        )
        .await
        .expect("the controller starts");
        let faults = Arc::new(Mutex::new(Faults::default()));
        let faulty = faults::Faulty {
            inner: muster_controller::worker_api::WorkerApi::new(controller.controller.clone(), None),
            faults: faults.clone(),
        };
        let listener = listen().await;
        let worker_addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(WorkerServiceServer::new(faulty).max_decoding_message_size(64 * 1024 * 1024))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let client = CampaignServiceClient::new(
            Channel::from_shared(format!("http://{}", controller.campaign_addr))
                .unwrap()
                .connect_lazy(),
        )
        .max_decoding_message_size(64 * 1024 * 1024);
        Self {
            queue_url: fleet.queue_url.clone(),
            sb,
            fleet,
            controller,
            faults,
            worker_addr,
            client,
            dir,
        }
    }

    /// The URL workers are given for the controller.
    pub fn url(&self) -> String {
        format!("http://{}", self.worker_addr)
    }

    /// A script campaign over the instances `ids` of one account and
    /// region: `lines` for Linux and Windows alike.
    pub fn spec(&self, account: &str, region: &str, ids: &[String], lines: &[&str]) -> CampaignSpec {
        let lines: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        CampaignSpec {
            name: "worker-test".into(),
            targets: Some(TargetSelector {
                account_ids: vec![self.account(account)],
                regions: vec![region.to_owned()],
                instance_ids: ids.to_vec(),
                ..Default::default()
            }),
            command: Some(RunCommand {
                kind: Some(command::Kind::Script(Script {
                    linux_lines: lines.clone(),
                    windows_lines: lines,
                    working_directory: String::new(),
                })),
                execution_timeout_seconds: 600,
                delivery_timeout_seconds: 600,
            }),
            rate: Some(RateControl {
                max_concurrency: "100%".into(),
                batch_size: 50,
                ..Default::default()
            }),
            output: Some(OutputConfig::default()),
            access: Some(AccessConfig::default()),
            ..Default::default()
        }
    }

    /// Submits `spec`; the campaign's id.
    pub async fn submit(&self, spec: CampaignSpec) -> String {
        self.client
            .clone()
            .submit_campaign(SubmitCampaignRequest { spec: Some(spec) })
            .await
            .expect("the campaign is accepted")
            .into_inner()
            .campaign_id
    }

    /// The campaign now.
    pub async fn campaign(&self, id: &str) -> Campaign {
        self.client
            .clone()
            .get_campaign(GetCampaignRequest {
                campaign_id: id.into(),
                ..Default::default()
            })
            .await
            .expect("GetCampaign")
            .into_inner()
            .campaign
            .expect("a campaign")
    }

    /// Waits until the campaign has ended, or fails saying where it is.
    pub async fn wait_done(&self, id: &str, within: Duration) -> Campaign {
        let deadline = Instant::now() + within;
        loop {
            let campaign = self.campaign(id).await;
            let state = CampaignState::try_from(campaign.state).unwrap_or(CampaignState::Unspecified);
            if state.is_terminal() {
                return campaign;
            }
            assert!(
                Instant::now() < deadline,
                "campaign {id} still {} after {within:?}: {:?}{}",
                state.short_name(),
                campaign.counters,
                self.process_logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Cancels a campaign as its owner would.
    pub async fn cancel(&self, id: &str) {
        self.client
            .clone()
            .cancel_campaign(CancelCampaignRequest {
                campaign_id: id.into(),
                reason: "worker test".into(),
            })
            .await
            .expect("CancelCampaign");
    }

    /// Every target of a campaign with its output, by instance id (an
    /// undiscoverable scope's target under "").
    pub async fn targets(&self, id: &str) -> BTreeMap<String, Target> {
        let mut all = BTreeMap::new();
        let mut token = String::new();
        loop {
            let page = self
                .client
                .clone()
                .list_targets(ListTargetsRequest {
                    campaign_id: id.into(),
                    page_size: 500,
                    page_token: token.clone(),
                    include_output: true,
                    ..Default::default()
                })
                .await
                .expect("ListTargets")
                .into_inner();
            all.extend(page.targets.into_iter().map(|t| (t.instance_id.clone(), t)));
            if page.next_page_token.is_empty() {
                return all;
            }
            token = page.next_page_token;
        }
    }

    /// What the store says of a campaign's tasks of `kind`, oldest first.
    pub async fn tasks(&self, campaign_id: &str, kind: TaskKind) -> Vec<TaskFacts> {
        let campaign_id = campaign_id.to_owned();
        self.controller
            .controller
            .store
            .read(move |conn: &dyn Sql| {
                let ids: Vec<String> = conn
                    .prepare("SELECT id FROM tasks WHERE campaign_id = ?1 AND kind = ?2 ORDER BY created_ms, id")?
                    .query_map(muster_controller::store::sql::params![campaign_id, kind as i32], |r| {
                        r.get(0)
                    })?
                    .collect::<Result<_, _>>()?;
                let mut facts = Vec::new();
                for id in ids {
                    let row = muster_controller::store::tasks::get(conn, &id)?.expect("the task");
                    let dispatches = conn
                        .prepare("SELECT command_id FROM dispatches WHERE task_id = ?1 ORDER BY rowid")?
                        .query_map(muster_controller::store::sql::params![id], |r| r.get(0))?
                        .collect::<Result<_, _>>()?;
                    let leases = conn
                        .prepare("SELECT attempt, outcome FROM leases WHERE task_id = ?1 ORDER BY lease_id")?
                        .query_map(muster_controller::store::sql::params![id], |r| {
                            Ok((r.get::<_, i64>(0)? as u32, r.get(1)?))
                        })?
                        .collect::<Result<_, _>>()?;
                    facts.push(TaskFacts {
                        row,
                        dispatches,
                        leases,
                    });
                }
                Ok(facts)
            })
            .await
            .expect("the store answers")
    }

    /// Every command id the controller recorded for a campaign.
    pub async fn dispatches(&self, campaign_id: &str) -> Vec<String> {
        self.tasks(campaign_id, TaskKind::Execute)
            .await
            .into_iter()
            .flat_map(|t| t.dispatches)
            .collect()
    }

    /// Puts a task reference on the queue, as the controller would.
    pub async fn enqueue(&self, task_ref: &TaskRef) {
        aws_sdk_sqs::Client::new(&self.sb.hub_config("us-east-1"))
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(muster_proto::encode_task_ref(task_ref))
            .send()
            .await
            .expect("SendMessage");
    }

    pub fn account(&self, name: &str) -> String {
        self.fleet.account(name).expect("account in the fleet").id.clone()
    }

    /// Instance ids of an account and region whose Role tag is `role`.
    pub fn ids(&self, account: &str, region: &str, role: &str) -> Vec<String> {
        self.fleet
            .account(account)
            .expect("account in the fleet")
            .instances
            .get(region)
            .map(|list| {
                list.iter()
                    .filter(|i| i.tags.get("Role").map(String::as_str) == Some(role))
                    .map(|i| i.id.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// AWS configuration of the hub's worker role, as the worker process has.
    pub async fn worker_sdk(&self) -> SdkConfig {
        let hub = self.sb.hub_config("us-east-1");
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

    /// A worker in this process.
    pub async fn start_worker(&self, grace: Duration) -> RunningWorker {
        self.start_worker_tuned(grace, |_| {}).await
    }

    /// A worker in this process, its context changed by `tune` first.
    pub async fn start_worker_tuned(&self, grace: Duration, tune: impl FnOnce(&mut Context)) -> RunningWorker {
        let controller = ControllerClient::connect_lazy(&self.url(), &Default::default()).unwrap();
        let mut ctx = Context::new("test-worker", controller, self.worker_sdk().await);
        tune(&mut ctx);
        let ctx = Arc::new(ctx);
        let shutdown = CancellationToken::new();
        let done = tokio::spawn(muster_worker::run(
            ctx.clone(),
            Settings {
                worker_id: "test-worker".into(),
                queue_url: self.queue_url.clone(),
                pollers: 2,
                max_tasks: 2000,
                shutdown_grace: grace,
            },
            shutdown.clone(),
        ));
        RunningWorker { ctx, shutdown, done }
    }

    /// A worker as a real process, with the hub worker role from an AWS
    /// profile, as it would run outside ECS.
    pub fn spawn_worker_process(&self, name: &str) -> Child {
        let config = self.dir.path().join("aws-config");
        std::fs::write(
            &config,
            format!(
                "[profile worker]\nrole_arn = arn:aws:iam::{HUB_ACCOUNT}:role/muster-worker\nsource_profile = hub\nrole_session_name = muster-worker\nregion = us-east-1\n\n[profile hub]\naws_access_key_id = {HUB_KEY}\naws_secret_access_key = {HUB_SECRET}\nregion = us-east-1\n"
            ),
        )
        .unwrap();
        let log = std::fs::File::create(self.log_path(name)).unwrap();
        Command::new(env!("CARGO_BIN_EXE_muster-worker"))
            .args([
                // The test's controller serves plaintext on loopback.
                "--insecure",
                "--controller",
                &self.url(),
                "--queue-url",
                &self.queue_url,
                "--worker-id",
                name,
                // Tests run side by side: each worker's endpoint takes any
                // free port, never the default 9102.
                "--metrics-listen",
                "127.0.0.1:0",
            ])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("AWS_CONFIG_FILE", &config)
            .env("AWS_SHARED_CREDENTIALS_FILE", self.dir.path().join("no-credentials"))
            .env("AWS_PROFILE", "worker")
            .env("AWS_ENDPOINT_URL", self.sb.endpoint())
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("RUST_LOG", "info,muster_worker=debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("the worker binary starts")
    }

    pub fn log_path(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.log"))
    }

    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.log_path(name)).unwrap_or_default()
    }

    /// Every worker process's log so far, each under its name.
    pub fn process_logs(&self) -> String {
        let mut logs = String::new();
        let mut entries: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        entries.sort();
        for path in entries {
            let name = path.file_stem().unwrap_or_default().to_string_lossy().into_owned();
            logs.push_str(&format!("\n--- {name}.log ---\n{}", self.log(&name)));
        }
        logs
    }

    /// How many SendCommands each instance got, from the sim's audit log.
    pub fn sends_per_instance(&self) -> std::collections::BTreeMap<String, usize> {
        let mut counts = std::collections::BTreeMap::new();
        for entry in self.sb.audit() {
            for id in entry.instance_ids {
                *counts.entry(id).or_insert(0) += 1;
            }
        }
        counts
    }
}

/// Waits until `check` holds, or fails naming `what`, with the logs of the
/// world's worker processes (a timeout alone says nothing of why).
pub async fn eventually<F: std::future::Future<Output = bool>>(
    w: &World,
    what: &str,
    within: Duration,
    mut check: impl FnMut() -> F,
) {
    let deadline = std::time::Instant::now() + within;
    while !check().await {
        if std::time::Instant::now() >= deadline {
            panic!("timed out waiting for {what}{}", w.process_logs());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
