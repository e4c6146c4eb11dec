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

/// The national policy the registry signed for this college, as the last pull cached it,
/// verified again under the registry's key (an edited cache verifies as nothing). None
/// before the first pull or when not enrolled.
pub fn national_policy(
    connection: &Connection,
) -> rusqlite::Result<Option<kasip_core::wire::Policy>> {
    use rusqlite::OptionalExtension;
    let cached: Option<(String, Vec<u8>)> = connection
        .prepare_cached(
            "SELECT p.jws, e.registry_key FROM registry_policy p, sync_enrolment e
             WHERE p.id = 1 AND e.id = 1",
        )?
        .query_row([], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    Ok(cached.and_then(|(jws, registry_key)| {
        let verified = kasip_certs::jws::verify_compact(&jws, &registry_key).ok()?;
        serde_json::from_slice(&verified.payload).ok()
    }))
}

/// The rules in force: `local` (config) tightened by the national policy. A college may
/// only be stricter than the registry: the higher thresholds win, and typed codes count
/// as QR only if both say so.
pub fn rules_in_force(
    connection: &Connection,
    local: &CoverageRules,
) -> rusqlite::Result<(CoverageRules, Option<kasip_core::wire::Policy>)> {
    let Some(policy) = national_policy(connection)? else {
        return Ok((local.clone(), None));
    };
    let stricter = |local: PerMille, national: u64| {
        let national = PerMille::from_fraction(national.min(1000) as f64 / 1000.0).unwrap_or(local);
        if national.thousandths() > local.thousandths() {
            national
        } else {
            local
        }
    };
    let rules = CoverageRules {
        min_coverage: stricter(local.min_coverage, policy.min_coverage),
        student_qr_share: stricter(local.student_qr_share, policy.student_qr_share),
        typed_code_counts_as_qr: local.typed_code_counts_as_qr && policy.typed_counts_as_qr,
    };
    Ok((rules, Some(policy)))
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
#[derive(Debug, Clone)]
pub struct CoverageRules {
    pub student_qr_share: PerMille,
    pub min_coverage: PerMille,
    pub typed_code_counts_as_qr: bool,
}

struct Beneficiary {
    month: StudentMonth,
    /// Marks before this date do not count: the student's enrolment (contingent history).
    counts_from: Option<Date>,
    /// Marks on or after this date do not count (expelled, deceased, on leave).
    counts_until: Option<Date>,
}

/// One student's latest marks of one lesson day, from `mark_tally`.
struct DayTally {
    beneficiary: usize,
    date: Date,
    present: u32,
    qr: u32,
    typed: u32,
}

/// A month's active beneficiaries and their daily tallies, read once so that the month
/// and every point of its trend come from one pass over a few rows per student.
pub struct MonthTally {
    beneficiaries: Vec<Beneficiary>,
    days: Vec<DayTally>,
}

impl MonthTally {
    /// Reads `month` for the college or one group: for a closed month, the figures its
    /// statement counted; otherwise the beneficiaries enrolled by its end and their marks.
    pub fn read(
        connection: &Connection,
        month: Month,
        group: Option<&str>,
    ) -> rusqlite::Result<Self> {
        if let Some(closed) = Self::read_closed(connection, month, group)? {
            return Ok(closed);
        }
        let first_day = month.first_day();
        let mut beneficiaries = Vec::new();
        let mut index_of: HashMap<String, usize> = HashMap::new();
        let mut statement = connection.prepare_cached(
            "SELECT s.iin, s.last_name || ' ' || s.first_name, g.code, s.status,
                    COALESCE(s.status_date,
                             (SELECT effective_date FROM contingent_events c
                              WHERE c.student_iin = s.iin ORDER BY c.id DESC LIMIT 1)),
                    (SELECT MIN(effective_date) FROM contingent_events c
                     WHERE c.student_iin = s.iin AND c.change = 'enrolled' AND c.status = 'active')
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
                row.get::<_, Option<String>>(5)?,
            ))
        })?;
        for row in rows {
            let (iin, name, group_code, status, status_date, enrolled) = row?;
            // Enrolled after the month: not its beneficiary. A student imported before
            // the contingent history existed, or first imported already gone or on leave
            // (enrolled at a date nobody gave), has no enrolment date and counts
            // throughout, up to their status's date.
            let counts_from = enrolled.as_deref().and_then(|date| Date::parse(date).ok());
            if counts_from.is_some_and(|from| from > month.last_day()) {
                continue;
            }
            let effective = status_date
                .as_deref()
                .and_then(|date| Date::parse(date).ok());
            let counts_until = match status.as_str() {
                "active" => None,
                // Gone or on leave from the month's first day (or at an unknown date):
                // not a beneficiary active in this month.
                _ => match effective {
                    Some(date) if date > first_day => Some(date),
                    _ => continue,
                },
            };
            index_of.insert(iin.clone(), beneficiaries.len());
            beneficiaries.push(Beneficiary {
                month: StudentMonth {
                    iin,
                    name,
                    group: group_code,
                    present: 0,
                    qr: 0,
                },
                counts_from,
                counts_until,
            });
        }
        // The tally already holds each lesson's latest mark (a correction replaces the
        // mark); for one group, only its students' rows are read, so the manual-mark gate
        // on the writer thread stays a few milliseconds whatever the college's size.
        let mut tallies = connection.prepare_cached(
            "SELECT t.student_iin, t.date, t.present, t.qr, t.typed FROM mark_tally t
             WHERE t.date BETWEEN ?1 AND ?2
               AND (?3 IS NULL OR t.student_iin IN
                    (SELECT s.iin FROM students s JOIN study_groups g ON g.id = s.group_id
                     WHERE g.code = ?3))",
        )?;
        let rows = tallies.query_map(
            rusqlite::params![first_day.to_string(), month.last_day().to_string(), group],
            |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, u32>(2)?,
                    row.get::<_, u32>(3)?,
                    row.get::<_, u32>(4)?,
                ))
            },
        )?;
        let mut days = Vec::new();
        for row in rows {
            let (iin, date, present, qr, typed) = row?;
            let (Some(&beneficiary), Ok(date)) = (index_of.get(&iin), Date::parse(&date)) else {
                continue;
            };
            days.push(DayTally {
                beneficiary,
                date,
                present,
                qr,
                typed,
            });
        }
        Ok(Self {
            beneficiaries,
            days,
        })
    }

    /// A closed month's beneficiaries with the counts its statement froze; None when
    /// the month is not closed.
    fn read_closed(
        connection: &Connection,
        month: Month,
        group: Option<&str>,
    ) -> rusqlite::Result<Option<Self>> {
        let closed: bool = connection
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM month_closes WHERE month = ?1)")?
            .query_row([month.to_string()], |row| row.get(0))?;
        if !closed {
            return Ok(None);
        }
        let mut statement = connection.prepare_cached(
            "SELECT student_iin, name, group_code, present, qr FROM closed_month_students
             WHERE month = ?1 AND (?2 IS NULL OR group_code = ?2)",
        )?;
        let beneficiaries = statement
            .query_map(rusqlite::params![month.to_string(), group], |row| {
                Ok(Beneficiary {
                    month: StudentMonth {
                        iin: row.get(0)?,
                        name: row.get(1)?,
                        group: row.get(2)?,
                        present: row.get(3)?,
                        qr: row.get(4)?,
                    },
                    counts_from: None,
                    counts_until: None,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(Some(Self {
            beneficiaries,
            days: Vec::new(),
        }))
    }

    /// Each beneficiary's month counting lesson days up to and including `through`,
    /// sorted by group and name.
    pub fn through(&self, through: Date, rules: &CoverageRules) -> Vec<StudentMonth> {
        let mut students: Vec<StudentMonth> = self
            .beneficiaries
            .iter()
            .map(|beneficiary| beneficiary.month.clone())
            .collect();
        for day in &self.days {
            let beneficiary = &self.beneficiaries[day.beneficiary];
            if day.date > through
                || beneficiary.counts_from.is_some_and(|from| day.date < from)
                || beneficiary
                    .counts_until
                    .is_some_and(|until| day.date >= until)
            {
                continue;
            }
            let student = &mut students[day.beneficiary];
            student.present += u64::from(day.present);
            student.qr += u64::from(day.qr);
            if rules.typed_code_counts_as_qr {
                student.qr += u64::from(day.typed);
            }
        }
        students.sort_by(|left, right| {
            (&left.group, &left.name, &left.iin).cmp(&(&right.group, &right.name, &right.iin))
        });
        students
    }
}

/// Each active beneficiary's month (optionally of one group), sorted by group and name.
pub fn student_months(
    connection: &Connection,
    month: Month,
    group: Option<&str>,
    rules: &CoverageRules,
) -> rusqlite::Result<Vec<StudentMonth>> {
    Ok(MonthTally::read(connection, month, group)?.through(month.last_day(), rules))
}

/// Computes coverage for `month`, optionally for one group only.
pub fn coverage_for_month(
    connection: &Connection,
    month: Month,
    group: Option<&str>,
    rules: &CoverageRules,
) -> rusqlite::Result<CoverageReport> {
    let students = student_months(connection, month, group, rules)?;
    Ok(report_of(month, &students, rules))
}

/// The coverage report of `students`' month: the college and each group.
pub fn report_of(month: Month, students: &[StudentMonth], rules: &CoverageRules) -> CoverageReport {
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
    CoverageReport {
        month: month.to_string(),
        student_qr_share_per_mille: rules.student_qr_share.thousandths(),
        min_coverage_per_mille: rules.min_coverage.thousandths(),
        typed_code_counts_as_qr: rules.typed_code_counts_as_qr,
        college,
        groups,
    }
}

/// College coverage at the end of each week (Sunday, or the month's last day) and of each
/// day up to `today`, and a month-end projection extended linearly from the weeks.
#[derive(Debug, Serialize)]
pub struct CoverageTrend {
    /// (week's last day, coverage in thousandths)
    pub weeks: Vec<(String, Option<u64>)>,
    /// (day, the month's coverage counting marks through it): no figure before any mark.
    pub days: Vec<(String, Option<u64>)>,
    pub projected_month_end: Option<u64>,
}

/// One group's lessons of one day: the students expected at them (active students times
/// lessons), those marked present or late, and of those, by QR (as the rules count QR).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDay {
    pub group: String,
    pub date: Date,
    pub expected: u64,
    pub attended: u64,
    pub qr: u64,
}

impl GroupDay {
    /// Attended of expected, in thousandths; None without anyone expected.
    pub fn attended_per_mille(&self) -> Option<u64> {
        (self.expected > 0).then(|| self.attended.min(self.expected) * 1000 / self.expected)
    }
}

/// Every group's attendance per lesson day from `from` through `through`, by group then
/// date; a day without a group's lessons has no row.
pub fn group_days(
    connection: &Connection,
    from: Date,
    through: Date,
    rules: &CoverageRules,
) -> rusqlite::Result<Vec<GroupDay>> {
    connection
        .prepare_cached(
            "WITH enrolled AS (
                 SELECT group_id, COUNT(*) AS students FROM students
                 WHERE status = 'active' GROUP BY group_id),
             marked AS (
                 SELECT m.lesson_id,
                        COUNT(CASE WHEN m.counts_as_present THEN 1 END) AS attended,
                        COUNT(CASE WHEN m.counts_as_present
                                    AND (m.method IN ('qr_phone', 'qr_kiosk')
                                         OR (?3 AND m.method = 'qr_typed'))
                              THEN 1 END) AS qr
                 FROM latest_marks m JOIN lessons l ON l.id = m.lesson_id
                 WHERE l.date BETWEEN ?1 AND ?2
                 GROUP BY m.lesson_id)
             SELECT g.code, l.date, SUM(COALESCE(e.students, 0)),
                    SUM(COALESCE(k.attended, 0)), SUM(COALESCE(k.qr, 0))
             FROM lessons l
             JOIN study_groups g ON g.id = l.group_id
             LEFT JOIN enrolled e ON e.group_id = l.group_id
             LEFT JOIN marked k ON k.lesson_id = l.id
             WHERE l.date BETWEEN ?1 AND ?2
             GROUP BY g.code, l.date
             ORDER BY g.code, l.date",
        )?
        .query_map(
            rusqlite::params![
                from.to_string(),
                through.to_string(),
                rules.typed_code_counts_as_qr
            ],
            |row| {
                let date: String = row.get(1)?;
                Ok((row.get(0)?, date, row.get(2)?, row.get(3)?, row.get(4)?))
            },
        )?
        .filter_map(|row| match row {
            Ok((group, date, expected, attended, qr)) => Some(Ok(GroupDay {
                group,
                date: Date::parse(&date).ok()?,
                expected,
                attended,
                qr,
            })),
            Err(error) => Some(Err(error)),
        })
        .collect()
}

/// The month's coverage report as of `today` and its weekly trend: what the dashboard
/// shows, from one read of the month's tallies.
pub fn month_figures(
    connection: &Connection,
    month: Month,
    today: Date,
    rules: &CoverageRules,
) -> rusqlite::Result<(CoverageReport, CoverageTrend)> {
    let tally = MonthTally::read(connection, month, None)?;
    let report = report_of(month, &tally.through(month.last_day(), rules), rules);
    Ok((report, weekly_trend(&tally, month, today, rules)))
}

fn weekly_trend(
    tally: &MonthTally,
    month: Month,
    today: Date,
    rules: &CoverageRules,
) -> CoverageTrend {
    let college_through = |through: Date| {
        let students = tally.through(through, rules);
        let coverage = coverage_of(
            "college",
            &students.iter().collect::<Vec<_>>(),
            rules.student_qr_share,
            rules.min_coverage,
        );
        // A span before any mark is no figure, not 0%.
        coverage
            .coverage_per_mille
            .filter(|_| coverage.present_marks > 0)
    };
    let mut days = Vec::new();
    let mut day = month.first_day();
    while day <= month.last_day() && day <= today {
        days.push((day.to_string(), college_through(day)));
        day = day.add_days(1);
    }
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
        // A week ends on one of the days already figured, which start on the 1st.
        let index = (through.days_since_epoch() - month.first_day().days_since_epoch()) as usize;
        let figure = days.get(index).and_then(|(_, figure)| *figure);
        weeks.push((through.to_string(), figure));
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
    CoverageTrend {
        weeks,
        days,
        projected_month_end,
    }
}

/// The student-days whose `mark_tally` row differs from what the marks add up to: empty
/// unless someone edited the tally (or the trigger that keeps it) behind the agent's back.
pub fn tally_mismatches(connection: &Connection) -> rusqlite::Result<Vec<(String, String)>> {
    let mut statement = connection.prepare(
        "WITH recomputed AS (
             SELECT l.date, e.student_iin,
                    SUM(e.counts_as_present) AS present,
                    SUM(e.counts_as_present AND e.method IN ('qr_phone', 'qr_kiosk')) AS qr,
                    SUM(e.counts_as_present AND e.method = 'qr_typed') AS typed
             FROM latest_marks e JOIN lessons l ON l.id = e.lesson_id
             GROUP BY l.date, e.student_iin),
         kept AS (SELECT date, student_iin, present, qr, typed FROM mark_tally)
         SELECT date, student_iin FROM (SELECT * FROM recomputed EXCEPT SELECT * FROM kept)
         UNION
         SELECT date, student_iin FROM (SELECT * FROM kept EXCEPT SELECT * FROM recomputed)
         ORDER BY 1, 2",
    )?;
    let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
    rows.collect()
}
