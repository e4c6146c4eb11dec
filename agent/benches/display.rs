//! The projector's poll: the agent's CPU per `GET /display/{id}/current` of an open
//! lesson (one poll in ten fetching the code, nine naming the step they show, as a
//! projector polling each second through a 10 s period does), against its CPU per
//! `GET /ping` on the same kept-alive connection in the same run, and what 100 projectors
//! polling once a second would cost of one core.
//!
//! `cargo bench -p kasip-agent --bench display`

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
                format!("iin;last_name;first_name\n{TEACHER};Жұмабаева;Әйгерім\n"),
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
                "iin;last_name;first_name;group;beneficiary\n060315500016;A;A;BENCH;да\n".into(),
            ),
        ],
        None,
    );
    agent(&["import", "timetable", &write("tt.csv", format!("date;start;end;group;discipline;teacher_iin;site;room;mode\n2026-11-23;09:00;10:30;BENCH;Математика;{TEACHER};Корпус;101;offline\n"))], None);
    agent(&["staff", "set-password", TEACHER], Some(PASSWORD));
    agent(&["lesson", "open", "1"], None);
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
}
