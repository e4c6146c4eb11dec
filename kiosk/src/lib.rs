//! Kiosk: frame sources, QR decoding, pass verification and forwarding to the agent.
//!
//! Not built yet: this crate is filled by the issue "Kiosk: camera scanning of student
//! passes". Nothing here scans anything, and nothing claims to.
