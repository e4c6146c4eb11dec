//! The JSON both ends of each HTTP API speak, defined once: the registry's (enrolment,
//! checkpoint, beneficiary list, answers with a receipt or an error) and the kiosk API on
//! the agent (enrolment, the pass key list, scan uploads and their answers). Each end
//! serialises and parses these types, so a field renamed on one side breaks the build of
//! the other, not a college's sync. The batch envelope and the receipt are in `batch`.

use serde::{Deserialize, Serialize};

/// `POST /v1/enrolments`: the agent's public key and BIN with the registry's one-time code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrolmentRequest {
    pub code: String,
    pub college_bin: String,
    /// The Ed25519 public key, base64url without padding.
    pub public_key: String,
}

/// The registry's answer to an enrolment: the agent's id and the key that signs receipts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrolmentAnswer {
    pub agent: String,
    pub college_bin: String,
    /// base64url without padding.
    pub registry_key: String,
    /// The agent's name in the registry's agents zone, when the registry runs one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
}

/// `POST /v1/names`: what an agent asks the registry to publish under its name, signed
/// with its key as a compact JWS (typ `kasip-name-update`). `None` leaves a part as it
/// is; an empty list clears it. `iat` and the random `jti` make a captured update
/// useless: the registry takes each `jti` once, within `MAX_SKEW_SECS` of its clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NameUpdate {
    /// The agent's id (its enrolment thumbprint).
    pub agent: String,
    /// The name the update is for; absent on an agent's first update, before it knows
    /// its name. An agent may update only its own college's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// The LAN addresses the agent serves on (IPv4 or IPv6, private or loopback).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub addresses: Option<Vec<String>>,
    /// The `_acme-challenge` TXT values of the name (DNS-01, RFC 8555 §8.4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acme_challenge: Option<Vec<String>>,
    pub iat: i64,
    pub jti: String,
}

impl NameUpdate {
    /// Addresses one name may carry: a college's agent serves on a few interfaces.
    pub const MAX_ADDRESSES: usize = 8;
    /// Challenge values one name may carry at once (an order and a retry overlapping).
    pub const MAX_CHALLENGES: usize = 4;

    /// Parses a signed update's payload and checks what it asks to publish: addresses a
    /// LAN's phones could reach, DNS-01 values of the right shape. The signature, the
    /// clock and the name are the registry's to check. Err: the sentence for a 400.
    pub fn parse(payload: &[u8]) -> Result<Self, String> {
        let update: Self = serde_json::from_slice(payload)
            .map_err(|error| format!("not a name update: {error}"))?;
        if let Some(addresses) = &update.addresses {
            if addresses.len() > Self::MAX_ADDRESSES {
                return Err(format!(
                    "{} addresses: at most {}",
                    addresses.len(),
                    Self::MAX_ADDRESSES
                ));
            }
            for address in addresses {
                publishable_address(address)?;
            }
        }
        if let Some(values) = &update.acme_challenge {
            if values.len() > Self::MAX_CHALLENGES {
                return Err(format!(
                    "{} challenge values: at most {}",
                    values.len(),
                    Self::MAX_CHALLENGES
                ));
            }
            if let Some(bad) = values.iter().find(|value| !is_dns01_value(value)) {
                return Err(format!(
                    "'{bad}' is not a DNS-01 value (43 base64url characters)"
                ));
            }
        }
        Ok(update)
    }

    /// The addresses to publish, parsed (`parse` checked each).
    pub fn parsed_addresses(&self) -> Option<Vec<std::net::IpAddr>> {
        self.addresses.as_ref().map(|addresses| {
            addresses
                .iter()
                .filter_map(|address| publishable_address(address).ok())
                .collect()
        })
    }
}

/// A reported address that a LAN's phones could reach: unicast and specified.
pub fn publishable_address(address: &str) -> Result<std::net::IpAddr, String> {
    use std::net::IpAddr;
    let parsed: IpAddr = address
        .parse()
        .map_err(|_| format!("'{address}' is not an IPv4 or IPv6 address"))?;
    let usable = match parsed {
        IpAddr::V4(v4) => {
            !(v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast() || v4.is_link_local())
        }
        IpAddr::V6(v6) => {
            !(v6.is_unspecified() || v6.is_multicast() || (v6.segments()[0] & 0xffc0) == 0xfe80)
        }
    };
    if usable {
        Ok(parsed)
    } else {
        Err(format!(
            "'{address}' cannot be published: not an address a phone on the LAN could reach"
        ))
    }
}

/// A DNS-01 value: base64url (no padding) of a SHA-256, 43 characters.
pub fn is_dns01_value(value: &str) -> bool {
    value.len() == 43
        && value
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
}

/// The registry's answer to a `NameUpdate`: what its zone now publishes for the name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameRecords {
    pub hostname: String,
    pub addresses: Vec<String>,
    pub acme_challenge: Vec<String>,
}

/// `GET /v1/agents/{id}/checkpoint`: the last batch the registry holds from this agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub last_seq: u64,
    /// Empty when `last_seq` is 0.
    pub last_hash: String,
}

/// One entry of the registry's beneficiary list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListedStudent {
    pub iin: String,
    pub beneficiary: bool,
    pub voucher: String,
}

/// `GET /v1/colleges/{bin}/beneficiaries`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BeneficiaryList {
    pub college_bin: String,
    pub students: Vec<ListedStudent>,
}

/// 200/201 to a batch: the registry's signed receipt (a compact JWS).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptAnswer {
    pub receipt: String,
}

/// Every refusal of both APIs: a sentence, and for a chain conflict the seq expected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorAnswer {
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_seq: Option<u64>,
}

/// `POST /v1/heartbeats`, as the JWS payload signed by the agent's key (canonical
/// JSON): the attendance chain's head now. Sent every `sync.heartbeat_secs` while the
/// registry is reachable, batch or not, so history older than one heartbeat cannot be
/// rewritten unseen: every later batch must extend every head pinned here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    /// The agent's id (its enrolment thumbprint).
    pub agent: String,
    pub college_bin: String,
    /// Events in the attendance chain (= the last event's id; 0 before the first).
    pub events: u64,
    /// The last event's `chain_hash`; empty when `events` is 0.
    pub head: String,
    /// The agent's clock when it sent this (Unix seconds).
    pub at: i64,
    /// The chain or tally does not verify on the agent: it reports the break itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broken: Option<String>,
}

/// The registry's answer to a heartbeat: its own clock, which the agent's `doctor`
/// compares with the agent's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatAnswer {
    pub registry_time: i64,
}

/// `GET /v1/colleges/{bin}/policy`: the national rules for a college, as the JWS
/// payload signed by the registry's key. The agent may only be stricter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub college_bin: String,
    /// The share of a group's present marks that must come from QR (thousandths).
    pub min_coverage: u64,
    /// The share of a student's present marks from QR for them to count as tracked.
    pub student_qr_share: u64,
    /// Whether a typed code counts as a QR mark.
    pub typed_counts_as_qr: bool,
    /// Whether only passkey-verified check-ins count as QR marks for this college
    /// (`kasip-registry require-passkey`); absent in policies issued before it.
    #[serde(default)]
    pub qr_requires_passkey: bool,
    /// The college's licensed addresses (its sites must be at one of them).
    pub licensed_addresses: Vec<String>,
    /// When the registry issued this (Unix seconds).
    pub issued_at: i64,
}

/// The answer to `GET /v1/colleges/{bin}/policy`: a compact JWS over `Policy` by the
/// registry's key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedPolicy {
    pub policy: String,
}

/// `POST /kiosk/enroll`: the one-time code the admin read out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KioskEnrolRequest {
    pub code: String,
}

/// Where an enrolled kiosk stands, as the agent describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KioskPlace {
    /// `room` or `entrance`.
    pub kind: String,
    #[serde(default)]
    pub room: String,
    #[serde(default)]
    pub site: String,
    pub description: String,
}

/// The agent's answer to a kiosk's enrolment: its id, its credential (shown once) and
/// the pass freshness window it must apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KioskEnrolAnswer {
    pub kiosk_id: i64,
    pub credential: String,
    pub place: KioskPlace,
    pub pass_window_secs: i64,
}

/// A student as a kiosk needs them to decide offline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassHolder {
    pub iin: String,
    pub name: String,
    pub active: bool,
    /// base64url uncompressed P-256 points.
    pub keys: Vec<String>,
}

/// `GET /kiosk/keys`: every student with a current pass key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassKeyList {
    pub kiosk_id: i64,
    pub generated_at: i64,
    pub pass_window_secs: i64,
    pub students: Vec<PassHolder>,
}

/// One scan as a kiosk uploads it, before any decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadedScan {
    pub id: String,
    pub pass: String,
    pub scanned_at: i64,
}

/// `POST /kiosk/scans`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanUpload {
    pub scans: Vec<UploadedScan>,
}

/// What the agent decided for one uploaded scan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanAnswer {
    pub id: String,
    /// `marked`, `presence`, `no_lesson` or `refused`.
    pub outcome: String,
    /// A refusal's code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub student: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lesson_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeated: Option<bool>,
}

/// The answer to an upload, in the upload's order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanAnswers {
    pub results: Vec<ScanAnswer>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_updates_publish_only_reachable_addresses_and_dns01_values() {
        for good in [
            "192.168.1.20",
            "10.0.0.5",
            "127.0.0.1",
            "fd00::5",
            "2001:db8::1",
        ] {
            assert!(publishable_address(good).is_ok(), "{good}");
        }
        for bad in [
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "169.254.1.1",
            "::",
            "ff02::1",
            "fe80::1",
            "host.example",
            "192.168.1",
            "",
        ] {
            assert!(publishable_address(bad).is_err(), "{bad}");
        }
        assert!(is_dns01_value(
            "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"
        ));
        for bad in [
            "",
            "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX",
            "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0=",
            "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjE\"X0",
            "LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjE X0",
        ] {
            assert!(!is_dns01_value(bad), "{bad}");
        }
        let update = |fields: &str| {
            NameUpdate::parse(format!(r#"{{"agent":"a","iat":1,"jti":"j"{fields}}}"#).as_bytes())
        };
        assert!(update("").is_ok());
        assert!(update(r#","addresses":["10.0.0.1","fd00::1"]"#).is_ok());
        for (fields, says) in [
            (
                r#","addresses":["10.0.0.1","10.0.0.1","10.0.0.1","10.0.0.1","10.0.0.1","10.0.0.1","10.0.0.1","10.0.0.1","10.0.0.1"]"#,
                "at most 8",
            ),
            (r#","addresses":["0.0.0.0"]"#, "cannot be published"),
            (r#","acme_challenge":["x"]"#, "DNS-01"),
            (r#","ttl":1"#, "not a name update"),
            (r#","addresses":"10.0.0.1""#, "not a name update"),
        ] {
            let refused = update(fields).expect_err(fields);
            assert!(refused.contains(says), "{fields}: {refused}");
        }
    }

    #[test]
    fn answers_read_what_the_other_end_wrote_and_hostile_bodies_are_refused() {
        let answer = ScanAnswer {
            id: "s-1".into(),
            outcome: "refused".into(),
            reason: Some("replayed_pass".into()),
            student: None,
            event_id: None,
            lesson_id: None,
            repeated: None,
        };
        let text = serde_json::to_string(&answer).expect("json");
        assert_eq!(
            text,
            r#"{"id":"s-1","outcome":"refused","reason":"replayed_pass"}"#
        );
        assert_eq!(
            serde_json::from_str::<ScanAnswer>(&text).expect("parse"),
            answer
        );
        for hostile in [
            r#"{"college_bin":"090640001233","students":[{"iin":"1","beneficiary":"yes","voucher":""}]}"#,
            r#"{"college_bin":"090640001233","students":[],"extra":1}"#,
            r#"{"college_bin":5,"students":[]}"#,
            "",
            "[]",
        ] {
            assert!(
                serde_json::from_str::<BeneficiaryList>(hostile).is_err(),
                "{hostile}"
            );
        }
        assert!(serde_json::from_str::<Checkpoint>(r#"{"last_seq":-1,"last_hash":""}"#).is_err());
    }
}

/// One student's active passkey in the registry's key directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasskeyEntry {
    pub iin: String,
    /// The WebAuthn credential id, base64url.
    pub credential_id: String,
    /// The credential's COSE_Key as enrolled, base64url.
    pub public_key: String,
    pub registered_at: i64,
}

/// The passkeys of a college's students, as the registry signs them for its agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasskeyDirectory {
    pub college_bin: String,
    /// The relying party every passkey was made for: the registry's domain.
    pub rp_id: String,
    pub keys: Vec<PasskeyEntry>,
    pub issued_at: i64,
}

/// `GET /v1/colleges/{bin}/passkeys`: a compact JWS over `PasskeyDirectory` by the
/// registry's key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedPasskeyDirectory {
    pub directory: String,
}

/// `POST /v1/passkeys/options`: the student's IIN and the one-time code proving it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasskeyStart {
    pub iin: String,
    pub code: String,
}

/// Its answer: what the page hands to `navigator.credentials.create`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PasskeyOptions {
    pub ceremony: String,
    pub rp_id: String,
    pub rp_name: String,
    /// The WebAuthn user handle (random, not the IIN), base64url.
    pub user_id: String,
    pub user_name: String,
    pub challenge: String,
    pub algorithms: Vec<i64>,
}

/// `POST /v1/passkeys`: the browser's registration, base64url.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasskeyFinish {
    pub ceremony: String,
    pub client_data_json: String,
    pub attestation_object: String,
}
