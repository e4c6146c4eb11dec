//! The README's classroom walkthrough, step by step against the demo college that
//! `kasip-agent serve` makes, at hours a newcomer might try it: 23:00 on the evening of
//! the first start, and 23:41 the next evening after a restart.

mod common;

use common::{check_in, post_bind, Phone, PASSWORD};
use kasip_core::Date;
use kasip_tests::{browser, csrf_of, run_with, text, PhoneKey, Server, TempDataDir};
use serde_json::Value;
use std::sync::Arc;

const AGENT: &str = env!("CARGO_BIN_EXE_kasip-agent");

/// Unix time of `hour:minute` in Almaty (UTC+5, the demo college's zone) on `date`.
fn almaty(date: Date, hour: i64, minute: i64) -> i64 {
    date.days_since_epoch() * 86_400 + hour * 3600 + minute * 60 - 5 * 3600
}

/// The README's steps from `lesson list` to a phone's check-in, at the clock's time:
/// the lesson starting now, a teacher's password, codes for ПО-21, the teacher opens the
/// lesson, the projector shows a code, a phone binds and checks in.
fn walk(dir: &TempDataDir, clock: &str, server: &Server, starts: &str) {
    let env = [("KASIP_UNSAFE_CLOCK_FILE", clock)];
    let agent = |args: &[&str], stdin: Option<&str>| {
        let output = run_with(AGENT, &dir.path(), args, &env, stdin);
        assert!(output.status.success(), "{args:?}: {:?}", text(&output));
        text(&output).0
    };
    let lessons: Value = serde_json::from_str(&agent(&["lesson", "list", "--json"], None))
        .expect("lesson list --json");
    let lesson = lessons
        .as_array()
        .expect("lessons")
        .iter()
        .find(|lesson| lesson["start"] == starts && lesson["group"] == "ПО-21")
        .unwrap_or_else(|| panic!("no ПО-21 lesson at {starts}: {lessons:#}"));
    let id = lesson["id"].as_i64().expect("id");
    let teacher = lesson["teacher_iin"].as_str().expect("teacher").to_owned();
    agent(&["staff", "set-password", &teacher], Some(PASSWORD));
    let codes = agent(&["student", "issue-code", "--group", "ПО-21"], None);
    let first = codes
        .lines()
        .find(|line| line.contains(';'))
        .expect("a code");
    let mut fields = first.split(';');
    let (iin, code) = (
        fields.next().expect("iin").to_owned(),
        fields.next().expect("code").to_owned(),
    );

    let browser = browser(&dir.path());
    kasip_tests::sign_in(&browser, &server.url, &teacher, PASSWORD);
    let page = browser
        .get(format!("{}/teacher", server.url))
        .send()
        .expect("teacher page")
        .text()
        .expect("body");
    let opened = browser
        .post(format!("{}/teacher/lessons/{id}/open", server.url))
        .form(&[("csrf", csrf_of(&page))])
        .send()
        .expect("open");
    assert_eq!(opened.status(), 303, "the lesson opens at {starts}");
    let shown: Value = browser
        .get(format!("{}/display/{id}/current", server.url))
        .send()
        .expect("projector")
        .json()
        .expect("json");
    let url = shown["url"].as_str().expect("a code on the projector");

    let phone = Phone {
        client: kasip_tests::browser(&dir.path()),
        key: Arc::new(PhoneKey::new()),
    };
    let bound = post_bind(&server.url, &phone, &iin, &code, None);
    assert_eq!(bound.status(), 200, "{}", bound.text().unwrap_or_default());
    let (status, body) = check_in(&phone, url);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("id=confirmation"), "{body}");
}

#[test]
fn the_readme_walkthrough_works_at_23_00_and_again_the_next_evening() {
    let dir = TempDataDir::new();
    let clock_file = dir.file("clock");
    let clock = clock_file.display().to_string();
    let env = [("KASIP_UNSAFE_CLOCK_FILE", clock.as_str())];
    // A Wednesday, after the day's pairs.
    let wednesday = Date::new(2026, 12, 2).expect("date");
    std::fs::write(&clock_file, almaty(wednesday, 23, 0).to_string()).expect("clock");
    let first = Server::start_with_env(AGENT, &dir.path(), &[], &env);
    walk(&dir, &clock, &first, "23:00");
    let (exit, log) = first.stop_with("TERM");
    assert!(exit.success(), "{log}");

    // The next evening the seeded lesson is yesterday's: the restart adds one for now.
    std::fs::write(
        &clock_file,
        almaty(wednesday.add_days(1), 23, 41).to_string(),
    )
    .expect("clock");
    let second = Server::start_with_env(AGENT, &dir.path(), &[], &env);
    walk(&dir, &clock, &second, "23:40");
    let (exit, log) = second.stop_with("TERM");
    assert!(exit.success(), "{log}");
    assert!(log.contains("a lesson starting now was added"), "{log}");
}
