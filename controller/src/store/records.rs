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

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng as _, SeedableRng as _};

    use super::*;
    use crate::store::testing::store_matrix;

    /// (status, count) pairs, in status order.
    type Sums = Vec<(i64, i64)>;

    /// A campaign's sums as its scopes' counters add up, and as
    /// `campaign_counters` holds them; rows of 0 left out of both.
    fn sums(conn: &dyn Sql, campaign: &str) -> (Sums, Sums) {
        let read = |sql: &str| {
            conn.prepare(sql)
                .unwrap()
                .query_map([campaign], |r| Ok((r.get(0)?, r.get(1)?)))
                .unwrap()
                .collect::<StoreResult<Sums>>()
                .unwrap()
        };
        (
            read(
                "SELECT status, CAST(SUM(count) AS BIGINT) FROM counters WHERE campaign_id = ?1
                 GROUP BY status HAVING SUM(count) <> 0 ORDER BY status",
            ),
            read("SELECT status, count FROM campaign_counters WHERE campaign_id = ?1 AND count <> 0 ORDER BY status"),
        )
    }

    store_matrix! {
        /// `campaigns::totals` reads one row per status; the store's
        /// triggers keep it the sum of the scopes' counters through every
        /// write to them, by this controller or another.
        fn a_campaigns_sums_follow_every_write_to_its_scopes_counters(conn) {
            let mut rng = StdRng::seed_from_u64(17);
            let scopes = [("111111111111", "us-east-1"), ("111111111111", "eu-west-1"), ("222222222222", "us-east-1")];
            for _ in 0..400 {
                let campaign = ["c1", "c2"][rng.random_range(0..2)];
                let (account, region) = scopes[rng.random_range(0..scopes.len())];
                if rng.random_bool(0.5) {
                    let (status, delta) = (rng.random_range(1..=11), rng.random_range(-3..=3));
                    bump(&conn, campaign, account, region, status, delta).unwrap();
                } else {
                    let deltas = (0..rng.random_range(1..=3))
                        .map(|_| (rng.random_range(1..=11), rng.random_range(-3..=3)))
                        .collect();
                    bump_all(&conn, (campaign, account, region), &deltas).unwrap();
                }
            }
            for campaign in ["c1", "c2"] {
                let (summed, kept) = sums(&conn, campaign);
                assert!(summed.len() > 3, "{campaign}: {summed:?}");
                assert_eq!(kept, summed, "{campaign}: after inserts and updates");
            }

            // No muster write moves a row to another status; the sums
            // still follow one that does.
            conn.execute("UPDATE counters SET status = 99 WHERE campaign_id = 'c1' AND status = 2", ())
                .unwrap();
            let (summed, kept) = sums(&conn, "c1");
            assert_eq!(kept, summed, "after a row changed status");

            // One scope's rows deleted (no muster write does that either),
            // then written again: the sums follow.
            conn.execute("DELETE FROM counters WHERE campaign_id = 'c2' AND region = 'eu-west-1'", ())
                .unwrap();
            for status in 1..=11 {
                bump(&conn, "c2", "111111111111", "us-east-1", status, 2).unwrap();
                bump(&conn, "c2", "111111111111", "eu-west-1", status, 1).unwrap();
            }
            let (summed, kept) = sums(&conn, "c2");
            assert_eq!(kept, summed, "after a scope's rows were deleted and written again");

            // Retention deletes a campaign's counters: its sums go with
            // them, and the other campaign's stay.
            let (_, c2_before) = sums(&conn, "c2");
            conn.execute("DELETE FROM counters WHERE campaign_id = 'c1'", ()).unwrap();
            let left: i64 = conn
                .query_row("SELECT COUNT(*) FROM campaign_counters WHERE campaign_id = 'c1'", (), |r| r.get(0))
                .unwrap();
            assert_eq!(left, 0, "no row of a deleted campaign's sums is left");
            assert_eq!(sums(&conn, "c2").1, c2_before);
        }
    }
}
