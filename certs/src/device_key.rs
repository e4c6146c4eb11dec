//! The agent's Ed25519 identity key: generated once at `init`, kept in a 0600 PEM file.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};

/// Owner read/write only: the key never becomes readable by another account.
pub const KEY_FILE_MODE: u32 = 0o600;

const PEM_BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
const PEM_END: &str = "-----END PRIVATE KEY-----";

/// What went wrong with a key file. Messages never contain key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key file {path} already exists; refusing to overwrite an identity key")]
    AlreadyExists { path: PathBuf },
    #[error("cannot write key file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read key file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "key file {path} has mode {mode:04o}; it must be readable by its owner only: run `chmod 600 {path}`"
    )]
    TooOpen { path: PathBuf, mode: u32 },
    #[error(
        "key file {path} is not an Ed25519 PKCS#8 PEM key ({reason}); restore it from a backup"
    )]
    Malformed { path: PathBuf, reason: &'static str },
    #[error("the system random generator failed; the key was not created")]
    Random,
}

/// The agent's signing identity. Debug output shows the thumbprint, never the key.
pub struct DeviceKey {
    key_pair: Ed25519KeyPair,
}

impl std::fmt::Debug for DeviceKey {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("DeviceKey")
            .field("thumbprint", &self.thumbprint())
            .finish()
    }
}

impl DeviceKey {
    /// Generates a new key and writes it to `path` (mode 0600, never overwriting).
    pub fn generate_to(path: &Path) -> Result<Self, KeyError> {
        let pkcs8 =
            Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| KeyError::Random)?;
        let key_pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|_| KeyError::Random)?;
        let mut pem = String::from(PEM_BEGIN);
        pem.push('\n');
        let body = STANDARD.encode(pkcs8.as_ref());
        for line in body.as_bytes().chunks(64) {
            pem.push_str(&String::from_utf8_lossy(line));
            pem.push('\n');
        }
        pem.push_str(PEM_END);
        pem.push('\n');

        let write_error = |source| KeyError::Write {
            path: path.to_owned(),
            source,
        };
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(KEY_FILE_MODE)
            .open(path)
            .map_err(|source| {
                if source.kind() == std::io::ErrorKind::AlreadyExists {
                    KeyError::AlreadyExists {
                        path: path.to_owned(),
                    }
                } else {
                    write_error(source)
                }
            })?;
        file.write_all(pem.as_bytes()).map_err(write_error)?;
        file.sync_all().map_err(write_error)?;
        Ok(Self { key_pair })
    }

    /// Loads the key, refusing a file that group or others can read.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let read_error = |source| KeyError::Read {
            path: path.to_owned(),
            source,
        };
        let mode = fs::metadata(path).map_err(read_error)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::TooOpen {
                path: path.to_owned(),
                mode,
            });
        }
        let bytes = fs::read(path).map_err(read_error)?;
        let malformed = |reason| KeyError::Malformed {
            path: path.to_owned(),
            reason,
        };
        let text = std::str::from_utf8(&bytes).map_err(|_| malformed("not text"))?;
        let body: String = text
            .trim()
            .strip_prefix(PEM_BEGIN)
            .and_then(|rest| rest.strip_suffix(PEM_END))
            .ok_or_else(|| malformed("missing PEM armour"))?
            .split_whitespace()
            .collect();
        let der = STANDARD.decode(body).map_err(|_| malformed("bad base64"))?;
        let key_pair =
            Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).map_err(|_| malformed("bad DER"))?;
        Ok(Self { key_pair })
    }

    /// A key from a raw 32-byte seed, for test vectors.
    pub fn from_seed(seed: &[u8]) -> Option<Self> {
        Ed25519KeyPair::from_seed_unchecked(seed)
            .ok()
            .map(|key_pair| Self { key_pair })
    }

    /// The raw 32-byte public key.
    pub fn public_key(&self) -> &[u8] {
        self.key_pair.public_key().as_ref()
    }

    /// The public key as the `x` member of its JWK (base64url, no padding).
    pub fn public_key_base64url(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.public_key())
    }

    /// The RFC 7638 JWK thumbprint: the key's name in JWS headers and in the registry.
    pub fn thumbprint(&self) -> String {
        Self::thumbprint_of(self.public_key()).unwrap_or_default()
    }

    /// The thumbprint of a raw Ed25519 public key; None unless it is 32 bytes.
    pub fn thumbprint_of(public_key: &[u8]) -> Option<String> {
        if public_key.len() != 32 {
            return None;
        }
        // RFC 7638 §3.2: required members only, lexicographic order, no whitespace.
        let canonical_jwk = format!(
            r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
            URL_SAFE_NO_PAD.encode(public_key)
        );
        let digest = ring::digest::digest(&ring::digest::SHA256, canonical_jwk.as_bytes());
        Some(URL_SAFE_NO_PAD.encode(digest.as_ref()))
    }

    /// A public key as a PEM `PUBLIC KEY` (SubjectPublicKeyInfo), for auditors' tools.
    pub fn public_key_pem(public_key: &[u8]) -> String {
        // RFC 8410: SEQUENCE { SEQUENCE { OID 1.3.101.112 }, BIT STRING key }.
        let mut der = vec![
            0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
        ];
        der.extend_from_slice(public_key);
        let body = STANDARD.encode(der);
        let lines: Vec<&str> = body
            .as_bytes()
            .chunks(64)
            .filter_map(|chunk| std::str::from_utf8(chunk).ok())
            .collect();
        format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            lines.join("\n")
        )
    }

    /// Signs `message` (Ed25519 is deterministic: same key and message, same signature).
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.key_pair.sign(message).as_ref().to_vec()
    }
}

/// The key of RFC 8037 appendix A.1 (d = nWGxne_9…), for test vectors.
#[cfg(test)]
pub(crate) fn rfc8037_key() -> DeviceKey {
    let seed = URL_SAFE_NO_PAD
        .decode("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A")
        .expect("vector");
    DeviceKey::from_seed(&seed).expect("32-byte seed")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc8037_public_key_and_thumbprint() {
        let key = rfc8037_key();
        // Appendix A.2 (public key) and A.3 (thumbprint).
        assert_eq!(
            key.public_key_base64url(),
            "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
        );
        assert_eq!(
            key.thumbprint(),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
    }

    #[test]
    fn rfc8037_signature() {
        // Appendix A.4: signing "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc".
        let signature =
            rfc8037_key().sign(b"eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc");
        assert_eq!(
            URL_SAFE_NO_PAD.encode(signature),
            "hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg"
        );
    }

    #[test]
    fn generated_key_file_is_private_and_reloads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent-key.pem");
        let created = DeviceKey::generate_to(&path).expect("generate");
        let mode = fs::metadata(&path).expect("metadata").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let loaded = DeviceKey::load(&path).expect("load");
        assert_eq!(created.thumbprint(), loaded.thumbprint());
        assert!(format!("{loaded:?}").contains(&loaded.thumbprint()));
        assert!(matches!(
            DeviceKey::generate_to(&path),
            Err(KeyError::AlreadyExists { .. })
        ));
    }

    #[test]
    fn refuses_open_permissions_and_garbage() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent-key.pem");
        DeviceKey::generate_to(&path).expect("generate");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        let error = DeviceKey::load(&path).expect_err("0644 must be refused");
        assert!(error.to_string().contains("chmod 600"), "{error}");

        let garbage = dir.path().join("garbage.pem");
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&garbage)
            .and_then(|mut file| file.write_all(b"\x00\xffnot a key"))
            .expect("write");
        assert!(matches!(
            DeviceKey::load(&garbage),
            Err(KeyError::Malformed { .. })
        ));
    }
}
