//! Durable check-ins per second over HTTPS with 64 concurrent phones, against a trivial
//! handler (`GET /ping`) on the same server in the same run. Then scanning phones one at
//! a time, each on a fresh connection (new TLS session, `GET` of the code's page, then
//! the `POST`), as a phone that just scanned the projector does: scan-to-confirmation
//! p50/p99 against a fresh-connection `GET /ping`.
//!
//! The same check-ins again with the student's passkey (design §5.10): each carries a
//! WebAuthn assertion the agent verifies before it records the mark, reported as a
//! ratio to the check-ins without one, in the same run.
//!
//! `cargo bench -p kasip-agent --bench checkin` (add `-- --students N` to change the load).
//! Figures go to BENCHMARKS.md by hand, as ratios to the baseline measured here.
//!
//! `-- --weak-machine`: the cheapest college PC instead. The agent is put in a cgroup
//! limited to a quarter of one core (v2 `cpu.max`, or v1 `cpu.cfs_quota_us`; needs root,
//! and the run says so and stops without it), 100 projectors poll their code once a
//! second, and 300 phones scan within 10 s, each on a fresh connection: every check-in
//! must be confirmed; scan-to-confirmation p50/p99 are printed (target: p99 < 150 ms).

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kasip_core::passkey::check_in_challenge;
use kasip_core::passkey::software::{SoftwareAuthenticator, PRESENT_AND_VERIFIED};
use kasip_core::{Date, Iin, Sex};
use kasip_tests::{cpu_seconds, run_with, text, Server, TempDataDir};

const AGENT: &str = env!("CARGO_BIN_EXE_kasip-agent");
const CLIENTS: usize = 64;
/// Phones in the fresh-connection run, each a student of its own.
const FRESH_PHONES: usize = 400;
const TEACHER: &str = "850515400012";
const BIN: &str = "090640001233";
/// The agent's name, as the passkeys' origin; the registry's domain, as their RP ID.
const AGENT_NAME: &str = "agent.bench.kasip.test";
const RP_ID: &str = "kasip.test";
const PASSWORD: &str = "correct horse battery";

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * fraction).round() as usize]
}

struct Run {
    requests: usize,
    ok: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Run {
    fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    fn report(&self, label: &str) {
        println!(
            "{label:<28} {:>8} requests {:>8} ok  {:>9.0}/s  p50 {:>7.2} ms  p99 {:>7.2} ms",
            self.requests,
            self.ok,
            self.rate(),
            percentile(&self.latencies, 0.50).as_secs_f64() * 1000.0,
            percentile(&self.latencies, 0.99).as_secs_f64() * 1000.0,
        );
    }
}

/// Builds request `number` of client `index`.
type MakeRequest =
    Arc<dyn Fn(&reqwest::Client, usize, usize) -> reqwest::RequestBuilder + Send + Sync>;

/// Runs `work(client_index, request_index)` from CLIENTS tasks, each with its own
/// keep-alive HTTPS connection, `per_client` times.
async fn load(clients: &[reqwest::Client], per_client: usize, request: MakeRequest) -> Run {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (index, client) in clients.iter().enumerate() {
        let client = client.clone();
        let request = request.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(per_client);
            let mut ok = 0;
            for number in 0..per_client {
                let sent = Instant::now();
                let response = request(&client, index, number).send().await;
                let success = match response {
                    Ok(response) => {
                        let status = response.status();
                        let _ = response.bytes().await;
                        status.is_success()
                    }
                    Err(_) => false,
                };
                latencies.push(sent.elapsed());
                ok += usize::from(success);
            }
            (latencies, ok)
        }));
    }
    let mut latencies = Vec::new();
    let mut ok = 0;
    for task in tasks {
        let (task_latencies, task_ok) = task.await.expect("load task");
        latencies.extend(task_latencies);
        ok += task_ok;
    }
    let elapsed = started.elapsed();
    latencies.sort();
    Run {
        requests: latencies.len(),
        ok,
        elapsed,
        latencies,
    }
}

/// Moves `pid` into a new cgroup limited to a quarter of one core: cgroup v2's `cpu.max`
/// where the machine has it, v1's CFS quota otherwise. Returns the cgroup's directory.
fn limit_to_a_quarter_core(pid: u32) -> Result<std::path::PathBuf, String> {
    use std::path::Path;
    let name = format!("kasip-weak-machine-{pid}");
    let write = |path: &Path, text: &str| {
        std::fs::write(path, text).map_err(|error| format!("{}: {error}", path.display()))
    };
    let v2 = Path::new("/sys/fs/cgroup");
    let dir = if std::fs::read_to_string(v2.join("cgroup.controllers"))
        .is_ok_and(|controllers| controllers.split_whitespace().any(|c| c == "cpu"))
    {
        let dir = v2.join(&name);
        std::fs::create_dir(&dir).map_err(|error| format!("{}: {error}", dir.display()))?;
        write(&dir.join("cpu.max"), "25000 100000")?;
        dir
    } else {
        let dir = v2.join("cpu").join(&name);
        std::fs::create_dir(&dir).map_err(|error| format!("{}: {error}", dir.display()))?;
        write(&dir.join("cpu.cfs_period_us"), "100000")?;
        write(&dir.join("cpu.cfs_quota_us"), "25000")?;
        dir
    };
    write(&dir.join("cgroup.procs"), &pid.to_string())?;
    Ok(dir)
}

/// The marks in the agent's database.
fn marks_on_disk(data_dir: &std::path::Path) -> usize {
    let marks: i64 = rusqlite::Connection::open(data_dir.join("agent.db"))
        .expect("db")
        .query_row("SELECT COUNT(*) FROM attendance_events", [], |row| {
            row.get(0)
        })
        .expect("count");
    marks as usize
}

/// CPU time of the agent's mark-writer thread, in seconds.
fn writer_cpu_seconds(pid: u32) -> f64 {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("tasks");
    for task in tasks.flatten() {
        let path = task.path();
        if std::fs::read_to_string(path.join("comm")).is_ok_and(|comm| comm.trim() == "mark-writer")
        {
            return kasip_tests::stat_cpu_seconds(path.join("stat"), false);
        }
    }
    panic!("the agent has no mark-writer thread");
}

/// A new client trusting the agent's certificate, keeping no connection: each request
/// a fresh TLS session, as a phone that has just scanned the projector.
fn fresh_client(pem: &[u8]) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(pem).expect("pem"))
        .pool_max_idle_per_host(0)
        .build()
        .expect("client")
}

/// A phone's scan: the code's page, then the signed check-in; the time to confirmation.
async fn scan(client: &reqwest::Client, url: &str, credential: &str, body: String) -> Duration {
    let cookie = format!("__Host-kasip_credential={credential}");
    let sent = Instant::now();
    let page = client
        .get(url)
        .header("cookie", cookie.clone())
        .send()
        .await
        .expect("page");
    assert!(page.status().is_success());
    let _ = page.bytes().await;
    let confirmed = client
        .post(url)
        .header("cookie", cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .expect("check-in");
    assert!(confirmed.status().is_success(), "{}", confirmed.status());
    let _ = confirmed.bytes().await;
    sent.elapsed()
}

/// 300 phones within 10 s and 100 projectors, on an agent limited to a quarter core.
fn weak_machine(
    server: &Server,
    data_dir: &std::path::Path,
    pem: &[u8],
    token: &str,
    phones: &[(String, String)],
) {
    const PHONES: usize = 300;
    const PROJECTORS: usize = 100;
    const SPREAD: Duration = Duration::from_secs(10);
    let base = server.url.clone();
    // Signed in before the limit: a sign-in's argon2 is not the load under test.
    let teacher = kasip_tests::browser(data_dir);
    kasip_tests::sign_in(&teacher, &base, TEACHER, PASSWORD);
    let pid = server.pid();
    let cgroup = match limit_to_a_quarter_core(pid) {
        Ok(cgroup) => cgroup,
        Err(why) => {
            println!("weak machine: cannot limit the agent's CPU here ({why}); run as root on a machine with the cgroup cpu controller. No figures.");
            return;
        }
    };
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let polls = Arc::new(std::sync::Mutex::new(Vec::new()));
    let projectors: Vec<_> = (0..PROJECTORS)
        .map(|index| {
            let (teacher, base, stop, polls) =
                (teacher.clone(), base.clone(), stop.clone(), polls.clone());
            std::thread::spawn(move || {
                // Spread over the second, as projectors switched on at different times.
                std::thread::sleep(Duration::from_millis(index as u64 * 10));
                let mut shown: Option<u64> = None;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let query = shown.map_or(String::new(), |step| format!("?shown={step}"));
                    let sent = Instant::now();
                    let answer: serde_json::Value = teacher
                        .get(format!("{base}/display/1/current{query}"))
                        .send()
                        .and_then(|response| response.json())
                        .expect("poll");
                    polls.lock().expect("polls").push(sent.elapsed());
                    shown = answer["step"].as_u64();
                    std::thread::sleep(Duration::from_secs(1));
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let cpu_before = cpu_seconds(pid);
    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut scans: Vec<Duration> = runtime.block_on(async {
        let mut tasks = Vec::new();
        for (index, (credential, body)) in phones.iter().take(PHONES).cloned().enumerate() {
            let (pem, url) = (pem.to_vec(), format!("{base}/c/{token}"));
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(SPREAD * index as u32 / PHONES as u32).await;
                scan(&fresh_client(&pem), &url, &credential, body).await
            }));
        }
        let mut scans = Vec::new();
        for task in tasks {
            scans.push(task.await.expect("phone"));
        }
        scans
    });
    let elapsed = started.elapsed().as_secs_f64();
    let used = (cpu_seconds(pid) - cpu_before) / elapsed;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for projector in projectors {
        projector.join().expect("projector");
    }
    let stored = marks_on_disk(data_dir);
    assert_eq!(stored, PHONES, "every check-in confirmed and on disk");
    let throttled = std::fs::read_to_string(cgroup.join("cpu.stat")).unwrap_or_default();
    scans.sort();
    let mut polls = polls.lock().expect("polls").clone();
    polls.sort();
    let ms = |duration: Duration| duration.as_secs_f64() * 1000.0;
    println!(
        "weak machine (a quarter of one core, {}): {PHONES} phones in {:.1} s with {PROJECTORS} projectors polling: all {stored} confirmed; scan to confirmation p50 {:.1} ms p99 {:.1} ms (target p99 < 150 ms); projector poll p50 {:.1} ms p99 {:.1} ms; the agent used {:.1}% of a core; cgroup: {}",
        cgroup.display(),
        elapsed,
        ms(percentile(&scans, 0.50)),
        ms(percentile(&scans, 0.99)),
        ms(percentile(&polls, 0.50)),
        ms(percentile(&polls, 0.99)),
        used * 100.0,
        throttled.split_whitespace().collect::<Vec<_>>().join(" ")
    );
    // The cgroup goes once the agent has stopped (`main`).
}

fn main() {
    let weak = std::env::args().any(|argument| argument == "--weak-machine");
    let students: usize = std::env::args()
        .skip_while(|argument| argument != "--students")
        .nth(1)
        .and_then(|value| value.parse().ok())
        .unwrap_or(if weak { 0 } else { 25_600 });
    let per_client = students / CLIENTS;
    let students = per_client * CLIENTS;
    let dir = TempDataDir::new();
    let clock = dir.file("clock");
    // 2026-11-23 09:01 in Almaty, a minute into the benchmark lesson.
    let start = Date::new(2026, 11, 23).expect("date").days_since_epoch() * 86_400 + 4 * 3600 + 60;
    std::fs::write(&clock, start.to_string()).expect("clock");
    let clock_text = clock.display().to_string();
    let env = [("KASIP_UNSAFE_CLOCK_FILE", clock_text.as_str())];
    let agent = |args: &[&str]| {
        let output = run_with(AGENT, &dir.path(), args, &env, None);
        assert!(output.status.success(), "{args:?}: {:?}", text(&output));
        text(&output).0
    };
    agent(&["init"]);
    let teachers = dir.file("teachers.csv");
    std::fs::write(
        &teachers,
        format!("iin;last_name;first_name\n{TEACHER};Жұмабаева;Әйгерім\n"),
    )
    .expect("csv");
    agent(&["import", "teachers", teachers.to_str().expect("path")]);
    let birth = Date::new(2006, 3, 15).expect("date");
    let iins: Vec<String> = (0..=u16::MAX)
        .flat_map(|serial| [Sex::Female, Sex::Male].map(|sex| (serial, sex)))
        .filter_map(|(serial, sex)| {
            Iin::from_parts(
                birth.add_days(i64::from(serial / 10_000)),
                sex,
                serial % 10_000,
            )
        })
        .map(|iin| iin.to_string())
        .take(2 * students + FRESH_PHONES)
        .collect();
    assert_eq!(
        iins.len(),
        2 * students + FRESH_PHONES,
        "not enough distinct test IINs"
    );
    // The last `students` are group BENCHPK, whose lesson is checked into with passkeys.
    let with_passkeys = students + FRESH_PHONES;
    let mut csv = String::from("iin;last_name;first_name;group;beneficiary\n");
    for (index, iin) in iins.iter().enumerate() {
        let group = if index < with_passkeys {
            "BENCH"
        } else {
            "BENCHPK"
        };
        let _ = writeln!(csv, "{iin};Студент{index};Әлия;{group};да");
    }
    let students_file = dir.file("students.csv");
    std::fs::write(&students_file, csv).expect("csv");
    agent(&["import", "students", students_file.to_str().expect("path")]);
    let timetable = dir.file("timetable.csv");
    std::fs::write(&timetable, format!("date;start;end;group;discipline;teacher_iin;site;room;mode\n2026-11-23;09:00;10:30;BENCH;Математика;{TEACHER};Главный корпус;101;offline\n2026-11-23;09:00;10:30;BENCHPK;Математика;{TEACHER};Главный корпус;102;offline\n")).expect("csv");
    agent(&["import", "timetable", timetable.to_str().expect("path")]);
    agent(&["lesson", "open", "1"]);
    agent(&["lesson", "open", "2"]);
    // The agent's name: the origin its passkey check-ins must come from.
    let config_path = dir.path().join("config.toml");
    let config = std::fs::read_to_string(&config_path).expect("config");
    assert!(config.contains("public_url = \"\""));
    std::fs::write(
        &config_path,
        config.replace(
            "public_url = \"\"",
            &format!("public_url = \"https://{AGENT_NAME}\""),
        ),
    )
    .expect("config");
    if weak {
        let output = run_with(
            AGENT,
            &dir.path(),
            &["staff", "set-password", TEACHER],
            &env,
            Some(PASSWORD),
        );
        assert!(output.status.success(), "{:?}", text(&output));
    }
    // Bindings are seeded directly: binding is not what this benchmark measures. Each
    // phone has its device key, and signs its check-in as the page's script does.
    let credentials: Vec<String> = (0..iins.len())
        .map(|index| format!("bench-credential-{index:08}"))
        .collect();
    let phone_keys: Vec<kasip_tests::PhoneKey> = (0..iins.len())
        .map(|_| kasip_tests::PhoneKey::new())
        .collect();
    // The BENCHPK students' passkeys, as the registry's directory lists them.
    let passkeys: Vec<SoftwareAuthenticator> = (with_passkeys..iins.len())
        .map(|index| SoftwareAuthenticator::generate(format!("passkey-{index}").as_bytes(), RP_ID))
        .collect();
    {
        let mut database = rusqlite::Connection::open(dir.path().join("agent.db")).expect("db");
        let transaction = database.transaction().expect("tx");
        for (index, (iin, credential)) in iins.iter().zip(&credentials).enumerate() {
            let hash = ring::digest::digest(&ring::digest::SHA256, credential.as_bytes());
            transaction
                .execute(
                    "INSERT INTO device_bindings (credential_hash, student_iin, device_id, bound_at, device_key)
                     VALUES (?1, ?2, ?3, 0, ?4)",
                    rusqlite::params![
                        hash.as_ref(),
                        iin,
                        format!("device-{index}"),
                        phone_keys[index].public_key_bytes()
                    ],
                )
                .expect("binding");
        }
        for (iin, passkey) in iins[with_passkeys..].iter().zip(&passkeys) {
            use base64::Engine;
            transaction
                .execute(
                    "INSERT INTO passkey_directory (iin, credential_id, public_key, registered_at)
                     VALUES (?1, ?2, ?3, 0)",
                    rusqlite::params![
                        iin,
                        base64::engine::general_purpose::URL_SAFE_NO_PAD
                            .encode(&passkey.credential_id),
                        passkey.cose_key()
                    ],
                )
                .expect("passkey");
        }
        transaction
            .execute(
                "INSERT INTO passkey_relying_party (id, rp_id, fetched_at) VALUES (1, ?1, 0)",
                [RP_ID],
            )
            .expect("relying party");
        transaction.commit().expect("commit");
    }
    let step = kasip_core::step_at(start, 10);
    let token_of = |lesson: i64| {
        let qr_key: Vec<u8> = rusqlite::Connection::open(dir.path().join("agent.db"))
            .expect("db")
            .query_row(
                "SELECT qr_key FROM lesson_openings WHERE lesson_id = ?1",
                [lesson],
                |row| row.get(0),
            )
            .expect("key");
        kasip_core::ClassroomToken::mint(&kasip_core::LessonKey::new(&qr_key), lesson, step)
            .to_string()
    };
    let (token, passkey_token) = (token_of(1), token_of(2));
    let origin = format!("https://{AGENT_NAME}");
    let signed_bodies: Vec<String> = phone_keys
        .iter()
        .enumerate()
        .map(|(index, key)| {
            if index < with_passkeys {
                format!("device_signature={}", key.sign(&token))
            } else {
                let challenge = check_in_challenge(BIN, 2, "2026-11-23", step, &iins[index]);
                let assertion = passkeys[index - with_passkeys].assert(
                    &challenge,
                    &origin,
                    PRESENT_AND_VERIFIED,
                    1,
                );
                format!(
                    "device_signature={}&passkey={}",
                    key.sign(&passkey_token),
                    assertion.to_text()
                )
            }
        })
        .collect();

    let server = Server::start_with_env(AGENT, &dir.path(), &[], &env);
    if weak {
        let pem = std::fs::read(dir.path().join("tls.crt")).expect("cert");
        let _ = rustls::crypto::ring::default_provider().install_default();
        let phones: Vec<(String, String)> = credentials
            .iter()
            .cloned()
            .zip(signed_bodies.iter().cloned())
            .collect();
        weak_machine(&server, &dir.path(), &pem, &token, &phones);
        let pid = server.pid();
        let (exit, _) = server.stop_with("TERM");
        assert!(exit.success());
        for root in ["/sys/fs/cgroup", "/sys/fs/cgroup/cpu"] {
            let _ = std::fs::remove_dir(format!("{root}/kasip-weak-machine-{pid}"));
        }
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let pem = std::fs::read(dir.path().join("tls.crt")).expect("cert");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let clients: Vec<reqwest::Client> = (0..CLIENTS)
        .map(|_| {
            reqwest::Client::builder()
                .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("pem"))
                .pool_max_idle_per_host(1)
                .build()
                .expect("client")
        })
        .collect();
    let base = server.url.clone();
    println!("kasip-agent check-in benchmark: {students} students, {CLIENTS} concurrent HTTPS clients, loopback");
    runtime.block_on(async {
        // Warm up connections and the TLS sessions.
        let ping_url = format!("{base}/ping");
        let warm = Arc::new(move |client: &reqwest::Client, _: usize, _: usize| {
            client.get(ping_url.clone())
        });
        load(&clients, 20, warm.clone()).await;
        let baseline = load(&clients, per_client, warm).await;
        baseline.report("trivial handler GET /ping");
        let check_in_url = format!("{base}/c/{token}");
        let fresh_credentials = credentials[students..with_passkeys].to_vec();
        let fresh_bodies = signed_bodies[students..with_passkeys].to_vec();
        let passkey_credentials = Arc::new(credentials[with_passkeys..].to_vec());
        let fresh_url = check_in_url.clone();
        let credentials = Arc::new(credentials);
        let signed_bodies = Arc::new(signed_bodies);
        let bodies = Arc::clone(&signed_bodies);
        let writer_before = writer_cpu_seconds(server.pid());
        let agent_before = cpu_seconds(server.pid());
        let check_ins = load(
            &clients,
            per_client,
            Arc::new(
                move |client: &reqwest::Client, index: usize, number: usize| {
                    let credential = &credentials[index * per_client + number];
                    client
                        .post(check_in_url.clone())
                        .header("cookie", format!("__Host-kasip_credential={credential}"))
                        .header("content-type", "application/x-www-form-urlencoded")
                        .body(signed_bodies[index * per_client + number].clone())
                },
            ),
        )
        .await;
        check_ins.report("durable check-in POST /c/…");
        let per_mark = |seconds: f64| seconds * 1e6 / check_ins.ok as f64;
        println!(
            "CPU per check-in: the agent {:.0} µs, of which its mark writer {:.0} µs",
            per_mark(cpu_seconds(server.pid()) - agent_before),
            per_mark(writer_cpu_seconds(server.pid()) - writer_before)
        );
        println!(
            "check-in rate / trivial rate: {:.2}",
            check_ins.rate() / baseline.rate()
        );
        // What one device-signature check costs, as the agent makes it (ECDSA P-256,
        // ring), on one core of this machine: with the two cores busy during the ping
        // run, a check-in that cost nothing but this check on top of a ping could reach
        // at most ping ÷ (ping + check).
        let verifications = 2_000;
        let keys: Vec<Vec<u8>> = phone_keys
            .iter()
            .take(verifications)
            .map(kasip_tests::PhoneKey::public_key_bytes)
            .collect();
        let started = Instant::now();
        for (key, body) in keys.iter().zip(bodies.iter()) {
            let signature = body.trim_start_matches("device_signature=");
            assert!(kasip_agent::marks::device_signature_valid(
                key, &token, signature
            ));
        }
        let verification = started.elapsed() / verifications as u32;
        let ping_cost = Duration::from_secs_f64(2.0 / baseline.rate());
        println!(
            "one device-signature check: {:.1} µs; a ping costs {:.1} µs of the two cores (client and agent); ceiling of the ratio with the check alone: {:.2}",
            verification.as_secs_f64() * 1e6,
            ping_cost.as_secs_f64() * 1e6,
            ping_cost.as_secs_f64() / (ping_cost + verification).as_secs_f64()
        );
        let stored = marks_on_disk(&dir.path());
        println!("marks on disk: {stored} (2xx answers: {})", check_ins.ok);
        assert_eq!(stored, check_ins.ok, "every 2xx must be on disk");
        assert_eq!(check_ins.ok, students, "every check-in accepted");

        // The same load, each check-in with the student's passkey assertion.
        let passkey_url = format!("{base}/c/{passkey_token}");
        let passkey_bodies = Arc::new(bodies[with_passkeys..].to_vec());
        let agent_before = cpu_seconds(server.pid());
        let with_passkey = load(
            &clients,
            per_client,
            Arc::new(
                move |client: &reqwest::Client, index: usize, number: usize| {
                    let at = index * per_client + number;
                    client
                        .post(passkey_url.clone())
                        .header(
                            "cookie",
                            format!("__Host-kasip_credential={}", passkey_credentials[at]),
                        )
                        .header("content-type", "application/x-www-form-urlencoded")
                        .body(passkey_bodies[at].clone())
                },
            ),
        )
        .await;
        with_passkey.report("with a passkey assertion");
        println!(
            "CPU per check-in with a passkey: the agent {:.0} µs; check-ins with a passkey / without: {:.2}",
            (cpu_seconds(server.pid()) - agent_before) * 1e6 / with_passkey.ok as f64,
            with_passkey.rate() / check_ins.rate()
        );
        let verified: i64 = rusqlite::Connection::open(dir.path().join("agent.db"))
            .expect("db")
            .query_row(
                "SELECT COUNT(*) FROM attendance_events WHERE evidence LIKE '%\"passkey\":%'",
                [],
                |row| row.get(0),
            )
            .expect("count");
        assert_eq!(with_passkey.ok, students, "every passkey check-in accepted");
        assert_eq!(verified as usize, students, "every one recorded with its assertion");

        // Fresh connections, one phone at a time: a new client each (no pooled
        // connection, no TLS session to resume).
        let mut pings = Vec::with_capacity(FRESH_PHONES);
        for _ in 0..FRESH_PHONES {
            let client = fresh_client(&pem);
            let sent = Instant::now();
            let response = client.get(format!("{base}/ping")).send().await.expect("ping");
            assert!(response.status().is_success());
            let _ = response.bytes().await;
            pings.push(sent.elapsed());
        }
        let mut scans = Vec::with_capacity(FRESH_PHONES);
        for (credential, body) in fresh_credentials.iter().zip(&fresh_bodies) {
            scans.push(scan(&fresh_client(&pem), &fresh_url, credential, body.clone()).await);
        }
        pings.sort();
        scans.sort();
        let ms = |duration: Duration| duration.as_secs_f64() * 1000.0;
        println!(
            "fresh connection, one at a time: GET /ping p50 {:.2} ms p99 {:.2} ms; scan to confirmation (GET + POST) p50 {:.2} ms p99 {:.2} ms; p50 ratio {:.2}, p99 ratio {:.2}",
            ms(percentile(&pings, 0.50)),
            ms(percentile(&pings, 0.99)),
            ms(percentile(&scans, 0.50)),
            ms(percentile(&scans, 0.99)),
            percentile(&scans, 0.50).as_secs_f64() / percentile(&pings, 0.50).as_secs_f64(),
            percentile(&scans, 0.99).as_secs_f64() / percentile(&pings, 0.99).as_secs_f64()
        );
    });
    let (exit, _) = server.stop_with("TERM");
    assert!(exit.success());
}
