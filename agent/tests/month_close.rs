//! Month close: refused before the month ends unless forced with a reason, writes a
//! signed statement that verifies and reports whose totals equal the marks, refuses a
//! second close, and turns later corrections into adjustments.

mod common;

use std::fs;

use common::{check_in, College, AGENT};
use kasip_certs::jws::verify_compact;
use kasip_certs::DeviceKey;
use kasip_tests::{run_with, text};
use serde_json::Value;

#[test]
fn month_close_signs_a_statement_reports_totals_and_freezes_the_month() {
    let college = College::new(3);
    let teacher = college.with_one_check_in();

    let clock = college.dir.file("clock").display().to_string();
    let env = [("KASIP_UNSAFE_CLOCK_FILE", clock.as_str())];
    let close = |args: &[&str]| run_with(AGENT, &college.dir.path(), args, &env, None);

    // The clock says 2026-11-23: November has not ended.
    let early = close(&["month-close", "2026-11"]);
    assert_eq!(early.status.code(), Some(64));
    assert!(
        text(&early).1.contains("has not ended yet"),
        "{:?}",
        text(&early)
    );

    let forced = close(&[
        "month-close",
        "2026-11",
        "--force",
        "--reason",
        "ministry inspection",
    ]);
    assert!(forced.status.success(), "{:?}", text(&forced));
    let stdout = text(&forced).0;
    // 1 of ПО-21's 3 beneficiaries is QR-tracked (33.3%); ВТ-21 has no marks (0 of 3).
    assert!(stdout.contains("NON-COMPLIANT"), "{stdout}");

    let statement = fs::read_to_string(
        college
            .dir
            .path()
            .join("statements/month-close-2026-11.jws"),
    )
    .expect("statement");
    let key = DeviceKey::load(&college.dir.path().join("agent-key.pem")).expect("key");
    let verified = verify_compact(&statement, key.public_key())
        .expect("the statement verifies under the agent's key");
    assert_eq!(verified.header["kid"], key.thumbprint());
    let payload: Value = serde_json::from_slice(&verified.payload).expect("payload");
    assert_eq!(payload["kind"], "month_close");
    assert_eq!(payload["month"], "2026-11");
    assert_eq!(payload["compliant"], false);
    assert_eq!(payload["forced_reason"], "ministry inspection");
    assert!(
        payload["reasons"]
            .as_array()
            .expect("reasons")
            .iter()
            .any(|reason| reason
                .as_str()
                .expect("text")
                .contains("college coverage 16.6%")),
        "{}",
        payload["reasons"]
    );
    let students = payload["students"].as_array().expect("students");
    assert_eq!(students.len(), 6);
    let first = students
        .iter()
        .find(|student| student["iin"] == college.group_a[0].as_str())
        .expect("student");
    assert_eq!(
        (
            first["present"].as_i64(),
            first["qr_marks"].as_i64(),
            first["qr_tracked"].as_bool()
        ),
        (Some(1), Some(1), Some(true))
    );
    assert_eq!(first["lessons_scheduled"], 1);

    // The CSV report's totals equal the marks: one present mark in the whole month.
    let csv = fs::read_to_string(college.dir.path().join("reports/month-close-2026-11.csv"))
        .expect("csv");
    let present_total: u64 = csv
        .lines()
        .skip(1)
        .map(|line| {
            line.split(';')
                .nth(4)
                .expect("present")
                .parse::<u64>()
                .expect("number")
        })
        .sum();
    assert_eq!(present_total as i64, college.marks());
    // The reports are in the default language (ru) unless `--lang` says otherwise.
    let html = fs::read_to_string(college.dir.path().join("reports/month-close-2026-11.html"))
        .expect("html");
    let russian = kasip_core::Lang::from_code("ru").expect("ru");
    assert!(
        html.contains(russian.text(kasip_core::Text::CloseNonCompliant))
            && html.contains(russian.text(kasip_core::Text::ColQrTracked)),
        "{html}"
    );
    assert_eq!(
        &fs::read(college.dir.path().join("reports/month-close-2026-11.xlsx")).expect("xlsx")[..2],
        b"PK"
    );

    let again = close(&["month-close", "2026-11", "--force", "--reason", "twice"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        text(&again).1.contains("already closed"),
        "{:?}",
        text(&again)
    );

    // A phone's check-in after the close is an adjustment of November too: every mark
    // goes through one record_mark (phone check-ins were once stored unfiled).
    assert_eq!(
        check_in(
            &college.bound_phone(&college.group_a[2]),
            &college.shown_url(&teacher, college.lesson_a)
        )
        .0,
        200
    );
    assert_eq!(
        college.count(
            "SELECT COUNT(*) FROM month_adjustments a JOIN attendance_events e ON e.id = a.event_id
             WHERE a.month = '2026-11' AND e.method = 'qr_phone' AND e.student_iin = ?1"
                .replace("?1", &format!("'{}'", college.group_a[2]))
                .as_str()
        ),
        1
    );

    // A correction after the close is an adjustment of November, not an edit.
    let csrf = college.csrf(&teacher);
    let student = college.group_a[1].clone();
    let response = teacher
        .post(college.url(&format!("/teacher/lessons/{}/marks", college.lesson_a)))
        .form(&[
            ("csrf", csrf.as_str()),
            ("student", student.as_str()),
            ("status", "excused"),
            ("reason", "medical note"),
        ])
        .send()
        .expect("manual mark");
    assert_eq!(response.status(), 303);
    assert_eq!(
        college.count("SELECT COUNT(*) FROM month_adjustments WHERE month = '2026-11'"),
        2
    );
    // The signed statement is untouched by the later mark.
    assert_eq!(
        fs::read_to_string(
            college
                .dir
                .path()
                .join("statements/month-close-2026-11.jws")
        )
        .expect("statement"),
        statement
    );
}

/// `coverage --month M --json` on the college's clock.
fn coverage(college: &College, month: &str) -> Value {
    let output = common::registry::agent_run(college, &["coverage", "--month", month, "--json"]);
    assert!(output.status.success(), "{:?}", text(&output));
    serde_json::from_str(&text(&output).0).expect("json")
}

#[test]
fn new_students_and_later_changes_never_move_a_past_or_closed_month() {
    let college = College::new(3);
    college.with_one_check_in();
    let november = coverage(&college, "2026-11");
    let closed = common::registry::agent_run(
        &college,
        &["month-close", "2026-11", "--force", "--reason", "audit"],
    );
    assert!(closed.status.success(), "{:?}", text(&closed));

    // December: new students are imported, one into ПО-21, and one of November's
    // beneficiaries is expelled with a date in November.
    college.set_clock(common::lesson_start_plus_one_minute() + 12 * 86_400);
    let newcomers = common::student_iins(2, 7000);
    let file = college.dir.file("december.csv");
    let mut rows = String::from("iin;last_name;first_name;group;beneficiary;status;status_date\n");
    rows.push_str(&format!("{};Жаңа;Оқушы;ПО-21;да;;\n", newcomers[0]));
    rows.push_str(&format!("{};Жаңа;Екінші;ВТ-21;да;;\n", newcomers[1]));
    rows.push_str(&format!(
        "{};Студент1;Әлия;ПО-21;да;отчислен;10.11.2026\n",
        college.group_a[1]
    ));
    fs::write(&file, rows).expect("csv");
    let output = common::registry::agent_run(
        &college,
        &[
            "import",
            "students",
            file.to_str().expect("path"),
            "--skip-invalid",
        ],
    );
    assert!(output.status.success(), "{:?}", text(&output));

    // November's figures are what its statement said, to the student.
    let after = coverage(&college, "2026-11");
    assert_eq!(after, november, "a closed month's coverage never changes");
    let statement = fs::read_to_string(
        college
            .dir
            .path()
            .join("statements/month-close-2026-11.jws"),
    )
    .expect("statement");
    let key = DeviceKey::load(&college.dir.path().join("agent-key.pem")).expect("key");
    let payload: Value = serde_json::from_slice(
        &verify_compact(&statement, key.public_key())
            .expect("jws")
            .payload,
    )
    .expect("payload");
    assert_eq!(payload["coverage"]["college"], after["college"]);
    assert_eq!(payload["coverage"]["groups"], after["groups"]);

    // The statement and reports were written whole (under a temporary name, then
    // renamed) and, holding personal data, are the service's user's only.
    for path in [
        "statements/month-close-2026-11.jws",
        "reports/month-close-2026-11.csv",
        "reports/month-close-2026-11.xlsx",
        "reports/month-close-2026-11.html",
    ] {
        use std::os::unix::fs::PermissionsExt;
        let full = college.dir.path().join(path);
        let mode = fs::metadata(&full).expect(path).permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{path}");
        let mut partial = full.into_os_string();
        partial.push(".partial");
        assert!(
            !std::path::Path::new(&partial).exists(),
            "{path}.partial left behind"
        );
    }

    // An open past month does not take today's newcomers either: October has no
    // beneficiaries at all (everyone was enrolled on 2026-11-23 or later).
    let october = coverage(&college, "2026-10");
    assert_eq!(october["college"]["beneficiaries"], 0, "{october}");
}
