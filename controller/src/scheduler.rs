//! The scheduler: on the leader, once a second, each schedule whose run
//! time has come starts its campaign (checked as SubmitCampaign checks one,
//! as the schedule's owner), reopens the window of its campaign waiting for
//! the next window, or records why it did neither.
//!
//! A paused schedule's run times are recorded PAUSED and start nothing.
//! Run times that passed while no controller led are recorded MISSED, not
//! run late, unless their window (or the start grace of a schedule without
//! one) is still open. A leader that dies after starting a campaign and
//! before recording it finds the campaign again by the run time's client
//! token: a run time never starts two campaigns.

use std::sync::Arc;
use std::time::Duration;

use muster_proto::v1::{AfterWindow, CampaignState, RunOutcome, WindowEnd};
use sha2::Digest as _;
use tokio_util::sync::CancellationToken;

use crate::Controller;
use crate::auth::Auth;
use crate::campaign_api::{CampaignApi, Creation};
use crate::schedules::{Trigger, shown, start_deadline_ms};
use crate::store::campaigns::WindowRow;
use crate::store::leadership::Fence;
use crate::store::records::now_ms;
use crate::store::schedules::{self, Reopen, RunRecord, ScheduleRow};

/// How often the leader looks for run times that have come.
const TICK: Duration = Duration::from_secs(1);

/// Runs the scheduler until `shutdown`; only the leader starts anything.
pub async fn run(ctl: Arc<Controller>, auth: Arc<Auth>, shutdown: CancellationToken) {
    let api = CampaignApi::new(ctl.clone(), auth.clone());
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(TICK) => {}
        }
        let Some(fence) = ctl.leader.fence() else {
            continue;
        };
        if let Err(error) = tick(&ctl, &auth, &api, &fence).await {
            tracing::warn!(%error, "scheduler pass failed; retrying");
        }
    }
}

/// Handles every schedule whose run time has come.
async fn tick(ctl: &Controller, auth: &Auth, api: &CampaignApi, fence: &Fence) -> crate::store::StoreResult<()> {
    let now = now_ms();
    let due = ctl.store.read(move |conn| schedules::due(conn, now)).await?;
    for schedule in due {
        let (records, reopen, next) = handle(ctl, auth, api, &schedule, now).await?;
        for record in &records {
            ctl.metrics.schedule_run(record.outcome);
            match record.outcome {
                RunOutcome::Started | RunOutcome::Resumed => {
                    tracing::info!(schedule = %schedule.name, campaign_id = %record.campaign_id, scheduled = %shown(record.scheduled_ms), outcome = ?record.outcome, "schedule ran");
                }
                RunOutcome::Paused => {
                    tracing::info!(schedule = %schedule.name, scheduled = %shown(record.scheduled_ms), "schedule paused; the run time started nothing");
                }
                _ => {
                    tracing::warn!(schedule = %schedule.name, scheduled = %shown(record.scheduled_ms), outcome = ?record.outcome, reason = %record.reason, "schedule did not run");
                }
            }
        }
        if records.iter().any(|r| r.outcome == RunOutcome::Started) {
            // A leader that dies here has started a campaign it has not
            // recorded: the next one finds it by the run time's token.
            muster_common::crash::point("controller.schedule_started");
        }
        let key = (schedule.name.clone(), schedule.version);
        ctl.store
            .write_fenced(fence, move |txn| {
                schedules::record(txn, (&key.0, key.1), &records, reopen.as_ref(), next)
            })
            .await?;
        ctl.wake.notify_one();
    }
    Ok(())
}

/// What came of the run times of `schedule` up to `now`: the records, the
/// waiting campaign to reopen, and the next run time.
async fn handle(
    ctl: &Controller,
    auth: &Auth,
    api: &CampaignApi,
    schedule: &ScheduleRow,
    now: i64,
) -> crate::store::StoreResult<(Vec<RunRecord>, Option<Reopen>, Option<i64>)> {
    let spec = &schedule.spec;
    let trigger = match Trigger::of(spec) {
        Ok(trigger) => trigger,
        Err(error) => {
            // Stored specs passed this check; a newer build that reads
            // them otherwise must not start them blindly.
            tracing::error!(schedule = %schedule.name, %error, "stored schedule no longer valid; not running it");
            return Ok((Vec::new(), None, None));
        }
    };
    let first = schedule.next_run_ms.unwrap_or(now);
    let due = crate::schedules::due(&trigger, first, now, spec.window_seconds);
    let deadline = start_deadline_ms(spec.window_seconds);
    // A paused schedule would have started nothing anyway: its run times
    // that passed unhandled are paused, not missed (nobody is alerted).
    let mut records: Vec<RunRecord> = due
        .missed
        .iter()
        .map(|&at| RunRecord {
            scheduled_ms: at,
            outcome: if spec.paused {
                RunOutcome::Paused
            } else {
                RunOutcome::Missed
            },
            campaign_id: String::new(),
            reason: if spec.paused {
                paused_reason(schedule)
            } else {
                format!(
                    "no controller was leading from {} until {}, when it could no longer start",
                    shown(at),
                    shown(at + deadline)
                )
            },
        })
        .collect();
    if due.more_missed
        && let Some(oldest) = records.first_mut()
    {
        oldest.reason.push_str("; earlier run times were missed too");
    }
    let mut reopen = None;
    if let Some(at) = due.run {
        let (record, to_reopen) = run_once(ctl, auth, api, schedule, at).await?;
        records.push(record);
        reopen = to_reopen;
    }
    Ok((records, reopen, due.next))
}

/// Starts (or resumes) the campaign of one run time.
async fn run_once(
    ctl: &Controller,
    auth: &Auth,
    api: &CampaignApi,
    schedule: &ScheduleRow,
    at: i64,
) -> crate::store::StoreResult<(RunRecord, Option<Reopen>)> {
    let spec = &schedule.spec;
    let token = run_token(&schedule.name, at);
    let record = |outcome, campaign_id: String, reason: String| RunRecord {
        scheduled_ms: at,
        outcome,
        campaign_id,
        reason,
    };
    let (name, lookup) = (schedule.name.clone(), token.clone());
    let (started, open) = ctl
        .store
        .read(move |conn| {
            Ok((
                schedules::started_with(conn, &name, &lookup)?,
                schedules::open_campaign(conn, &name)?,
            ))
        })
        .await?;
    if let Some(id) = started {
        return Ok((record(RunOutcome::Started, id, String::new()), None));
    }
    if spec.paused {
        return Ok(match open {
            Some(open) if open.state == CampaignState::WaitingForWindow => {
                let reason = format!(
                    "{}: campaign {} waits on for a window after the pause",
                    paused_reason(schedule),
                    open.id
                );
                (record(RunOutcome::Paused, open.id, reason), None)
            }
            _ => (record(RunOutcome::Paused, String::new(), paused_reason(schedule)), None),
        });
    }
    let window_ms = i64::from(spec.window_seconds) * 1000;
    if let Some(open) = open {
        if open.state == CampaignState::WaitingForWindow {
            let reopen = Reopen {
                campaign_id: open.id.clone(),
                opened_ms: at,
                end_ms: at + window_ms,
            };
            return Ok((
                record(RunOutcome::Resumed, open.id, "the next window opened".into()),
                Some(reopen),
            ));
        }
        let reason = format!(
            "campaign {} of this schedule has not ended (it is {}); a run time never starts a second one beside it",
            open.id,
            open.state.short_name()
        );
        return Ok((record(RunOutcome::Skipped, open.id, reason), None));
    }
    let principal = match auth.owner(&schedule.owner) {
        Ok(principal) => principal,
        Err(reason) => return Ok((record(RunOutcome::Refused, String::new(), reason), None)),
    };
    let mut campaign = spec.campaign.clone().unwrap_or_default();
    campaign.client_token = token;
    let window = WindowRow {
        schedule: schedule.name.clone(),
        version: schedule.version,
        opened_ms: Some(at),
        end_ms: (window_ms > 0).then_some(at + window_ms),
        cancel_in_flight: spec.on_window_end == WindowEnd::Cancel as i32,
        next_window: spec.after_window == AfterWindow::NextWindow as i32,
        cancelling: false,
    };
    match api
        .create(Some(campaign), &principal, Creation::scheduled("ScheduleRun", window))
        .await
    {
        Ok((id, _)) => Ok((record(RunOutcome::Started, id, String::new()), None)),
        Err(status) => Ok((
            record(RunOutcome::Refused, String::new(), status.message().to_owned()),
            None,
        )),
    }
}

/// Why a paused schedule's run time started nothing.
fn paused_reason(schedule: &ScheduleRow) -> String {
    format!(
        "the schedule is paused (version {} by {})",
        schedule.version, schedule.owner.name
    )
}

/// The client token of one run time of a schedule: the same for every try,
/// different for every schedule and run time.
pub fn run_token(name: &str, at: i64) -> String {
    let digest = hex::encode(sha2::Sha256::digest(name.as_bytes()));
    format!("schedule.{}.{}", at / 1000, &digest[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_tokens_are_valid_client_tokens_unique_per_schedule_and_time() {
        let a = run_token("patch-tuesday", 1_800_000_000_000);
        assert!(
            a.len() <= 64 && a.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)),
            "{a}"
        );
        assert_eq!(a, run_token("patch-tuesday", 1_800_000_000_000));
        assert_ne!(a, run_token("patch-tuesday", 1_800_000_060_000));
        assert_ne!(a, run_token("patch-wednesday", 1_800_000_000_000));
    }
}
