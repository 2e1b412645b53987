//! muster as real processes: the `muster-controller` and `muster-worker`
//! binaries against an in-process sandbox, so tests can SIGKILL, SIGTERM and
//! restart them. Binaries come from the same target directory as the test
//! (`cargo build --bins` first; `deploy/local/test.sh` does).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use muster_proto::v1::ListCampaignsRequest;
use muster_proto::v1::campaign_service_client::CampaignServiceClient;
use muster_sim::Tunables;
use muster_sim::seed::fleet_file::FleetState;
use muster_sim::testkit::{HUB_ACCOUNT, Sandbox, free_port, test_tunables};
use tonic::transport::Channel;

/// The hub's static key in these tests (acts in the hub account).
pub const HUB_KEY: &str = "AKIAMUSTERSYSTEMHUB";
/// Its secret.
pub const HUB_SECRET: &str = "muster-system-secret-0123456789";

mod binaries;
mod controllers;
mod inspect;
mod workers;

pub use binaries::{bin_dir, muster_command, output_of};
use binaries::{binary, terminate};
pub use workers::{ScalerDecision, scaler_decisions};

/// Options of a system.
#[derive(Debug, Clone)]
pub struct SystemOptions {
    /// Sim tunables.
    pub tunables: Tunables,
    /// Workers to start.
    pub workers: usize,
    /// Controller lease TTL, seconds.
    pub lease_ttl: u64,
    /// More controller flags.
    pub controller_args: Vec<String>,
    /// More worker flags.
    pub worker_args: Vec<String>,
    /// moto processes the accounts are spread over.
    pub moto_shards: usize,
    /// More environment for the controller and workers.
    pub env: Vec<(String, String)>,
    /// Controllers: 1, or 2 on PostgreSQL behind a load balancer
    /// ([`FailoverProxy`](crate::proxy::FailoverProxy)), the second started
    /// with [`System::start_standby`].
    pub controllers: usize,
    /// With two controllers: the load balancers give new connections to
    /// each in turn (round robin), so workers and callers meet both, rather
    /// than all to the first in service.
    pub spread: bool,
    /// More environment for the first controller only (a stop point, say).
    pub controller_env: Vec<(String, String)>,
    /// Whether the controllers read Run Command's events from the
    /// sandbox's queue (workers then poll only as a fallback).
    pub command_events: bool,
    /// Workers' `--shutdown-grace`, seconds: how long a stopped worker's
    /// tasks may run on before it hands them back.
    pub shutdown_grace: u64,
    /// The controllers use PostgreSQL (whatever `MUSTER_TEST_STORE` says)
    /// and reach it through a proxy the test can cut
    /// ([`System::database_outage`]).
    pub database_proxy: bool,
    /// The controller starts on SQLite whatever `MUSTER_TEST_STORE` says,
    /// to move it later with [`System::copy_store_to_postgres`].
    pub sqlite: bool,
}

impl Default for SystemOptions {
    fn default() -> Self {
        Self {
            tunables: test_tunables(),
            workers: 1,
            lease_ttl: 5,
            controller_args: Vec::new(),
            worker_args: Vec::new(),
            moto_shards: 1,
            env: Vec::new(),
            controllers: 1,
            spread: false,
            controller_env: Vec::new(),
            command_events: true,
            shutdown_grace: 5,
            database_proxy: false,
            sqlite: false,
        }
    }
}

/// The sandbox plus muster's processes.
pub struct System {
    /// The sandbox (in process: its audit log and counters are at hand).
    pub sb: Sandbox,
    /// The seeded fleet.
    pub fleet: FleetState,
    /// A CampaignService client (the admin certificate: submit).
    pub client: CampaignServiceClient<Channel>,
    /// TLS material and callers.
    pub creds: crate::creds::Creds,
    controller: Option<Child>,
    controller_starts: usize,
    workers: Vec<(String, Option<Child>)>,
    /// Workers SIGTERMed and not waited for.
    stopping: Vec<Child>,
    campaign_port: u16,
    worker_port: u16,
    metrics_port: u16,
    worker_metrics_ports: Vec<u16>,
    dir: tempfile::TempDir,
    options: SystemOptions,
    /// The controller's PostgreSQL database, when the tests run on
    /// PostgreSQL (dropped after the processes are gone).
    database: Option<muster_controller::store::testkit::TestDatabase>,
    /// Between the controllers and the database, with
    /// [`SystemOptions::database_proxy`].
    database_proxy: Option<Arc<crate::proxy::FailoverProxy>>,
    /// With two controllers: the second, and the load balancers in front.
    ha: Option<Ha>,
    /// The sandbox's autoscaler (`deploy/local/scaler.py`), which starts
    /// and stops workers of its own.
    scaler: Option<Child>,
}

/// Two controllers behind load balancers: each controller's own
/// (campaign, worker, metrics) ports, and the proxies on the ports the
/// clients and workers use.
struct Ha {
    ports: [(u16, u16, u16); 2],
    standby: Option<Child>,
    campaign: crate::proxy::FailoverProxy,
    worker: crate::proxy::FailoverProxy,
}

impl Drop for System {
    fn drop(&mut self) {
        // MUSTER_KEEP_LOGS=1 keeps the processes' logs and data for a look
        // afterwards (benchmarks, a failing test).
        if std::env::var_os("MUSTER_KEEP_LOGS").is_some_and(|v| v == "1") {
            self.dir.disable_cleanup(true);
            eprintln!("logs kept in {}", self.dir.path().display());
        }
        // Its workers die with it (PR_SET_PDEATHSIG).
        if let Some(mut child) = self.scaler.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(mut child) = self.controller.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(mut child) = self.ha.as_mut().and_then(|ha| ha.standby.take()) {
            let _ = child.kill();
            let _ = child.wait();
        }
        for mut child in self
            .workers
            .iter_mut()
            .filter_map(|(_, c)| c.take())
            .chain(self.stopping.drain(..))
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl System {
    /// Sandbox, fleet, controller and workers.
    pub async fn start(fleet: &str, options: SystemOptions) -> Self {
        Box::pin(Self::start_with_policy(fleet, options, |_| String::new())).await
    }

    /// As [`System::start`], with the controller's policy file written by
    /// `policy` (which may name the fleet's accounts) before it starts.
    pub async fn start_with_policy(
        fleet: &str,
        options: SystemOptions,
        policy: impl FnOnce(&System) -> String,
    ) -> Self {
        let sb = Sandbox::start_sharded(options.tunables.clone(), options.moto_shards).await;
        let fleet = sb.seed(fleet).await;
        let mut campaign_port = free_port();
        let mut worker_port = free_port();
        let ha = if options.controllers > 1 {
            let ports = [
                (campaign_port, worker_port, free_port()),
                (free_port(), free_port(), free_port()),
            ];
            let local = |port: u16| std::net::SocketAddr::from(([127, 0, 0, 1], port));
            let balancer = |port: fn(&(u16, u16, u16)) -> u16| {
                let backends = ports.iter().map(|p| local(port(p))).collect();
                crate::proxy::FailoverProxy::start_with(backends, options.spread)
            };
            let campaign = balancer(|p| p.0).await;
            let worker = balancer(|p| p.1).await;
            campaign_port = campaign.addr.port();
            worker_port = worker.addr.port();
            Some(Ha {
                ports,
                standby: None,
                campaign,
                worker,
            })
        } else {
            None
        };
        let creds = crate::creds::Creds::new();
        let client =
            crate::stack::campaign_client(creds.endpoint(campaign_port, Some(&creds.pki.admin)).connect_lazy());
        let mut system = Self {
            sb,
            fleet,
            client,
            creds,
            controller: None,
            controller_starts: 0,
            workers: Vec::new(),
            stopping: Vec::new(),
            campaign_port,
            worker_port,
            metrics_port: free_port(),
            worker_metrics_ports: Vec::new(),
            dir: tempfile::tempdir().expect("a temp dir"),
            database: if ha.is_some() || options.database_proxy {
                // Several controllers share a store only on PostgreSQL, and
                // only there is the database apart from the controller.
                Some(muster_controller::store::testkit::TestDatabase::create())
            } else if options.sqlite {
                None
            } else {
                crate::test_database()
            },
            database_proxy: None,
            options,
            ha,
            scaler: None,
        };
        if system.options.database_proxy {
            let database = system.database.as_ref().expect("a database for the proxy");
            let proxy = crate::proxy::FailoverProxy::start(vec![server_of(database.url())]).await;
            system.database_proxy = Some(Arc::new(proxy));
        }
        system.write_aws_config();
        std::fs::write(system.creds.policy_path(), policy(&system)).expect("the policy file");
        let env = system.options.controller_env.clone();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        system.start_controller_with(&env).await;
        for _ in 0..system.options.workers {
            system.start_worker();
        }
        system
    }

    fn write_aws_config(&self) {
        std::fs::write(
            self.dir.path().join("aws-config"),
            format!(
                "[profile hub]\naws_access_key_id = {HUB_KEY}\naws_secret_access_key = {HUB_SECRET}\nregion = us-east-1\n\n\
                 [profile worker]\nrole_arn = arn:aws:iam::{HUB_ACCOUNT}:role/muster-worker\nsource_profile = hub\nrole_session_name = muster-worker\nregion = us-east-1\n"
            ),
        )
        .expect("the AWS config file is written");
    }

    fn command(&self, binary_name: &str, profile: &str, log: &str) -> Command {
        self.command_at(&binary(binary_name), profile, log)
    }

    /// `program` with the sandbox's AWS settings as `profile`, writing to
    /// `<log>.log` in the system's directory.
    fn command_at(&self, program: &std::path::Path, profile: &str, log: &str) -> Command {
        let log = std::fs::File::create(self.dir.path().join(format!("{log}.log"))).expect("a log file");
        let mut command = Command::new(program);
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("AWS_CONFIG_FILE", self.dir.path().join("aws-config"))
            .env("AWS_SHARED_CREDENTIALS_FILE", self.dir.path().join("no-credentials"))
            .env("AWS_PROFILE", profile)
            .env("AWS_ENDPOINT_URL", self.sb.endpoint())
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("RUST_LOG", "info,muster_worker=debug,muster_controller=debug")
            .envs(self.options.env.iter().map(|(k, v)| (k, v)))
            // Anything a process leaves in its working directory (a core
            // file after a crash point) stays out of the repository.
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log);
        command
    }
}

/// Which command of the campaign's sequence (from 1) a SendCommand's
/// Comment names: "muster task T" is the first, "muster task T command 2"
/// the second.
pub fn command_of(comment: &str) -> u32 {
    comment
        .rsplit_once(" command ")
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or(1)
}
/// Waits until the process that `reap` watches exits by itself (its crash
/// point), and returns how.
pub async fn until_crashed(
    system: &mut System,
    what: &str,
    mut reap: impl FnMut(&mut System) -> Option<std::process::ExitStatus>,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = reap(system) {
            assert!(!status.success(), "{what} aborted at its crash point: {status}");
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} did not reach its crash point:\n{}",
            system.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
/// The server of a test database's URL (`postgres://user@HOST:PORT/db?...`).
fn server_of(url: &str) -> std::net::SocketAddr {
    let (start, end) = host_span(url);
    url[start..end].parse().expect("HOST:PORT in the test database URL")
}

/// `url` with its server replaced by `addr`.
fn through(url: &str, addr: std::net::SocketAddr) -> String {
    let (start, end) = host_span(url);
    format!("{}{addr}{}", &url[..start], &url[end..])
}

fn host_span(url: &str) -> (usize, usize) {
    let start = url.find('@').expect("user@ in the test database URL") + 1;
    let end = url[start..].find('/').map_or(url.len(), |i| start + i);
    (start, end)
}
