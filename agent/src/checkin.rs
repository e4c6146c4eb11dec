//! Recording marks: the single writer that group-commits check-ins and manual marks.
//!
//! Every mark goes through `MarkWriter`: one thread owns the write connection, takes all
//! requests waiting at that moment, decides each in order inside one transaction, commits
//! once, and only then answers. A reply of `Ok` therefore means the mark is on disk.

use std::sync::mpsc;
use std::sync::Arc;
use std::thread;

use kasip_core::{ClassroomToken, Iin, LessonKey, MarkMethod, MarkStatus, TokenError};
use ring::digest::{digest, SHA256};
use rusqlite::{OptionalExtension, Transaction};
use tokio::sync::oneshot;

use crate::attendance::{ChainWriter, NewMark};
use crate::clock::Clock;
use crate::config::Settings;
use crate::kiosks::{decide_scan, KioskScan, ScanOutcome};
use crate::lessons::open_lesson_at;
use crate::staff::Role;
use crate::store::Store;

/// Most requests decided in one transaction: bounds the latency a burst adds.
const MAX_GROUP: usize = 512;

/// Why a check-in was refused. Each is recorded as a security event, never as a mark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    MalformedToken,
    ForgedToken,
    StaleToken,
    LessonNotOpen,
    NotInGroup,
    DeviceNotBound,
    DeviceUsedForAnotherStudent,
    StudentInactive,
}

impl Rejection {
    /// The security event kind, and the catalog key (`reject.<kind>`) of its message.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::MalformedToken => "malformed_token",
            Self::ForgedToken => "forged_token",
            Self::StaleToken => "stale_token",
            Self::LessonNotOpen => "lesson_not_open",
            Self::NotInGroup => "not_in_group",
            Self::DeviceNotBound => "device_not_bound",
            Self::DeviceUsedForAnotherStudent => "device_used_for_another_student",
            Self::StudentInactive => "student_inactive",
        }
    }

    pub fn message_key(&self) -> &'static str {
        match self {
            Self::MalformedToken => "reject.malformed_token",
            Self::ForgedToken => "reject.forged_token",
            Self::StaleToken => "reject.stale_token",
            Self::LessonNotOpen => "reject.lesson_not_open",
            Self::NotInGroup => "reject.not_in_group",
            Self::DeviceNotBound => "reject.device_not_bound",
            Self::DeviceUsedForAnotherStudent => "reject.device_used_for_another_student",
            Self::StudentInactive => "reject.student_inactive",
        }
    }
}

/// A phone's check-in as the HTTP edge parsed it.
pub struct PhoneCheckIn {
    /// The classroom token, or how it failed to parse.
    pub token: Result<ClassroomToken, TokenError>,
    /// SHA-256 of the device credential cookie, if the phone sent one.
    pub credential_hash: Option<Vec<u8>>,
    /// Whether the code was typed (`qr_typed`) rather than scanned.
    pub typed: bool,
    /// When the token was last seen fresh, if earlier than now: a check-in intent from a
    /// phone that had to bind first. Honoured for `INTENT_SECS`.
    pub fresh_at: Option<i64>,
}

/// How long a fresh token, once presented, holds a check-in open while the student binds.
pub const INTENT_SECS: i64 = 120;

/// A manual mark by staff (method `manual`), for students who cannot scan.
pub struct ManualMark {
    pub lesson_id: i64,
    pub student_iin: Iin,
    pub status: MarkStatus,
    pub reason: String,
    pub marker: crate::staff::StaffMember,
    /// An admin's reason for letting this mark take the group below the coverage rule.
    pub override_reason: Option<String>,
}

/// A stored manual mark, and the coverage warning the teacher must see, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManualAccepted {
    pub event_id: i64,
    /// (coverage before, after) in thousandths when the mark took the group below the rule.
    pub below_rule: Option<(Option<u64>, Option<u64>)>,
}

/// Why a manual mark was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManualRefusal {
    UnknownLesson,
    LessonNotHeld,
    NotYourLesson,
    NotInGroup,
    ReasonRequired,
    /// Would take the group from `before` to `after` (thousandths), below the rule; only
    /// an admin with a reason may (policy require-override).
    NeedsOverride {
        before: Option<u64>,
        after: Option<u64>,
    },
    /// Would take the group below the rule; refused (policy block).
    Blocked {
        before: Option<u64>,
        after: Option<u64>,
    },
}

/// An accepted check-in: new or a repeat of an earlier one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub event_id: i64,
    pub student_iin: String,
    pub student_name: String,
    pub lesson_id: i64,
    pub status: MarkStatus,
    pub recorded_at: i64,
    pub repeated: bool,
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
}

/// SHA-256 of a secret, as stored for credentials and device identities.
pub fn secret_hash(secret: &str) -> Vec<u8> {
    digest(&SHA256, secret.as_bytes()).as_ref().to_vec()
}

impl MarkWriter {
    /// Starts the writer thread on its own connection. It stops when every handle is
    /// dropped, after finishing what it was given.
    pub fn start(
        store: Store,
        settings: Arc<Settings>,
        clock: Arc<dyn Clock>,
    ) -> (Self, thread::JoinHandle<Store>) {
        let (sender, receiver) = mpsc::channel();
        let handle = thread::Builder::new()
            .name("mark-writer".into())
            .spawn(move || writer_loop(store, receiver, &settings, clock.as_ref()))
            .unwrap_or_else(|error| panic!("cannot start the mark writer thread: {error}"));
        (Self { sender }, handle)
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
    settings: &Settings,
    clock: &dyn Clock,
) -> Store {
    while let Ok(first) = receiver.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match receiver.try_recv() {
                Ok(request) => group.push(request),
                Err(_) => break,
            }
        }
        let now = clock.now_unix();
        let outcome = decide_group(&mut store, &group, settings, now);
        match outcome {
            Ok(answers) => {
                for (request, answer) in group.into_iter().zip(answers) {
                    request.reply(Ok(answer));
                }
            }
            Err(error) => {
                // Nothing in this group was stored: say so to every waiting client.
                tracing::error!(%error, requests = group.len(), "cannot commit marks");
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
    group: &[Request],
    settings: &Settings,
    now: i64,
) -> rusqlite::Result<Vec<Answer>> {
    // IMMEDIATE: take the write lock first (waiting up to busy_timeout for the other
    // connections); a deferred transaction that read the chain head and then writes fails
    // at once with SQLITE_BUSY if another connection committed meanwhile.
    let transaction = store
        .connection_mut()
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let mut chain = ChainWriter::read_head(&transaction)?;
    let mut answers = Vec::with_capacity(group.len());
    for request in group {
        match request {
            Request::Phone(check_in, _) => {
                let answer = decide_phone(&transaction, &mut chain, check_in, settings, now)?;
                if let Err(rejection) = &answer {
                    record_security_event(&transaction, now, *rejection, check_in)?;
                }
                answers.push(Answer::Phone(answer));
            }
            Request::Kiosk(scan, _) => {
                answers.push(Answer::Kiosk(decide_scan(
                    &transaction,
                    &mut chain,
                    scan,
                    settings,
                    now,
                )?));
            }
            Request::Manual(mark, _) => {
                answers.push(Answer::Manual(decide_manual(
                    &transaction,
                    &mut chain,
                    mark,
                    settings,
                    now,
                )?));
            }
        }
    }
    transaction.commit()?;
    Ok(answers)
}

fn record_security_event(
    transaction: &Transaction<'_>,
    now: i64,
    rejection: Rejection,
    check_in: &PhoneCheckIn,
) -> rusqlite::Result<()> {
    let lesson_id = check_in.token.as_ref().ok().map(|token| token.lesson);
    let binding: Option<(String, String)> = match &check_in.credential_hash {
        Some(hash) => transaction
            .prepare_cached(
                "SELECT student_iin, device_id FROM device_bindings WHERE credential_hash = ?1",
            )?
            .query_row([hash], |row| Ok((row.get(0)?, row.get(1)?)))
            .optional()?,
        None => None,
    };
    let (student_iin, device_id) = binding.unzip();
    transaction
        .prepare_cached(
            "INSERT INTO security_events (at, kind, lesson_id, student_iin, device_id, detail)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(rusqlite::params![
            now,
            rejection.kind(),
            lesson_id,
            student_iin,
            device_id,
            if check_in.typed { "typed code" } else { "" },
        ])?;
    Ok(())
}

fn decide_phone(
    transaction: &Transaction<'_>,
    chain: &mut ChainWriter,
    check_in: &PhoneCheckIn,
    settings: &Settings,
    now: i64,
) -> rusqlite::Result<Result<Accepted, Rejection>> {
    let token = match &check_in.token {
        Ok(token) => token,
        Err(_) => return Ok(Err(Rejection::MalformedToken)),
    };
    let Some(credential_hash) = &check_in.credential_hash else {
        return Ok(Err(Rejection::DeviceNotBound));
    };
    let binding: Option<(String, String)> = transaction
        .prepare_cached(
            "SELECT student_iin, device_id FROM device_bindings
             WHERE credential_hash = ?1 AND revoked_at IS NULL",
        )?
        .query_row([credential_hash], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    let Some((student_iin, device_id)) = binding else {
        return Ok(Err(Rejection::DeviceNotBound));
    };
    let Some(lesson) = open_lesson_at(transaction, token.lesson, now, settings)? else {
        // A forged id for a lesson that is not open is still "not open": there is no key
        // to check the tag against, and the student's fix is the same.
        return Ok(Err(Rejection::LessonNotOpen));
    };
    let seen_fresh_at = match check_in.fresh_at {
        Some(fresh_at) if now - fresh_at <= INTENT_SECS && fresh_at <= now => fresh_at,
        _ => now,
    };
    let current_step = kasip_core::step_at(seen_fresh_at, settings.qr_period_secs);
    match token.verify(&LessonKey::new(&lesson.qr_key), current_step) {
        Ok(()) => {}
        Err(TokenError::Forged | TokenError::Malformed) => return Ok(Err(Rejection::ForgedToken)),
        Err(TokenError::Stale { .. } | TokenError::FromTheFuture) => {
            return Ok(Err(Rejection::StaleToken))
        }
    }
    let student: Option<(i64, String, String)> = transaction
        .prepare_cached(
            "SELECT group_id, status, last_name || ' ' || first_name FROM students WHERE iin = ?1",
        )?
        .query_row([&student_iin], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })
        .optional()?;
    let Some((group_id, status, student_name)) = student else {
        return Ok(Err(Rejection::DeviceNotBound));
    };
    if status != "active" {
        return Ok(Err(Rejection::StudentInactive));
    }
    if group_id != lesson.group_id {
        return Ok(Err(Rejection::NotInGroup));
    }
    let method = if check_in.typed {
        MarkMethod::QrTyped
    } else {
        MarkMethod::QrPhone
    };
    let earlier: Option<(i64, String, i64)> = transaction
        .prepare_cached(
            "SELECT id, status, recorded_at FROM attendance_events
             WHERE lesson_id = ?1 AND student_iin = ?2 AND method IN ('qr_phone', 'qr_typed', 'qr_kiosk')
             ORDER BY id LIMIT 1",
        )?
        .query_row(rusqlite::params![lesson.lesson_id, &student_iin], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })
        .optional()?;
    if let Some((event_id, status, recorded_at)) = earlier {
        return Ok(Ok(Accepted {
            event_id,
            student_iin,
            student_name,
            lesson_id: lesson.lesson_id,
            status: MarkStatus::parse(&status).unwrap_or(MarkStatus::Present),
            recorded_at,
            repeated: true,
        }));
    }
    let device_used: Option<i64> = transaction
        .prepare_cached(
            "SELECT 1 FROM attendance_events
             WHERE lesson_id = ?1 AND device_id = ?2 AND student_iin != ?3 LIMIT 1",
        )?
        .query_row(
            rusqlite::params![lesson.lesson_id, &device_id, &student_iin],
            |row| row.get(0),
        )
        .optional()?;
    if device_used.is_some() {
        return Ok(Err(Rejection::DeviceUsedForAnotherStudent));
    }
    let late = now > lesson.starts_at + i64::from(settings.late_after_mins) * 60;
    let status = if late {
        MarkStatus::Late
    } else {
        MarkStatus::Present
    };
    let student_iin_parsed = Iin::parse(&student_iin).map_err(|error| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(error))
    })?;
    let event_id = chain.append(
        transaction,
        &NewMark {
            lesson_id: lesson.lesson_id,
            student_iin: student_iin_parsed,
            status,
            method,
            recorded_at: now,
            device_id: Some(device_id),
            token_step: Some(token.step),
            marked_by: None,
            reason: None,
            corrects: None,
        },
    )?;
    Ok(Ok(Accepted {
        event_id,
        student_iin,
        student_name,
        lesson_id: lesson.lesson_id,
        status,
        recorded_at: now,
        repeated: false,
    }))
}

/// The one function every manual mark goes through.
fn decide_manual(
    transaction: &Transaction<'_>,
    chain: &mut ChainWriter,
    mark: &ManualMark,
    settings: &Settings,
    now: i64,
) -> rusqlite::Result<Result<ManualAccepted, ManualRefusal>> {
    if mark.reason.trim().is_empty() && mark.status != MarkStatus::Present {
        return Ok(Err(ManualRefusal::ReasonRequired));
    }
    let lesson: Option<(i64, String, bool)> = transaction
        .prepare_cached(
            "SELECT l.group_id, l.teacher_iin, o.lesson_id IS NOT NULL
             FROM lessons l LEFT JOIN lesson_openings o ON o.lesson_id = l.id WHERE l.id = ?1",
        )?
        .query_row([mark.lesson_id], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?))
        })
        .optional()?;
    let Some((group_id, teacher_iin, held)) = lesson else {
        return Ok(Err(ManualRefusal::UnknownLesson));
    };
    if !held {
        return Ok(Err(ManualRefusal::LessonNotHeld));
    }
    let allowed = match mark.marker.role {
        Role::Admin => true,
        Role::Teacher => mark.marker.teacher_iin.as_deref() == Some(teacher_iin.as_str()),
        Role::Curator => transaction
            .prepare_cached("SELECT 1 FROM curator_groups WHERE staff_id = ?1 AND group_id = ?2")?
            .query_row(rusqlite::params![mark.marker.id, group_id], |row| {
                row.get::<_, i64>(0)
            })
            .optional()?
            .is_some(),
    };
    if !allowed {
        return Ok(Err(ManualRefusal::NotYourLesson));
    }
    let student_group: Option<i64> = transaction
        .prepare_cached("SELECT group_id FROM students WHERE iin = ?1")?
        .query_row([mark.student_iin.as_string()], |row| row.get(0))
        .optional()?;
    if student_group != Some(group_id) {
        return Ok(Err(ManualRefusal::NotInGroup));
    }
    let gate = coverage_gate(transaction, mark, settings)?;
    let below_rule = match (gate, settings.coverage_policy) {
        (None, _) => None,
        (Some((before, after)), crate::coverage::CoveragePolicy::Warn) => Some((before, after)),
        (Some((before, after)), crate::coverage::CoveragePolicy::Block) => {
            return Ok(Err(ManualRefusal::Blocked { before, after }));
        }
        (Some((before, after)), crate::coverage::CoveragePolicy::RequireOverride) => {
            let overridden = mark.marker.role == Role::Admin
                && mark
                    .override_reason
                    .as_deref()
                    .is_some_and(|reason| !reason.trim().is_empty());
            if !overridden {
                return Ok(Err(ManualRefusal::NeedsOverride { before, after }));
            }
            Some((before, after))
        }
    };
    let previous: Option<i64> = transaction
        .prepare_cached(
            "SELECT MAX(id) FROM attendance_events WHERE lesson_id = ?1 AND student_iin = ?2",
        )?
        .query_row(
            rusqlite::params![mark.lesson_id, mark.student_iin.as_string()],
            |row| row.get(0),
        )?;
    let event_id = chain.append(
        transaction,
        &NewMark {
            lesson_id: mark.lesson_id,
            student_iin: mark.student_iin,
            status: mark.status,
            method: MarkMethod::Manual,
            recorded_at: now,
            device_id: None,
            token_step: None,
            marked_by: Some(mark.marker.login.clone()),
            reason: Some(mark.reason.trim().to_owned()).filter(|reason| !reason.is_empty()),
            corrects: previous,
        },
    )?;
    // A mark for a lesson of a closed month is an adjustment to that month's statement.
    transaction
        .prepare_cached(
            "INSERT INTO month_adjustments (event_id, month)
             SELECT ?1, mc.month FROM lessons l JOIN month_closes mc ON mc.month = substr(l.date, 1, 7)
             WHERE l.id = ?2",
        )?
        .execute(rusqlite::params![event_id, mark.lesson_id])?;
    if let (Some((before, after)), Some(reason)) = (below_rule, mark.override_reason.as_deref()) {
        if mark.marker.role == Role::Admin && !reason.trim().is_empty() {
            transaction
                .prepare_cached(
                    "INSERT INTO coverage_overrides (event_id, admin_login, reason, coverage_before, coverage_after, at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )?
                .execute(rusqlite::params![
                    event_id,
                    mark.marker.login,
                    reason.trim(),
                    before.map(|value| value as i64),
                    after.map(|value| value as i64),
                    now
                ])?;
        }
    }
    Ok(Ok(ManualAccepted {
        event_id,
        below_rule,
    }))
}

/// Whether this manual mark would take its group from holding the coverage rule to
/// breaking it for the lesson's month so far: Some((before, after)) in thousandths.
fn coverage_gate(
    transaction: &Transaction<'_>,
    mark: &ManualMark,
    settings: &Settings,
) -> rusqlite::Result<Option<(Option<u64>, Option<u64>)>> {
    let (date, group): (String, String) = transaction
        .prepare_cached(
            "SELECT l.date, g.code FROM lessons l JOIN study_groups g ON g.id = l.group_id WHERE l.id = ?1",
        )?
        .query_row([mark.lesson_id], |row| Ok((row.get(0)?, row.get(1)?)))?;
    let Ok(date) = kasip_core::Date::parse(&date) else {
        return Ok(None);
    };
    let rules = settings.coverage_rules();
    let before =
        crate::coverage::student_months(transaction, date.calendar_month(), Some(&group), &rules)?;
    let iin = mark.student_iin.as_string();
    let Some(position) = before.iter().position(|student| student.iin == iin) else {
        return Ok(None); // not a beneficiary this month: the rule does not see the mark
    };
    let replaced: Option<(String, String)> = transaction
        .prepare_cached(
            "SELECT status, method FROM attendance_events WHERE lesson_id = ?1 AND student_iin = ?2
             ORDER BY id DESC LIMIT 1",
        )?
        .query_row(rusqlite::params![mark.lesson_id, iin], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .optional()?;
    let mut after = before.clone();
    let student = &mut after[position];
    if let Some((status, method)) = replaced {
        if status == "present" || status == "late" {
            student.present = student.present.saturating_sub(1);
            if crate::coverage::is_qr_method(&method, &rules) {
                student.qr = student.qr.saturating_sub(1);
            }
        }
    }
    if matches!(mark.status, MarkStatus::Present | MarkStatus::Late) {
        student.present += 1;
    }
    let coverage = |students: &[kasip_core::StudentMonth]| {
        kasip_core::coverage_of(
            &group,
            &students.iter().collect::<Vec<_>>(),
            rules.student_qr_share,
            rules.min_coverage,
        )
    };
    let (before, after) = (coverage(&before), coverage(&after));
    Ok((before.holds && !after.holds)
        .then_some((before.coverage_per_mille, after.coverage_per_mille)))
}
