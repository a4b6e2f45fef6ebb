//! postflow: gets every finished video export in a watched folder into Frame.io, exactly once.
//!
//! The binary (`src/main.rs`) is a thin CLI over this library; the modules are public to the
//! crate's integration tests and benches, not a stable API.

#![forbid(unsafe_code)]

pub mod app;
pub mod config;
pub mod container;
pub mod dashboard;
pub mod events;
pub mod frameio;
pub mod glob;
pub mod layout;
pub mod ledger;
pub mod links;
pub mod logtail;
pub mod notify;
pub mod queue;
pub mod range;
pub mod serve;
pub mod statedir;
pub mod upload;
pub mod watch;
