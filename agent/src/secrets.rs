//! Secrets as the agent handles them: random tokens, their stored hashes, and the one
//! comparison allowed between secrets (constant-time, so timing tells nothing).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::digest::{digest, SHA256};
use ring::rand::{SecureRandom, SystemRandom};

/// The system's random source failed: nothing secret can be made.
#[derive(Debug, thiserror::Error)]
#[error("the system random number generator failed; nothing was changed")]
pub struct RandomUnavailable;

/// SHA-256 of a secret, as stored for credentials, codes and device identities.
pub fn secret_hash(secret: &str) -> Vec<u8> {
    digest(&SHA256, secret.as_bytes()).as_ref().to_vec()
}

/// `bytes` random bytes as base64url text.
pub fn random_token(bytes: usize) -> Result<String, RandomUnavailable> {
    let mut buffer = vec![0u8; bytes];
    SystemRandom::new()
        .fill(&mut buffer)
        .map_err(|_| RandomUnavailable)?;
    Ok(URL_SAFE_NO_PAD.encode(buffer))
}

/// Whether two secrets (or their hashes) are equal, in time that does not depend on
/// where they differ.
pub fn same_secret(left: &[u8], right: &[u8]) -> bool {
    kasip_core::constant_time_eq(left, right)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_hashes_compare_only_when_equal() {
        let first = random_token(32).expect("random");
        let second = random_token(32).expect("random");
        assert_ne!(first, second);
        assert_eq!(first.len(), 43);
        assert!(same_secret(&secret_hash(&first), &secret_hash(&first)));
        assert!(!same_secret(&secret_hash(&first), &secret_hash(&second)));
        assert!(!same_secret(b"abc", b"abcd"));
    }
}
