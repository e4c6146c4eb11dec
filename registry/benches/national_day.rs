//! A national day at the registry: `kasip-registry simulate` drives 772 agents (their own
//! keys, enrolment, signed v2 batches with real chains, heartbeats, over HTTP) sending
//! about 2 million marks, colleges of realistic sizes, the first lessons at once, to two
//! `serve` processes on one PostgreSQL, with the audit on (every batch's chain re-walk,
//! timeline and cross-college rules, passkey verdicts). Then the same day to one process
//! on SQLite. Figures are printed beside a plain `COPY` of the same records into
//! PostgreSQL, measured in the same run on the same server: the floor of any store.
//!
//! Then the Registrar's national overview over a month: the day's records plus 29 more
//! days generated in SQL (records and batches as the day's, with short bodies: about 60
//! million records, ~10 GB), timed again.
//!
//! `cargo bench -p kasip-registry --bench national_day`. Smaller days for a quick look:
//! `KASIP_DAY_AGENTS=100 KASIP_DAY_MARKS=200000`; `KASIP_DAY_PROCESSES` (2);
//! `KASIP_DAY_MONTH=0` skips the month.
//! PostgreSQL runs durable (fsync, synchronous commit, full pages), with the settings a
//! registry's server should have (BENCHMARKS.md, README).

use std::time::{Duration, Instant};

use kasip_tests::postgres::Postgres;
use kasip_tests::{memory_kib, registry_person, run, text, Server, TempDataDir};
use serde_json::Value;

const SETTINGS: &[&str] = &[
    "shared_buffers=1GB",
    "max_wal_size=8GB",
    "wal_compression=lz4",
    "checkpoint_timeout=15min",
];

fn number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

struct Day {
    report: Value,
    /// Each serving process's peak resident memory, KiB.
    peaks: Vec<u64>,
    /// The Registrar's national overview (`GET /v1/colleges`), best of three.
    overview: Duration,
    /// Signed in as a registrar at the first process, which still serves.
    registrar: kasip_tests::reqwest::blocking::Client,
    servers: Vec<Server>,
}

/// The national overview, best of three.
fn overview(
    registrar: &kasip_tests::reqwest::blocking::Client,
    url: &str,
    colleges: usize,
) -> Duration {
    (0..3)
        .map(|_| {
            let started = Instant::now();
            let response = registrar
                .get(format!("{url}/v1/colleges"))
                .send()
                .expect("overview");
            assert!(response.status().is_success());
            let answer: Value = response.json().expect("json");
            assert_eq!(answer["colleges"].as_array().map(Vec::len), Some(colleges));
            started.elapsed()
        })
        .min()
        .unwrap_or_default()
}

fn day(registry: &str, dir: &TempDataDir, processes: usize, agents: usize, marks: usize) -> Day {
    let output = run(registry, &dir.path(), &["init"]);
    assert!(output.status.success(), "{:?}", text(&output));
    let servers: Vec<Server> = (0..processes)
        .map(|_| Server::start(registry, &dir.path(), &["--database-connections", "6"]))
        .collect();
    let mut command = std::process::Command::new(registry);
    command.arg("--data-dir").arg(dir.path()).arg("simulate");
    for server in &servers {
        command.args(["--registry", &server.url]);
    }
    let output = command
        .args([
            "--agents",
            &agents.to_string(),
            "--marks",
            &marks.to_string(),
        ])
        .args(["--date", "2026-11-27", "--in-flight", "64"])
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("simulate");
    assert!(output.status.success(), "{:?}", text(&output));
    let report: Value = serde_json::from_slice(&output.stdout).expect("report");
    let peaks = servers
        .iter()
        .map(|server| memory_kib(server.pid(), "VmHWM"))
        .collect();
    let registrar = registry_person(
        registry,
        &dir.path(),
        &[],
        &servers[0].url,
        ("registrar", "registrar"),
        "a registrar's long password",
    );
    let overview = overview(&registrar, &servers[0].url, agents);
    Day {
        report,
        peaks,
        overview,
        registrar,
        servers,
    }
}

fn main() {
    let registry = env!("CARGO_BIN_EXE_kasip-registry");
    let agents = number("KASIP_DAY_AGENTS", 772);
    let marks = number("KASIP_DAY_MARKS", 2_000_000);
    let processes = number("KASIP_DAY_PROCESSES", 2);

    let server = Postgres::start_with(SETTINGS);
    let url = server.create_database("registry");
    let postgres_dir = TempDataDir::new();
    postgres_dir.use_database(&url);
    eprintln!("PostgreSQL, {processes} registry processes:");
    let mut on_postgres = day(registry, &postgres_dir, processes, agents, marks);
    eprintln!("PostgreSQL's day: {}", on_postgres.report);

    // The floor: the same records, copied into a table with the same key in one COPY.
    let file = server.folder().join("records.copy");
    server.psql(
        "registry",
        &format!(
            "COPY (SELECT bin, kind, record_id, agent, seq, body, month FROM records) TO '{}'",
            file.display()
        ),
    );
    server.psql(
        "registry",
        "CREATE TABLE copied (bin TEXT NOT NULL, kind TEXT NOT NULL, record_id BIGINT NOT NULL,
         agent TEXT NOT NULL, seq BIGINT NOT NULL, body TEXT NOT NULL, month TEXT NOT NULL,
         PRIMARY KEY (bin, kind, record_id, month))",
    );
    let started = Instant::now();
    server.psql(
        "registry",
        &format!("COPY copied FROM '{}'", file.display()),
    );
    let copy = started.elapsed();
    let copied: u64 = server
        .psql("registry", "SELECT COUNT(*) FROM copied")
        .parse()
        .expect("count");

    // A month: 29 more days like this one, made in SQL from the day's rows (short bodies),
    // with their batches and counts, then the overview again.
    let month = (number("KASIP_DAY_MONTH", 1) == 1).then(|| {
        eprintln!("generating 29 more days in SQL");
        let started = Instant::now();
        server.psql(
            "registry",
            "CREATE TABLE records_2026_10 PARTITION OF records FOR VALUES IN ('2026-10')",
        );
        server.psql(
            "registry",
            "INSERT INTO records (bin, kind, record_id, agent, seq, body, month)
             SELECT r.bin, r.kind, r.record_id + d.day::bigint * 100000000, r.agent, r.seq + d.day * 4,
                    '{\"generated\":true}', '2026-10'
             FROM records r CROSS JOIN generate_series(1, 29) AS d(day)
             WHERE r.month = '2026-11'",
        );
        server.psql(
            "registry",
            "INSERT INTO batches (agent, seq, kind, hash, jws, receipt, received_at)
             SELECT b.agent, b.seq + d.day * 4, b.kind, b.hash, 'generated', 'generated',
                    b.received_at - d.day * 86400
             FROM batches b CROSS JOIN generate_series(1, 29) AS d(day)",
        );
        server.psql("registry", "UPDATE record_counts SET records = records * 30");
        server.psql("registry", "VACUUM ANALYZE");
        let generated = started.elapsed();
        let held: u64 = server
            .psql("registry", "SELECT COUNT(*) FROM records")
            .parse()
            .expect("count");
        let size = server.psql(
            "registry",
            "SELECT pg_size_pretty(pg_database_size('registry'))",
        );
        let took = overview(&on_postgres.registrar, &on_postgres.servers[0].url, agents);
        (held, size, generated, took)
    });
    drop(on_postgres.servers.drain(..));

    eprintln!("SQLite, one registry process:");
    let sqlite_dir = TempDataDir::new();
    let on_sqlite = day(registry, &sqlite_dir, 1, agents, marks);

    let wall = |day: &Day| day.report["wall_secs"].as_f64().unwrap_or(0.0);
    let copy_secs = copy.as_secs_f64();
    println!("national day: {agents} agents, {copied} marks, audit on (durable PostgreSQL 15)");
    println!(
        "  COPY of the same records (baseline): {copy_secs:.1} s, {:.0} records/s",
        copied as f64 / copy_secs
    );
    for (name, day) in [
        (format!("PostgreSQL, {processes} processes"), &on_postgres),
        ("SQLite, 1 process".to_owned(), &on_sqlite),
    ] {
        println!(
            "  {name}: {:.1} s ({:.1}x the COPY), {:.0} records/s, ack p50 {:.0} ms p99 {:.0} ms, \
             peak memory {} MiB per process, overview of {agents} colleges {} ms, failures {}",
            wall(day),
            wall(day) / copy_secs,
            day.report["records_per_sec"].as_f64().unwrap_or(0.0),
            day.report["ack_p50_ms"].as_f64().unwrap_or(0.0),
            day.report["ack_p99_ms"].as_f64().unwrap_or(0.0),
            day.peaks.iter().max().copied().unwrap_or(0) / 1024,
            day.overview.as_millis(),
            day.report["failures"],
        );
    }
    if let Some((held, size, generated, took)) = month {
        println!(
            "  a month on PostgreSQL: {held} records ({size}, the other 29 days generated in \
             {:.0} s): the national overview of {agents} colleges in {} ms",
            generated.as_secs_f64(),
            took.as_millis()
        );
    }
}
