//! What watchers of each campaign are told after every pass: its totals,
//! the scopes that moved (read a share of the time on a large campaign),
//! and its changes of state.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use muster_proto::v1::{Progress, StateChange, StatusCounters, WatchCampaignResponse, watch_campaign_response};

use crate::Controller;
use crate::store::campaigns;
use crate::store::records::{now_ms, timestamp};

/// What watchers of one campaign were last told.
#[derive(Default)]
pub(super) struct Told {
    totals: StatusCounters,
    scopes: HashMap<(String, String), StatusCounters>,
    state: Option<(i32, String)>,
    /// The totals moved since the scopes were last read: the rows of the
    /// scopes that moved are owed to the watchers.
    scopes_owed: bool,
    /// When the scopes were last read, and how long that took.
    scopes_read: Option<(Instant, Duration)>,
}

/// The scopes of a large campaign are read for its watchers at most once
/// per this many times as long as one read takes (1/20 of the loop's time),
/// and at least every [`SCOPES_AT_LEAST`]. A campaign of a few scopes reads
/// them after every pass; one of 8,500 (16 ms a read on SQLite) about three
/// times a second, where it would read them after each of the passes that
/// results set off, dozens a second.
const SCOPES_SHARE: u32 = 20;
/// See [`SCOPES_SHARE`].
const SCOPES_AT_LEAST: Duration = Duration::from_secs(2);

impl Told {
    /// Whether the scopes are read now: they are owed, and it is the first
    /// read, the campaign has ended (its last rows are told at once), or the
    /// last read was long enough ago.
    fn scopes_due(&self, ended: bool, now: Instant) -> bool {
        self.scopes_owed
            && (ended
                || self.scopes_read.is_none_or(|(at, took)| {
                    now.saturating_duration_since(at) >= (took * SCOPES_SHARE).min(SCOPES_AT_LEAST)
                }))
    }
}

/// Sends watchers of campaigns whose counters moved their progress, with
/// only the scopes that moved (read as often as [`SCOPES_SHARE`] allows),
/// then any change of state. Every controller runs it for its own watchers,
/// from the store, so a watcher sees every change whichever controller (or
/// worker report) made it. A campaign seen for the first time is told its
/// state only if it has ended (the watcher's snapshot has the rest).
pub(super) async fn publish_progress(ctl: &Controller, told: &mut HashMap<String, Told>) {
    let watched = ctl.watchers.watched_campaigns();
    told.retain(|id, _| watched.contains(id));
    for id in watched {
        let key = id.clone();
        let read = ctl
            .store
            .read(move |conn| {
                let Some(row) = campaigns::get(conn, &key)? else {
                    return Ok(None);
                };
                Ok(Some((campaigns::totals(conn, &key)?, row)))
            })
            .await;
        let Ok(Some((totals, row))) = read else {
            continue;
        };
        let last = told.entry(id.clone()).or_default();
        let totals_moved = last.totals != totals;
        if totals_moved {
            last.totals = totals;
            last.scopes_owed = true;
        }
        let mut moved = Vec::new();
        let now = Instant::now();
        if last.scopes_due(row.state.is_terminal(), now) {
            let key = id.clone();
            // Owed still if the read fails: the next pass tries again.
            if let Ok(scopes) = ctl.store.read(move |conn| campaigns::scopes(conn, &key)).await {
                last.scopes_read = Some((now, now.elapsed()));
                last.scopes_owed = false;
                moved = scopes
                    .into_iter()
                    .filter(|scope| {
                        let key = (scope.account_id.clone(), scope.region.clone());
                        let counters = scope.counters.unwrap_or_default();
                        let changed = last.scopes.get(&key) != Some(&counters);
                        last.scopes.insert(key, counters);
                        changed
                    })
                    .collect();
            }
        }
        if totals_moved || !moved.is_empty() {
            ctl.watchers.publish(
                &id,
                WatchCampaignResponse {
                    event: Some(watch_campaign_response::Event::Progress(Progress {
                        counters: Some(last.totals),
                        scopes: moved,
                        errors: row.errors.max(0) as u64,
                        at: Some(timestamp(now_ms())),
                    })),
                },
            );
        }
        // A stage starting or ending changes the reason, not always the state.
        let state = (row.state as i32, row.state_reason.clone());
        let first_sight = last.state.is_none();
        let changed = last.state.as_ref() != Some(&state);
        last.state = Some(state.clone());
        if changed && (!first_sight || row.state.is_terminal()) {
            ctl.watchers.publish(
                &id,
                WatchCampaignResponse {
                    event: Some(watch_campaign_response::Event::State(StateChange {
                        state: state.0,
                        reason: state.1,
                        at: Some(timestamp(row.finished_ms.unwrap_or_else(now_ms))),
                    })),
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_campaigns_scopes_are_read_for_its_watchers_a_share_of_the_time() {
        let start = Instant::now();
        let mut told = Told::default();
        assert!(!told.scopes_due(false, start), "nothing owed, nothing read");
        told.scopes_owed = true;
        assert!(told.scopes_due(false, start), "the first read at once");
        // A read of 16 ms waits 20 times as long; one of 0.1 ms hardly waits.
        told.scopes_read = Some((start, Duration::from_millis(16)));
        assert!(!told.scopes_due(false, start + Duration::from_millis(300)));
        assert!(told.scopes_due(false, start + Duration::from_millis(320)));
        assert!(
            told.scopes_due(true, start + Duration::from_millis(1)),
            "an ended campaign's last rows at once"
        );
        told.scopes_read = Some((start, Duration::from_micros(100)));
        assert!(told.scopes_due(false, start + Duration::from_millis(2)));
        // However slow the read, at least every SCOPES_AT_LEAST.
        told.scopes_read = Some((start, Duration::from_secs(1)));
        assert!(told.scopes_due(false, start + SCOPES_AT_LEAST));
        told.scopes_owed = false;
        assert!(!told.scopes_due(true, start + SCOPES_AT_LEAST), "nothing owed");
    }
}
