//! JWS compact serialisation (RFC 7515) with Ed25519, for batches and statements sent to
//! the registry (design §5.4).
//!
//! The header is `{"alg":"Ed25519","kid":<RFC 7638 thumbprint>}`: `Ed25519` is RFC 9864's
//! fully-specified name, which deprecates RFC 8037's `EdDSA`. Verification takes the
//! algorithm from the key it is given, never from the header; the header may only name
//! Ed25519 under either spelling.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::signature::{UnparsedPublicKey, ED25519};

use crate::DeviceKey;

/// Largest JWS accepted for verification: a 5,000-record batch is well under 4 MiB.
pub const MAX_JWS_BYTES: usize = 32 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwsError {
    #[error("the JWS is larger than {MAX_JWS_BYTES} bytes")]
    TooLarge,
    #[error("a compact JWS has exactly three base64url parts separated by dots")]
    NotCompact,
    #[error("the JWS {0} is not valid base64url without padding")]
    Base64(&'static str),
    #[error("the JWS header is not a JSON object")]
    Header,
    #[error("the JWS header names algorithm {0:?}; only Ed25519 (or EdDSA) is accepted")]
    Algorithm(String),
    #[error("the signature does not verify under the enrolled key")]
    BadSignature,
}

/// The protected header of this agent's JWS, in canonical (RFC 8785) form.
pub fn protected_header(key: &DeviceKey) -> String {
    format!(r#"{{"alg":"Ed25519","kid":"{}"}}"#, key.thumbprint())
}

/// Signs `payload` under `header_json` and returns the compact serialisation.
pub fn sign_compact(key: &DeviceKey, header_json: &str, payload: &[u8]) -> String {
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header_json.as_bytes()),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let signature = key.sign(signing_input.as_bytes());
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// A JWS whose signature verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedJws {
    pub header: serde_json::Map<String, serde_json::Value>,
    pub payload: Vec<u8>,
}

/// Verifies a compact JWS under a raw 32-byte Ed25519 public key.
pub fn verify_compact(jws: &str, public_key: &[u8]) -> Result<VerifiedJws, JwsError> {
    if jws.len() > MAX_JWS_BYTES {
        return Err(JwsError::TooLarge);
    }
    let mut parts = jws.split('.');
    let (Some(header_part), Some(payload_part), Some(signature_part), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwsError::NotCompact);
    };
    let header_bytes = URL_SAFE_NO_PAD
        .decode(header_part)
        .map_err(|_| JwsError::Base64("header"))?;
    let payload = URL_SAFE_NO_PAD
        .decode(payload_part)
        .map_err(|_| JwsError::Base64("payload"))?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature_part)
        .map_err(|_| JwsError::Base64("signature"))?;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&header_bytes).map_err(|_| JwsError::Header)?;
    match header.get("alg").and_then(|alg| alg.as_str()) {
        Some("Ed25519" | "EdDSA") => {}
        other => return Err(JwsError::Algorithm(other.unwrap_or("(none)").to_owned())),
    }
    let signing_input_length = header_part.len() + 1 + payload_part.len();
    UnparsedPublicKey::new(&ED25519, public_key)
        .verify(&jws.as_bytes()[..signing_input_length], &signature)
        .map_err(|_| JwsError::BadSignature)?;
    Ok(VerifiedJws { header, payload })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device_key::rfc8037_key;

    /// RFC 8037 appendix A.4, the whole compact JWS.
    const RFC8037_JWS: &str = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc.hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg";

    #[test]
    fn rfc8037_example_signs_and_verifies() {
        let key = rfc8037_key();
        assert_eq!(
            sign_compact(&key, r#"{"alg":"EdDSA"}"#, b"Example of Ed25519 signing"),
            RFC8037_JWS
        );
        let verified = verify_compact(RFC8037_JWS, key.public_key()).expect("A.5 verifies");
        assert_eq!(verified.payload, b"Example of Ed25519 signing");
    }

    #[test]
    fn our_header_names_the_key() {
        let key = rfc8037_key();
        let header = protected_header(&key);
        assert_eq!(
            header,
            r#"{"alg":"Ed25519","kid":"kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"}"#
        );
        let jws = sign_compact(&key, &header, b"{}");
        let verified = verify_compact(&jws, key.public_key()).expect("verifies");
        assert_eq!(
            verified.header["kid"],
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
    }

    #[test]
    fn tampering_and_hostile_input_are_refused() {
        let key = rfc8037_key();
        let other = DeviceKey::from_seed(&[7u8; 32]).expect("seed");
        assert_eq!(
            verify_compact(RFC8037_JWS, other.public_key()),
            Err(JwsError::BadSignature)
        );
        let altered_payload = RFC8037_JWS.replacen(".RXhh", ".RXhi", 1);
        assert_eq!(
            verify_compact(&altered_payload, key.public_key()),
            Err(JwsError::BadSignature)
        );
        // "alg":"none" and HMAC headers are refused before any signature check.
        let none = sign_compact(&key, r#"{"alg":"none"}"#, b"x");
        assert_eq!(
            verify_compact(&none, key.public_key()),
            Err(JwsError::Algorithm("none".into()))
        );
        let hmac = sign_compact(&key, r#"{"alg":"HS256"}"#, b"x");
        assert!(matches!(
            verify_compact(&hmac, key.public_key()),
            Err(JwsError::Algorithm(_))
        ));
        for garbage in [
            "",
            "a.b",
            "a.b.c.d",
            "!!!.e30.AA",
            "e30.e30.!!",
            "W10.e30.AA",
        ] {
            assert!(
                verify_compact(garbage, key.public_key()).is_err(),
                "{garbage:?}"
            );
        }
        assert_eq!(
            verify_compact("e30.e30.AA", b"short key"),
            Err(JwsError::Algorithm("(none)".into()))
        );
    }
}
