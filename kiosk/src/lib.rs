//! Kiosk (design §5.3): reads student passes from a camera, image files, a stream of
//! images or a keyboard-wedge scanner, verifies them offline against the pass keys it
//! pulled from the agent, shows green or red, and forwards accepted scans to the agent
//! exactly once. `main.rs` only parses flags; `cli::run` dispatches.

pub mod agent;
pub mod camera;
pub mod cli;
pub mod decode;
pub mod error;
pub mod frames;
pub mod run;
pub mod status;
pub mod store;
pub mod verify;
