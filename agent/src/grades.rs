//! Grades (issue "Sync"): recorded by teachers or imported from the LMS, append-only.
//! A grade with a different score for the same student, discipline, assessment and date
//! is a correction: a new event that references the one it replaces.

use kasip_core::{Date, Discipline, Iin};
use rusqlite::{OptionalExtension, Transaction};

/// current, midterm, exam or practice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assessment {
    Current,
    Midterm,
    Exam,
    Practice,
}

impl Assessment {
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.trim().to_lowercase().as_str() {
            "current" | "текущая" | "ағымдағы" => Ok(Self::Current),
            "midterm" | "рубежная" | "аралық" => Ok(Self::Midterm),
            "exam" | "экзамен" | "емтихан" => Ok(Self::Exam),
            "practice" | "практика" | "тәжірибе" => Ok(Self::Practice),
            _ => Err("is not an assessment: write current, midterm, exam or practice".into()),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Current => "current",
            Self::Midterm => "midterm",
            Self::Exam => "exam",
            Self::Practice => "practice",
        }
    }
}

/// A score 0–100.
pub fn parse_score(text: &str) -> Result<u8, String> {
    match text.trim().parse::<u8>() {
        Ok(score) if score <= 100 => Ok(score),
        _ => Err("is not a score from 0 to 100".into()),
    }
}

/// Credits 0–60 (whole credits: batch payloads carry integers only).
pub fn parse_credits(text: &str) -> Result<u8, String> {
    match text.trim().parse::<u8>() {
        Ok(credits) if credits <= 60 => Ok(credits),
        _ => Err("is not a whole number of credits from 0 to 60".into()),
    }
}

#[derive(Debug, Clone)]
pub struct NewGrade {
    pub student: Iin,
    pub discipline: Discipline,
    pub assessment: Assessment,
    pub score: u8,
    pub credits: u8,
    pub date: Date,
    /// Staff login, or `import:<file>`.
    pub recorded_by: String,
}

/// What recording a grade did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    Added,
    /// A new event correcting an earlier grade.
    Corrected,
    /// The same grade is already the latest: nothing recorded.
    Unchanged,
}

/// Records `grade` in the caller's transaction. The student must exist.
pub fn record(
    transaction: &Transaction<'_>,
    grade: &NewGrade,
    now: i64,
) -> rusqlite::Result<Recorded> {
    let latest: Option<(i64, u8, u8)> = transaction
        .prepare_cached(
            "SELECT id, score, credits FROM grade_events
             WHERE student_iin = ?1 AND discipline = ?2 AND assessment = ?3 AND date = ?4
             ORDER BY id DESC LIMIT 1",
        )?
        .query_row(
            rusqlite::params![
                grade.student.as_string(),
                grade.discipline.as_str(),
                grade.assessment.as_str(),
                grade.date.to_string()
            ],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )
        .optional()?;
    let corrects = match latest {
        Some((_, score, credits)) if score == grade.score && credits == grade.credits => {
            return Ok(Recorded::Unchanged)
        }
        Some((id, ..)) => Some(id),
        None => None,
    };
    transaction
        .prepare_cached(
            "INSERT INTO grade_events (student_iin, discipline, assessment, score, credits, date,
                 recorded_at, recorded_by, corrects) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?
        .execute(rusqlite::params![
            grade.student.as_string(),
            grade.discipline.as_str(),
            grade.assessment.as_str(),
            grade.score,
            grade.credits,
            grade.date.to_string(),
            now,
            grade.recorded_by,
            corrects
        ])?;
    Ok(if corrects.is_some() {
        Recorded::Corrected
    } else {
        Recorded::Added
    })
}

/// Records a grade given on a lesson's page: only for a student of that lesson's group
/// (`None` otherwise, nothing stored).
pub fn record_for_group(
    connection: &rusqlite::Connection,
    grade: &NewGrade,
    group_code: &str,
    now: i64,
) -> rusqlite::Result<Option<Recorded>> {
    let in_group = connection
        .query_row(
            "SELECT 1 FROM students s JOIN study_groups g ON g.id = s.group_id WHERE s.iin = ?1 AND g.code = ?2",
            rusqlite::params![grade.student.as_string(), group_code],
            |_| Ok(()),
        )
        .optional()?
        .is_some();
    if !in_group {
        return Ok(None);
    }
    let transaction =
        rusqlite::Transaction::new_unchecked(connection, rusqlite::TransactionBehavior::Immediate)?;
    let recorded = record(&transaction, grade, now)?;
    transaction.commit()?;
    Ok(Some(recorded))
}
