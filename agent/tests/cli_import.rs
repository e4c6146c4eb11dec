//! Black-box tests of `init`, `import` and `status`: the real binary over temp data dirs.

use std::fs;

use kasip_tests::{run, text, TempDataDir};
use serde_json::Value;

const AGENT: &str = env!("CARGO_BIN_EXE_kasip-agent");

// IINs whose check digits were computed by hand with the two-pass mod-11 rule.
const TEACHER_A: &str = "850515400012";
const TEACHER_B: &str = "791103300025";

const TEACHERS_CSV: &str = "iin;last_name;first_name;middle_name\n\
850515400012;Жұмабаева;Әйгерім;Серікқызы\n\
791103300025;Иванов;Сергей;Петрович\n";

/// BOM, `;`, Russian headers, a quoted field holding `;`, and Kazakh letters
/// ә ғ қ ң ө ұ ү һ і.
const STUDENTS_CSV: &str = "\u{feff}ИИН;Фамилия;Имя;Отчество;Группа;Бюджет;Статус;Дата статуса\n\
060315500016;Әбілқасымов;Әлихан;Серікұлы;ПО-21;да;обучается;\n\
060315600022;\"Ғабитова; Құдайберген\";Аңсаған;;ПО-21;нет;;\n\
051203500038;Төлеубаев;Ұлан;Үмбетұлы;ВТ-21;1;active;\n\
070729600045;Шаһмұрат;Іңкәр;Өмірқызы;ВТ-21;yes;;\n";

fn initialised() -> TempDataDir {
    let dir = TempDataDir::new();
    let output = run(
        AGENT,
        &dir.path(),
        &[
            "init",
            "--college-bin",
            "090640001233",
            "--college-name",
            "Тест колледжі",
        ],
    );
    assert!(output.status.success(), "{:?}", text(&output));
    dir
}

fn write(dir: &TempDataDir, name: &str, contents: &[u8]) -> String {
    let path = dir.file(name);
    fs::write(&path, contents).expect("write csv");
    path.display().to_string()
}

fn status(dir: &TempDataDir) -> Value {
    let output = run(AGENT, &dir.path(), &["status", "--json"]);
    assert!(output.status.success(), "{:?}", text(&output));
    serde_json::from_slice(&output.stdout).expect("status JSON")
}

fn import(dir: &TempDataDir, kind: &str, name: &str, contents: &str) -> (bool, String, String) {
    let path = write(dir, name, contents.as_bytes());
    let output = run(AGENT, &dir.path(), &["import", kind, &path]);
    let (stdout, stderr) = text(&output);
    (output.status.success(), stdout, stderr)
}

fn seeded() -> TempDataDir {
    let dir = initialised();
    assert!(import(&dir, "teachers", "teachers.csv", TEACHERS_CSV).0);
    let (ok, stdout, stderr) = import(&dir, "students", "students.csv", STUDENTS_CSV);
    assert!(ok, "{stdout}{stderr}");
    dir
}

#[test]
fn init_twice_refuses_and_changes_nothing() {
    let dir = initialised();
    let config_before = fs::read(dir.path().join("config.toml")).expect("config");
    let key_before = fs::read(dir.path().join("agent-key.pem")).expect("key");
    let output = run(
        AGENT,
        &dir.path(),
        &["init", "--college-bin", "090640001233"],
    );
    assert_eq!(output.status.code(), Some(64));
    assert!(
        text(&output).1.contains("already initialised"),
        "{:?}",
        text(&output)
    );
    assert_eq!(
        fs::read(dir.path().join("config.toml")).expect("config"),
        config_before
    );
    assert_eq!(
        fs::read(dir.path().join("agent-key.pem")).expect("key"),
        key_before
    );
}

#[test]
fn init_writes_a_private_key_and_a_documented_config() {
    use std::os::unix::fs::PermissionsExt;
    let dir = initialised();
    let mode = fs::metadata(dir.path().join("agent-key.pem"))
        .expect("key")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let config = fs::read_to_string(dir.path().join("config.toml")).expect("config");
    for key in [
        "bin = \"090640001233\"",
        "name = \"Тест колледжі\"",
        "timezone = \"Asia/Almaty\"",
        "listen = \"127.0.0.1:8443\"",
    ] {
        assert!(config.contains(key), "config lacks {key}:\n{config}");
    }
    // Every key line is preceded by a comment saying what it is.
    let lines: Vec<&str> = config.lines().collect();
    for (index, line) in lines.iter().enumerate() {
        if line.contains(" = ") {
            assert!(
                lines[index - 1].starts_with('#'),
                "undocumented key: {line}"
            );
        }
    }
    let status = status(&dir);
    assert_eq!(status["college_bin"], "090640001233");
    assert_eq!(status["schema_version"], status["latest_schema_version"]);
    let log = text(&run(AGENT, &dir.path(), &["status"])).1;
    assert!(!log.contains("PRIVATE KEY"));
}

#[test]
fn init_refuses_a_bad_bin_with_the_reason() {
    let dir = TempDataDir::new();
    let output = run(
        AGENT,
        &dir.path(),
        &["init", "--college-bin", "090640001234"],
    );
    assert_eq!(output.status.code(), Some(64));
    assert!(
        text(&output).1.contains("check digit"),
        "{:?}",
        text(&output)
    );
    assert!(!dir.path().exists());
}

#[test]
fn good_files_import_with_kazakh_letters_quotes_and_bom() {
    let dir = seeded();
    let status = status(&dir);
    assert_eq!(status["counts"]["students"], 4);
    assert_eq!(status["counts"]["beneficiaries"], 3);
    assert_eq!(status["counts"]["groups"], 2);
    assert_eq!(status["counts"]["teachers"], 2);
    let database = rusqlite::Connection::open(dir.path().join("agent.db")).expect("db");
    let (last_name, first_name): (String, String) = database
        .query_row(
            "SELECT last_name, first_name FROM students WHERE iin = '060315600022'",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .expect("student");
    assert_eq!(last_name, "Ғабитова; Құдайберген");
    assert_eq!(first_name, "Аңсаған");
    let shahmurat: String = database
        .query_row(
            "SELECT first_name || ' ' || middle_name FROM students WHERE iin = '070729600045'",
            [],
            |row| row.get(0),
        )
        .expect("student");
    assert_eq!(shahmurat, "Іңкәр Өмірқызы");
}

#[test]
fn comma_separated_english_export_also_imports() {
    let dir = initialised();
    let csv = "iin,last_name,first_name,middle_name,group,beneficiary,status,status_date\n\
               040229500075,Ким,Дана,,\"ЭС-23\",no,,\n";
    let (ok, stdout, stderr) = import(&dir, "students", "students.csv", csv);
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("1 added"), "{stdout}");
}

/// One bad case: the file, the row, the column and the reason are named, the exit code is
/// non-zero, and the database is exactly as before.
fn assert_rejected(kind: &str, csv: &[u8], expected_row: &str, expected_reason: &str) {
    let dir = seeded();
    let before = status(&dir)["counts"].clone();
    let path = write(&dir, "bad.csv", csv);
    let output = run(AGENT, &dir.path(), &["import", kind, &path]);
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("nothing was imported"), "{stderr}");
    let line = stderr
        .lines()
        .find(|line| line.starts_with(&format!("{path}: {expected_row}")))
        .unwrap_or_else(|| panic!("no line for '{expected_row}' in:\n{stderr}"));
    assert!(
        line.contains(expected_reason),
        "'{line}' lacks '{expected_reason}'"
    );
    assert_eq!(
        status(&dir)["counts"],
        before,
        "a rejected import changed the database"
    );
}

const HEADER: &str = "iin;last_name;first_name;middle_name;group;beneficiary;status;status_date\n";
const GOOD_ROW: &str = "050701600089;Оспанова;Мадина;;ПО-21;да;;\n";

#[test]
fn wrong_check_digit() {
    let csv = format!("{HEADER}{GOOD_ROW}050701600088;Ахметов;Арман;;ПО-21;да;;\n");
    assert_rejected(
        "students",
        csv.as_bytes(),
        "row 3, column iin",
        "check digit is 8 but the other digits give 9",
    );
}

#[test]
fn impossible_birth_date() {
    // 2005-02-30 does not exist.
    let csv = format!("{HEADER}050230500011;Ахметов;Арман;;ПО-21;да;;\n{GOOD_ROW}");
    assert_rejected(
        "students",
        csv.as_bytes(),
        "row 2, column iin",
        "birth date 2005-02-30 does not exist",
    );
}

#[test]
fn eleven_digits() {
    let csv = format!("{HEADER}{GOOD_ROW}05070160008;Ахметов;Арман;;ПО-21;да;;\n");
    assert_rejected(
        "students",
        csv.as_bytes(),
        "row 3, column iin",
        "exactly 12 digits, got 11",
    );
}

#[test]
fn duplicate_iin_within_a_file() {
    let csv = format!("{HEADER}{GOOD_ROW}{GOOD_ROW}");
    assert_rejected(
        "students",
        csv.as_bytes(),
        "row 3, column iin",
        "already on row 2",
    );
}

#[test]
fn unknown_group_in_the_timetable() {
    let csv = format!(
        "date;start;end;group;discipline;teacher_iin;site;room;mode\n\
         2026-11-23;09:00;10:30;ПО-99;Математика;{TEACHER_A};Главный корпус;101;offline\n"
    );
    assert_rejected(
        "timetable",
        csv.as_bytes(),
        "row 2, column group",
        "'ПО-99' is not a known group",
    );
}

#[test]
fn unknown_teacher_in_the_timetable() {
    let csv = "date;start;end;group;discipline;teacher_iin;site;room;mode\n\
               2026-11-23;09:00;10:30;ПО-21;Математика;900101300017;Главный корпус;101;offline\n";
    assert_rejected(
        "timetable",
        csv.as_bytes(),
        "row 2, column teacher_iin",
        "no teacher with IIN 900101300017",
    );
}

#[test]
fn missing_column() {
    let csv = "iin;last_name;first_name;group;status\n050701600089;Оспанова;Мадина;ПО-21;\n";
    assert_rejected(
        "students",
        csv.as_bytes(),
        "row 1, column beneficiary",
        "required column 'beneficiary'",
    );
}

#[test]
fn empty_file() {
    assert_rejected("students", b"", "row 1", "the file is empty");
}

#[test]
fn binary_garbage() {
    let garbage: Vec<u8> = (0..2048u32)
        .map(|index| (index.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    assert_rejected("students", &garbage, "row 1", "not UTF-8");
}

#[test]
fn sql_looking_and_ten_thousand_character_names() {
    let long_name = "Ы".repeat(10_000);
    let csv = format!(
        "{HEADER}050701600089;\"Robert'); DROP TABLE students;--\";{long_name};;ПО-21;да;;\n"
    );
    assert_rejected(
        "students",
        csv.as_bytes(),
        "row 2, column first_name",
        "10000 characters long",
    );
}

#[test]
fn every_bad_row_is_reported_not_just_the_first() {
    let dir = seeded();
    let csv = format!(
        "{HEADER}{GOOD_ROW}05070160008;A;B;;ПО-21;да;;\n050701600089;A;B;;ПО-21;может быть;;\n"
    );
    let path = write(&dir, "bad.csv", csv.as_bytes());
    let stderr = text(&run(AGENT, &dir.path(), &["import", "students", &path])).1;
    assert!(stderr.contains("row 3, column iin"), "{stderr}");
    assert!(
        stderr.contains("row 4, column iin: 050701600089 is already on row 2"),
        "{stderr}"
    );
    assert!(
        stderr.contains("row 4, column beneficiary: 'может быть' is not one of"),
        "{stderr}"
    );
}

#[test]
fn skip_invalid_imports_the_valid_rows_and_lists_the_rest() {
    let dir = seeded();
    let csv = format!("{HEADER}{GOOD_ROW}05070160008;A;B;;ПО-21;да;;\n");
    let path = write(&dir, "mixed.csv", csv.as_bytes());
    let output = run(
        AGENT,
        &dir.path(),
        &["import", "students", &path, "--skip-invalid"],
    );
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stderr}");
    assert!(stdout.contains("1 added"), "{stdout}");
    assert!(stdout.contains("1 bad row(s) skipped"), "{stdout}");
    assert!(stdout.contains("row 3, column iin"), "{stdout}");
    assert_eq!(status(&dir)["counts"]["students"], 5);
}

#[test]
fn reimport_is_idempotent_and_counts_changes() {
    let dir = seeded();
    let (ok, stdout, _) = import(&dir, "students", "again.csv", STUDENTS_CSV);
    assert!(ok);
    assert!(
        stdout.contains("4 rows: 0 added, 0 updated, 4 unchanged"),
        "{stdout}"
    );
    let events_before = status(&dir)["counts"]["contingent_events"].clone();
    // One renamed, one dropped from the export, one new.
    let changed = STUDENTS_CSV
        .replace("Ұлан", "Ұланбек")
        .replace("070729600045;Шаһмұрат;Іңкәр;Өмірқызы;ВТ-21;yes;;\n", "")
        + "040229500075;Ким;Дана;;ВТ-21;да;;\n";
    let (ok, stdout, stderr) = import(&dir, "students", "changed.csv", &changed);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("4 rows: 1 added, 1 updated, 2 unchanged"),
        "{stdout}"
    );
    assert!(
        stdout.contains("1 in the database but not in this export (kept, not deleted"),
        "{stdout}"
    );
    assert!(
        stdout.contains("070729600045 Шаһмұрат Іңкәр (ВТ-21)"),
        "{stdout}"
    );
    assert_eq!(status(&dir)["counts"]["students"], 5, "nobody is deleted");
    // The new student's enrolment is the only new contingent event.
    assert_eq!(
        status(&dir)["counts"]["contingent_events"],
        events_before.as_i64().expect("n") + 1
    );
}

#[test]
fn status_change_becomes_a_contingent_event() {
    let dir = seeded();
    let expelled = STUDENTS_CSV.replace(
        "051203500038;Төлеубаев;Ұлан;Үмбетұлы;ВТ-21;1;active;",
        "051203500038;Төлеубаев;Ұлан;Үмбетұлы;ВТ-21;1;отчислен;15.11.2026",
    );
    let (ok, stdout, stderr) = import(&dir, "students", "expelled.csv", &expelled);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("1 contingent event(s) recorded"),
        "{stdout}"
    );
    let database = rusqlite::Connection::open(dir.path().join("agent.db")).expect("db");
    let (change, status, previous, effective): (String, String, String, String) = database
        .query_row(
            "SELECT change, status, previous_status, effective_date FROM contingent_events
             WHERE student_iin = '051203500038' ORDER BY id DESC LIMIT 1",
            [],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
        )
        .expect("event");
    assert_eq!(
        (
            change.as_str(),
            status.as_str(),
            previous.as_str(),
            effective.as_str()
        ),
        ("status", "expelled", "active", "2026-11-15")
    );
    // Back to active is a change too.
    let (ok, stdout, _) = import(&dir, "students", "back.csv", STUDENTS_CSV);
    assert!(ok);
    assert!(
        stdout.contains("1 contingent event(s) recorded"),
        "{stdout}"
    );
}

#[test]
fn timetable_imports_and_reimports_by_date_start_group() {
    let dir = seeded();
    let csv = format!(
        "Дата;Начало;Конец;Группа;Дисциплина;ИИН преподавателя;Корпус;Аудитория;Формат;Адрес\n\
         23.11.2026;09:00;10:30;ПО-21;Математика;{TEACHER_A};Главный корпус;101;очно;г. Алматы, ул. Толе би, 100\n\
         23.11.2026;10:40;12:10;ПО-21;Информатика;{TEACHER_B};;;онлайн;\n\
         23.11.2026;09:00;10:30;ВТ-21;Физика;{TEACHER_B};Корпус 2;205;offline;г. Алматы, пр. Абая, 52\n"
    );
    let (ok, stdout, stderr) = import(&dir, "timetable", "tt.csv", &csv);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("3 rows: 3 added"), "{stdout}");
    assert!(stdout.contains("2 new site(s) created"), "{stdout}");
    let moved = csv.replace(";101;", ";102;");
    let (ok, stdout, _) = import(&dir, "timetable", "tt2.csv", &moved);
    assert!(ok);
    assert!(
        stdout.contains("3 rows: 0 added, 1 updated, 2 unchanged"),
        "{stdout}"
    );
    let bad_times = csv.replace("09:00;10:30;ПО-21", "11:00;10:30;ПО-21");
    let path = write(&dir, "tt3.csv", bad_times.as_bytes());
    let stderr = text(&run(AGENT, &dir.path(), &["import", "timetable", &path])).1;
    assert!(
        stderr.contains("row 2, column end: 10:30 is not after the start 11:00"),
        "{stderr}"
    );
}

#[test]
fn commands_on_an_uninitialised_dir_say_what_to_do() {
    let dir = TempDataDir::new();
    let output = run(AGENT, &dir.path(), &["status"]);
    assert_eq!(output.status.code(), Some(64));
    assert!(
        text(&output).1.contains("run `kasip-agent init`"),
        "{:?}",
        text(&output)
    );
}

#[test]
fn every_subcommand_has_help() {
    let dir = TempDataDir::new();
    for command in ["init", "serve", "demo", "import", "status", "validate"] {
        let output = run(AGENT, &dir.path(), &[command, "--help"]);
        assert!(output.status.success(), "{command} --help failed");
        let stdout = text(&output).0;
        assert!(stdout.contains("Usage: kasip-agent"), "{command}: {stdout}");
    }
    let output = run(AGENT, &dir.path(), &["no-such-command"]);
    assert_eq!(output.status.code(), Some(64));
}

#[test]
fn validate_names_a_bad_key() {
    let dir = initialised();
    let path = dir.path().join("config.toml");
    let config = fs::read_to_string(&path)
        .expect("config")
        .replace("listen = \"127.0.0.1:8443\"", "listen = \"everywhere\"");
    fs::write(&path, config).expect("write");
    let output = run(AGENT, &dir.path(), &["validate"]);
    assert_eq!(output.status.code(), Some(64));
    assert!(
        text(&output).1.contains("server.listen 'everywhere'"),
        "{:?}",
        text(&output)
    );
}
