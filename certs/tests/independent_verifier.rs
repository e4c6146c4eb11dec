//! What Rust signs, code we did not write verifies: Python's `cryptography` checks an
//! Ed25519 JWS made by `kasip_certs::jws` (design §6, cross-language).

use std::process::Command;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use kasip_certs::jws::{protected_header, sign_compact};
use kasip_certs::DeviceKey;

const VERIFIER: &str = r#"
import base64, sys
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.exceptions import InvalidSignature

def b64(part):
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))

jws, public_key = sys.argv[1], sys.argv[2]
header, payload, signature = jws.split(".")
try:
    Ed25519PublicKey.from_public_bytes(b64(public_key)).verify(b64(signature), (header + "." + payload).encode())
    print("valid", b64(payload).decode())
except InvalidSignature:
    print("invalid")
"#;

fn python_says(jws: &str, public_key: &str) -> String {
    let output = Command::new("python3")
        .args(["-c", VERIFIER, jws, public_key])
        .output()
        .expect("python3 runs (CI installs the cryptography package)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

#[test]
fn python_cryptography_verifies_what_rust_signs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = DeviceKey::generate_to(&dir.path().join("key.pem")).expect("key");
    let payload = r#"{"kind":"attendance","records":[],"seq":1}"#;
    let jws = sign_compact(&key, &protected_header(&key), payload.as_bytes());
    let public_key = key.public_key_base64url();
    assert_eq!(python_says(&jws, &public_key), format!("valid {payload}"));

    // A payload altered after signing fails in Python too.
    let forged_payload = URL_SAFE_NO_PAD.encode(r#"{"kind":"attendance","records":[],"seq":2}"#);
    let mut parts: Vec<&str> = jws.split('.').collect();
    parts[1] = &forged_payload;
    assert_eq!(python_says(&parts.join("."), &public_key), "invalid");
}
