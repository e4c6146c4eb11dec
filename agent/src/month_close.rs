//! Month close (design §5.6): freeze the month, total it per student, and write a signed
//! statement plus human reports. A month below the rule is stated non-compliant with its
//! reasons, never altered to pass.
//!
//! The statement is a JWS (design §5.4) over RFC 8785 canonical JSON, signed with the
//! agent's identity key. It is stored in `month_closes`, from where the outbox seals it
//! into a `month_close` batch, and written to `DATA_DIR/statements/` for people.

use std::collections::HashMap;
use std::fs;
use std::path::PathBuf;

use askama::Template;
use kasip_certs::jws::{protected_header, sign_compact};
use kasip_certs::DeviceKey;
use kasip_core::{per_mille_text, to_canonical_json, Date, Lang, Month, Sentence, Text};
use rusqlite::OptionalExtension;
use serde::Serialize;
use serde_json::json;

use crate::coverage::is_qr_method;
use crate::data_dir::DataDir;
use crate::error::AgentError;
use crate::red_flags::{red_flags_for_month, RedFlagSettings};
use crate::store::Store;

/// What a month close reads of the college's settings.
#[derive(Debug, Clone)]
pub struct MonthCloseSettings {
    pub college_bin: kasip_core::Bin,
    pub college_name: String,
    /// The flags the statement lists, with the coverage rule they and the totals use.
    pub red_flags: RedFlagSettings,
}

/// One beneficiary's month in the statement.
#[derive(Debug, Clone, Serialize)]
pub struct StudentTotals {
    pub iin: String,
    pub name: String,
    pub group: String,
    pub lessons_scheduled: u64,
    pub present: u64,
    pub late: u64,
    pub absent: u64,
    pub excused: u64,
    pub qr_marks: u64,
    pub qr_tracked: bool,
}

/// What `close` wrote.
#[derive(Debug)]
pub struct MonthClosed {
    pub compliant: bool,
    pub reasons: Vec<Sentence>,
    pub statement: PathBuf,
    pub html: PathBuf,
    pub csv: PathBuf,
    pub xlsx: PathBuf,
    pub students: usize,
}

fn failure(store: &Store) -> impl Fn(rusqlite::Error) -> AgentError + '_ {
    move |source| AgentError::from(store.error(source))
}

/// Who closes which month, when.
pub struct CloseRequest<'a> {
    pub month: Month,
    /// The college's local date, to refuse a month that has not ended.
    pub today: Date,
    pub now: i64,
    /// Why a month is closed before its end; required then.
    pub force_reason: Option<&'a str>,
    pub closed_by: &'a str,
    /// The language of the HTML, CSV and XLSX reports (the signed statement is English).
    pub lang: Lang,
}

/// Closes a month. Refuses a month already closed, and one not yet ended unless a reason
/// to force it is given.
pub fn close(
    store: &Store,
    data_dir: &DataDir,
    settings: &MonthCloseSettings,
    key: &DeviceKey,
    request: &CloseRequest<'_>,
) -> Result<MonthClosed, AgentError> {
    let CloseRequest {
        month,
        today,
        now,
        force_reason,
        lang,
        ..
    } = *request;
    let connection = store.connection();
    let closed_at: Option<i64> = connection
        .query_row(
            "SELECT closed_at FROM month_closes WHERE month = ?1",
            [month.to_string()],
            |row| row.get(0),
        )
        .optional()
        .map_err(failure(store))?;
    if closed_at.is_some() {
        return Err(AgentError::Refused(format!(
            "{month} is already closed; later corrections are recorded as adjustments"
        )));
    }
    if today <= month.last_day() && force_reason.is_none_or(|reason| reason.trim().is_empty()) {
        return Err(AgentError::Usage(format!(
            "{month} has not ended yet (today is {today}); to close it early pass --force --reason TEXT"
        )));
    }
    // The national policy tightens the college's own thresholds; the statement names it.
    let (rules, policy) = crate::coverage::rules_in_force(connection, &settings.red_flags.coverage)
        .map_err(failure(store))?;
    // Who counts and their present/QR counts, once: the statement, the reports and the
    // figures frozen for the closed month all come from these.
    let frozen =
        crate::coverage::student_months(connection, month, None, &rules).map_err(failure(store))?;
    let coverage = crate::coverage::report_of(month, &frozen, &rules);
    let flags = red_flags_for_month(connection, month, today, &settings.red_flags)
        .map_err(failure(store))?;
    let students = student_totals(store, month, &frozen, &rules)?;

    let mut reasons = Vec::new();
    if !coverage.college.holds {
        reasons.push(Sentence::new(
            Text::CloseCollegeBelow,
            &[
                (
                    "coverage",
                    &per_mille_text(coverage.college.coverage_per_mille),
                ),
                (
                    "minimum",
                    &per_mille_text(Some(u64::from(rules.min_coverage.thousandths()))),
                ),
            ],
        ));
    }
    for group in coverage.groups.iter().filter(|group| !group.holds) {
        reasons.push(Sentence::new(
            Text::CloseGroupBelow,
            &[
                ("group", &group.scope),
                ("coverage", &per_mille_text(group.coverage_per_mille)),
            ],
        ));
    }
    let compliant = coverage.college.holds;

    let payload = json!({
        "v": 1,
        "kind": "month_close",
        "agent": key.thumbprint(),
        "college_bin": settings.college_bin.to_string(),
        "month": month.to_string(),
        "created": now,
        "compliant": compliant,
        "reasons": reasons,
        "forced_reason": force_reason,
        "min_coverage_per_mille": rules.min_coverage.thousandths(),
        "student_qr_share_per_mille": rules.student_qr_share.thousandths(),
        "typed_code_counts_as_qr": rules.typed_code_counts_as_qr,
        "policy": match &policy {
            Some(policy) => json!({"source": "registry", "issued_at": policy.issued_at,
                "min_coverage_per_mille": policy.min_coverage,
                "student_qr_share_per_mille": policy.student_qr_share,
                "typed_counts_as_qr": policy.typed_counts_as_qr}),
            None => json!({"source": "local configuration (no national policy pulled yet)"}),
        },
        "coverage": serde_json::to_value(&coverage).map_err(AgentError::json("the JSON output"))?,
        "students": serde_json::to_value(&students).map_err(AgentError::json("the JSON output"))?,
        "red_flags": serde_json::to_value(&flags).map_err(AgentError::json("the JSON output"))?,
    });
    let canonical = to_canonical_json(&payload)
        .map_err(|error| AgentError::Refused(format!("statement: {error}")))?;
    let jws = sign_compact(key, &protected_header(key), canonical.as_bytes());

    let write = |kind: &str, contents: &[u8]| -> Result<PathBuf, AgentError> {
        let (folder, name) = close_file(month, kind).expect("a kind of close file");
        let dir = data_dir.root().join(folder);
        fs::create_dir_all(&dir).map_err(|source| AgentError::Io {
            action: "create",
            path: dir.clone(),
            source,
        })?;
        let path = dir.join(name);
        // Whole and on disk before the database records the close; personal data, so
        // the service's user's only.
        kasip_certs::process::write_file_atomically(&path, contents, kasip_certs::KEY_FILE_MODE)
            .map_err(|source| AgentError::Io {
                action: "write",
                path: path.clone(),
                source,
            })?;
        Ok(path)
    };
    let statement = write("jws", jws.as_bytes())?;
    let table = students_table(month, lang, &students);
    let csv = write("csv", table.to_csv().as_bytes())?;
    let xlsx_bytes = table
        .to_xlsx()
        .map_err(|error| AgentError::Refused(format!("XLSX report: {error}")))?;
    let xlsx = write("xlsx", &xlsx_bytes)?;
    let html = write(
        "html",
        MonthCloseReport {
            lang,
            college: &settings.college_name,
            month,
            compliant,
            reasons: &reasons,
            columns: STUDENT_COLUMNS,
            students: &students,
            flags: &flags,
        }
        .render()
        .map_err(|error| AgentError::Refused(format!("HTML report: {error}")))?
        .as_bytes(),
    )?;
    record_close(connection, request, compliant, &statement, &jws, &frozen)
        .map_err(failure(store))?;
    Ok(MonthClosed {
        compliant,
        reasons,
        statement,
        html,
        csv,
        xlsx,
        students: students.len(),
    })
}

/// The close and the figures it froze, in one transaction.
fn record_close(
    connection: &rusqlite::Connection,
    request: &CloseRequest<'_>,
    compliant: bool,
    statement: &std::path::Path,
    jws: &str,
    frozen: &[kasip_core::StudentMonth],
) -> rusqlite::Result<()> {
    let CloseRequest {
        month,
        now,
        closed_by,
        force_reason,
        ..
    } = *request;
    let transaction =
        rusqlite::Transaction::new_unchecked(connection, rusqlite::TransactionBehavior::Immediate)?;
    transaction.execute(
        "INSERT INTO month_closes (month, closed_at, closed_by, forced_reason, compliant, statement_path, statement)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        rusqlite::params![month.to_string(), now, closed_by, force_reason, compliant, statement.display().to_string(), jws],
    )?;
    let mut insert = transaction.prepare(
        "INSERT INTO closed_month_students (month, student_iin, name, group_code, present, qr)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for student in frozen {
        insert.execute(rusqlite::params![
            month.to_string(),
            student.iin,
            student.name,
            student.group,
            student.present as i64,
            student.qr as i64
        ])?;
    }
    drop(insert);
    transaction.commit()
}

fn student_totals(
    store: &Store,
    month: Month,
    months: &[kasip_core::StudentMonth],
    rules: &crate::coverage::CoverageRules,
) -> Result<Vec<StudentTotals>, AgentError> {
    let connection = store.connection();
    let (first, last) = (month.first_day().to_string(), month.last_day().to_string());
    let mut scheduled: HashMap<String, u64> = HashMap::new();
    let mut statement = connection
        .prepare(
            "SELECT s.iin, COUNT(l.id) FROM students s JOIN lessons l ON l.group_id = s.group_id
             WHERE l.date BETWEEN ?1 AND ?2 GROUP BY s.iin",
        )
        .map_err(failure(store))?;
    let rows = statement
        .query_map([&first, &last], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
        })
        .map_err(failure(store))?;
    for row in rows {
        let (iin, count) = row.map_err(failure(store))?;
        scheduled.insert(iin, count as u64);
    }
    let mut by_status: HashMap<(String, String), u64> = HashMap::new();
    let mut marks = connection
        .prepare(
            "SELECT e.student_iin, e.status, e.method FROM attendance_events e JOIN lessons l ON l.id = e.lesson_id
             WHERE l.date BETWEEN ?1 AND ?2
               AND e.id = (SELECT MAX(x.id) FROM attendance_events x
                           WHERE x.lesson_id = e.lesson_id AND x.student_iin = e.student_iin)",
        )
        .map_err(failure(store))?;
    let rows = marks
        .query_map([&first, &last], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
            ))
        })
        .map_err(failure(store))?;
    for row in rows {
        let (iin, status, method) = row.map_err(failure(store))?;
        *by_status.entry((iin.clone(), status)).or_default() += 1;
        if is_qr_method(&method, rules) {
            *by_status.entry((iin, "qr".to_owned())).or_default() += 1;
        }
    }
    let count = |iin: &str, status: &str| {
        by_status
            .get(&(iin.to_owned(), status.to_owned()))
            .copied()
            .unwrap_or(0)
    };
    Ok(months
        .iter()
        .map(|student| StudentTotals {
            lessons_scheduled: scheduled.get(&student.iin).copied().unwrap_or(0),
            present: count(&student.iin, "present"),
            late: count(&student.iin, "late"),
            absent: count(&student.iin, "absent"),
            excused: count(&student.iin, "excused"),
            qr_marks: student.qr,
            qr_tracked: student.is_qr_tracked(rules.student_qr_share),
            iin: student.iin.clone(),
            name: student.name.clone(),
            group: student.group.clone(),
        })
        .collect())
}

/// The report's columns, in order.
const STUDENT_COLUMNS: &[Text] = &[
    Text::ColIin,
    Text::ColName,
    Text::ColGroup,
    Text::ColLessonsScheduled,
    Text::ColPresent,
    Text::ColLate,
    Text::ColAbsent,
    Text::ColExcused,
    Text::ColQrMarks,
    Text::ColQrTracked,
];

/// The per-student totals as a table, for the CSV and XLSX reports.
fn students_table(month: Month, lang: Lang, students: &[StudentTotals]) -> crate::export::Table {
    let yes_no = |yes: bool| lang.text(if yes { Text::AnswerYes } else { Text::AnswerNo });
    crate::export::Table::headed(
        format!("month close {month}"),
        lang,
        STUDENT_COLUMNS,
        students
            .iter()
            .map(|student| {
                vec![
                    student.iin.clone().into(),
                    student.name.clone().into(),
                    student.group.clone().into(),
                    student.lessons_scheduled.into(),
                    student.present.into(),
                    student.late.into(),
                    student.absent.into(),
                    student.excused.into(),
                    student.qr_marks.into(),
                    yes_no(student.qr_tracked).into(),
                ]
            })
            .collect(),
    )
}

/// The HTML report an admin opens or prints.
#[derive(Template)]
#[template(path = "month_close_report.html")]
struct MonthCloseReport<'a> {
    lang: Lang,
    college: &'a str,
    month: Month,
    compliant: bool,
    reasons: &'a [Sentence],
    columns: &'a [Text],
    students: &'a [StudentTotals],
    flags: &'a [crate::red_flags::RedFlag],
}

/// A closed month as pages show it: when, by whom, and whether it met the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClosedMonth {
    pub closed_at: i64,
    pub closed_by: String,
    pub compliant: bool,
}

/// `month`'s close, if it is closed.
pub fn closed_month(
    connection: &rusqlite::Connection,
    month: Month,
) -> rusqlite::Result<Option<ClosedMonth>> {
    connection
        .query_row(
            "SELECT closed_at, closed_by, compliant FROM month_closes WHERE month = ?1",
            [month.to_string()],
            |row| {
                Ok(ClosedMonth {
                    closed_at: row.get(0)?,
                    closed_by: row.get(1)?,
                    compliant: row.get(2)?,
                })
            },
        )
        .optional()
}

/// The files a close wrote, by kind (`html`, `csv`, `xlsx` reports; `jws`, the signed
/// statement): the folder under the data dir and the file name. None for another kind.
pub fn close_file(month: Month, kind: &str) -> Option<(&'static str, String)> {
    let folder = match kind {
        "html" | "csv" | "xlsx" => "reports",
        "jws" => "statements",
        _ => return None,
    };
    Some((folder, format!("month-close-{month}.{kind}")))
}
