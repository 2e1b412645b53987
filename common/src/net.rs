//! How muster's servers accept connections.

use std::time::Duration;

use tokio::net::TcpListener;

/// Accepted connections with Nagle's algorithm off, so small answers (gRPC
/// replies, metrics) go out at once instead of waiting out the peer's
/// delayed ACK (40 ms a call), and with TCP keepalive.
pub fn incoming(listener: TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(Duration::from_secs(60)))
}
