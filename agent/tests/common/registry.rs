//! The reference registry as a real process beside the agent, and the checks that tie
//! the two together: sync status, waiting for a drain, one registry record per agent
//! event.
#![allow(dead_code)] // each test file uses a different part

use std::time::{Duration, Instant};

use kasip_tests::{registry_query, run, text, workspace_binary, Server, Store, TempDataDir};
use serde_json::Value;

use super::{check_in, College, AGENT, TEACHER_A};

pub const DEMO_BIN: &str = "090640001233";

/// The reference registry in its own temporary data dir.
pub struct Registry {
    pub dir: TempDataDir,
    binary: String,
    pub server: Option<Server>,
    /// The port of the first start, reused by restarts so enrolled agents find it.
    pub address: String,
    /// `http` or `https`, as the first start printed.
    scheme: String,
    clock: String,
}

impl Registry {
    /// A registry on the college's test clock (agent and registry agree on the time).
    pub fn new(college: &College, extra_args: &[&str]) -> Registry {
        Self::on(Store::Sqlite, college, extra_args)
    }

    /// The same, keeping its tables on `store`.
    pub fn on(store: Store, college: &College, extra_args: &[&str]) -> Registry {
        Self::on_clock_in(store, &college.clock_file, extra_args)
    }

    /// A registry on the test clock in `clock_file`.
    pub fn on_clock(clock_file: &std::path::Path, extra_args: &[&str]) -> Registry {
        Self::on_clock_in(Store::Sqlite, clock_file, extra_args)
    }

    /// A registry on `store`, on the test clock in `clock_file`.
    pub fn on_clock_in(
        store: Store,
        clock_file: &std::path::Path,
        extra_args: &[&str],
    ) -> Registry {
        let dir = TempDataDir::for_registry(store);
        let binary = workspace_binary("kasip-registry");
        let registry = |args: &[&str]| {
            let output = run(&binary, &dir.path(), args);
            assert!(output.status.success(), "{args:?}: {:?}", text(&output));
        };
        registry(&["init"]);
        registry(&["add-college", "--bin", DEMO_BIN, "--name", "Демо колледж"]);
        let clock = clock_file.display().to_string();
        let server = Server::start_with_env(
            &binary,
            &dir.path(),
            extra_args,
            &[("KASIP_UNSAFE_CLOCK_FILE", &clock)],
        );
        let address = server.address();
        let scheme = server.url.split("://").next().unwrap_or("http").to_owned();
        Registry {
            dir,
            binary,
            server: Some(server),
            address,
            scheme,
            clock,
        }
    }

    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.address)
    }

    pub fn command(&self, args: &[&str]) -> String {
        let output = kasip_tests::run_with(
            &self.binary,
            &self.dir.path(),
            args,
            &[("KASIP_UNSAFE_CLOCK_FILE", &self.clock)],
            None,
        );
        assert!(output.status.success(), "{args:?}: {:?}", text(&output));
        text(&output).0
    }

    pub fn enrolment_code(&self) -> String {
        self.enrolment_code_for(DEMO_BIN)
    }

    pub fn enrolment_code_for(&self, bin: &str) -> String {
        self.command(&["issue-enrolment-code", "--bin", bin])
            .trim()
            .to_owned()
    }

    /// Makes `iins` the registry's list of the demo college's state-funded students.
    pub fn list_beneficiaries<'a>(&self, iins: impl IntoIterator<Item = &'a String>) {
        let list = self.dir.file("beneficiaries.csv");
        let mut csv = String::from("iin;beneficiary;voucher\n");
        for (index, iin) in iins.into_iter().enumerate() {
            csv.push_str(&format!("{iin};да;V-{index}\n"));
        }
        std::fs::write(&list, csv).expect("csv");
        self.command(&[
            "import-beneficiaries",
            "--bin",
            DEMO_BIN,
            list.to_str().expect("path"),
        ]);
    }

    /// The findings of one kind, as `findings --json` lists them.
    pub fn findings_of(&self, kind: &str) -> Vec<Value> {
        let all: Value =
            serde_json::from_str(&self.command(&["findings", "--json"])).expect("findings json");
        all.as_array()
            .expect("array")
            .iter()
            .filter(|finding| finding["kind"] == kind)
            .cloned()
            .collect()
    }

    pub fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            let (exit, log) = server.stop_with("TERM");
            assert!(exit.success(), "{log}");
        }
    }

    /// Kills it without warning, as a crash or a power cut would.
    pub fn kill(&mut self) {
        if let Some(server) = self.server.take() {
            let _ = server.stop_with("KILL");
        }
    }

    pub fn start(&mut self, extra_args: &[&str]) {
        let mut args = vec!["--listen", self.address.as_str()];
        args.extend_from_slice(extra_args);
        self.server = Some(Server::start_with_env(
            &self.binary,
            &self.dir.path(),
            &args,
            &[("KASIP_UNSAFE_CLOCK_FILE", &self.clock)],
        ));
    }

    /// A registrar's (or auditor's) browser: the account made with `add-user`, signed in
    /// through the login form, its session cookie kept.
    pub fn signed_in(&self, login: &str, role: &str) -> reqwest::blocking::Client {
        kasip_tests::registry_person(
            &self.binary,
            &self.dir.path(),
            &[("KASIP_UNSAFE_CLOCK_FILE", &self.clock)],
            &self.url(),
            (login, role),
            "registry-password-1",
        )
    }

    /// Every college's figures, as a registrar reads them (`GET /v1/colleges`).
    pub fn colleges(&self) -> Value {
        self.signed_in("registrar", "registrar")
            .get(format!("{}/v1/colleges", self.url()))
            .send()
            .and_then(|response| response.json())
            .expect("read API")
    }

    /// `sql`'s rows on the registry's database, whichever store: one per line, columns
    /// separated by `|` (`kasip_tests::registry_sql`).
    pub fn query(&self, sql: &str) -> String {
        registry_query(&self.dir, sql)
    }

    pub fn count(&self, sql: &str) -> i64 {
        let text = self.query(sql);
        text.parse()
            .unwrap_or_else(|_| panic!("{sql}: not a count: {text}"))
    }
}

/// The agent's CLI on the college's test clock.
pub fn agent_run(college: &College, args: &[&str]) -> std::process::Output {
    let clock = college.clock_file.display().to_string();
    kasip_tests::run_with(
        AGENT,
        &college.dir.path(),
        args,
        &[("KASIP_UNSAFE_CLOCK_FILE", &clock)],
        None,
    )
}

pub fn agent_json(college: &College, args: &[&str]) -> Value {
    let output = agent_run(college, args);
    assert!(output.status.success(), "{args:?}: {:?}", text(&output));
    serde_json::from_str(&text(&output).0).expect("json")
}

pub fn sync_status(college: &College) -> Value {
    agent_json(college, &["sync", "status", "--json"])
}

/// Waits until `done(status)` holds, or fails with the last status.
pub fn wait_for(
    college: &College,
    what: &str,
    timeout: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let status = sync_status(college);
        if done(&status) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; sync status: {status:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn drained(status: &Value) -> bool {
    status["queued_batches"] == 0 && status["unsealed_records"] == 0
}

/// A college whose batches seal at once and whose retries wait at most a second.
pub fn quick_college(group_size: usize) -> College {
    quick_college_batching(group_size, 5000)
}

/// Like `quick_college`, with at most `max_records` records per batch.
pub fn quick_college_batching(group_size: usize, max_records: usize) -> College {
    College::with_config(group_size, |config| {
        config
            .replace(
                "batch_max_records = 5000",
                &format!("batch_max_records = {max_records}"),
            )
            .replace("batch_max_age_secs = 60", "batch_max_age_secs = 0")
            .replace("backoff_cap_secs = 300", "backoff_cap_secs = 1")
    })
}

pub fn enrol(college: &College, registry: &Registry) {
    let code = registry.enrolment_code();
    let output = agent_run(
        college,
        &["enroll", "--registry", &registry.url(), "--code", &code],
    );
    assert!(output.status.success(), "{:?}", text(&output));
    assert!(text(&output).0.contains("enrolled with"));
}

/// Every agent event of every kind is one registry record with the same content.
pub fn assert_one_for_one(college: &College, registry: &Registry) {
    let agent = college.db();
    for (kind, table) in [
        ("attendance", "attendance_events"),
        ("contingent", "contingent_events"),
        ("grades", "grade_events"),
        ("overrides", "coverage_overrides"),
    ] {
        let ours: i64 = agent
            .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |row| {
                row.get(0)
            })
            .expect("count");
        let theirs = registry.count(&format!(
            "SELECT COUNT(*) FROM records WHERE kind = '{kind}'"
        ));
        assert_eq!(ours, theirs, "{kind}: agent {ours}, registry {theirs}");
    }
    // Content: each mark's chain hash, student, status and method arrived unchanged.
    let mut statement = agent
        .prepare("SELECT id, student_iin, status, method, lower(hex(row_hash)) FROM attendance_events ORDER BY id")
        .expect("prepare");
    let ours: Vec<(i64, String, String, String, String)> = statement
        .query_map([], |row| {
            Ok((
                row.get(0)?,
                row.get(1)?,
                row.get(2)?,
                row.get(3)?,
                row.get(4)?,
            ))
        })
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    // One read of all of them (a query per mark scans the table each time).
    let rows = registry.query("SELECT record_id, body FROM records WHERE kind = 'attendance'");
    let theirs: std::collections::HashMap<i64, &str> = rows
        .lines()
        .filter_map(|line| line.split_once('|'))
        .map(|(id, body)| (id.parse().expect("record id"), body))
        .collect();
    for (id, iin, status, method, hash) in ours {
        let body = theirs
            .get(&id)
            .unwrap_or_else(|| panic!("mark {id} missing at the registry"));
        let record: Value = serde_json::from_str(body).expect("record");
        assert_eq!(record["student_iin"], iin.as_str());
        assert_eq!(record["status"], status.as_str());
        assert_eq!(record["method"], method.as_str());
        assert_eq!(record["chain_hash"], hash.as_str(), "mark {id}");
    }
    assert_eq!(registry.count("SELECT COUNT(*) FROM quarantine"), 0);
    // The agent and the registry hold the same chain of batches.
    let ours: Vec<(i64, String)> = agent
        .prepare("SELECT seq, hash FROM outbox_batches ORDER BY seq")
        .and_then(|mut statement| {
            statement
                .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect()
        })
        .expect("batches");
    let theirs: Vec<(i64, String)> = registry
        .query("SELECT seq, hash FROM batches ORDER BY seq")
        .lines()
        .filter_map(|line| line.split_once('|'))
        .map(|(seq, hash)| (seq.parse().expect("seq"), hash.to_owned()))
        .collect();
    assert_eq!(ours, theirs);
    assert_eq!(
        ours.iter().map(|(seq, _)| *seq).collect::<Vec<_>>(),
        (1..=ours.len() as i64).collect::<Vec<_>>(),
        "seqs are contiguous from 1"
    );
}

/// Checks in `count` students of group A through the classroom code.
pub fn check_in_students(college: &College, count: usize) {
    let teacher = college.teacher(TEACHER_A);
    college.open_lesson(&teacher, college.lesson_a);
    let url = college.shown_url(&teacher, college.lesson_a);
    for iin in college.group_a.iter().take(count) {
        let phone = college.bound_phone(iin);
        let (status, body) = check_in(&phone, &url);
        assert_eq!(status, 200, "{body}");
    }
}
