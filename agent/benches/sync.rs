//! Draining a month of a 5,000-student college (≈ 630,000 marks) to the reference
//! registry on loopback: sealing (build, canonicalise, sign, store) in-process, then
//! `kasip-agent sync now` uploading every batch to a real `kasip-registry`, which
//! verifies, checks every record and stores it. Baseline: one plain scan of the same
//! marks in the same run. Also the uploading agent's peak RSS.
//!
//! `cargo bench -p kasip-agent --bench sync` (needs `cargo build --release -p kasip-sync`
//! first, for the registry binary).

use std::time::{Duration, Instant};

use kasip_agent::outbox::{SealLimits, Sealer};
use kasip_agent::store::Store;
use kasip_certs::DeviceKey;
use kasip_core::{Bin, Month};
use kasip_tests::{run, text, workspace_binary, Server, TempDataDir};

#[path = "month_of_marks.rs"]
mod month_of_marks;

const AGENT: &str = env!("CARGO_BIN_EXE_kasip-agent");
const BIN: &str = "090640001233";

/// Peak resident set (VmHWM) of a running process, in MiB.
fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn main() {
    let dir = TempDataDir::new();
    let agent = |args: &[&str]| {
        let output = run(AGENT, &dir.path(), args);
        assert!(output.status.success(), "{args:?}: {:?}", text(&output));
    };
    agent(&["init"]);
    for name in ["agent.db", "agent.db-wal", "agent.db-shm"] {
        let _ = std::fs::remove_file(dir.path().join(name));
    }
    let mut store = Store::create(&dir.path().join("agent.db")).expect("store");
    month_of_marks::seed(&mut store, Month::parse("2026-11").expect("month"));
    let marks: i64 = store
        .connection()
        .query_row("SELECT COUNT(*) FROM attendance_events", [], |row| {
            row.get(0)
        })
        .expect("count");

    let baseline_started = Instant::now();
    let scanned: i64 = store
        .connection()
        .query_row(
            "SELECT COUNT(*) FROM attendance_events e JOIN lessons l ON l.id = e.lesson_id
             WHERE e.status = 'present'",
            [],
            |row| row.get(0),
        )
        .expect("scan");
    let baseline = baseline_started.elapsed();
    assert_eq!(scanned, marks);

    // Sealing alone, on a copy: every mark into 5,000-record batches, signed, stored.
    store.close().expect("close");
    let copy = dir.file("sealing-copy.db");
    std::fs::copy(dir.path().join("agent.db"), &copy).expect("copy");
    let mut store = Store::open(&copy).expect("copy store");
    let key = DeviceKey::load(&dir.path().join("agent-key.pem")).expect("key");
    let bin = Bin::parse(BIN).expect("bin");
    let agent_id = key.thumbprint();
    let sealer = Sealer {
        key: &key,
        agent_id: &agent_id,
        college_bin: &bin,
        data_dir: &dir.path(),
        limits: SealLimits {
            max_records: 5_000,
            max_age_secs: 60,
        },
    };
    let seal_started = Instant::now();
    // Sealing checks the whole chain and tally first, as the service does at start.
    let batches = sealer
        .seal_due(
            store.connection_mut(),
            &mut kasip_agent::outbox::ChainGuard::default(),
            1_795_000_000,
            true,
        )
        .expect("seal")
        .expect("the seeded chain verifies");
    let sealing = seal_started.elapsed();
    store.close().expect("close");

    // The drain: the real agent CLI seals and uploads (overlapped) to a real registry.
    let registry_dir = TempDataDir::new();
    let registry_binary = workspace_binary("kasip-registry");
    let registry = |args: &[&str]| {
        let output = run(&registry_binary, &registry_dir.path(), args);
        assert!(output.status.success(), "{args:?}: {:?}", text(&output));
        text(&output).0
    };
    registry(&["init"]);
    registry(&["add-college", "--bin", BIN, "--name", "Bench college"]);
    let code = registry(&["issue-enrolment-code", "--bin", BIN]);
    let server = Server::start(&registry_binary, &registry_dir.path(), &[]);
    agent(&["enroll", "--registry", &server.url, "--code", code.trim()]);
    let registry_cpu_before = kasip_tests::cpu_seconds(server.pid());
    let children_cpu_before = kasip_tests::stat_cpu_seconds("/proc/self/stat", true);
    let upload_started = Instant::now();
    let mut child = std::process::Command::new(AGENT)
        .arg("--data-dir")
        .arg(dir.path())
        .args(["sync", "now"])
        .env("KASIP_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sync now");
    let mut peak = 0.0f64;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if let Some(rss) = peak_rss_mib(child.id()) {
            peak = peak.max(rss);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let upload = upload_started.elapsed();
    assert!(status.success(), "sync now failed");
    let agent_cpu = kasip_tests::stat_cpu_seconds("/proc/self/stat", true) - children_cpu_before;
    let registry_cpu = kasip_tests::cpu_seconds(server.pid()) - registry_cpu_before;
    let stored: i64 = rusqlite::Connection::open(registry_dir.path().join("registry.db"))
        .and_then(|db| {
            db.query_row(
                "SELECT COUNT(*) FROM records WHERE kind = 'attendance'",
                [],
                |row| row.get(0),
            )
        })
        .expect("registry count");
    assert_eq!(stored, marks, "every mark stored once at the registry");
    drop(server);

    let rate = |elapsed: Duration| marks as f64 / elapsed.as_secs_f64();
    println!(
        "{} students, {marks} marks in {batches} batches of ≤ 5,000",
        month_of_marks::STUDENTS
    );
    println!(
        "baseline: plain scan of the marks {:.3} s ({:.0} records/s)",
        baseline.as_secs_f64(),
        rate(baseline)
    );
    println!(
        "sealing (build, canonical JSON, Ed25519, store): {:.2} s, {:.0} records/s ({:.1}x the scan's time)",
        sealing.as_secs_f64(),
        rate(sealing),
        sealing.as_secs_f64() / baseline.as_secs_f64()
    );
    println!(
        "drain of the month by `sync now`, unsealed to acknowledged by the registry (which verifies, checks each record, stores, signs a receipt): {:.2} s, {:.0} records/s ({:.1}x the scan's time); the agent's peak RSS {peak:.1} MiB",
        upload.as_secs_f64(),
        rate(upload),
        upload.as_secs_f64() / baseline.as_secs_f64()
    );
    println!(
        "CPU during the drain: the agent {agent_cpu:.2} s ({:.1} µs/record), the registry {registry_cpu:.2} s ({:.1} µs/record); {:.2} of the two cores busy",
        agent_cpu * 1e6 / marks as f64,
        registry_cpu * 1e6 / marks as f64,
        (agent_cpu + registry_cpu) / upload.as_secs_f64() / 2.0
    );
}
