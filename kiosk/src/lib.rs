//! Kiosk: frame sources, QR decoding, pass verification and forwarding to the agent.

pub mod decode;
