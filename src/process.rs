//! Child processes we start and must stop cleanly: polite SIGTERM, a grace period, then
//! SIGKILL; and questions about a pid we did not start (is it alive, what is its command
//! line) so that a leftover process is recognised before it is touched.
//!
//! This is the one module allowed `unsafe`: std can send SIGKILL to its own child but not
//! SIGTERM, and cannot signal a process that is not its child. Each `unsafe` block is a
//! single `kill(2)` call, which has no memory-safety preconditions.
#![allow(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

/// How a stopped child ended.
#[derive(Debug)]
pub enum Stopped {
    /// It exited by itself within the grace period after SIGTERM (or had already exited).
    Gracefully(ExitStatus),
    /// It was still running after the grace period and was killed.
    Killed(ExitStatus),
}

/// Sends SIGTERM, waits up to `grace` for the child to exit, then kills it. Always reaps it.
pub fn stop_child(child: &mut Child, grace: Duration) -> std::io::Result<Stopped> {
    if let Some(status) = child.try_wait()? {
        return Ok(Stopped::Gracefully(status));
    }
    if terminate(child.id()) {
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait()? {
                return Ok(Stopped::Gracefully(status));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // Killing a child that exited in the meantime is harmless: it is not reaped yet, so the
    // pid cannot have been reused.
    let _ = child.kill();
    Ok(Stopped::Killed(child.wait()?))
}

/// Stops a process that is not our child (a leftover from a previous run): SIGTERM, wait up
/// to `grace` for it to go away, then SIGKILL. Returns whether it is gone.
pub fn stop_pid(pid: u32, grace: Duration) -> bool {
    if !terminate(pid) {
        return !is_running(pid);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if !is_running(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    kill(pid);
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        if !is_running(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Sends SIGTERM; false if the signal could not be sent (no such process, not ours).
#[cfg(unix)]
pub fn terminate(pid: u32) -> bool {
    signal(pid, libc::SIGTERM)
}

#[cfg(unix)]
fn kill(pid: u32) -> bool {
    signal(pid, libc::SIGKILL)
}

#[cfg(unix)]
fn signal(pid: u32, sig: libc::c_int) -> bool {
    // pid 0 or a value that wraps negative would signal a whole process group.
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill(2) takes two integers and touches no memory of ours.
    unsafe { libc::kill(pid, sig) == 0 }
}

/// Without SIGTERM there is no polite stop; the grace period is skipped.
#[cfg(not(unix))]
pub fn terminate(_pid: u32) -> bool {
    false
}

#[cfg(not(unix))]
fn kill(_pid: u32) -> bool {
    false
}

/// True while `pid` is a live process. A zombie (exited, not yet reaped by its parent) counts
/// as gone on Linux, where we can tell.
#[cfg(target_os = "linux")]
pub fn is_running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state letter follows the command name, which is in parentheses and may itself
        // contain spaces or parentheses: take what follows the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

#[cfg(all(unix, not(target_os = "linux")))]
pub fn is_running(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill(2) with signal 0 only checks for existence; no memory is touched.
    pid > 0 && unsafe { libc::kill(pid, 0) == 0 }
}

#[cfg(not(unix))]
pub fn is_running(_pid: u32) -> bool {
    false
}

/// The command line of a running process, arguments joined by spaces; None if it is gone or
/// cannot be read.
#[cfg(target_os = "linux")]
pub fn command_line(pid: u32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<String> = raw
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    (!args.is_empty()).then(|| args.join(" "))
}

#[cfg(all(unix, not(target_os = "linux")))]
pub fn command_line(pid: u32) -> Option<String> {
    let out = std::process::Command::new("ps")
        .args(["-p", &pid.to_string(), "-o", "command="])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}

#[cfg(not(unix))]
pub fn command_line(_pid: u32) -> Option<String> {
    None
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    fn sh(script: &str) -> Child {
        Command::new("sh")
            .args(["-c", script])
            .stdout(Stdio::null())
            .spawn()
            .unwrap()
    }

    #[test]
    fn a_child_that_honours_sigterm_stops_gracefully() {
        let mut child = sh("sleep 30");
        let started = Instant::now();
        let stopped = stop_child(&mut child, Duration::from_secs(5)).unwrap();
        assert!(matches!(stopped, Stopped::Gracefully(_)), "{stopped:?}");
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[test]
    fn a_child_that_ignores_sigterm_is_killed_after_the_grace_period() {
        let mut child = sh("trap '' TERM; while :; do sleep 0.05; done");
        // Give the shell time to install its trap.
        std::thread::sleep(Duration::from_millis(200));
        let started = Instant::now();
        let stopped = stop_child(&mut child, Duration::from_millis(500)).unwrap();
        assert!(matches!(stopped, Stopped::Killed(_)), "{stopped:?}");
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(500), "{took:?}");
        assert!(took < Duration::from_secs(3), "{took:?}");
    }

    #[test]
    fn a_process_is_seen_alive_with_its_command_line_then_gone() {
        let mut child = sh("sleep 30; echo marker-7f3a");
        let pid = child.id();
        assert!(is_running(pid));
        // Right after spawn the new image may still be settling in; give it a moment.
        let started = Instant::now();
        let mut cmd = command_line(pid);
        while !cmd.as_deref().is_some_and(|c| c.contains("marker-7f3a")) {
            assert!(started.elapsed() < Duration::from_secs(5), "{cmd:?}");
            std::thread::sleep(Duration::from_millis(10));
            cmd = command_line(pid);
        }
        assert!(stop_pid(pid, Duration::from_secs(5)));
        let _ = child.wait();
        assert!(!is_running(pid));
        assert_eq!(command_line(pid), None);
    }

    #[test]
    fn nonsense_pids_are_never_signalled() {
        assert!(!terminate(0));
        assert!(!terminate(u32::MAX));
        assert!(!is_running(u32::MAX));
    }
}

/// Finds an executable: a path as given, or a bare name on PATH.
pub fn find_program(program: &Path) -> Option<PathBuf> {
    let is_exec = |p: &Path| p.is_file() && is_executable(p);
    if program.components().count() > 1 || program.is_absolute() {
        return is_exec(program).then(|| program.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| is_exec(p))
}

#[cfg(unix)]
fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn is_executable(_p: &Path) -> bool {
    true
}
