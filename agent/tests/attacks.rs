//! The attack table of the stress suite: one test per attack, each against a running
//! agent over HTTPS, each asserting the status, the sentence the attacker (or the
//! student) reads, and that nothing was recorded. Pages are asked for in English so the
//! sentences read plainly here; the same keys exist in Kazakh and Russian.
//!
//! Rows tested elsewhere: SQL-looking and 10,000-character names in imports
//! (`cli_import.rs`), a replayed student pass and a revoked kiosk (`kiosk.rs`). TESTING.md
//! has the whole table.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{
    csrf_of, lesson_start_plus_one_minute, reason_of, tls_connect, College, PASSWORD, TEACHER_A,
    TEACHER_B,
};
use kasip_tests::browser_in;
use kasip_tests::reqwest::blocking::{Client, Response};

/// A refusal: `status`, `sentence` on the page.
fn assert_refused(response: Response, status: u16, sentence: &str) -> String {
    let actual = response.status().as_u16();
    let body = response.text().expect("body");
    assert_eq!(actual, status, "{body}");
    assert!(
        kasip_tests::page_text(&body).contains(sentence),
        "expected {sentence:?} in: {body}"
    );
    body
}

fn english(college: &College) -> Client {
    browser_in(&college.dir.path(), "en")
}

/// A phone bound to `iin` that reads pages in English.
fn phone(college: &College, iin: &str) -> Client {
    let phone = english(college);
    college.bind(&phone, iin);
    phone
}

/// A signed-in staff browser reading English.
fn staff(college: &College, login: &str) -> Client {
    college.sign_in(english(college), login)
}

/// Lesson A open, and its current classroom URL.
fn open_lesson_a(college: &College) -> String {
    let teacher = college.teacher(TEACHER_A);
    college.open_lesson(&teacher, college.lesson_a);
    college.shown_url(&teacher, college.lesson_a)
}

fn post(client: &Client, url: &str) -> Response {
    client.post(url).send().expect("post")
}

#[test]
fn forged_token() {
    let college = College::new(3);
    let url = open_lesson_a(&college);
    let phone = phone(&college, &college.group_a[0]);
    let before = college.recorded();
    // One base64url character of the tag changed: a well-formed token, wrong MAC.
    let tag_start = url.rfind('.').expect("tag") + 1;
    let flipped = if url[tag_start..].starts_with('A') {
        "B"
    } else {
        "A"
    };
    let forged = format!("{}{flipped}{}", &url[..tag_start], &url[tag_start + 1..]);
    let body = assert_refused(
        post(&phone, &forged),
        403,
        "This code is not valid: it was not made by the college's agent.",
    );
    assert_eq!(reason_of(&body), "forged_token");
    // Garbage where the token goes never reaches the database as one.
    let body = assert_refused(
        post(&phone, &college.url("/c/1.2.3%27;DROP%20TABLE%20students")),
        400,
        "This is not a classroom code.",
    );
    assert_eq!(reason_of(&body), "malformed_token");
    college.recorded().assert_unchanged_since(&before);
    assert_eq!(college.security_events("forged_token"), 1);
}

#[test]
fn token_from_another_lesson() {
    let college = College::new(3);
    let teacher_b = college.teacher(TEACHER_B);
    college.open_lesson(&teacher_b, college.lesson_b);
    let other_room = college.shown_url(&teacher_b, college.lesson_b);
    let phone = phone(&college, &college.group_a[0]);
    let before = college.recorded();
    let body = assert_refused(
        post(&phone, &other_room),
        403,
        "You are not in this lesson's group.",
    );
    assert_eq!(reason_of(&body), "not_in_group");
    college.recorded().assert_unchanged_since(&before);
    assert_eq!(college.security_events("not_in_group"), 1);
}

#[test]
fn stale_token() {
    let college = College::new(3);
    let url = open_lesson_a(&college);
    let phone = phone(&college, &college.group_a[0]);
    let before = college.recorded();
    // Two 10-second steps after the code was shown.
    college.set_clock(lesson_start_plus_one_minute() + 20);
    let body = assert_refused(
        post(&phone, &url),
        410,
        "This code has expired. Scan the code on the screen now.",
    );
    assert_eq!(reason_of(&body), "stale_token");
    college.recorded().assert_unchanged_since(&before);
    assert_eq!(college.security_events("stale_token"), 1);
}

#[test]
fn unbound_device() {
    let college = College::new(3);
    let url = open_lesson_a(&college);
    let before = college.recorded();
    // The code has rotated by the time the unbound phone posts it: no binding offer.
    college.set_clock(lesson_start_plus_one_minute() + 60);
    let body = assert_refused(
        post(&english(&college), &url),
        403,
        "This phone is not linked to a student.",
    );
    assert_eq!(reason_of(&body), "device_not_bound");
    // A made-up credential cookie is no better than none.
    let forged_cookie = english(&college)
        .post(&url)
        .header("cookie", format!("kasip_credential={}", "A".repeat(43)))
        .send()
        .expect("post");
    assert_refused(forged_cookie, 403, "This phone is not linked to a student.");
    college.recorded().assert_unchanged_since(&before);
    assert_eq!(college.security_events("device_not_bound"), 2);
}

#[test]
fn one_device_for_two_students() {
    let college = College::new(3);
    let url = open_lesson_a(&college);
    let shared = phone(&college, &college.group_a[0]);
    assert_eq!(post(&shared, &url).status(), 200);
    // The same phone is rebound to a classmate, who tries to check in with it too.
    college.bind(&shared, &college.group_a[1]);
    let before = college.recorded();
    let body = assert_refused(
        post(&shared, &url),
        403,
        "Another student has already checked in to this lesson from this phone.",
    );
    assert_eq!(reason_of(&body), "device_used_for_another_student");
    college.recorded().assert_unchanged_since(&before);
    assert_eq!(college.marks(), 1);
    assert_eq!(
        college.security_events("device_used_for_another_student"),
        1
    );
}

#[test]
fn brute_force_of_binding_codes() {
    let college = College::new(3);
    let iin = college.group_a[0].clone();
    let code = college.issue_code(&iin);
    let before = college.recorded();
    let attacker = english(&college);
    for guess in ["AAAAAAAA", "BBBBBBBB", "CCCCCCCC", "DDDDDDDD"] {
        assert_refused(
            college.post_bind(&attacker, &iin, guess, None),
            403,
            "The IIN and code do not match, or the code has expired.",
        );
    }
    // The fifth wrong guess trips the limit and locks the code for good.
    assert_refused(
        college.post_bind(&attacker, &iin, "EEEEEEEE", None),
        429,
        "Too many wrong attempts. Ask your curator for a new code.",
    );
    assert_refused(
        college.post_bind(&english(&college), &iin, &code, None),
        429,
        "Too many wrong attempts. Ask your curator for a new code.",
    );
    college.recorded().assert_unchanged_since(&before);
    assert_eq!(college.security_events("binding_code_wrong"), 5);
    // A new code from the curator works.
    let fresh = college.issue_code(&iin);
    college.set_clock(lesson_start_plus_one_minute() + 301);
    assert_eq!(
        college
            .post_bind(&english(&college), &iin, &fresh, None)
            .status(),
        200
    );
}

#[test]
fn brute_force_of_staff_passwords() {
    let college = College::new(3);
    let before = college.recorded();
    let attacker = english(&college);
    let attempt = |password: &str| {
        let form = attacker
            .get(college.url("/login"))
            .send()
            .expect("form")
            .text()
            .expect("body");
        attacker
            .post(college.url("/login"))
            .form(&[
                ("login", TEACHER_A),
                ("password", password),
                ("csrf", &csrf_of(&form)),
            ])
            .send()
            .expect("login")
    };
    for guess in ["123456", "password", "qwerty", "Almaty2026", "letmein"] {
        assert_refused(attempt(guess), 401, "Wrong login or password.");
    }
    // Locked even with the right password, so guessing on cannot confirm a hit.
    assert_refused(
        attempt(PASSWORD),
        429,
        "Too many attempts. Try again in 5 minutes.",
    );
    assert_eq!(college.count("SELECT COUNT(*) FROM staff_sessions"), 0);
    college.recorded().assert_unchanged_since(&before);
    assert_eq!(college.security_events("login_failed"), 5);
    // The lock ends with its window.
    college.set_clock(lesson_start_plus_one_minute() + 301);
    assert_eq!(attempt(PASSWORD).status(), 303);
}

/// A form's fields without its CSRF token.
type Form<'a> = Vec<(&'a str, &'a str)>;

#[test]
fn csrf_on_staff_forms() {
    let college = College::new(3);
    let teacher = staff(&college, TEACHER_A);
    let admin = staff(&college, "admin");
    let before = college.recorded();
    let lesson = college.lesson_a;
    let student = college.group_a[0].as_str();
    let forms: Vec<(&Client, String, Form)> = vec![
        (&teacher, format!("/teacher/lessons/{lesson}/open"), vec![]),
        (&teacher, format!("/teacher/lessons/{lesson}/close"), vec![]),
        (
            &teacher,
            format!("/teacher/lessons/{lesson}/marks"),
            vec![("student", student), ("status", "present"), ("reason", "x")],
        ),
        (
            &teacher,
            format!("/teacher/lessons/{lesson}/grades"),
            vec![
                ("student", student),
                ("assessment", "exam"),
                ("score", "90"),
                ("credits", "3"),
            ],
        ),
        (
            &admin,
            "/admin/binding-codes".into(),
            vec![("iin", student)],
        ),
        (
            &admin,
            "/admin/month-close".into(),
            vec![("month", "2026-10")],
        ),
    ];
    for (client, path, fields) in &forms {
        // A hostile page can make the browser post, with its cookies, but cannot read
        // the form's token: it sends none, or a guess.
        for csrf in ["", "guessed-token"] {
            let mut form = fields.clone();
            form.push(("csrf", csrf));
            let response = client
                .post(college.url(path))
                .form(&form)
                .send()
                .expect("post");
            assert_refused(
                response,
                403,
                "This form has expired. Reload the page and try again.",
            );
        }
    }
    // The forms shown before a session exists use a cookie pair instead.
    for path in ["/login", "/bind"] {
        let response = english(&college)
            .post(college.url(path))
            .form(&[
                ("login", TEACHER_B),
                ("password", PASSWORD),
                ("iin", student),
                ("code", "ABCDEFGH"),
                ("csrf", "guessed-token"),
            ])
            .send()
            .expect("post");
        assert_refused(
            response,
            403,
            "This form has expired. Reload the page and try again.",
        );
    }
    college.recorded().assert_unchanged_since(&before);
}

#[test]
fn staff_and_admin_endpoints_without_a_session_and_with_the_wrong_role() {
    let college = College::new(3);
    let lesson = college.lesson_a;
    let student = college.group_a[0].clone();
    let pages = [
        "/teacher".to_owned(),
        format!("/display/{lesson}"),
        "/admin".into(),
        "/admin/group?code=%D0%9F%D0%9E-21".into(),
        format!("/admin/student?iin={student}"),
        "/admin/export/coverage".into(),
        "/admin/export/marks".into(),
    ];
    let teacher_forms = [
        format!("/teacher/lessons/{lesson}/open"),
        format!("/teacher/lessons/{lesson}/close"),
        format!("/teacher/lessons/{lesson}/marks"),
        format!("/teacher/lessons/{lesson}/grades"),
    ];
    let admin_forms = ["/admin/binding-codes", "/admin/month-close"];
    let every_field = [
        ("csrf", "x"),
        ("student", student.as_str()),
        ("status", "present"),
        ("reason", "x"),
        ("assessment", "exam"),
        ("score", "90"),
        ("credits", "3"),
        ("iin", student.as_str()),
        ("month", "2026-10"),
    ];
    let before = college.recorded();

    // Without a session: pages send the browser to the sign-in form, actions refuse.
    let anonymous = english(&college);
    for page in &pages {
        let response = anonymous.get(college.url(page)).send().expect("get");
        assert_eq!(response.status(), 303, "{page}");
        assert_eq!(response.headers()["location"], "/login", "{page}");
    }
    let current = anonymous
        .get(college.url(&format!("/display/{lesson}/current")))
        .send()
        .expect("get");
    assert_refused(current, 401, "Sign in first.");
    for path in teacher_forms.iter().map(String::as_str).chain(admin_forms) {
        let response = anonymous
            .post(college.url(path))
            .form(&every_field)
            .send()
            .expect("post");
        assert_refused(response, 401, "Sign in first.");
    }

    // A teacher is not an admin, and not the teacher of another's lesson.
    let teacher_b = staff(&college, TEACHER_B);
    for page in pages.iter().filter(|page| page.starts_with("/admin")) {
        let response = teacher_b.get(college.url(page)).send().expect("get");
        assert_refused(response, 403, "You do not have access to this.");
    }
    for page in [
        format!("/display/{lesson}"),
        format!("/display/{lesson}/current"),
    ] {
        let response = teacher_b.get(college.url(&page)).send().expect("get");
        assert_refused(response, 403, "You do not have access to this.");
    }
    let csrf = college.csrf(&teacher_b);
    let mut fields = every_field.to_vec();
    fields[0] = ("csrf", csrf.as_str());
    for path in teacher_forms.iter().map(String::as_str).chain(admin_forms) {
        let response = teacher_b
            .post(college.url(path))
            .form(&fields)
            .send()
            .expect("post");
        assert_refused(response, 403, "You do not have access to this.");
    }
    college.recorded().assert_unchanged_since(&before);
}

/// Regression: a body a little over the limit was refused before it was read, so a client
/// still writing it got a broken pipe instead of the 413 now and then (the kiosk test's
/// 70 kB upload did).
#[test]
fn a_body_just_over_the_limit_gets_its_answer_not_a_broken_pipe() {
    let college = College::new(3);
    let client = english(&college);
    let before = college.recorded();
    for attempt in 0..20 {
        let response = client
            .post(college.url("/bind"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(vec![b'a'; 200 * 1024])
            .send()
            .unwrap_or_else(|error| panic!("attempt {attempt}: no answer: {error:?}"));
        assert_refused(
            response,
            413,
            "The request is too large: nothing was stored.",
        );
    }
    college.recorded().assert_unchanged_since(&before);
}

#[test]
fn a_twenty_megabyte_request_body() {
    let college = College::new(3);
    let url = open_lesson_a(&college);
    let phone = phone(&college, &college.group_a[0]);
    let before = college.recorded();
    let path = url.split_once("/c/").expect("path").1.to_owned();
    // The check-in ignores its body; it is refused all the same, before it is read.
    for target in [format!("/c/{path}"), "/bind".into(), "/login".into()] {
        let head = format!(
            "POST {target} HTTP/1.1\r\nHost: x\r\nAccept-Language: en\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n",
            20 * 1024 * 1024
        );
        let answer = send_body(&college, head.as_bytes(), 20 * 1024 * 1024);
        assert!(answer.starts_with("HTTP/1.1 413"), "{target}: {answer}");
        assert!(
            answer.contains("The request is too large: nothing was stored."),
            "{answer}"
        );
    }
    // Without a declared length (chunked), reading stops at the limit.
    let head = format!(
        "POST /c/{path} HTTP/1.1\r\nHost: x\r\nAccept-Language: en\r\n\
         Transfer-Encoding: chunked\r\n\r\n"
    );
    let answer = send_body(&college, head.as_bytes(), 20 * 1024 * 1024);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer.contains("The request is too large: nothing was stored."),
        "{answer}"
    );
    college.recorded().assert_unchanged_since(&before);
    // The phone itself still checks in.
    assert_eq!(post(&phone, &url).status(), 200);
}

/// Sends `head` and then up to `length` bytes of body (chunked if the head says so) as
/// fast as the agent takes them, and returns its answer, which may come before the
/// body is all sent.
fn send_body(college: &College, head: &[u8], length: usize) -> String {
    let (mut stream, _) = tls_connect(&college.server.address());
    stream
        .sock
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    stream
        .sock
        .set_write_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    stream.write_all(head).expect("head");
    let chunked = String::from_utf8_lossy(head).contains("chunked");
    let piece = vec![b'a'; 0x10000];
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    let mut sent = 0;
    while sent < length {
        let written = if chunked {
            stream
                .write_all(b"10000\r\n")
                .and_then(|()| stream.write_all(&piece))
                .and_then(|()| stream.write_all(b"\r\n"))
        } else {
            stream.write_all(&piece)
        };
        sent += piece.len();
        match stream.read(&mut buffer) {
            Ok(read) if read > 0 => {
                answer.extend_from_slice(&buffer[..read]);
                break;
            }
            Ok(_) => break,
            Err(_) if written.is_ok() => {}
            Err(_) => break,
        }
    }
    stream
        .sock
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

/// What a slow attacker's connection saw: how long the agent kept it open, and the
/// agent's answer if it gave one.
struct Held {
    open_for: Duration,
    answer: String,
}

/// Writes `first` and then one byte of `dribble` per second until the agent closes the
/// connection or answers (or 90 s pass). The stream's read timeout must be short: it
/// is polled for an answer after every byte.
fn hold_open(mut stream: impl Read + Write, first: &[u8], dribble: &[u8]) -> Held {
    let start = Instant::now();
    let _ = stream.write_all(first);
    let _ = stream.flush();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    for byte in dribble.iter().cycle() {
        if start.elapsed() > Duration::from_secs(90) {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
        if stream
            .write_all(&[*byte])
            .and_then(|()| stream.flush())
            .is_err()
        {
            break;
        }
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => {
                answer.extend_from_slice(&buffer[..read]);
                break;
            }
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    let _ = stream.read_to_end(&mut answer);
    Held {
        open_for: start.elapsed(),
        answer: String::from_utf8_lossy(&answer).into_owned(),
    }
}

/// The agent's whole answer on a `Connection: close` (or closing) stream.
fn read_answer(stream: &mut impl Read) -> String {
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

/// A TLS connection whose reads give up after 200 ms (see `hold_open`).
fn polled_tls(address: &str) -> common::TlsStream {
    let (stream, _) = tls_connect(address);
    stream
        .sock
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    stream
}

#[test]
fn slow_clients_cannot_hold_connections_or_starve_others() {
    let college = College::new(20);
    let url = open_lesson_a(&college);
    let address = college.server.address();
    let token_path = url.split_once("/c/").expect("path").1.to_owned();
    let mut attackers = Vec::new();
    for index in 0..150 {
        let address = address.clone();
        let token_path = token_path.clone();
        attackers.push(std::thread::spawn(move || match index % 3 {
            // A TLS handshake that never completes: a record header, then a trickle.
            0 => {
                let socket = TcpStream::connect(&address).expect("connect");
                socket
                    .set_read_timeout(Some(Duration::from_millis(200)))
                    .expect("timeout");
                (index, hold_open(socket, &[0x16, 0x03, 0x01, 0x02, 0x00], b"x"))
            }
            // Headers, one byte a second, never finished.
            1 => {
                let stream = polled_tls(&address);
                (
                    index,
                    hold_open(stream, b"GET /login HTTP/1.1\r\nHost: x\r\n", b"X-Slow: y"),
                )
            }
            // A check-in whose declared body trickles in.
            _ => {
                let stream = polled_tls(&address);
                let head = format!(
                    "POST /c/{token_path} HTTP/1.1\r\nHost: x\r\nAccept-Language: en\r\n\
                     Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 4000\r\n\r\n"
                );
                (index, hold_open(stream, head.as_bytes(), b"a"))
            }
        }));
    }
    std::thread::sleep(Duration::from_secs(3));
    // Meanwhile every student of the group checks in.
    let before = college.marks();
    for iin in &college.group_a {
        let phone = phone(&college, iin);
        assert_eq!(post(&phone, &url).status(), 200, "{iin} checks in");
    }
    assert_eq!(college.marks(), before + college.group_a.len() as i64);
    let mut longest = Duration::ZERO;
    for attacker in attackers {
        let (index, held) = attacker.join().expect("attacker thread");
        longest = longest.max(held.open_for);
        // Handshake 10 s, then 15 s for the headers or the body (plus scheduling).
        assert!(
            held.open_for < Duration::from_secs(40),
            "attacker {index} held its connection {:?}",
            held.open_for
        );
        if index % 3 == 2 {
            assert!(
                held.answer.starts_with("HTTP/1.1 408"),
                "a trickled body gets 408: {}",
                held.answer
            );
            assert!(
                held.answer
                    .contains("The request arrived too slowly: nothing was stored."),
                "{}",
                held.answer
            );
        }
    }
    eprintln!("150 slow connections, the longest held {longest:?}");
    assert_eq!(
        college.marks(),
        before + college.group_a.len() as i64,
        "the trickled check-ins recorded nothing"
    );
}

#[test]
fn path_traversal_on_static_files() {
    let college = College::new(3);
    let admin = staff(&college, "admin");
    let secrets = [
        "SQLite format 3",
        "root:x:0:0",
        "BEGIN PRIVATE KEY",
        "BEGIN EC PRIVATE",
    ];
    let attempts = [
        "/../agent.db",
        "/%2e%2e/agent.db",
        "/pass.js/../../agent-key.pem",
        "/pass.js%2f..%2f..%2fagent-key.pem",
        "/static/../../../../etc/passwd",
        "/..%2f..%2f..%2f..%2fetc%2fpasswd",
        "/admin/export/..%2f..%2fagent.db",
        "/admin/export/%2e%2e%2fagent-key.pem",
        "/display/..%2f..%2fagent.db",
    ];
    for attempt in attempts {
        // Sent as written: reqwest would normalise `..` away.
        let mut stream = tls_connect(&college.server.address()).0;
        stream
            .write_all(
                format!(
                    "GET {attempt} HTTP/1.1\r\nHost: localhost\r\nAccept-Language: en\r\n\
                     Connection: close\r\n\r\n"
                )
                .as_bytes(),
            )
            .expect("write");
        let answer = read_answer(&mut stream);
        let status: u16 = answer
            .get(9..12)
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("{attempt}: no status in {answer}"));
        assert!(
            matches!(status, 303 | 400 | 404),
            "{attempt}: {status} {answer}"
        );
        for secret in secrets {
            assert!(!answer.contains(secret), "{attempt} leaked {secret}");
        }
        // And as a signed-in admin, whose session opens the export route.
        let response = admin.get(college.url(attempt)).send().expect("get");
        let status = response.status().as_u16();
        let body = response.text().expect("body");
        assert!(
            matches!(status, 400 | 404),
            "{attempt} as admin: {status} {body}"
        );
        for secret in secrets {
            assert!(!body.contains(secret), "{attempt} as admin leaked {secret}");
        }
    }
    let unknown = admin.get(college.url("/no/such/page")).send().expect("get");
    assert_refused(unknown, 404, "There is no such page.");
}
