//! Students export, upserted by IIN; status changes become contingent events.

use std::collections::{HashMap, HashSet};

use kasip_core::{parse_yes_no, Date, GroupCode, Iin, StudentStatus};
use rusqlite::{OptionalExtension, Transaction};

use super::table::{ColumnSpec, Table};
use super::{read_person, ImportOptions, ImportReport, RowCheck, RowError};
use crate::clock::unix_now;

pub const COLUMNS: &[ColumnSpec] = &[
    ColumnSpec {
        name: "iin",
        aliases: &["иин", "жсн"],
        required: true,
    },
    ColumnSpec {
        name: "last_name",
        aliases: &["фамилия", "тегі"],
        required: true,
    },
    ColumnSpec {
        name: "first_name",
        aliases: &["имя", "аты"],
        required: true,
    },
    ColumnSpec {
        name: "middle_name",
        aliases: &["отчество", "әкесінің_аты"],
        required: false,
    },
    ColumnSpec {
        name: "group",
        aliases: &["группа", "топ"],
        required: true,
    },
    ColumnSpec {
        name: "beneficiary",
        aliases: &["бюджет", "госзаказ"],
        required: true,
    },
    ColumnSpec {
        name: "status",
        aliases: &["статус"],
        required: false,
    },
    ColumnSpec {
        name: "status_date",
        aliases: &["дата_статуса"],
        required: false,
    },
];

/// A student row as stored, for comparing with the export.
#[derive(PartialEq)]
struct StoredStudent {
    last_name: String,
    first_name: String,
    middle_name: String,
    group_id: i64,
    beneficiary: bool,
    status: String,
    status_date: Option<String>,
}

fn group_id(
    transaction: &Transaction<'_>,
    code: &GroupCode,
    report: &mut ImportReport,
) -> rusqlite::Result<i64> {
    let existing: Option<i64> = transaction
        .query_row(
            "SELECT id FROM study_groups WHERE code = ?1",
            [code.as_str()],
            |row| row.get(0),
        )
        .optional()?;
    if let Some(id) = existing {
        return Ok(id);
    }
    transaction.execute(
        "INSERT INTO study_groups (code) VALUES (?1)",
        [code.as_str()],
    )?;
    report.groups_created += 1;
    Ok(transaction.last_insert_rowid())
}

pub fn apply(
    transaction: &Transaction<'_>,
    table: &Table,
    options: &ImportOptions,
    errors: &mut Vec<RowError>,
) -> rusqlite::Result<ImportReport> {
    let mut report = ImportReport::default();
    let mut first_row_of: HashMap<Iin, usize> = HashMap::new();
    for row in &table.rows {
        let mut check = RowCheck::new(row.number, errors);
        let person = read_person(table, row, &mut check, &mut first_row_of);
        let group = check.field("group", table.value(row, "group"), GroupCode::parse);
        let beneficiary = check.field("beneficiary", table.value(row, "beneficiary"), parse_yes_no);
        let status = check.field("status", table.value(row, "status"), StudentStatus::parse);
        let status_date =
            check.optional("status_date", table.value(row, "status_date"), Date::parse);
        let (Some(person), Some(group), Some(beneficiary), Some(status), Some(status_date)) =
            (person, group, beneficiary, status, status_date)
        else {
            continue;
        };
        if check.failed() {
            continue;
        }
        let iin = person.iin;
        let incoming = StoredStudent {
            last_name: person.last_name,
            first_name: person.first_name,
            middle_name: person.middle_name,
            group_id: group_id(transaction, &group, &mut report)?,
            beneficiary,
            status: status.as_str().to_owned(),
            status_date: status_date.map(|date| date.to_string()),
        };
        let stored: Option<StoredStudent> = transaction
            .query_row(
                "SELECT last_name, first_name, middle_name, group_id, beneficiary, status, status_date
                 FROM students WHERE iin = ?1",
                [iin.as_string()],
                |found| {
                    Ok(StoredStudent {
                        last_name: found.get(0)?,
                        first_name: found.get(1)?,
                        middle_name: found.get(2)?,
                        group_id: found.get(3)?,
                        beneficiary: found.get(4)?,
                        status: found.get(5)?,
                        status_date: found.get(6)?,
                    })
                },
            )
            .optional()?;
        let contingent_change = match &stored {
            Some(stored) if *stored == incoming => {
                report.unchanged += 1;
                None
            }
            Some(stored) => {
                transaction.execute(
                    "UPDATE students SET last_name = ?2, first_name = ?3, middle_name = ?4,
                         group_id = ?5, beneficiary = ?6, status = ?7, status_date = ?8
                     WHERE iin = ?1",
                    (
                        iin.as_string(),
                        &incoming.last_name,
                        &incoming.first_name,
                        &incoming.middle_name,
                        incoming.group_id,
                        incoming.beneficiary,
                        &incoming.status,
                        &incoming.status_date,
                    ),
                )?;
                report.updated += 1;
                (stored.status != incoming.status).then(|| ("status", Some(stored.status.clone())))
            }
            None => {
                transaction.execute(
                    "INSERT INTO students (iin, last_name, first_name, middle_name, group_id,
                         beneficiary, status, status_date)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    (
                        iin.as_string(),
                        &incoming.last_name,
                        &incoming.first_name,
                        &incoming.middle_name,
                        incoming.group_id,
                        incoming.beneficiary,
                        &incoming.status,
                        &incoming.status_date,
                    ),
                )?;
                report.added += 1;
                Some(("enrolled", None))
            }
        };
        if let Some((change, previous_status)) = contingent_change {
            let effective_date = status_date.unwrap_or(options.today).to_string();
            transaction.execute(
                "INSERT INTO contingent_events
                     (student_iin, change, status, previous_status, effective_date, recorded_at, source)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                (
                    iin.as_string(),
                    change,
                    &incoming.status,
                    previous_status,
                    effective_date,
                    unix_now(),
                    &options.source,
                ),
            )?;
            report.contingent_events += 1;
        }
    }
    let in_file: HashSet<String> = first_row_of.keys().map(Iin::as_string).collect();
    let mut statement = transaction.prepare(
        "SELECT s.iin, s.last_name, s.first_name, g.code
         FROM students s JOIN study_groups g ON g.id = s.group_id
         WHERE s.status NOT IN ('expelled', 'deceased')
         ORDER BY g.code, s.last_name, s.iin",
    )?;
    let stored = statement.query_map([], |found| {
        Ok((
            found.get::<_, String>(0)?,
            found.get::<_, String>(1)?,
            found.get::<_, String>(2)?,
            found.get::<_, String>(3)?,
        ))
    })?;
    for student in stored {
        let (iin, last_name, first_name, group) = student?;
        if !in_file.contains(&iin) {
            report
                .missing_from_export
                .push(format!("{iin} {last_name} {first_name} ({group})"));
        }
    }
    Ok(report)
}
