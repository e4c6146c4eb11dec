//! Grades export of the LMS: `iin;discipline;assessment;score;credits;date`. Grades are
//! events: a row equal to the latest grade is unchanged, a different score for the same
//! student, discipline, assessment and date is recorded as a correction.

use kasip_core::{Date, Discipline, Iin};
use rusqlite::{OptionalExtension, Transaction};

use super::table::{ColumnSpec, Table};
use super::{ImportOptions, ImportReport, RowCheck, RowError};
use crate::grades::{parse_credits, parse_score, record, Assessment, NewGrade, Recorded};

pub const COLUMNS: &[ColumnSpec] = &[
    ColumnSpec {
        name: "iin",
        aliases: &["иин", "жсн"],
        required: true,
    },
    ColumnSpec {
        name: "discipline",
        aliases: &["дисциплина", "пән"],
        required: true,
    },
    ColumnSpec {
        name: "assessment",
        aliases: &["вид_оценки", "контроль", "бағалау"],
        required: true,
    },
    ColumnSpec {
        name: "score",
        aliases: &["балл", "оценка", "ұпай"],
        required: true,
    },
    ColumnSpec {
        name: "credits",
        aliases: &["кредиты", "кредит"],
        required: true,
    },
    ColumnSpec {
        name: "date",
        aliases: &["дата", "күні"],
        required: true,
    },
];

pub fn apply(
    transaction: &Transaction<'_>,
    table: &Table,
    options: &ImportOptions,
    errors: &mut Vec<RowError>,
) -> rusqlite::Result<ImportReport> {
    let mut report = ImportReport::default();
    let now = crate::clock::unix_now();
    for row in &table.rows {
        let mut check = RowCheck::new(row.number, errors);
        let iin = check.field("iin", table.value(row, "iin"), Iin::parse);
        let discipline = check.field(
            "discipline",
            table.value(row, "discipline"),
            Discipline::parse,
        );
        let assessment = check.field(
            "assessment",
            table.value(row, "assessment"),
            Assessment::parse,
        );
        let score = check.field("score", table.value(row, "score"), parse_score);
        let credits = check.field("credits", table.value(row, "credits"), parse_credits);
        let date = check.field("date", table.value(row, "date"), Date::parse);
        let (Some(iin), Some(discipline), Some(assessment), Some(score), Some(credits), Some(date)) =
            (iin, discipline, assessment, score, credits, date)
        else {
            continue;
        };
        if date > options.today {
            check.fail("date", format!("{date} is in the future"));
            continue;
        }
        let known = transaction
            .query_row(
                "SELECT 1 FROM students WHERE iin = ?1",
                [iin.as_string()],
                |_| Ok(()),
            )
            .optional()?
            .is_some();
        if !known {
            check.fail(
                "iin",
                format!("{iin} is not a student of the roster; import students first"),
            );
            continue;
        }
        let grade = NewGrade {
            student: iin,
            discipline,
            assessment,
            score,
            credits,
            date,
            recorded_by: format!("import:{}", options.source),
        };
        match record(transaction, &grade, now)? {
            Recorded::Added => report.added += 1,
            Recorded::Corrected => report.updated += 1,
            Recorded::Unchanged => report.unchanged += 1,
        }
    }
    Ok(report)
}
