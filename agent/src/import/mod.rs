//! Imports of LMS exports (students, teachers, timetable, grades): all rows or none.
//!
//! Every row is parsed into domain types and checked against the database inside one
//! transaction; any bad row rolls the whole file back unless `--skip-invalid` was given.

mod grades;
mod students;
mod table;
mod teachers;
mod timetable;

use std::fmt;

use kasip_core::Date;

use crate::store::Store;

/// Which export a file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportKind {
    Students,
    Teachers,
    Timetable,
    /// Grades from the LMS: iin;discipline;assessment;score;credits;date
    Grades,
}

/// One problem with one row (row 1 is the header; `column` is None for whole-row faults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    pub row: usize,
    pub column: Option<String>,
    pub reason: String,
}

impl fmt::Display for RowError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.column {
            Some(column) => write!(
                formatter,
                "row {}, column {column}: {}",
                self.row, self.reason
            ),
            None => write!(formatter, "row {}: {}", self.row, self.reason),
        }
    }
}

/// How an import should treat bad rows and dates it is not given.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// Import the valid rows and list the rest, instead of importing nothing.
    pub skip_invalid: bool,
    /// The college's local date: the effective date of status changes with no date.
    pub today: Date,
    /// Recorded with contingent events: which file or generator they came from.
    pub source: String,
    /// When the import runs (Unix seconds): a site's address change is an event then.
    pub now: i64,
}

/// What an import changed.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ImportReport {
    pub rows: usize,
    pub added: usize,
    pub updated: usize,
    pub unchanged: usize,
    pub groups_created: usize,
    pub sites_created: usize,
    pub contingent_events: usize,
    /// People in the database but not in this export: kept, reported for a human to check.
    pub missing_from_export: Vec<String>,
    /// Rows left out under `--skip-invalid`, as printable messages.
    pub skipped: Vec<String>,
}

/// Why an import changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{} bad row(s); nothing was imported (fix them, or pass --skip-invalid to import the valid rows)", .0.len())]
    Rejected(Vec<RowError>),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Collects per-field errors for one row while parsing its fields.
pub(crate) struct RowCheck<'errors> {
    row: usize,
    errors: &'errors mut Vec<RowError>,
    failed: bool,
}

impl<'errors> RowCheck<'errors> {
    fn new(row: usize, errors: &'errors mut Vec<RowError>) -> Self {
        Self {
            row,
            errors,
            failed: false,
        }
    }

    /// Parses one field, recording "'value' reason" under the column when it fails.
    fn field<T, E: fmt::Display>(
        &mut self,
        column: &str,
        raw: &str,
        parse: impl FnOnce(&str) -> Result<T, E>,
    ) -> Option<T> {
        match parse(raw) {
            Ok(value) => Some(value),
            Err(error) => {
                self.fail(column, format!("'{}' {error}", shorten(raw)));
                None
            }
        }
    }

    /// Like `field`, but an empty value is `Some(None)`.
    fn optional<T, E: fmt::Display>(
        &mut self,
        column: &str,
        raw: &str,
        parse: impl FnOnce(&str) -> Result<T, E>,
    ) -> Option<Option<T>> {
        if raw.is_empty() {
            Some(None)
        } else {
            self.field(column, raw, parse).map(Some)
        }
    }

    fn fail(&mut self, column: &str, reason: String) {
        self.failed = true;
        self.errors.push(RowError {
            row: self.row,
            column: Some(column.to_owned()),
            reason,
        });
    }

    fn failed(&self) -> bool {
        self.failed
    }
}

/// The name columns students and teachers share, parsed.
pub(crate) struct Person {
    pub iin: kasip_core::Iin,
    pub last_name: String,
    pub first_name: String,
    pub middle_name: String,
}

/// Parses `iin`, `last_name`, `first_name` and `middle_name`, and flags an IIN already
/// seen on an earlier row of the file. None if any of them is bad (each is recorded).
pub(crate) fn read_person(
    table: &table::Table,
    row: &table::Row,
    check: &mut RowCheck<'_>,
    first_row_of: &mut std::collections::HashMap<kasip_core::Iin, usize>,
) -> Option<Person> {
    use kasip_core::{Iin, PersonName};
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
            return None;
        }
    }
    Some(Person {
        iin: iin?,
        last_name: last_name?.as_str().to_owned(),
        first_name: first_name?.as_str().to_owned(),
        middle_name: middle_name?
            .as_ref()
            .map_or("", PersonName::as_str)
            .to_owned(),
    })
}

/// Keeps error messages readable when a field holds 10,000 characters.
fn shorten(raw: &str) -> String {
    const SHOWN: usize = 40;
    if raw.chars().count() <= SHOWN {
        raw.to_owned()
    } else {
        let head: String = raw.chars().take(SHOWN).collect();
        format!("{head}…")
    }
}

/// Imports one export. On success the changes are committed; on `Rejected` nothing is.
pub fn import(
    store: &mut Store,
    kind: ImportKind,
    bytes: &[u8],
    options: &ImportOptions,
) -> Result<ImportReport, ImportError> {
    let specs = match kind {
        ImportKind::Students => students::COLUMNS,
        ImportKind::Teachers => teachers::COLUMNS,
        ImportKind::Timetable => timetable::COLUMNS,
        ImportKind::Grades => grades::COLUMNS,
    };
    let table = table::read_table(bytes, specs).map_err(ImportError::Rejected)?;
    let path = store.path().to_owned();
    let sqlite_error = |source| crate::store::StoreError::Sqlite {
        path: path.clone(),
        source,
    };
    let transaction = store
        .connection_mut()
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(sqlite_error)?;
    let mut errors = Vec::new();
    let mut report = match kind {
        ImportKind::Students => students::apply(&transaction, &table, options, &mut errors),
        ImportKind::Teachers => teachers::apply(&transaction, &table, &mut errors),
        ImportKind::Timetable => timetable::apply(&transaction, &table, options, &mut errors),
        ImportKind::Grades => grades::apply(&transaction, &table, options, &mut errors),
    }
    .map_err(sqlite_error)?;
    report.rows = table.rows.len();
    if !errors.is_empty() {
        if !options.skip_invalid {
            return Err(ImportError::Rejected(errors)); // dropping the transaction rolls back
        }
        report.skipped = errors.iter().map(ToString::to_string).collect();
    }
    transaction.commit().map_err(sqlite_error)?;
    Ok(report)
}
