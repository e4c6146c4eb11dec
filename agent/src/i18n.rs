//! The agent's words come from the one catalog in `kasip_core::text` (one file per
//! language under `core/text/`), shared with the kiosk.

pub use kasip_core::text::{text, Lang, Text};
