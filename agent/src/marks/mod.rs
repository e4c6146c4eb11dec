//! Recording marks: one path for every mark, whatever its source.
//!
//! Every mark goes through `MarkWriter`: one thread owns the write connection, takes all
//! requests waiting at that moment, decides each in order inside one transaction, commits
//! once, and only then answers. A reply of `Ok` therefore means the mark is on disk. Each
//! source has its own decision (`phone`, `kiosk`, `manual`); all of them end in
//! `record::record_mark`, the only code that appends to the attendance chain.

mod kiosk;
mod lookups;
mod manual;
mod phone;
mod record;

use std::sync::mpsc;
use std::sync::Arc;
use std::thread;

use tokio::sync::oneshot;

pub use kiosk::{KioskScan, ScanOutcome, ScanRefusal};
use lookups::Lookups;
pub use manual::{ManualAccepted, ManualMark, ManualRefusal};
pub use phone::{
    binding_key, device_signature_valid, passkey_challenge, passkey_check, verify_device,
    verify_passkey, Accepted, PasskeyCheck, PasskeyOutcome, PhoneCheckIn, Rejection, INTENT_SECS,
};
pub use record::{record_mark, MarkSource, MarkToRecord, RecordedMark};

use crate::attendance::ChainWriter;
use crate::clock::Clock;
use crate::coverage::{CoveragePolicy, CoverageRules};
use crate::lessons::LessonTimes;
use crate::store::Store;

/// Most requests decided in one transaction: bounds the latency a burst adds.
const MAX_GROUP: usize = 512;

/// What the writer decides with: the parts of the college's settings that judge a mark.
#[derive(Debug, Clone)]
pub struct MarkRules {
    pub lessons: LessonTimes,
    /// How long one classroom code is shown.
    pub qr_period_secs: u32,
    /// A QR mark this long after the lesson's start is `late`.
    pub late_after_mins: u32,
    /// Minutes around a lesson in which a room kiosk's scan marks it.
    pub kiosk_grace_mins: u32,
    /// Largest |scan time − pass signing time| accepted.
    pub pass_window_secs: u32,
    /// A kiosk scan this long before its arrival is refused.
    pub kiosk_max_buffer_secs: i64,
    pub coverage: CoverageRules,
    /// What a manual mark that would break the coverage rule needs.
    pub coverage_policy: CoveragePolicy,
}

/// Why a mark could not be stored at all (not the student's fault).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteFailure(pub String);

/// Prefix of a failure because the disk is full or read-only: the pages say so.
pub const STORAGE_UNAVAILABLE: &str = "storage unavailable";

impl WriteFailure {
    /// The disk is full or read-only: nothing was stored, reads still work, and the
    /// writer retries with the next request.
    pub fn is_storage_unavailable(&self) -> bool {
        self.0.starts_with(STORAGE_UNAVAILABLE)
    }
}

pub type CheckInResult = Result<Result<Accepted, Rejection>, WriteFailure>;

pub type ManualResult = Result<Result<ManualAccepted, ManualRefusal>, WriteFailure>;

pub type KioskScanResult = Result<ScanOutcome, WriteFailure>;

enum Request {
    Phone(PhoneCheckIn, oneshot::Sender<CheckInResult>),
    Manual(ManualMark, oneshot::Sender<ManualResult>),
    Kiosk(KioskScan, oneshot::Sender<KioskScanResult>),
}

impl Request {
    /// The lesson a request may change, when known before deciding it.
    fn lesson(&self) -> Option<i64> {
        match self {
            Request::Phone(check_in, _) => check_in.token.as_ref().ok().map(|token| token.lesson),
            Request::Manual(mark, _) => Some(mark.lesson_id),
            // A typed code or a kiosk scan finds its lesson inside the transaction.
            Request::Kiosk(..) => None,
        }
    }
}

enum Answer {
    Phone(Result<Accepted, Rejection>),
    Manual(Result<ManualAccepted, ManualRefusal>),
    Kiosk(ScanOutcome),
}

impl Request {
    fn reply(self, answer: Result<Answer, WriteFailure>) {
        let wrong_kind = || WriteFailure("internal error: wrong answer kind".into());
        // decide_group answers each request with its own kind; a mismatch still answers
        // rather than leave a client hanging.
        match (self, answer) {
            (Request::Phone(_, reply), Ok(Answer::Phone(answer))) => drop(reply.send(Ok(answer))),
            (Request::Manual(_, reply), Ok(Answer::Manual(answer))) => drop(reply.send(Ok(answer))),
            (Request::Kiosk(_, reply), Ok(Answer::Kiosk(answer))) => drop(reply.send(Ok(answer))),
            (Request::Phone(_, reply), Err(failure)) => drop(reply.send(Err(failure))),
            (Request::Manual(_, reply), Err(failure)) => drop(reply.send(Err(failure))),
            (Request::Kiosk(_, reply), Err(failure)) => drop(reply.send(Err(failure))),
            (Request::Phone(_, reply), Ok(_)) => drop(reply.send(Err(wrong_kind()))),
            (Request::Manual(_, reply), Ok(_)) => drop(reply.send(Err(wrong_kind()))),
            (Request::Kiosk(_, reply), Ok(_)) => drop(reply.send(Err(wrong_kind()))),
        }
    }
}

/// Handle to the writer thread; cheap to clone.
#[derive(Clone)]
pub struct MarkWriter {
    sender: mpsc::Sender<Request>,
    /// What projectors must show anew (`Changes`): they wait on it instead of polling.
    changes: Arc<Changes>,
}

/// Which lessons changed, for the projectors' feeds: a version per lesson, bumped by each
/// committed group that touched it, and one for every lesson (a kiosk scan, whose lesson
/// is found inside the transaction; a lesson opened or closed; a sign-out). A feed wakes
/// on every bump and reads the database only when its own lesson's version moved.
#[derive(Default)]
pub struct Changes {
    per_lesson: std::sync::Mutex<std::collections::HashMap<i64, u64>>,
    every_lesson: std::sync::atomic::AtomicU64,
    wake: tokio::sync::watch::Sender<u64>,
}

impl Changes {
    /// Bumps `lessons` (None: every lesson) and wakes the feeds.
    fn touch(&self, lessons: impl IntoIterator<Item = Option<i64>>) {
        {
            let mut per_lesson = self
                .per_lesson
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            for lesson in lessons {
                match lesson {
                    Some(lesson) => *per_lesson.entry(lesson).or_default() += 1,
                    None => {
                        self.every_lesson
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            }
        }
        self.wake
            .send_modify(|count| *count = count.wrapping_add(1));
    }

    /// A number that moves whenever `lesson` may show something new.
    pub fn version(&self, lesson: i64) -> u64 {
        let own = self
            .per_lesson
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&lesson)
            .copied()
            .unwrap_or(0);
        own.wrapping_add(self.every_lesson.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Wakes on every bump.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.wake.subscribe()
    }
}

impl MarkWriter {
    /// Starts the writer thread on its own connection. It stops when every handle is
    /// dropped, after finishing what it was given.
    pub fn start(
        store: Store,
        rules: MarkRules,
        clock: Arc<dyn Clock>,
    ) -> (Self, thread::JoinHandle<Store>) {
        let (sender, receiver) = mpsc::channel();
        let changes = Arc::new(Changes::default());
        let committed = Arc::clone(&changes);
        let handle = thread::Builder::new()
            .name("mark-writer".into())
            .spawn(move || writer_loop(store, receiver, &rules, clock.as_ref(), &committed))
            .unwrap_or_else(|error| panic!("cannot start the mark writer thread: {error}"));
        (Self { sender, changes }, handle)
    }

    /// What changed since a projector's feed last looked.
    pub fn changes(&self) -> Arc<Changes> {
        Arc::clone(&self.changes)
    }

    /// Wakes every projector: a lesson was opened or closed on another connection, or a
    /// staff member signed out.
    pub fn announce_change(&self) {
        self.changes.touch([None]);
    }

    /// Decides and stores a phone check-in; resolves after commit.
    pub async fn phone_check_in(&self, check_in: PhoneCheckIn) -> CheckInResult {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send(Request::Phone(check_in, reply))
            .map_err(|_| WriteFailure("the mark writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| WriteFailure("the mark writer stopped before answering".into()))?
    }

    /// Records a manual mark; resolves after commit. The one door for manual marks: the
    /// coverage policy hooks in `decide_manual`.
    pub async fn record_manual_mark(&self, mark: ManualMark) -> ManualResult {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send(Request::Manual(mark, reply))
            .map_err(|_| WriteFailure("the mark writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| WriteFailure("the mark writer stopped before answering".into()))?
    }

    /// Decides and stores the scans a kiosk forwarded, in order; resolves after commit.
    pub async fn kiosk_scans(&self, scans: Vec<KioskScan>) -> Vec<KioskScanResult> {
        let mut answers = Vec::with_capacity(scans.len());
        for scan in scans {
            let (reply, answer) = oneshot::channel();
            let sent = self.sender.send(Request::Kiosk(scan, reply));
            answers.push(sent.map(|()| answer));
        }
        let mut results = Vec::with_capacity(answers.len());
        for answer in answers {
            results.push(match answer {
                Err(_) => Err(WriteFailure("the mark writer has stopped".into())),
                Ok(answer) => answer.await.unwrap_or_else(|_| {
                    Err(WriteFailure(
                        "the mark writer stopped before answering".into(),
                    ))
                }),
            });
        }
        results
    }
}

fn writer_loop(
    mut store: Store,
    receiver: mpsc::Receiver<Request>,
    rules: &MarkRules,
    clock: &dyn Clock,
    changes: &Changes,
) -> Store {
    let mut lookups = Lookups::default();
    while let Ok(first) = receiver.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match receiver.try_recv() {
                Ok(request) => group.push(request),
                Err(_) => break,
            }
        }
        let now = clock.now_unix();
        let outcome = decide_group(&mut store, &mut lookups, &group, rules, now);
        match outcome {
            Ok(answers) => {
                changes.touch(group.iter().map(Request::lesson));
                for (request, answer) in group.into_iter().zip(answers) {
                    request.reply(Ok(answer));
                }
            }
            Err(error) => {
                lookups.forget();
                // Nothing in this group was stored: say so to every waiting client.
                tracing::error!(error = %crate::error::report(&error), requests = group.len(), "cannot commit marks");
                // A full or read-only disk is a state that passes: refuse (503) and try
                // again with the next request, so the agent recovers by itself when space
                // returns. So is a lock held longer than busy_timeout (a long import or
                // backup). Any other I/O error leaves the database in doubt.
                let code = match &error {
                    rusqlite::Error::SqliteFailure(failure, _) => Some(failure.code),
                    _ => None,
                };
                let storage_unavailable = matches!(
                    code,
                    Some(rusqlite::ErrorCode::DiskFull | rusqlite::ErrorCode::ReadOnly)
                );
                let passes = storage_unavailable
                    || matches!(
                        code,
                        Some(
                            rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                        )
                    );
                for request in group {
                    request.reply(Err(WriteFailure(if storage_unavailable {
                        format!("{STORAGE_UNAVAILABLE}: {error}")
                    } else {
                        format!("the mark could not be stored: {error}")
                    })));
                }
                if !passes {
                    // An I/O error on commit is fatal (design §4): exit and let the service
                    // manager restart us rather than run on a database in doubt.
                    tracing::error!(
                        "exiting after a storage error; the service manager restarts the agent"
                    );
                    std::process::exit(74);
                }
            }
        }
    }
    store
}

fn decide_group(
    store: &mut Store,
    lookups: &mut Lookups,
    group: &[Request],
    rules: &MarkRules,
    now: i64,
) -> rusqlite::Result<Vec<Answer>> {
    // IMMEDIATE: take the write lock first (waiting up to busy_timeout for the other
    // connections); a deferred transaction that read the chain head and then writes fails
    // at once with SQLITE_BUSY if another connection committed meanwhile.
    let transaction = store
        .connection_mut()
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    lookups.refresh(&transaction)?;
    let mut chain = ChainWriter::read_head(&transaction)?;
    let mut answers = Vec::with_capacity(group.len());
    for request in group {
        match request {
            Request::Phone(check_in, _) => {
                let answer =
                    phone::decide_phone(&transaction, lookups, &mut chain, check_in, rules, now)?;
                if let Err(rejection) = &answer {
                    phone::record_refusal(&transaction, now, *rejection, check_in)?;
                }
                answers.push(Answer::Phone(answer));
            }
            Request::Kiosk(scan, _) => {
                answers.push(Answer::Kiosk(kiosk::decide_scan(
                    &transaction,
                    &mut chain,
                    scan,
                    rules,
                    now,
                )?));
            }
            Request::Manual(mark, _) => {
                answers.push(Answer::Manual(manual::decide_manual(
                    &transaction,
                    &mut chain,
                    mark,
                    rules,
                    now,
                )?));
            }
        }
    }
    transaction.commit()?;
    Ok(answers)
}
