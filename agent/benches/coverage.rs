//! Coverage of a month for a 5,000-student college (≈ 660,000 marks), against a plain
//! scan of the same marks in the same run.
//!
//! `cargo bench -p kasip-agent --bench coverage`

use std::time::Instant;

use kasip_agent::coverage::{coverage_for_month, month_figures, CoverageRules};
use kasip_agent::store::Store;
use kasip_core::{Date, Month, PerMille};
use kasip_tests::{browser, run_with, text, Server, TempDataDir};

const AGENT: &str = env!("CARGO_BIN_EXE_kasip-agent");

#[path = "month_of_marks.rs"]
mod month_of_marks;

fn main() {
    // A real data dir, so the dashboard can be served from the same database below.
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
    let started = Instant::now();
    month_of_marks::seed(&mut store, month);
    let marks: i64 = store
        .connection()
        .query_row("SELECT COUNT(*) FROM attendance_events", [], |row| {
            row.get(0)
        })
        .expect("count");
    println!(
        "seeded {} students, {marks} marks in {:.1} s",
        month_of_marks::STUDENTS,
        started.elapsed().as_secs_f64()
    );

    let rules = CoverageRules {
        student_qr_share: PerMille::from_fraction(0.5).expect("share"),
        min_coverage: PerMille::from_fraction(0.5).expect("share"),
        typed_code_counts_as_qr: true,
    };
    // Baseline: one pass over the month's marks with the same join, no per-lesson "latest".
    let baseline_started = Instant::now();
    let scanned: i64 = store
        .connection()
        .query_row(
            "SELECT COUNT(*) FROM attendance_events e JOIN lessons l ON l.id = e.lesson_id
             WHERE l.date BETWEEN '2026-11-01' AND '2026-11-30' AND e.status = 'present'",
            [],
            |row| row.get(0),
        )
        .expect("scan");
    let baseline = baseline_started.elapsed();
    let mut timings = Vec::new();
    let mut report = None;
    for _ in 0..3 {
        let run_started = Instant::now();
        report =
            Some(coverage_for_month(store.connection(), month, None, &rules).expect("coverage"));
        timings.push(run_started.elapsed());
    }
    timings.sort();
    let report = report.expect("report");
    println!(
        "baseline scan of {scanned} marks: {:.3} s",
        baseline.as_secs_f64()
    );
    // One group's month: what the manual-mark gate computes on the writer thread.
    let group_started = Instant::now();
    let _ = coverage_for_month(store.connection(), month, Some("G-000"), &rules).expect("group");
    let group = group_started.elapsed();
    println!(
        "one group's month (manual-mark gate): {:.4} s ({:.2}x the scan)",
        group.as_secs_f64(),
        group.as_secs_f64() / baseline.as_secs_f64()
    );
    // The dashboard's figures: the month's coverage and its weekly trend from one read
    // of the tallies. Red flags read every mark and are cached by the dashboard (timed
    // separately below; they need lesson openings to say much, so few fire here).
    let today = Date::new(2026, 11, 30).expect("date");
    let mut figure_timings = Vec::new();
    let mut weeks = 0;
    for _ in 0..5 {
        let started = Instant::now();
        let (_, trend) = month_figures(store.connection(), month, today, &rules).expect("figures");
        figure_timings.push(started.elapsed());
        weeks = trend.weeks.len();
    }
    figure_timings.sort();
    let dashboard = figure_timings[2];
    println!(
        "dashboard figures (coverage + {weeks}-week trend): median of 5 {:.4} s ({:.2}x the scan)",
        dashboard.as_secs_f64(),
        dashboard.as_secs_f64() / baseline.as_secs_f64()
    );
    let settings = kasip_agent::config::Settings::parse(&kasip_agent::config::default_config_text(
        &kasip_agent::demo::demo_bin(),
        "Bench college",
        &kasip_core::CollegeTimezone::parse("Asia/Almaty").expect("zone"),
        &[],
    ))
    .expect("default config");
    let flags_started = Instant::now();
    let flags = kasip_agent::red_flags::red_flags_for_month(
        store.connection(),
        month,
        today,
        &settings.red_flag_settings(),
    )
    .expect("flags");
    let flags_time = flags_started.elapsed();
    println!(
        "red flags ({} found; cached by the dashboard, recomputed in the background): {:.3} s ({:.1}x the scan)",
        flags.len(),
        flags_time.as_secs_f64(),
        flags_time.as_secs_f64() / baseline.as_secs_f64()
    );
    println!(
        "coverage of {month}: median of 3 runs {:.3} s ({:.1}x the scan); college {}/{} tracked",
        timings[1].as_secs_f64(),
        timings[1].as_secs_f64() / baseline.as_secs_f64(),
        report.college.qr_tracked,
        report.college.beneficiaries
    );

    // The dashboard page itself, over HTTPS from the real agent, signed in as an admin:
    // the first view computes the red flags, later views show them from the cache.
    drop(store);
    agent(&["staff", "add", "--role", "admin", "admin"], None);
    agent(
        &["staff", "set-password", "admin"],
        Some("correct horse battery\n"),
    );
    let server = Server::start_with_env(AGENT, &dir.path(), &[], &env);
    let client = browser(&dir.path());
    kasip_tests::sign_in(&client, &server.url, "admin", "correct horse battery");
    let mut page_timings = Vec::new();
    for _ in 0..11 {
        let started = Instant::now();
        let response = client
            .get(format!("{}/admin?month=2026-11", server.url))
            .send()
            .expect("dashboard");
        assert_eq!(response.status(), 200);
        let body = response.text().expect("body");
        assert!(body.contains("coverage-chart"));
        page_timings.push(started.elapsed());
    }
    let first_view = page_timings.remove(0);
    page_timings.sort();
    let ping_started = Instant::now();
    for _ in 0..10 {
        client
            .get(format!("{}/ping", server.url))
            .send()
            .expect("ping");
    }
    let ping = ping_started.elapsed() / 10;
    println!(
        "dashboard page over HTTPS: first view {:.3} s (computes red flags), then median of 10 {:.4} s ({:.0}x a trivial GET /ping of {:.4} s)",
        first_view.as_secs_f64(),
        page_timings[5].as_secs_f64(),
        page_timings[5].as_secs_f64() / ping.as_secs_f64(),
        ping.as_secs_f64()
    );
}
