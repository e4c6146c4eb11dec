//! `kasip-registry simulate`: a national day driven at real registries. Each simulated
//! agent is real to the registry: its own Ed25519 key, enrolled with a one-time code,
//! signed version-2 attendance batches whose records carry a real chain (each record's
//! `chain_hash` follows the previous one), and a heartbeat pinning its head after each
//! batch, all over HTTP. Colleges have realistic sizes (a long tail: a few large
//! colleges, many small ones) and send their first lesson's marks at once: the morning
//! burst. The day is sealed before the clock starts, so that the figures are the
//! registries' and not the generator's signing.
//!
//! With `--race`, every batch is sent to two registries at once and each agent's next
//! batch races it to a third: what several registry processes behind no balancer must
//! survive. Each answer is checked: one receipt per batch, identical wherever it came
//! from, sequence order kept (a 409 `expected_seq` below the batch's own seq is the agent
//! waiting for its previous batch, and is retried).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kasip_certs::jws::{protected_header, sign_compact};
use kasip_certs::DeviceKey;
use kasip_core::batch::{
    sha256_hex, to_hex, AttendanceRecord, BatchEnvelope, BatchKind, RecordText, BATCH_VERSION,
    GENESIS_PREV,
};
use kasip_core::chain::{ChainRow, EntryKind, MarkEvidence, GENESIS_HASH};
use kasip_core::{Bin, Date, Iin};
use serde::Serialize;

use crate::store::{RegistryError, RegistryStore};

/// Lessons of a college day (local time) and how long each lasts.
const LESSONS: [(u16, &str, &str); 4] = [
    (8 * 60 + 30, "08:30", "09:50"),
    (10 * 60 + 10, "10:10", "11:30"),
    (11 * 60 + 50, "11:50", "13:10"),
    (13 * 60 + 50, "13:50", "15:10"),
];
/// Colleges' clocks: Asia/Almaty (the registry's default zone for a college).
const UTC_OFFSET_SECS: i64 = 5 * 3600;

/// What to simulate.
#[derive(Debug, Clone)]
pub struct DayPlan {
    pub agents: usize,
    pub marks: usize,
    pub date: Date,
    pub race: bool,
    pub in_flight: usize,
    /// Distinguishes one run's colleges and keys from another's on the same database.
    pub seed: u64,
}

/// One simulated college: its BIN and how many students it has.
#[derive(Debug, Clone)]
pub struct College {
    pub bin: String,
    pub students: usize,
    /// Index of its first student among all the country's (IINs are unique nationally).
    pub first_student: usize,
}

/// A deterministic fraction in [0, 1) from `index` (the colleges' sizes).
fn fraction(index: u64, seed: u64) -> f64 {
    let mut x = index
        .wrapping_add(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 31;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 29;
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// A valid BIN: registered in `(year, month)`, entity type 4, `serial`'s check digit.
fn bin_of(serial: u64) -> String {
    (0..10)
        .map(|attempt| {
            let body = format!(
                "{:02}{:02}4{:06}",
                10 + serial % 15,
                1 + serial % 12,
                (serial * 10 + attempt) % 1_000_000
            );
            (0..10)
                .map(|check| format!("{body}{check}"))
                .find(|text| Bin::parse(text).is_ok())
        })
        .find_map(|found| found)
        .unwrap_or_default()
}

/// The IIN of student `index` of the country: a birth date in 2005–2010 and a serial.
fn student_iin(index: usize) -> String {
    let birth = Date::parse("2005-01-01")
        .map(|date| date.add_days((index / 4_000) as i64 % 2_000))
        .unwrap_or(Date::EPOCH);
    let sex = if index.is_multiple_of(2) {
        kasip_core::Sex::Female
    } else {
        kasip_core::Sex::Male
    };
    (0..8)
        .find_map(|attempt| Iin::from_parts(birth, sex, ((index % 4_000) * 2 + attempt) as u16))
        .map(|iin| iin.to_string())
        .unwrap_or_default()
}

impl DayPlan {
    /// The colleges: sizes with a long tail (the largest about 15 times the smallest),
    /// summing to `marks / 4` students (four lessons a day).
    pub fn colleges(&self) -> Vec<College> {
        let students = (self.marks / LESSONS.len()).max(self.agents);
        let weights: Vec<f64> = (0..self.agents)
            .map(|index| 0.2 + 3.0 * fraction(index as u64, self.seed).powi(2))
            .collect();
        let total: f64 = weights.iter().sum();
        let mut first_student = self.seed as usize * 10_000_000 % 500_000_000;
        let mut colleges = Vec::with_capacity(self.agents);
        let mut left = students;
        for (index, weight) in weights.iter().enumerate() {
            let size = if index + 1 == self.agents {
                left
            } else {
                ((weight / total * students as f64).round() as usize).clamp(1, left.max(1))
            };
            left = left.saturating_sub(size);
            colleges.push(College {
                bin: bin_of(self.seed * 100_000 + index as u64),
                students: size,
                first_student,
            });
            first_student += size;
        }
        colleges
    }
}

/// A sealed batch, ready to send.
pub struct Sealed {
    pub seq: u64,
    pub jws: String,
    pub records: usize,
    /// The heartbeat pinning the chain head after this batch.
    pub heartbeat: String,
}

/// One simulated agent: a college's key, its chain and its batches.
pub struct SimulatedAgent {
    key: DeviceKey,
    bin: String,
    seq: u64,
    prev: String,
    head: Vec<u8>,
    next_id: u64,
}

impl SimulatedAgent {
    pub fn new(seed: u64, index: usize, bin: &str) -> Result<Self, RegistryError> {
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&seed.to_le_bytes());
        bytes[8..16].copy_from_slice(&(index as u64).to_le_bytes());
        bytes[16] = 0x5a;
        Ok(Self {
            key: DeviceKey::from_seed(&bytes)
                .ok_or_else(|| RegistryError::Usage("cannot make a key from the seed".into()))?,
            bin: bin.to_owned(),
            seq: 0,
            prev: GENESIS_PREV.to_owned(),
            head: GENESIS_HASH.to_vec(),
            next_id: 1,
        })
    }

    pub fn public_key_base64url(&self) -> String {
        self.key.public_key_base64url()
    }

    pub fn id(&self) -> String {
        self.key.thumbprint()
    }

    /// One lesson's check-ins of `college` on `date`, sealed as the agent does.
    pub fn lesson(&mut self, college: &College, date: Date, lesson: usize) -> Sealed {
        let (start_minutes, start, end) = LESSONS[lesson % LESSONS.len()];
        let lesson_start =
            date.days_since_epoch() * 86_400 + i64::from(start_minutes) * 60 - UTC_OFFSET_SECS;
        let group_size = 25;
        let mut records = Vec::with_capacity(college.students);
        for student in 0..college.students {
            let id = self.next_id;
            self.next_id += 1;
            let iin = student_iin(college.first_student + student);
            let device = format!("phone-{}", college.first_student + student);
            // Check-ins spread over the lesson's first ten minutes.
            let recorded_at = lesson_start + 30 + (student as i64 * 7) % 600;
            let token_step = (recorded_at / 30) as u64;
            let evidence = MarkEvidence {
                binding: Some(student as u64 + 1),
                presented: Some(format!("T{token_step}")),
                device_signature: Some("c2ltdWxhdGVk".into()),
                ..MarkEvidence::of(EntryKind::Live)
            };
            let lesson_id = (lesson * 1_000 + student / group_size) as i64 + 1;
            let hash = ChainRow {
                id: id as i64,
                lesson_id,
                student_iin: &iin,
                status: "present",
                method: "qr_phone",
                recorded_at,
                device_id: Some(&device),
                token_step: Some(token_step),
                marked_by: None,
                reason: None,
                corrects: None,
                evidence: Some(&evidence.to_canonical()),
            }
            .hash(&self.head);
            self.head = hash.to_vec();
            let record = AttendanceRecord {
                id,
                lesson: lesson_id as u64,
                date: date.to_string(),
                start: start.into(),
                end: Some(end.into()),
                group: format!("G-{}", student / group_size + 1),
                discipline: "Математика".into(),
                teacher_iin: "850515400012".into(),
                mode: "offline".into(),
                student_iin: iin,
                status: "present".into(),
                method: "qr_phone".into(),
                recorded_at,
                device: Some(device),
                marked_by: None,
                reason: None,
                corrects: None,
                chain_hash: to_hex(&hash),
                site: None,
                room: Some("101".into()),
                token_step: Some(token_step),
                evidence: Some(evidence),
            };
            if let Ok(text) = serde_json::to_value(&record)
                .map_err(|error| error.to_string())
                .and_then(|value| RecordText::of(&value).map_err(|error| error.to_string()))
            {
                records.push(text);
            }
        }
        // Sealed a quarter of an hour into the lesson, when the agent's sync runs.
        let created = lesson_start + 15 * 60;
        self.seq += 1;
        let envelope = BatchEnvelope {
            v: BATCH_VERSION,
            agent: self.id(),
            college_bin: self.bin.clone(),
            seq: self.seq,
            prev: self.prev.clone(),
            kind: BatchKind::Attendance,
            created,
            records,
        };
        let count = envelope.records.len();
        let payload = envelope.to_canonical().unwrap_or_default();
        let jws = sign_compact(&self.key, &protected_header(&self.key), payload.as_bytes());
        self.prev = sha256_hex(jws.as_bytes());
        let heartbeat = kasip_core::wire::Heartbeat {
            agent: self.id(),
            college_bin: self.bin.clone(),
            events: self.next_id - 1,
            head: to_hex(&self.head),
            at: created + 60,
            broken: None,
        };
        let heartbeat = sign_compact(
            &self.key,
            &protected_header(&self.key),
            serde_json::to_string(&heartbeat)
                .unwrap_or_default()
                .as_bytes(),
        );
        Sealed {
            seq: self.seq,
            jws,
            records: count,
            heartbeat,
        }
    }
}

/// What a simulated day came to.
#[derive(Debug, Default, Serialize)]
pub struct DayReport {
    pub registries: usize,
    pub agents: usize,
    pub students: usize,
    pub batches: u64,
    pub records: u64,
    pub seal_secs: f64,
    pub wall_secs: f64,
    pub records_per_sec: f64,
    pub ack_p50_ms: f64,
    pub ack_p99_ms: f64,
    pub ack_max_ms: f64,
    /// Answers 201 (stored) and 200 (already stored, e.g. the other registry stored it).
    pub stored: u64,
    pub already_stored: u64,
    /// 409 `expected_seq` below the batch: the previous batch still on its way; retried.
    pub waited_for_previous: u64,
    /// 503s and broken connections (a registry killed, a full pool); retried elsewhere.
    pub retried_elsewhere: u64,
    /// Batches answered by more than one registry with different receipts: must be 0.
    pub receipts_differing: u64,
    /// Refusals that no retry fixes (a fork, a bad batch): must be 0.
    pub failures: u64,
    pub failure_examples: Vec<String>,
}

#[derive(Default)]
struct Counters {
    stored: AtomicU64,
    already: AtomicU64,
    waited: AtomicU64,
    elsewhere: AtomicU64,
    acknowledged: AtomicU64,
}

/// Registers the plan's colleges and issues their enrolment codes in `store`.
pub fn register_colleges(
    store: &RegistryStore,
    colleges: &[College],
    now: i64,
) -> Result<Vec<String>, RegistryError> {
    let zone = kasip_core::CollegeTimezone::parse("Asia/Almaty")
        .map_err(|error| RegistryError::Usage(error.to_string()))?;
    let name = |index: usize| format!("Simulated college {}", index + 1);
    // Never a real college, checked before anything is written: renaming it and
    // enrolling a simulated key for it would put invented marks under its BIN.
    for (index, college) in colleges.iter().enumerate() {
        if let Some(held) = store.college_name(&college.bin)? {
            if held != name(index) {
                return Err(RegistryError::Usage(format!(
                    "{} is already registered as \"{held}\": simulate on a registry of its \
                     own (or another --seed), never on real colleges",
                    college.bin
                )));
            }
        }
    }
    colleges
        .iter()
        .enumerate()
        .map(|(index, college)| {
            let bin = Bin::parse(&college.bin)
                .map_err(|error| RegistryError::Usage(format!("{}: {error}", college.bin)))?;
            let name = name(index);
            store.add_college(&bin, &name, &zone)?;
            store.issue_enrolment_code(&bin, now)
        })
        .collect()
}

/// Sends `body` to `path`, trying the registries in turn from `first`, until one answers
/// something other than 503 or a broken connection. Returns (status, body, latency).
async fn post_somewhere(
    client: &reqwest::Client,
    registries: &[String],
    first: usize,
    path: &str,
    body: &str,
    counters: &Counters,
) -> Result<(u16, String), String> {
    for attempt in 0..200usize {
        let url = format!("{}{path}", registries[(first + attempt) % registries.len()]);
        match client.post(&url).body(body.to_owned()).send().await {
            Ok(response) if response.status().as_u16() != 503 => {
                let status = response.status().as_u16();
                let text = response.text().await.unwrap_or_default();
                return Ok((status, text));
            }
            _ => {
                counters.elsewhere.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20 * (attempt as u64 % 10 + 1))).await;
            }
        }
    }
    Err(format!("no registry answered {path}"))
}

/// Sends one batch until stored; its receipt.
async fn deliver(
    client: &reqwest::Client,
    registries: &[String],
    first: usize,
    sealed: &Sealed,
    counters: &Counters,
) -> Result<String, String> {
    loop {
        let (status, body) = post_somewhere(
            client,
            registries,
            first,
            "/v1/batches",
            &sealed.jws,
            counters,
        )
        .await?;
        let answer: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        match status {
            201 | 200 => {
                let counter = if status == 201 {
                    &counters.stored
                } else {
                    &counters.already
                };
                counter.fetch_add(1, Ordering::Relaxed);
                return answer["receipt"]
                    .as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| format!("seq {}: no receipt in {body}", sealed.seq));
            }
            409 if answer["expected_seq"]
                .as_u64()
                .is_some_and(|expected| expected < sealed.seq) =>
            {
                counters.waited.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            _ => return Err(format!("seq {}: {status} {body}", sealed.seq)),
        }
    }
}

/// Drives the sealed day at `registries`; `enrolment_codes` are the colleges' codes.
pub async fn drive(
    plan: &DayPlan,
    registries: Vec<String>,
    colleges: Vec<College>,
    enrolment_codes: Vec<String>,
) -> Result<DayReport, RegistryError> {
    // The process's TLS provider (reqwest is built without one), for https registries.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .pool_max_idle_per_host(plan.in_flight)
        .build()
        .map_err(RegistryError::io("cannot make the HTTP client"))?;
    let mut report = DayReport {
        registries: registries.len(),
        agents: colleges.len(),
        students: colleges.iter().map(|college| college.students).sum(),
        ..DayReport::default()
    };
    // Seal the whole day first: the clock below is the registries'.
    let sealing = Instant::now();
    let mut agents = Vec::with_capacity(colleges.len());
    for (index, college) in colleges.iter().enumerate() {
        let mut agent = SimulatedAgent::new(plan.seed, index, &college.bin)?;
        let day: Vec<Sealed> = (0..LESSONS.len())
            .map(|lesson| agent.lesson(college, plan.date, lesson))
            .collect();
        agents.push((agent, day));
    }
    report.seal_secs = sealing.elapsed().as_secs_f64();
    let registries = Arc::new(registries);
    // Enrolment: each agent's key with its college's code.
    for (index, (agent, _)) in agents.iter().enumerate() {
        let request = serde_json::json!({
            "code": enrolment_codes[index],
            "college_bin": colleges[index].bin,
            "public_key": agent.public_key_base64url(),
        })
        .to_string();
        let (status, body) = post_somewhere(
            &client,
            &registries,
            index,
            "/v1/enrolments",
            &request,
            &Counters::default(),
        )
        .await
        .map_err(RegistryError::Usage)?;
        if status != 201 && status != 200 {
            return Err(RegistryError::Usage(format!(
                "enrolling {}: {status} {body}",
                colleges[index].bin
            )));
        }
    }
    let counters = Arc::new(Counters::default());
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let differing = Arc::new(AtomicU64::new(0));
    let slots = Arc::new(tokio::sync::Semaphore::new(plan.in_flight.max(1)));
    let total: u64 = agents
        .iter()
        .flat_map(|(_, day)| day.iter().map(|sealed| sealed.records as u64))
        .sum();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (index, (_, day)) in agents.into_iter().enumerate() {
        let client = client.clone();
        let registries = Arc::clone(&registries);
        let counters = Arc::clone(&counters);
        let latencies = Arc::clone(&latencies);
        let failures = Arc::clone(&failures);
        let differing = Arc::clone(&differing);
        let slots = Arc::clone(&slots);
        let race = plan.race;
        tasks.spawn(async move {
            let day: Vec<Arc<Sealed>> = day.into_iter().map(Arc::new).collect();
            // In a race, batches go in pairs (the next one racing its predecessor).
            let step = if race { 2 } else { 1 };
            for pair in day.chunks(step) {
                let Ok(_slot) = slots.acquire().await else {
                    return;
                };
                let sent = Instant::now();
                let mut sends = tokio::task::JoinSet::new();
                for (offset, sealed) in pair.iter().enumerate() {
                    let copies = if race { 2 } else { 1 };
                    for copy in 0..copies {
                        let client = client.clone();
                        let registries = Arc::clone(&registries);
                        let counters = Arc::clone(&counters);
                        let sealed = Arc::clone(sealed);
                        let first = index + offset + copy;
                        sends.spawn(async move {
                            // The successor leaves first: it must wait for its predecessor.
                            if race && offset == 0 {
                                tokio::time::sleep(Duration::from_millis(3)).await;
                            }
                            let receipt =
                                deliver(&client, &registries, first, &sealed, &counters).await;
                            (sealed.seq, receipt)
                        });
                    }
                }
                let mut receipts: std::collections::BTreeMap<u64, String> = Default::default();
                while let Some(joined) = sends.join_next().await {
                    match joined {
                        Ok((seq, Ok(receipt))) => {
                            if let Some(other) = receipts.insert(seq, receipt.clone()) {
                                if other != receipt {
                                    differing.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                        Ok((_, Err(failure))) => failures
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(failure),
                        Err(error) => failures
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(error.to_string()),
                    }
                }
                let elapsed = sent.elapsed().as_secs_f64() * 1000.0;
                for sealed in pair {
                    latencies
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(elapsed);
                    counters
                        .acknowledged
                        .fetch_add(sealed.records as u64, Ordering::Relaxed);
                }
                // The agent pins its head once the batch is in.
                if let Some(last) = pair.last() {
                    let pinned = post_somewhere(
                        &client,
                        &registries,
                        index,
                        "/v1/heartbeats",
                        &last.heartbeat,
                        &counters,
                    )
                    .await;
                    match pinned {
                        Ok((200, _)) => {}
                        Ok((status, body)) => failures
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(format!("heartbeat: {status} {body}")),
                        Err(failure) => failures
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(failure),
                    }
                }
            }
        });
    }
    let progress = {
        let counters = Arc::clone(&counters);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                let done = counters.acknowledged.load(Ordering::Relaxed);
                eprintln!(
                    "{done} of {total} marks acknowledged ({:.0}%), {:.0} s",
                    done as f64 * 100.0 / total.max(1) as f64,
                    started.elapsed().as_secs_f64()
                );
            }
        })
    };
    while tasks.join_next().await.is_some() {}
    progress.abort();
    report.wall_secs = started.elapsed().as_secs_f64();
    report.records = total;
    report.records_per_sec = total as f64 / report.wall_secs.max(1e-9);
    let mut latencies = latencies.lock().unwrap_or_else(|p| p.into_inner()).clone();
    latencies.sort_by(f64::total_cmp);
    report.batches = latencies.len() as u64;
    let at = |share: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * share).round() as usize)
            .copied()
            .unwrap_or_default()
    };
    report.ack_p50_ms = at(0.5);
    report.ack_p99_ms = at(0.99);
    report.ack_max_ms = at(1.0);
    report.stored = counters.stored.load(Ordering::Relaxed);
    report.already_stored = counters.already.load(Ordering::Relaxed);
    report.waited_for_previous = counters.waited.load(Ordering::Relaxed);
    report.retried_elsewhere = counters.elsewhere.load(Ordering::Relaxed);
    report.receipts_differing = differing.load(Ordering::Relaxed);
    let failures = failures.lock().unwrap_or_else(|p| p.into_inner());
    report.failures = failures.len() as u64;
    report.failure_examples = failures.iter().take(5).cloned().collect();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_has_valid_distinct_colleges_and_students_of_the_asked_size() {
        let plan = DayPlan {
            agents: 772,
            marks: 2_000_000,
            date: Date::parse("2026-11-27").expect("date"),
            race: false,
            in_flight: 8,
            seed: 1,
        };
        let colleges = plan.colleges();
        assert_eq!(colleges.len(), 772);
        let students: usize = colleges.iter().map(|college| college.students).sum();
        assert_eq!(students, 500_000);
        let bins: std::collections::HashSet<&str> = colleges
            .iter()
            .map(|college| college.bin.as_str())
            .collect();
        assert_eq!(bins.len(), 772, "distinct BINs");
        assert!(colleges
            .iter()
            .all(|college| Bin::parse(&college.bin).is_ok()));
        let largest = colleges
            .iter()
            .map(|college| college.students)
            .max()
            .unwrap_or(0);
        let smallest = colleges
            .iter()
            .map(|college| college.students)
            .min()
            .unwrap_or(0);
        assert!(largest > 8 * smallest, "{smallest}..{largest}: a long tail");
        let iins: std::collections::HashSet<String> = (0..20_000).map(student_iin).collect();
        assert_eq!(iins.len(), 20_000, "distinct IINs");
        assert!(iins.iter().all(|iin| Iin::parse(iin).is_ok()));
    }

    /// A plan whose BIN is a real college's is refused before anything is written.
    #[test]
    fn a_real_college_is_never_simulated() {
        let (_dir, store) = crate::store::tests::store_on(kasip_tests::Store::Sqlite);
        let plan = DayPlan {
            agents: 3,
            marks: 120,
            date: Date::parse("2026-11-27").expect("date"),
            race: false,
            in_flight: 1,
            seed: 1,
        };
        let colleges = plan.colleges();
        let zone = kasip_core::CollegeTimezone::parse("Asia/Almaty").expect("zone");
        let real = Bin::parse(&colleges[1].bin).expect("bin");
        store
            .add_college(&real, "Real college", &zone)
            .expect("college");
        let refused =
            register_colleges(&store, &colleges, 1_795_000_000).expect_err("a real college's BIN");
        assert!(refused.to_string().contains("Real college"), "{refused}");
        assert_eq!(
            store
                .college_name(&colleges[1].bin)
                .expect("name")
                .as_deref(),
            Some("Real college")
        );
        let codes: u64 = store
            .db()
            .value(
                "SELECT COUNT(*) FROM enrolment_codes WHERE bin = ?1",
                crate::db::params![colleges[1].bin],
            )
            .expect("codes");
        assert_eq!(codes, 0, "no code for the real college");
        let written: u64 = store
            .db()
            .value("SELECT COUNT(*) FROM colleges", crate::db::params![])
            .expect("colleges");
        assert_eq!(written, 1, "no simulated college either");
    }

    #[test]
    fn a_simulated_lesson_is_a_batch_the_registry_checks_pass() {
        let college = College {
            bin: bin_of(7),
            students: 30,
            first_student: 0,
        };
        let mut agent = SimulatedAgent::new(1, 0, &college.bin).expect("agent");
        let date = Date::parse("2026-11-27").expect("date");
        let first = agent.lesson(&college, date, 0);
        let second = agent.lesson(&college, date, 1);
        assert_eq!((first.seq, second.seq), (1, 2));
        let payload = kasip_certs::jws::verify_compact(&second.jws, agent.key.public_key())
            .expect("signed")
            .payload;
        let envelope = BatchEnvelope::parse(&payload).expect("envelope");
        assert_eq!(envelope.prev, sha256_hex(first.jws.as_bytes()));
        let records: Vec<AttendanceRecord> = envelope
            .records
            .iter()
            .map(|record| record.parse().expect("record"))
            .collect();
        for record in &records {
            kasip_core::batch::check_attendance(BATCH_VERSION, record).expect("valid record");
        }
        assert_eq!(records[0].id, 31, "ids continue across batches");
        // The registry re-walks the chain across batches: from genesis, both hold.
        let first_records: Vec<AttendanceRecord> = BatchEnvelope::parse(
            &kasip_certs::jws::verify_compact(&first.jws, agent.key.public_key())
                .expect("signed")
                .payload,
        )
        .expect("envelope")
        .records
        .iter()
        .map(|record| record.parse().expect("record"))
        .collect();
        let all: Vec<AttendanceRecord> = first_records.into_iter().chain(records).collect();
        let head = kasip_core::chain::rewalk(&kasip_core::chain::ChainHead::genesis(), &all, 2)
            .expect("the chain re-walks");
        assert_eq!(head.event, 60);
    }
}
