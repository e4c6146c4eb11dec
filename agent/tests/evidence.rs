//! Evidence the registry can check, attacked as a dishonest admin with root would: a
//! copied phone cookie, a row slipped into the log, history rewritten (synced, or only
//! pinned by a heartbeat), marks for a closed month. Each runs the real agent and the
//! reference registry on loopback.

mod common;

use std::time::{Duration, Instant};

use common::registry::*;
use common::{check_in, check_in_unsigned, reason_of, College, TEACHER_A};
use kasip_core::chain::ChainRow;
use kasip_tests::Store;
use serde_json::Value;

// The fraud suite runs against both of the registry's stores.
kasip_tests::on_both_stores!(
    a_row_slipped_into_the_log_stops_sealing_raises_the_alert_and_reaches_the_registry,
    a_rewrite_of_synced_history_breaks_the_registry_s_re_walk,
    a_heartbeat_pins_history_that_was_never_sealed,
    marks_for_a_closed_month_are_adjustments_on_every_path,
    a_college_cannot_loosen_the_registry_s_policy_or_move_its_site_unseen,
    bindings_and_security_events_travel_to_the_registry,
    the_registry_s_timeline_sees_a_clock_set_back_and_a_backfilled_mark,
    advance_check_ins_and_marks_after_a_close_are_findings,
    a_script_binding_and_checking_in_a_dozen_phones_is_two_bursts,
    a_statement_leaving_out_beneficiaries_disagrees_with_the_registry,
    one_student_present_at_two_colleges_on_one_day_is_a_finding,
    a_month_of_the_demo_college_raises_only_its_planted_case,
);

/// The registry's findings of `kind`.
fn findings(registry: &Registry, kind: &str) -> i64 {
    registry.count(&format!(
        "SELECT COUNT(*) FROM findings WHERE kind = '{kind}'"
    ))
}

fn wait_until(what: &str, timeout: Duration, done: impl Fn() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// What root with a script does: moves event `event`'s time by a minute (the tally does
/// not change), then recomputes every later hash so the local chain verifies again.
fn rewrite_history(college: &College, event: i64) {
    let db = college.db();
    db.execute_batch("DROP TRIGGER attendance_events_no_update")
        .expect("drop trigger");
    db.execute(
        "UPDATE attendance_events SET recorded_at = recorded_at - 60 WHERE id = ?1",
        [event],
    )
    .expect("rewrite");
    let rows: Vec<RowFields> = db
        .prepare(
            "SELECT id, lesson_id, student_iin, status, method, recorded_at, device_id, token_step,
                    marked_by, reason, corrects, evidence, prev_hash
             FROM attendance_events WHERE id >= ?1 ORDER BY id",
        )
        .and_then(|mut statement| {
            statement
                .query_map([event], |row| {
                    Ok(RowFields {
                        id: row.get(0)?,
                        lesson_id: row.get(1)?,
                        student_iin: row.get(2)?,
                        status: row.get(3)?,
                        method: row.get(4)?,
                        recorded_at: row.get(5)?,
                        device_id: row.get(6)?,
                        token_step: row.get(7)?,
                        marked_by: row.get(8)?,
                        reason: row.get(9)?,
                        corrects: row.get(10)?,
                        evidence: row.get(11)?,
                        prev_hash: row.get(12)?,
                    })
                })?
                .collect()
        })
        .expect("rows");
    let mut prev = rows[0].prev_hash.clone();
    for row in rows {
        let hash = ChainRow {
            id: row.id,
            lesson_id: row.lesson_id,
            student_iin: &row.student_iin,
            status: &row.status,
            method: &row.method,
            recorded_at: row.recorded_at,
            device_id: row.device_id.as_deref(),
            token_step: row.token_step.map(|step| step as u64),
            marked_by: row.marked_by.as_deref(),
            reason: row.reason.as_deref(),
            corrects: row.corrects,
            evidence: row.evidence.as_deref(),
        }
        .hash(&prev);
        db.execute(
            "UPDATE attendance_events SET prev_hash = ?1, row_hash = ?2 WHERE id = ?3",
            rusqlite::params![prev, hash.to_vec(), row.id],
        )
        .expect("rehash");
        prev = hash.to_vec();
    }
    let verify = agent_run(college, &["verify"]);
    assert!(
        verify.status.success(),
        "the rewrite is invisible locally: {:?}",
        kasip_tests::text(&verify)
    );
}

struct RowFields {
    id: i64,
    lesson_id: i64,
    student_iin: String,
    status: String,
    method: String,
    recorded_at: i64,
    device_id: Option<String>,
    token_step: Option<i64>,
    marked_by: Option<String>,
    reason: Option<String>,
    corrects: Option<i64>,
    evidence: Option<String>,
    prev_hash: Vec<u8>,
}

/// A college that seals at once and pins its head every 5 s.
fn pinned_college(group_size: usize, seal_at_once: bool) -> College {
    College::with_config(group_size, |config| {
        let config = config
            .replace("heartbeat_secs = 60", "heartbeat_secs = 5")
            .replace("backoff_cap_secs = 300", "backoff_cap_secs = 1");
        if seal_at_once {
            config.replace("batch_max_age_secs = 60", "batch_max_age_secs = 0")
        } else {
            config.replace("batch_max_age_secs = 60", "batch_max_age_secs = 86400")
        }
    })
}

/// A pinned college enrolled with a fresh registry, with `checked_in` students of group
/// A checked in; when `drain`, their marks are at the registry.
fn enrolled_with_marks(
    store: Store,
    group_size: usize,
    seal_at_once: bool,
    checked_in: usize,
    drain: bool,
) -> (College, Registry) {
    let college = pinned_college(group_size, seal_at_once);
    let registry = Registry::on(store, &college, &[]);
    enrol(&college, &registry);
    check_in_students(&college, 0..checked_in);
    if drain {
        wait_for(
            &college,
            "the marks to drain",
            Duration::from_secs(60),
            drained,
        );
    }
    (college, registry)
}

fn check_in_students(college: &College, students: std::ops::Range<usize>) {
    let teacher = college.teacher(TEACHER_A);
    if college.count("SELECT COUNT(*) FROM lesson_openings") == 0 {
        college.open_lesson(&teacher, college.lesson_a);
    }
    let url = college.shown_url(&teacher, college.lesson_a);
    for iin in &college.group_a[students] {
        let (status, body) = check_in(&college.bound_phone(iin), &url);
        assert_eq!(status, 200, "{body}");
    }
}

#[test]
fn a_copied_cookie_without_the_device_key_checks_nobody_in() {
    let college = College::new(3);
    let teacher = college.teacher(TEACHER_A);
    college.open_lesson(&teacher, college.lesson_a);
    let url = college.shown_url(&teacher, college.lesson_a);
    // The phone binds; its credential cookie is copied out of the answer.
    let phone = college.phone();
    let code = college.issue_code(&college.group_a[0]);
    let bound = college.post_bind(&phone, &college.group_a[0], &code, None);
    assert_eq!(bound.status(), 200);
    let cookie = bound
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find(|value| value.contains("kasip_credential="))
        .and_then(|value| value.split(';').next())
        .expect("credential cookie")
        .to_owned();
    let before = college.recorded();
    // Another browser with the cookie: unsigned, then signed by a key of its own.
    let thief = kasip_tests::browser(&college.dir.path());
    let unsigned = thief
        .post(&url)
        .header("cookie", &cookie)
        .send()
        .expect("post");
    assert_eq!(unsigned.status(), 403);
    assert_eq!(
        reason_of(&unsigned.text().expect("body")),
        "device_unverified"
    );
    let token = url.rsplit('/').next().expect("token");
    let other_key = kasip_tests::PhoneKey::new();
    let signed_elsewhere = thief
        .post(&url)
        .header("cookie", &cookie)
        .form(&[("device_signature", other_key.sign(token))])
        .send()
        .expect("post");
    assert_eq!(signed_elsewhere.status(), 403);
    college.recorded().assert_unchanged_since(&before);
    assert_eq!(college.security_events("device_unverified"), 2);
    // The phone itself, signing with its key, checks in; its mark names the binding
    // and carries what it presented and its signature.
    let (status, body) = check_in(&phone, &url);
    assert_eq!(status, 200, "{body}");
    let evidence: String = college
        .db()
        .query_row("SELECT evidence FROM attendance_events", [], |row| {
            row.get(0)
        })
        .expect("evidence");
    let evidence: Value = serde_json::from_str(&evidence).expect("json");
    assert_eq!(evidence["entry"], "live");
    assert_eq!(evidence["binding"], 1);
    assert_eq!(evidence["presented"], token);
    assert!(evidence["device_signature"]
        .as_str()
        .is_some_and(|s| s.len() > 80));
    // A phone bound before device keys (no key on its binding) is told to bind again.
    let (status, _) = check_in_unsigned(&phone, &url);
    assert_eq!(status, 403);
}

fn a_row_slipped_into_the_log_stops_sealing_raises_the_alert_and_reaches_the_registry(
    store: Store,
) {
    let (college, registry) = enrolled_with_marks(store, 3, true, 1, true);
    // Root inserts a mark with a made-up hash behind the agent's back.
    college
        .db()
        .execute(
            "INSERT INTO attendance_events (id, lesson_id, student_iin, status, method, recorded_at,
                 device_id, prev_hash, row_hash)
             SELECT 2, lesson_id, ?1, 'present', 'qr_phone', recorded_at, 'ghost', row_hash,
                    zeroblob(32)
             FROM attendance_events WHERE id = 1",
            [&college.group_a[1]],
        )
        .expect("insert");
    check_in_students(&college, 2..3);
    let status = wait_for(&college, "the alert", Duration::from_secs(30), |status| {
        status["alert"]
            .as_str()
            .is_some_and(|alert| alert.contains("TAMPER ALARM") && alert.contains("event 2"))
    });
    assert!(status["unsealed_records"].as_u64() >= Some(2), "{status:#}");
    // Nothing after the break was sealed or sent; the agent told the registry itself.
    wait_until("the agent's report", Duration::from_secs(30), || {
        findings(&registry, "agent_reported_break") > 0
    });
    assert_eq!(
        registry.count("SELECT COUNT(*) FROM records WHERE kind = 'attendance'"),
        1
    );
    let doctor = agent_run(&college, &["verify"]);
    assert!(!doctor.status.success());
}

fn a_rewrite_of_synced_history_breaks_the_registry_s_re_walk(store: Store) {
    let (mut college, registry) = enrolled_with_marks(store, 4, true, 2, true);
    // The registry's copy re-walks from genesis: every field of the hash is in it.
    let records: Vec<kasip_core::batch::AttendanceRecord> = registry
        .query("SELECT body FROM records WHERE kind = 'attendance' ORDER BY record_id")
        .lines()
        .map(|body| serde_json::from_str(body).expect("record"))
        .collect();
    let head = kasip_core::chain::rewalk(&kasip_core::chain::ChainHead::genesis(), &records, 2)
        .expect("the registry's copy re-walks");
    assert_eq!(head.event, 2);

    college.server.kill();
    rewrite_history(&college, 1);
    college.kill_and_restart();
    check_in_students(&college, 2..3);
    wait_until("the tamper alarm", Duration::from_secs(60), || {
        findings(&registry, "chain_break") > 0
    });
    assert_eq!(
        registry.count("SELECT COUNT(*) FROM records WHERE kind = 'attendance'"),
        2,
        "the batch over rewritten history is refused"
    );
}

fn a_heartbeat_pins_history_that_was_never_sealed(store: Store) {
    let (mut college, registry) = enrolled_with_marks(store, 3, false, 2, false);
    wait_until(
        "a heartbeat pinning both marks",
        Duration::from_secs(30),
        || registry.count("SELECT COUNT(*) FROM heartbeats WHERE events = 2") > 0,
    );
    assert_eq!(
        registry.count("SELECT COUNT(*) FROM records WHERE kind = 'attendance'"),
        0,
        "nothing was sealed yet"
    );
    college.server.kill();
    rewrite_history(&college, 1);
    let output = agent_run(&college, &["sync", "now"]);
    let (stdout, stderr) = kasip_tests::text(&output);
    assert!(
        format!("{stdout}{stderr}").contains("TAMPER ALARM"),
        "{stdout}{stderr}"
    );
    assert_eq!(findings(&registry, "chain_break"), 1);
    assert_eq!(
        registry.count("SELECT COUNT(*) FROM records WHERE kind = 'attendance'"),
        0
    );
    college.kill_and_restart();
}

fn marks_for_a_closed_month_are_adjustments_on_every_path(store: Store) {
    let college = pinned_college(3, true);
    let registry = Registry::on(store, &college, &[]);
    enrol(&college, &registry);
    let teacher = college.with_one_check_in();
    let output = agent_run(
        &college,
        &["month-close", "2026-11", "--force", "--reason", "test"],
    );
    assert!(output.status.success(), "{:?}", kasip_tests::text(&output));
    // A phone check-in and a teacher's hand mark for the closed month's open lesson.
    let url = college.shown_url(&teacher, college.lesson_a);
    let (status, body) = check_in(&college.bound_phone(&college.group_a[1]), &url);
    assert_eq!(status, 200, "{body}");
    let csrf = college.csrf(&teacher);
    let response = teacher
        .post(college.url(&format!("/teacher/lessons/{}/marks", college.lesson_a)))
        .form(&[
            ("csrf", csrf.as_str()),
            ("student", college.group_a[2].as_str()),
            ("status", "present"),
        ])
        .send()
        .expect("mark");
    assert!(response.status().is_success() || response.status().is_redirection());
    let entries: Vec<(String, String)> = college
        .db()
        .prepare("SELECT method, evidence FROM attendance_events WHERE id > 1 ORDER BY id")
        .and_then(|mut statement| {
            statement
                .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect()
        })
        .expect("marks");
    assert_eq!(entries.len(), 2, "{entries:?}");
    for (method, evidence) in entries {
        let evidence: Value = serde_json::from_str(&evidence).expect("json");
        assert_eq!(evidence["entry"], "adjustment", "{method}: {evidence}");
    }
    assert_eq!(college.count("SELECT COUNT(*) FROM month_adjustments"), 2);
    // ...and are synced as such: the registry's records say so, and nothing is flagged.
    wait_for(
        &college,
        "the marks to drain",
        Duration::from_secs(60),
        drained,
    );
    let entries: Vec<String> = registry
        .query(
            "SELECT body FROM records WHERE kind = 'attendance' AND record_id > 1
             ORDER BY record_id",
        )
        .lines()
        .map(|body| {
            let record: Value = serde_json::from_str(body).expect("record");
            record["evidence"]["entry"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(entries, ["adjustment", "adjustment"]);
    assert_eq!(
        registry.count("SELECT COUNT(*) FROM findings"),
        0,
        "{}",
        registry.command(&["findings"])
    );
}

/// The statement's signed payload (verified under the agent's key).
fn statement_payload(college: &College) -> Value {
    let statement = std::fs::read_to_string(
        college
            .dir
            .path()
            .join("statements/month-close-2026-11.jws"),
    )
    .expect("statement");
    let key = kasip_certs::DeviceKey::load(&college.dir.path().join("agent-key.pem")).expect("key");
    let verified =
        kasip_certs::jws::verify_compact(&statement, key.public_key()).expect("verifies");
    serde_json::from_slice(&verified.payload).expect("payload")
}

fn a_college_cannot_loosen_the_registry_s_policy_or_move_its_site_unseen(store: Store) {
    const LICENSED: &str = "г. Алматы, ул. Толе би, 100";
    let college = College::with_config(6, |config| {
        config
            .replace("min_coverage = 0.5", "min_coverage = 0.0")
            .replace("batch_max_age_secs = 60", "batch_max_age_secs = 0")
    });
    let registry = Registry::on(store, &college, &[]);
    registry.command(&[
        "set-policy",
        "--min-coverage",
        "0.9",
        "--student-qr-share",
        "0.5",
        "--typed-counts-as-qr",
        "false",
    ]);
    registry.command(&["license-address", "--bin", DEMO_BIN, "--address", LICENSED]);
    // Before the first pull, the college's own (loose) thresholds are in force. Asked
    // before enrolment: once enrolled, the sync task may pull at any moment.
    let before = agent_json(&college, &["coverage", "--month", "2026-11", "--json"]);
    assert_eq!(before["min_coverage_per_mille"], 0);
    enrol(&college, &registry);
    check_in_students(&college, 0..6);
    // The main building was at an unlicensed address in November, then re-imported at
    // the licensed one: a change is an event, and the month still shows the first.
    let timetable = |address: &str| {
        let path = college.dir.file("moved.csv");
        std::fs::write(
            &path,
            format!(
                "date;start;end;group;discipline;teacher_iin;site;room;mode;address\n\
                 2026-11-23;09:00;10:30;ПО-21;Математика;{TEACHER_A};Главный корпус;101;offline;{address}\n"
            ),
        )
        .expect("csv");
        let output = agent_run(
            &college,
            &["import", "timetable", path.to_str().expect("path")],
        );
        assert!(output.status.success(), "{:?}", kasip_tests::text(&output));
    };
    timetable("г. Алматы, ул. Складская, 1");
    timetable(LICENSED);
    assert_eq!(college.count("SELECT COUNT(*) FROM site_address_events"), 2);

    let output = agent_run(&college, &["sync", "now"]);
    let (stdout, stderr) = kasip_tests::text(&output);
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("national policy: coverage ≥ 900‰"),
        "{stdout}"
    );
    // After it, the national ones: the stricter of both, whatever the config says.
    let after = agent_json(&college, &["coverage", "--month", "2026-11", "--json"]);
    assert_eq!(after["min_coverage_per_mille"], 900);
    assert_eq!(after["typed_code_counts_as_qr"], false);
    assert_eq!(after["college"]["holds"], false, "{after:#}");
    let flags = agent_json(&college, &["red-flags", "--month", "2026-11", "--json"]);
    let unlicensed: Vec<&Value> = flags
        .as_array()
        .expect("flags")
        .iter()
        .filter(|flag| flag["kind"] == "unlicensed_site")
        .collect();
    assert_eq!(unlicensed.len(), 1, "{flags:#}");
    assert!(unlicensed[0]["detail"]
        .as_str()
        .is_some_and(|detail| detail.contains("Складская")));
    // The statement records the policy that applied and is judged by it.
    let output = agent_run(
        &college,
        &["month-close", "2026-11", "--force", "--reason", "test"],
    );
    assert!(output.status.success(), "{:?}", kasip_tests::text(&output));
    let payload = statement_payload(&college);
    assert_eq!(payload["min_coverage_per_mille"], 900);
    assert_eq!(payload["compliant"], false);
    assert_eq!(payload["policy"]["source"], "registry");
    // Both address events travelled to the registry.
    wait_for(
        &college,
        "the outbox to drain",
        Duration::from_secs(60),
        drained,
    );
    let output = agent_run(&college, &["sync", "now"]);
    assert!(output.status.success(), "{:?}", kasip_tests::text(&output));
    assert_eq!(
        registry.count("SELECT COUNT(*) FROM records WHERE kind = 'site_addresses'"),
        2
    );
    // An edited cache verifies as nothing: the statement would say the policy was local.
    college
        .db()
        .execute("UPDATE registry_policy SET jws = jws || 'x'", [])
        .expect("tamper");
    let tampered = agent_json(&college, &["coverage", "--month", "2026-11", "--json"]);
    assert_eq!(tampered["min_coverage_per_mille"], 0);
    // ...and the registry sees the statement judged by looser thresholds than its own.
    let output = agent_run(&college, &["month-close", "2026-10"]);
    assert!(output.status.success(), "{:?}", kasip_tests::text(&output));
    let output = agent_run(&college, &["sync", "now"]);
    assert!(output.status.success(), "{:?}", kasip_tests::text(&output));
    assert_eq!(findings(&registry, "statement_loosened"), 1);
    assert_eq!(
        registry.count(
            "SELECT COUNT(*) FROM findings WHERE kind = 'statement_loosened' AND month = '2026-10'"
        ),
        1,
        "the November statement, judged by the national policy, raised none"
    );
}

fn bindings_and_security_events_travel_to_the_registry(store: Store) {
    let (college, registry) = enrolled_with_marks(store, 3, true, 2, false);
    // A forged code from a bound phone: a security event with its client.
    let teacher = college.teacher(TEACHER_A);
    let url = college.shown_url(&teacher, college.lesson_a);
    let forged = format!("{}AAAA", &url[..url.len() - 4]);
    let (status, _) = check_in(&college.bound_phone(&college.group_a[2]), &forged);
    assert_eq!(status, 403);
    wait_until(
        "the bindings at the registry",
        Duration::from_secs(60),
        || registry.count("SELECT COUNT(*) FROM records WHERE kind = 'bindings'") == 3,
    );
    let binding: Value = serde_json::from_str(
        &registry.query("SELECT body FROM records WHERE kind = 'bindings' AND record_id = 1"),
    )
    .expect("json");
    assert!(binding["code_issued_by"]
        .as_str()
        .is_some_and(|by| by.starts_with("cli:")));
    assert!(binding["client"]
        .as_str()
        .is_some_and(|client| client.contains("127.0.0.1")));
    assert_eq!(binding["student_iin"], college.group_a[0].as_str());
    assert_eq!(
        registry.count("SELECT COUNT(*) FROM records WHERE kind = 'security_events'"),
        0,
        "an event's ten minutes are not over: its count may still grow"
    );
    college.set_clock(common::lesson_start_plus_one_minute() + 11 * 60);
    wait_until(
        "the security event at the registry",
        Duration::from_secs(60),
        || registry.count("SELECT COUNT(*) FROM records WHERE kind = 'security_events'") >= 1,
    );
    let event: Value = serde_json::from_str(&registry.query(
        "SELECT body FROM records WHERE kind = 'security_events' ORDER BY record_id LIMIT 1",
    ))
    .expect("json");
    assert_eq!(event["kind"], "forged_token", "{event}");
    assert_eq!(event["count"], 1);
}

/// Appends a mark behind the agent's back with a valid hash and a time before the last
/// sealing pass: the local chain verifies, and the registry's timeline sees the backfill.
fn backfill_mark(college: &College, student: &str, recorded_at: i64) {
    forge_mark(college, student, "manual", recorded_at);
}

/// What root on the college's server can do without the agent: append a mark of
/// `method` to the lesson of the log's last row, with a consistent hash, stamped
/// `recorded_at`. Returns its id.
fn forge_mark(college: &College, student: &str, method: &str, recorded_at: i64) -> i64 {
    let db = college.db();
    let (id, lesson, prev): (i64, i64, Vec<u8>) = db
        .query_row(
            "SELECT id, lesson_id, row_hash FROM attendance_events ORDER BY id DESC LIMIT 1",
            [],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )
        .expect("head");
    let evidence =
        kasip_core::chain::MarkEvidence::of(kasip_core::chain::EntryKind::Live).to_canonical();
    let manual = method == "manual";
    let device = (!manual).then_some("forged-phone");
    let marked_by = manual.then_some("teacher");
    let hash = ChainRow {
        id: id + 1,
        lesson_id: lesson,
        student_iin: student,
        status: "present",
        method,
        recorded_at,
        device_id: device,
        token_step: None,
        marked_by,
        reason: None,
        corrects: None,
        evidence: Some(&evidence),
    }
    .hash(&prev);
    db.execute(
        "INSERT INTO attendance_events (id, lesson_id, student_iin, status, method, recorded_at,
             device_id, marked_by, prev_hash, row_hash, evidence)
         VALUES (?1, ?2, ?3, 'present', ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        rusqlite::params![
            id + 1,
            lesson,
            student,
            method,
            recorded_at,
            device,
            marked_by,
            prev,
            hash.to_vec(),
            evidence
        ],
    )
    .expect("backfill");
    id + 1
}

fn the_registry_s_timeline_sees_a_clock_set_back_and_a_backfilled_mark(store: Store) {
    let (college, registry) = enrolled_with_marks(store, 4, true, 1, true);
    assert_eq!(
        registry.count("SELECT COUNT(*) FROM findings"),
        0,
        "an honest start"
    );

    // A hand mark entered now, stamped ten minutes before the batch already sealed.
    let sealed_at = common::lesson_start_plus_one_minute();
    backfill_mark(&college, &college.group_a[1], sealed_at - 600);
    wait_until("the backfill finding", Duration::from_secs(60), || {
        findings(&registry, "backfilled_mark") == 1
    });
    let evidence = registry.query("SELECT evidence FROM findings WHERE kind = 'backfilled_mark'");
    assert_eq!(evidence, "2", "the record id is the evidence");

    // The clock set back a day: the next batch is created before the one it follows.
    college.set_clock(sealed_at - 86_400);
    backfill_mark(&college, &college.group_a[2], sealed_at - 86_400);
    wait_until("the clock finding", Duration::from_secs(60), || {
        findings(&registry, "batch_created_not_monotone") == 1
    });
    // Hand marks "for" the lesson three weeks after it: outside its window, and not an
    // admin's late entry with a reason.
    college.set_clock(sealed_at);
    backfill_mark(&college, &college.group_a[3], sealed_at + 21 * 86_400);
    // (The day-early mark of the set-back clock was outside its window too: event 3.)
    wait_until("the window findings", Duration::from_secs(60), || {
        registry.count(
            "SELECT COUNT(*) FROM findings WHERE kind = 'mark_outside_window' AND evidence IN ('3', '4')",
        ) == 2
    });
    python_agrees_with_the_registry(&registry);
    let findings_cli = registry.command(&["findings", "--bin", DEMO_BIN]);
    assert!(findings_cli.contains("backfilled_mark"), "{findings_cli}");
    assert!(
        findings_cli.contains("the agent's clock went back"),
        "{findings_cli}"
    );
}

/// Marks root forged with consistent hashes: a check-in two hours before its lesson began,
/// and a live mark for a month after its signed statement. Each is its exact finding.
fn advance_check_ins_and_marks_after_a_close_are_findings(store: Store) {
    let (college, registry) = enrolled_with_marks(store, 4, true, 1, true);
    let lesson_start = common::lesson_start_plus_one_minute() - 60;
    let early = forge_mark(
        &college,
        &college.group_a[1],
        "qr_phone",
        lesson_start - 2 * 3600,
    );
    wait_until("the window finding", Duration::from_secs(60), || {
        !registry.findings_of("mark_outside_window").is_empty()
    });
    let outside = registry.findings_of("mark_outside_window");
    assert_eq!(outside.len(), 1, "{outside:#?}");
    assert_eq!(outside[0]["evidence"], early.to_string());

    let output = agent_run(
        &college,
        &["month-close", "2026-11", "--force", "--reason", "pilot"],
    );
    assert!(output.status.success(), "{:?}", kasip_tests::text(&output));
    wait_for(&college, "the statement", Duration::from_secs(60), drained);
    let after = forge_mark(
        &college,
        &college.group_a[2],
        "manual",
        common::lesson_start_plus_one_minute(),
    );
    wait_until("the statement finding", Duration::from_secs(60), || {
        !registry.findings_of("mark_after_statement").is_empty()
    });
    let closed = registry.findings_of("mark_after_statement");
    assert_eq!(closed[0]["evidence"], after.to_string(), "{closed:#?}");
    assert_eq!(closed[0]["month"], "2026-11");
    python_agrees_with_the_registry(&registry);
}

/// An outside auditor's rerun: the independent Python verifier, given only the exported
/// batches, finds exactly the registry's timeline findings (kind by kind, the same ids).
fn python_agrees_with_the_registry(registry: &Registry) {
    const TIMELINE: [&str; 6] = [
        "backfilled_mark",
        "batch_created_not_monotone",
        "entry_without_reason",
        "late_kiosk_scan",
        "mark_after_statement",
        "mark_outside_window",
    ];
    let export = registry.dir.file("audit-export");
    let _ = std::fs::remove_dir_all(&export);
    registry.command(&[
        "export-batches",
        "--bin",
        DEMO_BIN,
        export.to_str().expect("path"),
    ]);
    let verifier = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/verify_batches.py");
    let output = std::process::Command::new("python3")
        .arg(&verifier)
        .arg(&export)
        .output()
        .expect("python3");
    let (stdout, stderr) = kasip_tests::text(&output);
    assert!(output.status.success(), "{stdout}{stderr}");
    let mut by_python = std::collections::BTreeMap::new();
    for line in stdout.lines() {
        if let Some((kind, ids)) = line.split_once(": ") {
            if TIMELINE.contains(&kind) {
                let ids: std::collections::BTreeSet<u64> =
                    ids.split(',').map(|id| id.parse().expect("id")).collect();
                by_python.insert(kind.to_owned(), ids);
            }
        }
    }
    let mut by_registry = std::collections::BTreeMap::new();
    for kind in TIMELINE {
        let ids: std::collections::BTreeSet<u64> = registry
            .findings_of(kind)
            .iter()
            .flat_map(|finding| {
                finding["evidence"]
                    .as_str()
                    .unwrap_or_default()
                    .split(',')
                    .filter_map(|id| id.parse().ok())
                    .collect::<Vec<u64>>()
            })
            .collect();
        if !ids.is_empty() {
            by_registry.insert(kind.to_owned(), ids);
        }
    }
    assert!(!by_registry.is_empty(), "a rerun of nothing proves nothing");
    assert_eq!(by_python, by_registry, "{stdout}");
}

/// A script with a dozen phones: bound one after another within a minute, checked in
/// within a second. The registry's month audit sees both bursts, with the records.
fn a_script_binding_and_checking_in_a_dozen_phones_is_two_bursts(store: Store) {
    let (college, registry) = enrolled_with_marks(store, 12, true, 12, true);
    let output = agent_run(
        &college,
        &["month-close", "2026-11", "--force", "--reason", "pilot"],
    );
    assert!(output.status.success(), "{:?}", kasip_tests::text(&output));
    wait_for(&college, "the statement", Duration::from_secs(60), drained);
    let bindings = registry.findings_of("binding_burst");
    assert_eq!(bindings.len(), 1, "{bindings:#?}");
    assert_eq!(
        bindings[0]["evidence"]
            .as_str()
            .map(|ids| ids.split(',').count()),
        Some(12)
    );
    assert!(bindings[0]["detail"]
        .as_str()
        .is_some_and(|detail| detail.starts_with("12 phones were bound within 5 min")));
    let check_ins = registry.findings_of("check_in_burst");
    assert_eq!(check_ins.len(), 1, "{check_ins:#?}");
    assert!(check_ins[0]["detail"]
        .as_str()
        .is_some_and(|detail| detail
            .starts_with("12 phones checked in to ПО-21's lesson of 2026-11-23 09:00")));
    // Nothing else: the statement agrees with the records.
    assert_eq!(registry.count("SELECT COUNT(*) FROM findings"), 2);
    // Thresholds are the operator's: raised above a dozen, a new audit finds nothing new.
    registry.command(&[
        "set-thresholds",
        "--check-in-burst",
        "13",
        "--binding-burst",
        "13",
    ]);
    let audit = registry.command(&["audit", "--month", "2026-11"]);
    assert!(audit.contains("no new findings"), "{audit}");
}

/// A college that hides its untracked beneficiaries from its statement (flags edited in
/// its database before the close): the registry counts its own list and disagrees.
fn a_statement_leaving_out_beneficiaries_disagrees_with_the_registry(store: Store) {
    let college = pinned_college(4, true);
    let registry = Registry::on(store, &college, &[]);
    registry.list_beneficiaries(college.group_a.iter().chain(&college.group_b));
    enrol(&college, &registry);
    check_in_students(&college, 0..4);
    wait_for(&college, "the marks", Duration::from_secs(60), drained);
    college
        .db()
        .execute(
            "UPDATE students SET beneficiary = 0 WHERE iin IN (SELECT s.iin FROM students s
             JOIN study_groups g ON g.id = s.group_id WHERE g.code = 'ВТ-21')",
            [],
        )
        .expect("hide");
    let output = agent_run(
        &college,
        &["month-close", "2026-11", "--force", "--reason", "pilot"],
    );
    assert!(output.status.success(), "{:?}", kasip_tests::text(&output));
    assert_eq!(
        statement_payload(&college)["coverage"]["college"]["coverage_per_mille"],
        1000
    );
    wait_for(&college, "the statement", Duration::from_secs(60), drained);
    let disagrees = registry.findings_of("statement_disagrees");
    assert_eq!(disagrees.len(), 1, "{disagrees:#?}");
    let detail = disagrees[0]["detail"].as_str().expect("detail");
    assert!(
        detail.contains(&format!(
            "{}: a beneficiary the statement leaves out",
            college.group_b[0]
        )) && detail.contains("coverage: stated 100.0%, recomputed 57.1%"),
        "{detail}"
    );
    // The registry's figure is the one shown: 4 of 7 tracked, below the rule.
    let overview = registry.colleges();
    let month = &overview["colleges"][0]["months"][0];
    assert_eq!(month["coverage_per_mille"], 571, "{month:#}");
    assert_eq!(month["stated_coverage_per_mille"], 1000);
    assert_eq!(month["beneficiaries_from"], "registry");
}

/// One student present at two colleges on the same day, each college's own agent honest
/// about what it saw: only the registry sees both.
fn one_student_present_at_two_colleges_on_one_day_is_a_finding(store: Store) {
    const OTHER_BIN: &str = "090640001243";
    let first = pinned_college(2, true);
    let second = College::with_config(2, |config| {
        config
            .replace("batch_max_age_secs = 60", "batch_max_age_secs = 0")
            .replace(DEMO_BIN, OTHER_BIN)
    });
    let registry = Registry::on(store, &first, &[]);
    registry.command(&[
        "add-college",
        "--bin",
        OTHER_BIN,
        "--name",
        "Другой колледж",
    ]);
    enrol(&first, &registry);
    let code = registry.enrolment_code_for(OTHER_BIN);
    let output = agent_run(
        &second,
        &["enroll", "--registry", &registry.url(), "--code", &code],
    );
    assert!(output.status.success(), "{:?}", kasip_tests::text(&output));
    // The same IIN is on both rosters (the test colleges number students alike).
    assert_eq!(first.group_a[0], second.group_a[0]);
    check_in_students(&first, 0..1);
    wait_for(
        &first,
        "the first college",
        Duration::from_secs(60),
        drained,
    );
    assert!(registry.findings_of("present_at_two_colleges").is_empty());
    check_in_students(&second, 0..1);
    wait_for(
        &second,
        "the second college",
        Duration::from_secs(60),
        drained,
    );
    let twice = registry.findings_of("present_at_two_colleges");
    assert_eq!(twice.len(), 1, "{twice:#?}");
    assert_eq!(twice[0]["college_bin"], OTHER_BIN);
    assert!(twice[0]["detail"]
        .as_str()
        .is_some_and(|detail| detail.contains(&first.group_a[0]) && detail.contains(DEMO_BIN)));
}

/// The demo college's month, closed and synced to a registry holding the demo's own
/// beneficiary list: the registry's recomputed coverage agrees with the statement, and
/// the only finding is the demo's planted hand-marking teacher (the agent flags the same
/// teacher, `red_flags.rs`). Its honest groups raise nothing.
fn a_month_of_the_demo_college_raises_only_its_planted_case(store: Store) {
    use kasip_tests::{run_with, text, TempDataDir};
    let dir = TempDataDir::new();
    let clock = dir.file("clock");
    // Monday 2026-11-30, 18:00 in Almaty: November's working days are behind it.
    let evening = kasip_core::Date::new(2026, 11, 30)
        .expect("date")
        .days_since_epoch()
        * 86_400
        + 13 * 3600;
    std::fs::write(&clock, evening.to_string()).expect("clock");
    let clock_text = clock.display().to_string();
    let env = [("KASIP_UNSAFE_CLOCK_FILE", clock_text.as_str())];
    let agent = |args: &[&str]| {
        let output = run_with(common::AGENT, &dir.path(), args, &env, None);
        assert!(output.status.success(), "{args:?}: {:?}", text(&output));
        text(&output).0
    };
    agent(&["init"]);
    agent(&["demo"]);
    let registry = Registry::on_clock_in(store, &clock, &[]);
    let database = rusqlite::Connection::open(dir.path().join("agent.db")).expect("db");
    let beneficiaries: Vec<String> = database
        .prepare("SELECT iin FROM students WHERE beneficiary = 1 ORDER BY iin")
        .and_then(|mut statement| statement.query_map([], |row| row.get(0))?.collect())
        .expect("beneficiaries");
    assert!(beneficiaries.len() > 100, "{}", beneficiaries.len());
    registry.list_beneficiaries(&beneficiaries);
    let code = registry.enrolment_code();
    agent(&["enroll", "--registry", &registry.url(), "--code", &code]);
    agent(&[
        "month-close",
        "2026-11",
        "--force",
        "--reason",
        "the pilot month",
    ]);
    let synced = agent(&["sync", "now"]);
    let status: Value = serde_json::from_str(&agent(&["sync", "status", "--json"])).expect("json");
    assert!(drained(&status), "{synced}{status:#}");
    let findings: Value =
        serde_json::from_str(&registry.command(&["findings", "--json"])).expect("json");
    let hand_marking: String = database
        .query_row(
            "SELECT iin FROM teachers ORDER BY rowid LIMIT 1 OFFSET 7",
            [],
            |row| row.get(0),
        )
        .expect("teacher");
    let findings = findings.as_array().expect("array");
    assert_eq!(findings.len(), 1, "{findings:#?}");
    assert_eq!(findings[0]["kind"], "hand_share_teacher");
    assert!(findings[0]["detail"]
        .as_str()
        .is_some_and(|detail| detail.contains(&hand_marking)));
    // The registry's own count of the month is the statement's.
    let overview = registry.colleges();
    let month = &overview["colleges"][0]["months"][0];
    assert_eq!(month["beneficiaries"], beneficiaries.len(), "{month:#}");
    assert_eq!(
        month["coverage_per_mille"],
        month["stated_coverage_per_mille"]
    );
    assert_eq!(month["compliant"], true);
}
