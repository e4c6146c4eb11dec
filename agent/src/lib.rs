//! The KasipTech college agent: storage, imports, web server and CLI.
//!
//! `main.rs` only parses flags and maps errors to exit codes; everything lives here.
//! Modules are declared in layer order (ARCHITECTURE.md, "Layers"): a module uses only
//! modules declared above it, and `tests/layers.rs` fails on any use of one below.

// Foundation: no domain knowledge.
pub mod allocator;
pub mod clock;
pub mod secrets;
pub mod data_dir;
pub mod store;
pub mod service;

// Domain: each module takes its own rules, never the whole `Settings`.
pub mod attendance;
pub mod security_events;
pub mod staff;
pub mod lessons;
pub mod coverage;
pub mod grades;
pub mod import;
pub mod kiosks;
pub mod error;
pub mod roster;
pub mod phones;
pub mod marks;
pub mod student_month;
pub mod red_flags;
pub mod export;
pub mod month_close;
pub mod outbox;
pub mod registry_link;
pub mod backup;
pub mod demo;

// Edge: configuration, the service's tasks, the web and the CLI.
pub mod config;
pub mod sync;
pub mod certificate;
pub mod doctor;
pub mod metrics;
pub mod web;
pub mod cli;
