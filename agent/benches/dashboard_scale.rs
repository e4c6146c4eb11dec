//! The admin dashboard's month at 5,000, 20,000 and 50,000 students (one mark per
//! student per lesson, six lessons a working day): the red flags and the month's figures
//! as ratios to a plain scan of the same marks (a linear computation keeps its ratio as
//! the college grows), and the projector's poll (`/display/{id}/current`) p99 while
//! dashboards compute, as a ratio to its p99 when nothing else runs.
//!
//! `cargo bench -p kasip-agent --bench dashboard_scale` (sizes from
//! `KASIP_BENCH_STUDENTS`, default `5000,20000,50000`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kasip_agent::coverage::{month_figures, CoverageRules};
use kasip_agent::store::Store;
use kasip_core::{Date, Month, PerMille};
use kasip_tests::{browser, run_with, text, Server, TempDataDir};

const AGENT: &str = env!("CARGO_BIN_EXE_kasip-agent");
const PASSWORD: &str = "correct horse battery";

#[path = "month_of_marks.rs"]
mod month_of_marks;

fn main() {
    let sizes: Vec<usize> = std::env::var("KASIP_BENCH_STUDENTS")
        .unwrap_or_else(|_| "5000,20000,50000".into())
        .split(',')
        .filter_map(|size| size.trim().parse().ok())
        .collect();
    println!("| students | marks | plain scan | red flags | ratio | month figures | ratio | display p99 idle | p99 under dashboards | ratio |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for students in sizes {
        measure(students);
    }
}

fn measure(students: usize) {
    let dir = TempDataDir::new();
    let clock = dir.file("clock");
    // 2026-11-30 12:00 in Almaty: the whole month is in the past.
    let noon = Date::new(2026, 11, 30).expect("date").days_since_epoch() * 86_400 + 7 * 3600;
    std::fs::write(&clock, noon.to_string()).expect("clock");
    let clock_text = clock.display().to_string();
    let env = [("KASIP_UNSAFE_CLOCK_FILE", clock_text.as_str())];
    let agent = |args: &[&str], stdin: Option<&str>| {
        let output = run_with(AGENT, &dir.path(), args, &env, stdin);
        assert!(output.status.success(), "{args:?}: {:?}", text(&output));
    };
    agent(&["init"], None);
    for name in ["agent.db", "agent.db-wal", "agent.db-shm"] {
        let _ = std::fs::remove_file(dir.path().join(name));
    }
    let mut store = Store::create(&dir.path().join("agent.db")).expect("store");
    let month = Month::parse("2026-11").expect("month");
    month_of_marks::seed_groups(
        &mut store,
        month,
        students / month_of_marks::STUDENTS_PER_GROUP,
    );
    let marks: i64 = store
        .connection()
        .query_row("SELECT COUNT(*) FROM attendance_events", [], |row| {
            row.get(0)
        })
        .expect("count");

    let scan_started = Instant::now();
    let scanned: i64 = store
        .connection()
        .query_row(
            "SELECT COUNT(*) FROM attendance_events e JOIN lessons l ON l.id = e.lesson_id
             WHERE l.date BETWEEN '2026-11-01' AND '2026-11-30' AND e.status = 'present'",
            [],
            |row| row.get(0),
        )
        .expect("scan");
    let scan = scan_started.elapsed().as_secs_f64();
    assert!(scanned > 0);
    let settings = kasip_agent::config::Settings::parse(&kasip_agent::config::default_config_text(
        &kasip_agent::demo::demo_bin(),
        "Bench college",
        &kasip_core::CollegeTimezone::parse("Asia/Almaty").expect("zone"),
        &[],
    ))
    .expect("default config");
    let today = Date::new(2026, 11, 30).expect("date");
    let flags_started = Instant::now();
    kasip_agent::red_flags::red_flags_for_month(
        store.connection(),
        month,
        today,
        &settings.red_flag_settings(),
    )
    .expect("flags");
    let flags = flags_started.elapsed().as_secs_f64();
    let rules = CoverageRules {
        student_qr_share: PerMille::from_fraction(0.5).expect("share"),
        min_coverage: PerMille::from_fraction(0.5).expect("share"),
        typed_code_counts_as_qr: true,
    };
    let figures_started = Instant::now();
    month_figures(store.connection(), month, today, &rules).expect("figures");
    let figures = figures_started.elapsed().as_secs_f64();
    drop(store);

    agent(&["staff", "add", "--role", "admin", "admin"], None);
    agent(&["staff", "set-password", "admin"], Some(PASSWORD));
    let server = Server::start_with_env(AGENT, &dir.path(), &[], &env);
    let admin = signed_in(&server, &dir);
    let display = format!("{}/display/1/current", server.url);
    let idle = p99(&admin, &display, 200);

    // Dashboards computing the whole time (each `?fresh` view recomputes the red flags),
    // from a second admin browser, while the projector polls.
    let busy = Arc::new(AtomicBool::new(true));
    let dashboards = {
        let (busy, client, url) = (
            Arc::clone(&busy),
            signed_in(&server, &dir),
            format!("{}/admin/export/red-flags?month=2026-11", server.url),
        );
        std::thread::spawn(move || {
            let mut views = 0;
            while busy.load(Ordering::Relaxed) {
                let response = client.get(&url).send().expect("dashboard");
                assert_eq!(response.status(), 200);
                views += 1;
            }
            views
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    let loaded = p99(&admin, &display, 200);
    busy.store(false, Ordering::Relaxed);
    let views = dashboards.join().expect("dashboards");
    println!(
        "| {students} | {marks} | {scan:.3} s | {flags:.3} s | {:.1}× | {figures:.3} s | {:.2}× | {:.1} ms | {:.1} ms ({views} dashboards computed) | {:.2}× |",
        flags / scan,
        figures / scan,
        idle * 1000.0,
        loaded * 1000.0,
        loaded / idle
    );
}

fn signed_in(server: &Server, dir: &TempDataDir) -> kasip_tests::reqwest::blocking::Client {
    let client = browser(&dir.path());
    kasip_tests::sign_in(&client, &server.url, "admin", PASSWORD);
    client
}

/// The 99th percentile of `count` sequential GETs of `url`, in seconds.
fn p99(client: &kasip_tests::reqwest::blocking::Client, url: &str, count: usize) -> f64 {
    let mut timings: Vec<f64> = (0..count)
        .map(|_| {
            let started = Instant::now();
            let response = client.get(url).send().expect("poll");
            assert_eq!(response.status(), 200);
            let _ = response.bytes();
            started.elapsed().as_secs_f64()
        })
        .collect();
    timings.sort_by(f64::total_cmp);
    timings[count * 99 / 100 - 1]
}
