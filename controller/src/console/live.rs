//! The live campaign page's stream: WatchCampaign, as server-sent events
//! the page paints without reloading. Every event carries what the page
//! shows, already decided here ([`super::views`]); the page's script only
//! puts it in place.
//!
//! Events: `snapshot` (everything, first and after the watcher fell
//! behind), `progress` (totals and the cells that changed), `state`,
//! `failure` (a target that ended in a problem status; successes show in
//! the map only), `end` (the campaign ended or the watch was refused: the
//! page stops listening instead of reconnecting).

use axum::response::sse::Event;
use muster_proto::v1::watch_campaign_response::Event as Watched;
use muster_proto::v1::{CampaignState, StatusCounters, TargetStatus, WatchCampaignResponse};
use serde::Serialize;
use serde_json::json;

use super::views::{Buckets, Cell, Summary, TargetRow, is_terminal, state_word};

/// Totals in a progress event (the limits come with snapshots).
#[derive(Debug, Serialize)]
struct Totals {
    buckets: Buckets,
    done: u64,
    percent: u64,
    errors: u64,
}

impl Totals {
    fn new(counters: &StatusCounters, errors: u64) -> Self {
        let s = Summary::new(counters, errors, None, 0);
        Self {
            buckets: s.buckets,
            done: s.done,
            percent: s.percent,
            errors,
        }
    }
}

/// The event for one WatchCampaign message; none for what the page does
/// not show (a target that succeeded or was skipped). `plan`: the campaign
/// is a plan, whose cells say what would run.
pub fn event_of(campaign_id: &str, plan: bool, message: WatchCampaignResponse) -> Option<Event> {
    let (name, data) = match message.event? {
        Watched::Snapshot(c) => (
            "snapshot",
            json!({
                "state": state_word(c.state),
                "reason": c.state_reason,
                "terminal": is_terminal(c.state),
                "summary": Summary::of(&c),
                "cells": c.scopes.iter().map(|s| Cell::of(&c.id, s, c.dry_run)).collect::<Vec<_>>(),
            }),
        ),
        Watched::State(s) => (
            "state",
            json!({
                "state": state_word(s.state),
                "name": CampaignState::try_from(s.state).unwrap_or_default().short_name(),
                "reason": s.reason,
                "terminal": is_terminal(s.state),
            }),
        ),
        Watched::Progress(p) => (
            "progress",
            json!({
                "totals": Totals::new(&p.counters.unwrap_or_default(), p.errors),
                "cells": p.scopes.iter().map(|s| Cell::of(campaign_id, s, plan)).collect::<Vec<_>>(),
            }),
        ),
        Watched::Target(t) => {
            if !TargetStatus::try_from(t.status).is_ok_and(TargetStatus::is_problem) {
                return None;
            }
            ("failure", json!(TargetRow::of(&t)))
        }
    };
    Some(Event::default().event(name).data(data.to_string()))
}

/// The last event of a stream: why it ended.
pub fn end(reason: &str) -> Event {
    Event::default()
        .event("end")
        .data(json!({ "reason": reason }).to_string())
}

#[cfg(test)]
mod tests {
    use muster_proto::v1::{Progress, ScopeSummary, StateChange, Target};

    use super::*;

    fn text(event: Event) -> String {
        // An Event is only ever written out; its wire form is what the page
        // reads.
        use axum::response::IntoResponse;
        let sse = axum::response::sse::Sse::new(futures::stream::iter([Ok::<_, std::convert::Infallible>(event)]));
        let body = sse.into_response().into_body();
        let bytes = futures::executor::block_on(axum::body::to_bytes(body, 1 << 20)).unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[test]
    fn progress_carries_totals_and_the_changed_cells() {
        let message = WatchCampaignResponse {
            event: Some(Watched::Progress(Progress {
                counters: Some(StatusCounters {
                    success: 3,
                    failed: 1,
                    total: 4,
                    ..Default::default()
                }),
                scopes: vec![ScopeSummary {
                    account_id: "111111111111".into(),
                    region: "us-east-1".into(),
                    counters: Some(StatusCounters {
                        failed: 1,
                        total: 1,
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                errors: 1,
                at: None,
            })),
        };
        let wire = text(event_of("c1", false, message).unwrap());
        assert!(wire.starts_with("event: progress\ndata: "), "{wire}");
        let data: serde_json::Value =
            serde_json::from_str(wire.lines().nth(1).unwrap().trim_start_matches("data: ")).unwrap();
        assert_eq!(data["totals"]["done"], 4);
        assert_eq!(data["totals"]["percent"], 100);
        assert_eq!(data["cells"][0]["id"], "cell-111111111111-us-east-1");
        assert_eq!(data["cells"][0]["word"], "failed");
    }

    #[test]
    fn only_problem_targets_stream_as_failures() {
        let target = |status: TargetStatus| WatchCampaignResponse {
            event: Some(Watched::Target(Target {
                campaign_id: "c1".into(),
                instance_id: "i-1".into(),
                status: status as i32,
                reason: "exit 2".into(),
                ..Default::default()
            })),
        };
        assert!(event_of("c1", false, target(TargetStatus::Success)).is_none());
        assert!(event_of("c1", false, target(TargetStatus::Skipped)).is_none());
        let wire = text(event_of("c1", false, target(TargetStatus::TimedOut)).unwrap());
        assert!(wire.starts_with("event: failure\n"), "{wire}");
        assert!(wire.contains("\"status\":\"timed out\""), "{wire}");
        assert!(wire.contains("\"reason\":\"exit 2\""), "{wire}");
    }

    #[test]
    fn a_terminal_state_says_so() {
        let message = WatchCampaignResponse {
            event: Some(Watched::State(StateChange {
                state: CampaignState::CompletedWithErrors as i32,
                reason: "2 failed".into(),
                at: None,
            })),
        };
        let wire = text(event_of("c1", false, message).unwrap());
        assert!(wire.contains("\"terminal\":true"), "{wire}");
        assert!(wire.contains("\"state\":\"completed with errors\""), "{wire}");
    }
}
