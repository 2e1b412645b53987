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
