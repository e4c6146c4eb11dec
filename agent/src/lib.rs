//! The KasipTech college agent: storage, imports, web server and CLI.
//!
//! `main.rs` only parses flags and maps errors to exit codes; everything lives here.

pub mod cli;
pub mod commands;
pub mod config;
pub mod demo;
pub mod error;
pub mod i18n;
pub mod import;
pub mod server;
pub mod store;
