//! muster as real processes: the `muster-controller` and `muster-worker`
//! binaries against an in-process sandbox, so tests can SIGKILL, SIGTERM and
//! restart them. Binaries come from the same target directory as the test
//! (`cargo build --bins` first; `deploy/local/test.sh` does).

use std::path::{Path, PathBuf};
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

/// Where the muster binaries are.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("MUSTER_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("the test's own path");
    exe.parent()
        .and_then(Path::parent)
        .expect("tests run from target/<profile>/deps")
        .to_path_buf()
}

fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first (cargo build --bins), or set MUSTER_BIN_DIR",
        path.display()
    );
    // Binaries chosen with MUSTER_BIN_DIR (an A/B of two builds) are taken
    // as they are.
    if std::env::var_os("MUSTER_BIN_DIR").is_none()
        && let Some(newer) = newer_source(name, &path)
    {
        panic!(
            "{} is older than its source {}: a test would run the old code; build the binaries first (cargo build --bins)",
            path.display(),
            newer.display()
        );
    }
    path
}

/// A source file of binary `name`'s crates changed after `binary` was built.
fn newer_source(name: &str, binary: &Path) -> Option<PathBuf> {
    let crates: &[&str] = match name {
        "muster-controller" => &["controller", "common", "proto"],
        "muster-worker" => &["worker", "common", "proto"],
        "muster" => &["cli", "common", "proto"],
        "muster-sim" => &["sim", "common"],
        _ => &[],
    };
    let built = std::fs::metadata(binary).and_then(|m| m.modified()).ok()?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent()?;
    let mut dirs: Vec<PathBuf> = crates.iter().map(|c| root.join(c)).collect();
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                // proto/releases holds released protos, never compiled.
                if !matches!(
                    path.file_name().and_then(|n| n.to_str()),
                    Some("tests" | "benches" | "target" | "releases")
                ) {
                    dirs.push(path);
                }
            } else if matches!(path.extension().and_then(|e| e.to_str()), Some("rs" | "proto"))
                && meta.modified().is_ok_and(|m| m > built)
            {
                return Some(path);
            }
        }
    }
    None
}

/// SIGTERMs a process and waits for it to exit (its graceful shutdown).
fn terminate(mut child: Child) {
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let _ = child.wait();
}

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

    /// Starts (or restarts) the controller on its ports and data directory,
    /// and waits until it answers.
    pub async fn start_controller(&mut self) {
        self.start_controller_with(&[]).await;
    }

    /// Starts the controller with more environment (a crash point, say), and
    /// waits until it answers, or, armed with a crash point, until it died.
    pub async fn start_controller_with(&mut self, env: &[(&str, &str)]) {
        self.start_controller_of(0, env).await;
    }

    /// Starts the second controller (with two), on its own ports behind the
    /// same load balancers, and waits until it answers there.
    pub async fn start_standby(&mut self, env: &[(&str, &str)]) {
        self.start_controller_of(1, env).await;
    }

    /// Starts (or restarts) controller `index` (0: the first, 1: the
    /// standby) with more environment, and waits until it answers on its
    /// own port, or, armed with a crash point, until it died.
    pub async fn start_controller_of(&mut self, index: usize, env: &[(&str, &str)]) {
        let child = self.spawn_controller(index, env);
        *self.controller_slot(index) = Some(child);
        self.wait_for_controller(index, env).await;
    }

    /// Where controller `index`'s process is kept while it runs.
    fn controller_slot(&mut self, index: usize) -> &mut Option<Child> {
        match index {
            0 => &mut self.controller,
            _ => &mut self.ha.as_mut().expect("a system of two controllers").standby,
        }
    }

    /// How many controllers the system has (running or not).
    pub fn controller_count(&self) -> usize {
        if self.ha.is_some() { 2 } else { 1 }
    }

    /// Whether controller `index` says it leads (its metrics), or `None`
    /// when it does not answer within a second.
    pub async fn leads(&self, index: usize) -> Option<bool> {
        let port = self.metrics_port_of(index);
        let (status, text) = tokio::time::timeout(Duration::from_secs(1), crate::otlp::http_get(port, "/metrics"))
            .await
            .ok()?;
        (status == 200).then(|| text.lines().any(|line| line.trim() == "muster_controller_leader 1"))
    }

    /// Controller `index`'s own ports: (campaign, worker, metrics).
    fn controller_ports(&self, index: usize) -> (u16, u16, u16) {
        match &self.ha {
            Some(ha) => ha.ports[index],
            None => (self.campaign_port, self.worker_port, self.metrics_port),
        }
    }

    /// Controller `index`'s own campaign API port, not the load balancer's.
    pub fn campaign_port_of(&self, index: usize) -> u16 {
        self.controller_ports(index).0
    }

    /// Controller `index`'s metrics port (0: the first, 1: the standby).
    pub fn metrics_port_of(&self, index: usize) -> u16 {
        self.controller_ports(index).2
    }

    /// Controller `index`'s process id, while it runs.
    pub fn pid_of(&self, index: usize) -> Option<u32> {
        match index {
            0 => self.controller_pid(),
            _ => self.ha.as_ref().and_then(|ha| ha.standby.as_ref()).map(Child::id),
        }
    }

    /// SIGKILLs controller `index`.
    pub fn kill_controller_of(&mut self, index: usize) {
        if let Some(mut child) = self.controller_slot(index).take() {
            child.kill().expect("SIGKILL");
            let _ = child.wait();
        }
    }

    /// Takes controller `index` out of the load balancers' service (what a
    /// failing health check does) or puts it back.
    pub fn set_in_service(&self, index: usize, in_service: bool) {
        let ha = self.ha.as_ref().expect("a system of two controllers");
        ha.campaign.set_in_service(index, in_service);
        ha.worker.set_in_service(index, in_service);
    }

    /// Controller `index`'s data directory (its SQLite store).
    pub fn data_dir(&self, index: usize) -> PathBuf {
        self.dir.path().join(format!("data-{index}"))
    }

    fn spawn_controller(&mut self, index: usize, env: &[(&str, &str)]) -> Child {
        self.controller_starts += 1;
        let (campaign_port, worker_port, metrics_port) = self.controller_ports(index);
        let files = &self.creds.files;
        let mut command = self.command(
            "muster-controller",
            "hub",
            &format!("controller-{}", self.controller_starts),
        );
        command
            .envs(env.iter().copied())
            .env("MUSTER_API_TOKENS", self.creds.token_entries().join(","))
            .env("MUSTER_EXTERNAL_ID", &self.fleet.external_id)
            .args(["--tls-cert", &files.controller_cert.display().to_string()])
            .args(["--tls-key", &files.controller_key.display().to_string()])
            .args(["--worker-ca", &files.worker_ca.display().to_string()])
            .args(["--client-ca", &files.ca.display().to_string()])
            .args(["--api-client", &format!("{}:admin", muster_sim::certs::ADMIN_CN)])
            .args(["--policy", &self.creds.policy_path().display().to_string()]);
        command
            .args([
                "--listen",
                &format!("127.0.0.1:{campaign_port}"),
                "--worker-listen",
                &format!("127.0.0.1:{worker_port}"),
                "--data-dir",
                &self.data_dir(index).display().to_string(),
                "--queue-url",
                &self.fleet.queue_url,
                "--dead-letter-queue-url",
                &self.fleet.dlq_url,
                "--results-bucket",
                &self.fleet.results_bucket,
                "--lease-ttl",
                &self.options.lease_ttl.to_string(),
                "--reconcile-ms",
                "200",
                "--metrics-listen",
                &format!("127.0.0.1:{metrics_port}"),
            ])
            .args(self.database.iter().flat_map(|d| {
                let url = match &self.database_proxy {
                    Some(proxy) => through(d.url(), proxy.addr),
                    None => d.url().to_owned(),
                };
                ["--database-url".to_owned(), url]
            }))
            .args(
                Some(&self.fleet.command_events_queue_url)
                    .filter(|url| self.options.command_events && !url.is_empty())
                    .map(|url| ["--command-events-queue-url".to_owned(), url.clone()])
                    .into_iter()
                    .flatten(),
            )
            .args(&self.options.controller_args)
            .spawn()
            .expect("the controller starts")
    }

    async fn wait_for_controller(&mut self, index: usize, env: &[(&str, &str)]) {
        let port = self.campaign_port_of(index);
        let mut client =
            crate::stack::campaign_client(self.creds.endpoint(port, Some(&self.creds.pki.admin)).connect_lazy());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if client.list_campaigns(ListCampaignsRequest::default()).await.is_ok() {
                return;
            }
            // One armed to crash may die before it answers: whoever waits
            // for it sees that with `reap_controller`.
            let armed = env.iter().any(|(name, _)| *name == "MUSTER_CRASH_AT");
            if armed
                && self
                    .controller_slot(index)
                    .as_mut()
                    .is_some_and(|child| child.try_wait().ok().flatten().is_some())
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "controller {index} did not answer within 30s:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Cuts the controllers off their database (`out`: open connections
    /// closed, new ones refused) or lets them reach it again. Needs
    /// [`SystemOptions::database_proxy`].
    pub fn database_outage(&self, out: bool) {
        self.database_link().set_in_service(0, !out);
    }

    /// The proxy between the controllers and their database, to cut it
    /// while `self` is borrowed otherwise.
    pub fn database_link(&self) -> Arc<crate::proxy::FailoverProxy> {
        self.database_proxy
            .clone()
            .expect("SystemOptions::database_proxy is set")
    }

    /// Copies the stopped controller's SQLite store into a new PostgreSQL
    /// database with `muster-controller copy-store`, as an operator moving
    /// to several controllers does; on success the controller starts on
    /// that database from then on. The tool's output, whatever its exit.
    pub fn copy_store_to_postgres(&mut self) -> std::process::Output {
        assert!(self.controller.is_none(), "the controller is stopped first");
        assert!(self.database.is_none(), "the controller was on SQLite");
        let database = muster_controller::store::testkit::TestDatabase::create();
        let output = self
            .command("muster-controller", "hub", "copy-store")
            .args(["--data-dir", &self.data_dir(0).display().to_string()])
            .args(["--database-url", database.url(), "copy-store"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .expect("muster-controller copy-store runs");
        if output.status.success() {
            self.database = Some(database);
        }
        output
    }

    /// SIGKILLs the controller.
    pub fn kill_controller(&mut self) {
        self.kill_controller_of(0);
    }

    /// SIGTERMs the controller and waits for it to exit.
    pub fn stop_controller(&mut self) {
        if let Some(child) = self.controller.take() {
            terminate(child);
        }
    }

    /// Starts the sandbox's autoscaler with `args` (its --target, --min,
    /// --max, ...): it reads the controller's scaling signal from the
    /// sandbox's CloudWatch (the controller needs `--scaling-namespace
    /// Muster`) and starts and stops workers like the others, each with a
    /// certificate of its own. Its decisions go to `scaler.csv` in the
    /// system's directory.
    pub fn start_scaler(&mut self, args: &[&str]) -> PathBuf {
        let record = self.dir.path().join("scaler.csv");
        let pki = self.creds.files.ca.parent().expect("the PKI directory").to_path_buf();
        for n in 1..=32 {
            self.creds.worker_files(&format!("scaler-{n}"));
        }
        let queue_name = self.fleet.queue_url.rsplit('/').next().expect("a queue URL").to_owned();
        let script = muster_sim::testkit::workspace_root().join("deploy/local/scaler.py");
        let mut command = self.command_at(&muster_sim::testkit::venv_python(), "hub", "scaler");
        command
            .arg(script)
            .args(["--queue-name", &queue_name, "--record"])
            .arg(&record)
            .arg("--log-dir")
            .arg(self.dir.path())
            .args(["--worker-env", "AWS_PROFILE=worker"])
            .arg("--worker-env")
            .arg(format!("MUSTER_TLS_CERT={}/workers/{{id}}.pem", pki.display()))
            .arg("--worker-env")
            .arg(format!("MUSTER_TLS_KEY={}/workers/{{id}}.key", pki.display()))
            .env("MUSTER_TLS_CA", &self.creds.files.ca)
            .args(args)
            .arg("--")
            .arg(binary("muster-worker"))
            .args([
                "--controller",
                &format!("https://localhost:{}", self.worker_port),
                "--queue-url",
                &self.fleet.queue_url,
                "--shutdown-grace",
                &self.options.shutdown_grace.to_string(),
                "--metrics-listen",
                "127.0.0.1:0",
            ])
            .args(&self.options.worker_args);
        self.scaler = Some(command.spawn().expect("the scaler starts"));
        record
    }

    /// Stops the scaler as an operator would (SIGTERM): it stops its
    /// workers gracefully first.
    pub fn stop_scaler(&mut self) {
        if let Some(child) = self.scaler.take() {
            terminate(child);
        }
    }

    /// Starts a worker; returns its index.
    pub fn start_worker(&mut self) -> usize {
        self.start_worker_with(&[])
    }

    /// Starts a worker with more environment (a crash point, say).
    pub fn start_worker_with(&mut self, env: &[(&str, &str)]) -> usize {
        let index = self.workers.len();
        let name = format!("worker-{index}");
        let metrics_port = free_port();
        self.worker_metrics_ports.push(metrics_port);
        let (cert, key) = self.creds.worker_files(&name);
        let child = self
            .command("muster-worker", "worker", &name)
            .envs(env.iter().copied())
            .env("MUSTER_TLS_CA", &self.creds.files.ca)
            .env("MUSTER_TLS_CERT", cert)
            .env("MUSTER_TLS_KEY", key)
            .args([
                "--controller",
                &format!("https://localhost:{}", self.worker_port),
                "--queue-url",
                &self.fleet.queue_url,
                "--worker-id",
                &name,
                "--shutdown-grace",
                &self.options.shutdown_grace.to_string(),
                "--metrics-listen",
                &format!("127.0.0.1:{metrics_port}"),
            ])
            .args(&self.options.worker_args)
            .spawn()
            .expect("a worker starts");
        self.workers.push((name, Some(child)));
        index
    }

    /// SIGKILLs a worker.
    pub fn kill_worker(&mut self, index: usize) {
        if let Some(mut child) = self.workers[index].1.take() {
            child.kill().expect("SIGKILL");
            let _ = child.wait();
        }
    }

    /// SIGTERMs a worker, as a scale-in does, and goes on at once: the
    /// worker lets its tasks run for its grace, hands back the rest and
    /// exits by itself, while other things happen. It no longer counts as
    /// running (its process is reaped with the system).
    pub fn scale_in_worker(&mut self, index: usize) {
        if let Some(child) = self.workers[index].1.take() {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            self.stopping.push(child);
        }
    }

    /// SIGTERMs a worker and waits for it to exit.
    pub fn stop_worker(&mut self, index: usize) {
        if let Some(child) = self.workers[index].1.take() {
            terminate(child);
        }
    }

    /// How many workers have been started (running or not).
    pub fn worker_count(&self) -> usize {
        self.workers.len()
    }

    /// If the controller exited by itself (a crash point), how; it then
    /// counts as not running.
    pub fn reap_controller(&mut self) -> Option<std::process::ExitStatus> {
        self.reap_controller_of(0)
    }

    /// As [`System::reap_controller`], for controller `index`.
    pub fn reap_controller_of(&mut self, index: usize) -> Option<std::process::ExitStatus> {
        let slot = self.controller_slot(index);
        let status = slot.as_mut()?.try_wait().ok()??;
        *slot = None;
        Some(status)
    }

    /// If a worker exited by itself (a crash point), how; it then counts as
    /// not running.
    pub fn reap_worker(&mut self, index: usize) -> Option<std::process::ExitStatus> {
        let status = self.workers.get_mut(index)?.1.as_mut()?.try_wait().ok()??;
        self.workers[index].1 = None;
        Some(status)
    }

    /// The controller's process id, while it runs.
    pub fn controller_pid(&self) -> Option<u32> {
        self.controller.as_ref().map(Child::id)
    }

    /// A worker's process id, while it runs.
    pub fn worker_pid(&self, index: usize) -> Option<u32> {
        self.workers
            .get(index)
            .and_then(|(_, child)| child.as_ref().map(Child::id))
    }

    /// The campaign API's port.
    pub fn campaign_port(&self) -> u16 {
        self.campaign_port
    }

    /// The worker API's port.
    pub fn worker_port(&self) -> u16 {
        self.worker_port
    }

    /// The controller's metrics port.
    pub fn controller_metrics_port(&self) -> u16 {
        self.metrics_port_of(0)
    }

    /// A worker's metrics port.
    pub fn worker_metrics_port(&self, index: usize) -> u16 {
        self.worker_metrics_ports[index]
    }

    /// Every process's log so far.
    pub fn logs(&self) -> String {
        let mut all = String::new();
        if let Ok(entries) = std::fs::read_dir(self.dir.path()) {
            let mut paths: Vec<PathBuf> = entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "log"))
                .collect();
            paths.sort();
            for path in paths {
                all.push_str(&format!("=== {}\n", path.display()));
                all.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
            }
        }
        all
    }

    /// The WARN and ERROR lines that muster's own code logged, in every
    /// process (the AWS SDK's and other crates' are left out).
    pub fn muster_warnings(&self) -> Vec<String> {
        let plain = strip_ansi(&self.logs());
        plain
            .lines()
            .filter(|line| {
                let mut words = line.split_whitespace();
                let level = words.nth(1).unwrap_or_default();
                (level == "WARN" || level == "ERROR") && line.contains(" muster_")
            })
            .map(str::to_owned)
            .collect()
    }

    /// A worker's log.
    pub fn worker_log(&self, index: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("worker-{index}.log"))).unwrap_or_default()
    }

    /// Shortens the task queue's redrive to `max_receives` receives of
    /// `visibility_secs` each before the dead-letter queue (the hub's is
    /// 5 x 30 s), so that an outage in a test can outlast it.
    pub async fn shorten_redrive(&self, visibility_secs: u32, max_receives: u32) {
        use aws_sdk_sqs::types::QueueAttributeName;
        let sqs = aws_sdk_sqs::Client::new(&self.sb.hub_config("us-east-1"));
        let dlq_arn = sqs
            .get_queue_attributes()
            .queue_url(&self.fleet.dlq_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .expect("the dead-letter queue's ARN")
            .attributes
            .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
            .expect("an ARN");
        sqs.set_queue_attributes()
            .queue_url(&self.fleet.queue_url)
            .attributes(QueueAttributeName::VisibilityTimeout, visibility_secs.to_string())
            .attributes(
                QueueAttributeName::RedrivePolicy,
                serde_json::json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receives.to_string()})
                    .to_string(),
            )
            .send()
            .await
            .expect("the redrive policy");
    }

    /// Account id by fleet name.
    pub fn account(&self, name: &str) -> String {
        self.fleet.account(name).expect("account in the fleet").id.clone()
    }

    /// A ScheduleService client as the admin (its client certificate).
    pub fn schedules(&self) -> muster_proto::v1::schedule_service_client::ScheduleServiceClient<Channel> {
        muster_proto::v1::schedule_service_client::ScheduleServiceClient::new(
            self.creds
                .endpoint(self.campaign_port, Some(&self.creds.pki.admin))
                .connect_lazy(),
        )
    }

    /// A CampaignService client with bearer `token` (one the policy file
    /// names).
    pub fn token_client(&self, token: &str) -> crate::creds::TokenClient {
        self.creds.token_client(self.campaign_port, Some(token))
    }

    /// The muster CLI calling this controller with bearer `token`, for the
    /// caller's arguments.
    pub fn cli_with_token(&self, token: &str) -> tokio::process::Command {
        let mut command = muster_command();
        command
            .arg("--controller")
            .arg(format!("https://localhost:{}", self.campaign_port))
            .arg("--tls-ca")
            .arg(&self.creds.files.ca)
            .args(["--color", "never"])
            .env("MUSTER_TOKEN", token);
        command
    }

    /// SendCommands per (instance, command of the campaign's sequence, from
    /// 1), from the sim's audit log, as the Comment names the command
    /// ("muster task T", "muster task T command 2").
    pub fn sends_per_command(&self) -> std::collections::BTreeMap<(String, u32), usize> {
        let mut counts = std::collections::BTreeMap::new();
        for entry in self.sb.audit() {
            let n = command_of(&entry.comment);
            for id in entry.instance_ids {
                *counts.entry((id, n)).or_insert(0) += 1;
            }
        }
        counts
    }

    /// SendCommands per instance, from the sim's audit log.
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

/// Which command of the campaign's sequence (from 1) a SendCommand's
/// Comment names: "muster task T" is the first, "muster task T command 2"
/// the second.
pub fn command_of(comment: &str) -> u32 {
    comment
        .rsplit_once(" command ")
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or(1)
}

/// `text` without terminal colour codes (ESC [ ... m).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
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

/// The muster CLI with an empty environment, for the caller's arguments.
pub fn muster_command() -> tokio::process::Command {
    let mut command = tokio::process::Command::new(bin_dir().join("muster"));
    command.env_clear();
    command
}

/// Runs `command` to its end: its exit code, stdout and stderr.
pub async fn output_of(mut command: tokio::process::Command) -> (i32, String, String) {
    let out = command.output().await.expect("the command runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// One decision of the sandbox's scaler, a line of its `--record` CSV.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScalerDecision {
    /// Seconds since the scaler started.
    pub seconds: f64,
    /// Workers it was running.
    pub workers: u32,
    /// Workers the controller saw working, when it published them.
    pub working: Option<u32>,
}

/// Every decision recorded so far at `path` (none before the file exists).
pub fn scaler_decisions(path: &std::path::Path) -> Vec<ScalerDecision> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|line| {
            // seconds,workers,desired,demand,demand_per_worker,working
            let fields: Vec<&str> = line.split(',').collect();
            Some(ScalerDecision {
                seconds: fields.first()?.parse().ok()?,
                workers: fields.get(1)?.parse().ok()?,
                working: fields.get(5).and_then(|w| w.parse().ok()),
            })
        })
        .collect()
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
