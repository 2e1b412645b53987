//! The embedded engine: SQLite in WAL mode in the controller's data
//! directory, for one controller (the sandbox, tests, small installs).
//!
//! The directory is locked (`muster.lock`) so that a second controller
//! cannot open it, and refused on a network filesystem, where WAL's shared
//! memory does not work.

use std::path::Path;

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags};

use super::sql::{Datum, Engine, Sql, Value};
use super::{StoreError, StoreResult};

impl rusqlite::ToSql for Value<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match *self {
            Value::Null => ValueRef::Null,
            Value::Int(v) => ValueRef::Integer(v),
            Value::Real(v) => ValueRef::Real(v),
            Value::Text(v) => ValueRef::Text(v.as_bytes()),
            Value::Blob(v) => ValueRef::Blob(v),
        }))
    }
}

pub(super) fn datum(value: ValueRef<'_>) -> StoreResult<Datum> {
    Ok(match value {
        ValueRef::Null => Datum::Null,
        ValueRef::Integer(v) => Datum::Int(v),
        ValueRef::Real(v) => Datum::Real(v),
        ValueRef::Text(v) => Datum::Text(
            std::str::from_utf8(v)
                .map_err(|e| StoreError::Corrupt(format!("text that is not UTF-8: {e}")))?
                .to_owned(),
        ),
        ValueRef::Blob(v) => Datum::Blob(v.to_vec()),
    })
}

impl Sql for Connection {
    fn engine(&self) -> Engine {
        Engine::Sqlite
    }

    fn execute_values(&self, sql: &str, params: &[Value<'_>]) -> StoreResult<usize> {
        Ok(self
            .prepare_cached(sql)?
            .execute(rusqlite::params_from_iter(params.iter()))?)
    }

    fn query_values(&self, sql: &str, params: &[Value<'_>]) -> StoreResult<Vec<Vec<Datum>>> {
        let mut stmt = self.prepare_cached(sql)?;
        let width = stmt.column_count();
        let mut rows = stmt.query(rusqlite::params_from_iter(params.iter()))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let mut values = Vec::with_capacity(width);
            for i in 0..width {
                values.push(datum(row.get_ref(i)?)?);
            }
            out.push(values);
        }
        Ok(out)
    }

    fn execute_batch(&self, sql: &str) -> StoreResult<()> {
        Ok(Connection::execute_batch(self, sql)?)
    }
}

/// Takes the data directory's exclusive lock (`muster.lock`, an advisory
/// file lock the OS drops when the process dies), and writes who holds it.
pub(super) fn lock_data_dir(data_dir: &Path) -> StoreResult<std::fs::File> {
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

/// Opens a connection with the store's settings.
pub(super) fn open(path: &Path, flags: OpenFlags) -> StoreResult<Connection> {
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

/// The writer's connection: opens (or creates) the database read-write.
pub(super) fn open_writer(path: &Path) -> StoreResult<Connection> {
    let conn = open(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.pragma_update(None, "cache_size", WRITER_CACHE_KIB)?;
    Ok(conn)
}

/// The writer's page cache, in KiB (negative, as the pragma takes it).
/// Smaller than the readers': when a b-tree page splits, SQLite moves a
/// page through the number of the lock page (1 GiB into the file), so the
/// commit after it scans the whole cache to drop pages past the end of the
/// database. With 64 MB that scan was about 7% of the writer's time during
/// an ingest; the writer's working set (the b-trees' upper levels and the
/// pages being appended to) fits in much less.
const WRITER_CACHE_KIB: i64 = -8_000;

/// A reader's connection.
pub(super) fn open_reader(path: &Path) -> StoreResult<Connection> {
    open(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
}

/// Runs `body` in one transaction on the writer's connection and commits.
pub(super) fn in_transaction(conn: &mut Connection, body: &mut dyn FnMut(&dyn Sql)) -> StoreResult<()> {
    let txn = conn.transaction()?;
    body(&*txn);
    txn.commit()?;
    Ok(())
}

/// Filesystems SQLite's WAL mode does not work on (its shared memory and
/// locks need one host), as `/proc/self/mountinfo` names them.
const NETWORK_FILESYSTEMS: &[&str] = &[
    "nfs",
    "nfs4",
    "cifs",
    "smb3",
    "smbfs",
    "afs",
    "ceph",
    "glusterfs",
    "lustre",
    "gpfs",
    "fuse.sshfs",
    "9p",
];

/// Refuses a data directory on a network filesystem (EFS is NFS 4).
pub(super) fn refuse_network_filesystem(data_dir: &Path) -> StoreResult<()> {
    let Ok(dir) = data_dir.canonicalize() else {
        return Ok(());
    };
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Ok(());
    };
    if let Some(fstype) = filesystem_of(&mounts, &dir)
        && NETWORK_FILESYSTEMS.contains(&fstype.as_str())
    {
        return Err(StoreError::Io {
            path: data_dir.display().to_string(),
            message: format!(
                "is on a network filesystem ({fstype}); SQLite's write-ahead log needs a local disk: \
                 use a local directory, or PostgreSQL (--database-url) for a store that outlives the host"
            ),
        });
    }
    Ok(())
}

/// The type of the filesystem `path` is on, from mountinfo's text: the
/// mount with the longest mount point that contains it.
fn filesystem_of(mountinfo: &str, path: &Path) -> Option<String> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mount_point = left.split(' ').nth(4)?.replace("\\040", " ");
            let fstype = right.split(' ').next()?;
            path.starts_with(&mount_point)
                .then(|| (mount_point.len(), fstype.to_owned()))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, fstype)| fstype)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw
30 22 0:40 / /mnt/efs rw,relatime - nfs4 fs-1234.efs.us-east-1.amazonaws.com:/ rw,vers=4.1
31 30 8:2 / /mnt/efs/local rw - xfs /dev/sdb rw
";

    #[test]
    fn the_filesystem_is_the_longest_mount_that_holds_the_path() {
        assert_eq!(
            filesystem_of(MOUNTINFO, Path::new("/var/lib/muster")).as_deref(),
            Some("ext4")
        );
        assert_eq!(
            filesystem_of(MOUNTINFO, Path::new("/mnt/efs/muster")).as_deref(),
            Some("nfs4")
        );
        assert_eq!(
            filesystem_of(MOUNTINFO, Path::new("/mnt/efs/local/db")).as_deref(),
            Some("xfs")
        );
        assert_eq!(
            filesystem_of(MOUNTINFO, Path::new("/mnt/efsx")).as_deref(),
            Some("ext4")
        );
    }
}
