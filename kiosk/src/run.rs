//! The kiosk at work: frames (or wedge lines) → decode → verify offline → record →
//! screen and stdout; in the background, the pass keys refresh and the queue forwards.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kasip_core::StudentPass;
use tokio::sync::Notify;

use crate::agent::{AgentClient, CallError};
use crate::decode::{decode, Luma};
use crate::error::KioskError;
use crate::frames::{image_files, ImageStream};
use crate::status::{refusal_text, StatusBoard};
use crate::store::{read_credential, KioskDir, KioskStore};
use crate::verify::{Verdict, Verifier};

/// Scans sent to the agent per request.
const FORWARD_BATCH: i64 = 200;

/// Where the kiosk's passes come from.
#[derive(Debug, Clone)]
pub enum Input {
    /// An image file or a directory of images.
    Files(PathBuf),
    /// PNG/JPEG images one after another on stdin.
    Stdin,
    /// One pass per line on stdin (a USB scanner in keyboard mode).
    Wedge,
    /// A camera by index (feature `camera`).
    Camera(u32),
}

pub struct RunOptions {
    pub input: Input,
    /// Handle the input, try forwarding once, and exit (instead of running on).
    pub once: bool,
    pub status_listen: Option<SocketAddr>,
    pub refresh_secs: u64,
    pub repeat_secs: i64,
    pub retry_max_secs: u64,
}

/// An enrolled kiosk: its store, its agent, its screen.
pub struct Kiosk {
    store: Arc<Mutex<KioskStore>>,
    client: AgentClient,
    credential: String,
    verifier: Verifier,
    board: StatusBoard,
    forward_now: Notify,
}

/// What one forwarding round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ForwardReport {
    /// Scans accepted here and delivered.
    pub delivered: usize,
    /// Of those, refused by the agent.
    pub refused_by_agent: usize,
    /// Passes refused here, reported for the agent's security log.
    pub refusals_reported: usize,
    pub waiting: i64,
}

impl std::fmt::Display for ForwardReport {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "forwarded {} scan(s) to the agent",
            self.delivered
        )?;
        if self.refused_by_agent > 0 {
            write!(
                formatter,
                " ({} refused by the agent)",
                self.refused_by_agent
            )?;
        }
        if self.refusals_reported > 0 {
            write!(
                formatter,
                "; reported {} refused pass(es)",
                self.refusals_reported
            )?;
        }
        Ok(())
    }
}

impl Kiosk {
    pub fn open(dir: &KioskDir, repeat_secs: i64) -> Result<Self, KioskError> {
        let store = KioskStore::open(dir)?;
        let Some(enrolment) = store.enrolment()? else {
            return Err(KioskError::NotEnrolled {
                dir: dir.root().to_owned(),
            });
        };
        let credential = read_credential(dir)?;
        let client = AgentClient::new(&enrolment.agent_url, &enrolment.trust())?;
        Ok(Self {
            store: Arc::new(Mutex::new(store)),
            client,
            credential,
            verifier: Verifier {
                window_secs: enrolment.pass_window_secs,
                repeat_secs,
            },
            board: StatusBoard::default(),
            forward_now: Notify::new(),
        })
    }

    pub fn board(&self) -> StatusBoard {
        self.board.clone()
    }

    fn with_store<T>(
        &self,
        work: impl FnOnce(&mut KioskStore) -> Result<T, KioskError>,
    ) -> Result<T, KioskError> {
        let mut store = self
            .store
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        work(&mut store)
    }

    /// Pulls the agent's pass keys into the local copy. Returns how many students.
    pub async fn refresh_keys(&self) -> Result<usize, CallError> {
        let list = self.client.keys(&self.credential).await?;
        let now = unix_now();
        self.with_store(|store| store.replace_holders(&list.students, list.generated_at, now))
            .map_err(|error| CallError::Unreachable(error.to_string()))?;
        Ok(list.students.len())
    }

    /// Sends every waiting scan, oldest first, until none wait or a call fails.
    pub async fn forward(&self) -> Result<ForwardReport, CallError> {
        let mut report = ForwardReport::default();
        loop {
            let batch = self
                .with_store(|store| store.waiting(FORWARD_BATCH))
                .map_err(|error| CallError::Unreachable(error.to_string()))?;
            if batch.is_empty() {
                return Ok(report);
            }
            let answers = self.client.upload(&self.credential, &batch).await?;
            let answered: Vec<(String, String, Option<String>)> = answers
                .into_iter()
                .filter(|answer| batch.iter().any(|scan| scan.scan_id == answer.id))
                .map(|answer| (answer.id, answer.outcome, answer.reason))
                .collect();
            if answered.is_empty() {
                return Err(CallError::Refused {
                    status: 200,
                    message: "the agent answered none of the scans sent".into(),
                });
            }
            for (scan_id, outcome, reason) in &answered {
                let reported = batch
                    .iter()
                    .any(|scan| scan.scan_id == *scan_id && scan.reported_refusal);
                if reported {
                    report.refusals_reported += 1;
                    continue;
                }
                report.delivered += 1;
                if outcome == "no_lesson" {
                    tracing::info!(
                        scan_id,
                        "the agent marked nothing: no lesson of the student's group here now"
                    );
                    self.board.no_lesson(scan_id, unix_now());
                }
                if outcome == "refused" {
                    report.refused_by_agent += 1;
                    tracing::warn!(
                        scan_id,
                        reason = reason.as_deref().unwrap_or(""),
                        "the agent refused a scan this kiosk accepted"
                    );
                }
            }
            self.with_store(|store| store.delivered(&answered, unix_now()))
                .map_err(|error| CallError::Unreachable(error.to_string()))?;
            report.waiting = self
                .with_store(|store| store.queue_state())
                .map(|state| state.waiting)
                .unwrap_or_default();
        }
    }

    /// Decides the texts read from one frame: the first that is a pass counts. Prints the
    /// verdict's line and shows it on the screen.
    pub fn handle(&self, texts: &[String], label: &str, started: Instant, quiet_repeat: bool) {
        let Some(text) = texts
            .iter()
            .find(|text| StudentPass::parse(text.trim()).is_ok())
            .or(texts.first())
        else {
            return;
        };
        let now = unix_now();
        let verdict = match self.with_store(|store| self.verifier.check(store, text, now)) {
            Ok(verdict) => verdict,
            Err(error) => {
                // Not the student's fault, and nothing was recorded: say so and go on.
                eprintln!("error: cannot record the scan: {error}");
                return;
            }
        };
        let millis = started.elapsed().as_millis();
        match &verdict {
            Verdict::Accepted { iin, name, scan_id } => {
                println!("ACCEPT\t{iin}\t{name}\t{scan_id}\t{label}\t{millis}ms");
                self.forward_now.notify_one();
            }
            Verdict::Repeat { iin, name } => {
                if !quiet_repeat {
                    println!("REPEAT\t{iin}\t{name}\t{label}");
                }
            }
            Verdict::Refused { refusal, iin } => println!(
                "REFUSE\t{}\t{}\t{}\t{label}",
                refusal.code(),
                iin.as_deref().unwrap_or("-"),
                refusal_text(*refusal)
            ),
        }
        self.board.show(&verdict, now);
    }

    fn handle_image(&self, bytes: &[u8], label: &str) {
        let started = Instant::now();
        match Luma::from_encoded(bytes) {
            Ok(frame) => {
                let texts = decode(&frame);
                if texts.is_empty() {
                    println!("NONE\t{label}");
                } else {
                    self.handle(&texts, label, started, false);
                }
            }
            Err(error) => eprintln!("error: {label}: not a readable PNG/JPEG image: {error}"),
        }
    }

    /// Runs the input to its end (a camera never ends).
    fn scan(&self, input: &Input) -> Result<(), KioskError> {
        match input {
            Input::Files(path) => {
                for file in image_files(path)? {
                    let label = file.display().to_string();
                    match std::fs::read(&file) {
                        Ok(bytes) => self.handle_image(&bytes, &label),
                        Err(error) => eprintln!("error: cannot read {label}: {error}"),
                    }
                }
                Ok(())
            }
            Input::Stdin => {
                for (index, image) in ImageStream::new(std::io::stdin().lock()).enumerate() {
                    self.handle_image(&image?, &format!("stdin#{}", index + 1));
                }
                Ok(())
            }
            Input::Wedge => {
                use std::io::BufRead;
                for (index, line) in std::io::stdin().lock().lines().enumerate() {
                    let line = line.map_err(|error| {
                        KioskError::Usage(format!("cannot read the scanner's input: {error}"))
                    })?;
                    if line.trim().is_empty() {
                        continue;
                    }
                    self.handle(
                        &[line.trim().to_owned()],
                        &format!("wedge#{}", index + 1),
                        Instant::now(),
                        false,
                    );
                }
                Ok(())
            }
            Input::Camera(index) => {
                let label = format!("camera{index}");
                crate::camera::scan(*index, |texts, started| {
                    self.handle(texts, &label, started, true)
                })
            }
        }
    }
}

/// Black-box tests move the kiosk's clock with the agent's: a file holding a Unix time,
/// read on every call. Only builds for tests (feature `test-clock`) read it.
pub const CLOCK_FILE_VARIABLE: &str = "KASIP_UNSAFE_CLOCK_FILE";

/// The kiosk's time: the system clock, or, in a build for tests, the test clock file.
#[allow(clippy::disallowed_methods)] // the kiosk's one reader of the system time
pub fn unix_now() -> i64 {
    std::env::var_os(CLOCK_FILE_VARIABLE)
        .filter(|_| cfg!(feature = "test-clock"))
        .and_then(|path| std::fs::read_to_string(path).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |elapsed| elapsed.as_secs() as i64)
        })
}

/// Keeps the queue moving: forwards when a scan arrives or every few seconds; backs off
/// while the agent is unreachable; waits a minute after a refusal (a revoked kiosk keeps
/// its scans until it is enrolled again).
async fn forwarder(kiosk: Arc<Kiosk>, retry_max: Duration) {
    let mut delay = Duration::from_secs(1);
    loop {
        match kiosk.forward().await {
            Ok(report) => {
                delay = Duration::from_secs(1);
                if report.delivered > 0 {
                    tracing::info!(delivered = report.delivered, "scans forwarded to the agent");
                }
                let _ = tokio::time::timeout(Duration::from_secs(5), kiosk.forward_now.notified())
                    .await;
            }
            Err(CallError::Unreachable(reason)) => {
                tracing::warn!(%reason, retry_in_secs = delay.as_secs(), "scans wait for the agent");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(retry_max);
            }
            Err(CallError::Refused { status, message }) => {
                tracing::error!(status, %message, "the agent refuses this kiosk's scans; they are kept");
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
        }
    }
}

async fn key_refresher(kiosk: Arc<Kiosk>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        if let Err(error) = kiosk.refresh_keys().await {
            tracing::warn!(error = %KioskError::from(error), "pass keys not refreshed; the local copy is used");
        }
    }
}

pub fn run(dir: &KioskDir, options: RunOptions) -> Result<(), KioskError> {
    let kiosk = Arc::new(Kiosk::open(dir, options.repeat_secs)?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(KioskError::runtime("cannot start the async runtime"))?;
    runtime.block_on(async move {
        if let Some(listen) = options.status_listen {
            let address = crate::status::serve(listen, kiosk.board()).await?;
            println!("status page http://{address}/");
        }
        match kiosk.refresh_keys().await {
            Ok(count) => tracing::info!(students = count, "pass keys refreshed"),
            Err(error) => eprintln!(
                "warning: {}; verifying with the local copy of the pass keys",
                KioskError::from(error)
            ),
        }
        if !options.once {
            tokio::spawn(forwarder(
                Arc::clone(&kiosk),
                Duration::from_secs(options.retry_max_secs.max(1)),
            ));
            tokio::spawn(key_refresher(
                Arc::clone(&kiosk),
                Duration::from_secs(options.refresh_secs.max(5)),
            ));
        }
        // Frames are decoded on their own thread: a blocking read of stdin or a camera
        // must not hold the runtime, and shutdown must not wait for it.
        let (done_sender, done) = tokio::sync::oneshot::channel();
        let scanner = Arc::clone(&kiosk);
        let input = options.input.clone();
        std::thread::Builder::new()
            .name("scanner".into())
            .spawn(move || {
                let _ = done_sender.send(scanner.scan(&input));
            })
            .map_err(KioskError::runtime("cannot start the scanner"))?;
        let shutdown = shutdown_signal()?;
        tokio::pin!(shutdown);
        kasip_certs::service_manager::notify("READY=1\nSTATUS=scanning");
        if let Some(interval) = kasip_certs::service_manager::watchdog_interval() {
            // The scanner thread ends the process when it fails; while the runtime turns,
            // the kiosk is alive.
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(interval).await;
                    kasip_certs::service_manager::notify("WATCHDOG=1");
                }
            });
        }
        tokio::select! {
            finished = done => finished.unwrap_or(Ok(()))?,
            () = &mut shutdown => return Ok(()),
        }
        if options.once {
            return match kiosk.forward().await {
                Ok(report) => {
                    println!("{report}");
                    Ok(())
                }
                Err(error) => {
                    let waiting = kiosk
                        .with_store(|store| store.queue_state())
                        .map(|state| state.waiting)
                        .unwrap_or_default();
                    println!(
                        "{waiting} scan(s) wait for the agent: {}",
                        KioskError::from(error)
                    );
                    Ok(())
                }
            };
        }
        // The input ended (files, stdin): keep forwarding until stopped.
        shutdown.await;
        Ok(())
    })
}

/// `kasip-kiosk sync`: refresh the keys and forward everything now.
pub fn sync_now(dir: &KioskDir) -> Result<ForwardReport, KioskError> {
    let kiosk = Kiosk::open(dir, 0)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(KioskError::runtime("cannot start the async runtime"))?;
    runtime.block_on(async {
        let holders = kiosk.refresh_keys().await?;
        println!("pass keys: {holders} student(s)");
        Ok(kiosk.forward().await?)
    })
}

fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>, KioskError> {
    kasip_certs::process::shutdown_signal()
        .map_err(|(what, source)| KioskError::runtime(what)(source))
}
