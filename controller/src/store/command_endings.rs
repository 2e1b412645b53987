//! Commands that Run Command's events say have ended. Facts, not state: an
//! event delivered twice (EventBridge and SQS deliver at least once) is
//! recorded once, and the first final status stays. Kept an hour, long
//! after any worker stopped waiting for them.

use super::StoreResult;
use super::sql::{Sql, params, placeholders};

/// How long an ending is kept.
pub const KEPT_MS: i64 = 3_600_000;
/// Most ids in one `IN` list.
const CHUNK: usize = 500;

/// One command's final status, as its event said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ending {
    /// The command.
    pub command_id: String,
    /// Its final status (Success, Failed, TimedOut, Cancelled).
    pub status: String,
    /// Where it ran.
    pub account_id: String,
    /// Where it ran.
    pub region: String,
}

/// Records endings received at `now_ms`; those known already are left as
/// they are. Returns how many were new; when any was, every controller's
/// waiting calls are woken at the commit ([`super::wakes`]).
pub fn record(conn: &dyn Sql, endings: &[Ending], now_ms: i64) -> StoreResult<usize> {
    let mut stmt = conn.prepare_cached(
        "INSERT INTO command_endings (command_id, status, account_id, region, received_ms)
         VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (command_id) DO NOTHING",
    )?;
    let mut new = 0;
    for e in endings {
        new += stmt.execute(params![e.command_id, e.status, e.account_id, e.region, now_ms])?;
    }
    if new > 0 {
        super::wakes::tell(conn)?;
    }
    Ok(new)
}

/// Which of `command_ids` have ended, with their statuses.
pub fn ended(conn: &dyn Sql, command_ids: &[String]) -> StoreResult<Vec<(String, String)>> {
    let mut found = Vec::new();
    for chunk in command_ids.chunks(CHUNK) {
        let mut stmt = conn.prepare(&format!(
            "SELECT command_id, status FROM command_endings WHERE command_id IN ({})",
            placeholders(1, chunk.len())
        ))?;
        let rows = stmt.query_map(chunk, |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        for row in rows {
            found.push(row?);
        }
    }
    Ok(found)
}

/// Forgets endings received before `cutoff_ms`; how many.
pub fn prune(conn: &dyn Sql, cutoff_ms: i64) -> StoreResult<usize> {
    conn.prepare_cached("DELETE FROM command_endings WHERE received_ms < ?1")?
        .execute([cutoff_ms])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::store_matrix;

    fn ending(id: &str, status: &str) -> Ending {
        Ending {
            command_id: id.into(),
            status: status.into(),
            account_id: "111111111111".into(),
            region: "eu-west-1".into(),
        }
    }

    store_matrix! {
        fn an_ending_is_recorded_once_and_the_first_status_stays(conn) {
            let first = [ending("c1", "Success"), ending("c2", "Failed")];
            assert_eq!(record(&conn, &first, 1_000).unwrap(), 2);
            // Delivered again, and a late, different status: neither counts.
            let again = [ending("c1", "Success"), ending("c2", "Cancelled")];
            assert_eq!(record(&conn, &again, 2_000).unwrap(), 0);
            let ids: Vec<String> = ["c2", "c1", "c3"].map(String::from).to_vec();
            let mut found = ended(&conn, &ids).unwrap();
            found.sort();
            assert_eq!(found, [("c1".into(), "Success".into()), ("c2".into(), "Failed".into())]);
        }

        fn many_ids_are_asked_in_chunks_and_old_endings_are_pruned(conn) {
            let many: Vec<Ending> = (0..1_200).map(|i| ending(&format!("c{i}"), "Success")).collect();
            record(&conn, &many, 1_000).unwrap();
            record(&conn, &[ending("late", "Success")], 5_000).unwrap();
            let ids: Vec<String> = (0..1_300).map(|i| format!("c{i}")).collect();
            assert_eq!(ended(&conn, &ids).unwrap().len(), 1_200);
            assert_eq!(prune(&conn, 2_000).unwrap(), 1_200);
            let found = ended(&conn, &["c1".to_owned(), "late".to_owned()]).unwrap();
            assert_eq!(found, [("late".into(), "Success".into())]);
        }
    }
}
