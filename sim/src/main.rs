//! `muster-sim`: the local AWS sandbox front, and the fleet seeder.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use muster_common::telemetry::{self, LogFormat};
use muster_sim::config::{ExecMode, SimConfig, Tunables};
use muster_sim::seed::{self, SeedOptions, fleet_file::FleetFile};

/// The local AWS sandbox: one endpoint in front of moto that serves SSM Run
/// Command with a simulated agent, enforces AssumeRole like AWS, and models
/// AWS's quotas and faults. Point AWS_ENDPOINT_URL at it.
#[derive(Debug, Parser)]
#[command(name = "muster-sim", version, about, long_about = None)]
struct Cli {
    /// Log line format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "MUSTER_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the sandbox endpoint until SIGINT or SIGTERM.
    Serve(ServeArgs),
    /// Create a fleet (Organization, accounts, roles, instances, queue,
    /// buckets) through a running sim, and write what was made as JSON.
    Seed(SeedArgs),
    /// Write a development CA and certificates (controller, worker, admin)
    /// for running muster locally with TLS. Never for production.
    DevCerts(DevCertsArgs),
}

#[derive(Debug, clap::Args)]
struct DevCertsArgs {
    /// Directory to write ca.pem, controller.pem/.key, admin.pem/.key and
    /// worker-ca.pem/.key into (kept when ca.pem is already there).
    #[arg(long)]
    dir: PathBuf,
    /// Also issue this worker a certificate, workers/<NAME>.pem/.key, naming
    /// it spiffe://muster/worker/<NAME> (kept when it exists). Repeatable.
    #[arg(long = "worker", value_name = "NAME")]
    workers: Vec<String>,
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Address to listen on. Loopback only: the sandbox checks no signatures.
    #[arg(long, default_value = "127.0.0.1:4566", env = "MUSTER_SIM_LISTEN")]
    listen: SocketAddr,
    /// Where moto listens. Repeat (or separate with commas) to spread the
    /// accounts over several moto processes; the first holds what is global.
    #[arg(
        long,
        default_value = "http://127.0.0.1:5000",
        env = "MUSTER_SIM_MOTO_URL",
        value_delimiter = ','
    )]
    moto_url: Vec<String>,
    /// The account static access keys act in (moto's default account).
    #[arg(long, default_value = "123456789012", env = "MUSTER_SIM_DEFAULT_ACCOUNT")]
    default_account: String,
    /// Tunables file (TOML or JSON): quotas, latency, faults, session TTL,
    /// time scale, exec mode. See `GET /_sim/config` for every field.
    #[arg(long, env = "MUSTER_SIM_CONFIG")]
    config: Option<PathBuf>,
    /// Run shell commands for real (overrides the config file).
    #[arg(long, value_enum, env = "MUSTER_SIM_EXEC_MODE")]
    exec_mode: Option<ExecMode>,
    /// Scratch directory for commands run for real.
    #[arg(long, env = "MUSTER_SIM_SCRATCH_DIR")]
    scratch_dir: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct SeedArgs {
    /// The fleet file (TOML), e.g. deploy/local/fleet-small.toml.
    #[arg(long)]
    fleet: PathBuf,
    /// The sim's endpoint.
    #[arg(long, default_value = "http://127.0.0.1:4566", env = "AWS_ENDPOINT_URL")]
    endpoint: String,
    /// The target-account CloudFormation template the execution roles come from.
    #[arg(long, default_value = "deploy/cloudformation/target-account.yaml")]
    template: PathBuf,
    /// Where to write the fleet state (JSON); stdout when absent.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _telemetry = telemetry::init(
        cli.log_format,
        "info,aws_config=warn,aws_smithy_runtime=warn",
        "muster-sim",
    );
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Seed(args) => seed_fleet(args).await,
        Command::DevCerts(args) => {
            let files = muster_sim::certs::DevPkiFiles::in_dir(&args.dir);
            if !files.ca.exists() {
                let pki = muster_sim::certs::DevPki::generate().context("cannot generate certificates")?;
                pki.write(&args.dir)
                    .with_context(|| format!("cannot write certificates into {}", args.dir.display()))?;
                eprintln!(
                    "development certificates in {} (CA: {}, worker CA: {})",
                    args.dir.display(),
                    files.ca.display(),
                    files.worker_ca.display()
                );
            }
            for name in &args.workers {
                muster_sim::certs::ensure_worker_files(&args.dir, name)
                    .map_err(|e| anyhow::anyhow!("--worker {name}: {e}"))?;
            }
            Ok(())
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    if !args.listen.ip().is_loopback() {
        anyhow::bail!(
            "--listen {}: muster-sim checks no signatures, so it only listens on loopback (127.0.0.1 or ::1)",
            args.listen
        );
    }
    let mut tunables = match &args.config {
        Some(path) => load_tunables(path)?,
        None => Tunables::default(),
    };
    if let Some(mode) = args.exec_mode {
        tunables.exec_mode = mode;
    }
    tunables.validate().map_err(|e| anyhow::anyhow!("sim config: {e}"))?;
    let scratch_dir = match args.scratch_dir {
        Some(dir) => dir,
        None => std::env::temp_dir().join("muster-sim-scratch"),
    };
    std::fs::create_dir_all(&scratch_dir)
        .with_context(|| format!("cannot create scratch directory {}", scratch_dir.display()))?;
    let config = SimConfig {
        moto_urls: args.moto_url,
        default_account: args.default_account,
        scratch_dir,
        tunables,
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let shutdown = muster_common::shutdown::on_signals();
    let sim = muster_sim::start(config, listener)?;
    tracing::info!(endpoint = %sim.endpoint(), "muster-sim ready");
    shutdown.cancelled().await;
    sim.stop().await;
    tracing::info!("muster-sim stopped");
    Ok(())
}

fn load_tunables(path: &std::path::Path) -> anyhow::Result<Tunables> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let tunables = if path.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).with_context(|| format!("{} is not a valid sim config", path.display()))?
    } else {
        toml::from_str(&text).with_context(|| format!("{} is not a valid sim config", path.display()))?
    };
    Ok(tunables)
}

async fn seed_fleet(args: SeedArgs) -> anyhow::Result<()> {
    let fleet = FleetFile::load(&args.fleet)?;
    let started = std::time::Instant::now();
    let state = seed::seed(
        &fleet,
        &SeedOptions {
            endpoint: args.endpoint,
            target_template: args.template,
        },
    )
    .await?;
    let json = serde_json::to_string_pretty(&state)?;
    match &args.out {
        Some(path) => {
            std::fs::write(path, json).with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!(
                "seeded fleet '{}': {} accounts, {} instances in {:.1}s; state in {}",
                state.fleet,
                state.accounts.len(),
                state.instances().count(),
                started.elapsed().as_secs_f64(),
                path.display()
            );
        }
        None => println!("{json}"),
    }
    Ok(())
}
