//! The commands: `run` wires the threads together and takes them down in order; `check` tells a
//! person what is ready and what is not.

use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, select, unbounded, Receiver, Sender};

use crate::config::{Config, ConfigError, TunnelMode};
use crate::dashboard::{self, Dashboard};
use crate::events::{self, Hub};
use crate::ledger::{Job, Ledger};
use crate::logtail;
use crate::notify;
use crate::queue::{self, QueueMsg, QueueSettings};
use crate::statedir::{LockError, StateDir};
use crate::watch;

/// Exit codes of the contract.
pub const EXIT_OK: u8 = 0;
pub const EXIT_FAILURE: u8 = 1;
pub const EXIT_USAGE: u8 = 2;

/// How long shutdown may take before we give up on a stuck thread and exit anyway. Nothing is
/// lost by exiting: every ledger write is already on disk.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(20);

/// Loads the config or prints the one-line error; `Err` carries the exit code.
pub fn load_config(path: &Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(EXIT_USAGE)
    })
}

fn print_config_error(e: &ConfigError) -> ExitCode {
    eprintln!("{e}");
    ExitCode::from(EXIT_USAGE)
}

/// env_logger on stderr with timestamps (INFO and above also go to the page once the hub is
/// attached); `RUST_LOG` overrides `log_level`.
pub fn init_logging(config: &Config) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| config.log_level.clone());
    logtail::init(&filter);
}

/// Makes any panic end the process with a non-zero code, in every build profile, so that a
/// watchdog restarts us instead of a silently dead thread. (The release profile also sets
/// `panic = "abort"`; this covers debug builds, which the tests run.)
pub fn abort_on_panic() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        std::process::abort();
    }));
}

/// Started threads, each reporting on `exited` when it ends, however it ends.
struct Threads {
    running: Vec<(&'static str, JoinHandle<()>)>,
    exited_tx: Sender<&'static str>,
    exited_rx: Receiver<&'static str>,
}

struct ExitNotice(&'static str, Sender<&'static str>);

impl Drop for ExitNotice {
    fn drop(&mut self) {
        let _ = self.1.send(self.0);
    }
}

impl Threads {
    fn new() -> Threads {
        let (exited_tx, exited_rx) = unbounded();
        Threads {
            running: Vec::new(),
            exited_tx,
            exited_rx,
        }
    }

    fn spawn(&mut self, name: &'static str, f: impl FnOnce() + Send + 'static) {
        let notice = ExitNotice(name, self.exited_tx.clone());
        let handle = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                let _notice = notice;
                f();
            })
            .unwrap_or_else(|e| panic!("cannot start the {name} thread: {e}"));
        self.running.push((name, handle));
    }

    /// Waits for every thread to end, up to the deadline; names the ones that did not.
    fn join_all(self, deadline: Instant) {
        let Threads {
            running, exited_rx, ..
        } = self;
        let mut left: Vec<&str> = running.iter().map(|(n, _)| *n).collect();
        while !left.is_empty() {
            let wait = deadline.saturating_duration_since(Instant::now());
            match exited_rx.recv_timeout(wait) {
                Ok(name) => left.retain(|n| *n != name),
                Err(_) => {
                    log::warn!(
                        "shutdown: still waiting for {}; exiting anyway",
                        left.join(", ")
                    );
                    return;
                }
            }
        }
        for (_, handle) in running {
            let _ = handle.join();
        }
    }
}

/// `postflow run`: the pipeline, until Ctrl-C or SIGTERM.
pub fn run(config: Config) -> ExitCode {
    if let Err(e) = config.require_for_run() {
        return print_config_error(&e);
    }
    init_logging(&config);
    abort_on_panic();
    for w in &config.warnings {
        log::warn!("{w}");
    }

    // Before anything else: a signal must never find us without a handler, even while we
    // take the lock (tests and watchdogs signal as soon as the lock names us).
    let (signal_tx, signal_rx) = bounded::<()>(1);
    if let Err(e) = ctrlc::set_handler(move || {
        let _ = signal_tx.try_send(());
    }) {
        log::error!("cannot install the signal handler: {e}");
        return ExitCode::from(EXIT_FAILURE);
    }

    let state = match StateDir::lock(&config.state_dir) {
        Ok(s) => s,
        Err(LockError::AlreadyRunning(pid)) => {
            // Not an error: cron starts us every minute and this is the normal answer.
            println!("{}", LockError::AlreadyRunning(pid));
            return ExitCode::from(EXIT_OK);
        }
        Err(e) => {
            log::error!("{e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let (ledger, report) = match Ledger::open(&state.ledger_path()) {
        Ok(l) => l,
        Err(e) => {
            log::error!("ledger {}: {e}", state.ledger_path().display());
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    if report.dropped_bytes > 0 || report.damaged > 0 {
        log::warn!(
            "ledger: recovered after an unclean stop ({} torn bytes dropped, {} damaged records skipped)",
            report.dropped_bytes,
            report.damaged
        );
    }
    log::info!(
        "postflow {} watching {} ({} jobs in the ledger, state in {})",
        env!("CARGO_PKG_VERSION"),
        config.watch.root.display(),
        report.jobs,
        state.path().display()
    );

    // Closing `stop_tx` (by dropping it) tells every thread to stop: a closed channel wakes
    // every receiver at once.
    let (stop_tx, stop_rx) = bounded::<()>(0);
    let (hub, hub_inbox) = Hub::new();
    logtail::attach(hub.clone());
    let (queue_tx, queue_rx) = unbounded::<QueueMsg>();
    let state = Arc::new(state);
    let dead_threads = Arc::new(Mutex::new(Vec::new()));

    let dash = Dashboard::bind(
        &config.dashboard,
        dashboard::Deps {
            hub: hub.clone(),
            queue: queue_tx.clone(),
            state_dir: Arc::clone(&state),
            dead_threads: Arc::clone(&dead_threads),
            login: None,
        },
    );
    let dash = match dash {
        Ok(d) => d,
        Err(e) => {
            log::error!("dashboard.listen {}: {e}", config.dashboard.listen);
            logtail::detach();
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    // Upload workers take jobs from here (rendezvous: see queue.rs). Until they exist nobody
    // receives, so the queue hands out nothing; the receiver lives until shutdown.
    let (jobs_tx, _jobs_rx) = bounded::<Job>(0);
    let watch_start = watch::StartState::from_ledger(&ledger);

    let mut threads = Threads::new();
    threads.spawn("hub", move || events::run_hub(hub_inbox));
    {
        let (server, follower) = dash.into_loops();
        let stop = stop_rx.clone();
        threads.spawn("dashboard", move || server.run(stop));
        let stop = stop_rx.clone();
        threads.spawn("dashboard-events", move || follower.run(stop));
    }
    {
        let (stop, hub) = (stop_rx.clone(), hub.clone());
        let settings = QueueSettings::from_config(&config);
        threads.spawn("queue", move || {
            queue::run_queue(ledger, queue_rx, stop, hub, settings, jobs_tx)
        });
    }
    {
        let (stop, hub, queue) = (stop_rx.clone(), hub.clone(), queue_tx.clone());
        let watch_config = config.watch.clone();
        threads.spawn("watcher", move || {
            watch::run_watcher(watch_config, watch_start, queue, stop, hub)
        });
    }
    if let Some((url, notices_tx, notices_rx)) = notify::channel(&config.notify) {
        let (stop, hub) = (stop_rx.clone(), hub.clone());
        threads.spawn("notify", move || {
            let notices = notify::Notices::new(notify::TUNNEL_DOWN_AFTER);
            notify::run_notifier(notices, hub, notices_tx, stop)
        });
        let (stop, format) = (stop_rx.clone(), config.notify.format);
        threads.spawn("notify-send", move || {
            notify::run_sender(url, format, notices_rx, stop)
        });
    }
    drop(hub);

    let code = select! {
        recv(signal_rx) -> _ => {
            log::info!("stopping (signal received)");
            EXIT_OK
        }
        recv(threads.exited_rx) -> name => {
            let name = name.unwrap_or("?");
            if let Ok(mut dead) = dead_threads.lock() {
                dead.push(name);
            }
            log::error!("the {name} thread stopped unexpectedly; exiting so a watchdog restarts postflow");
            EXIT_FAILURE
        }
    };
    drop(stop_tx);
    drop(queue_tx);
    logtail::detach();
    threads.join_all(Instant::now() + SHUTDOWN_DEADLINE);
    log::info!("stopped");
    drop(state);
    ExitCode::from(code)
}

/// `postflow status`: asks the running instance's `/api/status` and prints a short summary.
pub fn status(config: &Config) -> ExitCode {
    // An instance listening on every address is reachable on loopback.
    let mut addr = config.dashboard.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let url = format!("http://{addr}/api/status");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut req = agent.get(&url);
    if let Some(token) = &config.dashboard.token {
        req = req.header("Authorization", &format!("Bearer {token}"));
    }
    let mut resp = match req.call() {
        Ok(r) => r,
        Err(ureq::Error::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            println!("postflow is not running (nothing answers on http://{addr})");
            return ExitCode::from(EXIT_FAILURE);
        }
        Err(e) => {
            eprintln!("postflow status: {url}: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    let body: serde_json::Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => {
            eprintln!(
                "postflow status: {url} answered {status} with something else than JSON: {e}"
            );
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    if status != 200 {
        eprintln!(
            "postflow status: {url} answered {status}: {}",
            body["error"].as_str().unwrap_or("")
        );
        return ExitCode::from(EXIT_FAILURE);
    }
    print!("{}", dashboard::summary(&body, &format!("http://{addr}")));
    ExitCode::from(EXIT_OK)
}

/// One line of the `check` checklist.
struct Check {
    ok: bool,
    what: String,
}

/// `postflow check`: what can be verified from here, one line each; exit 0 only if all pass.
pub fn check(config: Config) -> ExitCode {
    let mut lines = vec![Check {
        ok: true,
        what: format!("config {} is valid", config.path.display()),
    }];
    for w in &config.warnings {
        lines.push(Check {
            ok: false,
            what: w.clone(),
        });
    }
    let ids = config.require_for_run();
    lines.push(Check {
        ok: ids.is_ok(),
        what: match ids {
            Ok(()) => "Frame.io client and project ids are set".into(),
            Err(e) => format!("{}: {}", e.key, e.message),
        },
    });
    lines.push(match std::fs::read_dir(&config.watch.root) {
        Ok(entries) => Check {
            ok: true,
            what: format!(
                "watch.root {} is readable ({} entries)",
                config.watch.root.display(),
                entries.count()
            ),
        },
        Err(e) => Check {
            ok: false,
            what: format!("watch.root {}: {e}", config.watch.root.display()),
        },
    });
    lines.push(check_state_dir(&config.state_dir));
    if matches!(config.tunnel.mode, TunnelMode::Quick | TunnelMode::Named) {
        lines.push(match find_program(&config.tunnel.cloudflared) {
            Some(p) => Check {
                ok: true,
                what: format!("cloudflared found at {}", p.display()),
            },
            None => Check {
                ok: false,
                what: format!(
                    "cloudflared not found (tunnel.cloudflared = {:?}); install it from \
                     Cloudflare's packages, or set tunnel.mode to \"off\" to upload without a tunnel",
                    config.tunnel.cloudflared.display().to_string()
                ),
            },
        });
    }
    let mut all_ok = true;
    for line in &lines {
        all_ok &= line.ok;
        println!(
            "{} {}",
            if line.ok { "[ok]  " } else { "[FAIL]" },
            line.what
        );
    }
    ExitCode::from(if all_ok { EXIT_OK } else { EXIT_FAILURE })
}

fn check_state_dir(path: &Path) -> Check {
    let probe = path.join(".check-probe");
    let result = std::fs::create_dir_all(path)
        .and_then(|()| std::fs::write(&probe, b"ok"))
        .and_then(|()| std::fs::remove_file(&probe));
    match result {
        Ok(()) => Check {
            ok: true,
            what: format!("state_dir {} is writable", path.display()),
        },
        Err(e) => Check {
            ok: false,
            what: format!("state_dir {}: {e}", path.display()),
        },
    }
}

/// Finds an executable: a path as given, or a bare name on PATH.
pub fn find_program(program: &Path) -> Option<std::path::PathBuf> {
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
