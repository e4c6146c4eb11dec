//! Backups of the college's database: online and consistent (`VACUUM INTO` reads one
//! snapshot while the agent keeps writing), a restore that refuses while the service
//! runs, and the nightly copies the service keeps in `DATA_DIR/backups/`.

use std::fs;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags};

use crate::data_dir::DataDir;
use crate::error::AgentError;
use crate::store::{latest_version, Store};

/// What a backup holds: enough to compare it with the live database.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BackupSummary {
    pub schema_version: i64,
    pub attendance_events: i64,
    /// The last event's row hash (hex), empty when there are none.
    pub chain_head: String,
    pub students: i64,
    pub outbox_batches: i64,
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> AgentError {
    let path = path.to_owned();
    move |source| AgentError::Io {
        action,
        path,
        source,
    }
}

/// Checks a database file without changing it: integrity, schema, chain; summarises it.
pub fn inspect(path: &Path) -> Result<BackupSummary, AgentError> {
    let database = |source: rusqlite::Error| {
        AgentError::Refused(format!(
            "{} is not a usable agent database: {source}",
            path.display()
        ))
    };
    let connection = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(database)?;
    let integrity: String = connection
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .map_err(database)?;
    if integrity != "ok" {
        return Err(AgentError::Refused(format!(
            "{} fails SQLite's integrity check: {integrity}",
            path.display()
        )));
    }
    let schema_version: i64 = connection
        .query_row("SELECT MAX(version) FROM schema_migrations", [], |row| {
            row.get::<_, Option<i64>>(0)
        })
        .map_err(database)?
        .unwrap_or(0);
    if schema_version > latest_version() {
        return Err(AgentError::Refused(format!(
            "{} has schema version {schema_version}, newer than this agent's {}; use a newer kasip-agent",
            path.display(),
            latest_version()
        )));
    }
    let chain_head = match crate::attendance::verify_chain(&connection).map_err(database)? {
        crate::attendance::ChainCheck::Intact { head, .. } => head,
        crate::attendance::ChainCheck::Broken { row_id, reason } => {
            return Err(AgentError::Refused(format!(
                "{}: attendance chain broken at event {row_id}: {reason}",
                path.display()
            )))
        }
    };
    let count = |table: &str| -> Result<i64, AgentError> {
        let exists: i64 = connection
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
                [table],
                |row| row.get(0),
            )
            .map_err(database)?;
        if exists == 0 {
            return Ok(0);
        }
        connection
            .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |row| {
                row.get(0)
            })
            .map_err(database)
    };
    Ok(BackupSummary {
        schema_version,
        attendance_events: count("attendance_events")?,
        chain_head,
        students: count("students")?,
        outbox_batches: count("outbox_batches")?,
    })
}

/// Copies the live database to `target` (a new file, mode 0600) from one consistent
/// snapshot, while the agent may be writing, and checks the copy.
pub fn backup(data_dir: &DataDir, target: &Path) -> Result<BackupSummary, AgentError> {
    if target.exists() {
        return Err(AgentError::Usage(format!(
            "{} already exists; choose a new file name (a backup never overwrites)",
            target.display()
        )));
    }
    // The folder is checked first: SQLite's own error would name a temporary file.
    let folder = match target.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    if !folder.is_dir() {
        return Err(AgentError::Usage(format!(
            "the folder {} does not exist; create it (mkdir -p {}) or choose another",
            folder.display(),
            folder.display()
        )));
    }
    let store = Store::open(&data_dir.database_path())?;
    copy_database(&store, target)?;
    inspect(target)
}

/// Copies `store` to `target` under a temporary name, renamed when whole: a killed copy
/// never leaves a file under the name an admin will later restore from.
fn copy_database(store: &Store, target: &Path) -> Result<(), AgentError> {
    let partial = kasip_certs::process::partial_path(target);
    let _ = fs::remove_file(&partial);
    vacuum_into(store, &partial)?;
    kasip_certs::process::finish_file(&partial, target).map_err(io_error("move", &partial))
}

fn vacuum_into(store: &Store, target: &Path) -> Result<(), AgentError> {
    use std::os::unix::fs::PermissionsExt;
    let target_text = target
        .to_str()
        .ok_or_else(|| AgentError::Usage(format!("{} is not a UTF-8 path", target.display())))?;
    // VACUUM INTO reads each page once: a large cache only fills up. With the store's
    // 32 MB cache a 40 MB database took 66 MiB more at the copy's peak (2 MiB: 4 MiB),
    // which the allocator kept: the soak saw the agent grow ~40 MiB at each nightly copy.
    // Its callers (the CLI, the service's housekeeping) keep this store for copies and
    // chores, never for serving, so its cache is theirs to shrink.
    store
        .connection()
        .execute_batch("PRAGMA cache_size = -2048")
        .map_err(|source| AgentError::from(store.error(source)))?;
    store
        .connection()
        .execute("VACUUM INTO ?1", [target_text])
        .map_err(|source| AgentError::from(store.error(source)))?;
    // Personal data: only the agent's user may read it.
    fs::set_permissions(
        target,
        fs::Permissions::from_mode(kasip_certs::KEY_FILE_MODE),
    )
    .map_err(io_error("restrict", target))?;
    Ok(())
}

/// The lock the running service holds on its data dir.
pub fn lock_path(data_dir: &DataDir) -> PathBuf {
    data_dir.root().join("agent.lock")
}

/// Taken by `serve` for its whole life: `restore` refuses while it is held.
pub struct ServiceLock {
    _file: fs::File,
}

impl ServiceLock {
    pub fn acquire(data_dir: &DataDir) -> Result<Self, AgentError> {
        let path = lock_path(data_dir);
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_error("open", &path))?;
        match file.try_lock() {
            Ok(()) => Ok(Self { _file: file }),
            Err(fs::TryLockError::WouldBlock) => Err(AgentError::Usage(format!(
                "another kasip-agent serves {} already; stop it first (systemctl stop kasip-agent)",
                data_dir.root().display()
            ))),
            Err(fs::TryLockError::Error(source)) => Err(io_error("lock", &path)(source)),
        }
    }
}

/// Replaces the database with `source` after checking it. Refuses while the service
/// runs. The replaced database is kept beside it as `agent.db.before-restore-<time>`.
pub fn restore(
    data_dir: &DataDir,
    source: &Path,
    now: i64,
) -> Result<(BackupSummary, PathBuf), AgentError> {
    let _lock = ServiceLock::acquire(data_dir).map_err(|error| match error {
        AgentError::Usage(_) => AgentError::Usage(format!(
            "the agent is running on {}; stop it first (systemctl stop kasip-agent), then restore",
            data_dir.root().display()
        )),
        other => other,
    })?;
    let summary = inspect(source)?;
    let database = data_dir.database_path();
    let kept = data_dir
        .root()
        .join(format!("agent.db.before-restore-{now}"));
    if database.exists() {
        // Fold the WAL into the old file so what we keep is complete.
        Store::open(&database)?.close()?;
        fs::rename(&database, &kept).map_err(io_error("move", &database))?;
    }
    for leftover in ["agent.db-wal", "agent.db-shm"] {
        let _ = fs::remove_file(data_dir.root().join(leftover));
    }
    let partial = data_dir.root().join("agent.db.restoring");
    fs::copy(source, &partial).map_err(io_error("copy", source))?;
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(
            &partial,
            fs::Permissions::from_mode(kasip_certs::KEY_FILE_MODE),
        )
        .map_err(io_error("restrict", &partial))?;
    }
    kasip_certs::process::finish_file(&partial, &database).map_err(io_error("move", &partial))?;
    // Migrates an older backup to this agent's schema.
    Store::open(&database)?.close()?;
    Ok((summary, kept))
}

/// The nightly copy for `date` in `DATA_DIR/backups/`, unless it exists; then keeps
/// the newest `keep` copies. Returns the new file, if one was made.
pub fn nightly(
    data_dir: &DataDir,
    store: &Store,
    date: kasip_core::Date,
    keep: usize,
) -> Result<Option<PathBuf>, AgentError> {
    let directory = data_dir.root().join("backups");
    kasip_certs::process::create_private_dir(&directory).map_err(io_error("create", &directory))?;
    let target = directory.join(format!("agent-{date}.db"));
    let made = if target.exists() {
        None
    } else {
        copy_database(store, &target)?;
        Some(target)
    };
    let mut copies: Vec<PathBuf> = fs::read_dir(&directory)
        .map_err(io_error("list", &directory))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with("agent-") && name.ends_with(".db"))
        })
        .collect();
    copies.sort();
    while copies.len() > keep.max(1) {
        let oldest = copies.remove(0);
        fs::remove_file(&oldest).map_err(io_error("remove", &oldest))?;
    }
    Ok(made)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nightly_copies_are_made_once_a_day_and_the_oldest_beyond_keep_are_removed() {
        let temp = tempfile::tempdir().expect("temp");
        let data_dir = DataDir::new(temp.path().join("data"));
        fs::create_dir_all(data_dir.root()).expect("dir");
        let store = Store::create(&data_dir.database_path()).expect("db");
        let day = |d: u8| kasip_core::Date::new(2026, 11, d).expect("date");
        for d in 1..=9 {
            let made = nightly(&data_dir, &store, day(d), 7).expect("backup");
            assert!(made.is_some(), "day {d}");
        }
        assert_eq!(nightly(&data_dir, &store, day(9), 7).expect("again"), None);
        let mut kept: Vec<String> = fs::read_dir(data_dir.root().join("backups"))
            .expect("backups")
            .filter_map(|entry| entry.ok())
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .collect();
        kept.sort();
        assert_eq!(kept.len(), 7, "{kept:?}");
        assert_eq!(kept[0], "agent-2026-11-03.db");
        assert_eq!(kept[6], "agent-2026-11-09.db");
        let newest = data_dir.root().join("backups/agent-2026-11-09.db");
        assert_eq!(
            inspect(&newest).expect("a usable copy").attendance_events,
            0
        );
    }
}
