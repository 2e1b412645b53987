//! The controller's durable state: embedded SQLite in WAL mode.
//!
//! Writes go through one writer thread that commits whatever is queued in one
//! transaction (group commit): a burst of ReportResults from many workers
//! costs one fsync, not one per request. Each write runs in its own savepoint,
//! so one failing write does not undo the others. A write's caller hears back
//! only after the commit: `kill -9` at any line loses nothing that was
//! acknowledged. Reads use a small pool of their own connections; WAL lets
//! them run beside the writer.

pub mod audit;
pub mod campaigns;
pub mod command_endings;
pub mod copy;
pub mod ingest;
pub mod leadership;
pub mod leases;
mod output;
mod postgres;
pub mod queue;
pub mod records;
pub mod results_feed;
pub mod retention;
pub mod schedules;
mod schema;
pub mod sql;
mod sqlite;
pub mod stages;
#[cfg(test)]
mod state_machine_tests;
pub mod targets;
pub mod tasks;
#[cfg(test)]
pub(crate) mod testing;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
pub mod wakes;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot, watch};

pub use postgres::Target as PostgresTarget;
pub use schema::{newest_applied, newest_known};
pub use sql::{Engine, Sql};

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite said no.
    #[error("store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL said no, or could not be reached.
    #[error("store: {}", postgres::describe(.0))]
    Postgres(#[from] ::postgres::Error),
    /// The schema could not be brought up to date.
    #[error("store: schema: {0}")]
    Migration(String),
    /// The data directory could not be used.
    #[error("store: data directory {path}: {message}")]
    Io {
        /// The directory.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// Another controller holds the data directory.
    #[error(
        "store: data directory {path} is in use by another controller ({holder}); \
         one controller per SQLite store: stop the other first (several controllers need PostgreSQL)"
    )]
    Locked {
        /// The directory.
        path: String,
        /// What the holder wrote in the lock file: pid, host, since when.
        holder: String,
    },
    /// The writer thread is gone (the process is stopping).
    #[error("store: the writer has stopped")]
    Closed,
    /// A write of a leader whose term is over.
    #[error("store: fenced: the write of {holder} (epoch {epoch}) is refused; the leader now is {current}")]
    Fenced {
        /// The writer.
        holder: String,
        /// Its epoch.
        epoch: i64,
        /// Who leads now.
        current: String,
    },
    /// A worker's call about a task that does not exist, or under a lease
    /// that is not its task's current one: nothing changed.
    #[error("{0}")]
    Lease(leases::Fenced),
    /// A query that must return a row returned none.
    #[error("store: no row")]
    NoRows,
    /// A value in the store could not be decoded.
    #[error("store: corrupt value: {0}")]
    Corrupt(String),
    /// A worker's call its lease does not allow (PERMISSION_DENIED): the
    /// rule it broke (a metric label) and the message naming the field.
    #[error("{message}")]
    Denied {
        /// The rule: lease_task, lease_holder or task_scope.
        rule: &'static str,
        /// What was refused and why.
        message: String,
    },
}

impl StoreError {
    /// Whether the PostgreSQL server could not be reached (no answer, the
    /// connection lost, or the server starting or shutting down): worth
    /// trying again, where an answer of the server (a wrong password, no
    /// such database) is not.
    pub fn is_unreachable(&self) -> bool {
        let Self::Postgres(error) = self else {
            return false;
        };
        match error.as_db_error() {
            None => true,
            // 08: connection exception; 57P01-57P03: admin shutdown, crash
            // shutdown, cannot connect now (starting up).
            Some(db) => {
                let code = db.code().code();
                code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03")
            }
        }
    }
}

/// Result of a store operation.
pub type StoreResult<T> = Result<T, StoreError>;

/// A page of rows and the cursor after it (none on the last page).
pub type Page<T, C> = (Vec<T>, Option<C>);

type WriteJob = Box<dyn FnOnce(&Savepoints<'_>) -> Box<dyn FnOnce() + Send> + Send>;

/// Most writes committed together.
const MAX_GROUP: usize = 512;
/// Read connections: at most this many reads run at once, each on a
/// connection kept open for the next; one more waits for a free one.
const READERS: usize = 8;

/// The store: one engine behind one interface.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    writer: mpsc::UnboundedSender<WriteJob>,
    /// What the writer committed, for `/metrics`.
    stats: Arc<WriteStats>,
    /// The readers' pool, which also says which engine and where.
    readers: Readers,
    /// A permit per read connection (see [`READERS`]).
    reading: Arc<tokio::sync::Semaphore>,
    /// Bumped after each commit of a write that told a wake-up, and when
    /// another controller of a PostgreSQL store tells one ([`wakes`]).
    woken: Arc<watch::Sender<u64>>,
    /// This store among the controllers of a PostgreSQL one, in its
    /// wake-ups' NOTIFYs: its listener skips its own.
    origin: String,
    /// The data directory's lock (SQLite), held while any clone lives.
    _lock: Option<std::fs::File>,
}

enum Readers {
    Sqlite {
        pool: Mutex<Vec<rusqlite::Connection>>,
        path: PathBuf,
    },
    Postgres {
        pool: Mutex<Vec<postgres::PgConn>>,
        target: Box<postgres::Target>,
    },
}

impl Drop for Readers {
    fn drop(&mut self) {
        // Closing a PostgreSQL connection blocks: never on an async thread.
        if let Self::Postgres { pool, .. } = self {
            let conns = std::mem::take(pool.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner));
            if !conns.is_empty() {
                let _ = std::thread::Builder::new()
                    .name("muster-store-close".into())
                    .spawn(move || drop(conns));
            }
        }
    }
}

impl Readers {
    /// Runs `f` on a pooled connection (opening one if there is none yet,
    /// or the one there was is broken). The caller holds one of
    /// [`Inner::reading`]'s permits, so the pool never holds more than
    /// [`READERS`].
    fn with<R>(&self, f: impl FnOnce(&dyn Sql) -> StoreResult<R>) -> StoreResult<R> {
        match self {
            Self::Sqlite { pool, path } => pooled(pool, || sqlite::open_reader(path), |_| true, f),
            Self::Postgres { pool, target } => {
                pooled(pool, || postgres::PgConn::connect(target), |conn| !conn.is_closed(), f)
            }
        }
    }
}

/// Runs `f` on a connection from `pool`, or a new one from `open` when none
/// is `usable`, and keeps it for the next reader while there is room and it
/// is still usable. (Opening one per read would cost PostgreSQL a process
/// each time.)
fn pooled<C: Sql, R>(
    pool: &Mutex<Vec<C>>,
    open: impl FnOnce() -> StoreResult<C>,
    usable: impl Fn(&C) -> bool,
    f: impl FnOnce(&dyn Sql) -> StoreResult<R>,
) -> StoreResult<R> {
    let found = pool.lock().expect("readers lock").pop();
    let conn = match found.filter(|conn| usable(conn)) {
        Some(conn) => conn,
        None => open()?,
    };
    let outcome = f(&conn);
    let mut pool = pool.lock().expect("readers lock");
    if pool.len() < READERS && usable(&conn) {
        pool.push(conn);
    }
    outcome
}

impl Store {
    /// Opens (or creates) the SQLite store in `data_dir`, migrating it to
    /// the current schema.
    pub fn open(data_dir: &Path) -> StoreResult<Self> {
        let io = |e: std::io::Error| StoreError::Io {
            path: data_dir.display().to_string(),
            message: e.to_string(),
        };
        std::fs::create_dir_all(data_dir).map_err(io)?;
        sqlite::refuse_network_filesystem(data_dir)?;
        let lock = sqlite::lock_data_dir(data_dir)?;
        let path = data_dir.join("muster.db");
        let mut conn = sqlite::open_writer(&path)?;
        schema::migrate_sqlite(&mut conn)?;
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            readers.push(sqlite::open_reader(&path)?);
        }
        let (writer, jobs) = mpsc::unbounded_channel();
        let stats = Arc::new(WriteStats::default());
        let woken = Arc::new(watch::Sender::new(0));
        let (counted, wakes) = (stats.clone(), woken.clone());
        std::thread::Builder::new()
            .name("muster-store-writer".into())
            .spawn(move || write_loop(jobs, (&counted, &wakes), |body| sqlite::in_transaction(&mut conn, body)))
            .map_err(io)?;
        Ok(Self {
            inner: Arc::new(Inner {
                writer,
                stats,
                readers: Readers::Sqlite {
                    pool: Mutex::new(readers),
                    path,
                },
                reading: Arc::new(tokio::sync::Semaphore::new(READERS)),
                woken,
                origin: String::new(),
                _lock: Some(lock),
            }),
        })
    }

    /// Connects to the PostgreSQL store, migrating it to the current schema.
    /// Several controllers may share it.
    pub fn connect(target: &PostgresTarget) -> StoreResult<Self> {
        // The driver blocks on a runtime of its own per connection, which
        // must never happen on an async thread: the writer thread connects
        // and migrates, and says how that went.
        let (writer, jobs) = mpsc::unbounded_channel();
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let writer_target = target.clone();
        let stats = Arc::new(WriteStats::default());
        let woken = Arc::new(watch::Sender::new(0));
        let (counted, wakes) = (stats.clone(), woken.clone());
        let origin = uuid::Uuid::new_v4().simple().to_string();
        let writer_origin = origin.clone();
        std::thread::Builder::new()
            .name("muster-store-writer".into())
            .spawn(move || {
                wakes::writer_of(&writer_origin);
                let mut conn = match postgres::PgConn::connect_migrated(&writer_target) {
                    Ok(conn) => {
                        let _ = ready_tx.send(Ok(()));
                        conn
                    }
                    Err(error) => {
                        let _ = ready_tx.send(Err(error));
                        return;
                    }
                };
                write_loop(jobs, (&counted, &wakes), |body| {
                    postgres::in_transaction(&mut conn, &writer_target, body)
                });
            })
            .map_err(|e| StoreError::Io {
                path: target.shown().to_owned(),
                message: e.to_string(),
            })?;
        ready.recv().map_err(|_| StoreError::Closed)??;
        Ok(Self {
            inner: Arc::new(Inner {
                writer,
                stats,
                readers: Readers::Postgres {
                    pool: Mutex::new(Vec::new()),
                    target: Box::new(target.clone()),
                },
                reading: Arc::new(tokio::sync::Semaphore::new(READERS)),
                woken,
                origin,
                _lock: None,
            }),
        })
    }

    /// A receiver that changes after each commit of a write that told a
    /// wake-up ([`wakes::tell`]: commands ended, a cancel, a window closing
    /// with its commands to cancel), and, on PostgreSQL, when another
    /// controller of the store commits one (heard by [`Self::listen_others`]).
    /// A write undone to its savepoint wakes nobody.
    pub fn wakes(&self) -> watch::Receiver<u64> {
        self.inner.woken.subscribe()
    }

    /// The results the other controllers of the store write, as their
    /// writes commit (see [`results_feed`]), until the receiver is dropped;
    /// and, while it lives, their wake-ups, passed on to [`Self::wakes`].
    /// None on SQLite, which one controller holds alone.
    pub fn listen_others(&self) -> Option<mpsc::UnboundedReceiver<results_feed::Written>> {
        let Readers::Postgres { target, .. } = &self.inner.readers else {
            return None;
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let target = (**target).clone();
        let (woken, origin) = (self.inner.woken.clone(), self.inner.origin.clone());
        let spawned = std::thread::Builder::new()
            .name("muster-store-listen".into())
            .spawn(move || {
                postgres::listen(&target, &[results_feed::CHANNEL, wakes::CHANNEL], |note| match note {
                    None => !tx.is_closed(),
                    Some((wakes::CHANNEL, payload)) => {
                        if wakes::from_others(payload, &origin) {
                            bump(&woken);
                        }
                        true
                    }
                    Some((_, payload)) => results_feed::from_others(payload).is_none_or(|w| tx.send(w).is_ok()),
                });
            });
        if let Err(error) = spawned {
            tracing::error!(%error, "cannot start listening for other controllers' writes");
        }
        Some(rx)
    }

    /// Which engine runs the store.
    pub fn engine(&self) -> Engine {
        match self.inner.readers {
            Readers::Sqlite { .. } => Engine::Sqlite,
            Readers::Postgres { .. } => Engine::Postgres,
        }
    }

    /// Where the store is: SQLite's file, or the PostgreSQL server (without
    /// credentials).
    pub fn location(&self) -> String {
        match &self.inner.readers {
            Readers::Sqlite { path, .. } => path.display().to_string(),
            Readers::Postgres { target, .. } => target.shown().to_owned(),
        }
    }

    /// SQLite's database file (none on PostgreSQL).
    pub fn file(&self) -> Option<&Path> {
        match &self.inner.readers {
            Readers::Sqlite { path, .. } => Some(path),
            Readers::Postgres { .. } => None,
        }
    }

    /// What the writer committed since the store opened.
    pub fn write_stats(&self) -> &WriteStats {
        &self.inner.stats
    }

    /// Runs `f` in the writer's next transaction; resolves after the commit.
    pub async fn write<R, F>(&self, f: F) -> StoreResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&dyn Sql) -> StoreResult<R> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: WriteJob = Box::new(move |savepoints| {
            let outcome = savepoints.run(f);
            Box::new(move || {
                let _ = tx.send(outcome);
            })
        });
        self.inner.writer.send(job).map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs `f` in the writer's next transaction if `fence` is still the
    /// leader's term, checked in that transaction: a leader whose term is
    /// over gets [`StoreError::Fenced`] and changes nothing.
    pub async fn write_fenced<R, F>(&self, fence: &leadership::Fence, f: F) -> StoreResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&dyn Sql) -> StoreResult<R> + Send + 'static,
    {
        let fence = fence.clone();
        self.write(move |txn| {
            leadership::check(txn, &fence)?;
            f(txn)
        })
        .await
    }

    /// Runs `f` on a read connection, off the async threads, once one is
    /// free.
    pub async fn read<R, F>(&self, f: F) -> StoreResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&dyn Sql) -> StoreResult<R> + Send + 'static,
    {
        let permit = self
            .inner
            .reading
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Closed)?;
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let outcome = inner.readers.with(f);
            drop(permit);
            outcome
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }
}

/// Each write of a group in its own savepoint, so that one that fails is
/// rolled back alone. A savepoint that succeeded is released with the next
/// one's start, in one batch (on PostgreSQL each batch is a round trip), or
/// by the commit.
struct Savepoints<'t> {
    txn: &'t dyn Sql,
    /// A savepoint that succeeded is still open.
    open: std::cell::Cell<bool>,
    /// Writes kept, and writes undone.
    kept: std::cell::Cell<u64>,
    undone: std::cell::Cell<u64>,
}

impl<'t> Savepoints<'t> {
    fn new(txn: &'t dyn Sql) -> Self {
        Self {
            txn,
            open: std::cell::Cell::new(false),
            kept: std::cell::Cell::new(0),
            undone: std::cell::Cell::new(0),
        }
    }

    fn run<R>(&self, f: impl FnOnce(&dyn Sql) -> StoreResult<R>) -> StoreResult<R> {
        self.txn.execute_batch(if self.open.replace(false) {
            "RELEASE SAVEPOINT job; SAVEPOINT job"
        } else {
            "SAVEPOINT job"
        })?;
        let earlier = wakes::take_told();
        match f(self.txn) {
            Ok(value) => {
                self.open.set(true);
                self.kept.set(self.kept.get() + 1);
                wakes::set_told(earlier || wakes::take_told());
                Ok(value)
            }
            Err(error) => {
                // Its wake-up goes with it (PostgreSQL drops its NOTIFY too).
                wakes::set_told(earlier);
                self.txn
                    .execute_batch("ROLLBACK TO SAVEPOINT job; RELEASE SAVEPOINT job")?;
                self.undone.set(self.undone.get() + 1);
                Err(error)
            }
        }
    }
}

/// What the writer committed since the store opened: transactions, and
/// the writes they held (one that failed and was rolled back to its
/// savepoint too). Writes per commit says how much group commit saves:
/// each commit of a durable store waits for its disk.
#[derive(Debug, Default)]
pub struct WriteStats {
    commits: AtomicU64,
    writes: AtomicU64,
    rolled_back: AtomicU64,
}

/// What the writer did so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteCounts {
    /// Transactions committed.
    pub commits: u64,
    /// Writes those transactions kept.
    pub writes: u64,
    /// Writes that failed (a refused lease, a fenced leader, a bad row) and
    /// were undone to their savepoint, while the rest of their transaction
    /// committed.
    pub rolled_back: u64,
}

impl WriteStats {
    /// The counts so far.
    pub fn counts(&self) -> WriteCounts {
        WriteCounts {
            commits: self.commits.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
            rolled_back: self.rolled_back.load(Ordering::Relaxed),
        }
    }
}

/// The writer: takes whatever writes are queued (up to [`MAX_GROUP`]), runs
/// each in its own savepoint of one transaction, commits, and only then
/// answers them. `in_transaction` is the engine's: it begins a transaction,
/// runs the body and commits.
fn write_loop(
    mut jobs: mpsc::UnboundedReceiver<WriteJob>,
    (stats, woken): (&WriteStats, &watch::Sender<u64>),
    mut in_transaction: impl FnMut(&mut dyn FnMut(&dyn Sql)) -> StoreResult<()>,
) {
    while let Some(first) = jobs.blocking_recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let mut replies: Vec<Box<dyn FnOnce() + Send>> = Vec::with_capacity(group.len());
        let (mut kept, mut undone) = (0, 0);
        wakes::take_told();
        let outcome = in_transaction(&mut |txn| {
            let savepoints = Savepoints::new(txn);
            replies.extend(group.drain(..).map(|job| job(&savepoints)));
            (kept, undone) = (savepoints.kept.get(), savepoints.undone.get());
            muster_common::crash::point("store.before_commit");
        });
        match outcome {
            Ok(()) => {
                muster_common::crash::point("store.after_commit");
                stats.commits.fetch_add(1, Ordering::Relaxed);
                stats.writes.fetch_add(kept, Ordering::Relaxed);
                stats.rolled_back.fetch_add(undone, Ordering::Relaxed);
                if wakes::take_told() {
                    bump(woken);
                }
                replies.into_iter().for_each(|reply| reply());
            }
            Err(error) => {
                // The callers' senders drop unanswered: each sees Closed and
                // retries or fails its RPC; nothing was acknowledged.
                tracing::error!(%error, "store: a transaction failed; its writes were not acknowledged");
            }
        }
    }
}

/// Wakes the receivers of [`Store::wakes`].
fn bump(woken: &watch::Sender<u64>) {
    woken.send_modify(|n| *n = n.wrapping_add(1));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_store_on_the_same_directory_is_refused_while_the_first_lives() {
        let dir = tempfile::tempdir().unwrap();
        let first = Store::open(dir.path()).unwrap();
        let Err(error) = Store::open(dir.path()) else {
            panic!("two stores on one directory");
        };
        let message = error.to_string();
        assert!(
            message.contains(&dir.path().display().to_string()) && message.contains("in use by another controller"),
            "{message}"
        );
        assert!(
            message.contains(&format!("pid {} on host", std::process::id())),
            "it names the holder: {message}"
        );
        let clone = first.clone();
        drop(first);
        assert!(Store::open(dir.path()).is_err(), "a clone still holds it");
        drop(clone);
        Store::open(dir.path()).expect("free once the last clone is gone");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_commit_together_and_a_failing_one_is_rolled_back_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let mut handles = Vec::new();
        for i in 0..200 {
            let store = store.clone();
            handles.push(tokio::spawn(async move {
                store
                    .write(move |txn| {
                        txn.execute(
                            "INSERT INTO events (campaign_id, at_ms, kind, detail) VALUES ('c', 0, 'test', ?1)",
                            [i.to_string()],
                        )?;
                        if i == 7 {
                            return Err(StoreError::Corrupt("boom".into()));
                        }
                        Ok(i)
                    })
                    .await
            }));
        }
        let mut failed = 0;
        for handle in handles {
            if handle.await.unwrap().is_err() {
                failed += 1;
            }
        }
        assert_eq!(failed, 1);
        let rows: i64 = store
            .read(|conn| conn.query_row("SELECT COUNT(*) FROM events", (), |r| r.get(0)))
            .await
            .unwrap();
        assert_eq!(rows, 199, "only the failing write was undone");
        // /metrics: every write counted once, in fewer commits than writes
        // (200 queued at once while each commit waits for the disk); the
        // failed one as undone, though its transaction committed.
        let counts = store.write_stats().counts();
        assert_eq!((counts.writes, counts.rolled_back), (199, 1), "{counts:?}");
        assert!((1..200).contains(&counts.commits), "{counts:?}");
    }

    #[test]
    fn a_server_out_of_reach_is_told_from_one_that_says_no() {
        // Nothing listens on port 1: worth waiting for.
        let nowhere =
            PostgresTarget::parse("postgres://muster@127.0.0.1:1/muster?sslmode=disable", None, None).unwrap();
        let Err(error) = Store::connect(&nowhere) else {
            panic!("connected to nothing");
        };
        assert!(error.is_unreachable(), "{error}");
        // The test server answers that there is no such database: final.
        let database = testkit::TestDatabase::create();
        let (server, _) = database.url().rsplit_once('/').unwrap();
        let missing = format!("{server}/muster_no_such_database?sslmode=disable");
        let Err(error) = Store::connect(&PostgresTarget::parse(&missing, None, None).unwrap()) else {
            panic!("connected to a database that does not exist");
        };
        assert!(!error.is_unreachable(), "{error}");
        assert!(error.to_string().contains("3D000"), "{error}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_beyond_the_pool_wait_for_a_connection_rather_than_open_one() {
        let database = testkit::TestDatabase::create();
        let target = PostgresTarget::parse(database.url(), None, None).unwrap();
        let store = Store::connect(&target).unwrap();
        // Three times as many reads at once as the pool holds, each long
        // enough that they overlap: each says which server process ran it.
        let reads = (0..3 * READERS).map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .read(|conn| {
                        conn.query_row("SELECT pg_backend_pid() FROM pg_sleep(0.05)", (), |r| {
                            r.get::<_, i64>(0)
                        })
                    })
                    .await
            })
        });
        let mut processes = std::collections::HashSet::new();
        for read in reads.collect::<Vec<_>>() {
            processes.insert(read.await.unwrap().expect("every read is answered"));
        }
        assert!(
            processes.len() <= READERS,
            "{} server processes served the reads; the pool holds {READERS}",
            processes.len()
        );
        drop(store);
    }

    #[test]
    fn reopening_keeps_data_and_schema() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let store = Store::open(dir.path()).unwrap();
            store
                .write(|txn| {
                    txn.execute(
                        "INSERT INTO events (campaign_id, at_ms, kind, detail) VALUES ('c', 0, 'x', 'y')",
                        (),
                    )?;
                    Ok(())
                })
                .await
                .unwrap();
        });
        let store = Store::open(dir.path()).unwrap();
        let count: i64 = rt
            .block_on(store.read(|conn| conn.query_row("SELECT COUNT(*) FROM events", (), |r| r.get(0))))
            .unwrap();
        assert_eq!(count, 1);
    }
}
