//! The agent's one error type, with the exit code each kind of failure maps to.

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
    #[error("{path}: {reason}")]
    Config { path: PathBuf, reason: String },
    #[error("{0}")]
    Usage(String),
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(Box<StoreError>),
    #[error(transparent)]
    Key(#[from] kasip_certs::KeyError),
    #[error("{file}: {source}")]
    Import {
        file: String,
        source: Box<ImportError>,
    },
    #[error("{0}")]
    Operation(String),
    #[error("server: {0}")]
    Server(String),
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
}

impl From<StoreError> for AgentError {
    fn from(error: StoreError) -> Self {
        Self::Store(Box::new(error))
    }
}
