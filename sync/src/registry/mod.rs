//! The reference registry: what e-Qazyna's receiving side does, for tests, pilots and
//! demos. `kasip-registry` is its thin binary over `cli::main`.

pub mod cli;
pub mod http;
pub mod store;

pub use http::{Faults, RegistryState};
pub use store::{RegistryError, RegistryStore, Verdict};
