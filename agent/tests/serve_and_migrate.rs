//! Black-box tests of `serve` (health, restart, SIGTERM) and of schema upgrades from the
//! fixture of every older released schema.

use std::fs;
use std::path::Path;

use kasip_tests::{browser, run, text, Server, TempDataDir};
use serde_json::Value;

const AGENT: &str = env!("CARGO_BIN_EXE_kasip-agent");

fn status(data_dir: &Path) -> Value {
    let output = run(AGENT, data_dir, &["status", "--json"]);
    assert!(output.status.success(), "{:?}", text(&output));
    serde_json::from_slice(&output.stdout).expect("status JSON")
}

#[test]
fn serve_on_a_new_dir_seeds_the_demo_answers_health_and_stops_cleanly() {
    let dir = TempDataDir::new();
    let server = Server::start(AGENT, &dir.path(), &[]);
    assert!(
        server.url.starts_with("https://127.0.0.1:"),
        "{}",
        server.url
    );
    let client = browser(&dir.path());
    let health = client
        .get(format!("{}/healthz", server.url))
        .send()
        .expect("healthz");
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().expect("body").trim(), "ok");

    let home = client
        .get(format!("{}/", server.url))
        .header("Accept-Language", "kk-KZ,ru;q=0.8")
        .send()
        .expect("home");
    assert_eq!(home.status(), 200);
    let home = home.text().expect("body");
    assert!(home.contains("lang=\"kk\""), "{home}");
    assert!(home.contains("Студенттер"), "{home}");
    assert!(
        home.contains("<td>150</td>"),
        "demo has 150 students: {home}"
    );
    let english = client
        .get(format!("{}/?lang=en", server.url))
        .header("Accept-Language", "ru")
        .send()
        .expect("home")
        .text()
        .expect("body");
    assert!(english.contains("Beneficiaries"), "{english}");

    let (exit, log) = server.stop_with("TERM");
    assert!(exit.success(), "exit {exit:?}; log:\n{log}");
    assert!(log.contains("shut down cleanly"), "{log}");
    // A clean close checkpoints the WAL back into the database file.
    let wal = dir.path().join("agent.db-wal");
    assert!(!wal.exists() || fs::metadata(&wal).expect("wal").len() == 0);

    let counts = &status(&dir.path())["counts"];
    assert_eq!(counts["students"], 150);
    assert_eq!(counts["groups"], 6);
    assert_eq!(counts["sites"], 2);
    // 90 lessons a week (6 groups, 3 pairs, Monday to Friday), from the week holding the
    // month's first day to this week: one to six weeks depending on today's date; and the
    // lesson starting now (one of the pairs when now is a pair's start).
    let lessons = counts["lessons"].as_i64().expect("lessons");
    assert!(
        lessons % 90 <= 1 && (90..=540).contains(&(lessons - lessons % 90)),
        "{lessons}"
    );
    // Four in five are beneficiaries; one of those is expelled in the demo.
    assert_eq!(counts["beneficiaries"], 119);
}

#[test]
fn restart_keeps_the_data_and_does_not_reseed() {
    let dir = TempDataDir::new();
    let first = Server::start(AGENT, &dir.path(), &[]);
    let (exit, _) = first.stop_with("TERM");
    assert!(exit.success());
    let before = status(&dir.path());
    let key_before = fs::read(dir.path().join("agent-key.pem")).expect("key");

    let second = Server::start(AGENT, &dir.path(), &[]);
    let health = browser(&dir.path())
        .get(format!("{}/healthz", second.url))
        .send()
        .expect("healthz");
    assert_eq!(health.status(), 200);
    let (exit, log) = second.stop_with("INT");
    assert!(exit.success(), "{log}");
    assert!(
        !log.contains("demo college seeded"),
        "restart must not reseed: {log}"
    );
    let after = status(&dir.path());
    assert_eq!(after["counts"], before["counts"]);
    assert_eq!(after["key_thumbprint"], before["key_thumbprint"]);
    assert_eq!(
        fs::read(dir.path().join("agent-key.pem")).expect("key"),
        key_before
    );
}

#[test]
fn serve_refuses_a_port_in_use_with_advice() {
    let dir = TempDataDir::new();
    let server = Server::start(AGENT, &dir.path(), &[]);
    let output = run(
        AGENT,
        &dir.path(),
        &["serve", "--listen", &server.address()],
    );
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output).1.contains("--listen"), "{:?}", text(&output));
}

/// Puts a fixture database into a freshly initialised data dir.
fn data_dir_with_fixture(fixture: &str) -> TempDataDir {
    let dir = TempDataDir::new();
    assert!(run(AGENT, &dir.path(), &["init"]).status.success());
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(fixture);
    for leftover in ["agent.db-wal", "agent.db-shm"] {
        let _ = fs::remove_file(dir.path().join(leftover));
    }
    fs::copy(fixture, dir.path().join("agent.db")).expect("copy fixture");
    dir
}

#[test]
fn schema_v1_fixture_upgrades_with_every_row() {
    let dir = data_dir_with_fixture("schema-v1.sqlite");
    let status = status(&dir.path());
    assert_eq!(status["schema_version"], status["latest_schema_version"]);
    // The fixture's rows, counted by hand from make-schema-v1.py.
    let counts = &status["counts"];
    assert_eq!(counts["sites"], 1);
    assert_eq!(counts["groups"], 2);
    assert_eq!(counts["students"], 3);
    assert_eq!(
        counts["beneficiaries"], 1,
        "one active beneficiary; the other is expelled"
    );
    assert_eq!(counts["teachers"], 1);
    assert_eq!(counts["lessons"], 2);
    let database = rusqlite::Connection::open(dir.path().join("agent.db")).expect("db");
    let name: String = database
        .query_row(
            "SELECT first_name FROM students WHERE iin = '060315500016'",
            [],
            |row| row.get(0),
        )
        .expect("row kept");
    assert_eq!(name, "Әлихан");
    // The upgraded database takes new data through the version-2 tables.
    let csv = dir.file("students.csv");
    fs::write(&csv, "iin;last_name;first_name;group;beneficiary;status;status_date\n051203500038;Төлеубаев;Ұлан;ВТ-21;да;active;20.11.2026\n").expect("csv");
    let output = run(
        AGENT,
        &dir.path(),
        &["import", "students", csv.to_str().expect("utf-8 path")],
    );
    assert!(output.status.success(), "{:?}", text(&output));
    assert!(text(&output).0.contains("1 contingent event(s) recorded"));
}

#[test]
fn schema_v3_fixture_upgrades_with_its_marks_chain_and_coverage() {
    let dir = data_dir_with_fixture("schema-v3.sqlite");
    let status = status(&dir.path());
    assert_eq!(status["schema_version"], status["latest_schema_version"]);
    // The chain written by version 3 still verifies, and the tally that version 4 added
    // was filled from the old marks.
    let output = run(AGENT, &dir.path(), &["verify"]);
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("attendance chain intact: 4 events"),
        "{stdout}"
    );
    assert!(
        stdout.contains("coverage tally matches the marks"),
        "{stdout}"
    );
    // By hand from make-schema-v3.py: ПО-21's first student has one QR mark (tracked);
    // the second's QR mark was corrected to absent (0 present, not tracked); ВТ-21's
    // student has one manual mark (not tracked). College 1 of 3.
    let output = run(
        AGENT,
        &dir.path(),
        &["coverage", "--month", "2026-11", "--json"],
    );
    assert!(output.status.success(), "{:?}", text(&output));
    let report: Value = serde_json::from_slice(&output.stdout).expect("json");
    assert_eq!(report["college"]["beneficiaries"], 3);
    assert_eq!(report["college"]["qr_tracked"], 1);
    assert_eq!(report["college"]["present_marks"], 2);
    assert_eq!(report["college"]["qr_marks"], 1);
    let group = |code: &str| {
        report["groups"]
            .as_array()
            .expect("groups")
            .iter()
            .find(|group| group["scope"] == code)
            .cloned()
            .expect("group")
    };
    assert_eq!(group("ПО-21")["qr_tracked"], 1);
    assert_eq!(group("ПО-21")["present_marks"], 1);
    assert_eq!(group("ВТ-21")["qr_tracked"], 0);
    // An edit of the derived tally behind the agent's back is caught by `verify`.
    let database = rusqlite::Connection::open(dir.path().join("agent.db")).expect("db");
    database
        .execute(
            "UPDATE mark_tally SET qr = 1 WHERE student_iin = '051203500038'",
            [],
        )
        .expect("edit");
    drop(database);
    let output = run(AGENT, &dir.path(), &["verify"]);
    assert!(!output.status.success());
    assert!(
        text(&output).1.contains("coverage tally differs from the marks for 1 student-day(s), first 051203500038 on 2026-11-23"),
        "{:?}",
        text(&output)
    );
}

#[test]
fn schema_v5_fixture_upgrades_keeping_grades_and_chain_and_takes_kiosks() {
    let dir = data_dir_with_fixture("schema-v5.sqlite");
    let status = status(&dir.path());
    assert_eq!(status["schema_version"], status["latest_schema_version"]);
    let output = run(AGENT, &dir.path(), &["verify"]);
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("attendance chain intact: 4 events"),
        "{stdout}"
    );
    // From make-schema-v5.sh: one grade and its correction.
    let database = rusqlite::Connection::open(dir.path().join("agent.db")).expect("db");
    let grades: (i64, i64) = database
        .query_row(
            "SELECT COUNT(*), COUNT(corrects) FROM grade_events",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .expect("grades");
    assert_eq!(grades, (2, 1));
    let empty: i64 = database
        .query_row(
            "SELECT (SELECT COUNT(*) FROM pass_keys) + (SELECT COUNT(*) FROM kiosks) + (SELECT COUNT(*) FROM kiosk_scans)",
            [],
            |row| row.get(0),
        )
        .expect("new tables");
    assert_eq!(empty, 0);
    drop(database);
    // The upgraded college can take a kiosk for its room 101.
    let output = run(AGENT, &dir.path(), &["kiosk", "add", "--room", "101"]);
    assert!(output.status.success(), "{:?}", text(&output));
    assert!(
        text(&output).0.contains("kiosk 1 for room 101"),
        "{:?}",
        text(&output)
    );
}

#[test]
fn a_newer_schema_is_refused_with_a_clear_message() {
    let dir = TempDataDir::new();
    assert!(run(AGENT, &dir.path(), &["init"]).status.success());
    let database = rusqlite::Connection::open(dir.path().join("agent.db")).expect("db");
    database
        .execute(
            "INSERT INTO schema_migrations VALUES (999, 'from a newer agent', 0)",
            [],
        )
        .expect("insert");
    drop(database);
    let output = run(AGENT, &dir.path(), &["status"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = text(&output).1;
    assert!(
        stderr.contains("schema version 999, newer than this kasip-agent supports"),
        "{stderr}"
    );
    let server = run(AGENT, &dir.path(), &["serve", "--listen", "127.0.0.1:0"]);
    assert_eq!(server.status.code(), Some(1));
}

/// Regression: SIGTERM sent right after `listening on` used to arrive before the handler
/// was installed, killing the agent without closing the database.
#[test]
fn sigterm_right_after_listening_still_shuts_down_cleanly() {
    let dir = TempDataDir::new();
    assert!(run(AGENT, &dir.path(), &["init"]).status.success());
    for _ in 0..3 {
        let server = Server::start(AGENT, &dir.path(), &[]);
        let (exit, log) = server.stop_with("TERM");
        assert!(exit.success(), "exit {exit:?}; log:\n{log}");
        assert!(log.contains("shut down cleanly"), "{log}");
    }
}
