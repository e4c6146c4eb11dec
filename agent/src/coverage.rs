//! Reading a month's marks into the coverage arithmetic of `kasip_core::coverage`.
//!
//! Who counts (design §5.5, issue "coverage rule"): beneficiaries active in the month.
//! Expelled and deceased students count until their effective date, and only their
//! marks before it; a student on academic leave from before the month does not count,
//! one who went on leave during the month counts with the marks before the leave.

use std::collections::HashMap;

use kasip_core::{coverage_of, Date, Month, PerMille, ScopeCoverage, StudentMonth};
use rusqlite::Connection;
use serde::Serialize;

/// The coverage report: the college and each group.
#[derive(Debug, Serialize)]
pub struct CoverageReport {
    pub month: String,
    pub student_qr_share_per_mille: u16,
    pub min_coverage_per_mille: u16,
    pub typed_code_counts_as_qr: bool,
    pub college: ScopeCoverage,
    pub groups: Vec<ScopeCoverage>,
}

/// What happens to a manual mark that would take its group below the rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CoveragePolicy {
    /// Accept it and tell the teacher.
    Warn,
    /// Accept it only with an admin's override and reason (audited).
    RequireOverride,
    /// Refuse it.
    Block,
}

impl CoveragePolicy {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "warn" => Some(Self::Warn),
            "require-override" => Some(Self::RequireOverride),
            "block" => Some(Self::Block),
            _ => None,
        }
    }
}

/// Whether a method counts as QR under these rules.
pub fn is_qr_method(method: &str, rules: &CoverageRules) -> bool {
    match method {
        "qr_phone" | "qr_kiosk" => true,
        "qr_typed" => rules.typed_code_counts_as_qr,
        _ => false,
    }
}

/// Thresholds and what counts as QR.
pub struct CoverageRules {
    pub student_qr_share: PerMille,
    pub min_coverage: PerMille,
    pub typed_code_counts_as_qr: bool,
}

struct Beneficiary {
    month: StudentMonth,
    /// Marks on or after this date do not count (expelled, deceased, on leave).
    counts_until: Option<Date>,
}

/// Each active beneficiary's month (optionally of one group), sorted by group and name.
pub fn student_months(
    connection: &Connection,
    month: Month,
    group: Option<&str>,
    rules: &CoverageRules,
) -> rusqlite::Result<Vec<StudentMonth>> {
    student_months_through(connection, month, group, rules, month.last_day())
}

/// Like `student_months`, counting only marks of lessons up to and including `through`.
pub fn student_months_through(
    connection: &Connection,
    month: Month,
    group: Option<&str>,
    rules: &CoverageRules,
    through: Date,
) -> rusqlite::Result<Vec<StudentMonth>> {
    let first_day = month.first_day();
    let mut beneficiaries: HashMap<String, Beneficiary> = HashMap::new();
    let mut statement = connection.prepare(
        "SELECT s.iin, s.last_name || ' ' || s.first_name, g.code, s.status,
                COALESCE(s.status_date,
                         (SELECT effective_date FROM contingent_events c
                          WHERE c.student_iin = s.iin ORDER BY c.id DESC LIMIT 1))
         FROM students s JOIN study_groups g ON g.id = s.group_id
         WHERE s.beneficiary = 1 AND (?1 IS NULL OR g.code = ?1)",
    )?;
    let rows = statement.query_map([group], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, String>(2)?,
            row.get::<_, String>(3)?,
            row.get::<_, Option<String>>(4)?,
        ))
    })?;
    for row in rows {
        let (iin, name, group_code, status, status_date) = row?;
        let effective = status_date
            .as_deref()
            .and_then(|date| Date::parse(date).ok());
        let counts_until = match status.as_str() {
            "active" => None,
            // Gone or on leave from the month's first day (or at an unknown date): not
            // a beneficiary active in this month.
            _ => match effective {
                Some(date) if date > first_day => Some(date),
                _ => continue,
            },
        };
        beneficiaries.insert(
            iin.clone(),
            Beneficiary {
                month: StudentMonth {
                    iin,
                    name,
                    group: group_code,
                    present: 0,
                    qr: 0,
                },
                counts_until,
            },
        );
    }
    // The latest mark per lesson and student decides (a correction replaces the mark).
    // For one group, read only that group's lessons: marks are only ever recorded for
    // students of the lesson's group (both writer paths refuse others), and the manual-
    // mark gate runs this on the writer thread, where a whole-college scan would stall
    // every check-in behind it.
    let mut marks = connection.prepare_cached(
        "SELECT e.student_iin, l.date, e.status, e.method
         FROM attendance_events e JOIN lessons l ON l.id = e.lesson_id
         WHERE l.date BETWEEN ?1 AND ?2
           AND (?3 IS NULL OR l.group_id = (SELECT id FROM study_groups WHERE code = ?3))
           AND e.id = (SELECT MAX(x.id) FROM attendance_events x
                       WHERE x.lesson_id = e.lesson_id AND x.student_iin = e.student_iin)",
    )?;
    let rows = marks.query_map(
        rusqlite::params![first_day.to_string(), month.last_day().to_string(), group],
        |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, String>(3)?,
            ))
        },
    )?;
    for row in rows {
        let (iin, date, status, method) = row?;
        let Some(beneficiary) = beneficiaries.get_mut(&iin) else {
            continue;
        };
        let Ok(date) = Date::parse(&date) else {
            continue;
        };
        if date > through || beneficiary.counts_until.is_some_and(|until| date >= until) {
            continue;
        }
        if status != "present" && status != "late" {
            continue;
        }
        beneficiary.month.present += 1;
        if is_qr_method(&method, rules) {
            beneficiary.month.qr += 1;
        }
    }
    let mut students: Vec<StudentMonth> = beneficiaries
        .into_values()
        .map(|beneficiary| beneficiary.month)
        .collect();
    students.sort_by(|left, right| {
        (&left.group, &left.name, &left.iin).cmp(&(&right.group, &right.name, &right.iin))
    });
    Ok(students)
}

/// Computes coverage for `month`, optionally for one group only.
pub fn coverage_for_month(
    connection: &Connection,
    month: Month,
    group: Option<&str>,
    rules: &CoverageRules,
) -> rusqlite::Result<CoverageReport> {
    let students = student_months(connection, month, group, rules)?;
    let all: Vec<&StudentMonth> = students.iter().collect();
    let college = coverage_of("college", &all, rules.student_qr_share, rules.min_coverage);
    let mut group_codes: Vec<&str> = students
        .iter()
        .map(|student| student.group.as_str())
        .collect();
    group_codes.dedup();
    let groups = group_codes
        .into_iter()
        .map(|code| {
            let members: Vec<&StudentMonth> = students
                .iter()
                .filter(|student| student.group == code)
                .collect();
            coverage_of(code, &members, rules.student_qr_share, rules.min_coverage)
        })
        .collect();
    Ok(CoverageReport {
        month: month.to_string(),
        student_qr_share_per_mille: rules.student_qr_share.thousandths(),
        min_coverage_per_mille: rules.min_coverage.thousandths(),
        typed_code_counts_as_qr: rules.typed_code_counts_as_qr,
        college,
        groups,
    })
}

/// College coverage at the end of each week (Sunday, or the month's last day) up to
/// `today`, and a month-end projection extended linearly from the last two weeks.
#[derive(Debug, Serialize)]
pub struct CoverageTrend {
    /// (week's last day, coverage in thousandths)
    pub weeks: Vec<(String, Option<u64>)>,
    pub projected_month_end: Option<u64>,
}

pub fn weekly_trend(
    connection: &Connection,
    month: Month,
    today: Date,
    rules: &CoverageRules,
) -> rusqlite::Result<CoverageTrend> {
    let mut weeks = Vec::new();
    let mut day = month.first_day();
    while day <= month.last_day() && day <= today {
        let week_end = day.add_days(i64::from(7 - day.iso_weekday()));
        let through = if week_end > month.last_day() {
            month.last_day()
        } else {
            week_end
        };
        let through = if through > today { today } else { through };
        let students = student_months_through(connection, month, None, rules, through)?;
        let coverage = coverage_of(
            "college",
            &students.iter().collect::<Vec<_>>(),
            rules.student_qr_share,
            rules.min_coverage,
        );
        weeks.push((through.to_string(), coverage.coverage_per_mille));
        day = through.add_days(1);
    }
    // Extend the month's average daily change so far to its last day: a rough guide for
    // the admin, shown as a projection, never used for the rule itself.
    let projected_month_end = match (weeks.first(), weeks.last()) {
        (Some((first_end, Some(first))), Some((last_end, Some(last)))) if first_end != last_end => {
            match (Date::parse(first_end), Date::parse(last_end)) {
                (Ok(first_end), Ok(last_end)) => {
                    let span = (last_end.days_since_epoch() - first_end.days_since_epoch()).max(1);
                    let remaining =
                        month.last_day().days_since_epoch() - last_end.days_since_epoch();
                    let slope = (*last as i64 - *first as i64) as f64 / span as f64;
                    Some((*last as f64 + slope * remaining as f64).clamp(0.0, 1000.0) as u64)
                }
                _ => Some(*last),
            }
        }
        (_, Some((_, last))) => *last,
        _ => None,
    };
    Ok(CoverageTrend {
        weeks,
        projected_month_end,
    })
}
