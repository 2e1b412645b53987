//! muster-sim: the local AWS sandbox front.
//!
//! One HTTP endpoint that SDK clients use as `AWS_ENDPOINT_URL`. It routes each
//! request by its SigV4 scope: SSM Run Command is served here, with a simulated
//! agent on every EC2 instance; AssumeRole is enforced as AWS enforces it; the
//! rest goes to moto unchanged. It models AWS's limits (per-key token buckets,
//! latency, faults) and keeps an audit log of every SendCommand.

pub mod admin;
pub mod audit;
pub mod cbor;
pub mod certs;
pub mod cfn;
pub mod config;
pub mod ec2;
pub mod events;
pub mod fleet;
pub mod identity;
pub mod limits;
pub mod moto;
pub mod policy;
pub mod protocol;
pub mod seed;
pub mod server;
pub mod sigv4;
pub mod ssm;
pub mod state;
pub mod sts;
#[cfg(feature = "testkit")]
pub mod testkit;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::{ExecMode, FaultKind, FaultRule, FaultWhen, LatencyRange, Quota, SimConfig, Tunables};
pub use state::SimState;

/// A sim serving on a local port.
pub struct RunningSim {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its state (audit log, counters, tunables).
    pub state: Arc<SimState>,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl RunningSim {
    /// The endpoint URL for SDK clients.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops serving and waits for open requests.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}

/// Starts a sim on `listener`.
pub fn start(config: SimConfig, listener: TcpListener) -> std::io::Result<RunningSim> {
    let addr = listener.local_addr()?;
    let state = SimState::new(config);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(server::serve(listener, state.clone(), shutdown.clone()));
    Ok(RunningSim {
        addr,
        state,
        shutdown,
        task,
    })
}
