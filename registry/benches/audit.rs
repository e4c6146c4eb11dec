//! What the registry's audit costs: a college's month (20 working days, 20 groups of 25,
//! four lessons a day: 40,000 format-2 attendance records with their evidence, a day per
//! batch) received by the store with the audit (chain re-walk, timeline rules, the
//! cross-college lookups, and the month audit when the signed statement arrives) and
//! without it, in the same run, alternately, five times each; the median of each.
//!
//! Printed as the ratio of audited to plain receiving per record (target ≤ 1.5×).
//! `cargo bench -p kasip-registry --bench audit`.

use std::time::{Duration, Instant};

use kasip_certs::jws::{protected_header, sign_compact};
use kasip_certs::DeviceKey;
use kasip_core::batch::{
    sha256_hex, to_hex, AttendanceRecord, BatchEnvelope, BatchKind, RecordText, BATCH_VERSION,
    GENESIS_PREV,
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
/// Runs of each, alternating; the median is reported (the machine is shared).
const ROUNDS: usize = 5;

/// Valid IINs (the registry quarantines the rest): students born 2006-03-15, teachers
/// 1985-05-15, numbered.
fn iin(year: i32, serial: usize) -> String {
    let birth = Date::new(year, if year < 2000 { 5 } else { 3 }, 15).expect("date");
    (serial as u16..)
        .find_map(|serial| kasip_core::Iin::from_parts(birth, kasip_core::Sex::Female, serial))
        .expect("iin")
        .to_string()
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
    // Serials step by 10, so that a serial without a check digit is skipped, not reused.
    let students: Vec<String> = (0..GROUPS * STUDENTS).map(|n| iin(2006, 10 * n)).collect();
    let teachers: Vec<String> = (0..GROUPS * 4).map(|n| iin(1985, 10 * n)).collect();
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
                    let iin = students[group * STUDENTS + student].clone();
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
                    let token_step = (!manual).then_some(recorded_at as u64 / 10);
                    let hash = ChainRow {
                        id: id as i64,
                        lesson_id: lesson as i64,
                        student_iin: &iin,
                        status: "present",
                        method,
                        recorded_at,
                        device_id: (!manual).then_some(device.as_str()),
                        token_step,
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
                        RecordText::of(&AttendanceRecord {
                            id,
                            lesson,
                            date: day.to_string(),
                            start: start.into(),
                            end: Some(end.into()),
                            group: format!("G-{group}"),
                            discipline: "Математика".into(),
                            teacher_iin: teachers[group * 4 + lesson as usize % 4].clone(),
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
                            token_step,
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
        vec![RecordText::of(
            &serde_json::json!({"id": 1, "month": "2026-11", "compliant": true, "statement": signed}),
        )
        .expect("record")],
        &mut prev,
    );
    (batches, close, count)
}

/// This thread's time on a CPU (`/proc/thread-self/schedstat`, in ns): the audit's cost
/// without the disk's fsync latency, which swings more than the audit costs on a shared
/// machine.
fn cpu_time() -> Duration {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").expect("schedstat");
    let nanos: u64 = text
        .split_whitespace()
        .next()
        .and_then(|field| field.parse().ok())
        .expect("on-CPU time");
    Duration::from_nanos(nanos)
}

/// Wall and CPU time of `work`.
fn timed<T>(work: impl FnOnce() -> T) -> (T, Duration, Duration) {
    let (wall, cpu) = (Instant::now(), cpu_time());
    let result = work();
    (result, wall.elapsed(), cpu_time() - cpu)
}

/// A receipt that quarantined a record means the bench measured the wrong path.
fn assert_all_accepted(receipt: &str) {
    use base64::Engine;
    let payload = receipt.split('.').nth(1).expect("payload");
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64");
    let text = String::from_utf8(payload).expect("utf-8");
    assert!(!text.contains("\"rejected\""), "{text}");
}

/// Receives the month into a fresh store; returns (the attendance, the statement).
fn receive(key: &DeviceKey, batches: &[String], close: &str, audit: bool) -> Run {
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
    let ((), attendance, attendance_cpu) = timed(|| {
        for jws in batches {
            match store.receive(jws, now).expect("receive") {
                Verdict::Stored(receipt) => assert_all_accepted(&receipt),
                other => panic!("refused: {other:?}"),
            }
        }
    });
    let ((), statement, statement_cpu) =
        timed(|| match store.receive(close, now).expect("receive") {
            Verdict::Stored(_) => {}
            other => panic!("refused: {other:?}"),
        });
    if audit {
        // The audit ran and found this honest month honest.
        let figures = store.month_figures(BIN).expect("figures");
        assert_eq!(figures.len(), 1, "{figures:?}");
        assert_eq!(
            (figures[0].beneficiaries, figures[0].qr_tracked),
            ((GROUPS * STUDENTS) as u64, (GROUPS * STUDENTS) as u64),
            "{figures:?}"
        );
        let findings = store.findings(None, None).expect("findings");
        assert!(findings.is_empty(), "{findings:#?}");
    }
    Run {
        attendance,
        statement,
        attendance_cpu,
        statement_cpu,
    }
}

/// One month received: wall and CPU time of its attendance batches and of its statement.
#[derive(Debug, Clone, Copy)]
struct Run {
    attendance: Duration,
    statement: Duration,
    attendance_cpu: Duration,
    statement_cpu: Duration,
}

fn main() {
    let key = DeviceKey::from_seed(&[7; 32]).expect("key");
    let (batches, close, records) = month(&key);
    let mut plain_runs = Vec::new();
    let mut audited_runs = Vec::new();
    for _ in 0..ROUNDS {
        plain_runs.push(receive(&key, &batches, &close, false));
        audited_runs.push(receive(&key, &batches, &close, true));
    }
    let median = |runs: &[Run], of: fn(&Run) -> Duration| {
        let mut values: Vec<Duration> = runs.iter().map(of).collect();
        values.sort();
        values[values.len() / 2]
    };
    let per_record = |elapsed: Duration| elapsed.as_secs_f64() * 1e6 / records as f64;
    println!(
        "audit cost, a month of {records} attendance records in {} batches and its statement (median of {ROUNDS} alternate runs each):",
        batches.len()
    );
    let mut ratios = Vec::new();
    for (name, attendance, statement) in [
        (
            "CPU",
            (|run: &Run| run.attendance_cpu) as fn(&Run) -> Duration,
            (|run: &Run| run.statement_cpu) as fn(&Run) -> Duration,
        ),
        (
            "wall",
            |run: &Run| run.attendance,
            |run: &Run| run.statement,
        ),
    ] {
        let plain = (
            median(&plain_runs, attendance),
            median(&plain_runs, statement),
        );
        let audited = (
            median(&audited_runs, attendance),
            median(&audited_runs, statement),
        );
        let batches = audited.0.as_secs_f64() / plain.0.as_secs_f64();
        let whole = (audited.0 + audited.1).as_secs_f64() / (plain.0 + plain.1).as_secs_f64();
        println!(
            "  {name:>4}: without the audit {:.2} s ({:.1} µs/record); with it {:.2} s ({:.1} µs/record) and the month audit {:.3} s",
            plain.0.as_secs_f64(),
            per_record(plain.0),
            audited.0.as_secs_f64(),
            per_record(audited.0),
            audited.1.as_secs_f64()
        );
        ratios.push(format!(
            "{name} {batches:.2}x the batches, {whole:.2}x with the month audit"
        ));
    }
    println!("  ratio per record: {} (target ≤ 1.5x)", ratios.join("; "));
}
