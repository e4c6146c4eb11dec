//! Sync to e-Qazyna (docs/DESIGN.md, sync): the HTTP client the agent uploads batches
//! with and its retry policy. The receiving side is the `kasip-registry` crate.
//!
//! The agent owns its outbox (sealing batches from its event log, storing receipts); this
//! crate owns what crosses the network. It keeps no store of its own.

pub mod backoff;
pub mod client;

pub use backoff::Backoff;
pub use client::{
    is_hostname, Checkpoint, Enrolment, NameChange, NameRecords, RegistryClient, SyncError, Upload,
};
