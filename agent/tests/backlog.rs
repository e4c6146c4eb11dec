//! Registry faults over a long offline spell: the registry is away for 30 simulated
//! days (the clock is a file the test moves; nothing waits real days) while three
//! lessons a day are held and marked by phones; then it comes back failing 30% of uploads,
//! dropping 20% of answers after storing, answering after 2 s, and restarting twice
//! while the agent drains. Every record arrives exactly once, the chain verifies, and
//! the agent's memory stays bounded while it drains — sampled every 200 ms.
//!
//! `KASIP_BACKLOG_STUDENTS` sets the group's size (40 by default, as CI runs it; the long
//! run in TESTING.md has 400: 36,000 marks).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::registry::{
    agent_run, assert_one_for_one, drained, enrol, quick_college_batching, wait_for, Registry,
};
use common::{check_in, TEACHER_A};
use kasip_tests::{memory_kib, text};
use serde_json::Value;

const DAYS: usize = 30;
const FAULTS: [&str; 6] = [
    "--fail-rate",
    "0.3",
    "--drop-rate",
    "0.2",
    "--latency-ms",
    "2000",
];
/// What the agent may gain over its resident memory before the drain, while draining.
const DRAIN_GROWTH_BOUND_KIB: u64 = 16 * 1024;
/// What it may gain from the end of the first day to the end of the 30th: caches and
/// the sealing of the backlog; loose, but 90 sign-ins each keeping an argon2 block
/// (19 MiB, as they once did) or 1 KiB kept per check-in would break it.
const OFFLINE_GROWTH_BOUND_KIB: u64 = 32 * 1024;

#[test]
fn a_thirty_day_backlog_drains_exactly_once_through_faults_and_restarts_in_bounded_memory() {
    // The group's size: 40 in CI (3,600 marks); the long form raises it, so that the
    // backlog outweighs the memory bound many times over.
    let students = std::env::var("KASIP_BACKLOG_STUDENTS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(40);
    let college = quick_college_batching(students, 1000);
    let mut registry = Registry::new(&college, &[]);
    enrol(&college, &registry);
    registry.stop();
    // Three lessons a day for 30 days, each marked by the whole group.
    let lessons: Vec<(i64, i64)> = college
        .more_lessons(DAYS * 6)
        .into_iter()
        .step_by(2)
        .collect();
    let phones: Vec<_> = college
        .group_a
        .iter()
        .map(|iin| college.bound_phone(iin))
        .collect();
    let pid = college.server.pid();
    // Sampled after the first day's lessons: sign-in (one argon2 block), TLS, caches.
    let mut rss_first_day = None;
    for (lesson, at) in &lessons {
        college.set_clock(*at);
        let teacher = college.teacher(TEACHER_A);
        college.open_lesson(&teacher, *lesson);
        let url = college.shown_url(&teacher, *lesson);
        for phone in &phones {
            let (status, body) = check_in(phone, &url);
            assert_eq!(status, 200, "{body}");
        }
        if rss_first_day.is_none() && *at >= lessons[2].1 {
            rss_first_day = Some(memory_kib(pid, "VmRSS"));
        }
    }
    let waiting = wait_for(
        &college,
        "the backlog to be sealed",
        Duration::from_secs(60),
        |status| status["unsealed_records"] == 0 && status["last_error"].is_string(),
    );
    assert_eq!(waiting["acknowledged_batches"], 0);
    assert_eq!(waiting["alert"], Value::Null, "an outage is not an alert");
    let rss_first_day = rss_first_day.expect("sampled");
    let backlog_bytes: i64 = college.count("SELECT SUM(length(jws)) FROM outbox_batches");
    let rss_before_drain = memory_kib(pid, "VmRSS");

    // Back, with faults; the agent's memory sampled throughout the drain.
    registry.start(&FAULTS);
    let sampling = Arc::new(AtomicBool::new(true));
    let peak = Arc::new(Mutex::new(rss_before_drain));
    let sampler = {
        let (sampling, peak) = (Arc::clone(&sampling), Arc::clone(&peak));
        std::thread::spawn(move || {
            while sampling.load(Ordering::Relaxed) {
                let rss = memory_kib(pid, "VmRSS");
                let mut peak = peak.lock().expect("peak");
                *peak = (*peak).max(rss);
                drop(peak);
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    let queued = waiting["queued_batches"].as_u64().expect("queued");
    for restart in 1..=2 {
        wait_for(
            &college,
            "progress before a registry restart",
            Duration::from_secs(120),
            |status| status["acknowledged_batches"].as_u64() >= Some(restart * queued / 3),
        );
        registry.kill();
        std::thread::sleep(Duration::from_millis(500));
        registry.start(&FAULTS);
    }
    let drained_status = wait_for(
        &college,
        "the backlog to drain",
        Duration::from_secs(300),
        drained,
    );
    sampling.store(false, Ordering::Relaxed);
    sampler.join().expect("sampler");
    let peak = *peak.lock().expect("peak");

    assert_one_for_one(&college, &registry);
    let verify = agent_run(&college, &["verify"]);
    assert!(verify.status.success(), "{:?}", text(&verify));
    assert_eq!(drained_status["alert"], Value::Null);
    eprintln!(
        "backlog: {} marks in {queued} batches, {:.1} MiB of signed batches after {DAYS} \
         simulated days; agent RSS KiB: after the first day {rss_first_day}, before the drain \
         {rss_before_drain}, peak while draining {peak} (+{} KiB)",
        college.marks(),
        backlog_bytes as f64 / (1024.0 * 1024.0),
        peak.saturating_sub(rss_before_drain),
    );
    assert!(
        rss_before_drain <= rss_first_day + OFFLINE_GROWTH_BOUND_KIB,
        "30 offline days grew the agent from {rss_first_day} KiB to {rss_before_drain} KiB"
    );
    assert!(
        peak <= rss_before_drain + DRAIN_GROWTH_BOUND_KIB,
        "draining grew the agent from {rss_before_drain} KiB to {peak} KiB"
    );
}
