//! The coverage policy over HTTP: a manual mark that would take its group below the rule
//! is warned about, needs an admin's override, or is refused, as configured.

mod common;

use common::College;
use kasip_tests::reqwest::blocking::Client;

/// A two-student group where student 0 checked in by QR: 1 of 2 tracked = 50%, holding.
/// Marking student 0 present by hand replaces the QR mark: 0 of 2 tracked.
fn college_at_the_threshold(policy: &str) -> (College, Client) {
    let college = College::with_config(2, |config| {
        config.replace(
            "policy = \"require-override\"",
            &format!("policy = \"{policy}\""),
        )
    });
    let teacher = college.with_one_check_in();
    (college, teacher)
}

fn manual(
    college: &College,
    client: &Client,
    student: &str,
    override_reason: &str,
) -> (u16, String) {
    let csrf = college.csrf(client);
    let response = client
        .post(college.url(&format!("/teacher/lessons/{}/marks", college.lesson_a)))
        .form(&[
            ("csrf", csrf.as_str()),
            ("student", student),
            ("status", "present"),
            ("reason", "phone battery dead"),
            ("override_reason", override_reason),
        ])
        .send()
        .expect("manual mark");
    (response.status().as_u16(), response.text().expect("body"))
}

#[test]
fn block_refuses_the_mark_for_everyone() {
    let (college, teacher) = college_at_the_threshold("block");
    let student = college.group_a[0].clone();
    let (status, body) = manual(&college, &teacher, &student, "");
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("id=refusal"), "{body}");
    assert!(
        body.contains("50.0% → 0.0%"),
        "the page shows what the mark would do: {body}"
    );
    let admin = college.teacher("admin");
    assert_eq!(
        manual(&college, &admin, &student, "director approved").0,
        409
    );
    assert_eq!(college.marks(), 1, "only the QR mark");
}

#[test]
fn require_override_needs_an_admin_with_a_reason_and_records_it() {
    let (college, teacher) = college_at_the_threshold("require-override");
    let student = college.group_a[0].clone();
    let (status, body) = manual(&college, &teacher, &student, "I say so");
    assert_eq!(status, 409, "a teacher cannot override: {body}");
    let admin = college.teacher("admin");
    assert_eq!(
        manual(&college, &admin, &student, "").0,
        409,
        "an override needs a reason"
    );
    assert_eq!(college.marks(), 1);
    let (status, body) = manual(&college, &admin, &student, "camera broken in room 101");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("id=warning"), "{body}");
    assert_eq!(college.marks(), 2);
    let (reason, before, after): (String, i64, i64) = college
        .db()
        .query_row(
            "SELECT reason, coverage_before, coverage_after FROM coverage_overrides",
            [],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )
        .expect("override recorded");
    assert_eq!(
        (reason.as_str(), before, after),
        ("camera broken in room 101", 500, 0)
    );
}

#[test]
fn warn_accepts_the_mark_and_says_so() {
    let (college, teacher) = college_at_the_threshold("warn");
    // The teacher sees the group's coverage before marking by hand.
    let page = teacher
        .get(college.url("/teacher"))
        .send()
        .expect("page")
        .text()
        .expect("body");
    assert!(page.contains(">50.0%</td>"), "{page}");
    let (status, body) = manual(&college, &teacher, &college.group_a[0].clone(), "");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("id=warning"), "{body}");
    assert_eq!(college.marks(), 2);
    assert_eq!(college.count("SELECT COUNT(*) FROM coverage_overrides"), 0);
}

#[test]
fn a_mark_that_keeps_the_group_above_the_rule_passes_under_every_policy() {
    for policy in ["warn", "require-override", "block"] {
        let (college, teacher) = college_at_the_threshold(policy);
        // Student 1 is untracked either way: marking them by hand changes no coverage.
        let (status, body) = manual(&college, &teacher, &college.group_a[1].clone(), "");
        assert_eq!(status, 303, "{policy}: {body}");
        assert_eq!(college.marks(), 2, "{policy}");
    }
}
