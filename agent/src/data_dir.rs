//! The data directory's layout: every path the agent touches is derived here.

use std::path::{Path, PathBuf};

/// Where a college's state lives; every path the agent touches is derived here.
#[derive(Debug, Clone)]
pub struct DataDir {
    root: PathBuf,
    /// `config.toml` kept outside the data dir (the package's `/etc/kasip/config.toml`).
    config: Option<PathBuf>,
}

/// Where the Debian package puts the service's state and its configuration.
pub const SYSTEM_DATA_DIR: &str = "/var/lib/kasip";
pub const SYSTEM_CONFIG: &str = "/etc/kasip/config.toml";

impl DataDir {
    pub fn new(root: PathBuf) -> Self {
        Self { root, config: None }
    }

    /// A data dir whose `config.toml` lives at `config` instead of inside it.
    pub fn with_config(root: PathBuf, config: Option<PathBuf>) -> Self {
        Self { root, config }
    }

    /// With neither `--data-dir` nor `--config`: on a machine where the package is
    /// installed (`/etc/kasip/config.toml` exists), the service's own directories, so
    /// `sudo -u kasip kasip-agent …` acts on the running college; otherwise the per-user
    /// data directory (`~/.local/share/kasip-agent` on Linux).
    pub fn from_options(root: Option<PathBuf>, config: Option<PathBuf>) -> Self {
        match (root, config) {
            (Some(root), config) => Self::with_config(root, config),
            (None, Some(config)) => Self::with_config(Self::default_root(), Some(config)),
            (None, None) if Path::new(SYSTEM_CONFIG).exists() => Self::with_config(
                PathBuf::from(SYSTEM_DATA_DIR),
                Some(PathBuf::from(SYSTEM_CONFIG)),
            ),
            (None, None) => Self::new(Self::default_root()),
        }
    }

    /// The per-user data directory (`~/.local/share/kasip-agent` on Linux).
    pub fn default_root() -> PathBuf {
        directories::ProjectDirs::from("kz", "KasipTech", "kasip-agent")
            .map(|dirs| dirs.data_dir().to_owned())
            .unwrap_or_else(|| PathBuf::from("kasip-data"))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn config_path(&self) -> PathBuf {
        self.config
            .clone()
            .unwrap_or_else(|| self.root.join("config.toml"))
    }

    /// Whether `config.toml` is kept outside the data dir (and so is not `init`'s to write).
    pub fn has_external_config(&self) -> bool {
        self.config.is_some()
    }

    pub fn database_path(&self) -> PathBuf {
        self.root.join("agent.db")
    }

    pub fn key_path(&self) -> PathBuf {
        self.root.join("agent-key.pem")
    }

    /// The self-signed LAN certificate made at `init` (used unless config names PEM files).
    pub fn tls_cert_path(&self) -> PathBuf {
        self.root.join("tls.crt")
    }

    pub fn tls_key_path(&self) -> PathBuf {
        self.root.join("tls.key")
    }

    /// True once `init` has run: the config (its last step) and the database exist.
    pub fn is_initialised(&self) -> bool {
        self.config_path().exists() && self.database_path().exists()
    }
}
