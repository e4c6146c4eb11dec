//! The admin dashboard shows the same numbers as `kasip-agent coverage --json`, draws a
//! bar per group with the threshold line, the college's coverage day by day and a heatmap
//! of each group's attendance by day, exports CSV, and is for admins only.

mod common;

use common::{College, AGENT, TEACHER_A};
use kasip_tests::{run_with, text};
use serde_json::Value;

#[test]
fn dashboard_matches_the_coverage_command_and_is_admin_only() {
    let college = College::new(3);
    let teacher = college.with_one_check_in();

    let output = run_with(
        AGENT,
        &college.dir.path(),
        &["coverage", "--month", "2026-11", "--json"],
        &[],
        None,
    );
    assert!(output.status.success(), "{:?}", text(&output));
    let expected: Value = serde_json::from_str(&text(&output).0).expect("json");

    let admin = college.teacher("admin");
    let page = admin
        .get(college.url("/admin?month=2026-11&lang=en"))
        .send()
        .expect("dashboard");
    assert_eq!(page.status(), 200);
    let page = page.text().expect("body");
    let college_value = expected["college"]["coverage_per_mille"]
        .as_i64()
        .expect("value");
    assert!(
        page.contains(&format!("id=college data-per-mille=\"{college_value}\"")),
        "{page}"
    );
    for group in expected["groups"].as_array().expect("groups") {
        let bar = format!(
            "data-group=\"{}\" data-per-mille=\"{}\"",
            group["scope"].as_str().expect("scope"),
            group["coverage_per_mille"].as_i64().expect("value")
        );
        assert!(page.contains(&bar), "missing bar {bar}: {page}");
    }
    assert!(page.contains("id=threshold"), "{page}");
    // The daily trend: 1–22 November had no mark at all, so no point (not 0%), then 1 of
    // 6 (166‰) on the 23rd, today; nothing after today. One day with marks is no trend:
    // the projection is that day's figure.
    let points: Vec<&str> = page
        .match_indices("class=trend-point")
        .map(|(at, _)| &page[at..])
        .collect();
    assert_eq!(points.len(), 1, "{page}");
    assert!(
        points[0].starts_with("class=trend-point data-date=\"2026-11-23\" data-per-mille=\"166\""),
        "{}",
        points[0]
    );
    assert!(page.contains("id=trend-threshold"), "{page}");
    // The heatmap: a cell per group and lesson day, from the lessons and marks.
    let cell =
        |group: &str| format!("data-group=\"{group}\" data-date=\"2026-11-23\" data-per-mille=");
    assert!(
        page.contains(&format!("{}\"333\"", cell("ПО-21"))),
        "1 of 3: {page}"
    );
    assert!(
        page.contains(&format!("{}\"0\"", cell("ВТ-21"))),
        "0 of 3: {page}"
    );
    assert!(
        page.contains("<title>ПО-21, 2026-11-23: 33.3% (1/3)</title>"),
        "{page}"
    );
    assert_eq!(
        page.matches("class=\"cell ").count(),
        2,
        "no lessons, no cell: {page}"
    );
    assert!(
        page.contains("id=projection data-per-mille=\"166\""),
        "{page}"
    );
    let group = admin
        .get(college.url("/admin/group?month=2026-11&code=%D0%9F%D0%9E-21"))
        .send()
        .expect("group")
        .text()
        .expect("body");
    assert!(
        group.contains(&format!("data-iin=\"{}\"", college.group_a[0])),
        "{group}"
    );
    let student = admin
        .get(college.url(&format!(
            "/admin/student?month=2026-11&iin={}",
            college.group_a[0]
        )))
        .send()
        .expect("student")
        .text()
        .expect("body");
    assert!(student.contains("qr_phone"), "{student}");
    assert!(page.contains("QR coverage dashboard"), "{page}");

    let csv = admin
        .get(college.url("/admin/export/coverage?month=2026-11"))
        .send()
        .expect("csv");
    assert_eq!(csv.status(), 200);
    let csv = csv.text().expect("body");
    assert!(
        csv.lines().any(|line| line.starts_with(&format!(
            "college;{};{};",
            expected["college"]["beneficiaries"], expected["college"]["qr_tracked"]
        ))),
        "{csv}"
    );

    assert_eq!(
        teacher
            .get(college.url("/admin"))
            .send()
            .expect("get")
            .status(),
        403
    );
    for table in ["coverage", "red-flags", "security-events", "group"] {
        let xlsx = admin
            .get(college.url(&format!(
                "/admin/export/{table}?month=2026-11&format=xlsx&code=%D0%9F%D0%9E-21"
            )))
            .send()
            .expect("xlsx");
        assert_eq!(xlsx.status(), 200, "{table}");
        assert_eq!(
            &xlsx.bytes().expect("body")[..2],
            b"PK",
            "{table}: an XLSX is a ZIP archive"
        );
    }
    assert_eq!(
        admin
            .get(college.url("/admin/export/passwords?month=2026-11"))
            .send()
            .expect("get")
            .status(),
        400
    );
    let anonymous = kasip_tests::browser(&college.dir.path());
    assert_eq!(
        anonymous
            .get(college.url("/admin/export/coverage"))
            .send()
            .expect("get")
            .status(),
        303
    );
    assert_eq!(
        admin
            .get(college.url("/admin?month=2026-13"))
            .send()
            .expect("get")
            .status(),
        400
    );
}

#[test]
fn the_dashboards_close_button_closes_the_month_like_the_cli() {
    let college = College::new(3);
    let admin = college.teacher("admin");
    let close = |client: &kasip_tests::reqwest::blocking::Client, csrf: &str, reason: &str| {
        let response = client
            .post(college.url("/admin/month-close"))
            .form(&[("csrf", csrf), ("month", "2026-11"), ("reason", reason)])
            .send()
            .expect("close");
        (response.status().as_u16(), response.text().expect("body"))
    };
    let page = |client: &kasip_tests::reqwest::blocking::Client, path: &str| {
        let response = client.get(college.url(path)).send().expect("get");
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        (
            status,
            content_type,
            response.bytes().expect("body").to_vec(),
        )
    };
    // The dashboard leads to a confirmation that says what the close will state.
    let (_, _, dashboard) = page(&admin, "/admin?month=2026-11&lang=en");
    let dashboard = String::from_utf8_lossy(&dashboard).to_string();
    assert!(
        dashboard.contains("href=\"/admin/month-close?month=2026-11\">Close the month…"),
        "{dashboard}"
    );
    let (status, _, confirm) = page(&admin, "/admin/month-close?month=2026-11&lang=en");
    let confirm = String::from_utf8_lossy(&confirm).to_string();
    assert_eq!(status, 200);
    assert!(confirm.contains("Close 2026-11?"), "{confirm}");
    assert!(
        confirm.contains("id=summary>College QR coverage:"),
        "{confirm}"
    );
    assert!(
        confirm.contains("closing it now needs a written reason"),
        "{confirm}"
    );
    assert!(
        confirm.contains("<input name=reason maxlength=200 required>"),
        "{confirm}"
    );
    let csrf = college.csrf(&admin);
    let (status, body) = close(&admin, &csrf, "");
    assert_eq!(
        status, 409,
        "November has not ended on the test clock: {body}"
    );
    assert!(body.contains("has not ended yet"), "{body}");
    assert_eq!(close(&admin, "forged", "inspection").0, 403);
    let teacher = college.teacher(TEACHER_A);
    let teacher_csrf = college.csrf(&teacher);
    assert_eq!(close(&teacher, &teacher_csrf, "inspection").0, 403);
    assert_eq!(college.count("SELECT COUNT(*) FROM month_closes"), 0);

    let (status, body) = close(&admin, &csrf, "ministry inspection");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("id=verdict"), "{body}");
    assert_eq!(
        college.count("SELECT COUNT(*) FROM month_closes WHERE closed_by = 'admin'"),
        1
    );
    assert!(college
        .dir
        .path()
        .join("statements/month-close-2026-11.jws")
        .exists());
    // The result offers every report; each downloads as written.
    assert!(body.contains("id=downloads"), "{body}");
    let statement = std::fs::read(
        college
            .dir
            .path()
            .join("statements/month-close-2026-11.jws"),
    )
    .expect("statement");
    for (kind, content_type) in [
        ("html", "text/html"),
        ("csv", "text/csv"),
        (
            "xlsx",
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        ),
        ("jws", "application/jose"),
    ] {
        let (status, got_type, bytes) = page(&admin, &format!("/admin/month-close/2026-11/{kind}"));
        assert_eq!(status, 200, "{kind}");
        assert!(got_type.starts_with(content_type), "{kind}: {got_type}");
        match kind {
            "xlsx" => assert_eq!(&bytes[..2], b"PK"),
            "jws" => assert_eq!(bytes, statement),
            "html" => assert!(String::from_utf8_lossy(&bytes).contains("<html lang=")),
            _ => assert!(String::from_utf8_lossy(&bytes).contains(';')),
        }
    }
    for path in [
        "/admin/month-close/2026-11/pem",
        "/admin/month-close/2026-10/jws",
        "/admin/month-close/..%2fagent-key/jws",
        "/admin/month-close/2026-11/..%2f..%2fagent.db",
    ] {
        assert_eq!(page(&admin, path).0, 404, "{path}");
    }
    assert_eq!(page(&teacher, "/admin/month-close/2026-11/jws").0, 403);
    // The dashboard and the close page show the month closed.
    let (_, _, dashboard) = page(&admin, "/admin?month=2026-11&lang=en");
    let dashboard = String::from_utf8_lossy(&dashboard).to_string();
    assert!(
        dashboard.contains("2026-11: Closed — Closed "),
        "{dashboard}"
    );
    let (_, _, closed) = page(&admin, "/admin/month-close?month=2026-11&lang=en");
    assert!(String::from_utf8_lossy(&closed).contains("id=verdict"));
    assert_eq!(
        close(&admin, &csrf, "again").0,
        409,
        "a second close is refused"
    );
}

/// A month of a 2,500-student college written straight into the college's database:
/// 100 groups of 25, six lessons on each working day of November 2026, one mark per
/// student per lesson (≈ 315,000 marks), enough that its red flags take a while. The WAL
/// is folded back here, so the agent's next write does not wait behind a checkpoint of it.
fn seed_large_month(college: &College) {
    college
        .db()
        .execute_batch(
            "BEGIN;
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100)
             INSERT INTO study_groups (code) SELECT 'S-' || i FROM n;
             WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 2499)
             INSERT INTO students (iin, last_name, first_name, group_id, beneficiary, status)
             SELECT printf('99%010d', i), 'S', 'S',
                    (SELECT id FROM study_groups WHERE code = 'S-' || (i / 25 + 1)), 1, 'active'
             FROM n;
             WITH RECURSIVE d(day) AS (SELECT date('2026-11-01') UNION ALL
                                       SELECT date(day, '+1 day') FROM d WHERE day < '2026-11-30'),
                  slot(s) AS (SELECT 0 UNION ALL SELECT s + 1 FROM slot WHERE s < 5)
             INSERT INTO lessons (date, start_time, end_time, group_id, discipline, teacher_iin, room, mode)
             SELECT day, printf('%02d:00', 8 + s), printf('%02d:50', 8 + s), g.id, 'D',
                    '850515400012', '101', 'offline'
             FROM d, slot, study_groups g
             WHERE strftime('%w', day) NOT IN ('0', '6') AND g.code LIKE 'S-%';
             INSERT INTO attendance_events (lesson_id, student_iin, status, method, recorded_at, prev_hash, row_hash)
             SELECT l.id, s.iin, 'present', CASE WHEN s.iin % 3 = 0 THEN 'manual' ELSE 'qr_phone' END,
                    0, zeroblob(32), zeroblob(32)
             FROM lessons l JOIN students s ON s.group_id = l.group_id
             WHERE s.iin LIKE '99%';
             COMMIT;
             PRAGMA wal_checkpoint(TRUNCATE);",
        )
        .expect("seed");
}

#[test]
fn a_dashboard_computing_does_not_hold_up_the_projector() {
    let college = College::new(3);
    let seeding = std::time::Instant::now();
    seed_large_month(&college);
    eprintln!("seeded in {:.1} s", seeding.elapsed().as_secs_f64());
    let teacher = college.teacher(TEACHER_A);
    college.open_lesson(&teacher, college.lesson_a);
    let admin = college.sign_in(kasip_tests::browser(&college.dir.path()), "admin");
    // The red-flags export recomputes the month every time.
    let export = {
        let (admin, url) = (admin, college.url("/admin/export/red-flags?month=2026-11"));
        std::thread::spawn(move || {
            let started = std::time::Instant::now();
            let response = admin.get(url).send().expect("export");
            assert_eq!(response.status(), 200);
            let _ = response.bytes();
            (started, std::time::Instant::now())
        })
    };
    std::thread::sleep(std::time::Duration::from_millis(100));
    let polled = std::time::Instant::now();
    assert_eq!(college.display(&teacher, college.lesson_a)["state"], "open");
    let answered = std::time::Instant::now();
    let (export_started, export_done) = export.join().expect("export");
    eprintln!(
        "export {:.2} s; the projector's poll, sent 0.1 s in, answered after {:.3} s",
        (export_done - export_started).as_secs_f64(),
        (answered - polled).as_secs_f64()
    );
    // The test means something only if the month takes longer than the poll's head start.
    assert!(
        export_done - export_started > std::time::Duration::from_millis(400),
        "the seeded month computed too fast to tell"
    );
    // Once, the poll waited behind the computation on the one read connection.
    assert!(
        answered < export_done,
        "the projector's poll waited for the dashboard"
    );
}

/// The dashboard speaks the admin's language: a security event is a local time, a
/// sentence and a name, not a Unix time, a code and an IIN.
#[test]
fn security_events_on_the_dashboard_read_as_time_words_and_names() {
    let college = College::new(3);
    let phone = college.bound_phone(&college.group_a[0]);
    // A forged code from the linked phone: a security event naming the student.
    let forged = format!(
        "{}/c/{}.1.AAAAAAAAAAAAAAAAAAAAAA",
        college.server.url, college.lesson_a
    );
    let (status, _) = common::check_in(&phone, &forged);
    assert!(status >= 400);
    let admin = college.teacher("admin");
    let page = admin
        .get(college.url("/admin?lang=ru"))
        .send()
        .expect("dashboard")
        .text()
        .expect("body");
    let start = page
        .find("<ul id=security-events>")
        .expect("the events list");
    let events = &page[start
        ..page[start..]
            .find("</ul>")
            .map_or(page.len(), |end| start + end)];
    let name = college.student_name(&college.group_a[0]);
    assert!(events.contains(&name), "{events}");
    assert!(
        !events.contains(&college.group_a[0]),
        "an IIN where a name belongs: {events}"
    );
    assert!(events.contains("2026-11-23 09:0"), "a local time: {events}");
    assert!(
        !events.contains("_token") && !events.contains("device_"),
        "a code where words belong: {events}"
    );
}

/// The dashboard has a month picker and finds a student by any part of their name (any
/// case, Cyrillic too) or IIN.
#[test]
fn the_dashboard_picks_a_month_and_finds_a_student_by_name_or_iin() {
    let college = College::new(3);
    let admin = college.teacher("admin");
    let get = |path: &str| {
        admin
            .get(college.url(path))
            .send()
            .and_then(|response| response.text())
            .expect("page")
    };
    let page = get("/admin?month=2026-10&lang=en");
    assert!(
        page.contains("<input type=month name=month value=\"2026-10\" required>"),
        "{page}"
    );
    assert!(page.contains("action=\"/admin/search\""), "{page}");
    assert!(page.contains("College QR coverage:"), "{page}");
    let (iin, name): (String, String) = college
        .db()
        .query_row(
            "SELECT iin, last_name || ' ' || first_name FROM students WHERE iin = ?1",
            [&college.group_a[1]],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .expect("student");
    let lower = name.to_lowercase();
    let part: String = lower.chars().skip(1).take(5).collect();
    for query in [part.as_str(), &iin[3..9]] {
        let found = get(&format!(
            "/admin/search?month=2026-11&lang=en&q={}",
            kasip_tests::url_encode(query)
        ));
        assert!(
            found.contains(&format!(
                "/admin/student?month=2026-11&amp;iin={iin}\">{name}</a>"
            )),
            "{query}: {found}"
        );
    }
    let none = get("/admin/search?q=%25%25zzzz&lang=en");
    assert!(none.contains("id=none>No student matches."), "{none}");
}
