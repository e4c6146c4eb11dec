//! The outbox (design §5.4): events of the append-only logs become signed, hash-chained
//! batches, sealed in the agent's database before the first send.
//!
//! **Invariant**: a batch is sealed in one transaction that reads the events after the
//! kind's cursor, stores the batch's exact bytes under the next seq, and advances the
//! cursor. A crash leaves either no batch or the whole batch, so an event is never
//! sealed twice or skipped, and no seq ever exists with two different contents.

use kasip_certs::jws::{protected_header, sign_compact};
use kasip_certs::DeviceKey;
use kasip_core::batch::{
    sha256_hex, to_hex, AttendanceRecord, BatchEnvelope, BatchKind, BindingRecord,
    ContingentRecord, GradeRecord, KeyRotationRecord, MonthCloseRecord, OverrideRecord, Receipt,
    RecordText, SecurityEventRecord, SiteAddressRecord, BATCH_VERSION, GENESIS_PREV,
};
use kasip_core::Bin;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior};
use serde::Serialize;
use serde_json::Value;

/// Failed upload attempts since start (each a retry or an alert), for `/metrics`.
pub static SYNC_ERRORS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// When a batch is sealed.
#[derive(Debug, Clone, Copy)]
pub struct SealLimits {
    pub max_records: usize,
    pub max_age_secs: i64,
}

/// A sealed batch, as sent.
#[derive(Debug, Clone)]
pub struct Sealed {
    pub seq: u64,
    pub kind: String,
    pub records: u64,
    pub jws: String,
    pub hash: String,
}

/// A security event's row takes repeats for this long after its first; it is sealed
/// only when the window is over, so its count is final.
pub const SECURITY_EVENT_WINDOW_SECS: i64 = 600;

/// The rows of `kind` that may be sealed at `now`, as a condition on the source table
/// with its parameter: a security event whose window is open, and every later one, wait.
fn sealable(kind: BatchKind, now: i64) -> Option<(&'static str, i64)> {
    (kind == BatchKind::SecurityEvents).then_some((
        " AND id < COALESCE((SELECT MIN(id) FROM security_events WHERE at > ?3), 9223372036854775807)",
        now - SECURITY_EVENT_WINDOW_SECS,
    ))
}

/// The source table of each kind: (table, time column).
fn source(kind: BatchKind) -> (&'static str, &'static str) {
    match kind {
        BatchKind::Bindings => ("device_bindings", "bound_at"),
        BatchKind::SecurityEvents => ("security_events", "at"),
        BatchKind::SiteAddresses => ("site_address_events", "at"),
        BatchKind::Attendance => ("attendance_events", "recorded_at"),
        BatchKind::Grades => ("grade_events", "recorded_at"),
        BatchKind::Contingent => ("contingent_events", "recorded_at"),
        BatchKind::Overrides => ("coverage_overrides", "at"),
        BatchKind::MonthClose => ("month_closes", "closed_at"),
        BatchKind::KeyRotation => ("key_rotations", "at"),
    }
}

/// The id column (month closes are keyed by month; their rowid is their event id).
fn id_column(kind: BatchKind) -> &'static str {
    match kind {
        BatchKind::MonthClose => "rowid",
        _ => "id",
    }
}

fn cursor(transaction: &Transaction<'_>, kind: BatchKind) -> rusqlite::Result<i64> {
    transaction
        .prepare_cached("SELECT last_id FROM outbox_cursors WHERE kind = ?1")?
        .query_row([kind.as_str()], |row| row.get(0))
        .optional()
        .map(|found| found.unwrap_or(0))
}

/// A record's canonical text (records are plain structs of strings and integers; an
/// integer beyond 2^53 is the one way this fails).
fn to_record<T: Serialize>(record: T) -> rusqlite::Result<RecordText> {
    RecordText::of(&record).map_err(not_canonical)
}

fn not_canonical(error: impl std::fmt::Display) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(std::io::Error::other(error.to_string())))
}

/// The next at most `limit` events of `kind` after `after`: (id, record).
fn pending_records(
    transaction: &Transaction<'_>,
    kind: BatchKind,
    after: i64,
    limit: usize,
    data_dir: &std::path::Path,
    now: i64,
) -> rusqlite::Result<Vec<(i64, RecordText)>> {
    let limit = limit as i64;
    match kind {
        BatchKind::Attendance => transaction
            .prepare_cached(
                "SELECT e.id, e.lesson_id, l.date, l.start_time, g.code, l.discipline, l.teacher_iin,
                        l.mode, e.student_iin, e.status, e.method, e.recorded_at, e.device_id,
                        e.marked_by, e.reason, e.corrects, e.row_hash, s.name, l.room,
                        e.token_step, e.evidence, l.end_time
                 FROM attendance_events e JOIN lessons l ON l.id = e.lesson_id
                 JOIN study_groups g ON g.id = l.group_id LEFT JOIN sites s ON s.id = l.site_id
                 WHERE e.id > ?1 ORDER BY e.id LIMIT ?2",
            )?
            .query_map([after, limit], |row| {
                let evidence: Option<String> = row.get(20)?;
                let room: String = row.get(18)?;
                // Written straight to its canonical text, the evidence as the chain
                // writer stored it (canonical, and verified by the chain's hash).
                let record = AttendanceRecord {
                    id: row.get(0)?,
                    lesson: row.get(1)?,
                    date: row.get(2)?,
                    start: row.get(3)?,
                    group: row.get(4)?,
                    discipline: row.get(5)?,
                    teacher_iin: row.get(6)?,
                    mode: row.get(7)?,
                    student_iin: row.get(8)?,
                    status: row.get(9)?,
                    method: row.get(10)?,
                    recorded_at: row.get(11)?,
                    device: row.get(12)?,
                    marked_by: row.get(13)?,
                    reason: row.get(14)?,
                    corrects: row.get(15)?,
                    chain_hash: to_hex(&row.get::<_, Vec<u8>>(16)?),
                    site: row.get(17)?,
                    room: (!room.is_empty()).then_some(room),
                    token_step: row.get(19)?,
                    end: Some(row.get(21)?),
                    evidence: None,
                };
                let text = record
                    .to_canonical_with_evidence(evidence.as_deref())
                    .map_err(not_canonical)?;
                Ok((row.get(0)?, RecordText::from_canonical(text).map_err(not_canonical)?))
            })?
            .collect(),
        BatchKind::Bindings => transaction
            .prepare_cached(
                "SELECT id, student_iin, device_key, device_id, bound_at, code_issued_by,
                        code_issued_at, client, user_agent
                 FROM device_bindings WHERE id > ?1 ORDER BY id LIMIT ?2",
            )?
            .query_map([after, limit], |row| {
                use base64::Engine;
                Ok((
                    row.get(0)?,
                    to_record(BindingRecord {
                        id: row.get(0)?,
                        student_iin: row.get(1)?,
                        device_key: base64::engine::general_purpose::URL_SAFE_NO_PAD
                            .encode(row.get::<_, Option<Vec<u8>>>(2)?.unwrap_or_default()),
                        device: row.get(3)?,
                        bound_at: row.get(4)?,
                        code_issued_by: row.get(5)?,
                        code_issued_at: row.get(6)?,
                        client: row.get(7)?,
                        user_agent: row.get(8)?,
                    })?,
                ))
            })?
            .collect(),
        BatchKind::SecurityEvents => {
            let (condition, open_from) = sealable(kind, now).unwrap_or_default();
            transaction
                .prepare_cached(&format!(
                    "SELECT id, kind, at, COALESCE(last_at, at), count, lesson_id, student_iin,
                            device_id, client, detail
                     FROM security_events WHERE id > ?1{condition} ORDER BY id LIMIT ?2"
                ))?
                .query_map(rusqlite::params![after, limit, open_from], |row| {
                    Ok((
                        row.get(0)?,
                        to_record(SecurityEventRecord {
                            id: row.get(0)?,
                            kind: row.get(1)?,
                            first_at: row.get(2)?,
                            last_at: row.get(3)?,
                            count: row.get(4)?,
                            lesson: row.get(5)?,
                            student_iin: row.get(6)?,
                            device: row.get(7)?,
                            client: row.get(8)?,
                            detail: row.get(9)?,
                        })?,
                    ))
                })?
                .collect()
        }
        BatchKind::SiteAddresses => transaction
            .prepare_cached(
                "SELECT e.id, s.name, e.address, e.previous, e.at, e.source
                 FROM site_address_events e JOIN sites s ON s.id = e.site_id
                 WHERE e.id > ?1 ORDER BY e.id LIMIT ?2",
            )?
            .query_map([after, limit], |row| {
                Ok((
                    row.get(0)?,
                    to_record(SiteAddressRecord {
                        id: row.get(0)?,
                        site: row.get(1)?,
                        address: row.get(2)?,
                        previous: row.get(3)?,
                        at: row.get(4)?,
                        source: row.get(5)?,
                    })?,
                ))
            })?
            .collect(),
        BatchKind::Grades => transaction
            .prepare_cached(
                "SELECT id, student_iin, discipline, assessment, score, credits, date, recorded_at,
                        recorded_by, corrects
                 FROM grade_events WHERE id > ?1 ORDER BY id LIMIT ?2",
            )?
            .query_map([after, limit], |row| {
                Ok((
                    row.get(0)?,
                    to_record(GradeRecord {
                        id: row.get(0)?,
                        student_iin: row.get(1)?,
                        discipline: row.get(2)?,
                        assessment: row.get(3)?,
                        score: row.get(4)?,
                        credits: row.get(5)?,
                        date: row.get(6)?,
                        recorded_at: row.get(7)?,
                        recorded_by: row.get(8)?,
                        corrects: row.get(9)?,
                    })?,
                ))
            })?
            .collect(),
        BatchKind::Contingent => transaction
            .prepare_cached(
                "SELECT id, student_iin, change, status, previous_status, effective_date,
                        recorded_at, source
                 FROM contingent_events WHERE id > ?1 ORDER BY id LIMIT ?2",
            )?
            .query_map([after, limit], |row| {
                Ok((
                    row.get(0)?,
                    to_record(ContingentRecord {
                        id: row.get(0)?,
                        student_iin: row.get(1)?,
                        change: row.get(2)?,
                        status: row.get(3)?,
                        previous_status: row.get(4)?,
                        effective_date: row.get(5)?,
                        recorded_at: row.get(6)?,
                        source: row.get(7)?,
                    })?,
                ))
            })?
            .collect(),
        BatchKind::Overrides => transaction
            .prepare_cached(
                "SELECT id, event_id, admin_login, reason, coverage_before, coverage_after, at
                 FROM coverage_overrides WHERE id > ?1 ORDER BY id LIMIT ?2",
            )?
            .query_map([after, limit], |row| {
                Ok((
                    row.get(0)?,
                    to_record(OverrideRecord {
                        id: row.get(0)?,
                        event_id: row.get(1)?,
                        admin: row.get(2)?,
                        reason: row.get(3)?,
                        coverage_before: row.get(4)?,
                        coverage_after: row.get(5)?,
                        at: row.get(6)?,
                    })?,
                ))
            })?
            .collect(),
        BatchKind::KeyRotation => transaction
            .prepare_cached(
                "SELECT id, public_key, kid, at FROM key_rotations WHERE id > ?1 ORDER BY id LIMIT 1",
            )?
            .query_map([after], |row| {
                use base64::Engine;
                Ok((
                    row.get(0)?,
                    to_record(KeyRotationRecord {
                        id: row.get(0)?,
                        new_key: base64::engine::general_purpose::URL_SAFE_NO_PAD
                            .encode(row.get::<_, Vec<u8>>(1)?),
                        new_kid: row.get(2)?,
                        at: row.get(3)?,
                    })?,
                ))
            })?
            .collect(),
        BatchKind::MonthClose => {
            let rows: Vec<(i64, String, bool, Option<String>, String)> = transaction
                .prepare_cached(
                    "SELECT rowid, month, compliant, statement, statement_path
                     FROM month_closes WHERE rowid > ?1 ORDER BY rowid LIMIT ?2",
                )?
                .query_map([after, limit], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?))
                })?
                .collect::<rusqlite::Result<_>>()?;
            rows.into_iter()
                .map(|(id, month, compliant, statement, path)| {
                    // Months closed before schema 5 kept the statement only as a file.
                    let statement = statement.unwrap_or_else(|| {
                        let path = std::path::Path::new(&path);
                        let path = if path.is_absolute() {
                            path.to_owned()
                        } else {
                            data_dir.join(path)
                        };
                        std::fs::read_to_string(path).unwrap_or_default()
                    });
                    Ok((
                        id,
                        to_record(MonthCloseRecord {
                            id: id as u64,
                            month,
                            compliant,
                            statement: statement.trim().to_owned(),
                        })?,
                    ))
                })
                .collect()
        }
    }
}

/// The last sealed batch: (seq, hash), or (0, genesis).
fn chain_head(transaction: &Transaction<'_>) -> rusqlite::Result<(u64, String)> {
    transaction
        .prepare_cached("SELECT seq, hash FROM outbox_batches ORDER BY seq DESC LIMIT 1")?
        .query_row([], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()
        .map(|found| found.unwrap_or((0, GENESIS_PREV.to_owned())))
}

/// Whether a key rotation is sealed but not yet acknowledged: nothing else may be sealed
/// until it is (the next batch must be signed by the next key).
pub fn rotation_in_flight(connection: &Connection) -> rusqlite::Result<bool> {
    connection
        .prepare_cached(
            "SELECT 1 FROM outbox_batches WHERE kind = 'key_rotation' AND acked_at IS NULL LIMIT 1",
        )?
        .query_row([], |row| row.get::<_, i64>(0))
        .optional()
        .map(|found| found.is_some())
}

/// The agent's identity at the registry: the thumbprint it enrolled with (kept across key
/// rotations), else the current key's.
pub fn agent_id(connection: &Connection, key: &DeviceKey) -> rusqlite::Result<String> {
    let stored: Option<Option<String>> = connection
        .query_row("SELECT agent_id FROM sync_enrolment", [], |row| row.get(0))
        .optional()?;
    Ok(stored.flatten().unwrap_or_else(|| key.thumbprint()))
}

/// What sealing needs besides the database.
pub struct Sealer<'a> {
    pub key: &'a DeviceKey,
    /// The envelope's `agent`: see `agent_id`.
    pub agent_id: &'a str,
    pub college_bin: &'a Bin,
    pub data_dir: &'a std::path::Path,
    pub limits: SealLimits,
}

impl Sealer<'_> {
    /// Seals every due batch (all pending events when `force`); returns how many, or
    /// the break that stopped sealing.
    pub fn seal_due(
        &self,
        connection: &mut Connection,
        guard: &mut ChainGuard,
        now: i64,
        force: bool,
    ) -> rusqlite::Result<Result<usize, IntegrityBreak>> {
        self.seal_some(connection, guard, now, force, usize::MAX)
    }

    /// Like `seal_due`, stopping after `most` batches, so a caller can interleave
    /// sealing with uploads on one connection. The chain is checked first (in full when
    /// `guard` is due) and again inside each attendance batch's transaction, so no row
    /// is sealed that was not verified.
    pub fn seal_some(
        &self,
        connection: &mut Connection,
        guard: &mut ChainGuard,
        now: i64,
        force: bool,
        most: usize,
    ) -> rusqlite::Result<Result<usize, IntegrityBreak>> {
        if let Err(broken) = guard.check(connection, now)? {
            return Ok(Err(broken));
        }
        let mut sealed = 0;
        for kind in BatchKind::ALL {
            while sealed < most {
                if rotation_in_flight(connection)? {
                    return Ok(Ok(sealed));
                }
                let transaction =
                    connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
                let after = cursor(&transaction, kind)?;
                let (table, time_column) = source(kind);
                let id = id_column(kind);
                let max_records = self.limits.max_records as i64;
                let (waiting, oldest): (usize, Option<i64>) = match sealable(kind, now) {
                    Some((condition, open_from)) => transaction
                        .prepare_cached(&format!(
                            "SELECT COUNT(*), MIN(t) FROM (SELECT {time_column} AS t FROM {table}
                             WHERE {id} > ?1{condition} ORDER BY {id} LIMIT ?2)"
                        ))?
                        .query_row(rusqlite::params![after, max_records, open_from], |row| {
                            Ok((row.get(0)?, row.get(1)?))
                        })?,
                    None => transaction
                        .prepare_cached(&format!(
                            "SELECT COUNT(*), MIN(t) FROM (SELECT {time_column} AS t FROM {table}
                             WHERE {id} > ?1 ORDER BY {id} LIMIT ?2)"
                        ))?
                        .query_row(rusqlite::params![after, max_records], |row| {
                            Ok((row.get(0)?, row.get(1)?))
                        })?,
                };
                let due = waiting > 0
                    && (force
                        || kind == BatchKind::KeyRotation
                        || waiting >= self.limits.max_records
                        // An event stamped after `now` (the clock was stepped back) must
                        // not wait for the clock to catch up: it is due at once.
                        || oldest.is_some_and(|oldest| {
                            now - oldest >= self.limits.max_age_secs || oldest > now
                        }));
                if !due {
                    break;
                }
                if kind == BatchKind::Attendance {
                    if let Err(broken) = guard.check(&transaction, now)? {
                        return Ok(Err(broken));
                    }
                }
                let records = pending_records(
                    &transaction,
                    kind,
                    after,
                    self.limits.max_records,
                    self.data_dir,
                    now,
                )?;
                let (Some(first), Some(last)) = (records.first(), records.last()) else {
                    break;
                };
                let (first_id, last_id) = (first.0, last.0);
                let (head_seq, head_hash) = chain_head(&transaction)?;
                let envelope = BatchEnvelope {
                    v: BATCH_VERSION,
                    agent: self.agent_id.to_owned(),
                    college_bin: self.college_bin.to_string(),
                    seq: head_seq + 1,
                    prev: head_hash,
                    kind,
                    created: now,
                    records: records.into_iter().map(|(_, record)| record).collect(),
                };
                let payload = envelope.to_canonical().map_err(|error| {
                    rusqlite::Error::ToSqlConversionFailure(Box::new(std::io::Error::other(
                        error.to_string(),
                    )))
                })?;
                let jws = sign_compact(self.key, &protected_header(self.key), payload.as_bytes());
                let hash = sha256_hex(jws.as_bytes());
                transaction.execute(
                    "INSERT INTO outbox_batches (seq, kind, created, records, first_id, last_id, jws, hash)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    rusqlite::params![
                        envelope.seq as i64,
                        kind.as_str(),
                        now,
                        envelope.records.len() as i64,
                        first_id,
                        last_id,
                        jws,
                        hash
                    ],
                )?;
                transaction.execute(
                    "INSERT INTO outbox_cursors (kind, last_id) VALUES (?1, ?2)
                     ON CONFLICT (kind) DO UPDATE SET last_id = excluded.last_id",
                    rusqlite::params![kind.as_str(), last_id],
                )?;
                transaction.commit()?;
                sealed += 1;
            }
        }
        Ok(Ok(sealed))
    }
}

/// The oldest batch after `after` the registry has not acknowledged (`after` 0: the
/// oldest of all).
pub fn next_unsent(connection: &Connection, after: u64) -> rusqlite::Result<Option<Sealed>> {
    sealed_where(
        connection,
        "acked_at IS NULL AND seq > ?1 ORDER BY seq LIMIT 1",
        [after as i64],
    )
}

/// The batch with `seq`, acknowledged or not.
pub fn sealed(connection: &Connection, seq: u64) -> rusqlite::Result<Option<Sealed>> {
    sealed_where(connection, "seq = ?1", [seq as i64])
}

fn sealed_where<P: rusqlite::Params>(
    connection: &Connection,
    condition: &str,
    params: P,
) -> rusqlite::Result<Option<Sealed>> {
    connection
        .prepare_cached(&format!(
            "SELECT seq, kind, records, jws, hash FROM outbox_batches WHERE {condition}"
        ))?
        .query_row(params, |row| {
            Ok(Sealed {
                seq: row.get::<_, i64>(0)? as u64,
                kind: row.get(1)?,
                records: row.get::<_, i64>(2)? as u64,
                jws: row.get(3)?,
                hash: row.get(4)?,
            })
        })
        .optional()
}

/// Stores the registry's receipt for `seq`; rejected records are kept as quarantined.
pub fn acknowledge(
    connection: &mut Connection,
    seq: u64,
    receipt_jws: &str,
    receipt: &Receipt,
    now: i64,
) -> rusqlite::Result<()> {
    use kasip_core::batch::Outcome;
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let updated = transaction.execute(
        "UPDATE outbox_batches SET acked_at = ?2, receipt = ?3, accepted = ?4, duplicates = ?5, rejected = ?6
         WHERE seq = ?1 AND acked_at IS NULL",
        rusqlite::params![
            seq as i64,
            now,
            receipt_jws,
            receipt.count(Outcome::Accepted) as i64,
            receipt.count(Outcome::Duplicate) as i64,
            receipt.count(Outcome::Rejected) as i64
        ],
    )?;
    if updated == 1 {
        for record in receipt
            .records
            .iter()
            .filter(|record| record.outcome == Outcome::Rejected)
        {
            transaction.execute(
                "INSERT INTO outbox_rejections (seq, record_id, reason) VALUES (?1, ?2, ?3)",
                rusqlite::params![
                    seq as i64,
                    record.id as i64,
                    record.reason.clone().unwrap_or_default()
                ],
            )?;
        }
    }
    transaction.execute(
        "UPDATE sync_state SET last_success_at = ?1, last_error = NULL, last_error_at = NULL",
        [now],
    )?;
    transaction.commit()
}

/// The head of the sealed chain: highest seq and its hash; (0, "") when nothing sealed.
pub fn sealed_head(connection: &Connection) -> rusqlite::Result<(u64, String)> {
    connection
        .query_row(
            "SELECT seq, hash FROM outbox_batches ORDER BY seq DESC LIMIT 1",
            [],
            |row| Ok((row.get::<_, i64>(0)? as u64, row.get(1)?)),
        )
        .optional()
        .map(|found| found.unwrap_or((0, String::new())))
}

/// Records a failed attempt (shown in `sync status`), without stopping the queue.
pub fn note_error(connection: &Connection, error: &str, now: i64) -> rusqlite::Result<()> {
    SYNC_ERRORS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    connection.execute(
        "UPDATE sync_state SET last_error = ?1, last_error_at = ?2",
        rusqlite::params![error, now],
    )?;
    Ok(())
}

/// Stops the queue until an admin runs `kasip-agent sync resume`.
pub fn raise_alert(connection: &Connection, alert: &str, now: i64) -> rusqlite::Result<()> {
    SYNC_ERRORS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    connection.execute(
        "UPDATE sync_state SET alert = ?1, alert_at = ?2, last_error = ?1, last_error_at = ?2",
        rusqlite::params![alert, now],
    )?;
    Ok(())
}

pub fn alert(connection: &Connection) -> rusqlite::Result<Option<String>> {
    connection.query_row("SELECT alert FROM sync_state", [], |row| row.get(0))
}

pub fn clear_alert(connection: &Connection) -> rusqlite::Result<Option<String>> {
    let previous = alert(connection)?;
    connection.execute("UPDATE sync_state SET alert = NULL, alert_at = NULL", [])?;
    Ok(previous)
}

/// What `sync status` shows.
#[derive(Debug, Serialize)]
pub struct SyncStatus {
    pub registry: Option<String>,
    pub queued_batches: u64,
    pub queued_records: u64,
    /// Events not yet sealed into a batch.
    pub unsealed_records: u64,
    /// Seconds since the oldest batch or event not yet acknowledged was made.
    pub oldest_unsent_age_secs: Option<i64>,
    pub acknowledged_batches: u64,
    pub acknowledged_records: u64,
    pub rejected_records: u64,
    pub last_success_at: Option<i64>,
    pub last_error: Option<String>,
    pub last_error_at: Option<i64>,
    pub alert: Option<String>,
    pub last_beneficiary_pull_at: Option<i64>,
    pub beneficiary_pull: Option<Value>,
}

pub fn status(connection: &Connection, now: i64) -> rusqlite::Result<SyncStatus> {
    let registry: Option<String> = connection
        .query_row("SELECT registry_url FROM sync_enrolment", [], |row| {
            row.get(0)
        })
        .optional()?;
    let (queued_batches, queued_records, oldest_batch): (u64, u64, Option<i64>) = connection
        .query_row(
            "SELECT COUNT(*), COALESCE(SUM(records), 0), MIN(created) FROM outbox_batches WHERE acked_at IS NULL",
            [],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )?;
    let (acknowledged_batches, acknowledged_records, rejected_records): (u64, u64, u64) =
        connection.query_row(
            "SELECT COUNT(*), COALESCE(SUM(records), 0), COALESCE(SUM(rejected), 0)
             FROM outbox_batches WHERE acked_at IS NOT NULL",
            [],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )?;
    let mut unsealed_records = 0;
    let mut oldest_event: Option<i64> = None;
    for kind in BatchKind::ALL {
        let (table, time_column) = source(kind);
        let id = id_column(kind);
        let after: i64 = connection
            .query_row(
                "SELECT last_id FROM outbox_cursors WHERE kind = ?1",
                [kind.as_str()],
                |row| row.get(0),
            )
            .optional()?
            .unwrap_or(0);
        let (count, oldest): (u64, Option<i64>) = connection.query_row(
            &format!("SELECT COUNT(*), MIN({time_column}) FROM {table} WHERE {id} > ?1"),
            [after],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?;
        unsealed_records += count;
        oldest_event = match (oldest_event, oldest) {
            (Some(left), Some(right)) => Some(left.min(right)),
            (left, right) => left.or(right),
        };
    }
    let oldest = match (oldest_batch, oldest_event) {
        (Some(left), Some(right)) => Some(left.min(right)),
        (left, right) => left.or(right),
    };
    connection.query_row(
        "SELECT last_success_at, last_error, last_error_at, alert, last_pull_at, pull_report FROM sync_state",
        [],
        |row| {
            Ok(SyncStatus {
                registry,
                queued_batches,
                queued_records,
                unsealed_records,
                oldest_unsent_age_secs: oldest.map(|oldest| (now - oldest).max(0)),
                acknowledged_batches,
                acknowledged_records,
                rejected_records,
                last_success_at: row.get(0)?,
                last_error: row.get(1)?,
                last_error_at: row.get(2)?,
                alert: row.get(3)?,
                last_beneficiary_pull_at: row.get(4)?,
                beneficiary_pull: row
                    .get::<_, Option<String>>(5)?
                    .and_then(|text| serde_json::from_str(&text).ok()),
            })
        },
    )
}

/// The chain and tally as sealing last verified them. Nothing is sealed over a chain that
/// does not verify: a row inserted or edited behind the agent's back stops the outbox,
/// raises the alert and is reported to the registry, instead of being signed and sent.
///
/// Each check walks only the rows appended since the last (and that the last verified
/// row is still there, unchanged); the whole chain and the coverage tally are checked
/// when the guard is new and every `FULL_CHECK_SECS`.
#[derive(Debug, Default)]
pub struct ChainGuard {
    /// The last verified row: (id, hash).
    verified: Option<(i64, Vec<u8>)>,
    full_checked_at: Option<i64>,
}

/// How often the whole chain and the tally are verified again.
pub const FULL_CHECK_SECS: i64 = 3600;

/// The chain as verified: its last event and hash (empty before the first mark).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedHead {
    pub events: u64,
    pub head: String,
}

/// Where and why the chain or the tally does not verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntegrityBreak {
    pub event: Option<i64>,
    pub reason: String,
}

impl IntegrityBreak {
    /// The sentence of the alert, the log, `sync status` and the report to the registry.
    pub fn alert(&self) -> String {
        match self.event {
            Some(event) => format!(
                "TAMPER ALARM: the attendance chain does not verify at event {event}: {}; nothing is sealed until the database is restored from a backup",
                self.reason
            ),
            None => format!(
                "TAMPER ALARM: {}; nothing is sealed until the database is restored from a backup",
                self.reason
            ),
        }
    }
}

impl ChainGuard {
    pub fn check(
        &mut self,
        connection: &Connection,
        now: i64,
    ) -> rusqlite::Result<Result<VerifiedHead, IntegrityBreak>> {
        use crate::attendance::{verify_chain_after, ChainCheck};
        let full = self
            .full_checked_at
            .is_none_or(|at| now - at >= FULL_CHECK_SECS || now < at);
        let (after_id, after_hash) = match (&self.verified, full) {
            (Some((id, hash)), false) => (*id, hash.clone()),
            _ => (0, kasip_core::chain::GENESIS_HASH.to_vec()),
        };
        // The rows walked, not the table's head read afterwards: the writer may append
        // in between, and those rows are not verified yet.
        let walked = match verify_chain_after(connection, after_id, &after_hash)? {
            ChainCheck::Broken { row_id, reason } => {
                self.verified = None;
                return Ok(Err(IntegrityBreak {
                    event: Some(row_id),
                    reason,
                }));
            }
            ChainCheck::Intact { last, .. } => last,
        };
        if full {
            let mismatches = crate::coverage::tally_mismatches(connection)?;
            if let Some((date, iin)) = mismatches.first() {
                self.verified = None;
                return Ok(Err(IntegrityBreak {
                    event: None,
                    reason: format!(
                        "the coverage tally differs from the marks for {} student-day(s), first {iin} on {date}",
                        mismatches.len()
                    ),
                }));
            }
            self.full_checked_at = Some(now);
        }
        let verified = VerifiedHead {
            events: walked.as_ref().map_or(0, |(id, _)| *id as u64),
            head: walked
                .as_ref()
                .map(|(_, hash)| to_hex(hash))
                .unwrap_or_default(),
        };
        self.verified = walked;
        Ok(Ok(verified))
    }
}
