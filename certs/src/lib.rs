//! Device identity keys, their files, the LAN TLS certificate, request signatures, and
//! the process plumbing the binaries share (logging, stop signals, error reports,
//! private files, the service manager's sd_notify).
//!
//! **Architecture invariant**: this crate does no network I/O. It makes, stores and loads
//! keys and certificates; callers decide what to sign and where to send it.

pub mod agent_auth;
mod device_key;
pub mod jws;
pub mod process;
pub mod service_manager;
pub mod tls;

pub use device_key::{DeviceKey, KeyError, KEY_FILE_MODE};
pub use tls::{
    dns_names, fingerprint_der, fingerprint_pem, first_certificate_der, not_after, validity,
    write_self_signed, TlsError,
};
