//! Students' phones: binding one to a student with a one-time code, and finding the
//! lesson a typed code belongs to. The web pages call these; they hold no SQL.

use kasip_core::{step_at, typed_code, ClassroomToken, Iin, LessonKey};
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior};

use crate::lessons::{open_lesson_at, LessonTimes};
use crate::secrets::{random_token, same_secret, secret_hash, RandomUnavailable};
use crate::security_events::{self, SecurityEvent};
use crate::staff::BINDING_CODE_MAX_FAILURES;

/// What a binding attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindOutcome {
    /// Bound: the credential cookie and the device identity cookie to set.
    Bound {
        credential: String,
        device: String,
    },
    BadIin,
    WrongCode,
    Locked,
    /// The form carried no usable device key (a browser without WebCrypto).
    NoDeviceKey,
}

/// Where a binding request came from, kept with the binding and sent to the registry.
#[derive(Debug, Clone)]
pub struct BindingRequest {
    /// The phone's device public key: an uncompressed P-256 point.
    pub device_key: Vec<u8>,
    /// The phone's identity cookie, kept when it has one (the throttle's device).
    pub existing_device: Option<String>,
    /// The client address (and device) the throttle counts.
    pub client: String,
    pub user_agent: String,
}

/// Whether `key` is an uncompressed P-256 public point (what WebCrypto exports as raw).
pub fn device_key_usable(key: &[u8]) -> bool {
    key.len() == 65 && key[0] == 0x04
}

/// Why a binding could not be decided at all.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error(transparent)]
    Random(#[from] RandomUnavailable),
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
}

/// Trades the student's one-time `code` for a device credential. A wrong code is a
/// security event from `client` and counts against the code (a backstop: it locks after
/// `BINDING_CODE_MAX_FAILURES` from all clients together; the web throttle slows each
/// client long before); a right one revokes the student's earlier phone and its pass key.
/// The binding names the phone by its device key: check-ins must be signed by it.
pub fn bind(
    connection: &Connection,
    iin: &Iin,
    code: &str,
    request: BindingRequest,
    now: i64,
) -> Result<BindOutcome, BindError> {
    let client = request.client.as_str();
    let pending: Option<(Vec<u8>, i64)> = connection
        .query_row(
            "SELECT code_hash, failed_attempts FROM binding_codes
             WHERE student_iin = ?1 AND used_at IS NULL AND expires_at > ?2
             ORDER BY expires_at DESC LIMIT 1",
            rusqlite::params![iin.as_string(), now],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()?;
    if pending
        .as_ref()
        .is_some_and(|(_, failed_attempts)| *failed_attempts >= BINDING_CODE_MAX_FAILURES)
    {
        return Ok(BindOutcome::Locked);
    }
    // The same work whether or not the student has a pending code: hash, compare, and
    // one transaction that counts the failure (the timing once told which IINs had one).
    let (code_hash, failed_attempts) = pending.unwrap_or_else(|| (vec![0; 32], 0));
    if !same_secret(&secret_hash(code), &code_hash) {
        let transaction = Transaction::new_unchecked(connection, TransactionBehavior::Immediate)?;
        transaction.execute(
            "UPDATE binding_codes SET failed_attempts = failed_attempts + 1 WHERE code_hash = ?1",
            [&code_hash],
        )?;
        security_events::record(
            &transaction,
            now,
            &SecurityEvent {
                kind: "binding_code_wrong",
                student_iin: Some(&iin.as_string()),
                client: Some(client),
                ..SecurityEvent::default()
            },
        )?;
        transaction.commit()?;
        return Ok(if failed_attempts + 1 >= BINDING_CODE_MAX_FAILURES {
            BindOutcome::Locked
        } else {
            BindOutcome::WrongCode
        });
    }
    if !device_key_usable(&request.device_key) {
        return Ok(BindOutcome::NoDeviceKey);
    }
    let credential = random_token(32)?;
    let device = match request
        .existing_device
        .filter(|device| device.len() >= 32 && device.len() <= 64)
    {
        Some(device) => device,
        None => random_token(32)?,
    };
    // The device is its key: one phone keeps one key across bindings, so one phone
    // checking in two students is still seen; a cookie names nothing by itself.
    let device_id = kasip_core::batch::sha256_hex(&request.device_key);
    let transaction = Transaction::new_unchecked(connection, TransactionBehavior::Immediate)?;
    transaction.execute(
        "UPDATE binding_codes SET used_at = ?2 WHERE code_hash = ?1",
        rusqlite::params![code_hash, now],
    )?;
    // One active phone per student: binding a new one revokes the old, and its
    // pass key with it (the new phone makes its own on /pass).
    transaction.execute(
        "UPDATE device_bindings SET revoked_at = ?2 WHERE student_iin = ?1 AND revoked_at IS NULL",
        rusqlite::params![iin.as_string(), now],
    )?;
    crate::kiosks::replace_pass_keys(&transaction, &iin.as_string(), now)?;
    transaction.execute(
        "INSERT INTO device_bindings (credential_hash, student_iin, device_id, bound_at, device_key,
             code_issued_by, code_issued_at, client, user_agent)
         SELECT ?1, ?2, ?3, ?4, ?5, issued_by, issued_at, ?6, ?7 FROM binding_codes WHERE code_hash = ?8",
        rusqlite::params![
            secret_hash(&credential),
            iin.as_string(),
            device_id,
            now,
            request.device_key,
            client,
            request.user_agent.chars().take(500).collect::<String>(),
            code_hash
        ],
    )?;
    transaction.commit()?;
    Ok(BindOutcome::Bound { credential, device })
}

/// The token of the open lesson whose current or previous typed code is `code`; an
/// unknown code is a security event from `client`.
pub fn token_for_typed_code(
    connection: &Connection,
    code: &str,
    client: &str,
    now: i64,
    qr_period_secs: u32,
    times: &LessonTimes,
) -> rusqlite::Result<Option<ClassroomToken>> {
    let mut statement = connection
        .prepare_cached("SELECT lesson_id FROM lesson_openings WHERE closed_at IS NULL")?;
    let lesson_ids: Vec<i64> = statement
        .query_map([], |row| row.get(0))
        .and_then(|rows| rows.collect())?;
    let current = step_at(now, qr_period_secs);
    for lesson_id in lesson_ids {
        let Some(lesson) = open_lesson_at(connection, lesson_id, now, times)? else {
            continue;
        };
        let key = LessonKey::new(&lesson.qr_key);
        for step in [current, current.saturating_sub(1)] {
            if same_secret(
                typed_code(&key, lesson_id, step).as_bytes(),
                code.as_bytes(),
            ) {
                return Ok(Some(ClassroomToken::mint(&key, lesson_id, step)));
            }
        }
    }
    security_events::record(
        connection,
        now,
        &SecurityEvent {
            kind: "typed_code_unknown",
            detail: code,
            client: Some(client),
            ..SecurityEvent::default()
        },
    )?;
    Ok(None)
}
