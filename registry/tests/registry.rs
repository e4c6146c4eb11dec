//! The reference registry as a black box: hostile bodies and credentials get a clear
//! refusal and change nothing. (Also: this test target makes `cargo test --workspace`
//! build `kasip-registry`, which the agent's sync tests drive.)

use kasip_tests::{registry_query, registry_sql, run, text, Server, Store, TempDataDir};

const REGISTRY: &str = env!("CARGO_BIN_EXE_kasip-registry");
const BIN: &str = "090640001233";

fn registry(store: Store) -> (TempDataDir, Server) {
    let dir = TempDataDir::for_registry(store);
    for args in [
        vec!["init"],
        vec!["add-college", "--bin", BIN, "--name", "Test college"],
    ] {
        let output = run(REGISTRY, &dir.path(), &args);
        assert!(output.status.success(), "{:?}", text(&output));
    }
    let server = Server::start(REGISTRY, &dir.path(), &[]);
    (dir, server)
}

use kasip_tests::post_text as post;

kasip_tests::on_both_stores!(
    hostile_batches_enrolments_and_credentials_are_refused_and_change_nothing,
    cli_refuses_bad_input_with_the_reason,
    an_enrolled_key_cannot_be_enrolled_again_or_announced_by_another_agent,
    the_registry_data_is_its_owners_only_whatever_the_umask,
    a_signed_read_is_single_use,
    oversized_batches_are_refused_before_they_are_built,
    the_timeline_rules_flag_what_a_consistent_chain_cannot_hide,
    one_student_or_one_phone_at_two_colleges_is_a_finding,
    the_registrar_reads_findings_and_an_auditor_judges_them_behind_a_sign_in,
    passkey_enrolment_refuses_hostile_bodies_and_the_college_page_shows_the_verified_share,
    the_registrys_pages_pass_axe_in_every_language_at_320_px
);

fn hostile_batches_enrolments_and_credentials_are_refused_and_change_nothing(store: Store) {
    let (dir, server) = registry(store);
    let batches = format!("{}/v1/batches", server.url);
    for (body, status, says) in [
        ("", 400, "not a compact JWS"),
        ("not.a.jws.at.all", 400, "not a compact JWS"),
        ("eyJhbGciOiJFZDI1NTE5In0.e30.AA", 400, "kid"),
        (
            "eyJhbGciOiJFZDI1NTE5Iiwia2lkIjoibm9ib2R5In0.e30.AA",
            401,
            "no agent",
        ),
        ("\u{0}\u{1}binary", 400, ""),
    ] {
        let (got, text) = post(&batches, body);
        assert_eq!(got, status, "{body:?}: {text}");
        assert!(text.contains(says), "{body:?}: {text}");
    }
    let enrolments = format!("{}/v1/enrolments", server.url);
    for (body, status) in [
        ("{", 400),
        ("[]", 400),
        (r#"{"code":"X","college_bin":"090640001233"}"#, 400),
        (
            r#"{"code":"WRONG","college_bin":"090640001233","public_key":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}"#,
            403,
        ),
        (
            r#"{"code":"X","college_bin":"090640001233","public_key":"short"}"#,
            400,
        ),
    ] {
        let (got, text) = post(&enrolments, body);
        assert_eq!(got, status, "{body}: {text}");
    }
    // Reads that need an agent's signature refuse anonymous and forged callers.
    for path in [
        format!("/v1/colleges/{BIN}/beneficiaries"),
        "/v1/agents/x/checkpoint".to_owned(),
    ] {
        let client = kasip_tests::http_client();
        for authorization in ["", "Bearer x", "KasipAgent a.b.c"] {
            let response = client
                .get(format!("{}{path}", server.url))
                .header("authorization", authorization)
                .send()
                .expect("get");
            assert_eq!(response.status().as_u16(), 401, "{path} {authorization:?}");
        }
    }
    drop(server);
    for table in ["agents", "batches", "records", "quarantine"] {
        let rows = registry_query(&dir, &format!("SELECT COUNT(*) FROM {table}"));
        assert_eq!(rows, "0", "{table}");
    }
}

fn cli_refuses_bad_input_with_the_reason(store: Store) {
    let dir = TempDataDir::for_registry(store);
    let refused = |args: &[&str], says: &str| {
        let output = run(REGISTRY, &dir.path(), args);
        assert!(!output.status.success(), "{args:?}");
        assert!(
            text(&output).1.contains(says),
            "{args:?}: {:?}",
            text(&output)
        );
    };
    refused(
        &["add-college", "--bin", "090640001234", "--name", "X"],
        "--bin",
    );
    refused(&["issue-enrolment-code", "--bin", BIN], "not registered");
    refused(&["serve", "--fail-rate", "1.5"], "between 0.0 and 1.0");
    let output = run(
        REGISTRY,
        &dir.path(),
        &["add-college", "--bin", BIN, "--name", "X"],
    );
    assert!(output.status.success());
    let csv = dir.file("list.csv");
    std::fs::write(
        &csv,
        "iin;beneficiary;voucher\n060315500016;да;active\n060315500017;да;\n",
    )
    .expect("csv");
    refused(
        &[
            "import-beneficiaries",
            "--bin",
            BIN,
            csv.to_str().expect("path"),
        ],
        "row 3, column iin",
    );
}

const OTHER_BIN: &str = "090640001243";

fn enrolment_code(dir: &TempDataDir) -> String {
    enrolment_code_for(dir, BIN)
}

fn enrolment_code_for(dir: &TempDataDir, bin: &str) -> String {
    let output = run(
        REGISTRY,
        &dir.path(),
        &["issue-enrolment-code", "--bin", bin],
    );
    assert!(output.status.success(), "{:?}", text(&output));
    text(&output)
        .0
        .split_whitespace()
        .last()
        .expect("code")
        .to_owned()
}

fn enrol(server: &Server, code: &str, key: &kasip_certs::DeviceKey) -> (u16, String) {
    enrol_for(server, BIN, code, key)
}

fn enrol_for(
    server: &Server,
    bin: &str,
    code: &str,
    key: &kasip_certs::DeviceKey,
) -> (u16, String) {
    post(
        &format!("{}/v1/enrolments", server.url),
        &serde_json::json!({
            "code": code,
            "college_bin": bin,
            "public_key": key.public_key_base64url(),
        })
        .to_string(),
    )
}

fn code_used(dir: &TempDataDir, code: &str) -> bool {
    registry_query(
        dir,
        &format!(
            "SELECT COUNT(*) FROM enrolment_codes WHERE used_at IS NOT NULL AND code_hash = '{}'",
            kasip_core::batch::sha256_hex(code.as_bytes())
        ),
    ) == "1"
}

fn an_enrolled_key_cannot_be_enrolled_again_or_announced_by_another_agent(store: Store) {
    let (dir, server) = registry(store);
    let keys = TempDataDir::new();
    let first = kasip_certs::DeviceKey::generate_to(&keys.file("first.pem")).expect("key");
    let second = kasip_certs::DeviceKey::generate_to(&keys.file("second.pem")).expect("key");
    let (status, body) = enrol(&server, &enrolment_code(&dir), &first);
    assert_eq!(status, 201, "{body}");

    // The same key for another college: 409, and that college's code stays good.
    let other = run(
        REGISTRY,
        &dir.path(),
        &["add-college", "--bin", OTHER_BIN, "--name", "Other"],
    );
    assert!(other.status.success(), "{:?}", text(&other));
    let other_code = enrolment_code_for(&dir, OTHER_BIN);
    let (status, body) = enrol_for(&server, OTHER_BIN, &other_code, &first);
    assert_eq!(status, 409, "{body}");
    assert!(
        body.contains("already enrolled for another college"),
        "{body}"
    );
    assert!(!code_used(&dir, &other_code));
    // The same key for its own college (an agent that lost the first answer asks again):
    // the same enrolment, 200, and the code stays good for the next agent.
    let code = enrolment_code(&dir);
    let (status, body) = enrol(&server, &code, &first);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains(&first.thumbprint()), "{body}");
    assert!(!code_used(&dir, &code));
    let (status, body) = enrol(&server, &code, &second);
    assert_eq!(
        status, 201,
        "the unused code still enrols a new key: {body}"
    );

    // The first agent announces the second agent's key as its next one: a permanent 409
    // (not a 5xx an agent would retry forever), and the keys stay as they were.
    let envelope = kasip_core::batch::BatchEnvelope {
        v: kasip_core::batch::BATCH_VERSION,
        agent: first.thumbprint(),
        college_bin: BIN.into(),
        seq: 1,
        prev: kasip_core::batch::GENESIS_PREV.into(),
        kind: kasip_core::batch::BatchKind::KeyRotation,
        created: 1_764_000_000,
        records: vec![kasip_core::batch::RecordText::of(&serde_json::json!({
            "id": 1,
            "new_key": second.public_key_base64url(),
            "new_kid": second.thumbprint(),
            "at": 1_764_000_000,
        }))
        .expect("canonical")],
    };
    let payload = envelope.to_canonical().expect("canonical");
    let jws = kasip_certs::jws::sign_compact(
        &first,
        &kasip_certs::jws::protected_header(&first),
        payload.as_bytes(),
    );
    let (status, body) = post(&format!("{}/v1/batches", server.url), &jws);
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("already enrolled"), "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert!(
        answer["expected_seq"].is_null(),
        "not a sequence conflict: {body}"
    );
    drop(server);
    let keys: Vec<(String, String, bool)> = registry_query(
        &dir,
        "SELECT kid, agent, CASE WHEN retired_at IS NULL THEN 0 ELSE 1 END FROM agent_keys",
    )
    .lines()
    .map(|line| {
        let fields: Vec<&str> = line.split('|').collect();
        (fields[0].to_owned(), fields[1].to_owned(), fields[2] == "1")
    })
    .collect();
    let mut expected = vec![
        (first.thumbprint(), first.thumbprint(), false),
        (second.thumbprint(), second.thumbprint(), false),
    ];
    expected.sort();
    let mut keys = keys;
    keys.sort();
    assert_eq!(keys, expected);
    assert_eq!(registry_query(&dir, "SELECT COUNT(*) FROM batches"), "0");
}

fn the_registry_data_is_its_owners_only_whatever_the_umask(store: Store) {
    use std::os::unix::fs::PermissionsExt;
    let (dir, server) = registry(store);
    // One upload-free request is enough for the WAL files to exist.
    let (status, _) = post(&format!("{}/v1/enrolments", server.url), "{");
    assert_eq!(status, 400);
    let mode = |path: std::path::PathBuf| {
        std::fs::metadata(&path)
            .unwrap_or_else(|error| panic!("{}: {error}", path.display()))
            .permissions()
            .mode()
            & 0o777
    };
    // The tests run under the usual umask 022, which used to leave these 0755 and 0644.
    assert_eq!(mode(dir.path()), 0o700);
    let files: &[&str] = match store {
        Store::Sqlite => &[
            "registry.db",
            "registry.db-wal",
            "registry.db-shm",
            "registry-key.pem",
        ],
        // The tables are the database server's; the key stays here.
        Store::Postgres => &["registry-key.pem"],
    };
    for name in files {
        assert_eq!(mode(dir.path().join(name)), 0o600, "{name}");
    }
}

#[allow(clippy::disallowed_methods)] // the registry here runs on the system clock
fn a_signed_read_is_single_use(store: Store) {
    let (dir, server) = registry(store);
    let keys = TempDataDir::new();
    let key = kasip_certs::DeviceKey::generate_to(&keys.file("agent.pem")).expect("key");
    let (status, body) = enrol(&server, &enrolment_code(&dir), &key);
    assert_eq!(status, 201, "{body}");
    let path = format!("/v1/agents/{}/checkpoint", key.thumbprint());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("time")
        .as_secs() as i64;
    let header = kasip_certs::agent_auth::authorization(&key, "GET", &path, now).expect("header");
    let get = |authorization: &str| {
        let response = kasip_tests::http_client()
            .get(format!("{}{path}", server.url))
            .header("authorization", authorization)
            .send()
            .expect("get");
        (response.status().as_u16(), response.text().expect("body"))
    };
    assert_eq!(get(&header).0, 200);
    // The same header again, well within the clock skew: refused.
    let (status, body) = get(&header);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("already used"), "{body}");
    // A new header for the same read passes.
    let fresh = kasip_certs::agent_auth::authorization(&key, "GET", &path, now).expect("header");
    assert_eq!(get(&fresh).0, 200);
}

fn oversized_batches_are_refused_before_they_are_built(store: Store) {
    let (dir, server) = registry(store);
    let keys = TempDataDir::new();
    let key = kasip_certs::DeviceKey::generate_to(&keys.file("agent.pem")).expect("key");
    assert_eq!(enrol(&server, &enrolment_code(&dir), &key).0, 201);
    // Two million empty records, signed by the enrolled agent: refused by their count
    // (they were once parsed into two million JSON values first).
    let envelope = kasip_core::batch::BatchEnvelope {
        v: kasip_core::batch::BATCH_VERSION,
        agent: key.thumbprint(),
        college_bin: BIN.into(),
        seq: 1,
        prev: kasip_core::batch::GENESIS_PREV.into(),
        kind: kasip_core::batch::BatchKind::Attendance,
        created: 1_764_000_000,
        records: vec![kasip_core::batch::RecordText::of(&0).expect("canonical")],
    };
    let one = envelope.to_canonical().expect("canonical");
    let many = one.replacen(
        "\"records\":[0]",
        &format!("\"records\":[{}]", vec!["0"; 2_000_000].join(",")),
        1,
    );
    let jws = kasip_certs::jws::sign_compact(
        &key,
        &kasip_certs::jws::protected_header(&key),
        many.as_bytes(),
    );
    let (status, body) = post(&format!("{}/v1/batches", server.url), &jws);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("1 to 20000 records"), "{body}");
    // A body declared over the cap: 413 at once, without reading it.
    let address = server.url.trim_start_matches("http://").to_owned();
    let mut stream = std::net::TcpStream::connect(&address).expect("connect");
    std::io::Write::write_all(
        &mut stream,
        format!(
            "POST /v1/batches HTTP/1.1\r\nHost: {address}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            kasip_certs::jws::MAX_JWS_BYTES + 1
        )
        .as_bytes(),
    )
    .expect("headers");
    let mut answer = String::new();
    std::io::Read::read_to_string(&mut stream, &mut answer).expect("answer");
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("a batch is at most"), "{answer}");
    drop(server);
    assert_eq!(registry_query(&dir, "SELECT COUNT(*) FROM batches"), "0");
}

/// An agent made by hand: its key, enrolled for `bin`, and the chain of its batches.
struct HandAgent<'a> {
    server: &'a Server,
    key: kasip_certs::DeviceKey,
    bin: String,
    seq: u64,
    prev: String,
    /// The attendance chain's head.
    head: Vec<u8>,
    created: i64,
}

impl<'a> HandAgent<'a> {
    fn enrol(dir: &TempDataDir, server: &'a Server, bin: &str, seed: u8) -> Self {
        let key = kasip_certs::DeviceKey::from_seed(&[seed; 32]).expect("key");
        let code = enrolment_code_for(dir, bin);
        assert_eq!(enrol_for(server, bin, &code, &key).0, 201);
        HandAgent {
            server,
            key,
            bin: bin.to_owned(),
            seq: 0,
            prev: kasip_core::batch::GENESIS_PREV.to_owned(),
            head: kasip_core::chain::GENESIS_HASH.to_vec(),
            created: 1_795_000_000,
        }
    }

    /// Seals and sends one batch; it must be stored.
    fn send(&mut self, kind: kasip_core::batch::BatchKind, records: Vec<serde_json::Value>) {
        self.seq += 1;
        self.created += 1;
        let envelope = kasip_core::batch::BatchEnvelope {
            v: kasip_core::batch::BATCH_VERSION,
            agent: self.key.thumbprint(),
            college_bin: self.bin.clone(),
            seq: self.seq,
            prev: self.prev.clone(),
            kind,
            created: self.created,
            records: records
                .iter()
                .map(|record| kasip_core::batch::RecordText::of(record).expect("canonical"))
                .collect(),
        };
        let payload = envelope.to_canonical().expect("canonical");
        let jws = kasip_certs::jws::sign_compact(
            &self.key,
            &kasip_certs::jws::protected_header(&self.key),
            payload.as_bytes(),
        );
        self.prev = kasip_core::batch::sha256_hex(jws.as_bytes());
        let (status, body) = post(&format!("{}/v1/batches", self.server.url), &jws);
        assert_eq!(status, 201, "{body}");
    }

    /// The next attendance record on this agent's chain: a present mark on 2026-11-27.
    fn mark(
        &mut self,
        id: u64,
        student: &str,
        method: &str,
        device: &str,
        evidence: kasip_core::chain::MarkEvidence,
    ) -> serde_json::Value {
        let recorded_at = 1_795_000_000 - 5;
        let hash = kasip_core::chain::ChainRow {
            id: id as i64,
            lesson_id: 7,
            student_iin: student,
            status: "present",
            method,
            recorded_at,
            device_id: Some(device),
            token_step: None,
            marked_by: None,
            reason: None,
            corrects: None,
            evidence: Some(&evidence.to_canonical()),
        }
        .hash(&self.head);
        self.head = hash.to_vec();
        serde_json::to_value(kasip_core::batch::AttendanceRecord {
            id,
            lesson: 7,
            date: "2026-11-27".into(),
            start: "09:00".into(),
            end: None,
            group: "ПО-21".into(),
            discipline: "Математика".into(),
            teacher_iin: "850515400012".into(),
            mode: "offline".into(),
            student_iin: student.into(),
            status: "present".into(),
            method: method.into(),
            recorded_at,
            device: Some(device.into()),
            marked_by: None,
            reason: None,
            corrects: None,
            chain_hash: kasip_core::batch::to_hex(&hash),
            site: None,
            room: Some("101".into()),
            token_step: None,
            evidence: Some(evidence),
        })
        .expect("record")
    }
}

fn findings_json(dir: &TempDataDir) -> serde_json::Value {
    let output = run(REGISTRY, &dir.path(), &["findings", "--json"]);
    assert!(output.status.success(), "{:?}", text(&output));
    serde_json::from_str(&text(&output).0).expect("json")
}

fn findings_of(findings: &serde_json::Value, kind: &str) -> Vec<serde_json::Value> {
    findings
        .as_array()
        .expect("array")
        .iter()
        .filter(|finding| finding["kind"] == kind)
        .cloned()
        .collect()
}

/// What a dishonest agent build could send with a self-consistent chain: the registry's
/// timeline rules still see it. A mark for a month whose statement is signed, not filed
/// as an adjustment; a kiosk scan that reached the agent three hours after it was made.
fn the_timeline_rules_flag_what_a_consistent_chain_cannot_hide(store: Store) {
    use kasip_core::batch::BatchKind;
    use kasip_core::chain::{EntryKind, MarkEvidence};
    let (dir, server) = registry(store);
    let mut agent = HandAgent::enrol(&dir, &server, BIN, 9);
    // The November statement first (its signature is the agent's; the registry keeps it).
    agent.send(
        BatchKind::MonthClose,
        vec![
            serde_json::json!({"id": 1, "month": "2026-11", "compliant": true,
            "statement": "e30.e30.AA"}),
        ],
    );
    // Two kiosk marks for November on a consistent chain: the first a live mark after
    // the close, the second (an adjustment) scanned three hours before it arrived.
    let now = 1_795_000_000;
    let kiosk = |scanned_ago: i64, entry| MarkEvidence {
        kiosk: Some(1),
        pass: Some("KP1.060315500016.1795000000.AA".into()),
        scanned_at: Some(now - scanned_ago),
        received_at: Some(now),
        ..MarkEvidence::of(entry)
    };
    let records = vec![
        agent.mark(
            1,
            "060315500016",
            "qr_kiosk",
            "kiosk:1",
            kiosk(5, EntryKind::Live),
        ),
        agent.mark(
            2,
            "060315500016",
            "qr_kiosk",
            "kiosk:1",
            kiosk(3 * 3600, EntryKind::Adjustment),
        ),
    ];
    agent.send(BatchKind::Attendance, records);
    drop(server);
    let findings = findings_json(&dir);
    let after_close = findings_of(&findings, "mark_after_statement");
    assert_eq!(after_close.len(), 1, "{findings:#}");
    assert_eq!(after_close[0]["month"], "2026-11");
    assert_eq!(after_close[0]["evidence"], "1", "only the live mark");
    let late = findings_of(&findings, "late_kiosk_scan");
    assert_eq!(late.len(), 1, "{findings:#}");
    assert_eq!(late[0]["evidence"], "2");
    assert_eq!(findings.as_array().map(Vec::len), Some(2), "{findings:#}");
    assert_eq!(late[0]["status"], "open");
    // A person's judgement: appended with who and why; a judgement without a reason is
    // refused and changes nothing.
    let id = late[0]["id"].as_i64().expect("id").to_string();
    let judge = |status: &str, reason: &str| {
        run(
            REGISTRY,
            &dir.path(),
            &[
                "finding-status",
                &id,
                "--status",
                status,
                "--by",
                "auditor",
                "--reason",
                reason,
            ],
        )
    };
    let refused = judge("explained", " ");
    assert!(!refused.status.success());
    assert!(
        text(&refused).1.contains("--reason are required"),
        "{:?}",
        text(&refused)
    );
    assert!(
        judge("explained", "the kiosk's network was down that morning")
            .status
            .success()
    );
    assert!(judge("confirmed", "the network log shows no outage")
        .status
        .success());
    let findings = findings_json(&dir);
    assert_eq!(
        findings_of(&findings, "late_kiosk_scan")[0]["status"],
        "confirmed"
    );
    assert_eq!(
        registry_query(&dir, "SELECT COUNT(*) FROM finding_status"),
        "2"
    );
    let refused = registry_sql(&dir, "DELETE FROM finding_status").expect_err("append-only");
    assert!(refused.contains("append-only"), "{refused}");
    assert_eq!(
        registry_query(&dir, "SELECT COUNT(*) FROM finding_status"),
        "2"
    );
}

/// What no college sees alone: one student present at two colleges on one day, one
/// phone checking in for two colleges. A kiosk id shared by both is no finding.
fn one_student_or_one_phone_at_two_colleges_is_a_finding(store: Store) {
    use kasip_core::batch::BatchKind;
    use kasip_core::chain::{EntryKind, MarkEvidence};
    let (dir, server) = registry(store);
    assert!(run(
        REGISTRY,
        &dir.path(),
        &["add-college", "--bin", OTHER_BIN, "--name", "Other"]
    )
    .status
    .success());
    let mut first = HandAgent::enrol(&dir, &server, BIN, 11);
    let mut second = HandAgent::enrol(&dir, &server, OTHER_BIN, 12);
    let phone = |binding| MarkEvidence {
        binding: Some(binding),
        presented: Some("7.1.AA".into()),
        device_signature: Some("AA".into()),
        ..MarkEvidence::of(EntryKind::Live)
    };
    let shared_phone = "a".repeat(64);
    let records = vec![
        first.mark(1, "060315500016", "qr_phone", &shared_phone, phone(1)),
        first.mark(
            2,
            "060315600022",
            "qr_kiosk",
            "kiosk:1",
            MarkEvidence {
                kiosk: Some(1),
                pass: Some("KP1.060315600022.1795000000.AA".into()),
                scanned_at: Some(1_795_000_000 - 5),
                received_at: Some(1_795_000_000),
                ..MarkEvidence::of(EntryKind::Live)
            },
        ),
    ];
    first.send(BatchKind::Attendance, records);
    assert_eq!(
        findings_json(&dir),
        serde_json::json!([]),
        "one college alone"
    );
    let records = vec![
        second.mark(1, "060315500016", "qr_phone", &shared_phone, phone(1)),
        second.mark(
            2,
            "051203500038",
            "qr_kiosk",
            "kiosk:1",
            MarkEvidence {
                kiosk: Some(1),
                pass: Some("KP1.051203500038.1795000000.AA".into()),
                scanned_at: Some(1_795_000_000 - 5),
                received_at: Some(1_795_000_000),
                ..MarkEvidence::of(EntryKind::Live)
            },
        ),
    ];
    second.send(BatchKind::Attendance, records);
    drop(server);
    let findings = findings_json(&dir);
    let twice = findings_of(&findings, "present_at_two_colleges");
    assert_eq!(twice.len(), 1, "{findings:#}");
    assert_eq!(twice[0]["college_bin"], OTHER_BIN);
    assert!(twice[0]["detail"]
        .as_str()
        .is_some_and(|detail| detail.contains(BIN)));
    let device = findings_of(&findings, "device_at_two_colleges");
    assert_eq!(device.len(), 1, "{findings:#}");
    assert_eq!(device[0]["evidence"], "1", "the kiosk's mark is not one");
    assert_eq!(findings.as_array().map(Vec::len), Some(2), "{findings:#}");
}

/// One finding, made by an enrolled agent: a November mark sent after November's
/// statement, not filed as an adjustment.
fn a_mark_after_the_statement(dir: &TempDataDir, server: &Server) {
    use kasip_core::batch::BatchKind;
    use kasip_core::chain::{EntryKind, MarkEvidence};
    let mut agent = HandAgent::enrol(dir, server, BIN, 21);
    agent.send(
        BatchKind::MonthClose,
        vec![serde_json::json!({"id": 1, "month": "2026-11", "compliant": true, "statement": "e30.e30.AA"})],
    );
    let record = agent.mark(
        1,
        "060315500016",
        "qr_kiosk",
        "kiosk:1",
        MarkEvidence {
            kiosk: Some(1),
            pass: Some("KP1.060315500016.1795000000.AA".into()),
            scanned_at: Some(1_795_000_000 - 5),
            received_at: Some(1_795_000_000),
            ..MarkEvidence::of(EntryKind::Live)
        },
    );
    agent.send(BatchKind::Attendance, vec![record]);
}

/// A registry person's browser: the account made with `add-user`, signed in.
fn person(
    dir: &TempDataDir,
    server: &Server,
    login: &str,
    role: &str,
) -> reqwest::blocking::Client {
    kasip_tests::registry_person(
        REGISTRY,
        &dir.path(),
        &[],
        &server.url,
        (login, role),
        "a long enough password",
    )
}

fn page_of(client: &reqwest::blocking::Client, url: &str) -> (u16, String) {
    let response = client.get(url).send().expect("get");
    (response.status().as_u16(), response.text().expect("text"))
}

/// The Registrar's pages: nothing without a sign-in; colleges by open findings, each
/// finding's evidence, in kk, ru and en (the choice sticks); only an auditor judges, with
/// the form's CSRF token and a reason; every judgement stays in the history.
fn the_registrar_reads_findings_and_an_auditor_judges_them_behind_a_sign_in(store: Store) {
    let (dir, server) = registry(store);
    let anonymous = kasip_tests::http_client();
    for path in [
        "/",
        "/v1/colleges",
        "/v1/findings",
        "/findings/1",
        "/colleges/090640001233",
    ] {
        let (status, body) = page_of(&anonymous, &format!("{}{path}", server.url));
        assert_eq!(status, 401, "{path}: {body}");
        assert!(
            !body.contains(BIN) || path.contains(BIN),
            "{path} leaks: {body}"
        );
    }
    // Hostile accounts and sign-ins are refused with the reason, and change nothing.
    for (args, stdin, says) in [
        (
            vec!["add-user", "x", "--role", "king"],
            "a long enough password\n",
            "registrar or auditor",
        ),
        (
            vec!["add-user", "x", "--role", "auditor"],
            "short\n",
            "too short",
        ),
        (
            vec!["add-user", "two words", "--role", "auditor"],
            "a long enough password\n",
            "one word",
        ),
    ] {
        let output = kasip_tests::run_with(REGISTRY, &dir.path(), &args, &[], Some(stdin));
        assert!(!output.status.success());
        assert!(text(&output).1.contains(says), "{:?}", text(&output));
    }
    // Pages carry the security headers and no inline style or script.
    let login = anonymous
        .get(format!("{}/login?lang=en", server.url))
        .send()
        .expect("login page");
    let csp = login.headers()["content-security-policy"]
        .to_str()
        .expect("csp")
        .to_owned();
    assert!(
        csp.starts_with("default-src 'self'; frame-ancestors 'none'"),
        "{csp}"
    );
    assert_eq!(login.headers()["cache-control"], "no-store");
    let html = login.text().expect("html");
    assert!(
        !html.contains("<style") && !html.contains("<script"),
        "{html}"
    );
    let registrar = person(&dir, &server, "registrar", "registrar");
    let response = anonymous
        .post(format!("{}/login", server.url))
        .header("accept-language", "kk")
        .form(&[("login", "registrar"), ("password", "wrong password!")])
        .send()
        .expect("login");
    assert_eq!(response.status().as_u16(), 401);
    assert!(response
        .text()
        .expect("text")
        .contains("Логин немесе құпиясөз қате."));

    // One finding: a November mark after November's statement, not an adjustment.
    a_mark_after_the_statement(&dir, &server);

    let (status, home) = page_of(&registrar, &format!("{}/?lang=ru", server.url));
    assert_eq!(status, 200);
    assert!(
        home.contains("Колледжи, сначала с наибольшим числом открытых находок"),
        "{home}"
    );
    assert!(
        home.contains("Test college") && home.contains("<td class=\"bad\">1</td>"),
        "{home}"
    );
    // The language sticks without `?lang=`.
    let (_, college) = page_of(&registrar, &format!("{}/colleges/{BIN}", server.url));
    assert!(
        college.contains("Отметка за уже заявленный месяц, не исправление"),
        "{college}"
    );
    let (_, college) = page_of(
        &registrar,
        &format!("{}/colleges/{BIN}?lang=kk", server.url),
    );
    assert!(
        college.contains("Мәлімделген айға түзету емес белгі"),
        "{college}"
    );
    assert!(
        college.contains("<td class=\"bad\">жоғары</td>"),
        "high severity: {college}"
    );
    let id = findings_json(&dir)[0]["id"].as_i64().expect("id");
    let (status, finding) = page_of(&registrar, &format!("{}/findings/{id}?lang=en", server.url));
    assert_eq!(status, 200);
    // The evidence is the record itself, as the agent signed it.
    assert!(
        finding.contains("&#34;student_iin&#34;:&#34;060315500016&#34;"),
        "{finding}"
    );
    assert!(
        !finding.contains("<form method=post action=\"/findings/"),
        "a registrar does not judge"
    );
    let (status, _) = page_of(&registrar, &format!("{}/findings/999", server.url));
    assert_eq!(status, 404);

    // A registrar cannot judge, even with a valid token.
    let csrf_of = |page: &str| {
        page.split("name=csrf value=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .expect("csrf")
            .to_owned()
    };
    let judge = |client: &reqwest::blocking::Client, csrf: &str, reason: &str| {
        client
            .post(format!("{}/findings/{id}/status", server.url))
            .form(&[("csrf", csrf), ("status", "explained"), ("reason", reason)])
            .send()
            .expect("post")
            .status()
            .as_u16()
    };
    assert_eq!(judge(&registrar, &csrf_of(&finding), "looks fine"), 403);
    let auditor = person(&dir, &server, "auditor", "auditor");
    let (_, finding) = page_of(&auditor, &format!("{}/findings/{id}?lang=en", server.url));
    let csrf = csrf_of(&finding);
    assert_eq!(
        judge(&auditor, "forged", "looks fine"),
        403,
        "no CSRF token, no change"
    );
    assert_eq!(judge(&auditor, &csrf, "  "), 400, "a judgement names why");
    assert_eq!(
        judge(&auditor, &csrf, "the college filed it late; accepted"),
        303
    );
    let (_, finding) = page_of(&auditor, &format!("{}/findings/{id}", server.url));
    assert!(
        finding.contains("— explained — auditor: the college filed it late; accepted"),
        "{finding}"
    );
    assert_eq!(findings_json(&dir)[0]["status"], "explained");
    // The read APIs for people with a sign-in: every college's findings, by month.
    let all: serde_json::Value = auditor
        .get(format!("{}/v1/findings?month=2026-11", server.url))
        .send()
        .and_then(|response| response.json())
        .expect("json");
    assert_eq!(all["findings"].as_array().map(Vec::len), Some(1), "{all:#}");
    // Hostile bodies and queries: refused with the reason, nothing changed.
    let bad_month = auditor
        .get(format!("{}/v1/findings?month=2026-13", server.url))
        .send()
        .expect("get");
    assert_eq!(bad_month.status().as_u16(), 400);
    assert!(bad_month.text().expect("text").contains("month"));
    for body in [
        "",
        "login=",
        "%%%",
        "login=a&password=b&password=c",
        &"x".repeat(100_000),
    ] {
        let status = anonymous
            .post(format!("{}/login", server.url))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.to_owned())
            .send()
            .expect("post")
            .status()
            .as_u16();
        assert!(
            matches!(status, 400 | 401 | 413 | 422),
            "{body:.20}: {status}"
        );
    }
    let garbage = auditor
        .post(format!("{}/findings/{id}/status", server.url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("csrf=&status=")
        .send()
        .expect("post");
    assert!(matches!(garbage.status().as_u16(), 400 | 403 | 422));
    assert_eq!(findings_json(&dir)[0]["status"], "explained", "unchanged");
    let none: serde_json::Value = auditor
        .get(format!("{}/v1/findings?month=2026-10", server.url))
        .send()
        .and_then(|response| response.json())
        .expect("json");
    assert_eq!(none["findings"], serde_json::json!([]));
    // Guessing a password is throttled: after five wrong ones the login is refused
    // for a while, even with the right password (which is not checked).
    let guesser = kasip_tests::http_client();
    for _ in 0..4 {
        let status = guesser
            .post(format!("{}/login", server.url))
            .form(&[("login", "registrar"), ("password", "wrong guess 123")])
            .send()
            .expect("guess")
            .status()
            .as_u16();
        assert_eq!(status, 401);
    }
    let throttled = guesser
        .post(format!("{}/login", server.url))
        .header("accept-language", "en")
        .form(&[
            ("login", "Registrar"),
            ("password", "a long enough password"),
        ])
        .send()
        .expect("login");
    assert_eq!(throttled.status().as_u16(), 429);
    assert!(throttled.headers().contains_key("retry-after"));
    assert!(throttled
        .text()
        .expect("text")
        .contains("Too many wrong passwords for this login."));
    // Signing out ends the session.
    let (_, home) = page_of(&auditor, &format!("{}/", server.url));
    let response = auditor
        .post(format!("{}/logout", server.url))
        .form(&[("csrf", csrf_of(&home))])
        .send()
        .expect("logout");
    assert_eq!(response.status().as_u16(), 303);
    assert_eq!(page_of(&auditor, &format!("{}/", server.url)).0, 401);
}

/// Students' passkey enrolment as a browser's script (or a guesser) calls it: hostile
/// bodies get a sentence and enrol nothing, wrong codes are throttled per IIN, a
/// registry without a relying party says it enrols none; the college page shows the
/// share of check-ins the registry verified.
fn passkey_enrolment_refuses_hostile_bodies_and_the_college_page_shows_the_verified_share(
    store: Store,
) {
    let (dir, server) = registry(store);
    let options = |server: &Server| format!("{}/v1/passkeys/options", server.url);
    let (status, said) = post(&options(&server), r#"{"iin":"060315500016","code":"X"}"#);
    assert_eq!(status, 404);
    assert!(said.contains("enrols no passkeys"), "{said}");
    let anonymous = kasip_tests::http_client();
    let (status, page) = page_of(&anonymous, &format!("{}/passkey?lang=en", server.url));
    assert_eq!(status, 200);
    assert!(
        page.contains("This registry does not enrol passkeys."),
        "{page}"
    );
    drop(server);

    let server = Server::start(REGISTRY, &dir.path(), &["--passkey-rp-id", "kasip.test"]);
    let (status, page) = page_of(&anonymous, &format!("{}/passkey?lang=kk", server.url));
    assert_eq!(status, 200);
    assert!(page.contains("src=\"/passkey.js\"") && page.contains("lang=\"kk\""));
    for (body, status, says) in [
        ("{", 400, "expected JSON"),
        ("[]", 400, "expected JSON"),
        (
            r#"{"iin":"060315500016","code":"X","admin":true}"#,
            400,
            "expected JSON",
        ),
        (r#"{"iin":"12345","code":"X"}"#, 400, "iin"),
        (
            r#"{"iin":"060315500016","code":"WRONG-CODE"}"#,
            403,
            "do not match",
        ),
    ] {
        let (got, said) = post(&options(&server), body);
        assert_eq!(got, status, "{body}: {said}");
        assert!(said.contains(says), "{body}: {said}");
    }
    let finish = format!("{}/v1/passkeys", server.url);
    for (body, status, says) in [
        ("{}", 400, "expected JSON"),
        (
            r#"{"ceremony":"made-up","client_data_json":"e30","attestation_object":"oA"}"#,
            400,
            "start again",
        ),
        (
            r#"{"ceremony":"made-up","client_data_json":"!!","attestation_object":"oA"}"#,
            400,
            "base64url",
        ),
    ] {
        let (got, said) = post(&finish, body);
        assert_eq!(got, status, "{body}: {said}");
        assert!(said.contains(says), "{body}: {said}");
    }
    // Wrong codes for one IIN: the fifth is the last answered; then 429, even for the
    // right code, while another student is not slowed.
    let code = run(
        REGISTRY,
        &dir.path(),
        &["issue-student-code", "060315500016"],
    );
    assert!(code.status.success(), "{:?}", text(&code));
    let code = text(&code).0.trim().to_owned();
    for _ in 0..4 {
        let (got, _) = post(
            &options(&server),
            r#"{"iin":"060315500016","code":"WRONG"}"#,
        );
        assert_eq!(got, 403);
    }
    let (got, said) = post(
        &options(&server),
        &format!(r#"{{"iin":"060315500016","code":"{code}"}}"#),
    );
    assert_eq!(got, 429, "{said}");
    let (got, _) = post(
        &options(&server),
        r#"{"iin":"070412600021","code":"WRONG"}"#,
    );
    assert_eq!(got, 403);
    assert_eq!(
        registry_query(&dir, "SELECT COUNT(*) FROM student_passkeys"),
        "0"
    );

    // Verdicts as receipts leave them: 2 of 3 November check-ins verified.
    for (id, verified) in [(1, 1), (2, 0), (3, 1)] {
        registry_query(
            &dir,
            &format!(
                "INSERT INTO passkey_marks (bin, record_id, date, verified, reason)
                 VALUES ('{BIN}', {id}, '2026-11-20', {verified}, '')"
            ),
        );
    }
    let set = run(REGISTRY, &dir.path(), &["require-passkey", "--bin", BIN]);
    assert!(set.status.success(), "{:?}", text(&set));
    let registrar = person(&dir, &server, "registrar", "registrar");
    let (status, page) = page_of(
        &registrar,
        &format!("{}/colleges/{BIN}?lang=en", server.url),
    );
    assert_eq!(status, 200);
    assert!(
        page.contains("<tr><td>2026-11</td><td>3</td><td>2</td><td>66.7%</td></tr>"),
        "{page}"
    );
    assert!(page.contains("only these count as QR"), "{page}");
}

/// The registry's pages as a registrar's phone and a student's phone draw them, in kk, ru
/// and en at 320 px: axe-core (vendored, `tests/vendor/axe-core`; WCAG 2.0–2.2 A/AA with
/// target size, and best practices) finds nothing, and nothing scrolls sideways.
fn the_registrys_pages_pass_axe_in_every_language_at_320_px(store: Store) {
    use kasip_tests::webdriver::Browser;
    let (dir, server) = registry(store);
    drop(person(&dir, &server, "registrar", "registrar"));
    // A finding to show: a November mark after November's statement.
    a_mark_after_the_statement(&dir, &server);

    let browser = Browser::start();
    browser.cdp(
        "Emulation.setDeviceMetricsOverride",
        serde_json::json!({"width": 320, "height": 720, "deviceScaleFactor": 2, "mobile": true}),
    );
    let mut found = Vec::new();
    let mut runs = 0;
    let mut audit = |name: &str, lang: &str| {
        runs += 1;
        for violation in browser.axe() {
            found.push(format!("{name} [{lang}]: {violation}"));
        }
        let widths = browser.execute(
            "return [document.documentElement.scrollWidth, document.documentElement.clientWidth]",
        );
        if widths[0].as_i64() > widths[1].as_i64() {
            found.push(format!(
                "{name} [{lang}]: scrolls sideways at 320 px: {widths}"
            ));
        }
        browser.screenshot(&kasip_tests::screenshot_path(&format!(
            "registry-{lang}-{name}"
        )));
    };
    for lang in ["kk", "ru", "en"] {
        // A student's phone, before any sign-in.
        browser.goto(&format!("{}/passkey?lang={lang}", server.url));
        audit("passkey", lang);
        browser.goto(&format!("{}/login?lang={lang}", server.url));
        audit("login", lang);
        browser.type_into("input[name=login]", "registrar");
        browser.type_into("input[name=password]", "a long enough password");
        browser.click("form[action='/login'] button");
        browser.wait_for("return location.pathname === '/'", "the sign-in");
        audit("colleges", lang);
        for (name, path) in [
            ("college", format!("/colleges/{BIN}")),
            ("finding", "/findings/1".into()),
        ] {
            browser.goto(&format!("{}{path}?lang={lang}", server.url));
            audit(name, lang);
        }
        browser.execute("document.querySelector('form[action=\"/logout\"]').submit()");
        browser.wait_for(
            "return location.pathname !== '/findings/1' && document.readyState === 'complete'",
            "the sign-out",
        );
    }
    assert_eq!(runs, 15);
    assert!(
        found.is_empty(),
        "in {runs} page runs:\n{}",
        found.join("\n")
    );
}
