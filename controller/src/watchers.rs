//! Fan-out for WatchCampaign: one broadcast channel per watched campaign.
//! Publishing never waits; a subscriber that falls behind misses events and
//! is sent a fresh snapshot instead (see `campaign_api::watch`), so a slow
//! client never stalls the controller.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use muster_proto::v1::WatchCampaignResponse;
use tokio::sync::broadcast;

/// Events buffered per campaign before a slow subscriber lags.
const CAPACITY: usize = 1024;

/// The campaigns being watched, each with its channel.
#[derive(Default)]
pub struct Watchers {
    channels: Mutex<HashMap<String, Channel>>,
}

struct Channel {
    sender: broadcast::Sender<Arc<WatchCampaignResponse>>,
    /// Subscribers that asked for each target's result.
    target_watchers: Arc<AtomicUsize>,
}

/// One watcher's events. Dropping it unsubscribes.
pub struct Subscription {
    events: broadcast::Receiver<Arc<WatchCampaignResponse>>,
    _targets: Option<TargetInterest>,
}

impl Subscription {
    /// The campaign's next event since subscribing.
    pub async fn recv(&mut self) -> Result<Arc<WatchCampaignResponse>, broadcast::error::RecvError> {
        self.events.recv().await
    }
}

/// Counts a subscriber among those that want target events while it lives.
struct TargetInterest(Arc<AtomicUsize>);

impl Drop for TargetInterest {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Watchers {
    /// Subscribes to a campaign's events; `include_targets` when the
    /// subscriber wants each target's result as it lands.
    pub fn subscribe(&self, campaign_id: &str, include_targets: bool) -> Subscription {
        let mut channels = self.channels.lock().expect("hub lock");
        let channel = channels.entry(campaign_id.to_owned()).or_insert_with(|| Channel {
            sender: broadcast::channel(CAPACITY).0,
            target_watchers: Arc::default(),
        });
        let targets = include_targets.then(|| {
            channel.target_watchers.fetch_add(1, Ordering::Relaxed);
            TargetInterest(channel.target_watchers.clone())
        });
        Subscription {
            events: channel.sender.subscribe(),
            _targets: targets,
        }
    }

    /// Whether anyone watching a campaign wants target events (so that
    /// writers build them only then: each is a read of the target's row).
    pub fn wants_targets(&self, campaign_id: &str) -> bool {
        let channels = self.channels.lock().expect("hub lock");
        channels
            .get(campaign_id)
            .is_some_and(|c| c.sender.receiver_count() > 0 && c.target_watchers.load(Ordering::Relaxed) > 0)
    }

    /// Sends an event to a campaign's watchers, if any.
    pub fn publish(&self, campaign_id: &str, event: WatchCampaignResponse) {
        let mut channels = self.channels.lock().expect("hub lock");
        if let Some(channel) = channels.get(campaign_id) {
            if channel.sender.receiver_count() == 0 {
                channels.remove(campaign_id);
            } else {
                let _ = channel.sender.send(Arc::new(event));
            }
        }
    }

    /// Sends each target to a campaign's watchers as a target event.
    pub fn publish_targets(&self, campaign_id: &str, targets: Vec<muster_proto::v1::Target>) {
        for target in targets {
            self.publish(
                campaign_id,
                WatchCampaignResponse {
                    event: Some(muster_proto::v1::watch_campaign_response::Event::Target(target)),
                },
            );
        }
    }

    /// Campaigns with watchers.
    pub fn watched_campaigns(&self) -> Vec<String> {
        let mut channels = self.channels.lock().expect("hub lock");
        channels.retain(|_, c| c.sender.receiver_count() > 0);
        channels.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_events_are_wanted_only_while_a_subscriber_that_asked_lives() {
        let hub = Watchers::default();
        let progress_only = hub.subscribe("c1", false);
        assert!(!hub.wants_targets("c1"), "a watcher of progress only");
        let with_targets = hub.subscribe("c1", true);
        let second = hub.subscribe("c1", true);
        assert!(hub.wants_targets("c1"));
        assert!(!hub.wants_targets("c2"), "another campaign");
        drop(with_targets);
        assert!(hub.wants_targets("c1"), "one still asks");
        drop(second);
        assert!(!hub.wants_targets("c1"), "both that asked are gone");
        drop(progress_only);
        assert!(hub.watched_campaigns().is_empty());
    }
}
