//! The agent's clock. It alone decides the current classroom code and every mark's time,
//! so tests must be able to move it: `KASIP_UNSAFE_CLOCK_FILE` points at a file holding a
//! Unix time, read on every call. Only builds for tests (cargo feature `test-clock`) read
//! it: a release binary ignores the variable, so nobody can check students in "during" a
//! past lesson by setting it (packaging/check-deb.sh proves it on the packaged binary).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use kasip_core::{CollegeTimezone, Date};

/// A source of the current Unix time in seconds.
pub trait Clock: Send + Sync {
    fn now_unix(&self) -> i64;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now_unix(&self) -> i64 {
        unix_now()
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
            .unwrap_or_else(unix_now)
    }
}

pub const CLOCK_FILE_VARIABLE: &str = "KASIP_UNSAFE_CLOCK_FILE";

/// The system clock; in a build for tests, the test clock when `KASIP_UNSAFE_CLOCK_FILE`
/// is set.
pub fn from_environment() -> Arc<dyn Clock> {
    match std::env::var_os(CLOCK_FILE_VARIABLE) {
        Some(path) if cfg!(feature = "test-clock") => {
            tracing::warn!(path = ?path, "{CLOCK_FILE_VARIABLE} is set: the agent's clock is read from a file (a build for tests)");
            Arc::new(FileClock { path: path.into() })
        }
        Some(_) => {
            tracing::warn!(
                "{CLOCK_FILE_VARIABLE} is set and ignored: this build uses the system clock"
            );
            Arc::new(SystemClock)
        }
        None => Arc::new(SystemClock),
    }
}

/// Whether this build reads `KASIP_UNSAFE_CLOCK_FILE` (`status --json` says so).
pub const TEST_CLOCK_BUILD: bool = cfg!(feature = "test-clock");

/// The system's Unix time in seconds. Only the clocks above and timestamps that are not
/// evidence (file names, log lines) read it; everything a test must move reads a `Clock`.
#[allow(clippy::disallowed_methods)] // the agent's one reader of the system time
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs() as i64)
}

/// The college's local date at `unix_time`.
pub fn local_date(timezone: &CollegeTimezone, unix_time: i64) -> Date {
    Date::from_days_since_epoch((unix_time + timezone.offset_seconds()).div_euclid(86_400))
}

/// The college's local time of day at `unix_time`, as `HH:MM`.
/// `YYYY-MM-DD HH:MM` in the college's zone: when something happened or ends, for people.
pub fn local_date_time_text(timezone: &CollegeTimezone, unix_time: i64) -> String {
    format!(
        "{} {}",
        local_date(timezone, unix_time),
        local_time_text(timezone, unix_time)
    )
}

pub fn local_time_text(timezone: &CollegeTimezone, unix_time: i64) -> String {
    let minutes = (unix_time + timezone.offset_seconds()).rem_euclid(86_400) / 60;
    format!("{:02}:{:02}", minutes / 60, minutes % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_date_and_time_are_the_colleges() {
        let almaty = CollegeTimezone::parse("Asia/Almaty").expect("zone");
        // 2026-11-23 04:01 UTC is 09:01 in Almaty (UTC+5); 20:00 UTC is the next day there.
        let morning = kasip_core::Date::new(2026, 11, 23)
            .expect("date")
            .days_since_epoch()
            * 86_400
            + 4 * 3600
            + 60;
        assert_eq!(local_date_time_text(&almaty, morning), "2026-11-23 09:01");
        assert_eq!(
            local_date_time_text(&almaty, morning + 16 * 3600 - 60),
            "2026-11-24 01:00"
        );
    }
}
