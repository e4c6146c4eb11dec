//! The registry's memory under a burst of the largest batches: 16 uploads at once of a
//! 20,000-record attendance batch near the 32 MiB cap, from one enrolled agent. Printed
//! as ratios to the registry's own idle resident memory in the same run: its peak
//! (VmHWM) during the burst, and what stays resident two seconds after it.
//!
//! `cargo bench -p kasip-registry --bench memory`. `KASIP_BENCH_REGISTRY=/path/to/an/
//! older/kasip-registry` measures another build against the same batches.

use std::time::{Duration, Instant};

use kasip_certs::DeviceKey;
use kasip_core::batch::{BatchEnvelope, BatchKind, BATCH_VERSION, GENESIS_PREV};
use kasip_tests::{memory_kib, run, text, Server, TempDataDir};

const BIN: &str = "090640001233";
const UPLOADS: usize = 16;
const RECORDS: usize = 20_000;

fn main() {
    let registry = std::env::var("KASIP_BENCH_REGISTRY")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_kasip-registry").to_owned());
    let dir = TempDataDir::new();
    for args in [
        vec!["init"],
        vec!["add-college", "--bin", BIN, "--name", "Bench college"],
    ] {
        let output = run(&registry, &dir.path(), &args);
        assert!(output.status.success(), "{args:?}: {:?}", text(&output));
    }
    let output = run(
        &registry,
        &dir.path(),
        &["issue-enrolment-code", "--bin", BIN],
    );
    let code = text(&output)
        .0
        .split_whitespace()
        .last()
        .expect("code")
        .to_owned();
    let server = Server::start(&registry, &dir.path(), &[]);
    let key = DeviceKey::generate_to(&dir.file("agent.pem")).expect("key");
    let client = kasip_tests::http_client();
    let enrolled = client
        .post(format!("{}/v1/enrolments", server.url))
        .json(&serde_json::json!({"code": code, "college_bin": BIN, "public_key": key.public_key_base64url()}))
        .send()
        .expect("enrol");
    assert_eq!(enrolled.status(), 201);

    // A discipline of 198 Cyrillic letters (the most allowed) and a long reason make each
    // record ~1.1 KiB: the batch comes close to the 32 MiB cap, as the attacker's
    // 29.7 MiB one did.
    let discipline = "Информатика".repeat(18);
    let reason = "Причина".repeat(22);
    let records = (1..=RECORDS)
        .map(|id| {
            kasip_core::batch::RecordText::of(&serde_json::json!({
                "id": id, "lesson": 1 + id / 30, "date": "2026-11-23", "start": "09:00",
                "group": "ПО-21", "discipline": discipline, "teacher_iin": "850515400012",
                "mode": "offline", "student_iin": "060315500016", "status": "present",
                "method": "qr_phone", "recorded_at": 1_763_870_460 + id as i64,
                "device": "d".repeat(64), "chain_hash": "a".repeat(64), "reason": reason,
            }))
            .expect("record")
        })
        .collect();
    let envelope = BatchEnvelope {
        v: BATCH_VERSION,
        agent: key.thumbprint(),
        college_bin: BIN.into(),
        seq: 1,
        prev: GENESIS_PREV.into(),
        kind: BatchKind::Attendance,
        created: 1_763_870_460,
        records,
    };
    let payload = envelope.to_canonical().expect("canonical");
    let jws = kasip_certs::jws::sign_compact(
        &key,
        &kasip_certs::jws::protected_header(&key),
        payload.as_bytes(),
    );
    let pid = server.pid();
    std::thread::sleep(Duration::from_secs(1));
    let idle = memory_kib(pid, "VmRSS");

    let started = Instant::now();
    let uploads: Vec<_> = (0..UPLOADS)
        .map(|_| {
            let (url, jws) = (format!("{}/v1/batches", server.url), jws.clone());
            std::thread::spawn(move || {
                kasip_tests::http_client()
                    .post(url)
                    .body(jws)
                    .send()
                    .map(|response| response.status().as_u16())
                    .unwrap_or(0)
            })
        })
        .collect();
    let statuses: Vec<u16> = uploads
        .into_iter()
        .map(|upload| upload.join().expect("upload"))
        .collect();
    let burst = started.elapsed();
    let peak = memory_kib(pid, "VmHWM");
    std::thread::sleep(Duration::from_secs(2));
    let after = memory_kib(pid, "VmRSS");
    let stored = statuses
        .iter()
        .filter(|status| matches!(status, 200 | 201))
        .count();

    let mib = |kib: u64| kib as f64 / 1024.0;
    println!(
        "{UPLOADS} uploads of a {RECORDS}-record batch ({:.1} MiB): {stored} answered 200/201 in {:.1} s ({statuses:?})",
        jws.len() as f64 / 1_048_576.0,
        burst.as_secs_f64()
    );
    println!(
        "registry RSS: idle {:.0} MiB, peak {:.0} MiB ({:.1}× idle), 2 s after {:.0} MiB ({:.1}× idle)",
        mib(idle),
        mib(peak),
        peak as f64 / idle as f64,
        mib(after),
        after as f64 / idle as f64
    );
}
