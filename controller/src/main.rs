//! `muster-controller`: see `muster-controller --help`.

use clap::Parser;
use muster_common::aws::AwsSettings;
use muster_controller::config::{Args, Config};
use muster_controller::store::Store;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(tool) = &args.tool {
        return muster_controller::config::run_tool(tool);
    }
    muster_common::telemetry::init(
        args.log_format.unwrap_or_default(),
        "info,aws_config=warn,aws_smithy_runtime=warn",
    );
    let config = Config::resolve(args)?;
    let store = Store::open(&config.data_dir)?;
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
    let shutdown = muster_common::shutdown::on_signals();
    let tls = config.security.tls.is_some();
    let running = muster_controller::start(controller, campaign, worker, config.security, shutdown.clone()).await?;
    tracing::info!(
        campaign_api = %running.campaign_addr,
        worker_api = %running.worker_addr,
        tls,
        data_dir = %config.data_dir.display(),
        queue = %config.settings.queue_url,
        "muster-controller ready"
    );
    shutdown.cancelled().await;
    running.stop().await;
    tracing::info!("muster-controller stopped");
    Ok(())
}
