//! What the registry's audit costs: a college's month (20 working days, 20 groups of 25,
//! four lessons a day: 40,000 format-2 attendance records with their evidence, a day per
//! batch) received by the store with the audit (chain re-walk, timeline rules, the
//! cross-college lookups, and the month audit when the signed statement arrives) and
//! without it, in the same run, alternately, three times each; the fastest of each.
//!
//! Printed as the ratio of audited to plain receiving per record (target ≤ 1.5×).
//! `cargo bench -p kasip-registry --bench audit`.

use std::time::{Duration, Instant};

use kasip_certs::jws::{protected_header, sign_compact};
use kasip_certs::DeviceKey;
use kasip_core::batch::{
    sha256_hex, to_hex, AttendanceRecord, BatchEnvelope, BatchKind, BATCH_VERSION, GENESIS_PREV,
};
use kasip_core::chain::{ChainRow, EntryKind, MarkEvidence, GENESIS_HASH};
use kasip_core::{Bin, CollegeTimezone, Date};
use kasip_registry::{RegistryStore, Verdict};

const BIN: &str = "090640001233";
const GROUPS: usize = 20;
const STUDENTS: usize = 25;
const SLOTS: [(&str, &str); 4] = [
    ("09:00", "10:30"),
    ("10:40", "12:10"),
    ("12:20", "13:50"),
    ("14:00", "15:30"),
];
const ALMATY: i64 = 5 * 3600;

fn student_iin(group: usize, index: usize) -> String {
    // 12 digits; the registry's rules read them as text.
    format!("0603155{:02}{:03}", group, index)
}

/// A day's batches, the month's statement batch, and the record count.
fn month(key: &DeviceKey) -> (Vec<String>, String, usize) {
    let mut days = Vec::new();
    let mut day = Date::new(2026, 11, 2).expect("date");
    while days.len() < 20 {
        if day.iso_weekday() <= 5 {
            days.push(day);
        }
        day = day.add_days(1);
    }
    let mut head = GENESIS_HASH.to_vec();
    let mut id = 0u64;
    let mut lesson = 0u64;
    let mut prev = GENESIS_PREV.to_owned();
    let mut batches = Vec::new();
    // iin → (present, qr)
    let mut totals: std::collections::BTreeMap<String, (u64, u64, String)> = Default::default();
    let seal = |seq: u64, kind, created, records, prev: &mut String| {
        let envelope = BatchEnvelope {
            v: BATCH_VERSION,
            agent: key.thumbprint(),
            college_bin: BIN.into(),
            seq,
            prev: prev.clone(),
            kind,
            created,
            records,
        };
        let jws = sign_compact(
            key,
            &protected_header(key),
            envelope.to_canonical().expect("canonical").as_bytes(),
        );
        *prev = sha256_hex(jws.as_bytes());
        jws
    };
    for (index, day) in days.iter().enumerate() {
        let midnight = day.days_since_epoch() * 86_400 - ALMATY;
        let mut records = Vec::new();
        for group in 0..GROUPS {
            for (start, end) in SLOTS {
                lesson += 1;
                let start_at = midnight
                    + i64::from(
                        kasip_core::TimeOfDay::parse(start)
                            .expect("time")
                            .minutes_after_midnight(),
                    ) * 60;
                for student in 0..STUDENTS {
                    id += 1;
                    let iin = student_iin(group, student);
                    // One mark in twenty by hand; the rest from the students' phones,
                    // seven seconds apart (a queue at the projector, not a burst).
                    let manual = id.is_multiple_of(20);
                    let recorded_at = start_at + 60 + 7 * student as i64;
                    let device = sha256_hex(iin.as_bytes());
                    let evidence = if manual {
                        MarkEvidence::of(EntryKind::Live)
                    } else {
                        MarkEvidence {
                            binding: Some((group * STUDENTS + student) as u64 + 1),
                            presented: Some(format!(
                                "{lesson}.{}.AAAAAAAAAAAAAAAAAAAAAA",
                                recorded_at / 10
                            )),
                            device_signature: Some("A".repeat(86)),
                            ..MarkEvidence::of(EntryKind::Live)
                        }
                    };
                    let method = if manual { "manual" } else { "qr_phone" };
                    let hash = ChainRow {
                        id: id as i64,
                        lesson_id: lesson as i64,
                        student_iin: &iin,
                        status: "present",
                        method,
                        recorded_at,
                        device_id: (!manual).then_some(device.as_str()),
                        token_step: None,
                        marked_by: manual.then_some("teacher"),
                        reason: None,
                        corrects: None,
                        evidence: Some(&evidence.to_canonical()),
                    }
                    .hash(&head);
                    head = hash.to_vec();
                    let entry = totals
                        .entry(iin.clone())
                        .or_insert((0, 0, format!("G-{group}")));
                    entry.0 += 1;
                    entry.1 += u64::from(!manual);
                    records.push(
                        serde_json::to_value(AttendanceRecord {
                            id,
                            lesson,
                            date: day.to_string(),
                            start: start.into(),
                            end: Some(end.into()),
                            group: format!("G-{group}"),
                            discipline: "Математика".into(),
                            teacher_iin: format!("8505154{:05}", group * 4 + (lesson as usize % 4)),
                            mode: "offline".into(),
                            student_iin: iin,
                            status: "present".into(),
                            method: method.into(),
                            recorded_at,
                            device: (!manual).then(|| device.clone()),
                            marked_by: manual.then(|| "teacher".into()),
                            reason: None,
                            corrects: None,
                            chain_hash: to_hex(&hash),
                            site: Some("Главный корпус".into()),
                            room: Some(format!("{}", 100 + group)),
                            token_step: None,
                            evidence: Some(evidence),
                        })
                        .expect("record"),
                    );
                }
            }
        }
        // Sealed that evening.
        let created = midnight + 20 * 3600;
        batches.push(seal(
            index as u64 + 1,
            BatchKind::Attendance,
            created,
            records,
            &mut prev,
        ));
    }
    let count = id as usize;
    // The statement, signed like the agent's: every student QR-tracked.
    let students: Vec<serde_json::Value> = totals
        .iter()
        .map(|(iin, (present, qr, group))| {
            serde_json::json!({"iin": iin, "name": "", "group": group, "lessons_scheduled": present,
                "present": present, "late": 0, "absent": 0, "excused": 0, "qr_marks": qr,
                "qr_tracked": true})
        })
        .collect();
    let statement = serde_json::json!({
        "v": 1, "kind": "month_close", "agent": key.thumbprint(), "college_bin": BIN,
        "month": "2026-11", "created": 0, "compliant": true, "min_coverage_per_mille": 500,
        "student_qr_share_per_mille": 500, "typed_code_counts_as_qr": true,
        "coverage": {"college": {"coverage_per_mille": 1000}}, "students": students,
    });
    let signed = sign_compact(
        key,
        &protected_header(key),
        kasip_core::to_canonical_json(&statement)
            .expect("canonical")
            .as_bytes(),
    );
    let last = days.last().expect("day").days_since_epoch() * 86_400 + 21 * 3600;
    let close = seal(
        batches.len() as u64 + 1,
        BatchKind::MonthClose,
        last,
        vec![
            serde_json::json!({"id": 1, "month": "2026-11", "compliant": true, "statement": signed}),
        ],
        &mut prev,
    );
    (batches, close, count)
}

/// Receives the month into a fresh store; returns (the attendance, the statement).
fn receive(key: &DeviceKey, batches: &[String], close: &str, audit: bool) -> (Duration, Duration) {
    let dir = tempfile::tempdir().expect("dir");
    let store = RegistryStore::open(dir.path()).expect("store");
    let bin = Bin::parse(BIN).expect("bin");
    store
        .add_college(
            &bin,
            "Bench college",
            &CollegeTimezone::parse("Asia/Almaty").expect("zone"),
        )
        .expect("college");
    let now = 1_796_000_000;
    let code = store.issue_enrolment_code(&bin, now).expect("code");
    let mut store = if audit {
        store
    } else {
        store.without_audit_for_benchmark()
    };
    store
        .enrol(&code, BIN, key.public_key(), now)
        .expect("enrol");
    let started = Instant::now();
    for jws in batches {
        match store.receive(jws, now).expect("receive") {
            Verdict::Stored(_) => {}
            other => panic!("refused: {other:?}"),
        }
    }
    let attendance = started.elapsed();
    let started = Instant::now();
    match store.receive(close, now).expect("receive") {
        Verdict::Stored(_) => {}
        other => panic!("refused: {other:?}"),
    }
    (attendance, started.elapsed())
}

fn main() {
    let key = DeviceKey::from_seed(&[7; 32]).expect("key");
    let (batches, close, records) = month(&key);
    let mut plain = (Duration::MAX, Duration::MAX);
    let mut audited = (Duration::MAX, Duration::MAX);
    for _ in 0..3 {
        let (attendance, statement) = receive(&key, &batches, &close, false);
        plain = (plain.0.min(attendance), plain.1.min(statement));
        let (attendance, statement) = receive(&key, &batches, &close, true);
        audited = (audited.0.min(attendance), audited.1.min(statement));
    }
    let per_record = |elapsed: Duration| elapsed.as_secs_f64() * 1e6 / records as f64;
    let total = |(attendance, statement): (Duration, Duration)| attendance + statement;
    println!(
        "audit cost, a month of {records} attendance records in {} batches and its statement (fastest of 3 each):",
        batches.len()
    );
    println!(
        "  receiving without the audit: {:.2} s ({:.1} µs/record); the statement {:.3} s",
        plain.0.as_secs_f64(),
        per_record(plain.0),
        plain.1.as_secs_f64()
    );
    println!(
        "  receiving with the audit:    {:.2} s ({:.1} µs/record); the statement and its month audit {:.3} s",
        audited.0.as_secs_f64(),
        per_record(audited.0),
        audited.1.as_secs_f64()
    );
    println!(
        "  ratio per record, batches: {:.2}x; with the month audit: {:.2}x (target ≤ 1.5x)",
        audited.0.as_secs_f64() / plain.0.as_secs_f64(),
        total(audited).as_secs_f64() / total(plain).as_secs_f64()
    );
}
