//! Target events for this controller's watchers from results that other
//! controllers recorded (see [`crate::store::results_feed`]). Results this
//! controller takes in itself are published as it records them
//! (`worker_api`).

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::Controller;
use crate::store::results_feed;

/// Publishes what other controllers tell, until `shutdown`. Returns at
/// once on SQLite, which one controller holds alone.
pub async fn run(ctl: Arc<Controller>, shutdown: CancellationToken) {
    let Some(mut told) = ctl.store.listen_results() else {
        return;
    };
    loop {
        let written = tokio::select! {
            () = shutdown.cancelled() => return,
            next = told.recv() => match next {
                Some(written) => written,
                None => return,
            },
        };
        if !ctl.watchers.wants_targets(&written.campaign_id) {
            continue;
        }
        let campaign = written.campaign_id.clone();
        match ctl.store.read(move |conn| results_feed::targets(conn, &written)).await {
            Ok(targets) => ctl.watchers.publish_targets(&campaign, targets),
            Err(error) => {
                tracing::warn!(%error, campaign_id = %campaign, "cannot read the results another controller recorded");
            }
        }
    }
}
