//! Teachers export: `iin;last_name;first_name;middle_name`, upserted by IIN.

use std::collections::{HashMap, HashSet};

use kasip_core::{Iin, PersonName};
use rusqlite::{OptionalExtension, Transaction};

use super::table::{ColumnSpec, Table};
use super::{ImportReport, RowCheck, RowError};

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
        let iin = check.field("iin", table.value(row, "iin"), Iin::parse);
        let last_name = check.field(
            "last_name",
            table.value(row, "last_name"),
            PersonName::parse,
        );
        let first_name = check.field(
            "first_name",
            table.value(row, "first_name"),
            PersonName::parse,
        );
        let middle_name = check.optional(
            "middle_name",
            table.value(row, "middle_name"),
            PersonName::parse,
        );
        if let Some(iin) = iin {
            if let Some(first_row) = first_row_of.insert(iin, row.number) {
                check.fail(
                    "iin",
                    format!("{iin} is already on row {first_row} of this file"),
                );
            }
        }
        let (Some(iin), Some(last_name), Some(first_name), Some(middle_name)) =
            (iin, last_name, first_name, middle_name)
        else {
            continue;
        };
        if check.failed() {
            continue;
        }
        let middle_name = middle_name.as_ref().map_or("", PersonName::as_str);
        let stored: Option<(String, String, String)> = transaction
            .query_row(
                "SELECT last_name, first_name, middle_name FROM teachers WHERE iin = ?1",
                [iin.as_string()],
                |found| Ok((found.get(0)?, found.get(1)?, found.get(2)?)),
            )
            .optional()?;
        let incoming = (
            last_name.as_str().to_owned(),
            first_name.as_str().to_owned(),
            middle_name.to_owned(),
        );
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
