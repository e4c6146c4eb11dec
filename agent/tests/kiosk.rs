//! Kiosks end to end (design §5.3): real `kasip-agent` and `kasip-kiosk` processes on a
//! test clock. Phones register pass keys the way `/pass` does (P-256, proof pass); the
//! kiosk reads synthetic 1280×720 camera frames, decides offline, and forwards to the
//! agent, which marks the lesson in the kiosk's room once per scan.

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use common::{lesson_start_plus_one_minute, College, AGENT};
use kasip_tests::frames::{qr_frame, FrameStyle};
use kasip_tests::reqwest::blocking::Client;
use kasip_tests::webdriver::{zbar_decode, Browser};
use kasip_tests::{run_with, text, workspace_binary, Server, TempDataDir};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};

fn now() -> i64 {
    lesson_start_plus_one_minute()
}

fn key_pair() -> EcdsaKeyPair {
    let random = SystemRandom::new();
    let pkcs8 =
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &random).expect("P-256 key");
    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &random)
        .expect("load key")
}

fn base64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// `KP1.{student}.{t}.{sig}` signed as the phone's WebCrypto key signs it.
fn pass(key: &EcdsaKeyPair, iin: &str, signed_at: i64) -> String {
    let text = format!("KP1.{iin}.{signed_at}");
    let signature = key
        .sign(&SystemRandom::new(), text.as_bytes())
        .expect("sign");
    format!("{text}.{}", base64url(signature.as_ref()))
}

fn attribute(html: &str, name: &str) -> String {
    let marker = format!("{name}=\"");
    let start = html.find(&marker).expect("attribute") + marker.len();
    html[start..].chars().take_while(|c| *c != '"').collect()
}

/// What `/pass` does on a bound phone: loads the page (CSRF cookie), makes a key,
/// registers its public half with a proof pass.
fn register_pass_key(college: &College, phone: &Client, iin: &str) -> EcdsaKeyPair {
    let page = phone
        .get(college.url("/pass"))
        .send()
        .expect("pass page")
        .text()
        .expect("body");
    assert!(page.contains("/pass.js"), "{page}");
    let key = key_pair();
    let response = phone
        .post(college.url("/pass/key"))
        .header("x-kasip-csrf", attribute(&page, "data-csrf"))
        .json(&json!({
            "public_key": base64url(key.public_key().as_ref()),
            "proof": pass(&key, iin, now()),
        }))
        .send()
        .expect("register");
    assert_eq!(
        response.status(),
        200,
        "{}",
        response.text().unwrap_or_default()
    );
    key
}

/// A student with a bound phone and a registered pass key.
fn student_with_pass(college: &College, iin: &str) -> EcdsaKeyPair {
    let phone = college.bound_phone(iin);
    register_pass_key(college, &phone, iin)
}

/// A kiosk process's data dir, enrolled with the college's agent.
struct Kiosk {
    dir: TempDataDir,
    binary: String,
    clock: String,
    frames: std::cell::Cell<usize>,
}

impl Kiosk {
    fn enrol(college: &College, place: &[&str]) -> Kiosk {
        let mut args = vec!["kiosk", "add"];
        args.extend_from_slice(place);
        let output = run_with(AGENT, &college.dir.path(), &args, &[], None);
        let (stdout, stderr) = text(&output);
        assert!(output.status.success(), "{stdout}{stderr}");
        let value_after = |label: &str| {
            stdout
                .lines()
                .find_map(|line| line.strip_prefix(label))
                .and_then(|rest| rest.split_whitespace().next())
                .unwrap_or_else(|| panic!("no '{label}' in {stdout}"))
                .to_owned()
        };
        let code = value_after("enrolment code: ");
        let fingerprint = value_after("agent certificate SHA-256: ");
        assert_eq!(fingerprint.len(), 64, "{stdout}");
        let kiosk = Kiosk {
            dir: TempDataDir::new(),
            binary: workspace_binary("kasip-kiosk"),
            clock: college.clock_file.display().to_string(),
            frames: std::cell::Cell::new(0),
        };
        let output = kiosk.run(&[
            "enroll",
            "--agent",
            &college.server.url,
            "--code",
            &code,
            "--fingerprint",
            &fingerprint,
        ]);
        let (stdout, stderr) = text(&output);
        assert!(output.status.success(), "{stdout}{stderr}");
        assert!(stdout.contains("enrolled as kiosk"), "{stdout}");
        kiosk
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.binary);
        command
            .arg("--data-dir")
            .arg(self.dir.path())
            .args(args)
            .env("KASIP_UNSAFE_CLOCK_FILE", &self.clock)
            .env_remove("KASIP_KIOSK_DATA_DIR");
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run kasip-kiosk")
    }

    /// Writes the frames to a fresh directory and runs them through the kiosk once:
    /// one stdout line per frame, then the forwarding line.
    fn scan(&self, frames: &[Vec<u8>]) -> Vec<String> {
        let batch = self.frames.get();
        self.frames.set(batch + 1);
        let folder = self.dir.file(&format!("frames-{batch}"));
        fs::create_dir_all(&folder).expect("frames dir");
        for (index, frame) in frames.iter().enumerate() {
            fs::write(folder.join(format!("{index:03}.png")), frame).expect("frame");
        }
        let output = self.run(&[
            "run",
            "--frames",
            folder.to_str().expect("path"),
            "--once",
            "--status-listen",
            "off",
            "--repeat-secs",
            "0",
        ]);
        let (stdout, stderr) = text(&output);
        assert!(output.status.success(), "{stdout}{stderr}");
        stdout.lines().map(str::to_owned).collect()
    }

    fn status(&self) -> Value {
        let output = self.run(&["status", "--json"]);
        assert!(output.status.success(), "{:?}", text(&output));
        serde_json::from_slice(&output.stdout).expect("json")
    }
}

fn frame(text: &str) -> Vec<u8> {
    qr_frame(text, &FrameStyle::default())
}

fn verdicts(lines: &[String]) -> Vec<(String, String)> {
    lines
        .iter()
        .filter(|line| line.starts_with("ACCEPT") || line.starts_with("REFUSE"))
        .map(|line| {
            let mut fields = line.split('\t');
            let kind = fields.next().unwrap_or_default().to_owned();
            let detail = fields.next().unwrap_or_default().to_owned();
            (kind, detail)
        })
        .collect()
}

fn kiosk_marks(college: &College) -> i64 {
    college.count("SELECT COUNT(*) FROM attendance_events WHERE method = 'qr_kiosk'")
}

#[test]
fn room_kiosk_reads_hard_frames_offline_and_the_agent_marks_each_student_once() {
    let college = College::new(6);
    let keys: Vec<EcdsaKeyPair> = college
        .group_a
        .iter()
        .map(|iin| student_with_pass(&college, iin))
        .collect();
    let kiosk = Kiosk::enrol(&college, &["--room", "101"]);
    assert_eq!(kiosk.status()["queue"]["pass_holders"], 6);

    // Each student's pass in one of the hard conditions of a kiosk camera.
    let frames: Vec<Vec<u8>> = FrameStyle::hard_cases()
        .iter()
        .zip(college.group_a.iter().zip(&keys))
        .map(|((_, style), (iin, key))| qr_frame(&pass(key, iin, now() - 3), style))
        .collect();
    let lines = kiosk.scan(&frames);
    let accepted: Vec<String> = verdicts(&lines)
        .into_iter()
        .filter(|(kind, _)| kind == "ACCEPT")
        .map(|(_, iin)| iin)
        .collect();
    assert_eq!(accepted, college.group_a, "{lines:?}");
    assert!(
        lines.contains(&"forwarded 6 scan(s) to the agent".to_owned()),
        "{lines:?}"
    );

    // The agent marked the lesson in room 101 (ПО-21, 09:00) once per student, with
    // method qr_kiosk, and its chain still verifies.
    assert_eq!(kiosk_marks(&college), 6);
    assert_eq!(
        college.count(&format!(
            "SELECT COUNT(DISTINCT student_iin) FROM attendance_events WHERE lesson_id = {} AND method = 'qr_kiosk'",
            college.lesson_a
        )),
        6
    );
    let verify = run_with(AGENT, &college.dir.path(), &["verify"], &[], None);
    assert!(verify.status.success(), "{:?}", text(&verify));
    assert_eq!(kiosk.status()["queue"]["waiting"], 0);
    assert_eq!(kiosk.status()["queue"]["forwarded"], 6);

    // The same student scanned again later with a new pass: accepted by the kiosk,
    // the agent answers with the existing mark (no second mark for the lesson).
    college.set_clock(now() + 60);
    let lines = kiosk.scan(&[frame(&pass(&keys[0], &college.group_a[0], now() + 58))]);
    assert_eq!(verdicts(&lines)[0].0, "ACCEPT", "{lines:?}");
    assert_eq!(kiosk_marks(&college), 6);
}

#[test]
fn refusals_at_the_kiosk_name_the_reason_and_nothing_reaches_the_agent() {
    let college = College::new(4);
    let [alice, bob, carol, dana] = [0, 1, 2, 3].map(|index| college.group_a[index].clone());
    let alice_key = student_with_pass(&college, &alice);
    let bob_key = student_with_pass(&college, &bob);
    let dana_key = student_with_pass(&college, &dana);
    // Dana is expelled after registering; the kiosk learns it from the key list.
    let expelled = college.dir.file("expelled.csv");
    fs::write(
        &expelled,
        format!("iin;last_name;first_name;group;beneficiary;status\n{dana};Студент3;Әлия;ПО-21;да;expelled\n"),
    )
    .expect("csv");
    let output = run_with(
        AGENT,
        &college.dir.path(),
        &["import", "students", expelled.to_str().expect("path")],
        &[],
        None,
    );
    assert!(output.status.success(), "{:?}", text(&output));
    let kiosk = Kiosk::enrol(&college, &["--room", "101"]);

    let good = pass(&alice_key, &alice, now());
    let stranger = key_pair();
    let frames = vec![
        frame(&good),
        frame(&good),                             // replayed
        frame(&pass(&bob_key, &bob, now() - 31)), // 31 s old
        frame(&pass(&bob_key, &bob, now() + 31)), // from the future
        frame(&pass(&stranger, &bob, now())),     // forged: not Bob's key
        frame(&pass(&stranger, &carol, now())),   // Carol never registered a key
        frame(&pass(&dana_key, &dana, now())),    // expelled
        frame("https://example.org/not-a-pass"),  // some other QR code
    ];
    let lines = kiosk.scan(&frames);
    let expected = [
        ("ACCEPT", alice.as_str()),
        ("REFUSE", "replayed"),
        ("REFUSE", "stale"),
        ("REFUSE", "from_the_future"),
        ("REFUSE", "forged"),
        ("REFUSE", "unknown_student"),
        ("REFUSE", "inactive"),
        ("REFUSE", "not_a_pass"),
    ];
    let got = verdicts(&lines);
    assert_eq!(
        got.iter()
            .map(|(kind, detail)| (kind.as_str(), detail.as_str()))
            .collect::<Vec<_>>(),
        expected,
        "{lines:?}"
    );
    // Each refusal line says why in words a student can act on.
    assert!(lines
        .iter()
        .any(|line| line.contains("this pass was already used")));
    assert!(lines
        .iter()
        .any(|line| line.contains("do not show a screenshot")));
    // Alice's scan is the one mark; every refused pass (not the stray URL) reached the
    // agent as a security event, checked again there.
    assert!(
        lines.contains(&"forwarded 1 scan(s) to the agent; reported 6 refused pass(es)".to_owned()),
        "{lines:?}"
    );
    assert_eq!(kiosk_marks(&college), 1);
    assert_eq!(kiosk.status()["queue"]["forwarded"], 7);
    assert_eq!(kiosk.status()["queue"]["refusals_reported"], 6);
    for (kind, count) in [
        ("kiosk_replayed_pass", 1),
        ("kiosk_stale_pass", 1),
        ("kiosk_pass_from_the_future", 1),
        ("kiosk_forged_pass", 2), // Bob's forged pass; Carol has no key at all
        ("kiosk_student_inactive", 1),
    ] {
        assert_eq!(college.security_events(kind), count, "{kind}");
    }
    assert_eq!(
        college.count(&format!(
            "SELECT COUNT(*) FROM attendance_events WHERE student_iin IN ('{bob}', '{carol}', '{dana}')"
        )),
        0
    );
}

#[test]
fn with_the_agent_down_scans_wait_survive_a_kiosk_restart_and_arrive_exactly_once() {
    let mut college = College::new(3);
    let keys: Vec<EcdsaKeyPair> = college
        .group_a
        .iter()
        .map(|iin| student_with_pass(&college, iin))
        .collect();
    let kiosk = Kiosk::enrol(&college, &["--room", "101"]);
    let port = college.server.address();
    college.server.kill();

    let passes: Vec<String> = college
        .group_a
        .iter()
        .zip(&keys)
        .map(|(iin, key)| pass(key, iin, now()))
        .collect();
    let frames: Vec<Vec<u8>> = passes.iter().map(|text| frame(text)).collect();
    let lines = kiosk.scan(&frames);
    assert_eq!(
        verdicts(&lines)
            .iter()
            .filter(|(kind, _)| kind == "ACCEPT")
            .count(),
        3,
        "offline, the kiosk still decides: {lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|line| line.starts_with("3 scan(s) wait for the agent")),
        "{lines:?}"
    );

    // A restarted kiosk keeps its queue and its replay cache: the same passes again
    // are replays (queued only as reports for the agent's security log).
    let again = kiosk.scan(&frames);
    assert!(
        verdicts(&again)
            .iter()
            .all(|(kind, detail)| kind == "REFUSE" && detail == "replayed"),
        "{again:?}"
    );
    assert_eq!(kiosk.status()["queue"]["waiting"], 6);

    // The agent comes back on its address; the kiosk forwards each scan once.
    let clock = college.clock_file.display().to_string();
    college.server = Server::start_with_env(
        AGENT,
        &college.dir.path(),
        &["--listen", &port],
        &[("KASIP_UNSAFE_CLOCK_FILE", clock.as_str())],
    );
    let output = kiosk.run(&["sync"]);
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("forwarded 3 scan(s) to the agent; reported 3 refused pass(es)"),
        "{stdout}"
    );
    let output = kiosk.run(&["sync"]);
    assert!(
        text(&output).0.contains("forwarded 0 scan(s)"),
        "{:?}",
        text(&output)
    );
    assert_eq!(kiosk_marks(&college), 3);
    assert_eq!(college.security_events("kiosk_replayed_pass"), 3);
    assert_eq!(college.count("SELECT COUNT(*) FROM kiosk_scans"), 6);

    // An upload the agent stored but whose answer was lost is sent again: same answer,
    // no second mark (idempotent by scan id).
    let database = rusqlite::Connection::open(kiosk.dir.path().join("kiosk.db")).expect("db");
    database
        .execute("UPDATE scan_queue SET forwarded_at = NULL", [])
        .expect("forget delivery");
    drop(database);
    let output = kiosk.run(&["sync"]);
    assert!(
        text(&output).0.contains("forwarded 3 scan(s)"),
        "{:?}",
        text(&output)
    );
    assert_eq!(kiosk_marks(&college), 3);
    assert_eq!(college.count("SELECT COUNT(*) FROM kiosk_scans"), 6);
    assert_eq!(
        college.security_events("kiosk_replayed_pass"),
        3,
        "no second event either"
    );
}

#[test]
fn an_entrance_kiosk_records_campus_presence_shown_on_the_student_page_and_flags_who_skipped_it() {
    let college = College::new(2);
    let iin = college.group_a[0].clone();
    let key = student_with_pass(&college, &iin);
    let other = college.group_a[1].clone();
    let other_key = student_with_pass(&college, &other);
    let kiosk = Kiosk::enrol(&college, &["--entrance", "Главный корпус"]);
    let lines = kiosk.scan(&[frame(&pass(&key, &iin, now()))]);
    assert_eq!(verdicts(&lines)[0].0, "ACCEPT", "{lines:?}");
    assert_eq!(kiosk_marks(&college), 0, "an entrance marks no lesson");
    // Both are marked in room 101 of that site; only the first came through the door.
    let door = Kiosk::enrol(&college, &["--room", "101"]);
    let lines = door.scan(&[
        frame(&pass(&key, &iin, now() - 1)),
        frame(&pass(&other_key, &other, now() - 1)),
    ]);
    assert_eq!(verdicts(&lines).len(), 2, "{lines:?}");
    assert_eq!(kiosk_marks(&college), 2);
    let output = run_with(
        AGENT,
        &college.dir.path(),
        &["red-flags", "--month", "2026-11", "--json"],
        &[],
        None,
    );
    assert!(output.status.success(), "{:?}", text(&output));
    let flags: Value = serde_json::from_slice(&output.stdout).expect("json");
    let skipped: Vec<&Value> = flags
        .as_array()
        .expect("flags")
        .iter()
        .filter(|flag| flag["kind"] == "in_class_not_on_campus")
        .collect();
    assert_eq!(skipped.len(), 1, "{flags}");
    assert_eq!(skipped[0]["subject"], other.as_str());
    assert!(
        skipped[0]["detail"]
            .as_str()
            .unwrap_or("")
            .contains("Главный корпус on 1 day(s)"),
        "{}",
        skipped[0]
    );
    assert_eq!(
        college.count("SELECT COUNT(*) FROM kiosk_scans WHERE outcome = 'presence'"),
        1
    );
    let admin = college.teacher("admin");
    let page = admin
        .get(college.url(&format!("/admin/student?iin={iin}&month=2026-11&lang=en")))
        .send()
        .expect("student page")
        .text()
        .expect("body");
    let presence = &page[page.find("id=campus-presence").expect("presence table")..];
    assert!(presence.contains("2026-11-23 09:01"), "{presence}");
    assert!(presence.contains("Главный корпус"), "{presence}");

    // An entrance must name a known site; a room may be added before its lessons.
    let output = run_with(
        AGENT,
        &college.dir.path(),
        &["kiosk", "add", "--entrance", "Nowhere"],
        &[],
        None,
    );
    assert!(!output.status.success());
    assert!(
        text(&output)
            .1
            .contains("no site named 'Nowhere' (known sites: Главный корпус)"),
        "{:?}",
        text(&output)
    );
}

/// What a kiosk sends, made by hand.
fn upload(college: &College, credential: &str, scans: Value) -> (u16, Value) {
    let response = kasip_tests::browser(&college.dir.path())
        .post(college.url("/kiosk/scans"))
        .bearer_auth(credential)
        .json(&json!({ "scans": scans }))
        .send()
        .expect("upload");
    let status = response.status().as_u16();
    (status, response.json().unwrap_or(Value::Null))
}

fn credential_of(kiosk: &Kiosk) -> String {
    fs::read_to_string(kiosk.dir.path().join("credential")).expect("credential")
}

/// The attack table's "replayed pass" row (and a stolen credential inventing passes).
#[test]
fn the_agent_checks_every_forwarded_scan_again_and_counts_a_replayed_pass_once() {
    let college = College::new(3);
    let alice = college.group_a[0].clone();
    let alice_key = student_with_pass(&college, &alice);
    let door = Kiosk::enrol(&college, &["--room", "101"]);
    let other_door = Kiosk::enrol(&college, &["--room", "101"]);
    let credential = credential_of(&door);
    let scan =
        |id: &str, text: &str, at: i64| json!([{ "id": id, "pass": text, "scanned_at": at }]);

    // A stolen kiosk credential cannot invent attendance: the agent verifies the pass.
    let forged = pass(&key_pair(), &alice, now());
    let (status, body) = upload(&college, &credential, scan("forged-1", &forged, now()));
    assert_eq!(status, 200);
    assert_eq!(body["results"][0]["outcome"], "refused");
    assert_eq!(body["results"][0]["reason"], "forged_pass");
    let stale = pass(&alice_key, &alice, now() - 100);
    let (_, body) = upload(&college, &credential, scan("stale-1", &stale, now()));
    assert_eq!(body["results"][0]["reason"], "stale_pass");
    let (_, body) = upload(&college, &credential, scan("junk-1", "KP1.junk", now()));
    assert_eq!(body["results"][0]["reason"], "malformed_pass");
    assert_eq!(kiosk_marks(&college), 0);
    assert_eq!(college.security_events("kiosk_forged_pass"), 1);

    // One pass shown at two doors counts once: the second kiosk's scan is a replay.
    let good = pass(&alice_key, &alice, now());
    let (_, body) = upload(&college, &credential, scan("door-1", &good, now()));
    assert_eq!(body["results"][0]["outcome"], "marked");
    let (_, body) = upload(
        &college,
        &credential_of(&other_door),
        scan("door-2", &good, now()),
    );
    assert_eq!(body["results"][0]["reason"], "replayed_pass");
    assert_eq!(kiosk_marks(&college), 1);
    assert_eq!(college.security_events("kiosk_replayed_pass"), 1);
}

/// The attack table's "kiosk with a revoked credential" row.
#[test]
fn a_revoked_kiosk_credential_is_refused_and_records_nothing() {
    let college = College::new(3);
    let alice = college.group_a[0].clone();
    let alice_key = student_with_pass(&college, &alice);
    let door = Kiosk::enrol(&college, &["--room", "101"]);
    let other_door = Kiosk::enrol(&college, &["--room", "101"]);
    let credential = credential_of(&door);
    let scan =
        |id: &str, text: &str, at: i64| json!([{ "id": id, "pass": text, "scanned_at": at }]);
    let good = pass(&alice_key, &alice, now());

    // Revoked: the credential stops working at once, with a sentence that says so; the
    // kiosk keeps what it scanned.
    let bob = college.group_a[1].clone();
    let bob_key = student_with_pass(&college, &bob);
    assert!(
        door.run(&["sync"]).status.success(),
        "the door pulls Bob's key"
    );
    let output = run_with(
        AGENT,
        &college.dir.path(),
        &["kiosk", "revoke", "1"],
        &[],
        None,
    );
    assert!(output.status.success(), "{:?}", text(&output));
    let before = college.recorded();
    let (status, body) = upload(&college, &credential, scan("after-1", &good, now()));
    assert_eq!(status, 401);
    assert!(
        body["error"].as_str().unwrap_or("").contains("revoked"),
        "{body}"
    );
    let lines = door.scan(&[frame(&pass(&bob_key, &bob, now()))]);
    assert!(
        lines.iter().any(|line| line.contains("was revoked")),
        "{lines:?}"
    );
    let output = door.run(&["sync"]);
    assert!(!output.status.success());
    assert!(text(&output).1.contains("revoked"), "{:?}", text(&output));
    assert_eq!(door.status()["queue"]["waiting"], 1);
    let listed = run_with(
        AGENT,
        &college.dir.path(),
        &["kiosk", "list", "--json"],
        &[],
        None,
    );
    let listed: Value = serde_json::from_slice(&listed.stdout).expect("json");
    assert_eq!(listed[0]["state"], "revoked");
    assert_eq!(listed[1]["state"], "enrolled");
    college.recorded().assert_unchanged_since(&before);
    assert_eq!(kiosk_marks(&college), 0);
    drop(other_door);
}

#[test]
fn hostile_kiosk_and_pass_requests_are_refused_and_change_nothing() {
    let college = College::new(2);
    let client = kasip_tests::browser(&college.dir.path());
    let marks_before = college.marks();
    // No credential, a wrong one, a malformed header.
    for auth in [
        None,
        Some("Bearer nope"),
        Some("Basic abc"),
        Some("Bearer "),
    ] {
        let mut request = client.get(college.url("/kiosk/keys"));
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        let response = request.send().expect("keys");
        assert_eq!(response.status(), 401, "{auth:?}");
        let body: Value = response.json().expect("json error");
        assert!(
            body["error"].as_str().unwrap_or("").contains("enrol"),
            "{body}"
        );
    }
    let kiosk = Kiosk::enrol(&college, &["--room", "101"]);
    let credential = credential_of(&kiosk);
    let post = |body: &[u8]| {
        let response = client
            .post(college.url("/kiosk/scans"))
            .bearer_auth(&credential)
            .header("content-type", "application/json")
            .body(body.to_vec())
            .send()
            .expect("post");
        let status = response.status().as_u16();
        (status, response.text().unwrap_or_default())
    };
    let too_many: Vec<Value> = (0..=kasip_agent::kiosks::MAX_SCANS_PER_UPLOAD)
        .map(|index| json!({"id": format!("s{index}"), "pass": "x", "scanned_at": 1}))
        .collect();
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (b"not json".to_vec(), 400, "expected"),
        (b"{}".to_vec(), 400, "scans"),
        (
            br#"{"scans": [{"id": "a", "pass": 5, "scanned_at": 1}]}"#.to_vec(),
            400,
            "expected",
        ),
        (
            br#"{"scans": [{"id": "../../etc", "pass": "x", "scanned_at": 1}]}"#.to_vec(),
            400,
            "letters, digits",
        ),
        (
            format!(
                r#"{{"scans": [{{"id": "{}", "pass": "x", "scanned_at": 1}}]}}"#,
                "a".repeat(65)
            )
            .into_bytes(),
            400,
            "letters, digits",
        ),
        (
            br#"{"scans": [{"id": "a", "pass": "x", "scanned_at": 99999999999999999999}]}"#
                .to_vec(),
            400,
            "expected",
        ),
        (
            json!({ "scans": too_many }).to_string().into_bytes(),
            413,
            "at most 250",
        ),
        (vec![b'['; 70_000], 413, ""),
    ];
    for (body, status, message) in cases {
        let (got, text) = post(&body);
        assert_eq!(
            got,
            status,
            "{}: {text}",
            String::from_utf8_lossy(&body[..body.len().min(60)])
        );
        assert!(text.contains(message), "{text}");
    }
    // A pass as long as a novel, a SQL-looking one: refused as malformed, stored once.
    let (status, text) = post(
        json!({"scans": [
            {"id": "long", "pass": "K".repeat(10_000), "scanned_at": now()},
            {"id": "sql", "pass": "KP1.'; DROP TABLE students; --", "scanned_at": now()},
        ]})
        .to_string()
        .as_bytes(),
    );
    assert_eq!(status, 200, "{text}");
    assert_eq!(text.matches("malformed_pass").count(), 2, "{text}");
    assert_eq!(college.marks(), marks_before);
    assert_eq!(college.count("SELECT COUNT(*) FROM students"), 5);

    // Enrolment codes cannot be guessed: five wrong codes lock enrolment for a while.
    for attempt in 0..5 {
        let response = client
            .post(college.url("/kiosk/enroll"))
            .json(&json!({"code": format!("guess-{attempt}")}))
            .send()
            .expect("enrol");
        assert_eq!(response.status(), 401);
    }
    let response = client
        .post(college.url("/kiosk/enroll"))
        .json(&json!({"code": "guess-6"}))
        .send()
        .expect("enrol");
    assert_eq!(response.status(), 429);

    // Pass key registration: CSRF, binding and proof are all required.
    let phone = college.bound_phone(&college.group_a[0]);
    let key = key_pair();
    let body = json!({"public_key": base64url(key.public_key().as_ref()), "proof": pass(&key, &college.group_a[0], now())});
    let response = phone
        .post(college.url("/pass/key"))
        .json(&body)
        .send()
        .expect("post");
    assert_eq!(response.status(), 403, "no CSRF token");
    let page = phone
        .get(college.url("/pass"))
        .send()
        .expect("page")
        .text()
        .expect("body");
    let csrf = attribute(&page, "data-csrf");
    let register = |body: &Value| {
        phone
            .post(college.url("/pass/key"))
            .header("x-kasip-csrf", &csrf)
            .json(body)
            .send()
            .expect("post")
            .status()
            .as_u16()
    };
    let other = key_pair();
    assert_eq!(
        register(
            &json!({"public_key": base64url(key.public_key().as_ref()), "proof": pass(&other, &college.group_a[0], now())})
        ),
        400,
        "a proof signed by another key"
    );
    assert_eq!(
        register(
            &json!({"public_key": base64url(key.public_key().as_ref()), "proof": pass(&key, &college.group_a[1], now())})
        ),
        400,
        "a proof for another student"
    );
    assert_eq!(
        register(
            &json!({"public_key": base64url(key.public_key().as_ref()), "proof": pass(&key, &college.group_a[0], now() - 3600)})
        ),
        400,
        "an old proof"
    );
    assert_eq!(register(&json!({"public_key": "AAAA", "proof": "x"})), 400);
    assert_eq!(college.count("SELECT COUNT(*) FROM pass_keys"), 0);
    assert_eq!(register(&body), 200);
    assert_eq!(
        college.count("SELECT COUNT(*) FROM pass_keys WHERE replaced_at IS NULL"),
        1
    );
    // Rebinding the phone replaces the key: the kiosk list no longer carries it.
    college.bind(&college.phone(), &college.group_a[0]);
    assert_eq!(
        college.count("SELECT COUNT(*) FROM pass_keys WHERE replaced_at IS NULL"),
        0
    );
    let unbound = kasip_tests::browser(&college.dir.path());
    let response = unbound
        .get(college.url("/pass?lang=en"))
        .send()
        .expect("page");
    assert_eq!(response.status(), 401);
    assert!(response.text().expect("body").contains("not linked"));
}

#[test]
fn a_wedge_scanner_and_an_image_stream_feed_a_running_kiosk_and_its_status_page() {
    let college = College::new(3);
    let keys: Vec<EcdsaKeyPair> = college.group_a[..2]
        .iter()
        .map(|iin| student_with_pass(&college, iin))
        .collect();
    // A student of another group, whose lesson is not in this room.
    let elsewhere = college.group_b[0].clone();
    let elsewhere_key = student_with_pass(&college, &elsewhere);
    let kiosk = Kiosk::enrol(&college, &["--room", "101"]);

    // Keyboard-wedge scanner: one pass per line.
    let mut wedge = kiosk
        .command(&["run", "--wedge", "--once", "--status-listen", "off"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("kiosk");
    let mut stdin = wedge.stdin.take().expect("stdin");
    writeln!(stdin, "{}", pass(&keys[0], &college.group_a[0], now())).expect("write");
    writeln!(stdin, "garbage from a scanner").expect("write");
    drop(stdin);
    let output = wedge.wait_with_output().expect("wait");
    let lines: Vec<String> = text(&output).0.lines().map(str::to_owned).collect();
    assert_eq!(
        verdicts(&lines),
        [
            ("ACCEPT".to_owned(), college.group_a[0].clone()),
            ("REFUSE".to_owned(), "not_a_pass".to_owned())
        ],
        "{lines:?}"
    );
    assert_eq!(kiosk_marks(&college), 1);

    // A long-running kiosk reading PNGs from stdin, with its status page and forwarder.
    let mut running = kiosk
        .command(&[
            "run",
            "--frames",
            "-",
            "--status-listen",
            "127.0.0.1:0",
            "--repeat-secs",
            "0",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("kiosk");
    let mut stdin = running.stdin.take().expect("stdin");
    let mut stdout = BufReader::new(running.stdout.take().expect("stdout")).lines();
    let status_line = stdout.next().expect("a line").expect("utf-8");
    let status_url = status_line
        .strip_prefix("status page ")
        .expect("status page line")
        .to_owned();
    let page_client = kasip_tests::http_client();
    let page = page_client
        .get(&status_url)
        .send()
        .expect("page")
        .text()
        .expect("body");
    assert!(
        page.contains("Покажите пропуск камере"),
        "the page speaks ru, kk and en"
    );
    let before: Value = page_client
        .get(format!("{status_url}status.json"))
        .send()
        .expect("status")
        .json()
        .expect("json");
    stdin
        .write_all(&frame(&pass(&keys[1], &college.group_a[1], now())))
        .expect("frame");
    stdin.flush().expect("flush");
    let line = stdout.next().expect("a verdict").expect("utf-8");
    assert!(
        line.starts_with(&format!("ACCEPT\t{}", college.group_a[1])),
        "{line}"
    );
    // The page's long poll answers with the verdict.
    let screen: Value = page_client
        .get(format!("{status_url}status.json?after={}", before["seq"]))
        .send()
        .expect("status")
        .json()
        .expect("json");
    assert_eq!(screen["state"], "accepted");
    assert!(
        screen["name"]
            .as_str()
            .unwrap_or("")
            .starts_with("Студент1"),
        "{screen}"
    );
    // The forwarder delivers without being asked.
    let deadline = Instant::now() + Duration::from_secs(30);
    while kiosk_marks(&college) < 2 {
        assert!(
            Instant::now() < deadline,
            "the running kiosk did not forward its scan"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // A student of another group has no lesson in this room now: the pass is genuine,
    // the screen turns green, and when the agent answers that nothing was marked it says
    // so instead.
    let accepted: Value = page_client
        .get(format!("{status_url}status.json"))
        .send()
        .expect("status")
        .json()
        .expect("json");
    stdin
        .write_all(&frame(&pass(&elsewhere_key, &elsewhere, now())))
        .expect("frame");
    stdin.flush().expect("flush");
    let line = stdout.next().expect("a verdict").expect("utf-8");
    assert!(line.starts_with(&format!("ACCEPT\t{elsewhere}")), "{line}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = accepted["seq"].as_u64().expect("seq");
    loop {
        let screen: Value = page_client
            .get(format!("{status_url}status.json?after={seen}"))
            .send()
            .expect("status")
            .json()
            .expect("json");
        seen = screen["seq"].as_u64().expect("seq");
        if screen["state"] == "no_lesson" {
            assert!(
                !screen["name"].as_str().unwrap_or("").is_empty(),
                "{screen}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the screen never said no lesson: {screen}"
        );
    }
    assert!(page.contains("\"no_lesson\":\"Не отмечено: сейчас здесь нет занятия вашей группы\""));
    assert_eq!(
        kiosk_marks(&college),
        2,
        "nothing marked for the other group"
    );
    // The screen in Chromium, in each language and each state: axe finds nothing.
    let browser = kasip_tests::webdriver::Browser::start();
    let mut found = Vec::new();
    for lang in ["kk", "ru", "en"] {
        browser.goto(&format!("{status_url}?lang={lang}"));
        for state in [
            "{state: 'idle', name: ''}",
            "{state: 'accepted', name: 'Әлия Студент0'}",
            "{state: 'refused', reason: 'replayed'}",
            "{state: 'no_lesson', name: 'Әлия Студент0'}",
        ] {
            browser.execute(&format!("show({state})"));
            for violation in browser.axe() {
                found.push(format!("{lang} {state}: {violation}"));
            }
        }
        assert_eq!(
            browser.execute("return document.documentElement.lang"),
            lang
        );
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
    drop(stdin);
    let _ = Command::new("kill")
        .args(["-TERM", &running.id().to_string()])
        .status();
    let status = running.wait().expect("wait");
    assert!(status.success(), "SIGTERM is a clean stop: {status:?}");
    assert_eq!(kiosk_marks(&college), 2);
}

#[test]
fn the_pass_page_in_chromium_is_read_and_accepted_by_the_kiosk() {
    let college = College::new(2);
    let iin = college.group_a[0].clone();
    let code = college.issue_code(&iin);
    let browser = Browser::start();
    browser.goto(&college.url("/bind?lang=ru"));
    browser.type_into("input[name=iin]", &iin);
    browser.type_into("input[name=code]", &code);
    browser.click("button");
    let wait_for = |script: &str, what: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let value = browser.execute(script);
            if !value.is_null() && value != Value::Bool(false) {
                return value;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    wait_for(
        "return document.querySelector('a[href=\"/pass\"]') !== null",
        "the binding to finish",
    );
    browser.goto(&college.url("/pass?lang=ru"));
    // The page makes its WebCrypto key, registers it, and draws the signed pass.
    let shown = wait_for(
        "const box = document.getElementById('pass-qr'); return box && box.querySelector('svg') ? box.dataset.pass : null",
        "the pass QR",
    );
    let shown = shown.as_str().expect("pass text").to_owned();
    assert!(shown.starts_with(&format!("KP1.{iin}.")), "{shown}");
    assert_eq!(
        college.count("SELECT COUNT(*) FROM pass_keys WHERE replaced_at IS NULL"),
        1
    );
    assert!(browser
        .text_of("#pass-status")
        .contains("Покажите код камере"));
    assert_eq!(browser.text_of("#pass-name"), format!("Студент0 Әлия"));

    let kiosk = Kiosk::enrol(&college, &["--room", "101"]);
    let shot = college.dir.file("pass.png");
    browser.screenshot(&shot);
    // An independent decoder reads the same screenshot (the page's QR encoder is ours).
    let by_zbar = zbar_decode(&shot);
    assert!(
        by_zbar
            .iter()
            .any(|text| text.starts_with(&format!("KP1.{iin}."))),
        "{by_zbar:?}"
    );
    let lines = kiosk.scan(&[fs::read(&shot).expect("screenshot")]);
    assert_eq!(
        verdicts(&lines),
        [("ACCEPT".to_owned(), iin.clone())],
        "{lines:?}"
    );
    assert_eq!(kiosk_marks(&college), 1);
}

/// The attack table's "backdated kiosk scan" row: with a kiosk's own credential, an admin
/// posted a scan hours before it arrived. A kiosk buffers while the agent is
/// unreachable, not for days: past `kiosk.max_buffer_hours` the scan is refused. A scan
/// taken carries its evidence (kiosk, pass, scanned and received times) in the chain.
#[test]
fn a_backdated_kiosk_scan_is_refused_and_a_taken_one_carries_its_evidence() {
    let college = College::with_config(3, |config| {
        config.replace("max_buffer_hours = 24", "max_buffer_hours = 4")
    });
    let alice = college.group_a[0].clone();
    let alice_key = student_with_pass(&college, &alice);
    let door = Kiosk::enrol(&college, &["--room", "101"]);
    let credential = credential_of(&door);
    let scan =
        |id: &str, text: &str, at: i64| json!([{ "id": id, "pass": text, "scanned_at": at }]);
    let five_hours_ago = now() - 5 * 3600;
    let backdated = pass(&alice_key, &alice, five_hours_ago);
    let (status, body) = upload(
        &college,
        &credential,
        scan("old-1", &backdated, five_hours_ago),
    );
    assert_eq!(status, 200);
    assert_eq!(body["results"][0]["outcome"], "refused", "{body}");
    assert_eq!(body["results"][0]["reason"], "buffered_too_long");
    assert_eq!(college.marks(), 0);
    assert_eq!(college.security_events("kiosk_buffered_too_long"), 1);

    let fresh = pass(&alice_key, &alice, now());
    let (_, body) = upload(&college, &credential, scan("new-1", &fresh, now() - 2));
    assert_eq!(body["results"][0]["outcome"], "marked", "{body}");
    let evidence: String = college
        .db()
        .query_row(
            "SELECT evidence FROM attendance_events WHERE method = 'qr_kiosk'",
            [],
            |row| row.get(0),
        )
        .expect("evidence");
    let evidence: Value = serde_json::from_str(&evidence).expect("json");
    assert_eq!(evidence["entry"], "live");
    assert_eq!(evidence["kiosk"], 1);
    assert_eq!(evidence["pass"], fresh.as_str());
    assert_eq!(evidence["scanned_at"], now() - 2);
    assert_eq!(evidence["received_at"], now());
}
