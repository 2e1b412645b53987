//! Schedules: their versions, their next run time, what came of each run
//! time, and the campaigns they started.

use muster_proto::v1::{CampaignState, RunOutcome, Schedule, ScheduleRun, ScheduleSpec};
use prost::Message as _;

use super::audit::Actor;
use super::campaigns::{self, CampaignRow};
use super::records::{event, now_ms, timestamp};
use super::sql::{OptionalExtension as _, Row, Sql, params};
use super::{StoreError, StoreResult};

/// The event log's kind for a run time that started nothing; its campaign
/// is the one that kept it from starting (SKIPPED), or none.
pub const NOT_STARTED_EVENT: &str = "schedule_run";

/// The states of run times that started nothing, as the event log (and
/// notifications, and webhook filters) name them.
pub const NOT_STARTED_STATES: [&str; 4] = [
    "schedule_missed",
    "schedule_skipped",
    "schedule_refused",
    "schedule_paused",
];

/// How the event log names a run time's outcome that started nothing.
pub fn not_started_state(outcome: RunOutcome) -> Option<&'static str> {
    match outcome {
        RunOutcome::Missed => Some(NOT_STARTED_STATES[0]),
        RunOutcome::Skipped => Some(NOT_STARTED_STATES[1]),
        RunOutcome::Refused => Some(NOT_STARTED_STATES[2]),
        RunOutcome::Paused => Some(NOT_STARTED_STATES[3]),
        RunOutcome::Started | RunOutcome::Resumed | RunOutcome::Unspecified => None,
    }
}

/// Who stored a schedule version: its runs start as them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Owner {
    /// The principal's name.
    pub name: String,
    /// How it proved it: token, certificate, aws or anonymous.
    pub via: String,
    /// The ARN STS named, for an AWS identity; empty otherwise.
    pub arn: String,
}

/// One version of a schedule, with the schedule's current state.
#[derive(Debug, Clone)]
pub struct ScheduleRow {
    /// Name.
    pub name: String,
    /// This version.
    pub version: i64,
    /// The newest version.
    pub current_version: i64,
    /// What it runs and when.
    pub spec: ScheduleSpec,
    /// Who stored this version.
    pub owner: Owner,
    /// When.
    pub created_ms: i64,
    /// The next run time; none when nothing is left to run.
    pub next_run_ms: Option<i64>,
}

const COLUMNS: &str =
    "v.name, v.version, s.version, v.spec, v.owner, v.owner_via, v.owner_arn, v.created_ms, s.next_run_ms";

fn from_row(row: &Row<'_>) -> StoreResult<ScheduleRow> {
    let spec: Vec<u8> = row.get(3)?;
    Ok(ScheduleRow {
        name: row.get(0)?,
        version: row.get(1)?,
        current_version: row.get(2)?,
        spec: ScheduleSpec::decode(spec.as_slice()).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        owner: Owner {
            name: row.get(4)?,
            via: row.get(5)?,
            arn: row.get(6)?,
        },
        created_ms: row.get(7)?,
        next_run_ms: row.get(8)?,
    })
}

/// How a put went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Put {
    /// Stored as this version.
    Stored(i64),
    /// Creating, but the name is taken (at this version).
    Exists(i64),
    /// Replacing, but the schedule is at another version (or gone: 0).
    Conflict(i64),
}

/// Stores `spec` as a new schedule (`expected` 0) or its next version,
/// with its first run time, and records who did it. A put whose answer was
/// lost and is made again (the same spec by the same owner, expecting the
/// version before the current one) is answered with the version it stored,
/// and stores nothing.
pub fn put(
    conn: &dyn Sql,
    spec: &ScheduleSpec,
    expected: i64,
    next_run_ms: Option<i64>,
    (owner, actor): (&Owner, &Actor),
) -> StoreResult<Put> {
    let (current, stored_next): (Option<i64>, Option<i64>) = conn
        .prepare_cached("SELECT version, next_run_ms FROM schedules WHERE name = ?1")?
        .query_row([spec.name.as_str()], |r| Ok((Some(r.get(0)?), r.get(1)?)))
        .optional()?
        .unwrap_or((None, None));
    if let Some(current) = current
        && current == expected + 1
        && let Some(stored) = get(conn, &spec.name, current)?
        && stored.spec == *spec
        && stored.owner == *owner
    {
        return Ok(Put::Stored(current));
    }
    let version = match (current, expected) {
        (Some(current), 0) => return Ok(Put::Exists(current)),
        (Some(current), expected) if current != expected => return Ok(Put::Conflict(current)),
        (None, expected) if expected != 0 => return Ok(Put::Conflict(0)),
        (current, _) => current.unwrap_or(0) + 1,
    };
    let now = now_ms();
    // A run time that has come but that the scheduler has not handled yet
    // (it looks once a second, and only a leader looks) stays the first to
    // handle, under the new version: an update or a pause made at that
    // moment neither drops it unrecorded nor runs the old version.
    let next_run_ms = match stored_next {
        Some(due) if due <= now => Some(due),
        _ => next_run_ms,
    };
    if version == 1 {
        conn.prepare_cached("INSERT INTO schedules (name, version, next_run_ms, created_ms) VALUES (?1, 1, ?2, ?3)")?
            .execute(params![spec.name, next_run_ms, now])?;
    } else {
        conn.prepare_cached("UPDATE schedules SET version = ?2, next_run_ms = ?3 WHERE name = ?1")?
            .execute(params![spec.name, version, next_run_ms])?;
    }
    conn.prepare_cached(
        "INSERT INTO schedule_versions (name, version, spec, owner, owner_via, owner_arn, created_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        spec.name,
        version,
        spec.encode_to_vec(),
        owner.name,
        owner.via,
        owner.arn,
        now
    ])?;
    let detail = serde_json::json!({"schedule": spec.name, "version": version}).to_string();
    let action = if version == 1 {
        "schedule_created"
    } else {
        "schedule_updated"
    };
    super::audit::record(conn, actor, action, "", &detail)?;
    Ok(Put::Stored(version))
}

/// A schedule at `version` (0: the current one).
pub fn get(conn: &dyn Sql, name: &str, version: i64) -> StoreResult<Option<ScheduleRow>> {
    if version == 0 {
        return conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM schedule_versions v JOIN schedules s ON s.name = v.name AND s.version = v.version
                 WHERE v.name = ?1"
            ))?
            .query_row([name], from_row)
            .optional();
    }
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM schedule_versions v JOIN schedules s ON s.name = v.name
         WHERE v.name = ?1 AND v.version = ?2"
    ))?
    .query_row(params![name, version], from_row)
    .optional()
}

/// Every schedule at its current version, by name.
pub fn list(conn: &dyn Sql) -> StoreResult<Vec<ScheduleRow>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM schedule_versions v JOIN schedules s ON s.name = v.name AND s.version = v.version
         ORDER BY v.name"
    ))?;
    stmt.query_map((), from_row)?.collect()
}

/// The schedules with a run time at or before `now`, at their current
/// version.
pub fn due(conn: &dyn Sql, now: i64) -> StoreResult<Vec<ScheduleRow>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM schedule_versions v JOIN schedules s ON s.name = v.name AND s.version = v.version
         WHERE s.next_run_ms <= ?1 ORDER BY s.next_run_ms"
    ))?;
    stmt.query_map([now], from_row)?.collect()
}

/// Deletes a schedule, its versions and runs; cancels the campaign waiting
/// for its next window. `None` when there is no such schedule; otherwise
/// the cancelled campaign, if any.
pub fn delete(conn: &dyn Sql, name: &str, actor: &Actor) -> StoreResult<Option<Option<String>>> {
    let Some(row) = get(conn, name, 0)? else {
        return Ok(None);
    };
    for table in ["schedule_runs", "schedule_versions", "schedules"] {
        conn.prepare_cached(&format!("DELETE FROM {table} WHERE name = ?1"))?
            .execute([name])?;
    }
    let waiting = open_campaign(conn, name)?.filter(|c| c.state == CampaignState::WaitingForWindow);
    if let Some(campaign) = &waiting {
        campaigns::request_cancel(conn, &campaign.id, actor, &format!("schedule {name} was deleted"))?;
    }
    let detail = serde_json::json!({"schedule": name, "version": row.current_version}).to_string();
    super::audit::record(conn, actor, "schedule_deleted", "", &detail)?;
    Ok(Some(waiting.map(|c| c.id)))
}

/// The newest campaign of schedule `name` that has not ended.
pub fn open_campaign(conn: &dyn Sql, name: &str) -> StoreResult<Option<CampaignRow>> {
    let id: Option<String> = conn
        .prepare_cached(&format!(
            "SELECT id FROM campaigns WHERE schedule_name = ?1 AND state NOT IN ({}) ORDER BY created_ms DESC LIMIT 1",
            terminal_states()
        ))?
        .query_row([name], |r| r.get(0))
        .optional()?;
    id.map_or(Ok(None), |id| campaigns::get(conn, &id))
}

/// The terminal states, as CampaignState::is_terminal knows them, for SQL.
fn terminal_states() -> String {
    (0..=i32::from(u8::MAX))
        .filter_map(|n| CampaignState::try_from(n).ok())
        .filter(|state| state.is_terminal())
        .map(|state| (state as i32).to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// The campaign schedule `name` started with client token `token` (one run
/// time's), if it did.
pub fn started_with(conn: &dyn Sql, name: &str, token: &str) -> StoreResult<Option<String>> {
    conn.prepare_cached("SELECT id FROM campaigns WHERE schedule_name = ?1 AND client_token = ?2")?
        .query_row(params![name, token], |r| r.get(0))
        .optional()
}

/// What came of one run time, to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRecord {
    /// The run time.
    pub scheduled_ms: i64,
    /// What came of it.
    pub outcome: RunOutcome,
    /// The campaign started or resumed; empty otherwise.
    pub campaign_id: String,
    /// Why, for people.
    pub reason: String,
}

/// A campaign waiting for its next window, to go on in the window that
/// opens at `opened_ms` and closes at `end_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reopen {
    /// The campaign.
    pub campaign_id: String,
    /// The run time.
    pub opened_ms: i64,
    /// When the window closes.
    pub end_ms: i64,
}

/// Records the outcome of run times of schedule `name` at `version`,
/// reopens the window of a waiting campaign, and moves the next run time on
/// (unless a new version, with its own run times, was stored meanwhile).
/// A run time recorded before is kept as it was.
pub fn record(
    conn: &dyn Sql,
    (name, version): (&str, i64),
    runs: &[RunRecord],
    reopen: Option<&Reopen>,
    next_run_ms: Option<i64>,
) -> StoreResult<()> {
    let now = now_ms();
    for run in runs {
        let inserted = conn
            .prepare_cached(
                "INSERT INTO schedule_runs (name, scheduled_ms, version, outcome, campaign_id, reason, recorded_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (name, scheduled_ms) DO NOTHING",
            )?
            .execute(params![
                name,
                run.scheduled_ms,
                version,
                run.outcome as i32,
                run.campaign_id,
                run.reason,
                now
            ])?;
        // A run time that started nothing is news (notifications read it
        // from the event log); once, however often it is recorded.
        if let Some(state) = not_started_state(run.outcome)
            && inserted > 0
        {
            let detail = serde_json::json!({
                "schedule": name,
                "version": version,
                "scheduled_ms": run.scheduled_ms,
                "state": state,
                "reason": run.reason,
            });
            event(conn, &run.campaign_id, NOT_STARTED_EVENT, &detail.to_string())?;
        }
    }
    // The newest runs are kept: a schedule every minute keeps the last
    // 16 hours, a weekly one 19 years.
    conn.prepare_cached(
        "DELETE FROM schedule_runs WHERE name = ?1 AND scheduled_ms <
           (SELECT scheduled_ms FROM schedule_runs WHERE name = ?1 ORDER BY scheduled_ms DESC LIMIT 1 OFFSET 999)",
    )?
    .execute([name])?;
    if let Some(reopen) = reopen
        && let Some(campaign) = campaigns::get(conn, &reopen.campaign_id)?
        && campaign.state == CampaignState::WaitingForWindow
        && !campaign.cancel_requested
    {
        conn.prepare_cached(
            "UPDATE campaigns SET window_opened_ms = ?2, window_end_ms = ?3, window_cancelling = 0 WHERE id = ?1",
        )?
        .execute(params![reopen.campaign_id, reopen.opened_ms, reopen.end_ms])?;
        let pending = campaigns::totals(conn, &reopen.campaign_id)?.pending;
        let reason = format!(
            "the maintenance window of schedule {name} opened at {}: {pending} targets to run until {}",
            crate::schedules::shown(reopen.opened_ms),
            crate::schedules::shown(reopen.end_ms)
        );
        event(
            conn,
            &reopen.campaign_id,
            "window_opened",
            &serde_json::json!({"schedule": name, "closes_ms": reopen.end_ms}).to_string(),
        )?;
        campaigns::set_state(conn, &reopen.campaign_id, CampaignState::Running, &reason)?;
    }
    conn.prepare_cached("UPDATE schedules SET next_run_ms = ?3 WHERE name = ?1 AND version = ?2")?
        .execute(params![name, version, next_run_ms])?;
    Ok(())
}

/// The newest `limit` runs of schedule `name`, newest first.
pub fn runs(conn: &dyn Sql, name: &str, limit: usize) -> StoreResult<Vec<ScheduleRun>> {
    let mut stmt = conn.prepare_cached(
        "SELECT scheduled_ms, outcome, campaign_id, reason, version, recorded_ms FROM schedule_runs
         WHERE name = ?1 ORDER BY scheduled_ms DESC LIMIT ?2",
    )?;
    stmt.query_map(params![name, limit as i64], |r| {
        Ok(ScheduleRun {
            scheduled_at: Some(timestamp(r.get(0)?)),
            outcome: r.get(1)?,
            campaign_id: r.get(2)?,
            reason: r.get(3)?,
            version: u32::try_from(r.get::<_, i64>(4)?).unwrap_or_default(),
            recorded_at: Some(timestamp(r.get(5)?)),
        })
    })?
    .collect()
}

/// The API's view of a schedule version, with its newest run.
pub fn to_proto(conn: &dyn Sql, row: &ScheduleRow) -> StoreResult<Schedule> {
    Ok(Schedule {
        spec: Some(row.spec.clone()),
        version: u32::try_from(row.version).unwrap_or_default(),
        created_by: row.owner.name.clone(),
        created_at: Some(timestamp(row.created_ms)),
        next_run_at: row.next_run_ms.map(timestamp),
        last_run: runs(conn, &row.name, 1)?.into_iter().next(),
        current_version: u32::try_from(row.current_version).unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::campaigns::{NewCampaign, WindowRow};
    use crate::store::testing::store_matrix;

    fn spec(name: &str, description: &str) -> ScheduleSpec {
        ScheduleSpec {
            name: name.into(),
            description: description.into(),
            cron: "0 2 * * TUE".into(),
            ..Default::default()
        }
    }

    fn alice() -> (Owner, Actor) {
        (
            Owner {
                name: "alice".into(),
                via: "token".into(),
                arn: String::new(),
            },
            Actor {
                principal: "alice".into(),
                ..Default::default()
            },
        )
    }

    fn run(at: i64, outcome: RunOutcome, campaign: &str) -> RunRecord {
        RunRecord {
            scheduled_ms: at,
            outcome,
            campaign_id: campaign.into(),
            reason: String::new(),
        }
    }

    store_matrix! {
        fn versions_are_kept_and_a_stale_put_is_refused(conn) {
            let (owner, actor) = alice();
            assert_eq!(put(&conn, &spec("s", "one"), 0, Some(1_000), (&owner, &actor)).unwrap(), Put::Stored(1));
            assert_eq!(put(&conn, &spec("s", "again"), 0, Some(1_000), (&owner, &actor)).unwrap(), Put::Exists(1));
            assert_eq!(put(&conn, &spec("s", "two"), 1, Some(2_000), (&owner, &actor)).unwrap(), Put::Stored(2));
            assert_eq!(put(&conn, &spec("s", "late"), 1, Some(3_000), (&owner, &actor)).unwrap(), Put::Conflict(2));
            assert_eq!(put(&conn, &spec("t", "none"), 4, None, (&owner, &actor)).unwrap(), Put::Conflict(0));
            let current = get(&conn, "s", 0).unwrap().unwrap();
            assert_eq!((current.version, current.current_version, current.spec.description.as_str()), (2, 2, "two"));
            assert_eq!(current.next_run_ms, Some(1_000), "version 1's run time came and was not handled");
            let first = get(&conn, "s", 1).unwrap().unwrap();
            assert_eq!((first.version, first.current_version, first.spec.description.as_str()), (1, 2, "one"));
            assert!(get(&conn, "s", 3).unwrap().is_none());
            assert_eq!(list(&conn).unwrap().len(), 1);
            let audited: i64 = conn
                .query_row("SELECT COUNT(*) FROM audit WHERE action IN ('schedule_created', 'schedule_updated')", (), |r| r.get(0))
                .unwrap();
            assert_eq!(audited, 2, "refused puts change nothing");
        }

        fn a_run_time_that_came_unhandled_stays_due_through_a_new_version(conn) {
            let (owner, actor) = alice();
            let now = now_ms();
            let hour = 3_600_000;
            // Due a moment ago, not yet handled: the new version handles it.
            put(&conn, &spec("due", "one"), 0, Some(now - 500), (&owner, &actor)).unwrap();
            put(&conn, &spec("due", "two"), 1, Some(now + hour), (&owner, &actor)).unwrap();
            assert_eq!(get(&conn, "due", 0).unwrap().unwrap().next_run_ms, Some(now - 500));
            assert_eq!(due(&conn, now).unwrap().iter().map(|s| (s.name.as_str(), s.version)).collect::<Vec<_>>(), [("due", 2)]);
            // Handled, the next run time follows the new version's trigger.
            record(&conn, ("due", 2), &[run(now - 500, RunOutcome::Paused, "")], None, Some(now + hour)).unwrap();
            put(&conn, &spec("due", "three"), 2, Some(now + 2 * hour), (&owner, &actor)).unwrap();
            assert_eq!(get(&conn, "due", 0).unwrap().unwrap().next_run_ms, Some(now + 2 * hour));
            assert!(due(&conn, now).unwrap().is_empty());
        }

        fn a_put_made_again_after_its_answer_was_lost_stores_nothing_more(conn) {
            let (owner, actor) = alice();
            assert_eq!(put(&conn, &spec("s", "one"), 0, None, (&owner, &actor)).unwrap(), Put::Stored(1));
            assert_eq!(put(&conn, &spec("s", "one"), 0, None, (&owner, &actor)).unwrap(), Put::Stored(1));
            assert_eq!(put(&conn, &spec("s", "two"), 1, None, (&owner, &actor)).unwrap(), Put::Stored(2));
            assert_eq!(put(&conn, &spec("s", "two"), 1, None, (&owner, &actor)).unwrap(), Put::Stored(2));
            // Another spec, or another owner, at a stale version is a conflict.
            assert_eq!(put(&conn, &spec("s", "one"), 0, None, (&owner, &actor)).unwrap(), Put::Exists(2));
            assert_eq!(put(&conn, &spec("s", "three"), 1, None, (&owner, &actor)).unwrap(), Put::Conflict(2));
            let bob = Owner { name: "bob".into(), ..owner };
            assert_eq!(put(&conn, &spec("s", "two"), 1, None, (&bob, &actor)).unwrap(), Put::Conflict(2));
            let audited: i64 = conn
                .query_row("SELECT COUNT(*) FROM audit WHERE action LIKE 'schedule_%'", (), |r| r.get(0))
                .unwrap();
            assert_eq!(audited, 2, "one record per version stored");
        }

        fn runs_are_recorded_once_and_the_next_run_time_follows_the_version(conn) {
            let (owner, actor) = alice();
            put(&conn, &spec("s", "one"), 0, Some(1_000), (&owner, &actor)).unwrap();
            assert_eq!(due(&conn, 999).unwrap().len(), 0);
            assert_eq!(due(&conn, 1_000).unwrap().len(), 1);
            let runs = [run(1_000, RunOutcome::Missed, ""), run(2_000, RunOutcome::Started, "c1")];
            record(&conn, ("s", 1), &runs, None, Some(3_000)).unwrap();
            // Recorded again (a leader that died before its answer): kept as
            // it was.
            record(&conn, ("s", 1), &[run(2_000, RunOutcome::Skipped, "c9")], None, Some(3_000)).unwrap();
            record(&conn, ("s", 1), &[run(1_000, RunOutcome::Missed, "")], None, Some(3_000)).unwrap();
            // The missed run time is news for notifications, once.
            let logged: Vec<(String, String)> = conn
                .prepare_cached("SELECT campaign_id, detail FROM events WHERE kind = 'schedule_run' ORDER BY id")
                .unwrap()
                .query_map((), |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .collect::<StoreResult<_>>()
                .unwrap();
            assert_eq!(logged.len(), 1, "{logged:?}");
            let detail: serde_json::Value = serde_json::from_str(&logged[0].1).unwrap();
            assert_eq!(
                (logged[0].0.as_str(), detail["state"].as_str(), detail["scheduled_ms"].as_i64()),
                ("", Some("schedule_missed"), Some(1_000))
            );
            let shown = super::runs(&conn, "s", 10).unwrap();
            assert_eq!(shown.len(), 2);
            assert_eq!((shown[0].outcome, shown[0].campaign_id.as_str()), (RunOutcome::Started as i32, "c1"));
            assert_eq!(get(&conn, "s", 0).unwrap().unwrap().next_run_ms, Some(3_000));
            // A new version stored meanwhile keeps its own next run time
            // (once the old one's has not come yet).
            let later = now_ms() + 3_600_000;
            record(&conn, ("s", 1), &[], None, Some(later)).unwrap();
            put(&conn, &spec("s", "two"), 1, Some(later + 1), (&owner, &actor)).unwrap();
            record(&conn, ("s", 1), &[run(3_000, RunOutcome::Started, "c2")], None, Some(4_000)).unwrap();
            assert_eq!(get(&conn, "s", 0).unwrap().unwrap().next_run_ms, Some(later + 1));
        }

        fn a_waiting_campaign_reopens_and_deleting_cancels_it(conn) {
            let (owner, actor) = alice();
            put(&conn, &spec("s", "one"), 0, Some(1_000), (&owner, &actor)).unwrap();
            let mut new = NewCampaign::for_test("c", 1);
            new.window = WindowRow {
                schedule: "s".into(),
                version: 1,
                opened_ms: Some(1_000),
                end_ms: Some(2_000),
                next_window: true,
                ..Default::default()
            };
            campaigns::insert(&conn, &new).unwrap();
            campaigns::set_state(&conn, "c", CampaignState::WaitingForWindow, "closed").unwrap();
            assert_eq!(open_campaign(&conn, "s").unwrap().unwrap().id, "c");
            let reopen = Reopen { campaign_id: "c".into(), opened_ms: 10_000, end_ms: 11_000 };
            record(&conn, ("s", 1), &[run(10_000, RunOutcome::Resumed, "c")], Some(&reopen), Some(20_000)).unwrap();
            let campaign = campaigns::get(&conn, "c").unwrap().unwrap();
            assert_eq!(campaign.state, CampaignState::Running);
            assert_eq!((campaign.window.opened_ms, campaign.window.end_ms), (Some(10_000), Some(11_000)));
            assert!(campaign.window.next_window, "{:?}", campaign.window);

            campaigns::set_state(&conn, "c", CampaignState::WaitingForWindow, "closed again").unwrap();
            assert_eq!(delete(&conn, "s", &actor).unwrap(), Some(Some("c".to_owned())));
            let campaign = campaigns::get(&conn, "c").unwrap().unwrap();
            assert!(campaign.cancel_requested);
            assert_eq!(campaign.state, CampaignState::Cancelling);
            assert!(get(&conn, "s", 0).unwrap().is_none());
            assert!(super::runs(&conn, "s", 10).unwrap().is_empty());
            assert_eq!(delete(&conn, "s", &actor).unwrap(), None);
        }
    }
}
