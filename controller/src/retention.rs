//! The retention pass: every 10 minutes (and at start), campaigns that
//! ended longer ago than `--retention-days` leave the store with all their
//! rows, one campaign per transaction so the writer is never held long;
//! with a results bucket, only once their results are exported there. Each
//! pass also counts the store's rows for the metrics.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::Controller;
use crate::store::records::now_ms;
use crate::store::retention;

/// Time between passes.
const EVERY: Duration = Duration::from_secs(600);
/// Most campaigns pruned per pass; the rest wait for the next.
const PER_PASS: usize = 100;

/// Runs passes until `shutdown`.
pub async fn run(ctl: Arc<Controller>, shutdown: CancellationToken) {
    loop {
        pass(&ctl).await;
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(EVERY) => {}
        }
    }
}

/// One pass: prune what is due, then count rows. Returns how many
/// campaigns left the store.
pub async fn pass(ctl: &Controller) -> usize {
    let mut pruned = 0;
    // Only the leader prunes; every controller counts rows.
    let fence = ctl.leader.fence();
    if let (Some(cutoff), Some(fence)) = (ctl.settings.retention_cutoff_ms(now_ms()), fence) {
        let horizon_days = ctl.settings.retention.map_or(0, |h| h.as_secs() / 86_400);
        let require_export = ctl.settings.results_bucket.is_some();
        let due = ctl
            .store
            .read(move |conn| retention::prunable(conn, cutoff, require_export, PER_PASS))
            .await;
        let due = match due {
            Ok(due) => due,
            Err(error) => {
                tracing::warn!(%error, "retention: cannot list campaigns past the horizon");
                Vec::new()
            }
        };
        for id in due {
            let campaign = id.clone();
            match ctl
                .store
                .write_fenced(&fence, move |txn| retention::prune(txn, &campaign))
                .await
            {
                Ok(targets) => {
                    pruned += 1;
                    tracing::info!(campaign_id = %id, targets, horizon_days, "campaign pruned: ended before the retention horizon");
                }
                Err(error) => {
                    tracing::warn!(campaign_id = %id, %error, "retention: cannot prune the campaign; will retry")
                }
            }
        }
        ctl.metrics.pruned(pruned);
        // The audit trail and events of no campaign (a schedule's missed
        // run times) go by age.
        match ctl
            .store
            .write_fenced(&fence, move |txn| {
                Ok(crate::store::audit::prune_unattached(txn, cutoff)?
                    + retention::prune_unattached_events(txn, cutoff)?)
            })
            .await
        {
            Ok(0) => {}
            Ok(events) => tracing::info!(events, horizon_days, "audit and log events of no campaign pruned"),
            Err(error) => tracing::warn!(%error, "retention: cannot prune old events of no campaign; will retry"),
        }
    }
    match ctl.store.read(retention::row_counts).await {
        Ok(counts) => ctl.metrics.store_rows(&counts),
        Err(error) => tracing::warn!(%error, "retention: cannot count the store's rows"),
    }
    pruned
}
