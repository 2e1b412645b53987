//! The controller's configuration: flags, `MUSTER_*` environment, a TOML
//! file, defaults, in that order of precedence. AWS settings come from the
//! SDK's own environment (`AWS_REGION`, `AWS_PROFILE`, `AWS_ENDPOINT_URL`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use muster_common::telemetry::LogFormat;
use serde::Deserialize;

/// The muster controller: takes campaigns over gRPC (CampaignService), keeps
/// them in a durable store, puts their tasks on the SQS queue for workers,
/// hands tasks out (WorkerService) and rolls campaigns out within their
/// concurrency and error limits. Run one per hub.
#[derive(Debug, Parser, Default)]
#[command(name = "muster-controller", version, about, long_about = None)]
pub struct Args {
    /// TOML file with any of the settings below (snake_case keys).
    #[arg(long, env = "MUSTER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where CampaignService listens [default: 127.0.0.1:7070]
    #[arg(long, env = "MUSTER_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Where WorkerService listens [default: 127.0.0.1:7071]
    #[arg(long, env = "MUSTER_WORKER_LISTEN")]
    pub worker_listen: Option<SocketAddr>,
    /// Directory of the store (SQLite) [default: ./muster-data]
    #[arg(long, env = "MUSTER_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// URL of the SQS task queue (required).
    #[arg(long, env = "MUSTER_QUEUE_URL")]
    pub queue_url: Option<String>,
    /// S3 bucket for results exports; none to skip them.
    #[arg(long, env = "MUSTER_RESULTS_BUCKET")]
    pub results_bucket: Option<String>,
    /// Seconds a worker's lease lasts without renewal [default: 30]
    #[arg(long, env = "MUSTER_LEASE_TTL")]
    pub lease_ttl: Option<u64>,
    /// Attempts per task before it fails [default: 3]
    #[arg(long, env = "MUSTER_MAX_ATTEMPTS")]
    pub max_attempts: Option<u32>,
    /// Batches out at once per (account, region); the campaign's API rate is
    /// shared among them [default: 4]
    #[arg(long, env = "MUSTER_MAX_TASKS_PER_SCOPE")]
    pub max_tasks_per_scope: Option<u32>,
    /// Tasks on the queue not yet leased [default: 500]
    #[arg(long, env = "MUSTER_MAX_QUEUED")]
    pub max_queued: Option<usize>,
    /// Execution role name when a campaign names none [default: muster-execution]
    #[arg(long, env = "MUSTER_DEFAULT_ROLE_NAME")]
    pub default_role_name: Option<String>,
    /// API calls per second per (account, region) when a campaign names no
    /// rate [default: 10]
    #[arg(long, env = "MUSTER_DEFAULT_API_RATE")]
    pub default_api_rate: Option<f64>,
    /// Milliseconds between reconcile passes when nothing happens [default: 500]
    #[arg(long, env = "MUSTER_RECONCILE_MS")]
    pub reconcile_ms: Option<u64>,
    /// Send AWS calls here instead of AWS (the local sandbox); the SDK's
    /// AWS_ENDPOINT_URL works too.
    #[arg(long)]
    pub aws_endpoint_url: Option<String>,
    /// Region of the hub's queue and buckets; the SDK's AWS_REGION works too.
    #[arg(long)]
    pub aws_region: Option<String>,
    /// Log line format [default: text]
    #[arg(long, value_enum, env = "MUSTER_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
}

/// The same settings in a config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// See `--listen`.
    pub listen: Option<SocketAddr>,
    /// See `--worker-listen`.
    pub worker_listen: Option<SocketAddr>,
    /// See `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// See `--queue-url`.
    pub queue_url: Option<String>,
    /// See `--results-bucket`.
    pub results_bucket: Option<String>,
    /// See `--lease-ttl`.
    pub lease_ttl: Option<u64>,
    /// See `--max-attempts`.
    pub max_attempts: Option<u32>,
    /// See `--max-tasks-per-scope`.
    pub max_tasks_per_scope: Option<u32>,
    /// See `--max-queued`.
    pub max_queued: Option<usize>,
    /// See `--default-role-name`.
    pub default_role_name: Option<String>,
    /// See `--default-api-rate`.
    pub default_api_rate: Option<f64>,
    /// See `--reconcile-ms`.
    pub reconcile_ms: Option<u64>,
    /// See `--aws-endpoint-url`.
    pub aws_endpoint_url: Option<String>,
    /// See `--aws-region`.
    pub aws_region: Option<String>,
}

/// Resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// CampaignService address.
    pub listen: SocketAddr,
    /// WorkerService address.
    pub worker_listen: SocketAddr,
    /// Store directory.
    pub data_dir: PathBuf,
    /// Everything the services need.
    pub settings: crate::Settings,
    /// AWS endpoint override.
    pub aws_endpoint_url: Option<String>,
    /// AWS region.
    pub aws_region: Option<String>,
}

impl Config {
    /// Merges flags, environment and file over defaults; names what is
    /// missing or wrong.
    pub fn resolve(args: Args) -> anyhow::Result<Self> {
        let file: FileConfig = muster_common::config::load_file(args.config.as_deref())?;
        let queue_url = args.queue_url.or(file.queue_url).ok_or_else(|| {
            anyhow::anyhow!("queue_url: the SQS task queue is required (--queue-url or MUSTER_QUEUE_URL)")
        })?;
        let lease_ttl = args.lease_ttl.or(file.lease_ttl).unwrap_or(30);
        if !(5..=3600).contains(&lease_ttl) {
            anyhow::bail!("lease_ttl: {lease_ttl} seconds; must be 5 to 3600");
        }
        let max_attempts = args.max_attempts.or(file.max_attempts).unwrap_or(3);
        if !(1..=20).contains(&max_attempts) {
            anyhow::bail!("max_attempts: {max_attempts}; must be 1 to 20");
        }
        let max_tasks_per_scope = args.max_tasks_per_scope.or(file.max_tasks_per_scope).unwrap_or(4);
        if !(1..=100).contains(&max_tasks_per_scope) {
            anyhow::bail!("max_tasks_per_scope: {max_tasks_per_scope}; must be 1 to 100");
        }
        let default_role_name = args
            .default_role_name
            .or(file.default_role_name)
            .unwrap_or_else(|| "muster-execution".into());
        muster_common::domain::check_role_name(&default_role_name)
            .map_err(|e| anyhow::anyhow!("default_role_name: {e}"))?;
        let default_api_rate = args.default_api_rate.or(file.default_api_rate).unwrap_or(10.0);
        if !(0.1..=1000.0).contains(&default_api_rate) {
            anyhow::bail!("default_api_rate: {default_api_rate}; must be 0.1 to 1000");
        }
        Ok(Self {
            listen: args.listen.or(file.listen).unwrap_or(([127, 0, 0, 1], 7070).into()),
            worker_listen: args
                .worker_listen
                .or(file.worker_listen)
                .unwrap_or(([127, 0, 0, 1], 7071).into()),
            data_dir: args
                .data_dir
                .or(file.data_dir)
                .unwrap_or_else(|| PathBuf::from("muster-data")),
            settings: crate::Settings {
                queue_url,
                results_bucket: args.results_bucket.or(file.results_bucket).filter(|b| !b.is_empty()),
                lease_ttl: Duration::from_secs(lease_ttl),
                max_attempts,
                max_tasks_per_scope,
                max_queued: args.max_queued.or(file.max_queued).unwrap_or(500).max(1),
                reconcile_interval: Duration::from_millis(
                    args.reconcile_ms.or(file.reconcile_ms).unwrap_or(500).max(10),
                ),
                defaults: crate::validate::Defaults {
                    role_name: default_role_name,
                    api_calls_per_second: default_api_rate,
                },
            },
            aws_endpoint_url: args.aws_endpoint_url.or(file.aws_endpoint_url),
            aws_region: args.aws_region.or(file.aws_region),
        })
    }
}
