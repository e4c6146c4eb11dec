//! The classroom token (design §5.1) and the typed code: any text parses to a token or
//! an error, never a panic, and a parsed token verifies or is refused.
#![no_main]

use kasip_core::{normalise_typed_code, ClassroomToken, LessonKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = normalise_typed_code(text);
    if let Ok(token) = ClassroomToken::parse(text) {
        let key = LessonKey::new(b"fuzzing key: 32 bytes of secret.");
        let _ = token.verify(&key, token.step);
        let _ = token.verify(&key, token.step.saturating_add(1));
        let _ = token.verify(&key, u64::MAX);
    }
});
