//! The process plumbing the three binaries (agent, kiosk, registry) share: logging, the
//! stop signals, the whole cause chain of an error for a person, and files only the
//! service's user may read. `service_manager` is the fourth part: sd_notify.

use std::error::Error;
use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io::IsTerminal;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::KEY_FILE_MODE;

/// Logs to standard error at `KASIP_LOG` (default `info`): with colours and times on a
/// terminal, plain under the service manager (journald adds the time).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KASIP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if std::io::stderr().is_terminal() {
        builder.try_init()
    } else {
        builder.with_ansi(false).without_time().try_init()
    };
}

/// Installs the SIGTERM (the service manager's stop) and SIGINT (Ctrl-C) handlers now,
/// and returns a future that resolves on either. Call it before announcing readiness: a
/// signal that arrives before the handler exists kills the process without a clean stop.
/// The error names the signal that could not be handled.
pub fn shutdown_signal(
) -> Result<impl Future<Output = ()> + Send + 'static, (&'static str, std::io::Error)> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate =
        signal(SignalKind::terminate()).map_err(|error| ("cannot handle SIGTERM", error))?;
    let mut interrupt =
        signal(SignalKind::interrupt()).map_err(|error| ("cannot handle SIGINT", error))?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM received, shutting down"),
            _ = interrupt.recv() => tracing::info!("interrupt received, shutting down"),
        }
    })
}

/// `error` and each of its causes, joined with ": ": what a person reads. A cause whose
/// words the message already carries is not repeated.
pub fn report(error: &(dyn Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        let inner_text = inner.to_string();
        if !text.contains(&inner_text) {
            text.push_str(": ");
            text.push_str(&inner_text);
        }
        cause = inner.source();
    }
    text
}

/// Creates (or truncates) `path` readable by its owner only, whatever the umask.
pub fn create_private_file(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(KEY_FILE_MODE)
        .open(path)
}

/// The mode of a data directory: its owner's only, like the key files inside it.
pub const PRIVATE_DIR_MODE: u32 = 0o700;

/// Creates `path` (and its parents) and makes it its owner's only, whatever the umask,
/// also when it already existed.
pub fn create_private_dir(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR_MODE)
        .create(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(PRIVATE_DIR_MODE))
}

/// The temporary name `path` is written under before it takes its final name.
pub fn partial_path(path: &Path) -> std::path::PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".partial");
    path.with_file_name(name)
}

/// Gives the finished `partial` file its final name `path`: its bytes reach the disk
/// first, then the rename, then the directory entry. A crash at any point leaves either
/// the old file (or none) or the whole new one under `path`, never a torn one.
pub fn finish_file(partial: &Path, path: &Path) -> std::io::Result<()> {
    File::open(partial)?.sync_all()?;
    std::fs::rename(partial, path)?;
    let directory = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty());
    File::open(directory.unwrap_or(Path::new(".")))?.sync_all()
}

/// Writes `contents` to `path` as `finish_file` does (a reader sees the old file or the
/// whole new one), with `mode` whatever the umask.
pub fn write_file_atomically(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    let partial = partial_path(path);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&partial)?;
    file.write_all(contents)?;
    drop(file);
    finish_file(&partial, path)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot write the report")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn an_atomic_write_replaces_the_whole_file_and_leaves_no_partial() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("report.csv");
        std::fs::write(&path, "old").expect("old");
        write_file_atomically(&path, b"new", 0o600).expect("write");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "new");
        assert!(!partial_path(&path).exists());
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn a_private_dir_is_the_owners_only_even_when_it_existed() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("registry");
        std::fs::create_dir(&path).expect("dir");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        create_private_dir(&path).expect("private");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn a_report_carries_every_cause_once() {
        let error = Outer(std::io::Error::other("disk full"));
        assert_eq!(report(&error), "cannot write the report: disk full");
        let io = std::io::Error::other("disk full");
        assert_eq!(report(&io), "disk full");
    }

    #[test]
    fn private_files_are_the_owners_alone() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("secret");
        drop(create_private_file(&path).expect("create"));
        let mode = std::fs::metadata(&path)
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, KEY_FILE_MODE);
    }
}
