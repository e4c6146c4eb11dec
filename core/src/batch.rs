//! The batch envelope the agent sends to the registry and the records it carries
//! (design §5.4), parsed at the boundary on both sides: the agent builds them from its
//! event log, the registry refuses anything that does not parse here.
//!
//! Payloads are RFC 8785 canonical JSON with integers only, so a batch has exactly one
//! byte form, and its hash (`prev` of the next batch) is well defined.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::canonical_json::{is_canonical, ObjectWriter};
use crate::CanonicalError;
use crate::{to_canonical_json, Bin, Date, Iin, MarkMethod, MarkStatus, Month, TimeOfDay};

/// The envelope version this code writes. Version 2: attendance records carry their
/// evidence, site, room and token step (every field of the chain hash), and the kinds
/// `bindings` and `security_events` exist.
pub const BATCH_VERSION: u64 = 2;
/// Every envelope version this code reads. A sealed batch is resent byte for byte, so
/// after a bump an agent may still hold batches of the older version: raise the end
/// with `BATCH_VERSION`, and raise the start only when no agent can hold such a batch
/// (ARCHITECTURE.md, "Bump the batch format").
pub const SUPPORTED_BATCH_VERSIONS: std::ops::RangeInclusive<u64> = 1..=BATCH_VERSION;
/// `prev` of the first batch: no batch came before it.
pub const GENESIS_PREV: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// The most records one batch may carry (`sync.batch_max_records` is capped to it).
pub const MAX_RECORDS_PER_BATCH: usize = 20_000;

/// What a batch carries; one kind per batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchKind {
    Attendance,
    Grades,
    Contingent,
    MonthClose,
    Overrides,
    /// The agent announces its next signing key, signed by the current one.
    KeyRotation,
    /// Phones bound to students: who issued the code, when, from where (format 2).
    Bindings,
    /// Refused check-ins, guesses and other security events, one row per client, kind
    /// and ten minutes, sent once the window is over (format 2).
    SecurityEvents,
    /// Changes of a site's address, in order (format 2).
    SiteAddresses,
}

impl BatchKind {
    /// Every kind, in the order the agent seals them.
    /// A key rotation comes last: every batch sealed before it is signed by the old key.
    pub const ALL: [BatchKind; 9] = [
        BatchKind::Attendance,
        BatchKind::Grades,
        BatchKind::Contingent,
        BatchKind::Overrides,
        BatchKind::Bindings,
        BatchKind::SecurityEvents,
        BatchKind::SiteAddresses,
        BatchKind::MonthClose,
        BatchKind::KeyRotation,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BatchKind::Attendance => "attendance",
            BatchKind::Grades => "grades",
            BatchKind::Contingent => "contingent",
            BatchKind::MonthClose => "month_close",
            BatchKind::Overrides => "overrides",
            BatchKind::KeyRotation => "key_rotation",
            BatchKind::Bindings => "bindings",
            BatchKind::SecurityEvents => "security_events",
            BatchKind::SiteAddresses => "site_addresses",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }
}

/// Why a payload or a record was refused; the text goes back to the agent verbatim.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("payload is not a batch envelope: {0}")]
    Envelope(String),
    #[error("payload is not in canonical JSON (RFC 8785) form")]
    NotCanonical,
    #[error("envelope version {found} is not supported (this side reads {} to {})", supported.start(), supported.end())]
    Version {
        found: u64,
        supported: std::ops::RangeInclusive<u64>,
    },
    #[error("field {field}: {reason}")]
    Field { field: &'static str, reason: String },
    #[error("{0}")]
    Canonical(#[from] CanonicalError),
}

/// The signed payload of one batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchEnvelope {
    pub v: u64,
    /// The agent's key thumbprint (RFC 7638), the JWS `kid`.
    pub agent: String,
    pub college_bin: String,
    pub seq: u64,
    /// Lower-case hex SHA-256 of the previous batch's JWS; `GENESIS_PREV` for seq 1.
    pub prev: String,
    pub kind: BatchKind,
    /// Unix seconds when the agent sealed the batch.
    pub created: i64,
    #[serde(deserialize_with = "at_most_max_records")]
    pub records: Vec<RecordText>,
}

/// One record of a batch as its canonical JSON text: written once by the sealer, and
/// stored by the registry as received (the bytes signed are the bytes kept). Parsing
/// into the record's own type happens once, where it is used.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RecordText(Box<RawValue>);

impl RecordText {
    /// Any record, through the generic canonicaliser.
    pub fn of<T: Serialize>(record: &T) -> Result<Self, BatchError> {
        let value = serde_json::to_value(record)
            .map_err(|error| BatchError::Envelope(error.to_string()))?;
        Self::from_canonical(to_canonical_json(&value)?)
    }

    /// Text a direct writer made (`AttendanceRecord::to_canonical`); refused unless it
    /// is canonical.
    pub fn from_canonical(text: String) -> Result<Self, BatchError> {
        if !is_canonical(&text) {
            return Err(BatchError::NotCanonical);
        }
        RawValue::from_string(text)
            .map(Self)
            .map_err(|error| BatchError::Envelope(error.to_string()))
    }

    pub fn as_str(&self) -> &str {
        self.0.get()
    }

    /// The record parsed as its own type.
    pub fn parse<T: for<'de> Deserialize<'de>>(&self) -> Result<T, String> {
        serde_json::from_str(self.as_str()).map_err(|error| error.to_string())
    }
}

impl PartialEq for RecordText {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl BatchEnvelope {
    /// The canonical bytes that get signed: the envelope's members in RFC 8785's order
    /// around its records' own text (canonical when made by `RecordText::of` or
    /// `from_canonical`, and checked by `parse` when received).
    pub fn to_canonical(&self) -> Result<String, BatchError> {
        let records: usize = self
            .records
            .iter()
            .map(|record| record.as_str().len() + 1)
            .sum();
        let mut out = String::with_capacity(records + 320);
        let mut envelope = ObjectWriter::new(&mut out);
        envelope
            .string("agent", &self.agent)
            .string("college_bin", &self.college_bin)
            .integer("created", self.created)?
            .string("kind", self.kind.as_str())
            .string("prev", &self.prev)
            .canonical_list("records", self.records.iter().map(RecordText::as_str))
            .unsigned("seq", self.seq)?
            .unsigned("v", self.v)?
            .finish();
        Ok(out)
    }

    /// Parses a received payload: the envelope's own fields, and that the bytes are the
    /// canonical form (a non-canonical payload would give one batch two hashes).
    /// Records are checked one by one with `check_record`, so one bad record is
    /// quarantined instead of refusing the whole batch.
    pub fn parse(payload: &[u8]) -> Result<Self, BatchError> {
        Self::parse_versions(payload, SUPPORTED_BATCH_VERSIONS)
    }

    /// `parse` reading the envelope versions in `supported` (tests simulate a bump).
    pub fn parse_versions(
        payload: &[u8],
        supported: std::ops::RangeInclusive<u64>,
    ) -> Result<Self, BatchError> {
        let envelope: BatchEnvelope = serde_json::from_slice(payload)
            .map_err(|error| BatchError::Envelope(error.to_string()))?;
        if !supported.contains(&envelope.v) {
            return Err(BatchError::Version {
                found: envelope.v,
                supported,
            });
        }
        // Each record canonical, and the envelope's own members around them.
        if !envelope
            .records
            .iter()
            .all(|record| is_canonical(record.as_str()))
            || envelope.to_canonical()?.as_bytes() != payload
        {
            return Err(BatchError::NotCanonical);
        }
        Bin::parse(&envelope.college_bin).map_err(|error| BatchError::Field {
            field: "college_bin",
            reason: error.to_string(),
        })?;
        if envelope.seq == 0 {
            return Err(field("seq", "sequence numbers start at 1"));
        }
        if !is_sha256_hex(&envelope.prev) {
            return Err(field("prev", "not a lower-case hex SHA-256"));
        }
        if envelope.v < 2
            && matches!(
                envelope.kind,
                BatchKind::Bindings | BatchKind::SecurityEvents | BatchKind::SiteAddresses
            )
        {
            return Err(field("kind", "this kind exists from format 2 on"));
        }
        if envelope.records.is_empty() {
            return Err(field(
                "records",
                &format!("a batch carries 1 to {MAX_RECORDS_PER_BATCH} records"),
            ));
        }
        Ok(envelope)
    }
}

/// `records`, refused as soon as it holds more than `MAX_RECORDS_PER_BATCH`: a payload
/// of millions of tiny records would otherwise become millions of JSON values before the
/// limit is checked.
fn at_most_max_records<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<RecordText>, D::Error> {
    struct AtMost;
    impl<'de> serde::de::Visitor<'de> for AtMost {
        type Value = Vec<RecordText>;

        fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(formatter, "a list of 1 to {MAX_RECORDS_PER_BATCH} records")
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Vec<RecordText>, A::Error> {
            let mut records = Vec::new();
            while let Some(record) = seq.next_element()? {
                if records.len() == MAX_RECORDS_PER_BATCH {
                    return Err(serde::de::Error::custom(format!(
                        "records: a batch carries 1 to {MAX_RECORDS_PER_BATCH} records"
                    )));
                }
                records.push(record);
            }
            Ok(records)
        }
    }
    deserializer.deserialize_seq(AtMost)
}

fn field(field: &'static str, reason: &str) -> BatchError {
    BatchError::Field {
        field,
        reason: reason.to_owned(),
    }
}

pub fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte))
}

/// Lower-case hex of `bytes`: how hashes are written in records, batches and the log.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut hex = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        hex.push(char::from(DIGITS[usize::from(byte >> 4)]));
        hex.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    hex
}

/// Lower-case hex SHA-256 of `bytes`: how batches chain (`prev`) and are compared.
pub fn sha256_hex(bytes: &[u8]) -> String {
    to_hex(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

/// What the registry did with one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Accepted,
    /// The registry already held a record with this id and kind.
    Duplicate,
    /// The record does not parse; quarantined on both sides, never silently dropped.
    Rejected,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordOutcome {
    pub id: u64,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The registry's signed answer for a stored batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    pub v: u64,
    pub agent: String,
    pub seq: u64,
    /// `sha256_hex` of the batch's JWS as the registry received it.
    pub hash: String,
    pub received: i64,
    pub records: Vec<RecordOutcome>,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Duplicate => "duplicate",
            Self::Rejected => "rejected",
        }
    }
}

impl Receipt {
    /// The canonical bytes the registry signs, written directly (a receipt answers up
    /// to 20,000 records); a test holds it to the generic canonicaliser.
    pub fn to_canonical(&self) -> Result<String, BatchError> {
        let mut out = String::with_capacity(self.records.len() * 40 + 256);
        ObjectWriter::new(&mut out)
            .string("agent", &self.agent)
            .string("hash", &self.hash)
            .integer("received", self.received)?
            .list("records", &self.records, |out, record| {
                let mut outcome = ObjectWriter::new(out);
                outcome
                    .unsigned("id", record.id)?
                    .string("outcome", record.outcome.as_str());
                if let Some(reason) = &record.reason {
                    outcome.string("reason", reason);
                }
                outcome.finish();
                Ok::<(), CanonicalError>(())
            })?
            .unsigned("seq", self.seq)?
            .unsigned("v", self.v)?
            .finish();
        Ok(out)
    }

    pub fn parse(payload: &[u8]) -> Result<Self, BatchError> {
        serde_json::from_slice(payload).map_err(|error| BatchError::Envelope(error.to_string()))
    }

    pub fn count(&self, outcome: Outcome) -> usize {
        self.records
            .iter()
            .filter(|record| record.outcome == outcome)
            .count()
    }
}

/// One attendance mark, as recorded in the agent's hash-chained log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttendanceRecord {
    /// The event's permanent id in the agent's log.
    pub id: u64,
    pub lesson: u64,
    pub date: String,
    pub start: String,
    pub group: String,
    pub discipline: String,
    pub teacher_iin: String,
    pub mode: String,
    pub student_iin: String,
    pub status: String,
    pub method: String,
    pub recorded_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub marked_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corrects: Option<u64>,
    /// The row's hash in the agent's local chain, so the registry can audit it.
    pub chain_hash: String,
    /// The lesson's end (local `HH:MM`; format 2): with the college's time zone, the
    /// registry knows the lesson's window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
    /// The lesson's site and room (format 2; absent when the timetable names none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    /// The classroom token's rotation step, for phone and typed check-ins (format 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_step: Option<u64>,
    /// What the mark's source proved (format 2; absent for marks recorded before it).
    /// With `token_step`, the record holds every field of the chain hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<crate::evidence::MarkEvidence>,
}

impl AttendanceRecord {
    /// The record's canonical JSON, written directly rather than through a
    /// `serde_json::Value` (a month's sync writes hundreds of thousands of these); a
    /// property test holds it to the generic canonicaliser.
    pub fn to_canonical(&self) -> Result<String, CanonicalError> {
        let evidence = self
            .evidence
            .as_ref()
            .map(crate::evidence::MarkEvidence::to_canonical);
        self.to_canonical_with_evidence(evidence.as_deref())
    }

    /// `to_canonical` with the evidence given as its canonical text (as the agent
    /// stores it beside the row) in place of `self.evidence`.
    pub fn to_canonical_with_evidence(
        &self,
        evidence: Option<&str>,
    ) -> Result<String, CanonicalError> {
        let mut out = String::with_capacity(640);
        let mut record = ObjectWriter::new(&mut out);
        record.string("chain_hash", &self.chain_hash);
        if let Some(corrects) = self.corrects {
            record.unsigned("corrects", corrects)?;
        }
        record.string("date", &self.date);
        if let Some(device) = &self.device {
            record.string("device", device);
        }
        record.string("discipline", &self.discipline);
        if let Some(end) = &self.end {
            record.string("end", end);
        }
        if let Some(evidence) = evidence {
            record.canonical("evidence", evidence);
        }
        record
            .string("group", &self.group)
            .unsigned("id", self.id)?
            .unsigned("lesson", self.lesson)?;
        if let Some(marked_by) = &self.marked_by {
            record.string("marked_by", marked_by);
        }
        record
            .string("method", &self.method)
            .string("mode", &self.mode);
        if let Some(reason) = &self.reason {
            record.string("reason", reason);
        }
        record.integer("recorded_at", self.recorded_at)?;
        if let Some(room) = &self.room {
            record.string("room", room);
        }
        if let Some(site) = &self.site {
            record.string("site", site);
        }
        record
            .string("start", &self.start)
            .string("status", &self.status)
            .string("student_iin", &self.student_iin)
            .string("teacher_iin", &self.teacher_iin);
        if let Some(token_step) = self.token_step {
            record.unsigned("token_step", token_step)?;
        }
        record.finish();
        Ok(out)
    }
}

/// A phone bound to a student (format 2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindingRecord {
    /// The binding's id: attendance evidence names it.
    pub id: u64,
    pub student_iin: String,
    /// The phone's device public key (base64url, uncompressed P-256 point).
    pub device_key: String,
    /// SHA-256 of the device key (hex): the device as attendance records name it.
    pub device: String,
    pub bound_at: i64,
    /// The staff login that issued the code, and when.
    pub code_issued_by: String,
    pub code_issued_at: i64,
    /// The phone's address and browser at binding.
    pub client: String,
    pub user_agent: String,
}

/// A security event, aggregated per client, kind, target and ten minutes (format 2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityEventRecord {
    pub id: u64,
    pub kind: String,
    pub first_at: i64,
    pub last_at: i64,
    pub count: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lesson: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub student_iin: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    pub detail: String,
}

/// A site's address from a moment on (format 2): changes are events, never overwrites.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteAddressRecord {
    pub id: u64,
    pub site: String,
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    pub at: i64,
    pub source: String,
}

/// One grade: recorded by a teacher or imported from the LMS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GradeRecord {
    pub id: u64,
    pub student_iin: String,
    pub discipline: String,
    /// current, midterm, exam or practice.
    pub assessment: String,
    /// 0–100.
    pub score: u64,
    pub credits: u64,
    pub date: String,
    pub recorded_at: i64,
    /// Staff login, or `import:<file>`.
    pub recorded_by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corrects: Option<u64>,
}

/// A student's enrolment or status change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContingentRecord {
    pub id: u64,
    pub student_iin: String,
    pub change: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_status: Option<String>,
    pub effective_date: String,
    pub recorded_at: i64,
    pub source: String,
}

/// An admin's decision to let a manual mark take a group below the coverage rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverrideRecord {
    pub id: u64,
    /// The attendance event the override let through.
    pub event_id: u64,
    pub admin: String,
    pub reason: String,
    pub coverage_before: u64,
    pub coverage_after: u64,
    pub at: i64,
}

/// A closed month: the signed statement (itself a JWS by the agent's key) and its gist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonthCloseRecord {
    pub id: u64,
    pub month: String,
    pub compliant: bool,
    pub statement: String,
}

/// The agent's next Ed25519 public key (base64url, 32 bytes) and its RFC 7638
/// thumbprint; the batch carrying it is signed by the key it replaces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRotationRecord {
    pub id: u64,
    pub new_key: String,
    pub new_kid: String,
    pub at: i64,
}

fn check_iin(text: &str, name: &str) -> Result<(), String> {
    Iin::parse(text)
        .map(|_| ())
        .map_err(|error| format!("{name}: {error}"))
}

fn check_text(value: &str, name: &str, max: usize) -> Result<(), String> {
    if value.trim().is_empty() || value.chars().count() > max {
        Err(format!("{name}: must be 1 to {max} characters"))
    } else {
        Ok(())
    }
}

/// Checks a parsed attendance record of a batch of format `version`: what its fields
/// must hold beyond their types. (The registry parses each record once and checks it
/// with this, keeping the parsed record for its audit.)
pub fn check_attendance(version: u64, record: &AttendanceRecord) -> Result<(), String> {
    let (iin, text) = (check_iin, check_text);
    Date::parse(&record.date).map_err(|error| format!("date: {error}"))?;
    TimeOfDay::parse(&record.start).map_err(|error| format!("start: {error}"))?;
    if let Some(end) = &record.end {
        TimeOfDay::parse(end).map_err(|error| format!("end: {error}"))?;
    }
    iin(&record.student_iin, "student_iin")?;
    iin(&record.teacher_iin, "teacher_iin")?;
    text(&record.group, "group", 64)?;
    text(&record.discipline, "discipline", 200)?;
    if !matches!(record.mode.as_str(), "offline" | "online") {
        return Err("mode: must be offline or online".into());
    }
    MarkStatus::parse(&record.status).ok_or("status: not a mark status")?;
    MarkMethod::parse(&record.method).ok_or("method: not a mark method")?;
    if !is_sha256_hex(&record.chain_hash) {
        return Err("chain_hash: not a lower-case hex SHA-256".into());
    }
    // Absent only for marks recorded before format 2 (they hash without it).
    if let (2.., Some(evidence)) = (version, &record.evidence) {
        check_evidence(record, evidence)?;
    }
    Ok(())
}

/// Checks one record of `kind` in a batch of format `version` and returns its permanent
/// id, or why it is refused.
pub fn check_record(version: u64, kind: BatchKind, record: &RecordText) -> Result<u64, String> {
    fn parse<T: for<'de> Deserialize<'de>>(record: &RecordText) -> Result<T, String> {
        record.parse()
    }
    let (iin, text) = (check_iin, check_text);
    let date = |text: &str, name: &str| {
        Date::parse(text)
            .map(|_| ())
            .map_err(|error| format!("{name}: {error}"))
    };
    match kind {
        BatchKind::Attendance => {
            let record: AttendanceRecord = parse(record)?;
            check_attendance(version, &record)?;
            Ok(record.id)
        }
        BatchKind::Bindings => {
            let record: BindingRecord = parse(record)?;
            iin(&record.student_iin, "student_iin")?;
            if !is_sha256_hex(&record.device) {
                return Err("device: not a lower-case hex SHA-256".into());
            }
            text(&record.device_key, "device_key", 200)?;
            text(&record.code_issued_by, "code_issued_by", 200)?;
            if record.client.chars().count() > 200 || record.user_agent.chars().count() > 1000 {
                return Err("client, user_agent: too long".into());
            }
            Ok(record.id)
        }
        BatchKind::SecurityEvents => {
            let record: SecurityEventRecord = parse(record)?;
            text(&record.kind, "kind", 64)?;
            if record.count == 0 || record.last_at < record.first_at {
                return Err("count, last_at: an aggregate of at least one event, in order".into());
            }
            if let Some(student) = &record.student_iin {
                iin(student, "student_iin")?;
            }
            if record.detail.chars().count() > 1000 {
                return Err("detail: at most 1000 characters".into());
            }
            Ok(record.id)
        }
        BatchKind::SiteAddresses => {
            let record: SiteAddressRecord = parse(record)?;
            text(&record.site, "site", 200)?;
            if record.address.chars().count() > 500 {
                return Err("address: at most 500 characters".into());
            }
            text(&record.source, "source", 200)?;
            Ok(record.id)
        }
        BatchKind::Grades => {
            let record: GradeRecord = parse(record)?;
            iin(&record.student_iin, "student_iin")?;
            text(&record.discipline, "discipline", 200)?;
            if !matches!(
                record.assessment.as_str(),
                "current" | "midterm" | "exam" | "practice"
            ) {
                return Err("assessment: must be current, midterm, exam or practice".into());
            }
            if record.score > 100 {
                return Err("score: must be 0 to 100".into());
            }
            if record.credits > 60 {
                return Err("credits: must be 0 to 60".into());
            }
            date(&record.date, "date")?;
            text(&record.recorded_by, "recorded_by", 200)?;
            Ok(record.id)
        }
        BatchKind::Contingent => {
            let record: ContingentRecord = parse(record)?;
            iin(&record.student_iin, "student_iin")?;
            if !matches!(record.change.as_str(), "enrolled" | "status") {
                return Err("change: must be enrolled or status".into());
            }
            text(&record.status, "status", 32)?;
            date(&record.effective_date, "effective_date")?;
            Ok(record.id)
        }
        BatchKind::Overrides => {
            let record: OverrideRecord = parse(record)?;
            text(&record.admin, "admin", 200)?;
            text(&record.reason, "reason", 2000)?;
            if record.coverage_before > 1000 || record.coverage_after > 1000 {
                return Err("coverage: thousandths must be 0 to 1000".into());
            }
            Ok(record.id)
        }
        BatchKind::MonthClose => {
            let record: MonthCloseRecord = parse(record)?;
            Month::parse(&record.month).map_err(|error| format!("month: {error}"))?;
            if record.statement.split('.').count() != 3 {
                return Err("statement: not a compact JWS".into());
            }
            Ok(record.id)
        }
        BatchKind::KeyRotation => {
            use base64::Engine;
            let record: KeyRotationRecord = parse(record)?;
            let key = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(&record.new_key)
                .map_err(|_| "new_key: not base64url")?;
            if key.len() != 32 {
                return Err("new_key: not a 32-byte Ed25519 public key".into());
            }
            if record.new_kid.len() != 43
                || !record
                    .new_kid
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
            {
                return Err("new_kid: not an RFC 7638 SHA-256 thumbprint".into());
            }
            Ok(record.id)
        }
    }
}

/// What a record's evidence must hold for its method and entry.
fn check_evidence(
    record: &AttendanceRecord,
    evidence: &crate::evidence::MarkEvidence,
) -> Result<(), String> {
    use crate::evidence::EntryKind;
    let method = MarkMethod::parse(&record.method).ok_or("method: not a mark method")?;
    match method {
        MarkMethod::QrPhone | MarkMethod::QrTyped => {
            if evidence.binding.is_none()
                || evidence.presented.is_none()
                || evidence.device_signature.is_none()
                || record.token_step.is_none()
            {
                return Err(
                    "evidence: a phone check-in names its binding, what it presented, the \
                     device signature and the token step"
                        .into(),
                );
            }
        }
        MarkMethod::QrKiosk => {
            if evidence.kiosk.is_none()
                || evidence.pass.is_none()
                || evidence.scanned_at.is_none()
                || evidence.received_at.is_none()
            {
                return Err(
                    "evidence: a kiosk mark names its kiosk, the pass, scanned_at and received_at"
                        .into(),
                );
            }
        }
        MarkMethod::Manual | MarkMethod::LateEntry => {
            if record.marked_by.is_none() {
                return Err("marked_by: a manual mark names who marked".into());
            }
        }
    }
    if evidence.passkey.is_some() && !matches!(method, MarkMethod::QrPhone | MarkMethod::QrTyped) {
        return Err("evidence: only a phone's check-in carries a passkey assertion".into());
    }
    let late_entry = method == MarkMethod::LateEntry;
    if late_entry != (evidence.entry == EntryKind::LateEntry)
        && evidence.entry != EntryKind::Adjustment
    {
        return Err("evidence.entry: a late_entry mark is entered as late_entry".into());
    }
    if late_entry && record.reason.is_none() {
        return Err("reason: a late entry gives its reason".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn grade() -> Value {
        json!({"id": 1, "student_iin": "060315500016", "discipline": "Физика",
        "assessment": "exam", "score": 87, "credits": 3, "date": "2026-11-20",
        "recorded_at": 1_764_000_000, "recorded_by": "import:grades.csv"})
    }

    fn envelope() -> BatchEnvelope {
        BatchEnvelope {
            v: 1,
            agent: "kid".into(),
            college_bin: "090640001233".into(),
            seq: 1,
            prev: GENESIS_PREV.into(),
            kind: BatchKind::Grades,
            created: 1_764_000_000,
            records: vec![RecordText::of(&grade()).expect("canonical")],
        }
    }

    #[test]
    fn an_envelope_round_trips_through_its_canonical_form() {
        let canonical = envelope().to_canonical().expect("canonical");
        assert!(canonical.starts_with(r#"{"agent":"kid","college_bin":"090640001233","created":1764000000,"kind":"grades","prev":"000"#));
        let parsed = BatchEnvelope::parse(canonical.as_bytes()).expect("parse");
        assert_eq!(parsed, envelope());
        assert_eq!(check_record(1, parsed.kind, &parsed.records[0]), Ok(1));
    }

    #[test]
    fn a_batch_sealed_under_an_older_version_still_parses_after_a_bump() {
        // Today's batches are version 1, and this side reads them.
        assert!(SUPPORTED_BATCH_VERSIONS.contains(&1));
        assert!(SUPPORTED_BATCH_VERSIONS.contains(&BATCH_VERSION));
        let sealed_v1 = envelope().to_canonical().expect("canonical");
        // A bump to version 2 keeps reading the version-1 bytes an agent still resends,
        // reads version 2, and refuses what it does not know.
        let bumped = 1..=2;
        assert_eq!(
            BatchEnvelope::parse_versions(sealed_v1.as_bytes(), bumped.clone()),
            Ok(envelope())
        );
        let v2 = BatchEnvelope { v: 2, ..envelope() };
        let sealed_v2 = v2.to_canonical().expect("canonical");
        assert_eq!(
            BatchEnvelope::parse_versions(sealed_v2.as_bytes(), bumped.clone()),
            Ok(v2)
        );
        let v3 = BatchEnvelope { v: 3, ..envelope() }
            .to_canonical()
            .expect("canonical");
        let refused = BatchEnvelope::parse_versions(v3.as_bytes(), bumped);
        assert!(
            refused.as_ref().is_err_and(|error| error
                .to_string()
                .contains("version 3 is not supported (this side reads 1 to 2)")),
            "{refused:?}"
        );
        // Dropping version 1 too early is what strands sealed batches: the parse says so.
        assert!(BatchEnvelope::parse_versions(sealed_v1.as_bytes(), 2..=2).is_err());
    }

    #[test]
    fn hostile_envelopes_are_refused_with_the_reason() {
        let canonical = envelope().to_canonical().expect("canonical");
        let pretty = serde_json::to_string_pretty(&envelope()).expect("json");
        assert_eq!(
            BatchEnvelope::parse(pretty.as_bytes()),
            Err(BatchError::NotCanonical)
        );
        let cases: Vec<(String, &str)> = vec![
            (canonical.replace("\"v\":1", "\"v\":3"), "version 3"),
            (
                canonical.replace("090640001233", "090640001234"),
                "college_bin",
            ),
            (canonical.replace("\"seq\":1", "\"seq\":0"), "seq"),
            (canonical.replace(GENESIS_PREV, "00"), "prev"),
            (
                canonical.replace("\"kind\":\"grades\"", "\"kind\":\"payroll\""),
                "payroll",
            ),
            (
                canonical.replace("\"created\"", "\"extra\":1,\"created\""),
                "extra",
            ),
            ("[]".into(), "envelope"),
            ("".into(), "envelope"),
            ("{\"v\":1e400}".into(), "envelope"),
        ];
        for (payload, expected) in cases {
            let error = BatchEnvelope::parse(payload.as_bytes()).expect_err(&payload);
            assert!(error.to_string().contains(expected), "{payload}: {error}");
        }
        let mut empty = envelope();
        empty.records.clear();
        let canonical = empty.to_canonical().expect("canonical");
        assert!(BatchEnvelope::parse(canonical.as_bytes())
            .expect_err("empty")
            .to_string()
            .contains("records"));
    }

    #[test]
    fn too_many_records_are_refused_before_they_are_built() {
        let mut text = envelope().to_canonical().expect("canonical");
        // A million empty records in the place of the real one: refused by count.
        let tiny = vec!["0"; 1_000_000].join(",");
        let start = text.find("\"records\":[").expect("records") + "\"records\":[".len();
        let end = start + text[start..].find("],").expect("end");
        text.replace_range(start..end, &tiny);
        let error = BatchEnvelope::parse(text.as_bytes()).expect_err("refused");
        assert!(error.to_string().contains("1 to 20000 records"), "{error}");
    }

    #[test]
    fn hostile_records_are_refused_one_by_one() {
        let good = grade();
        let with = |key: &str, value: Value| {
            let mut record = good.clone();
            record[key] = value;
            record
        };
        let cases = [
            (with("student_iin", json!("060315500017")), "student_iin"),
            (with("score", json!(101)), "score"),
            (with("score", json!(-1)), "invalid value"),
            (with("assessment", json!("vibes")), "assessment"),
            (with("date", json!("2026-02-30")), "date"),
            (with("discipline", json!("")), "discipline"),
            (with("discipline", json!("x".repeat(10_000))), "discipline"),
            (with("surprise", json!(1)), "unknown field"),
            (json!("a string"), "invalid type"),
        ];
        for (record, expected) in cases {
            let text = RecordText::of(&record).expect("canonical");
            let error = check_record(2, BatchKind::Grades, &text).expect_err("refused");
            assert!(error.contains(expected), "{record}: {error}");
        }
        let good = RecordText::of(&good).expect("canonical");
        assert!(check_record(2, BatchKind::Attendance, &good).is_err());
    }

    #[test]
    fn receipts_and_hex_are_written_as_the_generic_path_writes_them() {
        let receipt = Receipt {
            v: 2,
            agent: "kid\"€".into(),
            seq: 7,
            hash: sha256_hex(b"batch"),
            received: -5,
            records: vec![
                RecordOutcome {
                    id: 1,
                    outcome: Outcome::Accepted,
                    reason: None,
                },
                RecordOutcome {
                    id: 2,
                    outcome: Outcome::Duplicate,
                    reason: None,
                },
                RecordOutcome {
                    id: 3,
                    outcome: Outcome::Rejected,
                    reason: Some("date: \u{1}not a date".into()),
                },
            ],
        };
        let generic = to_canonical_json(&serde_json::to_value(&receipt).expect("json"));
        assert_eq!(receipt.to_canonical().ok(), generic.ok());
        let empty = Receipt {
            records: Vec::new(),
            ..receipt
        };
        let generic = to_canonical_json(&serde_json::to_value(&empty).expect("json"));
        assert_eq!(empty.to_canonical().ok(), generic.ok());
        assert_eq!(to_hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
    }

    #[test]
    fn a_record_not_in_canonical_form_refuses_the_batch() {
        // The envelope around it is canonical; the record inside is not.
        let canonical = envelope().to_canonical().expect("canonical");
        let reordered = canonical
            .replacen("{\"assessment\":\"exam\",", "{", 1)
            .replacen(
                "\"credits\":3,",
                "\"credits\":3,\"assessment\":\"exam\",",
                1,
            );
        assert_ne!(reordered, canonical);
        assert_eq!(
            BatchEnvelope::parse(reordered.as_bytes()),
            Err(BatchError::NotCanonical)
        );
        assert_eq!(
            RecordText::from_canonical("{\"b\":1,\"a\":2}".into()),
            Err(BatchError::NotCanonical)
        );
    }

    proptest::proptest! {
        /// The direct writer is the generic RFC 8785 canonicaliser's twin, with and
        /// without evidence, whatever the text holds.
        #[test]
        fn attendance_records_are_written_canonically(
            id in 0..(1u64 << 53),
            texts in proptest::collection::vec("\\PC{0,12}|[\"\\\\\\x00-\\x1f€😀]{0,4}", 12),
            corrects in proptest::option::of(0..(1u64 << 53)),
            recorded_at in -(1i64 << 53) + 1..(1i64 << 53),
            token_step in proptest::option::of(0..(1u64 << 53)),
            optional in proptest::collection::vec(proptest::bool::ANY, 7),
            binding in proptest::option::of(0..(1u64 << 53)),
        ) {
            let maybe = |index: usize, text: &String| optional[index].then(|| text.clone());
            let record = AttendanceRecord {
                id,
                lesson: id / 3,
                date: texts[0].clone(),
                start: texts[1].clone(),
                group: texts[2].clone(),
                discipline: texts[3].clone(),
                teacher_iin: texts[4].clone(),
                mode: texts[5].clone(),
                student_iin: texts[6].clone(),
                status: texts[7].clone(),
                method: texts[8].clone(),
                recorded_at,
                device: maybe(0, &texts[9]),
                marked_by: maybe(1, &texts[10]),
                reason: maybe(2, &texts[11]),
                corrects,
                chain_hash: texts[9].clone(),
                end: maybe(3, &texts[10]),
                site: maybe(4, &texts[11]),
                room: maybe(5, &texts[0]),
                token_step,
                evidence: optional[6].then(|| crate::evidence::MarkEvidence {
                    binding,
                    presented: Some(texts[1].clone()),
                    ..crate::evidence::MarkEvidence::of(crate::evidence::EntryKind::Live)
                }),
            };
            let generic = to_canonical_json(&serde_json::to_value(&record).expect("json"))
                .expect("safe integers");
            proptest::prop_assert_eq!(record.to_canonical().expect("safe integers"), generic);
        }
    }
}
