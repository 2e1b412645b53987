//! The controller's configuration: flags, `MUSTER_*` environment, a TOML
//! file, defaults, in that order of precedence. AWS settings come from the
//! SDK's own environment (`AWS_REGION`, `AWS_PROFILE`, `AWS_ENDPOINT_URL`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, Subcommand};
use muster_common::telemetry::LogFormat;
use muster_common::tls::{check_plaintext_bind, read_pem};
use serde::Deserialize;

use crate::auth::{Auth, ClientEntry, TokenEntry};
use crate::guardrails::Guardrails;
use crate::{Security, ServerTls};

/// The muster controller: takes campaigns over gRPC (CampaignService), keeps
/// them in a durable store, puts their tasks on the SQS queue for workers,
/// hands tasks out (WorkerService) and rolls campaigns out within their
/// concurrency and error limits. One per hub on SQLite; on PostgreSQL,
/// several, of which one leads.
#[derive(Debug, Parser, Default)]
#[command(name = "muster-controller", version, about, long_about = None)]
pub struct Args {
    /// Tools instead of serving.
    #[command(subcommand)]
    pub tool: Option<Tool>,
    /// TOML file with any of the settings below (snake_case keys), plus
    /// [auth] and [guardrails] tables.
    #[arg(long, env = "MUSTER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where CampaignService listens [default: 127.0.0.1:7070]
    #[arg(long, env = "MUSTER_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Where WorkerService listens [default: 127.0.0.1:7071]
    #[arg(long, env = "MUSTER_WORKER_LISTEN")]
    pub worker_listen: Option<SocketAddr>,
    /// Directory of the store (SQLite), on a local disk [default: ./muster-data]
    #[arg(long, env = "MUSTER_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// PostgreSQL connection string (`postgres://user@host:5432/muster?sslmode=require`):
    /// the store several controllers share, instead of SQLite in --data-dir.
    /// The password may come from MUSTER_DATABASE_PASSWORD instead.
    #[arg(long, env = "MUSTER_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// PEM file of the CA certificates the database's certificate chains to
    /// (for RDS and Aurora, the RDS CA bundle) [default: the system's]
    #[arg(long, env = "MUSTER_DATABASE_CA")]
    pub database_ca: Option<PathBuf>,
    /// URL of the SQS task queue (required).
    #[arg(long, env = "MUSTER_QUEUE_URL")]
    pub queue_url: Option<String>,
    /// S3 bucket for results exports; none to skip them.
    #[arg(long, env = "MUSTER_RESULTS_BUCKET")]
    pub results_bucket: Option<String>,
    /// EventBridge bus of the controller's account that gets every campaign
    /// state change ("default", a name or an ARN); none for no events.
    #[arg(long, env = "MUSTER_EVENT_BUS")]
    pub event_bus: Option<String>,
    /// SNS topic ARN that gets every campaign state change; none for no
    /// messages.
    #[arg(long, env = "MUSTER_SNS_TOPIC")]
    pub sns_topic: Option<String>,
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
    /// Seconds a task may wait on the queue without being leased before its
    /// message is sent again (it may be lost, or dead-lettered) [default: 300]
    #[arg(long, env = "MUSTER_REQUEUE_AFTER")]
    pub requeue_after: Option<u64>,
    /// Seconds a leader's term lasts without renewal: with PostgreSQL and
    /// several controllers, how long the others wait for a leader that
    /// stopped before one takes over [default: 15]
    #[arg(long, env = "MUSTER_LEADER_TTL")]
    pub leader_ttl: Option<u64>,
    /// Days a campaign stays in the store after it ended; then it is
    /// removed with its targets, output and events (once exported, when
    /// there is a results bucket). 0 keeps everything [default: 90]
    #[arg(long, env = "MUSTER_RETENTION_DAYS")]
    pub retention_days: Option<u64>,
    /// URL of the task queue's dead-letter queue: the controller drains it
    /// and puts back what still waits for a worker [default: none]
    #[arg(long, env = "MUSTER_DEAD_LETTER_QUEUE_URL")]
    pub dead_letter_queue_url: Option<String>,
    /// URL of the hub's queue of Run Command status-change events
    /// (hub.yaml CommandEventQueue): workers learn that a batch ended from
    /// its event and poll SSM much less [default: none, workers poll]
    #[arg(long, env = "MUSTER_COMMAND_EVENTS_QUEUE_URL")]
    pub command_events_queue_url: Option<String>,
    /// CloudWatch namespace of the worker fleet's scaling signal
    /// (TaskDemand, Workers and TaskDemandPerWorker, dimension QueueName),
    /// which the leader publishes for the autoscaler [default: none, not
    /// published]
    #[arg(long, env = "MUSTER_SCALING_NAMESPACE")]
    pub scaling_namespace: Option<String>,
    /// Seconds between scaling signals, 1 to 300; below 60 they are high
    /// resolution [default: 60]
    #[arg(long, env = "MUSTER_SCALING_INTERVAL")]
    pub scaling_interval: Option<u64>,
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
    /// Serve /metrics, /healthz, /readyz and gRPC health here, or "off"
    /// [default: 127.0.0.1:9101]
    #[arg(long, env = "MUSTER_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// A bearer token /metrics demands (health and readiness stay open);
    /// prefer MUSTER_METRICS_TOKEN: flags show in `ps`.
    #[arg(
        long,
        env = "MUSTER_METRICS_TOKEN",
        hide_env_values = true,
        help_heading = "Security"
    )]
    pub metrics_token: Option<String>,

    /// The controller's TLS certificate chain (PEM file, or the PEM itself),
    /// for both APIs.
    #[arg(long, env = "MUSTER_TLS_CERT", help_heading = "Security")]
    pub tls_cert: Option<String>,
    /// Its private key (PEM file, or the PEM itself).
    #[arg(long, env = "MUSTER_TLS_KEY", help_heading = "Security", hide_env_values = true)]
    pub tls_key: Option<String>,
    /// CA of the workers' client certificates: WorkerService demands one.
    /// It must not be the client CA: workers have a trust anchor of their own.
    #[arg(long, env = "MUSTER_WORKER_CA", help_heading = "Security")]
    pub worker_ca: Option<String>,
    /// The SPIFFE trust domain of worker identities: each worker's
    /// certificate names it as spiffe://<DOMAIN>/worker/<name> [default: muster]
    #[arg(long, env = "MUSTER_WORKER_TRUST_DOMAIN", help_heading = "Security")]
    pub worker_trust_domain: Option<String>,
    /// CA of people's and tools' client certificates for CampaignService
    /// (mTLS), next to bearer tokens.
    #[arg(long, env = "MUSTER_CLIENT_CA", help_heading = "Security")]
    pub client_ca: Option<String>,
    /// A bearer token for CampaignService: NAME:PERMISSION:SHA256, permission
    /// read or submit, SHA256 from `muster-controller hash-token`.
    #[arg(
        long = "api-token",
        env = "MUSTER_API_TOKENS",
        value_delimiter = ',',
        help_heading = "Security"
    )]
    pub api_tokens: Vec<String>,
    /// A client certificate for CampaignService: COMMON_NAME:ROLE.
    #[arg(
        long = "api-client",
        env = "MUSTER_API_CLIENTS",
        value_delimiter = ',',
        help_heading = "Security"
    )]
    pub api_clients: Vec<String>,
    /// The policy file: tokens, client certificates and their roles within
    /// scopes (accounts, OUs, regions, documents). Read again when it
    /// changes, or on SIGHUP.
    #[arg(long, env = "MUSTER_POLICY", help_heading = "Security")]
    pub policy: Option<PathBuf>,
    /// Take AWS sign-in: people sign a presigned sts:GetCallerIdentity
    /// bound to this id (e.g. the controller's DNS name; the CLI's
    /// MUSTER_SERVER_ID), which the controller sends to STS; the policy's
    /// grants map ARN patterns to roles.
    #[arg(long, env = "MUSTER_SIGNIN_SERVER_ID", help_heading = "Security")]
    pub signin_server_id: Option<String>,
    /// Serve plaintext, without TLS or client certificates: only on loopback
    /// addresses, for development.
    #[arg(long, env = "MUSTER_INSECURE", help_heading = "Security")]
    pub insecure: bool,
    /// Allow --insecure although AWS calls go to real AWS, not a local
    /// endpoint (refused otherwise).
    #[arg(long, help_heading = "Security")]
    pub insecure_real_aws: bool,

    /// Accounts campaigns may target (with those under --allow-ou); none
    /// means any.
    #[arg(
        long = "allow-account",
        env = "MUSTER_ALLOW_ACCOUNTS",
        value_delimiter = ',',
        help_heading = "Guardrails"
    )]
    pub allow_accounts: Vec<String>,
    /// The ExternalId of every target account's execution role (the
    /// configuration file's [access] can give some accounts or OUs their
    /// own). Kept here: never in a spec, an answer, a log or an export.
    #[arg(
        long,
        env = "MUSTER_EXTERNAL_ID",
        hide_env_values = true,
        help_heading = "Target access"
    )]
    pub external_id: Option<String>,
    /// OUs or roots whose accounts, at any depth, campaigns may target.
    #[arg(
        long = "allow-ou",
        env = "MUSTER_ALLOW_OUS",
        value_delimiter = ',',
        help_heading = "Guardrails"
    )]
    pub allow_ous: Vec<String>,
    /// Execution roles campaigns may assume, by path and name, `*` as
    /// wildcard (e.g. muster-*); none means any.
    #[arg(
        long = "allow-role",
        env = "MUSTER_ALLOW_ROLES",
        value_delimiter = ',',
        help_heading = "Guardrails"
    )]
    pub allow_roles: Vec<String>,
    /// SSM documents campaigns may run, `*` as wildcard; none means any.
    #[arg(
        long = "allow-document",
        env = "MUSTER_ALLOW_DOCUMENTS",
        value_delimiter = ',',
        help_heading = "Guardrails"
    )]
    pub allow_documents: Vec<String>,
    /// Campaigns with more targets than this run only with confirm_large.
    #[arg(long, env = "MUSTER_CONFIRM_ABOVE_TARGETS", help_heading = "Guardrails")]
    pub confirm_above_targets: Option<u64>,
}

/// Tools of the controller binary.
#[derive(Debug, Subcommand)]
pub enum Tool {
    /// Make a new random API token; prints it once, with the --api-token
    /// value that lets it in (only its hash is kept).
    NewToken {
        /// Who will hold it.
        name: String,
        /// Its role: viewer, operator, approver or admin.
        permission: String,
    },
    /// Print the SHA-256 of a token read from standard input, for
    /// --api-token or [auth] in the config file.
    HashToken,
}

/// The [auth] table of the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthFile {
    /// Bearer tokens.
    #[serde(default)]
    pub tokens: Vec<TokenEntry>,
    /// Client certificates.
    #[serde(default)]
    pub clients: Vec<ClientEntry>,
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
    /// See `--database-url`.
    pub database_url: Option<String>,
    /// See `--database-ca`.
    pub database_ca: Option<PathBuf>,
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
    /// See `--requeue-after`.
    pub requeue_after: Option<u64>,
    /// See `--retention-days`.
    pub retention_days: Option<u64>,
    /// See `--leader-ttl`.
    pub leader_ttl: Option<u64>,
    /// See `--dead-letter-queue-url`.
    pub dead_letter_queue_url: Option<String>,
    /// See `--command-events-queue-url`.
    pub command_events_queue_url: Option<String>,
    /// See `--scaling-namespace`.
    pub scaling_namespace: Option<String>,
    /// See `--scaling-interval`.
    pub scaling_interval: Option<u64>,
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
    /// See `--metrics-listen`.
    pub metrics_listen: Option<String>,
    /// See `--tls-cert`.
    pub tls_cert: Option<String>,
    /// See `--tls-key`.
    pub tls_key: Option<String>,
    /// See `--worker-ca`.
    pub worker_ca: Option<String>,
    /// See `--worker-trust-domain`.
    pub worker_trust_domain: Option<String>,
    /// See `--client-ca`.
    pub client_ca: Option<String>,
    /// See `--insecure`.
    pub insecure: Option<bool>,
    /// Who may call the campaign API (added to `--api-token`, `--api-client`).
    #[serde(default)]
    pub auth: AuthFile,
    /// See `--policy`.
    pub policy: Option<PathBuf>,
    /// See `--signin-server-id`.
    pub signin_server_id: Option<String>,
    /// Limits on every campaign (flags, when given, replace a list).
    #[serde(default)]
    pub guardrails: Guardrails,
    /// How workers get into target accounts: the ExternalIds.
    #[serde(default)]
    pub access: crate::access::AccessFile,
    /// Where campaign state changes are posted.
    #[serde(default)]
    pub notifications: crate::notify::Notifications,
}

/// Where the store is.
#[derive(Debug, Clone)]
pub enum StoreConfig {
    /// SQLite in this directory: one controller.
    Sqlite(PathBuf),
    /// PostgreSQL: any number of controllers.
    Postgres(Box<crate::store::PostgresTarget>),
}

impl StoreConfig {
    /// Opens (or connects to) the store and brings its schema up to date.
    pub fn open(&self) -> crate::store::StoreResult<crate::store::Store> {
        match self {
            Self::Sqlite(dir) => crate::store::Store::open(dir),
            Self::Postgres(target) => crate::store::Store::connect(target),
        }
    }
}

/// The store's settings: PostgreSQL when a database URL is given, SQLite
/// otherwise. A database that is not on loopback needs TLS
/// (`sslmode=require`) unless `insecure`.
fn store_config(
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    database_ca: Option<&Path>,
    insecure: bool,
) -> anyhow::Result<StoreConfig> {
    let Some(url) = database_url.filter(|u| !u.is_empty()) else {
        if database_ca.is_some() {
            anyhow::bail!("database_ca: given without database_url; the SQLite store has no server to verify");
        }
        return Ok(StoreConfig::Sqlite(
            data_dir.unwrap_or_else(|| PathBuf::from("muster-data")),
        ));
    };
    let ca = match database_ca {
        Some(path) => {
            Some(std::fs::read(path).map_err(|e| anyhow::anyhow!("database_ca: cannot read {}: {e}", path.display()))?)
        }
        None => None,
    };
    let password = std::env::var("MUSTER_DATABASE_PASSWORD").ok().filter(|p| !p.is_empty());
    let target =
        crate::store::PostgresTarget::parse(&url, password.as_deref(), ca.as_deref()).map_err(anyhow::Error::msg)?;
    if !target.tls_required() && !target.on_loopback() && !insecure {
        anyhow::bail!(
            "database_url: {} is not on loopback and does not require TLS; add sslmode=require \
             (or --insecure for a network you trust)",
            target.shown()
        );
    }
    Ok(StoreConfig::Postgres(Box::new(target)))
}

/// Resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// CampaignService address.
    pub listen: SocketAddr,
    /// WorkerService address.
    pub worker_listen: SocketAddr,
    /// Where the store is.
    pub store: StoreConfig,
    /// Everything the services need.
    pub settings: crate::Settings,
    /// AWS endpoint override.
    pub aws_endpoint_url: Option<String>,
    /// AWS region.
    pub aws_region: Option<String>,
    /// Metrics endpoint; none when off.
    pub metrics_listen: Option<SocketAddr>,
    /// TLS and callers.
    pub security: Security,
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
        let listen = args.listen.or(file.listen).unwrap_or(([127, 0, 0, 1], 7070).into());
        let worker_listen = args
            .worker_listen
            .or(file.worker_listen)
            .unwrap_or(([127, 0, 0, 1], 7071).into());
        let mut guardrails = file.guardrails;
        for (flag, list) in [
            (args.allow_accounts, &mut guardrails.allowed_accounts),
            (args.allow_ous, &mut guardrails.allowed_ous),
            (args.allow_roles, &mut guardrails.allowed_roles),
            (args.allow_documents, &mut guardrails.allowed_documents),
        ] {
            if !flag.is_empty() {
                *list = flag.into_iter().map(|s| s.trim().to_owned()).collect();
            }
        }
        guardrails.confirm_above_targets = args.confirm_above_targets.or(guardrails.confirm_above_targets);
        guardrails.check().map_err(anyhow::Error::msg)?;
        let mut notifications = file.notifications;
        notifications.event_bus = args.event_bus.or(notifications.event_bus).filter(|b| !b.is_empty());
        notifications.sns_topic = args.sns_topic.or(notifications.sns_topic).filter(|t| !t.is_empty());
        notifications.check().map_err(anyhow::Error::msg)?;
        let mut tokens = file.auth.tokens;
        for text in &args.api_tokens {
            tokens.push(TokenEntry::parse("api_token", text).map_err(anyhow::Error::msg)?);
        }
        let mut clients = file.auth.clients;
        for text in &args.api_clients {
            clients.push(ClientEntry::parse("api_client", text).map_err(anyhow::Error::msg)?);
        }
        let insecure = args.insecure || file.insecure.unwrap_or(false);
        let aws_endpoint_url = args.aws_endpoint_url.or(file.aws_endpoint_url);
        muster_common::config::check_insecure(
            insecure,
            muster_common::config::aws_endpoint(aws_endpoint_url.as_deref()).as_deref(),
            args.insecure_real_aws,
        )
        .map_err(anyhow::Error::msg)?;
        let mut security = security(
            SecurityInputs {
                insecure,
                tls_cert: args.tls_cert.or(file.tls_cert),
                tls_key: args.tls_key.or(file.tls_key),
                worker_ca: args.worker_ca.or(file.worker_ca),
                worker_trust_domain: args.worker_trust_domain.or(file.worker_trust_domain),
                client_ca: args.client_ca.or(file.client_ca),
                tokens,
                clients,
                policy: args.policy.or(file.policy),
                signin_server_id: args.signin_server_id.or(file.signin_server_id),
                aws_endpoint: std::env::var("AWS_ENDPOINT_URL_STS")
                    .ok()
                    .filter(|u| !u.is_empty())
                    .or_else(|| muster_common::config::aws_endpoint(aws_endpoint_url.as_deref())),
            },
            listen,
            worker_listen,
        )?;
        security.metrics_token = muster_common::config::metrics_token(args.metrics_token)?;
        let requeue_after = args.requeue_after.or(file.requeue_after).unwrap_or(300);
        if !(10..=86_400).contains(&requeue_after) {
            anyhow::bail!("requeue_after: {requeue_after} seconds; must be 10 to 86400");
        }
        let retention_days = args.retention_days.or(file.retention_days).unwrap_or(90);
        if retention_days > 36_500 {
            anyhow::bail!("retention_days: {retention_days}; must be 0 (keep everything) to 36500");
        }
        let scaling_interval = args.scaling_interval.or(file.scaling_interval).unwrap_or(60);
        if !(1..=300).contains(&scaling_interval) {
            anyhow::bail!("scaling_interval: {scaling_interval} seconds; must be 1 to 300");
        }
        let scaling = match args
            .scaling_namespace
            .or(file.scaling_namespace)
            .filter(|n| !n.is_empty())
        {
            Some(namespace) => {
                crate::scaling::check_namespace(&namespace).map_err(|e| anyhow::anyhow!("scaling_namespace: {e}"))?;
                Some(crate::scaling::ScalingSignal {
                    namespace,
                    interval: Duration::from_secs(scaling_interval),
                })
            }
            None => None,
        };
        let leader_ttl = args.leader_ttl.or(file.leader_ttl).unwrap_or(15);
        if !(3..=300).contains(&leader_ttl) {
            anyhow::bail!("leader_ttl: {leader_ttl} seconds; must be 3 to 300");
        }
        let mut access = file.access;
        if let Some(external_id) = args.external_id {
            access.external_id = Some(external_id);
        }
        let external_ids = crate::access::ExternalIds::new(&access).map_err(anyhow::Error::msg)?;
        let default_api_rate = args.default_api_rate.or(file.default_api_rate).unwrap_or(10.0);
        if !(0.1..=1000.0).contains(&default_api_rate) {
            anyhow::bail!("default_api_rate: {default_api_rate}; must be 0.1 to 1000");
        }
        Ok(Self {
            listen,
            worker_listen,
            store: store_config(
                args.data_dir.or(file.data_dir),
                args.database_url.or(file.database_url),
                args.database_ca.or(file.database_ca).as_deref(),
                insecure,
            )?,
            settings: crate::Settings {
                queue_url,
                results_bucket: args.results_bucket.or(file.results_bucket).filter(|b| !b.is_empty()),
                lease_ttl: Duration::from_secs(lease_ttl),
                max_attempts,
                max_tasks_per_scope,
                max_queued: args.max_queued.or(file.max_queued).unwrap_or(500).max(1),
                requeue_after: Duration::from_secs(requeue_after),
                leader_ttl: Duration::from_secs(leader_ttl),
                retention: (retention_days > 0).then(|| Duration::from_secs(retention_days * 86_400)),
                dead_letter_queue_url: args
                    .dead_letter_queue_url
                    .or(file.dead_letter_queue_url)
                    .filter(|u| !u.is_empty()),
                command_events_queue_url: args
                    .command_events_queue_url
                    .or(file.command_events_queue_url)
                    .filter(|u| !u.is_empty()),
                reconcile_interval: Duration::from_millis(
                    args.reconcile_ms.or(file.reconcile_ms).unwrap_or(500).max(10),
                ),
                defaults: crate::validate::Defaults {
                    role_name: default_role_name,
                    api_calls_per_second: default_api_rate,
                },
                guardrails,
                external_ids,
                notifications,
                scaling,
            },
            aws_endpoint_url,
            aws_region: args.aws_region.or(file.aws_region),
            metrics_listen: muster_common::config::metrics_listen(
                "metrics_listen",
                args.metrics_listen.or(file.metrics_listen),
                "127.0.0.1:9101",
            )?,
            security,
        })
    }
}

struct SecurityInputs {
    insecure: bool,
    tls_cert: Option<String>,
    tls_key: Option<String>,
    worker_ca: Option<String>,
    worker_trust_domain: Option<String>,
    client_ca: Option<String>,
    tokens: Vec<TokenEntry>,
    clients: Vec<ClientEntry>,
    policy: Option<PathBuf>,
    signin_server_id: Option<String>,
    aws_endpoint: Option<String>,
}

fn security(inputs: SecurityInputs, listen: SocketAddr, worker_listen: SocketAddr) -> anyhow::Result<Security> {
    let mut auth = Auth::new(&inputs.tokens, &inputs.clients, inputs.policy.as_deref()).map_err(anyhow::Error::msg)?;
    if let Some(id) = &inputs.signin_server_id {
        let signin = crate::signin::SignIn::new(id, inputs.aws_endpoint.as_deref()).map_err(anyhow::Error::msg)?;
        auth = auth.with_signin(signin);
    }
    if inputs.insecure {
        if inputs.tls_cert.is_some()
            || inputs.tls_key.is_some()
            || inputs.worker_ca.is_some()
            || inputs.worker_trust_domain.is_some()
            || inputs.client_ca.is_some()
        {
            anyhow::bail!("insecure: TLS settings are given too; choose TLS or --insecure");
        }
        check_plaintext_bind("listen", listen)?;
        check_plaintext_bind("worker_listen", worker_listen)?;
        if !auth.has_clients() {
            // Tokens still count over loopback plaintext; without any,
            // every local caller may do anything.
            return Ok(Security::new(None, if auth.is_empty() { Auth::open() } else { auth }));
        }
        anyhow::bail!("api_client: client certificates need TLS, and --insecure serves plaintext");
    }
    let (Some(cert), Some(key)) = (inputs.tls_cert, inputs.tls_key) else {
        anyhow::bail!(
            "tls_cert: the controller serves TLS and needs --tls-cert and --tls-key (or --insecure for plaintext on loopback)"
        );
    };
    let worker_ca = inputs.worker_ca.ok_or_else(|| {
        anyhow::anyhow!(
            "worker_ca: required: the CA that signs the workers' client certificates (WorkerService demands mTLS)"
        )
    })?;
    let worker_ca = read_pem("worker_ca", &worker_ca)?;
    let client_ca = inputs.client_ca.map(|ca| read_pem("client_ca", &ca)).transpose()?;
    if let Some(client_ca) = &client_ca
        && shares_a_certificate(&worker_ca, client_ca)
    {
        anyhow::bail!(
            "worker_ca: holds a CA that client_ca holds too; workers need a trust anchor of their own, so that no \
             API client's certificate can act as a worker"
        );
    }
    let worker_trust_domain = inputs
        .worker_trust_domain
        .unwrap_or_else(|| muster_common::identity::DEFAULT_TRUST_DOMAIN.to_owned());
    muster_common::identity::check_trust_domain(&worker_trust_domain)
        .map_err(|e| anyhow::anyhow!("worker_trust_domain: {e}"))?;
    if auth.has_clients() && client_ca.is_none() {
        anyhow::bail!("client_ca: required when client certificates are configured (--api-client or [auth] clients)");
    }
    let policy_in_s3 = matches!(auth.policy_source(), Some(crate::auth::PolicySource::S3 { .. }));
    if auth.is_empty() && !policy_in_s3 {
        anyhow::bail!(
            "auth: no API token or client certificate is configured, so nobody could call the campaign API; \
             add --api-token (see muster-controller new-token), --api-client or a --policy file"
        );
    }
    Ok(Security::new(
        Some(ServerTls {
            cert: read_pem("tls_cert", &cert)?,
            key: read_pem("tls_key", &key)?,
            worker_ca,
            worker_trust_domain,
            client_ca,
        }),
        auth,
    ))
}

/// Whether two PEM bundles hold a certificate in common.
fn shares_a_certificate(a: &[u8], b: &[u8]) -> bool {
    let ders = |pem: &[u8]| -> Vec<Vec<u8>> {
        x509_parser::pem::Pem::iter_from_buffer(pem)
            .filter_map(Result::ok)
            .map(|block| block.contents)
            .collect()
    };
    let b = ders(b);
    ders(a).iter().any(|der| b.contains(der))
}

/// Runs a tool subcommand.
pub fn run_tool(tool: &Tool) -> anyhow::Result<()> {
    match tool {
        Tool::NewToken { name, permission } => {
            let entry = TokenEntry::parse("new-token", &format!("{name}:{permission}:")).map_err(anyhow::Error::msg)?;
            let token = crate::auth::new_token();
            let hash = crate::auth::hash_token(&token);
            println!("token (give it to {}; it is not shown again): {token}", entry.name);
            let role = entry.permission.unwrap_or_default();
            println!("controller setting: --api-token {}:{role}:{hash}", entry.name);
            println!(
                "or in the policy file:\n[[tokens]]\nname = \"{}\"\nsha256 = \"{hash}\"\n\n[[grants]]\nprincipals = [\"{}\"]\nrole = \"{role}\"",
                entry.name, entry.name
            );
        }
        Tool::HashToken => {
            let mut token = String::new();
            std::io::stdin().read_line(&mut token)?;
            if token.trim().is_empty() {
                anyhow::bail!("hash-token: no token on standard input");
            }
            println!("{}", crate::auth::hash_token(&token));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEM: &str = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";

    fn args() -> Args {
        Args {
            queue_url: Some("http://sqs/q".into()),
            ..Default::default()
        }
    }

    fn tls(mut args: Args) -> Args {
        args.tls_cert = Some(PEM.into());
        args.tls_key = Some(PEM.into());
        args.worker_ca = Some(PEM.into());
        args
    }

    fn error(args: Args) -> String {
        Config::resolve(args).unwrap_err().to_string()
    }

    #[test]
    fn plaintext_needs_insecure_and_loopback() {
        assert!(error(args()).starts_with("tls_cert: the controller serves TLS and needs --tls-cert"));
        let config = Config::resolve(Args {
            insecure: true,
            aws_endpoint_url: Some("http://127.0.0.1:4566".into()),
            ..args()
        })
        .unwrap();
        assert!(config.security.tls.is_none());
        let anonymous = tonic::Request::new(());
        let principal = config
            .security
            .auth
            .authorize(&anonymous, None, "SubmitCampaign", crate::policy::Action::Submit)
            .expect("an open loopback controller lets local callers in");
        assert_eq!(principal.name, "anonymous");
        let err = error(Args {
            insecure: true,
            aws_endpoint_url: Some("http://127.0.0.1:4566".into()),
            listen: Some("0.0.0.0:7070".parse().unwrap()),
            ..args()
        });
        assert!(
            err.starts_with("listen: 0.0.0.0:7070 is not a loopback address"),
            "{err}"
        );
        let err = error(Args {
            insecure: true,
            aws_endpoint_url: Some("http://127.0.0.1:4566".into()),
            worker_listen: Some("10.0.0.1:7071".parse().unwrap()),
            ..args()
        });
        assert!(
            err.starts_with("worker_listen: 10.0.0.1:7071 is not a loopback address"),
            "{err}"
        );
        let err = error(Args {
            insecure: true,
            aws_endpoint_url: Some("http://127.0.0.1:4566".into()),
            ..tls(args())
        });
        assert!(err.starts_with("insecure: TLS settings are given too"), "{err}");
        // Plaintext toward real AWS: refused unless forced.
        let err = error(Args {
            insecure: true,
            aws_endpoint_url: Some("https://sts.us-east-1.amazonaws.com".into()),
            ..args()
        });
        assert!(err.starts_with("insecure: plaintext with the AWS endpoint"), "{err}");
        assert!(
            Config::resolve(Args {
                insecure: true,
                insecure_real_aws: true,
                aws_endpoint_url: Some("https://sts.us-east-1.amazonaws.com".into()),
                ..args()
            })
            .is_ok()
        );
    }

    #[test]
    fn retention_is_90_days_unless_set_and_0_keeps_everything() {
        let resolve = |days| {
            Config::resolve(Args {
                insecure: true,
                aws_endpoint_url: Some("http://127.0.0.1:4566".into()),
                retention_days: days,
                ..args()
            })
        };
        let days = |d: u64| Some(Duration::from_secs(d * 86_400));
        assert_eq!(resolve(None).unwrap().settings.retention, days(90));
        assert_eq!(resolve(Some(7)).unwrap().settings.retention, days(7));
        assert_eq!(resolve(Some(0)).unwrap().settings.retention, None);
        let err = resolve(Some(40_000)).unwrap_err().to_string();
        assert!(err.starts_with("retention_days: 40000; must be 0"), "{err}");
    }

    #[test]
    fn the_scaling_signal_is_published_only_with_a_namespace() {
        let resolve = |namespace: Option<&str>, interval| {
            Config::resolve(Args {
                insecure: true,
                aws_endpoint_url: Some("http://127.0.0.1:4566".into()),
                scaling_namespace: namespace.map(str::to_owned),
                scaling_interval: interval,
                ..args()
            })
        };
        assert_eq!(resolve(None, None).unwrap().settings.scaling, None);
        assert_eq!(
            resolve(Some("Muster"), None).unwrap().settings.scaling,
            Some(crate::scaling::ScalingSignal {
                namespace: "Muster".into(),
                interval: Duration::from_secs(60),
            })
        );
        let err = resolve(Some("AWS/ECS"), None).unwrap_err().to_string();
        assert!(
            err.starts_with("scaling_namespace: 'AWS/ECS' may not start with AWS/"),
            "{err}"
        );
        let err = resolve(Some("Muster"), Some(0)).unwrap_err().to_string();
        assert!(
            err.starts_with("scaling_interval: 0 seconds; must be 1 to 300"),
            "{err}"
        );
    }

    #[test]
    fn the_store_is_sqlite_unless_a_database_is_named_and_a_remote_one_needs_tls() {
        let resolve = |url: Option<&str>, ca: Option<PathBuf>, insecure: bool| {
            store_config(Some("data".into()), url.map(str::to_owned), ca.as_deref(), insecure)
        };
        assert!(
            matches!(resolve(None, None, false).unwrap(), StoreConfig::Sqlite(dir) if dir == std::path::Path::new("data"))
        );
        let local = resolve(Some("postgres://muster@127.0.0.1:5432/muster"), None, false).unwrap();
        assert!(
            matches!(&local, StoreConfig::Postgres(target) if target.shown() == "postgres://muster@127.0.0.1:5432/muster"),
            "{local:?}"
        );
        let err = resolve(Some("postgres://muster:secret@db.example.com/muster"), None, false)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("database_url: postgres://muster@db.example.com:5432/muster is not on loopback"),
            "{err}"
        );
        assert!(!err.contains("secret"), "the password is never shown: {err}");
        let remote = resolve(
            Some("postgres://muster@db.example.com/muster?sslmode=require"),
            None,
            false,
        );
        assert!(matches!(remote, Ok(StoreConfig::Postgres(_))), "{remote:?}");
        let err = resolve(Some("mysql://x"), None, false).unwrap_err().to_string();
        assert!(
            err.starts_with("database_url: not a PostgreSQL connection string"),
            "{err}"
        );
        let err = resolve(None, Some("ca.pem".into()), false).unwrap_err().to_string();
        assert!(err.starts_with("database_ca: given without database_url"), "{err}");
        let err = resolve(
            Some("postgres://muster@127.0.0.1/m"),
            Some("/nonexistent/ca.pem".into()),
            false,
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("database_ca: cannot read /nonexistent/ca.pem"), "{err}");
    }

    #[test]
    fn tls_needs_a_worker_ca_and_some_caller() {
        let err = error(Args {
            worker_ca: None,
            ..tls(args())
        });
        assert!(err.starts_with("worker_ca: required"), "{err}");
        let err = error(tls(args()));
        assert!(
            err.starts_with("auth: no API token or client certificate is configured"),
            "{err}"
        );
        let hash = crate::auth::hash_token("secret");
        let config = Config::resolve(Args {
            api_tokens: vec![format!("ci:submit:{hash}")],
            ..tls(args())
        })
        .unwrap();
        assert!(config.security.tls.is_some());
        let err = error(Args {
            api_clients: vec!["ops:submit".into()],
            ..tls(args())
        });
        assert!(
            err.starts_with("client_ca: required when client certificates are configured"),
            "{err}"
        );
        let err = error(Args {
            api_tokens: vec!["ci:boss:00".into()],
            ..tls(args())
        });
        assert!(
            err.contains("'boss' is not a role (viewer, operator, approver, admin)"),
            "{err}"
        );
        let err = error(Args {
            api_tokens: vec!["ci:submit:xyz".into()],
            ..tls(args())
        });
        assert!(
            err.starts_with("auth.tokens[0].sha256: must be the 64 hex digits"),
            "{err}"
        );
        let err = error(Args {
            tls_key: Some("/nonexistent/controller.key".into()),
            api_tokens: vec![format!("ci:submit:{hash}")],
            ..tls(args())
        });
        assert!(
            err.starts_with("tls_key: cannot read /nonexistent/controller.key"),
            "{err}"
        );
    }

    #[test]
    fn workers_have_a_trust_anchor_of_their_own() {
        let hash = crate::auth::hash_token("secret");
        let with = |client_ca: &str, domain: Option<&str>| {
            Config::resolve(Args {
                api_tokens: vec![format!("ci:submit:{hash}")],
                client_ca: Some(client_ca.into()),
                worker_trust_domain: domain.map(str::to_owned),
                ..tls(args())
            })
        };
        let err = with(PEM, None).unwrap_err().to_string();
        assert!(
            err.starts_with("worker_ca: holds a CA that client_ca holds too"),
            "{err}"
        );
        let other = "-----BEGIN CERTIFICATE-----\nBBBB\n-----END CERTIFICATE-----\n";
        let config = with(other, None).unwrap();
        assert_eq!(config.security.tls.unwrap().worker_trust_domain, "muster");
        let config = with(other, Some("prod.example.com")).unwrap();
        assert_eq!(config.security.tls.unwrap().worker_trust_domain, "prod.example.com");
        let err = with(other, Some("Prod/x")).unwrap_err().to_string();
        assert!(
            err.starts_with("worker_trust_domain: 'Prod/x' is not a SPIFFE trust domain"),
            "{err}"
        );
    }

    #[test]
    fn the_file_carries_auth_and_guardrails() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("controller.toml");
        let hash = crate::auth::hash_token("secret");
        std::fs::write(
            &path,
            format!(
                "queue_url = \"q\"\ninsecure = true\naws_endpoint_url = \"http://127.0.0.1:4566\"\n[[auth.tokens]]\nname = \"ci\"\npermission = \"read\"\nsha256 = \"{hash}\"\n\
                 [guardrails]\nallowed_accounts = [\"111111111111\"]\nconfirm_above_targets = 500\n"
            ),
        )
        .unwrap();
        let config = Config::resolve(Args {
            config: Some(path.clone()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(config.settings.guardrails.allowed_accounts, ["111111111111"]);
        assert_eq!(config.settings.guardrails.confirm_above_targets, Some(500));
        // Flags replace the file's lists.
        let config = Config::resolve(Args {
            config: Some(path.clone()),
            allow_accounts: vec!["222222222222".into()],
            ..Default::default()
        })
        .unwrap();
        assert_eq!(config.settings.guardrails.allowed_accounts, ["222222222222"]);
        let err = error(Args {
            config: Some(path),
            allow_accounts: vec!["12345".into()],
            ..Default::default()
        });
        assert!(err.contains("12345"), "{err}");
    }
}
