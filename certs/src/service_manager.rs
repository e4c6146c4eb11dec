//! The service manager's handshake (sd_notify): readiness, stopping and watchdog pings
//! for `Type=notify` units. Shared by `kasip-agent` and `kasip-kiosk`; local IPC only.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Sends `message` (e.g. `READY=1`) to the service manager when it asked for it
/// (`NOTIFY_SOCKET`, as with `Type=notify`); a no-op otherwise. Returns whether it was sent.
pub fn notify(message: &str) -> bool {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return false;
    };
    let Ok(socket) = UnixDatagram::unbound() else {
        return false;
    };
    let path = path.to_string_lossy().into_owned();
    let sent = match path.strip_prefix('@') {
        // An abstract socket (systemd's default is a path, but both are allowed).
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
                .and_then(|address| socket.send_to_addr(message.as_bytes(), &address))
        }
        None => socket.send_to(message.as_bytes(), &path),
    };
    sent.is_ok()
}

/// Half the watchdog timeout systemd set for this process (`WatchdogSec=`), if any.
pub fn watchdog_interval() -> Option<Duration> {
    let microseconds: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    (microseconds > 0).then(|| Duration::from_micros(microseconds / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_reaches_a_listening_socket_and_is_silent_without_one() {
        let dir = tempfile::tempdir().expect("temp");
        let path = dir.path().join("notify.sock");
        let listener = UnixDatagram::bind(&path).expect("bind");
        // The environment is process-wide: set and read it in this one test only.
        std::env::set_var("NOTIFY_SOCKET", &path);
        assert!(notify("READY=1"));
        let mut buffer = [0u8; 64];
        let received = listener.recv(&mut buffer).expect("receive");
        assert_eq!(&buffer[..received], b"READY=1");
        std::env::remove_var("NOTIFY_SOCKET");
        assert!(!notify("READY=1"));
    }
}
