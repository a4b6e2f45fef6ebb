//! `postflow stop`: asks the instance running on the config's state dir to stop in order, as
//! Ctrl-C would, and waits until it is gone. It needs no console, so it is how a Windows user
//! stops a postflow started by Task Scheduler (whose "End" is TerminateProcess: no stop at
//! all) or hidden: unix sends SIGTERM, Windows sets the instance's named stop event.

use std::fs::{File, TryLockError};
use std::io::Read;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use super::{EXIT_FAILURE, EXIT_OK};
use crate::config::Config;

/// How long the instance gets to stop: its own stop gives up on stuck threads after 20 s
/// (`SHUTDOWN_DEADLINE`), so this is generous.
const STOP_WAIT: Duration = Duration::from_secs(60);

/// `postflow stop`: "stopped (pid N)" or "not running", exit 0; exit 1 with the reason when
/// the instance cannot be asked or does not stop.
pub fn stop(config: &Config) -> ExitCode {
    let lock = config.state_dir.join("lock");
    let result = lock_holder(&lock).and_then(|holder| match holder {
        None => Ok(None),
        Some(pid) => {
            ask_to_stop(pid)?;
            wait_gone(&lock, pid)?;
            Ok(Some(pid))
        }
    });
    match result {
        Ok(None) => {
            println!("not running");
            ExitCode::from(EXIT_OK)
        }
        Ok(Some(pid)) => {
            println!("stopped (pid {pid})");
            ExitCode::from(EXIT_OK)
        }
        Err(e) => {
            eprintln!("postflow stop: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// The pid of the instance holding the state dir's lock; `None` when no instance holds it.
/// Taking the lock for a moment is the one test that cannot be fooled by a stale pid.
fn lock_holder(lock: &Path) -> Result<Option<u32>, String> {
    let mut file = match File::open(lock) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot open {}: {e}", lock.display())),
    };
    match file.try_lock() {
        // Free: nobody runs; dropping the file releases it again at once.
        Ok(()) => Ok(None),
        Err(TryLockError::WouldBlock) => {
            let mut text = String::new();
            file.read_to_string(&mut text).map_err(|e| {
                format!(
                    "an instance runs, but its pid cannot be read from {}: {e}",
                    lock.display()
                )
            })?;
            text.trim().parse().map(Some).map_err(|_| {
                format!(
                    "an instance runs, but {} does not hold its pid ({:?})",
                    lock.display(),
                    text.trim()
                )
            })
        }
        Err(TryLockError::Error(e)) => Err(format!("cannot lock {}: {e}", lock.display())),
    }
}

#[cfg(unix)]
fn ask_to_stop(pid: u32) -> Result<(), String> {
    crate::process::terminate(pid)
        .map_err(|e| format!("cannot send SIGTERM to postflow (pid {pid}): {e}"))
}

#[cfg(windows)]
fn ask_to_stop(pid: u32) -> Result<(), String> {
    use crate::shutdown::windows::{signal_stop, SignalError};
    signal_stop(pid).map_err(|e| match e {
        SignalError::NoEvent => format!(
            "postflow (pid {pid}) has no stop event (a postflow older than `postflow stop`?): \
             stop it with Ctrl-C in its console, or `sc.exe stop postflow` for the service"
        ),
        SignalError::Denied(e) => format!(
            "cannot ask postflow (pid {pid}) to stop: {e}; the service's instance needs an \
             elevated (Administrator) prompt, or use `sc.exe stop postflow`"
        ),
    })
}

/// Waits until the lock is free (or held by a new instance), up to `STOP_WAIT`.
fn wait_gone(lock: &Path, pid: u32) -> Result<(), String> {
    let deadline = Instant::now() + STOP_WAIT;
    loop {
        if lock_holder(lock).is_ok_and(|holder| holder != Some(pid)) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "postflow (pid {pid}) was asked to stop but still runs after {}s",
                STOP_WAIT.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
