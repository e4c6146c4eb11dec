//! A real browser and a real decoder: headless Chromium signs in as a teacher and opens
//! the display page; zbar reads the QR from the screenshot; the decoded URL checks a
//! bound student in; one period later the code has changed and the count shows 1.

mod common;

use std::time::{Duration, Instant};

use common::{check_in, lesson_start_plus_one_minute, College, AGENT, PASSWORD, TEACHER_A};
use kasip_tests::webdriver::{zbar_decode, Browser};
use kasip_tests::{run_with, text};

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
    // On a landscape screen the code takes nearly its full height, the words beside it.
    let share = browser.execute(
        "const r = document.querySelector('#qr svg').getBoundingClientRect(); return r.height / window.innerHeight",
    );
    assert!(
        share.as_f64().unwrap_or(0.0) >= 0.85,
        "the QR is {share} of the height"
    );
    browser.screenshot(&kasip_tests::screenshot_path("projector"));

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
    // The page says where to type the code when a phone cannot read it.
    let address = college.server.url.trim_start_matches("https://");
    assert!(
        browser
            .text_of("#type-at")
            .contains(&format!("{address}/c")),
        "{}",
        browser.text_of("#type-at")
    );

    // The agent goes away: the dead code leaves the wall at once and the page says why
    // (the browser keeps reconnecting by itself).
    let mut college = college;
    college.server.kill();
    let deadline = Instant::now() + Duration::from_secs(20);
    while browser.execute("return document.getElementById('qr').innerHTML === ''")
        != serde_json::Value::Bool(true)
    {
        assert!(
            Instant::now() < deadline,
            "the dead code stayed on the projector"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let lost = browser.execute("return document.body.dataset.connectionLost");
    assert_eq!(Some(browser.text_of("#notice").as_str()), lost.as_str());
    let lost_shot = college.dir.file("display-lost.png");
    browser.screenshot(&lost_shot);
    assert!(
        zbar_decode(&lost_shot).is_empty(),
        "a QR is still on screen"
    );
}

#[test]
fn admin_dashboard_in_chromium_shows_what_coverage_json_computes() {
    let college = College::new(3);
    let teacher = college.teacher(TEACHER_A);
    college.open_lesson(&teacher, college.lesson_a);
    let url = college.shown_url(&teacher, college.lesson_a);
    for iin in &college.group_a[..2] {
        assert_eq!(check_in(&college.bound_phone(iin), &url).0, 200);
    }
    let output = run_with(
        AGENT,
        &college.dir.path(),
        &["coverage", "--month", "2026-11", "--json"],
        &[],
        None,
    );
    assert!(output.status.success(), "{:?}", text(&output));
    let expected: serde_json::Value = serde_json::from_str(&text(&output).0).expect("json");

    let browser = Browser::start();
    browser.goto(&college.url("/login?lang=en"));
    browser.type_into("input[name=login]", "admin");
    browser.type_into("input[name=password]", PASSWORD);
    browser.click("button");
    let deadline = Instant::now() + Duration::from_secs(15);
    while !browser.current_url().ends_with("/teacher") {
        assert!(
            Instant::now() < deadline,
            "sign-in did not reach /teacher: {}",
            browser.current_url()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    browser.goto(&college.url("/admin?month=2026-11"));
    assert_eq!(
        browser.attribute_of("#college", "data-per-mille"),
        expected["college"]["coverage_per_mille"].to_string()
    );
    // 2 of ПО-21's 3 are tracked (666‰); ВТ-21 has no marks (0‰).
    for group in expected["groups"].as_array().expect("groups") {
        let scope = group["scope"].as_str().expect("scope");
        let bar = format!("rect[data-group='{scope}']");
        assert_eq!(
            browser.attribute_of(&bar, "data-per-mille"),
            group["coverage_per_mille"].to_string(),
            "{scope}"
        );
    }
    assert!(
        browser.text_of("#college").contains("33.3%"),
        "{}",
        browser.text_of("#college")
    );
    // The heatmap's cells and the trend's points, as the browser lays them out.
    assert_eq!(
        browser.attribute_of("rect.cell[data-group='ПО-21']", "data-per-mille"),
        "666"
    );
    assert_eq!(
        browser.attribute_of("circle.trend-point", "data-date"),
        "2026-11-23"
    );
    browser.cdp(
        "Emulation.setDeviceMetricsOverride",
        serde_json::json!({"width": 1000, "height": 1500, "deviceScaleFactor": 1, "mobile": false}),
    );
    let shot = kasip_tests::screenshot_path("admin-dashboard");
    browser.screenshot(&shot);
    assert!(std::fs::metadata(&shot).expect("screenshot").len() > 1000);
}

/// A real phone browser: binding makes its device key (WebCrypto, IndexedDB), and the
/// scanned page signs the check-in with it; the mark carries the signature. The same
/// browser's cookie alone, posted by another client, checks nobody in.
#[test]
fn chromium_binds_with_a_device_key_and_signs_its_check_in() {
    let college = College::new(3);
    let iin = college.group_a[0].clone();
    let code = college.issue_code(&iin);
    let teacher = college.teacher(TEACHER_A);
    college.open_lesson(&teacher, college.lesson_a);
    let browser = Browser::start();
    let wait_for = |script: &str, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let value = browser.execute(script);
            if value == serde_json::Value::Bool(true) {
                return;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    browser.goto(&college.url("/bind?lang=kk"));
    browser.type_into("input[name=iin]", &iin);
    browser.type_into("input[name=code]", &code);
    browser.click("button");
    wait_for(
        "return document.querySelector('a[href=\"/pass\"]') !== null",
        "the binding to finish",
    );
    let key_length: i64 = college
        .db()
        .query_row(
            "SELECT length(device_key) FROM device_bindings",
            [],
            |row| row.get(0),
        )
        .expect("binding");
    assert_eq!(key_length, 65, "an uncompressed P-256 point from WebCrypto");
    browser.goto(&college.shown_url(&teacher, college.lesson_a));
    wait_for(
        "return document.getElementById('confirmation') !== null",
        "the signed check-in's confirmation",
    );
    let evidence: String = college
        .db()
        .query_row("SELECT evidence FROM attendance_events", [], |row| {
            row.get(0)
        })
        .expect("mark");
    let evidence: serde_json::Value = serde_json::from_str(&evidence).expect("json");
    assert_eq!(evidence["binding"], 1);
    assert!(evidence["device_signature"]
        .as_str()
        .is_some_and(|signature| signature.len() > 80));
    let shot = college.dir.file("bound-check-in.png");
    browser.screenshot(&shot);
}
