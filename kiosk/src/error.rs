//! The kiosk's one error type; each message says what to do.

use std::path::PathBuf;

/// Exit code for bad usage (sysexits' EX_USAGE), as the agent uses.
pub const EXIT_USAGE: u8 = 64;
pub const EXIT_FAILURE: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum KioskError {
    #[error("{dir} holds no enrolled kiosk; run `kasip-kiosk enroll --agent URL --code CODE` with the code from `kasip-agent kiosk add`")]
    NotEnrolled { dir: PathBuf },
    #[error("{path} can be read by other users; run `chmod 600 {path}` (or enrol again)")]
    CredentialExposed { path: PathBuf },
    #[error("kiosk database {path}: {source}")]
    Database {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Usage(String),
    /// The agent could not be reached or refused; the sentence says which and why.
    #[error("{0}")]
    Agent(String),
    /// The process could not set up what it runs on (runtime, signals, listener).
    #[error("{what}")]
    Runtime {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set up TLS to the agent")]
    Tls(#[source] rustls::Error),
    #[error("cannot set up the HTTP client")]
    Http(#[source] reqwest::Error),
    #[error("the system's random source failed; nothing was changed")]
    Random,
    /// Images that could not be read as PNG or JPEG: how many, and the first's reason.
    #[error("{0}")]
    Images(String),
}

impl KioskError {
    /// The process could not do `what` (a sentence with the fix).
    pub fn runtime(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Self::Runtime { what, source }
    }

    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) => EXIT_USAGE,
            _ => EXIT_FAILURE,
        }
    }
}
