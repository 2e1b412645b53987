//! The worker's configuration: flags, `MUSTER_*` environment, a TOML file,
//! defaults, in that order of precedence, declared once in [`Options`].
//! AWS settings come from the SDK's own environment (`AWS_REGION`,
//! `AWS_PROFILE`, `AWS_ENDPOINT_URL`, ...).

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use muster_common::config::{ConfigError, in_range};
use muster_common::telemetry::LogFormat;
use muster_common::tls::ClientTls;
use serde::{Deserialize, Serialize};

/// The muster worker: takes tasks from the SQS queue, leases each from the
/// controller, assumes the execution role in the task's account, and runs
/// discovery or one batch of commands through SSM Run Command. Run as many
/// as you like; they share the queue.
#[derive(Debug, Parser, Default)]
#[command(name = "muster-worker", version, about, long_about = None)]
pub struct Args {
    /// TOML file with any of the settings below (snake_case keys, e.g.
    /// `queue_url = "..."`); flags and environment variables win over it.
    #[arg(long, env = "MUSTER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Allow --insecure although AWS calls go to real AWS, not a local
    /// endpoint (refused otherwise). A flag only: no file can say it.
    #[arg(long)]
    pub insecure_real_aws: bool,
    /// Every setting the file may give too.
    #[command(flatten)]
    pub options: Options,
}

/// The worker's settings, each from the highest layer that gives it: a
/// flag, its environment variable, then the config file's key of the same
/// name.
#[derive(Debug, Default, clap::Args, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Options {
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
    #[arg(long, env = "MUSTER_TLS_KEY", help_heading = "Security", hide_env_values = true)]
    pub tls_key: Option<String>,
    /// Name to expect in the controller's certificate when it differs from
    /// the URL's host.
    #[arg(long, env = "MUSTER_TLS_SERVER_NAME", help_heading = "Security")]
    pub tls_server_name: Option<String>,
    /// Talk to an http:// controller on loopback, without TLS. Development
    /// only.
    #[arg(long, env = "MUSTER_INSECURE", help_heading = "Security")]
    pub insecure: bool,
    /// URL of the SQS task queue (required).
    #[arg(long, env = "MUSTER_QUEUE_URL")]
    pub queue_url: Option<String>,
    /// Concurrent SQS long-poll loops, 1 to 64 [default: 2]
    #[arg(long, env = "MUSTER_POLLERS")]
    pub pollers: Option<usize>,
    /// Most tasks running at once, 1 to 100000 [default: 2000]
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
    /// back to the controller for another worker, 0 to 3600 [default: 30]
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
    /// prefer MUSTER_METRICS_TOKEN or the file: flags show in `ps`.
    #[arg(long, env = "MUSTER_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
}

impl Args {
    /// The settings laid over the config file (file < env < flags); the
    /// file is read once, so calling this again changes nothing.
    pub fn layered(mut self) -> Result<Self, ConfigError> {
        if let Some(path) = self.config.take() {
            self.options = muster_common::config::layered(&self.options, &path)?;
        }
        Ok(self)
    }
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
    /// Lays flags and environment over the file, applies the defaults and
    /// checks every rule; an error names the setting.
    pub fn resolve(args: Args) -> Result<Self, ConfigError> {
        let Args {
            insecure_real_aws,
            options: s,
            ..
        } = args.layered()?;
        let queue_url = s.queue_url.ok_or_else(|| {
            ConfigError::missing(
                "queue_url",
                "the SQS task queue (--queue-url, MUSTER_QUEUE_URL or queue_url in the file)",
            )
        })?;
        let pollers = in_range("pollers", s.pollers, 2, 1..=64, "")?;
        let max_tasks = in_range("max_tasks", s.max_tasks, 2000, 1..=100_000, "")?;
        let assume_role_rate = s
            .assume_role_rate
            .unwrap_or(crate::credentials::DEFAULT_ASSUME_ROLE_RATE);
        if !(assume_role_rate.is_finite() && assume_role_rate > 0.0) {
            return Err(ConfigError::invalid(
                "assume_role_rate",
                format_args!("{assume_role_rate} must be a number of calls per second above 0"),
            ));
        }
        let shutdown_grace = in_range("shutdown_grace", s.shutdown_grace, 30, 0..=3600, "seconds")?;
        let controller = s.controller.unwrap_or_else(|| "http://127.0.0.1:7071".into());
        let tls = ClientTls {
            ca: s.tls_ca,
            cert: s.tls_cert,
            key: s.tls_key,
            server_name: s.tls_server_name,
        };
        check_transport(&controller, &tls, s.insecure)?;
        muster_common::config::check_insecure(
            s.insecure,
            muster_common::config::aws_endpoint(s.aws_endpoint_url.as_deref()).as_deref(),
            insecure_real_aws,
        )?;
        // Check the URL and read the PEM now, so a mistake stops the worker
        // at start with the field named.
        muster_common::tls::endpoint("controller", &controller, "tls", &tls)?;
        let worker_id = worker_id(s.worker_id, tls.cert.as_deref())?;
        Ok(Self {
            metrics_listen: muster_common::config::metrics_listen(
                "metrics_listen",
                s.metrics_listen,
                "127.0.0.1:9102",
            )?,
            metrics_token: muster_common::config::metrics_token(s.metrics_token)?,
            controller,
            tls,
            queue_url,
            pollers,
            max_tasks,
            assume_role_rate,
            worker_id,
            shutdown_grace: Duration::from_secs(shutdown_grace),
            aws_endpoint_url: s.aws_endpoint_url,
            aws_region: s.aws_region,
        })
    }
}

/// Plaintext only when asked for, and only to http://; https:// needs the
/// client certificate WorkerService demands.
fn check_transport(controller: &str, tls: &ClientTls, insecure: bool) -> Result<(), ConfigError> {
    if controller.starts_with("http://") && !insecure {
        return Err(ConfigError::invalid(
            "controller",
            format_args!(
                "{controller} is plaintext; use https:// with --tls-ca, --tls-cert and --tls-key, or pass \
                 --insecure for a local controller"
            ),
        ));
    }
    if controller.starts_with("https://") && (tls.cert.is_none() || tls.key.is_none()) {
        return Err(ConfigError::invalid(
            "tls_cert",
            "WorkerService demands a client certificate; set --tls-cert and --tls-key (MUSTER_TLS_CERT, \
             MUSTER_TLS_KEY)",
        ));
    }
    if insecure && controller.starts_with("https://") {
        return Err(ConfigError::invalid(
            "insecure",
            format_args!("--insecure is for an http:// controller on loopback; {controller} is https"),
        ));
    }
    Ok(())
}

/// The worker's id: with a certificate, the name its SPIFFE ID gives (the
/// controller knows the worker by nothing else, so `--worker-id`, if given,
/// must agree); in plaintext, `--worker-id` or host and pid.
fn worker_id(given: Option<String>, cert: Option<&str>) -> Result<String, ConfigError> {
    let Some(cert) = cert else {
        return Ok(given.unwrap_or_else(|| muster_common::config::default_instance_id("muster-worker")));
    };
    let pem = muster_common::tls::read_pem("tls_cert", cert)?;
    let (_, name) =
        muster_common::identity::worker_identity_pem(&pem).map_err(|e| ConfigError::invalid("tls_cert", e))?;
    match given {
        Some(given) if given != name => Err(ConfigError::invalid(
            "worker_id",
            format_args!(
                "'{given}' is not '{name}', the worker its certificate names; omit --worker-id, or use a \
                 certificate issued for {given}"
            ),
        )),
        _ => Ok(name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(options: Options) -> Args {
        Args {
            options,
            ..Default::default()
        }
    }

    fn local(options: Options) -> Options {
        Options {
            insecure: true,
            aws_endpoint_url: Some("http://127.0.0.1:4566".into()),
            ..options
        }
    }

    #[test]
    fn flags_beat_the_file_and_missing_fields_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("worker.toml");
        std::fs::write(
            &path,
            "queue_url = \"http://file/q\"\npollers = 4\nshutdown_grace = 5\n",
        )
        .unwrap();
        let config = Config::resolve(Args {
            config: Some(path.clone()),
            options: local(Options {
                pollers: Some(8),
                ..Default::default()
            }),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(config.queue_url, "http://file/q");
        assert_eq!(config.pollers, 8);
        assert_eq!(config.shutdown_grace, Duration::from_secs(5));
        assert_eq!(config.max_tasks, 2000);
        assert_eq!(config.assume_role_rate, crate::credentials::DEFAULT_ASSUME_ROLE_RATE);
        for rate in [0.0, -1.0, f64::NAN] {
            let err = Config::resolve(Args {
                config: Some(path.clone()),
                options: local(Options {
                    assume_role_rate: Some(rate),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .unwrap_err();
            assert_eq!(err.field(), "assume_role_rate");
            assert!(err.to_string().contains("above 0"), "{err}");
        }
        let err = Config::resolve(Args::default()).unwrap_err();
        assert!(
            matches!(&err, ConfigError::Missing { field, .. } if field == "queue_url"),
            "{err}"
        );
        let err = Config::resolve(args(local(Options {
            queue_url: Some("q".into()),
            pollers: Some(65),
            ..Default::default()
        })))
        .unwrap_err();
        assert_eq!(err.to_string(), "pollers: 65; must be 1 to 64");
        let err = Config::resolve(args(Options {
            queue_url: Some("q".into()),
            ..Default::default()
        }))
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("controller: http://127.0.0.1:7071 is plaintext"),
            "{err}"
        );
        let err = Config::resolve(args(Options {
            queue_url: Some("q".into()),
            controller: Some("https://muster:7071".into()),
            tls_ca: Some("/nonexistent/ca.pem".into()),
            ..Default::default()
        }))
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("tls_cert: WorkerService demands a client certificate"),
            "{err}"
        );
        let err = Config::resolve(args(Options {
            queue_url: Some("q".into()),
            controller: Some("https://muster:7071".into()),
            tls_ca: Some("/nonexistent/ca.pem".into()),
            tls_cert: Some("/nonexistent/w.pem".into()),
            tls_key: Some("/nonexistent/w.key".into()),
            ..Default::default()
        }))
        .unwrap_err();
        assert_eq!(err.field(), "tls_ca");
        assert!(
            err.to_string().starts_with("tls_ca: cannot read /nonexistent/ca.pem"),
            "{err}"
        );
        let err = Config::resolve(args(local(Options {
            queue_url: Some("q".into()),
            controller: Some("http://10.1.2.3:7071".into()),
            ..Default::default()
        })))
        .unwrap_err();
        assert!(err.to_string().contains("would send calls in the clear"), "{err}");
        std::fs::write(&path, "queue_url = \"q\"\npolers = 4\n").unwrap();
        let err = Config::resolve(Args {
            config: Some(path),
            options: local(Options::default()),
            ..Default::default()
        })
        .unwrap_err();
        assert!(matches!(err, ConfigError::File { .. }), "{err}");
        assert!(err.to_string().contains("polers"), "{err}");
    }

    #[test]
    fn a_file_may_give_every_setting_and_a_flag_beats_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("worker.toml");
        std::fs::write(
            &path,
            "queue_url = \"http://file/q\"\ninsecure = true\naws_endpoint_url = \"http://127.0.0.1:4566\"\n\
             log_format = \"json\"\nmetrics_listen = \"off\"\nmetrics_token = \"0123456789abcdef\"\n\
             worker_id = \"from-file\"\nmax_tasks = 10\n",
        )
        .unwrap();
        let config = path.display().to_string();
        // As the binary parses them: the flag over the file.
        let parsed = Args::try_parse_from(["muster-worker", "--config", &config, "--max-tasks", "20"]).unwrap();
        let layered = parsed.layered().unwrap();
        assert_eq!(layered.options.log_format, Some(LogFormat::Json));
        let config = Config::resolve(layered).unwrap();
        assert_eq!(config.queue_url, "http://file/q");
        assert_eq!(config.max_tasks, 20);
        assert_eq!(config.worker_id, "from-file");
        assert_eq!(config.metrics_listen, None);
        assert_eq!(config.metrics_token.as_deref(), Some("0123456789abcdef"));
    }

    #[test]
    fn the_worker_id_is_the_name_its_certificate_gives() {
        let pki = muster_sim::certs::DevPki::generate().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let files = pki.write(dir.path()).unwrap();
        let (cert, key) = muster_sim::certs::ensure_worker_files(dir.path(), "w-7").unwrap();
        let with_pair = |worker_id: Option<&str>, cert: &std::path::Path, key: &std::path::Path| {
            Config::resolve(args(Options {
                queue_url: Some("q".into()),
                controller: Some("https://localhost:7071".into()),
                tls_ca: Some(files.ca.display().to_string()),
                tls_cert: Some(cert.display().to_string()),
                tls_key: Some(key.display().to_string()),
                worker_id: worker_id.map(str::to_owned),
                ..Default::default()
            }))
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
