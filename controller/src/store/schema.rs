//! The schema, as numbered migrations per engine (`controller/migrations/`),
//! applied in order by refinery, which records each one (with a checksum)
//! in `refinery_schema_history`. A released migration is never edited, only
//! followed by another; both engines keep the same numbers.

use refinery::{Runner, Target};

use super::{StoreError, StoreResult};

mod sqlite_migrations {
    refinery::embed_migrations!("migrations/sqlite");
}

mod postgres_migrations {
    refinery::embed_migrations!("migrations/postgres");
}

fn refused(error: &refinery::Error) -> StoreError {
    use refinery::error::Kind;
    let hint = match error.kind() {
        Kind::MissingVersion(_) => {
            "; the database has a migration this controller does not know: it was written by a newer muster, upgrade the controller"
        }
        Kind::DivergentVersion(_, _) => "; a migration applied to the database differs from this controller's",
        _ => "",
    };
    StoreError::Migration(format!("{error}{hint}"))
}

fn report(engine: &str, report: &refinery::Report) {
    for migration in report.applied_migrations() {
        tracing::info!(
            engine,
            version = migration.version(),
            name = migration.name(),
            "store schema migrated"
        );
    }
}

/// The newest migration this build knows (both engines keep the same
/// numbers). Read once: every leadership claim and metrics scrape asks, and
/// making refinery's runner parses and checksums every migration.
pub fn newest_known() -> i64 {
    static NEWEST: std::sync::LazyLock<i64> = std::sync::LazyLock::new(|| {
        sqlite_migrations::migrations::runner()
            .get_migrations()
            .iter()
            .map(|m| i64::from(m.version()))
            .max()
            .unwrap_or(0)
    });
    *NEWEST
}

/// The newest migration applied to the database: past [`newest_known`]
/// once a newer controller migrated it.
pub fn newest_applied(conn: &dyn super::sql::Sql) -> StoreResult<i64> {
    conn.query_row(
        "SELECT CAST(COALESCE(MAX(version), 0) AS BIGINT) FROM refinery_schema_history",
        (),
        |r| r.get(0),
    )
}

/// Brings a SQLite database up to date; refuses one from a newer build.
pub fn migrate_sqlite(conn: &mut rusqlite::Connection) -> StoreResult<()> {
    // Stores made before refinery kept their version in user_version only:
    // record those migrations as applied before running the rest.
    let legacy: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let tracked: i64 = conn.query_row(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'refinery_schema_history'",
        [],
        |r| r.get(0),
    )?;
    let runner = || sqlite_migrations::migrations::runner();
    if legacy > 0 && tracked == 0 {
        let version = i32::try_from(legacy).map_err(|_| StoreError::Migration(format!("user_version {legacy}")))?;
        runner()
            .set_target(Target::FakeVersion(version))
            .run(conn)
            .map_err(|e| refused(&e))?;
    }
    report("sqlite", &runner().run(conn).map_err(|e| refused(&e))?);
    Ok(())
}

/// Brings a PostgreSQL database up to date under an advisory lock, so that
/// controllers starting together migrate once; refuses one from a newer
/// build.
pub fn migrate_postgres(client: &mut postgres::Client) -> StoreResult<()> {
    let lock = super::postgres::MIGRATE_LOCK;
    client.execute("SELECT pg_advisory_lock($1)", &[&lock])?;
    let runner: Runner = postgres_migrations::migrations::runner();
    let outcome = runner.run(client).map_err(|e| refused(&e));
    client.execute("SELECT pg_advisory_unlock($1)", &[&lock])?;
    report("postgres", &outcome?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a migration may not do: the controllers of the previous
    /// release keep running on the schema while a rolling deploy replaces
    /// them, and none of their statements may break under them.
    const NOT_ADDITIVE: [&str; 5] = ["DROP TABLE", "DROP COLUMN", "RENAME", "ALTER COLUMN", "TRUNCATE"];

    /// The statements of a migration, without comments, upper-cased, one
    /// line each.
    fn statements(sql: &str) -> Vec<String> {
        let text: String = sql
            .lines()
            .map(|line| line.split("--").next().unwrap_or_default())
            .collect::<Vec<_>>()
            .join(" ");
        text.split(';')
            .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" ").to_uppercase())
            .filter(|s| !s.is_empty())
            .collect()
    }

    /// Why a statement would break a controller of the previous release
    /// still running on the migrated schema, if it would.
    fn breaks_the_previous_release(statement: &str) -> Option<String> {
        if let Some(word) = NOT_ADDITIVE.iter().find(|word| statement.contains(*word)) {
            return Some(format!("{word}: a previous controller still reads and writes it"));
        }
        let adds_required_column = statement.starts_with("ALTER TABLE")
            && statement.contains("ADD COLUMN")
            && statement.contains("NOT NULL")
            && !statement.contains("DEFAULT")
            && !statement.contains("GENERATED");
        adds_required_column
            .then(|| "a NOT NULL column without a DEFAULT: a previous controller's INSERTs do not name it".to_owned())
    }

    #[test]
    fn every_migration_only_adds_so_the_previous_controller_runs_on_the_new_schema() {
        let runners = [
            ("sqlite", sqlite_migrations::migrations::runner()),
            ("postgres", postgres_migrations::migrations::runner()),
        ];
        let mut broken = Vec::new();
        for (engine, runner) in &runners {
            for migration in runner.get_migrations() {
                for statement in statements(migration.sql().unwrap_or_default()) {
                    if let Some(why) = breaks_the_previous_release(&statement) {
                        broken.push(format!("{engine} {migration}: {why}: {statement}"));
                    }
                }
            }
        }
        assert!(broken.is_empty(), "{broken:#?}");
        assert_eq!(
            runners[0].1.get_migrations().len(),
            runners[1].1.get_migrations().len(),
            "both engines keep the same numbers"
        );
    }

    /// Counters written before V17 (by the previous release, or in a
    /// store it leaves), as rows of (campaign, account, status, count).
    const BEFORE_V17: &str = "INSERT INTO counters (campaign_id, account_id, region, status, count) VALUES
        ('c1', '111111111111', 'us-east-1', 1, 3), ('c1', '222222222222', 'us-east-1', 1, 4),
        ('c1', '111111111111', 'us-east-1', 4, 5), ('c2', '111111111111', 'eu-west-1', 1, 0)";

    fn campaign_sums(conn: &dyn super::super::sql::Sql) -> Vec<(String, i64, i64)> {
        conn.prepare("SELECT campaign_id, status, count FROM campaign_counters ORDER BY campaign_id, status")
            .unwrap()
            .query_map((), |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<StoreResult<Vec<_>>>()
            .unwrap()
    }

    fn sums_of_before_v17() -> Vec<(String, i64, i64)> {
        vec![("c1".into(), 1, 7), ("c1".into(), 4, 5), ("c2".into(), 1, 0)]
    }

    #[test]
    fn v17_sums_the_counters_a_store_already_holds() {
        let mut conn = rusqlite::Connection::open_in_memory().unwrap();
        sqlite_migrations::migrations::runner()
            .set_target(Target::Version(16))
            .run(&mut conn)
            .unwrap();
        conn.execute_batch(BEFORE_V17).unwrap();
        migrate_sqlite(&mut conn).unwrap();
        assert_eq!(campaign_sums(&conn), sums_of_before_v17());
    }

    #[test]
    fn v17_sums_the_counters_a_postgres_store_already_holds() {
        let database = super::super::testkit::TestDatabase::create();
        let mut client = postgres::Client::connect(database.url(), postgres::NoTls).unwrap();
        postgres_migrations::migrations::runner()
            .set_target(Target::Version(16))
            .run(&mut client)
            .unwrap();
        client.batch_execute(BEFORE_V17).unwrap();
        migrate_postgres(&mut client).unwrap();
        drop(client);
        let target = super::super::PostgresTarget::parse(database.url(), None, None).unwrap();
        let conn = super::super::postgres::PgConn::connect_migrated(&target).unwrap();
        assert_eq!(campaign_sums(&conn), sums_of_before_v17());
    }

    #[test]
    fn a_controller_refuses_a_schema_a_newer_one_migrated() {
        let mut conn = rusqlite::Connection::open_in_memory().unwrap();
        migrate_sqlite(&mut conn).unwrap();
        migrate_sqlite(&mut conn).expect("its own schema, again: nothing to do");
        let newer = newest_known() + 1;
        conn.execute(
            "INSERT INTO refinery_schema_history (version, name, applied_on, checksum) \
             VALUES (?1, 'from_the_future', '2026-12-05T00:00:00Z', '0')",
            [newer],
        )
        .unwrap();
        let refused = migrate_sqlite(&mut conn).unwrap_err().to_string();
        assert!(
            refused.contains(&format!("V{newer}__from_the_future"))
                && refused.contains("written by a newer muster, upgrade the controller"),
            "{refused}"
        );
    }

    #[test]
    fn a_migration_that_would_break_the_previous_controller_is_caught() {
        let findings = |sql: &str| -> Vec<String> {
            statements(sql)
                .iter()
                .filter_map(|s| breaks_the_previous_release(s))
                .collect()
        };
        for sql in [
            "ALTER TABLE targets DROP COLUMN stage;",
            "ALTER TABLE campaigns RENAME TO campaign;",
            "-- a comment\nALTER TABLE tasks ADD COLUMN owner TEXT NOT NULL;",
            "ALTER TABLE tasks ALTER COLUMN attempt TYPE BIGINT",
            "DROP TABLE audit",
        ] {
            assert_eq!(findings(sql).len(), 1, "{sql}: {:?}", findings(sql));
        }
        for sql in [
            "ALTER TABLE tasks ADD COLUMN owner TEXT NOT NULL DEFAULT ''; -- drop table in a comment",
            "ALTER TABLE targets ADD COLUMN pending BOOLEAN GENERATED ALWAYS AS (status = 1) STORED",
            "DROP INDEX targets_pending; CREATE INDEX targets_pending ON targets (campaign_id) WHERE pending",
            "CREATE TABLE leader (holder TEXT NOT NULL)",
        ] {
            assert!(findings(sql).is_empty(), "{sql}: {:?}", findings(sql));
        }
    }
}
