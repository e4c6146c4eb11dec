//! Sync to e-Qazyna (design §5.4): the HTTP client the agent uploads batches with, its
//! retry policy, request authentication, and the reference registry (`kasip-registry`)
//! that implements the receiving side for tests, pilots and demos.
//!
//! The agent owns its outbox (sealing batches from its event log, storing receipts); this
//! crate owns what crosses the network and how the registry judges it.

pub mod auth;
pub mod backoff;
pub mod client;
pub mod registry;

pub use backoff::Backoff;
pub use client::{Checkpoint, Enrolment, RegistryClient, SyncError, Upload};
