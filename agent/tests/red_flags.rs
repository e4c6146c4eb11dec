//! Each red flag fires on a crafted case and stays quiet on a clean group beside it.
//!
//! Lessons come through the timetable import; openings and marks are seeded directly:
//! this test is about what the flags see, the check-in tests about how marks are made.

use std::fs;

use kasip_core::Date;
use kasip_tests::{run_with, text, TempDataDir};
use serde_json::Value;

const AGENT: &str = env!("CARGO_BIN_EXE_kasip-agent");
const T1: &str = "850515400012";
const T2: &str = "791103300025";
const T3: &str = "900101300017";
const C1: &str = "060315500016"; // group CLEAN
const C2: &str = "060315600022"; // group CLEAN
const I1: &str = "051203500038"; // group IDLE
const I2: &str = "070729600045"; // group IDLE, never marked
const LICENSED: &str = "г. Алматы, ул. Толе би, 100";

fn november_working_days() -> Vec<String> {
    let first = Date::new(2026, 11, 1).expect("date");
    (0..30)
        .map(|offset| first.add_days(offset))
        .filter(|day| day.iso_weekday() <= 5)
        .map(|day| day.to_string())
        .collect()
}

#[test]
fn every_flag_fires_on_its_case_and_not_on_the_clean_group() {
    let dir = TempDataDir::new();
    let clock = dir.file("clock");
    // 2026-11-30 12:00 in Almaty: the whole month is in the past.
    let noon = Date::new(2026, 11, 30).expect("date").days_since_epoch() * 86_400 + 7 * 3600;
    fs::write(&clock, noon.to_string()).expect("clock");
    let clock_text = clock.display().to_string();
    let env = [("KASIP_UNSAFE_CLOCK_FILE", clock_text.as_str())];
    let agent = |args: &[&str]| {
        let output = run_with(AGENT, &dir.path(), args, &env, None);
        assert!(output.status.success(), "{args:?}: {:?}", text(&output));
        text(&output).0
    };
    agent(&["init"]);
    let config_path = dir.path().join("config.toml");
    let config = fs::read_to_string(&config_path).expect("config").replace(
        "licensed_addresses = []",
        &format!("licensed_addresses = [\"{LICENSED}\"]"),
    );
    fs::write(&config_path, config).expect("config");
    let write = |name: &str, contents: String| {
        let path = dir.file(name);
        fs::write(&path, contents).expect("csv");
        path.display().to_string()
    };
    agent(&[
        "import",
        "teachers",
        &write(
            "t.csv",
            format!("iin;last_name;first_name\n{T1};A;A\n{T2};B;B\n{T3};C;C\n"),
        ),
    ]);
    agent(&[
        "import",
        "students",
        &write(
            "s.csv",
            // Enrolled when the term began: marks count from then (contingent history).
            format!("iin;last_name;first_name;group;beneficiary;status;status_date\n{C1};C1;C1;CLEAN;да;;01.09.2026\n{C2};C2;C2;CLEAN;да;;01.09.2026\n{I1};I1;I1;IDLE;да;;01.09.2026\n{I2};I2;I2;IDLE;да;;01.09.2026\n"),
        ),
    ]);
    let mut timetable =
        String::from("date;start;end;group;discipline;teacher_iin;site;room;mode;address\n");
    for day in november_working_days() {
        timetable.push_str(&format!(
            "{day};09:00;10:30;CLEAN;Математика;{T1};Главный корпус;101;offline;{LICENSED}\n"
        ));
        timetable.push_str(&format!(
            "{day};11:00;12:30;CLEAN;Физика;{T2};Главный корпус;102;offline;{LICENSED}\n"
        ));
        timetable.push_str(&format!(
            "{day};13:00;14:30;CLEAN;История;{T3};Главный корпус;103;offline;{LICENSED}\n"
        ));
    }
    // A lesson in room 202 that overlaps the 09:00 one on the 20th.
    timetable.push_str(&format!(
        "2026-11-20;10:00;11:00;CLEAN;Химия;{T3};Главный корпус;202;offline;{LICENSED}\n"
    ));
    // IDLE meets on the 2nd and then on the 16th, at an unlicensed warehouse.
    timetable.push_str(&format!(
        "2026-11-02;09:00;10:30;IDLE;Математика;{T1};Главный корпус;104;offline;{LICENSED}\n"
    ));
    timetable.push_str(&format!("2026-11-16;10:00;11:30;IDLE;Математика;{T1};Склад;5;offline;г. Алматы, ул. Неизвестная, 1\n"));
    // Saturdays (no working days, so the idle runs stay): a lesson opened with nobody
    // present, and one where ten phones check in within two seconds.
    timetable.push_str(&format!(
        "2026-11-28;09:00;10:30;CLEAN;Математика;{T1};Главный корпус;101;offline;{LICENSED}\n"
    ));
    timetable.push_str(&format!(
        "2026-11-21;09:00;10:30;CLEAN;Математика;{T1};Главный корпус;101;offline;{LICENSED}\n"
    ));
    agent(&["import", "timetable", &write("tt.csv", timetable)]);

    let database = rusqlite::Connection::open(dir.path().join("agent.db")).expect("db");
    database
        .execute_batch(
            "INSERT INTO lesson_openings (lesson_id, qr_key, opened_at, opened_by)
             SELECT id, zeroblob(32), 0, 'test' FROM lessons",
        )
        .expect("every lesson was held");
    let lesson = |date: &str, start: &str, group: &str| -> i64 {
        database
            .query_row(
                "SELECT l.id FROM lessons l JOIN study_groups g ON g.id = l.group_id
                 WHERE l.date = ?1 AND l.start_time = ?2 AND g.code = ?3",
                [date, start, group],
                |row| row.get(0),
            )
            .expect("lesson")
    };
    let mark = |lesson_id: i64, iin: &str, method: &str, device: Option<&str>| {
        database
            .execute(
                "INSERT INTO attendance_events (lesson_id, student_iin, status, method, recorded_at, device_id, prev_hash, row_hash)
                 VALUES (?1, ?2, 'present', ?3, 0, ?4, zeroblob(32), zeroblob(32))",
                rusqlite::params![lesson_id, iin, method, device],
            )
            .expect("mark");
    };
    for day in november_working_days() {
        for (student, device) in [(C1, "device-c1"), (C2, "device-c2")] {
            mark(
                lesson(&day, "09:00", "CLEAN"),
                student,
                "qr_phone",
                Some(device),
            );
            mark(lesson(&day, "11:00", "CLEAN"), student, "manual", None); // T2 marks by hand
                                                                           // C2 is kept present by hand at 13:00 as well (T3's lesson).
            let (method, device) = if student == C2 {
                ("manual", None)
            } else {
                ("qr_phone", Some(device))
            };
            mark(lesson(&day, "13:00", "CLEAN"), student, method, device);
        }
    }
    mark(
        lesson("2026-11-20", "10:00", "CLEAN"),
        C2,
        "qr_phone",
        Some("device-c2"),
    );
    mark(
        lesson("2026-11-02", "09:00", "IDLE"),
        I1,
        "qr_phone",
        Some("device-shared"),
    );
    mark(
        lesson("2026-11-16", "10:00", "IDLE"),
        I1,
        "qr_phone",
        Some("device-i1"),
    );
    // Ten phones within two seconds, as a script checking in from cookie jars.
    for index in 0..10 {
        database
            .execute(
                "INSERT INTO attendance_events (lesson_id, student_iin, status, method, recorded_at, device_id, prev_hash, row_hash)
                 VALUES (?1, ?2, 'present', 'qr_phone', ?3, ?4, zeroblob(32), zeroblob(32))",
                rusqlite::params![
                    lesson("2026-11-21", "09:00", "CLEAN"),
                    [C1, C2][index % 2],
                    1_795_000_000 + index as i64 / 5,
                    format!("burst-{index}")
                ],
            )
            .expect("burst");
    }
    // A room kiosk scans many students: that is its job, not a shared phone.
    mark(
        lesson("2026-11-04", "09:00", "CLEAN"),
        C1,
        "qr_kiosk",
        Some("kiosk:1"),
    );
    mark(
        lesson("2026-11-05", "09:00", "CLEAN"),
        C2,
        "qr_kiosk",
        Some("kiosk:1"),
    );
    // C2 is kept present by hand on five more mornings.
    for day in [
        "2026-11-09",
        "2026-11-10",
        "2026-11-11",
        "2026-11-12",
        "2026-11-13",
    ] {
        mark(lesson(day, "09:00", "CLEAN"), C2, "manual", None);
    }
    // I2's hand marks do not clear the flag: only QR-backed attendance counts.
    mark(lesson("2026-11-16", "10:00", "IDLE"), I2, "manual", None);
    // Ten phones bound within four minutes, from one admin's codes.
    for index in 0..10i64 {
        database
            .execute(
                "INSERT INTO device_bindings (credential_hash, student_iin, device_id, bound_at, code_issued_by)
                 VALUES (?1, ?2, ?3, ?4, 'admin')",
                rusqlite::params![
                    vec![index as u8; 32],
                    [C1, C2, I1, I2][index as usize % 4],
                    format!("jar-{index}"),
                    noon - 3 * 86_400 + index * 25
                ],
            )
            .expect("binding");
    }
    // C1's phone is clean; a second phone checked in I1 and, another day, C2.
    mark(
        lesson("2026-11-03", "13:00", "CLEAN"),
        C2,
        "qr_phone",
        Some("device-shared"),
    );
    drop(database);

    let flags: Value =
        serde_json::from_str(&agent(&["red-flags", "--month", "2026-11", "--json"])).expect("json");
    let flags = flags.as_array().expect("array");
    let subjects = |kind: &str| -> Vec<String> {
        flags
            .iter()
            .filter(|flag| flag["kind"] == kind)
            .map(|flag| flag["subject"].as_str().expect("subject").to_owned())
            .collect()
    };
    // IDLE held lessons on the 2nd and 16th only: idle runs are the 3rd–13th (9 working
    // days) and the 17th–30th (10), the longest is reported; CLEAN met every working day.
    assert_eq!(subjects("idle_group"), ["IDLE"]);
    let idle = flags
        .iter()
        .find(|flag| flag["kind"] == "idle_group")
        .expect("flag");
    assert!(
        idle["detail"]
            .as_str()
            .expect("detail")
            .contains("10 working days, 2026-11-17 to 2026-11-30"),
        "{idle}"
    );
    assert_eq!(subjects("unlicensed_site"), ["Склад"]);
    assert_eq!(subjects("beneficiary_without_attendance"), [I2]);
    assert_eq!(
        subjects("shared_device"),
        ["device-share"],
        "first 12 characters of the device id"
    );
    assert_eq!(subjects("two_rooms_at_once"), [C2]);
    // T2 marked everything by hand (100%); the median of T1, T2, T3 is T1's or T3's 0%.
    assert_eq!(subjects("manual_share_outlier"), [T2]);
    assert_eq!(subjects("empty_lesson"), ["CLEAN"], "the 28th only");
    assert_eq!(subjects("check_in_burst"), ["CLEAN"], "the 21st");
    assert_eq!(subjects("binding_burst").len(), 1);
    assert_eq!(subjects("hand_marked_student"), [C2], "{flags:#?}");
}

/// The demo college's five regular groups are clean; its hand-marking teacher and its
/// last group (ТМ-24) carry one case each of the flags the demo can show.
#[test]
fn the_demo_college_flags_only_its_planted_cases() {
    let dir = TempDataDir::new();
    let clock = dir.file("clock");
    // Wednesday 2026-11-25 10:00 in Almaty: the month so far has 17 working days of marks.
    let morning = Date::new(2026, 11, 25).expect("date").days_since_epoch() * 86_400 + 5 * 3600;
    fs::write(&clock, morning.to_string()).expect("clock");
    let clock_text = clock.display().to_string();
    let env = [("KASIP_UNSAFE_CLOCK_FILE", clock_text.as_str())];
    let agent = |args: &[&str]| {
        let output = run_with(AGENT, &dir.path(), args, &env, None);
        assert!(output.status.success(), "{args:?}: {:?}", text(&output));
        text(&output).0
    };
    agent(&["init"]);
    agent(&["demo"]);
    agent(&["verify"]);
    let flags: Vec<Value> =
        serde_json::from_str(&agent(&["red-flags", "--month", "2026-11", "--json"])).expect("json");
    let database = rusqlite::Connection::open(dir.path().join("agent.db")).expect("db");
    let members = |group: &str| -> Vec<String> {
        database
            .prepare(
                "SELECT s.iin FROM students s JOIN study_groups g ON g.id = s.group_id
                 WHERE g.code = ?1 ORDER BY s.rowid",
            )
            .and_then(|mut statement| {
                statement
                    .query_map([group], |row| row.get(0))?
                    .collect::<rusqlite::Result<Vec<String>>>()
            })
            .expect("members")
    };
    for clean in ["ПО-21", "ПО-22", "ВТ-21", "ЭС-23", "БУ-22"] {
        let iins = members(clean);
        assert_eq!(iins.len(), 25);
        for flag in &flags {
            let said = format!("{} {}", flag["subject"], flag["detail"]);
            assert!(
                !said.contains(clean) && !iins.iter().any(|iin| said.contains(iin.as_str())),
                "clean group {clean} flagged: {flag}"
            );
        }
    }
    // The planted cases, by position in ТМ-24's export (demo.rs).
    let irregular = members("ТМ-24");
    let of_kind =
        |kind: &str| -> Vec<&Value> { flags.iter().filter(|flag| flag["kind"] == kind).collect() };
    let absent = of_kind("beneficiary_without_attendance");
    assert_eq!(absent.len(), 1, "{flags:#?}");
    assert_eq!(absent[0]["subject"], irregular[2].as_str());
    let shared = of_kind("shared_device");
    assert_eq!(shared.len(), 1, "{flags:#?}");
    let detail = shared[0]["detail"].as_str().expect("detail");
    assert!(
        detail.contains("2 students")
            && detail.contains(&irregular[5])
            && detail.contains(&irregular[6]),
        "{detail}"
    );
    let hand_marking: String = database
        .query_row(
            "SELECT iin FROM teachers ORDER BY rowid LIMIT 1 OFFSET 7",
            [],
            |row| row.get(0),
        )
        .expect("teacher");
    let outliers = of_kind("manual_share_outlier");
    assert_eq!(outliers.len(), 1, "{flags:#?}");
    assert_eq!(outliers[0]["subject"], hand_marking.as_str());
    assert_eq!(
        flags.len(),
        3,
        "no idle group, no unlicensed site (none configured), no two rooms at once: {flags:#?}"
    );
    // The clean groups also keep the coverage rule.
    let coverage: Value =
        serde_json::from_str(&agent(&["coverage", "--month", "2026-11", "--json"])).expect("json");
    for group in coverage["groups"].as_array().expect("groups") {
        if group["scope"] != "ТМ-24" {
            assert_eq!(group["holds"], true, "{group}");
        }
    }
}
