//! A manual mark by staff, decided on the writer thread: the lesson's window → lesson held
//! → the marker may mark it → student in the group → the coverage policy → `record_mark`.
//!
//! Inside the lesson's window a held lesson takes live marks (method `manual`). Before it,
//! nothing. After it, only an admin may enter a mark, with a written reason, and it is
//! recorded and synced as a late entry (method `late_entry`): who, when and why.

use kasip_core::{Iin, MarkStatus};
use rusqlite::{OptionalExtension, Transaction};

use super::record::{record_mark, MarkSource, MarkToRecord};
use super::MarkRules;
use crate::attendance::ChainWriter;
use crate::coverage::CoveragePolicy;
use crate::lessons::{LessonWindow, WindowPosition};
use crate::staff::{may_act_on_lesson, Role, StaffMember};

/// A manual mark by staff (method `manual`), for students who cannot scan.
pub struct ManualMark {
    pub lesson_id: i64,
    pub student_iin: Iin,
    pub status: MarkStatus,
    pub reason: String,
    pub marker: StaffMember,
    /// An admin's reason for letting this mark take the group below the coverage rule.
    pub override_reason: Option<String>,
}

/// A stored manual mark, and the coverage warning the teacher must see, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManualAccepted {
    pub event_id: i64,
    /// (coverage before, after) in thousandths when the mark took the group below the rule.
    pub below_rule: Option<(Option<u64>, Option<u64>)>,
}

/// Why a manual mark was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManualRefusal {
    UnknownLesson,
    LessonNotHeld,
    /// The lesson's window has not begun.
    NotOpenYet,
    /// The window has passed and the marker is not an admin.
    Ended,
    /// An admin's late entry without a written reason.
    LateEntryReasonRequired,
    NotYourLesson,
    NotInGroup,
    ReasonRequired,
    /// Would take the group from `before` to `after` (thousandths), below the rule; only
    /// an admin with a reason may (policy require-override).
    NeedsOverride {
        before: Option<u64>,
        after: Option<u64>,
    },
    /// Would take the group below the rule; refused (policy block).
    Blocked {
        before: Option<u64>,
        after: Option<u64>,
    },
}

/// group, group code, teacher, held, date, start, end.
type LessonRow = (i64, String, String, bool, String, String, String);

/// The one function every manual mark goes through.
pub(super) fn decide_manual(
    transaction: &Transaction<'_>,
    chain: &mut ChainWriter,
    mark: &ManualMark,
    rules: &MarkRules,
    now: i64,
) -> rusqlite::Result<Result<ManualAccepted, ManualRefusal>> {
    if mark.reason.trim().is_empty() && mark.status != MarkStatus::Present {
        return Ok(Err(ManualRefusal::ReasonRequired));
    }
    let lesson: Option<LessonRow> = transaction
        .prepare_cached(
            "SELECT l.group_id, g.code, l.teacher_iin, o.lesson_id IS NOT NULL,
                    l.date, l.start_time, l.end_time
             FROM lessons l JOIN study_groups g ON g.id = l.group_id
             LEFT JOIN lesson_openings o ON o.lesson_id = l.id WHERE l.id = ?1",
        )?
        .query_row([mark.lesson_id], |row| LessonRow::try_from(row))
        .optional()?;
    let Some((group_id, group_code, teacher_iin, held, date, start, end)) = lesson else {
        return Ok(Err(ManualRefusal::UnknownLesson));
    };
    let position = LessonWindow::of_stored(&date, &start, &end, &rules.lessons)
        .map_or(WindowPosition::Ended, |window| window.position(now));
    let late_entry = match position {
        WindowPosition::NotYet => return Ok(Err(ManualRefusal::NotOpenYet)),
        WindowPosition::Within if !held => return Ok(Err(ManualRefusal::LessonNotHeld)),
        WindowPosition::Within => false,
        WindowPosition::Ended if mark.marker.role != Role::Admin => {
            return Ok(Err(ManualRefusal::Ended));
        }
        WindowPosition::Ended if mark.reason.trim().is_empty() => {
            return Ok(Err(ManualRefusal::LateEntryReasonRequired));
        }
        WindowPosition::Ended => true,
    };
    if !may_act_on_lesson(transaction, &mark.marker, &teacher_iin, &group_code)? {
        return Ok(Err(ManualRefusal::NotYourLesson));
    }
    let student_group: Option<i64> = transaction
        .prepare_cached("SELECT group_id FROM students WHERE iin = ?1")?
        .query_row([mark.student_iin.as_string()], |row| row.get(0))
        .optional()?;
    if student_group != Some(group_id) {
        return Ok(Err(ManualRefusal::NotInGroup));
    }
    let gate = coverage_gate(transaction, mark, rules)?;
    let below_rule = match (gate, rules.coverage_policy) {
        (None, _) => None,
        (Some((before, after)), CoveragePolicy::Warn) => Some((before, after)),
        (Some((before, after)), CoveragePolicy::Block) => {
            return Ok(Err(ManualRefusal::Blocked { before, after }));
        }
        (Some((before, after)), CoveragePolicy::RequireOverride) => {
            let overridden = mark.marker.role == Role::Admin
                && mark
                    .override_reason
                    .as_deref()
                    .is_some_and(|reason| !reason.trim().is_empty());
            if !overridden {
                return Ok(Err(ManualRefusal::NeedsOverride { before, after }));
            }
            Some((before, after))
        }
    };
    let recorded = record_mark(
        transaction,
        chain,
        rules.late_after_mins,
        MarkToRecord {
            lesson_id: mark.lesson_id,
            student: mark.student_iin,
            at: now,
            source: MarkSource::Manual {
                status: mark.status,
                marked_by: mark.marker.login.clone(),
                reason: Some(mark.reason.trim().to_owned()).filter(|reason| !reason.is_empty()),
                late_entry,
            },
        },
    )?;
    let event_id = recorded.event_id;
    if let (Some((before, after)), Some(reason)) = (below_rule, mark.override_reason.as_deref()) {
        if mark.marker.role == Role::Admin && !reason.trim().is_empty() {
            transaction
                .prepare_cached(
                    "INSERT INTO coverage_overrides (event_id, admin_login, reason, coverage_before, coverage_after, at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?
                .execute(rusqlite::params![
                    event_id,
                    mark.marker.login,
                    reason.trim(),
                    before.map(|value| value as i64),
                    after.map(|value| value as i64),
                    now
                ])?;
        }
    }
    Ok(Ok(ManualAccepted {
        event_id,
        below_rule,
    }))
}

/// Whether this manual mark would take its group from holding the coverage rule to
/// breaking it for the lesson's month so far: Some((before, after)) in thousandths.
fn coverage_gate(
    transaction: &Transaction<'_>,
    mark: &ManualMark,
    rules: &MarkRules,
) -> rusqlite::Result<Option<(Option<u64>, Option<u64>)>> {
    let (date, group): (String, String) = transaction
        .prepare_cached(
            "SELECT l.date, g.code FROM lessons l JOIN study_groups g ON g.id = l.group_id WHERE l.id = ?1",
        )?
        .query_row([mark.lesson_id], |row| Ok((row.get(0)?, row.get(1)?)))?;
    let Ok(date) = kasip_core::Date::parse(&date) else {
        return Ok(None);
    };
    let (rules, _) = crate::coverage::rules_in_force(transaction, &rules.coverage)?;
    let rules = &rules;
    let before =
        crate::coverage::student_months(transaction, date.calendar_month(), Some(&group), rules)?;
    let iin = mark.student_iin.as_string();
    let Some(position) = before.iter().position(|student| student.iin == iin) else {
        return Ok(None); // not a beneficiary this month: the rule does not see the mark
    };
    let replaced: Option<(String, String)> = transaction
        .prepare_cached(
            "SELECT status, method FROM attendance_events WHERE lesson_id = ?1 AND student_iin = ?2
             ORDER BY id DESC LIMIT 1",
        )?
        .query_row(rusqlite::params![mark.lesson_id, iin], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .optional()?;
    let mut after = before.clone();
    let student = &mut after[position];
    if let Some((status, method)) = replaced {
        if MarkStatus::parse(&status).is_some_and(MarkStatus::counts_as_present) {
            student.present = student.present.saturating_sub(1);
            if crate::coverage::is_qr_method(&method, rules) {
                student.qr = student.qr.saturating_sub(1);
            }
        }
    }
    if mark.status.counts_as_present() {
        student.present += 1;
    }
    let coverage = |students: &[kasip_core::StudentMonth]| {
        kasip_core::coverage_of(
            &group,
            &students.iter().collect::<Vec<_>>(),
            rules.student_qr_share,
            rules.min_coverage,
        )
    };
    let (before, after) = (coverage(&before), coverage(&after));
    Ok((before.holds && !after.holds)
        .then_some((before.coverage_per_mille, after.coverage_per_mille)))
}
