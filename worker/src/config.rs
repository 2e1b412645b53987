//! The worker's configuration: flags, `MUSTER_*` environment, a TOML file,
//! defaults, in that order of precedence. AWS settings come from the SDK's
//! own environment (`AWS_REGION`, `AWS_PROFILE`, `AWS_ENDPOINT_URL`, ...).

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use muster_common::telemetry::LogFormat;
use muster_common::tls::ClientTls;
use serde::Deserialize;

/// The muster worker: takes tasks from the SQS queue, leases each from the
/// controller, assumes the execution role in the task's account, and runs
/// discovery or one batch of commands through SSM Run Command. Run as many
/// as you like; they share the queue.
#[derive(Debug, Parser, Default)]
#[command(name = "muster-worker", version, about, long_about = None)]
pub struct Args {
    /// TOML file with any of the settings below (snake_case keys).
    #[arg(long, env = "MUSTER_CONFIG")]
    pub config: Option<PathBuf>,
    /// The controller's WorkerService [default: http://127.0.0.1:7071]
    #[arg(long, env = "MUSTER_CONTROLLER")]
    pub controller: Option<String>,
    /// CA certificate (PEM file or text) the controller's certificate must
    /// chain to; required for an https:// controller.
    #[arg(long, env = "MUSTER_TLS_CA", help_heading = "Security")]
    pub tls_ca: Option<String>,
    /// This worker's client certificate (PEM file or text); WorkerService
    /// demands one.
    #[arg(long, env = "MUSTER_TLS_CERT", help_heading = "Security")]
    pub tls_cert: Option<String>,
    /// Its private key (PEM file or text).
    #[arg(long, env = "MUSTER_TLS_KEY", help_heading = "Security")]
    pub tls_key: Option<String>,
    /// Name to expect in the controller's certificate when it differs from
    /// the URL's host.
    #[arg(long, env = "MUSTER_TLS_SERVER_NAME", help_heading = "Security")]
    pub tls_server_name: Option<String>,
    /// Talk to an http:// controller on loopback, without TLS. Development
    /// only.
    #[arg(long, env = "MUSTER_INSECURE", help_heading = "Security")]
    pub insecure: bool,
    /// Allow --insecure although AWS calls go to real AWS, not a local
    /// endpoint (refused otherwise).
    #[arg(long)]
    pub insecure_real_aws: bool,
    /// URL of the SQS task queue (required).
    #[arg(long, env = "MUSTER_QUEUE_URL")]
    pub queue_url: Option<String>,
    /// Concurrent SQS long-poll loops [default: 2]
    #[arg(long, env = "MUSTER_POLLERS")]
    pub pollers: Option<usize>,
    /// Most tasks running at once [default: 2000]
    #[arg(long, env = "MUSTER_MAX_TASKS")]
    pub max_tasks: Option<usize>,
    /// AssumeRole calls per second for the whole fleet: STS's quota is the
    /// hub account's, shared by every worker, so each worker takes its
    /// share (divided by the workers the controller hears from), and
    /// throttling lowers the pace on its own [default: 50]
    #[arg(long, env = "MUSTER_ASSUME_ROLE_RATE")]
    pub assume_role_rate: Option<f64>,
    /// Name in the controller's logs [default: <hostname>-<pid>]
    #[arg(long, env = "MUSTER_WORKER_ID")]
    pub worker_id: Option<String>,
    /// Seconds running tasks may go on after SIGTERM before they are handed
    /// back to the controller for another worker [default: 30]
    #[arg(long, env = "MUSTER_SHUTDOWN_GRACE")]
    pub shutdown_grace: Option<u64>,
    /// Send AWS calls here instead of AWS (the local sandbox); the SDK's
    /// AWS_ENDPOINT_URL works too.
    #[arg(long)]
    pub aws_endpoint_url: Option<String>,
    /// Region for SQS and STS calls; the SDK's AWS_REGION works too.
    #[arg(long)]
    pub aws_region: Option<String>,
    /// Log line format [default: text]
    #[arg(long, value_enum, env = "MUSTER_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Serve /metrics, /healthz, /readyz and gRPC health here, or "off"
    /// [default: 127.0.0.1:9102]
    #[arg(long, env = "MUSTER_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// A bearer token /metrics demands (health and readiness stay open);
    /// prefer MUSTER_METRICS_TOKEN: flags show in `ps`.
    #[arg(long, env = "MUSTER_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
}

/// The same settings in a config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// See `--controller`.
    pub controller: Option<String>,
    /// See `--queue-url`.
    pub queue_url: Option<String>,
    /// See `--tls-ca`.
    pub tls_ca: Option<String>,
    /// See `--tls-cert`.
    pub tls_cert: Option<String>,
    /// See `--tls-key`.
    pub tls_key: Option<String>,
    /// See `--tls-server-name`.
    pub tls_server_name: Option<String>,
    /// See `--insecure`.
    pub insecure: Option<bool>,
    /// See `--pollers`.
    pub pollers: Option<usize>,
    /// See `--max-tasks`.
    pub max_tasks: Option<usize>,
    /// See `--assume-role-rate`.
    pub assume_role_rate: Option<f64>,
    /// See `--worker-id`.
    pub worker_id: Option<String>,
    /// See `--shutdown-grace`.
    pub shutdown_grace: Option<u64>,
    /// See `--aws-endpoint-url`.
    pub aws_endpoint_url: Option<String>,
    /// See `--aws-region`.
    pub aws_region: Option<String>,
    /// See `--metrics-listen`.
    pub metrics_listen: Option<String>,
}

/// Resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Controller URL.
    pub controller: String,
    /// TLS to the controller.
    pub tls: ClientTls,
    /// Queue URL.
    pub queue_url: String,
    /// Receive loops.
    pub pollers: usize,
    /// Most tasks at once.
    pub max_tasks: usize,
    /// Most AssumeRole calls per second.
    pub assume_role_rate: f64,
    /// Worker id.
    pub worker_id: String,
    /// Shutdown grace.
    pub shutdown_grace: Duration,
    /// AWS endpoint override.
    pub aws_endpoint_url: Option<String>,
    /// AWS region.
    pub aws_region: Option<String>,
    /// Metrics endpoint; none when off.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// The bearer token /metrics demands, if any.
    pub metrics_token: Option<String>,
}

impl Config {
    /// Merges flags, environment and file over defaults; names what is
    /// missing or wrong.
    pub fn resolve(args: Args) -> anyhow::Result<Self> {
        let file: FileConfig = muster_common::config::load_file(args.config.as_deref())?;
        let queue_url = args.queue_url.or(file.queue_url).ok_or_else(|| {
            anyhow::anyhow!("queue_url: the SQS task queue is required (--queue-url or MUSTER_QUEUE_URL)")
        })?;
        let pollers = args.pollers.or(file.pollers).unwrap_or(2);
        if !(1..=64).contains(&pollers) {
            anyhow::bail!("pollers: {pollers} must be between 1 and 64");
        }
        let max_tasks = args.max_tasks.or(file.max_tasks).unwrap_or(2000);
        if max_tasks == 0 {
            anyhow::bail!("max_tasks: must be at least 1");
        }
        let assume_role_rate = args
            .assume_role_rate
            .or(file.assume_role_rate)
            .unwrap_or(crate::credentials::DEFAULT_ASSUME_ROLE_RATE);
        if !(assume_role_rate.is_finite() && assume_role_rate > 0.0) {
            anyhow::bail!("assume_role_rate: {assume_role_rate} must be a number of calls per second above 0");
        }
        let controller = args
            .controller
            .or(file.controller)
            .unwrap_or_else(|| "http://127.0.0.1:7071".into());
        let tls = ClientTls {
            ca: args.tls_ca.or(file.tls_ca),
            cert: args.tls_cert.or(file.tls_cert),
            key: args.tls_key.or(file.tls_key),
            server_name: args.tls_server_name.or(file.tls_server_name),
        };
        let insecure = args.insecure || file.insecure.unwrap_or(false);
        if controller.starts_with("http://") && !insecure {
            anyhow::bail!(
                "controller: {controller} is plaintext; use https:// with --tls-ca, --tls-cert and --tls-key, \
                 or pass --insecure for a local controller"
            );
        }
        if controller.starts_with("https://") && (tls.cert.is_none() || tls.key.is_none()) {
            anyhow::bail!(
                "tls_cert: WorkerService demands a client certificate; set --tls-cert and --tls-key (MUSTER_TLS_CERT, \
                 MUSTER_TLS_KEY)"
            );
        }
        muster_common::config::check_insecure(
            insecure,
            muster_common::config::aws_endpoint(args.aws_endpoint_url.as_deref().or(file.aws_endpoint_url.as_deref()))
                .as_deref(),
            args.insecure_real_aws,
        )
        .map_err(anyhow::Error::msg)?;
        if insecure && controller.starts_with("https://") {
            anyhow::bail!("insecure: --insecure is for an http:// controller on loopback; {controller} is https");
        }
        // Check the URL and read the PEM now, so a mistake stops the worker
        // at start with the field named.
        muster_common::tls::endpoint("controller", &controller, "tls", &tls)?;
        let worker_id = worker_id(args.worker_id.or(file.worker_id), tls.cert.as_deref())?;
        let metrics_listen = muster_common::config::metrics_listen(
            "metrics_listen",
            args.metrics_listen.or(file.metrics_listen),
            "127.0.0.1:9102",
        )?;
        Ok(Self {
            metrics_listen,
            metrics_token: muster_common::config::metrics_token(args.metrics_token)?,
            controller,
            tls,
            queue_url,
            pollers,
            max_tasks,
            assume_role_rate,
            worker_id,
            shutdown_grace: Duration::from_secs(args.shutdown_grace.or(file.shutdown_grace).unwrap_or(30)),
            aws_endpoint_url: args.aws_endpoint_url.or(file.aws_endpoint_url),
            aws_region: args.aws_region.or(file.aws_region),
        })
    }
}

/// The worker's id: with a certificate, the name its SPIFFE ID gives (the
/// controller knows the worker by nothing else, so `--worker-id`, if given,
/// must agree); in plaintext, `--worker-id` or host and pid.
fn worker_id(given: Option<String>, cert: Option<&str>) -> anyhow::Result<String> {
    let Some(cert) = cert else {
        return Ok(given.unwrap_or_else(|| muster_common::config::default_instance_id("muster-worker")));
    };
    let pem = muster_common::tls::read_pem("tls_cert", cert)?;
    let (_, name) = muster_common::identity::worker_identity_pem(&pem).map_err(|e| anyhow::anyhow!("tls_cert: {e}"))?;
    match given {
        Some(given) if given != name => anyhow::bail!(
            "worker_id: '{given}' is not '{name}', the worker its certificate names; omit --worker-id, or use a \
             certificate issued for {given}"
        ),
        _ => Ok(name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_the_file_and_missing_fields_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("worker.toml");
        std::fs::write(&path, "queue_url = \"http://file/q\"\npollers = 4\n").unwrap();
        let args = Args {
            config: Some(path.clone()),
            pollers: Some(8),
            insecure: true,
            aws_endpoint_url: Some("http://127.0.0.1:4566".into()),
            ..Default::default()
        };
        let config = Config::resolve(args).unwrap();
        assert_eq!(config.queue_url, "http://file/q");
        assert_eq!(config.pollers, 8);
        assert_eq!(config.max_tasks, 2000);
        assert_eq!(config.assume_role_rate, crate::credentials::DEFAULT_ASSUME_ROLE_RATE);
        for rate in [0.0, -1.0, f64::NAN] {
            let err = Config::resolve(Args {
                config: Some(path.clone()),
                insecure: true,
                aws_endpoint_url: Some("http://127.0.0.1:4566".into()),
                assume_role_rate: Some(rate),
                ..Default::default()
            })
            .unwrap_err();
            assert!(err.to_string().starts_with("assume_role_rate: "), "{err}");
            assert!(err.to_string().contains("above 0"), "{err}");
        }
        let err = Config::resolve(Args::default()).unwrap_err();
        assert!(err.to_string().starts_with("queue_url:"), "{err}");
        let err = Config::resolve(Args {
            queue_url: Some("q".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("controller: http://127.0.0.1:7071 is plaintext"),
            "{err}"
        );
        let err = Config::resolve(Args {
            queue_url: Some("q".into()),
            controller: Some("https://muster:7071".into()),
            tls_ca: Some("/nonexistent/ca.pem".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("tls_cert: WorkerService demands a client certificate"),
            "{err}"
        );
        let err = Config::resolve(Args {
            queue_url: Some("q".into()),
            controller: Some("https://muster:7071".into()),
            tls_ca: Some("/nonexistent/ca.pem".into()),
            tls_cert: Some("/nonexistent/w.pem".into()),
            tls_key: Some("/nonexistent/w.key".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            err.to_string().starts_with("tls_ca: cannot read /nonexistent/ca.pem"),
            "{err}"
        );
        let err = Config::resolve(Args {
            queue_url: Some("q".into()),
            controller: Some("http://10.1.2.3:7071".into()),
            insecure: true,
            aws_endpoint_url: Some("http://127.0.0.1:4566".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("would send calls in the clear"), "{err}");
        std::fs::write(&path, "queue_url = \"q\"\npolers = 4\n").unwrap();
        let err = Config::resolve(Args {
            config: Some(path),
            insecure: true,
            aws_endpoint_url: Some("http://127.0.0.1:4566".into()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("polers"), "{err}");
    }

    #[test]
    fn the_worker_id_is_the_name_its_certificate_gives() {
        let pki = muster_sim::certs::DevPki::generate().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let files = pki.write(dir.path()).unwrap();
        let (cert, key) = muster_sim::certs::ensure_worker_files(dir.path(), "w-7").unwrap();
        let with_pair = |worker_id: Option<&str>, cert: &std::path::Path, key: &std::path::Path| {
            Config::resolve(Args {
                queue_url: Some("q".into()),
                controller: Some("https://localhost:7071".into()),
                tls_ca: Some(files.ca.display().to_string()),
                tls_cert: Some(cert.display().to_string()),
                tls_key: Some(key.display().to_string()),
                worker_id: worker_id.map(str::to_owned),
                ..Default::default()
            })
        };
        let with = |worker_id: Option<&str>, cert: &std::path::Path| with_pair(worker_id, cert, &key);
        assert_eq!(with(None, &cert).unwrap().worker_id, "w-7");
        assert_eq!(with(Some("w-7"), &cert).unwrap().worker_id, "w-7");
        let err = with(Some("w-8"), &cert).unwrap_err().to_string();
        assert!(err.starts_with("worker_id: 'w-8' is not 'w-7'"), "{err}");
        let err = with_pair(None, &files.admin_cert, &files.admin_key)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("tls_cert: the certificate carries no worker identity"),
            "{err}"
        );
    }
}
