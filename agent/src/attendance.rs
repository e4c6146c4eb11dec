//! The attendance log: append-only marks in a SHA-256 hash chain (design §4).
//!
//! **Invariant**: the chain is extended only by `ChainWriter::append`, inside the
//! caller's transaction, so a rolled-back transaction leaves no gap and no fork.

use kasip_core::batch::to_hex as hex;
use kasip_core::chain::{ChainRow, MarkEvidence, GENESIS_HASH};
use kasip_core::{Iin, MarkMethod, MarkStatus};
use rusqlite::{Connection, OptionalExtension, Transaction};

/// A mark about to be recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMark {
    pub lesson_id: i64,
    pub student_iin: Iin,
    pub status: MarkStatus,
    pub method: MarkMethod,
    pub recorded_at: i64,
    /// Hash of the phone's identity cookie, or the kiosk's id.
    pub device_id: Option<String>,
    /// The classroom token's rotation step, for QR marks.
    pub token_step: Option<u64>,
    /// Staff login for manual marks.
    pub marked_by: Option<String>,
    pub reason: Option<String>,
    /// The earlier event this one corrects.
    pub corrects: Option<i64>,
    /// What the source knew, for the registry (hashed with the row).
    pub evidence: MarkEvidence,
}

/// The chain's head, read once per transaction and advanced in memory: a group commit
/// of many marks reads it once.
pub struct ChainWriter {
    last_id: i64,
    last_hash: Vec<u8>,
}

impl ChainWriter {
    pub fn read_head(transaction: &Transaction<'_>) -> rusqlite::Result<Self> {
        let head: Option<(i64, Vec<u8>)> = transaction
            .prepare_cached("SELECT id, row_hash FROM attendance_events ORDER BY id DESC LIMIT 1")?
            .query_row([], |row| Ok((row.get(0)?, row.get(1)?)))
            .optional()?;
        let (last_id, last_hash) = head.unwrap_or((0, GENESIS_HASH.to_vec()));
        Ok(Self { last_id, last_hash })
    }

    /// Appends `mark` and returns its event id.
    pub fn append(
        &mut self,
        transaction: &Transaction<'_>,
        mark: &NewMark,
    ) -> rusqlite::Result<i64> {
        let id = self.last_id + 1;
        let iin = mark.student_iin.as_string();
        let evidence = mark.evidence.to_canonical();
        let row_hash = ChainRow {
            id,
            lesson_id: mark.lesson_id,
            student_iin: &iin,
            status: mark.status.as_str(),
            method: mark.method.as_str(),
            recorded_at: mark.recorded_at,
            device_id: mark.device_id.as_deref(),
            token_step: mark.token_step,
            marked_by: mark.marked_by.as_deref(),
            reason: mark.reason.as_deref(),
            corrects: mark.corrects,
            evidence: Some(&evidence),
        }
        .hash(&self.last_hash)
        .to_vec();
        transaction.prepare_cached(
            "INSERT INTO attendance_events (id, lesson_id, student_iin, status, method, recorded_at,
                 device_id, token_step, marked_by, reason, corrects, prev_hash, row_hash, evidence)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
        )?
        .execute(rusqlite::params![
                id,
                mark.lesson_id,
                iin,
                mark.status.as_str(),
                mark.method.as_str(),
                mark.recorded_at,
                mark.device_id,
                mark.token_step.map(|step| step as i64),
                mark.marked_by,
                mark.reason,
                mark.corrects,
                self.last_hash,
                row_hash,
                evidence,
            ])?;
        self.last_id = id;
        self.last_hash = row_hash;
        Ok(id)
    }
}

/// The result of walking the chain.
#[derive(Debug, PartialEq, Eq)]
pub enum ChainCheck {
    /// Every row matches; `head` is the last row's hash (hex), empty for no rows;
    /// `last` the last row walked (id, hash), for a later check to go on from.
    Intact {
        rows: u64,
        head: String,
        last: Option<(i64, Vec<u8>)>,
    },
    /// The first row that does not match, and why.
    Broken { row_id: i64, reason: String },
}

/// Recomputes every row's hash in id order and names the first that does not match.
pub fn verify_chain(connection: &Connection) -> rusqlite::Result<ChainCheck> {
    verify_chain_after(connection, 0, &GENESIS_HASH)
}

/// `verify_chain` from the row after `after_id`, whose hash is `after_hash` (a check
/// of what was appended since an earlier one; `rows` counts the rows walked).
pub fn verify_chain_after(
    connection: &Connection,
    after_id: i64,
    after_hash: &[u8],
) -> rusqlite::Result<ChainCheck> {
    if after_id > 0 {
        let stored: Option<Vec<u8>> = connection
            .prepare_cached("SELECT row_hash FROM attendance_events WHERE id = ?1")?
            .query_row([after_id], |row| row.get(0))
            .optional()?;
        if stored.as_deref() != Some(after_hash) {
            return Ok(ChainCheck::Broken {
                row_id: after_id,
                reason: "the row already verified was removed or replaced".into(),
            });
        }
    }
    let mut statement = connection.prepare_cached(
        "SELECT id, lesson_id, student_iin, status, method, recorded_at, device_id, token_step,
                marked_by, reason, corrects, prev_hash, row_hash, evidence
         FROM attendance_events WHERE id > ?1 ORDER BY id",
    )?;
    let mut rows = statement.query([after_id])?;
    let mut expected_prev = after_hash.to_vec();
    let mut expected_id = after_id + 1;
    let mut count = 0u64;
    while let Some(row) = rows.next()? {
        let id: i64 = row.get(0)?;
        if id != expected_id {
            return Ok(ChainCheck::Broken {
                row_id: id,
                reason: format!("expected event {expected_id} next: events were deleted or inserted out of order"),
            });
        }
        let prev_hash: Vec<u8> = row.get(11)?;
        let row_hash: Vec<u8> = row.get(12)?;
        if prev_hash != expected_prev {
            return Ok(ChainCheck::Broken {
                row_id: id,
                reason: "its prev_hash is not the previous row's hash: a row before it was removed or replaced".into(),
            });
        }
        let text = |index: usize| row.get::<_, String>(index);
        let optional = |index: usize| row.get::<_, Option<String>>(index);
        let computed = ChainRow {
            id,
            lesson_id: row.get(1)?,
            student_iin: &text(2)?,
            status: &text(3)?,
            method: &text(4)?,
            recorded_at: row.get(5)?,
            device_id: optional(6)?.as_deref(),
            token_step: row.get::<_, Option<i64>>(7)?.map(|step| step as u64),
            marked_by: optional(8)?.as_deref(),
            reason: optional(9)?.as_deref(),
            corrects: row.get(10)?,
            evidence: optional(13)?.as_deref(),
        }
        .hash(&prev_hash);
        if computed[..] != row_hash[..] {
            return Ok(ChainCheck::Broken {
                row_id: id,
                reason: "its content does not match its hash: the row was edited".into(),
            });
        }
        expected_prev = row_hash;
        expected_id += 1;
        count += 1;
    }
    Ok(ChainCheck::Intact {
        rows: count,
        head: if expected_id == 1 {
            String::new()
        } else {
            hex(&expected_prev)
        },
        last: (expected_id > 1).then(|| (expected_id - 1, expected_prev)),
    })
}

/// How many marks were recorded by each method (for `/metrics`).
pub fn marks_by_method(connection: &Connection) -> rusqlite::Result<Vec<(String, i64)>> {
    let mut statement = connection
        .prepare_cached("SELECT method, COUNT(*) FROM attendance_events GROUP BY method")?;
    let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
    rows.collect()
}

/// One mark of a student, as the admin's student page lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StudentMark {
    pub date: String,
    pub start: String,
    pub discipline: String,
    pub status: MarkStatus,
    pub method: MarkMethod,
    /// The staff login of a manual mark; empty otherwise.
    pub marked_by: String,
}

/// Every mark of the student for lessons in `month`, in lesson order (corrections after
/// what they correct).
pub fn student_month_marks(
    connection: &Connection,
    student: &Iin,
    month: kasip_core::Month,
) -> rusqlite::Result<Vec<StudentMark>> {
    let mut statement = connection.prepare_cached(
        "SELECT l.date, l.start_time, l.discipline, e.status, e.method, COALESCE(e.marked_by, '')
         FROM attendance_events e JOIN lessons l ON l.id = e.lesson_id
         WHERE e.student_iin = ?1 AND l.date BETWEEN ?2 AND ?3 ORDER BY l.date, l.start_time, e.id",
    )?;
    let rows = statement.query_map(
        rusqlite::params![
            student.as_string(),
            month.first_day().to_string(),
            month.last_day().to_string()
        ],
        |row| {
            let stored = |index: usize, text: String| {
                rusqlite::Error::FromSqlConversionFailure(
                    index,
                    rusqlite::types::Type::Text,
                    format!("unknown stored value {text:?}").into(),
                )
            };
            let status: String = row.get(3)?;
            let method: String = row.get(4)?;
            Ok(StudentMark {
                date: row.get(0)?,
                start: row.get(1)?,
                discipline: row.get(2)?,
                status: MarkStatus::parse(&status).ok_or_else(|| stored(3, status))?,
                method: MarkMethod::parse(&method).ok_or_else(|| stored(4, method))?,
                marked_by: row.get(5)?,
            })
        },
    )?;
    rows.collect()
}
