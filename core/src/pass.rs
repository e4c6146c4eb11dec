//! The student pass (design §5.3): `KP1.{student}.{unix_time}.{sig}` shown as a QR on the
//! student's bound phone and read by a kiosk.
//!
//! `sig` is the raw r‖s ECDSA P-256/SHA-256 signature (64 bytes, base64url without
//! padding) over everything before the last dot, made in the browser with a
//! non-extractable WebCrypto key whose public half the agent registered at binding.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_FIXED};

use crate::Iin;

const PREFIX: &str = "KP1.";
/// r‖s of P-256.
const SIGNATURE_BYTES: usize = 64;
/// base64url without padding of 64 bytes.
const SIGNATURE_CHARS: usize = 86;
/// An uncompressed SEC1 point: 0x04 ‖ x ‖ y.
const PUBLIC_KEY_BYTES: usize = 65;
/// Longest pass text we read: a QR holding more is not ours.
pub const MAX_PASS_CHARS: usize = 4 + 12 + 1 + 12 + 1 + SIGNATURE_CHARS;

/// Why a pass was refused. Each maps to a message on the kiosk screen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PassError {
    #[error("not a student pass")]
    Malformed,
    #[error("the pass's signature does not match a key registered for this student")]
    Forged,
    #[error("the pass is {age_secs} s old; open the pass page again")]
    Stale { age_secs: i64 },
    #[error("the pass is {ahead_secs} s ahead of the kiosk's clock")]
    FromTheFuture { ahead_secs: i64 },
}

/// A pass public key: an uncompressed P-256 point as WebCrypto exports it (`raw`).
#[derive(Clone, PartialEq, Eq)]
pub struct PassPublicKey([u8; PUBLIC_KEY_BYTES]);

impl PassPublicKey {
    /// Checks the shape only; whether the point is on the curve shows when a signature
    /// verifies under it (registration demands one).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, PassError> {
        let array: [u8; PUBLIC_KEY_BYTES] = bytes.try_into().map_err(|_| PassError::Malformed)?;
        if array[0] != 0x04 {
            return Err(PassError::Malformed);
        }
        Ok(Self(array))
    }

    /// From base64url (with or without padding), as the phone and the kiosk list send it.
    pub fn from_base64url(text: &str) -> Result<Self, PassError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(text.trim_end_matches('='))
            .map_err(|_| PassError::Malformed)?;
        Self::from_bytes(&bytes)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn to_base64url(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }
}

impl std::fmt::Debug for PassPublicKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "PassPublicKey({})", self.to_base64url())
    }
}

/// A parsed, not yet verified, student pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StudentPass {
    pub student: Iin,
    /// When the phone signed it (unix seconds, the phone's clock).
    pub signed_at: i64,
    signature: [u8; SIGNATURE_BYTES],
    /// Everything before the last dot: what the signature covers.
    signed_text: String,
}

impl StudentPass {
    /// Parses the exact text of a pass QR. Anything else is `Malformed`.
    pub fn parse(text: &str) -> Result<Self, PassError> {
        if text.len() > MAX_PASS_CHARS || !text.is_ascii() {
            return Err(PassError::Malformed);
        }
        let rest = text.strip_prefix(PREFIX).ok_or(PassError::Malformed)?;
        let mut parts = rest.split('.');
        let (Some(student), Some(time), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(PassError::Malformed);
        };
        let student = Iin::parse(student).map_err(|_| PassError::Malformed)?;
        // Digits only: no sign, no leading zeros, at most 12 digits (year 33658).
        let canonical_time = !time.is_empty()
            && time.len() <= 12
            && time.bytes().all(|byte| byte.is_ascii_digit())
            && (time == "0" || !time.starts_with('0'));
        if !canonical_time {
            return Err(PassError::Malformed);
        }
        let signed_at: i64 = time.parse().map_err(|_| PassError::Malformed)?;
        if signature.len() != SIGNATURE_CHARS {
            return Err(PassError::Malformed);
        }
        let signature: [u8; SIGNATURE_BYTES] = URL_SAFE_NO_PAD
            .decode(signature)
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or(PassError::Malformed)?;
        let signed_text = format!("{PREFIX}{}.{time}", student.as_string());
        Ok(Self {
            student,
            signed_at,
            signature,
            signed_text,
        })
    }

    /// The text of a pass for `student` at `signed_at` before its signature.
    pub fn signed_text_for(student: &Iin, signed_at: i64) -> String {
        format!("{PREFIX}{}.{signed_at}", student.as_string())
    }

    /// The full pass text from its parts (used by tests and the reference signer).
    pub fn assemble(student: &Iin, signed_at: i64, signature: &[u8]) -> String {
        format!(
            "{}.{}",
            Self::signed_text_for(student, signed_at),
            URL_SAFE_NO_PAD.encode(signature)
        )
    }

    /// The signature's bytes: what a replay cache or a scan id may key on.
    pub fn signature(&self) -> &[u8] {
        &self.signature
    }

    /// Whether the signature verifies under any of `keys`.
    pub fn verify_signature<'a>(&self, keys: impl IntoIterator<Item = &'a PassPublicKey>) -> bool {
        keys.into_iter().any(|key| {
            UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, key.as_bytes())
                .verify(self.signed_text.as_bytes(), &self.signature)
                .is_ok()
        })
    }

    /// |now − signed_at| ≤ window.
    pub fn check_fresh(&self, now: i64, window_secs: i64) -> Result<(), PassError> {
        let clamp = |value: i128| value.clamp(0, i128::from(i64::MAX)) as i64;
        let age = i128::from(now) - i128::from(self.signed_at);
        if age > i128::from(window_secs) {
            return Err(PassError::Stale {
                age_secs: clamp(age),
            });
        }
        if -age > i128::from(window_secs) {
            return Err(PassError::FromTheFuture {
                ahead_secs: clamp(-age),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

    const STUDENT: &str = "900101300017";

    fn key_pair() -> EcdsaKeyPair {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .expect("generate a P-256 key");
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .expect("load the key")
    }

    fn student() -> Iin {
        Iin::parse(STUDENT).expect("a valid IIN")
    }

    fn sign(pair: &EcdsaKeyPair, signed_at: i64) -> String {
        let text = StudentPass::signed_text_for(&student(), signed_at);
        let signature = pair
            .sign(&SystemRandom::new(), text.as_bytes())
            .expect("sign");
        StudentPass::assemble(&student(), signed_at, signature.as_ref())
    }

    fn public(pair: &EcdsaKeyPair) -> PassPublicKey {
        PassPublicKey::from_bytes(pair.public_key().as_ref()).expect("an uncompressed point")
    }

    #[test]
    fn a_signed_pass_verifies_under_its_key_only() {
        let pair = key_pair();
        let other = key_pair();
        let text = sign(&pair, 1_790_000_000);
        let pass = StudentPass::parse(&text).expect("parses");
        assert_eq!(pass.student, student());
        assert_eq!(pass.signed_at, 1_790_000_000);
        assert!(pass.verify_signature([&public(&pair)]));
        assert!(!pass.verify_signature([&public(&other)]));
        assert!(pass.verify_signature([&public(&other), &public(&pair)]));
        assert!(!pass.verify_signature([]));
    }

    #[test]
    fn changing_any_signed_field_breaks_the_signature() {
        let pair = key_pair();
        let text = sign(&pair, 1_790_000_000);
        let later = text.replace(".1790000000.", ".1790000001.");
        let pass = StudentPass::parse(&later).expect("still well-formed");
        assert!(!pass.verify_signature([&public(&pair)]));
        let other_student = text.replace(STUDENT, "850515400012");
        if let Ok(pass) = StudentPass::parse(&other_student) {
            assert!(!pass.verify_signature([&public(&pair)]));
        }
    }

    #[test]
    fn freshness_window_both_ways() {
        let pair = key_pair();
        let pass = StudentPass::parse(&sign(&pair, 1000)).expect("parses");
        assert_eq!(pass.check_fresh(1030, 30), Ok(()));
        assert_eq!(pass.check_fresh(970, 30), Ok(()));
        assert_eq!(
            pass.check_fresh(1031, 30),
            Err(PassError::Stale { age_secs: 31 })
        );
        assert_eq!(
            pass.check_fresh(969, 30),
            Err(PassError::FromTheFuture { ahead_secs: 31 })
        );
        assert!(pass.check_fresh(i64::MIN, 30).is_err());
        assert!(pass.check_fresh(i64::MAX, 30).is_err());
    }

    #[test]
    fn hostile_texts_are_malformed_never_a_panic() {
        let pair = key_pair();
        let good = sign(&pair, 1_790_000_000);
        let signature = good.rsplit('.').next().expect("has a signature");
        let cases = [
            String::new(),
            "KP1".into(),
            "KP1.".into(),
            "KP2.900101300017.1790000000.".to_owned() + signature,
            format!("kp1.{STUDENT}.1790000000.{signature}"),
            format!("KP1.{STUDENT}.1790000000.{signature}.extra"),
            format!("KP1.{STUDENT}.1790000000"),
            format!("KP1.900101300018.1790000000.{signature}"), // bad check digit
            format!("KP1.{STUDENT}.-1790000000.{signature}"),
            format!("KP1.{STUDENT}.+1790000000.{signature}"),
            format!("KP1.{STUDENT}.01790000000.{signature}"),
            format!("KP1.{STUDENT}.9999999999999.{signature}"),
            format!("KP1.{STUDENT}..{signature}"),
            format!("KP1.{STUDENT}.1790000000.{}", &signature[1..]),
            format!("KP1.{STUDENT}.1790000000.{signature}A"),
            format!("KP1.{STUDENT}.1790000000.{}=", &signature[..85]),
            format!("KP1.{STUDENT}.1790000000.+{}", &signature[1..]), // not base64url
            format!("KP1.{STUDENT}.１７９.{signature}"),
            format!("KP1.{STUDENT}.1790000000.{}", "!".repeat(86)),
            "KP1.".to_owned() + &"9".repeat(10_000),
            format!("http://x/KP1.{STUDENT}.1790000000.{signature}"),
        ];
        for case in &cases {
            assert_eq!(
                StudentPass::parse(case),
                Err(PassError::Malformed),
                "{case:?}"
            );
        }
    }

    #[test]
    fn public_keys_must_be_uncompressed_points() {
        let pair = key_pair();
        let key = public(&pair);
        assert_eq!(
            PassPublicKey::from_base64url(&key.to_base64url()),
            Ok(key.clone())
        );
        assert!(PassPublicKey::from_bytes(&key.as_bytes()[..33]).is_err());
        let mut compressed_tag = key.as_bytes().to_vec();
        compressed_tag[0] = 0x02;
        assert!(PassPublicKey::from_bytes(&compressed_tag).is_err());
        assert!(PassPublicKey::from_base64url("not base64!").is_err());
        assert!(PassPublicKey::from_base64url("").is_err());
        // A point off the curve parses but verifies nothing.
        let mut off_curve = key.as_bytes().to_vec();
        off_curve[64] ^= 1;
        let off_curve = PassPublicKey::from_bytes(&off_curve).expect("shape is fine");
        let pass = StudentPass::parse(&sign(&pair, 5)).expect("parses");
        assert!(!pass.verify_signature([&off_curve]));
    }
}
