//! WebAuthn passkeys (design §5.10): a student's passkey is enrolled at the registry and
//! signs each QR check-in after the phone's own user verification. This module reads
//! what a browser sends (authenticator data, client data, attestation objects, COSE
//! keys) and verifies registrations and assertions with `ring`, for the registry (which
//! enrols the key and re-verifies every mark) and the agent (which verifies before it
//! records). The challenge of a check-in binds the college, the lesson, its date, the
//! token's step and the student, so an assertion counts for one mark only.

use base64::Engine;
use serde::Deserialize;

/// The COSE algorithms browsers use for passkeys, in the order offered at enrolment.
pub const ES256: i64 = -7;
pub const EDDSA: i64 = -8;
pub const RS256: i64 = -257;
pub const ALGORITHMS: [i64; 3] = [ES256, EDDSA, RS256];

const FLAG_USER_PRESENT: u8 = 0x01;
const FLAG_USER_VERIFIED: u8 = 0x04;
const FLAG_ATTESTED: u8 = 0x40;

/// Largest parts accepted; real ones are a few hundred bytes.
const MAX_CREDENTIAL_ID: usize = 1023;
const MAX_PART: usize = 4096;

/// Why a passkey registration or assertion does not hold. Each names what a person
/// checking the evidence would look at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasskeyError {
    #[error("the passkey data is malformed: {0}")]
    Malformed(&'static str),
    #[error("the client data is not a WebAuthn {0}")]
    WrongType(&'static str),
    #[error(
        "the assertion was made for another challenge (another lesson, step, date or student)"
    )]
    WrongChallenge,
    #[error("the assertion was made on another site ({0})")]
    WrongOrigin(String),
    #[error("the assertion was made for another relying party")]
    WrongRelyingParty,
    #[error("the authenticator did not see the user present")]
    NotUserPresent,
    #[error("the phone did not verify the user (fingerprint, face or PIN)")]
    NotUserVerified,
    #[error("the signature does not verify under the enrolled public key")]
    BadSignature,
    #[error("the public key is not one of ES256, EdDSA or RS256")]
    UnsupportedKey,
    #[error("no such passkey is enrolled")]
    UnknownCredential,
    #[error("the passkey is another student's")]
    AnotherStudents,
    #[error("the passkey was revoked before the mark was made")]
    Revoked,
    #[error("this passkey is already enrolled")]
    AlreadyEnrolled,
    #[error("the signature counter went back ({seen} after {last}): a cloned or replayed passkey")]
    CounterWentBack { seen: u32, last: u32 },
}

impl PasskeyError {
    /// A short stable name, for security events and findings.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed",
            Self::WrongType(_) => "wrong_type",
            Self::WrongChallenge => "wrong_challenge",
            Self::WrongOrigin(_) => "wrong_origin",
            Self::WrongRelyingParty => "wrong_relying_party",
            Self::NotUserPresent => "not_user_present",
            Self::NotUserVerified => "not_user_verified",
            Self::BadSignature => "bad_signature",
            Self::UnsupportedKey => "unsupported_key",
            Self::UnknownCredential => "unknown_credential",
            Self::AnotherStudents => "another_students",
            Self::Revoked => "revoked",
            Self::AlreadyEnrolled => "already_enrolled",
            Self::CounterWentBack { .. } => "counter_went_back",
        }
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn unb64(text: &str, what: &'static str) -> Result<Vec<u8>, PasskeyError> {
    if text.len() > MAX_PART * 4 / 3 + 4 {
        return Err(PasskeyError::Malformed(what));
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| PasskeyError::Malformed(what))
}

/// A check-in's challenge: SHA-256 over the college, the lesson, its date, the token's
/// rotation step and the student. The registry recomputes it from the record.
pub fn check_in_challenge(
    college_bin: &str,
    lesson: u64,
    date: &str,
    step: u64,
    iin: &str,
) -> [u8; 32] {
    let text = format!("KASIP-PASSKEY-1\n{college_bin}\n{lesson}\n{date}\n{step}\n{iin}");
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// What the verifier expects of a ceremony: the RP ID (the registry's domain), the host
/// the page was served from, and the challenge.
#[derive(Debug, Clone, Copy)]
pub struct Expectation<'a> {
    pub rp_id: &'a str,
    pub origin_host: &'a str,
    pub challenge: &'a [u8],
}

/// A credential's public key as COSE_Key bytes, as enrolled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoseKey {
    algorithm: i64,
    /// ES256: the uncompressed point; EdDSA: the 32-byte key; RS256: (n, e).
    material: KeyMaterial,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum KeyMaterial {
    Point(Vec<u8>),
    Ed25519(Vec<u8>),
    Rsa { n: Vec<u8>, e: Vec<u8> },
}

impl CoseKey {
    /// Parses COSE_Key bytes (RFC 9053) of a supported algorithm.
    pub fn parse(bytes: &[u8]) -> Result<Self, PasskeyError> {
        let (value, rest) = cbor::item(bytes, 0)?;
        if !rest.is_empty() {
            return Err(PasskeyError::Malformed("bytes after the COSE key"));
        }
        Self::from_value(&value)
    }

    fn from_value(value: &cbor::Value<'_>) -> Result<Self, PasskeyError> {
        let int = |label: i128| value.get_int(label).and_then(|v| v.as_int());
        let bytes = |label: i128| {
            value
                .get_int(label)
                .and_then(|v| v.as_bytes())
                .ok_or(PasskeyError::Malformed("a COSE key lacks a coordinate"))
        };
        let kty = int(1).ok_or(PasskeyError::Malformed("a COSE key without kty"))?;
        let alg = int(3).ok_or(PasskeyError::Malformed("a COSE key without alg"))?;
        let material = match (kty, alg) {
            (2, -7) => {
                if int(-1) != Some(1) {
                    return Err(PasskeyError::UnsupportedKey);
                }
                let (x, y) = (bytes(-2)?, bytes(-3)?);
                if x.len() != 32 || y.len() != 32 {
                    return Err(PasskeyError::Malformed(
                        "a P-256 coordinate is not 32 bytes",
                    ));
                }
                let mut point = Vec::with_capacity(65);
                point.push(4);
                point.extend_from_slice(x);
                point.extend_from_slice(y);
                KeyMaterial::Point(point)
            }
            (1, -8) => {
                if int(-1) != Some(6) {
                    return Err(PasskeyError::UnsupportedKey);
                }
                let x = bytes(-2)?;
                if x.len() != 32 {
                    return Err(PasskeyError::Malformed("an Ed25519 key is not 32 bytes"));
                }
                KeyMaterial::Ed25519(x.to_vec())
            }
            (3, -257) => KeyMaterial::Rsa {
                n: bytes(-1)?.to_vec(),
                e: bytes(-2)?.to_vec(),
            },
            _ => return Err(PasskeyError::UnsupportedKey),
        };
        Ok(Self {
            algorithm: alg as i64,
            material,
        })
    }

    pub fn algorithm(&self) -> i64 {
        self.algorithm
    }

    fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), PasskeyError> {
        use ring::signature;
        let verified = match &self.material {
            KeyMaterial::Point(point) => {
                signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_ASN1, point)
                    .verify(message, signature)
            }
            KeyMaterial::Ed25519(key) => {
                signature::UnparsedPublicKey::new(&signature::ED25519, key)
                    .verify(message, signature)
            }
            KeyMaterial::Rsa { n, e } => signature::RsaPublicKeyComponents { n, e }.verify(
                &signature::RSA_PKCS1_2048_8192_SHA256,
                message,
                signature,
            ),
        };
        verified.map_err(|_| PasskeyError::BadSignature)
    }
}

/// What the flags must show. Every ceremony here requires user verification; the
/// W3C's published vectors were made without it, so their test asks for presence only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Required {
    UserVerified,
    #[cfg(test)]
    UserPresent,
}

/// Authenticator data (WebAuthn §6.1), borrowed from the bytes it was read from.
struct AuthenticatorData<'a> {
    rp_id_hash: &'a [u8],
    flags: u8,
    sign_count: u32,
    /// For registrations: the credential id and its COSE key bytes.
    attested: Option<(&'a [u8], &'a [u8])>,
}

impl<'a> AuthenticatorData<'a> {
    fn parse(bytes: &'a [u8]) -> Result<Self, PasskeyError> {
        if bytes.len() < 37 {
            return Err(PasskeyError::Malformed(
                "authenticator data shorter than 37 bytes",
            ));
        }
        let flags = bytes[32];
        let sign_count = u32::from_be_bytes([bytes[33], bytes[34], bytes[35], bytes[36]]);
        let attested = if flags & FLAG_ATTESTED != 0 {
            let rest = &bytes[37..];
            if rest.len() < 18 {
                return Err(PasskeyError::Malformed(
                    "attested credential data is cut short",
                ));
            }
            let length = usize::from(u16::from_be_bytes([rest[16], rest[17]]));
            if length > MAX_CREDENTIAL_ID || rest.len() < 18 + length {
                return Err(PasskeyError::Malformed("the credential id is cut short"));
            }
            let id = &rest[18..18 + length];
            let key_and_more = &rest[18 + length..];
            let (_, after_key) = cbor::item(key_and_more, 0)?;
            let key = &key_and_more[..key_and_more.len() - after_key.len()];
            Some((id, key))
        } else {
            None
        };
        Ok(Self {
            rp_id_hash: &bytes[..32],
            flags,
            sign_count,
            attested,
        })
    }

    fn check(&self, rp_id: &str, required: Required) -> Result<(), PasskeyError> {
        let expected = ring::digest::digest(&ring::digest::SHA256, rp_id.as_bytes());
        if self.rp_id_hash != expected.as_ref() {
            return Err(PasskeyError::WrongRelyingParty);
        }
        if self.flags & FLAG_USER_PRESENT == 0 {
            return Err(PasskeyError::NotUserPresent);
        }
        if required == Required::UserVerified && self.flags & FLAG_USER_VERIFIED == 0 {
            return Err(PasskeyError::NotUserVerified);
        }
        Ok(())
    }
}

#[derive(Deserialize)]
struct ClientData {
    #[serde(rename = "type")]
    kind: String,
    challenge: String,
    origin: String,
    #[serde(rename = "crossOrigin", default)]
    cross_origin: bool,
}

/// Checks collected client data: its type, challenge and origin (`https://HOST[:PORT]`
/// with exactly the expected host; not in a cross-origin frame).
fn check_client_data(
    json: &[u8],
    kind: &'static str,
    expected: &Expectation<'_>,
) -> Result<(), PasskeyError> {
    let data: ClientData = serde_json::from_slice(json)
        .map_err(|_| PasskeyError::Malformed("the client data is not WebAuthn JSON"))?;
    if data.kind != kind {
        return Err(PasskeyError::WrongType(kind));
    }
    if data.challenge != b64(expected.challenge) {
        return Err(PasskeyError::WrongChallenge);
    }
    let host = data
        .origin
        .strip_prefix("https://")
        .map(|rest| match rest.rsplit_once(':') {
            Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
                host
            }
            _ => rest,
        });
    if data.cross_origin || host != Some(expected.origin_host) {
        return Err(PasskeyError::WrongOrigin(
            data.origin.chars().take(100).collect(),
        ));
    }
    Ok(())
}

/// A credential the registry enrols.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCredential {
    pub credential_id: Vec<u8>,
    /// COSE_Key bytes, kept as enrolled.
    pub public_key: Vec<u8>,
    pub algorithm: i64,
    pub sign_count: u32,
}

/// Verifies a registration (`navigator.credentials.create`): client data of type
/// `webauthn.create` for the challenge and origin, authenticator data for the RP ID with
/// user presence and verification, and a credential with a supported key. The
/// attestation statement is not checked: the registry asks for none (it trusts the
/// person, proven by eGov or the one-time code, not the authenticator's maker).
pub fn verify_registration(
    client_data_json: &[u8],
    attestation_object: &[u8],
    expected: &Expectation<'_>,
) -> Result<NewCredential, PasskeyError> {
    registration(
        client_data_json,
        attestation_object,
        expected,
        Required::UserVerified,
    )
}

fn registration(
    client_data_json: &[u8],
    attestation_object: &[u8],
    expected: &Expectation<'_>,
    required: Required,
) -> Result<NewCredential, PasskeyError> {
    check_client_data(client_data_json, "webauthn.create", expected)?;
    let (object, rest) = cbor::item(attestation_object, 0)?;
    if !rest.is_empty() {
        return Err(PasskeyError::Malformed(
            "bytes after the attestation object",
        ));
    }
    let auth_data = object
        .get_text("authData")
        .and_then(|value| value.as_bytes())
        .ok_or(PasskeyError::Malformed(
            "the attestation object has no authData",
        ))?;
    let data = AuthenticatorData::parse(auth_data)?;
    data.check(expected.rp_id, required)?;
    let (id, key) = data.attested.ok_or(PasskeyError::Malformed(
        "the registration has no credential",
    ))?;
    let parsed = CoseKey::parse(key)?;
    Ok(NewCredential {
        credential_id: id.to_vec(),
        public_key: key.to_vec(),
        algorithm: parsed.algorithm(),
        sign_count: data.sign_count,
    })
}

/// A WebAuthn assertion as it travels in a mark's evidence: the credential id, the
/// authenticator data, the client data JSON and the signature, each base64url, joined
/// by dots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasskeyAssertion {
    pub credential_id: Vec<u8>,
    pub authenticator_data: Vec<u8>,
    pub client_data_json: Vec<u8>,
    pub signature: Vec<u8>,
}

impl PasskeyAssertion {
    pub fn parse(text: &str) -> Result<Self, PasskeyError> {
        let mut parts = text.split('.');
        let mut next = |what| {
            parts
                .next()
                .ok_or(PasskeyError::Malformed("an assertion has four parts"))
                .and_then(|part| unb64(part, what))
        };
        let assertion = Self {
            credential_id: next("the credential id is not base64url")?,
            authenticator_data: next("the authenticator data is not base64url")?,
            client_data_json: next("the client data is not base64url")?,
            signature: next("the signature is not base64url")?,
        };
        if parts.next().is_some() {
            return Err(PasskeyError::Malformed("an assertion has four parts"));
        }
        if assertion.credential_id.is_empty() || assertion.credential_id.len() > MAX_CREDENTIAL_ID {
            return Err(PasskeyError::Malformed("the credential id's length"));
        }
        Ok(assertion)
    }

    pub fn to_text(&self) -> String {
        format!(
            "{}.{}.{}.{}",
            b64(&self.credential_id),
            b64(&self.authenticator_data),
            b64(&self.client_data_json),
            b64(&self.signature)
        )
    }

    /// Verifies the assertion under the enrolled COSE key: client data (type
    /// `webauthn.get`, challenge, origin), RP ID hash, user presence and verification, and
    /// the signature over the authenticator data and the client data's hash. Returns the
    /// signature counter; the caller compares it with the last one it saw
    /// (`counter_advances`).
    pub fn verify(
        &self,
        public_key: &[u8],
        expected: &Expectation<'_>,
    ) -> Result<u32, PasskeyError> {
        self.verify_requiring(public_key, expected, Required::UserVerified)
    }

    fn verify_requiring(
        &self,
        public_key: &[u8],
        expected: &Expectation<'_>,
        required: Required,
    ) -> Result<u32, PasskeyError> {
        let key = CoseKey::parse(public_key)?;
        check_client_data(&self.client_data_json, "webauthn.get", expected)?;
        let data = AuthenticatorData::parse(&self.authenticator_data)?;
        data.check(expected.rp_id, required)?;
        let client_hash = ring::digest::digest(&ring::digest::SHA256, &self.client_data_json);
        let mut signed = self.authenticator_data.clone();
        signed.extend_from_slice(client_hash.as_ref());
        key.verify(&signed, &self.signature)?;
        Ok(data.sign_count)
    }
}

/// WebAuthn's counter rule: authenticators that keep no counter send 0 every time;
/// otherwise each assertion's counter exceeds the last.
pub fn counter_advances(last: u32, seen: u32) -> Result<(), PasskeyError> {
    if (seen != 0 || last != 0) && seen <= last {
        return Err(PasskeyError::CounterWentBack { seen, last });
    }
    Ok(())
}

/// A software ES256 authenticator, for tests and benchmarks: it makes the bytes a
/// phone's authenticator makes (registrations and assertions with chosen flags and
/// counters), from a new key or an imported PKCS#8 one (e.g. exported by WebDriver from
/// Chromium's virtual authenticator). Never in a product build.
#[cfg(any(test, feature = "software-authenticator"))]
pub mod software {
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};

    use super::{b64, PasskeyAssertion};

    enum Key {
        Es256(EcdsaKeyPair),
        Ed25519(Ed25519KeyPair),
    }

    pub const USER_PRESENT: u8 = super::FLAG_USER_PRESENT;
    pub const USER_VERIFIED: u8 = super::FLAG_USER_VERIFIED;
    pub const PRESENT_AND_VERIFIED: u8 = USER_PRESENT | USER_VERIFIED;

    pub struct SoftwareAuthenticator {
        key: Key,
        pub credential_id: Vec<u8>,
        rp_id: String,
    }

    fn head(out: &mut Vec<u8>, major: u8, value: usize) {
        let major = major << 5;
        match value {
            0..=23 => out.push(major | value as u8),
            24..=0xff => out.extend([major | 24, value as u8]),
            _ => {
                out.push(major | 25);
                out.extend((value as u16).to_be_bytes());
            }
        }
    }

    fn bytes(out: &mut Vec<u8>, major: u8, data: &[u8]) {
        head(out, major, data.len());
        out.extend_from_slice(data);
    }

    impl SoftwareAuthenticator {
        pub fn generate(credential_id: &[u8], rp_id: &str) -> Self {
            let pkcs8 =
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &SystemRandom::new())
                    .expect("a P-256 key");
            Self::from_pkcs8(pkcs8.as_ref(), credential_id, rp_id)
        }

        pub fn from_pkcs8(pkcs8: &[u8], credential_id: &[u8], rp_id: &str) -> Self {
            let key = EcdsaKeyPair::from_pkcs8(
                &ECDSA_P256_SHA256_ASN1_SIGNING,
                pkcs8,
                &SystemRandom::new(),
            )
            .expect("a PKCS#8 P-256 key");
            Self {
                key: Key::Es256(key),
                credential_id: credential_id.to_vec(),
                rp_id: rp_id.to_owned(),
            }
        }

        /// An EdDSA (Ed25519) authenticator.
        pub fn generate_ed25519(credential_id: &[u8], rp_id: &str) -> Self {
            let pkcs8 =
                Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("an Ed25519 key");
            Self {
                key: Key::Ed25519(Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("key")),
                credential_id: credential_id.to_vec(),
                rp_id: rp_id.to_owned(),
            }
        }

        /// The public key as COSE_Key bytes.
        pub fn cose_key(&self) -> Vec<u8> {
            match &self.key {
                Key::Es256(key) => {
                    let point = key.public_key().as_ref();
                    // {1: 2 (EC2), 3: -7 (ES256), -1: 1 (P-256), -2: x, -3: y}
                    let mut cose = vec![0xa5, 0x01, 0x02, 0x03, 0x26, 0x20, 0x01, 0x21];
                    bytes(&mut cose, 2, &point[1..33]);
                    cose.push(0x22);
                    bytes(&mut cose, 2, &point[33..]);
                    cose
                }
                Key::Ed25519(key) => {
                    // {1: 1 (OKP), 3: -8 (EdDSA), -1: 6 (Ed25519), -2: x}
                    let mut cose = vec![0xa4, 0x01, 0x01, 0x03, 0x27, 0x20, 0x06, 0x21];
                    bytes(&mut cose, 2, key.public_key().as_ref());
                    cose
                }
            }
        }

        fn authenticator_data(&self, flags: u8, count: u32, attested: bool) -> Vec<u8> {
            let mut data = ring::digest::digest(&ring::digest::SHA256, self.rp_id.as_bytes())
                .as_ref()
                .to_vec();
            data.push(flags | if attested { super::FLAG_ATTESTED } else { 0 });
            data.extend(count.to_be_bytes());
            if attested {
                data.extend([0u8; 16]);
                data.extend((self.credential_id.len() as u16).to_be_bytes());
                data.extend(&self.credential_id);
                data.extend(self.cose_key());
            }
            data
        }

        pub fn client_data(kind: &str, challenge: &[u8], origin: &str) -> Vec<u8> {
            format!(
                r#"{{"type":"{kind}","challenge":"{}","origin":"{origin}","crossOrigin":false}}"#,
                b64(challenge)
            )
            .into_bytes()
        }

        /// A registration with attestation "none": (client data JSON, attestation object).
        pub fn register(&self, challenge: &[u8], origin: &str, flags: u8) -> (Vec<u8>, Vec<u8>) {
            let client = Self::client_data("webauthn.create", challenge, origin);
            let mut object = vec![0xa3];
            bytes(&mut object, 3, b"fmt");
            bytes(&mut object, 3, b"none");
            bytes(&mut object, 3, b"attStmt");
            object.push(0xa0);
            bytes(&mut object, 3, b"authData");
            bytes(&mut object, 2, &self.authenticator_data(flags, 0, true));
            (client, object)
        }

        /// An assertion over `challenge` made on a page of `origin`.
        pub fn assert(
            &self,
            challenge: &[u8],
            origin: &str,
            flags: u8,
            count: u32,
        ) -> PasskeyAssertion {
            let client = Self::client_data("webauthn.get", challenge, origin);
            let data = self.authenticator_data(flags, count, false);
            let mut signed = data.clone();
            signed.extend(ring::digest::digest(&ring::digest::SHA256, &client).as_ref());
            let signature = match &self.key {
                Key::Es256(key) => key
                    .sign(&SystemRandom::new(), &signed)
                    .expect("sign")
                    .as_ref()
                    .to_vec(),
                Key::Ed25519(key) => key.sign(&signed).as_ref().to_vec(),
            };
            PasskeyAssertion {
                credential_id: self.credential_id.clone(),
                authenticator_data: data,
                client_data_json: client,
                signature,
            }
        }
    }
}

/// The subset of CBOR (RFC 8949) that WebAuthn uses: definite lengths, integers, byte
/// and text strings, arrays, maps, simple values. Bounded in depth and by the input.
mod cbor {
    use super::PasskeyError;

    const MAX_DEPTH: usize = 8;

    #[derive(Debug, Clone, PartialEq)]
    pub enum Value<'a> {
        Int(i128),
        Bytes(&'a [u8]),
        Text(&'a str),
        Array(Vec<Value<'a>>),
        Map(Vec<(Value<'a>, Value<'a>)>),
        Simple(u8),
        Float,
    }

    impl<'a> Value<'a> {
        pub fn as_int(&self) -> Option<i128> {
            match self {
                Value::Int(value) => Some(*value),
                _ => None,
            }
        }

        pub fn as_bytes(&self) -> Option<&'a [u8]> {
            match self {
                Value::Bytes(bytes) => Some(bytes),
                _ => None,
            }
        }

        fn get(&self, matches: impl Fn(&Value<'a>) -> bool) -> Option<&Value<'a>> {
            match self {
                Value::Map(entries) => entries
                    .iter()
                    .find(|(key, _)| matches(key))
                    .map(|(_, value)| value),
                _ => None,
            }
        }

        pub fn get_int(&self, label: i128) -> Option<&Value<'a>> {
            self.get(|key| *key == Value::Int(label))
        }

        pub fn get_text(&self, label: &str) -> Option<&Value<'a>> {
            self.get(|key| *key == Value::Text(label))
        }
    }

    fn malformed() -> PasskeyError {
        PasskeyError::Malformed("not the CBOR WebAuthn uses")
    }

    /// Reads one item; returns it and the bytes after it.
    pub fn item(bytes: &[u8], depth: usize) -> Result<(Value<'_>, &[u8]), PasskeyError> {
        if depth > MAX_DEPTH {
            return Err(malformed());
        }
        let (&first, rest) = bytes.split_first().ok_or_else(malformed)?;
        let major = first >> 5;
        let info = first & 0x1f;
        let (argument, mut rest) = match info {
            0..=23 => (u64::from(info), rest),
            24..=27 => {
                let width = 1usize << (info - 24);
                if rest.len() < width {
                    return Err(malformed());
                }
                let value = rest[..width]
                    .iter()
                    .fold(0u64, |value, byte| (value << 8) | u64::from(*byte));
                (value, &rest[width..])
            }
            _ => return Err(malformed()),
        };
        let length = |rest: &[u8]| -> Result<usize, PasskeyError> {
            usize::try_from(argument)
                .ok()
                .filter(|length| *length <= rest.len())
                .ok_or_else(malformed)
        };
        let value = match major {
            0 => Value::Int(i128::from(argument)),
            1 => Value::Int(-1 - i128::from(argument)),
            2 => {
                let length = length(rest)?;
                let (taken, after) = rest.split_at(length);
                rest = after;
                Value::Bytes(taken)
            }
            3 => {
                let length = length(rest)?;
                let (taken, after) = rest.split_at(length);
                rest = after;
                Value::Text(std::str::from_utf8(taken).map_err(|_| malformed())?)
            }
            4 => {
                // Each item takes at least one byte: a count beyond the input is a lie.
                let count = length(rest)?;
                let mut items = Vec::with_capacity(count);
                for _ in 0..count {
                    let (value, after) = item(rest, depth + 1)?;
                    items.push(value);
                    rest = after;
                }
                Value::Array(items)
            }
            5 => {
                let count = length(rest)?;
                let mut entries = Vec::with_capacity(count);
                for _ in 0..count {
                    let (key, after) = item(rest, depth + 1)?;
                    let (value, after) = item(after, depth + 1)?;
                    entries.push((key, value));
                    rest = after;
                }
                Value::Map(entries)
            }
            6 => {
                // A tag: the tagged item stands for itself here.
                return item(rest, depth + 1);
            }
            _ => match info {
                0..=24 => Value::Simple(argument as u8),
                25..=27 => Value::Float,
                _ => return Err(malformed()),
            },
        };
        Ok((value, rest))
    }
}

#[cfg(test)]
mod tests {
    use super::software::SoftwareAuthenticator as Authenticator;
    use super::*;

    const RP: &str = "kasip.test";
    const HOST: &str = "c1.agents.kasip.test";
    const ORIGIN: &str = "https://c1.agents.kasip.test:8443";

    const UP_UV: u8 = FLAG_USER_PRESENT | FLAG_USER_VERIFIED;

    fn challenge() -> [u8; 32] {
        check_in_challenge("090640001233", 7, "2026-12-04", 880_000, "020304500017")
    }

    fn expect(challenge: &[u8]) -> Expectation<'_> {
        Expectation {
            rp_id: RP,
            origin_host: HOST,
            challenge,
        }
    }

    #[test]
    fn a_registration_then_an_assertion_verify_for_each_algorithm() {
        for authenticator in [
            Authenticator::generate(b"es256-credential", RP),
            Authenticator::generate_ed25519(b"ed25519-credential", RP),
        ] {
            let enrol_challenge = [9u8; 32];
            let (client, object) =
                authenticator.register(&enrol_challenge, "https://kasip.test", UP_UV);
            let enrolled = verify_registration(
                &client,
                &object,
                &Expectation {
                    rp_id: RP,
                    origin_host: RP,
                    challenge: &enrol_challenge,
                },
            )
            .expect("registration");
            assert_eq!(enrolled.credential_id, authenticator.credential_id);
            let challenge = challenge();
            let assertion = authenticator.assert(&challenge, ORIGIN, UP_UV, 5);
            let text = assertion.to_text();
            let parsed = PasskeyAssertion::parse(&text).expect("parse");
            assert_eq!(parsed, assertion);
            assert_eq!(
                parsed.verify(&enrolled.public_key, &expect(&challenge)),
                Ok(5)
            );
        }
    }

    #[test]
    fn every_refusal_names_its_reason() {
        let authenticator = Authenticator::generate(b"es256-credential", RP);
        let key = authenticator.cose_key();
        let right = challenge();
        let verify = |assertion: &PasskeyAssertion| assertion.verify(&key, &expect(&right));

        let no_uv = authenticator.assert(&right, ORIGIN, FLAG_USER_PRESENT, 1);
        assert_eq!(verify(&no_uv), Err(PasskeyError::NotUserVerified));

        let other_lesson =
            check_in_challenge("090640001233", 8, "2026-12-04", 880_000, "020304500017");
        let replayed = authenticator.assert(&other_lesson, ORIGIN, UP_UV, 2);
        assert_eq!(verify(&replayed), Err(PasskeyError::WrongChallenge));
        let other_step =
            check_in_challenge("090640001233", 7, "2026-12-04", 880_001, "020304500017");
        assert_ne!(other_step, right);

        let someone_else = Authenticator::generate(b"es256-credential", RP);
        let theirs = someone_else.assert(&right, ORIGIN, UP_UV, 3);
        assert_eq!(verify(&theirs), Err(PasskeyError::BadSignature));

        let mut tampered = authenticator.assert(&right, ORIGIN, UP_UV, 4);
        tampered.client_data_json = String::from_utf8(tampered.client_data_json)
            .expect("utf8")
            .replace("\"crossOrigin\":false", "\"crossOrigin\":false ")
            .into_bytes();
        assert_eq!(verify(&tampered), Err(PasskeyError::BadSignature));

        let mut wrong_origin = authenticator.assert(&right, ORIGIN, UP_UV, 5);
        wrong_origin.client_data_json =
            Authenticator::client_data("webauthn.get", &right, "https://evil.example");
        assert!(matches!(
            verify(&wrong_origin),
            Err(PasskeyError::WrongOrigin(_))
        ));

        let mut create_type = authenticator.assert(&right, ORIGIN, UP_UV, 6);
        create_type.client_data_json =
            Authenticator::client_data("webauthn.create", &right, &format!("https://{HOST}"));
        assert_eq!(
            verify(&create_type),
            Err(PasskeyError::WrongType("webauthn.get"))
        );

        let elsewhere = Authenticator::generate(b"es256-credential", "evil.example");
        let other_rp = elsewhere.assert(&right, ORIGIN, UP_UV, 7);
        assert_eq!(verify(&other_rp), Err(PasskeyError::WrongRelyingParty));

        // A signature from no authenticator at all.
        let mut forged = authenticator.assert(&right, ORIGIN, UP_UV, 8);
        forged.signature = vec![0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01];
        assert_eq!(verify(&forged), Err(PasskeyError::BadSignature));
    }

    #[test]
    fn a_registration_without_user_verification_is_refused() {
        let authenticator = Authenticator::generate_ed25519(b"ed25519-credential", RP);
        let challenge = [1u8; 32];
        let (client, object) =
            authenticator.register(&challenge, "https://kasip.test", FLAG_USER_PRESENT);
        let expectation = Expectation {
            rp_id: RP,
            origin_host: RP,
            challenge: &challenge,
        };
        assert_eq!(
            verify_registration(&client, &object, &expectation),
            Err(PasskeyError::NotUserVerified)
        );
        let (client, object) = authenticator.register(&[2u8; 32], "https://kasip.test", UP_UV);
        assert_eq!(
            verify_registration(&client, &object, &expectation),
            Err(PasskeyError::WrongChallenge)
        );
    }

    #[test]
    fn counters_only_go_forward_unless_the_authenticator_keeps_none() {
        assert!(counter_advances(0, 0).is_ok());
        assert!(counter_advances(4, 5).is_ok());
        assert!(counter_advances(5, 5).is_err());
        assert!(counter_advances(5, 0).is_err());
    }

    /// W3C WebAuthn Level 3 §16.2, "ES256 Credential with No Attestation": the
    /// registration and the assertion as the specification publishes them (made
    /// elsewhere, by the W3C's script). Their flags carry user presence but not user
    /// verification: verified in full with presence required, and refused for the
    /// missing verification by the functions this product calls.
    #[test]
    fn the_w3c_es256_test_vector_verifies() {
        let hex = |text: &str| -> Vec<u8> {
            (0..text.len())
                .step_by(2)
                .map(|at| u8::from_str_radix(&text[at..at + 2], 16).expect("hex"))
                .collect()
        };
        let registration_client = hex(concat!(
            "7b2274797065223a22776562617574686e2e637265617465222c226368616c6c656e6765223a2241",
            "4d4d507434557878475453746e63647134313759447742466938767049612d7077386f4f75565734",
            "5441222c226f726967696e223a2268747470733a2f2f6578616d706c652e6f7267222c2263726f73",
            "734f726967696e223a66616c73652c22657874726144617461223a22636c69656e74446174614a53",
            "4f4e206d617920626520657874656e6465642077697468206164646974696f6e616c206669656c64",
            "7320696e20746865206675747572652c207375636820617320746869733a20426b5165446a646354",
            "427258426941774a544c453551227d"
        ));
        let attestation_object = hex(concat!(
            "a363666d74646e6f6e656761747453746d74a068617574684461746158a4bfabc37432958b063360",
            "d3ad6461c9c4735ae7f8edd46592a5e0f01452b2e4b559000000008446ccb9ab1db374750b2367ff",
            "6f3a1f0020f91f391db4c9b2fde0ea70189cba3fb63f579ba6122b33ad94ff3ec330084be4a50102",
            "03262001215820afefa16f97ca9b2d23eb86ccb64098d20db90856062eb249c33a9b672f26df6122",
            "5820930a56b87a2fca66334b03458abf879717c12cc68ed73290af2e2664796b9220"
        ));
        let registration_challenge =
            hex("00c30fb78531c464d2b6771dab8d7b603c01162f2fa486bea70f283ae556e130");
        let at = |challenge| Expectation {
            rp_id: "example.org",
            origin_host: "example.org",
            challenge,
        };
        assert_eq!(
            verify_registration(
                &registration_client,
                &attestation_object,
                &at(&registration_challenge)
            ),
            Err(PasskeyError::NotUserVerified)
        );
        let enrolled = registration(
            &registration_client,
            &attestation_object,
            &at(&registration_challenge),
            Required::UserPresent,
        )
        .expect("the W3C registration");
        assert_eq!(enrolled.algorithm, ES256);
        assert_eq!(
            enrolled.credential_id,
            hex("f91f391db4c9b2fde0ea70189cba3fb63f579ba6122b33ad94ff3ec330084be4")
        );
        let assertion = PasskeyAssertion {
            credential_id: enrolled.credential_id.clone(),
            authenticator_data: hex(
                "bfabc37432958b063360d3ad6461c9c4735ae7f8edd46592a5e0f01452b2e4b51900000000",
            ),
            client_data_json: hex(concat!(
                "7b2274797065223a22776562617574686e2e676574222c226368616c6c656e6765223a224f63446e",
                "55685158756c5455506f334a5558543049393770767a7a59425039745a6368587961763031416722",
                "2c226f726967696e223a2268747470733a2f2f6578616d706c652e6f7267222c2263726f73734f72",
                "6967696e223a66616c73657d"
            )),
            signature: hex(concat!(
                "3046022100f50a4e2e4409249c4a853ba361282f09841df4dd4547a13a87780218deffcd38022100",
                "8480ac0f0b93538174f575bf11a1dd5d78c6e486013f937295ea13653e331e87"
            )),
        };
        let challenge = hex("39c0e7521417ba54d43e8dc95174f423dee9bf3cd804ff6d65c857c9abf4d408");
        assert_eq!(
            assertion.verify_requiring(
                &enrolled.public_key,
                &at(&challenge),
                Required::UserPresent
            ),
            Ok(0)
        );
        assert_eq!(
            assertion.verify(&enrolled.public_key, &at(&challenge)),
            Err(PasskeyError::NotUserVerified)
        );
        let mut flipped = assertion.clone();
        let last = flipped.signature.len() - 1;
        flipped.signature[last] ^= 1;
        assert_eq!(
            flipped.verify_requiring(&enrolled.public_key, &at(&challenge), Required::UserPresent),
            Err(PasskeyError::BadSignature)
        );
    }

    #[test]
    fn hostile_bytes_are_refused_without_panicking() {
        for text in [
            "",
            "a",
            "a.b.c",
            "a.b.c.d.e",
            "!!.b.c.d",
            "....",
            "AA.AA.AA.AA",
        ] {
            if let Ok(assertion) = PasskeyAssertion::parse(text) {
                assert!(assertion.verify(&[0xa0], &expect(&[0; 32])).is_err());
            }
        }
        let nested = [0x81u8; 64];
        assert!(CoseKey::parse(&nested).is_err());
        assert!(CoseKey::parse(&[0xbb, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(CoseKey::parse(&[0x9a, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(verify_registration(b"{}", &[0xa0], &expect(&[0; 32])).is_err());
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_parse_or_fail_cleanly(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let _ = CoseKey::parse(&bytes);
            let _ = AuthenticatorData::parse(&bytes);
            let _ = verify_registration(&bytes, &bytes, &expect(&[0; 32]));
        }
    }
}
