//! Leadership: one controller at a time runs the work that must not run
//! twice (reconcile, dispatch, export, retention, draining dead letters).
//! The leader holds the one `leadership` row until it expires, renewing it
//! well before; another controller takes over an expired row with the next
//! epoch. Every write the leader makes for that work checks, in the same
//! transaction, that the row still names it with its epoch (the fence), so
//! a leader that was paused past its term cannot write after another took
//! over. Time is the database's (PostgreSQL's clock), so controllers'
//! clocks need not agree.

use super::sql::{Engine, OptionalExtension as _, Sql, params};
use super::{StoreError, StoreResult};

/// A leader's term: who, and which epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The controller.
    pub holder: String,
    /// Grows with every change of leader.
    pub epoch: i64,
}

/// The database's clock, in milliseconds since the Unix epoch.
pub fn db_now_ms(conn: &dyn Sql) -> StoreResult<i64> {
    match conn.engine() {
        Engine::Postgres => conn.query_row(
            "SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
            (),
            |r| r.get(0),
        ),
        Engine::Sqlite => Ok(super::records::now_ms()),
    }
}

/// The row as it is: (holder, epoch, expires_ms).
pub fn current(conn: &dyn Sql) -> StoreResult<Option<(String, i64, i64)>> {
    conn.query_row(
        "SELECT holder, epoch, expires_ms FROM leadership WHERE id = 1",
        (),
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
    .optional()
}

/// Takes or renews leadership for `holder` for `ttl_ms`: renews its own
/// term, takes an expired (or absent) one with the next epoch, and
/// otherwise leaves the row alone. The term `holder` now has, if any.
///
/// On SQLite the store belongs to one process (it holds the data
/// directory's lock), so a term of another holder can only be a previous
/// run's: it is taken at once rather than waited out.
pub fn claim(conn: &dyn Sql, holder: &str, ttl_ms: i64) -> StoreResult<Option<Fence>> {
    let sole = conn.engine() == Engine::Sqlite;
    let now = db_now_ms(conn)?;
    let expires = now.saturating_add(ttl_ms);
    match current(conn)? {
        None => {
            conn.execute(
                "INSERT INTO leadership (id, holder, epoch, expires_ms) VALUES (1, ?1, 1, ?2)",
                params![holder, expires],
            )?;
            Ok(Some(Fence {
                holder: holder.to_owned(),
                epoch: 1,
            }))
        }
        Some((current, epoch, _)) if current == holder => {
            conn.execute("UPDATE leadership SET expires_ms = ?1 WHERE id = 1", params![expires])?;
            Ok(Some(Fence {
                holder: holder.to_owned(),
                epoch,
            }))
        }
        Some((_, epoch, until)) if until <= now || sole => {
            conn.execute(
                "UPDATE leadership SET holder = ?1, epoch = ?2, expires_ms = ?3 WHERE id = 1",
                params![holder, epoch + 1, expires],
            )?;
            Ok(Some(Fence {
                holder: holder.to_owned(),
                epoch: epoch + 1,
            }))
        }
        Some(_) => Ok(None),
    }
}

/// What a claim came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// This controller leads, for this term.
    Leads(Fence),
    /// Another controller's term lasts.
    Follows,
    /// A newer controller migrated the schema past what this one knows
    /// (a rolling deploy under way): this one would lead campaigns it does
    /// not understand (stages, approvals it cannot read), so it leaves the
    /// lead, its own term ended at once, to a controller that knows the
    /// schema.
    Superseded {
        /// The newest migration applied.
        applied: i64,
        /// The newest this controller knows.
        known: i64,
    },
}

/// [`claim`], unless the schema is newer than this controller: then no
/// claim, and a term it holds ends now.
pub fn claim_unless_superseded(conn: &dyn Sql, holder: &str, ttl_ms: i64) -> StoreResult<Claim> {
    let (applied, known) = (super::schema::newest_applied(conn)?, super::schema::newest_known());
    if applied > known {
        conn.execute(
            "UPDATE leadership SET expires_ms = 0 WHERE id = 1 AND holder = ?1",
            params![holder],
        )?;
        return Ok(Claim::Superseded { applied, known });
    }
    Ok(claim(conn, holder, ttl_ms)?.map_or(Claim::Follows, Claim::Leads))
}

/// Ends `fence`'s term now, so that another controller takes over at once
/// (a clean shutdown). Nothing if the term is already over.
pub fn resign(conn: &dyn Sql, fence: &Fence) -> StoreResult<()> {
    conn.execute(
        "UPDATE leadership SET expires_ms = 0 WHERE id = 1 AND holder = ?1 AND epoch = ?2",
        params![fence.holder, fence.epoch],
    )?;
    Ok(())
}

/// Refuses the write unless `fence` is still the term on record.
pub fn check(conn: &dyn Sql, fence: &Fence) -> StoreResult<()> {
    match current(conn)? {
        Some((holder, epoch, _)) if holder == fence.holder && epoch == fence.epoch => Ok(()),
        now => Err(StoreError::Fenced {
            holder: fence.holder.clone(),
            epoch: fence.epoch,
            current: now.map_or_else(|| "nobody".into(), |(h, e, _)| format!("{h} (epoch {e})")),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_sqlite_a_previous_runs_term_is_taken_at_once() {
        let conn = crate::store::testing::TestDb::sqlite();
        claim(&conn, "before-restart", 60_000).unwrap().expect("leads");
        let after = claim(&conn, "after-restart", 60_000)
            .unwrap()
            .expect("the new run leads at once");
        assert_eq!(after.epoch, 2);
    }

    /// Records a migration newer than this build knows, as a newer
    /// controller's start would.
    fn migrated_by_a_newer_controller(conn: &dyn Sql) -> i64 {
        let newer = crate::store::schema::newest_known() + 1;
        conn.execute(
            "INSERT INTO refinery_schema_history (version, name, applied_on, checksum) \
             VALUES (?1, 'from_the_future', '', '0')",
            params![newer as i32],
        )
        .unwrap();
        newer
    }

    crate::store::testing::store_matrix! {
        fn a_controller_leaves_the_lead_once_a_newer_one_migrated_the_schema(conn) {
            let conn = &*conn;
            let known = crate::store::schema::newest_known();
            assert_eq!(crate::store::schema::newest_applied(conn).unwrap(), known);
            let Claim::Leads(old) = claim_unless_superseded(conn, "old", 60_000).unwrap() else {
                panic!("the only controller leads")
            };
            let applied = migrated_by_a_newer_controller(conn);
            assert_eq!(
                claim_unless_superseded(conn, "old", 60_000).unwrap(),
                Claim::Superseded { applied, known },
                "it would lead campaigns it cannot read"
            );
            // Its term ended at once: the newer controller leads at its
            // first claim, not a TTL later, and the old one is fenced.
            let new = claim(conn, "new", 60_000).unwrap().expect("the newer controller leads");
            assert_eq!(new.epoch, old.epoch + 1);
            assert!(check(conn, &old).is_err(), "the old term writes nothing more");
            assert_eq!(
                claim_unless_superseded(conn, "old", 60_000).unwrap(),
                Claim::Superseded { applied, known },
                "nor does it take the lead back"
            );
        }
    }

    /// Several controllers share a store on PostgreSQL only.
    #[test]
    fn one_leader_at_a_time_and_an_old_term_is_fenced() {
        let conn = crate::store::testing::TestDb::postgres();
        let a = claim(&conn, "a", 60_000).unwrap().expect("a leads");
        assert_eq!(a.epoch, 1);
        assert_eq!(claim(&conn, "b", 60_000).unwrap(), None, "b waits while a's term lasts");
        assert_eq!(
            claim(&conn, "a", 60_000).unwrap(),
            Some(a.clone()),
            "a renews, same epoch"
        );
        check(&conn, &a).unwrap();

        // a's term runs out (a paused): b takes over with the next epoch.
        conn.execute("UPDATE leadership SET expires_ms = 0", ()).unwrap();
        let b = claim(&conn, "b", 60_000).unwrap().expect("b takes over");
        assert_eq!(b.epoch, 2);
        let refused = check(&conn, &a).unwrap_err().to_string();
        assert!(
            refused.contains("epoch 1") && refused.contains("b (epoch 2)"),
            "{refused}"
        );
        assert_eq!(claim(&conn, "a", 60_000).unwrap(), None, "a, back, is a follower");

        resign(&conn, &a).unwrap();
        check(&conn, &b).expect("a stale resign changes nothing");
        resign(&conn, &b).unwrap();
        assert_eq!(
            claim(&conn, "a", 60_000).unwrap().map(|f| f.epoch),
            Some(3),
            "a resigned term is taken at once"
        );
    }
}
