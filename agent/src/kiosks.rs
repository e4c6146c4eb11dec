//! Kiosks and student passes on the agent's side (design §5.3).
//!
//! A phone registers the public half of its pass key (`register_pass_key`); kiosks enrol
//! with a one-time code (`enrol`), pull every registered key (`pass_keys`) so they verify
//! passes offline, and forward the scans they accepted. The mark writer decides each
//! forwarded scan (`marks::kiosk`): the pass is verified again there, so a stolen kiosk
//! credential cannot invent attendance without the students' phones.

use kasip_core::{Iin, PassPublicKey, StudentPass};
use rusqlite::{Connection, OptionalExtension};

use crate::secrets::{random_token, secret_hash};

/// How long a kiosk's enrolment code is valid.
pub const CODE_TTL_SECS: i64 = 86_400;
/// Scans accepted in one upload: so many that a full upload of real passes under the
/// longest ids still fits the request body limit (a test below), so an upload is refused
/// for its count, never for its size. The kiosk sends 200.
pub const MAX_SCANS_PER_UPLOAD: usize = 250;

/// Where a kiosk stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// At a classroom door: a scan marks the lesson held in `room` (at `site`, when set).
    Room { room: String, site: String },
    /// At a site's entrance: a scan records campus presence.
    Entrance { site: String },
}

impl Place {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Room { .. } => "room",
            Self::Entrance { .. } => "entrance",
        }
    }

    fn columns(&self) -> (&str, &str) {
        match self {
            Self::Room { room, site } => (room, site),
            Self::Entrance { site } => ("", site),
        }
    }

    fn from_columns(kind: &str, room: String, site: String) -> Self {
        if kind == "entrance" {
            Self::Entrance { site }
        } else {
            Self::Room { room, site }
        }
    }

    /// "room 101" / "room 101 at Main" / "entrance of Main", for lists and logs.
    pub fn describe(&self) -> String {
        match self {
            Self::Room { room, site } if site.is_empty() => format!("room {room}"),
            Self::Room { room, site } => format!("room {room} at {site}"),
            Self::Entrance { site } => format!("entrance of {site}"),
        }
    }
}

/// An enrolled, not revoked kiosk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kiosk {
    pub id: i64,
    pub place: Place,
}

/// What the admin reads out to the kiosk's installer.
pub struct IssuedKiosk {
    pub id: i64,
    pub code: String,
    pub expires_at: i64,
}

/// Why the admin's `kiosk add` or `kiosk revoke` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KioskError {
    #[error("the room name is empty")]
    EmptyRoom,
    #[error("no site named '{site}' (known sites: {known}); check the timetable's site column")]
    UnknownSite { site: String, known: String },
    #[error("no kiosk with id {0}; `kasip-agent kiosk list` shows them")]
    UnknownKiosk(i64),
    #[error("the system's random source failed")]
    Random,
}

/// Letters and digits an installer types without confusing 0/O or 1/I/L.
const CODE_ALPHABET: &[u8; 30] = b"23456789ABCDEFGHJKMNPQRSTUVWXY";
const CODE_CHARS: usize = 16;

/// A one-time code like `7KQM-2XWH-PR4D-9TNB` (78 bits; enrolment is rate limited).
fn enrolment_code() -> Option<String> {
    use ring::rand::SecureRandom;
    let random = ring::rand::SystemRandom::new();
    let mut code = String::with_capacity(CODE_CHARS + 3);
    while code.len() < CODE_CHARS + 3 {
        let mut byte = [0u8; 1];
        random.fill(&mut byte).ok()?;
        // 240 = 8 × 30: rejecting the rest keeps every letter equally likely.
        if byte[0] < 240 {
            if code.len() % 5 == 4 {
                code.push('-');
            }
            code.push(char::from(CODE_ALPHABET[usize::from(byte[0] % 30)]));
        }
    }
    Some(code)
}

/// The code as typed, without dashes, spaces or case.
fn normalised_code(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// Registers a kiosk place and issues its one-time enrolment code.
pub fn add(
    connection: &Connection,
    place: &Place,
    created_by: &str,
    now: i64,
) -> rusqlite::Result<Result<IssuedKiosk, KioskError>> {
    let (room, site) = place.columns();
    if matches!(place, Place::Room { .. }) && room.trim().is_empty() {
        return Ok(Err(KioskError::EmptyRoom));
    }
    if !site.is_empty() || matches!(place, Place::Entrance { .. }) {
        let known: Option<i64> = connection
            .query_row("SELECT id FROM sites WHERE name = ?1", [site], |row| {
                row.get(0)
            })
            .optional()?;
        if known.is_none() {
            let mut statement = connection.prepare("SELECT name FROM sites ORDER BY name")?;
            let names = statement
                .query_map([], |row| row.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            return Ok(Err(KioskError::UnknownSite {
                site: site.to_owned(),
                known: if names.is_empty() {
                    "none imported yet".into()
                } else {
                    names.join(", ")
                },
            }));
        }
    }
    let Some(code) = enrolment_code() else {
        return Ok(Err(KioskError::Random));
    };
    let expires_at = now + CODE_TTL_SECS;
    connection.execute(
        "INSERT INTO kiosks (place, room, site, code_hash, code_expires_at, created_at, created_by)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        rusqlite::params![
            place.kind(),
            room.trim(),
            site,
            secret_hash(&normalised_code(&code)),
            expires_at,
            now,
            created_by
        ],
    )?;
    Ok(Ok(IssuedKiosk {
        id: connection.last_insert_rowid(),
        code,
        expires_at,
    }))
}

/// One row of `kiosk list`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KioskRow {
    pub id: i64,
    pub place: String,
    pub state: &'static str,
    pub enrolled_at: Option<i64>,
    pub last_scan_at: Option<i64>,
    pub scans: i64,
}

pub fn list(connection: &Connection, now: i64) -> rusqlite::Result<Vec<KioskRow>> {
    let mut statement = connection.prepare(
        "SELECT k.id, k.place, k.room, k.site, k.code_expires_at, k.enrolled_at, k.revoked_at,
                MAX(s.scanned_at), COUNT(s.scan_id)
         FROM kiosks k LEFT JOIN kiosk_scans s ON s.kiosk_id = k.id
         GROUP BY k.id ORDER BY k.id",
    )?;
    let rows = statement.query_map([], |row| {
        let place = Place::from_columns(&row.get::<_, String>(1)?, row.get(2)?, row.get(3)?);
        let expires_at: i64 = row.get(4)?;
        let enrolled_at: Option<i64> = row.get(5)?;
        let revoked_at: Option<i64> = row.get(6)?;
        let state = match (revoked_at, enrolled_at) {
            (Some(_), _) => "revoked",
            (None, Some(_)) => "enrolled",
            (None, None) if expires_at < now => "code expired",
            (None, None) => "waiting for enrolment",
        };
        Ok(KioskRow {
            id: row.get(0)?,
            place: place.describe(),
            state,
            enrolled_at,
            last_scan_at: row.get(7)?,
            scans: row.get(8)?,
        })
    })?;
    rows.collect()
}

/// Revokes a kiosk: its credential stops working at once, its code too.
pub fn revoke(
    connection: &Connection,
    id: i64,
    now: i64,
) -> rusqlite::Result<Result<(), KioskError>> {
    let changed = connection.execute(
        "UPDATE kiosks SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1",
        rusqlite::params![id, now],
    )?;
    Ok(if changed == 0 {
        Err(KioskError::UnknownKiosk(id))
    } else {
        Ok(())
    })
}

/// Why a kiosk's enrolment was refused (the kiosk prints it for the installer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnrolRefusal {
    UnknownCode,
    Expired,
    AlreadyUsed,
}

impl EnrolRefusal {
    pub fn message(&self) -> &'static str {
        match self {
            Self::UnknownCode => {
                "unknown enrolment code; check it, or issue a new one with `kasip-agent kiosk add`"
            }
            Self::Expired => {
                "this enrolment code has expired; issue a new one with `kasip-agent kiosk add`"
            }
            Self::AlreadyUsed => {
                "this enrolment code was already used; issue a new one with `kasip-agent kiosk add`"
            }
        }
    }
}

/// id, place, room, site, code expiry, enrolled at, revoked at.
type CodeRow = (i64, String, String, String, i64, Option<i64>, Option<i64>);

/// Trades a one-time code for the kiosk's credential (returned once, stored hashed).
pub fn enrol(
    connection: &Connection,
    code: &str,
    now: i64,
) -> rusqlite::Result<Result<(Kiosk, String), EnrolRefusal>> {
    let row: Option<CodeRow> = connection
        .query_row(
            "SELECT id, place, room, site, code_expires_at, enrolled_at, revoked_at
             FROM kiosks WHERE code_hash = ?1",
            [secret_hash(&normalised_code(code))],
            |row| {
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    row.get(3)?,
                    row.get(4)?,
                    row.get(5)?,
                    row.get(6)?,
                ))
            },
        )
        .optional()?;
    let Some((id, kind, room, site, expires_at, enrolled_at, revoked_at)) = row else {
        return Ok(Err(EnrolRefusal::UnknownCode));
    };
    if revoked_at.is_some() {
        return Ok(Err(EnrolRefusal::UnknownCode));
    }
    if enrolled_at.is_some() {
        return Ok(Err(EnrolRefusal::AlreadyUsed));
    }
    if expires_at < now {
        return Ok(Err(EnrolRefusal::Expired));
    }
    let Ok(credential) = random_token(32) else {
        return Err(rusqlite::Error::InvalidQuery);
    };
    connection.execute(
        "UPDATE kiosks SET credential_hash = ?2, enrolled_at = ?3 WHERE id = ?1",
        rusqlite::params![id, secret_hash(&credential), now],
    )?;
    Ok(Ok((
        Kiosk {
            id,
            place: Place::from_columns(&kind, room, site),
        },
        credential,
    )))
}

/// Who presented a kiosk credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KioskIdentity {
    Enrolled(Kiosk),
    Revoked(i64),
    Unknown,
}

pub fn authenticate(connection: &Connection, credential: &str) -> rusqlite::Result<KioskIdentity> {
    let row: Option<(i64, String, String, String, Option<i64>)> = connection
        .prepare_cached(
            "SELECT id, place, room, site, revoked_at FROM kiosks WHERE credential_hash = ?1",
        )?
        .query_row([secret_hash(credential)], |row| {
            Ok((
                row.get(0)?,
                row.get(1)?,
                row.get(2)?,
                row.get(3)?,
                row.get(4)?,
            ))
        })
        .optional()?;
    Ok(match row {
        None => KioskIdentity::Unknown,
        Some((id, _, _, _, Some(_))) => KioskIdentity::Revoked(id),
        Some((id, kind, room, site, None)) => KioskIdentity::Enrolled(Kiosk {
            id,
            place: Place::from_columns(&kind, room, site),
        }),
    })
}

pub use kasip_core::wire::{PassHolder, UploadedScan};

/// Every student with a current pass key.
pub fn pass_keys(connection: &Connection) -> rusqlite::Result<Vec<PassHolder>> {
    let mut statement = connection.prepare(
        "SELECT s.iin, s.last_name || ' ' || s.first_name, s.status, k.public_key
         FROM pass_keys k JOIN students s ON s.iin = k.student_iin
         WHERE k.replaced_at IS NULL ORDER BY s.iin, k.id",
    )?;
    let mut holders: Vec<PassHolder> = Vec::new();
    let rows = statement.query_map([], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, String>(2)?,
            row.get::<_, Vec<u8>>(3)?,
        ))
    })?;
    for row in rows {
        let (iin, name, status, key) = row?;
        let Ok(key) = PassPublicKey::from_bytes(&key) else {
            continue;
        };
        match holders.last_mut() {
            Some(holder) if holder.iin == iin => holder.keys.push(key.to_base64url()),
            _ => holders.push(PassHolder {
                iin,
                name,
                active: status == "active",
                keys: vec![key.to_base64url()],
            }),
        }
    }
    Ok(holders)
}

/// Why a phone's pass key was not registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassKeyRefusal {
    /// The phone is not bound (or its binding was replaced).
    NotBound,
    /// The key is not a P-256 point, or the proof pass is not signed by it for this
    /// student now.
    BadProof,
}

/// The phone's current binding: (binding id, student).
pub fn binding_of(
    connection: &Connection,
    credential_hash: &[u8],
) -> rusqlite::Result<Option<(i64, String)>> {
    connection
        .prepare_cached(
            "SELECT id, student_iin FROM device_bindings WHERE credential_hash = ?1 AND revoked_at IS NULL",
        )?
        .query_row([credential_hash], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()
}

/// The bound student and the pass key registered for this binding, if any.
pub fn pass_state(
    connection: &Connection,
    credential_hash: &[u8],
) -> rusqlite::Result<Option<(Iin, String, Option<String>)>> {
    let Some((binding_id, iin)) = binding_of(connection, credential_hash)? else {
        return Ok(None);
    };
    let name: String = connection.query_row(
        "SELECT last_name || ' ' || first_name FROM students WHERE iin = ?1",
        [&iin],
        |row| row.get(0),
    )?;
    let key: Option<Vec<u8>> = connection
        .query_row(
            "SELECT public_key FROM pass_keys WHERE binding_id = ?1 AND replaced_at IS NULL",
            [binding_id],
            |row| row.get(0),
        )
        .optional()?;
    let key = key
        .and_then(|key| PassPublicKey::from_bytes(&key).ok())
        .map(|key| key.to_base64url());
    Ok(Iin::parse(&iin).ok().map(|iin| (iin, name, key)))
}

/// Registers a phone's new pass key, replacing the student's earlier ones. `proof` is a
/// pass signed by the new key now: it shows the phone holds the private half and that
/// the point is on the curve.
pub fn register_pass_key(
    connection: &Connection,
    credential_hash: &[u8],
    key: &str,
    proof: &str,
    now: i64,
    window_secs: i64,
) -> rusqlite::Result<Result<Iin, PassKeyRefusal>> {
    let Some((binding_id, iin)) = binding_of(connection, credential_hash)? else {
        return Ok(Err(PassKeyRefusal::NotBound));
    };
    let Ok(key) = PassPublicKey::from_base64url(key) else {
        return Ok(Err(PassKeyRefusal::BadProof));
    };
    let proven = StudentPass::parse(proof).is_ok_and(|pass| {
        pass.student.as_string() == iin
            && pass.check_fresh(now, window_secs).is_ok()
            && pass.verify_signature([&key])
    });
    if !proven {
        return Ok(Err(PassKeyRefusal::BadProof));
    }
    let Ok(student) = Iin::parse(&iin) else {
        return Ok(Err(PassKeyRefusal::NotBound));
    };
    let transaction =
        rusqlite::Transaction::new_unchecked(connection, rusqlite::TransactionBehavior::Immediate)?;
    let same: Option<i64> = transaction
        .query_row(
            "SELECT id FROM pass_keys WHERE binding_id = ?1 AND public_key = ?2 AND replaced_at IS NULL",
            rusqlite::params![binding_id, key.as_bytes()],
            |row| row.get(0),
        )
        .optional()?;
    if same.is_none() {
        replace_pass_keys(&transaction, &iin, now)?;
        transaction.execute(
            "INSERT INTO pass_keys (student_iin, binding_id, public_key, registered_at) VALUES (?1, ?2, ?3, ?4)",
            rusqlite::params![iin, binding_id, key.as_bytes(), now],
        )?;
    }
    transaction.commit()?;
    Ok(Ok(student))
}

/// Retires a student's current pass keys (a new key or a new binding).
pub fn replace_pass_keys(connection: &Connection, iin: &str, now: i64) -> rusqlite::Result<()> {
    connection.execute(
        "UPDATE pass_keys SET replaced_at = ?2 WHERE student_iin = ?1 AND replaced_at IS NULL",
        rusqlite::params![iin, now],
    )?;
    Ok(())
}

/// Longest scan id a kiosk may send.
pub const MAX_SCAN_ID_CHARS: usize = 64;

/// Why an upload body was refused: the HTTP status and the sentence for the kiosk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadRefusal {
    pub too_large: bool,
    pub message: String,
}

/// Parses `POST /kiosk/scans`: `{"scans": [{"id", "pass", "scanned_at"}]}`, at most
/// `MAX_SCANS_PER_UPLOAD`, ids 1-64 of `[A-Za-z0-9_-]`. The pass text is checked later,
/// per scan, where a refusal is recorded.
pub fn parse_scan_upload(body: &[u8]) -> Result<Vec<UploadedScan>, UploadRefusal> {
    let refuse = |too_large, message: String| UploadRefusal { too_large, message };
    let upload: kasip_core::wire::ScanUpload = serde_json::from_slice(body).map_err(|error| {
        refuse(
            false,
            format!("expected {{\"scans\": [{{\"id\", \"pass\", \"scanned_at\"}}]}}: {error}"),
        )
    })?;
    if upload.scans.len() > MAX_SCANS_PER_UPLOAD {
        return Err(refuse(
            true,
            format!("at most {MAX_SCANS_PER_UPLOAD} scans per upload"),
        ));
    }
    let valid_id = |id: &str| {
        !id.is_empty()
            && id.len() <= MAX_SCAN_ID_CHARS
            && id
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
    };
    if let Some((index, scan)) = upload
        .scans
        .iter()
        .enumerate()
        .find(|(_, scan)| !valid_id(&scan.id))
    {
        return Err(refuse(
            false,
            format!(
                "scan {index}: id {:?} must be 1-{MAX_SCAN_ID_CHARS} letters, digits, '-' or '_'",
                scan.id.chars().take(80).collect::<String>()
            ),
        ));
    }
    Ok(upload.scans)
}

/// Campus presence of a student: (scanned at, entrance) newest first, at most `limit`.
pub fn campus_presence(
    connection: &Connection,
    iin: &str,
    limit: i64,
) -> rusqlite::Result<Vec<(i64, String)>> {
    let mut statement = connection.prepare(
        "SELECT s.scanned_at, k.site FROM kiosk_scans s JOIN kiosks k ON k.id = s.kiosk_id
         WHERE s.student_iin = ?1 AND s.outcome = 'presence' ORDER BY s.scanned_at DESC LIMIT ?2",
    )?;
    let rows = statement.query_map(rusqlite::params![iin, limit], |row| {
        Ok((row.get(0)?, row.get(1)?))
    })?;
    rows.collect()
}
