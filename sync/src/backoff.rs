//! Exponential backoff with full jitter, honouring the registry's Retry-After.
//!
//! There is no retry cap (design §5.4: uploads are idempotent by permanent keys), only a
//! cap on the wait between attempts, so an outage of weeks drains minutes after the
//! registry is back.

use std::time::Duration;

use ring::rand::{SecureRandom, SystemRandom};

/// The longest Retry-After obeyed: a registry asking for days is misconfigured, and an
/// hour keeps the outbox moving without hammering it.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    failures: u32,
    random: SystemRandom,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap: cap.max(base),
            failures: 0,
            random: SystemRandom::new(),
        }
    }

    /// Consecutive failures so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The wait before the next attempt after a failure: uniform in
    /// [0, min(cap, base · 2^failures)], and never shorter than `retry_after`.
    pub fn next_delay(&mut self, retry_after: Option<Duration>) -> Duration {
        let exponent = self.failures.min(30);
        self.failures = self.failures.saturating_add(1);
        let ceiling = self
            .base
            .saturating_mul(1u32 << exponent)
            .min(self.cap)
            .as_millis() as u64;
        let mut bytes = [0u8; 8];
        let random = match self.random.fill(&mut bytes) {
            Ok(()) => u64::from_le_bytes(bytes),
            Err(_) => ceiling / 2,
        };
        let jittered = Duration::from_millis(random % (ceiling + 1));
        match retry_after {
            Some(after) => jittered.max(after.min(MAX_RETRY_AFTER)),
            None => jittered,
        }
    }

    pub fn succeeded(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_cap_with_jitter_and_respect_retry_after() {
        let cap = Duration::from_secs(8);
        let mut backoff = Backoff::new(Duration::from_secs(1), cap);
        let mut longest = Duration::ZERO;
        for attempt in 0..40u32 {
            let delay = backoff.next_delay(None);
            let ceiling = Duration::from_secs(1u64 << attempt.min(3)).min(cap);
            assert!(
                delay <= ceiling,
                "attempt {attempt}: {delay:?} > {ceiling:?}"
            );
            longest = longest.max(delay);
        }
        assert!(longest > Duration::from_secs(2), "jitter spans the range");
        assert!(backoff.next_delay(Some(Duration::from_secs(5))) >= Duration::from_secs(5));
        // Retry-After beyond the cap is obeyed, up to an hour.
        assert_eq!(
            backoff.next_delay(Some(Duration::from_secs(20))),
            Duration::from_secs(20)
        );
        assert_eq!(
            backoff.next_delay(Some(Duration::from_secs(86_400))),
            MAX_RETRY_AFTER
        );
        backoff.succeeded();
        assert_eq!(backoff.failures(), 0);
        assert!(backoff.next_delay(None) <= Duration::from_secs(1));
    }
}
