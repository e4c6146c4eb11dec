//! Teachers export: `iin;last_name;first_name;middle_name`, upserted by IIN.

use std::collections::{HashMap, HashSet};

use kasip_core::Iin;
use rusqlite::{OptionalExtension, Transaction};

use super::table::{ColumnSpec, Table};
use super::{read_person, ImportReport, RowCheck, RowError};

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
];

pub fn apply(
    transaction: &Transaction<'_>,
    table: &Table,
    errors: &mut Vec<RowError>,
) -> rusqlite::Result<ImportReport> {
    let mut report = ImportReport::default();
    let mut first_row_of: HashMap<Iin, usize> = HashMap::new();
    for row in &table.rows {
        let mut check = RowCheck::new(row.number, errors);
        let Some(person) = read_person(table, row, &mut check, &mut first_row_of) else {
            continue;
        };
        let iin = person.iin;
        let stored: Option<(String, String, String)> = transaction
            .query_row(
                "SELECT last_name, first_name, middle_name FROM teachers WHERE iin = ?1",
                [iin.as_string()],
                |found| Ok((found.get(0)?, found.get(1)?, found.get(2)?)),
            )
            .optional()?;
        let incoming = (person.last_name, person.first_name, person.middle_name);
        match stored {
            Some(stored) if stored == incoming => report.unchanged += 1,
            Some(_) => {
                transaction.execute(
                    "UPDATE teachers SET last_name = ?2, first_name = ?3, middle_name = ?4 WHERE iin = ?1",
                    (iin.as_string(), &incoming.0, &incoming.1, &incoming.2),
                )?;
                report.updated += 1;
            }
            None => {
                transaction.execute(
                    "INSERT INTO teachers (iin, last_name, first_name, middle_name) VALUES (?1, ?2, ?3, ?4)",
                    (iin.as_string(), &incoming.0, &incoming.1, &incoming.2),
                )?;
                report.added += 1;
            }
        }
    }
    let in_file: HashSet<String> = first_row_of.keys().map(Iin::as_string).collect();
    let mut statement = transaction
        .prepare("SELECT iin, last_name, first_name FROM teachers ORDER BY last_name, iin")?;
    let stored = statement.query_map([], |found| {
        Ok((
            found.get::<_, String>(0)?,
            found.get::<_, String>(1)?,
            found.get::<_, String>(2)?,
        ))
    })?;
    for teacher in stored {
        let (iin, last_name, first_name) = teacher?;
        if !in_file.contains(&iin) {
            report
                .missing_from_export
                .push(format!("{iin} {last_name} {first_name}"));
        }
    }
    Ok(report)
}
