//! Black-box tests of the classroom flow over HTTPS: a teacher's browser opens a lesson
//! and reads the rotating code, phones bind and check in, and every fraud is refused and
//! recorded. The agent's clock is a file the test moves (`KASIP_UNSAFE_CLOCK_FILE`).

mod common;

use std::fs;

use common::{
    check_in, lesson_start_plus_one_minute, reason_of, College, AGENT, TEACHER_A, TEACHER_B,
};
use kasip_tests::{browser, run_with, text};
use serde_json::Value;

#[test]
fn bind_then_check_in_confirms_and_a_repeat_is_idempotent() {
    let college = College::new(3);
    let teacher = college.teacher(TEACHER_A);
    college.open_lesson(&teacher, college.lesson_a);
    let shown = college.display(&teacher, college.lesson_a);
    let url = shown["url"].as_str().expect("url").to_owned();
    assert!(
        url.starts_with(&format!("{}/c/{}.", college.server.url, college.lesson_a)),
        "{url}"
    );
    assert!(
        shown["qr_version"].as_i64().expect("version") <= 6,
        "QR version must be at most 6: {shown}"
    );
    assert_eq!(shown["typed_code"].as_str().expect("code").len(), 6);
    assert_eq!(
        (shown["checked_in"].as_i64(), shown["expected"].as_i64()),
        (Some(0), Some(3))
    );

    let phone = college.bound_phone(&college.group_a[0]);
    // A GET alone records nothing: it only serves the page that posts.
    let page = phone.get(&url).send().expect("get");
    assert_eq!(page.status(), 200);
    assert!(page.text().expect("body").contains("method=post"));
    assert_eq!(college.marks(), 0);

    let (status, body) = check_in(&phone, &url);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("id=confirmation"), "{body}");
    assert!(body.contains("Студент0 Әлия"), "{body}");
    assert!(body.contains("Математика"), "{body}");
    assert!(body.contains("09:01"), "{body}");
    assert_eq!(college.marks(), 1);
    let (method, status): (String, String) = college
        .db()
        .query_row("SELECT method, status FROM attendance_events", [], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .expect("mark");
    assert_eq!((method.as_str(), status.as_str()), ("qr_phone", "present"));

    let (status, again) = check_in(&phone, &url);
    assert_eq!(status, 200);
    assert!(again.contains("id=confirmation"), "{again}");
    assert_eq!(college.marks(), 1, "a repeat records nothing new");
    assert_eq!(college.display(&teacher, college.lesson_a)["checked_in"], 1);
    // A projector naming the step it shows gets the count without the code again; any
    // other `shown` (an older step, junk) gets the code.
    let step = shown["step"].as_u64().expect("step");
    let poll = |query: &str| -> Value {
        teacher
            .get(college.url(&format!("/display/{}/current{query}", college.lesson_a)))
            .send()
            .and_then(|response| response.json())
            .expect("poll")
    };
    let repeat = poll(&format!("?shown={step}"));
    assert_eq!(
        (repeat["svg"].as_str(), repeat["url"].as_str()),
        (Some(""), Some(""))
    );
    assert_eq!(
        (repeat["step"].as_u64(), repeat["checked_in"].as_i64()),
        (Some(step), Some(1))
    );
    for query in [
        format!("?shown={}", step - 1),
        "?shown=-1".into(),
        "?shown=%FF&x".into(),
    ] {
        let full = poll(&query);
        assert!(
            full["svg"].as_str().is_some_and(|svg| svg.contains("<svg")),
            "{query}: {full}"
        );
    }
}

#[test]
fn the_previous_step_is_still_accepted() {
    let college = College::new(3);
    let teacher = college.teacher(TEACHER_A);
    college.open_lesson(&teacher, college.lesson_a);
    let start = lesson_start_plus_one_minute();
    let old_url = college.shown_url(&teacher, college.lesson_a);
    let first = college.bound_phone(&college.group_a[0]);

    // 09:01:19 is the next 10-second step: the code shown at 09:01:00 still works.
    college.set_clock(start + 19);
    assert_ne!(
        college.display(&teacher, college.lesson_a)["url"].as_str(),
        Some(old_url.as_str()),
        "the code rotated"
    );
    let (status, body) = check_in(&first, &old_url);
    assert_eq!(status, 200, "{body}");

    // Two steps on it is refused: the attack table (attacks.rs) has that case.
}

#[test]
fn a_closed_lesson_refuses_its_codes() {
    let college = College::new(3);
    let teacher = college.teacher(TEACHER_A);
    college.open_lesson(&teacher, college.lesson_a);
    let url = college.shown_url(&teacher, college.lesson_a);
    let csrf = college.csrf(&teacher);
    let closed = teacher
        .post(college.url(&format!("/teacher/lessons/{}/close", college.lesson_a)))
        .form(&[("csrf", csrf)])
        .send()
        .expect("close");
    assert_eq!(closed.status(), 303);
    let phone = college.bound_phone(&college.group_a[0]);
    let (status, body) = check_in(&phone, &url);
    assert_eq!(status, 409, "{body}");
    assert_eq!(reason_of(&body), "lesson_not_open");
    assert_eq!(college.marks(), 0);
}

#[test]
fn an_unbound_phone_binds_and_its_scan_still_counts_after_the_code_rotates() {
    let college = College::new(3);
    let teacher = college.teacher(TEACHER_A);
    college.open_lesson(&teacher, college.lesson_a);
    let url = college.shown_url(&teacher, college.lesson_a);
    let phone = college.phone();
    let (status, body) = check_in(&phone, &url);
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("action=\"/bind\""),
        "the binding form is offered: {body}"
    );
    assert!(body.contains("name=intent"), "{body}");
    assert_eq!(college.marks(), 0);
    let intent: String = body
        .split("name=intent value=\"")
        .nth(1)
        .expect("intent")
        .chars()
        .take_while(|character| *character != '"')
        .collect();
    // The student types for 90 s: the code has rotated 9 times meanwhile.
    college.set_clock(lesson_start_plus_one_minute() + 90);
    let iin = college.group_a[0].clone();
    let code = college.issue_code(&iin);
    let response = college.post_bind(&phone, &iin, &code, Some(&intent));
    assert_eq!(response.status(), 200);
    assert!(response.text().expect("body").contains("id=confirmation"));
    assert_eq!(college.marks(), 1);
    // An unbound phone with an expired code gets a refusal, not an intent.
    college.set_clock(lesson_start_plus_one_minute() + 120);
    let (status, body) = check_in(&college.phone(), &url);
    assert_eq!(status, 403, "{body}");
    assert_eq!(reason_of(&body), "device_not_bound");
    assert_eq!(college.security_events("device_not_bound"), 1);
}

#[test]
fn an_expelled_student_is_refused() {
    let college = College::new(3);
    let phone = college.bound_phone(&college.group_a[0]);
    let students = college.dir.file("expel.csv");
    fs::write(&students, format!("iin;last_name;first_name;group;beneficiary;status;status_date\n{};Студент0;Әлия;ПО-21;да;отчислен;20.11.2026\n", college.group_a[0])).expect("csv");
    let output = run_with(
        AGENT,
        &college.dir.path(),
        &["import", "students", students.to_str().expect("path")],
        &[],
        None,
    );
    assert!(output.status.success(), "{:?}", text(&output));
    let teacher = college.teacher(TEACHER_A);
    college.open_lesson(&teacher, college.lesson_a);
    let url = college.shown_url(&teacher, college.lesson_a);
    let (status, body) = check_in(&phone, &url);
    assert_eq!(status, 403, "{body}");
    assert_eq!(reason_of(&body), "student_inactive");
    assert_eq!(college.marks(), 0);
}

#[test]
fn a_typed_code_checks_in_as_qr_typed() {
    let college = College::new(3);
    let teacher = college.teacher(TEACHER_A);
    college.open_lesson(&teacher, college.lesson_a);
    let code = college.display(&teacher, college.lesson_a)["typed_code"]
        .as_str()
        .expect("code")
        .to_lowercase();
    let phone = college.bound_phone(&college.group_a[0]);
    let response = phone
        .post(college.url("/c"))
        .form(&[
            ("code", code.as_str()),
            ("device_signature", &phone.key.sign(&code)),
        ])
        .send()
        .expect("typed");
    assert_eq!(response.status(), 200);
    assert!(response.text().expect("body").contains("id=confirmation"));
    let method: String = college
        .db()
        .query_row("SELECT method FROM attendance_events", [], |row| row.get(0))
        .expect("mark");
    assert_eq!(method, "qr_typed");
    let wrong = phone
        .post(college.url("/c"))
        .form(&[("code", "YYYYYY")])
        .send()
        .expect("typed");
    assert_eq!(wrong.status(), 403);
    assert_eq!(college.security_events("typed_code_unknown"), 1);
}

#[test]
fn manual_marks_only_from_the_lessons_own_teacher_with_csrf() {
    let college = College::new(3);
    let teacher = college.teacher(TEACHER_A);
    college.open_lesson(&teacher, college.lesson_a);
    let path = format!("/teacher/lessons/{}/marks", college.lesson_a);
    let student = college.group_a[2].clone();
    let form = |csrf: &str| {
        vec![
            ("csrf", csrf.to_owned()),
            ("student", student.clone()),
            ("status", "present".to_owned()),
            ("reason", "camera broken".to_owned()),
        ]
    };

    let anonymous = browser(&college.dir.path())
        .post(college.url(&path))
        .form(&form("x"))
        .send()
        .expect("post");
    assert_eq!(anonymous.status(), 401);
    let no_csrf = teacher
        .post(college.url(&path))
        .form(&form(""))
        .send()
        .expect("post");
    assert_eq!(no_csrf.status(), 403);
    let other_teacher = college.teacher(TEACHER_B);
    let other_csrf = college.csrf(&other_teacher);
    let wrong_teacher = other_teacher
        .post(college.url(&path))
        .form(&form(&other_csrf))
        .send()
        .expect("post");
    assert_eq!(wrong_teacher.status(), 403);
    assert_eq!(college.marks(), 0);

    let csrf = college.csrf(&teacher);
    let accepted = teacher
        .post(college.url(&path))
        .form(&form(&csrf))
        .send()
        .expect("post");
    assert_eq!(accepted.status(), 303);
    let (method, marked_by, reason): (String, String, String) = college
        .db()
        .query_row(
            "SELECT method, marked_by, reason FROM attendance_events",
            [],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )
        .expect("mark");
    assert_eq!(
        (method.as_str(), marked_by.as_str(), reason.as_str()),
        ("manual", TEACHER_A, "camera broken")
    );
    // A student of another group cannot be marked into this lesson.
    let outsider = vec![
        ("csrf", csrf.clone()),
        ("student", college.group_b[0].clone()),
        ("status", "present".to_owned()),
        ("reason", String::new()),
    ];
    assert_eq!(
        teacher
            .post(college.url(&path))
            .form(&outsider)
            .send()
            .expect("post")
            .status(),
        403
    );
}

#[test]
fn five_hundred_phones_checking_in_at_once_make_exactly_five_hundred_marks() {
    let college = College::new(500);
    let output = run_with(
        AGENT,
        &college.dir.path(),
        &["student", "issue-code", "--group", "ПО-21"],
        &[],
        None,
    );
    assert!(output.status.success(), "{:?}", text(&output));
    let codes: Vec<(String, String)> = text(&output)
        .0
        .lines()
        .map(|line| {
            let mut fields = line.split(';');
            (
                fields.next().expect("iin").to_owned(),
                fields.next().expect("code").to_owned(),
            )
        })
        .collect();
    assert_eq!(codes.len(), 500);
    let phones: Vec<common::Phone> = codes
        .iter()
        .map(|(iin, code)| {
            let phone = college.phone();
            assert_eq!(college.post_bind(&phone, iin, code, None).status(), 200);
            phone
        })
        .collect();
    let teacher = college.teacher(TEACHER_A);
    college.open_lesson(&teacher, college.lesson_a);
    let url = college.shown_url(&teacher, college.lesson_a);
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let handles: Vec<_> = phones
            .chunks(10)
            .map(|chunk| {
                scope.spawn(|| {
                    chunk
                        .iter()
                        .map(|phone| check_in(phone, &url).0)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|handle| handle.join().expect("thread"))
            .collect()
    });
    assert_eq!(statuses.len(), 500);
    assert!(
        statuses.iter().all(|status| *status == 200),
        "{:?}",
        statuses.iter().filter(|s| **s != 200).collect::<Vec<_>>()
    );
    assert_eq!(college.marks(), 500);
    assert_eq!(
        college.count("SELECT COUNT(DISTINCT student_iin) FROM attendance_events"),
        500
    );
    let verify = run_with(AGENT, &college.dir.path(), &["verify"], &[], None);
    assert!(verify.status.success(), "{:?}", text(&verify));
    assert!(text(&verify).0.contains("500 events"));
}

#[test]
fn a_row_edited_behind_the_agents_back_fails_verify_at_that_row() {
    let college = College::new(3);
    let teacher = college.teacher(TEACHER_A);
    college.open_lesson(&teacher, college.lesson_a);
    let url = college.shown_url(&teacher, college.lesson_a);
    for iin in &college.group_a {
        assert_eq!(check_in(&college.bound_phone(iin), &url).0, 200);
    }
    let verify = run_with(AGENT, &college.dir.path(), &["verify"], &[], None);
    assert!(verify.status.success(), "{:?}", text(&verify));
    // Someone with the database file turns event 2 from present into late.
    college
        .db()
        .execute_batch("DROP TRIGGER attendance_events_no_update; UPDATE attendance_events SET status = 'late' WHERE id = 2;")
        .expect("tamper");
    let verify = run_with(AGENT, &college.dir.path(), &["verify"], &[], None);
    assert_eq!(verify.status.code(), Some(1));
    let stderr = text(&verify).1;
    assert!(stderr.contains("broken at event 2"), "{stderr}");
}

/// A CLI import or a backup may hold the write lock for a while: a check-in meanwhile
/// waits for it and is stored (it once failed at once with SQLITE_BUSY and the agent
/// exited, because the writer read before it asked for the lock).
#[test]
fn a_check_in_waits_for_another_writer_and_is_stored() {
    let college = College::new(3);
    let teacher = college.teacher(TEACHER_A);
    college.open_lesson(&teacher, college.lesson_a);
    let url = college.shown_url(&teacher, college.lesson_a);
    let phone = college.bound_phone(&college.group_a[0]);
    let other_writer = college.db();
    other_writer
        .execute_batch(
            "BEGIN IMMEDIATE; INSERT INTO security_events (at, kind, detail) VALUES (0, 'test', 'held lock');",
        )
        .expect("hold the write lock");
    let check_in = std::thread::spawn(move || check_in(&phone, &url));
    std::thread::sleep(std::time::Duration::from_secs(1));
    other_writer.execute_batch("COMMIT").expect("commit");
    let (status, body) = check_in.join().expect("phone");
    assert_eq!(status, 200, "{body}");
    assert_eq!(college.marks(), 1);
    let health = kasip_tests::browser(&college.dir.path())
        .get(college.url("/healthz"))
        .send()
        .expect("the agent is still running");
    assert_eq!(health.status(), 200);
}
