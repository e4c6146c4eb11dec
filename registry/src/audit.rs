//! The month audit: what only a college's whole month of evidence shows. It runs when the
//! college's signed month-close statement arrives (in the receiving transaction, after
//! the month's attendance, contingent and binding batches, which the agent seals first)
//! and again on demand (`kasip-registry audit`):
//!
//! - the 50% rule recomputed from the records the registry holds, with the **national**
//!   thresholds it serves, over the registry's own beneficiary list, and compared with
//!   what the statement says (totals, beneficiaries, coverage, compliance);
//! - the statistical flags: check-in bursts, binding bursts, hand-mark share per teacher
//!   and per student (thresholds in `audit_thresholds`, `kasip-registry set-thresholds`).
//!
//! The registry's figure is stored in `month_figures`; its pages show it, not the
//! statement's.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::db::{params, Db, DbResult};
use kasip_core::batch::{BindingRecord, ContingentRecord};
use kasip_core::chain::EntryKind;
use kasip_core::{coverage_of, CollegeTimezone, Date, Month, PerMille, StudentMonth};
use serde::{Deserialize, Serialize};

use crate::timeline::Finding;

/// The agent's demo college (`kasip-agent`'s demo roster).
const DEMO_BIN: &str = "090640001233";

/// The statistical flags' thresholds, configurable by the registry's operator. The
/// defaults are the agent's own (its red flags), so a college sees what the registry sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Thresholds {
    /// Distinct phones checking in to one lesson within `check_in_burst_secs`.
    pub check_in_burst: u64,
    pub check_in_burst_secs: i64,
    /// Phones bound within `binding_burst_secs` (codes handed out in class come slower).
    pub binding_burst: u64,
    pub binding_burst_secs: i64,
    /// A teacher's share of hand marks above the college's median by more than this
    /// (thousandths); a student's above their classmates' by more than this.
    pub hand_share_margin_per_mille: u64,
    /// Teachers with fewer present marks in the month are not compared.
    pub hand_share_min_marks: u64,
    /// Students with fewer present marks in the month are not compared.
    pub hand_share_min_student_marks: u64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            check_in_burst: 10,
            check_in_burst_secs: 3,
            binding_burst: 10,
            binding_burst_secs: 300,
            hand_share_margin_per_mille: 300,
            hand_share_min_marks: 20,
            hand_share_min_student_marks: 10,
        }
    }
}

impl Thresholds {
    pub fn read(connection: &Db) -> DbResult<Self> {
        let stored: Option<String> = connection.query_opt(
            "SELECT thresholds FROM audit_thresholds WHERE id = 1",
            params![],
            |row| row.get(0),
        )?;
        // Written only by `write`, from this type; fields an older build did not write
        // take their defaults (`serde(default)`).
        Ok(stored
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_default())
    }

    pub fn write(&self, connection: &Db, now: i64) -> DbResult<()> {
        let text = serde_json::to_string(self).unwrap_or_default();
        connection.execute(
            "INSERT INTO audit_thresholds (id, thresholds, updated_at) VALUES (1, ?1, ?2)
             ON CONFLICT (id) DO UPDATE SET thresholds = ?1, updated_at = ?2",
            params![text, now],
        )?;
        Ok(())
    }
}

/// The national policy as the registry serves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct NationalPolicy {
    pub min_coverage_per_mille: u64,
    pub student_qr_share_per_mille: u64,
    pub typed_counts_as_qr: bool,
}

impl NationalPolicy {
    pub fn read(connection: &Db) -> DbResult<Self> {
        connection.query_one(
            "SELECT min_coverage, student_qr_share, typed_counts_as_qr FROM policy WHERE id = 1",
            params![],
            |row| {
                Ok(Self {
                    min_coverage_per_mille: row.get(0)?,
                    student_qr_share_per_mille: row.get(1)?,
                    typed_counts_as_qr: row.get(2)?,
                })
            },
        )
    }
}

/// The registry's own figure for a college's month.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MonthFigures {
    pub month: String,
    /// Where the beneficiaries came from: `registry` (its own list) or `statement` (the
    /// registry holds no list for the college, so the statement's students are taken).
    pub beneficiaries_from: String,
    pub beneficiaries: u64,
    pub qr_tracked: u64,
    pub coverage_per_mille: Option<u64>,
    pub compliant: bool,
    pub groups: Vec<GroupFigures>,
    pub min_coverage_per_mille: u64,
    pub student_qr_share_per_mille: u64,
    /// What the college's statement said, for comparison.
    pub stated_coverage_per_mille: Option<u64>,
    pub stated_compliant: Option<bool>,
    /// Whether only passkey-verified check-ins counted as QR (`qr_requires_passkey`).
    #[serde(default)]
    pub qr_requires_passkey: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct GroupFigures {
    pub group: String,
    pub beneficiaries: u64,
    pub qr_tracked: u64,
    pub coverage_per_mille: Option<u64>,
    pub compliant: bool,
}

/// A student's month as the statement lists it (the fields the registry checks).
#[derive(Debug, Deserialize)]
struct StatedStudent {
    iin: String,
    #[serde(default)]
    group: String,
    present: u64,
    late: u64,
    qr_marks: u64,
}

/// What the audit reads of a verified statement.
pub struct Statement {
    record_id: u64,
    students: Vec<StatedStudent>,
    coverage_per_mille: Option<u64>,
    compliant: bool,
    min_coverage: Option<u64>,
    student_qr_share: Option<u64>,
    typed_counts_as_qr: bool,
}

/// The statement of `bin`'s `month` whose signature verifies under one of the college's
/// agents' keys (enrolment or rotated): the latest, if several arrived.
fn statement_of(connection: &Db, bin: &str, month: &str) -> DbResult<Option<Statement>> {
    let keys: Vec<Vec<u8>> = connection.query(
        "SELECT k.public_key FROM agent_keys k JOIN agents a ON a.kid = k.agent WHERE a.bin = ?1",
        params![bin],
        |row| row.get(0),
    )?;
    // PostgreSQL keeps a month's statement in that month's partition.
    let bodies: Vec<(u64, String)> = connection.query(
        match connection.engine() {
            crate::db::Engine::Sqlite => {
                "SELECT record_id, body FROM records WHERE bin = ?1 AND kind = 'month_close'
                 AND json_extract(body, '$.month') = ?2 ORDER BY record_id DESC"
            }
            crate::db::Engine::Postgres => {
                "SELECT record_id, body FROM records WHERE bin = ?1 AND kind = 'month_close'
                 AND month = ?2 ORDER BY record_id DESC"
            }
        },
        params![bin, month],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
    for (record_id, body) in bodies {
        let Some(jws) = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|record| record["statement"].as_str().map(str::to_owned))
        else {
            continue;
        };
        let Some(payload) = keys
            .iter()
            .find_map(|key| kasip_certs::jws::verify_compact(&jws, key).ok())
        else {
            continue;
        };
        if let Some(statement) = parse_statement(record_id, &payload.payload) {
            return Ok(Some(statement));
        }
    }
    Ok(None)
}

/// Reads a statement's signed payload (the agent's words: a dishonest agent chooses
/// them, so anything that is not a statement is none, and missing figures are absent).
pub fn parse_statement(record_id: u64, payload: &[u8]) -> Option<Statement> {
    let statement = serde_json::from_slice::<serde_json::Value>(payload).ok()?;
    let students = serde_json::from_value(statement["students"].clone()).unwrap_or_default();
    Some(Statement {
        record_id,
        students,
        coverage_per_mille: statement["coverage"]["college"]["coverage_per_mille"].as_u64(),
        compliant: statement["compliant"].as_bool().unwrap_or(false),
        min_coverage: statement["min_coverage_per_mille"].as_u64(),
        student_qr_share: statement["student_qr_share_per_mille"].as_u64(),
        typed_counts_as_qr: statement["typed_code_counts_as_qr"].as_bool() == Some(true),
    })
}

/// The fields of a stored attendance record the month audit reads, and only those: a
/// month is parsed from its bodies at every audit, and the rest (chain hash, signatures,
/// discipline, room) is the bulk of each.
#[derive(Debug, Clone, Deserialize)]
struct MarkView {
    id: u64,
    lesson: u64,
    date: String,
    start: String,
    group: String,
    teacher_iin: String,
    student_iin: String,
    status: String,
    method: String,
    recorded_at: i64,
    #[serde(default)]
    device: Option<String>,
    #[serde(default)]
    evidence: Option<EntryView>,
}

#[derive(Debug, Clone, Deserialize)]
struct EntryView {
    entry: EntryKind,
}

/// The latest mark of each lesson and student in the month as it stood at its close (a
/// correction replaces the mark it corrects), and every check-in event (bursts count
/// events, not latest marks).
struct MonthMarks {
    latest: Vec<MarkView>,
    check_ins: Vec<CheckIn>,
    /// Group, date and start of each lesson with check-ins, for the bursts' findings.
    lessons: HashMap<u64, (String, String, String)>,
}

/// A phone's check-in as the burst rule reads it: no copy of the record's text.
struct CheckIn {
    lesson: u64,
    recorded_at: i64,
    id: u64,
    /// The phone, hashed (a distinct-phones count needs only equality).
    device: u64,
}

fn hashed(text: &str) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault};
    BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(text)
}

fn month_marks(connection: &Db, bin: &str, month: Month) -> DbResult<MonthMarks> {
    // Bodies are canonical JSON: the month's records are found by their text before
    // any is parsed (json_extract in SQL parsed every body of every month). PostgreSQL
    // reads only the month's partition.
    let in_month = format!("\"date\":\"{month}-");
    let month_text = month.to_string();
    let (sql, params): (&'static str, &[&dyn crate::db::ToValue]) = match connection.engine() {
        crate::db::Engine::Sqlite => (
            "SELECT body FROM records WHERE bin = ?1 AND kind = 'attendance'",
            params![bin],
        ),
        crate::db::Engine::Postgres => (
            "SELECT body FROM records WHERE bin = ?1 AND kind = 'attendance' AND month = ?2",
            params![bin, month_text],
        ),
    };
    let mut latest: HashMap<(u64, u64), MarkView> = HashMap::new();
    let mut check_ins = Vec::new();
    let mut lessons = HashMap::new();
    connection.for_each(sql, params, |row| {
        let body = row.str(0)?;
        if !body.contains(&in_month) {
            return Ok(true);
        }
        // Stored only after `check_record` accepted it, so it parses.
        let Ok(record) = serde_json::from_str::<MarkView>(body) else {
            return Ok(true);
        };
        // A closed month's figures are those of its close: adjustments made after it
        // reach the registry as such, and are not counted into the month.
        if record
            .evidence
            .as_ref()
            .is_some_and(|evidence| evidence.entry == EntryKind::Adjustment)
        {
            return Ok(true);
        }
        if matches!(record.method.as_str(), "qr_phone" | "qr_typed") {
            check_ins.push(CheckIn {
                lesson: record.lesson,
                recorded_at: record.recorded_at,
                id: record.id,
                device: record.device.as_deref().map_or(0, hashed),
            });
            lessons.entry(record.lesson).or_insert_with(|| {
                (
                    record.group.clone(),
                    record.date.clone(),
                    record.start.clone(),
                )
            });
        }
        let key = (record.lesson, hashed(&record.student_iin));
        match latest.get(&key) {
            Some(held) if held.id > record.id => {}
            _ => {
                latest.insert(key, record);
            }
        }
        Ok(true)
    })?;
    let mut latest: Vec<MarkView> = latest.into_values().collect();
    latest.sort_by_key(|record| record.id);
    check_ins.sort_by_key(|record| (record.lesson, record.recorded_at, record.id));
    Ok(MonthMarks {
        latest,
        check_ins,
        lessons,
    })
}

fn counts_as_present(record: &MarkView) -> bool {
    matches!(record.status.as_str(), "present" | "late")
}

fn is_qr(method: &str, typed_counts: bool) -> bool {
    match method {
        "qr_phone" | "qr_kiosk" => true,
        "qr_typed" => typed_counts,
        _ => false,
    }
}

fn is_hand_mark(record: &MarkView) -> bool {
    matches!(record.method.as_str(), "manual" | "late_entry")
}

/// When a beneficiary's marks count in the month, from the contingent records held:
/// from their enrolment, until they left or went on leave. None: not a beneficiary
/// active in the month at all. Mirrors the agent's own rule (design §5.5).
fn active_span(events: &[ContingentRecord], month: Month) -> Option<(Option<Date>, Option<Date>)> {
    let enrolled = events
        .iter()
        .filter(|event| event.change == "enrolled" && event.status == "active")
        .filter_map(|event| Date::parse(&event.effective_date).ok())
        .min();
    if enrolled.is_some_and(|from| from > month.last_day()) {
        return None;
    }
    let Some(latest) = events.iter().max_by_key(|event| event.id) else {
        return Some((enrolled, None));
    };
    if latest.status == "active" {
        return Some((enrolled, None));
    }
    match Date::parse(&latest.effective_date) {
        Ok(date) if date > month.first_day() => Some((enrolled, Some(date))),
        _ => None,
    }
}

/// Audits `bin`'s `month`: stores the registry's figures and returns the findings (not
/// yet stored: the caller records them with the agent they concern).
pub fn audit_month(connection: &Db, bin: &str, month: Month, now: i64) -> DbResult<Vec<Finding>> {
    let month_text = month.to_string();
    let policy = NationalPolicy::read(connection)?;
    let thresholds = Thresholds::read(connection)?;
    let marks = month_marks(connection, bin, month)?;
    let statement = statement_of(connection, bin, &month_text)?;
    let mut findings = Vec::new();
    let passkey_required = crate::store::passkey_required(connection, bin)?;
    let verified = crate::store::verified_marks(connection, bin, &month_text)?;

    // Who counts: the registry's own list of state-funded students.
    let listed: Vec<String> = connection.query(
        "SELECT iin FROM beneficiaries WHERE bin = ?1 AND beneficiary = 1",
        params![bin],
        |row| row.get(0),
    )?;
    let (beneficiaries_from, candidates) = if listed.is_empty() {
        let stated = statement
            .as_ref()
            .map(|statement| {
                statement
                    .students
                    .iter()
                    .map(|student| student.iin.clone())
                    .collect()
            })
            .unwrap_or_default();
        ("statement", stated)
    } else {
        ("registry", listed)
    };
    let mut contingent: HashMap<String, Vec<ContingentRecord>> = HashMap::new();
    {
        connection.for_each(
            "SELECT body FROM records WHERE bin = ?1 AND kind = 'contingent'",
            params![bin],
            |row| {
                if let Ok(event) = serde_json::from_str::<ContingentRecord>(row.str(0)?) {
                    contingent
                        .entry(event.student_iin.clone())
                        .or_default()
                        .push(event);
                }
                Ok(true)
            },
        )?;
    }
    let stated_groups: HashMap<&str, &str> = statement
        .iter()
        .flat_map(|statement| statement.students.iter())
        .map(|student| (student.iin.as_str(), student.group.as_str()))
        .collect();
    let mut group_of: HashMap<&str, &str> = HashMap::new();
    for record in &marks.latest {
        group_of.insert(&record.student_iin, &record.group);
    }
    let mut students: BTreeMap<String, (StudentMonth, Option<Date>, Option<Date>)> =
        BTreeMap::new();
    for iin in &candidates {
        let Some((from, until)) =
            active_span(contingent.get(iin).map_or(&[][..], Vec::as_slice), month)
        else {
            continue;
        };
        let group = group_of
            .get(iin.as_str())
            .or_else(|| stated_groups.get(iin.as_str()))
            .copied()
            .unwrap_or("—");
        students.insert(
            iin.clone(),
            (
                StudentMonth {
                    iin: iin.clone(),
                    name: String::new(),
                    group: group.to_owned(),
                    present: 0,
                    qr: 0,
                },
                from,
                until,
            ),
        );
    }
    for record in &marks.latest {
        let Some((student, from, until)) = students.get_mut(&record.student_iin) else {
            continue;
        };
        let Ok(date) = Date::parse(&record.date) else {
            continue;
        };
        if from.is_some_and(|from| date < from) || until.is_some_and(|until| date >= until) {
            continue;
        }
        if counts_as_present(record) {
            student.present += 1;
            // Under `qr_requires_passkey` a check-in counts as QR only once the registry
            // verified its passkey assertion; a kiosk mark carries none.
            if is_qr(&record.method, policy.typed_counts_as_qr)
                && (!passkey_required || verified.contains(&record.id))
            {
                student.qr += 1;
            }
        }
    }
    let per_mille = |value: u64| PerMille::from_fraction(value as f64 / 1000.0);
    let (Some(share), Some(minimum)) = (
        per_mille(policy.student_qr_share_per_mille),
        per_mille(policy.min_coverage_per_mille),
    ) else {
        return Ok(findings);
    };
    let all: Vec<&StudentMonth> = students.values().map(|(student, ..)| student).collect();
    let college = coverage_of("college", &all, share, minimum);
    let mut by_group: BTreeMap<&str, Vec<&StudentMonth>> = BTreeMap::new();
    for student in &all {
        by_group.entry(&student.group).or_default().push(student);
    }
    let groups = by_group
        .into_iter()
        .map(|(group, members)| {
            let coverage = coverage_of(group, &members, share, minimum);
            GroupFigures {
                group: group.to_owned(),
                beneficiaries: coverage.beneficiaries,
                qr_tracked: coverage.qr_tracked,
                coverage_per_mille: coverage.coverage_per_mille,
                compliant: coverage.holds,
            }
        })
        .collect();
    let figures = MonthFigures {
        month: month_text.clone(),
        beneficiaries_from: beneficiaries_from.to_owned(),
        beneficiaries: college.beneficiaries,
        qr_tracked: college.qr_tracked,
        coverage_per_mille: college.coverage_per_mille,
        compliant: college.holds,
        groups,
        min_coverage_per_mille: policy.min_coverage_per_mille,
        student_qr_share_per_mille: policy.student_qr_share_per_mille,
        stated_coverage_per_mille: statement
            .as_ref()
            .and_then(|statement| statement.coverage_per_mille),
        stated_compliant: statement.as_ref().map(|statement| statement.compliant),
        qr_requires_passkey: passkey_required,
    };
    connection.execute(
        "INSERT INTO month_figures (bin, month, figures, computed_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (bin, month) DO UPDATE SET figures = ?3, computed_at = ?4",
        params![
            bin,
            month_text,
            serde_json::to_string(&figures).unwrap_or_default(),
            now
        ],
    )?;
    if let Some(statement) = &statement {
        findings.extend(compare(&figures, statement, &marks, &students, &policy));
    }
    findings.extend(check_in_bursts(&marks, &thresholds, &month_text));
    findings.extend(binding_bursts(connection, bin, month, &thresholds)?);
    findings.extend(hand_shares(&marks, &thresholds, &month_text));
    Ok(findings)
}

/// Where the statement and the registry's own count part: per-student totals, the set of
/// beneficiaries, coverage and compliance. One finding listing the differences.
fn compare(
    figures: &MonthFigures,
    statement: &Statement,
    marks: &MonthMarks,
    students: &BTreeMap<String, (StudentMonth, Option<Date>, Option<Date>)>,
    policy: &NationalPolicy,
) -> Option<Finding> {
    let mut differences = Vec::new();
    // Totals as the statement counts them: every latest mark of the month, QR under the
    // statement's own rule (the coverage below uses the national one).
    let mut totals: HashMap<&str, (u64, u64, u64)> = HashMap::new();
    for record in &marks.latest {
        let entry = totals.entry(&record.student_iin).or_default();
        match record.status.as_str() {
            "present" => entry.0 += 1,
            "late" => entry.1 += 1,
            _ => {}
        }
        if is_qr(&record.method, statement.typed_counts_as_qr) {
            entry.2 += 1;
        }
    }
    for stated in &statement.students {
        let held = totals.get(stated.iin.as_str()).copied().unwrap_or_default();
        if (stated.present, stated.late, stated.qr_marks) != held {
            differences.push(format!(
                "{}: stated present {}, late {}, QR {}; the records hold {}, {}, {}",
                stated.iin, stated.present, stated.late, stated.qr_marks, held.0, held.1, held.2
            ));
        }
    }
    if figures.beneficiaries_from == "registry" {
        let stated: HashSet<&str> = statement
            .students
            .iter()
            .map(|student| student.iin.as_str())
            .collect();
        for iin in students.keys() {
            if !stated.contains(iin.as_str()) {
                differences.push(format!("{iin}: a beneficiary the statement leaves out"));
            }
        }
        for iin in &stated {
            if !students.contains_key(*iin) {
                differences.push(format!(
                    "{iin}: counted by the statement, not a beneficiary active in the month"
                ));
            }
        }
    }
    let same_rules = statement.min_coverage == Some(policy.min_coverage_per_mille)
        && statement.student_qr_share == Some(policy.student_qr_share_per_mille)
        && statement.typed_counts_as_qr == policy.typed_counts_as_qr;
    // A stricter college may state a lower coverage; never a higher one. Under
    // `qr_requires_passkey` the agent cannot know which assertions the registry will
    // accept: the registry's own figure governs, and only the totals are compared.
    let coverage_disagrees = if figures.qr_requires_passkey {
        false
    } else if same_rules {
        statement.coverage_per_mille != figures.coverage_per_mille
    } else {
        statement.coverage_per_mille.unwrap_or(0) > figures.coverage_per_mille.unwrap_or(0)
    };
    if coverage_disagrees {
        differences.push(format!(
            "coverage: stated {}, recomputed {} with the national thresholds",
            kasip_core::per_mille_text(statement.coverage_per_mille),
            kasip_core::per_mille_text(figures.coverage_per_mille)
        ));
    }
    if statement.compliant && !figures.compliant {
        differences.push("stated compliant; by the records it is not".to_owned());
    }
    if differences.is_empty() {
        return None;
    }
    let count = differences.len();
    differences.truncate(5);
    Some(Finding {
        kind: "statement_disagrees",
        month: Some(figures.month.clone()),
        detail: format!(
            "the statement for {} disagrees with the records the registry holds in {count} place(s): {}{}",
            figures.month,
            differences.join("; "),
            if count > 5 { "; …" } else { "" }
        ),
        evidence: vec![statement.record_id],
    })
}

/// The densest run of `times` (sorted) within `window` seconds: its start and end index.
fn densest<T>(items: &[T], time: impl Fn(&T) -> i64, window: i64) -> (usize, usize) {
    let mut best = (0, 0);
    let mut start = 0;
    for end in 0..items.len() {
        while time(&items[end]) - time(&items[start]) > window {
            start += 1;
        }
        if end + 1 - start > best.1 - best.0 {
            best = (start, end + 1);
        }
    }
    best
}

fn check_in_bursts(marks: &MonthMarks, thresholds: &Thresholds, month: &str) -> Vec<Finding> {
    let mut findings = Vec::new();
    for lesson in marks
        .check_ins
        .chunk_by(|left, right| left.lesson == right.lesson)
    {
        // The densest window counted in distinct phones.
        let mut best: (usize, usize, usize) = (0, 0, 0);
        let mut begin = 0;
        for end in 0..lesson.len() {
            while lesson[end].recorded_at - lesson[begin].recorded_at
                > thresholds.check_in_burst_secs
            {
                begin += 1;
            }
            let phones: HashSet<u64> = lesson[begin..=end]
                .iter()
                .map(|check_in| check_in.device)
                .collect();
            if phones.len() > best.0 {
                best = (phones.len(), begin, end + 1);
            }
        }
        if best.0 as u64 >= thresholds.check_in_burst {
            let (group, date, start) = &marks.lessons[&lesson[best.1].lesson];
            findings.push(Finding {
                kind: "check_in_burst",
                month: Some(month.to_owned()),
                detail: format!(
                    "{} phones checked in to {}'s lesson of {} {} within {} s: a script, not a queue at a projector (threshold {})",
                    best.0,
                    group,
                    date,
                    start,
                    thresholds.check_in_burst_secs,
                    thresholds.check_in_burst
                ),
                evidence: lesson[best.1..best.2].iter().map(|record| record.id).collect(),
            });
        }
    }
    findings
}

fn binding_bursts(
    connection: &Db,
    bin: &str,
    month: Month,
    thresholds: &Thresholds,
) -> DbResult<Vec<Finding>> {
    let zone: String = connection.query_one(
        "SELECT timezone FROM colleges WHERE bin = ?1",
        params![bin],
        |row| row.get(0),
    )?;
    let offset = CollegeTimezone::parse(&zone)
        .map(|zone| zone.offset_seconds())
        .unwrap_or(5 * 3600);
    let mut bindings: Vec<BindingRecord> = connection
        .query(
            "SELECT body FROM records WHERE bin = ?1 AND kind = 'bindings'",
            params![bin],
            |row| Ok(serde_json::from_str::<BindingRecord>(row.str(0)?).ok()),
        )?
        .into_iter()
        .flatten()
        // The demo college's seeded bindings are made at once by its generator, not by
        // people; only under the demo's BIN, which no real college is registered with.
        .filter(|binding| !(bin == DEMO_BIN && binding.code_issued_by == "demo"))
        .filter(|binding| {
            Date::from_days_since_epoch((binding.bound_at + offset).div_euclid(86_400))
                .calendar_month()
                == month
        })
        .collect();
    bindings.sort_by_key(|binding| (binding.bound_at, binding.id));
    let (start, end) = densest(
        &bindings,
        |binding| binding.bound_at,
        thresholds.binding_burst_secs,
    );
    if ((end - start) as u64) < thresholds.binding_burst || end == 0 {
        return Ok(Vec::new());
    }
    let issuers: std::collections::BTreeSet<&str> = bindings[start..end]
        .iter()
        .map(|binding| binding.code_issued_by.as_str())
        .collect();
    Ok(vec![Finding {
        kind: "binding_burst",
        month: Some(month.to_string()),
        detail: format!(
            "{} phones were bound within {} min (codes issued by {}): one person binding many phones (threshold {})",
            end - start,
            thresholds.binding_burst_secs / 60,
            issuers.into_iter().collect::<Vec<_>>().join(", "),
            thresholds.binding_burst
        ),
        evidence: bindings[start..end].iter().map(|binding| binding.id).collect(),
    }])
}

/// Hand marks (`manual`, `late_entry`) keeping students present: a teacher far above the
/// college's median, a student far above their classmates.
fn hand_shares(marks: &MonthMarks, thresholds: &Thresholds, month: &str) -> Vec<Finding> {
    let mut findings = Vec::new();
    let present: Vec<&MarkView> = marks
        .latest
        .iter()
        .filter(|record| counts_as_present(record))
        .collect();
    let share = |hand: u64, all: u64| hand * 1000 / all.max(1);
    let percent = |per_mille: u64| format!("{}.{}%", per_mille / 10, per_mille % 10);
    let mut per_teacher: BTreeMap<&str, Vec<&MarkView>> = BTreeMap::new();
    for record in &present {
        per_teacher
            .entry(&record.teacher_iin)
            .or_default()
            .push(record);
    }
    let mut shares: Vec<(&str, u64, Vec<u64>, u64)> = per_teacher
        .into_iter()
        .filter(|(_, records)| records.len() as u64 >= thresholds.hand_share_min_marks)
        .map(|(teacher, records)| {
            let hand: Vec<u64> = records
                .iter()
                .filter(|record| is_hand_mark(record))
                .map(|record| record.id)
                .collect();
            let total = records.len() as u64;
            (teacher, share(hand.len() as u64, total), hand, total)
        })
        .collect();
    if shares.len() >= 2 {
        shares.sort_by_key(|(_, share, ..)| *share);
        let median = shares[shares.len() / 2].1;
        for (teacher, teacher_share, hand, total) in shares {
            if teacher_share > median + thresholds.hand_share_margin_per_mille {
                findings.push(Finding {
                    kind: "hand_share_teacher",
                    month: Some(month.to_owned()),
                    detail: format!(
                        "teacher {teacher} entered {} of {total} present marks by hand ({}), the college's median is {} (margin {})",
                        hand.len(),
                        percent(teacher_share),
                        percent(median),
                        percent(thresholds.hand_share_margin_per_mille)
                    ),
                    evidence: hand,
                });
            }
        }
    }
    let mut per_group: BTreeMap<&str, BTreeMap<&str, (Vec<u64>, u64)>> = BTreeMap::new();
    for record in &present {
        let student = per_group
            .entry(&record.group)
            .or_default()
            .entry(&record.student_iin)
            .or_default();
        student.1 += 1;
        if is_hand_mark(record) {
            student.0.push(record.id);
        }
    }
    for (group, students) in per_group {
        let (all_hand, all_present) = students
            .values()
            .fold((0, 0), |(hand, present), (ids, count)| {
                (hand + ids.len() as u64, present + count)
            });
        for (student, (hand, count)) in students {
            // Compared with the classmates, not with a group average they pull up.
            let (peers_hand, peers_present) = (all_hand - hand.len() as u64, all_present - count);
            if count < thresholds.hand_share_min_student_marks || peers_present == 0 {
                continue;
            }
            let mine = share(hand.len() as u64, count);
            let peers = share(peers_hand, peers_present);
            if mine >= 500 && mine > peers + thresholds.hand_share_margin_per_mille {
                findings.push(Finding {
                    kind: "hand_share_student",
                    month: Some(month.to_owned()),
                    detail: format!(
                        "{student} of {group} was marked present by hand {} of {count} times ({}); their classmates {} (margin {})",
                        hand.len(),
                        percent(mine),
                        percent(peers),
                        percent(thresholds.hand_share_margin_per_mille)
                    ),
                    evidence: hand,
                });
            }
        }
    }
    findings
}

/// The registry's figures of `bin`'s months, oldest first.
pub fn figures_of(connection: &Db, bin: &str) -> DbResult<Vec<MonthFigures>> {
    Ok(connection
        .query(
            "SELECT figures FROM month_figures WHERE bin = ?1 ORDER BY month",
            params![bin],
            |row| Ok(serde_json::from_str(row.str(0)?).ok()),
        )?
        .into_iter()
        .flatten()
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contingent(id: u64, change: &str, status: &str, date: &str) -> ContingentRecord {
        ContingentRecord {
            id,
            student_iin: "060315500016".into(),
            change: change.into(),
            status: status.into(),
            previous_status: None,
            effective_date: date.into(),
            recorded_at: 0,
            source: "test".into(),
        }
    }

    #[test]
    fn a_beneficiary_counts_from_enrolment_until_leaving() {
        let november = Month::parse("2026-11").expect("month");
        let day = |text| Date::parse(text).expect("date");
        assert_eq!(active_span(&[], november), Some((None, None)));
        assert_eq!(
            active_span(
                &[contingent(1, "enrolled", "active", "2026-11-10")],
                november
            ),
            Some((Some(day("2026-11-10")), None))
        );
        assert_eq!(
            active_span(
                &[contingent(1, "enrolled", "active", "2026-12-01")],
                november
            ),
            None,
            "enrolled after the month"
        );
        let left = [
            contingent(1, "enrolled", "active", "2026-09-01"),
            contingent(2, "expelled", "expelled", "2026-11-15"),
        ];
        assert_eq!(
            active_span(&left, november),
            Some((Some(day("2026-09-01")), Some(day("2026-11-15"))))
        );
        let gone_before = [
            contingent(1, "enrolled", "active", "2026-09-01"),
            contingent(2, "expelled", "expelled", "2026-10-20"),
        ];
        assert_eq!(active_span(&gone_before, november), None);
    }

    #[test]
    fn the_densest_run_is_found() {
        let times = [0, 100, 101, 102, 103, 500];
        assert_eq!(densest(&times, |time| *time, 3), (1, 5));
        assert_eq!(densest(&[] as &[i64], |time| *time, 3), (0, 0));
    }
}
