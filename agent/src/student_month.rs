//! A student's own month, as their bound phone shows it ("My attendance"): each lesson of
//! their group with its mark, the month's QR share against the rule and what it takes
//! to reach it, and their grades.

use kasip_core::{Date, MarkMethod, MarkStatus, Month};
use rusqlite::{Connection, OptionalExtension};

use crate::coverage::CoverageRules;

/// One lesson of the student's group, with their latest mark for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LessonMark {
    pub date: Date,
    pub start: String,
    pub discipline: String,
    pub status: Option<MarkStatus>,
    pub method: Option<MarkMethod>,
}

/// One grade of the month.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grade {
    pub date: String,
    pub discipline: String,
    pub assessment: String,
    pub score: u8,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StudentMonthView {
    pub name: String,
    pub group: String,
    pub lessons: Vec<LessonMark>,
    /// Lessons marked present or late, and of those, by QR (as the rules count QR).
    pub present: u64,
    pub qr: u64,
    /// QR marks still needed this month, if the share is below the rule: at the coming
    /// lessons, each by QR.
    pub qr_needed: u64,
    pub grades: Vec<Grade>,
}

/// The least k with (qr + k) / (present + k) ≥ share (thousandths): the lessons the
/// student must still attend by QR for their share to reach the rule.
pub fn qr_marks_needed(present: u64, qr: u64, share: u16) -> u64 {
    let share = u64::from(share.min(1000));
    let (have, want) = (qr * 1000, share * present);
    if have >= want {
        return 0;
    }
    if share >= 1000 {
        // Only QR from now on can never make up a non-QR mark already made.
        return u64::MAX;
    }
    (want - have).div_ceil(1000 - share)
}

/// A student's name, group and their group's lessons over a span, each with the student's
/// latest mark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StudentLessons {
    pub name: String,
    pub group: String,
    pub lessons: Vec<LessonMark>,
}

impl StudentLessons {
    /// Lessons marked present or late.
    pub fn attended(&self) -> u64 {
        self.lessons
            .iter()
            .filter(|lesson| {
                lesson
                    .status
                    .is_some_and(|status| status.counts_as_present())
            })
            .count() as u64
    }

    /// Attended of the lessons held, in thousandths; None without lessons.
    pub fn attended_per_mille(&self) -> Option<u64> {
        let held = self.lessons.len() as u64;
        (held > 0).then(|| self.attended() * 1000 / held)
    }
}

/// `iin`'s group's lessons from `from` through `through` (inclusive), with the student's
/// marks; None if no such student.
pub fn student_lessons(
    connection: &Connection,
    iin: &str,
    from: Date,
    through: Date,
) -> rusqlite::Result<Option<StudentLessons>> {
    let found: Option<(String, String, i64)> = connection
        .prepare_cached(
            "SELECT s.last_name || ' ' || s.first_name, g.code, g.id
             FROM students s JOIN study_groups g ON g.id = s.group_id WHERE s.iin = ?1",
        )?
        .query_row([iin], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
        .optional()?;
    let Some((name, group, group_id)) = found else {
        return Ok(None);
    };
    let lessons = connection
        .prepare_cached(
            "SELECT l.date, l.start_time, l.discipline, m.status, m.method
             FROM lessons l
             LEFT JOIN latest_marks m ON m.lesson_id = l.id AND m.student_iin = ?1
             WHERE l.group_id = ?2 AND l.date BETWEEN ?3 AND ?4
             ORDER BY l.date, l.start_time",
        )?
        .query_map(
            rusqlite::params![iin, group_id, from.to_string(), through.to_string()],
            |row| {
                let date: String = row.get(0)?;
                let status: Option<String> = row.get(3)?;
                let method: Option<String> = row.get(4)?;
                Ok((date, row.get(1)?, row.get(2)?, status, method))
            },
        )?
        .filter_map(|row| match row {
            Ok((date, start, discipline, status, method)) => Some(Ok(LessonMark {
                date: Date::parse(&date).ok()?,
                start,
                discipline,
                status: status.as_deref().and_then(MarkStatus::parse),
                method: method.as_deref().and_then(MarkMethod::parse),
            })),
            Err(error) => Some(Err(error)),
        })
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(Some(StudentLessons {
        name,
        group,
        lessons,
    }))
}

/// `iin`'s month; None if no such student.
pub fn student_month(
    connection: &Connection,
    iin: &str,
    month: Month,
    rules: &CoverageRules,
) -> rusqlite::Result<Option<StudentMonthView>> {
    let Some(span) = student_lessons(connection, iin, month.first_day(), month.last_day())? else {
        return Ok(None);
    };
    let present = span.attended();
    let StudentLessons {
        name,
        group,
        lessons,
    } = span;
    let (first, last) = (month.first_day().to_string(), month.last_day().to_string());
    let qr = lessons
        .iter()
        .filter(|lesson| {
            lesson
                .status
                .is_some_and(|status| status.counts_as_present())
        })
        .filter(|lesson| match lesson.method {
            Some(MarkMethod::QrPhone | MarkMethod::QrKiosk) => true,
            Some(MarkMethod::QrTyped) => rules.typed_code_counts_as_qr,
            _ => false,
        })
        .count() as u64;
    let grades = connection
        .prepare_cached(
            "SELECT g.date, g.discipline, g.assessment, g.score FROM grade_events g
             WHERE g.student_iin = ?1 AND g.date BETWEEN ?2 AND ?3
               AND NOT EXISTS (SELECT 1 FROM grade_events c WHERE c.corrects = g.id)
             ORDER BY g.date, g.discipline",
        )?
        .query_map(rusqlite::params![iin, first, last], |row| {
            Ok(Grade {
                date: row.get(0)?,
                discipline: row.get(1)?,
                assessment: row.get(2)?,
                score: row.get(3)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(Some(StudentMonthView {
        name,
        group,
        qr_needed: qr_marks_needed(present, qr, rules.student_qr_share.thousandths()),
        lessons,
        present,
        qr,
        grades,
    }))
}

#[cfg(test)]
mod tests {
    use super::qr_marks_needed;

    #[test]
    fn the_qr_marks_needed_reach_the_share_and_no_fewer_would() {
        assert_eq!(qr_marks_needed(0, 0, 500), 0);
        assert_eq!(qr_marks_needed(4, 2, 500), 0);
        // 1 of 4: (1 + 2) / (4 + 2) = 50%; one more would be 2 / 5.
        assert_eq!(qr_marks_needed(4, 1, 500), 2);
        for present in 0..40u64 {
            for qr in 0..=present {
                for share in [100u16, 333, 500, 750, 900] {
                    let k = qr_marks_needed(present, qr, share);
                    let reaches = |k: u64| (qr + k) * 1000 >= u64::from(share) * (present + k);
                    assert!(reaches(k), "{present} {qr} {share}: {k}");
                    assert!(k == 0 || !reaches(k - 1), "{present} {qr} {share}: {k}");
                }
            }
        }
        assert_eq!(qr_marks_needed(3, 2, 1000), u64::MAX);
    }
}
