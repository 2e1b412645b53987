//! Tasks: the units workers lease (a scope's discovery, a batch of one
//! scope's instances), made, counted and cancelled here; who holds one and
//! how its attempts end is `leases`.

use crate::store::sql::{OptionalExtension as _, Row, Sql, params};
use muster_proto::v1::{Platform, TargetStatus, TaskKind};

use super::StoreResult;
use super::campaigns::CampaignRow;
use super::records::{bump, moved, now_ms, task_state, terminal};
use crate::resolve;

/// A task row.
#[derive(Debug, Clone)]
pub struct TaskRow {
    /// Id.
    pub id: String,
    /// Campaign.
    pub campaign_id: String,
    /// Discover or Execute.
    pub kind: TaskKind,
    /// Account.
    pub account_id: String,
    /// Region.
    pub region: String,
    /// Platform of an Execute batch.
    pub platform: Platform,
    /// See [`task_state`].
    pub state: i32,
    /// Current attempt.
    pub attempt: u32,
    /// Budget.
    pub max_attempts: u32,
    /// Current lease.
    pub lease_id: Option<u64>,
    /// Who holds it.
    pub lease_owner: Option<String>,
    /// When it runs out.
    pub lease_expires_ms: Option<i64>,
    /// Created.
    pub created_ms: i64,
    /// Last failure.
    pub last_error: String,
}

pub(super) const COLUMNS: &str = "id, campaign_id, kind, account_id, region, platform, state, attempt, max_attempts, lease_id, \
    lease_owner, lease_expires_ms, created_ms, last_error";

pub(super) fn from_row(r: &Row<'_>) -> StoreResult<TaskRow> {
    Ok(TaskRow {
        id: r.get(0)?,
        campaign_id: r.get(1)?,
        kind: TaskKind::try_from(r.get::<_, i32>(2)?).unwrap_or(TaskKind::Unspecified),
        account_id: r.get(3)?,
        region: r.get(4)?,
        platform: Platform::try_from(r.get::<_, i32>(5)?).unwrap_or(Platform::Unspecified),
        state: r.get(6)?,
        attempt: r.get(7)?,
        max_attempts: r.get(8)?,
        lease_id: r.get::<_, Option<i64>>(9)?.map(|v| v as u64),
        lease_owner: r.get(10)?,
        lease_expires_ms: r.get(11)?,
        created_ms: r.get(12)?,
        last_error: r.get(13)?,
    })
}

/// One task.
pub fn get(conn: &dyn Sql, id: &str) -> StoreResult<Option<TaskRow>> {
    conn.prepare_cached(&format!("SELECT {COLUMNS} FROM tasks WHERE id = ?1"))?
        .query_row([id], from_row)
        .optional()
}

/// The instances of an Execute task, sorted.
pub fn task_instances(conn: &dyn Sql, task_id: &str) -> StoreResult<Vec<String>> {
    let mut stmt = conn.prepare_cached("SELECT instance_id FROM targets WHERE task_id = ?1 ORDER BY instance_id")?;
    let ids = stmt
        .query_map([task_id], |r| r.get(0))?
        .collect::<StoreResult<Vec<String>>>()?;
    Ok(ids)
}

/// Ends every target of `task` that has no final status yet.
pub fn end_open_targets(conn: &dyn Sql, task: &TaskRow, status: TargetStatus, reason: &str) -> StoreResult<usize> {
    let mut stmt = conn.prepare_cached("SELECT instance_id, status FROM targets WHERE task_id = ?1")?;
    let open: Vec<(String, i32)> = stmt
        .query_map([&task.id], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<StoreResult<Vec<_>>>()?
        .into_iter()
        .filter(|(_, s)| !terminal(*s))
        .collect();
    let now = now_ms();
    for (instance, old) in &open {
        conn.prepare_cached(
            "UPDATE targets SET status = ?5, reason = ?6, finished_ms = ?7
             WHERE campaign_id = ?1 AND account_id = ?2 AND region = ?3 AND instance_id = ?4",
        )?
        .execute(params![
            task.campaign_id,
            task.account_id,
            task.region,
            instance,
            status as i32,
            reason,
            now
        ])?;
        moved(
            conn,
            &task.campaign_id,
            &task.account_id,
            &task.region,
            *old,
            status as i32,
        )?;
    }
    Ok(open.len())
}

/// Creates an Execute task for these pending targets of one scope and
/// platform, moving them to QUEUED.
pub fn create_execute(
    conn: &dyn Sql,
    campaign: &CampaignRow,
    account: &str,
    region: &str,
    platform: Platform,
    instances: &[String],
    max_attempts: u32,
) -> StoreResult<String> {
    let id = uuid::Uuid::now_v7().to_string();
    conn.prepare_cached(
        "INSERT INTO tasks (id, campaign_id, kind, account_id, region, platform, state, attempt, max_attempts, created_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1, ?8, ?9)",
    )?
    .execute(params![
        id,
        campaign.id,
        TaskKind::Execute as i32,
        account,
        region,
        platform as i32,
        task_state::QUEUED,
        max_attempts,
        now_ms()
    ])?;
    let document = resolve::document_for(&campaign.spec, platform, region);
    let mut update = conn.prepare_cached(
        "UPDATE targets SET status = ?5, task_id = ?6, document_name = ?7
         WHERE campaign_id = ?1 AND account_id = ?2 AND region = ?3 AND instance_id = ?4 AND status = ?8",
    )?;
    let mut moved_count = 0;
    for instance in instances {
        moved_count += update.execute(params![
            campaign.id,
            account,
            region,
            instance,
            TargetStatus::Queued as i32,
            id,
            document,
            TargetStatus::Pending as i32
        ])?;
    }
    bump(
        conn,
        &campaign.id,
        account,
        region,
        TargetStatus::Pending as i32,
        -(moved_count as i64),
    )?;
    bump(
        conn,
        &campaign.id,
        account,
        region,
        TargetStatus::Queued as i32,
        moved_count as i64,
    )?;
    Ok(id)
}

/// Whether an earlier attempt of an Execute task may have sent its command:
/// a dispatch is on record, or an attempt before this one ran (it may have
/// sent and died before reporting; its Comment finds it).
pub fn may_have_sent(conn: &dyn Sql, task: &TaskRow) -> StoreResult<bool> {
    if task.kind != TaskKind::Execute {
        return Ok(false);
    }
    if task.attempt > 1 {
        return Ok(true);
    }
    conn.prepare_cached("SELECT EXISTS (SELECT 1 FROM dispatches WHERE task_id = ?1)")?
        .query_row([&task.id], |r| r.get(0))
}

/// Cancels a campaign's tasks that no worker holds and that never sent
/// anything. True while any task still needs a worker: one is held, or one
/// waits to be leased only to cancel the commands an earlier holder sent
/// (that holder is gone, its commands may still run).
pub fn cancel_unleased(conn: &dyn Sql, campaign_id: &str, reason: &str) -> StoreResult<bool> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM tasks WHERE campaign_id = ?1 AND state = ?2"
    ))?;
    let queued = stmt
        .query_map(params![campaign_id, task_state::QUEUED], from_row)?
        .collect::<StoreResult<Vec<_>>>()?;
    let mut cleanup = false;
    for task in &queued {
        if may_have_sent(conn, task)? {
            cleanup = true;
            continue;
        }
        conn.prepare_cached("UPDATE tasks SET state = ?2 WHERE id = ?1")?
            .execute(params![task.id, task_state::CANCELLED])?;
        if task.kind == TaskKind::Execute {
            end_open_targets(conn, task, TargetStatus::Cancelled, reason)?;
        }
    }
    let leased: i64 = conn
        .prepare_cached("SELECT COUNT(*) FROM tasks WHERE campaign_id = ?1 AND state = ?2")?
        .query_row(params![campaign_id, task_state::LEASED], |r| r.get(0))?;
    Ok(cleanup || leased > 0)
}

/// Tasks of a campaign still queued or leased, by kind.
pub fn active(conn: &dyn Sql, campaign_id: &str, kind: TaskKind) -> StoreResult<i64> {
    conn.prepare_cached("SELECT COUNT(*) FROM tasks WHERE campaign_id = ?1 AND kind = ?2 AND state IN (?3, ?4)")?
        .query_row(
            params![campaign_id, kind as i32, task_state::QUEUED, task_state::LEASED],
            |r| r.get(0),
        )
}

/// Execute tasks out now in one (account, region), read through the
/// scope's index whatever the campaign's size.
pub fn active_in_scope(conn: &dyn Sql, campaign_id: &str, (account, region): (&str, &str)) -> StoreResult<u64> {
    let out: i64 = conn
        .prepare_cached(
            "SELECT COUNT(*) FROM tasks WHERE campaign_id = ?1 AND account_id = ?2 AND region = ?3
               AND kind = ?4 AND state IN (?5, ?6)",
        )?
        .query_row(
            params![
                campaign_id,
                account,
                region,
                TaskKind::Execute as i32,
                task_state::QUEUED,
                task_state::LEASED
            ],
            |r| r.get(0),
        )?;
    Ok(out.max(0) as u64)
}

/// Execute tasks out now per (account, region): of the campaign, or of the
/// one scope `only` names ([`active_in_scope`]). Scopes with none are left
/// out.
pub fn active_per_scope(
    conn: &dyn Sql,
    campaign_id: &str,
    only: Option<(&str, &str)>,
) -> StoreResult<std::collections::HashMap<(String, String), u64>> {
    if let Some((account, region)) = only {
        let out = active_in_scope(conn, campaign_id, (account, region))?;
        return Ok((out > 0)
            .then(|| ((account.to_owned(), region.to_owned()), out))
            .into_iter()
            .collect());
    }
    conn.prepare_cached(
        "SELECT account_id, region, COUNT(*) FROM tasks WHERE campaign_id = ?1 AND kind = ?2 AND state IN (?3, ?4)
         GROUP BY account_id, region",
    )?
    .query_map(
        params![
            campaign_id,
            TaskKind::Execute as i32,
            task_state::QUEUED,
            task_state::LEASED
        ],
        |r: &Row<'_>| {
            Ok((
                (r.get::<_, String>(0)?, r.get::<_, String>(1)?),
                r.get::<_, i64>(2)? as u64,
            ))
        },
    )?
    .collect()
}
