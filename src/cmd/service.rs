//! `postflow service install CONFIG` / `postflow service uninstall`: run postflow at boot, with
//! no one logged in, restarted if it fails.
//!
//! On Windows this registers (or removes) the service "postflow" with the Service Control
//! Manager, and `postflow service run CONFIG` is the service itself (the SCM starts it; not
//! for people). On Linux and macOS it prints the systemd unit or launchd agent with this
//! binary's and the config's absolute paths filled in, and the commands that install it:
//! systemd and launchd do the supervising there.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{load_config, print_config_error, EXIT_FAILURE, EXIT_OK, EXIT_USAGE};
use crate::config::Config;

#[cfg(not(windows))]
pub mod unix;
#[cfg(windows)]
mod windows;

/// The name the service is registered under (and the systemd unit's).
pub const NAME: &str = "postflow";

#[derive(Debug, PartialEq, Eq)]
pub enum ServiceCommand {
    Install(PathBuf),
    Uninstall,
    /// The Windows service's entry point, started by the SCM.
    Run(PathBuf),
}

/// Set once, when the SCM starts us: no console, log to a file.
static AS_SERVICE: AtomicBool = AtomicBool::new(false);

/// True in the process the Windows Service Control Manager started.
pub fn running_as_service() -> bool {
    AS_SERVICE.load(Ordering::Relaxed)
}

pub fn service(command: ServiceCommand) -> ExitCode {
    match command {
        ServiceCommand::Install(path) => {
            let (config, path) = match runnable_config(&path) {
                Ok(c) => c,
                Err(code) => return code,
            };
            report(install(&config, &path))
        }
        ServiceCommand::Uninstall => report(uninstall()),
        ServiceCommand::Run(path) => run(path),
    }
}

/// The config a service would run, and its absolute path (a service does not start in the
/// folder the command was typed in). Exit 2 when it would not run.
fn runnable_config(path: &Path) -> Result<(Config, PathBuf), ExitCode> {
    let config = load_config(path)?;
    if let Err(e) = config.require_for_run() {
        return Err(print_config_error(&e));
    }
    let absolute = std::path::absolute(path).map_err(|e| {
        eprintln!("{}: cannot make the path absolute: {e}", path.display());
        ExitCode::from(EXIT_USAGE)
    })?;
    Ok((config, absolute))
}

/// Prints what was done (stdout) or what failed (stderr, exit 1).
fn report(result: Result<String, String>) -> ExitCode {
    match result {
        Ok(text) => {
            print!("{text}");
            ExitCode::from(EXIT_OK)
        }
        Err(e) => {
            eprintln!("postflow: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// This binary's absolute path, for the service definition.
fn current_exe() -> Result<PathBuf, String> {
    std::env::current_exe().map_err(|e| format!("cannot find postflow's own path: {e}"))
}

#[cfg(windows)]
fn install(config: &Config, config_path: &Path) -> Result<String, String> {
    windows::install(&current_exe()?, config_path, &super::log_file_path(config))
}

#[cfg(windows)]
fn uninstall() -> Result<String, String> {
    windows::uninstall()
}

#[cfg(windows)]
fn run(config_path: PathBuf) -> ExitCode {
    windows::run(config_path)
}

#[cfg(not(windows))]
fn install(_config: &Config, config_path: &Path) -> Result<String, String> {
    Ok(unix::install(&current_exe()?, config_path))
}

#[cfg(not(windows))]
fn uninstall() -> Result<String, String> {
    Ok(unix::uninstall())
}

#[cfg(not(windows))]
fn run(_config_path: PathBuf) -> ExitCode {
    eprintln!(
        "postflow: `service run` is how the Windows Service Control Manager starts postflow; \
         here use `postflow run config.json` (or `postflow service install config.json`)"
    );
    ExitCode::from(EXIT_USAGE)
}
