//! The agent's one SQLite database: opening it safely and migrating its schema.
//!
//! **Architecture invariant**: only this crate opens the agent's database, and every
//! connection is opened here with WAL, `synchronous=FULL` and foreign keys on — a commit
//! that returned is on disk.

mod migrations;

use crate::clock::unix_now;

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, OptionalExtension};

pub use migrations::latest_version;
use migrations::MIGRATIONS;

/// What went wrong opening or migrating the database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {path} does not exist; run `kasip-agent init` first")]
    Missing { path: PathBuf },
    #[error("database {path} already exists; refusing to overwrite it")]
    AlreadyExists { path: PathBuf },
    #[error(
        "database {path} has schema version {found}, newer than this kasip-agent supports ({supported}); \
         install the newer kasip-agent again or restore a backup made by this version"
    )]
    NewerSchema {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error(
        "database {path} is on a read-only filesystem (the kernel remounts a disk read-only \
         after errors); nothing was changed: check the disk (`dmesg`), make it writable again \
         (`mount -o remount,rw`) and start the agent again"
    )]
    ReadOnlyFilesystem { path: PathBuf },
    #[error(
        "database {path} is not writable by this user; the service runs as `kasip`: \
         `chown -R kasip:kasip` the data directory, or run the command as that user"
    )]
    NotWritable { path: PathBuf },
    #[error("database {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("database {path}: migration to version {version} ({description}) failed: {source}")]
    Migration {
        path: PathBuf,
        version: i64,
        description: &'static str,
        source: rusqlite::Error,
    },
}

/// An open, migrated database.
/// Prepared statements kept per connection: every statement the hot paths use, with room.
const STATEMENT_CACHE: usize = 128;

pub struct Store {
    /// The one connection; rusqlite is blocking, so async callers reach it through
    /// `spawn_blocking`.
    connection: Connection,
    /// Where the file lives, for error messages.
    path: PathBuf,
}

/// Seconds since the Unix epoch, for `recorded_at` columns.
/// The schema version of the database at `path` without migrating it (0 when empty).
pub fn schema_version_of(path: &Path) -> Result<i64, StoreError> {
    let sqlite_error = |source| StoreError::Sqlite {
        path: path.to_owned(),
        source,
    };
    let connection = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(sqlite_error)?;
    let has_table: Option<i64> = connection
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'",
            [],
            |row| row.get(0),
        )
        .optional()
        .map_err(sqlite_error)?;
    if has_table.is_none() {
        return Ok(0);
    }
    connection
        .query_row(
            "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
            [],
            |row| row.get(0),
        )
        .map_err(sqlite_error)
}

impl Store {
    /// Creates a new database at `path` with the latest schema; refuses an existing file.
    pub fn create(path: &Path) -> Result<Self, StoreError> {
        if path.exists() {
            return Err(StoreError::AlreadyExists {
                path: path.to_owned(),
            });
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        Self::open_with(path, flags)
    }

    /// Opens an existing database and migrates it to the latest schema.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if !path.exists() {
            return Err(StoreError::Missing {
                path: path.to_owned(),
            });
        }
        Self::open_with(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
    }

    fn open_with(path: &Path, flags: OpenFlags) -> Result<Self, StoreError> {
        // SQLite says only "unable to open database file", or opens a file it cannot
        // write read-only without a word: name the usual causes.
        let not_writable = || match std::fs::OpenOptions::new().append(true).open(path) {
            Err(error) if error.kind() == std::io::ErrorKind::ReadOnlyFilesystem => {
                Some(StoreError::ReadOnlyFilesystem {
                    path: path.to_owned(),
                })
            }
            Err(error) if error.kind() == std::io::ErrorKind::PermissionDenied => {
                Some(StoreError::NotWritable {
                    path: path.to_owned(),
                })
            }
            _ => None,
        };
        let sqlite_error = |source| {
            not_writable().unwrap_or_else(|| StoreError::Sqlite {
                path: path.to_owned(),
                source,
            })
        };
        let connection = Connection::open_with_flags(path, flags).map_err(sqlite_error)?;
        if connection.is_readonly(rusqlite::MAIN_DB).unwrap_or(false) {
            if let Some(error) = not_writable() {
                return Err(error);
            }
        }
        // FULL, not NORMAL: in WAL mode NORMAL may lose the last commits on power loss,
        // and a 2xx must mean the mark is on disk (design §4).
        connection
            .execute_batch(
                "PRAGMA journal_mode = WAL;
                 PRAGMA synchronous = FULL;
                 PRAGMA foreign_keys = ON;
                 PRAGMA busy_timeout = 5000;
                 PRAGMA cache_size = -32000;",
            )
            .map_err(sqlite_error)?;
        // The writer's check-in path alone prepares about 16 statements, rusqlite's
        // default cache: with the month close, imports and flags around them, the cache
        // would evict and prepare statements again.
        connection.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        // Query-planner stability: SQLite 3.54 marks a statement to be planned again when
        // a bound value might change its plan (a join on a bound column, LIMIT ?), and
        // clearing the bindings, as rusqlite's cache does on every reuse, then expires it:
        // 30 of the agent's cached statements, among them the session check, the lesson
        // summary and the writer's repeat check, were compiled again on *every* run. Our
        // plans do not depend on the values (no ANALYZE statistics), so we keep them.
        connection
            .set_db_config(
                rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
                true,
            )
            .map_err(sqlite_error)?;
        let mut store = Self {
            connection,
            path: path.to_owned(),
        };
        store.migrate()?;
        Ok(store)
    }

    /// The schema version recorded in the database (0 for an empty file).
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        let has_table: Option<i64> = self
            .connection
            .query_row(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'",
                [],
                |row| row.get(0),
            )
            .optional()
            .map_err(|source| self.error(source))?;
        if has_table.is_none() {
            return Ok(0);
        }
        self.connection
            .query_row(
                "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                [],
                |row| row.get(0),
            )
            .map_err(|source| self.error(source))
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let current = self.schema_version()?;
        let supported = latest_version();
        if current > supported {
            return Err(StoreError::NewerSchema {
                path: self.path.clone(),
                found: current,
                supported,
            });
        }
        // SQLite's way to change a table: foreign keys off while it is rebuilt (the
        // setting is ignored inside a transaction), every reference checked before the
        // commit, then on again.
        let pending: Vec<_> = MIGRATIONS
            .iter()
            .filter(|step| step.version > current)
            .collect();
        if !pending.is_empty() {
            self.connection
                .execute_batch("PRAGMA foreign_keys = OFF")
                .map_err(|source| self.error(source))?;
        }
        for migration in pending {
            let migration_error = |source| StoreError::Migration {
                path: self.path.clone(),
                version: migration.version,
                description: migration.description,
                source,
            };
            let transaction = self.connection.transaction().map_err(migration_error)?;
            transaction
                .execute_batch(
                    "CREATE TABLE IF NOT EXISTS schema_migrations (
                         version     INTEGER PRIMARY KEY,
                         description TEXT NOT NULL,
                         applied_at  INTEGER NOT NULL
                     );",
                )
                .and_then(|()| transaction.execute_batch(migration.sql))
                .and_then(|()| {
                    let broken: i64 = transaction.query_row(
                        "SELECT COUNT(*) FROM pragma_foreign_key_check",
                        [],
                        |row| row.get(0),
                    )?;
                    if broken == 0 {
                        Ok(())
                    } else {
                        Err(rusqlite::Error::SqliteFailure(
                            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY),
                            Some(format!(
                                "{broken} row(s) would reference rows that do not exist"
                            )),
                        ))
                    }
                })
                .and_then(|()| {
                    transaction
                        .execute(
                            "INSERT INTO schema_migrations (version, description, applied_at)
                             VALUES (?1, ?2, ?3)",
                            (migration.version, migration.description, unix_now()),
                        )
                        .map(drop)
                })
                .and_then(|()| transaction.commit())
                .map_err(migration_error)?;
            tracing::info!(
                version = migration.version,
                description = migration.description,
                "database schema migrated"
            );
        }
        self.connection
            .execute_batch("PRAGMA foreign_keys = ON")
            .map_err(|source| self.error(source))?;
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// SQLite's own check of every page and index: `["ok"]` or the problems found.
    pub fn integrity_check(&self) -> rusqlite::Result<Vec<String>> {
        let mut statement = self.connection.prepare("PRAGMA integrity_check")?;
        let lines = statement.query_map([], |row| row.get::<_, String>(0))?;
        lines.collect()
    }

    /// Reads one row: whether the database answers at all (health checks).
    pub fn probe(&self) -> rusqlite::Result<()> {
        self.connection
            .query_row("SELECT 1", [], |row| row.get::<_, i64>(0))?;
        Ok(())
    }

    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    pub fn connection_mut(&mut self) -> &mut Connection {
        &mut self.connection
    }

    /// Wraps a SQLite error with this database's path.
    pub fn error(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// Checkpoints the WAL into the main file and closes the connection, so a clean
    /// shutdown leaves one self-contained database file.
    pub fn close(self) -> Result<(), StoreError> {
        let path = self.path.clone();
        self.connection
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
            .map_err(|source| StoreError::Sqlite {
                path: path.clone(),
                source,
            })?;
        self.connection
            .close()
            .map_err(|(_, source)| StoreError::Sqlite { path, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cached statement joining on a bound column is compiled once, however often it
    /// runs (SQLite compiled it again on every reuse without planner stability).
    #[test]
    fn cached_statements_are_not_compiled_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::create(&dir.path().join("agent.db")).expect("create");
        let sql = "SELECT l.id FROM lessons l LEFT JOIN lesson_openings o ON o.lesson_id = l.id
                   WHERE l.id = ?1 ORDER BY l.date LIMIT ?2";
        let mut compiled_again = 0;
        for value in 1..=3_i64 {
            let mut statement = store.connection().prepare_cached(sql).expect("prepare");
            let _ = statement
                .query_map(rusqlite::params![value, value], |_| Ok(()))
                .expect("query")
                .count();
            compiled_again = statement.get_status(rusqlite::StatementStatus::RePrepare);
        }
        assert_eq!(compiled_again, 0);
    }

    #[test]
    fn create_then_reopen_keeps_the_latest_version() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent.db");
        let store = Store::create(&path).expect("create");
        assert_eq!(store.schema_version().expect("version"), latest_version());
        store.close().expect("close");
        assert!(matches!(
            Store::create(&path),
            Err(StoreError::AlreadyExists { .. })
        ));
        let reopened = Store::open(&path).expect("open");
        assert_eq!(
            reopened.schema_version().expect("version"),
            latest_version()
        );
    }

    #[test]
    fn refuses_a_newer_schema_and_a_missing_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent.db");
        let store = Store::create(&path).expect("create");
        store
            .connection()
            .execute(
                "INSERT INTO schema_migrations VALUES (99, 'from the future', 0)",
                [],
            )
            .expect("insert");
        store.close().expect("close");
        let error = Store::open(&path).err().expect("newer schema refused");
        assert!(error.to_string().contains("schema version 99"), "{error}");
        assert!(matches!(
            Store::open(&dir.path().join("absent.db")),
            Err(StoreError::Missing { .. })
        ));
    }

    #[test]
    fn contingent_events_are_append_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::create(&dir.path().join("agent.db")).expect("create");
        let connection = store.connection();
        connection
            .execute_batch(
                "INSERT INTO study_groups (id, code) VALUES (1, 'G');
                 INSERT INTO students (iin, last_name, first_name, group_id, beneficiary, status)
                     VALUES ('900101300017', 'A', 'B', 1, 1, 'active');
                 INSERT INTO contingent_events
                     (student_iin, change, status, effective_date, recorded_at, source)
                     VALUES ('900101300017', 'enrolled', 'active', '2026-09-01', 0, 'test');",
            )
            .expect("seed");
        assert!(connection
            .execute("UPDATE contingent_events SET status = 'expelled'", [])
            .is_err());
        assert!(connection
            .execute("DELETE FROM contingent_events", [])
            .is_err());
    }
}
