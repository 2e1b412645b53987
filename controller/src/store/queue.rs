//! Tasks waiting for a worker, and the SQS queue: which are due on it, which
//! are on it, and which a worker may take without it (a hand-off, or the
//! same account's discoveries with a lease).

use crate::store::sql::{Row, Sql, params};
use muster_proto::v1::{CampaignState, TaskKind, TaskRef};

use super::StoreResult;
use super::records::task_state;

/// A task due on the queue.
#[derive(Debug, Clone)]
pub struct Due {
    /// What goes on the queue.
    pub task: TaskRef,
    /// Its account (for its trace span).
    pub account_id: String,
    /// Its region.
    pub region: String,
}

/// Queued tasks whose current attempt is not on the queue yet, oldest first.
/// A cancelled campaign's queued tasks are among them only while they wait
/// to cancel what an earlier attempt sent (the others are cancelled in the
/// store); a worker is refused the rest.
pub fn to_enqueue(conn: &dyn Sql, limit: usize) -> StoreResult<Vec<Due>> {
    let mut stmt = conn.prepare_cached(
        "SELECT t.campaign_id, t.id, t.attempt, t.account_id, t.region FROM tasks t
         WHERE t.state = ?1 AND t.enqueued_attempt < t.attempt
         ORDER BY t.kind, t.created_ms LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![task_state::QUEUED, limit as i64], due)?;
    rows.collect::<StoreResult<Vec<_>>>()
}

/// Queued tasks of one scope and kind whose current attempt is not on the
/// queue, oldest first.
pub fn unqueued(
    conn: &dyn Sql,
    campaign_id: &str,
    (account, region): (&str, &str),
    kind: TaskKind,
    limit: u32,
) -> StoreResult<Vec<TaskRef>> {
    let mut stmt = conn.prepare_cached(
        "SELECT campaign_id, id, attempt FROM tasks
         WHERE campaign_id = ?1 AND state = ?2 AND enqueued_attempt < attempt AND account_id = ?3 AND region = ?4 AND kind = ?5
         ORDER BY created_ms LIMIT ?6",
    )?;
    let rows = stmt.query_map(
        params![campaign_id, task_state::QUEUED, account, region, kind as i32, limit],
        task_ref,
    )?;
    rows.collect::<StoreResult<Vec<_>>>()
}

/// A task due on the queue from a row of (campaign_id, id, attempt,
/// account_id, region).
fn due(r: &Row<'_>) -> StoreResult<Due> {
    Ok(Due {
        task: task_ref(r)?,
        account_id: r.get(3)?,
        region: r.get(4)?,
    })
}

/// A TaskRef from a row of (campaign_id, id, attempt).
fn task_ref(r: &Row<'_>) -> StoreResult<TaskRef> {
    Ok(TaskRef {
        campaign_id: r.get(0)?,
        task_id: r.get(1)?,
        attempt: r.get(2)?,
    })
}

/// The campaign's other Discover tasks in one account that wait for a
/// worker (on the queue or not), oldest first.
pub fn waiting_discovery(
    conn: &dyn Sql,
    campaign_id: &str,
    account: &str,
    except_task: &str,
    limit: u32,
) -> StoreResult<Vec<TaskRef>> {
    let mut stmt = conn.prepare_cached(
        "SELECT campaign_id, id, attempt FROM tasks
         WHERE campaign_id = ?1 AND state = ?2 AND account_id = ?3 AND kind = ?4 AND id != ?5
         ORDER BY created_ms LIMIT ?6",
    )?;
    let rows = stmt.query_map(
        params![
            campaign_id,
            task_state::QUEUED,
            account,
            TaskKind::Discover as i32,
            except_task,
            limit
        ],
        task_ref,
    )?;
    rows.collect::<StoreResult<Vec<_>>>()
}

/// The scaling signal's counts: tasks that wait for a worker (on the queue
/// or not yet) in campaigns that release work now (discovering, running,
/// cancelling), tasks workers hold, and the workers holding them.
pub fn demand(conn: &dyn Sql) -> StoreResult<(i64, i64, Vec<String>)> {
    let waiting: i64 = conn.query_row(
        "SELECT COUNT(*) FROM tasks t JOIN campaigns c ON c.id = t.campaign_id
         WHERE t.state = ?1 AND c.state IN (?2, ?3, ?4)",
        params![
            task_state::QUEUED,
            CampaignState::Discovering as i32,
            CampaignState::Running as i32,
            CampaignState::Cancelling as i32
        ],
        |r| r.get(0),
    )?;
    let held: i64 = conn.query_row(
        "SELECT COUNT(*) FROM tasks WHERE state = ?1",
        [task_state::LEASED],
        |r| r.get(0),
    )?;
    let holders = conn
        .prepare_cached("SELECT DISTINCT lease_owner FROM tasks WHERE state = ?1 AND lease_owner IS NOT NULL")?
        .query_map([task_state::LEASED], |r| r.get(0))?
        .collect::<StoreResult<Vec<String>>>()?;
    Ok((waiting, held, holders))
}

/// Tasks on the queue that no worker has leased yet.
pub fn waiting_on_queue(conn: &dyn Sql) -> StoreResult<usize> {
    let n: i64 = conn.query_row(
        "SELECT COUNT(*) FROM tasks WHERE state = ?1 AND enqueued_attempt = attempt",
        [task_state::QUEUED],
        |r| r.get(0),
    )?;
    Ok(n as usize)
}

/// Queued tasks whose current attempt went on the queue before `cutoff_ms`
/// and has not been leased since: its message may be lost, or in the
/// dead-letter queue after workers could not lease it (the controller was
/// down). Sending it again is harmless: the lease is fenced, and a worker
/// deletes the message that comes second.
pub fn overdue(conn: &dyn Sql, cutoff_ms: i64, limit: usize) -> StoreResult<Vec<Due>> {
    let mut stmt = conn.prepare_cached(
        "SELECT t.campaign_id, t.id, t.attempt, t.account_id, t.region FROM tasks t
         WHERE t.state = ?1 AND t.enqueued_attempt = t.attempt
           AND COALESCE(t.enqueued_ms, 0) < ?2
         ORDER BY t.enqueued_ms LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![task_state::QUEUED, cutoff_ms, limit as i64], due)?;
    rows.collect::<StoreResult<Vec<_>>>()
}

/// Tasks on the queue, not leased, since before `cutoff_ms`.
pub fn overdue_count(conn: &dyn Sql, cutoff_ms: i64) -> StoreResult<usize> {
    let n: i64 = conn.query_row(
        "SELECT COUNT(*) FROM tasks WHERE state = ?1 AND enqueued_attempt = attempt AND COALESCE(enqueued_ms, 0) < ?2",
        params![task_state::QUEUED, cutoff_ms],
        |r| r.get(0),
    )?;
    Ok(n as usize)
}

/// Records that these TaskRefs are on the queue, as of `now_ms`.
pub fn mark_enqueued(conn: &dyn Sql, refs: &[TaskRef], now_ms: i64) -> StoreResult<()> {
    let mut stmt =
        conn.prepare_cached("UPDATE tasks SET enqueued_attempt = ?2, enqueued_ms = ?3 WHERE id = ?1 AND attempt = ?2")?;
    for r in refs {
        stmt.execute(params![r.task_id, r.attempt, now_ms])?;
    }
    Ok(())
}

/// TaskRefs found in the dead-letter queue: each one that is still its
/// task's current, unleased attempt is due on the queue again. Returns how
/// many were.
pub fn dead_lettered(conn: &dyn Sql, refs: &[TaskRef]) -> StoreResult<usize> {
    let mut stmt = conn.prepare_cached(
        "UPDATE tasks SET enqueued_attempt = attempt - 1 WHERE id = ?1 AND campaign_id = ?2 AND attempt = ?3 AND state = ?4",
    )?;
    let mut due = 0;
    for r in refs {
        due += stmt.execute(params![r.task_id, r.campaign_id, r.attempt, task_state::QUEUED])?;
    }
    Ok(due)
}
