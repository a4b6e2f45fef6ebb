//! postflow: gets every finished video export in a watched folder into Frame.io, exactly once.
//!
//! The binary (`src/main.rs`) is a thin CLI over this library; the modules are public to the
//! crate's integration tests and benches, not a stable API.

// `deny`, not `forbid`: a few small platform modules call what std does not offer (`process`:
// kill(2) and the Win32 process calls; `lockfile`, `file_id`, `private_file`: Win32 locks, file
// ids and ACLs; `shutdown::windows` and the service's Windows room: console, events, the SCM).
#![deny(unsafe_code)]

pub mod bandwidth;
pub mod cmd;
pub mod config;
pub mod container;
pub mod dashboard;
pub mod events;
pub mod file_id;
pub mod frameio;
pub mod glob;
pub mod history;
pub mod http1;
pub mod human;
pub mod layout;
pub mod ledger;
pub mod links;
pub mod lockfile;
pub mod logfile;
pub mod logtail;
pub mod notify;
pub mod paths;
pub mod private_file;
pub mod process;
pub mod projects;
pub mod queue;
pub mod range;
pub mod review;
pub mod serve;
pub mod shutdown;
pub mod stack;
pub mod statedir;
#[cfg(test)]
mod testutil;
pub mod throughput;
pub mod timefmt;
pub mod tunnel;
pub mod upload;
pub mod watch;
