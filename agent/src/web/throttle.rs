//! Throttling of guesses: staff passwords, binding codes, typed classroom codes and kiosk
//! enrolment codes.
//!
//! Failures are counted per (target, client) and per client, never per target alone: an
//! outsider who fails against an account from their own address slows down only
//! themselves, so they cannot lock the rightful user out, and one client trying one
//! password on many accounts (spraying) meets its own limit. After a rule's free
//! failures each further one doubles the wait, up to the rule's cap; a client that
//! stops failing is forgotten after `FORGET_SECS`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// How many failures pass freely, and the longest wait after them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub free: u32,
    pub max_wait_secs: i64,
}

/// Sign-in: per account and client.
pub const SIGN_IN: Rule = Rule {
    free: 5,
    max_wait_secs: 900,
};
/// Sign-in and binding: per client, whatever the account (spraying).
pub const ANY_ACCOUNT: Rule = Rule {
    free: 20,
    max_wait_secs: 900,
};
/// A binding code: per student and client.
pub const BINDING: Rule = Rule {
    free: 5,
    max_wait_secs: 900,
};
/// Kiosk enrolment codes: per client.
pub const KIOSK_ENROLMENT: Rule = Rule {
    free: 5,
    max_wait_secs: 900,
};
/// Typed classroom codes: per phone (client and device). A code changes every few
/// seconds, so the wait stays short for a student who mistyped.
pub const TYPED_CODE: Rule = Rule {
    free: 10,
    max_wait_secs: 60,
};
/// Typed classroom codes: per client address, which a classroom behind one NAT shares.
pub const TYPED_CODE_ADDRESS: Rule = Rule {
    free: 100,
    max_wait_secs: 60,
};

/// A client quiet this long starts again from nothing.
pub const FORGET_SECS: i64 = 3600;
/// Entries kept at most; past this the quiet ones are dropped first (memory bound under
/// a flood from many addresses).
const MAX_ENTRIES: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    last_failure: i64,
}

/// The failures seen, by key; shared by every request.
#[derive(Default)]
pub struct Throttle {
    entries: Mutex<HashMap<String, Entry>>,
}

/// What one throttled attempt is counted under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key(String);

impl Key {
    /// `what` (a kind of attempt) against `target` (an account, a student) from `client`.
    pub fn target(what: &str, target: &str, client: &Client) -> Self {
        Self(format!(
            "{what}:{}@{}",
            target.trim().to_lowercase(),
            client.0
        ))
    }

    /// `what` from `client`, whatever the target.
    pub fn client(what: &str, client: &Client) -> Self {
        Self(format!("{what}@{}", client.0))
    }
}

/// Who is trying: the peer address, and the device cookie when one is useful.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client(String);

impl Client {
    pub fn address(address: IpAddr) -> Self {
        Self(address.to_string())
    }

    /// The address and a phone's own device identifier (phones behind one NAT differ).
    pub fn device(address: IpAddr, device: Option<&str>) -> Self {
        let device: String = device.unwrap_or("-").chars().take(64).collect();
        Self(format!("{address}/{device}"))
    }

    /// As it is stored with the security events it caused.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Throttle {
    /// Seconds `key` must still wait at `now` under `rule`; 0 lets it try.
    pub fn wait(&self, key: &Key, rule: Rule, now: i64) -> i64 {
        let entries = self.lock();
        let Some(entry) = entries.get(&key.0) else {
            return 0;
        };
        if entry.failures < rule.free || now - entry.last_failure >= FORGET_SECS {
            return 0;
        }
        let doublings = (entry.failures - rule.free).min(30);
        let wait = (1_i64 << doublings).min(rule.max_wait_secs);
        (entry.last_failure + wait - now).max(0)
    }

    /// The longest wait of several keys, each under its rule.
    pub fn wait_any(&self, keys: &[(&Key, Rule)], now: i64) -> i64 {
        keys.iter()
            .map(|(key, rule)| self.wait(key, *rule, now))
            .max()
            .unwrap_or(0)
    }

    pub fn failure(&self, key: &Key, now: i64) {
        let mut entries = self.lock();
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, entry| now - entry.last_failure < FORGET_SECS);
        }
        if entries.len() >= MAX_ENTRIES {
            // Still full of active flooders: the oldest half goes.
            let mut times: Vec<i64> = entries.values().map(|entry| entry.last_failure).collect();
            times.sort_unstable();
            let median = times[times.len() / 2];
            entries.retain(|_, entry| entry.last_failure > median);
        }
        let entry = entries.entry(key.0.clone()).or_insert(Entry {
            failures: 0,
            last_failure: now,
        });
        if now - entry.last_failure >= FORGET_SECS {
            entry.failures = 0;
        }
        entry.failures = entry.failures.saturating_add(1);
        entry.last_failure = now;
    }

    /// The rightful user got in: their own count starts again.
    pub fn success(&self, key: &Key) {
        self.lock().remove(&key.0);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// `response` (a 429 page or answer) telling the client when to try again.
pub fn throttled(
    mut response: axum::response::Response,
    wait_secs: i64,
) -> axum::response::Response {
    if let Ok(value) = axum::http::HeaderValue::from_str(&wait_secs.to_string()) {
        response
            .headers_mut()
            .insert(axum::http::header::RETRY_AFTER, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: Rule = Rule {
        free: 3,
        max_wait_secs: 8,
    };

    fn client(last: u8) -> Client {
        Client::address(IpAddr::from([127, 0, 0, last]))
    }

    #[test]
    fn waits_double_after_the_free_failures_up_to_the_cap() {
        let throttle = Throttle::default();
        let key = Key::target("login", "Admin", &client(1));
        let mut waits = Vec::new();
        for _ in 0..7 {
            throttle.failure(&key, 1000);
            waits.push(throttle.wait(&key, RULE, 1000));
        }
        assert_eq!(waits, [0, 0, 1, 2, 4, 8, 8]);
        assert_eq!(throttle.wait(&key, RULE, 1005), 3);
        assert_eq!(throttle.wait(&key, RULE, 1000 + FORGET_SECS), 0);
        throttle.success(&key);
        assert_eq!(throttle.wait(&key, RULE, 1000), 0);
    }

    #[test]
    fn another_client_is_not_slowed_by_an_attackers_failures() {
        let throttle = Throttle::default();
        let attacker = Key::target("login", "admin", &client(2));
        for _ in 0..50 {
            throttle.failure(&attacker, 1000);
        }
        assert!(throttle.wait(&attacker, RULE, 1000) > 0);
        let rightful = Key::target("login", " ADMIN ", &client(1));
        assert_eq!(throttle.wait(&rightful, RULE, 1000), 0);
    }

    #[test]
    fn a_flood_from_many_addresses_keeps_the_table_bounded() {
        let throttle = Throttle::default();
        for index in 0..(MAX_ENTRIES as u32 + 10) {
            let address = IpAddr::from(index.to_be_bytes());
            throttle.failure(
                &Key::client("typed", &Client::address(address)),
                1000 + i64::from(index),
            );
        }
        assert!(throttle.lock().len() <= MAX_ENTRIES);
    }
}
