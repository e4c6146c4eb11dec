//! The student pass `KP1.{student}.{t}.{sig}` and pass public keys (design §5.3).
#![no_main]

use kasip_core::{PassPublicKey, StudentPass};
use libfuzzer_sys::fuzz_target;

/// A valid uncompressed P-256 point (the generator), so verification runs for real.
const GENERATOR: &str =
    "BGsX0fLhLEJH-Lzm5WOkQPJ3A32BLeszoPShOUXYmMKWT-NC4v4af5uO5-tKfA-eFivOM1drMV7Oy7ZAaDe_UfU";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = PassPublicKey::from_base64url(text);
    if let Ok(pass) = StudentPass::parse(text) {
        let key = PassPublicKey::from_base64url(GENERATOR).expect("the generator is a point");
        let _ = pass.verify_signature([&key]);
        let _ = pass.check_fresh(pass.signed_at, 30);
        let _ = pass.check_fresh(i64::MIN, 30);
    }
});
