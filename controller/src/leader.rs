//! Leader election through the store: every controller serves both APIs,
//! and one of them, the leader, also runs the work that must not run twice
//! (reconcile, dispatch, export, retention, draining dead letters). See
//! `store::leadership` for the term and the fence.
//!
//! The loop renews the term every third of `--leader-ttl`. A controller
//! stops acting as leader when its term, as it last renewed it, is within a
//! margin of ending, even before it hears otherwise; its writes are fenced
//! anyway, so a leader paused past its term (SIGSTOP, a long GC of the host)
//! changes nothing after another took over.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::Controller;
use crate::store::leadership::{self, Claim, Fence};

/// This controller's view of its leadership.
pub struct Leader {
    /// Who this controller is in the `leadership` row.
    pub id: String,
    term: Mutex<Option<(Fence, Instant)>>,
}

impl Leader {
    /// A controller that does not lead yet, named after its host and
    /// process (and a random part, for a restart with the same pid).
    pub fn new() -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_else(|_| "host".into());
        let random = uuid::Uuid::new_v4().simple().to_string();
        Self {
            id: format!("{}/{}/{}", host.trim(), std::process::id(), &random[..8]),
            term: Mutex::new(None),
        }
    }

    /// The term to fence leader writes with, while this controller leads.
    pub fn fence(&self) -> Option<Fence> {
        let term = self.term.lock().expect("leader lock");
        term.as_ref()
            .filter(|(_, until)| Instant::now() < *until)
            .map(|(fence, _)| fence.clone())
    }

    /// Whether this controller leads now.
    pub fn is_leader(&self) -> bool {
        self.fence().is_some()
    }

    fn set(&self, term: Option<(Fence, Instant)>) -> Option<Fence> {
        let mut held = self.term.lock().expect("leader lock");
        std::mem::replace(&mut *held, term).map(|(fence, _)| fence)
    }
}

impl Default for Leader {
    fn default() -> Self {
        Self::new()
    }
}

/// How long before its term ends a leader stops acting as one.
fn margin(ttl: Duration) -> Duration {
    ttl / 3
}

/// Claims or renews leadership until `shutdown`, then resigns so another
/// controller takes over at once. A controller that finds the schema
/// migrated past what it knows (a newer controller started: a rolling
/// deploy) stops the whole process, `shutdown` and all: it would serve
/// campaigns and leases it cannot read, and the deploy is replacing it
/// anyway. Its clients reconnect to the newer controllers.
pub async fn run(ctl: Arc<Controller>, shutdown: CancellationToken) {
    let ttl = ctl.settings.leader_ttl;
    loop {
        if let Some((applied, known)) = claim(&ctl, ttl).await {
            tracing::warn!(
                controller = %ctl.leader.id,
                applied,
                known,
                "a newer controller migrated the schema past what this one knows: this controller stops, so that \
                 nothing is served by a controller that cannot read all of it"
            );
            shutdown.cancel();
            break;
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(ttl / 3) => {}
        }
    }
    if let Some(fence) = ctl.leader.set(None) {
        match ctl.store.write(move |txn| leadership::resign(txn, &fence)).await {
            Ok(()) => tracing::info!("leadership handed back"),
            Err(error) => {
                tracing::warn!(%error, "cannot hand leadership back; another controller takes over when it expires")
            }
        }
    }
}

/// One claim: takes, keeps or loses the term. Says (applied, known) when
/// the schema is newer than this controller: it leads no more.
pub async fn claim(ctl: &Controller, ttl: Duration) -> Option<(i64, i64)> {
    let asked = Instant::now();
    let holder = ctl.leader.id.clone();
    let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
    let outcome = ctl
        .store
        .write(move |txn| leadership::claim_unless_superseded(txn, &holder, ttl_ms))
        .await;
    // The term counts from when we asked: an answer that came late buys
    // no more time than the database gave.
    let until = asked + ttl.saturating_sub(margin(ttl));
    match outcome {
        Ok(Claim::Leads(fence)) => {
            let before = ctl.leader.set(Some((fence.clone(), until)));
            ctl.metrics.set_leader(true, fence.epoch);
            if before.as_ref() != Some(&fence) {
                tracing::info!(controller = %ctl.leader.id, epoch = fence.epoch, "this controller leads");
                took_over(ctl, &fence).await;
            }
        }
        Ok(Claim::Follows) => {
            ctl.metrics.set_leader(false, 0);
            if let Some(old) = ctl.leader.set(None) {
                tracing::warn!(controller = %ctl.leader.id, epoch = old.epoch, "another controller leads now; this one follows");
            }
        }
        Ok(Claim::Superseded { applied, known }) => {
            ctl.metrics.set_leader(false, 0);
            if ctl.leader.set(None).is_some() {
                tracing::warn!(controller = %ctl.leader.id, "leaving the lead to a controller that knows the schema");
            }
            return Some((applied, known));
        }
        Err(error) => {
            // Unknown: keep acting until the term we know of nears its
            // end (`fence` stops by itself); the fence guards the rest.
            tracing::warn!(%error, "cannot renew leadership; retrying");
        }
    }
    None
}

/// A new term: leases found get a whole TTL from now (the workers that hold
/// them renew them through any controller; an outage of the old leader
/// costs no attempt), and the reconcile loop runs at once.
async fn took_over(ctl: &Controller, fence: &Fence) {
    let ttl_ms = i64::try_from(ctl.settings.lease_ttl.as_millis()).unwrap_or(i64::MAX);
    let now = crate::store::records::now_ms();
    match ctl
        .store
        .write_fenced(fence, move |txn| crate::store::leases::extend_leases(txn, now, ttl_ms))
        .await
    {
        Ok(0) => {}
        Ok(n) => tracing::info!(leases = n, "leases found at takeover extended by one TTL"),
        Err(error) => tracing::warn!(%error, "cannot extend the leases found at takeover"),
    }
    ctl.wake.notify_one();
}
