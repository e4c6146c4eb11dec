//! The one place a mark joins the attendance chain.
//!
//! **Invariant**: `record_mark` is the only caller of `ChainWriter::append`. Whatever the
//! source (phone, typed code, kiosk, staff), it decides the same three things the same
//! way: a repeated QR mark answers the first one (idempotency), a QR mark's status comes
//! from its time against the lesson's start (lateness), and a mark for a lesson of a
//! closed month is filed as an adjustment to that month's statement.

use kasip_core::chain::{EntryKind, MarkEvidence};
use kasip_core::{Iin, MarkMethod, MarkStatus};
use rusqlite::{OptionalExtension, Transaction};

use crate::attendance::{ChainWriter, NewMark};

/// Where a mark comes from, with what only that source knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MarkSource {
    /// Scanned or typed at the lesson: present or late by the time of the scan.
    Qr {
        method: MarkMethod,
        /// Hash of the phone's identity, or `kiosk:N`.
        device_id: String,
        /// The classroom token's rotation step (phones and typed codes).
        token_step: Option<u64>,
        lesson_starts_at: i64,
        /// What the source proves (binding and device signature, or kiosk and pass);
        /// its entry kind is decided here.
        evidence: MarkEvidence,
    },
    /// Entered by staff with the status they chose; replaces the latest mark. After the
    /// lesson's window it is a late entry (an admin's, with a reason).
    Manual {
        status: MarkStatus,
        marked_by: String,
        reason: Option<String>,
        late_entry: bool,
    },
}

/// A mark a source has decided to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkToRecord {
    pub lesson_id: i64,
    pub student: Iin,
    /// When it happened: the request's time, or when a kiosk saw the pass.
    pub at: i64,
    pub source: MarkSource,
}

/// The mark in the chain: new, or the earlier QR mark this one repeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordedMark {
    pub event_id: i64,
    pub status: MarkStatus,
    pub recorded_at: i64,
    pub repeated: bool,
}

/// Appends `mark` to the chain inside the writer's transaction (see the module's rules).
pub fn record_mark(
    transaction: &Transaction<'_>,
    chain: &mut ChainWriter,
    late_after_mins: u32,
    mark: MarkToRecord,
) -> rusqlite::Result<RecordedMark> {
    let admitted = record_mark_admitted(transaction, chain, late_after_mins, mark, |_| {
        Ok(Ok::<(), std::convert::Infallible>(()))
    })?;
    Ok(match admitted {
        Ok(recorded) => recorded,
        Err(never) => match never {},
    })
}

/// `record_mark` with a source's own last check (`admit`), run after a repeated QR mark
/// has been answered and before anything is appended; its refusal appends nothing.
pub(super) fn record_mark_admitted<Refusal>(
    transaction: &Transaction<'_>,
    chain: &mut ChainWriter,
    late_after_mins: u32,
    mark: MarkToRecord,
    admit: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<Result<(), Refusal>>,
) -> rusqlite::Result<Result<RecordedMark, Refusal>> {
    let iin = mark.student.as_string();
    let new_mark = match mark.source {
        MarkSource::Qr {
            method,
            device_id,
            token_step,
            lesson_starts_at,
            evidence,
        } => {
            if let Some(earlier) = first_qr_mark(transaction, mark.lesson_id, &iin)? {
                return Ok(Ok(earlier));
            }
            let late = mark.at > lesson_starts_at + i64::from(late_after_mins) * 60;
            NewMark {
                lesson_id: mark.lesson_id,
                student_iin: mark.student,
                status: if late {
                    MarkStatus::Late
                } else {
                    MarkStatus::Present
                },
                method,
                recorded_at: mark.at,
                device_id: Some(device_id),
                token_step,
                marked_by: None,
                reason: None,
                corrects: None,
                evidence,
            }
        }
        MarkSource::Manual {
            status,
            marked_by,
            reason,
            late_entry,
        } => NewMark {
            lesson_id: mark.lesson_id,
            student_iin: mark.student,
            status,
            method: if late_entry {
                MarkMethod::LateEntry
            } else {
                MarkMethod::Manual
            },
            recorded_at: mark.at,
            device_id: None,
            token_step: None,
            marked_by: Some(marked_by),
            reason,
            corrects: latest_mark(transaction, mark.lesson_id, &iin)?,
            evidence: MarkEvidence::of(if late_entry {
                EntryKind::LateEntry
            } else {
                EntryKind::Live
            }),
        },
    };
    if let Err(refusal) = admit(transaction)? {
        return Ok(Err(refusal));
    }
    let mut new_mark = new_mark;
    let closed_month = closed_month_of(transaction, new_mark.lesson_id)?;
    if closed_month.is_some() {
        new_mark.evidence.entry = EntryKind::Adjustment;
    }
    let event_id = chain.append(transaction, &new_mark)?;
    if let Some(month) = closed_month {
        transaction
            .prepare_cached("INSERT INTO month_adjustments (event_id, month) VALUES (?1, ?2)")?
            .execute(rusqlite::params![event_id, month])?;
    }
    Ok(Ok(RecordedMark {
        event_id,
        status: new_mark.status,
        recorded_at: new_mark.recorded_at,
        repeated: false,
    }))
}

/// The student's first QR mark for the lesson: a second scan answers it again.
fn first_qr_mark(
    transaction: &Transaction<'_>,
    lesson_id: i64,
    iin: &str,
) -> rusqlite::Result<Option<RecordedMark>> {
    let earlier: Option<(i64, String, i64)> = transaction
        .prepare_cached(
            "SELECT id, status, recorded_at FROM attendance_events
             WHERE lesson_id = ?1 AND student_iin = ?2 AND method IN ('qr_phone', 'qr_typed', 'qr_kiosk')
             ORDER BY id LIMIT 1",
        )?
        .query_row(rusqlite::params![lesson_id, iin], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })
        .optional()?;
    Ok(earlier.map(|(event_id, status, recorded_at)| RecordedMark {
        event_id,
        status: MarkStatus::parse(&status).unwrap_or(MarkStatus::Present),
        recorded_at,
        repeated: true,
    }))
}

/// The latest mark of the student for the lesson, which a manual mark corrects.
fn latest_mark(
    transaction: &Transaction<'_>,
    lesson_id: i64,
    iin: &str,
) -> rusqlite::Result<Option<i64>> {
    transaction
        .prepare_cached(
            "SELECT MAX(id) FROM attendance_events WHERE lesson_id = ?1 AND student_iin = ?2",
        )?
        .query_row(rusqlite::params![lesson_id, iin], |row| row.get(0))
}

/// The closed month a lesson belongs to: a mark for it, from any path, is an adjustment
/// to that month's statement.
fn closed_month_of(
    transaction: &Transaction<'_>,
    lesson_id: i64,
) -> rusqlite::Result<Option<String>> {
    transaction
        .prepare_cached(
            "SELECT mc.month FROM lessons l JOIN month_closes mc ON mc.month = substr(l.date, 1, 7)
             WHERE l.id = ?1",
        )?
        .query_row([lesson_id], |row| row.get(0))
        .optional()
}
