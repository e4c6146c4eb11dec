//! The agent and the reference registry as real processes on loopback: enrolment, batches
//! accepted one-for-one, outages, faults, a tampering proxy, an unknown agent, the
//! beneficiary pull, and an independent verifier over the registry's evidence.

mod common;

use std::fs;
use std::path::Path;
use std::time::Duration;

use common::registry::*;
use common::{check_in, College, AGENT, TEACHER_A};
use kasip_tests::{run, text, workspace_binary, Server, TempDataDir};
use serde_json::Value;

// An honest college, on both of the registry's stores (the fraud suite's baseline).
kasip_tests::on_both_stores!(
    enrolled_agent_delivers_every_record_once_and_an_independent_verifier_agrees
);

fn enrolled_agent_delivers_every_record_once_and_an_independent_verifier_agrees(
    store: kasip_tests::Store,
) {
    let college = quick_college(6);
    let registry = Registry::on(store, &college, &[]);
    enrol(&college, &registry);
    check_in_students(&college, 6);
    // A month close travels as a signed statement inside a month_close batch.
    let output = agent_run(
        &college,
        &[
            "month-close",
            "2026-11",
            "--force",
            "--reason",
            "pilot test",
        ],
    );
    assert!(output.status.success(), "{:?}", text(&output));
    let status = wait_for(
        &college,
        "the outbox to drain",
        Duration::from_secs(60),
        drained,
    );
    assert_eq!(
        registry.count("SELECT COUNT(*) FROM records WHERE kind = 'month_close'"),
        1
    );
    // The registry's read API is for registrars and auditors only...
    let anonymous = kasip_tests::http_client()
        .get(format!("{}/v1/colleges", registry.url()))
        .send()
        .expect("read API");
    assert_eq!(anonymous.status().as_u16(), 401);
    // ...and shows them the college, its records and the month's coverage, recomputed by
    // the registry from the records it holds.
    let registrar = registry.signed_in("registrar", "registrar");
    let overview: Value = registrar
        .get(format!("{}/v1/colleges", registry.url()))
        .send()
        .and_then(|response| response.json())
        .expect("read API");
    let college_view = &overview["colleges"][0];
    assert_eq!(college_view["bin"], DEMO_BIN);
    assert_eq!(college_view["records"]["attendance"], 6);
    assert_eq!(college_view["months"][0]["month"], "2026-11");
    // By hand: group A's 6 students checked in by QR, group B's 3 have no marks: 6 of 9.
    assert_eq!(
        college_view["months"][0]["coverage_per_mille"], 666,
        "{overview:#}"
    );
    assert_eq!(
        college_view["months"][0]["stated_coverage_per_mille"], 666,
        "{overview:#}"
    );
    let page = registrar
        .get(format!("{}/?lang=en", registry.url()))
        .send()
        .and_then(|response| response.text())
        .expect("page");
    assert!(
        page.contains("2026-11: 66.6% (<span class=\"ok\">compliant</span>)"),
        "{page}"
    );
    assert!(
        status["acknowledged_batches"].as_u64() >= Some(2),
        "{status:#}"
    );
    assert_eq!(status["alert"], Value::Null);
    assert_one_for_one(&college, &registry);
    // An honest college's evidence raises nothing: no tamper alarm, no timeline finding.
    assert_eq!(registry.count("SELECT COUNT(*) FROM findings"), 0);
    // Every receipt the agent stored is signed by the registry and lists its records.
    let receipts: i64 = college.count(
        "SELECT COUNT(*) FROM outbox_batches WHERE receipt IS NOT NULL AND accepted = records",
    );
    assert_eq!(
        receipts,
        status["acknowledged_batches"].as_i64().expect("n")
    );

    // An auditor's check with code we did not write: Python's `cryptography` verifies
    // each exported batch under the exported key and walks the chain.
    let export = registry.dir.file("export");
    registry.command(&[
        "export-batches",
        "--bin",
        DEMO_BIN,
        export.to_str().expect("path"),
    ]);
    let verifier = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/verify_batches.py");
    let output = std::process::Command::new("python3")
        .arg(&verifier)
        .arg(&export)
        .output()
        .expect("python3");
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}{stderr}");
    let batches = status["acknowledged_batches"].as_u64().expect("n");
    assert!(
        stdout.contains(&format!("{batches} batches verified")),
        "{stdout}"
    );
    // ...and re-walks the attendance chain from the records alone.
    assert!(stdout.contains("6 attendance events re-walked"), "{stdout}");
    // ...and applies the registry's timeline rules to them: an honest month has none.
    assert!(stdout.contains("0 timeline finding(s)"), "{stdout}");
    // The verifier is not a rubber stamp: one altered byte fails it.
    let first = export.join("1.jws");
    let jws = fs::read_to_string(&first).expect("jws");
    let mut parts: Vec<String> = jws.split('.').map(str::to_owned).collect();
    let flipped = if parts[1].ends_with('A') { 'B' } else { 'A' };
    parts[1].pop();
    parts[1].push(flipped);
    fs::write(&first, parts.join(".")).expect("write");
    let output = std::process::Command::new("python3")
        .arg(&verifier)
        .arg(&export)
        .output()
        .expect("python3");
    assert!(!output.status.success(), "{:?}", text(&output));
}

#[test]
fn a_backlog_made_while_the_registry_is_down_drains_in_order() {
    let college = quick_college_batching(3, 500);
    let mut registry = Registry::new(&college, &[]);
    enrol(&college, &registry);
    registry.stop();
    // The demo college's month of marks lands while the registry is away (thousands of
    // marks through the hash chain, plus contingent events).
    let output = agent_run(&college, &["demo"]);
    assert!(output.status.success(), "{:?}", text(&output));
    let marks = college.marks();
    assert!(marks >= 2_000, "the demo made {marks} marks");
    let waiting = wait_for(
        &college,
        "failed attempts",
        Duration::from_secs(60),
        |status| status["queued_batches"].as_u64() > Some(4) && status["last_error"].is_string(),
    );
    assert_eq!(waiting["acknowledged_batches"], 0);
    assert_eq!(waiting["alert"], Value::Null, "an outage is not an alert");
    registry.start(&[]);
    wait_for(
        &college,
        "the backlog to drain",
        Duration::from_secs(120),
        drained,
    );
    assert_one_for_one(&college, &registry);
    // In order: the registry stored batch n before batch n + 1.
    let out_of_order = registry.count(
        "SELECT COUNT(*) FROM batches a JOIN batches b ON b.seq = a.seq + 1 WHERE b.rowid < a.rowid",
    );
    assert_eq!(out_of_order, 0);
}

#[test]
fn faults_drops_and_restarts_deliver_every_record_exactly_once() {
    let college = quick_college_batching(3, 300);
    let mut registry = Registry::new(&college, &["--fail-rate", "0.3", "--drop-rate", "0.2"]);
    // Enrolment itself may meet a dropped connection; the operator simply retries.
    let mut enrolled = false;
    for _ in 0..10 {
        let code = registry.enrolment_code();
        let output = run(
            AGENT,
            &college.dir.path(),
            &["enroll", "--registry", &registry.url(), "--code", &code],
        );
        if output.status.success() {
            enrolled = true;
            break;
        }
    }
    assert!(enrolled, "enrolment never got through the injected drops");
    let output = agent_run(&college, &["demo"]);
    assert!(output.status.success(), "{:?}", text(&output));
    for _ in 0..2 {
        wait_for(
            &college,
            "some progress",
            Duration::from_secs(60),
            |status| status["acknowledged_batches"].as_u64() > Some(2),
        );
        registry.kill();
        std::thread::sleep(Duration::from_millis(500));
        registry.start(&["--fail-rate", "0.3", "--drop-rate", "0.2"]);
    }
    wait_for(
        &college,
        "the backlog to drain",
        Duration::from_secs(180),
        drained,
    );
    assert_one_for_one(&college, &registry);
}

#[test]
fn an_agent_killed_mid_upload_loses_nothing_and_reuses_no_seq() {
    let mut college = quick_college_batching(3, 200);
    let registry = Registry::new(&college, &["--latency-ms", "50"]);
    enrol(&college, &registry);
    let output = agent_run(&college, &["demo"]);
    assert!(output.status.success(), "{:?}", text(&output));
    for round in 0..3 {
        wait_for(
            &college,
            "uploads under way",
            Duration::from_secs(60),
            |status| status["acknowledged_batches"].as_u64() > Some(2 + 3 * round),
        );
        college.kill_and_restart();
    }
    wait_for(
        &college,
        "the backlog to drain",
        Duration::from_secs(120),
        drained,
    );
    assert_one_for_one(&college, &registry);
    let verify = agent_run(&college, &["verify"]);
    assert!(verify.status.success(), "{:?}", text(&verify));
}

/// A proxy between agent and registry that flips one character of every batch's
/// signature: the registry refuses it (400), the agent stops its queue and says why.
#[test]
fn a_batch_altered_in_transit_is_refused_and_stops_the_queue_with_an_alert() {
    let college = quick_college(3);
    let registry = Registry::new(&college, &[]);
    let proxy = TamperingProxy::start(&registry.address);
    let code = registry.enrolment_code();
    let output = agent_run(
        &college,
        &[
            "enroll",
            "--registry",
            &format!("http://{}", proxy.address),
            "--code",
            &code,
        ],
    );
    assert!(output.status.success(), "{:?}", text(&output));
    check_in_students(&college, 2);
    let status = wait_for(&college, "the alert", Duration::from_secs(60), |status| {
        status["alert"].is_string()
    });
    let alert = status["alert"].as_str().expect("alert");
    assert!(
        alert.contains("refused batch 1") && alert.contains("400"),
        "{alert}"
    );
    assert_eq!(registry.count("SELECT COUNT(*) FROM batches"), 0);
    // Stopped means stopped: nothing more is attempted while the alert stands.
    let attempts = proxy.uploads();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(proxy.uploads(), attempts, "the queue must not retry a 400");
    let human = agent_run(&college, &["sync", "status"]);
    assert!(
        text(&human).0.contains("ALERT (queue stopped)"),
        "{:?}",
        text(&human)
    );
    // The admin's dashboard shows it too.
    let admin = college.teacher("admin");
    let page = admin
        .get(college.url("/admin"))
        .send()
        .expect("dashboard")
        .text()
        .expect("body");
    assert!(page.contains("id=sync-alert"), "{page}");
    // After the cause is fixed (here: talking to the registry directly), resume sends
    // the same batch, and everything arrives.
    college
        .db()
        .execute(
            "UPDATE sync_enrolment SET registry_url = ?1",
            [registry.url()],
        )
        .expect("repoint");
    let output = agent_run(&college, &["sync", "resume"]);
    assert!(
        text(&output).0.contains("alert cleared"),
        "{:?}",
        text(&output)
    );
    wait_for(
        &college,
        "the queue to drain",
        Duration::from_secs(60),
        drained,
    );
    assert_one_for_one(&college, &registry);
}

#[test]
fn an_agent_the_registry_does_not_know_gets_401_and_an_alert() {
    let college = quick_college(2);
    let mut registry = Registry::new(&college, &[]);
    enrol(&college, &registry);
    // The registry loses its enrolments (a fresh registry on the same address).
    registry.stop();
    for name in ["registry.db", "registry.db-wal", "registry.db-shm"] {
        let _ = fs::remove_file(registry.dir.path().join(name));
    }
    registry.command(&["add-college", "--bin", DEMO_BIN, "--name", "Демо колледж"]);
    registry.start(&[]);
    check_in_students(&college, 1);
    let status = wait_for(&college, "the alert", Duration::from_secs(60), |status| {
        status["alert"].is_string()
    });
    assert!(
        status["alert"].as_str().expect("alert").contains("401"),
        "{status:#}"
    );
    // The registry itself answers 401 to a well-formed batch from a key it never enrolled.
    let stranger = College::new(1);
    let output = agent_run(&stranger, &["sync", "now"]);
    assert!(!output.status.success());
    assert!(
        text(&output).1.contains("not enrolled"),
        "{:?}",
        text(&output)
    );
}

#[test]
fn the_beneficiary_pull_changes_flags_and_logs_each_change() {
    let college = quick_college(3);
    let registry = Registry::new(&college, &[]);
    enrol(&college, &registry);
    let [first, second, third] = [
        &college.group_a[0],
        &college.group_a[1],
        &college.group_a[2],
    ];
    let stranger = "051203500038";
    let list = registry.dir.file("beneficiaries.csv");
    fs::write(
        &list,
        format!(
            "iin;beneficiary;voucher\n{first};да;active\n{second};нет;\n{stranger};да;active\n"
        ),
    )
    .expect("csv");
    registry.command(&[
        "import-beneficiaries",
        "--bin",
        DEMO_BIN,
        list.to_str().expect("path"),
    ]);
    let output = agent_run(&college, &["sync", "now"]);
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("1 unknown to the roster"), "{stdout}");
    let flag = |iin: &str| -> (bool, String) {
        college
            .db()
            .query_row(
                "SELECT beneficiary, voucher FROM students WHERE iin = ?1",
                [iin],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .expect("student")
    };
    assert_eq!(flag(first), (true, "active".to_owned()));
    assert_eq!(flag(second), (false, String::new()));
    // Listed by nobody: the registry does not count them as beneficiaries any more.
    assert_eq!(flag(third), (false, String::new()));
    // first, second, third and group B's three students, whom the list leaves out.
    assert_eq!(
        college.count("SELECT COUNT(*) FROM beneficiary_events WHERE source = 'registry'"),
        6
    );
    assert_eq!(
        college.count(&format!(
            "SELECT COUNT(*) FROM students WHERE iin = '{stranger}'"
        )),
        0,
        "reported, not invented"
    );
    let status = sync_status(&college);
    assert_eq!(status["beneficiary_pull"]["unknown_to_roster"][0], stranger);
    // Pulling the same list again changes nothing and logs nothing.
    let output = agent_run(&college, &["sync", "now"]);
    assert!(output.status.success(), "{:?}", text(&output));
    assert_eq!(college.count("SELECT COUNT(*) FROM beneficiary_events"), 6);
    // The admin sees the pull and the students the roster lacks.
    let page = college
        .teacher("admin")
        .get(college.url("/admin"))
        .send()
        .and_then(|response| response.text())
        .expect("dashboard");
    assert!(page.contains("id=beneficiary-pull"), "{page}");
    assert!(page.contains(stranger), "{page}");
}

/// Forwards HTTP/1.1 requests to `upstream`, flipping one character of the signature of
/// every batch upload.
struct TamperingProxy {
    address: String,
    uploads: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl TamperingProxy {
    fn start(upstream: &str) -> TamperingProxy {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        let uploads = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = uploads.clone();
        let upstream = upstream.to_owned();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(mut client) = client else { continue };
                let upstream = upstream.clone();
                let counter = counter.clone();
                std::thread::spawn(move || {
                    // One request: headers, then Content-Length bytes.
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        match client.read(&mut byte) {
                            Ok(1) => head.push(byte[0]),
                            _ => return,
                        }
                    }
                    let head_text = String::from_utf8_lossy(&head).to_string();
                    let length = head_text
                        .lines()
                        .find_map(|line| {
                            let (name, value) = line.split_once(':')?;
                            name.eq_ignore_ascii_case("content-length")
                                .then(|| value.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    let mut body = vec![0u8; length];
                    if client.read_exact(&mut body).is_err() {
                        return;
                    }
                    if head_text.starts_with("POST /v1/batches") {
                        counter.fetch_add(1, Ordering::SeqCst);
                        let last = body.len() - 1;
                        body[last] = if body[last] == b'A' { b'B' } else { b'A' };
                    }
                    let Ok(mut server) = std::net::TcpStream::connect(&upstream) else {
                        return;
                    };
                    let head_text =
                        head_text.replace("Connection: keep-alive", "Connection: close");
                    let head_text = if head_text.to_ascii_lowercase().contains("connection:") {
                        head_text
                    } else {
                        head_text.replacen("\r\n\r\n", "\r\nConnection: close\r\n\r\n", 1)
                    };
                    if server.write_all(head_text.as_bytes()).is_err()
                        || server.write_all(&body).is_err()
                    {
                        return;
                    }
                    let mut answer = Vec::new();
                    let _ = server.read_to_end(&mut answer);
                    let _ = client.write_all(&answer);
                });
            }
        });
        TamperingProxy { address, uploads }
    }

    fn uploads(&self) -> usize {
        self.uploads.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[test]
fn grades_from_the_teacher_page_and_the_lms_reach_the_registry_as_events() {
    let college = quick_college(3);
    let registry = Registry::new(&college, &[]);
    enrol(&college, &registry);
    let [first, second] = [&college.group_a[0], &college.group_a[1]];
    // The teacher grades a student from the open lesson's page.
    let teacher = college.teacher(TEACHER_A);
    college.open_lesson(&teacher, college.lesson_a);
    let csrf = college.csrf(&teacher);
    let post = |student: &str, score: &str| {
        teacher
            .post(college.url(&format!("/teacher/lessons/{}/grades", college.lesson_a)))
            .form(&[
                ("csrf", csrf.as_str()),
                ("student", student),
                ("assessment", "midterm"),
                ("score", score),
                ("credits", "3"),
            ])
            .send()
            .expect("grade")
            .status()
            .as_u16()
    };
    assert_eq!(post(first, "87"), 303);
    assert_eq!(post(first, "101"), 400, "a score above 100 is refused");
    assert_eq!(
        post(&college.group_b[0], "90"),
        400,
        "not a student of this lesson"
    );
    // The LMS export: hostile rows are named and nothing is imported ...
    let grades = college.dir.file("grades.csv");
    fs::write(
        &grades,
        format!(
            "iin;discipline;assessment;score;credits;date\n\
             {second};Физика;exam;101;3;2026-11-20\n\
             {second};Физика;vibes;90;3;2026-11-20\n\
             051203500038;Физика;exam;90;3;2026-11-20\n\
             {second};\"x'); DROP TABLE grade_events;--\";exam;90;3;2099-01-01\n"
        ),
    )
    .expect("csv");
    let output = agent_run(
        &college,
        &["import", "grades", grades.to_str().expect("path")],
    );
    let stderr = text(&output).1;
    assert!(!output.status.success());
    for expected in [
        "row 2, column score",
        "row 3, column assessment",
        "row 4, column iin",
        "row 5, column date",
    ] {
        assert!(stderr.contains(expected), "{expected}: {stderr}");
    }
    assert_eq!(college.count("SELECT COUNT(*) FROM grade_events"), 1);
    // ... a good file adds one grade, and a changed score is a correction, not an edit.
    fs::write(
        &grades,
        format!(
            "iin;discipline;assessment;score;credits;date\n{second};Физика;exam;75;4;2026-11-20\n"
        ),
    )
    .expect("csv");
    let output = agent_run(
        &college,
        &["import", "grades", grades.to_str().expect("path")],
    );
    assert!(text(&output).0.contains("1 added"), "{:?}", text(&output));
    let output = agent_run(
        &college,
        &["import", "grades", grades.to_str().expect("path")],
    );
    assert!(
        text(&output).0.contains("1 unchanged"),
        "{:?}",
        text(&output)
    );
    fs::write(
        &grades,
        format!(
            "iin;discipline;assessment;score;credits;date\n{second};Физика;exam;80;4;2026-11-20\n"
        ),
    )
    .expect("csv");
    let output = agent_run(
        &college,
        &["import", "grades", grades.to_str().expect("path")],
    );
    assert!(text(&output).0.contains("1 updated"), "{:?}", text(&output));
    assert_eq!(college.count("SELECT COUNT(*) FROM grade_events"), 3);
    wait_for(
        &college,
        "the outbox to drain",
        Duration::from_secs(60),
        drained,
    );
    assert_one_for_one(&college, &registry);
    let correction: Value = serde_json::from_str(
        &registry.query("SELECT body FROM records WHERE kind = 'grades' AND record_id = 3"),
    )
    .expect("json");
    assert_eq!(correction["score"], 80);
    assert_eq!(correction["corrects"], 2);
    assert_eq!(
        correction["recorded_by"]
            .as_str()
            .map(|by| by.starts_with("import:")),
        Some(true)
    );
}

/// Over HTTPS the agent trusts the registry only through the system's roots or the CA
/// file in `sync.registry_ca_file`; a plain-HTTP registry off this machine is refused.
#[test]
fn an_https_registry_is_trusted_only_through_the_configured_ca() {
    let college = quick_college(1);
    let registry_dir = TempDataDir::new();
    let binary = workspace_binary("kasip-registry");
    let cert = registry_dir.file("registry.crt");
    let key = registry_dir.file("registry.key");
    kasip_certs::write_self_signed(&["127.0.0.1".to_owned()], &cert, &key).expect("certificate");
    for args in [
        vec!["init"],
        vec!["add-college", "--bin", DEMO_BIN, "--name", "Демо колледж"],
    ] {
        assert!(run(&binary, &registry_dir.path(), &args).status.success());
    }
    let clock = college.clock_file.display().to_string();
    let server = Server::start_with_env(
        &binary,
        &registry_dir.path(),
        &[
            "--tls-cert",
            cert.to_str().expect("path"),
            "--tls-key",
            key.to_str().expect("path"),
        ],
        &[("KASIP_UNSAFE_CLOCK_FILE", &clock)],
    );
    assert!(server.url.starts_with("https://"), "{}", server.url);
    let code = || {
        let output = run(
            &binary,
            &registry_dir.path(),
            &["issue-enrolment-code", "--bin", DEMO_BIN],
        );
        text(&output).0.trim().to_owned()
    };
    // Unknown CA: refused, and the message says it is about the certificate.
    let output = agent_run(
        &college,
        &["enroll", "--registry", &server.url, "--code", &code()],
    );
    assert!(!output.status.success());
    assert!(
        text(&output).1.to_lowercase().contains("certificate"),
        "{:?}",
        text(&output)
    );
    let output = agent_run(
        &college,
        &["enroll", "--registry", "http://192.0.2.1:80", "--code", "X"],
    );
    assert!(
        text(&output).1.contains("must start with https://"),
        "{:?}",
        text(&output)
    );
    // With the pilot's CA in config: enrolled, and batches flow over HTTPS.
    let config_path = college.dir.path().join("config.toml");
    let config = fs::read_to_string(&config_path).expect("config").replace(
        "registry_ca_file = \"\"",
        &format!("registry_ca_file = \"{}\"", cert.display()),
    );
    fs::write(&config_path, config).expect("config");
    let output = agent_run(
        &college,
        &["enroll", "--registry", &server.url, "--code", &code()],
    );
    assert!(output.status.success(), "{:?}", text(&output));
    let output = agent_run(&college, &["sync", "now"]);
    assert!(output.status.success(), "{:?}", text(&output));
    let status = sync_status(&college);
    assert!(
        status["acknowledged_batches"].as_u64() >= Some(1),
        "{status:#}"
    );
}

/// A registry that trickles its answers is cut off by the whole-request timeout and the
/// same batch is retried; a trickle that fits the timeout still delivers.
#[test]
fn a_trickling_registry_hits_the_request_timeout_and_is_retried_not_alerted() {
    let college = College::with_config(2, |config| {
        config
            .replace("batch_max_age_secs = 60", "batch_max_age_secs = 0")
            .replace("backoff_cap_secs = 300", "backoff_cap_secs = 1")
            .replace("request_timeout_secs = 60", "request_timeout_secs = 1")
    });
    let mut registry = Registry::new(&college, &["--slow-body", "3000"]);
    // Enrolment's answer trickles too: enrol through a registry without the fault.
    registry.stop();
    registry.start(&[]);
    enrol(&college, &registry);
    registry.stop();
    registry.start(&["--slow-body", "3000"]);
    check_in_students(&college, 1);
    let status = wait_for(&college, "a timeout", Duration::from_secs(60), |status| {
        status["last_error"]
            .as_str()
            .is_some_and(|error| error.contains("timed out"))
    });
    assert_eq!(status["alert"], Value::Null, "{status:#}");
    assert_eq!(status["acknowledged_batches"], 0);
    registry.stop();
    registry.start(&["--slow-body", "300"]);
    wait_for(
        &college,
        "the queue to drain",
        Duration::from_secs(60),
        drained,
    );
    assert_one_for_one(&college, &registry);
}

#[test]
fn a_rotated_key_is_announced_under_the_old_one_and_the_registry_follows() {
    let mut college = quick_college(4);
    let registry = Registry::new(&college, &[]);
    enrol(&college, &registry);
    check_in_students(&college, 2);
    wait_for(
        &college,
        "the first marks to drain",
        Duration::from_secs(60),
        drained,
    );
    let show = |college: &College| {
        let output = agent_run(college, &["keys", "show"]);
        assert!(output.status.success(), "{:?}", text(&output));
        let stdout = text(&output).0;
        let field = |name: &str| {
            stdout
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .map(|value| value.trim().to_owned())
                .unwrap_or_else(|| panic!("no {name} in {stdout}"))
        };
        (field("thumbprint:"), field("agent id:"))
    };
    let (old_key, agent_id) = show(&college);
    assert_eq!(old_key, agent_id);

    // The running service signs with the key: rotation waits for it to stop.
    let output = agent_run(&college, &["keys", "rotate"]);
    assert!(!output.status.success());
    assert!(
        text(&output).1.contains("stop it first"),
        "{:?}",
        text(&output)
    );
    college.server.kill();
    let output = agent_run(&college, &["keys", "rotate"]);
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("acknowledged"), "{stdout}");
    let (new_key, same_agent) = show(&college);
    assert_ne!(new_key, old_key);
    assert_eq!(
        same_agent, agent_id,
        "the agent keeps its id at the registry"
    );
    let retired: Vec<_> = fs::read_dir(college.dir.path())
        .expect("data dir")
        .filter_map(|entry| entry.ok())
        .filter(|entry| {
            entry
                .file_name()
                .to_string_lossy()
                .starts_with("agent-key.retired-")
        })
        .collect();
    assert_eq!(retired.len(), 1, "the old key is kept, not deleted");
    assert_eq!(
        registry.count("SELECT COUNT(*) FROM agent_keys WHERE retired_at IS NOT NULL"),
        1
    );

    // Back in service with the new key: new marks are accepted, nothing alerts.
    college.kill_and_restart();
    let teacher = college.teacher(TEACHER_A);
    let url = college.shown_url(&teacher, college.lesson_a);
    for iin in &college.group_a[2..4] {
        let (status, body) = check_in(&college.bound_phone(iin), &url);
        assert_eq!(status, 200, "{body}");
    }
    let status = wait_for(
        &college,
        "the marks after the rotation to drain",
        Duration::from_secs(60),
        drained,
    );
    assert!(status["alert"].is_null(), "{status:#}");
    assert_eq!(
        registry.count("SELECT COUNT(*) FROM records WHERE kind = 'attendance'"),
        4
    );
    assert_eq!(
        registry.count("SELECT COUNT(*) FROM records WHERE kind = 'key_rotation'"),
        1
    );
    // An auditor follows the rotation: every batch verifies under the key of its time.
    let export = registry.dir.file("export");
    registry.command(&[
        "export-batches",
        "--bin",
        DEMO_BIN,
        export.to_str().expect("path"),
    ]);
    let output = std::process::Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/verify_batches.py"))
        .arg(&export)
        .output()
        .expect("python3");
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("1 key rotation(s)"), "{stdout}");
}
