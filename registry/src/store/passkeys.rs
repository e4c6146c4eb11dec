//! Students' passkeys (design §5.10): one-time codes that stand in for eGov sign-in,
//! registration ceremonies, the key directory (one active passkey per IIN; a new one
//! revokes the old), the signed directory each agent caches, the `qr_requires_passkey`
//! policy per college, and the verification of every check-in's assertion on receipt.

use crate::db::{params, Db, DbResult, ToValue, Value};
use base64::Engine;
use kasip_core::batch::AttendanceRecord;
use kasip_core::passkey::{
    check_in_challenge, counter_advances, verify_registration, Expectation, PasskeyAssertion,
    PasskeyError, ALGORITHMS,
};
use kasip_core::wire::{PasskeyDirectory, PasskeyEntry, PasskeyOptions};
use kasip_core::{Bin, Iin};

use super::{RegistryError, RegistryStore};
use crate::timeline::Finding;

pub(super) const SCHEMA: &str = r#"
-- One-time codes per IIN, standing in for eGov sign-in (SHA-256 of the code only).
CREATE TABLE IF NOT EXISTS student_codes (
    code_hash  TEXT PRIMARY KEY,
    iin        TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER
);
-- Registrations begun and not yet finished: five minutes each.
CREATE TABLE IF NOT EXISTS passkey_ceremonies (
    id         TEXT PRIMARY KEY,
    iin        TEXT NOT NULL,
    code_hash  TEXT NOT NULL,
    challenge  BLOB NOT NULL,
    expires_at INTEGER NOT NULL
);
-- The key directory: every passkey ever enrolled, the revoked ones kept.
CREATE TABLE IF NOT EXISTS student_passkeys (
    credential_id TEXT PRIMARY KEY,
    iin           TEXT NOT NULL,
    public_key    BLOB NOT NULL,
    algorithm     INTEGER NOT NULL,
    sign_count    INTEGER NOT NULL,
    registered_at INTEGER NOT NULL,
    revoked_at    INTEGER
);
CREATE INDEX IF NOT EXISTS student_passkeys_by_iin ON student_passkeys (iin, revoked_at);
-- The registry's verdict on each QR check-in it received: verified by a passkey or not.
CREATE TABLE IF NOT EXISTS passkey_marks (
    bin       TEXT NOT NULL,
    record_id INTEGER NOT NULL,
    date      TEXT NOT NULL,
    verified  INTEGER NOT NULL,
    reason    TEXT NOT NULL,
    PRIMARY KEY (bin, record_id)
) WITHOUT ROWID;
-- `qr_requires_passkey`: the national default (bin '*') and per-college choices.
CREATE TABLE IF NOT EXISTS passkey_policy (
    bin      TEXT PRIMARY KEY,
    required INTEGER NOT NULL
);
"#;

/// Codes last a week: long enough to reach a student by SMS or letter.
const CODE_SECS: i64 = 7 * 86_400;
const CEREMONY_SECS: i64 = 300;

/// Where passkeys live: the RP ID (the registry's domain) and the agents' zone under it,
/// whose names are the origins check-ins come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelyingParty {
    pub rp_id: String,
    pub agents_zone: Option<String>,
}

/// Why a registration step was refused, by who should fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasskeyRefusal {
    /// The IIN and code do not match an unused, current code: 403.
    WrongCode,
    /// No such ceremony, or older than five minutes: 400, start again.
    Expired,
    /// The browser's registration does not hold: 400.
    Invalid(PasskeyError),
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn random(length: usize) -> Result<Vec<u8>, RegistryError> {
    use ring::rand::SecureRandom;
    let mut bytes = vec![0u8; length];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| RegistryError::Random)?;
    Ok(bytes)
}

fn code_hash(iin: &str, code: &str) -> String {
    let normal: String = code
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_uppercase())
        .collect();
    kasip_core::batch::sha256_hex(format!("{iin}:{normal}").as_bytes())
}

impl RegistryStore {
    /// A one-time code for `iin` to enrol a passkey (`XXXX-XXXX-XXXX`, a week).
    pub fn issue_student_code(&self, iin: &Iin, now: i64) -> Result<String, RegistryError> {
        const ALPHABET: &[u8; 32] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
        let text: String = random(12)?
            .iter()
            .map(|byte| char::from(ALPHABET[usize::from(byte & 31)]))
            .collect();
        let code = format!("{}-{}-{}", &text[..4], &text[4..8], &text[8..]);
        self.db
            .execute(
                "INSERT INTO student_codes (code_hash, iin, expires_at) VALUES (?1, ?2, ?3)",
                params![
                    code_hash(&iin.to_string(), &code),
                    iin.to_string(),
                    now + CODE_SECS
                ],
            )
            .map_err(|source| self.fail(source))?;
        Ok(code)
    }

    /// Begins a registration for the student the code proves.
    pub fn start_passkey(
        &self,
        iin: &Iin,
        code: &str,
        rp_id: &str,
        now: i64,
    ) -> Result<Result<PasskeyOptions, PasskeyRefusal>, RegistryError> {
        let hash = code_hash(&iin.to_string(), code);
        let current: bool = self
            .db
            .query_one(
                "SELECT COUNT(*) > 0 FROM student_codes
                 WHERE code_hash = ?1 AND used_at IS NULL AND expires_at > ?2",
                params![hash, now],
                |row| row.get(0),
            )
            .map_err(|source| self.fail(source))?;
        if !current {
            return Ok(Err(PasskeyRefusal::WrongCode));
        }
        let ceremony = b64(&random(18)?);
        let challenge = random(32)?;
        self.db
            .execute(
                "DELETE FROM passkey_ceremonies WHERE expires_at <= ?1",
                params![now],
            )
            .map_err(|source| self.fail(source))?;
        self.db
            .execute(
                "INSERT INTO passkey_ceremonies (id, iin, code_hash, challenge, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    ceremony,
                    iin.to_string(),
                    hash,
                    challenge,
                    now + CEREMONY_SECS
                ],
            )
            .map_err(|source| self.fail(source))?;
        Ok(Ok(PasskeyOptions {
            ceremony,
            rp_id: rp_id.to_owned(),
            rp_name: "e-Qazyna".to_owned(),
            user_id: b64(&random(16)?),
            user_name: iin.to_string(),
            challenge: b64(&challenge),
            algorithms: ALGORITHMS.to_vec(),
        }))
    }

    /// Finishes a registration: verifies it, uses the code up, revokes the student's
    /// earlier passkeys and enrols this one, in one transaction. Returns the IIN and the
    /// credential id.
    pub fn finish_passkey(
        &mut self,
        ceremony: &str,
        client_data_json: &[u8],
        attestation_object: &[u8],
        rp_id: &str,
        now: i64,
    ) -> Result<Result<(String, String), PasskeyRefusal>, RegistryError> {
        let place = self.place.clone();
        let fail = |source| RegistryError::Database {
            place: place.clone(),
            source,
        };
        let transaction = self.db.transaction().map_err(fail)?;
        let begun: Option<(String, String, Vec<u8>)> = transaction
            .query_opt(
                "DELETE FROM passkey_ceremonies WHERE id = ?1 AND expires_at > ?2
                 RETURNING iin, code_hash, challenge",
                params![ceremony, now],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .map_err(fail)?;
        let Some((iin, hash, challenge)) = begun else {
            transaction.commit().map_err(fail)?;
            return Ok(Err(PasskeyRefusal::Expired));
        };
        let expected = Expectation {
            rp_id,
            origin_host: rp_id,
            challenge: &challenge,
        };
        let credential = match verify_registration(client_data_json, attestation_object, &expected)
        {
            Ok(credential) => credential,
            Err(error) => {
                transaction.commit().map_err(fail)?;
                return Ok(Err(PasskeyRefusal::Invalid(error)));
            }
        };
        let used = transaction
            .execute(
                "UPDATE student_codes SET used_at = ?2 WHERE code_hash = ?1 AND used_at IS NULL",
                params![hash, now],
            )
            .map_err(fail)?;
        if used != 1 {
            transaction.commit().map_err(fail)?;
            return Ok(Err(PasskeyRefusal::WrongCode));
        }
        transaction
            .execute(
                "UPDATE student_passkeys SET revoked_at = ?2 WHERE iin = ?1 AND revoked_at IS NULL",
                params![iin, now],
            )
            .map_err(fail)?;
        let id = b64(&credential.credential_id);
        let inserted = transaction
            .execute(
                "INSERT INTO student_passkeys
                 (credential_id, iin, public_key, algorithm, sign_count, registered_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING",
                params![
                    id,
                    iin,
                    credential.public_key,
                    credential.algorithm,
                    credential.sign_count,
                    now
                ],
            )
            .map_err(fail)?;
        if inserted != 1 {
            // A credential id enrolled before (for anyone): nothing changes.
            return Ok(Err(PasskeyRefusal::Invalid(PasskeyError::AlreadyEnrolled)));
        }
        transaction.commit().map_err(fail)?;
        tracing::info!(credential = %id, "passkey enrolled");
        Ok(Ok((iin, id)))
    }

    /// The active passkeys of the students on `bin`'s beneficiary list, signed by the
    /// registry's key for the college's agent.
    pub fn signed_passkey_directory(
        &self,
        bin: &str,
        rp_id: &str,
        now: i64,
    ) -> Result<String, RegistryError> {
        let keys = self
            .db
            .query(
                "SELECT p.iin, p.credential_id, p.public_key, p.registered_at
                 FROM student_passkeys p JOIN beneficiaries b ON b.iin = p.iin
                 WHERE b.bin = ?1 AND p.revoked_at IS NULL ORDER BY p.iin",
                params![bin],
                |row| {
                    Ok(PasskeyEntry {
                        iin: row.get(0)?,
                        credential_id: row.get(1)?,
                        public_key: b64(&row.get::<Vec<u8>>(2)?),
                        registered_at: row.get(3)?,
                    })
                },
            )
            .map_err(|source| self.fail(source))?;
        let directory = PasskeyDirectory {
            college_bin: bin.to_owned(),
            rp_id: rp_id.to_owned(),
            keys,
            issued_at: now,
        };
        Ok(self.sign_value(&directory))
    }

    /// Sets `qr_requires_passkey` nationally (`None`) or for one college.
    pub fn require_passkey(
        &self,
        college: Option<&Bin>,
        required: bool,
    ) -> Result<(), RegistryError> {
        let scope = match college {
            Some(bin) => {
                if !self.college_exists(&bin.to_string())? {
                    return Err(RegistryError::Usage(format!(
                        "no college {bin}; add it with `kasip-registry add-college`"
                    )));
                }
                bin.to_string()
            }
            None => "*".to_owned(),
        };
        self.db
            .execute(
                "INSERT INTO passkey_policy (bin, required) VALUES (?1, ?2)
                 ON CONFLICT (bin) DO UPDATE SET required = excluded.required",
                params![scope, required],
            )
            .map_err(|source| self.fail(source))?;
        Ok(())
    }

    /// `bin`'s phone check-ins per month and how many the registry verified by passkey:
    /// (month, check-ins, verified), oldest first.
    pub fn passkey_share(&self, bin: &str) -> Result<Vec<(String, u64, u64)>, RegistryError> {
        self.db
            .query(
                "SELECT substr(date, 1, 7), COUNT(*), CAST(SUM(verified) AS BIGINT) FROM passkey_marks
                 WHERE bin = ?1 GROUP BY 1 ORDER BY 1",
                params![bin],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .map_err(|source| self.fail(source))
    }

    /// Whether only passkey-verified check-ins count as QR for `bin`.
    pub fn passkey_required(&self, bin: &str) -> Result<bool, RegistryError> {
        passkey_required(&self.db, bin).map_err(|source| self.fail(source))
    }
}

/// The college's own choice, else the national one, else off.
pub fn passkey_required(connection: &Db, bin: &str) -> DbResult<bool> {
    Ok(connection
        .query_opt(
            "SELECT required FROM passkey_policy WHERE bin IN (?1, '*')
             ORDER BY bin = '*' LIMIT 1",
            params![bin],
            |row| row.get(0),
        )?
        .unwrap_or(false))
}

/// The passkey-verified check-ins of `bin` (record ids) among `date_prefix`'s.
pub fn verified_marks(
    connection: &Db,
    bin: &str,
    date_prefix: &str,
) -> DbResult<std::collections::HashSet<u64>> {
    Ok(connection
        .query(
            "SELECT record_id FROM passkey_marks WHERE bin = ?1 AND verified = 1
             AND date LIKE ?2 || '%'",
            params![bin, date_prefix],
            |row| row.get(0),
        )?
        .into_iter()
        .collect())
}

/// Verifies the passkey assertion of each QR check-in of a received attendance batch
/// against the registry's own directory (the key enrolled for the record's student,
/// not revoked when the mark was made), the challenge recomputed from the record, the
/// college agent's name as origin, and the credential's counter. Each check-in's
/// verdict is stored; an assertion that does not hold is a finding.
pub fn check_passkeys(
    transaction: &Db,
    bin: &str,
    records: &[AttendanceRecord],
    relying_party: Option<&RelyingParty>,
) -> DbResult<Vec<Finding>> {
    let origin_host = match relying_party.and_then(|rp| rp.agents_zone.as_deref()) {
        Some(zone) => transaction
            .query_opt(
                "SELECT label FROM agent_names WHERE bin = ?1",
                params![bin],
                |row| row.get::<String>(0),
            )?
            .map(|label| format!("{label}.{zone}")),
        None => None,
    };
    let mut invalid: std::collections::BTreeMap<(String, &'static str), Vec<u64>> =
        Default::default();
    // Each QR check-in's verdict, stored together: (record, verified, why not).
    let mut verdicts = Vec::new();
    for record in records {
        if !matches!(record.method.as_str(), "qr_phone" | "qr_typed") {
            continue;
        }
        let assertion = record
            .evidence
            .as_ref()
            .and_then(|evidence| evidence.passkey.as_deref());
        let verdict = match (assertion, relying_party, &origin_host) {
            (None, _, _) => Err("no passkey".to_owned()),
            (Some(_), None, _) | (Some(_), _, None) => {
                Err("this registry verifies no passkeys (no --passkey-rp-id or zone)".to_owned())
            }
            (Some(text), Some(rp), Some(host)) => {
                match verify_one(transaction, bin, record, text, &rp.rp_id, host)? {
                    Ok(()) => Ok(()),
                    Err(error) => {
                        invalid
                            .entry((
                                record.date.get(..7).unwrap_or_default().to_owned(),
                                error.kind(),
                            ))
                            .or_default()
                            .push(record.id);
                        Err(error.to_string())
                    }
                }
            }
        };
        verdicts.push((record, verdict.is_ok(), verdict.err().unwrap_or_default()));
    }
    let rows: Vec<Vec<Value<'_>>> = verdicts
        .iter()
        .map(|(record, verified, reason)| {
            vec![
                bin.value(),
                record.id.value(),
                record.date.value(),
                verified.value(),
                reason.value(),
            ]
        })
        .collect();
    transaction.insert_rows(
        "INSERT INTO passkey_marks (bin, record_id, date, verified, reason)",
        "ON CONFLICT DO NOTHING",
        &rows,
    )?;
    Ok(invalid
        .into_iter()
        .map(|((month, kind), ids)| Finding {
            kind: "passkey_invalid",
            detail: format!(
                "{} check-in(s) carry a passkey assertion that does not verify ({kind}): a mark the student's own passkey did not make",
                ids.len()
            ),
            month: Some(month),
            evidence: ids,
        })
        .collect())
}

fn verify_one(
    transaction: &Db,
    bin: &str,
    record: &AttendanceRecord,
    text: &str,
    rp_id: &str,
    origin_host: &str,
) -> DbResult<Result<(), PasskeyError>> {
    let assertion = match PasskeyAssertion::parse(text) {
        Ok(assertion) => assertion,
        Err(error) => return Ok(Err(error)),
    };
    let credential = b64(&assertion.credential_id);
    let enrolled: Option<(String, Vec<u8>, u32, Option<i64>)> = transaction.query_opt(
        "SELECT iin, public_key, sign_count, revoked_at FROM student_passkeys
             WHERE credential_id = ?1",
        params![&credential],
        |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
    )?;
    let Some((iin, public_key, last_count, revoked_at)) = enrolled else {
        return Ok(Err(PasskeyError::UnknownCredential));
    };
    if iin != record.student_iin {
        return Ok(Err(PasskeyError::AnotherStudents));
    }
    if revoked_at.is_some_and(|revoked| revoked <= record.recorded_at) {
        return Ok(Err(PasskeyError::Revoked));
    }
    let Some(step) = record.token_step else {
        return Ok(Err(PasskeyError::WrongChallenge));
    };
    let challenge = check_in_challenge(bin, record.lesson, &record.date, step, &record.student_iin);
    let expected = Expectation {
        rp_id,
        origin_host,
        challenge: &challenge,
    };
    let count = match assertion.verify(&public_key, &expected) {
        Ok(count) => count,
        Err(error) => return Ok(Err(error)),
    };
    if let Err(error) = counter_advances(last_count, count) {
        return Ok(Err(error));
    }
    transaction.execute(
        "UPDATE student_passkeys SET sign_count = ?2 WHERE credential_id = ?1",
        params![credential, count],
    )?;
    Ok(Ok(()))
}

#[cfg(test)]
mod tests {
    use kasip_core::chain::{EntryKind, MarkEvidence};
    use kasip_core::passkey::software::{
        SoftwareAuthenticator, PRESENT_AND_VERIFIED, USER_PRESENT,
    };

    use kasip_tests::Store;

    use super::*;

    const BIN: &str = "090640001233";
    const STUDENT: &str = "060315500016";
    const CLASSMATE: &str = "070412600021";
    const ZONE: &str = "agents.kasip.test";
    const NOW: i64 = 1_764_000_000;

    /// The store before its data dir: fields drop in order, and the connection closes
    /// before its PostgreSQL server stops.
    struct Registry {
        store: RegistryStore,
        origin: String,
        _dir: kasip_tests::TempDataDir,
    }

    fn registry(on: Store) -> Registry {
        let (dir, store) = crate::store::tests::store_on(on);
        let bin = Bin::parse(BIN).expect("bin");
        store
            .add_college(
                &bin,
                "Демо",
                &kasip_core::CollegeTimezone::parse("Asia/Almaty").expect("zone"),
            )
            .expect("college");
        let label = store.name_label(BIN).expect("label");
        Registry {
            _dir: dir,
            store,
            origin: format!("https://{label}.{ZONE}:8443"),
        }
    }

    fn enrol(
        store: &RegistryStore,
        iin: &str,
        authenticator: &SoftwareAuthenticator,
        revoked_at: Option<i64>,
    ) {
        store
            .db
            .execute(
                "INSERT INTO student_passkeys
                 (credential_id, iin, public_key, algorithm, sign_count, registered_at, revoked_at)
                 VALUES (?1, ?2, ?3, -7, 0, 0, ?4)",
                params![
                    b64(&authenticator.credential_id),
                    iin,
                    authenticator.cose_key(),
                    revoked_at
                ],
            )
            .expect("enrol");
    }

    fn check_in(
        id: u64,
        lesson: u64,
        step: u64,
        iin: &str,
        passkey: Option<String>,
    ) -> AttendanceRecord {
        AttendanceRecord {
            id,
            lesson,
            date: "2026-12-04".into(),
            start: "09:00".into(),
            group: "ПО-21".into(),
            discipline: "Физика".into(),
            teacher_iin: "800101300014".into(),
            mode: "offline".into(),
            student_iin: iin.into(),
            status: "present".into(),
            method: "qr_phone".into(),
            recorded_at: NOW,
            device: Some("phone".into()),
            marked_by: None,
            reason: None,
            corrects: None,
            chain_hash: "0".repeat(64),
            end: Some("10:30".into()),
            site: None,
            room: None,
            token_step: Some(step),
            evidence: Some(MarkEvidence {
                passkey,
                ..MarkEvidence::of(EntryKind::Live)
            }),
        }
    }

    kasip_tests::on_both_stores!(
        the_registry_verifies_each_assertion_itself_and_finds_what_a_college_faked,
        a_code_enrols_one_passkey_once_and_a_new_one_revokes_the_old,
    );

    /// A dishonest college signs its own batches: every way it could fake a verified
    /// check-in reaches the registry's check, and none is counted verified.
    fn the_registry_verifies_each_assertion_itself_and_finds_what_a_college_faked(on: Store) {
        let registry = registry(on);
        let student = SoftwareAuthenticator::generate(b"student", "kasip.test");
        let classmate = SoftwareAuthenticator::generate(b"classmate", "kasip.test");
        let revoked = SoftwareAuthenticator::generate(b"revoked", "kasip.test");
        enrol(&registry.store, STUDENT, &student, None);
        enrol(&registry.store, CLASSMATE, &classmate, None);
        enrol(&registry.store, STUDENT, &revoked, Some(NOW - 60));
        let origin = registry.origin.clone();
        let challenge =
            |lesson, step, iin| check_in_challenge(BIN, lesson, "2026-12-04", step, iin);
        let signed = |by: &SoftwareAuthenticator, challenge: [u8; 32], flags, count| {
            Some(by.assert(&challenge, &origin, flags, count).to_text())
        };
        let mut tampered = student.assert(
            &challenge(7, 100, STUDENT),
            &origin,
            PRESENT_AND_VERIFIED,
            3,
        );
        tampered.client_data_json.extend_from_slice(b" ");
        let college_key = SoftwareAuthenticator::generate(b"student", "kasip.test");
        let records = vec![
            check_in(
                1,
                7,
                100,
                STUDENT,
                signed(
                    &student,
                    challenge(7, 100, STUDENT),
                    PRESENT_AND_VERIFIED,
                    1,
                ),
            ),
            check_in(2, 7, 100, CLASSMATE, None),
            check_in(
                3,
                7,
                100,
                STUDENT,
                signed(&student, challenge(7, 100, STUDENT), USER_PRESENT, 2),
            ),
            check_in(
                4,
                8,
                100,
                STUDENT,
                signed(
                    &student,
                    challenge(7, 100, STUDENT),
                    PRESENT_AND_VERIFIED,
                    4,
                ),
            ),
            check_in(
                5,
                7,
                101,
                STUDENT,
                signed(
                    &student,
                    challenge(7, 100, STUDENT),
                    PRESENT_AND_VERIFIED,
                    5,
                ),
            ),
            check_in(
                6,
                7,
                100,
                STUDENT,
                signed(
                    &classmate,
                    challenge(7, 100, STUDENT),
                    PRESENT_AND_VERIFIED,
                    6,
                ),
            ),
            check_in(
                7,
                7,
                100,
                STUDENT,
                signed(
                    &revoked,
                    challenge(7, 100, STUDENT),
                    PRESENT_AND_VERIFIED,
                    7,
                ),
            ),
            check_in(
                8,
                7,
                100,
                STUDENT,
                signed(
                    &college_key,
                    challenge(7, 100, STUDENT),
                    PRESENT_AND_VERIFIED,
                    8,
                ),
            ),
            check_in(9, 7, 100, STUDENT, Some(tampered.to_text())),
            // The genuine assertion of record 1, replayed as is: its counter does not advance.
            check_in(
                10,
                7,
                100,
                STUDENT,
                signed(
                    &student,
                    challenge(7, 100, STUDENT),
                    PRESENT_AND_VERIFIED,
                    1,
                ),
            ),
            check_in(11, 7, 100, STUDENT, Some("not.an.assertion".into())),
        ];
        let rp = RelyingParty {
            rp_id: "kasip.test".into(),
            agents_zone: Some(ZONE.into()),
        };
        let transaction = registry.store.db.transaction().expect("transaction");
        let findings = check_passkeys(&transaction, BIN, &records, Some(&rp)).expect("check");
        let verdicts: Vec<(u64, bool, String)> = transaction
            .query(
                "SELECT record_id, verified, reason FROM passkey_marks ORDER BY record_id",
                params![],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .expect("verdicts");
        let reasons: Vec<(u64, bool, &str)> = verdicts
            .iter()
            .map(|(id, verified, reason)| (*id, *verified, reason.as_str()))
            .collect();
        assert_eq!(
            reasons,
            vec![
                (1, true, ""),
                (2, false, "no passkey"),
                (3, false, "the phone did not verify the user (fingerprint, face or PIN)"),
                (4, false, "the assertion was made for another challenge (another lesson, step, date or student)"),
                (5, false, "the assertion was made for another challenge (another lesson, step, date or student)"),
                (6, false, "the passkey is another student's"),
                (7, false, "the passkey was revoked before the mark was made"),
                (8, false, "the signature does not verify under the enrolled public key"),
                (9, false, "the signature does not verify under the enrolled public key"),
                (10, false, "the signature counter went back (1 after 1): a cloned or replayed passkey"),
                (11, false, "the passkey data is malformed: the credential id is not base64url"),
            ]
        );
        // Each fake is a finding naming its records; the honest ones are not.
        let mut named: Vec<u64> = findings
            .iter()
            .inspect(|finding| assert_eq!(finding.kind, "passkey_invalid"))
            .flat_map(|finding| finding.evidence.clone())
            .collect();
        named.sort_unstable();
        assert_eq!(named, (3..=11).collect::<Vec<u64>>());

        // A registry that enrols no passkeys verifies none and finds nothing.
        transaction
            .execute("DELETE FROM passkey_marks", params![])
            .expect("clear");
        let findings = check_passkeys(&transaction, BIN, &records[..1], None).expect("check");
        assert!(findings.is_empty());
        let verified: bool = transaction
            .query_one("SELECT verified FROM passkey_marks", params![], |row| {
                row.get(0)
            })
            .expect("verdict");
        assert!(!verified);
    }

    fn a_code_enrols_one_passkey_once_and_a_new_one_revokes_the_old(on: Store) {
        let mut registry = registry(on);
        let iin = Iin::parse(STUDENT).expect("iin");
        let code = registry.store.issue_student_code(&iin, NOW).expect("code");
        assert_eq!(
            registry
                .store
                .start_passkey(&iin, "WRONG-CODE-0000", "kasip.test", NOW)
                .expect("start"),
            Err(PasskeyRefusal::WrongCode)
        );
        let other = Iin::parse(CLASSMATE).expect("iin");
        assert_eq!(
            registry
                .store
                .start_passkey(&other, &code, "kasip.test", NOW)
                .expect("start"),
            Err(PasskeyRefusal::WrongCode),
            "a code is for one IIN"
        );
        let enrol_with =
            |store: &mut RegistryStore, code: &str, authenticator: &SoftwareAuthenticator| {
                let options = store
                    .start_passkey(&iin, &code.to_lowercase(), "kasip.test", NOW)
                    .expect("start")
                    .expect("options");
                let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(&options.challenge)
                    .expect("challenge");
                let (client, object) =
                    authenticator.register(&challenge, "https://kasip.test", PRESENT_AND_VERIFIED);
                store.finish_passkey(&options.ceremony, &client, &object, "kasip.test", NOW + 10)
            };
        let first = SoftwareAuthenticator::generate(b"first", "kasip.test");
        assert!(enrol_with(&mut registry.store, &code, &first)
            .expect("finish")
            .is_ok());
        // Used up.
        assert_eq!(
            registry
                .store
                .start_passkey(&iin, &code, "kasip.test", NOW + 20)
                .expect("start"),
            Err(PasskeyRefusal::WrongCode)
        );
        let second = SoftwareAuthenticator::generate(b"second", "kasip.test");
        let again = registry
            .store
            .issue_student_code(&iin, NOW + 30)
            .expect("code");
        assert!(enrol_with(&mut registry.store, &again, &second)
            .expect("finish")
            .is_ok());
        let active: Vec<String> = registry
            .store
            .db
            .query(
                "SELECT credential_id FROM student_passkeys WHERE revoked_at IS NULL",
                params![],
                |row| row.get(0),
            )
            .expect("active");
        assert_eq!(active, vec![b64(b"second")]);
        // Expired codes and ceremonies are refused.
        let late = registry.store.issue_student_code(&iin, NOW).expect("code");
        assert_eq!(
            registry
                .store
                .start_passkey(&iin, &late, "kasip.test", NOW + CODE_SECS + 1)
                .expect("start"),
            Err(PasskeyRefusal::WrongCode)
        );
        let options = registry
            .store
            .start_passkey(&iin, &late, "kasip.test", NOW)
            .expect("start")
            .expect("options");
        let (client, object) =
            second.register(b"whatever", "https://kasip.test", PRESENT_AND_VERIFIED);
        assert_eq!(
            registry
                .store
                .finish_passkey(
                    &options.ceremony,
                    &client,
                    &object,
                    "kasip.test",
                    NOW + CEREMONY_SECS + 1
                )
                .expect("finish"),
            Err(PasskeyRefusal::Expired)
        );
    }
}
