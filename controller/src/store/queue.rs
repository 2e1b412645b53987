//! Tasks waiting for a worker, and the SQS queue: which are due on it, which
//! are on it, and which a worker may take without it (a hand-off, or the
//! same account's discoveries with a lease).

use muster_proto::v1::{TaskKind, TaskRef};
use rusqlite::{Connection, params};

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
pub fn to_enqueue(conn: &Connection, limit: usize) -> StoreResult<Vec<Due>> {
    let mut stmt = conn.prepare_cached(
        "SELECT t.campaign_id, t.id, t.attempt, t.account_id, t.region FROM tasks t
         JOIN campaigns c ON c.id = t.campaign_id
         WHERE t.state = ?1 AND t.enqueued_attempt < t.attempt AND c.cancel_requested = 0
         ORDER BY t.kind, t.created_ms LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![task_state::QUEUED, limit as i64], |r| {
        Ok(Due {
            task: task_ref(r)?,
            account_id: r.get(3)?,
            region: r.get(4)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Queued tasks of one scope and kind whose current attempt is not on the
/// queue, oldest first.
pub fn unqueued(
    conn: &Connection,
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
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// A TaskRef from a row of (campaign_id, id, attempt).
fn task_ref(r: &rusqlite::Row<'_>) -> rusqlite::Result<TaskRef> {
    Ok(TaskRef {
        campaign_id: r.get(0)?,
        task_id: r.get(1)?,
        attempt: r.get(2)?,
    })
}

/// The campaign's other Discover tasks in one account that wait for a
/// worker (on the queue or not), oldest first.
pub fn waiting_discovery(
    conn: &Connection,
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
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Tasks on the queue that no worker has leased yet.
pub fn waiting_on_queue(conn: &Connection) -> StoreResult<usize> {
    let n: i64 = conn.query_row(
        "SELECT COUNT(*) FROM tasks WHERE state = ?1 AND enqueued_attempt = attempt",
        [task_state::QUEUED],
        |r| r.get(0),
    )?;
    Ok(n as usize)
}

/// Records that these TaskRefs are on the queue.
pub fn mark_enqueued(conn: &Connection, refs: &[TaskRef]) -> StoreResult<()> {
    let mut stmt = conn.prepare_cached("UPDATE tasks SET enqueued_attempt = ?2 WHERE id = ?1 AND attempt = ?2")?;
    for r in refs {
        stmt.execute(params![r.task_id, r.attempt])?;
    }
    Ok(())
}
