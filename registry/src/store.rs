//! The reference registry's database: colleges, enrolment codes, enrolled agent keys,
//! every batch exactly as received, its records, quarantined records and beneficiaries.
//! WAL with `synchronous=FULL`: a 201 means the batch survives a crash of the registry.

use std::path::{Path, PathBuf};

use kasip_certs::jws::{protected_header, sign_compact, verify_compact};
use kasip_certs::DeviceKey;
use kasip_core::batch::{
    check_record, sha256_hex, BatchEnvelope, BatchKind, KeyRotationRecord, MonthCloseRecord,
    Outcome, Receipt, RecordOutcome, GENESIS_PREV,
};
use kasip_core::{to_canonical_json, Bin, Iin};
use serde::{Deserialize, Serialize};

use crate::db::{params, Db, DbError, Engine, ToValue};

mod names;
mod passkeys;
pub use names::{NameRefusal, ZoneEntry};
pub use passkeys::{
    check_passkeys, passkey_required, verified_marks, PasskeyRefusal, RelyingParty,
};

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS colleges (
    bin  TEXT PRIMARY KEY,
    name TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS enrolment_codes (
    code_hash  TEXT PRIMARY KEY,
    bin        TEXT NOT NULL REFERENCES colleges(bin),
    expires_at INTEGER NOT NULL,
    used_at    INTEGER
);
CREATE TABLE IF NOT EXISTS agents (
    kid         TEXT PRIMARY KEY,
    bin         TEXT NOT NULL REFERENCES colleges(bin),
    public_key  BLOB NOT NULL,
    enrolled_at INTEGER NOT NULL
);
-- The keys an agent signs with: its enrolment key, then each key it rotated to in a
-- key_rotation batch signed by the previous one. `agents.kid` stays the agent's id.
CREATE TABLE IF NOT EXISTS agent_keys (
    kid        TEXT PRIMARY KEY,
    agent      TEXT NOT NULL REFERENCES agents(kid),
    public_key BLOB NOT NULL,
    added_at   INTEGER NOT NULL,
    retired_at INTEGER
);
INSERT OR IGNORE INTO agent_keys (kid, agent, public_key, added_at)
    SELECT kid, kid, public_key, enrolled_at FROM agents;
CREATE TABLE IF NOT EXISTS batches (
    agent       TEXT NOT NULL REFERENCES agents(kid),
    seq         INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    hash        TEXT NOT NULL,
    jws         TEXT NOT NULL,
    receipt     TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (agent, seq)
);
CREATE TABLE IF NOT EXISTS records (
    bin       TEXT NOT NULL,
    kind      TEXT NOT NULL,
    record_id INTEGER NOT NULL,
    agent     TEXT NOT NULL,
    seq       INTEGER NOT NULL,
    body      TEXT NOT NULL,
    PRIMARY KEY (bin, kind, record_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS quarantine (
    agent     TEXT NOT NULL,
    seq       INTEGER NOT NULL,
    position  INTEGER NOT NULL,
    reason    TEXT NOT NULL,
    body      TEXT NOT NULL
);
-- Authorizations of signed reads already accepted: each is single-use. Rows older than
-- twice the allowed clock skew can no longer verify and are deleted.
CREATE TABLE IF NOT EXISTS used_authorizations (
    agent  TEXT NOT NULL,
    jti    TEXT NOT NULL,
    iat    INTEGER NOT NULL,
    PRIMARY KEY (agent, jti)
) WITHOUT ROWID;
-- Each agent's attendance chain as the registry re-walked it from the records it holds:
-- the last event and its hash. Every batch must extend it.
CREATE TABLE IF NOT EXISTS chain_heads (
    agent TEXT PRIMARY KEY REFERENCES agents(kid),
    event INTEGER NOT NULL,
    hash  TEXT NOT NULL
);
-- Chain heads an agent pinned between batches (`POST /v1/heartbeats`): the records that
-- later arrive must hash to each of them.
CREATE TABLE IF NOT EXISTS heartbeats (
    agent       TEXT NOT NULL REFERENCES agents(kid),
    events      INTEGER NOT NULL,
    head        TEXT NOT NULL,
    agent_time  INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    broken      TEXT,
    PRIMARY KEY (agent, events, head)
) WITHOUT ROWID;
-- What the registry noticed about an agent's evidence: tamper alarms and the agent's own
-- reports of a break. The auditor's findings join these.
CREATE TABLE IF NOT EXISTS findings (
    id       INTEGER PRIMARY KEY,
    agent    TEXT NOT NULL,
    bin      TEXT NOT NULL,
    kind     TEXT NOT NULL,
    month    TEXT,
    detail   TEXT NOT NULL,
    -- Record ids (or batch seqs) a person can look up, comma-separated.
    evidence TEXT NOT NULL DEFAULT '',
    at       INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS findings_by_college ON findings(bin, id);
-- A finding's status over time: open until a person explains or confirms it, with who
-- and why. Append-only: the history of a judgement is evidence too.
CREATE TABLE IF NOT EXISTS finding_status (
    id         INTEGER PRIMARY KEY,
    finding_id INTEGER NOT NULL REFERENCES findings(id),
    status     TEXT NOT NULL CHECK (status IN ('open', 'explained', 'confirmed')),
    by         TEXT NOT NULL,
    reason     TEXT NOT NULL,
    at         INTEGER NOT NULL
);
CREATE TRIGGER IF NOT EXISTS finding_status_no_update BEFORE UPDATE ON finding_status
BEGIN SELECT RAISE(ABORT, 'finding status changes are append-only'); END;
CREATE TRIGGER IF NOT EXISTS finding_status_no_delete BEFORE DELETE ON finding_status
BEGIN SELECT RAISE(ABORT, 'finding status changes are append-only'); END;
-- Who was present where and when, and which phones checked in for which college: the
-- cross-college rules (one student at two colleges on a day, one phone at two colleges).
CREATE TABLE IF NOT EXISTS presence (
    student_iin TEXT NOT NULL,
    date        TEXT NOT NULL,
    bin         TEXT NOT NULL,
    record_id   INTEGER NOT NULL,
    PRIMARY KEY (student_iin, date, bin, record_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS devices_seen (
    device    TEXT NOT NULL,
    bin       TEXT NOT NULL,
    record_id INTEGER NOT NULL,
    PRIMARY KEY (device, bin)
) WITHOUT ROWID;
-- When each batch was created, by the agent's clock: the timeline rules compare them.
CREATE TABLE IF NOT EXISTS batch_times (
    agent   TEXT NOT NULL,
    seq     INTEGER NOT NULL,
    created INTEGER NOT NULL,
    PRIMARY KEY (agent, seq)
) WITHOUT ROWID;
-- The national policy every agent applies (its config may only be stricter).
CREATE TABLE IF NOT EXISTS policy (
    id                 INTEGER PRIMARY KEY CHECK (id = 1),
    min_coverage       INTEGER NOT NULL,
    student_qr_share   INTEGER NOT NULL,
    typed_counts_as_qr INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL
);
INSERT OR IGNORE INTO policy VALUES (1, 500, 500, 1, 0);
-- The registry's own figure for a college's month (`audit::MonthFigures` as JSON),
-- recomputed from the records it holds when the statement arrives and on `audit`.
CREATE TABLE IF NOT EXISTS month_figures (
    bin         TEXT NOT NULL REFERENCES colleges(bin),
    month       TEXT NOT NULL,
    figures     TEXT NOT NULL,
    computed_at INTEGER NOT NULL,
    PRIMARY KEY (bin, month)
);
-- The statistical flags' thresholds (`audit::Thresholds` as JSON); defaults without a row.
CREATE TABLE IF NOT EXISTS audit_thresholds (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    thresholds TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);
-- Registrars and auditors (argon2id hashes) and their sessions (token SHA-256 only).
CREATE TABLE IF NOT EXISTS registry_users (
    login         TEXT PRIMARY KEY,
    role          TEXT NOT NULL CHECK (role IN ('registrar', 'auditor')),
    password_hash TEXT NOT NULL,
    created_at    INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS registry_sessions (
    token_hash TEXT PRIMARY KEY,
    login      TEXT NOT NULL REFERENCES registry_users(login),
    csrf       TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS licensed_addresses (
    bin     TEXT NOT NULL REFERENCES colleges(bin),
    address TEXT NOT NULL,
    PRIMARY KEY (bin, address)
);
CREATE TABLE IF NOT EXISTS agent_names (
    bin            TEXT PRIMARY KEY REFERENCES colleges(bin),
    label          TEXT NOT NULL UNIQUE,
    addresses      TEXT NOT NULL DEFAULT '[]',
    acme_challenge TEXT NOT NULL DEFAULT '[]',
    updated_at     INTEGER
);
CREATE TABLE IF NOT EXISTS beneficiaries (
    bin         TEXT NOT NULL REFERENCES colleges(bin),
    iin         TEXT NOT NULL,
    beneficiary INTEGER NOT NULL,
    voucher     TEXT NOT NULL,
    PRIMARY KEY (bin, iin)
);
-- Records held per college and kind, kept with every batch: the national overview reads
-- these, never the records (a month of the country is tens of millions).
CREATE TABLE IF NOT EXISTS record_counts (
    bin     TEXT NOT NULL,
    kind    TEXT NOT NULL,
    records INTEGER NOT NULL,
    PRIMARY KEY (bin, kind)
);
"#;

/// Counts the records of a registry made before `record_counts` existed, once.
const FILL_RECORD_COUNTS: &str = "INSERT INTO record_counts (bin, kind, records)
     SELECT bin, kind, COUNT(*) FROM records
     WHERE NOT EXISTS (SELECT 1 FROM record_counts) GROUP BY bin, kind";

/// One stored finding, as `kasip-registry findings` and the findings API show it.
#[derive(Debug, Clone, Serialize)]
pub struct FindingRow {
    pub id: i64,
    /// `open`, `explained` or `confirmed`: its latest status change.
    pub status: String,
    pub college_bin: String,
    pub kind: String,
    /// `critical`, `high` or `medium`, by its kind (`timeline::severity`).
    pub severity: String,
    pub month: Option<String>,
    pub detail: String,
    /// Record ids (or batch seqs), comma-separated.
    pub evidence: String,
    pub at: i64,
}

/// Who signs with a key: the agent's id (its enrolment thumbprint), college and key.
#[derive(Debug, Clone)]
pub struct SigningAgent {
    pub public_key: Vec<u8>,
    pub bin: String,
    pub agent_id: String,
}

/// How long an enrolment code is valid.
pub const ENROLMENT_CODE_SECS: i64 = 7 * 24 * 3600;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// `place` is the database file, or the PostgreSQL server and database.
    #[error("registry database {place}: {source}")]
    Database { place: String, source: DbError },
    #[error("{0}")]
    Key(#[from] kasip_certs::KeyError),
    #[error("{0}")]
    Usage(String),
    /// `what` could not be done; the sentence names the file or address.
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("the system random generator failed; nothing was changed")]
    Random,
    #[error("cannot write the receipt")]
    Receipt(#[source] kasip_core::BatchError),
}

impl RegistryError {
    /// `what` failed with `source` (an I/O, TLS or server error).
    pub fn io<E: std::error::Error + Send + Sync + 'static>(
        what: impl Into<String>,
    ) -> impl FnOnce(E) -> Self {
        let what = what.into();
        move |source| Self::Io {
            what,
            source: Box::new(source),
        }
    }
}

/// What the registry answers to a batch, before it becomes HTTP.
#[derive(Debug)]
pub enum Verdict {
    /// 201 with the receipt.
    Stored(String),
    /// 200 with the stored receipt.
    AlreadyStored(String),
    /// 409.
    Conflict { expected_seq: u64, message: String },
    /// 400.
    Bad(String),
    /// 401.
    UnknownAgent(String),
    /// 409 for good: a key rotation announces a key enrolled to another agent.
    KeyTaken(String),
}

/// What an enrolment came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enrolment {
    /// 201: the key's thumbprint, now the agent's id; the code is used up.
    Enrolled(String),
    /// 200: the key is already this college's agent (the agent lost the first answer and
    /// asks again); the agent's id. The code stays unused.
    AlreadyEnrolled(String),
    /// 403: the code is unknown, used, expired or another college's.
    Refused(String),
    /// 409: the key is already another college's; the code stays unused.
    KeyTaken(String),
}

/// The database and its WAL files, the owner's only (also for a registry made before).
fn restrict_database_files(path: &Path) -> Result<(), RegistryError> {
    use std::os::unix::fs::PermissionsExt;
    for suffix in ["", "-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let file = PathBuf::from(name);
        if file.exists() {
            std::fs::set_permissions(
                &file,
                std::fs::Permissions::from_mode(kasip_certs::KEY_FILE_MODE),
            )
            .map_err(RegistryError::io(format!(
                "cannot restrict {}",
                file.display()
            )))?;
        }
    }
    Ok(())
}

fn open_sqlite(path: &Path) -> Result<Db, RegistryError> {
    let fail = |source: rusqlite::Error| RegistryError::Database {
        place: path.display().to_string(),
        source: source.into(),
    };
    // SQLite gives its -wal and -shm files the database file's mode.
    if !path.exists() {
        kasip_certs::process::create_private_file(path).map_err(RegistryError::io(format!(
            "cannot create {}",
            path.display()
        )))?;
    }
    let connection = rusqlite::Connection::open(path).map_err(fail)?;
    // Plans that do not change with bound values, so that cached statements are not
    // compiled again on every reuse (see the agent's `Store::open_with`).
    connection
        .set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
            true,
        )
        .map_err(fail)?;
    // A full batch writes ~7 MB in one transaction: with SQLite's default 2 MiB page
    // cache, pages spilled into the log mid-transaction and some were written twice.
    connection
        .execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;
             PRAGMA busy_timeout = 10000; PRAGMA cache_size = -65536;",
        )
        .map_err(fail)?;
    restrict_database_files(path)?;
    connection.execute_batch(SCHEMA).map_err(fail)?;
    connection.execute_batch(passkeys::SCHEMA).map_err(fail)?;
    connection.execute_batch(FILL_RECORD_COUNTS).map_err(fail)?;
    // A column added after the first registries were made: added once, where missing.
    let has_timezone: bool = connection
        .query_row(
            "SELECT COUNT(*) > 0 FROM pragma_table_info('colleges') WHERE name = 'timezone'",
            [],
            |row| row.get(0),
        )
        .map_err(fail)?;
    if !has_timezone {
        connection
            .execute_batch(
                "ALTER TABLE colleges ADD COLUMN timezone TEXT NOT NULL DEFAULT 'Asia/Almaty'",
            )
            .map_err(fail)?;
    }
    Ok(Db::sqlite(connection))
}

/// Connects with the registry's limits and creates the schema where missing: under an
/// advisory lock, since several processes may start at once on one database.
fn open_postgres(url: &str) -> Result<(Db, String), RegistryError> {
    let mut config: postgres::Config = url
        .parse()
        .map_err(|error| RegistryError::Usage(format!("--database: {error}")))?;
    let place = format!(
        "postgresql {}/{}",
        config
            .get_hosts()
            .first()
            .map(|host| match host {
                postgres::config::Host::Tcp(name) => name.clone(),
                postgres::config::Host::Unix(path) => path.display().to_string(),
            })
            .unwrap_or_default(),
        config.get_dbname().unwrap_or_default()
    );
    config
        .application_name("kasip-registry")
        .connect_timeout(std::time::Duration::from_secs(10))
        .options(&format!(
            "-c client_min_messages=warning -c statement_timeout={STATEMENT_TIMEOUT_MS} -c lock_timeout={STATEMENT_TIMEOUT_MS} -c idle_in_transaction_session_timeout={}",
            2 * STATEMENT_TIMEOUT_MS
        ));
    let fail = |source: postgres::Error| RegistryError::Database {
        place: place.clone(),
        source: source.into(),
    };
    let client = config.connect(postgres::NoTls).map_err(fail)?;
    let db = Db::postgres(client);
    db.batch(concat!(
        "BEGIN; SELECT pg_advisory_xact_lock(hashtextextended('kasip:schema', 0));\n",
        include_str!("store/postgres.sql"),
        "\nCOMMIT;"
    ))
    .map_err(|source| RegistryError::Database {
        place: place.clone(),
        source,
    })?;
    Ok((db, place))
}

/// Which database the registry keeps: an SQLite file in its data dir (the default), or a
/// PostgreSQL database that several registry processes share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    Sqlite,
    /// A `postgres://` URL (libpq's URL form; a password in it is never logged).
    Postgres(String),
}

impl Database {
    /// `--database` if given, else `database` in `DATA_DIR/registry.toml`, else SQLite.
    pub fn configured(data_dir: &Path, option: Option<&str>) -> Result<Self, RegistryError> {
        if option.is_some() {
            return Self::parse(option);
        }
        let path = data_dir.join(CONFIG_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Self::Sqlite),
            Err(error) => {
                return Err(RegistryError::io(format!("cannot read {}", path.display()))(error))
            }
        };
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Config {
            database: Option<String>,
        }
        let config: Config = toml::from_str(&text).map_err(|error| {
            RegistryError::Usage(format!("{}: {}", path.display(), error.message()))
        })?;
        Self::parse(config.database.as_deref())
    }

    /// `--database`: absent or `sqlite` for the file, a `postgres://` URL otherwise.
    pub fn parse(option: Option<&str>) -> Result<Self, RegistryError> {
        match option.map(str::trim) {
            None | Some("") | Some("sqlite") => Ok(Self::Sqlite),
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                url.parse::<postgres::Config>().map_err(|error| {
                    RegistryError::Usage(format!("--database: not a PostgreSQL URL: {error}"))
                })?;
                Ok(Self::Postgres(url.to_owned()))
            }
            Some(_) => Err(RegistryError::Usage(
                "--database: use `sqlite` (the default) or a postgres://user@host:port/database URL"
                    .into(),
            )),
        }
    }
}

/// The registry's settings in its data dir (`database = "postgres://…"`), for a service
/// whose command line stays the package's.
pub const CONFIG_FILE: &str = "registry.toml";

/// PostgreSQL's limits on one registry connection: a statement that runs longer is
/// cancelled (the agent retries its batch), a lock waited for longer too.
const STATEMENT_TIMEOUT_MS: u64 = 30_000;

pub struct RegistryStore {
    db: Db,
    /// Where the database is, for error messages: the file, or host and database.
    place: String,
    /// Wakes the checkpoint thread after a batch is stored, when there is one.
    committed: Option<std::sync::mpsc::Sender<()>>,
    key: DeviceKey,
    /// Whether received batches are audited (chain re-walk, timeline rules, month
    /// audit). Always, except for the audit benchmark's baseline.
    audit: bool,
    /// The passkeys' relying party, when this registry verifies check-ins' assertions.
    relying_party: Option<RelyingParty>,
    /// Months whose records partition is known to exist (PostgreSQL).
    partitions: std::collections::HashSet<kasip_core::Month>,
}

impl RegistryStore {
    /// Moves SQLite's checkpoints off this connection (the one that receives) to a thread
    /// and connection of their own, woken after each commit: the log is copied while the
    /// registry waits for the agent's next batch, and the next batch finds it copied and
    /// writes the log from its start again (checkpointing inline was 13% of the
    /// receiving thread's CPU in the sync bench). PASSIVE checkpoints never block a
    /// writer or a reader; the thread ends with this store. PostgreSQL checkpoints itself.
    pub fn checkpoint_in_background(&mut self) -> Result<(), RegistryError> {
        let Some(connection) = self.db.as_sqlite() else {
            return Ok(());
        };
        let path = PathBuf::from(&self.place);
        let fail = |source: rusqlite::Error| RegistryError::Database {
            place: self.place.clone(),
            source: source.into(),
        };
        let checkpoints = rusqlite::Connection::open(&path).map_err(fail)?;
        checkpoints
            .execute_batch("PRAGMA busy_timeout = 10000;")
            .map_err(fail)?;
        // The receiving connection still checkpoints when the log passes 64 MiB: the
        // backstop should this thread ever fall behind.
        connection
            .execute_batch("PRAGMA wal_autocheckpoint = 16384;")
            .map_err(fail)?;
        let (committed, commits) = std::sync::mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("checkpoints".into())
            .spawn(move || {
                while commits.recv().is_ok() {
                    // One checkpoint for every commit made meanwhile.
                    while commits.try_recv().is_ok() {}
                    if let Err(error) = checkpoints.execute_batch("PRAGMA wal_checkpoint(PASSIVE);") {
                        tracing::warn!(path = %path.display(), %error, "checkpoint failed; the next one retries");
                    }
                }
            })
            .map_err(RegistryError::io("cannot start the checkpoint thread"))?;
        self.committed = Some(committed);
        Ok(())
    }

    /// Opens (creating when needed) the registry in `data_dir`, on SQLite.
    pub fn open(data_dir: &Path) -> Result<Self, RegistryError> {
        Self::open_with(data_dir, &Database::Sqlite)
    }

    /// Opens (creating when needed) the registry: its signing key in `data_dir`, its
    /// tables in `database`.
    pub fn open_with(data_dir: &Path, database: &Database) -> Result<Self, RegistryError> {
        // Every college's records: the service's user's only, whatever the umask.
        kasip_certs::process::create_private_dir(data_dir).map_err(RegistryError::io(format!(
            "cannot create {}",
            data_dir.display()
        )))?;
        let key_path = data_dir.join("registry-key.pem");
        let key = if key_path.exists() {
            DeviceKey::load(&key_path)?
        } else {
            DeviceKey::generate_to(&key_path)?
        };
        let (db, place) = match database {
            Database::Sqlite => {
                let path = data_dir.join("registry.db");
                (open_sqlite(&path)?, path.display().to_string())
            }
            Database::Postgres(url) => open_postgres(url)?,
        };
        Ok(Self {
            db,
            place,
            committed: None,
            key,
            audit: true,
            relying_party: None,
            partitions: std::collections::HashSet::new(),
        })
    }

    /// The cross-college rules for a stored batch's `attendance`, in a transaction of
    /// their own after the batch's (PostgreSQL: `timeline::across_colleges` says why).
    fn check_across_colleges(
        &self,
        agent: &str,
        bin: &str,
        attendance: &[kasip_core::batch::AttendanceRecord],
        now: i64,
    ) -> Result<(), RegistryError> {
        let fail = |source| self.fail(source);
        let transaction = self.db.transaction().map_err(fail)?;
        for finding in
            crate::timeline::across_colleges(&transaction, bin, attendance).map_err(fail)?
        {
            crate::timeline::record(&transaction, agent, bin, &finding, now).map_err(fail)?;
        }
        transaction.commit().map_err(fail)
    }

    /// Creates `month`'s records partition unless it exists (PostgreSQL): in a
    /// transaction of its own, under a lock, since another process may be making it too.
    fn ensure_month_partition(&mut self, month: kasip_core::Month) -> Result<(), RegistryError> {
        if self.partitions.contains(&month) {
            return Ok(());
        }
        // The table's name comes from a parsed month: digits and a dash only.
        let name = format!("records_{}", month.to_string().replace('-', "_"));
        let sql = format!(
            "BEGIN; SELECT pg_advisory_xact_lock(hashtextextended('kasip:partitions', 0));
             CREATE TABLE IF NOT EXISTS {name} PARTITION OF records FOR VALUES IN ('{month}');
             COMMIT;"
        );
        self.db.batch(&sql).map_err(|source| self.fail(source))?;
        self.partitions.insert(month);
        Ok(())
    }

    /// Verifies check-ins' passkey assertions on receipt, for passkeys made for
    /// `relying_party.rp_id` on pages of the agents' zone.
    pub fn verify_passkeys(&mut self, relying_party: RelyingParty) {
        self.relying_party = Some(relying_party);
    }

    /// `value` as canonical JSON in a compact JWS by the registry's key.
    fn sign_value(&self, value: &impl Serialize) -> String {
        let payload = serde_json::to_value(value)
            .ok()
            .and_then(|value| to_canonical_json(&value).ok())
            .unwrap_or_default();
        sign_compact(&self.key, &protected_header(&self.key), payload.as_bytes())
    }

    /// The same store receiving without any audit: only the audit benchmark's baseline
    /// (`benches/audit.rs`) may want this; a registry that serves never does.
    pub fn without_audit_for_benchmark(mut self) -> Self {
        self.audit = false;
        self
    }

    fn fail(&self, source: impl Into<DbError>) -> RegistryError {
        RegistryError::Database {
            place: self.place.clone(),
            source: source.into(),
        }
    }

    /// The database, for tools and tests that read the registry's tables.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Whether this store's database connection is gone for good (`Db::is_lost`).
    pub fn connection_lost(&self) -> bool {
        self.db.is_lost()
    }

    /// What the health check reports: the engine answers a query.
    pub fn check_database(&self) -> Result<&'static str, RegistryError> {
        self.db
            .value::<i64>("SELECT 1", params![])
            .map_err(|source| self.fail(source))?;
        Ok(match self.db.engine() {
            Engine::Sqlite => "sqlite",
            Engine::Postgres => "postgresql",
        })
    }

    pub fn registry_key(&self) -> &DeviceKey {
        &self.key
    }

    /// Registers (or renames) a college, in its time zone: the timeline rules place its
    /// lessons' windows with it.
    pub fn add_college(
        &self,
        bin: &Bin,
        name: &str,
        timezone: &kasip_core::CollegeTimezone,
    ) -> Result<(), RegistryError> {
        let name = name.trim();
        if name.is_empty() {
            return Err(RegistryError::Usage("the college name is empty".into()));
        }
        self.db
            .execute(
                "INSERT INTO colleges (bin, name, timezone) VALUES (?1, ?2, ?3)
                 ON CONFLICT (bin) DO UPDATE SET name = excluded.name, timezone = excluded.timezone",
                params![bin.to_string(), name, timezone.name()],
            )
            .map_err(|source| self.fail(source))?;
        Ok(())
    }

    fn college_exists(&self, bin: &str) -> Result<bool, RegistryError> {
        self.db
            .query_opt(
                "SELECT 1 FROM colleges WHERE bin = ?1",
                params![bin],
                |_| Ok(()),
            )
            .map(|found| found.is_some())
            .map_err(|source| self.fail(source))
    }

    /// A one-time enrolment code for `bin`, valid for a week; only its hash is stored.
    pub fn issue_enrolment_code(&self, bin: &Bin, now: i64) -> Result<String, RegistryError> {
        if !self.college_exists(&bin.to_string())? {
            return Err(RegistryError::Usage(format!(
                "college {bin} is not registered; add it first with `kasip-registry add-college --bin {bin} --name NAME`"
            )));
        }
        let mut bytes = [0u8; 10];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
            .map_err(|_| RegistryError::Random)?;
        // Crockford base32: no I, L, O, U to misread when typed from paper.
        const ALPHABET: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
        let code: String = bytes
            .iter()
            .map(|byte| ALPHABET[usize::from(byte % 32)] as char)
            .collect();
        self.db
            .execute(
                "INSERT INTO enrolment_codes (code_hash, bin, expires_at) VALUES (?1, ?2, ?3)",
                params![
                    sha256_hex(code.as_bytes()),
                    bin.to_string(),
                    now + ENROLMENT_CODE_SECS
                ],
            )
            .map_err(|source| self.fail(source))?;
        Ok(code)
    }

    /// Binds `public_key` to the college of a valid, unused `code`. Returns the kid.
    pub fn enrol(
        &mut self,
        code: &str,
        bin: &str,
        public_key: &[u8],
        now: i64,
    ) -> Result<Enrolment, RegistryError> {
        let Some(key) = kasip_certs::DeviceKey::thumbprint_of(public_key) else {
            return Ok(Enrolment::Refused(
                "public_key is not a 32-byte Ed25519 key".into(),
            ));
        };
        let code = code.trim().to_uppercase();
        let code_hash = sha256_hex(code.as_bytes());
        let fail = |source| self.fail(source);
        let transaction = self.db.transaction().map_err(fail)?;
        let found: Option<(String, i64, Option<i64>)> = transaction
            .query_opt(
                "SELECT bin, expires_at, used_at FROM enrolment_codes WHERE code_hash = ?1",
                params![code_hash],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .map_err(fail)?;
        let holder: Option<(String, String)> = transaction
            .query_opt(
                "SELECT a.bin, a.kid FROM agent_keys k JOIN agents a ON a.kid = k.agent WHERE k.kid = ?1",
                params![key],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .map_err(fail)?;
        match holder {
            Some((holder_bin, agent)) if holder_bin == bin => {
                return Ok(Enrolment::AlreadyEnrolled(agent));
            }
            // Binding it again would leave it with its first college while the code was
            // spent; the rightful agent's batches would then all be refused.
            Some(_) => {
                return Ok(Enrolment::KeyTaken(format!(
                    "the key {key} is already enrolled for another college; the code was not \
                     used. An agent that moves to another college makes a new key first"
                )));
            }
            None => {}
        }
        let verdict = match found {
            None => Err("unknown enrolment code".to_owned()),
            Some((_, _, Some(_))) => Err("this enrolment code was already used".to_owned()),
            Some((_, expires, None)) if expires < now => {
                Err("this enrolment code has expired; ask for a new one".to_owned())
            }
            Some((code_bin, _, None)) if code_bin != bin => Err(format!(
                "this enrolment code is for another college, not {bin}"
            )),
            Some(_) => Ok(key),
        };
        let kid = match verdict {
            Ok(kid) => kid,
            Err(reason) => return Ok(Enrolment::Refused(reason)),
        };
        // Spent only if still unspent: two registry processes given one code at once
        // enrol one key, whatever the isolation level.
        let spent = transaction
            .execute(
                "UPDATE enrolment_codes SET used_at = ?1 WHERE code_hash = ?2 AND used_at IS NULL",
                params![now, code_hash],
            )
            .map_err(fail)?;
        if spent != 1 {
            return Ok(Enrolment::Refused(
                "this enrolment code was already used".to_owned(),
            ));
        }
        transaction
            .execute(
                "INSERT INTO agents (kid, bin, public_key, enrolled_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (kid) DO NOTHING",
                params![kid, bin, public_key, now],
            )
            .map_err(fail)?;
        transaction
            .execute(
                "INSERT INTO agent_keys (kid, agent, public_key, added_at) VALUES (?1, ?1, ?2, ?3)
                 ON CONFLICT (kid) DO NOTHING",
                params![kid, public_key, now],
            )
            .map_err(fail)?;
        transaction.commit().map_err(fail)?;
        Ok(Enrolment::Enrolled(kid))
    }

    /// Accepts a signed read's `jti` once: false when it was used before.
    pub fn use_authorization(
        &mut self,
        agent: &str,
        jti: &str,
        iat: i64,
        now: i64,
    ) -> Result<bool, RegistryError> {
        let fail = |source| self.fail(source);
        self.db
            .execute(
                "DELETE FROM used_authorizations WHERE iat < ?1",
                params![now - 2 * kasip_certs::agent_auth::MAX_SKEW_SECS],
            )
            .map_err(fail)?;
        let inserted = self
            .db
            .execute(
                "INSERT INTO used_authorizations (agent, jti, iat) VALUES (?1, ?2, ?3)
                 ON CONFLICT DO NOTHING",
                params![agent, jti, iat],
            )
            .map_err(fail)?;
        Ok(inserted == 1)
    }

    /// The agent that signs with the current (not retired) key `kid`.
    pub fn agent(&self, kid: &str) -> Result<Option<SigningAgent>, RegistryError> {
        self.db
            .query_opt(
                "SELECT k.public_key, a.bin, a.kid FROM agent_keys k JOIN agents a ON a.kid = k.agent
                 WHERE k.kid = ?1 AND k.retired_at IS NULL",
                params![kid],
                |row| {
                    Ok(SigningAgent {
                        public_key: row.get(0)?,
                        bin: row.get(1)?,
                        agent_id: row.get(2)?,
                    })
                },
            )
            .map_err(|source| self.fail(source))
    }

    /// Judges and (when good) stores one batch, atomically: design §5.4.
    pub fn receive(&mut self, jws: &str, now: i64) -> Result<Verdict, RegistryError> {
        let Some(kid) = kasip_certs::agent_auth::jws_kid(jws) else {
            return Ok(Verdict::Bad("not a compact JWS with a kid".into()));
        };
        let Some(SigningAgent {
            public_key,
            bin,
            agent_id,
        }) = self.agent(&kid)?
        else {
            return Ok(Verdict::UnknownAgent(format!(
                "no agent with key {kid} is enrolled (or the key was rotated away); run `kasip-agent enroll`"
            )));
        };
        // The algorithm comes from the enrolled key (Ed25519), never from the header.
        let verified = match verify_compact(jws, &public_key) {
            Ok(verified) => verified,
            Err(error) => return Ok(Verdict::Bad(error.to_string())),
        };
        let envelope = match BatchEnvelope::parse(&verified.payload) {
            Ok(envelope) => envelope,
            Err(error) => return Ok(Verdict::Bad(error.to_string())),
        };
        if envelope.agent != agent_id {
            return Ok(Verdict::Bad(format!(
                "payload agent {} is not the agent {agent_id} that key {kid} belongs to",
                envelope.agent
            )));
        }
        // A rotation's new key must be what its thumbprint says.
        let mut new_keys = Vec::new();
        if envelope.kind == BatchKind::KeyRotation {
            for record in &envelope.records {
                let parsed: Option<KeyRotationRecord> = record.parse().ok();
                let new_key = parsed.as_ref().and_then(|record| {
                    base64::Engine::decode(
                        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                        &record.new_key,
                    )
                    .ok()
                });
                match (parsed, new_key) {
                    (Some(record), Some(new_key))
                        if kasip_certs::DeviceKey::thumbprint_of(&new_key).as_deref()
                            == Some(record.new_kid.as_str()) =>
                    {
                        new_keys.push((record.new_kid, new_key));
                    }
                    _ => {
                        return Ok(Verdict::Bad(
                            "key_rotation: new_kid is not the thumbprint of new_key".into(),
                        ))
                    }
                }
            }
        }
        for (new_kid, _) in &new_keys {
            let taken: bool = self
                .db
                .value(
                    "SELECT EXISTS (SELECT 1 FROM agent_keys WHERE kid = ?1)",
                    params![new_kid],
                )
                .map_err(|source| self.fail(source))?;
            if taken {
                return Ok(Verdict::KeyTaken(format!(
                    "key_rotation: the key {new_kid} is already enrolled; announce a new key"
                )));
            }
        }
        let kid_signing = kid;
        let kid = agent_id;
        if envelope.college_bin != bin {
            return Ok(Verdict::Bad(format!(
                "payload college_bin {} is not the enrolled college {bin}",
                envelope.college_bin
            )));
        }
        let hash = sha256_hex(jws.as_bytes());
        let months = match self.db.engine() {
            Engine::Sqlite => Vec::new(),
            Engine::Postgres => {
                let months: Vec<_> = envelope
                    .records
                    .iter()
                    .map(|record| record_month(record.as_str(), envelope.created))
                    .collect();
                for month in months
                    .iter()
                    .copied()
                    .collect::<std::collections::BTreeSet<_>>()
                {
                    self.ensure_month_partition(month)?;
                }
                months
            }
        };
        let place = self.place.clone();
        let fail = |source| RegistryError::Database {
            place: place.clone(),
            source,
        };
        let transaction = self.db.transaction().map_err(fail)?;
        // Another registry process may be storing this agent's batch right now: its
        // sequence and chain are read only once that one has committed or rolled back.
        transaction.lock_agent(&kid).map_err(fail)?;
        let same_seq: Option<(String, String)> = transaction
            .query_opt(
                "SELECT hash, receipt FROM batches WHERE agent = ?1 AND seq = ?2",
                params![kid, envelope.seq],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .map_err(fail)?;
        let (last_seq, last_hash): (u64, String) = transaction
            .query_opt(
                "SELECT seq, hash FROM batches WHERE agent = ?1 ORDER BY seq DESC LIMIT 1",
                params![kid],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .map_err(fail)?
            .unwrap_or((0, GENESIS_PREV.to_owned()));
        match same_seq {
            Some((stored_hash, receipt)) if stored_hash == hash => {
                return Ok(Verdict::AlreadyStored(receipt))
            }
            Some(_) => {
                return Ok(Verdict::Conflict {
                    expected_seq: last_seq + 1,
                    message: format!(
                        "TAMPER ALARM: seq {} is already stored with a different hash",
                        envelope.seq
                    ),
                })
            }
            None => {}
        }
        if envelope.seq != last_seq + 1 {
            return Ok(Verdict::Conflict {
                expected_seq: last_seq + 1,
                message: format!("expected seq {}, got {}", last_seq + 1, envelope.seq),
            });
        }
        if envelope.prev != last_hash {
            return Ok(Verdict::Conflict {
                expected_seq: last_seq + 1,
                message: format!(
                    "prev of seq {} does not match the stored seq {last_seq}: the agent's chain forked",
                    envelope.seq
                ),
            });
        }
        /// A refused record's id, if it has one.
        #[derive(Deserialize)]
        struct RecordId {
            id: u64,
        }
        let mut outcomes = Vec::with_capacity(envelope.records.len());
        // Checked records, stored together below: (outcome index, id, body, month).
        let mut accepted = Vec::with_capacity(envelope.records.len());
        let mut attendance = Vec::new();
        {
            for (position, record) in envelope.records.iter().enumerate() {
                // Stored as signed: the envelope's parse found it canonical.
                let body = record.as_str();
                let checked = if envelope.kind == BatchKind::Attendance {
                    // Parsed once: checked, and kept for the audit (a record refused
                    // for its content is still an event of the agent's chain).
                    match record.parse::<kasip_core::batch::AttendanceRecord>() {
                        Ok(parsed) => {
                            let checked = kasip_core::batch::check_attendance(envelope.v, &parsed)
                                .map(|()| parsed.id);
                            if self.audit {
                                attendance.push(parsed);
                            }
                            checked
                        }
                        Err(error) => Err(error),
                    }
                } else {
                    check_record(envelope.v, envelope.kind, record)
                };
                match checked {
                    Ok(id) => {
                        accepted.push((outcomes.len(), id, body, months.get(position)));
                        outcomes.push(RecordOutcome {
                            id,
                            outcome: Outcome::Duplicate,
                            reason: None,
                        });
                    }
                    Err(reason) => {
                        transaction
                            .execute(
                                "INSERT INTO quarantine (agent, seq, position, reason, body)
                                 VALUES (?1, ?2, ?3, ?4, ?5)",
                                params![kid, envelope.seq, position, reason, body],
                            )
                            .map_err(fail)?;
                        outcomes.push(RecordOutcome {
                            id: record.parse::<RecordId>().map_or(0, |record| record.id),
                            outcome: Outcome::Rejected,
                            reason: Some(reason),
                        });
                    }
                }
            }
        }
        let month_texts: Vec<Option<String>> = accepted
            .iter()
            .map(|(_, _, _, month)| month.map(|month| month.to_string()))
            .collect();
        let kind = envelope.kind.as_str();
        let rows: Vec<Vec<crate::db::Value<'_>>> = accepted
            .iter()
            .zip(&month_texts)
            .map(|((_, id, body, _), month)| {
                let mut row = vec![
                    bin.value(),
                    kind.value(),
                    id.value(),
                    kid.value(),
                    envelope.seq.value(),
                    body.value(),
                ];
                if let Some(month) = month {
                    row.push(month.value());
                }
                row
            })
            .collect();
        let inserted: std::collections::HashSet<i64> = transaction
            .insert_rows(
                match self.db.engine() {
                    Engine::Sqlite => {
                        "INSERT INTO records (bin, kind, record_id, agent, seq, body)"
                    }
                    Engine::Postgres => {
                        "INSERT INTO records (bin, kind, record_id, agent, seq, body, month)"
                    }
                },
                "ON CONFLICT DO NOTHING RETURNING record_id",
                &rows,
            )
            .map_err(fail)?
            .into_iter()
            .collect();
        // A record is accepted once: a second copy in the same batch is a duplicate.
        let mut counted = std::collections::HashSet::new();
        for (index, id, _, _) in &accepted {
            if inserted.contains(&(*id as i64)) && counted.insert(*id) {
                outcomes[*index].outcome = Outcome::Accepted;
            }
        }
        if !counted.is_empty() {
            transaction
                .execute(
                    "INSERT INTO record_counts (bin, kind, records) VALUES (?1, ?2, ?3)
                     ON CONFLICT (bin, kind) DO UPDATE
                     SET records = record_counts.records + excluded.records",
                    params![bin, kind, counted.len()],
                )
                .map_err(fail)?;
        }
        drop(rows);
        if self.audit {
            crate::timeline::check(&transaction, &kid, &bin, &envelope, &attendance, now)
                .map_err(fail)?;
            for finding in
                check_passkeys(&transaction, &bin, &attendance, self.relying_party.as_ref())
                    .map_err(fail)?
            {
                crate::timeline::record(&transaction, &kid, &bin, &finding, now).map_err(fail)?;
            }
        }
        if self.audit && envelope.kind == BatchKind::MonthClose {
            let months: std::collections::BTreeSet<kasip_core::Month> = envelope
                .records
                .iter()
                .filter_map(|record| record.parse::<MonthCloseRecord>().ok())
                .filter_map(|record| kasip_core::Month::parse(&record.month).ok())
                .collect();
            for month in months {
                for finding in
                    crate::audit::audit_month(&transaction, &bin, month, now).map_err(fail)?
                {
                    crate::timeline::record(&transaction, &kid, &bin, &finding, now)
                        .map_err(fail)?;
                }
            }
        }
        if self.audit && envelope.kind == BatchKind::Attendance {
            if let Err(alarm) = extend_chain(&transaction, &kid, envelope.v, &attendance) {
                let message = format!("TAMPER ALARM: {alarm}");
                drop(transaction);
                self.record_finding(&kid, &bin, "chain_break", &message, now)?;
                return Ok(Verdict::Conflict {
                    expected_seq: last_seq + 1,
                    message,
                });
            }
        }
        let receipt = Receipt {
            // Answered in the batch's own version: an agent that sealed it can read it.
            v: envelope.v,
            agent: kid.clone(),
            seq: envelope.seq,
            hash: hash.clone(),
            received: now,
            records: outcomes,
        };
        let receipt_jws = sign_compact(
            &self.key,
            &protected_header(&self.key),
            receipt
                .to_canonical()
                .map_err(RegistryError::Receipt)?
                .as_bytes(),
        );
        transaction
            .execute(
                "INSERT INTO batches (agent, seq, kind, hash, jws, receipt, received_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    kid,
                    envelope.seq,
                    envelope.kind.as_str(),
                    hash,
                    jws,
                    receipt_jws,
                    now
                ],
            )
            .map_err(fail)?;
        for (new_kid, new_key) in &new_keys {
            transaction
                .execute(
                    "INSERT INTO agent_keys (kid, agent, public_key, added_at) VALUES (?1, ?2, ?3, ?4)",
                    params![new_kid, kid, new_key, now],
                )
                .map_err(fail)?;
            transaction
                .execute(
                    "UPDATE agent_keys SET retired_at = ?2 WHERE kid = ?1",
                    params![kid_signing, now],
                )
                .map_err(fail)?;
        }
        transaction.commit().map_err(fail)?;
        if let Some(committed) = &self.committed {
            let _ = committed.send(());
        }
        if self.audit && self.db.engine() == Engine::Postgres && !attendance.is_empty() {
            // Stored already: a failure here loses a finding, not the batch; say so.
            if let Err(error) = self.check_across_colleges(&kid, &bin, &attendance, now) {
                tracing::error!(%error, agent = %kid, seq = envelope.seq,
                    "the cross-college rules could not run for this batch; `kasip-registry audit` does not repeat them");
            }
        }
        Ok(Verdict::Stored(receipt_jws))
    }

    pub fn set_policy(
        &self,
        min_coverage: u64,
        student_qr_share: u64,
        typed_counts_as_qr: bool,
    ) -> Result<(), RegistryError> {
        self.db
            .execute(
                "UPDATE policy SET min_coverage = ?1, student_qr_share = ?2, typed_counts_as_qr = ?3",
                params![min_coverage, student_qr_share, typed_counts_as_qr],
            )
            .map_err(|source| self.fail(source))?;
        Ok(())
    }

    pub fn license_address(&self, bin: &Bin, address: &str) -> Result<(), RegistryError> {
        if !self.college_exists(&bin.to_string())? {
            return Err(RegistryError::Usage(format!(
                "no college {bin}; add it with `kasip-registry add-college`"
            )));
        }
        self.db
            .execute(
                "INSERT INTO licensed_addresses (bin, address) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                params![bin.to_string(), address],
            )
            .map_err(|source| self.fail(source))?;
        Ok(())
    }

    /// The policy for a college, signed by the registry's key (a compact JWS over
    /// `wire::Policy`): the agent verifies it as it verifies receipts, and caches it.
    pub fn signed_policy(&self, bin: &str, now: i64) -> Result<String, RegistryError> {
        let (min_coverage, student_qr_share, typed_counts_as_qr): (u64, u64, bool) = self
            .db
            .query_one(
                "SELECT min_coverage, student_qr_share, typed_counts_as_qr FROM policy WHERE id = 1",
                params![],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .map_err(|source| self.fail(source))?;
        let licensed_addresses = self
            .db
            .query(
                "SELECT address FROM licensed_addresses WHERE bin = ?1 ORDER BY address",
                params![bin],
                |row| row.get(0),
            )
            .map_err(|source| self.fail(source))?;
        let policy = kasip_core::wire::Policy {
            college_bin: bin.to_owned(),
            min_coverage,
            student_qr_share,
            typed_counts_as_qr,
            qr_requires_passkey: self.passkey_required(bin)?,
            licensed_addresses,
            issued_at: now,
        };
        Ok(self.sign_value(&policy))
    }

    /// Records a finding about `agent`'s evidence.
    pub fn record_finding(
        &self,
        agent: &str,
        bin: &str,
        kind: &'static str,
        detail: &str,
        now: i64,
    ) -> Result<(), RegistryError> {
        crate::timeline::record(
            &self.db,
            agent,
            bin,
            &crate::timeline::Finding {
                kind,
                month: None,
                detail: detail.to_owned(),
                evidence: Vec::new(),
            },
            now,
        )
        .map(|_| ())
        .map_err(|source| self.fail(source))
    }

    /// Runs the month audit of one college or of all, and stores what it finds (once).
    /// Returns the findings new to the registry, with their college.
    pub fn audit(
        &mut self,
        bin: Option<&Bin>,
        month: kasip_core::Month,
        now: i64,
    ) -> Result<Vec<(String, crate::timeline::Finding)>, RegistryError> {
        let place = self.place.clone();
        let fail = |source| RegistryError::Database {
            place: place.clone(),
            source,
        };
        let transaction = self.db.transaction().map_err(fail)?;
        // The same lock a batch's audit takes: a month audit writes findings too.
        transaction.lock_national().map_err(fail)?;
        let bin_text = bin.map(Bin::to_string);
        let colleges: Vec<(String, Option<String>)> = transaction
            .query(
                "SELECT c.bin, (SELECT a.kid FROM agents a WHERE a.bin = c.bin
                                ORDER BY a.enrolled_at DESC LIMIT 1)
                 FROM colleges c WHERE CAST(?1 AS TEXT) IS NULL OR c.bin = ?1 ORDER BY c.bin",
                params![bin_text],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .map_err(fail)?;
        if let (Some(bin), true) = (bin, colleges.is_empty()) {
            return Err(RegistryError::Usage(format!(
                "no college {bin}; register it with `kasip-registry add-college`"
            )));
        }
        let mut found = Vec::new();
        for (college, agent) in colleges {
            // A college without an enrolled agent has sent nothing to audit.
            let Some(agent) = agent else { continue };
            for finding in
                crate::audit::audit_month(&transaction, &college, month, now).map_err(fail)?
            {
                if crate::timeline::record(&transaction, &agent, &college, &finding, now)
                    .map_err(fail)?
                {
                    found.push((college.clone(), finding));
                }
            }
        }
        transaction.commit().map_err(fail)?;
        Ok(found)
    }

    /// Adds a registrar or auditor, or sets their role and password (ending their
    /// sessions).
    pub fn add_user(
        &self,
        login: &str,
        role: crate::accounts::Role,
        password: &str,
        now: i64,
    ) -> Result<(), RegistryError> {
        let login = login.trim();
        if login.is_empty() || login.chars().any(|character| character.is_whitespace()) {
            return Err(RegistryError::Usage(
                "a login is one word without spaces".into(),
            ));
        }
        if password.chars().count() < crate::accounts::MIN_PASSWORD_CHARS {
            return Err(RegistryError::Usage(format!(
                "the password is too short: at least {} characters",
                crate::accounts::MIN_PASSWORD_CHARS
            )));
        }
        let hash = crate::accounts::hash_password(password).ok_or(RegistryError::Random)?;
        crate::accounts::add_user(&self.db, login, role, &hash, now)
            .map_err(|source| self.fail(source))
    }

    pub fn credentials(
        &self,
        login: &str,
    ) -> Result<Option<(String, crate::accounts::Role)>, RegistryError> {
        crate::accounts::credentials(&self.db, login).map_err(|source| self.fail(source))
    }

    pub fn open_session(&self, login: &str, now: i64) -> Result<Option<String>, RegistryError> {
        crate::accounts::open_session(&self.db, login, now).map_err(|source| self.fail(source))
    }

    pub fn session(
        &self,
        token: &str,
        now: i64,
    ) -> Result<Option<crate::accounts::Session>, RegistryError> {
        crate::accounts::session(&self.db, token, now).map_err(|source| self.fail(source))
    }

    pub fn close_session(&self, token: &str) -> Result<(), RegistryError> {
        crate::accounts::close_session(&self.db, token).map_err(|source| self.fail(source))
    }

    /// A finding, the records its evidence names (body, or None when not held), and
    /// its judgements (status, by, reason, at), oldest first.
    #[allow(clippy::type_complexity)]
    pub fn finding_with_evidence(
        &self,
        id: i64,
    ) -> Result<
        Option<(
            FindingRow,
            Vec<(u64, Option<String>)>,
            Vec<(String, String, String, i64)>,
        )>,
        RegistryError,
    > {
        let fail = |source| self.fail(source);
        let Some(finding) = self.select_findings(None, None, Some(id))?.pop() else {
            return Ok(None);
        };
        let mut records = Vec::new();
        if let Some(kind) = crate::timeline::evidence_kind(&finding.kind) {
            for record_id in finding
                .evidence
                .split(',')
                .filter_map(|id| id.trim().parse::<u64>().ok())
                .take(50)
            {
                let body: Option<String> = self
                    .db
                    .query_opt(
                        "SELECT body FROM records WHERE bin = ?1 AND kind = ?2 AND record_id = ?3",
                        params![finding.college_bin, kind, record_id as i64],
                        |row| row.get(0),
                    )
                    .map_err(fail)?;
                records.push((record_id, body));
            }
        }
        let history = self
            .db
            .query("SELECT status, by, reason, at FROM finding_status WHERE finding_id = ?1 ORDER BY id", params![id], |row| {
                        Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
                    })
            .map_err(fail)?;
        Ok(Some((finding, records, history)))
    }

    pub fn college_name(&self, bin: &str) -> Result<Option<String>, RegistryError> {
        self.db
            .query_opt(
                "SELECT name FROM colleges WHERE bin = ?1",
                params![bin],
                |row| row.get(0),
            )
            .map_err(|source| self.fail(source))
    }

    /// The zone a college's lessons are timed in.
    pub fn timezone_of(&self, bin: &str) -> Result<kasip_core::CollegeTimezone, RegistryError> {
        let zone: String = self
            .db
            .query_one(
                "SELECT timezone FROM colleges WHERE bin = ?1",
                params![bin],
                |row| row.get(0),
            )
            .map_err(|source| self.fail(source))?;
        kasip_core::CollegeTimezone::parse(&zone)
            .map_err(|error| RegistryError::Usage(format!("college {bin}: time zone {error}")))
    }

    pub fn thresholds(&self) -> Result<crate::audit::Thresholds, RegistryError> {
        crate::audit::Thresholds::read(&self.db).map_err(|source| self.fail(source))
    }

    pub fn set_thresholds(
        &self,
        thresholds: &crate::audit::Thresholds,
        now: i64,
    ) -> Result<(), RegistryError> {
        thresholds
            .write(&self.db, now)
            .map_err(|source| self.fail(source))
    }

    /// The registry's own figures of a college's months.
    pub fn month_figures(
        &self,
        bin: &str,
    ) -> Result<Vec<crate::audit::MonthFigures>, RegistryError> {
        crate::audit::figures_of(&self.db, bin).map_err(|source| self.fail(source))
    }

    /// The findings, oldest first: of one college or of all, of one month or of all.
    pub fn findings(
        &self,
        bin: Option<&str>,
        month: Option<kasip_core::Month>,
    ) -> Result<Vec<FindingRow>, RegistryError> {
        self.select_findings(bin, month, None)
    }

    /// The findings of one college or all, one month or all, one finding or all.
    fn select_findings(
        &self,
        bin: Option<&str>,
        month: Option<kasip_core::Month>,
        id: Option<i64>,
    ) -> Result<Vec<FindingRow>, RegistryError> {
        let month = month.map(|month| month.to_string());
        let rows = self
            .db
            .query(
                "SELECT f.id, f.bin, f.kind, f.month, f.detail, f.evidence, f.at,
                        COALESCE((SELECT s.status FROM finding_status s WHERE s.finding_id = f.id
                                  ORDER BY s.id DESC LIMIT 1), 'open')
                 FROM findings f
                 WHERE (CAST(?1 AS TEXT) IS NULL OR f.bin = ?1)
                   AND (CAST(?2 AS TEXT) IS NULL OR f.month = ?2)
                   AND (CAST(?3 AS BIGINT) IS NULL OR f.id = ?3)
                 ORDER BY f.id",
                params![bin, month, id],
                |row| {
                    let kind: String = row.get(2)?;
                    Ok(FindingRow {
                        id: row.get(0)?,
                        college_bin: row.get(1)?,
                        severity: crate::timeline::severity(&kind).to_owned(),
                        kind,
                        month: row.get(3)?,
                        detail: row.get(4)?,
                        evidence: row.get(5)?,
                        at: row.get(6)?,
                        status: row.get(7)?,
                    })
                },
            )
            .map_err(|source| self.fail(source))?;
        Ok(rows)
    }

    /// Records a person's judgement of a finding (appended; the history stays).
    pub fn set_finding_status(
        &self,
        finding: i64,
        status: &str,
        by: &str,
        reason: &str,
        now: i64,
    ) -> Result<(), RegistryError> {
        if !matches!(status, "open" | "explained" | "confirmed") {
            return Err(RegistryError::Usage(format!(
                "--status '{status}': use open, explained or confirmed"
            )));
        }
        if by.trim().is_empty() || reason.trim().is_empty() {
            return Err(RegistryError::Usage(
                "--by and --reason are required: a judgement names who and why".into(),
            ));
        }
        let exists: bool = self
            .db
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM findings WHERE id = ?1)",
                params![finding],
                |row| row.get(0),
            )
            .map_err(|source| self.fail(source))?;
        if !exists {
            return Err(RegistryError::Usage(format!(
                "no finding {finding}; list them with `kasip-registry findings`"
            )));
        }
        self.db
            .execute(
                "INSERT INTO finding_status (finding_id, status, by, reason, at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![finding, status, by.trim(), reason.trim(), now],
            )
            .map_err(|source| self.fail(source))?;
        Ok(())
    }

    /// Takes a heartbeat (a JWS over `wire::Heartbeat` by the agent's key): pins its
    /// chain head, compares it with the records already held, and records the agent's
    /// own report of a break. Returns why it is refused, if it is.
    pub fn heartbeat(&self, jws: &str, now: i64) -> Result<Result<(), String>, RegistryError> {
        let Some(kid) = kasip_certs::agent_auth::jws_kid(jws) else {
            return Ok(Err("not a compact JWS with a kid".into()));
        };
        let Some(signer) = self.agent(&kid)? else {
            return Ok(Err(format!("no agent with key {kid} is enrolled")));
        };
        let verified = match verify_compact(jws, &signer.public_key) {
            Ok(verified) => verified,
            Err(error) => return Ok(Err(error.to_string())),
        };
        let heartbeat: kasip_core::wire::Heartbeat = match serde_json::from_slice(&verified.payload)
        {
            Ok(heartbeat) => heartbeat,
            Err(error) => return Ok(Err(format!("not a heartbeat: {error}"))),
        };
        if heartbeat.agent != signer.agent_id || heartbeat.college_bin != signer.bin {
            return Ok(Err("the heartbeat names another agent or college".into()));
        }
        if heartbeat.events > 0 && !kasip_core::batch::is_sha256_hex(&heartbeat.head) {
            return Ok(Err("head: not a lower-case hex SHA-256".into()));
        }
        let agent = signer.agent_id.as_str();
        if let Some(broken) = &heartbeat.broken {
            self.record_finding(agent, &signer.bin, "agent_reported_break", broken, now)?;
        }
        if heartbeat.events > 0 {
            // A head for records already held must be theirs.
            let held = self.held_chain_hash(&signer.bin, heartbeat.events)?;
            if held.as_ref().is_some_and(|held| *held != heartbeat.head) {
                self.record_finding(
                    agent,
                    &signer.bin,
                    "heartbeat_contradicts_records",
                    &format!(
                        "TAMPER ALARM: the agent pinned event {} with another hash than the record held",
                        heartbeat.events
                    ),
                    now,
                )?;
            }
            self.db
                .execute(
                    "INSERT INTO heartbeats (agent, events, head, agent_time, received_at, broken)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
                    params![
                        agent,
                        heartbeat.events,
                        heartbeat.head,
                        heartbeat.at,
                        now,
                        heartbeat.broken
                    ],
                )
                .map_err(|source| self.fail(source))?;
        }
        Ok(Ok(()))
    }

    /// The `chain_hash` of attendance event `event` of a college, if the registry holds it.
    fn held_chain_hash(&self, bin: &str, event: u64) -> Result<Option<String>, RegistryError> {
        let body: Option<String> = self
            .db
            .query_opt(
                "SELECT body FROM records WHERE bin = ?1 AND kind = 'attendance' AND record_id = ?2",
                params![bin, event as i64],
                |row| row.get(0),
            )
            .map_err(|source| self.fail(source))?;
        Ok(body.and_then(|body| {
            serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|record| record["chain_hash"].as_str().map(str::to_owned))
        }))
    }

    /// The last batch held from `kid`: (seq, hash), (0, "") when none.
    pub fn checkpoint(&self, kid: &str) -> Result<(u64, String), RegistryError> {
        self.db
            .query_opt(
                "SELECT seq, hash FROM batches WHERE agent = ?1 ORDER BY seq DESC LIMIT 1",
                params![kid],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .map(|found| found.unwrap_or((0, String::new())))
            .map_err(|source| self.fail(source))
    }

    /// Replaces `bin`'s beneficiary list from CSV `iin;beneficiary;voucher` (header
    /// row first). All or nothing; the error names the row.
    pub fn import_beneficiaries(
        &mut self,
        bin: &Bin,
        csv_text: &str,
    ) -> Result<usize, RegistryError> {
        if !self.college_exists(&bin.to_string())? {
            return Err(RegistryError::Usage(format!(
                "college {bin} is not registered"
            )));
        }
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(
                if csv_text.lines().next().unwrap_or_default().contains(';') {
                    b';'
                } else {
                    b','
                },
            )
            .from_reader(csv_text.trim_start_matches('\u{feff}').as_bytes());
        let mut rows = Vec::new();
        for (index, record) in reader.records().enumerate() {
            let row = index + 2;
            let record =
                record.map_err(|error| RegistryError::Usage(format!("row {row}: {error}")))?;
            let field = |position: usize, name: &str| {
                record
                    .get(position)
                    .map(str::trim)
                    .filter(|value| !value.is_empty())
                    .ok_or_else(|| RegistryError::Usage(format!("row {row}, column {name}: empty")))
            };
            let iin = Iin::parse(field(0, "iin")?)
                .map_err(|error| RegistryError::Usage(format!("row {row}, column iin: {error}")))?;
            let beneficiary =
                kasip_core::parse_yes_no(field(1, "beneficiary")?).map_err(|error| {
                    RegistryError::Usage(format!("row {row}, column beneficiary: {error}"))
                })?;
            let voucher = record.get(2).map(str::trim).unwrap_or_default().to_owned();
            if voucher.chars().count() > 64 {
                return Err(RegistryError::Usage(format!(
                    "row {row}, column voucher: longer than 64 characters"
                )));
            }
            rows.push((iin.to_string(), beneficiary, voucher));
        }
        let place = self.place.clone();
        let fail = |source| RegistryError::Database {
            place: place.clone(),
            source,
        };
        let transaction = self.db.transaction().map_err(fail)?;
        transaction
            .execute(
                "DELETE FROM beneficiaries WHERE bin = ?1",
                params![bin.to_string()],
            )
            .map_err(fail)?;
        for (iin, beneficiary, voucher) in &rows {
            transaction
                .execute(
                    "INSERT INTO beneficiaries (bin, iin, beneficiary, voucher) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (bin, iin) DO UPDATE SET beneficiary = excluded.beneficiary, voucher = excluded.voucher",
                    params![bin.to_string(), iin, beneficiary, voucher],
                )
                .map_err(fail)?;
        }
        transaction.commit().map_err(fail)?;
        Ok(rows.len())
    }

    pub fn beneficiaries(&self, bin: &str) -> Result<Vec<(String, bool, String)>, RegistryError> {
        self.db
            .query(
                "SELECT iin, beneficiary, voucher FROM beneficiaries WHERE bin = ?1 ORDER BY iin",
                params![bin],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .map_err(|source| self.fail(source))
    }

    /// Every stored batch of `bin`'s agents, oldest first: (agent, seq, jws).
    pub fn batches_of(&self, bin: &str) -> Result<Vec<(String, u64, String)>, RegistryError> {
        self.db
            .query(
                "SELECT b.agent, b.seq, b.jws FROM batches b JOIN agents a ON a.kid = b.agent
                 WHERE a.bin = ?1 ORDER BY a.enrolled_at, b.agent, b.seq",
                params![bin],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .map_err(|source| self.fail(source))
    }

    /// The enrolled keys of `bin`'s agents.
    pub fn keys_of(&self, bin: &str) -> Result<Vec<(String, Vec<u8>)>, RegistryError> {
        self.db
            .query(
                "SELECT kid, public_key FROM agents WHERE bin = ?1 ORDER BY enrolled_at",
                params![bin],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .map_err(|source| self.fail(source))
    }

    /// The read API's view of every college: five queries whatever the number of
    /// colleges, none of them over the records (`record_counts` holds their counts).
    pub fn overview(&self) -> Result<Vec<CollegeOverview>, RegistryError> {
        use std::collections::HashMap;
        let fail = |source| self.fail(source);
        let colleges: Vec<(String, String)> = self
            .db
            .query(
                "SELECT bin, name FROM colleges ORDER BY bin",
                params![],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .map_err(fail)?;
        // Each agent's last batch; a college's is the one received last.
        let mut last_batch: HashMap<String, (u64, i64)> = HashMap::new();
        for (bin, seq, at) in self
            .db
            .query(
                "SELECT a.bin, b.seq, b.received_at FROM batches b
                 JOIN (SELECT agent, MAX(seq) AS seq FROM batches GROUP BY agent) last
                   ON last.agent = b.agent AND last.seq = b.seq
                 JOIN agents a ON a.kid = b.agent",
                params![],
                |row| {
                    Ok((
                        row.get::<String>(0)?,
                        row.get::<u64>(1)?,
                        row.get::<i64>(2)?,
                    ))
                },
            )
            .map_err(fail)?
        {
            let entry = last_batch.entry(bin).or_insert((seq, at));
            if (at, seq) > (entry.1, entry.0) {
                *entry = (seq, at);
            }
        }
        let mut records: HashMap<String, std::collections::BTreeMap<String, u64>> = HashMap::new();
        for (bin, kind, count) in self
            .db
            .query(
                "SELECT bin, kind, records FROM record_counts",
                params![],
                |row| {
                    Ok((
                        row.get::<String>(0)?,
                        row.get::<String>(1)?,
                        row.get::<u64>(2)?,
                    ))
                },
            )
            .map_err(fail)?
        {
            records.entry(bin).or_default().insert(kind, count);
        }
        let quarantined: HashMap<String, u64> = self
            .db
            .query(
                "SELECT a.bin, COUNT(*) FROM quarantine q JOIN agents a ON a.kid = q.agent
                 GROUP BY a.bin",
                params![],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .map_err(fail)?
            .into_iter()
            .collect();
        let mut months: HashMap<String, Vec<crate::audit::MonthFigures>> = HashMap::new();
        for (bin, figures) in self
            .db
            .query(
                "SELECT bin, figures FROM month_figures ORDER BY bin, month",
                params![],
                |row| Ok((row.get::<String>(0)?, row.get::<String>(1)?)),
            )
            .map_err(fail)?
        {
            if let Ok(figures) = serde_json::from_str(&figures) {
                months.entry(bin).or_default().push(figures);
            }
        }
        Ok(colleges
            .into_iter()
            .map(|(bin, name)| CollegeOverview {
                last_seq: last_batch.get(&bin).map(|(seq, _)| *seq),
                last_batch_at: last_batch.get(&bin).map(|(_, at)| *at),
                records: records.remove(&bin).unwrap_or_default(),
                quarantined: quarantined.get(&bin).copied().unwrap_or(0),
                months: months.remove(&bin).unwrap_or_default(),
                bin,
                name,
            })
            .collect())
    }

    /// One college's figures, if it is registered.
    pub fn college(&self, bin: &str) -> Result<Option<CollegeOverview>, RegistryError> {
        self.college_name(bin)?
            .map(|name| self.overview_of(bin.to_owned(), name))
            .transpose()
    }

    fn overview_of(&self, bin: String, name: String) -> Result<CollegeOverview, RegistryError> {
        let fail = |source| self.fail(source);
        let last_batch: Option<(u64, i64)> = self
            .db
            .query_opt(
                "SELECT b.seq, b.received_at FROM batches b JOIN agents a ON a.kid = b.agent
                 WHERE a.bin = ?1 ORDER BY b.received_at DESC, b.seq DESC LIMIT 1",
                params![&bin],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .map_err(fail)?;
        let records: Vec<(String, u64)> = self
            .db
            .query(
                "SELECT kind, records FROM record_counts WHERE bin = ?1 ORDER BY kind",
                params![&bin],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .map_err(fail)?;
        let quarantined: u64 = self
            .db
            .query_one(
                "SELECT COUNT(*) FROM quarantine q JOIN agents a ON a.kid = q.agent WHERE a.bin = ?1",
                params![&bin],
                |row| row.get(0),
            )
            .map_err(fail)?;
        // The registry's own figures, recomputed from the records; the statement's
        // are shown beside them, never instead.
        let months = self.month_figures(&bin)?;
        Ok(CollegeOverview {
            bin,
            name,
            last_seq: last_batch.map(|(seq, _)| seq),
            last_batch_at: last_batch.map(|(_, at)| at),
            records: records.into_iter().collect(),
            quarantined,
            months,
        })
    }
}

/// A record's own month: its date's, the month it closes, or else the month the batch
/// was made in. PostgreSQL keeps records in a partition per month.
fn record_month(body: &str, created: i64) -> kasip_core::Month {
    #[derive(Deserialize)]
    struct Dated {
        date: Option<String>,
        month: Option<String>,
    }
    let dated: Option<Dated> = serde_json::from_str(body).ok();
    dated
        .and_then(|dated| {
            dated
                .date
                .and_then(|date| kasip_core::Date::parse(&date).ok())
                .map(|date| date.calendar_month())
                .or_else(|| {
                    dated
                        .month
                        .and_then(|month| kasip_core::Month::parse(&month).ok())
                })
        })
        .unwrap_or_else(|| {
            kasip_core::Date::from_days_since_epoch(created.div_euclid(86_400)).calendar_month()
        })
}

/// One college in the read API.
#[derive(Debug, Serialize)]
pub struct CollegeOverview {
    pub bin: String,
    pub name: String,
    pub last_seq: Option<u64>,
    pub last_batch_at: Option<i64>,
    pub records: std::collections::BTreeMap<String, u64>,
    pub quarantined: u64,
    pub months: Vec<crate::audit::MonthFigures>,
}

/// Re-walks a batch's attendance `records` from the agent's chain head and moves
/// the head: each record must be the next event and (from format 2) hash to its
/// `chain_hash`, and every head the agent pinned in a heartbeat within the walk must be
/// met. A record already held (a duplicate) is skipped.
fn extend_chain(
    transaction: &Db,
    agent: &str,
    batch_version: u64,
    records: &[kasip_core::batch::AttendanceRecord],
) -> Result<(), String> {
    use kasip_core::chain::{rewalk, ChainHead};
    let failed = |error: DbError| format!("the registry could not read its chain: {error}");
    let head = transaction
        .query_opt(
            "SELECT event, hash FROM chain_heads WHERE agent = ?1",
            params![agent],
            |row| {
                Ok(ChainHead {
                    event: row.get::<i64>(0)? as u64,
                    hash: row.get(1)?,
                })
            },
        )
        .map_err(failed)?
        .unwrap_or_else(ChainHead::genesis);
    // Records already held (a duplicate) come first in id order: the walk starts after.
    let start = records
        .iter()
        .position(|record| record.id > head.event)
        .unwrap_or(records.len());
    let records = &records[start..];
    if records.is_empty() {
        return Ok(());
    }
    let last = records.last().map_or(0, |record| record.id);
    let pins: Vec<(u64, String)> = transaction
        .query(
            "SELECT events, head FROM heartbeats WHERE agent = ?1 AND events > ?2 AND events <= ?3",
            params![agent, head.event, last],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .map_err(failed)?;
    let walked = rewalk(&head, records, batch_version).map_err(|error| error.to_string())?;
    for (events, pinned_head) in pins {
        let held = records.iter().find(|record| record.id == events);
        if held.is_some_and(|record| record.chain_hash != pinned_head) {
            return Err(format!(
                "event {events} does not hash to the head the agent pinned in a heartbeat: history was rewritten after it was pinned"
            ));
        }
    }
    transaction
        .execute(
            "INSERT INTO chain_heads (agent, event, hash) VALUES (?1, ?2, ?3)
             ON CONFLICT (agent) DO UPDATE SET event = excluded.event, hash = excluded.hash",
            params![agent, walked.event as i64, walked.hash],
        )
        .map_err(failed)?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use kasip_core::batch::{BatchEnvelope, BatchKind};
    use kasip_tests::{Store, TempDataDir};
    use serde_json::json;

    use super::*;

    const BIN: &str = "090640001233";
    const NOW: i64 = 1_764_000_000;

    /// A version-1 grades batch, spelled out: the bytes an agent sealed under format 1
    /// and still resends after the format is bumped.
    fn sealed_under_format_1(agent: &DeviceKey) -> String {
        let envelope = BatchEnvelope {
            v: 1,
            agent: agent.thumbprint(),
            college_bin: BIN.into(),
            seq: 1,
            prev: GENESIS_PREV.into(),
            kind: BatchKind::Grades,
            created: NOW,
            records: vec![kasip_core::batch::RecordText::of(
                &json!({"id": 1, "student_iin": "060315500016", "discipline": "Физика",
                "assessment": "exam", "score": 87, "credits": 3, "date": "2026-11-20",
                "recorded_at": NOW, "recorded_by": "import:grades.csv"}),
            )
            .expect("canonical")],
        };
        let payload = envelope.to_canonical().expect("canonical");
        sign_compact(agent, &protected_header(agent), payload.as_bytes())
    }

    /// A registry store on `on`, in a data dir of its own (with its own PostgreSQL
    /// server for `Store::Postgres`).
    pub(crate) fn store_on(on: Store) -> (TempDataDir, RegistryStore) {
        let dir = TempDataDir::for_registry(on);
        let database = Database::configured(&dir.path(), None).expect("database");
        let store = RegistryStore::open_with(&dir.path(), &database).expect("store");
        (dir, store)
    }

    kasip_tests::on_both_stores!(
        a_batch_sealed_under_format_1_is_received_and_answered_in_format_1
    );

    /// A registry made before `record_counts` counts its records once when it opens.
    #[test]
    fn an_older_registry_counts_its_records_once_at_open() {
        let (dir, store) = store_on(Store::Sqlite);
        store
            .db()
            .batch(
                "INSERT INTO records VALUES ('090640001233', 'grades', 1, 'a', 1, '{}');
                 INSERT INTO records VALUES ('090640001233', 'grades', 2, 'a', 1, '{}');
                 INSERT INTO records VALUES ('090640001233', 'attendance', 1, 'a', 1, '{}');",
            )
            .expect("records");
        drop(store);
        let store = RegistryStore::open(&dir.path()).expect("reopen");
        let counts: Vec<(String, u64)> = store
            .db()
            .query(
                "SELECT kind, records FROM record_counts ORDER BY kind",
                params![],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .expect("counts");
        assert_eq!(
            counts,
            [("attendance".to_owned(), 1), ("grades".to_owned(), 2)]
        );
        drop(store);
        // Counted once: a later open adds nothing.
        let store = RegistryStore::open(&dir.path()).expect("reopen");
        let total: u64 = store
            .db()
            .value("SELECT SUM(records) FROM record_counts", params![])
            .expect("total");
        assert_eq!(total, 3);
    }

    fn a_batch_sealed_under_format_1_is_received_and_answered_in_format_1(on: Store) {
        let (dir, mut store) = store_on(on);
        let bin = Bin::parse(BIN).expect("bin");
        store
            .add_college(
                &bin,
                "Test college",
                &kasip_core::CollegeTimezone::parse("Asia/Almaty").expect("zone"),
            )
            .expect("college");
        let code = store.issue_enrolment_code(&bin, NOW).expect("code");
        let agent = DeviceKey::generate_to(&dir.path().join("agent-key.pem")).expect("key");
        let enrolled = store
            .enrol(&code, BIN, agent.public_key(), NOW)
            .expect("enrol");
        assert!(matches!(enrolled, Enrolment::Enrolled(_)), "{enrolled:?}");

        let verdict = store
            .receive(&sealed_under_format_1(&agent), NOW + 5)
            .expect("receive");
        let Verdict::Stored(receipt_jws) = verdict else {
            panic!("a format-1 batch was not stored: {verdict:?}");
        };
        let receipt = verify_compact(&receipt_jws, store.registry_key().public_key())
            .expect("receipt verifies");
        let receipt: serde_json::Value = serde_json::from_slice(&receipt.payload).expect("json");
        assert_eq!(receipt["v"], 1);
        assert_eq!(receipt["seq"], 1);
    }
}
