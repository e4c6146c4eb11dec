//! The projector's poll: the agent's CPU per `GET /display/{id}/current` of an open
//! lesson (one poll in ten fetching the code, nine naming the step they show, as a
//! projector polling each second through a 10 s period does), against its CPU per
//! `GET /ping` on the same kept-alive connection in the same run, and what 100 projectors
//! polling once a second would cost of one core.
//!
//! Then the projector as it runs now, fed by server-sent events: 100 feeds open on the
//! lesson for 20 s, the code rotating every 10 s, first with nothing else happening, then
//! with a mark committed every second (each commit wakes every feed); the agent's CPU as a
//! share of one core, beside what 100 projectors polling once a second cost in the same
//! run.
//!
//! `cargo bench -p kasip-agent --bench display`

use std::io::BufRead;
use std::io::BufReader;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use kasip_core::Date;
use kasip_tests::{browser, cpu_seconds, run_with, text, Server, TempDataDir};

const AGENT: &str = env!("CARGO_BIN_EXE_kasip-agent");
const TEACHER: &str = "850515400012";
const PASSWORD: &str = "correct horse battery";
const REQUESTS: usize = 3000;

fn main() {
    let dir = TempDataDir::new();
    let clock = dir.file("clock");
    // 2026-11-23 09:01 in Almaty, a minute into the lesson.
    let start = Date::new(2026, 11, 23).expect("date").days_since_epoch() * 86_400 + 4 * 3600 + 60;
    std::fs::write(&clock, start.to_string()).expect("clock");
    let clock_text = clock.display().to_string();
    let env = [("KASIP_UNSAFE_CLOCK_FILE", clock_text.as_str())];
    let agent = |args: &[&str], stdin: Option<&str>| {
        let output = run_with(AGENT, &dir.path(), args, &env, stdin);
        assert!(output.status.success(), "{args:?}: {:?}", text(&output));
    };
    agent(&["init"], None);
    let write = |name: &str, contents: String| {
        let path = dir.file(name);
        std::fs::write(&path, contents).expect("csv");
        path.display().to_string()
    };
    agent(
        &[
            "import",
            "teachers",
            &write(
                "t.csv",
                format!("iin;last_name;first_name\n{TEACHER};Жұмабаева;Әйгерім\n{OTHER_TEACHER};Иванов;Сергей\n"),
            ),
        ],
        None,
    );
    agent(
        &[
            "import",
            "students",
            &write(
                "s.csv",
                "iin;last_name;first_name;group;beneficiary\n060315500016;A;A;BENCH;да\n060315600012;B;B;OTHER;да\n".into(),
            ),
        ],
        None,
    );
    agent(&["import", "timetable", &write("tt.csv", format!("date;start;end;group;discipline;teacher_iin;site;room;mode\n2026-11-23;09:00;10:30;BENCH;Математика;{TEACHER};Корпус;101;offline\n2026-11-23;09:00;10:30;OTHER;Физика;{OTHER_TEACHER};Корпус;102;offline\n"))], None);
    agent(&["staff", "set-password", TEACHER], Some(PASSWORD));
    agent(&["staff", "set-password", OTHER_TEACHER], Some(PASSWORD));
    agent(&["lesson", "open", "1"], None);
    agent(&["lesson", "open", "2"], None);
    let server = Server::start_with_env(AGENT, &dir.path(), &[], &env);
    let client = browser(&dir.path());
    kasip_tests::sign_in(&client, &server.url, TEACHER, PASSWORD);
    let pid = server.pid();
    // As a projector polls: once a second, a new code every 10 s (the default period), so
    // one poll in ten fetches the code and nine say which step they already show.
    let step: serde_json::Value = client
        .get(format!("{}/display/1/current", server.url))
        .send()
        .and_then(|response| response.json())
        .expect("poll");
    let step = step["step"].as_u64().expect("step");
    let measure = |path: &str, repeat_path: &str| {
        let url = format!("{}{path}", server.url);
        let repeat_url = format!("{}{repeat_path}", server.url);
        for _ in 0..100 {
            client.get(&url).send().expect("warm up");
        }
        let cpu_before = cpu_seconds(pid);
        let started = Instant::now();
        for request in 0..REQUESTS {
            let url = if request % 10 == 0 { &url } else { &repeat_url };
            let response = client.get(url).send().expect("get");
            assert_eq!(response.status(), 200);
            let _ = response.bytes();
        }
        let wall = started.elapsed().as_secs_f64() / REQUESTS as f64;
        ((cpu_seconds(pid) - cpu_before) / REQUESTS as f64, wall)
    };
    let (ping_cpu, ping_wall) = measure("/ping", "/ping");
    let (poll_cpu, poll_wall) = measure(
        "/display/1/current",
        &format!("/display/1/current?shown={step}"),
    );
    let shown = client
        .get(format!("{}/display/1/current", server.url))
        .send()
        .and_then(|response| response.text())
        .expect("poll");
    assert!(
        shown.contains("<svg"),
        "an open lesson's poll carries its code"
    );
    let repeat = client
        .get(format!("{}/display/1/current?shown={step}", server.url))
        .send()
        .and_then(|response| response.text())
        .expect("poll");
    assert!(
        !repeat.contains("<svg") && repeat.contains("\"checked_in\""),
        "a poll for the code on screen carries the count alone: {repeat}"
    );
    println!(
        "agent CPU per request over {REQUESTS}: GET /ping {:.0} µs, display poll {:.0} µs ({:.1}× a ping); wall {:.2} ms and {:.2} ms; 100 projectors polling once a second: {:.1}% of a core",
        ping_cpu * 1e6,
        poll_cpu * 1e6,
        poll_cpu / ping_cpu,
        ping_wall * 1000.0,
        poll_wall * 1000.0,
        poll_cpu * 100.0 * 100.0
    );

    // 100 feeds, each on its own connection, counting the events they receive.
    let events = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let feeds: Vec<_> = (0..FEEDS)
        .map(|_| {
            let (client, url) = (client.clone(), format!("{}/display/1/events", server.url));
            let (events, stop) = (Arc::clone(&events), Arc::clone(&stop));
            std::thread::spawn(move || {
                let response = client.get(url).send().expect("feed");
                assert_eq!(response.status(), 200);
                let mut lines = BufReader::new(response);
                let mut line = String::new();
                while !stop.load(Ordering::Relaxed) {
                    line.clear();
                    if lines.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    if line.starts_with("event: now") {
                        events.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    // Every feed has its first event (the code) before the clock starts.
    while events.load(Ordering::Relaxed) < FEEDS {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Marks by the teacher of the projected lesson, or of the room next door.
    let marker = |login: &str, student: &'static str, lesson: i64| {
        let client = browser(&dir.path());
        kasip_tests::sign_in(&client, &server.url, login, PASSWORD);
        let csrf = kasip_tests::csrf_of(
            &client
                .get(format!("{}/teacher", server.url))
                .send()
                .and_then(|response| response.text())
                .expect("teacher page"),
        );
        (client, csrf, student, lesson)
    };
    let same_room = marker(TEACHER, "060315500016", 1);
    let next_door = marker(OTHER_TEACHER, "060315600012", 2);
    let mut fake_now = start;
    let mut window = |marks: Option<&(reqwest::blocking::Client, String, &str, i64)>| {
        let (cpu_before, events_before) = (cpu_seconds(pid), events.load(Ordering::Relaxed));
        let started = Instant::now();
        for second in 0..WINDOW_SECS {
            if second % 10 == 0 {
                fake_now += 10;
                std::fs::write(&clock, fake_now.to_string()).expect("clock");
            }
            if let Some((marker, csrf, student, lesson)) = marks {
                let response = marker
                    .post(format!("{}/teacher/lessons/{lesson}/marks", server.url))
                    .form(&[
                        ("csrf", csrf.as_str()),
                        ("student", student),
                        ("status", if second % 2 == 0 { "present" } else { "absent" }),
                        ("reason", "bench"),
                    ])
                    .send()
                    .expect("mark");
                assert!(response.status().is_redirection(), "{:?}", response.text());
            }
            let next = std::time::Duration::from_secs(second + 1);
            std::thread::sleep(next.saturating_sub(started.elapsed()));
        }
        let seconds = started.elapsed().as_secs_f64();
        (
            (cpu_seconds(pid) - cpu_before) / seconds * 100.0,
            events.load(Ordering::Relaxed) - events_before,
        )
    };
    let (quiet_share, quiet_events) = window(None);
    let (next_door_share, next_door_events) = window(Some(&next_door));
    let (same_room_share, same_room_events) = window(Some(&same_room));
    stop.store(true, Ordering::Relaxed);
    println!(
        "{FEEDS} projector feeds on one lesson over {WINDOW_SECS} s each, the code rotating every 10 s: {quiet_share:.2}% of a core ({quiet_events} events); a mark every second in the room next door: {next_door_share:.2}% ({next_door_events} events); a mark every second in the projected lesson itself, its count changing: {same_room_share:.2}% ({same_room_events} events); polling once a second instead: {:.1}%",
        poll_cpu * FEEDS as f64 * 100.0
    );
    drop(server);
    for feed in feeds {
        let _ = feed.join();
    }
}

const OTHER_TEACHER: &str = "791103300025";
const FEEDS: usize = 100;
const WINDOW_SECS: u64 = 20;
