//! Several `kasip-registry serve` processes on one PostgreSQL database, with no balancer
//! in front: agents (`kasip-registry simulate`, real keys, chains and heartbeats over
//! HTTP) send the same batch to two processes at once and its successor to a third, and
//! one process is killed mid-day. The database alone keeps them correct (advisory locks
//! per agent and for the cross-college rules: ARCHITECTURE.md).

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kasip_tests::{registry_query, run, text, Server, Store, TempDataDir};
use serde_json::Value;

const REGISTRY: &str = env!("CARGO_BIN_EXE_kasip-registry");

fn registry_on_postgres() -> TempDataDir {
    let dir = TempDataDir::for_registry(Store::Postgres);
    let output = run(REGISTRY, &dir.path(), &["init"]);
    assert!(output.status.success(), "{:?}", text(&output));
    dir
}

/// Every record once, every batch sequence contiguous from 1, every chain head the
/// hash of its agent's last record, nothing the registry would call a finding.
fn assert_every_record_once_and_every_chain_intact(dir: &TempDataDir, agents: usize, marks: usize) {
    assert_eq!(
        registry_query(dir, "SELECT COUNT(*) FROM records"),
        marks.to_string()
    );
    assert_eq!(
        registry_query(
            dir,
            "SELECT COUNT(*) FROM (SELECT bin, kind, record_id FROM records
             GROUP BY bin, kind, record_id HAVING COUNT(*) > 1) AS twice"
        ),
        "0",
        "a record stored twice"
    );
    assert_eq!(
        registry_query(dir, "SELECT COUNT(*) FROM batches"),
        (agents * 4).to_string()
    );
    assert_eq!(
        registry_query(
            dir,
            "SELECT COUNT(*) FROM (SELECT agent FROM batches GROUP BY agent
             HAVING MIN(seq) = 1 AND MAX(seq) = COUNT(*)) AS contiguous"
        ),
        agents.to_string(),
        "each agent's batches are 1..n without a gap"
    );
    assert_eq!(registry_query(dir, "SELECT COUNT(*) FROM quarantine"), "0");
    // The overview's counts, kept per batch, agree with the records.
    assert_eq!(
        registry_query(dir, "SELECT SUM(records) FROM record_counts"),
        marks.to_string()
    );
    let findings = registry_query(dir, "SELECT kind, detail FROM findings");
    assert!(findings.is_empty(), "findings: {findings}");
    // The registry's re-walked head of each agent is its last record's own hash.
    let last_hash: HashMap<String, (i64, String)> = registry_query(
        dir,
        "SELECT a.kid, r.record_id, r.body FROM records r JOIN agents a ON a.bin = r.bin
         WHERE r.record_id = (SELECT MAX(record_id) FROM records WHERE bin = r.bin)",
    )
    .lines()
    .map(|line| {
        let mut fields = line.splitn(3, '|');
        let agent = fields.next().unwrap_or_default().to_owned();
        let id = fields.next().unwrap_or_default().parse().expect("id");
        let body: Value = serde_json::from_str(fields.next().unwrap_or_default()).expect("json");
        (
            agent,
            (
                id,
                body["chain_hash"].as_str().unwrap_or_default().to_owned(),
            ),
        )
    })
    .collect();
    let heads = registry_query(dir, "SELECT agent, event, hash FROM chain_heads");
    assert_eq!(heads.lines().count(), agents);
    for line in heads.lines() {
        let fields: Vec<&str> = line.split('|').collect();
        let (last_id, hash) = &last_hash[fields[0]];
        assert_eq!(fields[1], last_id.to_string(), "{line}");
        assert_eq!(fields[2], hash, "{line}");
    }
}

fn simulate(registries: &[&Server], extra: &[&str]) -> Command {
    let mut command = Command::new(REGISTRY);
    command.arg("simulate");
    for server in registries {
        command.args(["--registry", &server.url]);
    }
    command.args(extra);
    command
}

#[test]
fn two_processes_racing_on_every_batch_store_each_once_with_one_receipt() {
    let dir = registry_on_postgres();
    let first = Server::start(REGISTRY, &dir.path(), &["--database-connections", "3"]);
    let second = Server::start(REGISTRY, &dir.path(), &["--database-connections", "3"]);
    let (agents, marks) = (16, 6_400);
    let output = simulate(
        &[&first, &second],
        &[
            "--agents",
            &agents.to_string(),
            "--marks",
            &marks.to_string(),
            "--race",
            "--in-flight",
            "16",
        ],
    )
    .arg("--data-dir")
    .arg(dir.path())
    .output()
    .expect("simulate");
    assert!(output.status.success(), "{:?}", text(&output));
    let report: Value = serde_json::from_slice(&output.stdout).expect("report");
    // Each batch was sent twice, to both processes at once, its successor racing it.
    let batches = agents as u64 * 4;
    assert_eq!(report["batches"], batches);
    assert_eq!(report["stored"], batches, "one 201 per batch: {report}");
    assert_eq!(
        report["already_stored"], batches,
        "the other copy: 200, {report}"
    );
    assert_eq!(report["receipts_differing"], 0, "{report}");
    assert_eq!(report["failures"], 0, "{report}");
    assert!(
        report["waited_for_previous"].as_u64().unwrap_or(0) > 0,
        "a successor arrived before its predecessor at least once: {report}"
    );
    assert_every_record_once_and_every_chain_intact(&dir, agents, marks);
}

#[test]
fn a_process_killed_mid_day_loses_nothing_and_stores_nothing_twice() {
    let dir = registry_on_postgres();
    let mut doomed = Server::start(REGISTRY, &dir.path(), &["--database-connections", "3"]);
    let survivor = Server::start(REGISTRY, &dir.path(), &["--database-connections", "3"]);
    let (agents, marks) = (24, 24_000);
    let day = simulate(
        &[&doomed, &survivor],
        &[
            "--agents",
            &agents.to_string(),
            "--marks",
            &marks.to_string(),
            "--in-flight",
            "8",
        ],
    )
    .arg("--data-dir")
    .arg(dir.path())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("simulate");
    // Killed once the day is under way: some batches stored, most not.
    let started = Instant::now();
    loop {
        let stored: u64 = registry_query(&dir, "SELECT COUNT(*) FROM batches")
            .parse()
            .unwrap_or(0);
        if stored >= 6 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no batch stored in 2 minutes"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    doomed.kill();
    let stored_at_kill: u64 = registry_query(&dir, "SELECT COUNT(*) FROM batches")
        .parse()
        .unwrap_or(0);
    assert!(
        stored_at_kill < agents as u64 * 4,
        "the day was over before the kill ({stored_at_kill} batches)"
    );
    let output = day.wait_with_output().expect("simulate");
    assert!(output.status.success(), "{:?}", text(&output));
    let report: Value = serde_json::from_slice(&output.stdout).expect("report");
    assert_eq!(report["failures"], 0, "{report}");
    assert!(
        report["retried_elsewhere"].as_u64().unwrap_or(0) > 0,
        "the killed process's agents went to the survivor: {report}"
    );
    // The survivor still answers, and holds the whole day once.
    let health = kasip_tests::http_client()
        .get(format!("{}/healthz", survivor.url))
        .send()
        .and_then(|response| response.text())
        .expect("healthz");
    assert_eq!(health, "ok\ndatabase: postgresql\n");
    assert_every_record_once_and_every_chain_intact(&dir, agents, marks);
}

/// PostgreSQL restarted under a serving registry (a failover looks the same): the
/// requests on the lost connection are refused with 503, never answered wrongly, and the
/// registry opens a new connection by itself.
#[test]
fn a_restarted_database_is_reconnected_without_restarting_the_registry() {
    let dir = registry_on_postgres();
    let server = Server::start(REGISTRY, &dir.path(), &["--database-connections", "1"]);
    let client = kasip_tests::http_client();
    let health = || {
        let response = client
            .get(format!("{}/healthz", server.url))
            .send()
            .expect("healthz");
        (
            response.status().as_u16(),
            response.text().unwrap_or_default(),
        )
    };
    assert_eq!(health(), (200, "ok\ndatabase: postgresql\n".to_owned()));
    dir.postgres().expect("postgres").restart();
    let mut answers = Vec::new();
    for _ in 0..5 {
        let answer = health();
        answers.push(answer.0);
        if answer.0 == 200 {
            break;
        }
        assert_eq!(answer.0, 503, "{answer:?}");
    }
    assert_eq!(answers.last(), Some(&200), "{answers:?}");
    assert!(answers.len() <= 2, "one refusal at most: {answers:?}");
}
