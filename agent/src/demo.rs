//! A realistic small demo college, produced as LMS exports and fed through the importers,
//! so the demo exercises exactly the path real data takes.

use std::fmt::Write;

use kasip_core::{Bin, Date, Iin, MarkMethod, MarkStatus, Sex, TimeOfDay};

use crate::attendance::ChainWriter;
use crate::import::{import, ImportError, ImportKind, ImportOptions, ImportReport};
use crate::lessons::{LessonTimes, LessonWindow, WindowPosition};
use crate::marks::{record_mark, MarkSource, MarkToRecord};
use crate::store::Store;
use kasip_core::chain::{EntryKind, MarkEvidence};

/// The demo college's BIN (valid check digit; not a real organisation's number).
pub const DEMO_BIN: &str = "090640001233";
pub const DEMO_COLLEGE_NAME: &str = "Алматы политехникалық колледжі (демо)";
const TIMETABLE_HEADER: &str =
    "date;start;end;group;discipline;teacher_iin;site;room;mode;address\n";
/// The demo's random numbers start here, so every seeding makes the same college.
const DEMO_SEED: u64 = 0x004B_4153_4950;
/// The default `lesson.late_after_mins`: demo check-ins all fall before it.
const DEMO_LATE_AFTER_MINS: u32 = 10;

pub fn demo_bin() -> Bin {
    // DEMO_BIN is a constant whose check digit is verified by a unit test.
    Bin::parse(DEMO_BIN).unwrap_or_else(|_| unreachable!("DEMO_BIN is valid"))
}

const SITES: [(&str, &str); 2] = [
    ("Главный корпус", "г. Алматы, ул. Толе би, 100"),
    ("Учебный корпус №2", "г. Алматы, пр. Абая, 52"),
];

const GROUPS: [&str; 6] = ["ПО-21", "ПО-22", "ВТ-21", "ЭС-23", "БУ-22", "ТМ-24"];

const DISCIPLINES: [&str; 8] = [
    "Математика",
    "Қазақ тілі",
    "Русский язык и литература",
    "Информатика",
    "Физика",
    "История Казахстана",
    "Английский язык",
    "Основы программирования",
];

/// (last name male, last name female) pairs, Kazakh and Russian.
const LAST_NAMES: [(&str, &str); 16] = [
    ("Ахметов", "Ахметова"),
    ("Жұмабаев", "Жұмабаева"),
    ("Сейітқали", "Сейітқали"),
    ("Нұрланов", "Нұрланова"),
    ("Оспанов", "Оспанова"),
    ("Әбілқасымов", "Әбілқасымова"),
    ("Қайратов", "Қайратова"),
    ("Төлеубаев", "Төлеубаева"),
    ("Иванов", "Иванова"),
    ("Ким", "Ким"),
    ("Смирнов", "Смирнова"),
    ("Байжанов", "Байжанова"),
    ("Құдайбергенов", "Құдайбергенова"),
    ("Попов", "Попова"),
    ("Есенов", "Есенова"),
    ("Ғабитов", "Ғабитова"),
];

const MALE_FIRST_NAMES: [&str; 12] = [
    "Әлихан",
    "Нұрсұлтан",
    "Ерасыл",
    "Дамир",
    "Арман",
    "Іңкәр",
    "Данияр",
    "Алексей",
    "Тимур",
    "Руслан",
    "Ернұр",
    "Дмитрий",
];
const FEMALE_FIRST_NAMES: [&str; 12] = [
    "Әйгерім",
    "Аружан",
    "Жансая",
    "Мадина",
    "Айша",
    "Дана",
    "Анастасия",
    "Томирис",
    "Ұлжан",
    "Екатерина",
    "Меруерт",
    "Гүлназ",
];
const MALE_MIDDLE_NAMES: [&str; 6] = [
    "Серікұлы",
    "Маратович",
    "Қанатұлы",
    "Ерланович",
    "",
    "Бауыржанұлы",
];
const FEMALE_MIDDLE_NAMES: [&str; 6] = [
    "Серікқызы",
    "Маратовна",
    "Қанатқызы",
    "Ерлановна",
    "",
    "Бауыржанқызы",
];

const STUDENTS_PER_GROUP: usize = 25;
const TEACHER_COUNT: usize = 8;
/// (start, end) of the day's lesson pairs.
const PAIRS: [(&str, &str); 3] = [("09:00", "10:30"), ("10:40", "12:10"), ("13:00", "14:30")];

/// splitmix64: a tiny deterministic generator so the demo is the same on every machine.
struct DemoRandom(u64);

impl DemoRandom {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut mixed = self.0;
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        mixed ^ (mixed >> 31)
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }
}

/// A valid IIN for someone born on `birth`, searching serials from `serial` upwards.
fn demo_iin(birth: Date, sex: Sex, serial: &mut u16) -> Iin {
    loop {
        *serial += 1;
        if let Some(iin) = Iin::from_parts(birth, sex, *serial) {
            return iin;
        }
    }
}

fn teachers_csv(random: &mut DemoRandom) -> (String, Vec<Iin>) {
    let mut csv = String::from("iin;last_name;first_name;middle_name\n");
    let mut iins = Vec::new();
    let mut serial = 4000;
    for index in 0..TEACHER_COUNT {
        let sex = if index % 2 == 0 {
            Sex::Female
        } else {
            Sex::Male
        };
        let birth = Date::new(1970, 1, 1)
            .unwrap_or(Date::EPOCH)
            .add_days(random.below(20 * 365) as i64);
        let iin = demo_iin(birth, sex, &mut serial);
        let (last_male, last_female) = LAST_NAMES[random.below(LAST_NAMES.len())];
        let (last, first, middle) = match sex {
            Sex::Male => (
                last_male,
                MALE_FIRST_NAMES[random.below(12)],
                MALE_MIDDLE_NAMES[random.below(5)],
            ),
            Sex::Female => (
                last_female,
                FEMALE_FIRST_NAMES[random.below(12)],
                FEMALE_MIDDLE_NAMES[random.below(5)],
            ),
        };
        let _ = writeln!(csv, "{iin};{last};{first};{middle}");
        iins.push(iin);
    }
    (csv, iins)
}

fn students_csv(random: &mut DemoRandom, today: Date) -> String {
    let mut csv = String::from("ИИН;Фамилия;Имя;Отчество;Группа;Бюджет;Статус;Дата статуса\n");
    let mut serial = 0;
    for (group_index, group) in GROUPS.iter().enumerate() {
        for position in 0..STUDENTS_PER_GROUP {
            let sex = if random.below(2) == 0 {
                Sex::Male
            } else {
                Sex::Female
            };
            let birth = Date::new(2005, 1, 1)
                .unwrap_or(Date::EPOCH)
                .add_days(random.below(4 * 365) as i64);
            let iin = demo_iin(birth, sex, &mut serial);
            let (last_male, last_female) = LAST_NAMES[random.below(LAST_NAMES.len())];
            let middle_index = random.below(6);
            let (last, first, middle) = match sex {
                Sex::Male => (
                    last_male,
                    MALE_FIRST_NAMES[random.below(12)],
                    MALE_MIDDLE_NAMES[middle_index],
                ),
                Sex::Female => (
                    last_female,
                    FEMALE_FIRST_NAMES[random.below(12)],
                    FEMALE_MIDDLE_NAMES[middle_index],
                ),
            };
            // Four in five students are state-funded beneficiaries.
            let beneficiary = if position % 5 == 4 { "нет" } else { "да" };
            // The last group carries the contingent's usual movements.
            let (status, status_date) = match (group_index, position) {
                (5, 0) => ("академический отпуск", today.add_days(-20).to_string()),
                (5, 1) => ("отчислен", today.add_days(-10).to_string()),
                _ => ("обучается", String::new()),
            };
            let _ = writeln!(
                csv,
                "{iin};{last};{first};{middle};{group};{beneficiary};{status};{status_date}"
            );
        }
    }
    csv
}

/// Monday to Friday of every week from the one holding the month's first day to the one
/// holding `today`: the month so far has a history, and this week has lessons to open.
fn timetable_days(today: Date) -> Vec<Date> {
    let monday_of = |day: Date| day.add_days(-i64::from(day.iso_weekday() - 1));
    let mut days = Vec::new();
    let mut monday = monday_of(today.calendar_month().first_day());
    while monday <= today {
        days.extend((0..5).map(|offset| monday.add_days(offset)));
        monday = monday.add_days(7);
    }
    days
}

/// The teacher of `group_index`'s pair `slot` on a weekday (1 = Monday): distinct groups
/// map to distinct teachers in the same slot, so nobody teaches two rooms at once.
fn teacher_of(group_index: usize, slot: usize, weekday: u8) -> usize {
    (group_index + slot + weekday as usize) % TEACHER_COUNT
}

fn timetable_csv(teachers: &[Iin], today: Date) -> String {
    let mut csv = String::from(TIMETABLE_HEADER);
    for date in timetable_days(today) {
        for (slot, (start, end)) in PAIRS.iter().enumerate() {
            for (group_index, group) in GROUPS.iter().enumerate() {
                let teacher = teacher_of(group_index, slot, date.iso_weekday());
                let (site, address) = SITES[group_index / 3];
                // Friday's last pair is online for everyone, as colleges do on short days.
                let online = date.iso_weekday() == 5 && slot == 2;
                let (site, room, mode, address) = if online {
                    ("", String::new(), "online", "")
                } else {
                    (
                        site,
                        format!("{}0{}", 1 + group_index % 3, 1 + group_index),
                        "offline",
                        address,
                    )
                };
                let _ = writeln!(
                    csv,
                    "{date};{start};{end};{group};{};{};{site};{room};{mode};{address}",
                    DISCIPLINES[teacher], teachers[teacher]
                );
            }
        }
    }
    csv
}

/// A lesson of the first group starting now (to the five minutes), so that whoever runs
/// the demo, at any hour, has a lesson to open (lessons open only in their window); none
/// when one of today's pairs can be opened now anyway.
fn lesson_now(teachers: &[Iin], today: Date, now: i64, times: &LessonTimes) -> String {
    let day = today.to_string();
    let in_a_pair = today.iso_weekday() <= 5
        && PAIRS.iter().any(|(start, end)| {
            LessonWindow::of_stored(&day, start, end, times)
                .is_some_and(|window| window.position(now) == WindowPosition::Within)
        });
    if in_a_pair {
        return String::new();
    }
    lesson_starting_now(teachers, today, now, times)
}

/// A lesson of the first group starting now, to the five minutes, as a timetable row.
fn lesson_starting_now(teachers: &[Iin], today: Date, now: i64, times: &LessonTimes) -> String {
    let minutes = (now + times.timezone.offset_seconds()).rem_euclid(86_400) / 60;
    let start = minutes - minutes % 5;
    let end = (start + 90).min(23 * 60 + 59);
    let teacher = teacher_of(0, 0, today.iso_weekday());
    format!(
        "{today};{:02}:{:02};{:02}:{:02};{};{};{};{};101;offline;{}\n",
        start / 60,
        start % 60,
        end / 60,
        end % 60,
        GROUPS[0],
        DISCIPLINES[teacher],
        teachers[teacher],
        SITES[0].0,
        SITES[0].1
    )
}

/// The demo's teacher who never shows the classroom code and marks everyone by hand
/// (the red flag "manual-mark share far above the college median").
const HAND_MARKING_TEACHER: usize = 7;
/// In the last group (ТМ-24), which carries the demo's irregularities: a beneficiary who
/// never attends, and two students whose check-ins come from one phone.
const ABSENT_POSITION: usize = 2;
const SHARED_PHONE_POSITIONS: [usize; 2] = [5, 6];

/// Marks for every lesson before `today`, as teachers and phones would have left them:
/// in the five regular groups most students check in by phone, a few are marked by hand
/// or absent; the hand-marking teacher and the last group supply one case of each red
/// flag the demo can show. Written through the hash chain like any mark, and only into a
/// college without marks, so reseeding adds nothing.
fn seed_attendance(
    store: &mut Store,
    today: Date,
    utc_offset_secs: i64,
    hand_marker: &Iin,
    random: &mut DemoRandom,
) -> rusqlite::Result<usize> {
    let transaction = store
        .connection_mut()
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let marked: i64 =
        transaction.query_row("SELECT COUNT(*) FROM attendance_events", [], |row| {
            row.get(0)
        })?;
    if marked > 0 {
        return Ok(0);
    }
    let lessons: Vec<(i64, String, String, String, String)> = transaction
        .prepare(
            "SELECT l.id, l.date, l.start_time, g.code, l.teacher_iin
             FROM lessons l JOIN study_groups g ON g.id = l.group_id
             WHERE l.date < ?1 ORDER BY l.date, l.start_time, g.code",
        )?
        .query_map([today.to_string()], |row| {
            Ok((
                row.get(0)?,
                row.get(1)?,
                row.get(2)?,
                row.get(3)?,
                row.get(4)?,
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let hand_marker = hand_marker.to_string();
    let mut members_of = transaction.prepare(
        "SELECT s.iin, s.status, s.status_date FROM students s JOIN study_groups g ON g.id = s.group_id
         WHERE g.code = ?1 ORDER BY s.rowid",
    )?;
    let mut new_marks = Vec::new();
    let mut phones = DemoPhones::default();
    for (lesson_id, date, start, group, teacher) in lessons {
        let (Ok(lesson_date), Ok(start)) = (Date::parse(&date), TimeOfDay::parse(&start)) else {
            continue;
        };
        let lesson_start = lesson_date.days_since_epoch() * 86_400
            + i64::from(start.minutes_after_midnight()) * 60
            - utc_offset_secs;
        let irregular_group = group == GROUPS[GROUPS.len() - 1];
        let members: Vec<(String, String, Option<String>)> = members_of
            .query_map([&group], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
            .collect::<rusqlite::Result<_>>()?;
        for (position, (iin, status, status_date)) in members.into_iter().enumerate() {
            // Students who left or went on leave have no marks from that day on.
            let gone_from = status_date
                .as_deref()
                .and_then(|date| Date::parse(date).ok());
            if status != "active" && gone_from.is_none_or(|from| lesson_date >= from) {
                continue;
            }
            let Ok(student_iin) = Iin::parse(&iin) else {
                continue;
            };
            let roll = random.below(100);
            let by_hand = teacher == hand_marker;
            let never_attends = irregular_group && position == ABSENT_POSITION;
            let (mark_status, method) = if never_attends || roll < 7 {
                (MarkStatus::Absent, MarkMethod::Manual)
            } else if by_hand || roll < 12 {
                (MarkStatus::Present, MarkMethod::Manual)
            } else {
                (MarkStatus::Present, MarkMethod::QrPhone)
            };
            let phone_owner = if irregular_group && position == SHARED_PHONE_POSITIONS[1] {
                members_iin_at(&transaction, &group, SHARED_PHONE_POSITIONS[0])?
            } else {
                iin.clone()
            };
            // Within the first ten minutes: on time under the default lateness rule.
            let at = lesson_start + 60 + random.below(540) as i64;
            let source = if method == MarkMethod::QrPhone {
                let phone = phones.of(&transaction, &phone_owner, lesson_start)?;
                let presented = format!("demo-lesson-{lesson_id}");
                MarkSource::Qr {
                    method,
                    device_id: phone.device_id.clone(),
                    token_step: Some(kasip_core::step_at(at, DEMO_QR_PERIOD_SECS)),
                    lesson_starts_at: lesson_start,
                    evidence: MarkEvidence {
                        binding: Some(phone.binding as u64),
                        device_signature: Some(phone.sign(&presented)),
                        presented: Some(presented),
                        ..MarkEvidence::of(EntryKind::Live)
                    },
                }
            } else {
                MarkSource::Manual {
                    status: mark_status,
                    marked_by: teacher.clone(),
                    reason: None,
                    late_entry: false,
                }
            };
            new_marks.push(MarkToRecord {
                lesson_id,
                student: student_iin,
                at,
                source,
            });
        }
    }
    drop(members_of);
    let mut chain = ChainWriter::read_head(&transaction)?;
    let count = new_marks.len();
    for mark in new_marks {
        record_mark(&transaction, &mut chain, DEMO_LATE_AFTER_MINS, mark)?;
    }
    transaction.commit()?;
    Ok(count)
}

fn members_iin_at(
    transaction: &rusqlite::Transaction<'_>,
    group: &str,
    position: usize,
) -> rusqlite::Result<String> {
    transaction.query_row(
        "SELECT s.iin FROM students s JOIN study_groups g ON g.id = s.group_id
         WHERE g.code = ?1 ORDER BY s.rowid LIMIT 1 OFFSET ?2",
        rusqlite::params![group, position as i64],
        |row| row.get(0),
    )
}

/// The demo's phones: each checking-in student's phone is bound with a real device key,
/// so its marks carry evidence that verifies like a real phone's (the presented text
/// names the demo lesson: no classroom token existed).
#[derive(Default)]
struct DemoPhones(std::collections::HashMap<String, DemoPhone>);

struct DemoPhone {
    binding: i64,
    device_id: String,
    key: ring::signature::EcdsaKeyPair,
}

/// The rotation period the demo's token steps are counted in (the default).
const DEMO_QR_PERIOD_SECS: u32 = 10;

impl DemoPhone {
    fn sign(&self, presented: &str) -> String {
        use base64::Engine;
        self.key
            .sign(
                &ring::rand::SystemRandom::new(),
                kasip_core::chain::check_in_message(presented).as_bytes(),
            )
            .map(|signature| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(signature.as_ref())
            })
            .unwrap_or_default()
    }
}

impl DemoPhones {
    fn of(
        &mut self,
        transaction: &rusqlite::Transaction<'_>,
        owner_iin: &str,
        bound_at: i64,
    ) -> rusqlite::Result<&DemoPhone> {
        use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
        if !self.0.contains_key(owner_iin) {
            let random = ring::rand::SystemRandom::new();
            let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &random)
                .map_err(|_| rusqlite::Error::InvalidQuery)?;
            let key =
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &random)
                    .map_err(|_| rusqlite::Error::InvalidQuery)?;
            let public = key.public_key().as_ref().to_vec();
            let device_id = kasip_core::batch::sha256_hex(&public);
            transaction.execute(
                "INSERT INTO device_bindings (credential_hash, student_iin, device_id, bound_at,
                     device_key, code_issued_by, code_issued_at, client, user_agent)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'demo', ?4, 'demo', 'demo')",
                rusqlite::params![
                    crate::secrets::secret_hash(&format!("demo phone of {owner_iin}")),
                    owner_iin,
                    device_id,
                    bound_at,
                    public
                ],
            )?;
            let phone = DemoPhone {
                binding: transaction.last_insert_rowid(),
                device_id,
                key,
            };
            self.0.insert(owner_iin.to_owned(), phone);
        }
        Ok(&self.0[owner_iin])
    }
}

/// What seeding created, one report per export, and the history of marks.
pub struct DemoReport {
    pub teachers: ImportReport,
    pub students: ImportReport,
    pub timetable: ImportReport,
    pub marks: usize,
}

/// 1 September of the academic year `today` falls in.
fn academic_year_start(today: Date) -> Date {
    let year = if today.month() >= 9 {
        today.year()
    } else {
        today.year() - 1
    };
    Date::new(year, 9, 1).unwrap_or(today)
}

/// Adds a lesson of the first group starting now when none of the demo college's lessons
/// can be opened now: `serve` calls it at every start of the demo college, so whoever
/// follows the README's walkthrough, at 23:00 or on another day than the seeding's, has
/// a lesson to open. Returns whether it added one.
pub fn ensure_lesson_now(
    store: &mut Store,
    now: i64,
    times: &LessonTimes,
) -> Result<bool, ImportError> {
    let today = crate::clock::local_date(&times.timezone, now);
    let (_, teachers) = teachers_csv(&mut DemoRandom(DEMO_SEED));
    let openable = {
        let connection = store.connection();
        // Only a seeded demo college: an initialised data dir with the demo BIN and
        // another roster (or none) gets no lesson.
        let seeded: bool = connection
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM study_groups WHERE code = ?1)
                    AND EXISTS (SELECT 1 FROM teachers WHERE iin = ?2)",
                [GROUPS[0].to_owned(), teachers[0].as_string()],
                |row| row.get(0),
            )
            .map_err(|source| store.error(source))?;
        if !seeded {
            return Ok(false);
        }
        let mut statement = connection
            .prepare("SELECT date, start_time, end_time FROM lessons WHERE date BETWEEN ?1 AND ?2")
            .map_err(|source| store.error(source))?;
        let lessons = statement
            .query_map([today.add_days(-1).to_string(), today.to_string()], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                ))
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|source| store.error(source))?;
        lessons.iter().any(|(date, start, end)| {
            LessonWindow::of_stored(date, start, end, times)
                .is_some_and(|window| window.position(now) == WindowPosition::Within)
        })
    };
    if openable {
        return Ok(false);
    }
    // Not `lesson_now`: a pair of the timetable's is openable now only if it was seeded
    // for this week.
    let line = lesson_starting_now(&teachers, today, now, times);
    let options = ImportOptions {
        skip_invalid: false,
        today,
        source: "demo".to_owned(),
        now,
    };
    let timetable = format!("{TIMETABLE_HEADER}{line}");
    let report = import(store, ImportKind::Timetable, timetable.as_bytes(), &options)?;
    Ok(report.added > 0)
}

/// Seeds (or refreshes: imports are upserts) the demo college into `store`.
pub fn seed(store: &mut Store, now: i64, times: &LessonTimes) -> Result<DemoReport, ImportError> {
    let timezone = &times.timezone;
    let today = crate::clock::local_date(timezone, now);
    let mut random = DemoRandom(DEMO_SEED);
    let options = ImportOptions {
        skip_invalid: false,
        today,
        source: "demo".to_owned(),
        now,
    };
    let (teachers, teacher_iins) = teachers_csv(&mut random);
    let teachers = import(store, ImportKind::Teachers, teachers.as_bytes(), &options)?;
    let students = students_csv(&mut random, today);
    // Enrolled when the academic year began, so the week's earlier marks count.
    let enrolment = ImportOptions {
        today: academic_year_start(today),
        ..options.clone()
    };
    let students = import(store, ImportKind::Students, students.as_bytes(), &enrolment)?;
    let mut timetable = timetable_csv(&teacher_iins, today);
    timetable.push_str(&lesson_now(&teacher_iins, today, now, times));
    let timetable = import(store, ImportKind::Timetable, timetable.as_bytes(), &options)?;
    let hand_marker = &teacher_iins[HAND_MARKING_TEACHER];
    let marks = seed_attendance(
        store,
        today,
        timezone.offset_seconds(),
        hand_marker,
        &mut random,
    )
    .map_err(|source| store.error(source))?;
    Ok(DemoReport {
        teachers,
        students,
        timetable,
        marks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kasip_core::CollegeTimezone;

    /// The default lesson window, in Almaty.
    fn almaty_times() -> LessonTimes {
        LessonTimes {
            timezone: CollegeTimezone::parse("Asia/Almaty").expect("zone"),
            open_early_mins: 10,
            auto_close_grace_mins: 15,
        }
    }

    #[test]
    fn the_lesson_for_now_is_added_only_outside_the_days_pairs() {
        let (_, teachers) = teachers_csv(&mut DemoRandom(1));
        let times = almaty_times();
        let zone = &times.timezone;
        let wednesday = Date::new(2026, 11, 25).expect("date");
        let at = |hour: i64, minute: i64| {
            wednesday.days_since_epoch() * 86_400 + hour * 3600 + minute * 60
                - zone.offset_seconds()
        };
        // 09:03 is inside the first pair's window: that pair is the lesson to open.
        assert_eq!(lesson_now(&teachers, wednesday, at(9, 3), &times), "");
        let evening = lesson_now(&teachers, wednesday, at(20, 7), &times);
        assert!(evening.starts_with("2026-11-25;20:05;21:35;"), "{evening}");
        // Late at night the lesson ends at midnight's last minute.
        let night = lesson_now(&teachers, wednesday, at(23, 2), &times);
        assert!(night.starts_with("2026-11-25;23:00;23:59;"), "{night}");
    }

    #[test]
    fn a_later_start_adds_a_lesson_for_now_only_when_none_can_be_opened() {
        let dir = tempfile::tempdir().expect("tempdir");
        let times = almaty_times();
        let zone = times.timezone.offset_seconds();
        let at = |date: Date, hour: i64, minute: i64| {
            date.days_since_epoch() * 86_400 + hour * 3600 + minute * 60 - zone
        };
        let mut empty = Store::create(&dir.path().join("empty.db")).expect("store");
        let monday = Date::new(2026, 11, 23).expect("date");
        assert!(
            !ensure_lesson_now(&mut empty, at(monday, 20, 7), &times).expect("empty"),
            "no roster, no lesson"
        );
        let mut store = Store::create(&dir.path().join("agent.db")).expect("store");
        seed(&mut store, at(monday, 20, 7), &times).expect("seed");
        assert!(
            !ensure_lesson_now(&mut store, at(monday, 20, 30), &times).expect("same evening"),
            "the seeded lesson for now is still open"
        );
        // Nine days later at 09:03, inside a pair's window, but that week's pairs were
        // never seeded: a lesson is added, once.
        let next_wednesday = monday.add_days(9);
        assert!(ensure_lesson_now(&mut store, at(next_wednesday, 9, 3), &times).expect("later"));
        assert!(!ensure_lesson_now(&mut store, at(next_wednesday, 9, 20), &times).expect("again"));
    }

    #[test]
    fn demo_bin_is_valid() {
        assert!(Bin::parse(DEMO_BIN).is_ok());
    }

    #[test]
    fn demo_seeds_cleanly_and_reseeding_changes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::create(&dir.path().join("agent.db")).expect("store");
        let today = Date::new(2026, 11, 25).expect("date");
        let times = almaty_times();
        let zone = &times.timezone;
        // 20:07 in Almaty: after the day's pairs, so the lesson for now is one more.
        let now = today.days_since_epoch() * 86_400 + (20 * 3600 + 7 * 60) - zone.offset_seconds();
        let first = seed(&mut store, now, &times).expect("seed");
        // The weeks of 26 Oct (holding 1 Nov, a Sunday) to 23 Nov: 25 working days, and
        // the lesson starting now (20:05–21:35).
        let lessons = 25 * PAIRS.len() * GROUPS.len() + 1;
        assert_eq!(first.students.added, GROUPS.len() * STUDENTS_PER_GROUP);
        assert_eq!(first.students.groups_created, GROUPS.len());
        assert_eq!(first.teachers.added, TEACHER_COUNT);
        assert_eq!(first.timetable.added, lessons);
        assert!(first.marks > 0);
        assert_eq!(first.timetable.sites_created, SITES.len());
        let again = seed(&mut store, now, &times).expect("reseed");
        assert_eq!(again.students.unchanged, GROUPS.len() * STUDENTS_PER_GROUP);
        assert_eq!(again.timetable.unchanged, lessons);
        assert_eq!(again.marks, 0);
        assert_eq!(again.students.contingent_events, 0);
        let beneficiaries: i64 = store
            .connection()
            .query_row(
                "SELECT COUNT(*) FROM students WHERE beneficiary = 1 AND status != 'expelled'",
                [],
                |row| row.get(0),
            )
            .expect("count");
        // Four in five of 150, less the expelled student (position 1, a beneficiary).
        assert_eq!(beneficiaries, 119);
    }
}
