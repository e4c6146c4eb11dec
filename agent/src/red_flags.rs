//! The red flags the agent raises itself (design §5.7), each with its threshold in
//! config. They are findings for a person to look at, never changes to the data.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::rc::Rc;

use kasip_core::{CollegeTimezone, Date, Month, Sentence, Text};
use rusqlite::Connection;
use serde::Serialize;

use crate::coverage::{student_months, CoverageRules};

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RedFlag {
    /// Stable name: idle_group, unlicensed_site, beneficiary_without_attendance,
    /// shared_device, two_rooms_at_once, manual_share_outlier, in_class_not_on_campus,
    /// empty_lesson, binding_burst, check_in_burst, hand_marked_student.
    pub kind: &'static str,
    /// Who or what it is about: a group code, site, IIN, device or teacher.
    pub subject: String,
    /// What was seen, in words an admin can check (in any language).
    pub detail: Sentence,
}

/// Thresholds from `[red_flags]` in config.
#[derive(Debug, Clone)]
pub struct RedFlagRules {
    pub idle_working_days: u32,
    /// Normalised (trimmed, lower case); empty turns the site check off.
    pub licensed_addresses: Vec<String>,
    pub students_per_device: u32,
    /// A teacher's manual share above the median by more than this (thousandths) flags.
    pub manual_share_margin_per_mille: u64,
    pub manual_share_min_marks: u64,
}

/// Everything the red flags read of the college's settings.
#[derive(Debug, Clone)]
pub struct RedFlagSettings {
    pub rules: RedFlagRules,
    /// What counts as QR (the beneficiary flag reads the month's marks through it).
    pub coverage: CoverageRules,
    /// The college's zone: entrance scans are counted by local day.
    pub timezone: CollegeTimezone,
}

/// What the flags need of a lesson, shared by all of its marks.
struct MarkedLesson {
    id: i64,
    date: Date,
    start: String,
    end: String,
    place: String,
    /// The lesson's site for offline lessons; empty online or when unknown.
    site: String,
    teacher_iin: String,
}

/// The latest mark per lesson and student in the month. A large college's month holds
/// 630,000 of them, all in memory while the flags are computed: each is 40 bytes with
/// no allocation of its own (with the lesson's texts copied into each it was ~400 bytes
/// in six allocations, and the 30-minute soak grew with the month's size).
struct MonthMark {
    student_iin: Rc<str>,
    lesson: Rc<MarkedLesson>,
    present: bool,
    manual: bool,
}

fn text_at<'row>(row: &'row rusqlite::Row<'_>, index: usize) -> rusqlite::Result<&'row str> {
    row.get_ref(index)?.as_str().map_err(|error| {
        rusqlite::Error::FromSqlConversionFailure(index, rusqlite::types::Type::Text, error.into())
    })
}

fn month_marks(connection: &Connection, month: Month) -> rusqlite::Result<Vec<MonthMark>> {
    let (first_day, last_day) = (month.first_day().to_string(), month.last_day().to_string());
    let mut statement = connection.prepare(
        "SELECT l.id, l.date, l.start_time, l.end_time,
                CASE l.mode WHEN 'online' THEN 'online' ELSE COALESCE(s.name, '') || ' ' || l.room END,
                CASE l.mode WHEN 'online' THEN '' ELSE COALESCE(s.name, '') END,
                l.teacher_iin
         FROM lessons l LEFT JOIN sites s ON s.id = l.site_id
         WHERE l.date BETWEEN ?1 AND ?2",
    )?;
    let mut lessons: HashMap<i64, Rc<MarkedLesson>> = HashMap::new();
    let mut rows = statement.query([&first_day, &last_day])?;
    while let Some(row) = rows.next()? {
        let Ok(date) = Date::parse(text_at(row, 1)?) else {
            continue;
        };
        let id = row.get(0)?;
        let lesson = MarkedLesson {
            id,
            date,
            start: row.get(2)?,
            end: row.get(3)?,
            place: row.get(4)?,
            site: row.get(5)?,
            teacher_iin: row.get(6)?,
        };
        lessons.insert(id, Rc::new(lesson));
    }
    let mut statement = connection.prepare(
        "SELECT e.student_iin, e.lesson_id, e.counts_as_present, e.method
         FROM latest_marks e JOIN lessons l ON l.id = e.lesson_id
         WHERE l.date BETWEEN ?1 AND ?2",
    )?;
    let mut students: HashSet<Rc<str>> = HashSet::new();
    let mut marks = Vec::new();
    let mut rows = statement.query([&first_day, &last_day])?;
    while let Some(row) = rows.next()? {
        let Some(lesson) = lessons.get(&row.get::<_, i64>(1)?) else {
            continue;
        };
        let iin = text_at(row, 0)?;
        let student_iin = match students.get(iin) {
            Some(interned) => Rc::clone(interned),
            None => {
                let interned: Rc<str> = Rc::from(iin);
                students.insert(Rc::clone(&interned));
                interned
            }
        };
        marks.push(MonthMark {
            student_iin,
            lesson: Rc::clone(lesson),
            present: row.get(2)?,
            manual: text_at(row, 3)? == "manual",
        });
    }
    Ok(marks)
}

/// Every red flag of `month`, looking at days up to `today`.
pub fn red_flags_for_month(
    connection: &Connection,
    month: Month,
    today: Date,
    settings: &RedFlagSettings,
) -> rusqlite::Result<Vec<RedFlag>> {
    // The national policy tightens the thresholds and names the licensed addresses.
    let (coverage, policy) = crate::coverage::rules_in_force(connection, &settings.coverage)?;
    let mut rules = settings.rules.clone();
    if let Some(policy) = policy.filter(|policy| !policy.licensed_addresses.is_empty()) {
        let national: Vec<String> = policy
            .licensed_addresses
            .iter()
            .map(|address| address.trim().to_lowercase())
            .collect();
        // A college may only narrow the list (never to nothing: that turns the check off).
        let narrowed: Vec<String> = rules
            .licensed_addresses
            .iter()
            .filter(|address| national.contains(address))
            .cloned()
            .collect();
        rules.licensed_addresses = if narrowed.is_empty() {
            national
        } else {
            narrowed
        };
    }
    let settings = &RedFlagSettings {
        rules,
        coverage,
        timezone: settings.timezone.clone(),
    };
    let rules = &settings.rules;
    let marks = month_marks(connection, month)?;
    let mut flags = Vec::new();
    idle_groups(connection, month, today, rules, &mut flags)?;
    unlicensed_sites(connection, month, rules, &mut flags)?;
    // Only QR-backed attendance counts: a hand mark for every lesson once cleared this.
    for student in student_months(connection, month, None, &settings.coverage)? {
        if student.qr == 0 {
            flags.push(RedFlag {
                kind: "beneficiary_without_attendance",
                subject: student.iin.clone(),
                detail: Sentence::new(
                    Text::FlagBeneficiaryWithoutAttendance,
                    &[
                        ("name", &student.name),
                        ("group", &student.group),
                        ("month", &month),
                    ],
                ),
            });
        }
    }
    shared_devices(connection, month, rules, &mut flags)?;
    two_rooms_at_once(&marks, &mut flags);
    manual_share_outliers(&marks, rules, &mut flags);
    in_class_not_on_campus(connection, month, &settings.timezone, &marks, &mut flags)?;
    empty_lessons(connection, month, today, &mut flags)?;
    hand_marked_students(connection, month, rules, &mut flags)?;
    binding_bursts(connection, month, &settings.timezone, &mut flags)?;
    check_in_bursts(connection, month, &mut flags)?;
    Ok(flags)
}

/// A lesson opened (so it counts as held) with nobody, or almost nobody, present: at
/// most one student, or a tenth of the group. Lessons of `today` may still fill.
fn empty_lessons(
    connection: &Connection,
    month: Month,
    today: Date,
    flags: &mut Vec<RedFlag>,
) -> rusqlite::Result<()> {
    let last = if today <= month.last_day() {
        today.add_days(-1)
    } else {
        month.last_day()
    };
    let mut statement = connection.prepare(
        "SELECT l.id, g.code, l.date, l.start_time,
                (SELECT COUNT(*) FROM latest_marks e WHERE e.lesson_id = l.id AND e.counts_as_present),
                (SELECT COUNT(*) FROM students s WHERE s.group_id = l.group_id AND s.status = 'active')
         FROM lessons l JOIN study_groups g ON g.id = l.group_id
         WHERE l.date BETWEEN ?1 AND ?2
           AND EXISTS (SELECT 1 FROM lesson_openings o WHERE o.lesson_id = l.id)
         ORDER BY l.date, l.start_time",
    )?;
    let rows = statement.query_map([month.first_day().to_string(), last.to_string()], |row| {
        Ok((
            row.get::<_, String>(1)?,
            row.get::<_, String>(2)?,
            row.get::<_, String>(3)?,
            row.get::<_, i64>(4)?,
            row.get::<_, i64>(5)?,
        ))
    })?;
    for row in rows {
        let (group, date, start, present, members) = row?;
        if present == 0 || (members >= 3 && (present <= 1 || present * 10 <= members)) {
            flags.push(RedFlag {
                kind: "empty_lesson",
                subject: group,
                detail: Sentence::new(
                    Text::FlagEmptyLesson,
                    &[
                        ("date", &date),
                        ("start", &start),
                        ("present", &present),
                        ("members", &members),
                    ],
                ),
            });
        }
    }
    Ok(())
}

/// Students with fewer present marks in the month are not compared with their group.
const HAND_SHARE_MIN_PRESENT: i64 = 10;

/// A student whose share of hand-entered presence is far above their classmates': a
/// teacher (or admin) keeping one absent student present by hand.
fn hand_marked_students(
    connection: &Connection,
    month: Month,
    rules: &RedFlagRules,
    flags: &mut Vec<RedFlag>,
) -> rusqlite::Result<()> {
    let mut statement = connection.prepare(
        "SELECT g.code, e.student_iin,
                SUM(e.counts_as_present AND e.method IN ('manual', 'late_entry')),
                SUM(e.counts_as_present)
         FROM latest_marks e JOIN lessons l ON l.id = e.lesson_id
         JOIN study_groups g ON g.id = l.group_id
         WHERE l.date BETWEEN ?1 AND ?2
         GROUP BY g.code, e.student_iin ORDER BY g.code, e.student_iin",
    )?;
    let mut groups: BTreeMap<String, Vec<(String, i64, i64)>> = BTreeMap::new();
    let rows = statement.query_map(
        [month.first_day().to_string(), month.last_day().to_string()],
        |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, i64>(2)?,
                row.get::<_, i64>(3)?,
            ))
        },
    )?;
    for row in rows {
        let (group, student, manual, present) = row?;
        groups
            .entry(group)
            .or_default()
            .push((student, manual, present));
    }
    for (group, students) in groups {
        let (all_manual, all_present) =
            students.iter().fold((0, 0), |(manual, present), student| {
                (manual + student.1, present + student.2)
            });
        for (student, manual, present) in &students {
            // Compared with the classmates, not with a group average they pull up.
            let (peers_manual, peers_present) = (all_manual - manual, all_present - present);
            if *present < HAND_SHARE_MIN_PRESENT || peers_present == 0 {
                continue;
            }
            let share = (manual * 1000 / present) as u64;
            let peers = (peers_manual * 1000 / peers_present) as u64;
            if share >= 500 && share > peers + rules.manual_share_margin_per_mille {
                flags.push(RedFlag {
                    kind: "hand_marked_student",
                    subject: student.clone(),
                    detail: Sentence::new(
                        Text::FlagHandMarkedStudent,
                        &[
                            ("manual", manual),
                            ("present", present),
                            ("share", &format!("{}.{}%", share / 10, share % 10)),
                            ("group", &group),
                            ("peers", &format!("{}.{}%", peers / 10, peers % 10)),
                        ],
                    ),
                });
            }
        }
    }
    Ok(())
}

/// Bindings this close together are one person binding many phones (a student binds
/// once, handed a code in class).
const BINDING_BURST: usize = 10;
const BINDING_BURST_SECS: i64 = 300;
/// Check-ins from this many distinct phones within this many seconds of one another in
/// one lesson are a script, not a queue of students at a projector.
const CHECK_IN_BURST: usize = 10;
const CHECK_IN_BURST_SECS: i64 = 3;

/// The largest number of times in `times` (sorted) within `window` seconds, and the
/// first time of that run.
fn densest(times: &[i64], window: i64) -> (usize, i64) {
    let mut best = (0, 0);
    let mut start = 0;
    for (end, at) in times.iter().enumerate() {
        while at - times[start] > window {
            start += 1;
        }
        if end + 1 - start > best.0 {
            best = (end + 1 - start, times[start]);
        }
    }
    best
}

fn binding_bursts(
    connection: &Connection,
    month: Month,
    timezone: &CollegeTimezone,
    flags: &mut Vec<RedFlag>,
) -> rusqlite::Result<()> {
    let times: Vec<i64> = connection
        .prepare(
            "SELECT bound_at FROM device_bindings WHERE code_issued_by != 'demo' ORDER BY bound_at",
        )?
        .query_map([], |row| row.get(0))?
        .collect::<rusqlite::Result<Vec<i64>>>()?
        .into_iter()
        .filter(|at| crate::clock::local_date(timezone, *at).calendar_month() == month)
        .collect();
    let (count, from) = densest(&times, BINDING_BURST_SECS);
    if count >= BINDING_BURST {
        let at = format!(
            "{} {}",
            crate::clock::local_date(timezone, from),
            crate::clock::local_time_text(timezone, from)
        );
        flags.push(RedFlag {
            kind: "binding_burst",
            subject: at.clone(),
            detail: Sentence::new(
                Text::FlagBindingBurst,
                &[
                    ("count", &count),
                    ("minutes", &(BINDING_BURST_SECS / 60)),
                    ("at", &at),
                ],
            ),
        });
    }
    Ok(())
}

fn check_in_bursts(
    connection: &Connection,
    month: Month,
    flags: &mut Vec<RedFlag>,
) -> rusqlite::Result<()> {
    let mut statement = connection.prepare(
        "SELECT e.lesson_id, g.code, l.date, l.start_time, e.recorded_at, e.device_id
         FROM attendance_events e JOIN lessons l ON l.id = e.lesson_id
         JOIN study_groups g ON g.id = l.group_id
         WHERE l.date BETWEEN ?1 AND ?2 AND e.method IN ('qr_phone', 'qr_typed')
         ORDER BY e.lesson_id, e.recorded_at",
    )?;
    // lesson → (group, date, start, [(time, device)])
    type CheckIns = (String, String, String, Vec<(i64, String)>);
    let mut lessons: BTreeMap<i64, CheckIns> = BTreeMap::new();
    let rows = statement.query_map(
        [month.first_day().to_string(), month.last_day().to_string()],
        |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, String>(3)?,
                row.get::<_, i64>(4)?,
                row.get::<_, Option<String>>(5)?.unwrap_or_default(),
            ))
        },
    )?;
    for row in rows {
        let (lesson, group, date, start, at, device) = row?;
        lessons
            .entry(lesson)
            .or_insert_with(|| (group, date, start, Vec::new()))
            .3
            .push((at, device));
    }
    for (group, date, start, check_ins) in lessons.into_values() {
        // The densest window counted in distinct devices.
        let mut most = 0;
        let mut begin = 0;
        for end in 0..check_ins.len() {
            while check_ins[end].0 - check_ins[begin].0 > CHECK_IN_BURST_SECS {
                begin += 1;
            }
            let devices: HashSet<&str> = check_ins[begin..=end]
                .iter()
                .map(|(_, device)| device.as_str())
                .collect();
            most = most.max(devices.len());
        }
        if most >= CHECK_IN_BURST {
            flags.push(RedFlag {
                kind: "check_in_burst",
                subject: group,
                detail: Sentence::new(
                    Text::FlagCheckInBurst,
                    &[
                        ("devices", &most),
                        ("seconds", &CHECK_IN_BURST_SECS),
                        ("date", &date),
                        ("start", &start),
                    ],
                ),
            });
        }
    }
    Ok(())
}

/// Students marked present in class on days they never passed the entrance kiosk of
/// that site. Only sites with an entrance kiosk, and only from the day it was enrolled:
/// without one, nobody's entry is recorded.
fn in_class_not_on_campus(
    connection: &Connection,
    month: Month,
    timezone: &CollegeTimezone,
    marks: &[MonthMark],
    flags: &mut Vec<RedFlag>,
) -> rusqlite::Result<()> {
    let local_date = |unix: i64| crate::clock::local_date(timezone, unix);
    let mut statement = connection.prepare(
        "SELECT site, MIN(enrolled_at) FROM kiosks
         WHERE place = 'entrance' AND enrolled_at IS NOT NULL GROUP BY site",
    )?;
    let watched: HashMap<String, Date> = statement
        .query_map([], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?
        .into_iter()
        .map(|(site, enrolled_at)| (site, local_date(enrolled_at)))
        .collect();
    if watched.is_empty() {
        return Ok(());
    }
    let mut statement = connection.prepare(
        "SELECT s.student_iin, s.scanned_at, k.site FROM kiosk_scans s JOIN kiosks k ON k.id = s.kiosk_id
         WHERE s.outcome = 'presence'",
    )?;
    let mut entered: std::collections::HashSet<(String, Date, String)> = Default::default();
    for row in statement.query_map([], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, i64>(1)?,
            row.get::<_, String>(2)?,
        ))
    })? {
        let (iin, at, site) = row?;
        let date = local_date(at);
        if date.calendar_month() == month {
            entered.insert((iin, date, site));
        }
    }
    // student → (site, days without an entry, first such day)
    let mut missing: BTreeMap<String, (String, BTreeMap<Date, ()>)> = BTreeMap::new();
    for mark in marks
        .iter()
        .filter(|mark| mark.present && !mark.lesson.site.is_empty())
    {
        let lesson = &mark.lesson;
        let Some(since) = watched.get(&lesson.site) else {
            continue;
        };
        if lesson.date < *since
            || entered.contains(&(
                mark.student_iin.to_string(),
                lesson.date,
                lesson.site.clone(),
            ))
        {
            continue;
        }
        missing
            .entry(mark.student_iin.to_string())
            .or_insert_with(|| (lesson.site.clone(), BTreeMap::new()))
            .1
            .insert(lesson.date, ());
    }
    for (student, (site, days)) in missing {
        let first = days
            .keys()
            .next()
            .map(ToString::to_string)
            .unwrap_or_default();
        flags.push(RedFlag {
            kind: "in_class_not_on_campus",
            subject: student,
            detail: Sentence::new(
                Text::FlagInClassNotOnCampus,
                &[("site", &site), ("days", &days.len()), ("first", &first)],
            ),
        });
    }
    Ok(())
}

/// Groups with a run of at least N working days (Mon–Fri) without a lesson held.
fn idle_groups(
    connection: &Connection,
    month: Month,
    today: Date,
    rules: &RedFlagRules,
    flags: &mut Vec<RedFlag>,
) -> rusqlite::Result<()> {
    let last = if today < month.last_day() {
        today
    } else {
        month.last_day()
    };
    let mut statement = connection.prepare(
        "SELECT g.code,
                (SELECT group_concat(DISTINCT l.date) FROM lessons l
                 WHERE l.group_id = g.id AND l.date BETWEEN ?1 AND ?2
                   AND EXISTS (SELECT 1 FROM latest_marks e
                               WHERE e.lesson_id = l.id AND e.counts_as_present))
         FROM study_groups g
         WHERE EXISTS (SELECT 1 FROM students s WHERE s.group_id = g.id AND s.status = 'active')",
    )?;
    let rows = statement.query_map([month.first_day().to_string(), last.to_string()], |row| {
        Ok((row.get::<_, String>(0)?, row.get::<_, Option<String>>(1)?))
    })?;
    for row in rows {
        let (group, held) = row?;
        let held: Vec<String> = held
            .map(|dates| dates.split(',').map(str::to_owned).collect())
            .unwrap_or_default();
        let (mut run, mut longest, mut run_start, mut longest_span) =
            (0u32, 0u32, month.first_day(), None);
        let mut day = month.first_day();
        while day <= last {
            if day.iso_weekday() <= 5 {
                if held.contains(&day.to_string()) {
                    run = 0;
                } else {
                    if run == 0 {
                        run_start = day;
                    }
                    run += 1;
                    if run > longest {
                        longest = run;
                        longest_span = Some((run_start, day));
                    }
                }
            }
            day = day.add_days(1);
        }
        if longest >= rules.idle_working_days {
            if let Some((from, to)) = longest_span {
                flags.push(RedFlag {
                    kind: "idle_group",
                    subject: group,
                    detail: Sentence::new(
                        Text::FlagIdleGroup,
                        &[("days", &longest), ("from", &from), ("to", &to)],
                    ),
                });
            }
        }
    }
    Ok(())
}

fn unlicensed_sites(
    connection: &Connection,
    month: Month,
    rules: &RedFlagRules,
    flags: &mut Vec<RedFlag>,
) -> rusqlite::Result<()> {
    if rules.licensed_addresses.is_empty() {
        return Ok(());
    }
    // Every address the site had during the month: the one in force at its start and
    // each it changed to (a re-import to a licensed address does not clear the month).
    let (month_start, month_end) = (
        month.first_day().days_since_epoch() * 86_400,
        month.last_day().add_days(1).days_since_epoch() * 86_400,
    );
    let mut statement = connection.prepare(
        "SELECT s.name, a.address, COUNT(DISTINCT l.id)
         FROM lessons l JOIN sites s ON s.id = l.site_id
         JOIN (SELECT site_id, address FROM site_address_events e
               WHERE e.at >= ?3 AND e.at < ?4
                  OR e.id = (SELECT MAX(id) FROM site_address_events f
                             WHERE f.site_id = e.site_id AND f.at < ?3)
               UNION SELECT id, address FROM sites) a ON a.site_id = s.id
         WHERE l.date BETWEEN ?1 AND ?2 AND l.mode = 'offline' AND a.address != ''
         GROUP BY s.id, a.address ORDER BY s.name, a.address",
    )?;
    let rows = statement.query_map(
        rusqlite::params![
            month.first_day().to_string(),
            month.last_day().to_string(),
            month_start,
            month_end
        ],
        |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, i64>(2)?,
            ))
        },
    )?;
    for row in rows {
        let (site, address, lessons) = row?;
        if !rules
            .licensed_addresses
            .contains(&address.trim().to_lowercase())
        {
            flags.push(RedFlag {
                kind: "unlicensed_site",
                subject: site,
                detail: Sentence::new(
                    Text::FlagUnlicensedSite,
                    &[("lessons", &lessons), ("address", &address)],
                ),
            });
        }
    }
    Ok(())
}

fn shared_devices(
    connection: &Connection,
    month: Month,
    rules: &RedFlagRules,
    flags: &mut Vec<RedFlag>,
) -> rusqlite::Result<()> {
    let mut statement = connection.prepare(
        "SELECT e.device_id, COUNT(DISTINCT e.student_iin), group_concat(DISTINCT e.student_iin)
         FROM attendance_events e JOIN lessons l ON l.id = e.lesson_id
         WHERE l.date BETWEEN ?1 AND ?2 AND e.device_id IS NOT NULL
           AND e.method IN ('qr_phone', 'qr_typed')
         GROUP BY e.device_id HAVING COUNT(DISTINCT e.student_iin) >= ?3",
    )?;
    let rows = statement.query_map(
        rusqlite::params![
            month.first_day().to_string(),
            month.last_day().to_string(),
            rules.students_per_device
        ],
        |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, String>(2)?,
            ))
        },
    )?;
    for row in rows {
        let (device, students, iins) = row?;
        flags.push(RedFlag {
            kind: "shared_device",
            subject: device.chars().take(12).collect(),
            detail: Sentence::new(
                Text::FlagSharedDevice,
                &[("students", &students), ("iins", &iins)],
            ),
        });
    }
    Ok(())
}

fn two_rooms_at_once(marks: &[MonthMark], flags: &mut Vec<RedFlag>) {
    let mut by_student_day: BTreeMap<(&str, Date), Vec<&MonthMark>> = BTreeMap::new();
    for mark in marks.iter().filter(|mark| mark.present) {
        by_student_day
            .entry((&*mark.student_iin, mark.lesson.date))
            .or_default()
            .push(mark);
    }
    for ((student, date), day_marks) in by_student_day {
        for (index, first) in day_marks.iter().enumerate() {
            let first = &first.lesson;
            for second in &day_marks[index + 1..] {
                let second = &second.lesson;
                // HH:MM text compares in time order.
                let overlap = first.start < second.end && second.start < first.end;
                if overlap && first.place != second.place && first.id != second.id {
                    flags.push(RedFlag {
                        kind: "two_rooms_at_once",
                        subject: student.to_owned(),
                        detail: Sentence::new(
                            Text::FlagTwoRoomsAtOnce,
                            &[
                                (
                                    "first",
                                    &format!(
                                        "{} ({}–{})",
                                        first.place.trim(),
                                        first.start,
                                        first.end
                                    ),
                                ),
                                (
                                    "second",
                                    &format!(
                                        "{} ({}–{})",
                                        second.place.trim(),
                                        second.start,
                                        second.end
                                    ),
                                ),
                                ("date", &date),
                            ],
                        ),
                    });
                }
            }
        }
    }
}

fn manual_share_outliers(marks: &[MonthMark], rules: &RedFlagRules, flags: &mut Vec<RedFlag>) {
    let mut per_teacher: HashMap<&str, (u64, u64)> = HashMap::new();
    for mark in marks.iter().filter(|mark| mark.present) {
        let entry = per_teacher.entry(&mark.lesson.teacher_iin).or_default();
        entry.0 += u64::from(mark.manual);
        entry.1 += 1;
    }
    let mut shares: Vec<(&str, u64, u64, u64)> = per_teacher
        .into_iter()
        .filter(|(_, (_, total))| *total >= rules.manual_share_min_marks)
        .map(|(teacher, (manual, total))| (teacher, manual * 1000 / total, manual, total))
        .collect();
    if shares.len() < 2 {
        return; // no peers to compare with
    }
    shares.sort_by_key(|(_, share, ..)| *share);
    let median = shares[shares.len() / 2].1;
    for (teacher, share, manual, total) in shares {
        if share > median + rules.manual_share_margin_per_mille {
            flags.push(RedFlag {
                kind: "manual_share_outlier",
                subject: teacher.to_owned(),
                detail: Sentence::new(
                    Text::FlagManualShareOutlier,
                    &[
                        ("manual", &manual),
                        ("total", &total),
                        ("share", &format!("{}.{}%", share / 10, share % 10)),
                        ("median", &format!("{}.{}%", median / 10, median % 10)),
                    ],
                ),
            });
        }
    }
}
/// A red flag's kind as people read it; None for a kind this build does not name.
pub fn kind_text(kind: &str) -> Option<kasip_core::Text> {
    use kasip_core::Text;
    Some(match kind {
        "beneficiary_without_attendance" => Text::FlagKindBeneficiaryWithoutAttendance,
        "binding_burst" => Text::FlagKindBindingBurst,
        "check_in_burst" => Text::FlagKindCheckInBurst,
        "empty_lesson" => Text::FlagKindEmptyLesson,
        "hand_marked_student" => Text::FlagKindHandMarkedStudent,
        "idle_group" => Text::FlagKindIdleGroup,
        "in_class_not_on_campus" => Text::FlagKindInClassNotOnCampus,
        "manual_share_outlier" => Text::FlagKindManualShareOutlier,
        "shared_device" => Text::FlagKindSharedDevice,
        "two_rooms_at_once" => Text::FlagKindTwoRoomsAtOnce,
        "unlicensed_site" => Text::FlagKindUnlicensedSite,
        _ => return None,
    })
}
