//! The attendance hash chain (design §4), as both sides compute it: the agent appends to
//! it, and anyone holding the synced records (the registry, an auditor) re-walks it.
//!
//! `row_hash = SHA-256(prev_hash || canonical row)`, where the canonical row is every
//! field of the mark, length-prefixed so no two different rows share an encoding. Rows
//! recorded since batch format 2 also carry their evidence (`MarkEvidence`) as one more
//! field, its canonical JSON: a row without evidence encodes exactly as before, so chains
//! begun under format 1 still verify.

use ring::digest::{digest, SHA256};

use crate::batch::{to_hex, AttendanceRecord};
pub use crate::evidence::{EntryKind, MarkEvidence};

/// `prev_hash` of the first row.
pub const GENESIS_HASH: [u8; 32] = [0; 32];

/// The text a phone signs to check in: what it presented (the classroom token names the
/// lesson and its rotation step, so the signature is bound to both and to the time).
pub fn check_in_message(presented: &str) -> String {
    format!("KC1.{presented}")
}

/// One row's fields, as hashed.
#[derive(Debug, Clone, Copy)]
pub struct ChainRow<'a> {
    pub id: i64,
    pub lesson_id: i64,
    pub student_iin: &'a str,
    pub status: &'a str,
    pub method: &'a str,
    pub recorded_at: i64,
    pub device_id: Option<&'a str>,
    pub token_step: Option<u64>,
    pub marked_by: Option<&'a str>,
    pub reason: Option<&'a str>,
    pub corrects: Option<i64>,
    /// `MarkEvidence::to_canonical`, for rows recorded since format 2.
    pub evidence: Option<&'a str>,
}

impl ChainRow<'_> {
    /// The bytes hashed for this row. Changing them breaks every existing chain: never do.
    fn canonical(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(256);
        let mut field = |value: &str| {
            bytes.extend_from_slice(&(value.len() as u32).to_be_bytes());
            bytes.extend_from_slice(value.as_bytes());
        };
        field(&self.id.to_string());
        field(&self.lesson_id.to_string());
        field(self.student_iin);
        field(self.status);
        field(self.method);
        field(&self.recorded_at.to_string());
        let optional = [
            self.device_id.map(str::to_owned),
            self.token_step.map(|step| step.to_string()),
            self.marked_by.map(str::to_owned),
            self.reason.map(str::to_owned),
            self.corrects.map(|id| id.to_string()),
        ];
        for value in optional {
            match value {
                Some(value) => {
                    field("1");
                    field(&value);
                }
                None => field("0"),
            }
        }
        if let Some(evidence) = self.evidence {
            field(evidence);
        }
        bytes
    }

    /// This row's hash after `prev_hash`.
    pub fn hash(&self, prev_hash: &[u8]) -> [u8; 32] {
        let canonical = self.canonical();
        let mut input = Vec::with_capacity(prev_hash.len() + canonical.len());
        input.extend_from_slice(prev_hash);
        input.extend_from_slice(&canonical);
        let mut hash = [0; 32];
        hash.copy_from_slice(digest(&SHA256, &input).as_ref());
        hash
    }
}

/// Where a re-walk of synced records failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the attendance chain breaks at event {event}: {reason}")]
pub struct ChainBreak {
    pub event: u64,
    pub reason: String,
}

/// The chain's head after a walk: the last event id and its hash (hex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    pub event: u64,
    pub hash: String,
}

impl ChainHead {
    pub fn genesis() -> Self {
        Self {
            event: 0,
            hash: to_hex(&GENESIS_HASH),
        }
    }
}

/// Re-walks `records` (in id order) from `head`: each must be the next event and hash to
/// its `chain_hash`. Records of a format-1 batch lack a field of the hash (the token
/// step), so only their order and stated hash are taken; from format 2 every record is
/// recomputed (one without evidence was recorded before format 2 and hashes without it).
pub fn rewalk(
    head: &ChainHead,
    records: &[AttendanceRecord],
    batch_version: u64,
) -> Result<ChainHead, ChainBreak> {
    let mut current = head.clone();
    for record in records {
        if record.id != current.event + 1 {
            return Err(ChainBreak {
                event: record.id,
                reason: format!(
                    "expected event {} next: events are missing or out of order",
                    current.event + 1
                ),
            });
        }
        if batch_version >= 2 {
            let prev = from_hex(&current.hash).ok_or_else(|| ChainBreak {
                event: record.id,
                reason: "the previous hash is not hex".into(),
            })?;
            let evidence = record.evidence.as_ref().map(MarkEvidence::to_canonical);
            let computed = ChainRow {
                id: record.id as i64,
                lesson_id: record.lesson as i64,
                student_iin: &record.student_iin,
                status: &record.status,
                method: &record.method,
                recorded_at: record.recorded_at,
                device_id: record.device.as_deref(),
                token_step: record.token_step,
                marked_by: record.marked_by.as_deref(),
                reason: record.reason.as_deref(),
                corrects: record.corrects.map(|id| id as i64),
                evidence: evidence.as_deref(),
            }
            .hash(&prev);
            if to_hex(&computed) != record.chain_hash {
                return Err(ChainBreak {
                    event: record.id,
                    reason: "its fields do not hash to its chain_hash after the previous \
                             event: the record or one before it was rewritten"
                        .into(),
                });
            }
        }
        current = ChainHead {
            event: record.id,
            hash: record.chain_hash.clone(),
        };
    }
    Ok(current)
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|index| u8::from_str_radix(text.get(index..index + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(evidence: Option<&str>) -> ChainRow<'_> {
        ChainRow {
            id: 1,
            lesson_id: 7,
            student_iin: "060315500016",
            status: "present",
            method: "qr_phone",
            recorded_at: 1_764_000_000,
            device_id: Some("abc"),
            token_step: Some(117_600_000),
            marked_by: None,
            reason: None,
            corrects: None,
            evidence,
        }
    }

    #[test]
    fn a_row_without_evidence_hashes_as_format_1_did() {
        // The format-1 encoding, spelled out: a chain begun then still verifies.
        let mut expected = Vec::new();
        for value in [
            "1",
            "7",
            "060315500016",
            "present",
            "qr_phone",
            "1764000000",
            "1",
            "abc",
            "1",
            "117600000",
            "0",
            "0",
            "0",
        ] {
            expected.extend_from_slice(&(value.len() as u32).to_be_bytes());
            expected.extend_from_slice(value.as_bytes());
        }
        assert_eq!(row(None).canonical(), expected);
        assert_ne!(
            row(None).hash(&GENESIS_HASH),
            row(Some("{}")).hash(&GENESIS_HASH)
        );
    }

    #[test]
    fn hex_round_trips_and_refuses_junk() {
        assert_eq!(from_hex("00ff10"), Some(vec![0, 255, 16]));
        assert_eq!(from_hex("0"), None);
        assert_eq!(from_hex("zz"), None);
        assert_eq!(from_hex("é1"), None);
    }
}
