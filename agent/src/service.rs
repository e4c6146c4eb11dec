//! Living under systemd: readiness and watchdog pings (the sd_notify protocol), TLS
//! certificate reload on SIGHUP, and warnings before the certificate expires.

use std::path::Path;

/// Warn this long before the served certificate expires.
pub const EXPIRY_WARNING_SECS: i64 = 30 * 86_400;

pub use kasip_certs::service_manager::{notify, watchdog_interval};

/// The nice value of background work (reports): requests go first.
pub const BACKGROUND_NICE: i32 = 10;

/// Lowers the calling thread's CPU priority to `BACKGROUND_NICE`. On Linux a thread has
/// its own nice value, so only this thread yields; a refusal leaves it as it was.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub fn lower_thread_priority() {
    // SAFETY: setpriority takes plain integers and no pointer; `who` 0 is the calling
    // thread on Linux. Its result needs no action: at worst the thread keeps its priority.
    let _ = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, BACKGROUND_NICE) };
}

#[cfg(not(target_os = "linux"))]
pub fn lower_thread_priority() {}

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
