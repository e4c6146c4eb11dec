//! A real browser and a real decoder: headless Chromium signs in as a teacher and opens
//! the display page; zbar reads the QR from the screenshot; the decoded URL checks a
//! bound student in; one period later the code has changed and the count shows 1.

mod common;

use std::time::{Duration, Instant};

use common::{check_in, lesson_start_plus_one_minute, College, PASSWORD, TEACHER_A};
use kasip_tests::webdriver::{zbar_decode, Browser};

#[test]
fn teacher_display_is_scanned_by_zbar_and_the_decoded_url_checks_a_student_in() {
    let college = College::new(3);
    let teacher_api = college.teacher(TEACHER_A);
    college.open_lesson(&teacher_api, college.lesson_a);

    let browser = Browser::start();
    browser.goto(&college.url("/login?lang=ru"));
    browser.type_into("input[name=login]", TEACHER_A);
    browser.type_into("input[name=password]", PASSWORD);
    browser.click("button");
    // The click starts the sign-in; wait for the redirect to land rather than race it.
    let deadline = Instant::now() + Duration::from_secs(15);
    while !browser.current_url().ends_with("/teacher") {
        assert!(
            Instant::now() < deadline,
            "sign-in did not reach /teacher: {}",
            browser.current_url()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    browser.goto(&college.url(&format!("/display/{}", college.lesson_a)));
    // The page fetches its first code within a second.
    let first_shot = college.dir.file("display-1.png");
    let deadline = Instant::now() + Duration::from_secs(20);
    let first = loop {
        browser.screenshot(&first_shot);
        if let Some(url) = zbar_decode(&first_shot).into_iter().next() {
            break url;
        }
        assert!(
            Instant::now() < deadline,
            "zbar found no QR in {}",
            first_shot.display()
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(
        first.starts_with(&format!("{}/c/{}.", college.server.url, college.lesson_a)),
        "{first}"
    );
    assert_eq!(browser.text_of("#count"), "0/3");

    let phone = college.bound_phone(&college.group_a[0]);
    let (status, body) = check_in(&phone, &first);
    assert_eq!(status, 200, "{body}");

    // One period later (the agent's clock moves; the page polls every second).
    college.set_clock(lesson_start_plus_one_minute() + 10);
    let second_shot = college.dir.file("display-2.png");
    let deadline = Instant::now() + Duration::from_secs(20);
    let second = loop {
        browser.screenshot(&second_shot);
        let decoded = zbar_decode(&second_shot).into_iter().next();
        if let Some(url) = decoded.filter(|url| *url != first) {
            if browser.text_of("#count") == "1/3" {
                break url;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the display did not rotate or count the check-in"
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_ne!(second, first, "the code changed");
    assert_eq!(browser.text_of("#count"), "1/3");
}
