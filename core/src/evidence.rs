//! What a mark's source proved (`MarkEvidence`), hashed into the attendance chain with the
//! mark and carried in its batch record (format 2), and how the mark entered the log
//! (`EntryKind`). Its own module: both the chain and the batch records use it.

use serde::{Deserialize, Serialize};

/// How a mark entered the log: live at the lesson, an admin's late entry after its
/// window, or an adjustment to a month already closed (from any path).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    Live,
    LateEntry,
    Adjustment,
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Live => "live",
            Self::LateEntry => "late_entry",
            Self::Adjustment => "adjustment",
        }
    }
}

/// What a mark's source knew and the registry can check, hashed into the chain with the
/// mark. Fields a source does not have are absent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarkEvidence {
    pub entry: EntryKind,
    /// The phone binding the check-in came through (the agent's opaque binding id; the
    /// binding itself travels in a `bindings` batch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binding: Option<u64>,
    /// What the phone presented: the classroom token it scanned, or the code typed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presented: Option<String>,
    /// The phone's device signature over `check_in_message(presented)`, base64url
    /// (ECDSA P-256, SHA-256, r‖s), verifiable under the binding's public key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_signature: Option<String>,
    /// The kiosk that scanned the pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kiosk: Option<u64>,
    /// The student's pass as the phone signed it (`KP1.…`), for kiosk marks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass: Option<String>,
    /// The student's passkey assertion over the check-in's challenge
    /// (`passkey::PasskeyAssertion::to_text`), when the phone made one: the registry
    /// verifies it against its own key directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passkey: Option<String>,
    /// When the kiosk saw the pass (its clock) and when the agent received the scan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scanned_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received_at: Option<i64>,
}

impl MarkEvidence {
    pub fn of(entry: EntryKind) -> Self {
        Self {
            entry,
            binding: None,
            presented: None,
            device_signature: None,
            kiosk: None,
            pass: None,
            passkey: None,
            scanned_at: None,
            received_at: None,
        }
    }

    /// The canonical JSON stored beside the row and hashed into the chain.
    pub fn to_canonical(&self) -> String {
        // Written directly, members in RFC 8785's order: it is made for every mark the
        // agent records and every record the registry re-walks. A test holds it to the
        // generic canonicaliser. Ids and times are far inside ±2^53: a value outside
        // is left out rather than written in a form no reader keeps exact.
        let mut out = String::with_capacity(128);
        let mut object = crate::canonical_json::ObjectWriter::new(&mut out);
        if let Some(binding) = self.binding {
            let _ = object.unsigned("binding", binding);
        }
        if let Some(signature) = &self.device_signature {
            object.string("device_signature", signature);
        }
        object.string("entry", self.entry.as_str());
        if let Some(kiosk) = self.kiosk {
            let _ = object.unsigned("kiosk", kiosk);
        }
        if let Some(pass) = &self.pass {
            object.string("pass", pass);
        }
        if let Some(passkey) = &self.passkey {
            object.string("passkey", passkey);
        }
        if let Some(presented) = &self.presented {
            object.string("presented", presented);
        }
        if let Some(received) = self.received_at {
            let _ = object.integer("received_at", received);
        }
        if let Some(scanned) = self.scanned_at {
            let _ = object.integer("scanned_at", scanned);
        }
        object.finish();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Integers RFC 8785 can carry exactly (ids and Unix times are far below).
    const SAFE: u64 = 1 << 53;

    proptest! {
        /// The direct writer is the generic RFC 8785 canonicaliser's twin.
        #[test]
        fn evidence_is_written_canonically(
            entry in 0..3u8,
            binding in proptest::option::of(0..SAFE),
            presented in proptest::option::of("\\PC{0,20}"),
            signature in proptest::option::of("[A-Za-z0-9_\"\\\u{0}-\u{1f}-]{0,20}"),
            kiosk in proptest::option::of(0..SAFE),
            pass in proptest::option::of("\\PC{0,20}"),
            passkey in proptest::option::of("[A-Za-z0-9_.-]{0,20}"),
            scanned in proptest::option::of(-(SAFE as i64)..SAFE as i64),
            received in proptest::option::of(-(SAFE as i64)..SAFE as i64),
        ) {
            let evidence = MarkEvidence {
                entry: [EntryKind::Live, EntryKind::LateEntry, EntryKind::Adjustment][entry as usize],
                binding,
                presented,
                device_signature: signature,
                kiosk,
                pass,
                passkey,
                scanned_at: scanned,
                received_at: received,
            };
            let value = serde_json::to_value(&evidence).expect("evidence serialises");
            let generic = crate::to_canonical_json(&value).expect("safe integers canonicalise");
            prop_assert_eq!(evidence.to_canonical(), generic);
        }
    }
}
