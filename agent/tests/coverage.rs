//! The coverage rule on a hand-built month, checked against figures derived by hand.
//!
//! Marks are seeded directly into the event table: this test is about the arithmetic of
//! design §5.5; the check-in tests cover how marks are made.

use std::fs;

use kasip_tests::{run, text, TempDataDir};
use serde_json::Value;

const AGENT: &str = env!("CARGO_BIN_EXE_kasip-agent");
const TEACHER: &str = "850515400012";
// Students (valid IINs; check digits computed by hand with the mod-11 rule).
const A: &str = "060315500016";
const B: &str = "060315600022";
const C: &str = "051203500038";
const D: &str = "070729600045";
const E: &str = "040229500075"; // not a beneficiary
const F: &str = "050701600089";
const G: &str = "900101300017"; // expelled on 2026-11-15
const H: &str = "791103300025"; // on academic leave since 2026-10-01

fn agent(dir: &TempDataDir, args: &[&str]) -> String {
    let output = run(AGENT, &dir.path(), args);
    assert!(output.status.success(), "{args:?}: {:?}", text(&output));
    text(&output).0
}

fn seeded_month() -> TempDataDir {
    seeded_month_with("offline", "15.11.2026")
}

/// The hand-built month with every lesson in `mode`, and G expelled on `expelled_on`.
fn seeded_month_with(mode: &str, expelled_on: &str) -> TempDataDir {
    let dir = TempDataDir::new();
    agent(&dir, &["init"]);
    let write = |name: &str, contents: String| {
        let path = dir.file(name);
        fs::write(&path, contents).expect("csv");
        path.display().to_string()
    };
    let teachers = write(
        "t.csv",
        format!("iin;last_name;first_name\n{TEACHER};Жұмабаева;Әйгерім\n"),
    );
    agent(&dir, &["import", "teachers", &teachers]);
    let students = write(
        "s.csv",
        format!(
            "iin;last_name;first_name;group;beneficiary;status;status_date\n\
             {A};A;A;ПО-21;да;;01.09.2026\n{B};B;B;ПО-21;да;;01.09.2026\n\
             {C};C;C;ПО-21;да;;01.09.2026\n{D};D;D;ПО-21;да;;01.09.2026\n\
             {E};E;E;ПО-21;нет;;01.09.2026\n{F};F;F;ВТ-21;да;;01.09.2026\n\
             {G};G;G;ВТ-21;да;отчислен;{expelled_on}\n\
             {H};H;H;ВТ-21;да;академический отпуск;01.10.2026\n"
        ),
    );
    agent(&dir, &["import", "students", &students]);
    let mut timetable =
        String::from("date;start;end;group;discipline;teacher_iin;site;room;mode\n");
    for day in ["02", "09", "16", "23"] {
        for group in ["ПО-21", "ВТ-21"] {
            let start = if group == "ПО-21" { "09:00" } else { "10:40" };
            let end = if group == "ПО-21" { "10:30" } else { "12:10" };
            timetable.push_str(&format!(
                "2026-11-{day};{start};{end};{group};Математика;{TEACHER};Корпус;101;{mode}\n"
            ));
        }
    }
    // A lesson in October must not count for November.
    timetable.push_str(&format!(
        "2026-10-26;09:00;10:30;ПО-21;Математика;{TEACHER};Корпус;101;offline\n"
    ));
    let timetable = write("tt.csv", timetable);
    agent(&dir, &["import", "timetable", &timetable]);

    let database = rusqlite::Connection::open(dir.path().join("agent.db")).expect("db");
    let lesson = |date: &str, group: &str| -> i64 {
        database
            .query_row(
                "SELECT l.id FROM lessons l JOIN study_groups g ON g.id = l.group_id WHERE l.date = ?1 AND g.code = ?2",
                [date, group],
                |row| row.get(0),
            )
            .expect("lesson")
    };
    let mark = |date: &str, group: &str, iin: &str, status: &str, method: &str| {
        database
            .execute(
                "INSERT INTO attendance_events (lesson_id, student_iin, status, method, recorded_at, prev_hash, row_hash)
                 VALUES (?1, ?2, ?3, ?4, 0, zeroblob(32), zeroblob(32))",
                rusqlite::params![lesson(date, group), iin, status, method],
            )
            .expect("mark");
    };
    let (d1, d2, d3, d4) = ("2026-11-02", "2026-11-09", "2026-11-16", "2026-11-23");
    // A: 2 QR of 4 present → exactly 50% → tracked.
    mark(d1, "ПО-21", A, "present", "qr_phone");
    mark(d2, "ПО-21", A, "late", "qr_kiosk");
    mark(d3, "ПО-21", A, "present", "manual");
    mark(d4, "ПО-21", A, "present", "manual");
    // B: 1 QR of 3 present (the absent one does not count) → not tracked.
    mark(d1, "ПО-21", B, "present", "qr_phone");
    mark(d2, "ПО-21", B, "present", "manual");
    mark(d3, "ПО-21", B, "present", "manual");
    mark(d4, "ПО-21", B, "absent", "manual");
    // C: 2 typed of 2 present; the QR mark of d3 was corrected to absent (latest wins).
    mark(d1, "ПО-21", C, "present", "qr_typed");
    mark(d2, "ПО-21", C, "present", "qr_typed");
    mark(d3, "ПО-21", C, "present", "qr_phone");
    mark(d3, "ПО-21", C, "absent", "manual");
    // D: no marks → not tracked. E: not a beneficiary, QR every time → not counted.
    for day in [d1, d2, d3, d4] {
        mark(day, "ПО-21", E, "present", "qr_phone");
    }
    mark("2026-10-26", "ПО-21", D, "present", "qr_phone"); // October: ignored
                                                           // F: manual only → not tracked.
    for day in [d1, d2, d3, d4] {
        mark(day, "ВТ-21", F, "present", "manual");
    }
    // G: expelled on the 15th: only d1 and d2 count (both QR) → tracked.
    mark(d1, "ВТ-21", G, "present", "qr_phone");
    mark(d2, "ВТ-21", G, "present", "qr_phone");
    mark(d3, "ВТ-21", G, "present", "manual");
    mark(d4, "ВТ-21", G, "present", "manual");
    // H: on leave all month: excluded whatever is marked.
    mark(d1, "ВТ-21", H, "present", "manual");
    dir
}

fn coverage(dir: &TempDataDir, extra: &[&str]) -> Value {
    let mut args = vec!["coverage", "--month", "2026-11", "--json"];
    args.extend_from_slice(extra);
    serde_json::from_str(&agent(dir, &args)).expect("json")
}

#[test]
fn hand_computed_month() {
    let dir = seeded_month();
    let report = coverage(&dir, &[]);
    // By hand: beneficiaries active in November are A, B, C, D (ПО-21) and F, G (ВТ-21);
    // E is not a beneficiary, H is on leave from before the month.
    // Tracked: A (2/4 = 50%), C (2/2 typed), G (2/2 before the 15th) → 3 of 6 = 500‰.
    // Present marks: A 4 + B 3 + C 2 + D 0 + F 4 + G 2 = 15; QR: 2 + 1 + 2 + 0 + 0 + 2 = 7.
    let college = &report["college"];
    assert_eq!(college["beneficiaries"], 6);
    assert_eq!(college["qr_tracked"], 3);
    assert_eq!(college["coverage_per_mille"], 500);
    assert_eq!(college["present_marks"], 15);
    assert_eq!(college["qr_marks"], 7);
    assert_eq!(college["qr_share_per_mille"], 466);
    assert_eq!(college["holds"], true);
    let not_tracked: Vec<&str> = college["not_tracked"]
        .as_array()
        .expect("list")
        .iter()
        .map(|s| s["iin"].as_str().expect("iin"))
        .collect();
    assert_eq!(not_tracked.len(), 3);
    for iin in [B, D, F] {
        assert!(
            not_tracked.contains(&iin),
            "{iin} should be listed: {not_tracked:?}"
        );
    }
    // ПО-21: A and C of A, B, C, D → 2/4 = 500‰ (exactly the minimum: holds).
    // ВТ-21: G of F, G → 1/2 = 500‰.
    let groups = report["groups"].as_array().expect("groups");
    let group = |code: &str| {
        groups
            .iter()
            .find(|g| g["scope"] == code)
            .expect("group")
            .clone()
    };
    assert_eq!(
        (
            group("ПО-21")["qr_tracked"].as_i64(),
            group("ПО-21")["beneficiaries"].as_i64()
        ),
        (Some(2), Some(4))
    );
    assert_eq!(
        (
            group("ВТ-21")["qr_tracked"].as_i64(),
            group("ВТ-21")["beneficiaries"].as_i64()
        ),
        (Some(1), Some(2))
    );
    assert_eq!(group("ПО-21")["holds"], true);

    let only = coverage(&dir, &["--group", "ВТ-21"]);
    assert_eq!(
        only["college"]["beneficiaries"], 2,
        "the scope narrows to the group"
    );
    assert_eq!(only["groups"].as_array().expect("groups").len(), 1);
}

#[test]
fn typed_codes_can_be_excluded_by_config() {
    let dir = seeded_month();
    let config = dir.path().join("config.toml");
    let text = fs::read_to_string(&config).expect("config").replace(
        "typed_code_counts_as_qr = true",
        "typed_code_counts_as_qr = false",
    );
    fs::write(&config, text).expect("config");
    let report = coverage(&dir, &[]);
    // C's two typed marks no longer count: tracked A and G → 2 of 6 = 333‰ < 500‰.
    assert_eq!(report["college"]["qr_tracked"], 2);
    assert_eq!(report["college"]["coverage_per_mille"], 333);
    assert_eq!(report["college"]["holds"], false);
    let groups = report["groups"].as_array().expect("groups");
    let po21 = groups
        .iter()
        .find(|g| g["scope"] == "ПО-21")
        .expect("group");
    assert_eq!(po21["holds"], false, "1 of 4 is below the rule");
    let human = agent(&dir, &["coverage", "--month", "2026-11"]);
    assert!(human.contains("BELOW THE RULE"), "{human}");
}

#[test]
fn online_lessons_count_like_any_other() {
    let offline = coverage(&seeded_month_with("offline", "15.11.2026"), &[]);
    let online = coverage(&seeded_month_with("online", "15.11.2026"), &[]);
    assert_eq!(online, offline);
}

#[test]
fn an_expelled_student_counts_only_until_the_effective_date() {
    // G has QR marks on the 2nd and 9th and manual ones on the 16th and 23rd.
    // By hand, for each expulsion date: which of G's marks count, and is G tracked?
    let cases = [
        ("01.11.2026", None),               // gone before the month: not a beneficiary
        ("03.11.2026", Some((1, 1, true))), // only the 2nd
        ("15.11.2026", Some((2, 2, true))), // the 2nd and 9th
        ("20.11.2026", Some((3, 2, true))), // + the 16th by hand: 2 of 3
        ("30.11.2026", Some((4, 2, true))), // all four: 2 of 4 is exactly half
    ];
    for (expelled_on, expected) in cases {
        let report = coverage(
            &seeded_month_with("offline", expelled_on),
            &["--group", "ВТ-21"],
        );
        let beneficiaries = report["college"]["beneficiaries"].as_i64().expect("count");
        match expected {
            None => assert_eq!(beneficiaries, 1, "{expelled_on}: only F counts"),
            Some((present, qr, tracked)) => {
                assert_eq!(beneficiaries, 2, "{expelled_on}");
                assert_eq!(
                    report["college"]["present_marks"].as_i64(),
                    Some(4 + present),
                    "{expelled_on}: F's 4 plus G's"
                );
                assert_eq!(
                    report["college"]["qr_marks"].as_i64(),
                    Some(qr),
                    "{expelled_on}"
                );
                assert_eq!(
                    report["college"]["qr_tracked"].as_i64(),
                    Some(i64::from(tracked)),
                    "{expelled_on}"
                );
            }
        }
    }
}
