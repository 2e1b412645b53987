//! `muster-worker`: see `muster-worker --help`.

use std::sync::Arc;

use clap::Parser;
use muster_common::aws::AwsSettings;
use muster_worker::config::{Args, Config};
use muster_worker::controller::ControllerClient;
use muster_worker::{Context, Settings};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse().layered()?;
    let telemetry = muster_common::telemetry::init(
        args.options.log_format.unwrap_or_default(),
        "info,aws_config=warn,aws_smithy_runtime=warn,aws_sdk_sts=warn",
        "muster-worker",
    );
    let config = Config::resolve(args)?;
    if config.controller.starts_with("http://") {
        tracing::warn!(
            controller = %config.controller,
            "INSECURE: talking to the controller in plaintext without a certificate (--insecure); for development \
             on this machine only"
        );
    }
    let sdk = muster_common::aws::load(&AwsSettings {
        endpoint_url: config.aws_endpoint_url.clone(),
        region: config.aws_region.clone(),
        max_attempts: Some(3),
    })
    .await;
    let controller = ControllerClient::connect_lazy(&config.controller, &config.tls)?;
    let ctx = Arc::new(Context::new(&config.worker_id, controller, sdk).with_assume_role_rate(config.assume_role_rate));
    let shutdown = muster_common::shutdown::on_signals();
    // The endpoint outlives the grace period, answering "not ready".
    let metrics_stop = tokio_util::sync::CancellationToken::new();
    let metrics = match config.metrics_listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| anyhow::anyhow!("metrics_listen: cannot listen on {addr}: {e}"))?;
            let (bound, server) = muster_common::telemetry::serve_metrics(
                listener,
                ctx.metrics_endpoint().with_token(config.metrics_token.as_deref()),
                metrics_stop.clone(),
            )
            .await?;
            tracing::info!(metrics = %bound, "serving /metrics, /healthz, /readyz and gRPC health");
            Some(server)
        }
        None => None,
    };
    tracing::info!(worker_id = %config.worker_id, controller = %config.controller, tls = config.controller.starts_with("https://"), queue = %config.queue_url, "muster-worker starting");
    muster_worker::run(
        ctx,
        Settings {
            worker_id: config.worker_id,
            queue_url: config.queue_url,
            pollers: config.pollers,
            max_tasks: config.max_tasks,
            shutdown_grace: config.shutdown_grace,
        },
        shutdown,
    )
    .await;
    metrics_stop.cancel();
    if let Some(server) = metrics {
        let _ = server.await;
    }
    telemetry.shutdown(std::time::Duration::from_secs(5)).await;
    Ok(())
}
