//! The reference registry: what e-Qazyna's receiving side does, for tests, pilots and
//! demos. `kasip-registry` is its thin binary over `cli::main`. It shares with the agent
//! only the wire types in `kasip-core` and the request signatures in `kasip-certs`.

pub mod accounts;
pub mod audit;
pub mod cli;
pub mod db;
pub mod dns;
pub mod dns_update;
pub mod http;
mod memory;
mod pages;
mod passkeys;
pub mod simulate;
pub mod state;
pub mod store;
pub mod timeline;

pub use http::Faults;
pub use state::RegistryState;
pub use store::{RegistryError, RegistryStore, Verdict};
