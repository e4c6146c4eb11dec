//! Device identity keys and their files.
//!
//! **Architecture invariant**: this crate does no network I/O. It makes, stores and loads
//! keys; callers decide what to sign and where to send it.

mod device_key;

pub use device_key::{DeviceKey, KeyError, KEY_FILE_MODE};
