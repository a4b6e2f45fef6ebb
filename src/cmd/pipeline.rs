//! The running threads of `run` (and of a one-off `upload`): started in order, watched, and
//! taken down in order.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, select, unbounded, Receiver, RecvTimeoutError, Sender};

use super::{abort_on_panic, init_logging, print_config_error, EXIT_FAILURE};
use crate::config::Config;
use crate::dashboard::{self, Dashboard};
use crate::events::{self, ComponentState, Event, Hub};
use crate::frameio::api::Api;
use crate::frameio::auth::{Auth, AuthState};
use crate::ledger::{Job, Ledger};
use crate::links::Links;
use crate::logtail;
use crate::notify;
use crate::queue::{self, QueueMsg, QueueSettings};
use crate::serve::{FileServer, ServeEvent, ServeOptions};
use crate::shutdown::{self, StopRequested};
use crate::stack::stacker::{run_stacker, Stacker};
use crate::statedir::{LockError, StateDir};
use crate::throughput::{self, Throughput};
use crate::tunnel::{self, ProbeLink, ProbeSource, TunnelHandle};
use crate::upload::{self, PublicUrl, Settings as UploadSettings, Uploader, Watched};
use crate::watch;

/// How long shutdown may take before we give up on a stuck thread and exit anyway. Nothing is
/// lost by exiting: every ledger write is already on disk.
pub(super) const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(20);

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

/// Which jobs a pipeline uploads.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Scope {
    /// `run`: every job.
    Everything,
    /// A one-off `upload`: only the jobs enqueued by hand; the watcher still records what it
    /// sees (so the ledger stays true), and a later `run` uploads it.
    Enqueued,
}

/// Why `Pipeline::wait` returned.
pub(super) enum Stop {
    /// A stop was asked for (Ctrl-C, SIGTERM, `postflow stop`, the service's stop).
    Signal,
    /// A thread ended on its own (a bug): exit non-zero so a watchdog restarts us.
    ThreadDied,
    /// The caller's condition holds; exit with this code.
    Finished(u8),
}

/// Why `Pipeline::start` returned without a pipeline.
pub(super) enum NotStarted {
    /// Another instance owns the state dir.
    AlreadyRunning(LockError),
    /// Already reported; exit with this code.
    Exit(ExitCode),
}

/// The running threads of `run` (or of a one-off `upload`) and what it takes to stop them.
pub(super) struct Pipeline {
    threads: Threads,
    /// Ctrl-C, SIGTERM, `postflow stop`, the service's stop: see `shutdown`.
    signal_rx: Receiver<StopRequested>,
    /// Dropping it tells every thread to stop: a closed channel wakes every receiver at once.
    stop_tx: Sender<()>,
    pub(super) queue_tx: Sender<QueueMsg>,
    server: FileServer,
    state: Arc<StateDir>,
    dead_threads: Arc<Mutex<Vec<&'static str>>>,
}

impl Pipeline {
    /// Takes the state dir's lock and starts every thread: hub, dashboard, queue, watcher,
    /// tunnel, notifier, upload workers.
    pub(super) fn start(config: &Config, scope: Scope) -> Result<Pipeline, NotStarted> {
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
        let signal_rx = match shutdown::listen(super::service::running_as_service()) {
            Ok(rx) => rx,
            Err(e) => {
                log::error!("{e}");
                return Err(exit(EXIT_FAILURE));
            }
        };

        let state = match StateDir::lock(&config.state_dir) {
            Ok(s) => s,
            Err(e @ LockError::AlreadyRunning(_)) => return Err(NotStarted::AlreadyRunning(e)),
            Err(e) => {
                log::error!("{e}");
                return Err(exit(EXIT_FAILURE));
            }
        };
        let (mut ledger, report) = match Ledger::open(&state.ledger_path()) {
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
        match crate::projects::reconcile(state.path(), &mut ledger, &config.projects) {
            Ok(renamed) => {
                for (old, new, jobs) in renamed {
                    log::info!(
                        "project {old:?} is now named {new:?} (same root and Frame.io project): \
                         its {jobs} job(s) follow it"
                    );
                }
            }
            Err(e) => log::warn!(
                "{}: {e}; a renamed project starts as a new one (nothing uploaded again)",
                state.path().join(crate::projects::FILE).display()
            ),
        }
        let roots: Vec<String> = config
            .projects
            .iter()
            .map(|p| {
                if config.several_projects {
                    format!("{} ({})", p.root.display(), p.name)
                } else {
                    p.root.display().to_string()
                }
            })
            .collect();
        log::info!(
            "postflow {} {} {} ({} jobs in the ledger, state in {})",
            env!("CARGO_PKG_VERSION"),
            match scope {
                Scope::Everything => "watching",
                Scope::Enqueued => "uploading files by hand from",
            },
            roots.join(", "),
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
        // One watcher per project, each knowing what the ledger says of its files.
        let watchers: Vec<(
            watch::Project,
            crate::config::WatchConfig,
            watch::StartState,
        )> = config
            .projects
            .iter()
            .map(|p| {
                (
                    watch::Project::new(&p.name, config.several_projects),
                    p.watch(&config.watch),
                    watch::StartState::from_ledger(&ledger, &p.name),
                )
            })
            .collect();
        // Jobs whose bytes are all in go to the status watch (`upload::poller`): from the
        // workers, and at start those the last run left processing (the queue keeps them so).
        let (processing_tx, processing_rx) = unbounded::<Watched>();
        // Jobs Frame.io has complete, downloaded back first (`upload.verify: "download"`).
        let (verifying_tx, verifying_rx) = unbounded::<Watched>();
        let resumed: Vec<Watched> = ledger
            .jobs()
            .values()
            .filter(|j| queue::watched_at_start(j))
            .filter(|j| config.project(&j.project).is_some())
            .filter_map(Watched::resumed)
            .collect();

        // Bytes sent per minute, kept in the state dir (its own thread writes them).
        let throughput = Arc::new(Throughput::open(state.path()));
        // upload.bandwidth: the one bucket every part PUT and every /f/ body goes through.
        crate::bandwidth::shared().configure(config.upload.bandwidth.clone());
        let auth = Auth::new(&config.frameio, state.path(), Some(hub.clone()));
        let api = Api::new(&config.frameio, auth.clone());
        // Comments Frame.io's review loop brought earlier, shown before the follower runs.
        let review_board = crate::review::load_board(state.path());
        let dash = Dashboard::bind(
            &config.dashboard,
            dashboard::Deps {
                hub: hub.clone(),
                queue: queue_tx.clone(),
                state_dir: Arc::clone(&state),
                dead_threads: Arc::clone(&dead_threads),
                login: Some(Arc::new(dashboard::login::AuthLogin::new(auth.clone()))),
                projects: config.projects.clone(),
                throughput: Arc::clone(&throughput),
                review: review_board.clone(),
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
        // The tunnel publishes the file server; the uploader reads its state from the same
        // handle (up with a URL, reconnecting, or down/off).
        let tunnel_url = TunnelHandle::default();
        let public_url: PublicUrl = {
            let handle = tunnel_url.clone();
            Arc::new(move || handle.public())
        };
        // Version stacks: a thread per project that stacks, fed by the queue (see stack.rs).
        let mut queue_settings = QueueSettings::from_config(config);
        queue_settings.only_enqueued = scope == Scope::Enqueued;
        let mut stackers = Vec::new();
        for (p, q) in config.projects.iter().zip(&mut queue_settings.projects) {
            if p.layout.stack_versions {
                let (stack_tx, stack_rx) = unbounded();
                let stacker = Stacker::new(
                    api.clone(),
                    &p.account_id,
                    &p.project_id,
                    p.layout(),
                    queue_tx.clone(),
                    stop_rx.clone(),
                );
                q.stacker = Some(stack_tx);
                stackers.push((p.name.clone(), stacker, stack_rx));
            }
        }
        let review_follower = match (
            scope,
            config.review.webhooks,
            config.tunnel.mode == crate::config::TunnelMode::Off,
        ) {
            (Scope::Enqueued, _, _) => {
                crate::review::announce_off(&hub, "not followed by a one-off upload");
                None
            }
            (_, false, _) => {
                crate::review::announce_off(&hub, "off (review.webhooks)");
                None
            }
            (_, true, true) => {
                crate::review::announce_off(&hub, crate::review::NEEDS_TUNNEL);
                None
            }
            (_, true, false) => Some(crate::review::Follower {
                api: api.clone(),
                gate: server.hooks(),
                public: Arc::clone(&public_url),
                queue: queue_tx.clone(),
                hub: hub.clone(),
                board: review_board,
                state_dir: state.path().to_path_buf(),
                config: config.review.clone(),
                projects: config.projects.clone(),
                stop: stop_rx.clone(),
            }),
        };
        let uploader = Arc::new(Uploader::new(
            api,
            server.links(),
            public_url,
            UploadSettings {
                projects: config
                    .projects
                    .iter()
                    .map(|p| upload::Project {
                        name: p.name.clone(),
                        account_id: p.account_id.clone(),
                        project_id: p.project_id.clone(),
                        root: p.root.clone(),
                    })
                    .collect(),
                mode: config.frameio.upload,
                state_dir: state.path().to_path_buf(),
                parallel_parts: config.upload.parallel_parts,
                poll_min: Duration::ZERO,
                poll_max: Duration::ZERO,
                stall: Duration::ZERO,
                part_stall: Duration::ZERO,
                verify: config.upload.verify,
                processing_timeout: config.upload.processing_timeout,
            }
            .timings(),
            queue_tx.clone(),
            processing_tx,
            verifying_tx,
            hub.clone(),
            stop_rx.clone(),
        ));

        let mut threads = Threads::new();
        threads.spawn("hub", move || events::run_hub(hub_inbox));
        {
            let stop = stop_rx.clone();
            threads.spawn("throughput", move || {
                throughput::run_recorder(throughput, stop)
            });
        }
        {
            let (server, follower) = dash.into_loops();
            let stop = stop_rx.clone();
            threads.spawn("dashboard", move || server.run(stop));
            let stop = stop_rx.clone();
            threads.spawn("dashboard-events", move || follower.run(stop));
        }
        {
            let (stop, hub) = (stop_rx.clone(), hub.clone());
            let settings = queue_settings;
            threads.spawn("queue", move || {
                queue::run_queue(ledger, queue_rx, stop, hub, settings, jobs_tx)
            });
        }
        for (project, watch_config, start) in watchers {
            let (stop, hub, queue) = (stop_rx.clone(), hub.clone(), queue_tx.clone());
            // Thread names are 'static and unique: one small leak per project at start.
            let name: &'static str = match project.component {
                "watcher" => "watcher",
                _ => Box::leak(format!("watcher-{}", project.name).into_boxed_str()),
            };
            threads.spawn(name, move || {
                watch::run_watcher(project, watch_config, start, queue, stop, hub)
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
        if let Some((router, webhooks)) = notify::plan(config) {
            let (stop, hub) = (stop_rx.clone(), hub.clone());
            threads.spawn("notify", move || {
                let notices = notify::Notices::new(notify::TUNNEL_DOWN_AFTER);
                notify::run_notifier(notices, hub, router, stop)
            });
            for (i, webhook) in webhooks.into_iter().enumerate() {
                let stop = stop_rx.clone();
                let name: &'static str = match i {
                    0 => "notify-send",
                    _ => Box::leak(format!("notify-send-{}", i + 1).into_boxed_str()),
                };
                threads.spawn(name, move || {
                    notify::run_sender(webhook.url, webhook.format, webhook.notices, stop)
                });
            }
        }
        {
            let (stop, hub) = (stop_rx.clone(), hub.clone());
            threads.spawn("serve-events", move || {
                forward_serve_events(serve_rx, hub, stop)
            });
        }
        if let Some(follower) = review_follower {
            threads.spawn("review", move || crate::review::run_follower(follower));
        }
        for (project, stacker, stack_rx) in stackers {
            let name: &'static str = match config.several_projects {
                false => "stacker",
                true => Box::leak(format!("stacker-{project}").into_boxed_str()),
            };
            threads.spawn(name, move || run_stacker(stacker, stack_rx));
        }
        for i in 1..=config.upload.concurrency {
            let (up, jobs) = (Arc::clone(&uploader), jobs_rx.clone());
            // Thread names must be 'static and unique; a handful of small leaks at start is fine.
            let name: &'static str = Box::leak(format!("upload-{i}").into_boxed_str());
            threads.spawn(name, move || upload::run_worker(up, jobs));
        }
        drop(jobs_rx);
        if config.upload.verify == crate::config::Verify::Download {
            for i in 1..=config.upload.concurrency {
                let (up, jobs) = (Arc::clone(&uploader), verifying_rx.clone());
                let name: &'static str = Box::leak(format!("verify-{i}").into_boxed_str());
                threads.spawn(name, move || upload::run_verifier(up, jobs));
            }
        }
        drop(verifying_rx);
        {
            let up = Arc::clone(&uploader);
            threads.spawn("upload-watch", move || {
                upload::run_poller(up, processing_rx, resumed)
            });
        }
        // The workers and the watch own the uploader now. Its Frame.io client holds a hub handle, and the hub
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
    pub(super) fn wait(&self, tick: Duration, mut finished: impl FnMut() -> Option<u8>) -> Stop {
        loop {
            select! {
                recv(self.signal_rx) -> why => {
                    let why = why.unwrap_or(StopRequested::Signal);
                    log::info!("stopping ({why})");
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
    pub(super) fn shut_down(self, code: u8) -> ExitCode {
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
        // A closed console window holds the process until here (shutdown::windows).
        shutdown::finished();
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
    // Without random bytes there is no probe, and so the tunnel never counts as up.
    let body = crate::frameio::random_hex(16).map(|r| format!("postflow probe {r}\n"));
    let written = match &body {
        Ok(body) => std::fs::write(&file, body),
        Err(e) => {
            log::error!("no tunnel probe: {e}");
            Ok(())
        }
    };
    if let Err(e) = &written {
        log::warn!("cannot write the tunnel probe {}: {e}", file.display());
    }
    // Written again at the next probe when the state dir was full or read-only at start.
    let written = std::sync::atomic::AtomicBool::new(written.is_ok());
    let last: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);
    Arc::new(move || {
        let body = body.as_ref().ok()?;
        if !written.load(std::sync::atomic::Ordering::SeqCst) {
            std::fs::write(&file, body).ok()?;
            written.store(true, std::sync::atomic::Ordering::SeqCst);
        }
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
const PROBE_JOB: u64 = 0;
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
