//! The controller's configuration: flags, `MUSTER_*` environment, a TOML
//! file, defaults, in that order of precedence, each setting declared once
//! in [`Options`]. AWS settings come from the SDK's own environment
//! (`AWS_REGION`, `AWS_PROFILE`, `AWS_ENDPOINT_URL`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Parser, Subcommand};
use muster_common::config::{ConfigError, in_range};
use muster_common::telemetry::LogFormat;
use serde::{Deserialize, Serialize};

use crate::auth::{ClientEntry, TokenEntry};
use crate::guardrails::Guardrails;

mod security;

use crate::Security;
use security::{SecurityInputs, security};

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
    /// [auth], [guardrails], [access] and [notifications] tables; flags and
    /// environment variables win over it.
    #[arg(long, env = "MUSTER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Every setting the file may give too.
    #[command(flatten)]
    pub options: Options,
    /// Flags over the file's tables.
    #[command(flatten)]
    pub over_tables: TableFlags,
    /// Allow --insecure although AWS calls go to real AWS, not a local
    /// endpoint (refused otherwise). A flag only: no file can say it.
    #[arg(long, help_heading = "Security")]
    pub insecure_real_aws: bool,
}

/// The controller's settings, each from the highest layer that gives it: a
/// flag, its environment variable, then the config file's key of the same
/// name.
#[derive(Debug, Default, clap::Args, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Options {
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
    /// Seconds a worker's lease lasts without renewal, 5 to 3600 [default: 30]
    #[arg(long, env = "MUSTER_LEASE_TTL")]
    pub lease_ttl: Option<u64>,
    /// Attempts per task before it fails, 1 to 20 [default: 3]
    #[arg(long, env = "MUSTER_MAX_ATTEMPTS")]
    pub max_attempts: Option<u32>,
    /// Batches out at once per (account, region), 1 to 100; the campaign's
    /// API rate is shared among them [default: 4]
    #[arg(long, env = "MUSTER_MAX_TASKS_PER_SCOPE")]
    pub max_tasks_per_scope: Option<u32>,
    /// Tasks on the queue not yet leased, 1 to 100000 [default: 500]
    #[arg(long, env = "MUSTER_MAX_QUEUED")]
    pub max_queued: Option<usize>,
    /// Seconds a task may wait on the queue without being leased before its
    /// message is sent again (it may be lost, or dead-lettered), 10 to
    /// 86400 [default: 300]
    #[arg(long, env = "MUSTER_REQUEUE_AFTER")]
    pub requeue_after: Option<u64>,
    /// Seconds a leader's term lasts without renewal: with PostgreSQL and
    /// several controllers, how long the others wait for a leader that
    /// stopped before one takes over, 3 to 300 [default: 15]
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
    /// rate, 0.1 to 1000 [default: 10]
    #[arg(long, env = "MUSTER_DEFAULT_API_RATE")]
    pub default_api_rate: Option<f64>,
    /// Milliseconds between reconcile passes when nothing happens, 10 to
    /// 60000 [default: 500]
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
    /// prefer MUSTER_METRICS_TOKEN or the file: flags show in `ps`.
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

    /// The file's [auth] table: who may call the campaign API (added to
    /// `--api-token`, `--api-client`).
    #[arg(skip)]
    #[serde(skip_serializing)]
    pub auth: AuthFile,
    /// The file's [guardrails] table: limits on every campaign (flags, when
    /// given, replace a list).
    #[arg(skip)]
    #[serde(skip_serializing)]
    pub guardrails: Guardrails,
    /// The file's [access] table: how workers get into target accounts
    /// (the ExternalIds).
    #[arg(skip)]
    #[serde(skip_serializing)]
    pub access: crate::access::AccessFile,
    /// The file's [notifications] table: where campaign state changes are
    /// posted.
    #[arg(skip)]
    #[serde(skip_serializing)]
    pub notifications: crate::notify::Notifications,
}

/// Flags (and environment variables) that add to or replace what the
/// file's tables say.
#[derive(Debug, Default, clap::Args)]
pub struct TableFlags {
    /// EventBridge bus of the controller's account that gets every campaign
    /// state change ("default", a name or an ARN); none for no events.
    #[arg(long, env = "MUSTER_EVENT_BUS")]
    pub event_bus: Option<String>,
    /// SNS topic ARN that gets every campaign state change; none for no
    /// messages.
    #[arg(long, env = "MUSTER_SNS_TOPIC")]
    pub sns_topic: Option<String>,
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

impl Args {
    /// For `copy-store`: the SQLite store to copy (--data-dir, or its
    /// default) and the PostgreSQL database to copy it into
    /// (--database-url, which it requires).
    pub fn copy_store_ends(&self) -> Result<(PathBuf, crate::store::PostgresTarget), ConfigError> {
        let o = &self.options;
        match store_config(None, o.database_url.clone(), o.database_ca.as_deref(), o.insecure)? {
            StoreConfig::Postgres(target) => Ok((o.data_dir.clone().unwrap_or_else(default_data_dir), *target)),
            StoreConfig::Sqlite(_) => Err(ConfigError::invalid(
                "database_url",
                "required by copy-store: the PostgreSQL database to copy the SQLite store of --data-dir into",
            )),
        }
    }

    /// The options laid over the config file (file < env < flags); the
    /// file is read once, so calling this again changes nothing.
    pub fn layered(mut self) -> Result<Self, ConfigError> {
        if let Some(path) = self.config.take() {
            self.options = muster_common::config::layered(&self.options, &path)?;
        }
        Ok(self)
    }
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
    /// Copy the SQLite store in --data-dir into the PostgreSQL database of
    /// --database-url, to go from one controller to several without losing
    /// campaigns, schedules, audit or events. Stop the controller first.
    /// The database must hold nothing yet; it gets the whole copy or, on
    /// any error, nothing.
    CopyStore,
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

    /// Opens the store, waiting up to `within` for a PostgreSQL server that
    /// cannot be reached yet (a failover in progress, a database starting
    /// with the stack) instead of exiting at once into the orchestrator's
    /// restart backoff. Any other error, and SQLite's, is returned at once.
    pub fn open_waiting(&self, within: Duration) -> crate::store::StoreResult<crate::store::Store> {
        let deadline = std::time::Instant::now() + within;
        let mut pause = Duration::from_millis(500);
        loop {
            match self.open() {
                Err(error) if error.is_unreachable() && std::time::Instant::now() + pause < deadline => {
                    tracing::warn!(%error, retry_in_ms = pause.as_millis() as u64, "store: cannot reach the database yet; trying again");
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
                outcome => return outcome,
            }
        }
    }
}

/// The SQLite store's directory when none is given.
fn default_data_dir() -> PathBuf {
    PathBuf::from("muster-data")
}

/// How long a controller waits at start for a database it cannot reach.
pub const STORE_START_WAIT: Duration = Duration::from_secs(60);

/// The store's settings: PostgreSQL when a database URL is given, SQLite
/// otherwise. A database that is not on loopback needs TLS
/// (`sslmode=require`) unless `insecure`.
fn store_config(
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    database_ca: Option<&Path>,
    insecure: bool,
) -> Result<StoreConfig, ConfigError> {
    let Some(url) = database_url.filter(|u| !u.is_empty()) else {
        if database_ca.is_some() {
            return Err(ConfigError::invalid(
                "database_ca",
                "given without database_url; the SQLite store has no server to verify",
            ));
        }
        return Ok(StoreConfig::Sqlite(data_dir.unwrap_or_else(default_data_dir)));
    };
    let ca =
        match database_ca {
            Some(path) => Some(std::fs::read(path).map_err(|e| {
                ConfigError::invalid("database_ca", format_args!("cannot read {}: {e}", path.display()))
            })?),
            None => None,
        };
    let password = std::env::var("MUSTER_DATABASE_PASSWORD").ok().filter(|p| !p.is_empty());
    let target =
        crate::store::PostgresTarget::parse(&url, password.as_deref(), ca.as_deref()).map_err(ConfigError::named)?;
    if !target.tls_required() && !target.on_loopback() && !insecure {
        return Err(ConfigError::invalid(
            "database_url",
            format_args!(
                "{} is not on loopback and does not require TLS; add sslmode=require (or --insecure for a network \
                 you trust)",
                target.shown()
            ),
        ));
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
    /// Lays flags and environment over the file, applies the defaults and
    /// checks every rule; an error names the setting. (Long on purpose: one
    /// line or two per setting, each default next to its rule; the settings
    /// with more to check have functions of their own.)
    pub fn resolve(args: Args) -> Result<Self, ConfigError> {
        let Args {
            options: o,
            over_tables: flags,
            insecure_real_aws,
            ..
        } = args.layered()?;
        let queue_url = o.queue_url.ok_or_else(|| {
            ConfigError::missing(
                "queue_url",
                "the SQS task queue (--queue-url, MUSTER_QUEUE_URL or queue_url in the file)",
            )
        })?;
        let default_role_name = o.default_role_name.unwrap_or_else(|| "muster-execution".into());
        muster_common::domain::check_role_name(&default_role_name)
            .map_err(|e| ConfigError::invalid("default_role_name", e))?;
        let listen = o.listen.unwrap_or(([127, 0, 0, 1], 7070).into());
        let worker_listen = o.worker_listen.unwrap_or(([127, 0, 0, 1], 7071).into());
        let guardrails = guardrails(o.guardrails, &flags)?;
        let mut notifications = o.notifications;
        notifications.event_bus = flags
            .event_bus
            .clone()
            .or(notifications.event_bus)
            .filter(|b| !b.is_empty());
        notifications.sns_topic = flags
            .sns_topic
            .clone()
            .or(notifications.sns_topic)
            .filter(|t| !t.is_empty());
        notifications.check()?;
        let (tokens, clients) = callers(o.auth, &flags)?;
        let aws_endpoint_url = o.aws_endpoint_url;
        muster_common::config::check_insecure(
            o.insecure,
            muster_common::config::aws_endpoint(aws_endpoint_url.as_deref()).as_deref(),
            insecure_real_aws,
        )?;
        let mut security = security(
            SecurityInputs {
                insecure: o.insecure,
                tls_cert: o.tls_cert,
                tls_key: o.tls_key,
                worker_ca: o.worker_ca,
                worker_trust_domain: o.worker_trust_domain,
                client_ca: o.client_ca,
                tokens,
                clients,
                policy: o.policy,
                signin_server_id: o.signin_server_id,
                aws_endpoint: std::env::var("AWS_ENDPOINT_URL_STS")
                    .ok()
                    .filter(|u| !u.is_empty())
                    .or_else(|| muster_common::config::aws_endpoint(aws_endpoint_url.as_deref())),
            },
            listen,
            worker_listen,
        )?;
        security.metrics_token = muster_common::config::metrics_token(o.metrics_token)?;
        let retention_days = in_range("retention_days", o.retention_days, 90, 0..=36_500, "days")?;
        let scaling_interval = in_range("scaling_interval", o.scaling_interval, 60, 1..=300, "seconds")?;
        let scaling = scaling(o.scaling_namespace, scaling_interval)?;
        let mut access = o.access;
        if let Some(external_id) = flags.external_id {
            access.external_id = Some(external_id);
        }
        let external_ids = crate::access::ExternalIds::new(&access)?;
        let seconds =
            |field, value, default, range| in_range(field, value, default, range, "seconds").map(Duration::from_secs);
        Ok(Self {
            listen,
            worker_listen,
            store: store_config(o.data_dir, o.database_url, o.database_ca.as_deref(), o.insecure)?,
            settings: crate::Settings {
                queue_url,
                results_bucket: o.results_bucket.filter(|b| !b.is_empty()),
                lease_ttl: seconds("lease_ttl", o.lease_ttl, 30, 5..=3600)?,
                max_attempts: in_range("max_attempts", o.max_attempts, 3, 1..=20, "")?,
                max_tasks_per_scope: in_range("max_tasks_per_scope", o.max_tasks_per_scope, 4, 1..=100, "")?,
                max_queued: in_range("max_queued", o.max_queued, 500, 1..=100_000, "")?,
                requeue_after: seconds("requeue_after", o.requeue_after, 300, 10..=86_400)?,
                leader_ttl: seconds("leader_ttl", o.leader_ttl, 15, 3..=300)?,
                retention: (retention_days > 0).then(|| Duration::from_secs(retention_days * 86_400)),
                dead_letter_queue_url: o.dead_letter_queue_url.filter(|u| !u.is_empty()),
                command_events_queue_url: o.command_events_queue_url.filter(|u| !u.is_empty()),
                reconcile_interval: Duration::from_millis(in_range(
                    "reconcile_ms",
                    o.reconcile_ms,
                    500,
                    10..=60_000,
                    "milliseconds",
                )?),
                defaults: crate::validate::Defaults {
                    role_name: default_role_name,
                    api_calls_per_second: in_range("default_api_rate", o.default_api_rate, 10.0, 0.1..=1000.0, "")?,
                },
                guardrails,
                external_ids,
                notifications,
                scaling,
            },
            aws_endpoint_url,
            aws_region: o.aws_region,
            metrics_listen: muster_common::config::metrics_listen(
                "metrics_listen",
                o.metrics_listen,
                "127.0.0.1:9101",
            )?,
            security,
        })
    }
}

/// The file's tokens and client certificates, with those the flags add.
fn callers(auth: AuthFile, flags: &TableFlags) -> Result<(Vec<TokenEntry>, Vec<ClientEntry>), ConfigError> {
    let mut tokens = auth.tokens;
    for text in &flags.api_tokens {
        tokens.push(TokenEntry::parse("api_token", text)?);
    }
    let mut clients = auth.clients;
    for text in &flags.api_clients {
        clients.push(ClientEntry::parse("api_client", text)?);
    }
    Ok((tokens, clients))
}

/// The scaling signal, published only with a namespace.
fn scaling(
    namespace: Option<String>,
    interval_seconds: u64,
) -> Result<Option<crate::scaling::ScalingSignal>, ConfigError> {
    let Some(namespace) = namespace.filter(|n| !n.is_empty()) else {
        return Ok(None);
    };
    crate::scaling::check_namespace(&namespace).map_err(|e| ConfigError::invalid("scaling_namespace", e))?;
    Ok(Some(crate::scaling::ScalingSignal {
        namespace,
        interval: Duration::from_secs(interval_seconds),
    }))
}

/// The file's guardrails with the flags' lists (each replacing the file's
/// when given) and threshold.
fn guardrails(mut guardrails: Guardrails, flags: &TableFlags) -> Result<Guardrails, ConfigError> {
    for (flag, list) in [
        (&flags.allow_accounts, &mut guardrails.allowed_accounts),
        (&flags.allow_ous, &mut guardrails.allowed_ous),
        (&flags.allow_roles, &mut guardrails.allowed_roles),
        (&flags.allow_documents, &mut guardrails.allowed_documents),
    ] {
        if !flag.is_empty() {
            *list = flag.iter().map(|s| s.trim().to_owned()).collect();
        }
    }
    guardrails.confirm_above_targets = flags.confirm_above_targets.or(guardrails.confirm_above_targets);
    guardrails.check()?;
    Ok(guardrails)
}

#[cfg(test)]
mod tests;
