//! A sandbox for tests and benchmarks: a moto process on a free loopback port
//! and a sim in this process in front of it. Dropping it stops both.
//!
//! moto comes from the project's virtualenv (`deploy/local/venv.sh`), found
//! through `MUSTER_MOTO_SERVER`, `MUSTER_VENV`, or `.venv` at the repo root.

use std::net::TcpListener as StdListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use aws_credential_types::Credentials;

use crate::audit::AuditEntry;
use crate::config::{SimConfig, Tunables};
use crate::seed::fleet_file::{FleetFile, FleetState};
use crate::seed::{SeedOptions, seed};
use crate::state::SimState;
use crate::{RunningSim, start};

/// The hub (management) account: moto's default.
pub const HUB_ACCOUNT: &str = "123456789012";

/// A moto server process, killed on drop.
pub struct MotoProcess {
    child: Child,
    /// Its base URL.
    pub url: String,
    _log: tempfile::NamedTempFile,
}

impl Drop for MotoProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The workspace root (where `.venv` and `deploy/` live).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("sim crate sits in the workspace")
        .to_path_buf()
}

/// The program and arguments that start moto: `MUSTER_MOTO_SERVER` when set
/// (a moto_server executable), else the virtualenv's Python running
/// `deploy/local/moto_server.py` (moto_server with the sandbox's fidelity
/// fixes).
pub fn moto_server_command() -> (PathBuf, Vec<PathBuf>) {
    if let Some(path) = std::env::var_os("MUSTER_MOTO_SERVER") {
        return (PathBuf::from(path), Vec::new());
    }
    (
        venv_python(),
        vec![workspace_root().join("deploy/local/moto_server.py")],
    )
}

/// The sandbox virtualenv's python (`MUSTER_VENV`, default `.venv`), which
/// has moto.
pub fn venv_python() -> PathBuf {
    let venv = std::env::var_os("MUSTER_VENV").map_or_else(|| workspace_root().join(".venv"), PathBuf::from);
    venv.join("bin").join("python")
}

/// A loopback port for a test server that nobody else will take before the
/// server binds it. Ports come from below the kernel's ephemeral range (so
/// no `bind(0)` or outgoing connection is handed one meanwhile), each held
/// through an exclusive lock file until this process exits (so parallel
/// test processes never share one), and checked free by a bind.
pub fn free_port() -> u16 {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, Ordering};
    static HELD: Mutex<Vec<std::fs::File>> = Mutex::new(Vec::new());
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next().and_then(|low| low.parse::<u32>().ok()))
        .unwrap_or(32_768);
    let (low, high) = (10_000u32, ephemeral_low.clamp(12_000, 65_536));
    // One directory per user: another user's lock files are not ours to open.
    let user = std::env::var("USER").unwrap_or_else(|_| "user".into());
    let dir = std::env::temp_dir().join(format!("muster-test-ports-{user}"));
    std::fs::create_dir_all(&dir).expect("a directory for port locks");
    let span = high - low;
    let start = std::process::id().wrapping_mul(7_919) % span;
    for _ in 0..span {
        let port = low + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        let Ok(lock) = std::fs::File::create(dir.join(port.to_string())) else {
            continue;
        };
        if lock.try_lock().is_err() {
            continue;
        }
        let port = u16::try_from(port).expect("ports fit in u16");
        if StdListener::bind(("127.0.0.1", port)).is_ok() {
            HELD.lock().expect("port locks").push(lock);
            return port;
        }
    }
    panic!("no free loopback port in {low}..{high}");
}

impl MotoProcess {
    /// Starts moto and waits until it answers (at most 60 s).
    pub fn start() -> Self {
        let (path, script) = moto_server_command();
        assert!(
            path.exists(),
            "{} not found: run deploy/local/venv.sh (or set MUSTER_VENV / MUSTER_MOTO_SERVER)",
            path.display()
        );
        let log = tempfile::NamedTempFile::new().expect("a temp file for moto's log");
        let port = free_port();
        let child = Command::new(&path)
            .args(&script)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            // A two-AMI catalogue: moto scans its whole catalogue (1,300 AMIs)
            // for every instance it launches.
            .env("MOTO_AMIS_PATH", workspace_root().join("deploy/local/moto-amis.json"))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.reopen().expect("moto log")))
            .stderr(Stdio::from(log.reopen().expect("moto log")))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", path.display()));
        let mut moto = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _log: log,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return moto;
            }
            if let Ok(Some(status)) = moto.child.try_wait() {
                panic!("moto exited early with {status}");
            }
            assert!(Instant::now() < deadline, "moto did not start within 60s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// moto plus an in-process sim.
pub struct Sandbox {
    /// The sim (its state is reachable directly: audit, counters, tunables).
    pub sim: RunningSim,
    /// The moto processes behind it.
    pub motos: Vec<MotoProcess>,
    scratch: tempfile::TempDir,
}

/// Tunables for tests: no quotas, quick agent, short visibility delay.
pub fn test_tunables() -> Tunables {
    Tunables {
        throttling: false,
        visibility_delay_ms: 100,
        delivery_delay_ms: 100,
        default_duration_ms: 300,
        ..Tunables::default()
    }
}

impl Sandbox {
    /// Starts moto and a sim with [`test_tunables`].
    pub async fn start() -> Self {
        Self::start_with(test_tunables()).await
    }

    /// Starts moto and a sim with these tunables.
    pub async fn start_with(tunables: Tunables) -> Self {
        Self::start_sharded(tunables, 1).await
    }

    /// Starts `shards` moto processes (accounts spread over them) and a sim.
    pub async fn start_sharded(tunables: Tunables, shards: usize) -> Self {
        let starts: Vec<_> = (0..shards.max(1))
            .map(|_| tokio::task::spawn_blocking(MotoProcess::start))
            .collect();
        let mut motos = Vec::new();
        for start in starts {
            motos.push(start.await.expect("moto start task"));
        }
        let scratch = tempfile::tempdir().expect("a scratch dir");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port for the sim");
        let sim = start(
            SimConfig {
                moto_urls: motos.iter().map(|m| m.url.clone()).collect(),
                default_account: HUB_ACCOUNT.into(),
                scratch_dir: scratch.path().to_path_buf(),
                tunables,
            },
            listener,
        )
        .expect("the sim starts");
        Self { sim, motos, scratch }
    }

    /// The sim's endpoint URL.
    pub fn endpoint(&self) -> String {
        self.sim.endpoint()
    }

    /// The sim's state.
    pub fn state(&self) -> &Arc<SimState> {
        &self.sim.state
    }

    /// The scratch directory of real runs.
    pub fn scratch(&self) -> &std::path::Path {
        self.scratch.path()
    }

    /// SDK configuration acting in the hub account with static keys.
    pub fn hub_config(&self, region: &str) -> SdkConfig {
        self.config_with(
            region,
            Credentials::new("AKIAMUSTERTESTHUB", "muster-test", None, None, "test-hub"),
        )
    }

    /// SDK configuration with the given credentials; SDK retries off, so
    /// tests see every error the sim answers.
    pub fn config_with(&self, region: &str, credentials: Credentials) -> SdkConfig {
        muster_common::aws::fixed(
            &self.endpoint(),
            region,
            credentials,
            aws_smithy_types::retry::RetryConfig::disabled(),
        )
    }

    /// Assumes a role through the sim, returning credentials.
    pub async fn assume(
        &self,
        from: &SdkConfig,
        role_arn: &str,
        external_id: Option<&str>,
    ) -> Result<Credentials, aws_sdk_sts::error::SdkError<aws_sdk_sts::operation::assume_role::AssumeRoleError>> {
        self.assume_with(from, role_arn, external_id, None).await
    }

    /// Assumes a target account's execution role as the worker does: with
    /// the ExternalId and a SourceIdentity ("muster-test"), which its trust
    /// policy requires.
    pub async fn assume_execution(
        &self,
        from: &SdkConfig,
        role_arn: &str,
        external_id: Option<&str>,
    ) -> Result<Credentials, aws_sdk_sts::error::SdkError<aws_sdk_sts::operation::assume_role::AssumeRoleError>> {
        self.assume_with(from, role_arn, external_id, Some("muster-test")).await
    }

    /// Assumes a role with an optional ExternalId and SourceIdentity.
    pub async fn assume_with(
        &self,
        from: &SdkConfig,
        role_arn: &str,
        external_id: Option<&str>,
        source_identity: Option<&str>,
    ) -> Result<Credentials, aws_sdk_sts::error::SdkError<aws_sdk_sts::operation::assume_role::AssumeRoleError>> {
        let out = aws_sdk_sts::Client::new(from)
            .assume_role()
            .role_arn(role_arn)
            .role_session_name("muster-test")
            .set_source_identity(source_identity.map(str::to_owned))
            .set_external_id(external_id.map(str::to_owned))
            .send()
            .await?;
        let c = out.credentials.expect("credentials in the answer");
        Ok(Credentials::new(
            c.access_key_id,
            c.secret_access_key,
            Some(c.session_token),
            std::time::SystemTime::try_from(c.expiration).ok(),
            "test-assumed",
        ))
    }

    /// Seeds a fleet from TOML text.
    pub async fn seed(&self, fleet_toml: &str) -> FleetState {
        let fleet = FleetFile::parse(fleet_toml).expect("a valid test fleet");
        seed(
            &fleet,
            &SeedOptions {
                endpoint: self.endpoint(),
                target_template: workspace_root().join("deploy/cloudformation/target-account.yaml"),
            },
        )
        .await
        .expect("seeding succeeds")
    }

    /// Every SendCommand the sim accepted.
    pub fn audit(&self) -> Vec<AuditEntry> {
        self.state().audit.entries()
    }

    /// Every AssumeRole the sim granted.
    pub fn assumed_roles(&self) -> Vec<crate::state::AssumedRole> {
        self.state().assumed.lock().expect("assumed lock").clone()
    }

    /// Every secret key and session token AssumeRole handed out.
    pub fn issued_secrets(&self) -> Vec<String> {
        self.state().issued_secrets.lock().expect("issued lock").clone()
    }

    /// Calls counted for (service, api, outcome).
    pub fn count(&self, service: &str, api: &str, outcome: &str) -> u64 {
        self.state()
            .counters
            .lock()
            .expect("counters lock")
            .get(&(service.to_owned(), api.to_owned(), outcome.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    /// Changes tunables while running.
    pub fn tune(&self, change: impl FnOnce(&mut Tunables)) {
        let mut tunables = (*self.state().tunables()).clone();
        change(&mut tunables);
        tunables.validate().expect("valid tunables");
        self.state().set_tunables(tunables);
    }
}
