//! The commands: `run` wires the threads together and takes them down in order; `check` tells a
//! person what is ready and what is not.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, select, unbounded, Receiver, RecvTimeoutError, Sender};

use crate::config::{Config, ConfigError, TunnelMode};
use crate::dashboard::{self, Dashboard};
use crate::events::{self, ComponentState, Event, Hub};
use crate::frameio::api::{Account, Api, RetryPolicy};
use crate::frameio::auth::{code_from_paste, Auth, AuthState};
use crate::ledger::{Job, JobState, Ledger};
use crate::links::Links;
use crate::logtail;
use crate::notify;
use crate::queue::{self, QueueMsg, QueueSettings};
use crate::serve::{FileServer, ServeEvent, ServeOptions};
use crate::statedir::{LockError, StateDir};
use crate::tunnel::{self, ProbeLink, ProbeSource, TunnelHandle};
use crate::upload::{self, PublicUrl, Settings as UploadSettings, Uploader};
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
    let pipeline = match Pipeline::start(&config, Scope::Everything) {
        Ok(p) => p,
        Err(NotStarted::AlreadyRunning(e)) => {
            // Not an error: cron starts us every minute and this is the normal answer.
            println!("{e}");
            return ExitCode::from(EXIT_OK);
        }
        Err(NotStarted::Exit(code)) => return code,
    };
    let code = match pipeline.wait(Duration::from_secs(3600), || None) {
        Stop::Signal | Stop::Finished(_) => EXIT_OK,
        Stop::ThreadDied => EXIT_FAILURE,
    };
    pipeline.shut_down(code)
}

/// Which jobs a pipeline uploads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Scope {
    /// `run`: every job.
    Everything,
    /// A one-off `upload`: only the jobs enqueued by hand; the watcher still records what it
    /// sees (so the ledger stays true), and a later `run` uploads it.
    Enqueued,
}

/// Why `Pipeline::wait` returned.
enum Stop {
    /// Ctrl-C or SIGTERM.
    Signal,
    /// A thread ended on its own (a bug): exit non-zero so a watchdog restarts us.
    ThreadDied,
    /// The caller's condition holds; exit with this code.
    Finished(u8),
}

/// Why `Pipeline::start` returned without a pipeline.
enum NotStarted {
    /// Another instance owns the state dir.
    AlreadyRunning(LockError),
    /// Already reported; exit with this code.
    Exit(ExitCode),
}

/// The running threads of `run` (or of a one-off `upload`) and what it takes to stop them.
struct Pipeline {
    threads: Threads,
    signal_rx: Receiver<()>,
    /// Dropping it tells every thread to stop: a closed channel wakes every receiver at once.
    stop_tx: Sender<()>,
    queue_tx: Sender<QueueMsg>,
    server: FileServer,
    state: Arc<StateDir>,
    dead_threads: Arc<Mutex<Vec<&'static str>>>,
}

impl Pipeline {
    /// Takes the state dir's lock and starts every thread: hub, dashboard, queue, watcher,
    /// tunnel, notifier, upload workers.
    fn start(config: &Config, scope: Scope) -> Result<Pipeline, NotStarted> {
        let exit = |code: u8| NotStarted::Exit(ExitCode::from(code));
        if let Err(e) = config.require_for_run() {
            return Err(NotStarted::Exit(print_config_error(&e)));
        }
        init_logging(config);
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
            return Err(exit(EXIT_FAILURE));
        }

        let state = match StateDir::lock(&config.state_dir) {
            Ok(s) => s,
            Err(e @ LockError::AlreadyRunning(_)) => return Err(NotStarted::AlreadyRunning(e)),
            Err(e) => {
                log::error!("{e}");
                return Err(exit(EXIT_FAILURE));
            }
        };
        let (ledger, report) = match Ledger::open(&state.ledger_path()) {
            Ok(l) => l,
            Err(e) => {
                log::error!("ledger {}: {e}", state.ledger_path().display());
                return Err(exit(EXIT_FAILURE));
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
            "postflow {} {} {} ({} jobs in the ledger, state in {})",
            env!("CARGO_PKG_VERSION"),
            match scope {
                Scope::Everything => "watching",
                Scope::Enqueued => "uploading files by hand from",
            },
            config.watch.root.display(),
            report.jobs,
            state.path().display()
        );

        let (stop_tx, stop_rx) = bounded::<()>(0);
        let (hub, hub_inbox) = Hub::new();
        logtail::attach(hub.clone());
        let (queue_tx, queue_rx) = unbounded::<QueueMsg>();
        let state = Arc::new(state);
        let dead_threads = Arc::new(Mutex::new(Vec::new()));

        // Upload workers take jobs from here (rendezvous: see queue.rs). Until they exist nobody
        // receives, so the queue hands out nothing; the receiver lives until shutdown.
        let (jobs_tx, jobs_rx) = bounded::<Job>(0);
        let watch_start = watch::StartState::from_ledger(&ledger);

        let auth = Auth::new(&config.frameio, state.path(), Some(hub.clone()));
        let api = Api::new(&config.frameio, auth.clone());
        let dash = Dashboard::bind(
            &config.dashboard,
            dashboard::Deps {
                hub: hub.clone(),
                queue: queue_tx.clone(),
                state_dir: Arc::clone(&state),
                dead_threads: Arc::clone(&dead_threads),
                login: Some(Arc::new(dashboard::login::AuthLogin::new(auth.clone()))),
            },
        );
        let dash = match dash {
            Ok(d) => d,
            Err(e) => {
                log::error!("dashboard.listen {}: {e}", config.dashboard.listen);
                logtail::detach();
                return Err(exit(EXIT_FAILURE));
            }
        };
        // The file server's events: progress goes to whoever displays it; serving never waits
        // on this channel (a full channel drops progress samples, never bytes).
        let (serve_tx, serve_rx) = bounded::<ServeEvent>(1024);
        let server = match FileServer::start(
            ServeOptions {
                listen: config.serve.listen,
                link_ttl: config.serve.link_ttl,
                max_connections: config.serve.max_connections,
                ..ServeOptions::default()
            },
            serve_tx,
        ) {
            Ok(s) => s,
            Err(e) => {
                log::error!("serve.listen {}: cannot listen: {e}", config.serve.listen);
                return Err(exit(EXIT_FAILURE));
            }
        };
        log::info!("file server listening on {}", server.local_addr());
        hub.publish(Event::Component {
            name: "server",
            state: ComponentState::Up,
            detail: format!("listening on {}", server.local_addr()),
        });
        // The tunnel publishes the file server; the uploader reads the public URL from the same
        // handle (None while the tunnel is down or off).
        let tunnel_url = TunnelHandle::default();
        let public_url: PublicUrl = {
            let handle = tunnel_url.clone();
            Arc::new(move || handle.current_url())
        };
        let uploader = Arc::new(Uploader::new(
            api,
            server.links(),
            public_url,
            UploadSettings {
                account_id: config.frameio.account_id.clone(),
                project_id: config.frameio.project_id.clone(),
                mode: config.frameio.upload,
                watch_root: config.watch.root.clone(),
                state_dir: state.path().to_path_buf(),
                parallel_parts: config.upload.parallel_parts,
                poll_min: Duration::ZERO,
                poll_max: Duration::ZERO,
                stall: Duration::ZERO,
            }
            .timings(),
            queue_tx.clone(),
            stop_rx.clone(),
        ));

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
            let mut settings = QueueSettings::from_config(config);
            settings.only_enqueued = scope == Scope::Enqueued;
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
        {
            let supervisor = tunnel::Supervisor {
                tunnel: config.tunnel.clone(),
                origin: tunnel_origin(server.local_addr()),
                state_dir: state.path().to_path_buf(),
                hub: hub.clone(),
                handle: tunnel_url,
                probe: probe_source(server.links(), state.path()),
                timing: tunnel::Timing::from_env(),
            };
            let stop = stop_rx.clone();
            threads.spawn("tunnel", move || tunnel::run_tunnel(supervisor, stop));
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
        {
            let (stop, hub) = (stop_rx.clone(), hub.clone());
            threads.spawn("serve-events", move || {
                forward_serve_events(serve_rx, hub, stop)
            });
        }
        for i in 1..=config.upload.concurrency {
            let (up, jobs) = (Arc::clone(&uploader), jobs_rx.clone());
            // Thread names must be 'static and unique; a handful of small leaks at start is fine.
            let name: &'static str = Box::leak(format!("upload-{i}").into_boxed_str());
            threads.spawn(name, move || upload::run_worker(up, jobs));
        }
        drop(jobs_rx);
        // The workers own the uploader now. Its Frame.io client holds a hub handle, and the hub
        // thread ends only when every handle is gone, so main must not keep one.
        drop(uploader);
        {
            let (stop, queue) = (stop_rx.clone(), queue_tx.clone());
            threads.spawn("auth-watch", move || watch_auth(auth, queue, stop));
        }
        drop(hub);
        Ok(Pipeline {
            threads,
            signal_rx,
            stop_tx,
            queue_tx,
            server,
            state,
            dead_threads,
        })
    }

    /// Waits for a signal, a thread's death, or `finished()` (asked every `tick`) to return an
    /// exit code.
    fn wait(&self, tick: Duration, mut finished: impl FnMut() -> Option<u8>) -> Stop {
        loop {
            select! {
                recv(self.signal_rx) -> _ => {
                    log::info!("stopping (signal received)");
                    return Stop::Signal;
                }
                recv(self.threads.exited_rx) -> name => {
                    let name = name.unwrap_or("?");
                    if let Ok(mut dead) = self.dead_threads.lock() {
                        dead.push(name);
                    }
                    log::error!("the {name} thread stopped unexpectedly; exiting so a watchdog restarts postflow");
                    return Stop::ThreadDied;
                }
                default(tick) => {
                    if let Some(code) = finished() {
                        return Stop::Finished(code);
                    }
                }
            }
        }
    }

    /// Stops every thread in order, flushes the ledger (the queue does on its way out) and
    /// releases the lock.
    fn shut_down(self, code: u8) -> ExitCode {
        let Pipeline {
            threads,
            stop_tx,
            queue_tx,
            server,
            state,
            ..
        } = self;
        drop(stop_tx);
        drop(queue_tx);
        logtail::detach();
        threads.join_all(Instant::now() + SHUTDOWN_DEADLINE);
        server.stop();
        log::info!("stopped");
        drop(state);
        ExitCode::from(code)
    }
}

/// Where the tunnel forwards to: the file server's bound address. `POSTFLOW_TEST_TUNNEL_ORIGIN`
/// (test-only, warned about) points it at a stand-in origin so the supervisor's own tests
/// control what the public name serves.
fn tunnel_origin(server: SocketAddr) -> SocketAddr {
    match std::env::var("POSTFLOW_TEST_TUNNEL_ORIGIN") {
        Ok(v) => match v.parse() {
            Ok(addr) => {
                log::warn!(
                    "POSTFLOW_TEST_TUNNEL_ORIGIN: the tunnel forwards to a test origin {addr}"
                );
                addr
            }
            Err(_) => server,
        },
        Err(_) => server,
    }
}

/// What named and external tunnels fetch through their public URL before they count as up:
/// a link on our own file server to a small file of random content in the state dir, so a
/// URL that reaches someone else's server (or a stale proxy) can never pass. Each probe gets
/// a fresh link and revokes the previous one. (Tests may substitute their own probe with
/// `POSTFLOW_TEST_TUNNEL_PROBE_*`, see `tunnel::probe_from_test_env`.)
fn probe_source(links: Links, state_dir: &Path) -> ProbeSource {
    if std::env::var_os("POSTFLOW_TEST_TUNNEL_PROBE_PATH").is_some() {
        return tunnel::probe_from_test_env();
    }
    let file = state_dir.join("probe.txt");
    let body = format!("postflow probe {}\n", crate::frameio::random_hex(16));
    if let Err(e) = std::fs::write(&file, &body) {
        log::warn!("cannot write the tunnel probe {}: {e}", file.display());
    }
    let last: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);
    Arc::new(move || {
        let link = links.register(PROBE_JOB, &file).ok()?;
        let mut last = last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = last.replace(link.token.clone()) {
            links.revoke(&old);
        }
        Some(ProbeLink {
            path: link.url_path,
            expected: body.clone().into_bytes(),
        })
    })
}

/// The job id probe links are registered under (real jobs start at 1).
pub const PROBE_JOB: u64 = 0;
/// Where the running instance's dashboard answers: `dashboard.listen`, on loopback when it
/// listens on every address.
fn dashboard_addr(config: &Config) -> SocketAddr {
    let mut addr = config.dashboard.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    addr
}

/// The client of `status` and `upload` for the running instance's API.
fn api_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .into()
}

/// `postflow status`: asks the running instance's `/api/status` and prints a short summary.
pub fn status(config: &Config) -> ExitCode {
    let addr = dashboard_addr(config);
    let url = format!("http://{addr}/api/status");
    let agent = api_agent();
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

/// `postflow upload CONFIG PATH…`: queues files inside `watch.root` now. A running instance
/// is asked through its API (`POST /api/jobs`) and the command returns at once; when none
/// runs, this process runs the pipeline for just these files and exits when each is done,
/// failed or skipped. A path that is not a file inside the root refuses the whole command
/// (exit 2) before anything is queued.
pub fn upload(config: Config, paths: &[PathBuf]) -> ExitCode {
    let files = match files_inside_root(&config, paths) {
        Ok(f) => f,
        Err(message) => {
            eprintln!("postflow upload: {message}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match enqueue_in_running_instance(&config, &files) {
        Asked::Answered(code) => code,
        Asked::NotRunning => upload_one_off(&config, files),
    }
}

/// Each path made absolute (relative ones are relative to the current directory, as in any
/// command), canonical, a file, and inside `watch.root`; else what is wrong with the first
/// one that is not.
fn files_inside_root(config: &Config, paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let root = &config.watch.root;
    let canonical_root =
        std::fs::canonicalize(root).map_err(|e| format!("watch.root {}: {e}", root.display()))?;
    let mut files = Vec::with_capacity(paths.len());
    for path in paths {
        let file = std::fs::canonicalize(path).map_err(|e| format!("{}: {e}", path.display()))?;
        if !file.starts_with(&canonical_root) {
            return Err(format!(
                "{} is outside watch.root ({}): only files inside it can be uploaded; nothing \
                 was queued",
                path.display(),
                root.display()
            ));
        }
        if !file.is_file() {
            return Err(format!(
                "{} is not a file; nothing was queued",
                path.display()
            ));
        }
        files.push(file);
    }
    Ok(files)
}

enum Asked {
    /// The instance answered (or failed in a way worth reporting): exit with this.
    Answered(ExitCode),
    /// Nothing listens on `dashboard.listen`.
    NotRunning,
}

fn enqueue_in_running_instance(config: &Config, files: &[PathBuf]) -> Asked {
    let addr = dashboard_addr(config);
    if addr.port() == 0 {
        // A dashboard on a random port cannot be found: no instance can be asked.
        return Asked::NotRunning;
    }
    let url = format!("http://{addr}/api/jobs");
    let paths: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    let agent = api_agent();
    let mut req = agent.post(&url).header("Content-Type", "application/json");
    if let Some(token) = &config.dashboard.token {
        req = req.header("Authorization", &format!("Bearer {token}"));
    }
    let fail = |message: String| {
        eprintln!("postflow upload: {message}");
        Asked::Answered(ExitCode::from(EXIT_FAILURE))
    };
    let mut resp = match req.send(serde_json::json!({ "paths": paths }).to_string()) {
        Ok(r) => r,
        Err(ureq::Error::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            return Asked::NotRunning
        }
        Err(e) => return fail(format!("{url}: {e}")),
    };
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    let body: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    let Some(results) = body["results"].as_array().filter(|_| status == 200) else {
        return fail(format!(
            "{url} answered {status}: {}",
            body["error"].as_str().unwrap_or(text.trim())
        ));
    };
    let mut all_ok = true;
    for r in results {
        let path = r["path"].as_str().unwrap_or("?");
        match r["id"].as_u64() {
            Some(id) => {
                println!("queued {path} (job {id}) in the running postflow at http://{addr}")
            }
            None => {
                all_ok = false;
                println!("not queued {path}: {}", r["error"].as_str().unwrap_or("?"));
            }
        }
    }
    Asked::Answered(ExitCode::from(if all_ok { EXIT_OK } else { EXIT_FAILURE }))
}

/// How long to wait for the queue's answer in a one-off upload (it answers in milliseconds
/// unless the disk hangs).
const QUEUE_ANSWER: Duration = Duration::from_secs(30);

/// No instance runs: run the pipeline until the files are done, failed or skipped.
fn upload_one_off(config: &Config, files: Vec<PathBuf>) -> ExitCode {
    let pipeline = match Pipeline::start(config, Scope::Enqueued) {
        Ok(p) => p,
        Err(NotStarted::AlreadyRunning(e)) => {
            eprintln!(
                "postflow upload: postflow is {e} but its dashboard does not answer on \
                 http://{}; try again when it does",
                dashboard_addr(config)
            );
            return ExitCode::from(EXIT_FAILURE);
        }
        Err(NotStarted::Exit(code)) => return code,
    };
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    let (reply_tx, reply_rx) = bounded(1);
    let _ = pipeline.queue_tx.send(QueueMsg::Enqueue {
        paths: files,
        reply: reply_tx,
    });
    let mut ids = Vec::new();
    let mut code = EXIT_OK;
    match reply_rx.recv_timeout(QUEUE_ANSWER) {
        Ok(results) => {
            for (name, result) in names.iter().zip(results) {
                match result {
                    Ok(id) => ids.push(id),
                    Err(e) => {
                        println!("not queued {name}: {e}");
                        code = EXIT_FAILURE;
                    }
                }
            }
        }
        Err(_) => {
            log::error!("the queue did not answer");
            return pipeline.shut_down(EXIT_FAILURE);
        }
    }
    let queue = pipeline.queue_tx.clone();
    let finished = || -> Option<u8> {
        let (tx, rx) = bounded(1);
        queue.send(QueueMsg::Stats(tx)).ok()?;
        if rx.recv_timeout(QUEUE_ANSWER).ok()?.waiting_for_auth {
            println!(
                "Frame.io sign-in is needed: run `postflow auth {}`, then upload again",
                config.path.display()
            );
            return Some(EXIT_FAILURE);
        }
        let (tx, rx) = bounded(1);
        queue.send(QueueMsg::Jobs(tx)).ok()?;
        let jobs = rx.recv_timeout(QUEUE_ANSWER).ok()?;
        let ours: Vec<&Job> = jobs.iter().filter(|j| ids.contains(&j.id)).collect();
        let ended = |j: &&Job| {
            matches!(
                j.state,
                JobState::Done | JobState::Failed | JobState::Skipped
            )
        };
        if !ours.iter().all(ended) {
            return None;
        }
        let mut code = EXIT_OK;
        for job in ours {
            if job.state == JobState::Done {
                println!(
                    "uploaded {}{}",
                    job.path,
                    job.view_url
                        .as_deref()
                        .map(|u| format!(": {u}"))
                        .unwrap_or_default()
                );
            } else {
                code = EXIT_FAILURE;
                println!(
                    "not uploaded {} ({}): {}",
                    job.path,
                    job.state.as_str(),
                    job.reason.as_deref().unwrap_or("")
                );
            }
        }
        Some(code)
    };
    let ended = match pipeline.wait(Duration::from_millis(500), finished) {
        Stop::Finished(code) => code,
        // Interrupted: the jobs stay in the ledger, and the next `run` finishes them.
        Stop::Signal | Stop::ThreadDied => EXIT_FAILURE,
    };
    pipeline.shut_down(code.max(ended))
}

/// Passes the file server's progress to the hub (the page's progress bars, `/metrics`).
fn forward_serve_events(events: Receiver<ServeEvent>, hub: Hub, stop: Receiver<()>) {
    loop {
        select! {
            recv(events) -> ev => match ev {
                // The tunnel's probe link is not a job: nothing to show.
                Ok(ServeEvent::Transfer { job: PROBE_JOB, .. }) => {}
                Ok(ServeEvent::Transfer { job, covered, total, bytes_per_sec }) => {
                    hub.publish(Event::Transfer { job, covered, total, bytes_per_sec });
                }
                // Milestones are already in the log; a changed file is the uploader's business.
                Ok(ServeEvent::Milestone { .. } | ServeEvent::FileChanged { .. }) => {}
                Err(_) => return,
            },
            recv(stop) -> _ => return,
        }
    }
}

/// Tells the queue when Frame.io sign-in comes back (after `postflow auth` or the dashboard's
/// "Connect Frame.io"), so jobs held for it resume without a restart.
fn watch_auth(auth: Auth, queue: Sender<QueueMsg>, stop: Receiver<()>) {
    let mut was_connected = auth.state() == AuthState::Connected;
    loop {
        if stop.recv_timeout(Duration::from_secs(2)) != Err(RecvTimeoutError::Timeout) {
            return;
        }
        let connected = auth.state() == AuthState::Connected;
        if connected && !was_connected {
            log::info!("Frame.io sign-in is back: resuming uploads");
            let _ = queue.send(QueueMsg::AuthRestored);
        }
        was_connected = connected;
    }
}

/// One line of the `check` checklist, with indented lines under it (ids to choose from).
struct Check {
    ok: bool,
    what: String,
    more: Vec<String>,
}

impl Check {
    fn pass(what: impl Into<String>) -> Check {
        Check {
            ok: true,
            what: what.into(),
            more: Vec::new(),
        }
    }

    fn fail(what: impl Into<String>) -> Check {
        Check {
            ok: false,
            what: what.into(),
            more: Vec::new(),
        }
    }

    fn with(mut self, more: Vec<String>) -> Check {
        self.more = more;
        self
    }
}

/// `postflow check`: what can be verified from here, one line each; exit 0 only if all pass.
pub fn check(config: Config) -> ExitCode {
    let mut lines = vec![Check::pass(format!(
        "config {} is valid",
        config.path.display()
    ))];
    for w in &config.warnings {
        lines.push(Check::fail(w.clone()));
    }
    lines.push(match config.require_for_run() {
        Ok(()) => Check::pass("Frame.io client and project ids are set"),
        Err(e) => Check::fail(format!("{}: {}", e.key, e.message)),
    });
    lines.push(match std::fs::read_dir(&config.watch.root) {
        Ok(entries) => Check::pass(format!(
            "watch.root {} is readable ({} entries)",
            config.watch.root.display(),
            entries.count()
        )),
        Err(e) => Check::fail(format!("watch.root {}: {e}", config.watch.root.display())),
    });
    lines.push(check_state_dir(&config.state_dir));
    lines.extend(check_frameio(&config));
    if matches!(config.tunnel.mode, TunnelMode::Quick | TunnelMode::Named) {
        lines.push(match find_program(&config.tunnel.cloudflared) {
            Some(p) => Check::pass(format!("cloudflared found at {}", p.display())),
            None => Check::fail(format!(
                "cloudflared not found (tunnel.cloudflared = {:?}); install it from \
                 Cloudflare's packages, or set tunnel.mode to \"off\" to upload without a tunnel",
                config.tunnel.cloudflared.display().to_string()
            )),
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
        for more in &line.more {
            println!("         {more}");
        }
    }
    ExitCode::from(if all_ok { EXIT_OK } else { EXIT_FAILURE })
}

fn check_state_dir(path: &Path) -> Check {
    let probe = path.join(".check-probe");
    let result = std::fs::create_dir_all(path)
        .and_then(|()| std::fs::write(&probe, b"ok"))
        .and_then(|()| std::fs::remove_file(&probe));
    match result {
        Ok(()) => Check::pass(format!("state_dir {} is writable", path.display())),
        Err(e) => Check::fail(format!("state_dir {}: {e}", path.display())),
    }
}

/// The OAuth credential keys `auth` and the Frame.io checks need; the first one missing.
fn missing_credential(config: &Config) -> Option<&'static str> {
    let f = &config.frameio;
    [
        ("frameio.client_id", &f.client_id),
        ("frameio.client_secret", &f.client_secret),
        ("frameio.redirect_uri", &f.redirect_uri),
    ]
    .into_iter()
    .find(|(_, v)| v.is_empty())
    .map(|(k, _)| k)
}

/// `check` must answer in seconds, not sit through the run's patient retries.
const CHECK_RETRY: RetryPolicy = RetryPolicy {
    tries: 2,
    first_backoff: Duration::from_millis(500),
    max_backoff: Duration::from_secs(2),
    rate_limit_tries: 4,
    max_rate_wait: Duration::from_secs(10),
};

/// Tokens, `/v4/me`, the account, the project and its root folder. When an id is missing
/// or wrong, lists what the user can see so the right one can be copied into config.json.
fn check_frameio(config: &Config) -> Vec<Check> {
    let f = &config.frameio;
    let mut lines = Vec::new();
    if let Some(key) = missing_credential(config) {
        lines.push(Check::fail(format!(
            "Frame.io not checked: {key} is not set (README, \"Set-up with Adobe\")"
        )));
        return lines;
    }
    let auth = Auth::new(f, &config.state_dir, None);
    let tokens = auth.tokens_path().to_path_buf();
    if !tokens.exists() {
        lines.push(Check::fail(format!(
            "no Frame.io tokens in {}: run `postflow auth {}` to sign in",
            tokens.display(),
            config.path.display()
        )));
        return lines;
    }
    let before = auth.expires_in();
    if let Err(e) = auth.access_token() {
        lines.push(Check::fail(format!("Frame.io tokens: {e}")));
        return lines;
    }
    let after = auth.expires_in().unwrap_or_default();
    let refreshed = before.is_none_or(|b| after > b + Duration::from_secs(1));
    lines.push(Check::pass(format!(
        "Frame.io tokens in {} {} (access token valid for {})",
        tokens.display(),
        if refreshed {
            "were refreshed"
        } else {
            "are fresh"
        },
        human(after)
    )));
    let api = Api::new(f, auth).with_retry(CHECK_RETRY);
    match api.me() {
        Ok(me) => lines.push(Check::pass(format!(
            "Frame.io /v4/me works: signed in as {}",
            me.display()
        ))),
        Err(e) => {
            lines.push(Check::fail(e.to_string()));
            return lines;
        }
    }
    let accounts = match api.accounts() {
        Ok(a) => a,
        Err(e) => {
            lines.push(Check::fail(e.to_string()));
            return lines;
        }
    };
    let account = accounts.iter().find(|a| a.id == f.account_id);
    let Some(account) = account else {
        let what = if f.account_id.is_empty() {
            "frameio.account_id is not set; the accounts, workspaces and projects you can see:"
                .to_string()
        } else {
            format!(
                "frameio.account_id {:?} is not one of your accounts; those you can see:",
                f.account_id
            )
        };
        lines.push(Check::fail(what).with(visible_projects(&api, &accounts)));
        return lines;
    };
    lines.push(Check::pass(format!(
        "Frame.io account {} ({}) found",
        account.id,
        account.display_name.as_deref().unwrap_or("no name")
    )));
    let project = if f.project_id.is_empty() {
        Err("frameio.project_id is not set".to_string())
    } else {
        api.project(&account.id, &f.project_id)
            .map_err(|e| format!("frameio.project_id {:?}: {e}", f.project_id))
    };
    let project = match project {
        Ok(p) => p,
        Err(what) => {
            let what = format!("{what}; the projects you can see in this account:");
            let list = visible_projects(&api, std::slice::from_ref(account));
            lines.push(Check::fail(what).with(list));
            return lines;
        }
    };
    lines.push(Check::pass(format!(
        "Frame.io project {} ({}) found",
        project.id, project.name
    )));
    lines.push(match api.folder(&account.id, &project.root_folder_id) {
        Ok(_) => Check::pass(format!(
            "the project's root folder {} is reachable",
            project.root_folder_id
        )),
        Err(e) => Check::fail(format!("the project's root folder: {e}")),
    });
    lines
}

/// `account ID "name"` / `workspace …` / `project …` lines, indented as a tree.
fn visible_projects(api: &Api, accounts: &[Account]) -> Vec<String> {
    let mut out = Vec::new();
    if accounts.is_empty() {
        out.push("(no accounts: is this Adobe ID a member of a Frame.io V4 account?)".into());
    }
    for a in accounts {
        out.push(format!(
            "account {} {:?}   -> frameio.account_id",
            a.id,
            a.display_name.as_deref().unwrap_or("")
        ));
        let workspaces = match api.workspaces(&a.id) {
            Ok(w) => w,
            Err(e) => {
                out.push(format!("  (cannot list workspaces: {e})"));
                continue;
            }
        };
        for w in workspaces {
            out.push(format!("  workspace {} {:?}", w.id, w.name));
            match api.projects(&a.id, &w.id) {
                Ok(projects) => {
                    out.extend(projects.into_iter().map(|p| {
                        format!("    project {} {:?}   -> frameio.project_id", p.id, p.name)
                    }))
                }
                Err(e) => out.push(format!("    (cannot list projects: {e})")),
            }
        }
    }
    out
}

/// `23 h 59 min`, `4 min`, `3 s`.
fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        _ => format!("{} h {} min", s / 3600, s % 3600 / 60),
    }
}

/// `postflow auth`: prints the Adobe sign-in link, reads the address the browser ended on (or
/// the bare code), checks `state`, exchanges the code, saves `tokens.json` and says who is
/// connected. Takes no lock: it may run while `run` does, which picks the new tokens up.
pub fn auth(config: Config) -> ExitCode {
    if let Some(key) = missing_credential(&config) {
        eprintln!(
            "{}: {key}: required for `postflow auth`: your Adobe OAuth Web App credential \
             (README, \"Set-up with Adobe\")",
            config.path.display()
        );
        return ExitCode::from(EXIT_USAGE);
    }
    init_logging(&config);
    let fail = |message: String| {
        eprintln!("postflow auth: {message}");
        ExitCode::from(EXIT_FAILURE)
    };
    let auth = Auth::new(&config.frameio, &config.state_dir, None);
    let state = crate::frameio::random_hex(16);
    println!("Sign in to Frame.io with your Adobe ID. Open this address in a browser:\n");
    println!("{}\n", auth.authorize_url(&state));
    println!(
        "After you sign in, Adobe sends the browser to {}. That page may not load; that is \
         fine. Copy the whole address from the browser's address bar, paste it here and press \
         Enter:",
        config.frameio.redirect_uri
    );
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    if let Err(e) = std::io::stdin().read_line(&mut line) {
        return fail(format!("cannot read what was pasted: {e}"));
    }
    let code = match code_from_paste(&line, &state) {
        Ok(c) => c,
        Err(e) => return fail(e.to_string()),
    };
    if let Err(e) = auth.login_with_code(&code) {
        return fail(e.to_string());
    }
    let api = Api::new(&config.frameio, auth.clone()).with_retry(CHECK_RETRY);
    match api.me() {
        Ok(me) => {
            println!(
                "Connected to Frame.io as {}. Tokens saved in {}.",
                me.display(),
                auth.tokens_path().display()
            );
            ExitCode::from(EXIT_OK)
        }
        Err(e) => fail(format!(
            "the tokens are saved in {}, but Frame.io refused them: {e}",
            auth.tokens_path().display()
        )),
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
