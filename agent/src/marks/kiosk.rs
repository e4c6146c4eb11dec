//! A scan a kiosk forwarded, decided on the writer thread: the pass is parsed, checked
//! for freshness and verified again under the student's registered keys (a stolen kiosk
//! credential cannot invent attendance), counted once across kiosks, and a room kiosk's
//! scan goes to `record_mark` for the lesson in that room.

use kasip_core::chain::{EntryKind, MarkEvidence};
use kasip_core::{MarkMethod, PassError, PassPublicKey, StudentPass};
use rusqlite::{OptionalExtension, Transaction};

use super::record::{record_mark, MarkSource, MarkToRecord};
use super::MarkRules;
use crate::attendance::ChainWriter;
use crate::kiosks::{Kiosk, Place};
use crate::lessons::{LessonTimes, LessonWindow, WindowPosition};
use crate::security_events::{self, SecurityEvent};

/// A kiosk clock this far ahead of the agent's is not believed.
const MAX_KIOSK_CLOCK_AHEAD_SECS: i64 = 300;

/// A scan a kiosk accepted and forwarded.
#[derive(Debug, Clone)]
pub struct KioskScan {
    pub kiosk: Kiosk,
    /// The kiosk's id for this scan: a repeated upload answers the same.
    pub scan_id: String,
    pub pass: String,
    /// When the kiosk saw the pass (its clock).
    pub scanned_at: i64,
}

/// Why the agent refused a forwarded scan. Each is a security event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanRefusal {
    Malformed,
    UnknownStudent,
    Forged,
    Stale,
    FromTheFuture,
    Replayed,
    StudentInactive,
    /// Scanned longer than `kiosk.max_buffer_hours` before it arrived: a kiosk holds
    /// scans while the agent is unreachable, not for days (a backdated scan looks so).
    BufferedTooLong,
}

impl ScanRefusal {
    /// Stored as the scan's reason and, prefixed with `kiosk_`, as the security event.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed => "malformed_pass",
            Self::UnknownStudent => "unknown_student",
            Self::Forged => "forged_pass",
            Self::Stale => "stale_pass",
            Self::FromTheFuture => "pass_from_the_future",
            Self::Replayed => "replayed_pass",
            Self::StudentInactive => "student_inactive",
            Self::BufferedTooLong => "buffered_too_long",
        }
    }

    fn from_code(code: &str) -> Self {
        match code {
            "unknown_student" => Self::UnknownStudent,
            "forged_pass" => Self::Forged,
            "stale_pass" => Self::Stale,
            "pass_from_the_future" => Self::FromTheFuture,
            "replayed_pass" => Self::Replayed,
            "student_inactive" => Self::StudentInactive,
            "buffered_too_long" => Self::BufferedTooLong,
            _ => Self::Malformed,
        }
    }
}

/// What a forwarded scan became.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanOutcome {
    /// A `qr_kiosk` mark for the lesson in the kiosk's room (or the student's earlier QR
    /// mark for it: `repeated`).
    Marked {
        student: String,
        event_id: i64,
        lesson_id: i64,
        repeated: bool,
    },
    /// Campus presence at an entrance.
    Presence {
        student: String,
    },
    /// A valid pass at a room kiosk with no lesson of the student's group there then:
    /// kept, not a mark.
    NoLesson {
        student: String,
    },
    Refused(ScanRefusal),
}

impl ScanOutcome {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Marked { .. } => "marked",
            Self::Presence { .. } => "presence",
            Self::NoLesson { .. } => "no_lesson",
            Self::Refused(_) => "refused",
        }
    }
}

/// kiosk, student, outcome, reason, event, lesson of a scan already received.
type EarlierScan = (
    i64,
    String,
    String,
    Option<String>,
    Option<i64>,
    Option<i64>,
);

/// Decides one forwarded scan inside the writer's transaction.
pub(super) fn decide_scan(
    transaction: &Transaction<'_>,
    chain: &mut ChainWriter,
    scan: &KioskScan,
    rules: &MarkRules,
    now: i64,
) -> rusqlite::Result<ScanOutcome> {
    let earlier: Option<EarlierScan> = transaction
        .prepare_cached(
            "SELECT s.kiosk_id, s.student_iin, s.outcome, s.reason, s.event_id, e.lesson_id
                 FROM kiosk_scans s LEFT JOIN attendance_events e ON e.id = s.event_id
                 WHERE s.scan_id = ?1",
        )?
        .query_row([&scan.scan_id], |row| {
            Ok((
                row.get(0)?,
                row.get(1)?,
                row.get(2)?,
                row.get(3)?,
                row.get(4)?,
                row.get(5)?,
            ))
        })
        .optional()?;
    if let Some((kiosk_id, student, outcome, reason, event_id, lesson_id)) = earlier {
        // The same upload again (the answer was lost): the same answer. Another kiosk
        // reusing an id is a replay.
        if kiosk_id != scan.kiosk.id {
            return refuse(transaction, scan, None, ScanRefusal::Replayed, now, false);
        }
        return Ok(match outcome.as_str() {
            "marked" => ScanOutcome::Marked {
                student,
                event_id: event_id.unwrap_or_default(),
                lesson_id: lesson_id.unwrap_or_default(),
                repeated: true,
            },
            "presence" => ScanOutcome::Presence { student },
            "no_lesson" => ScanOutcome::NoLesson { student },
            _ => ScanOutcome::Refused(ScanRefusal::from_code(reason.as_deref().unwrap_or(""))),
        });
    }
    let pass = match StudentPass::parse(&scan.pass) {
        Ok(pass) => pass,
        Err(_) => return refuse(transaction, scan, None, ScanRefusal::Malformed, now, true),
    };
    let window = i64::from(rules.pass_window_secs);
    // Every refusal from here on names the pass's student and is remembered by scan id.
    let refused = |refusal| refuse(transaction, scan, Some(&pass), refusal, now, true);
    if scan.scanned_at > now + MAX_KIOSK_CLOCK_AHEAD_SECS {
        return refused(ScanRefusal::FromTheFuture);
    }
    if now - scan.scanned_at > rules.kiosk_max_buffer_secs {
        return refused(ScanRefusal::BufferedTooLong);
    }
    match pass.check_fresh(scan.scanned_at, window) {
        Ok(()) => {}
        Err(PassError::FromTheFuture { .. }) => return refused(ScanRefusal::FromTheFuture),
        Err(_) => return refused(ScanRefusal::Stale),
    }
    let iin = pass.student.as_string();
    let student: Option<(i64, String)> = transaction
        .prepare_cached("SELECT group_id, status FROM students WHERE iin = ?1")?
        .query_row([&iin], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    let Some((group_id, status)) = student else {
        return refused(ScanRefusal::UnknownStudent);
    };
    // Keys current when the pass was signed: a scan buffered on a kiosk across a
    // re-registration still verifies under the key that made it.
    let keys: Vec<PassPublicKey> = transaction
        .prepare_cached(
            "SELECT public_key FROM pass_keys WHERE student_iin = ?1
             AND registered_at <= ?2 + ?3 AND (replaced_at IS NULL OR replaced_at >= ?2 - ?3)",
        )?
        .query_map(rusqlite::params![&iin, pass.signed_at, window], |row| {
            row.get::<_, Vec<u8>>(0)
        })?
        .filter_map(|key| {
            key.ok()
                .and_then(|key| PassPublicKey::from_bytes(&key).ok())
        })
        .collect();
    if !pass.verify_signature(&keys) {
        return refused(ScanRefusal::Forged);
    }
    if status != "active" {
        return refused(ScanRefusal::StudentInactive);
    }
    let used: Option<String> = transaction
        .prepare_cached(
            "SELECT scan_id FROM kiosk_scans WHERE student_iin = ?1 AND pass_signed_at = ?2 AND outcome != 'refused'",
        )?
        .query_row(rusqlite::params![&iin, pass.signed_at], |row| row.get(0))
        .optional()?;
    if used.is_some() {
        return refused(ScanRefusal::Replayed);
    }
    let outcome = match &scan.kiosk.place {
        Place::Entrance { .. } => ScanOutcome::Presence {
            student: iin.clone(),
        },
        Place::Room { room, site } => {
            match lesson_in_room(transaction, room, site, group_id, scan.scanned_at, rules)? {
                None => ScanOutcome::NoLesson {
                    student: iin.clone(),
                },
                Some((lesson_id, starts_at)) => mark_lesson(
                    transaction,
                    chain,
                    scan,
                    &pass,
                    (lesson_id, starts_at),
                    rules.late_after_mins,
                    now,
                )?,
            }
        }
    };
    let event_id = match &outcome {
        ScanOutcome::Marked { event_id, .. } => Some(*event_id),
        _ => None,
    };
    transaction
        .prepare_cached(
            "INSERT INTO kiosk_scans (scan_id, kiosk_id, student_iin, pass_signed_at, scanned_at, received_at, outcome, event_id, pass)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?
        .execute(rusqlite::params![
            scan.scan_id,
            scan.kiosk.id,
            iin,
            pass.signed_at,
            scan.scanned_at,
            now,
            outcome.code(),
            event_id,
            scan.pass
        ])?;
    Ok(outcome)
}

/// The lesson of `group_id` in `room` whose window holds `at`: (lesson id, start). A
/// kiosk's window is the lesson's, narrowed by `kiosk.grace_mins` when that is shorter.
fn lesson_in_room(
    transaction: &Transaction<'_>,
    room: &str,
    site: &str,
    group_id: i64,
    at: i64,
    rules: &MarkRules,
) -> rusqlite::Result<Option<(i64, i64)>> {
    let times = &rules.lessons;
    let kiosk_times = LessonTimes {
        timezone: times.timezone.clone(),
        open_early_mins: times.open_early_mins.min(rules.kiosk_grace_mins),
        auto_close_grace_mins: times.auto_close_grace_mins.min(rules.kiosk_grace_mins),
    };
    let date = crate::clock::local_date(&times.timezone, at);
    let mut statement = transaction.prepare_cached(
        "SELECT l.id, l.date, l.start_time, l.end_time FROM lessons l LEFT JOIN sites s ON s.id = l.site_id
         WHERE l.room = ?1 AND l.group_id = ?2 AND l.date = ?3 AND (?4 = '' OR s.name = ?4)
         ORDER BY l.start_time",
    )?;
    let rows = statement.query_map(
        rusqlite::params![room, group_id, date.to_string(), site],
        |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, String>(3)?,
            ))
        },
    )?;
    for row in rows {
        let (id, date, start, end) = row?;
        let Some(window) = LessonWindow::of_stored(&date, &start, &end, &kiosk_times) else {
            continue;
        };
        if window.position(at) == WindowPosition::Within {
            return Ok(Some((id, window.starts_at)));
        }
    }
    Ok(None)
}

fn mark_lesson(
    transaction: &Transaction<'_>,
    chain: &mut ChainWriter,
    scan: &KioskScan,
    pass: &StudentPass,
    (lesson_id, starts_at): (i64, i64),
    late_after_mins: u32,
    received_at: i64,
) -> rusqlite::Result<ScanOutcome> {
    let recorded = record_mark(
        transaction,
        chain,
        late_after_mins,
        MarkToRecord {
            lesson_id,
            student: pass.student,
            at: scan.scanned_at,
            source: MarkSource::Qr {
                method: MarkMethod::QrKiosk,
                device_id: format!("kiosk:{}", scan.kiosk.id),
                token_step: None,
                lesson_starts_at: starts_at,
                evidence: MarkEvidence {
                    kiosk: Some(scan.kiosk.id as u64),
                    pass: Some(scan.pass.clone()),
                    scanned_at: Some(scan.scanned_at),
                    received_at: Some(received_at),
                    ..MarkEvidence::of(EntryKind::Live)
                },
            },
        },
    )?;
    Ok(ScanOutcome::Marked {
        student: pass.student.as_string(),
        event_id: recorded.event_id,
        lesson_id,
        repeated: recorded.repeated,
    })
}

/// Records a refusal as a security event and, when `remember`, under the scan's id so a
/// repeated upload gets the same answer.
fn refuse(
    transaction: &Transaction<'_>,
    scan: &KioskScan,
    pass: Option<&StudentPass>,
    refusal: ScanRefusal,
    now: i64,
    remember: bool,
) -> rusqlite::Result<ScanOutcome> {
    let student = pass.map(|pass| pass.student.as_string());
    security_events::record(
        transaction,
        now,
        &SecurityEvent {
            kind: &format!("kiosk_{}", refusal.code()),
            lesson_id: None,
            student_iin: student.as_deref(),
            device_id: Some(&format!("kiosk:{}", scan.kiosk.id)),
            detail: &format!("{} scan {}", scan.kiosk.place.describe(), scan.scan_id),
            // One row per refused scan: the kiosk's credential already names the device.
            client: None,
        },
    )?;
    if remember {
        transaction
            .prepare_cached(
                "INSERT INTO kiosk_scans (scan_id, kiosk_id, student_iin, pass_signed_at, scanned_at, received_at, outcome, reason)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'refused', ?7)",
            )?
            .execute(rusqlite::params![
                scan.scan_id,
                scan.kiosk.id,
                student.unwrap_or_default(),
                pass.map_or(0, |pass| pass.signed_at),
                scan.scanned_at,
                now,
                refusal.code()
            ])?;
    }
    Ok(ScanOutcome::Refused(refusal))
}
