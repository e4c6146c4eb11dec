//! Lessons from the timetable: listing a day, opening and closing, and whether a lesson
//! is open at a given moment.

use kasip_core::{CollegeTimezone, Date, TimeOfDay};
use ring::rand::{SecureRandom, SystemRandom};
use rusqlite::{Connection, OptionalExtension};
use serde::Serialize;

/// What lessons need of the college's settings: its zone and the lesson's window, from
/// `open_early_mins` before its start to `auto_close_grace_mins` after its end. Outside it
/// a lesson cannot be opened, takes no check-in, and a staff mark is a late entry.
#[derive(Debug, Clone)]
pub struct LessonTimes {
    pub timezone: CollegeTimezone,
    pub open_early_mins: u32,
    pub auto_close_grace_mins: u32,
}

/// The largest `lesson.open_early_mins`: a code shown earlier would let a student check
/// in and leave before the lesson begins.
pub const MAX_OPEN_EARLY_MINS: u32 = 15;

/// When a lesson may be opened and take marks: [opens_at, closes_at], Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LessonWindow {
    pub starts_at: i64,
    pub opens_at: i64,
    pub closes_at: i64,
}

/// Where a moment falls against a lesson's window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowPosition {
    NotYet,
    Within,
    Ended,
}

impl LessonWindow {
    /// The window of a lesson stored as `date`, `start`, `end`; None for a hand-edited row.
    pub fn of_stored(date: &str, start: &str, end: &str, times: &LessonTimes) -> Option<Self> {
        let starts_at = stored_to_unix(date, start, times)?;
        let ends_at = stored_to_unix(date, end, times)?;
        Some(Self {
            starts_at,
            opens_at: starts_at - i64::from(times.open_early_mins) * 60,
            closes_at: ends_at + i64::from(times.auto_close_grace_mins) * 60,
        })
    }

    pub fn position(&self, now: i64) -> WindowPosition {
        if now < self.opens_at {
            WindowPosition::NotYet
        } else if now > self.closes_at {
            WindowPosition::Ended
        } else {
            WindowPosition::Within
        }
    }
}

/// A lesson's window by id; None when there is no such lesson.
pub fn window_of(
    connection: &Connection,
    lesson_id: i64,
    times: &LessonTimes,
) -> rusqlite::Result<Option<LessonWindow>> {
    let row: Option<(String, String, String)> = connection
        .prepare_cached("SELECT date, start_time, end_time FROM lessons WHERE id = ?1")?
        .query_row([lesson_id], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })
        .optional()?;
    Ok(row.and_then(|(date, start, end)| LessonWindow::of_stored(&date, &start, &end, times)))
}

/// Why a lesson could not be opened or closed.
#[derive(Debug, thiserror::Error)]
pub enum LessonError {
    #[error("there is no lesson {0}; see `kasip-agent lesson list --date YYYY-MM-DD`")]
    NotFound(i64),
    #[error("lesson {0} was already closed; a closed lesson cannot be reopened")]
    AlreadyClosed(i64),
    #[error("lesson {0} is not open")]
    NotOpen(i64),
    #[error("lesson {0} is not open yet: it can be opened from {1} (its start, less lesson.open_early_mins)")]
    NotOpenYet(i64, String),
    #[error("lesson {0} has ended; an admin can enter its marks as late entries, with a reason")]
    Ended(i64),
    #[error("the system random generator failed")]
    Random,
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
}

impl LessonError {
    /// The sentence a teacher's page shows, where there is one.
    pub fn text(&self) -> Option<kasip_core::Text> {
        use kasip_core::Text;
        match self {
            Self::NotFound(_) => Some(Text::MarkUnknownLesson),
            Self::AlreadyClosed(_) => Some(Text::LessonAlreadyClosed),
            Self::NotOpen(_) => Some(Text::LessonClosed),
            Self::NotOpenYet(..) => Some(Text::LessonNotOpenYet),
            Self::Ended(_) => Some(Text::LessonEnded),
            Self::Random | Self::Sqlite(_) => None,
        }
    }
}

impl LessonState {
    /// What a projector shows instead of a code, in words; None while open.
    pub fn notice(self) -> Option<kasip_core::Text> {
        use kasip_core::Text;
        match self {
            Self::Scheduled => Some(Text::LessonNotOpenYet),
            Self::Open => None,
            Self::Closed => Some(Text::LessonClosed),
            Self::Ended => Some(Text::LessonEnded),
        }
    }
}

/// Where a lesson stands at a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LessonState {
    /// Not opened, and its window has not passed.
    Scheduled,
    Open,
    /// Opened, then closed by staff within its window.
    Closed,
    /// Its window has passed, opened or not.
    Ended,
}

/// One lesson as the teacher's list and the display page show it.
#[derive(Debug, Clone, Serialize)]
pub struct LessonSummary {
    pub id: i64,
    pub date: String,
    pub start: String,
    pub end: String,
    pub group: String,
    pub discipline: String,
    pub teacher_iin: String,
    pub teacher_name: String,
    pub site: String,
    pub room: String,
    pub mode: String,
    pub state: LessonState,
    /// Students whose latest mark is present or late.
    pub checked_in: i64,
    /// Students of the group who are active (not on leave, expelled or deceased).
    pub expected: i64,
}

/// The Unix time of a local date and time in the college's zone.
pub fn local_to_unix(date: Date, time: TimeOfDay, times: &LessonTimes) -> i64 {
    date.days_since_epoch() * 86_400 + i64::from(time.minutes_after_midnight()) * 60
        - times.timezone.offset_seconds()
}

/// Parses stored `date` and `HH:MM` text back into Unix time; stored values were
/// validated on import, so a failure means a hand-edited database.
pub fn stored_to_unix(date: &str, time: &str, times: &LessonTimes) -> Option<i64> {
    Some(local_to_unix(
        Date::parse(date).ok()?,
        TimeOfDay::parse(time).ok()?,
        times,
    ))
}

/// An opening's facts needed to accept check-ins.
#[derive(Debug, Clone)]
pub struct OpenLesson {
    pub lesson_id: i64,
    pub group_id: i64,
    pub teacher_iin: String,
    pub qr_key: Vec<u8>,
    pub starts_at: i64,
}

/// group, teacher, date, start, end, QR key, closed at.
type OpeningRow = (i64, String, String, String, String, Vec<u8>, Option<i64>);

/// An opened lesson as stored, before the clock is asked: the mark writer keeps these
/// between check-ins (`marks::Lookups`).
#[derive(Debug, Clone)]
pub struct Opening {
    lesson: OpenLesson,
    window: LessonWindow,
    closed: bool,
}

impl Opening {
    /// The lesson when it is open at `now`: not closed, inside its window (the window,
    /// not only the opening: a clock stepped back must not reopen a lesson).
    pub fn open_at(&self, now: i64) -> Option<OpenLesson> {
        (!self.closed && self.window.position(now) == WindowPosition::Within)
            .then(|| self.lesson.clone())
    }
}

/// The lesson's opening, if it was ever opened.
pub fn opening(
    connection: &Connection,
    lesson_id: i64,
    times: &LessonTimes,
) -> rusqlite::Result<Option<Opening>> {
    let row: Option<OpeningRow> = connection
        .prepare_cached(
            "SELECT l.group_id, l.teacher_iin, l.date, l.start_time, l.end_time, o.qr_key, o.closed_at
             FROM lessons l JOIN lesson_openings o ON o.lesson_id = l.id WHERE l.id = ?1",
        )?
        .query_row([lesson_id], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?, row.get(5)?, row.get(6)?))
        })
        .optional()?;
    let Some((group_id, teacher_iin, date, start, end, qr_key, closed_at)) = row else {
        return Ok(None);
    };
    Ok(
        LessonWindow::of_stored(&date, &start, &end, times).map(|window| Opening {
            lesson: OpenLesson {
                lesson_id,
                group_id,
                teacher_iin,
                qr_key,
                starts_at: window.starts_at,
            },
            window,
            closed: closed_at.is_some(),
        }),
    )
}

/// The lesson when it is open at `now`: opened, not closed, inside its window.
pub fn open_lesson_at(
    connection: &Connection,
    lesson_id: i64,
    now: i64,
    times: &LessonTimes,
) -> rusqlite::Result<Option<OpenLesson>> {
    Ok(opening(connection, lesson_id, times)?.and_then(|opening| opening.open_at(now)))
}

/// Opens a lesson inside its window with a fresh random QR key; opening an open lesson
/// changes nothing.
pub fn open(
    connection: &Connection,
    lesson_id: i64,
    by: &str,
    now: i64,
    times: &LessonTimes,
) -> Result<LessonState, LessonError> {
    let window =
        window_of(connection, lesson_id, times)?.ok_or(LessonError::NotFound(lesson_id))?;
    match window.position(now) {
        WindowPosition::NotYet => {
            let opens = crate::clock::local_time_text(&times.timezone, window.opens_at);
            return Err(LessonError::NotOpenYet(lesson_id, opens));
        }
        WindowPosition::Ended => return Err(LessonError::Ended(lesson_id)),
        WindowPosition::Within => {}
    }
    let opening: Option<Option<i64>> = connection
        .query_row(
            "SELECT closed_at FROM lesson_openings WHERE lesson_id = ?1",
            [lesson_id],
            |row| row.get(0),
        )
        .optional()?;
    match opening {
        Some(Some(_)) => Err(LessonError::AlreadyClosed(lesson_id)),
        Some(None) => Ok(LessonState::Open),
        None => {
            let mut qr_key = [0u8; 32];
            SystemRandom::new()
                .fill(&mut qr_key)
                .map_err(|_| LessonError::Random)?;
            connection.execute(
                "INSERT INTO lesson_openings (lesson_id, qr_key, opened_at, opened_by) VALUES (?1, ?2, ?3, ?4)",
                rusqlite::params![lesson_id, qr_key.to_vec(), now, by],
            )?;
            Ok(LessonState::Open)
        }
    }
}

/// Closes an open lesson: its codes stop working at once.
pub fn close(
    connection: &Connection,
    lesson_id: i64,
    by: &str,
    now: i64,
) -> Result<(), LessonError> {
    let changed = connection.execute(
        "UPDATE lesson_openings SET closed_at = ?2, closed_by = ?3 WHERE lesson_id = ?1 AND closed_at IS NULL",
        rusqlite::params![lesson_id, now, by],
    )?;
    if changed == 1 {
        return Ok(());
    }
    let exists: Option<i64> = connection
        .query_row("SELECT id FROM lessons WHERE id = ?1", [lesson_id], |row| {
            row.get(0)
        })
        .optional()?;
    match exists {
        None => Err(LessonError::NotFound(lesson_id)),
        Some(_) => Err(LessonError::NotOpen(lesson_id)),
    }
}

const SUMMARY_SQL: &str = "
SELECT l.id, l.date, l.start_time, l.end_time, g.code, l.discipline, l.teacher_iin,
       t.last_name || ' ' || t.first_name, COALESCE(s.name, ''), l.room, l.mode,
       o.lesson_id IS NOT NULL, o.closed_at,
       (SELECT COUNT(*) FROM students st WHERE st.group_id = l.group_id AND st.status = 'active'),
       (SELECT COUNT(*) FROM latest_marks e WHERE e.lesson_id = l.id AND e.counts_as_present)
FROM lessons l
JOIN study_groups g ON g.id = l.group_id
JOIN teachers t ON t.iin = l.teacher_iin
LEFT JOIN sites s ON s.id = l.site_id
LEFT JOIN lesson_openings o ON o.lesson_id = l.id";

fn summaries(
    connection: &Connection,
    filter: &str,
    params: &[&dyn rusqlite::ToSql],
    now: i64,
    times: &LessonTimes,
) -> rusqlite::Result<Vec<LessonSummary>> {
    let sql = format!("{SUMMARY_SQL} {filter} ORDER BY l.date, l.start_time, g.code");
    let mut statement = connection.prepare_cached(&sql)?;
    let rows = statement.query_map(params, |row| {
        let date: String = row.get(1)?;
        let start: String = row.get(2)?;
        let end: String = row.get(3)?;
        let opened: bool = row.get(11)?;
        let closed_at: Option<i64> = row.get(12)?;
        let position = LessonWindow::of_stored(&date, &start, &end, times)
            .map_or(WindowPosition::Ended, |window| window.position(now));
        let state = match (position, opened, closed_at) {
            (WindowPosition::Ended, _, _) => LessonState::Ended,
            (_, true, None) => LessonState::Open,
            (_, true, Some(_)) => LessonState::Closed,
            (_, false, _) => LessonState::Scheduled,
        };
        Ok(LessonSummary {
            id: row.get(0)?,
            date,
            start,
            end,
            group: row.get(4)?,
            discipline: row.get(5)?,
            teacher_iin: row.get(6)?,
            teacher_name: row.get(7)?,
            site: row.get(8)?,
            room: row.get(9)?,
            mode: row.get(10)?,
            state,
            expected: row.get(13)?,
            checked_in: row.get(14)?,
        })
    })?;
    rows.collect()
}

/// All lessons of a day.
pub fn list_for_date(
    connection: &Connection,
    date: Date,
    now: i64,
    times: &LessonTimes,
) -> rusqlite::Result<Vec<LessonSummary>> {
    summaries(
        connection,
        "WHERE l.date = ?1",
        &[&date.to_string()],
        now,
        times,
    )
}

/// One lesson, or None.
pub fn summary(
    connection: &Connection,
    lesson_id: i64,
    now: i64,
    times: &LessonTimes,
) -> rusqlite::Result<Option<LessonSummary>> {
    Ok(summaries(connection, "WHERE l.id = ?1", &[&lesson_id], now, times)?.pop())
}

/// The lesson's summary, if `member` may act on it (admins any, teachers their own,
/// curators their groups').
pub fn summary_for(
    connection: &Connection,
    member: &crate::staff::StaffMember,
    lesson_id: i64,
    now: i64,
    times: &LessonTimes,
) -> rusqlite::Result<Option<LessonSummary>> {
    let Some(lesson) = summary(connection, lesson_id, now, times)? else {
        return Ok(None);
    };
    Ok(
        crate::staff::may_act_on_lesson(connection, member, &lesson.teacher_iin, &lesson.group)?
            .then_some(lesson),
    )
}

/// Discipline, group code and room (or "online"): what a confirmation page names.
pub type LessonLabel = (String, String, String);

/// The lesson's label: one indexed lookup, unlike `summary`, which counts its marks.
pub fn label(connection: &Connection, lesson_id: i64) -> rusqlite::Result<Option<LessonLabel>> {
    connection
        .prepare_cached(
            "SELECT l.discipline, g.code, CASE l.mode WHEN 'online' THEN 'online' ELSE l.room END
             FROM lessons l JOIN study_groups g ON g.id = l.group_id WHERE l.id = ?1",
        )?
        .query_row([lesson_id], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })
        .optional()
}

/// Lessons of `date` opened and not closed.
pub fn open_on(connection: &Connection, date: Date) -> rusqlite::Result<i64> {
    connection.query_row(
        "SELECT COUNT(*) FROM lesson_openings o JOIN lessons l ON l.id = o.lesson_id
         WHERE o.closed_at IS NULL AND l.date = ?1",
        [date.to_string()],
        |row| row.get(0),
    )
}

/// Lessons of the timetable held in `room`, on any day.
pub fn count_in_room(connection: &Connection, room: &str) -> rusqlite::Result<i64> {
    connection.query_row(
        "SELECT COUNT(*) FROM lessons WHERE room = ?1",
        [room],
        |row| row.get(0),
    )
}

/// One student of a lesson's roster: their latest mark for it, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RosterTile {
    pub iin: String,
    pub name: String,
    pub status: Option<kasip_core::MarkStatus>,
    pub method: Option<kasip_core::MarkMethod>,
    pub recorded_at: Option<i64>,
    pub reason: Option<String>,
}

impl RosterTile {
    /// Not here (yet): no mark, or marked absent.
    pub fn missing(&self) -> bool {
        matches!(self.status, None | Some(kasip_core::MarkStatus::Absent))
    }
}

/// The lesson's group as a teacher marks it: each active student with their latest
/// mark, the missing first, then by name.
pub fn roster(connection: &Connection, lesson_id: i64) -> rusqlite::Result<Vec<RosterTile>> {
    let mut tiles = connection
        .prepare_cached(
            "SELECT s.iin, s.last_name || ' ' || s.first_name, m.status, m.method,
                    m.recorded_at, m.reason
             FROM lessons l
             JOIN students s ON s.group_id = l.group_id AND s.status = 'active'
             LEFT JOIN latest_marks m ON m.lesson_id = l.id AND m.student_iin = s.iin
             WHERE l.id = ?1
             ORDER BY s.last_name, s.first_name",
        )?
        .query_map([lesson_id], |row| {
            let status: Option<String> = row.get(2)?;
            let method: Option<String> = row.get(3)?;
            Ok(RosterTile {
                iin: row.get(0)?,
                name: row.get(1)?,
                status: status.as_deref().and_then(kasip_core::MarkStatus::parse),
                method: method.as_deref().and_then(kasip_core::MarkMethod::parse),
                recorded_at: row.get(4)?,
                reason: row.get(5)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    // Stable: by name within each part.
    tiles.sort_by_key(|tile| !tile.missing());
    Ok(tiles)
}

/// One student's attendance over a span of a group's lessons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRow {
    pub iin: String,
    pub name: String,
    pub lessons: u64,
    pub present: u64,
    pub late: u64,
    pub absent: u64,
    pub excused: u64,
}

impl HistoryRow {
    /// Present or late of the lessons held, in thousandths; None without lessons.
    pub fn attended_per_mille(&self) -> Option<u64> {
        (self.lessons > 0).then(|| (self.present + self.late) * 1000 / self.lessons)
    }
}

/// The group's active students over its lessons from `from` to `through` (inclusive),
/// each student's latest mark per lesson counted by status.
pub fn group_history(
    connection: &Connection,
    group: &str,
    from: Date,
    through: Date,
) -> rusqlite::Result<Vec<HistoryRow>> {
    connection
        .prepare_cached(
            "SELECT s.iin, s.last_name || ' ' || s.first_name,
                    COUNT(l.id),
                    COUNT(CASE m.status WHEN 'present' THEN 1 END),
                    COUNT(CASE m.status WHEN 'late' THEN 1 END),
                    COUNT(CASE m.status WHEN 'absent' THEN 1 END),
                    COUNT(CASE m.status WHEN 'excused' THEN 1 END)
             FROM study_groups g
             JOIN students s ON s.group_id = g.id AND s.status = 'active'
             LEFT JOIN lessons l ON l.group_id = g.id AND l.date BETWEEN ?2 AND ?3
             LEFT JOIN latest_marks m ON m.lesson_id = l.id AND m.student_iin = s.iin
             WHERE g.code = ?1
             GROUP BY s.iin ORDER BY s.last_name, s.first_name",
        )?
        .query_map(
            rusqlite::params![group, from.to_string(), through.to_string()],
            |row| {
                Ok(HistoryRow {
                    iin: row.get(0)?,
                    name: row.get(1)?,
                    lessons: row.get(2)?,
                    present: row.get(3)?,
                    late: row.get(4)?,
                    absent: row.get(5)?,
                    excused: row.get(6)?,
                })
            },
        )?
        .collect()
}
