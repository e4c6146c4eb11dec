//! Reading an LMS export as a table: encoding, delimiter, header names, row numbers.
//!
//! Excel in ru-KZ saves `;`-separated files, often with a UTF-8 BOM; other LMSes write
//! `,`. Header names may be English or Russian. Row numbers are the spreadsheet's: the
//! header is row 1.

use std::collections::HashMap;

use super::RowError;

/// One column an import understands: its canonical name and the headers that mean it.
pub struct ColumnSpec {
    pub name: &'static str,
    /// Lower-case header spellings accepted besides `name` (Russian first).
    pub aliases: &'static [&'static str],
    pub required: bool,
}

/// A parsed export: rows of trimmed text addressed by canonical column name.
pub struct Table {
    columns: HashMap<&'static str, usize>,
    pub rows: Vec<Row>,
}

pub struct Row {
    /// The row number a person sees in the spreadsheet (header = 1).
    pub number: usize,
    fields: Vec<String>,
}

impl Table {
    /// The trimmed value of `column` in `row`; empty when the column is absent.
    pub fn value<'row>(&self, row: &'row Row, column: &str) -> &'row str {
        self.columns
            .get(column)
            .and_then(|index| row.fields.get(*index))
            .map_or("", |value| value.trim())
    }
}

fn file_error(row: usize, reason: String) -> Vec<RowError> {
    vec![RowError {
        row,
        column: None,
        reason,
    }]
}

/// Picks `;` or `,` by counting them in the header line outside quotes.
fn detect_delimiter(header_line: &str) -> u8 {
    let mut in_quotes = false;
    let (mut semicolons, mut commas) = (0, 0);
    for character in header_line.chars() {
        match character {
            '"' => in_quotes = !in_quotes,
            ';' if !in_quotes => semicolons += 1,
            ',' if !in_quotes => commas += 1,
            _ => {}
        }
    }
    if semicolons >= commas && semicolons > 0 {
        b';'
    } else {
        b','
    }
}

fn normalise_header(header: &str) -> String {
    header.trim().to_lowercase().replace([' ', '-'], "_")
}

/// Parses `bytes` as an export with the given columns. File-level problems (not text,
/// empty, missing columns) come back as errors on row 1 or the row where they appear.
pub fn read_table(bytes: &[u8], specs: &[ColumnSpec]) -> Result<Table, Vec<RowError>> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let text = std::str::from_utf8(bytes).map_err(|error| {
        let row = bytes[..error.valid_up_to()]
            .iter()
            .filter(|byte| **byte == b'\n')
            .count()
            + 1;
        file_error(
            row,
            "is not UTF-8 text; in Excel choose Save As → \"CSV UTF-8 (comma delimited)\"".into(),
        )
    })?;
    if let Some(offset) = text.find('\0') {
        let row = text[..offset].matches('\n').count() + 1;
        return Err(file_error(
            row,
            "contains NUL bytes, so it is a binary file, not a CSV export".into(),
        ));
    }
    let header_line = text.lines().find(|line| !line.trim().is_empty());
    let Some(header_line) = header_line else {
        let expected: Vec<_> = specs.iter().map(|spec| spec.name).collect();
        return Err(file_error(
            1,
            format!(
                "the file is empty; it needs a header row such as {}",
                expected.join(";")
            ),
        ));
    };
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(detect_delimiter(header_line))
        .has_headers(false)
        .flexible(true)
        .from_reader(text.as_bytes());
    let mut records = reader.records();

    let header = match records.next() {
        Some(Ok(header)) => header,
        Some(Err(error)) => return Err(file_error(1, format!("unreadable header: {error}"))),
        None => return Err(file_error(1, "the file has no header row".into())),
    };
    let mut columns = HashMap::new();
    let mut errors = Vec::new();
    for (index, raw_header) in header.iter().enumerate() {
        let normalised = normalise_header(raw_header);
        let Some(spec) = specs
            .iter()
            .find(|spec| spec.name == normalised || spec.aliases.contains(&normalised.as_str()))
        else {
            continue; // LMS exports carry extra columns; ignoring them is expected
        };
        if columns.insert(spec.name, index).is_some() {
            errors.push(RowError {
                row: 1,
                column: Some(spec.name.to_owned()),
                reason: format!("column '{}' appears twice in the header", raw_header.trim()),
            });
        }
    }
    for spec in specs.iter().filter(|spec| spec.required) {
        if !columns.contains_key(spec.name) {
            let russian = spec
                .aliases
                .first()
                .map_or(String::new(), |alias| format!(" (or '{alias}')"));
            errors.push(RowError {
                row: 1,
                column: Some(spec.name.to_owned()),
                reason: format!(
                    "required column '{}'{russian} is missing from the header",
                    spec.name
                ),
            });
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }

    let header_width = header.len();
    let mut rows = Vec::new();
    for record in records {
        let record = match record {
            Ok(record) => record,
            Err(error) => {
                let row = error
                    .position()
                    .map_or(0, |position| position.line() as usize);
                errors.push(RowError {
                    row,
                    column: None,
                    reason: format!("cannot be read as CSV: {error}"),
                });
                continue;
            }
        };
        let number = record
            .position()
            .map_or(0, |position| position.line() as usize);
        if record.iter().all(|field| field.trim().is_empty()) {
            continue; // spreadsheets leave rows of bare delimiters at the end
        }
        if record.len() > header_width {
            errors.push(RowError {
                row: number,
                column: None,
                reason: format!(
                    "has {} fields but the header has {header_width}; check for an unquoted delimiter",
                    record.len()
                ),
            });
            continue;
        }
        rows.push(Row {
            number,
            fields: record.iter().map(str::to_owned).collect(),
        });
    }
    if errors.is_empty() {
        Ok(Table { columns, rows })
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPECS: &[ColumnSpec] = &[
        ColumnSpec {
            name: "iin",
            aliases: &["иин"],
            required: true,
        },
        ColumnSpec {
            name: "last_name",
            aliases: &["фамилия"],
            required: true,
        },
        ColumnSpec {
            name: "note",
            aliases: &["примечание"],
            required: false,
        },
    ];

    #[test]
    fn bom_semicolons_russian_headers_and_quotes() {
        let text = "\u{feff}ИИН;Фамилия;Примечание\n900101300017;\"Әлі; қызы\";x\n";
        let table = read_table(text.as_bytes(), SPECS).expect("table");
        assert_eq!(table.rows.len(), 1);
        let row = &table.rows[0];
        assert_eq!(row.number, 2);
        assert_eq!(table.value(row, "iin"), "900101300017");
        assert_eq!(table.value(row, "last_name"), "Әлі; қызы");
    }

    #[test]
    fn commas_and_multiline_fields_keep_spreadsheet_row_numbers() {
        let text = "iin,last_name\n1,\"two\nlines\"\n3,c\n";
        let table = read_table(text.as_bytes(), SPECS).expect("table");
        assert_eq!(table.rows[0].number, 2);
        assert_eq!(table.rows[1].number, 4);
        assert_eq!(table.value(&table.rows[1], "note"), "");
    }

    #[test]
    fn file_level_problems() {
        let missing = read_table(b"iin;note\n1;2\n", SPECS)
            .err()
            .expect("missing column");
        assert_eq!(missing[0].column.as_deref(), Some("last_name"));
        let empty = read_table(b"\xEF\xBB\xBF \n", SPECS).err().expect("empty");
        assert!(empty[0].reason.contains("empty"));
        let garbage = read_table(b"iin;last_name\n\xff\xfe\x00\x01", SPECS)
            .err()
            .expect("binary");
        assert_eq!(garbage[0].row, 2);
        let nul = read_table(b"iin;last_name\n1;\x00\n", SPECS)
            .err()
            .expect("nul");
        assert!(nul[0].reason.contains("binary"));
        let wide = read_table(b"iin;last_name\n1;2;3\n", SPECS)
            .err()
            .expect("too wide");
        assert_eq!(wide[0].row, 2);
    }
}
