//! Test support for the worker: the sandbox, a seeded fleet, the task queue, a
//! fake controller, and workers in this process or as real processes.

#![allow(dead_code)]

pub mod fake_controller;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use aws_config::SdkConfig;
use aws_credential_types::provider::SharedCredentialsProvider;
use muster_proto::v1::{DiscoverSpec, ExecuteSpec, ParameterValues, Platform, Task, TaskKind};
use muster_sim::seed::fleet_file::FleetState;
use muster_sim::testkit::{HUB_ACCOUNT, Sandbox};
use muster_worker::controller::ControllerClient;
use muster_worker::{Context, Settings};
use tokio_util::sync::CancellationToken;

pub use fake_controller::{FakeController, Phase};

pub const HUB_KEY: &str = "AKIAMUSTERTESTHUB";
pub const HUB_SECRET: &str = "muster-test";

pub struct World {
    pub sb: Sandbox,
    pub fleet: FleetState,
    pub ctl: FakeController,
    pub queue_url: String,
    pub campaign_id: String,
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

impl World {
    pub async fn new(fleet: &str, lease_ttl: Duration) -> Self {
        Self::with_sandbox(Sandbox::start().await, fleet, lease_ttl).await
    }

    pub async fn with_sandbox(sb: Sandbox, fleet: &str, lease_ttl: Duration) -> Self {
        let fleet = sb.seed(fleet).await;
        let sqs = aws_sdk_sqs::Client::new(&sb.hub_config("us-east-1"));
        let ctl = FakeController::start(sqs, &fleet.queue_url, lease_ttl).await;
        Self {
            queue_url: fleet.queue_url.clone(),
            sb,
            fleet,
            ctl,
            campaign_id: uuid::Uuid::new_v4().to_string(),
            dir: tempfile::tempdir().unwrap(),
        }
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
        let controller = ControllerClient::connect_lazy(&self.ctl.url(), &Default::default()).unwrap();
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
                // The fake controller serves plaintext on loopback.
                "--insecure",
                "--controller",
                &self.ctl.url(),
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

    fn base_task(&self, kind: TaskKind, account: &str, region: &str) -> Task {
        let account_id = self.account(account);
        Task {
            task_id: uuid::Uuid::new_v4().to_string(),
            campaign_id: self.campaign_id.clone(),
            kind: kind as i32,
            attempt: 1,
            max_attempts: 5,
            role_arn: format!("arn:aws:iam::{account_id}:role/muster-execution"),
            account_id,
            region: region.to_owned(),
            external_id: self.fleet.external_id.clone(),
            role_session_name: muster_common::domain::session_name(&self.campaign_id),
            session_duration_seconds: 3600,
            api_calls_per_second: 20.0,
            created_at: Some(prost_types::Timestamp::from(std::time::SystemTime::now())),
            discover: None,
            execute: None,
            // The sandbox's execution roles, like target-account.yaml's,
            // trust no session that does not name who asked.
            source_identity: "worker-tests".into(),
        }
    }

    pub fn discover_task(&self, account: &str, region: &str) -> Task {
        let mut task = self.base_task(TaskKind::Discover, account, region);
        task.discover = Some(DiscoverSpec::default());
        task
    }

    /// An Execute task running `lines` on `ids` (Linux or Windows document).
    pub fn execute_task(
        &self,
        account: &str,
        region: &str,
        platform: Platform,
        ids: &[String],
        lines: &[&str],
    ) -> Task {
        let mut task = self.base_task(TaskKind::Execute, account, region);
        let document = match platform {
            Platform::Windows => "AWS-RunPowerShellScript",
            _ => "AWS-RunShellScript",
        };
        task.execute = Some(ExecuteSpec {
            platform: platform as i32,
            instance_ids: ids.to_vec(),
            document_name: document.into(),
            document_version: String::new(),
            parameters: [
                (
                    "commands".to_owned(),
                    ParameterValues {
                        values: lines.iter().map(|l| l.to_string()).collect(),
                    },
                ),
                (
                    "executionTimeout".to_owned(),
                    ParameterValues {
                        values: vec!["600".into()],
                    },
                ),
            ]
            .into(),
            delivery_timeout_seconds: 600,
            comment: format!("muster task {}", task.task_id),
            output_s3_bucket: String::new(),
            output_s3_key_prefix: String::new(),
            cloudwatch_log_group: String::new(),
            keep_bytes: 8192,
            execution_timeout_seconds: 600,
            then: Vec::new(),
        });
        task
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
pub async fn eventually(w: &World, what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + within;
    while !check() {
        if std::time::Instant::now() >= deadline {
            panic!("timed out waiting for {what}{}", w.process_logs());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
