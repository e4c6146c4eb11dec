//! The agent's one error type, with the exit code each kind of failure maps to.
//!
//! A variant that wraps another error keeps it as its `source` and does not repeat it in
//! its own message; `main` prints the whole chain (`report`), so nothing is lost on the
//! way to the operator.

use std::error::Error;
use std::path::PathBuf;

use crate::import::ImportError;
use crate::store::StoreError;

/// Exit code for bad usage or configuration (sysexits' EX_USAGE, as linkerd2-proxy uses).
pub const EXIT_USAGE: u8 = 64;
/// Exit code for an operation that ran and failed (bad import rows, broken database…).
pub const EXIT_FAILURE: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{data_dir} is not an initialised data directory; run `kasip-agent init` (or `kasip-agent serve` for a demo college)")]
    NotInitialised { data_dir: PathBuf },
    #[error("{data_dir} is already initialised; nothing was changed (to start over, move that directory away first)")]
    AlreadyInitialised { data_dir: PathBuf },
    /// `reason` is the config check's own sentence: the key, the value and the fix.
    #[error("{path}: {reason}")]
    Config { path: PathBuf, reason: String },
    /// The command line asked for something that cannot be done as asked; the sentence
    /// says what to type instead.
    #[error("{0}")]
    Usage(String),
    #[error("cannot {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(Box<StoreError>),
    #[error("the database refused the operation")]
    Sqlite(#[from] rusqlite::Error),
    #[error(transparent)]
    Key(#[from] kasip_certs::KeyError),
    #[error("cannot make the TLS certificate")]
    Certificate(#[from] kasip_certs::TlsError),
    #[error("{file}")]
    Import {
        file: String,
        #[source]
        source: Box<ImportError>,
    },
    /// The operation was refused by a rule of the college's data, not by a fault: the
    /// sentence names what and what to do (a month already closed, a broken chain).
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Staff(#[from] crate::staff::StaffError),
    #[error(transparent)]
    Lesson(#[from] crate::lessons::LessonError),
    #[error(transparent)]
    Kiosk(#[from] crate::kiosks::KioskError),
    #[error(transparent)]
    Registry(#[from] kasip_sync::SyncError),
    #[error(transparent)]
    Random(#[from] crate::secrets::RandomUnavailable),
    #[error("cannot write {what} as JSON")]
    Json {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot make the {what}")]
    Report {
        what: &'static str,
        #[source]
        source: Box<dyn Error + Send + Sync>,
    },
    /// A background task or thread of the agent failed (a bug, or the runtime stopping).
    #[error("{what} failed")]
    Task {
        what: &'static str,
        #[source]
        source: Option<Box<dyn Error + Send + Sync>>,
    },
    /// The server could not be started or stopped cleanly.
    #[error("{what}")]
    Server {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl AgentError {
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::NotInitialised { .. }
            | Self::AlreadyInitialised { .. }
            | Self::Config { .. }
            | Self::Usage(_) => EXIT_USAGE,
            _ => EXIT_FAILURE,
        }
    }

    /// `error` as JSON output of `what` could not be written.
    pub fn json(what: &'static str) -> impl FnOnce(serde_json::Error) -> Self {
        move |source| Self::Json { what, source }
    }

    /// A report (`what`) could not be made.
    pub fn report<E: Error + Send + Sync + 'static>(what: &'static str) -> impl FnOnce(E) -> Self {
        move |source| Self::Report {
            what,
            source: Box::new(source),
        }
    }

    /// A task (`what`) failed with `source`, or without one (a panic, a poisoned lock).
    pub fn task(what: &'static str, source: Option<Box<dyn Error + Send + Sync>>) -> Self {
        Self::Task { what, source }
    }

    /// The server could not do `what` (a sentence with the fix).
    pub fn server(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Self::Server { what, source }
    }
}

impl From<StoreError> for AgentError {
    fn from(error: StoreError) -> Self {
        Self::Store(Box::new(error))
    }
}

pub use kasip_certs::process::report;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_carries_every_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "permission denied");
        let error = AgentError::Io {
            action: "write",
            path: PathBuf::from("/var/lib/kasip/agent.db"),
            source: io,
        };
        assert_eq!(
            report(&error),
            "cannot write /var/lib/kasip/agent.db: permission denied"
        );
        let refused = AgentError::Refused("2026-11 is already closed".into());
        assert_eq!(report(&refused), "2026-11 is already closed");
    }
}
