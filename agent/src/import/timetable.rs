//! Timetable export, upserted by date + start + group. Groups and teachers must already
//! exist (a lesson for an unknown group is a typo far more often than a new group); sites
//! are created on first mention, with the address column when the export has one.

use std::collections::HashMap;

use kasip_core::{Date, Discipline, GroupCode, Iin, LessonMode, RoomName, SiteName, TimeOfDay};
use rusqlite::{OptionalExtension, Transaction};

use super::table::{ColumnSpec, Table};
use super::{ImportOptions, ImportReport, RowCheck, RowError};

pub const COLUMNS: &[ColumnSpec] = &[
    ColumnSpec {
        name: "date",
        aliases: &["дата", "күні"],
        required: true,
    },
    ColumnSpec {
        name: "start",
        aliases: &["начало", "басталуы"],
        required: true,
    },
    ColumnSpec {
        name: "end",
        aliases: &["конец", "окончание", "аяқталуы"],
        required: true,
    },
    ColumnSpec {
        name: "group",
        aliases: &["группа", "топ"],
        required: true,
    },
    ColumnSpec {
        name: "discipline",
        aliases: &["дисциплина", "пән"],
        required: true,
    },
    ColumnSpec {
        name: "teacher_iin",
        aliases: &["иин_преподавателя", "оқытушы_жсн"],
        required: true,
    },
    ColumnSpec {
        name: "site",
        aliases: &["корпус", "площадка", "ғимарат"],
        required: false,
    },
    ColumnSpec {
        name: "room",
        aliases: &["аудитория", "кабинет"],
        required: false,
    },
    ColumnSpec {
        name: "mode",
        aliases: &["формат", "режим"],
        required: false,
    },
    ColumnSpec {
        name: "address",
        aliases: &["адрес", "мекенжай"],
        required: false,
    },
];

#[derive(PartialEq)]
struct StoredLesson {
    end_time: String,
    discipline: String,
    teacher_iin: String,
    site_id: Option<i64>,
    room: String,
    mode: String,
}

/// The site's id, created if new. A changed address is an event (synced as a
/// `site_addresses` record), never a silent overwrite: the red flags judge each month by
/// the addresses the site had then.
fn site_id(
    transaction: &Transaction<'_>,
    site: &SiteName,
    address: &str,
    options: &ImportOptions,
    report: &mut ImportReport,
) -> rusqlite::Result<i64> {
    let address_event = |id: i64, previous: Option<&str>| {
        transaction.execute(
            "INSERT INTO site_address_events (site_id, address, previous, at, source)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            rusqlite::params![id, address, previous, options.now, options.source],
        )
    };
    let existing: Option<(i64, String)> = transaction
        .query_row(
            "SELECT id, address FROM sites WHERE name = ?1",
            [site.as_str()],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?;
    match existing {
        Some((id, stored_address)) => {
            if !address.is_empty() && address != stored_address {
                address_event(
                    id,
                    Some(stored_address.as_str()).filter(|stored| !stored.is_empty()),
                )?;
                transaction
                    .execute("UPDATE sites SET address = ?2 WHERE id = ?1", (id, address))?;
            }
            Ok(id)
        }
        None => {
            transaction.execute(
                "INSERT INTO sites (name, address) VALUES (?1, ?2)",
                (site.as_str(), address),
            )?;
            report.sites_created += 1;
            let id = transaction.last_insert_rowid();
            if !address.is_empty() {
                address_event(id, None)?;
            }
            Ok(id)
        }
    }
}

pub fn apply(
    transaction: &Transaction<'_>,
    table: &Table,
    options: &ImportOptions,
    errors: &mut Vec<RowError>,
) -> rusqlite::Result<ImportReport> {
    let mut report = ImportReport::default();
    let mut first_row_of: HashMap<(Date, TimeOfDay, GroupCode), usize> = HashMap::new();
    for row in &table.rows {
        let mut check = RowCheck::new(row.number, errors);
        let date = check.field("date", table.value(row, "date"), Date::parse);
        let start = check.field("start", table.value(row, "start"), TimeOfDay::parse);
        let end = check.field("end", table.value(row, "end"), TimeOfDay::parse);
        let group = check.field("group", table.value(row, "group"), GroupCode::parse);
        let discipline = check.field(
            "discipline",
            table.value(row, "discipline"),
            Discipline::parse,
        );
        let teacher_iin = check.field("teacher_iin", table.value(row, "teacher_iin"), Iin::parse);
        let mode = check.field("mode", table.value(row, "mode"), LessonMode::parse);
        let site = check.optional("site", table.value(row, "site"), SiteName::parse);
        let room = check.optional("room", table.value(row, "room"), RoomName::parse);
        let address = table.value(row, "address");
        if address.chars().count() > 300 {
            check.fail("address", "is longer than 300 characters".into());
        }
        if let (Some(start), Some(end)) = (start, end) {
            if end <= start {
                check.fail("end", format!("{end} is not after the start {start}"));
            }
        }
        if mode == Some(LessonMode::Offline) {
            for (column, is_empty) in [
                ("site", matches!(site, Some(None))),
                ("room", matches!(room, Some(None))),
            ] {
                if is_empty {
                    check.fail(
                        column,
                        "is empty; an offline lesson needs a site and a room".into(),
                    );
                }
            }
        }
        if let (Some(date), Some(start), Some(group)) = (date, start, &group) {
            if let Some(first_row) = first_row_of.insert((date, start, group.clone()), row.number) {
                check.fail(
                    "start",
                    format!(
                        "group {group} already has a lesson at {date} {start} on row {first_row}"
                    ),
                );
            }
        }
        let group_id: Option<i64> = match &group {
            Some(group) => {
                let found = transaction
                    .query_row(
                        "SELECT id FROM study_groups WHERE code = ?1",
                        [group.as_str()],
                        |found| found.get(0),
                    )
                    .optional()?;
                if found.is_none() {
                    check.fail(
                        "group",
                        format!("'{group}' is not a known group; import the students of this group first"),
                    );
                }
                found
            }
            None => None,
        };
        if let Some(teacher_iin) = teacher_iin {
            let known: Option<i64> = transaction
                .query_row(
                    "SELECT 1 FROM teachers WHERE iin = ?1",
                    [teacher_iin.as_string()],
                    |found| found.get(0),
                )
                .optional()?;
            if known.is_none() {
                check.fail(
                    "teacher_iin",
                    format!("no teacher with IIN {teacher_iin}; import teachers first"),
                );
            }
        }
        let (
            Some(date),
            Some(start),
            Some(end),
            Some(group_id),
            Some(discipline),
            Some(teacher_iin),
            Some(mode),
            Some(site),
            Some(room),
        ) = (
            date,
            start,
            end,
            group_id,
            discipline,
            teacher_iin,
            mode,
            site,
            room,
        )
        else {
            continue;
        };
        if check.failed() {
            continue;
        }
        let site_id = match &site {
            Some(site) => Some(site_id(transaction, site, address, options, &mut report)?),
            None => None,
        };
        let incoming = StoredLesson {
            end_time: end.to_string(),
            discipline: discipline.as_str().to_owned(),
            teacher_iin: teacher_iin.as_string(),
            site_id,
            room: room.as_ref().map_or("", RoomName::as_str).to_owned(),
            mode: mode.as_str().to_owned(),
        };
        let key = (date.to_string(), start.to_string(), group_id);
        let stored: Option<StoredLesson> = transaction
            .query_row(
                "SELECT end_time, discipline, teacher_iin, site_id, room, mode FROM lessons
                 WHERE date = ?1 AND start_time = ?2 AND group_id = ?3",
                (&key.0, &key.1, key.2),
                |found| {
                    Ok(StoredLesson {
                        end_time: found.get(0)?,
                        discipline: found.get(1)?,
                        teacher_iin: found.get(2)?,
                        site_id: found.get(3)?,
                        room: found.get(4)?,
                        mode: found.get(5)?,
                    })
                },
            )
            .optional()?;
        match stored {
            Some(stored) if stored == incoming => report.unchanged += 1,
            Some(_) => {
                transaction.execute(
                    "UPDATE lessons SET end_time = ?4, discipline = ?5, teacher_iin = ?6,
                         site_id = ?7, room = ?8, mode = ?9
                     WHERE date = ?1 AND start_time = ?2 AND group_id = ?3",
                    (
                        &key.0,
                        &key.1,
                        key.2,
                        &incoming.end_time,
                        &incoming.discipline,
                        &incoming.teacher_iin,
                        incoming.site_id,
                        &incoming.room,
                        &incoming.mode,
                    ),
                )?;
                report.updated += 1;
            }
            None => {
                transaction.execute(
                    "INSERT INTO lessons (date, start_time, group_id, end_time, discipline,
                         teacher_iin, site_id, room, mode)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                    (
                        &key.0,
                        &key.1,
                        key.2,
                        &incoming.end_time,
                        &incoming.discipline,
                        &incoming.teacher_iin,
                        incoming.site_id,
                        &incoming.room,
                        &incoming.mode,
                    ),
                )?;
                report.added += 1;
            }
        }
    }
    Ok(report)
}
