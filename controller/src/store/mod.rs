//! The controller's durable state: embedded SQLite in WAL mode.
//!
//! Writes go through one writer thread that commits whatever is queued in one
//! transaction (group commit): a burst of ReportResults from many workers
//! costs one fsync, not one per request. Each write runs in its own savepoint,
//! so one failing write does not undo the others. A write's caller hears back
//! only after the commit: `kill -9` at any line loses nothing that was
//! acknowledged. Reads use a small pool of their own connections; WAL lets
//! them run beside the writer.

pub mod campaigns;
pub mod queue;
pub mod records;
pub mod retention;
mod schema;
#[cfg(test)]
mod state_machine_tests;
pub mod targets;
pub mod tasks;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OpenFlags, Transaction};
use tokio::sync::{mpsc, oneshot};

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite said no.
    #[error("store: {0}")]
    Sqlite(#[from] rusqlite::Error),
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
    /// A value in the store could not be decoded.
    #[error("store: corrupt value: {0}")]
    Corrupt(String),
}

/// Result of a store operation.
pub type StoreResult<T> = Result<T, StoreError>;

/// A page of rows and the cursor after it (none on the last page).
pub type Page<T, C> = (Vec<T>, Option<C>);

type WriteJob = Box<dyn FnOnce(&Transaction<'_>) -> Box<dyn FnOnce() + Send> + Send>;

/// Most writes committed together.
const MAX_GROUP: usize = 512;
/// Read connections.
const READERS: usize = 4;

/// The store.
#[derive(Clone)]
pub struct Store {
    writer: mpsc::UnboundedSender<WriteJob>,
    readers: Arc<Mutex<Vec<Connection>>>,
    path: PathBuf,
    /// The data directory's lock, held while any clone lives.
    _lock: Arc<std::fs::File>,
}

/// Takes the data directory's exclusive lock (`muster.lock`, an advisory
/// file lock the OS drops when the process dies), and writes who holds it.
fn lock_data_dir(data_dir: &Path) -> StoreResult<std::fs::File> {
    use std::io::{Read as _, Seek as _, Write as _};
    let path = data_dir.join("muster.lock");
    let io = |e: std::io::Error| StoreError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            return Err(StoreError::Locked {
                path: data_dir.display().to_string(),
                holder: Some(holder.trim().to_owned())
                    .filter(|h| !h.is_empty())
                    .unwrap_or_else(|| "holder unknown".into()),
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let since = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    file.set_len(0).map_err(io)?;
    file.rewind().map_err(io)?;
    write!(file, "pid {} on host {} since {since}", std::process::id(), host.trim()).map_err(io)?;
    Ok(file)
}

fn open(path: &Path, flags: OpenFlags) -> StoreResult<Connection> {
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(std::time::Duration::from_secs(30))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // FULL: a commit is on disk before the writer is told; group commit keeps
    // the number of fsyncs low.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.pragma_update(None, "cache_size", -64_000)?;
    Ok(conn)
}

impl Store {
    /// Opens (or creates) the store in `data_dir`, migrating it to the
    /// current schema.
    pub fn open(data_dir: &Path) -> StoreResult<Self> {
        std::fs::create_dir_all(data_dir).map_err(|e| StoreError::Io {
            path: data_dir.display().to_string(),
            message: e.to_string(),
        })?;
        let lock = lock_data_dir(data_dir)?;
        let path = data_dir.join("muster.db");
        let mut conn = open(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        schema::migrate(&mut conn)?;
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            readers.push(open(
                &path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?);
        }
        let (writer, jobs) = mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("muster-store-writer".into())
            .spawn(move || write_loop(conn, jobs))
            .map_err(|e| StoreError::Io {
                path: path.display().to_string(),
                message: e.to_string(),
            })?;
        Ok(Self {
            writer,
            readers: Arc::new(Mutex::new(readers)),
            path,
            _lock: Arc::new(lock),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` in the writer's next transaction; resolves after the commit.
    pub async fn write<R, F>(&self, f: F) -> StoreResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> StoreResult<R> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: WriteJob = Box::new(move |txn| {
            let outcome = run_in_savepoint(txn, f);
            Box::new(move || {
                let _ = tx.send(outcome);
            })
        });
        self.writer.send(job).map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs `f` on a read connection, off the async threads.
    pub async fn read<R, F>(&self, f: F) -> StoreResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<R> + Send + 'static,
    {
        let readers = self.readers.clone();
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let conn = readers.lock().expect("readers lock").pop();
            let conn = match conn {
                Some(conn) => conn,
                None => open(
                    &path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?,
            };
            let outcome = f(&conn);
            let mut pool = readers.lock().expect("readers lock");
            if pool.len() < READERS {
                pool.push(conn);
            }
            outcome
        })
        .await
        .map_err(|_| StoreError::Closed)?
    }
}

fn run_in_savepoint<R>(txn: &Transaction<'_>, f: impl FnOnce(&Transaction<'_>) -> StoreResult<R>) -> StoreResult<R> {
    txn.execute_batch("SAVEPOINT job")?;
    match f(txn) {
        Ok(value) => {
            txn.execute_batch("RELEASE job")?;
            Ok(value)
        }
        Err(error) => {
            txn.execute_batch("ROLLBACK TO job; RELEASE job")?;
            Err(error)
        }
    }
}

fn write_loop(mut conn: Connection, mut jobs: mpsc::UnboundedReceiver<WriteJob>) {
    while let Some(first) = jobs.blocking_recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let txn = match conn.transaction() {
            Ok(txn) => txn,
            Err(error) => {
                tracing::error!(%error, "store: cannot begin a transaction");
                continue;
            }
        };
        let replies: Vec<Box<dyn FnOnce() + Send>> = group.into_iter().map(|job| job(&txn)).collect();
        muster_common::crash::point("store.before_commit");
        match txn.commit() {
            Ok(()) => {
                muster_common::crash::point("store.after_commit");
                replies.into_iter().for_each(|reply| reply());
            }
            Err(error) => {
                // The callers' senders drop unanswered: each sees Closed and
                // retries or fails its RPC; nothing was acknowledged.
                tracing::error!(%error, "store: commit failed");
            }
        }
    }
}

pub use schema::SCHEMA_VERSION;

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
            .read(|conn| Ok(conn.query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))?))
            .await
            .unwrap();
        assert_eq!(rows, 199, "only the failing write was undone");
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
                        [],
                    )?;
                    Ok(())
                })
                .await
                .unwrap();
        });
        let store = Store::open(dir.path()).unwrap();
        let count: i64 = rt
            .block_on(store.read(|conn| Ok(conn.query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))?)))
            .unwrap();
        assert_eq!(count, 1);
    }
}
