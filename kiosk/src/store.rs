//! The kiosk's own SQLite: its enrolment, the pass keys it verifies with offline, the
//! passes it has seen (the replay cache) and the queue of scans for the agent.
//!
//! **Invariant**: a scan is accepted (green on the screen) only after the transaction
//! that records it in the replay cache and in the queue has committed, so a crash never
//! loses an accepted scan and never lets its pass be shown twice.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension};
use serde::Serialize;

use crate::error::KioskError;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS enrolment (
    id               INTEGER PRIMARY KEY CHECK (id = 1),
    agent_url        TEXT NOT NULL,
    kiosk_id         INTEGER NOT NULL,
    place_kind       TEXT NOT NULL,
    place            TEXT NOT NULL,
    fingerprint      TEXT NOT NULL,
    pass_window_secs INTEGER NOT NULL,
    enrolled_at      INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS pass_holders (
    iin    TEXT PRIMARY KEY,
    name   TEXT NOT NULL,
    active INTEGER NOT NULL,
    keys   TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS key_refresh (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    fetched_at   INTEGER NOT NULL,
    generated_at INTEGER NOT NULL,
    holders      INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS seen_passes (
    student_iin TEXT NOT NULL,
    signed_at   INTEGER NOT NULL,
    scanned_at  INTEGER NOT NULL,
    PRIMARY KEY (student_iin, signed_at)
);
CREATE TABLE IF NOT EXISTS scan_queue (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    scan_id      TEXT NOT NULL UNIQUE,
    student_iin  TEXT NOT NULL,
    name         TEXT NOT NULL,
    pass         TEXT NOT NULL,
    scanned_at   INTEGER NOT NULL,
    forwarded_at INTEGER,
    outcome      TEXT,
    reason       TEXT,
    -- Set when the kiosk refused the pass itself: the agent records it as a security
    -- event (once per pass and reason).
    local_refusal TEXT
);
CREATE INDEX IF NOT EXISTS scan_queue_waiting ON scan_queue(seq) WHERE forwarded_at IS NULL;
CREATE UNIQUE INDEX IF NOT EXISTS scan_queue_one_report_per_refusal
    ON scan_queue(pass, local_refusal) WHERE local_refusal IS NOT NULL;
"#;

/// Where the kiosk keeps its state.
#[derive(Debug, Clone)]
pub struct KioskDir(PathBuf);

impl KioskDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self(root.into())
    }

    pub fn root(&self) -> &Path {
        &self.0
    }

    pub fn database_path(&self) -> PathBuf {
        self.0.join("kiosk.db")
    }

    /// The kiosk's credential for the agent: its own file, mode 0600.
    pub fn credential_path(&self) -> PathBuf {
        self.0.join("credential")
    }
}

/// How the kiosk was enrolled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrolment {
    pub agent_url: String,
    pub kiosk_id: i64,
    pub place_kind: String,
    pub place: String,
    /// The agent certificate's pinned SHA-256; empty: the certificate is verified for the
    /// URL's name against the system's roots and `ca_file`.
    pub fingerprint: String,
    pub pass_window_secs: i64,
    /// An extra CA (PEM) trusted for the agent's name; empty: the system's roots only.
    pub ca_file: String,
    /// Where the agent's name is reached when the LAN's DNS does not resolve it; empty:
    /// the name is resolved.
    pub agent_address: String,
}

impl Enrolment {
    /// How the agent's certificate is checked on every call.
    pub fn trust(&self) -> crate::agent::AgentTrust {
        if self.fingerprint.is_empty() {
            crate::agent::AgentTrust::Verified {
                ca_file: (!self.ca_file.is_empty()).then(|| PathBuf::from(&self.ca_file)),
                address: self.agent_address.parse().ok(),
            }
        } else {
            crate::agent::AgentTrust::Pinned(self.fingerprint.clone())
        }
    }
}

pub use kasip_core::wire::PassHolder;

/// A scan waiting for (or delivered to) the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedScan {
    pub seq: i64,
    pub scan_id: String,
    pub student_iin: String,
    pub pass: String,
    pub scanned_at: i64,
    /// A pass this kiosk refused, reported for the agent's security log.
    pub reported_refusal: bool,
}

/// A pass the kiosk accepted, about to be recorded.
#[derive(Debug, Clone, Copy)]
pub struct AcceptedScan<'a> {
    pub scan_id: &'a str,
    pub iin: &'a str,
    pub name: &'a str,
    pub pass: &'a str,
    pub signed_at: i64,
    pub scanned_at: i64,
}

/// Counts for `kasip-kiosk status`.
#[derive(Debug, Clone, Serialize)]
pub struct QueueState {
    pub waiting: i64,
    pub oldest_waiting_at: Option<i64>,
    pub forwarded: i64,
    /// Of those forwarded, refused here and reported as security events.
    pub refusals_reported: i64,
    /// Of those accepted here, refused by the agent (its key list is newer, or another
    /// kiosk saw the pass first).
    pub refused_by_agent: i64,
    pub pass_holders: i64,
    pub keys_fetched_at: Option<i64>,
}

pub struct KioskStore {
    connection: Connection,
}

impl KioskStore {
    /// Opens (creating) the kiosk's database in `dir`, made private to its user.
    pub fn open(dir: &KioskDir) -> Result<Self, KioskError> {
        create_private_dir(dir.root())?;
        let path = dir.database_path();
        let connection = Connection::open(&path).map_err(|source| KioskError::Database {
            path: path.clone(),
            source,
        })?;
        let prepare = || -> rusqlite::Result<()> {
            connection.pragma_update(None, "journal_mode", "WAL")?;
            connection.pragma_update(None, "synchronous", "FULL")?;
            connection.busy_timeout(std::time::Duration::from_secs(10))?;
            // Plans that do not change with bound values: cached statements are not
            // compiled again on every reuse (see the agent's `Store::open_with`).
            connection.set_db_config(
                rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
                true,
            )?;
            connection.execute_batch(SCHEMA)?;
            // Columns added after the first kiosks were enrolled: added once, where missing.
            for (column, definition) in [
                ("ca_file", "TEXT NOT NULL DEFAULT ''"),
                ("agent_address", "TEXT NOT NULL DEFAULT ''"),
            ] {
                let present: bool = connection.query_row(
                    "SELECT COUNT(*) > 0 FROM pragma_table_info('enrolment') WHERE name = ?1",
                    [column],
                    |row| row.get(0),
                )?;
                if !present {
                    connection.execute_batch(&format!(
                        "ALTER TABLE enrolment ADD COLUMN {column} {definition}"
                    ))?;
                }
            }
            Ok(())
        };
        prepare().map_err(|source| KioskError::Database { path, source })?;
        Ok(Self { connection })
    }

    fn database_error(&self, source: rusqlite::Error) -> KioskError {
        KioskError::Database {
            path: PathBuf::from(self.connection.path().unwrap_or("kiosk.db")),
            source,
        }
    }

    pub fn enrolment(&self) -> Result<Option<Enrolment>, KioskError> {
        self.connection
            .query_row(
                "SELECT agent_url, kiosk_id, place_kind, place, fingerprint, pass_window_secs, ca_file, agent_address FROM enrolment",
                [],
                |row| {
                    Ok(Enrolment {
                        agent_url: row.get(0)?,
                        kiosk_id: row.get(1)?,
                        place_kind: row.get(2)?,
                        place: row.get(3)?,
                        fingerprint: row.get(4)?,
                        pass_window_secs: row.get(5)?,
                        ca_file: row.get(6)?,
                        agent_address: row.get(7)?,
                    })
                },
            )
            .optional()
            .map_err(|source| self.database_error(source))
    }

    pub fn save_enrolment(&self, enrolment: &Enrolment, now: i64) -> Result<(), KioskError> {
        self.connection
            .execute(
                "INSERT OR REPLACE INTO enrolment (id, agent_url, kiosk_id, place_kind, place, fingerprint, pass_window_secs, enrolled_at, ca_file, agent_address)
                 VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                rusqlite::params![
                    enrolment.agent_url,
                    enrolment.kiosk_id,
                    enrolment.place_kind,
                    enrolment.place,
                    enrolment.fingerprint,
                    enrolment.pass_window_secs,
                    now,
                    enrolment.ca_file,
                    enrolment.agent_address,
                ],
            )
            .map(drop)
            .map_err(|source| self.database_error(source))
    }

    /// Replaces the whole key list in one transaction (a half-written list would refuse
    /// students at random).
    pub fn replace_holders(
        &mut self,
        holders: &[PassHolder],
        generated_at: i64,
        now: i64,
    ) -> Result<(), KioskError> {
        let write = |connection: &mut Connection| -> rusqlite::Result<()> {
            let transaction = connection.transaction()?;
            transaction.execute("DELETE FROM pass_holders", [])?;
            {
                let mut insert = transaction.prepare(
                    "INSERT OR REPLACE INTO pass_holders (iin, name, active, keys) VALUES (?1, ?2, ?3, ?4)",
                )?;
                for holder in holders {
                    let keys = serde_json::to_string(&holder.keys).unwrap_or_else(|_| "[]".into());
                    insert.execute(rusqlite::params![
                        holder.iin,
                        holder.name,
                        holder.active,
                        keys
                    ])?;
                }
            }
            transaction.execute(
                "INSERT OR REPLACE INTO key_refresh (id, fetched_at, generated_at, holders) VALUES (1, ?1, ?2, ?3)",
                rusqlite::params![now, generated_at, holders.len() as i64],
            )?;
            transaction.commit()
        };
        write(&mut self.connection).map_err(|source| self.database_error(source))
    }

    pub fn holder(&self, iin: &str) -> Result<Option<PassHolder>, KioskError> {
        self.connection
            .prepare_cached("SELECT iin, name, active, keys FROM pass_holders WHERE iin = ?1")
            .and_then(|mut statement| {
                statement
                    .query_row([iin], |row| {
                        let keys: String = row.get(3)?;
                        Ok(PassHolder {
                            iin: row.get(0)?,
                            name: row.get(1)?,
                            active: row.get(2)?,
                            keys: serde_json::from_str(&keys).unwrap_or_default(),
                        })
                    })
                    .optional()
            })
            .map_err(|source| self.database_error(source))
    }

    /// When this pass (student, signing time) was first accepted here, if ever.
    pub fn seen_at(&self, iin: &str, signed_at: i64) -> Result<Option<i64>, KioskError> {
        self.connection
            .prepare_cached(
                "SELECT scanned_at FROM seen_passes WHERE student_iin = ?1 AND signed_at = ?2",
            )
            .and_then(|mut statement| {
                statement
                    .query_row(rusqlite::params![iin, signed_at], |row| row.get(0))
                    .optional()
            })
            .map_err(|source| self.database_error(source))
    }

    /// Records an accepted scan: replay cache and queue in one commit.
    pub fn accept(
        &mut self,
        scan: &AcceptedScan<'_>,
        forget_before: i64,
    ) -> Result<(), KioskError> {
        let AcceptedScan {
            scan_id,
            iin,
            name,
            pass,
            signed_at,
            scanned_at,
        } = *scan;
        let write = |connection: &mut Connection| -> rusqlite::Result<()> {
            let transaction = connection.transaction()?;
            transaction.execute(
                "INSERT INTO seen_passes (student_iin, signed_at, scanned_at) VALUES (?1, ?2, ?3)",
                rusqlite::params![iin, signed_at, scanned_at],
            )?;
            transaction.execute(
                "INSERT INTO scan_queue (scan_id, student_iin, name, pass, scanned_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                rusqlite::params![scan_id, iin, name, pass, scanned_at],
            )?;
            // Passes older than the window can no longer be accepted: forget them.
            transaction.execute(
                "DELETE FROM seen_passes WHERE signed_at < ?1",
                [forget_before],
            )?;
            transaction.commit()
        };
        write(&mut self.connection).map_err(|source| self.database_error(source))
    }

    /// Queues a pass the kiosk refused, so the agent records the attempt; the same pass
    /// refused for the same reason again (still in front of the camera) is reported once.
    pub fn report_refusal(
        &mut self,
        scan_id: &str,
        iin: &str,
        pass: &str,
        scanned_at: i64,
        reason: &str,
    ) -> Result<(), KioskError> {
        self.connection
            .execute(
                "INSERT OR IGNORE INTO scan_queue (scan_id, student_iin, name, pass, scanned_at, local_refusal)
                 VALUES (?1, ?2, '', ?3, ?4, ?5)",
                rusqlite::params![scan_id, iin, pass, scanned_at, reason],
            )
            .map(drop)
            .map_err(|source| self.database_error(source))
    }

    /// The oldest scans not yet delivered, in the order they were made.
    pub fn waiting(&self, limit: i64) -> Result<Vec<QueuedScan>, KioskError> {
        self.connection
            .prepare_cached(
                "SELECT seq, scan_id, student_iin, pass, scanned_at, local_refusal IS NOT NULL
                 FROM scan_queue WHERE forwarded_at IS NULL ORDER BY seq LIMIT ?1",
            )
            .and_then(|mut statement| {
                statement
                    .query_map([limit], |row| {
                        Ok(QueuedScan {
                            seq: row.get(0)?,
                            scan_id: row.get(1)?,
                            student_iin: row.get(2)?,
                            pass: row.get(3)?,
                            scanned_at: row.get(4)?,
                            reported_refusal: row.get(5)?,
                        })
                    })?
                    .collect()
            })
            .map_err(|source| self.database_error(source))
    }

    /// Marks scans delivered with the agent's answer for each.
    pub fn delivered(
        &mut self,
        answers: &[(String, String, Option<String>)],
        now: i64,
    ) -> Result<(), KioskError> {
        let write = |connection: &mut Connection| -> rusqlite::Result<()> {
            let transaction = connection.transaction()?;
            for (scan_id, outcome, reason) in answers {
                transaction.execute(
                    "UPDATE scan_queue SET forwarded_at = ?2, outcome = ?3, reason = ?4 WHERE scan_id = ?1",
                    rusqlite::params![scan_id, now, outcome, reason],
                )?;
            }
            transaction.commit()
        };
        write(&mut self.connection).map_err(|source| self.database_error(source))
    }

    pub fn queue_state(&self) -> Result<QueueState, KioskError> {
        self.connection
            .query_row(
                "SELECT
                    (SELECT COUNT(*) FROM scan_queue WHERE forwarded_at IS NULL),
                    (SELECT MIN(scanned_at) FROM scan_queue WHERE forwarded_at IS NULL),
                    (SELECT COUNT(*) FROM scan_queue WHERE forwarded_at IS NOT NULL),
                    (SELECT COUNT(*) FROM scan_queue WHERE forwarded_at IS NOT NULL AND local_refusal IS NOT NULL),
                    (SELECT COUNT(*) FROM scan_queue WHERE outcome = 'refused' AND local_refusal IS NULL),
                    (SELECT COUNT(*) FROM pass_holders),
                    (SELECT fetched_at FROM key_refresh)",
                [],
                |row| {
                    Ok(QueueState {
                        waiting: row.get(0)?,
                        oldest_waiting_at: row.get(1)?,
                        forwarded: row.get(2)?,
                        refusals_reported: row.get(3)?,
                        refused_by_agent: row.get(4)?,
                        pass_holders: row.get(5)?,
                        keys_fetched_at: row.get(6)?,
                    })
                },
            )
            .map_err(|source| self.database_error(source))
    }
}

/// Creates `path` (and parents) with mode 0700, or tightens an existing one.
fn create_private_dir(path: &Path) -> Result<(), KioskError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let io_error = |action: &'static str, source| KioskError::Io {
        action,
        path: path.to_owned(),
        source,
    };
    if !path.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .map_err(|source| io_error("create", source))?;
    }
    let metadata = std::fs::metadata(path).map_err(|source| io_error("read", source))?;
    if metadata.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
            .map_err(|source| io_error("restrict", source))?;
    }
    Ok(())
}

/// Writes the credential file with mode 0600 (replacing an old one).
pub fn write_credential(dir: &KioskDir, credential: &str) -> Result<(), KioskError> {
    use std::io::Write;
    let path = dir.credential_path();
    let io_error = |source| KioskError::Io {
        action: "write",
        path: path.clone(),
        source,
    };
    let temporary = dir.root().join("credential.new");
    let mut file = kasip_certs::process::create_private_file(&temporary).map_err(io_error)?;
    file.write_all(credential.as_bytes()).map_err(io_error)?;
    file.sync_all().map_err(io_error)?;
    std::fs::rename(&temporary, &path).map_err(io_error)
}

/// Reads the credential, refusing a file others can read.
pub fn read_credential(dir: &KioskDir) -> Result<String, KioskError> {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.credential_path();
    let metadata = std::fs::metadata(&path).map_err(|_| KioskError::NotEnrolled {
        dir: dir.root().to_owned(),
    })?;
    if metadata.permissions().mode() & 0o077 != 0 {
        return Err(KioskError::CredentialExposed { path });
    }
    let text = std::fs::read_to_string(&path).map_err(|source| KioskError::Io {
        action: "read",
        path: path.clone(),
        source,
    })?;
    Ok(text.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_accepted_scan_is_queued_and_remembered_across_reopen() {
        let temp = tempfile::tempdir().expect("temp");
        let dir = KioskDir::new(temp.path().join("kiosk"));
        {
            let mut store = KioskStore::open(&dir).expect("open");
            let scan = AcceptedScan {
                scan_id: "s1",
                iin: "900101300017",
                name: "A B",
                pass: "KP1...",
                signed_at: 1000,
                scanned_at: 1005,
            };
            store.accept(&scan, 900).expect("accept");
            assert_eq!(
                store.seen_at("900101300017", 1000).expect("read"),
                Some(1005)
            );
            // The same pass cannot be queued twice.
            let again = AcceptedScan {
                scan_id: "s2",
                scanned_at: 1006,
                ..scan
            };
            assert!(store.accept(&again, 900).is_err());
        }
        let mut store = KioskStore::open(&dir).expect("reopen");
        assert_eq!(
            store.seen_at("900101300017", 1000).expect("read"),
            Some(1005)
        );
        let waiting = store.waiting(10).expect("waiting");
        assert_eq!(waiting.len(), 1);
        assert_eq!(waiting[0].scan_id, "s1");
        store
            .delivered(&[("s1".into(), "marked".into(), None)], 2000)
            .expect("delivered");
        assert!(store.waiting(10).expect("waiting").is_empty());
        let state = store.queue_state().expect("state");
        assert_eq!((state.waiting, state.forwarded), (0, 1));
    }

    #[test]
    fn the_credential_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let temp = tempfile::tempdir().expect("temp");
        let dir = KioskDir::new(temp.path());
        write_credential(&dir, "secret").expect("write");
        let mode = std::fs::metadata(dir.credential_path())
            .expect("file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(read_credential(&dir).expect("read"), "secret");
        std::fs::set_permissions(
            dir.credential_path(),
            std::fs::Permissions::from_mode(0o644),
        )
        .expect("chmod");
        assert!(matches!(
            read_credential(&dir),
            Err(KioskError::CredentialExposed { .. })
        ));
    }
}
