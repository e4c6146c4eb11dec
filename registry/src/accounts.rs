//! The registry's people: registrars (who pay colleges and read the evidence) and
//! auditors (who also judge findings). Passwords are argon2id; a session is a random
//! token in an HttpOnly, SameSite=Strict cookie, stored only as its SHA-256, with its
//! own CSRF token for every form that changes something.

use crate::db::{params, Db, DbResult};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use kasip_core::batch::sha256_hex;
use ring::rand::SecureRandom;

/// How long a session lasts without signing in again.
pub const SESSION_SECS: i64 = 12 * 3600;
/// The shortest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 10;

/// Wrong passwords a login may take within `FAILURE_WINDOW_SECS` before its sign-in is
/// refused until the window ends (without checking the password, so guessing stops).
pub const MAX_FAILURES: u32 = 5;
pub const FAILURE_WINDOW_SECS: i64 = 15 * 60;

/// Recent wrong passwords per login (lower case): (count, first failure). In memory: a
/// restart forgets them, which costs a guesser a restart of the registry.
#[derive(Debug, Default)]
pub struct Failures(std::collections::HashMap<String, (u32, i64)>);

impl Failures {
    /// Seconds until `login` may try again, if it may not now.
    pub fn locked_for(&mut self, login: &str, now: i64) -> Option<i64> {
        self.0
            .retain(|_, (_, first)| now - *first < FAILURE_WINDOW_SECS);
        let (count, first) = self.0.get(&login.to_lowercase())?;
        (*count >= MAX_FAILURES).then(|| first + FAILURE_WINDOW_SECS - now)
    }

    pub fn failed(&mut self, login: &str, now: i64) {
        let entry = self.0.entry(login.to_lowercase()).or_insert((0, now));
        entry.0 += 1;
    }

    pub fn succeeded(&mut self, login: &str) {
        self.0.remove(&login.to_lowercase());
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Reads every college's figures, findings and evidence.
    Registrar,
    /// A registrar who may also mark findings explained or confirmed.
    Auditor,
}

impl Role {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "registrar" => Some(Self::Registrar),
            "auditor" => Some(Self::Auditor),
            _ => None,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Registrar => "registrar",
            Self::Auditor => "auditor",
        }
    }
}

/// A signed-in person.
#[derive(Debug, Clone)]
pub struct Session {
    pub login: String,
    pub role: Role,
    /// Echoed by every form that changes something.
    pub csrf: String,
}

fn random_token() -> Option<String> {
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new().fill(&mut bytes).ok()?;
    Some(URL_SAFE_NO_PAD.encode(bytes))
}

/// An argon2id hash of `password` with a random salt; None if the system's random
/// generator failed.
pub fn hash_password(password: &str) -> Option<String> {
    let mut salt = [0u8; 16];
    ring::rand::SystemRandom::new().fill(&mut salt).ok()?;
    let salt = SaltString::encode_b64(&salt).ok()?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .ok()
        .map(|hash| hash.to_string())
}

/// Whether `password` is the one `stored` was made from. Slow on purpose (argon2):
/// call it off the store's lock.
pub fn password_matches(stored: &str, password: &str) -> bool {
    PasswordHash::new(stored).is_ok_and(|hash| {
        Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok()
    })
}

/// A hash of no password, checked against when the login does not exist, so that an
/// unknown login takes as long to refuse as a wrong password.
pub fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash_password("no such account").unwrap_or_default())
}

pub fn add_user(
    connection: &Db,
    login: &str,
    role: Role,
    password_hash: &str,
    now: i64,
) -> DbResult<()> {
    connection.execute(
        "INSERT INTO registry_users (login, role, password_hash, created_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (login) DO UPDATE SET role = ?2, password_hash = ?3",
        params![login, role.as_str(), password_hash, now],
    )?;
    // A new password ends the sessions made with the old one.
    connection.execute(
        "DELETE FROM registry_sessions WHERE login = ?1",
        params![login],
    )?;
    Ok(())
}

/// The stored hash and role of `login`.
pub fn credentials(connection: &Db, login: &str) -> DbResult<Option<(String, Role)>> {
    connection
        .query_opt(
            "SELECT password_hash, role FROM registry_users WHERE login = ?1",
            params![login],
            |row| Ok((row.get::<String>(0)?, row.get::<String>(1)?)),
        )
        .map(|found| found.and_then(|(hash, role)| Some((hash, Role::parse(&role)?))))
}

/// Opens a session for `login`; returns its cookie token. None if the random generator
/// failed.
pub fn open_session(connection: &Db, login: &str, now: i64) -> DbResult<Option<String>> {
    let (Some(token), Some(csrf)) = (random_token(), random_token()) else {
        return Ok(None);
    };
    connection.execute(
        "DELETE FROM registry_sessions WHERE expires_at <= ?1",
        params![now],
    )?;
    connection.execute(
        "INSERT INTO registry_sessions (token_hash, login, csrf, expires_at) VALUES (?1, ?2, ?3, ?4)",
        params![sha256_hex(token.as_bytes()), login, csrf, now + SESSION_SECS],
    )?;
    Ok(Some(token))
}

/// The session a cookie token names, if it is current.
pub fn session(connection: &Db, token: &str, now: i64) -> DbResult<Option<Session>> {
    connection
        .query_opt(
            "SELECT s.login, u.role, s.csrf FROM registry_sessions s
             JOIN registry_users u ON u.login = s.login
             WHERE s.token_hash = ?1 AND s.expires_at > ?2",
            params![sha256_hex(token.as_bytes()), now],
            |row| {
                Ok((
                    row.get::<String>(0)?,
                    row.get::<String>(1)?,
                    row.get::<String>(2)?,
                ))
            },
        )
        .map(|found| {
            found.and_then(|(login, role, csrf)| {
                Some(Session {
                    login,
                    role: Role::parse(&role)?,
                    csrf,
                })
            })
        })
}

pub fn close_session(connection: &Db, token: &str) -> DbResult<()> {
    connection.execute(
        "DELETE FROM registry_sessions WHERE token_hash = ?1",
        params![sha256_hex(token.as_bytes())],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_matches_only_itself() {
        let hash = hash_password("correct horse battery").expect("hash");
        assert!(password_matches(&hash, "correct horse battery"));
        assert!(!password_matches(&hash, "correct horse batterY"));
        assert!(!password_matches("not a hash", "anything"));
        assert!(!password_matches(decoy_hash(), ""));
    }
}
