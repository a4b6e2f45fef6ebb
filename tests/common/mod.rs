//! Small helpers for tests that run the real binary: a fresh directory per test, a config
//! writer, and process plumbing. They hide plumbing, never assertions.
#![allow(dead_code)] // each test file uses a different subset

pub mod hooks;
pub mod sim_bins;
#[cfg(windows)]
mod win32;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// A directory of its own for one test, with a `watch` folder inside, removed at the end.
pub struct Sandbox {
    pub dir: PathBuf,
    /// Windows: the processes started for this sandbox (`track`), killed when it is dropped.
    /// Handles, not pids: an open handle keeps its pid from going to another process.
    #[cfg(windows)]
    spawned: std::sync::Mutex<Vec<std::os::windows::io::OwnedHandle>>,
}

impl Sandbox {
    pub fn new(name: &str) -> Sandbox {
        let dir =
            Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("watch")).unwrap();
        Sandbox {
            dir,
            #[cfg(windows)]
            spawned: Default::default(),
        }
    }

    /// Notes a process started for this sandbox (postflow, a sim binary), so that a test that
    /// fails before stopping it does not leave it running. On unix the leftovers are found by
    /// their working directory instead (which also finds their children).
    pub fn track(&self, child: &Child) {
        #[cfg(windows)]
        {
            use std::os::windows::io::AsHandle;
            let handle = child
                .as_handle()
                .try_clone_to_owned()
                .expect("duplicate the handle of a process just started");
            self.spawned.lock().unwrap().push(handle);
        }
        #[cfg(not(windows))]
        let _ = child;
    }

    pub fn watch_root(&self) -> PathBuf {
        self.dir.join("watch")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("postflow-state")
    }

    /// A config that `run` accepts, with nothing listening on fixed ports.
    pub fn base_config(&self) -> Value {
        json!({
            "watch": { "root": "watch", "settle_secs": 1, "rescan_secs": 1 },
            "frameio": {
                "client_id": "test-client",
                "client_secret": "test-secret",
                "redirect_uri": "https://localhost/postflow/callback",
                "account_id": "acc",
                "project_id": "proj"
            },
            "serve": { "listen": "127.0.0.1:0" },
            "dashboard": { "listen": "127.0.0.1:0" },
            "tunnel": { "mode": "off" }
        })
    }

    /// Writes `config` as `config.json` in the sandbox, readable by its owner only (it holds
    /// a secret: mode 0600, or an owner-only DACL on Windows), and returns its path.
    pub fn write_config(&self, config: &Value) -> PathBuf {
        let path = self.dir.join("config.json");
        std::fs::write(&path, serde_json::to_vec_pretty(config).unwrap()).unwrap();
        owner_only(&path);
        path
    }

    /// The real binary, run from the sandbox, with an environment that cannot leak in.
    pub fn postflow(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_postflow"));
        cmd.current_dir(&self.dir)
            .env_remove("RUST_LOG")
            .env_remove("POSTFLOW_CLIENT_SECRET")
            .stdin(Stdio::null());
        cmd
    }

    /// Starts `postflow run config.json`; stdout is piped, stderr (the log) is appended to
    /// `postflow.log` in the sandbox, so a chatty run can never block on a full pipe.
    pub fn spawn_run(&self, config: &Path) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let child = self
            .postflow()
            .arg("run")
            .arg(config)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn_retrying()
            .expect("start postflow");
        self.track(&child);
        child
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("postflow.log")
    }

    /// Everything the runs of this sandbox have logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Waits until the lock file names `pid`, i.e. that instance owns the state dir.
    pub fn wait_for_lock_owner(&self, pid: u32) {
        let lock = self.state_dir().join("lock");
        wait_until(Duration::from_secs(15), "postflow to take the lock", || {
            std::fs::read_to_string(&lock).is_ok_and(|s| s.trim() == pid.to_string())
        });
    }
}

/// Removed at the end, unless `KEEP_SANDBOX` is set: then a failed test's log, ledger and
/// state stay under target/tmp for a person to read.
impl Sandbox {
    /// Kills whatever still runs from the sandbox (a test that failed before it stopped its
    /// postflow, and that postflow's children): every process whose working directory is in
    /// it, found in /proc. A stray instance would otherwise outlive the test and load the
    /// machine for the tests after it.
    #[cfg(unix)]
    fn kill_leftovers(&self) {
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return;
        };
        for entry in procs.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let cwd = std::fs::read_link(entry.path().join("cwd"));
            if pid != std::process::id() && cwd.is_ok_and(|cwd| cwd.starts_with(&self.dir)) {
                let _ = Command::new("kill")
                    .arg("-KILL")
                    .arg(pid.to_string())
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }

    /// Kills the processes `track` noted that still run. Their children go with them:
    /// postflow runs cloudflared in a job object that is killed when postflow's handle to it
    /// closes, whatever ends postflow.
    #[cfg(windows)]
    fn kill_leftovers(&self) {
        let spawned = std::mem::take(&mut *self.spawned.lock().unwrap_or_else(|e| e.into_inner()));
        for process in spawned {
            win32::terminate(&process);
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.kill_leftovers();
        if std::env::var_os("KEEP_SANDBOX").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Makes `path` readable by its owner only, as postflow wants a file holding a secret: mode
/// 0600 on unix, a protected owner-only DACL on Windows.
pub fn owner_only(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    #[cfg(windows)]
    win32::owner_only(path);
}

/// Polls `cond` every 20 ms until it holds, or panics naming what it waited for. It fails at
/// once, with that postflow's log, when a postflow this test keeps running (`expect_running`)
/// has exited meanwhile: nothing it waits for can come then.
pub fn wait_until(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        if let Some(exited) = exited_unexpectedly() {
            if cond() {
                return;
            }
            panic!("{exited} while the test waited for {what}");
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A loopback port for a listener the test may start more than once, e.g. a postflow's
/// dashboard or file server, restarted on the same port after a `kill -9`. It is outside every
/// system's ephemeral range (Linux 32768-60999, Windows and macOS 49152-65535), so no `bind`
/// to port 0 and no outgoing connection (of this test, of another test or binary running
/// beside it) can take it while that listener is down; random, free when chosen, and never
/// handed out twice by one test binary.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    loop {
        let port = 20_000 + (getrandom::u32().expect("the OS's random source") % 12_768) as u16;
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if given.get_or_insert_with(HashSet::new).contains(&port) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.as_mut().unwrap().insert(port);
            return port;
        }
    }
}

/// The postflow instances tests keep running, by pid: the thread that started each, and its
/// log. An instance leaves it when a test stops it (`signal`, `wait_exit`).
static RUNNING: Mutex<Option<HashMap<u32, (std::thread::ThreadId, PathBuf)>>> = Mutex::new(None);

fn running(
) -> std::sync::MutexGuard<'static, Option<HashMap<u32, (std::thread::ThreadId, PathBuf)>>> {
    RUNNING.lock().unwrap_or_else(|e| e.into_inner())
}

/// Notes that the test on this thread keeps postflow `pid` running until it stops it: should
/// that postflow exit by itself (a port it cannot bind, a crash), the waits of this test fail
/// at once with its log (`log`) instead of waiting out their deadlines.
pub fn expect_running(pid: u32, log: &Path) {
    running()
        .get_or_insert_with(HashMap::new)
        .insert(pid, (std::thread::current().id(), log.to_path_buf()));
}

/// The test stops `pid` itself (or waits for it to exit): its exit is no surprise.
fn expect_exit(pid: u32) {
    if let Some(map) = running().as_mut() {
        map.remove(&pid);
    }
}

/// "postflow (pid N) exited" with its log, when a postflow this thread's test keeps running
/// (`expect_running`) is gone.
pub fn exited_unexpectedly() -> Option<String> {
    let me = std::thread::current().id();
    let gone: Vec<(u32, PathBuf)> = running()
        .iter()
        .flatten()
        .filter(|(_, (thread, _))| *thread == me)
        .map(|(pid, (_, log))| (*pid, log.clone()))
        .filter(|(pid, _)| !still_runs(*pid))
        .collect();
    let (pid, log) = gone.into_iter().next()?;
    expect_exit(pid);
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    Some(format!(
        "postflow (pid {pid}) exited by itself; its log (stderr):\n{log}\n"
    ))
}

#[cfg(any(target_os = "linux", windows))]
fn still_runs(pid: u32) -> bool {
    is_alive(pid)
}

/// Elsewhere the harness cannot tell (no /proc): the deadlines alone end such a wait.
#[cfg(not(any(target_os = "linux", windows)))]
fn still_runs(_pid: u32) -> bool {
    true
}

/// Waits for a child to exit, up to `limit`; kills it and panics if it does not.
pub fn wait_exit(child: &mut Child, limit: Duration) -> ExitStatus {
    expect_exit(child.id());
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("process {} did not exit within {limit:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends a signal by name (`TERM`, `KILL`, …) with the system's `kill` command.
#[cfg(unix)]
pub fn signal(pid: u32, name: &str) {
    if ["KILL", "TERM", "INT"].contains(&name) {
        expect_exit(pid);
    }
    let ok = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill")
        .success();
    assert!(ok, "kill -{name} {pid} failed");
}

/// How postflow's log names the stop `signal(pid, "TERM")` asks for: a signal on unix, the
/// named stop event (what `postflow stop` sets) on Windows.
#[cfg(unix)]
pub const STOPPING: &str = "stopping (signal received)";
#[cfg(windows)]
pub const STOPPING: &str = "stopping (asked by `postflow stop`)";

/// What a signal by name means to a postflow on Windows: `TERM` and `INT` are the graceful
/// stop a service stop or a console Ctrl-C gives, asked through postflow's named event
/// `Local\postflow-stop-<pid>`; `KILL` is `TerminateProcess`. Windows has no counterpart for
/// the others (`STOP`, `USR1`, …): a test that needs one is not run on Windows.
#[cfg(windows)]
pub fn signal(pid: u32, name: &str) {
    if ["KILL", "TERM", "INT"].contains(&name) {
        expect_exit(pid);
    }
    match name {
        "TERM" | "INT" => win32::ask_to_stop(pid),
        "KILL" => win32::terminate_pid(pid),
        other => {
            panic!("signal {other} has no Windows counterpart; this test must not run on Windows")
        }
    }
}

/// True while `pid` is a running process (on Linux: not a zombie).
#[cfg(target_os = "linux")]
pub fn is_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

/// True while `pid` is a running process.
#[cfg(windows)]
pub fn is_alive(pid: u32) -> bool {
    win32::is_alive(pid)
}

/// Starting a process, again when Wine's CreateProcess fails with ERROR_INTERNAL_ERROR (1359):
/// seen once in a CI run under load (`postflow auth` never started); Windows itself does not
/// do that, and nothing ran, so starting again is safe. Any other error is returned at once.
pub trait SpawnExt {
    fn spawn_retrying(&mut self) -> std::io::Result<Child>;
    fn output_retrying(&mut self) -> std::io::Result<std::process::Output>;
}

impl SpawnExt for Command {
    fn spawn_retrying(&mut self) -> std::io::Result<Child> {
        retry_wine_spawn(|| self.spawn())
    }

    fn output_retrying(&mut self) -> std::io::Result<std::process::Output> {
        retry_wine_spawn(|| self.output())
    }
}

fn retry_wine_spawn<T>(mut start: impl FnMut() -> std::io::Result<T>) -> std::io::Result<T> {
    const ERROR_INTERNAL_ERROR: i32 = 1359;
    for _ in 0..4 {
        match start() {
            Err(e) if cfg!(windows) && e.raw_os_error() == Some(ERROR_INTERNAL_ERROR) => {
                std::thread::sleep(Duration::from_millis(250));
            }
            other => return other,
        }
    }
    start()
}
