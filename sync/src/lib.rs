//! Sync to e-Qazyna: outbox batches, upload and the reference registry.
//!
//! Not built yet: this crate is filled by the issue "Sync to e-Qazyna". Nothing here
//! uploads anything, and nothing claims to.
