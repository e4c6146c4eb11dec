//! The agent's clock. It alone decides the current classroom code, so tests must be able
//! to move it: `KASIP_UNSAFE_CLOCK_FILE` points at a file holding a Unix time, read on
//! every call. Production never sets it, and the agent warns loudly when it is set.

use std::path::PathBuf;
use std::sync::Arc;

/// A source of the current Unix time in seconds.
pub trait Clock: Send + Sync {
    fn now_unix(&self) -> i64;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now_unix(&self) -> i64 {
        crate::store::unix_now()
    }
}

/// Reads the time from a file on every call, for black-box tests of token expiry.
pub struct FileClock {
    path: PathBuf,
}

impl Clock for FileClock {
    fn now_unix(&self) -> i64 {
        std::fs::read_to_string(&self.path)
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or_else(crate::store::unix_now)
    }
}

pub const CLOCK_FILE_VARIABLE: &str = "KASIP_UNSAFE_CLOCK_FILE";

/// The system clock, or the test clock when `KASIP_UNSAFE_CLOCK_FILE` is set.
pub fn from_environment() -> Arc<dyn Clock> {
    match std::env::var_os(CLOCK_FILE_VARIABLE) {
        Some(path) => {
            tracing::warn!(path = ?path, "{CLOCK_FILE_VARIABLE} is set: the agent's clock is read from a file; never do this in production");
            Arc::new(FileClock { path: path.into() })
        }
        None => Arc::new(SystemClock),
    }
}
