//! Moving a SQLite store into PostgreSQL (`muster-controller copy-store`):
//! how an installation that began on the embedded store, 0.1's hub
//! included, goes to several controllers on one database and keeps its
//! campaigns, schedules, audit trail and events.
//!
//! The copy is row for row: every table of the schema (but the sums that
//! the database's triggers derive from the copied rows, [`DERIVED`], which
//! are compared instead), every column a write stores (not PostgreSQL's
//! generated ones), and the ids as they were, since
//! notification cursors and watchers' resume points name events by id. Each
//! identity then continues after the highest id SQLite ever handed out, so
//! no id is given twice. The source is first brought up to this build's
//! schema, as starting this controller on it would; both sides are then at
//! the same version, and their tables and columns must match one for one.
//!
//! Nothing is half-done: the copy runs in one PostgreSQL transaction under
//! the store's write lock and commits only after every table's count was
//! compared with the source's. It refuses a database that holds anything
//! already, or that a controller leads. The source's data directory stays
//! locked throughout, so no controller can write to it meanwhile.
//!
//! What controllers on the copy do next is what the SQLite controller would
//! have done at a restart: the copied leadership term has ended, leases
//! still marked live expire and their tasks go back to the queue under the
//! same rules, and a command already sent is found again (by its record,
//! or by the worker's lookup of its Comment) rather than sent twice.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::postgres::{PgConn, Target, WRITE_LOCK};
use super::sql::{Datum, Sql, Value};
use super::{StoreError, StoreResult, leadership, schema, sqlite};

/// A long table is told this often, in rows, as well as when it is done.
const PROGRESS_EVERY: u64 = 100_000;

/// Rows per INSERT: PostgreSQL binds at most 65,535 parameters.
const ROWS_PER_INSERT: usize = 500;
const PARAMS_PER_INSERT: usize = 30_000;

/// Why a copy did not happen, so that the database holds nothing of it;
/// or, for [`CopyError::CommitUnknown`] alone, may not have.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    /// A store could not be read, reached or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Copying a table failed part way; the transaction was rolled back.
    #[error("table {table}: {source}")]
    Table {
        /// The table.
        table: String,
        /// What went wrong.
        source: StoreError,
    },
    /// The COMMIT's answer did not come: the database holds the whole copy
    /// or none of it.
    #[error(
        "database_url: the answer to the copy's COMMIT was lost ({0}), so the database holds the whole copy or none \
         of it; run copy-store again: it copies into the empty database, or says that it holds this store's copy"
    )]
    CommitUnknown(StoreError),
    /// The copy is not allowed: the setting named and the rule it broke.
    #[error("{field}: {message}")]
    Refused {
        /// The setting: `data_dir` or `database_url`.
        field: &'static str,
        /// What is wrong and what to do.
        message: String,
    },
}

impl From<rusqlite::Error> for CopyError {
    fn from(error: rusqlite::Error) -> Self {
        Self::Store(error.into())
    }
}

fn refused(field: &'static str, message: impl Into<String>) -> CopyError {
    CopyError::Refused {
        field,
        message: message.into(),
    }
}

/// How far the copy is: a table's rows so far, and whether it is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress<'a> {
    /// The table being copied.
    pub table: &'a str,
    /// Its rows copied so far.
    pub rows: u64,
    /// Whether they are all of them (and counted in the database).
    pub done: bool,
}

/// What was copied: each table and its rows, in the order copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    /// The schema version both stores are at.
    pub schema: i64,
    /// (table, rows).
    pub tables: Vec<(String, u64)>,
}

impl Copied {
    /// Every row copied.
    pub fn rows(&self) -> u64 {
        self.tables.iter().map(|(_, rows)| rows).sum()
    }
}

/// A table as both engines have it.
#[derive(Debug)]
struct Table {
    name: String,
    /// The columns a write stores, in the source's order.
    columns: Vec<String>,
    /// The primary key, to read the source in a stable order.
    key: Vec<String>,
    /// The tables its foreign keys name, copied before it.
    parents: BTreeSet<String>,
    /// PostgreSQL identity columns: given explicitly, then moved on.
    identities: Vec<String>,
}

/// Copies the SQLite store in `data_dir` into the PostgreSQL database at
/// `target`, which must hold nothing yet, telling `progress` how far it is
/// (every [`PROGRESS_EVERY`] rows of a table, and when the table is done). The source is left as it was (but for migrating it to this
/// build's schema); the database holds the whole copy or, on any error,
/// nothing.
pub fn sqlite_into_postgres(
    data_dir: &Path,
    target: &Target,
    mut progress: impl FnMut(Progress<'_>),
) -> Result<Copied, CopyError> {
    let file = data_dir.join("muster.db");
    if !file.is_file() {
        return Err(refused(
            "data_dir",
            format!("{} holds no muster store (no muster.db)", data_dir.display()),
        ));
    }
    let _lock = sqlite::lock_data_dir(data_dir)?;
    let mut source = sqlite::open_writer(&file)?;
    schema::migrate_sqlite(&mut source)?;
    let version = schema::newest_applied(&source)?;
    let pg = PgConn::connect_migrated(target)?;
    let dest: &dyn Sql = &pg;
    let dest_version = schema::newest_applied(dest)?;
    if dest_version != version {
        return Err(refused(
            "database_url",
            format!(
                "the database is at schema V{dest_version} and the SQLite store at V{version}; both must be this build's"
            ),
        ));
    }
    // Reading the source may take a while between two statements.
    dest.execute_batch("SET idle_in_transaction_session_timeout = 60000")?;
    let read = source.transaction()?;
    let tables = matched_tables(&read, dest)?;

    dest.execute_batch(&format!("BEGIN; SELECT pg_advisory_xact_lock({WRITE_LOCK})"))?;
    let outcome = copy_tables(&read, dest, &tables, &mut progress);
    match outcome {
        Ok(tables) => {
            dest.execute_batch("COMMIT").map_err(CopyError::CommitUnknown)?;
            Ok(Copied {
                schema: version,
                tables,
            })
        }
        Err(error) => {
            if !pg.is_closed() {
                let _ = dest.execute_batch("ROLLBACK");
            }
            Err(error)
        }
    }
}

/// In the database's transaction: refuses a database in use, copies every
/// table parents first, moves the identities on, compares the counts and
/// gathers the planner's statistics.
fn copy_tables(
    source: &rusqlite::Connection,
    dest: &dyn Sql,
    tables: &[Table],
    progress: &mut impl FnMut(Progress<'_>),
) -> Result<Vec<(String, u64)>, CopyError> {
    refuse_in_use(source, dest, tables)?;
    // What a migration seeds (the lease counter at 0) gives way to the
    // source's rows.
    dest.execute_batch("DELETE FROM sequences; DELETE FROM leadership")?;
    let mut copied = Vec::with_capacity(tables.len());
    let (derived, stored): (Vec<&Table>, Vec<&Table>) = in_dependency_order(tables)
        .into_iter()
        .partition(|t| DERIVED.contains(&t.name.as_str()));
    for table in stored {
        let at = |source: StoreError| CopyError::Table {
            table: table.name.clone(),
            source,
        };
        let rows = copy_table(source, dest, table, progress).map_err(at)?;
        continue_identities(source, dest, table).map_err(at)?;
        let landed: i64 = dest
            .query_row(&format!("SELECT COUNT(*) FROM {}", quoted(&table.name)), (), |r| {
                r.get(0)
            })
            .map_err(at)?;
        if u64::try_from(landed).ok() != Some(rows) {
            return Err(at(StoreError::Corrupt(format!(
                "{rows} rows read from SQLite but {landed} in the database; nothing was committed"
            ))));
        }
        progress(Progress {
            table: &table.name,
            rows,
            done: true,
        });
        copied.push((table.name.clone(), rows));
    }
    for table in derived {
        let rows = same_derived_rows(source, dest, &table.name).map_err(|source| CopyError::Table {
            table: table.name.clone(),
            source,
        })?;
        progress(Progress {
            table: &table.name,
            rows,
            done: true,
        });
        copied.push((table.name.clone(), rows));
    }
    // The SQLite controller's term is over: a controller on the copy leads
    // at its first claim, with the next epoch.
    dest.execute_batch("UPDATE leadership SET expires_ms = 0")?;
    // The planner's statistics, as they would be after autovacuum caught up:
    // the first controllers' queries need not meet empty-table estimates.
    dest.execute_batch("ANALYZE")?;
    Ok(copied)
}

/// Tables the destination's triggers fill from the rows they sum, as the
/// copied rows land: copying them too would count everything twice.
const DERIVED: [&str; 1] = ["campaign_counters"];

/// Checks that the destination derived `table` (a campaign's counters) as
/// the source holds it, row for row; its row count.
fn same_derived_rows(source: &rusqlite::Connection, dest: &dyn Sql, table: &str) -> Result<u64, StoreError> {
    let select = format!(
        "SELECT campaign_id, status, count FROM {} ORDER BY campaign_id, status",
        quoted(table)
    );
    let read = |conn: &dyn Sql| {
        conn.prepare(&select)?
            .query_map((), |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
            })?
            .collect::<StoreResult<Vec<_>>>()
    };
    let (theirs, ours) = (read(source)?, read(dest)?);
    if theirs != ours {
        let differs = theirs.iter().zip(&ours).find(|(a, b)| a != b).map_or_else(
            || format!("{} rows in SQLite, {} in the database", theirs.len(), ours.len()),
            |(a, b)| format!("SQLite has {a:?} where the database has {b:?}"),
        );
        return Err(StoreError::Corrupt(format!(
            "the copied counters do not sum as the source's: {differs}; nothing was committed"
        )));
    }
    Ok(theirs.len() as u64)
}

/// Refuses a database that a controller leads or that holds any row a
/// migration did not put there, saying so when what it holds is this
/// store's copy (an earlier copy whose end was not seen).
fn refuse_in_use(source: &rusqlite::Connection, dest: &dyn Sql, tables: &[Table]) -> Result<(), CopyError> {
    let now = leadership::db_now_ms(dest)?;
    if let Some((holder, _, expires_ms)) = leadership::current(dest)?
        && expires_ms > now
    {
        return Err(refused(
            "database_url",
            format!(
                "controller {holder} leads this database (for {} ms more); stop every controller on it, then copy",
                expires_ms - now
            ),
        ));
    }
    let mut held = Vec::new();
    for table in tables.iter().filter(|t| t.name != "leadership") {
        let filter = if table.name == "sequences" {
            " WHERE value <> 0"
        } else {
            ""
        };
        let rows: i64 = dest.query_row(
            &format!("SELECT COUNT(*) FROM {}{filter}", quoted(&table.name)),
            (),
            |r| r.get(0),
        )?;
        if rows > 0 {
            held.push(format!("{rows} in {}", table.name));
        }
    }
    if held.is_empty() {
        return Ok(());
    }
    let mut same = true;
    for table in tables {
        let count = format!("SELECT COUNT(*) FROM {}", quoted(&table.name));
        let theirs: i64 = source.query_row(&count, [], |r| r.get(0))?;
        let ours: i64 = dest.query_row(&count, (), |r| r.get(0))?;
        same &= theirs == ours;
    }
    if same {
        return Err(refused(
            "database_url",
            "the database already holds this store's copy (every table's count matches): an earlier copy-store \
             committed it; start the controllers with --database-url",
        ));
    }
    Err(refused(
        "database_url",
        format!(
            "the database already holds rows ({}); copy-store fills only a new, empty store",
            held.join(", ")
        ),
    ))
}

/// Reads the source's table in key order and inserts it in batches.
fn copy_table(
    source: &rusqlite::Connection,
    dest: &dyn Sql,
    table: &Table,
    progress: &mut impl FnMut(Progress<'_>),
) -> Result<u64, StoreError> {
    let columns = table.columns.iter().map(|c| quoted(c)).collect::<Vec<_>>().join(", ");
    let key = table.key.iter().map(|c| quoted(c)).collect::<Vec<_>>().join(", ");
    let mut select = source.prepare(&format!("SELECT {columns} FROM {} ORDER BY {key}", quoted(&table.name)))?;
    let width = table.columns.len();
    let per_insert = ROWS_PER_INSERT.min(PARAMS_PER_INSERT / width).max(1);
    let mut rows = select.query([])?;
    let mut batch: Vec<Datum> = Vec::with_capacity(per_insert * width);
    let mut copied = 0u64;
    while let Some(row) = rows.next()? {
        for i in 0..width {
            batch.push(sqlite::datum(row.get_ref(i)?)?);
        }
        if batch.len() == per_insert * width {
            let before = copied;
            copied += insert(dest, table, &columns, &batch)?;
            batch.clear();
            if copied / PROGRESS_EVERY > before / PROGRESS_EVERY {
                progress(Progress {
                    table: &table.name,
                    rows: copied,
                    done: false,
                });
            }
        }
    }
    if !batch.is_empty() {
        copied += insert(dest, table, &columns, &batch)?;
    }
    Ok(copied)
}

/// One multi-row INSERT of `values`, a whole number of rows.
fn insert(dest: &dyn Sql, table: &Table, columns: &str, values: &[Datum]) -> Result<u64, StoreError> {
    let width = table.columns.len();
    let rows = values.len() / width;
    let tuples = (0..rows)
        .map(|row| {
            let marks = (1..=width).map(|c| format!("?{}", row * width + c)).collect::<Vec<_>>();
            format!("({})", marks.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ");
    let overriding = if table.identities.is_empty() {
        ""
    } else {
        " OVERRIDING SYSTEM VALUE"
    };
    let sql = format!(
        "INSERT INTO {} ({columns}){overriding} VALUES {tuples}",
        quoted(&table.name)
    );
    let params: Vec<Value<'_>> = values.iter().map(Datum::as_value).collect();
    dest.execute_values(&sql, &params)?;
    Ok(rows as u64)
}

/// Moves each identity of the table past the highest id SQLite handed out
/// (`sqlite_sequence`, which remembers ids of rows deleted since) and the
/// highest copied.
fn continue_identities(source: &rusqlite::Connection, dest: &dyn Sql, table: &Table) -> Result<(), StoreError> {
    for column in &table.identities {
        let handed_out: i64 = source
            .query_row("SELECT seq FROM sqlite_sequence WHERE name = ?1", [&table.name], |r| {
                r.get(0)
            })
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(0),
                e => Err(e),
            })?;
        let copied: i64 = dest.query_row(
            &format!(
                "SELECT COALESCE(MAX({}), 0) FROM {}",
                quoted(column),
                quoted(&table.name)
            ),
            (),
            |r| r.get(0),
        )?;
        let last = handed_out.max(copied);
        if last > 0 {
            dest.query_row(
                "SELECT setval(pg_get_serial_sequence(?1, ?2), ?3)",
                super::sql::params![table.name, column, last],
                |_| Ok(()),
            )?;
        }
    }
    Ok(())
}

/// The tables of both stores, which must have the same tables and the same
/// stored columns (both are at one schema version).
fn matched_tables(source: &rusqlite::Connection, dest: &dyn Sql) -> Result<Vec<Table>, CopyError> {
    let skip = |name: &str| name.starts_with("sqlite_") || name == "refinery_schema_history";
    let names: Vec<String> = source
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<Vec<String>, _>>()?
        .into_iter()
        .filter(|name| !skip(name))
        .collect();
    let dest_names: BTreeSet<String> = dest
        .query_values(
            "SELECT CAST(table_name AS TEXT) FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'",
            &[],
        )?
        .into_iter()
        .filter_map(|row| match row.into_iter().next() {
            Some(Datum::Text(name)) if !skip(&name) => Some(name),
            _ => None,
        })
        .collect();
    same_names("tables", &names.iter().cloned().collect(), &dest_names)?;
    let mut tables = Vec::with_capacity(names.len());
    for name in names {
        let mut columns = Vec::new();
        let mut key = BTreeMap::new();
        let mut stmt = source.prepare("SELECT name, pk FROM pragma_table_xinfo(?1) WHERE hidden = 0 ORDER BY cid")?;
        for row in stmt.query_map([&name], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
            let (column, pk) = row?;
            if pk > 0 {
                key.insert(pk, column.clone());
            }
            columns.push(column);
        }
        let parents = source
            .prepare("SELECT DISTINCT \"table\" FROM pragma_foreign_key_list(?1)")?
            .query_map([&name], |r| r.get(0))?
            .collect::<Result<BTreeSet<String>, _>>()?;
        let mut dest_columns = BTreeSet::new();
        let mut identities = Vec::new();
        for row in dest.query_values(
            "SELECT CAST(column_name AS TEXT), CAST(is_identity AS TEXT) FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = ?1 AND is_generated = 'NEVER'",
            &[Value::Text(&name)],
        )? {
            if let [Datum::Text(column), Datum::Text(identity)] = row.as_slice() {
                if identity == "YES" {
                    identities.push(column.clone());
                }
                dest_columns.insert(column.clone());
            }
        }
        same_names(
            &format!("table {name}: columns"),
            &columns.iter().cloned().collect(),
            &dest_columns,
        )?;
        if key.is_empty() {
            return Err(schema_mismatch(format!(
                "table {name} has no primary key to copy it by"
            )));
        }
        tables.push(Table {
            name,
            columns,
            key: key.into_values().collect(),
            parents,
            identities,
        });
    }
    Ok(tables)
}

/// Refuses the copy unless SQLite and the database name the same `what`.
fn same_names(what: &str, sqlite: &BTreeSet<String>, database: &BTreeSet<String>) -> Result<(), CopyError> {
    if sqlite == database {
        return Ok(());
    }
    Err(schema_mismatch(format!(
        "{what} only in SQLite: {:?}; only in the database: {:?}",
        sqlite.difference(database).collect::<Vec<_>>(),
        database.difference(sqlite).collect::<Vec<_>>()
    )))
}

fn schema_mismatch(detail: impl std::fmt::Display) -> CopyError {
    refused(
        "database_url",
        format!(
            "the two stores' schemas differ although both are at this build's version ({detail}); nothing was copied"
        ),
    )
}

/// The tables, each after those its foreign keys name.
fn in_dependency_order(tables: &[Table]) -> Vec<&Table> {
    let mut done: BTreeSet<&str> = BTreeSet::new();
    let mut ordered = Vec::with_capacity(tables.len());
    while ordered.len() < tables.len() {
        let before = ordered.len();
        for table in tables {
            let ready = table
                .parents
                .iter()
                .all(|parent| parent == &table.name || done.contains(parent.as_str()));
            if !done.contains(table.name.as_str()) && ready {
                done.insert(&table.name);
                ordered.push(table);
            }
        }
        if ordered.len() == before {
            // A cycle (the schema has none): the rest in name order, and the
            // database's own checks say what is wrong.
            ordered.extend(tables.iter().filter(|t| !done.contains(t.name.as_str())));
            break;
        }
    }
    ordered
}

/// An identifier, quoted for both engines.
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testkit::TestDatabase;

    /// A row in every table, with the values a copy could get wrong: NULLs,
    /// bytes that are not text, text that is not ASCII, the largest
    /// integer, negative numbers, and an event id SQLite handed out and
    /// then deleted.
    const EVERY_TABLE: &str = r#"
        INSERT INTO campaigns (id, created_ms, submitted_by, client_token, spec, spec_sha256, dry_run, state,
                               started_ms, error_threshold, window_end_ms, external_id, approval_rule)
        VALUES ('c1', 1700000000000, 'alice', 'tok-1', X'0a0362617200ff', 'abc', 0, 3, 1700000000500, NULL,
                9223372036854775807, 'ext-1', 'two people'),
               ('c2', 1700000001000, 'bob ✓ é', '', X'', 'def', 1, 5, NULL, 2, NULL, '', '');
        INSERT INTO scopes (campaign_id, account_id, region, state, error, managed)
        VALUES ('c1', '111111111111', 'us-east-1', 2, '', 3),
               ('c1', '222222222222', 'eu-west-1', 4, 'AccessDenied: é "quoted"', 0);
        INSERT INTO tasks (id, campaign_id, kind, account_id, region, state, attempt, max_attempts, lease_id,
                           lease_owner, lease_expires_ms, created_ms, enqueued_ms)
        VALUES ('t1', 'c1', 1, '111111111111', 'us-east-1', 2, 1, 3, 7, 'worker-a', 1700000009000,
                1700000000100, 1700000000200);
        INSERT INTO leases (lease_id, task_id, attempt, worker_id, granted_ms, ended_ms, outcome, granted_for)
        VALUES (7, 't1', 1, 'worker-a', 1700000000300, NULL, '', 'worker-a@hub');
        INSERT INTO outputs (id, steps) VALUES (41, X'0a040a026f6b');
        INSERT INTO targets (campaign_id, account_id, region, instance_id, status, exit_code, task_id, command_id,
                             steps, tags, stage, output_id, patch_state)
        VALUES ('c1', '111111111111', 'us-east-1', 'i-1', 3, -1, 't1', 'cmd-1', X'00ff10', '{"env":"prod"}', 1, NULL,
                NULL),
               ('c1', '111111111111', 'us-east-1', 'i-2', 1, NULL, NULL, '', NULL, '', 0, NULL, NULL),
               ('c1', '111111111111', 'us-east-1', 'i-3', 2, 0, 't1', 'cmd-1', NULL, '', 0, 41, X'0a0753636f6e3738');
        INSERT INTO patch_counters (campaign_id, reported, compliant, missing_targets, missing_patches)
        VALUES ('c1', 1, 0, 1, 3);
        INSERT INTO dispatches (task_id, command_id, instance_ids, sent_ms, attempt, adopted, step)
        VALUES ('t1', 'cmd-1', '["i-1"]', 1700000000400, 1, 1, 0);
        INSERT INTO counters (campaign_id, account_id, region, status, count)
        VALUES ('c1', '111111111111', 'us-east-1', 3, 1), ('c1', '111111111111', 'us-east-1', 1, 1);
        INSERT INTO events (campaign_id, at_ms, kind, detail)
        VALUES ('c1', 1, 'submitted', '{}'), ('c1', 2, 'started', '{"by":"alice"}'), ('c1', 3, 'gone', '');
        DELETE FROM events WHERE id = 3;
        UPDATE sequences SET value = 7 WHERE name = 'lease_id';
        INSERT INTO leadership (id, holder, epoch, expires_ms) VALUES (1, 'controller-sqlite', 4, 9999999999999);
        INSERT INTO audit (at_ms, principal, via, peer, action, campaign_id, detail)
        VALUES (1, 'alice', 'token', '127.0.0.1:5000', 'SubmitCampaign', 'c1', '{}');
        INSERT INTO notification_cursors (webhook, event_id) VALUES ('ops', 2);
        INSERT INTO notification_failures (webhook, event_id, campaign_id, at_ms, error)
        VALUES ('ops', 1, 'c1', 5, 'HTTP 500');
        INSERT INTO schedules (name, version, next_run_ms, created_ms) VALUES ('nightly', 2, 1700086400000, 1);
        INSERT INTO schedule_versions (name, version, spec, owner, owner_via, owner_arn, created_ms)
        VALUES ('nightly', 1, X'0a01', 'alice', 'token', '', 1),
               ('nightly', 2, X'0a02', 'alice', 'token', 'arn:aws:iam::111111111111:role/Ops', 2);
        INSERT INTO schedule_runs (name, scheduled_ms, version, outcome, campaign_id, reason, recorded_ms)
        VALUES ('nightly', 1700000000000, 1, 1, 'c1', '', 3);
        INSERT INTO command_endings (command_id, status, account_id, region, received_ms)
        VALUES ('cmd-1', 'Success', '111111111111', 'us-east-1', 4);
    "#;

    /// A data directory holding a store at this build's schema with
    /// `rows` in it.
    fn sqlite_store(rows: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let mut conn = sqlite::open_writer(&dir.path().join("muster.db")).unwrap();
        schema::migrate_sqlite(&mut conn).unwrap();
        conn.execute_batch(rows).unwrap();
        dir
    }

    fn target(database: &TestDatabase) -> Target {
        Target::parse(database.url(), None, None).unwrap()
    }

    fn copy(dir: &Path, database: &TestDatabase) -> Result<Copied, CopyError> {
        sqlite_into_postgres(dir, &target(database), |_| {})
    }

    /// The tables of the SQLite store, read on its own (not as the copy
    /// reads them).
    fn sqlite_tables(conn: &rusqlite::Connection) -> Vec<String> {
        conn.prepare(
            "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite%' \
             AND name <> 'refinery_schema_history' ORDER BY name",
        )
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
    }

    /// Every column of `table` (generated ones too), every row, sorted.
    fn dump(conn: &dyn Sql, columns: &[String], table: &str) -> Vec<Vec<Datum>> {
        let mut rows = conn
            .query_values(&format!("SELECT {} FROM {table}", columns.join(", ")), &[])
            .unwrap();
        rows.sort_by_key(|row| format!("{row:?}"));
        rows
    }

    fn postgres(database: &TestDatabase) -> PgConn {
        PgConn::connect(&target(database)).unwrap()
    }

    fn count(conn: &dyn Sql, table: &str) -> i64 {
        conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), (), |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn every_row_of_every_table_arrives_as_it_was() {
        let dir = sqlite_store(EVERY_TABLE);
        let database = TestDatabase::create();
        let mut told = Vec::new();
        let copied = sqlite_into_postgres(dir.path(), &target(&database), |p| {
            told.push((p.table.to_owned(), p.rows, p.done));
        })
        .unwrap();
        let told: Vec<(String, u64)> = told
            .into_iter()
            .map(|(table, rows, done)| {
                assert!(done, "a table of a few rows is told once, when done");
                (table, rows)
            })
            .collect();
        assert_eq!(copied.tables, told, "each table is told as it is done");
        assert_eq!(copied.schema, schema::newest_known());

        let source = sqlite::open_reader(&dir.path().join("muster.db")).unwrap();
        let dest = postgres(&database);
        let tables = sqlite_tables(&source);
        let mut copied_names: Vec<String> = copied.tables.iter().map(|(t, _)| t.clone()).collect();
        copied_names.sort();
        assert_eq!(copied_names, tables, "every table is copied");
        for table in &tables {
            let columns: Vec<String> = source
                .prepare("SELECT name FROM pragma_table_xinfo(?1)")
                .unwrap()
                .query_map([table], |r| r.get(0))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            let mut expected = dump(&source, &columns, table);
            assert!(
                !expected.is_empty(),
                "table {table} has no row in EVERY_TABLE: give it one, or its copy is not tested"
            );
            if table == "leadership" {
                // The SQLite controller's term, ended in the copy.
                let expires = columns.iter().position(|c| c == "expires_ms").unwrap();
                expected[0][expires] = Datum::Int(0);
            }
            assert_eq!(dump(&dest, &columns, table), expected, "table {table}");
            let reported = copied.tables.iter().find(|(t, _)| t == table).unwrap().1;
            assert_eq!(reported, expected.len() as u64, "the count told for {table}");
        }
    }

    #[test]
    fn the_copy_goes_on_where_sqlite_left_off() {
        let dir = sqlite_store(EVERY_TABLE);
        let database = TestDatabase::create();
        copy(dir.path(), &database).unwrap();
        let dest = postgres(&database);
        let dest: &dyn Sql = &dest;

        // SQLite handed out event 3 and deleted it: the next is 4, so a
        // notification cursor or a watcher's resume point never sees an id
        // twice.
        let next: i64 = dest
            .query_row(
                "INSERT INTO events (campaign_id, at_ms, kind, detail) VALUES ('c1', 9, 'next', '') RETURNING id",
                (),
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(next, 4);
        let audit: i64 = dest
            .query_row(
                "INSERT INTO audit (at_ms, principal, via, peer, action, detail) \
                 VALUES (9, 'bob', 'token', '', 'GetCampaign', '') RETURNING id",
                (),
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(audit, 2);
        let output: i64 = dest
            .query_row(
                "INSERT INTO outputs (steps) VALUES (?1) RETURNING id",
                crate::store::sql::params![vec![1u8]],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(output, 42, "outputs go on after the highest copied id");

        // The SQLite controller's term ended: a controller on the copy leads
        // at once, with the next epoch.
        let fence = leadership::claim(dest, "controller-pg", 15_000)
            .unwrap()
            .expect("leads at its first claim");
        assert_eq!(fence.epoch, 5);

        // The planner knows the tables' sizes (ANALYZE ran with the copy).
        let estimated: i64 = dest
            .query_row(
                "SELECT CAST(reltuples AS BIGINT) FROM pg_class WHERE relname = 'targets'",
                (),
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(
            estimated, 3,
            "the planner counts the copied targets (-1: never analyzed)"
        );

        // And the campaign reads as it did.
        let campaign = crate::store::campaigns::get(dest, "c1").unwrap().expect("campaign c1");
        let proto = crate::store::campaigns::to_proto(dest, &campaign, crate::store::campaigns::Detail::Full).unwrap();
        assert_eq!(proto.scopes.len(), 2);
        assert_eq!(
            crate::store::campaigns::submitted_external_id(dest, "c1").unwrap(),
            "ext-1"
        );
    }

    #[test]
    fn a_database_that_holds_anything_is_refused_and_left_as_it_was() {
        let database = TestDatabase::create();
        copy(sqlite_store(EVERY_TABLE).path(), &database).unwrap();
        let dest = postgres(&database);
        let before = count(&dest, "targets");

        let other = sqlite_store(
            "INSERT INTO campaigns (id, created_ms, submitted_by, client_token, spec, spec_sha256, dry_run, state) \
             VALUES ('other', 1, 'carol', '', X'', '', 0, 1)",
        );
        let Err(CopyError::Refused { field, message }) = copy(other.path(), &database) else {
            panic!("a second copy into the same database is refused");
        };
        assert_eq!(field, "database_url");
        assert!(
            message.contains("already holds rows") && message.contains("2 in campaigns"),
            "{message}"
        );
        assert_eq!(count(&dest, "targets"), before);
        assert_eq!(
            dest.query_values("SELECT id FROM campaigns WHERE id = 'other'", &[])
                .unwrap()
                .len(),
            0,
            "nothing of the second store was written"
        );
    }

    /// What a run whose end was not seen (the COMMIT's answer lost, the
    /// process killed after it) leaves: running it again says the copy is
    /// there, and writes nothing.
    #[test]
    fn copying_again_after_a_copy_committed_says_it_is_there() {
        let database = TestDatabase::create();
        let dir = sqlite_store(EVERY_TABLE);
        copy(dir.path(), &database).unwrap();
        let Err(CopyError::Refused { field, message }) = copy(dir.path(), &database) else {
            panic!("the second copy writes nothing");
        };
        assert_eq!(field, "database_url");
        assert!(message.contains("already holds this store's copy"), "{message}");
        assert_eq!(count(&postgres(&database), "targets"), 3);
    }

    #[test]
    fn a_database_a_controller_leads_is_refused() {
        let database = TestDatabase::create();
        let dest = PgConn::connect_migrated(&target(&database)).unwrap();
        leadership::claim(&dest, "controller-running", 60_000).unwrap().unwrap();
        let Err(CopyError::Refused { field, message }) = copy(sqlite_store(EVERY_TABLE).path(), &database) else {
            panic!("a database a controller leads is refused");
        };
        assert_eq!(field, "database_url");
        assert!(message.contains("controller-running leads this database"), "{message}");
        assert_eq!(count(&dest, "campaigns"), 0);
    }

    #[test]
    fn a_missing_store_or_one_a_controller_runs_on_is_refused() {
        let database = TestDatabase::create();
        let empty = tempfile::tempdir().unwrap();
        let Err(CopyError::Refused { field, message }) = copy(empty.path(), &database) else {
            panic!("a directory without a store is refused");
        };
        assert_eq!(field, "data_dir");
        assert!(message.contains("holds no muster store"), "{message}");
        assert!(
            !empty.path().join("muster.db").exists(),
            "no empty store is made where none was"
        );

        let dir = sqlite_store(EVERY_TABLE);
        let _running = sqlite::lock_data_dir(dir.path()).unwrap();
        let error = copy(dir.path(), &database).unwrap_err();
        assert!(
            matches!(error, CopyError::Store(StoreError::Locked { .. })),
            "a store a controller holds is refused: {error}"
        );
        let dest = PgConn::connect(&target(&database)).unwrap();
        let tables = count(&dest, "information_schema.tables WHERE table_schema = current_schema()");
        assert_eq!(tables, 0, "the database was not touched");
    }

    #[test]
    fn a_row_the_database_refuses_leaves_nothing_copied() {
        // PostgreSQL's text cannot hold a NUL, SQLite's can; the schedule
        // runs are copied after the campaigns and targets.
        let dir = sqlite_store(&format!(
            "{EVERY_TABLE}; UPDATE schedule_runs SET reason = 'a' || char(0) || 'b'"
        ));
        let database = TestDatabase::create();
        let error = copy(dir.path(), &database).unwrap_err();
        let CopyError::Table { table, .. } = &error else {
            panic!("the failing table is named: {error}");
        };
        assert_eq!(table, "schedule_runs", "{error}");
        let dest = postgres(&database);
        for table in ["campaigns", "targets", "events", "audit"] {
            assert_eq!(count(&dest, table), 0, "{table}: rolled back with the rest");
        }
        // Once the row is mended, the same database takes the copy.
        let conn = rusqlite::Connection::open(dir.path().join("muster.db")).unwrap();
        conn.execute_batch("UPDATE schedule_runs SET reason = 'ab'").unwrap();
        drop(conn);
        assert!(copy(dir.path(), &database).is_ok());
    }

    #[test]
    fn sums_that_do_not_match_the_copied_counters_leave_nothing_copied() {
        // A source whose campaign sums disagree with its counters (a store
        // mended by hand, say): the copy says so and commits nothing.
        let dir = sqlite_store(&format!(
            "{EVERY_TABLE}; UPDATE campaign_counters SET count = count + 1"
        ));
        let database = TestDatabase::create();
        let error = copy(dir.path(), &database).unwrap_err();
        let CopyError::Table { table, source } = &error else {
            panic!("the failing table is named: {error}");
        };
        assert_eq!(table, "campaign_counters", "{error}");
        assert!(
            source.to_string().contains("do not sum as the source's") && source.to_string().contains("SQLite has"),
            "{source}"
        );
        let dest = postgres(&database);
        for table in ["campaigns", "counters", "campaign_counters"] {
            assert_eq!(count(&dest, table), 0, "{table}: rolled back with the rest");
        }
    }

    /// 0.1's hub kept this: the first migration, its version in
    /// `user_version`, and no refinery table.
    #[test]
    fn a_store_of_muster_0_1_is_migrated_and_copied() {
        let dir = tempfile::tempdir().unwrap();
        {
            let conn = sqlite::open_writer(&dir.path().join("muster.db")).unwrap();
            conn.execute_batch(include_str!("../../migrations/sqlite/V1__initial.sql"))
                .unwrap();
            conn.execute_batch(
                "PRAGMA user_version = 1;
                 INSERT INTO campaigns (id, created_ms, submitted_by, client_token, spec, spec_sha256, dry_run,
                                        state, finished_ms)
                 VALUES ('old', 1690000000000, 'alice', '', X'', 'x', 0, 4, 1690000005000);
                 INSERT INTO scopes (campaign_id, account_id, region, state) VALUES ('old', '111111111111', 'us-east-1', 3);
                 INSERT INTO targets (campaign_id, account_id, region, instance_id, status, exit_code)
                 VALUES ('old', '111111111111', 'us-east-1', 'i-1', 3, 0);
                 INSERT INTO counters VALUES ('old', '111111111111', 'us-east-1', 3, 1);
                 INSERT INTO events (campaign_id, at_ms, kind, detail) VALUES ('old', 1, 'submitted', '{}');",
            )
            .unwrap();
        }
        let database = TestDatabase::create();
        let copied = copy(dir.path(), &database).unwrap();
        assert_eq!(copied.schema, schema::newest_known());
        let dest = postgres(&database);
        let dest: &dyn Sql = &dest;
        let campaign = crate::store::campaigns::get(dest, "old")
            .unwrap()
            .expect("0.1's campaign");
        let proto = crate::store::campaigns::to_proto(dest, &campaign, crate::store::campaigns::Detail::Full).unwrap();
        assert_eq!(proto.scopes.len(), 1);
        assert_eq!(count(dest, "targets"), 1);
        assert_eq!(count(dest, "events"), 1);
    }
}
