//! The KasipTech college agent: storage, imports, web server and CLI.
//!
//! `main.rs` only parses flags and maps errors to exit codes; everything lives here.

pub mod allocator;
pub mod attendance;
pub mod backup;
pub mod checkin;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod config;
pub mod coverage;
pub mod demo;
pub mod doctor;
pub mod error;
pub mod export;
pub mod grades;
pub mod i18n;
pub mod import;
pub mod kiosks;
pub mod lessons;
pub mod metrics;
pub mod month_close;
pub mod outbox;
pub mod red_flags;
pub mod service;
pub mod staff;
pub mod store;
pub mod sync;
pub mod web;
