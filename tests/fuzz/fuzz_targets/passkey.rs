//! WebAuthn as browsers and dishonest colleges send it (design §5.10): assertions as
//! they travel in a mark's evidence, registrations (client data and CBOR attestation
//! objects) and COSE keys. The first byte picks the parser; verification runs for real
//! under the W3C test vector's ES256 key.
#![no_main]

use kasip_core::passkey::{verify_registration, CoseKey, Expectation, PasskeyAssertion};
use libfuzzer_sys::fuzz_target;

/// The COSE key of W3C WebAuthn Level 3 §16.2 ("ES256 Credential with No Attestation").
const W3C_KEY: [u8; 77] = [
    0xa5, 0x01, 0x02, 0x03, 0x26, 0x20, 0x01, 0x21, 0x58, 0x20, 0xaf, 0xef, 0xa1, 0x6f, 0x97,
    0xca, 0x9b, 0x2d, 0x23, 0xeb, 0x86, 0xcc, 0xb6, 0x40, 0x98, 0xd2, 0x0d, 0xb9, 0x08, 0x56,
    0x06, 0x2e, 0xb2, 0x49, 0xc3, 0x3a, 0x9b, 0x67, 0x2f, 0x26, 0xdf, 0x61, 0x22, 0x58, 0x20,
    0x93, 0x0a, 0x56, 0xb8, 0x7a, 0x2f, 0xca, 0x66, 0x33, 0x4b, 0x03, 0x45, 0x8a, 0xbf, 0x87,
    0x97, 0x17, 0xc1, 0x2c, 0xc6, 0x8e, 0xd7, 0x32, 0x90, 0xaf, 0x2e, 0x26, 0x64, 0x79, 0x6b,
    0x92, 0x20,
];

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let expected = Expectation {
        rp_id: "example.org",
        origin_host: "example.org",
        challenge: &[0x39; 32],
    };
    match mode % 3 {
        0 => {
            if let Ok(text) = std::str::from_utf8(rest) {
                if let Ok(assertion) = PasskeyAssertion::parse(text) {
                    let _ = assertion.verify(&W3C_KEY, &expected);
                    assert_eq!(PasskeyAssertion::parse(&assertion.to_text()), Ok(assertion));
                }
            }
        }
        1 => {
            let split = rest.len() / 2;
            let _ = verify_registration(&rest[..split], &rest[split..], &expected);
        }
        _ => {
            let _ = CoseKey::parse(rest);
        }
    }
});
