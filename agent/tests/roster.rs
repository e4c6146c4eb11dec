//! The teacher's roster of a lesson, in Chromium: a tile per student coloured by status,
//! the missing first, following phones' check-ins without a reload, one tap saving a
//! mark in place with a confirmation, a refusal shown on its tile with what was typed
//! kept, and nothing scrolling sideways on a 320 px phone. In kk, ru and en.

mod common;

use common::{check_in, College, PASSWORD, TEACHER_A};
use kasip_tests::webdriver::Browser;
use serde_json::json;

fn sign_in(browser: &Browser, college: &College, login: &str) {
    browser.goto(&college.url("/login?lang=en"));
    browser.type_into("input[name=login]", login);
    browser.type_into("input[name=password]", PASSWORD);
    browser.click("button");
    browser.wait_for("return location.pathname === '/teacher'", "the sign-in");
}

/// The tiles in page order: (student IIN, status class).
fn tiles(browser: &Browser) -> Vec<(String, String)> {
    let listed = browser.execute(
        "return [...document.querySelectorAll('#roster > li')].map(t => [t.id.slice(2), t.className.replace('tile ', '')])",
    );
    serde_json::from_value(listed).expect("tiles")
}

fn tile_is(iin: &str, class: &str) -> String {
    format!("const t = document.getElementById('s-{iin}'); return t !== null && t.classList.contains('{class}')")
}

#[test]
fn the_roster_puts_the_missing_first_follows_check_ins_live_and_saves_one_tap_marks_in_place() {
    let college = College::new(3);
    let teacher = college.teacher(TEACHER_A);
    college.open_lesson(&teacher, college.lesson_a);
    let browser = Browser::start();
    sign_in(&browser, &college, TEACHER_A);

    // Today's lessons: column headers, the teacher's name, a roster for the open lesson.
    let headers = browser.execute("return [...document.querySelectorAll('thead th')].length");
    assert_eq!(headers, json!(7));
    let greeting = browser.text_of("main > p");
    assert!(
        !greeting.contains(TEACHER_A),
        "the IIN, not a name: {greeting}"
    );
    browser.click("a.roster-link");
    browser.wait_for(
        "return document.getElementById('roster') !== null",
        "the roster",
    );
    let url = browser.current_url();
    assert!(
        url.ends_with(&format!("/teacher/lessons/{}", college.lesson_a)),
        "{url}"
    );
    let group = &college.group_a;
    let before = tiles(&browser);
    assert_eq!(before.len(), 3);
    assert!(
        before.iter().all(|(_, class)| class == "missing"),
        "{before:?}"
    );
    browser.execute("window.sameDocument = true; return true");

    // A phone checks in: its tile turns present by itself and moves after the missing.
    let phone = college.bound_phone(&group[0]);
    let (status, body) = check_in(&phone, &college.shown_url(&teacher, college.lesson_a));
    assert_eq!(status, 200, "{body}");
    browser.wait_for(&tile_is(&group[0], "present"), "the check-in on the roster");
    let after = tiles(&browser);
    assert_eq!(
        after.last().map(|tile| tile.0.as_str()),
        Some(group[0].as_str()),
        "{after:?}"
    );
    assert_eq!(browser.text_of("#count"), "1/3");
    browser.screenshot(&kasip_tests::screenshot_path("teacher-roster-live"));

    // One tap: present, saved in place with a confirmation naming the student.
    browser.click(&format!("#s-{} button[value=present]", group[1]));
    browser.wait_for(&tile_is(&group[1], "present"), "the one-tap mark");
    assert!(
        browser.text_of("#notice").starts_with("Saved: "),
        "{}",
        browser.text_of("#notice")
    );

    // Late needs a reason: refused on its tile, the page stays, and what the teacher
    // was typing on another tile is kept.
    browser.type_into(&format!("#s-{} input[name=reason]", group[0]), "half-typed");
    browser.click(&format!("#s-{} button[value=late]", group[2]));
    browser.wait_for(
        &format!(
            "return document.querySelector('#s-{} [role=alert]') !== null",
            group[2]
        ),
        "the refusal on the tile",
    );
    assert_eq!(
        browser.text_of(&format!("#s-{} [role=alert]", group[2])),
        "Give a reason."
    );
    assert_eq!(
        browser.execute(&format!(
            "return document.querySelector('#s-{} input[name=reason]').value",
            group[0]
        )),
        json!("half-typed")
    );
    browser.type_into(
        &format!("#s-{} input[name=reason]", group[2]),
        "bus was late",
    );
    browser.click(&format!("#s-{} button[value=late]", group[2]));
    browser.wait_for(&tile_is(&group[2], "late"), "the late mark");
    browser.type_into(
        &format!("#s-{} input[name=reason]", group[1]),
        "at the doctor's",
    );
    browser.click(&format!("#s-{} button[value=excused]", group[1]));
    browser.wait_for(&tile_is(&group[1], "excused"), "the excused mark");
    assert_eq!(
        browser.execute("return window.sameDocument === true"),
        json!(true),
        "no reload"
    );
    let stored: Vec<(String, String, String)> = college
        .db()
        .prepare(
            "SELECT student_iin, status, COALESCE(reason, '') FROM latest_marks
             WHERE lesson_id = ?1 AND method = 'manual' ORDER BY student_iin",
        )
        .expect("select")
        .query_map([college.lesson_a], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })
        .expect("rows")
        .map(|row| row.expect("row"))
        .collect();
    let mut expected = vec![
        (
            group[1].clone(),
            "excused".to_owned(),
            "at the doctor's".to_owned(),
        ),
        (
            group[2].clone(),
            "late".to_owned(),
            "bus was late".to_owned(),
        ),
    ];
    expected.sort();
    assert_eq!(stored, expected);
    browser.screenshot(&kasip_tests::screenshot_path("teacher-roster-marked"));

    // A 320 px phone: the roster and today's lessons fit, nothing scrolls sideways.
    browser.cdp(
        "Emulation.setDeviceMetricsOverride",
        json!({"width": 320, "height": 640, "deviceScaleFactor": 2, "mobile": true}),
    );
    for (path, lang) in [
        (format!("/teacher/lessons/{}", college.lesson_a), "kk"),
        ("/teacher".to_owned(), "ru"),
        (format!("/teacher/lessons/{}", college.lesson_a), "en"),
    ] {
        browser.goto(&college.url(&format!("{path}?lang={lang}")));
        browser.wait_for("return document.readyState === 'complete'", "the page");
        assert_eq!(
            browser.execute("return document.documentElement.lang"),
            json!(lang)
        );
        let widths = browser.execute(
            "return [document.documentElement.scrollWidth, document.documentElement.clientWidth]",
        );
        assert!(
            widths[0].as_i64() <= widths[1].as_i64(),
            "{path} in {lang} scrolls sideways at 320 px: {widths}"
        );
        browser.screenshot(&kasip_tests::screenshot_path(&format!(
            "teacher-320px-{lang}"
        )));
    }
}

/// A group's history over chosen dates: each student's lessons by status and the share
/// attended, for the groups the reader teaches (another's is refused).
#[test]
fn a_groups_history_counts_each_students_marks_over_the_chosen_dates() {
    // The fixture: ПО-21 has one lesson on 2026-11-23, taught by TEACHER_A; ВТ-21's is
    // TEACHER_B's.
    let college = College::new(3);
    let teacher = college.teacher(TEACHER_A);
    college.open_lesson(&teacher, college.lesson_a);
    let phone = college.bound_phone(&college.group_a[0]);
    let (status, _) = check_in(&phone, &college.shown_url(&teacher, college.lesson_a));
    assert_eq!(status, 200);
    let get = |client: &reqwest::blocking::Client, path: &str| {
        let response = client.get(college.url(path)).send().expect("history");
        (response.status().as_u16(), response.text().expect("body"))
    };
    let group = kasip_tests::url_encode("ПО-21");
    let (status, page) = get(
        &teacher,
        &format!("/teacher/history?group={group}&from=2026-11-23&to=2026-11-23&lang=en"),
    );
    assert_eq!(status, 200, "{page}");
    let name = college.student_name(&college.group_a[0]);
    let iin = &college.group_a[0];
    let attended = kasip_core::per_mille_text(Some(1000));
    assert!(
        page.contains(&format!(
            "<tr><td><a href=\"/teacher/history/student?iin={iin}&amp;from=2026-11-23&amp;to=2026-11-23\">{name}</a></td><td>1</td><td>1</td><td>0</td><td>0</td><td>0</td><td>{attended}</td></tr>"
        )),
        "{page}"
    );
    let missing = kasip_core::per_mille_text(Some(0));
    assert!(
        page.contains(&format!(
            "<td>1</td><td>0</td><td>0</td><td>0</td><td>0</td><td>{missing}</td>"
        )),
        "the students who did not check in: {page}"
    );
    // A day with no lessons: nothing attended, no figure.
    let (_, empty) = get(
        &teacher,
        &format!("/teacher/history?group={group}&from=2020-01-01&to=2020-01-01"),
    );
    assert!(
        empty.contains("<td>0</td><td>0</td><td>0</td><td>0</td><td>0</td><td>—</td>"),
        "{empty}"
    );
    // One student's lessons, each with its mark and how it was made.
    let (status, student) = get(
        &teacher,
        &format!("/teacher/history/student?iin={iin}&from=2026-11-01&to=2026-11-30&lang=en"),
    );
    assert_eq!(status, 200, "{student}");
    assert!(
        student.contains(&format!("<b id=student>{name}</b>")),
        "{student}"
    );
    assert!(
        student.contains("<tr class=\"present\"><td>2026-11-23</td><td>09:00</td><td>Математика</td><td>Present</td><td>QR, phone</td></tr>"),
        "{student}"
    );
    assert!(
        student.contains(&format!("<span id=attended>{attended}</span>")),
        "{student}"
    );
    let absent_iin = &college.group_a[1];
    let (_, unmarked) = get(
        &teacher,
        &format!("/teacher/history/student?iin={absent_iin}&from=2026-11-01&to=2026-11-30&lang=en"),
    );
    assert!(
        unmarked.contains(&format!("<span id=attended>{missing}</span>")),
        "{unmarked}"
    );
    // Another teacher's group and its students are not this teacher's to read; an
    // admin reads any.
    let other = kasip_tests::url_encode("ВТ-21");
    let (status, _) = get(&teacher, &format!("/teacher/history?group={other}"));
    assert_eq!(status, 403, "a group the teacher does not teach");
    let outsider = &college.group_b[0];
    let (status, _) = get(
        &teacher,
        &format!("/teacher/history/student?iin={outsider}"),
    );
    assert_eq!(
        status, 403,
        "a student of a group the teacher does not teach"
    );
    let admin = college.teacher("admin");
    let (status, _) = get(&admin, &format!("/teacher/history?group={other}"));
    assert_eq!(status, 200);
    let (status, _) = get(&admin, &format!("/teacher/history/student?iin={outsider}"));
    assert_eq!(status, 200);
    // Bad input: a date that is not one, an IIN that is not one, a student nobody has.
    let (status, _) = get(&teacher, "/teacher/history?from=yesterday");
    assert_eq!(status, 400);
    let (status, _) = get(
        &teacher,
        &format!("/teacher/history/student?iin={iin}&to=2026-13-01"),
    );
    assert_eq!(status, 400);
    let (status, _) = get(&teacher, "/teacher/history/student?iin=12345");
    assert_eq!(status, 400);
    let nobody = &common::student_iins(1, 7000)[0];
    let (status, _) = get(&admin, &format!("/teacher/history/student?iin={nobody}"));
    assert_eq!(status, 404, "a valid IIN of no student");
}
