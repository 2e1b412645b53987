//! Shared pieces of the store's queries: task states, per-scope status
//! counters kept in step with every target change, time, events.

use crate::store::sql::{Sql, Value, params};
use muster_proto::v1::TargetStatus;

use super::StoreResult;

/// Task states (the `tasks.state` column).
pub mod task_state {
    /// Waiting for a worker (enqueued or about to be).
    pub const QUEUED: i32 = 1;
    /// A worker holds a live lease.
    pub const LEASED: i32 = 2;
    /// Done.
    pub const COMPLETED: i32 = 3;
    /// Failed for good.
    pub const FAILED: i32 = 4;
    /// Never ran: its campaign was cancelled first.
    pub const CANCELLED: i32 = 5;
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A protobuf timestamp from milliseconds.
pub fn timestamp(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

/// Milliseconds from a protobuf timestamp.
pub fn millis(ts: &prost_types::Timestamp) -> i64 {
    ts.seconds * 1000 + i64::from(ts.nanos) / 1_000_000
}

/// Adds `delta` targets of `status` to a scope's counter.
pub fn bump(conn: &dyn Sql, campaign: &str, account: &str, region: &str, status: i32, delta: i64) -> StoreResult<()> {
    if delta == 0 {
        return Ok(());
    }
    conn.prepare_cached(
        "INSERT INTO counters (campaign_id, account_id, region, status, count) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (campaign_id, account_id, region, status) DO UPDATE SET count = counters.count + excluded.count",
    )?
    .execute(params![campaign, account, region, status, delta])?;
    Ok(())
}

/// Adds each `(status, delta)` to a scope's counters, in one statement.
pub fn bump_all(
    conn: &dyn Sql,
    (campaign, account, region): (&str, &str, &str),
    deltas: &std::collections::BTreeMap<i32, i64>,
) -> StoreResult<()> {
    let moved: Vec<(i64, i64)> = deltas
        .iter()
        .filter(|&(_, &delta)| delta != 0)
        .map(|(&status, &delta)| (i64::from(status), delta))
        .collect();
    if moved.is_empty() {
        return Ok(());
    }
    let rows = (0..moved.len())
        .map(|i| format!("(?1, ?2, ?3, ?{}, ?{})", 4 + 2 * i, 5 + 2 * i))
        .collect::<Vec<_>>()
        .join(", ");
    let mut args = vec![Value::Text(campaign), Value::Text(account), Value::Text(region)];
    args.extend(
        moved
            .iter()
            .flat_map(|&(status, delta)| [Value::Int(status), Value::Int(delta)]),
    );
    conn.execute_values(
        &format!(
            "INSERT INTO counters (campaign_id, account_id, region, status, count) VALUES {rows}
             ON CONFLICT (campaign_id, account_id, region, status) DO UPDATE SET count = counters.count + excluded.count"
        ),
        &args,
    )?;
    Ok(())
}

/// Moves one target's count from `old` to `new` status.
pub fn moved(conn: &dyn Sql, campaign: &str, account: &str, region: &str, old: i32, new: i32) -> StoreResult<()> {
    if old != new {
        bump(conn, campaign, account, region, old, -1)?;
        bump(conn, campaign, account, region, new, 1)?;
    }
    Ok(())
}

/// Records an audit or lifecycle event.
pub fn event(conn: &dyn Sql, campaign: &str, kind: &str, detail: &str) -> StoreResult<()> {
    conn.prepare_cached("INSERT INTO events (campaign_id, at_ms, kind, detail) VALUES (?1, ?2, ?3, ?4)")?
        .execute(params![campaign, now_ms(), kind, detail])?;
    Ok(())
}

/// Whether a stored status is terminal.
pub fn terminal(status: i32) -> bool {
    TargetStatus::try_from(status).is_ok_and(TargetStatus::is_terminal)
}
