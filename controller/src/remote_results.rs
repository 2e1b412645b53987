//! Target events for this controller's watchers, from results it recorded
//! itself (`worker_api`) and from those other controllers recorded (see
//! [`crate::store::results_feed`]): either way read after the commit, on a
//! reader. And the wake-ups the store's controllers tell each other (see
//! [`crate::store::wakes`]), for the AwaitCommands calls waiting here.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use muster_proto::v1::Target;

use crate::Controller;
use crate::store::{Sql, StoreResult, results_feed};

/// Publishes the results other controllers write, and (by listening) passes
/// their wake-ups on to the calls waiting here, until `shutdown`. Returns
/// at once on SQLite, which one controller holds alone.
pub async fn run(ctl: Arc<Controller>, shutdown: CancellationToken) {
    let Some(mut told) = ctl.store.listen_others() else {
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
        publish_written(&ctl, campaign, move |conn| results_feed::targets(conn, &written)).await;
    }
}

/// Tells `campaign`'s watchers of targets whose results were just written,
/// as `read` finds them now on a reader (a result once written never
/// changes, and the writer is the store's one serial path). A read that
/// fails costs watchers these events, never a result: they see them when
/// they list the targets again, as after any gap in the stream.
pub async fn publish_written(
    ctl: &Controller,
    campaign: String,
    read: impl FnOnce(&dyn Sql) -> StoreResult<Vec<Target>> + Send + 'static,
) {
    match ctl.store.read(read).await {
        Ok(targets) => ctl.watchers.publish_targets(&campaign, targets),
        Err(error) => tracing::warn!(campaign_id = %campaign, %error, "cannot read written targets for watchers"),
    }
}
