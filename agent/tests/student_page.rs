//! "My attendance" on a student's bound phone: the month's lessons with their marks in a
//! calendar, the QR share against the rule and what it takes to reach it, the grades; a
//! phone that is not bound is sent to bind; the check-in's confirmation shows the date.

mod common;

use common::{check_in, College, TEACHER_A};
use kasip_tests::webdriver::Browser;
use serde_json::json;

fn page(client: &reqwest::blocking::Client, url: &str) -> (u16, String) {
    let response = client.get(url).send().expect("get");
    (response.status().as_u16(), response.text().expect("body"))
}

#[test]
fn my_attendance_shows_the_months_marks_the_qr_share_and_what_reaching_the_rule_takes() {
    let college = College::new(3);
    let teacher = college.teacher(TEACHER_A);
    college.open_lesson(&teacher, college.lesson_a);
    let url = college.shown_url(&teacher, college.lesson_a);
    let (by_qr, by_hand) = (college.group_a[0].clone(), college.group_a[1].clone());
    let date: String = college
        .db()
        .query_row(
            "SELECT date FROM lessons WHERE id = ?1",
            [college.lesson_a],
            |row| row.get(0),
        )
        .expect("date");
    let month = &date[..7];

    // The QR student: checked in, the confirmation dated, 1 of 1 by QR: at the rule.
    let phone = college.bound_phone(&by_qr);
    let (status, confirmation) = check_in(&phone, &url);
    assert_eq!(status, 200, "{confirmation}");
    assert!(
        confirmation.contains(&format!("id=when>{date} ")),
        "{confirmation}"
    );
    assert!(confirmation.contains("href=\"/me\""));
    let (status, mine) = page(&phone, &college.url("/me?lang=en"));
    assert_eq!(status, 200, "{mine}");
    assert!(mine.contains(&format!("id=month>{month}<")), "{mine}");
    assert!(mine.contains("class=\"lesson present\""), "{mine}");
    assert!(mine.contains("(QR, phone)"), "{mine}");
    assert!(
        mine.contains("QR share this month: 100.0% (1 of the 1 lessons you attended)"),
        "{mine}"
    );
    assert!(mine.contains("id=standing class=\"ok\""), "{mine}");
    assert!(mine.contains("No grades this month."));

    // The student marked by hand, with a grade: below the rule, one QR check-in short.
    let admin = college.teacher("admin");
    let csrf = college.csrf(&admin);
    let marked = admin
        .post(college.url(&format!("/teacher/lessons/{}/marks", college.lesson_a)))
        .form(&[
            ("csrf", csrf.as_str()),
            ("student", by_hand.as_str()),
            ("status", "present"),
            ("reason", "phone battery dead"),
            ("override_reason", "checked by the teacher"),
        ])
        .send()
        .expect("manual mark");
    assert!(
        marked.status().is_success() || marked.status() == 303,
        "{}",
        marked.status()
    );
    let graded = teacher
        .post(college.url(&format!("/teacher/lessons/{}/grades", college.lesson_a)))
        .form(&[
            ("csrf", college.csrf(&teacher).as_str()),
            ("student", by_hand.as_str()),
            ("assessment", "current"),
            ("score", "87"),
            ("credits", "0"),
        ])
        .send()
        .expect("grade");
    assert_eq!(graded.status(), 303);
    let hand_phone = college.bound_phone(&by_hand);
    for (lang, says) in [
        (
            "en",
            "Check in by QR at 1 more lessons this month to reach the rule.",
        ),
        ("ru", "Отметьтесь по QR ещё на 1 занятиях"),
        ("kk", "тағы 1 сабақта QR арқылы"),
    ] {
        let (status, mine) = page(&hand_phone, &college.url(&format!("/me?lang={lang}")));
        assert_eq!(status, 200);
        assert!(mine.contains(&format!("lang=\"{lang}\"")), "{mine}");
        assert!(mine.contains(says), "{lang}: {mine}");
        assert!(mine.contains("id=standing class=\"bad\""), "{mine}");
        assert!(mine.contains("<td>87</td>"), "{mine}");
        assert!(mine.contains("class=\"lesson present\""), "{mine}");
    }

    // Another month, a bad month, an unbound phone.
    let (status, earlier) = page(&phone, &college.url("/me?month=2020-01&lang=en"));
    assert_eq!(status, 200);
    assert!(earlier.contains("QR share this month: —"), "{earlier}");
    let (status, bad) = page(&phone, &college.url("/me?month=13-2020&lang=en"));
    assert_eq!(status, 400, "{bad}");
    let stranger = college.phone();
    let (status, refused) = page(&stranger, &college.url("/me?lang=en"));
    assert_eq!(status, 401);
    assert!(refused.contains("href=\"/bind\""), "{refused}");

    // As a phone's browser draws it, bound through the form, 320 px wide: nothing
    // scrolls sideways.
    let browser = Browser::start();
    let third = college.group_a[2].clone();
    let code = college.issue_code(&third);
    browser.goto(&college.url("/bind?lang=kk"));
    browser.type_into("input[name=iin]", &third);
    browser.type_into("input[name=code]", &code);
    browser.click("button");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while browser.execute("return document.querySelector('a[href=\"/pass\"]') !== null")
        != json!(true)
    {
        assert!(std::time::Instant::now() < deadline, "the binding");
        std::thread::sleep(std::time::Duration::from_millis(150));
    }
    browser.cdp(
        "Emulation.setDeviceMetricsOverride",
        json!({"width": 320, "height": 720, "deviceScaleFactor": 2, "mobile": true}),
    );
    browser.goto(&college.url("/me?lang=kk"));
    assert!(!browser.text_of("#student").is_empty());
    let widths = browser.execute(
        "return [document.documentElement.scrollWidth, document.documentElement.clientWidth]",
    );
    assert!(
        widths[0].as_i64() <= widths[1].as_i64(),
        "scrolls sideways: {widths}"
    );
    browser.screenshot(&kasip_tests::screenshot_path("student-my-attendance-kk"));
}
