//! Living under systemd: readiness and watchdog pings (the sd_notify protocol), TLS
//! certificate reload on SIGHUP, and warnings before the certificate expires.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::Duration;

/// Warn this long before the served certificate expires.
pub const EXPIRY_WARNING_SECS: i64 = 30 * 86_400;

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

/// The served certificate's end of validity, when it can be read.
pub fn certificate_not_after(cert_path: &Path) -> Option<i64> {
    let pem = std::fs::read_to_string(cert_path).ok()?;
    kasip_certs::not_after(&kasip_certs::first_certificate_der(&pem)?)
}

/// A sentence for the log and `doctor` when the certificate has expired or expires
/// within 30 days.
pub fn expiry_warning(cert_path: &Path, now: i64) -> Option<String> {
    let not_after = certificate_not_after(cert_path)?;
    let days = (not_after - now).div_euclid(86_400);
    if not_after <= now {
        Some(format!(
            "the TLS certificate {} expired {} day(s) ago; phones and kiosks will refuse it: replace it (server.tls_cert) and send SIGHUP (systemctl reload kasip-agent)",
            cert_path.display(),
            -days
        ))
    } else if not_after - now <= EXPIRY_WARNING_SECS {
        Some(format!(
            "the TLS certificate {} expires in {days} day(s); replace it (server.tls_cert) and send SIGHUP (systemctl reload kasip-agent)",
            cert_path.display()
        ))
    } else {
        None
    }
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

    #[test]
    fn expiry_is_warned_thirty_days_ahead() {
        let dir = tempfile::tempdir().expect("temp");
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        kasip_certs::write_self_signed(&[], &cert, &key).expect("cert");
        let end = certificate_not_after(&cert).expect("readable");
        assert_eq!(expiry_warning(&cert, end - 31 * 86_400), None);
        assert!(expiry_warning(&cert, end - 29 * 86_400)
            .expect("warned")
            .contains("expires in 29 day(s)"));
        assert!(expiry_warning(&cert, end + 86_400)
            .expect("warned")
            .contains("expired 1 day(s) ago"));
        assert_eq!(expiry_warning(&dir.path().join("missing"), 0), None);
    }
}
