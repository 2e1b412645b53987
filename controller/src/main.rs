//! `muster-controller`: see `muster-controller --help`.

use clap::Parser;
use muster_common::aws::AwsSettings;
use muster_controller::auth::TokenEntry;
use muster_controller::config::{Args, Config, Tool};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse().layered()?;
    if let Some(tool) = &args.tool {
        return run_tool(tool, &args);
    }
    let telemetry = muster_common::telemetry::init(
        args.options.log_format.unwrap_or_default(),
        "info,aws_config=warn,aws_smithy_runtime=warn",
        "muster-controller",
    );
    let config = Config::resolve(args)?;
    if config.security.tls.is_none() {
        tracing::warn!(
            "INSECURE: serving plaintext without TLS or client certificates (--insecure); for development on this \
             machine only"
        );
    }
    let store = config.store.open_waiting(muster_controller::config::STORE_START_WAIT)?;
    let location = store.location();
    tracing::info!(engine = %store.engine(), store = %location, "store open");
    let sdk = muster_common::aws::load(&AwsSettings {
        endpoint_url: config.aws_endpoint_url.clone(),
        region: config.aws_region.clone(),
        max_attempts: Some(3),
    })
    .await;
    let controller = muster_controller::Controller::new(store, config.settings.clone(), &sdk);
    let campaign = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("listen: cannot listen on {}: {e}", config.listen))?;
    let worker = tokio::net::TcpListener::bind(config.worker_listen)
        .await
        .map_err(|e| anyhow::anyhow!("worker_listen: cannot listen on {}: {e}", config.worker_listen))?;
    let metrics = match config.metrics_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| anyhow::anyhow!("metrics_listen: cannot listen on {addr}: {e}"))?,
        ),
        None => None,
    };
    let shutdown = muster_common::shutdown::on_signals();
    let tls = config.security.tls.is_some();
    let listeners = muster_controller::Listeners {
        campaign,
        worker,
        metrics,
    };
    let running = muster_controller::start(controller, listeners, config.security, shutdown.clone()).await?;
    tracing::info!(
        campaign_api = %running.campaign_addr,
        worker_api = %running.worker_addr,
        metrics = running.metrics_addr.map(|a| a.to_string()).unwrap_or_else(|| "off".into()),
        tls,
        store = %location,
        queue = %config.settings.queue_url,
        "muster-controller ready"
    );
    shutdown.cancelled().await;
    running.stop().await;
    tracing::info!("muster-controller stopped");
    telemetry.shutdown(std::time::Duration::from_secs(5)).await;
    Ok(())
}

/// Runs a tool subcommand.
fn run_tool(tool: &Tool, args: &Args) -> anyhow::Result<()> {
    match tool {
        Tool::NewToken { name, permission } => {
            let entry = TokenEntry::parse("new-token", &format!("{name}:{permission}:")).map_err(anyhow::Error::msg)?;
            let token = muster_controller::auth::new_token();
            let hash = muster_controller::auth::hash_token(&token);
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
            println!("{}", muster_controller::auth::hash_token(&token));
        }
        Tool::CopyStore => copy_store(args)?,
    }
    Ok(())
}

/// `copy-store`: the SQLite store into PostgreSQL, table by table.
fn copy_store(args: &Args) -> anyhow::Result<()> {
    let (data_dir, target) = args.copy_store_ends()?;
    println!(
        "copying the SQLite store in {} into {} (the source is migrated to this build's schema first)",
        data_dir.display(),
        target.shown()
    );
    let started = std::time::Instant::now();
    // The PostgreSQL driver blocks on a runtime of its own: off the async
    // thread.
    let copied = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                muster_controller::store::copy::sqlite_into_postgres(&data_dir, &target, |p| {
                    let so_far = if p.done { "" } else { " so far" };
                    println!("  {:<24} {:>10} rows{so_far}", p.table, p.rows);
                })
            })
            .join()
            .map_err(|_| anyhow::anyhow!("copy-store: the copy panicked; nothing was committed"))
    })??;
    println!(
        "copied {} rows of {} tables at schema V{} in {:.1} s; every table's count matched before the commit.\n\
         Start the controllers with --database-url; leave {} as it is until they serve.",
        copied.rows(),
        copied.tables.len(),
        copied.schema,
        started.elapsed().as_secs_f64(),
        data_dir.display()
    );
    Ok(())
}
