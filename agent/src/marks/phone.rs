//! A phone's check-in, decided on the writer thread: credential → lesson open → token
//! fresh and genuine → student active and in the group → not a repeat → device not used
//! for another student → `record_mark`.

use kasip_core::chain::{check_in_message, EntryKind, MarkEvidence};
use kasip_core::{ClassroomToken, Iin, LessonKey, MarkMethod, MarkStatus, TokenError};
use rusqlite::{OptionalExtension, Transaction};

use super::lookups::Lookups;
use super::record::{record_mark_admitted, MarkSource, MarkToRecord};
use super::MarkRules;
use crate::attendance::ChainWriter;
use crate::security_events::{self, SecurityEvent};

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
    /// The check-in carries no valid signature of the phone's device key (a copied
    /// cookie, or a phone bound before device keys: it binds again).
    DeviceUnverified,
    /// The check-in carries a passkey assertion that does not verify under the
    /// student's key in the registry's directory (forged, replayed, another student's).
    PasskeyInvalid,
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
            Self::DeviceUnverified => "device_unverified",
            Self::PasskeyInvalid => "passkey_invalid",
        }
    }

    pub fn message_key(&self) -> kasip_core::Text {
        match self {
            Self::MalformedToken => kasip_core::Text::RejectMalformedToken,
            Self::ForgedToken => kasip_core::Text::RejectForgedToken,
            Self::StaleToken => kasip_core::Text::RejectStaleToken,
            Self::LessonNotOpen => kasip_core::Text::RejectLessonNotOpen,
            Self::NotInGroup => kasip_core::Text::RejectNotInGroup,
            Self::DeviceNotBound => kasip_core::Text::RejectDeviceNotBound,
            Self::DeviceUsedForAnotherStudent => {
                kasip_core::Text::RejectDeviceUsedForAnotherStudent
            }
            Self::StudentInactive => kasip_core::Text::RejectStudentInactive,
            Self::DeviceUnverified => kasip_core::Text::RejectDeviceUnverified,
            Self::PasskeyInvalid => kasip_core::Text::RejectPasskeyInvalid,
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
    /// What the phone presented (the token's text, or the code as typed) and its device
    /// signature over `kasip_core::chain::check_in_message(presented)`.
    pub presented: String,
    pub device_signature: Option<String>,
    /// The binding whose device key verified `device_signature` (see `verify_device`).
    pub device_verified_for: Option<i64>,
    /// The student's passkey assertion and what `verify_passkey` made of it.
    pub passkey: PasskeyOutcome,
    /// When the token was last seen fresh, if earlier than now: a check-in intent from a
    /// phone that had to bind first. Honoured for `INTENT_SECS`.
    pub fresh_at: Option<i64>,
    /// The phone's address and device, which a refusal's security event is counted under.
    pub client: String,
}

/// A check-in's passkey step, judged before the writer (`verify_passkey`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum PasskeyOutcome {
    /// No assertion came, and the student has no passkey in the directory.
    #[default]
    Absent,
    /// No assertion came though the student has a passkey: recorded, unverified.
    Missing,
    /// Verified for this student: the assertion's text and signature counter.
    Verified {
        student_iin: String,
        assertion: String,
        count: u32,
    },
    /// An assertion that does not verify, and why (a short name for the security log).
    Invalid(&'static str),
}

/// What checking a passkey assertion needs, read for the phone's binding and the lesson.
#[derive(Debug, Clone)]
pub struct PasskeyCheck {
    pub student_iin: String,
    /// base64url, as the directory lists it.
    pub credential_id: String,
    pub public_key: Vec<u8>,
    pub rp_id: String,
    pub lesson_date: String,
}

/// The binding's student's passkey from the cached directory, with the lesson's date.
/// None: the student has no passkey (or the registry enrols none).
pub fn passkey_check(
    connection: &rusqlite::Connection,
    credential_hash: &[u8],
    lesson_id: i64,
) -> rusqlite::Result<Option<PasskeyCheck>> {
    connection
        .prepare_cached(
            "SELECT b.student_iin, p.credential_id, p.public_key, r.rp_id, l.date
             FROM device_bindings b
             JOIN passkey_directory p ON p.iin = b.student_iin
             JOIN passkey_relying_party r ON r.id = 1
             JOIN lessons l ON l.id = ?2
             WHERE b.credential_hash = ?1 AND b.revoked_at IS NULL",
        )?
        .query_row(rusqlite::params![credential_hash, lesson_id], |row| {
            Ok(PasskeyCheck {
                student_iin: row.get(0)?,
                credential_id: row.get(1)?,
                public_key: row.get(2)?,
                rp_id: row.get(3)?,
                lesson_date: row.get(4)?,
            })
        })
        .optional()
}

/// The challenge a check-in's passkey signs (`kasip_core::passkey::check_in_challenge`).
pub fn passkey_challenge(
    college_bin: &str,
    token: &ClassroomToken,
    check: &PasskeyCheck,
) -> [u8; 32] {
    kasip_core::passkey::check_in_challenge(
        college_bin,
        token.lesson as u64,
        &check.lesson_date,
        token.step,
        &check.student_iin,
    )
}

/// Verifies the check-in's passkey assertion (text as posted) off the writer's thread,
/// as the registry will: the directory's key for the binding's student, the challenge
/// for this college, lesson, date, step and student, the agent's own name as origin,
/// user verification. The counter is compared on the writer, in its transaction.
pub fn verify_passkey(
    check_in: &mut PhoneCheckIn,
    assertion: Option<&str>,
    check: Option<PasskeyCheck>,
    college_bin: &str,
    origin_host: Option<&str>,
) {
    use kasip_core::passkey::{Expectation, PasskeyAssertion, PasskeyError};
    check_in.passkey = match (assertion, check, &check_in.token) {
        (None, None, _) => PasskeyOutcome::Absent,
        (None, Some(_), _) => PasskeyOutcome::Missing,
        (Some(_), None, _) => PasskeyOutcome::Invalid(PasskeyError::UnknownCredential.kind()),
        (Some(_), Some(_), Err(_)) => PasskeyOutcome::Invalid(PasskeyError::WrongChallenge.kind()),
        (Some(text), Some(check), Ok(token)) => {
            let verified = PasskeyAssertion::parse(text).and_then(|assertion| {
                use base64::Engine;
                let id = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .encode(&assertion.credential_id);
                if id != check.credential_id {
                    return Err(PasskeyError::UnknownCredential);
                }
                let challenge = passkey_challenge(college_bin, token, &check);
                assertion.verify(
                    &check.public_key,
                    &Expectation {
                        rp_id: &check.rp_id,
                        origin_host: origin_host.ok_or(PasskeyError::WrongOrigin(
                            "the agent has no name for passkeys".into(),
                        ))?,
                        challenge: &challenge,
                    },
                )
            });
            match verified {
                Ok(count) => PasskeyOutcome::Verified {
                    student_iin: check.student_iin,
                    assertion: text.to_owned(),
                    count,
                },
                Err(error) => PasskeyOutcome::Invalid(error.kind()),
            }
        }
    };
}

/// How long a fresh token, once presented, holds a check-in open while the student binds.
pub const INTENT_SECS: i64 = 120;

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
    /// Whether the student's passkey verified the check-in; None when they have none.
    pub passkey_verified: Option<bool>,
}

/// Records a refused check-in as a security event, naming the phone's student and
/// device when its credential is known (even revoked).
pub(super) fn record_refusal(
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
    security_events::record(
        transaction,
        now,
        &SecurityEvent {
            kind: rejection.kind(),
            lesson_id,
            student_iin: student_iin.as_deref(),
            device_id: device_id.as_deref(),
            detail: match (rejection, &check_in.passkey) {
                // Why the assertion failed, for whoever reads the security log.
                (Rejection::PasskeyInvalid, PasskeyOutcome::Invalid(why)) => why,
                (Rejection::PasskeyInvalid, _) => "counter_went_back",
                _ if check_in.typed => "typed code",
                _ => "",
            },
            client: Some(&check_in.client),
        },
    )
}

pub(super) fn decide_phone(
    transaction: &Transaction<'_>,
    lookups: &mut Lookups,
    chain: &mut ChainWriter,
    check_in: &PhoneCheckIn,
    rules: &MarkRules,
    now: i64,
) -> rusqlite::Result<Result<Accepted, Rejection>> {
    let token = match &check_in.token {
        Ok(token) => token,
        Err(_) => return Ok(Err(Rejection::MalformedToken)),
    };
    let Some(credential_hash) = &check_in.credential_hash else {
        return Ok(Err(Rejection::DeviceNotBound));
    };
    let Some((binding_id, student_iin, device_id)) =
        lookups.binding(transaction, credential_hash)?
    else {
        return Ok(Err(Rejection::DeviceNotBound));
    };
    // The credential cookie names the binding; only the phone's key proves the phone.
    // The signature was verified before the writer (`verify_device`): here, only that
    // it was this binding's key, still the active one.
    if check_in.device_verified_for != Some(binding_id) {
        return Ok(Err(Rejection::DeviceUnverified));
    }
    let Some(lesson) = lookups.open_lesson(transaction, token.lesson, now, &rules.lessons)? else {
        // A forged id for a lesson that is not open is still "not open": there is no key
        // to check the tag against, and the student's fix is the same.
        return Ok(Err(Rejection::LessonNotOpen));
    };
    let seen_fresh_at = match check_in.fresh_at {
        Some(fresh_at) if now - fresh_at <= INTENT_SECS && fresh_at <= now => fresh_at,
        _ => now,
    };
    let current_step = kasip_core::step_at(seen_fresh_at, rules.qr_period_secs);
    match token.verify(&LessonKey::new(&lesson.qr_key), current_step) {
        Ok(()) => {}
        Err(TokenError::Forged | TokenError::Malformed) => return Ok(Err(Rejection::ForgedToken)),
        Err(TokenError::Stale { .. } | TokenError::FromTheFuture) => {
            return Ok(Err(Rejection::StaleToken))
        }
    }
    let Some((group_id, status, student_name)) = lookups.student(transaction, &student_iin)? else {
        return Ok(Err(Rejection::DeviceNotBound));
    };
    if status != "active" {
        return Ok(Err(Rejection::StudentInactive));
    }
    if group_id != lesson.group_id {
        return Ok(Err(Rejection::NotInGroup));
    }
    let (passkey, passkey_verified) = match &check_in.passkey {
        PasskeyOutcome::Absent => (None, None),
        PasskeyOutcome::Missing => (None, Some(false)),
        PasskeyOutcome::Invalid(_) => return Ok(Err(Rejection::PasskeyInvalid)),
        PasskeyOutcome::Verified {
            student_iin: verified_for,
            assertion,
            count,
        } => {
            // The counter only goes forward (WebAuthn's clone check), compared and kept
            // in this transaction.
            let advanced = *verified_for == student_iin
                && transaction
                    .prepare_cached(
                        "UPDATE passkey_directory SET sign_count = ?2
                         WHERE iin = ?1 AND (sign_count < ?2 OR (?2 = 0 AND sign_count = 0))",
                    )?
                    .execute(rusqlite::params![student_iin, count])?
                    == 1;
            if !advanced {
                return Ok(Err(Rejection::PasskeyInvalid));
            }
            (Some(assertion.clone()), Some(true))
        }
    };
    let method = if check_in.typed {
        MarkMethod::QrTyped
    } else {
        MarkMethod::QrPhone
    };
    let student = Iin::parse(&student_iin).map_err(|error| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(error))
    })?;
    let mark = MarkToRecord {
        lesson_id: lesson.lesson_id,
        student,
        at: now,
        source: MarkSource::Qr {
            method,
            device_id: device_id.clone(),
            token_step: Some(token.step),
            lesson_starts_at: lesson.starts_at,
            evidence: MarkEvidence {
                binding: Some(binding_id as u64),
                presented: Some(check_in.presented.clone()),
                device_signature: check_in.device_signature.clone(),
                passkey,
                ..MarkEvidence::of(EntryKind::Live)
            },
        },
    };
    // A repeat is answered before this check (the same phone scanning twice is fine);
    // a phone that already checked in another student for the lesson is refused.
    let device_check = |transaction: &Transaction<'_>| {
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
        Ok(match device_used {
            Some(_) => Err(Rejection::DeviceUsedForAnotherStudent),
            None => Ok(()),
        })
    };
    let recorded = match record_mark_admitted(
        transaction,
        chain,
        rules.late_after_mins,
        mark,
        device_check,
    )? {
        Ok(recorded) => recorded,
        Err(rejection) => return Ok(Err(rejection)),
    };
    Ok(Ok(Accepted {
        event_id: recorded.event_id,
        student_iin,
        student_name,
        lesson_id: lesson.lesson_id,
        status: recorded.status,
        recorded_at: recorded.recorded_at,
        repeated: recorded.repeated,
        passkey_verified,
    }))
}

/// The active binding a credential names, with its device key: (binding id, key).
pub fn binding_key(
    connection: &rusqlite::Connection,
    credential_hash: &[u8],
) -> rusqlite::Result<Option<(i64, Vec<u8>)>> {
    connection
        .prepare_cached(
            "SELECT id, device_key FROM device_bindings
             WHERE credential_hash = ?1 AND revoked_at IS NULL AND device_key IS NOT NULL",
        )?
        .query_row([credential_hash], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()
}

/// Verifies the check-in's device signature under its binding's key (from
/// `binding_key`), before the writer and off its thread: the signature check is the
/// costly part, and the writer then only compares binding ids.
pub fn verify_device(check_in: &mut PhoneCheckIn, binding_key: Option<(i64, Vec<u8>)>) {
    check_in.device_verified_for = match (binding_key, &check_in.device_signature) {
        (Some((binding, key)), Some(signature))
            if device_signature_valid(&key, &check_in.presented, signature) =>
        {
            Some(binding)
        }
        _ => None,
    };
}

/// Whether `signature` (base64url, ECDSA P-256 SHA-256, r‖s as WebCrypto makes it) is the
/// device key's over the check-in message of `presented`.
pub fn device_signature_valid(device_key: &[u8], presented: &str, signature: &str) -> bool {
    use base64::Engine;
    let Ok(signature) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(signature) else {
        return false;
    };
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, device_key)
        .verify(check_in_message(presented).as_bytes(), &signature)
        .is_ok()
}
