//! Fan-out for WatchCampaign: one broadcast channel per watched campaign.
//! Publishing never waits; a subscriber that falls behind misses events and
//! is sent a fresh snapshot instead (see `campaign_api::watch`), so a slow
//! client never stalls the controller.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use muster_proto::v1::WatchCampaignResponse;
use tokio::sync::broadcast;

/// Events buffered per campaign before a slow subscriber lags.
const CAPACITY: usize = 1024;

/// The hub.
#[derive(Default)]
pub struct Hub {
    channels: Mutex<HashMap<String, broadcast::Sender<Arc<WatchCampaignResponse>>>>,
}

impl Hub {
    /// Subscribes to a campaign's events.
    pub fn subscribe(&self, campaign_id: &str) -> broadcast::Receiver<Arc<WatchCampaignResponse>> {
        let mut channels = self.channels.lock().expect("hub lock");
        channels
            .entry(campaign_id.to_owned())
            .or_insert_with(|| broadcast::channel(CAPACITY).0)
            .subscribe()
    }

    /// Whether anyone watches a campaign (so callers can skip building events).
    pub fn watched(&self, campaign_id: &str) -> bool {
        let channels = self.channels.lock().expect("hub lock");
        channels.get(campaign_id).is_some_and(|c| c.receiver_count() > 0)
    }

    /// Sends an event to a campaign's watchers, if any.
    pub fn publish(&self, campaign_id: &str, event: WatchCampaignResponse) {
        let mut channels = self.channels.lock().expect("hub lock");
        if let Some(channel) = channels.get(campaign_id) {
            if channel.receiver_count() == 0 {
                channels.remove(campaign_id);
            } else {
                let _ = channel.send(Arc::new(event));
            }
        }
    }

    /// Campaigns with watchers.
    pub fn watched_campaigns(&self) -> Vec<String> {
        let mut channels = self.channels.lock().expect("hub lock");
        channels.retain(|_, c| c.receiver_count() > 0);
        channels.keys().cloned().collect()
    }
}
