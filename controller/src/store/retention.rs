//! Retention: campaigns that ended longer ago than the configured horizon
//! leave the store with every row they own (scopes, tasks, leases,
//! dispatches, targets with their output (in `outputs` or in place),
//! counters and their campaign's sums, patch counters, events, its audit
//! trail, which the results export carries). A campaign
//! whose results are due in the results bucket stays until they are there.

use crate::store::sql::{Sql, params};

use super::StoreResult;
use super::campaigns;

/// The tables a campaign owns rows in, for the row-count metric.
pub const TABLES: [&str; 12] = [
    "campaigns",
    "scopes",
    "tasks",
    "leases",
    "dispatches",
    "targets",
    "outputs",
    "counters",
    "campaign_counters",
    "patch_counters",
    "events",
    "audit",
];

/// Campaigns that ended before `cutoff_ms`, oldest first; with
/// `require_export`, only those whose results are exported (or that were
/// plans, which are not). `finished_ms` is set when, and only when, a
/// campaign reaches a terminal state (`campaigns::set_state`), plans
/// included.
pub fn prunable(conn: &dyn Sql, cutoff_ms: i64, require_export: bool, limit: usize) -> StoreResult<Vec<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id FROM campaigns
         WHERE finished_ms < ?1 AND (CAST(?2 AS BIGINT) = 0 OR dry_run = 1 OR exported_ms IS NOT NULL)
         ORDER BY finished_ms LIMIT ?3",
    )?;
    let ids = stmt
        .query_map(params![cutoff_ms, i64::from(require_export), limit as i64], |r| {
            r.get::<_, String>(0)
        })?
        .collect::<StoreResult<Vec<_>>>()?;
    Ok(ids)
}

/// Deletes a campaign and every row it owns; the number of its targets.
/// A campaign that is not over is left alone (0), whatever the caller
/// thought.
pub fn prune(conn: &dyn Sql, campaign_id: &str) -> StoreResult<u64> {
    let ended = campaigns::get(conn, campaign_id)?.is_some_and(|c| c.state.is_terminal());
    if !ended {
        return Ok(0);
    }
    let of_tasks = "(SELECT id FROM tasks WHERE campaign_id = ?1)";
    conn.prepare_cached(&format!("DELETE FROM leases WHERE task_id IN {of_tasks}"))?
        .execute([campaign_id])?;
    conn.prepare_cached(&format!("DELETE FROM dispatches WHERE task_id IN {of_tasks}"))?
        .execute([campaign_id])?;
    conn.prepare_cached("DELETE FROM outputs WHERE id IN (SELECT output_id FROM targets WHERE campaign_id = ?1)")?
        .execute([campaign_id])?;
    let targets = conn
        .prepare_cached("DELETE FROM targets WHERE campaign_id = ?1")?
        .execute([campaign_id])?;
    for table in [
        "tasks",
        "counters",
        "campaign_counters",
        "patch_counters",
        "scopes",
        "events",
        "audit",
        "campaigns",
    ] {
        let column = if table == "campaigns" { "id" } else { "campaign_id" };
        conn.prepare_cached(&format!("DELETE FROM {table} WHERE {column} = ?1"))?
            .execute([campaign_id])?;
    }
    Ok(targets as u64)
}

/// Deletes the event log's rows of no campaign (a schedule's run times
/// that started nothing) from before `cutoff_ms`; how many.
pub fn prune_unattached_events(conn: &dyn Sql, cutoff_ms: i64) -> StoreResult<u64> {
    let deleted = conn
        .prepare_cached("DELETE FROM events WHERE campaign_id = '' AND at_ms < ?1")?
        .execute([cutoff_ms])?;
    Ok(deleted as u64)
}

/// Rows per table, for the metrics (a count each: run it seldom).
pub fn row_counts(conn: &dyn Sql) -> StoreResult<Vec<(&'static str, i64)>> {
    TABLES
        .iter()
        .map(|table| {
            let n: i64 = conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), (), |r| r.get(0))?;
            Ok((*table, n))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use muster_proto::v1::TaskRef;

    use muster_proto::v1::CampaignState;

    use super::*;
    use crate::store::campaigns::NewCampaign;
    use crate::store::leases::{self, LeaseAnswer, LeaseSettings};

    const DAY_MS: i64 = 86_400_000;

    /// A campaign with a row in every table it owns.
    fn campaign(conn: &dyn Sql, id: &str) {
        let new = NewCampaign::for_test(id, 3);
        campaigns::insert(conn, &new).unwrap();
        let task_id: String = conn
            .query_row("SELECT id FROM tasks WHERE campaign_id = ?1", [id], |r| r.get(0))
            .unwrap();
        let task_ref = TaskRef {
            campaign_id: id.into(),
            task_id: task_id.clone(),
            attempt: 1,
        };
        let settings = LeaseSettings {
            ttl_ms: 1_000,
            max_tasks_per_scope: 4,
        };
        assert!(matches!(
            leases::lease(conn, &task_ref, "w1", settings).unwrap(),
            LeaseAnswer::Granted(_)
        ));
        let output_id: i64 = conn
            .query_row(
                "INSERT INTO outputs (steps) VALUES (?1) RETURNING id",
                params![vec![0x0au8, 0x00]],
                |r| r.get(0),
            )
            .unwrap();
        conn.execute(
            "INSERT INTO targets (campaign_id, account_id, region, instance_id, status, task_id, output_id)
             VALUES (?1, '111111111111', 'us-east-1', 'i-1', 2, ?2, ?3)",
            params![id, task_id, output_id],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO dispatches (task_id, command_id, instance_ids, attempt) VALUES (?1, 'cmd', '[\"i-1\"]', 1)",
            [&task_id],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO counters (campaign_id, account_id, region, status, count) VALUES (?1, '111111111111', 'us-east-1', 2, 1)",
            [id],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO patch_counters (campaign_id, reported, compliant) VALUES (?1, 1, 1)",
            [id],
        )
        .unwrap();
    }

    fn rows_of(conn: &dyn Sql, id: &str) -> Vec<(&'static str, i64)> {
        TABLES
            .iter()
            .map(|table| {
                let sql = match *table {
                    "campaigns" => "SELECT COUNT(*) FROM campaigns WHERE id = ?1".to_owned(),
                    "leases" | "dispatches" => format!(
                        "SELECT COUNT(*) FROM {table} WHERE task_id IN (SELECT id FROM tasks WHERE campaign_id = ?1)"
                    ),
                    "outputs" => "SELECT COUNT(*) FROM outputs WHERE id IN (SELECT output_id FROM targets WHERE campaign_id = ?1)"
                        .to_owned(),
                    _ => format!("SELECT COUNT(*) FROM {table} WHERE campaign_id = ?1"),
                };
                (*table, conn.query_row(&sql, [id], |r| r.get(0)).unwrap())
            })
            .collect()
    }

    fn end(conn: &dyn Sql, id: &str, state: CampaignState, finished_ms: i64, exported: bool) {
        conn.execute(
            "UPDATE campaigns SET state = ?2, finished_ms = ?3, exported_ms = ?4 WHERE id = ?1",
            params![id, state as i32, finished_ms, exported.then_some(finished_ms)],
        )
        .unwrap();
    }

    crate::store::testing::store_matrix! {
        fn campaigns_past_the_horizon_go_with_their_rows_and_the_rest_stay(conn) {
            let now = crate::store::records::now_ms();
            for id in ["old", "old-unexported", "old-plan", "recent", "running"] {
                campaign(&conn, id);
                assert!(
                    rows_of(&conn, id).iter().all(|(_, n)| *n > 0),
                    "{id}: {:?}",
                    rows_of(&conn, id)
                );
            }
            end(&conn, "old", CampaignState::Succeeded, now - 100 * DAY_MS, true);
            end(
                &conn,
                "old-unexported",
                CampaignState::Failed,
                now - 100 * DAY_MS,
                false,
            );
            // A plan ends PLANNED and is never exported.
            conn.execute("UPDATE campaigns SET dry_run = 1 WHERE id = 'old-plan'", ())
                .unwrap();
            end(&conn, "old-plan", CampaignState::Planned, now - 100 * DAY_MS, false);
            end(&conn, "recent", CampaignState::Succeeded, now - DAY_MS, true);
            let cutoff = now - 90 * DAY_MS;

            let sorted = |mut ids: Vec<String>| {
                ids.sort();
                ids
            };
            assert_eq!(
                sorted(prunable(&conn, cutoff, true, 10).unwrap()),
                vec!["old".to_owned(), "old-plan".to_owned()]
            );
            assert_eq!(
                sorted(prunable(&conn, cutoff, false, 10).unwrap()),
                vec!["old".to_owned(), "old-plan".to_owned(), "old-unexported".to_owned()]
            );
            assert!(
                prune(&conn, "old-plan").unwrap() > 0,
                "a plan past the horizon goes too"
            );
            assert!(rows_of(&conn, "old-plan").iter().all(|(_, n)| *n == 0));

            let kept: Vec<_> = ["old-unexported", "recent", "running"]
                .iter()
                .map(|id| rows_of(&conn, id))
                .collect();
            assert_eq!(prune(&conn, "old").unwrap(), 1, "its one target");
            assert!(
                rows_of(&conn, "old").iter().all(|(_, n)| *n == 0),
                "nothing of it is left: {:?}",
                rows_of(&conn, "old")
            );
            let after: Vec<_> = ["old-unexported", "recent", "running"]
                .iter()
                .map(|id| rows_of(&conn, id))
                .collect();
            assert_eq!(after, kept, "the other campaigns are untouched");
            let outputs: i64 = conn.query_row("SELECT COUNT(*) FROM outputs", (), |r| r.get(0)).unwrap();
            assert_eq!(outputs, 3, "the pruned campaigns' outputs went with their targets, no others");
            assert_eq!(
                prune(&conn, "running").unwrap(),
                0,
                "a running campaign is never pruned"
            );
            assert!(rows_of(&conn, "running").iter().all(|(_, n)| *n > 0));
        }
    }
}
