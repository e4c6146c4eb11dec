//! Device identity keys, their files, and the LAN TLS certificate.
//!
//! **Architecture invariant**: this crate does no network I/O. It makes, stores and loads
//! keys and certificates; callers decide what to sign and where to send it.

mod device_key;
pub mod jws;
pub mod tls;

pub use device_key::{DeviceKey, KeyError, KEY_FILE_MODE};
pub use tls::{
    fingerprint_der, fingerprint_pem, first_certificate_der, not_after, write_self_signed, TlsError,
};
