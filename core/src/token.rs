//! The classroom token (design §5.1): `{lesson}.{step}.{tag}` in the QR a teacher shows,
//! and the 6-character typed code under it for cameras that cannot read the QR.
//!
//! `step = floor(unix_time / period)`; `tag` = base64url of HMAC-SHA256(lesson key,
//! "{lesson}.{step}") cut to 16 bytes. A token is valid for its step and the one before.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::hmac;

/// Bytes of HMAC kept in the tag: 128 bits resists forgery while keeping the QR small.
const TAG_BYTES: usize = 16;
/// base64url without padding of 16 bytes.
const TAG_CHARS: usize = 22;
/// Letters and digits a student can type without confusing 0/O or 1/I/L.
const TYPED_ALPHABET: &[u8; 30] = b"23456789ABCDEFGHJKMNPQRSTUVWXY";
pub const TYPED_CODE_CHARS: usize = 6;

/// Why a token was refused. Each maps to a message the student reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("not a classroom code")]
    Malformed,
    #[error("the code's signature does not match: it was not made by this college's agent")]
    Forged,
    #[error("the code expired {steps_old} rotations ago; scan the code on the screen now")]
    Stale { steps_old: u64 },
    #[error("the code is from the future; the agent's clock decides")]
    FromTheFuture,
}

/// A lesson's secret for minting tokens: random per opening of the lesson.
pub struct LessonKey(hmac::Key);

impl LessonKey {
    pub fn new(secret: &[u8]) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, secret))
    }

    fn mac(&self, message: &str) -> hmac::Tag {
        hmac::sign(&self.0, message.as_bytes())
    }
}

/// A parsed (not yet verified) classroom token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassroomToken {
    pub lesson: i64,
    pub step: u64,
    tag: [u8; TAG_BYTES],
}

/// The rotation step at `unix_time` for a period of `period_secs` (at least 1).
pub fn step_at(unix_time: i64, period_secs: u32) -> u64 {
    (unix_time.max(0) as u64) / u64::from(period_secs.max(1))
}

/// Equality whose time does not depend on where the inputs differ: for tags and
/// tokens an attacker may probe byte by byte.
pub fn constant_time_eq(left: &[u8], right: &[u8]) -> bool {
    left.len() == right.len()
        && left
            .iter()
            .zip(right)
            .fold(0u8, |difference, (a, b)| difference | (a ^ b))
            == 0
}

impl ClassroomToken {
    /// Mints the token of `lesson` at `step`.
    pub fn mint(key: &LessonKey, lesson: i64, step: u64) -> Self {
        let mac = key.mac(&format!("{lesson}.{step}"));
        let mut tag = [0u8; TAG_BYTES];
        tag.copy_from_slice(&mac.as_ref()[..TAG_BYTES]);
        Self { lesson, step, tag }
    }

    /// Parses the text after `/c/`. Refuses anything not exactly of the form, so a
    /// hostile URL never reaches the database.
    pub fn parse(text: &str) -> Result<Self, TokenError> {
        let mut parts = text.split('.');
        let (Some(lesson), Some(step), Some(tag), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let decimal = |part: &str| {
            (!part.is_empty() && part.len() <= 19 && part.bytes().all(|byte| byte.is_ascii_digit()))
                .then(|| part.parse::<u64>().ok())
                .flatten()
        };
        let lesson = decimal(lesson)
            .and_then(|lesson| i64::try_from(lesson).ok())
            .ok_or(TokenError::Malformed)?;
        let step = decimal(step).ok_or(TokenError::Malformed)?;
        if tag.len() != TAG_CHARS {
            return Err(TokenError::Malformed);
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| TokenError::Malformed)?;
        let tag: [u8; TAG_BYTES] = bytes.try_into().map_err(|_| TokenError::Malformed)?;
        Ok(Self { lesson, step, tag })
    }

    /// Checks the tag under `key` and freshness against the agent's current step: the
    /// current and the previous step are accepted.
    pub fn verify(&self, key: &LessonKey, current_step: u64) -> Result<(), TokenError> {
        let expected = Self::mint(key, self.lesson, self.step);
        if !constant_time_eq(&expected.tag, &self.tag) {
            return Err(TokenError::Forged);
        }
        if self.step > current_step {
            return Err(TokenError::FromTheFuture);
        }
        let steps_old = current_step - self.step;
        if steps_old > 1 {
            return Err(TokenError::Stale { steps_old });
        }
        Ok(())
    }
}

impl fmt::Display for ClassroomToken {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "{}.{}.{}",
            self.lesson,
            self.step,
            URL_SAFE_NO_PAD.encode(self.tag)
        )
    }
}

/// The typed fallback code of `lesson` at `step`: 6 characters from an unambiguous
/// alphabet, derived from the same key so it rotates and expires with the QR.
pub fn typed_code(key: &LessonKey, lesson: i64, step: u64) -> String {
    let mac = key.mac(&format!("typed.{lesson}.{step}"));
    let mut value = u64::from_be_bytes(
        mac.as_ref()[..8]
            .try_into()
            .unwrap_or_else(|_| unreachable!("an HMAC-SHA256 tag has 32 bytes")),
    );
    (0..TYPED_CODE_CHARS)
        .map(|_| {
            let index = (value % TYPED_ALPHABET.len() as u64) as usize;
            value /= TYPED_ALPHABET.len() as u64;
            char::from(TYPED_ALPHABET[index])
        })
        .collect()
}

/// Normalises what a student typed: upper case, no spaces; `None` if it cannot be a code.
pub fn normalise_typed_code(typed: &str) -> Option<String> {
    let code: String = typed
        .chars()
        .filter(|character| !character.is_whitespace() && *character != '-')
        .map(|character| character.to_ascii_uppercase())
        .collect();
    (code.len() == TYPED_CODE_CHARS && code.bytes().all(|byte| TYPED_ALPHABET.contains(&byte)))
        .then_some(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key() -> LessonKey {
        LessonKey::new(b"0123456789abcdef0123456789abcdef")
    }

    #[test]
    fn known_tag() {
        // HMAC-SHA256("0123456789abcdef0123456789abcdef", "42.177000000"), first 16
        // bytes, base64url — computed independently with Python's hmac module.
        let token = ClassroomToken::mint(&key(), 42, 177_000_000);
        assert_eq!(token.to_string(), format!("42.177000000.{}", PYTHON_TAG));
    }

    /// `python3 -c "import hmac,hashlib,base64;print(base64.urlsafe_b64encode(hmac.new(b'0123456789abcdef0123456789abcdef',b'42.177000000',hashlib.sha256).digest()[:16]).rstrip(b'=').decode())"`
    const PYTHON_TAG: &str = "OfydyuTdCMrsrjORxOprFg";

    #[test]
    fn window_is_current_and_previous_step_exactly() {
        let token = ClassroomToken::mint(&key(), 7, 1000);
        assert_eq!(token.verify(&key(), 1000), Ok(()));
        assert_eq!(token.verify(&key(), 1001), Ok(()));
        assert_eq!(
            token.verify(&key(), 1002),
            Err(TokenError::Stale { steps_old: 2 })
        );
        assert_eq!(token.verify(&key(), 999), Err(TokenError::FromTheFuture));
    }

    #[test]
    fn forged_and_foreign_tokens_are_refused() {
        let token = ClassroomToken::mint(&key(), 7, 1000);
        let other_key = LessonKey::new(b"another lesson's key");
        assert_eq!(token.verify(&other_key, 1000), Err(TokenError::Forged));
        // Same tag presented for another lesson id: the MAC covers the lesson.
        let moved =
            ClassroomToken::parse(&token.to_string().replacen("7.", "8.", 1)).expect("parses");
        assert_eq!(moved.verify(&key(), 1000), Err(TokenError::Forged));
    }

    #[test]
    fn step_arithmetic() {
        assert_eq!(step_at(1_770_000_009, 10), 177_000_000);
        assert_eq!(step_at(1_770_000_010, 10), 177_000_001);
        assert_eq!(step_at(-5, 10), 0);
        assert_eq!(step_at(5, 0), 5, "a zero period is treated as one second");
    }

    #[test]
    fn hostile_token_text_is_malformed() {
        for bad in [
            "",
            "1.2",
            "1.2.3.4",
            "a.1.AAAAAAAAAAAAAAAAAAAAAA",
            "1.-2.AAAAAAAAAAAAAAAAAAAAAA",
            "1.2.AAAAAAAAAAAAAAAAAAAAA",
            "1.2.AAAAAAAAAAAAAAAAAAAAAAA",
            "1.2.AAAAAAAAAAAAAAAAAAAA==",
            "99999999999999999999.1.AAAAAAAAAAAAAAAAAAAAAA",
            "1.2.AAAAAAAAAAAAAAAAAAAA/+",
            "1 .2.AAAAAAAAAAAAAAAAAAAAAA",
            "+1.2.AAAAAAAAAAAAAAAAAAAAAA",
        ] {
            assert_eq!(
                ClassroomToken::parse(bad),
                Err(TokenError::Malformed),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn typed_codes_rotate_and_normalise() {
        let now = typed_code(&key(), 7, 1000);
        assert_eq!(now.len(), TYPED_CODE_CHARS);
        assert_ne!(now, typed_code(&key(), 7, 1001));
        assert_ne!(now, typed_code(&key(), 8, 1000));
        let typed = format!(" {}-{} ", now[..3].to_lowercase(), &now[3..]);
        assert_eq!(normalise_typed_code(&typed), Some(now));
        assert_eq!(normalise_typed_code("O0I1L0"), None);
        assert_eq!(normalise_typed_code("ABCDEFG"), None);
    }

    proptest! {
        #[test]
        fn minted_tokens_round_trip(lesson in 0i64..i64::MAX, step in 0u64..10_000_000_000) {
            let token = ClassroomToken::mint(&key(), lesson, step);
            let parsed = ClassroomToken::parse(&token.to_string()).expect("round trip");
            prop_assert_eq!(&parsed, &token);
            prop_assert_eq!(parsed.verify(&key(), step), Ok(()));
        }

        #[test]
        fn parse_never_panics(text in "\\PC{0,64}") {
            let _ = ClassroomToken::parse(&text);
            let _ = normalise_typed_code(&text);
        }
    }
}
