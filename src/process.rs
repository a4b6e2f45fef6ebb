//! Child processes we start and must stop cleanly: each in its own process group, asked
//! politely to stop (SIGTERM on unix, Ctrl-Break on Windows), a grace period, then killed;
//! and questions about a pid we did not start (is it alive, what is its command line) so that
//! a leftover process is recognised before it is touched.
//!
//! On Windows a child also runs inside a job object that the kernel empties when postflow
//! ends, however it ends, so a child never outlives us ([`windows`]).
//!
//! This is one of the modules allowed `unsafe`: std can send SIGKILL to its own child but not
//! SIGTERM, and cannot signal a process that is not its child. Each `unsafe` block here is a
//! single `kill(2)` call, which has no memory-safety preconditions; the Win32 calls live in
//! `process/windows.rs`, which says why each is sound.
#![allow(unsafe_code)]

#[cfg(windows)]
mod windows;

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// How a child is asked to stop, as the log names it.
#[cfg(unix)]
pub const ASK: &str = "SIGTERM";
#[cfg(windows)]
pub const ASK: &str = "Ctrl-Break";

/// How a stopped child ended, with what the log needs to tell it truthfully.
#[derive(Debug)]
pub enum Stopped {
    /// It had exited by itself before it was asked to stop.
    AlreadyExited(ExitStatus),
    /// It exited by itself `after` it was asked to stop.
    Gracefully { status: ExitStatus, after: Duration },
    /// It was asked, was still running `grace` later, and was killed.
    Killed { status: ExitStatus, grace: Duration },
    /// It could not be asked (`why`: on Windows, a postflow without a console, as a service
    /// or under Wine, cannot send Ctrl-Break), so it was killed at once, with no grace.
    KilledUnasked {
        status: ExitStatus,
        why: std::io::Error,
    },
}

impl Stopped {
    pub fn status(&self) -> ExitStatus {
        match self {
            Stopped::AlreadyExited(status)
            | Stopped::Gracefully { status, .. }
            | Stopped::Killed { status, .. }
            | Stopped::KilledUnasked { status, .. } => *status,
        }
    }

    /// Whether it had to be killed: worth a warning, since it had no graceful shutdown.
    pub fn was_killed(&self) -> bool {
        matches!(self, Stopped::Killed { .. } | Stopped::KilledUnasked { .. })
    }

    /// One log line saying what happened to the child called `name`, and nothing it did not.
    pub fn describe(&self, name: &str) -> String {
        match self {
            Stopped::AlreadyExited(status) => format!("{name} had already exited ({status})"),
            Stopped::Gracefully { status, after } => format!(
                "{name} stopped ({status}) {:.1} s after {ASK}",
                after.as_secs_f64()
            ),
            Stopped::Killed { grace, .. } => format!(
                "{name} did not stop within {} s of {ASK}; killed it",
                grace.as_secs()
            ),
            Stopped::KilledUnasked { why, .. } => {
                format!("could not ask {name} to stop ({ASK}: {why}); killed it")
            }
        }
    }
}

/// Starts `cmd` in a process group of its own, so that a Ctrl-C at postflow's terminal
/// reaches postflow only and the child is stopped once, by us. On Windows the child also
/// joins postflow's job object (see [`windows::spawn`]).
pub fn spawn_in_own_group(cmd: &mut Command) -> std::io::Result<Child> {
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
        cmd.spawn()
    }
    #[cfg(windows)]
    {
        windows::spawn(cmd)
    }
}

/// Asks the child to stop ([`ASK`]), waits up to `grace` for it to exit, then kills it. If it
/// cannot be asked, kills it at once. Always reaps it.
pub fn stop_child(child: &mut Child, grace: Duration) -> std::io::Result<Stopped> {
    stop_child_asking(child, grace, terminate)
}

/// [`stop_child`] with the polite request given, so the decision can be tested alone.
fn stop_child_asking(
    child: &mut Child,
    grace: Duration,
    ask: impl FnOnce(u32) -> std::io::Result<()>,
) -> std::io::Result<Stopped> {
    if let Some(status) = child.try_wait()? {
        return Ok(Stopped::AlreadyExited(status));
    }
    let asked = Instant::now();
    // Killing a child that exited in the meantime is harmless: it is not reaped yet, so the
    // pid cannot have been reused.
    if let Err(why) = ask(child.id()) {
        let _ = child.kill();
        let status = child.wait()?;
        return Ok(Stopped::KilledUnasked { status, why });
    }
    let deadline = asked + grace;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            let after = asked.elapsed();
            return Ok(Stopped::Gracefully { status, after });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let status = child.wait()?;
    Ok(Stopped::Killed { status, grace })
}

/// Stops a process that is not our child (a leftover from a previous run): asks it, waits up
/// to `grace` for it to go away, then kills it. Returns whether it is gone. Only for a pid
/// whose command line showed it is ours ([`command_line`]), so never called on Windows, where
/// Ctrl-Break must only go to a group [`spawn_in_own_group`] made.
pub fn stop_pid(pid: u32, grace: Duration) -> bool {
    if terminate(pid).is_err() {
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

/// Sends SIGTERM; an error if it could not be sent (no such process, not ours).
#[cfg(unix)]
pub(crate) fn terminate(pid: u32) -> std::io::Result<()> {
    signal(pid, libc::SIGTERM)
}

#[cfg(unix)]
fn kill(pid: u32) -> bool {
    signal(pid, libc::SIGKILL).is_ok()
}

#[cfg(unix)]
fn signal(pid: u32, sig: libc::c_int) -> std::io::Result<()> {
    // pid 0 or a value that wraps negative would signal a whole process group.
    let pid = libc::pid_t::try_from(pid)
        .ok()
        .filter(|pid| *pid > 0)
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{pid} is not a single process"),
            )
        })?;
    // SAFETY: kill(2) takes two integers and touches no memory of ours.
    if unsafe { libc::kill(pid, sig) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Sends Ctrl-Break to the child's process group (its pid, as [`spawn_in_own_group`] made
/// it a group of its own).
#[cfg(windows)]
fn terminate(pid: u32) -> std::io::Result<()> {
    windows::ctrl_break(pid)
}

#[cfg(windows)]
fn kill(pid: u32) -> bool {
    windows::terminate_process(pid)
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

#[cfg(windows)]
pub fn is_running(pid: u32) -> bool {
    windows::is_running(pid)
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
        // -ww: the whole command line, not cut to a terminal's width (the config path we
        // look for comes late in it).
        .args(["-ww", "-p", &pid.to_string(), "-o", "command="])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}

/// Not read on Windows (that takes the PEB of another process): it is only needed to
/// recognise a cloudflared left running by a postflow that was killed, and on Windows there
/// is none, since the job object ([`windows::spawn`]) makes the kernel kill it with postflow.
#[cfg(windows)]
pub fn command_line(_pid: u32) -> Option<String> {
    None
}

/// Finds an executable: a path as given, or a bare name on PATH. On Windows a name without
/// an extension is tried with each of `PATHEXT`'s (`cloudflared` finds `cloudflared.exe`),
/// as the command prompt does.
pub fn find_program(program: &Path) -> Option<PathBuf> {
    find_program_in(program, std::env::var_os("PATH"), pathext().as_deref())
}

/// [`find_program`] with PATH and PATHEXT given, so a test need not change the environment.
fn find_program_in(
    program: &Path,
    path: Option<OsString>,
    pathext: Option<&OsStr>,
) -> Option<PathBuf> {
    let names = candidate_names(program, pathext);
    if program.components().count() > 1 || program.is_absolute() {
        return names.into_iter().find(|p| is_executable(p));
    }
    std::env::split_paths(&path?)
        .flat_map(|dir| names.iter().map(move |name| dir.join(name)))
        .find(|p| is_executable(p))
}

/// The names to try for `program`, in order. Without `pathext` (unix), the name itself. With
/// it (Windows), a name that has an extension is taken as it is (CreateProcess runs it so);
/// one without gets each extension of `pathext` (`.COM;.EXE;.BAT;.CMD`), in lower case.
fn candidate_names(program: &Path, pathext: Option<&OsStr>) -> Vec<PathBuf> {
    let Some(pathext) = pathext else {
        return vec![program.to_path_buf()];
    };
    if program.extension().is_some() {
        return vec![program.to_path_buf()];
    }
    pathext
        .to_string_lossy()
        .split(';')
        .map(str::trim)
        .filter(|ext| ext.len() > 1 && ext.starts_with('.'))
        .map(|ext| {
            let mut name = program.as_os_str().to_os_string();
            name.push(ext.to_ascii_lowercase());
            PathBuf::from(name)
        })
        .collect()
}

#[cfg(unix)]
fn pathext() -> Option<OsString> {
    None
}

/// `PATHEXT`, or Windows' default when it is unset.
#[cfg(windows)]
fn pathext() -> Option<OsString> {
    Some(std::env::var_os("PATHEXT").unwrap_or_else(|| ".COM;.EXE;.BAT;.CMD".into()))
}

#[cfg(unix)]
fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Windows has no execute bit: a file with a runnable extension is run.
#[cfg(windows)]
fn is_executable(p: &Path) -> bool {
    p.is_file()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Stdio;

    /// A child that runs until it is stopped.
    fn long_running() -> Child {
        #[cfg(unix)]
        let mut cmd = Command::new("sh");
        #[cfg(unix)]
        cmd.args(["-c", "sleep 30"]);
        // Waits for a line on a stdin we never write to (Wine has no `timeout`).
        #[cfg(windows)]
        let mut cmd = Command::new("cmd");
        #[cfg(windows)]
        cmd.args(["/c", "set /p line="]).stdin(Stdio::piped());
        cmd.stdout(Stdio::null()).spawn().unwrap()
    }

    fn exits_at_once() -> Child {
        #[cfg(unix)]
        let (shell, flag) = ("sh", "-c");
        #[cfg(windows)]
        let (shell, flag) = ("cmd", "/c");
        Command::new(shell)
            .args([flag, "exit 3"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap()
    }

    fn success() -> ExitStatus {
        #[cfg(unix)]
        use std::os::unix::process::ExitStatusExt;
        #[cfg(windows)]
        use std::os::windows::process::ExitStatusExt;
        ExitStatus::from_raw(0)
    }

    #[test]
    fn a_child_that_cannot_be_asked_is_killed_at_once_and_the_log_says_so() {
        let mut child = long_running();
        let started = Instant::now();
        let stopped = stop_child_asking(&mut child, Duration::from_secs(10), |_| {
            Err(std::io::Error::other("no console"))
        })
        .unwrap();
        assert!(started.elapsed() < Duration::from_secs(3), "no grace given");
        assert!(
            matches!(stopped, Stopped::KilledUnasked { .. }),
            "{stopped:?}"
        );
        assert!(stopped.was_killed());
        assert_eq!(
            stopped.describe("cloudflared"),
            format!("could not ask cloudflared to stop ({ASK}: no console); killed it")
        );
    }

    #[test]
    fn a_child_asked_but_still_running_after_the_grace_period_is_killed() {
        let mut child = long_running();
        let started = Instant::now();
        let stopped =
            stop_child_asking(&mut child, Duration::from_millis(500), |_| Ok(())).unwrap();
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(500), "{took:?}");
        assert!(took < Duration::from_secs(3), "{took:?}");
        assert!(matches!(stopped, Stopped::Killed { .. }), "{stopped:?}");
        assert!(!stopped.status().success());
    }

    #[test]
    fn a_child_that_already_exited_is_not_asked() {
        let mut child = exits_at_once();
        let _ = child.wait();
        let stopped = stop_child_asking(&mut child, Duration::from_secs(10), |_| {
            panic!("an exited child must not be asked")
        })
        .unwrap();
        assert!(matches!(stopped, Stopped::AlreadyExited(_)), "{stopped:?}");
        assert_eq!(stopped.status().code(), Some(3));
        assert!(!stopped.was_killed());
    }

    #[test]
    fn the_log_line_says_what_was_done_and_nothing_more() {
        let graceful = Stopped::Gracefully {
            status: success(),
            after: Duration::from_millis(1240),
        };
        assert_eq!(
            graceful.describe("cloudflared"),
            format!("cloudflared stopped ({}) 1.2 s after {ASK}", success())
        );
        let killed = Stopped::Killed {
            status: success(),
            grace: Duration::from_secs(15),
        };
        assert_eq!(
            killed.describe("cloudflared"),
            format!("cloudflared did not stop within 15 s of {ASK}; killed it")
        );
        assert_eq!(
            Stopped::AlreadyExited(success()).describe("cloudflared"),
            format!("cloudflared had already exited ({})", success())
        );
    }

    #[test]
    fn we_are_running_and_a_nonsense_pid_is_not() {
        assert!(is_running(std::process::id()));
        assert!(!is_running(u32::MAX));
    }

    #[test]
    fn without_pathext_a_name_is_tried_as_it_is() {
        let names = candidate_names(Path::new("cloudflared"), None);
        assert_eq!(names, [PathBuf::from("cloudflared")]);
    }

    #[test]
    fn a_bare_name_is_tried_with_each_pathext_extension_in_order() {
        let pathext = OsStr::new(".COM;.EXE; ;.BAT;;.CMD");
        let names = candidate_names(Path::new("cloudflared"), Some(pathext));
        assert_eq!(
            names,
            [
                "cloudflared.com",
                "cloudflared.exe",
                "cloudflared.bat",
                "cloudflared.cmd"
            ]
            .map(PathBuf::from)
        );
    }

    #[test]
    fn a_name_with_an_extension_is_used_as_it_is() {
        let pathext = OsStr::new(".COM;.EXE");
        for given in [
            "cloudflared.exe",
            "cloudflared-2026.8.2.exe",
            "C:/pf/cloudflared.exe",
        ] {
            assert_eq!(
                candidate_names(Path::new(given), Some(pathext)),
                [PathBuf::from(given)]
            );
        }
    }

    #[test]
    fn an_explicit_path_without_extension_also_gets_pathext() {
        let names = candidate_names(Path::new("C:/pf/bin/cloudflared"), Some(OsStr::new(".EXE")));
        assert_eq!(names, [PathBuf::from("C:/pf/bin/cloudflared.exe")]);
    }
}

#[cfg(all(test, unix))]
mod unix_tests {
    use super::*;
    use std::process::Stdio;

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
        assert!(matches!(stopped, Stopped::Gracefully { .. }), "{stopped:?}");
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[test]
    fn a_child_that_ignores_sigterm_is_killed_after_the_grace_period() {
        let mut child = sh("trap '' TERM; while :; do sleep 0.05; done");
        // Give the shell time to install its trap.
        std::thread::sleep(Duration::from_millis(200));
        let started = Instant::now();
        let stopped = stop_child(&mut child, Duration::from_millis(500)).unwrap();
        assert!(matches!(stopped, Stopped::Killed { .. }), "{stopped:?}");
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
        assert!(terminate(0).is_err());
        assert!(terminate(u32::MAX).is_err());
    }

    #[test]
    fn a_program_on_path_needs_its_execute_bit() {
        let dir = std::env::temp_dir().join(format!("postflow-find-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let program = dir.join("cloudflared");
        std::fs::write(&program, "#!/bin/sh\n").unwrap();
        let path = Some(dir.clone().into_os_string());
        assert_eq!(
            find_program_in(Path::new("cloudflared"), path.clone(), None),
            None
        );
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(
            find_program_in(Path::new("cloudflared"), path, None),
            Some(program)
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[cfg(all(test, windows))]
mod windows_tests {
    use super::*;

    #[test]
    fn cloudflared_is_found_as_cloudflared_exe_on_path() {
        let root = std::env::temp_dir().join(format!("postflow-find-{}", std::process::id()));
        let (empty, bin) = (root.join("empty"), root.join("bin"));
        std::fs::create_dir_all(&empty).unwrap();
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::write(bin.join("cloudflared.exe"), b"MZ").unwrap();
        let path = std::env::join_paths([&empty, &bin]).unwrap();
        let pathext = OsStr::new(".COM;.EXE;.BAT;.CMD");

        let found = find_program_in(Path::new("cloudflared"), Some(path.clone()), Some(pathext));
        assert_eq!(found, Some(bin.join("cloudflared.exe")));
        let given = find_program_in(Path::new("cloudflared.exe"), Some(path), Some(pathext));
        assert_eq!(given, Some(bin.join("cloudflared.exe")));
        // An explicit path without extension finds the .exe beside it.
        let explicit = find_program_in(&bin.join("cloudflared"), None, Some(pathext));
        assert_eq!(explicit, Some(bin.join("cloudflared.exe")));
        // A folder of that name is not a program.
        std::fs::create_dir_all(empty.join("tool.exe")).unwrap();
        let folder = find_program_in(Path::new("tool"), Some(empty.into()), Some(pathext));
        assert_eq!(folder, None);
        let _ = std::fs::remove_dir_all(&root);
    }

    /// Not a test of its own: the child of the next one. A test binary installs no console
    /// handler, so Ctrl-Break ends it by Windows' default handler, as it would a program
    /// that takes Ctrl-Break as "stop".
    #[test]
    #[ignore = "run by a_child_in_its_own_group_runs_and_is_stopped_with_the_truth_told"]
    fn sleeps_until_stopped() {
        std::thread::sleep(Duration::from_secs(60));
    }

    /// This test binary, running only the ignored test `name`.
    fn this_binary_running(name: &str) -> Command {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args(["--ignored", "--exact", "--nocapture"])
            .arg(format!("process::windows_tests::{name}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        cmd
    }

    #[test]
    fn a_child_in_its_own_group_runs_and_is_stopped_with_the_truth_told() {
        let mut child =
            spawn_in_own_group(&mut this_binary_running("sleeps_until_stopped")).unwrap();
        let pid = child.id();
        // Resumed after joining the job: it runs.
        std::thread::sleep(Duration::from_millis(500));
        assert!(child.try_wait().unwrap().is_none());
        assert!(is_running(pid));
        let stopped = stop_child(&mut child, Duration::from_secs(5)).unwrap();
        // On a console we share (real Windows) Ctrl-Break stops it; without one (Wine, a
        // service) it is killed at once, and the log line says why.
        match &stopped {
            Stopped::Gracefully { .. } => {}
            Stopped::KilledUnasked { .. } => {
                let said = stopped.describe("sleeper");
                assert!(
                    said.starts_with("could not ask sleeper to stop (Ctrl-Break: "),
                    "{said}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(!is_running(pid));
    }

    /// Not a test of its own: the "postflow" of the next one, which starts a child the way
    /// postflow starts cloudflared, says its pid, and waits to be killed.
    #[test]
    #[ignore = "run by a_child_never_outlives_a_parent_that_is_killed"]
    fn starts_a_sleeper_and_waits() {
        let mut child =
            spawn_in_own_group(&mut this_binary_running("sleeps_until_stopped")).unwrap();
        println!("child pid {}", child.id());
        let _ = child.wait();
    }

    #[test]
    fn a_child_never_outlives_a_parent_that_is_killed() {
        use std::io::BufRead;
        let mut parent = this_binary_running("starts_a_sleeper_and_waits");
        let mut parent = parent.stdout(std::process::Stdio::piped()).spawn().unwrap();
        let out = std::io::BufReader::new(parent.stdout.take().unwrap());
        let child: u32 = out
            .lines()
            .map_while(Result::ok)
            .find_map(|line| line.strip_prefix("child pid ")?.trim().parse().ok())
            .expect("the parent says its child's pid");
        assert!(is_running(child));

        // As `kill -9` or Task Manager would: no chance for the parent to clean up.
        parent.kill().unwrap();
        parent.wait().unwrap();
        let started = Instant::now();
        while is_running(child) {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the child outlived its killed parent"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
