//! The tunnel: a public https URL that reaches the file server, so Frame.io can pull files.
//!
//! One thread, `run_tunnel`, owns it. Per `tunnel.mode`:
//!
//! - `quick`: runs `cloudflared tunnel --no-autoupdate --config <state>/cloudflared.yml
//!   --metrics 127.0.0.1:<free port> --grace-period 10s [--protocol quic|http2]
//!   --url http://127.0.0.1:<serve port>` (`--protocol` only when `tunnel.protocol` is not
//!   `auto`: without it cloudflared makes its own choice, QUIC falling back to HTTP/2).
//!   The hostname comes from the metrics server's `/quicktunnel`, or from the
//!   `https://….trycloudflare.com` line on stderr; the tunnel is up when `/ready` says 200.
//! - `named`: runs `cloudflared tunnel … run --token-file <tunnel.token_file>` (the token never
//!   goes on the command line, where `ps` shows it). The URL is `tunnel.public_url`, and it is
//!   up only once a probe file fetched through that URL comes back with the right bytes.
//! - `external`: no child; the user's own proxy at `tunnel.public_url`, probed the same way.
//! - `off`: nothing, ever. Uploads go local.
//!
//! The child's environment is postflow's without anything cloudflared would read as a setting
//! (`TUNNEL*`, `CLOUDFLARED*`, `NO_AUTOUPDATE`, `NO_TLS_VERIFY`) and without postflow's own
//! (`POSTFLOW_*`: secrets, test knobs): everything it needs is on its command line. A stray
//! `TUNNEL_LOGFILE` or `TUNNEL_TRANSPORT_PROTOCOL` from an operator's shell would otherwise
//! move its log or change its transport. The names withheld are logged at DEBUG.
//!
//! Supervision: stderr is drained on its own thread (each line at DEBUG, target
//! `postflow::tunnel::cloudflared`; the last 50 kept for error reports), so a log flood can
//! never block cloudflared or us. A start not ready within 60 s is stopped. Restarts follow
//! [`backoff`]: 5 s doubling to 5 min, at once after an update exit (code 11).
//!
//! Reconnects are cloudflared's own business. It keeps a quick tunnel's hostname across
//! them; only a restart gets a new one and breaks every pull in flight. So once up, the
//! connection state comes from its stderr as it happens (`output::Line::{Registered, Lost,
//! Retrying}`), with `/ready` polled as well (two misses in a row count as a loss, for a
//! child that went quiet). A loss makes the tunnel `reconnecting`: the URL is kept but not
//! offered for new pulls, and cloudflared is left alone until it registers again or the
//! patience runs out (see [`Timing::patience`]). Only an exit, or the patience running
//! out, means a restart.
//!
//! What others see: [`TunnelHandle::public`] (`Up(url)`, `Reconnecting { url, since }`, or
//! `Down`; only ever a public URL), and on the hub `Component { name: "tunnel", state:
//! starting | up | reconnecting | down | off, detail }` plus `TunnelUp { url }` /
//! `TunnelDown { reason }` when the URL appears or is withdrawn for good (a reconnect keeps
//! it).
//!
//! Stopping: SIGTERM (Ctrl-Break on Windows), up to the grace period (10 s) plus 5 s for
//! cloudflared to finish in-flight requests, then SIGKILL (TerminateProcess). cloudflared runs
//! in its own process group, so a Ctrl-C in the terminal reaches only postflow, which then
//! asks exactly once (a second signal would make cloudflared quit without its graceful
//! shutdown). A postflow without a console (a Windows service, or under Wine) cannot send
//! Ctrl-Break: cloudflared is then killed at once, and the log says so.
//!
//! Leftovers: the child's pid is kept in `<state>/cloudflared.pid`. After postflow was killed
//! with `kill -9`, its cloudflared lives on; the next start stops it, but only if that pid's
//! command line names our own `<state>/cloudflared.yml`, so an unrelated process that got the
//! pid is never touched. On Windows there is no leftover: cloudflared runs in a job object
//! that the kernel kills along with postflow, however postflow ends.

mod backoff;
mod http;
mod output;

use std::collections::{BTreeSet, VecDeque};
use std::io::{BufRead, BufReader, Read};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use crossbeam_channel::{never, select, unbounded, Receiver, RecvTimeoutError, Sender};

use crate::config::{TunnelConfig, TunnelMode};
use crate::events::{ComponentState, Event, Hub};
use crate::human;
use crate::process;
use crate::process::find_program;

pub use http::ProbeLink;
pub use http::TEST_RESOLVE_ENV;

use backoff::Backoff;
use http::{Http, Readiness};
use output::Line;

/// The component name on the hub.
pub const COMPONENT: &str = "tunnel";
/// Our own cloudflared config in the state dir: `{}`, so that a `~/.cloudflared/config.yml`
/// with ingress rules cannot silently override `--url`.
pub const CONFIG_FILE: &str = "cloudflared.yml";
/// The running child's pid, in the state dir.
pub const PID_FILE: &str = "cloudflared.pid";

/// cloudflared's `--grace-period`: how long it may finish in-flight requests after SIGTERM.
const GRACE_PERIOD: Duration = Duration::from_secs(10);
/// Extra wait after the grace period before SIGKILL.
const GRACE_MARGIN: Duration = Duration::from_secs(5);
/// Lines of stderr kept for error reports.
const TAIL_LINES: usize = 50;
/// Longest stderr line kept whole; longer ones are split.
const MAX_LINE: u64 = 16 * 1024;

/// What the uploader may do with the tunnel right now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Public {
    /// Up: Frame.io can pull from this base URL (no trailing `/`).
    Up(String),
    /// cloudflared is alive and reconnecting to Cloudflare's edge since `since`; it comes
    /// back with this same URL. No new pull should start meanwhile.
    Reconnecting { url: String, since: Instant },
    /// No public URL: starting, restarting, down or off.
    Down,
}

impl Public {
    /// The URL while up, None otherwise.
    pub fn url(&self) -> Option<&str> {
        match self {
            Public::Up(url) => Some(url),
            _ => None,
        }
    }
}

/// The tunnel's state, for the uploader. Cheap to clone; all clones see the same state.
#[derive(Clone, Debug)]
pub struct TunnelHandle {
    state: Arc<RwLock<Public>>,
}

impl Default for TunnelHandle {
    fn default() -> TunnelHandle {
        TunnelHandle {
            state: Arc::new(RwLock::new(Public::Down)),
        }
    }
}

impl TunnelHandle {
    /// What the tunnel offers now.
    pub fn public(&self) -> Public {
        self.state.read().map(|p| p.clone()).unwrap_or(Public::Down)
    }

    fn set(&self, public: Public) {
        if let Ok(mut p) = self.state.write() {
            *p = public;
        }
    }
}

/// Where the supervisor gets a probe link for `named` and `external` mode: a file that the
/// file server serves, and its exact bytes. None when the file server cannot offer one (yet).
///
/// This is the seam to the file server: it registers a small probe file in its link registry
/// and returns `/f/<token>/<name>` with the file's bytes. The supervisor GETs
/// `<public_url><path>` and compares.
pub type ProbeSource = Arc<dyn Fn() -> Option<ProbeLink> + Send + Sync>;

/// Test-only: `POSTFLOW_TEST_TUNNEL_PROBE_PATH` and `…_PROBE_BODY` describe a probe file that
/// some other server (the test's stand-in origin) serves. Until the file server offers probe
/// links, this is the only probe source; without these variables named and external mode
/// never come up.
pub fn probe_from_test_env() -> ProbeSource {
    let path = std::env::var("POSTFLOW_TEST_TUNNEL_PROBE_PATH").ok();
    let body = std::env::var("POSTFLOW_TEST_TUNNEL_PROBE_BODY").ok();
    if path.is_some() || body.is_some() {
        log::warn!("POSTFLOW_TEST_TUNNEL_PROBE_*: a test-only probe file is in effect");
    }
    Arc::new(move || {
        Some(ProbeLink {
            path: path.clone()?,
            expected: body.clone()?.into_bytes(),
        })
    })
}

/// The supervisor's clock settings. Production values come from [`Timing::production`];
/// tests shorten them through `POSTFLOW_TEST_TUNNEL_*` variables (see [`Timing::from_env`]).
#[derive(Clone, Debug)]
pub struct Timing {
    /// A start not up by then is stopped.
    pub ready_deadline: Duration,
    /// First wait before a restart; doubles up to `backoff_max`.
    pub backoff_first: Duration,
    pub backoff_max: Duration,
    /// Up this long counts as healthy: the backoff starts from the bottom again.
    pub healthy_after: Duration,
    /// How often to ask `/ready` and look for the hostname while starting.
    pub poll_every: Duration,
    /// How often to ask `/ready` while up.
    pub watch_every: Duration,
    /// How often to probe an `external` URL that works.
    pub recheck_every: Duration,
    /// How long a live cloudflared may stay without an edge connection before it is
    /// restarted. Five minutes: its reconnect backoff doubles from 1 s to about a minute a
    /// try (measured over HTTP/2: back after 4.5 to 59 s; after a refused re-registration,
    /// 23 to 83 s), so this lets it try several times at its longest wait. Restarting
    /// sooner throws away a quick tunnel's hostname and every pull in flight with it. A
    /// `Retrying connection in up to N` line extends it to N + [`RETRY_MARGIN`] when later.
    pub patience: Duration,
}

/// After cloudflared's announced retry, time for the connection itself.
const RETRY_MARGIN: Duration = Duration::from_secs(15);

impl Timing {
    pub fn production() -> Timing {
        Timing {
            ready_deadline: Duration::from_secs(60),
            backoff_first: Duration::from_secs(5),
            backoff_max: Duration::from_secs(300),
            healthy_after: Duration::from_secs(600),
            poll_every: Duration::from_millis(250),
            watch_every: Duration::from_secs(2),
            recheck_every: Duration::from_secs(60),
            patience: Duration::from_secs(300),
        }
    }

    /// Production values, except for these test-only variables (milliseconds):
    /// `POSTFLOW_TEST_TUNNEL_READY_MS`, `POSTFLOW_TEST_TUNNEL_BACKOFF_MS`,
    /// `POSTFLOW_TEST_TUNNEL_BACKOFF_MAX_MS`, `POSTFLOW_TEST_TUNNEL_PATIENCE_MS`. A warning is
    /// logged when any is set.
    pub fn from_env() -> Timing {
        let mut t = Timing::production();
        for (name, field) in [
            ("POSTFLOW_TEST_TUNNEL_READY_MS", &mut t.ready_deadline),
            ("POSTFLOW_TEST_TUNNEL_BACKOFF_MS", &mut t.backoff_first),
            ("POSTFLOW_TEST_TUNNEL_BACKOFF_MAX_MS", &mut t.backoff_max),
            ("POSTFLOW_TEST_TUNNEL_PATIENCE_MS", &mut t.patience),
        ] {
            if let Some(ms) = std::env::var(name).ok().and_then(|v| v.parse().ok()) {
                log::warn!("{name}={ms}: test-only tunnel timing in effect");
                *field = Duration::from_millis(ms);
            }
        }
        t
    }
}

/// Everything the tunnel thread needs.
pub struct Supervisor {
    pub tunnel: TunnelConfig,
    /// Where the file server listens (after binding): the tunnel's target.
    pub origin: SocketAddr,
    pub state_dir: PathBuf,
    pub hub: Hub,
    pub handle: TunnelHandle,
    pub probe: ProbeSource,
    pub timing: Timing,
}

/// The tunnel thread: runs until `stop` closes, then stops cloudflared and returns.
pub fn run_tunnel(supervisor: Supervisor, stop: Receiver<()>) {
    let mut s = State::new(supervisor);
    s.stop_leftover();
    match s.sup.tunnel.mode {
        TunnelMode::Off => {
            log::info!("tunnel off (tunnel.mode is \"off\"): uploads go local");
            s.publish(
                ComponentState::Off,
                "tunnel.mode is \"off\": uploads go local",
            );
            let _ = stop.recv();
        }
        TunnelMode::External => s.supervise_external(&stop),
        TunnelMode::Quick | TunnelMode::Named => s.supervise_cloudflared(&stop),
    }
    s.withdraw_on_stop();
}

/// How one run of cloudflared ended.
enum Outcome {
    /// postflow is stopping.
    Stop,
    /// It exited by itself.
    Exited(ExitStatus),
    /// We stop it: it did not come up (or back) in time.
    GaveUp(String),
}

/// Where a running cloudflared is.
enum Phase {
    /// Not up yet: the URL, `/ready` (and the probe) must all be there by `deadline`.
    Starting {
        deadline: Instant,
    },
    Up,
    /// Alive without an edge connection since `since`; restarted at `give_up` unless back.
    /// `ready_streak`: `/ready` polls in a row that said 200.
    Reconnecting {
        since: Instant,
        give_up: Instant,
        ready_streak: u32,
    },
    /// It logged its graceful shutdown (a signal from someone else) and is about to exit.
    ShuttingDown {
        deadline: Instant,
    },
}

/// cloudflared's edge connections as its stderr tells them.
#[derive(Default)]
struct EdgeLog {
    /// Connections registered and not lost since (a quick tunnel has one, a named four).
    connected: BTreeSet<u8>,
    /// When the last connection went, and cloudflared's words for it; cleared by a
    /// registration.
    lost: Option<(Instant, String)>,
    /// The latest moment cloudflared said it would try again by.
    retry_until: Option<Instant>,
}

impl EdgeLog {
    /// Takes in a line; true if it was about the edge connection.
    fn take(&mut self, line: Line, now: Instant) -> bool {
        match line {
            Line::Registered(i) => {
                self.connected.insert(i);
                self.lost = None;
                self.retry_until = None;
            }
            Line::Lost(i, why) => self.lose(i, why, now),
            Line::Retrying(i, wait) => {
                let until = now + wait;
                self.retry_until = Some(self.retry_until.map_or(until, |t| t.max(until)));
                self.lose(i, format!("retrying within {}", human::duration(wait)), now);
            }
            _ => return false,
        }
        true
    }

    fn lose(&mut self, i: u8, why: String, now: Instant) {
        self.connected.remove(&i);
        if self.connected.is_empty() && self.lost.is_none() {
            self.lost = Some((now, why));
        }
    }
}

struct State {
    sup: Supervisor,
    http: Http,
    backoff: Backoff,
    /// `<state>/cloudflared.yml`, absolute: it is also how we recognise our own process.
    config_path: PathBuf,
    /// What the handle holds, so that `TunnelDown` goes out only when a URL is withdrawn.
    published: Option<String>,
}

impl State {
    fn new(sup: Supervisor) -> State {
        let state_dir = absolute_state_dir(&sup.state_dir);
        let t = &sup.timing;
        State {
            backoff: Backoff::new(t.backoff_first, t.backoff_max, t.healthy_after),
            http: Http::new(),
            config_path: state_dir.join(CONFIG_FILE),
            published: None,
            sup,
        }
    }

    fn pid_path(&self) -> PathBuf {
        self.sup.state_dir.join(PID_FILE)
    }

    // ---------------------------------------------------------------- states

    fn publish(&self, state: ComponentState, detail: impl Into<String>) {
        self.sup.hub.publish(Event::Component {
            name: COMPONENT,
            state,
            detail: detail.into(),
        });
    }

    fn set_starting(&self, detail: String) {
        log::info!("tunnel starting ({detail})");
        self.publish(ComponentState::Starting, detail);
    }

    fn set_up(&mut self, url: &str) {
        log::info!("tunnel up: {url}");
        self.sup.handle.set(Public::Up(url.to_string()));
        self.published = Some(url.to_string());
        self.publish(ComponentState::Up, url);
        self.sup.hub.publish(Event::TunnelUp { url: url.into() });
    }

    /// Back after a reconnect: the same URL, so no `TunnelUp` (nothing was withdrawn).
    fn set_back(&mut self, url: &str, after: Duration) {
        log::info!(
            "tunnel up: {url} (cloudflared reconnected after {})",
            seconds(after)
        );
        self.sup.handle.set(Public::Up(url.to_string()));
        self.publish(ComponentState::Up, url);
    }

    /// Alive but without an edge connection: the URL is kept, new pulls wait.
    fn set_reconnecting(&mut self, url: &str, since: Instant, why: &str) {
        log::warn!(
            "tunnel reconnecting: cloudflared lost its connection to Cloudflare ({why}); \
             it reconnects by itself and keeps {url}, so it is left alone for up to {}",
            human::duration(self.sup.timing.patience)
        );
        self.sup.handle.set(Public::Reconnecting {
            url: url.to_string(),
            since,
        });
        self.publish(
            ComponentState::Reconnecting,
            format!("{url}: cloudflared is reconnecting ({why})"),
        );
    }

    fn set_down(&mut self, reason: &str) {
        log::warn!("tunnel down: {reason}");
        self.withdraw(reason);
        self.publish(ComponentState::Down, reason);
    }

    fn withdraw(&mut self, reason: &str) {
        self.sup.handle.set(Public::Down);
        if self.published.take().is_some() {
            self.sup.hub.publish(Event::TunnelDown {
                reason: reason.into(),
            });
        }
    }

    fn withdraw_on_stop(&mut self) {
        self.withdraw("postflow is stopping");
    }

    // ---------------------------------------------------------------- external

    fn supervise_external(&mut self, stop: &Receiver<()>) {
        let Some(url) = self.sup.tunnel.public_url.clone() else {
            self.set_down("tunnel.public_url is not set");
            let _ = stop.recv();
            return;
        };
        self.set_starting(format!("probing {url}"));
        let mut up_since: Option<Instant> = None;
        loop {
            let wait = match self.probe(&url) {
                Ok(()) => {
                    if up_since.is_none() {
                        up_since = Some(Instant::now());
                        self.set_up(&url);
                    }
                    self.sup.timing.recheck_every
                }
                Err(e) => {
                    let up_for = up_since.take().map(|t| t.elapsed()).unwrap_or_default();
                    self.set_down(&e);
                    let wait = self.backoff.after_end(None, up_for, Instant::now());
                    log::info!("probing {url} again in {wait:?}");
                    wait
                }
            };
            if wait_or_stop(stop, wait) {
                return;
            }
        }
    }

    fn probe(&self, public_url: &str) -> Result<(), String> {
        let link = (self.sup.probe)().ok_or_else(|| {
            format!("cannot probe {public_url}: the file server has no probe link to offer yet")
        })?;
        self.http.probe(public_url, &link)
    }

    // ---------------------------------------------------------------- cloudflared

    fn supervise_cloudflared(&mut self, stop: &Receiver<()>) {
        let named = self.sup.tunnel.mode == TunnelMode::Named;
        if named {
            match &self.sup.tunnel.public_url {
                Some(u) if output::is_public_url(u) => {}
                other => {
                    let reason = format!(
                        "tunnel.public_url {:?} is not a public address: Frame.io cannot reach it \
                         (use tunnel.mode \"external\" for an address only your network knows)",
                        other.as_deref().unwrap_or("")
                    );
                    log::error!("{reason}");
                    self.set_down(&reason);
                    let _ = stop.recv();
                    return;
                }
            }
        }
        let mut missing_reported = false;
        loop {
            let Some(program) = find_program(&self.sup.tunnel.cloudflared) else {
                let reason = format!(
                    "cloudflared not found (tunnel.cloudflared = {:?}): install it \
                     (Cloudflare's packages at pkg.cloudflare.com, `brew install cloudflared`, or \
                     github.com/cloudflare/cloudflared/releases) and make sure it is on PATH, or \
                     set tunnel.mode to \"off\" to upload without a tunnel",
                    self.sup.tunnel.cloudflared.display().to_string()
                );
                if !missing_reported {
                    log::error!("{reason}");
                    self.publish(ComponentState::Down, reason);
                    missing_reported = true;
                }
                // Not a crash loop: look again now and then, in case it gets installed.
                if wait_or_stop(stop, self.sup.timing.backoff_max) {
                    return;
                }
                continue;
            };
            if missing_reported {
                log::info!("cloudflared found at {}", program.display());
                missing_reported = false;
            }
            let Some((exit_code, up_for, reason)) = self.run_once(&program, stop) else {
                return;
            };
            self.set_down(&reason);
            let wait = self.backoff.after_end(exit_code, up_for, Instant::now());
            if wait.is_zero() {
                log::info!("starting cloudflared again now");
            } else {
                log::info!("starting cloudflared again in {wait:?}");
            }
            if wait_or_stop(stop, wait) {
                return;
            }
        }
    }

    fn command(&self, program: &Path, metrics: SocketAddr) -> Command {
        let mut cmd = Command::new(program);
        cmd.arg("tunnel")
            .arg("--no-autoupdate")
            .arg("--config")
            .arg(&self.config_path)
            .arg("--metrics")
            .arg(metrics.to_string())
            .arg("--grace-period")
            .arg(format!("{}s", GRACE_PERIOD.as_secs()));
        if let Some(protocol) = self.sup.tunnel.protocol.flag() {
            cmd.arg("--protocol").arg(protocol);
        }
        match self.sup.tunnel.mode {
            TunnelMode::Named => {
                let token = self
                    .sup
                    .tunnel
                    .token_file
                    .as_deref()
                    .unwrap_or(Path::new(""));
                let token = std::path::absolute(token).unwrap_or_else(|_| token.to_path_buf());
                cmd.arg("run").arg("--token-file").arg(token);
            }
            _ => {
                cmd.arg("--url")
                    .arg(format!("http://{}", self.origin_host_port()));
            }
        }
        let mut withheld: Vec<String> = std::env::vars_os()
            .filter_map(|(name, _)| name.into_string().ok())
            .filter(|name| withheld_from_cloudflared(name))
            .collect();
        withheld.sort();
        for name in &withheld {
            cmd.env_remove(name);
        }
        if !withheld.is_empty() {
            log::debug!(
                "cloudflared's environment: withheld {} (it takes its settings from its \
                 command line only)",
                withheld.join(", ")
            );
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        cmd
    }

    /// The file server's address as cloudflared should dial it: a wildcard listen address
    /// is reached on loopback.
    fn origin_host_port(&self) -> SocketAddr {
        let mut origin = self.sup.origin;
        if origin.ip().is_unspecified() {
            origin.set_ip(if origin.is_ipv4() {
                Ipv4Addr::LOCALHOST.into()
            } else {
                Ipv6Addr::LOCALHOST.into()
            });
        }
        origin
    }

    /// Starts cloudflared once and watches it until it ends. None when postflow is stopping;
    /// else the exit code (if it exited by itself), how long it was up, and why it ended.
    fn run_once(
        &mut self,
        program: &Path,
        stop: &Receiver<()>,
    ) -> Option<(Option<i32>, Duration, String)> {
        let metrics = match free_local_port() {
            Ok(a) => a,
            Err(e) => return Some((None, Duration::ZERO, format!("no free local port: {e}"))),
        };
        // Written only when it is not already right: a restart of cloudflared on a full or
        // read-only state dir must not fail over a file that needs no change.
        let config = b"{}\n";
        let current = std::fs::read(&self.config_path).ok();
        if current.as_deref() != Some(config.as_slice()) {
            if let Err(e) = std::fs::write(&self.config_path, config) {
                let reason = format!("cannot write {}: {e}", self.config_path.display());
                return Some((None, Duration::ZERO, reason));
            }
        }
        let mut child = match process::spawn_in_own_group(&mut self.command(program, metrics)) {
            Ok(c) => c,
            Err(e) => {
                let reason = format!("cannot start {}: {e}", program.display());
                return Some((None, Duration::ZERO, reason));
            }
        };
        if let Err(e) = std::fs::write(self.pid_path(), format!("{}\n", child.id())) {
            log::warn!("cannot write {}: {e}", self.pid_path().display());
        }
        self.set_starting(format!("cloudflared pid {}", child.id()));

        let tail = Arc::new(Mutex::new(VecDeque::with_capacity(TAIL_LINES)));
        let (news_tx, news_rx) = unbounded();
        let drain = child.stderr.take().map(|stderr| {
            let tail = Arc::clone(&tail);
            std::thread::Builder::new()
                .name("tunnel-stderr".into())
                .spawn(move || drain_stderr(stderr, news_tx, tail))
        });

        let mut up_since = None;
        let mut rate_limited = false;
        let outcome = self.watch(
            &mut child,
            metrics,
            news_rx,
            stop,
            &mut up_since,
            &mut rate_limited,
        );
        let up_for = up_since.map(|t: Instant| t.elapsed()).unwrap_or_default();

        if let Outcome::Stop | Outcome::GaveUp(_) = &outcome {
            if matches!(outcome, Outcome::Stop) {
                // Take the URL back before the grace period, not after it.
                self.withdraw_on_stop();
            }
            match process::stop_child(&mut child, GRACE_PERIOD + GRACE_MARGIN) {
                Ok(stopped) if stopped.was_killed() => {
                    log::warn!("{}", stopped.describe("cloudflared"))
                }
                Ok(stopped) if matches!(outcome, Outcome::Stop) => {
                    log::info!("{}", stopped.describe("cloudflared"))
                }
                Ok(_) => {}
                Err(e) => log::warn!("cannot stop cloudflared (pid {}): {e}", child.id()),
            }
        }
        let _ = std::fs::remove_file(self.pid_path());
        // The pipe ends with the process (cloudflared does not fork), so this is quick.
        if let Some(Ok(t)) = drain {
            let _ = t.join();
        }
        let tail: Vec<String> = tail
            .lock()
            .map(|t| t.iter().cloned().collect())
            .unwrap_or_default();

        match outcome {
            Outcome::Stop => None,
            Outcome::GaveUp(reason) => Some((None, up_for, reason)),
            Outcome::Exited(st) => {
                let reason = describe_exit(st, rate_limited, &tail);
                if up_for.is_zero() && st.code() != Some(backoff::EXIT_UPDATED) && !tail.is_empty()
                {
                    let last: Vec<&str> = tail
                        .iter()
                        .rev()
                        .take(10)
                        .rev()
                        .map(String::as_str)
                        .collect();
                    log::warn!("cloudflared's last lines:\n  {}", last.join("\n  "));
                }
                Some((st.code(), up_for, reason))
            }
        }
    }

    /// Watches a running cloudflared: waits for its URL and readiness (and the probe, for a
    /// named tunnel), publishes it, then follows its edge connection until it exits, postflow
    /// stops, or it stays without a connection past the patience.
    fn watch(
        &mut self,
        child: &mut Child,
        metrics: SocketAddr,
        mut news: Receiver<Line>,
        stop: &Receiver<()>,
        first_up: &mut Option<Instant>,
        rate_limited: &mut bool,
    ) -> Outcome {
        let quick = self.sup.tunnel.mode == TunnelMode::Quick;
        let mut url = if quick {
            None
        } else {
            self.sup.tunnel.public_url.clone()
        };
        let mut phase = Phase::Starting {
            deadline: Instant::now() + self.sup.timing.ready_deadline,
        };
        let mut edge = EdgeLog::default();
        let mut misses = 0;
        let mut waiting_for = String::from("cloudflared's metrics server");
        loop {
            let tick = match phase {
                Phase::Up => self.sup.timing.watch_every,
                _ => self.sup.timing.poll_every,
            };
            let mut heard = false;
            select! {
                recv(stop) -> _ => return Outcome::Stop,
                recv(news) -> line => match line {
                    Ok(Line::QuickUrl(u)) => {
                        if quick && url.is_none() {
                            url = Some(u);
                        }
                    }
                    Ok(Line::RateLimited) => *rate_limited = true,
                    Ok(Line::ShuttingDown) => {
                        if !matches!(phase, Phase::ShuttingDown { .. }) {
                            // Its exit says "tunnel down" with the reason; its shutdown's ERR
                            // lines that come first are not a lost connection.
                            let why = "cloudflared is shutting down: it was sent a signal, \
                                       not by postflow";
                            log::info!("{why}");
                            self.withdraw(why);
                            self.publish(ComponentState::Down, why);
                            phase = Phase::ShuttingDown {
                                deadline: Instant::now() + GRACE_PERIOD + GRACE_MARGIN,
                            };
                        }
                    }
                    Ok(line) => heard = edge.take(line, Instant::now()),
                    // stderr closed: the process is ending; `try_wait` will tell.
                    Err(_) => news = never(),
                },
                default(tick) => {}
            }
            match child.try_wait() {
                Ok(Some(status)) => return Outcome::Exited(status),
                Ok(None) => {}
                Err(e) => return Outcome::GaveUp(format!("cannot watch cloudflared: {e}")),
            }
            let now = Instant::now();
            match &mut phase {
                Phase::ShuttingDown { deadline } => {
                    if now >= *deadline {
                        return Outcome::GaveUp(
                            "cloudflared did not finish its shutdown within its grace period"
                                .into(),
                        );
                    }
                }
                Phase::Up => {
                    let Some(u) = url.clone() else { continue };
                    if let Some((since, why)) = edge.lost.clone() {
                        phase = self.reconnecting(&u, since, &why, &edge);
                        continue;
                    }
                    // Lines change the state through `edge`; `/ready` is asked on the clock,
                    // for a cloudflared that went quiet.
                    if heard {
                        continue;
                    }
                    match self.http.ready(metrics) {
                        Readiness::Ready => misses = 0,
                        other => {
                            misses += 1;
                            if misses >= 2 {
                                let why = format!("/ready: {}", describe_readiness(&other));
                                phase = self.reconnecting(&u, now, &why, &edge);
                            }
                        }
                    }
                }
                Phase::Reconnecting {
                    since,
                    give_up,
                    ready_streak,
                } => {
                    if let Some(retry) = edge.retry_until {
                        *give_up = (*give_up).max(retry + RETRY_MARGIN);
                    }
                    if now >= *give_up {
                        return Outcome::GaveUp(format!(
                            "cloudflared did not reconnect within {} of losing its connection",
                            human::duration(now.duration_since(*since))
                        ));
                    }
                    match self.http.ready(metrics) {
                        Readiness::Ready => *ready_streak += 1,
                        _ => *ready_streak = 0,
                    }
                    // Back: `/ready` says so and stderr does not contradict it (after a loss
                    // line a registration line must follow, since `/ready` lags a loss by up
                    // to 20 ms). A `/ready` that stays 200 for three polls wins anyway, for a
                    // cloudflared whose registration line cannot be read.
                    if *ready_streak > 0 && (edge.lost.is_none() || *ready_streak >= 3) {
                        let after = now.duration_since(*since);
                        edge.lost = None;
                        edge.retry_until = None;
                        misses = 0;
                        if let Some(u) = url.clone() {
                            self.set_back(&u, after);
                        }
                        phase = Phase::Up;
                    }
                }
                Phase::Starting { deadline } => {
                    if now >= *deadline {
                        return Outcome::GaveUp(format!(
                            "cloudflared was not ready within {:?} (waiting for {waiting_for})",
                            self.sup.timing.ready_deadline
                        ));
                    }
                    if url.is_none() {
                        url = self.http.quick_url(metrics);
                    }
                    match self.http.ready(metrics) {
                        Readiness::Ready => {}
                        other => {
                            waiting_for = format!("/ready: {}", describe_readiness(&other));
                            continue;
                        }
                    }
                    let Some(u) = url.clone() else {
                        waiting_for = "the quick tunnel's hostname".into();
                        continue;
                    };
                    if !output::is_public_url(&u) {
                        return Outcome::GaveUp(format!(
                            "cloudflared reported {u}, which is not public"
                        ));
                    }
                    if !quick {
                        if let Err(e) = self.probe(&u) {
                            waiting_for = e;
                            continue;
                        }
                    }
                    // What stderr said while starting (dial failures, retries) is history now;
                    // the registrations it made stand.
                    edge.lost = None;
                    edge.retry_until = None;
                    misses = 0;
                    first_up.get_or_insert_with(Instant::now);
                    self.set_up(&u);
                    phase = Phase::Up;
                }
            }
        }
    }

    /// Enters `reconnecting`: publishes it and sets the patience.
    fn reconnecting(&mut self, url: &str, since: Instant, why: &str, edge: &EdgeLog) -> Phase {
        self.set_reconnecting(url, since, why);
        let mut give_up = since + self.sup.timing.patience;
        if let Some(retry) = edge.retry_until {
            give_up = give_up.max(retry + RETRY_MARGIN);
        }
        Phase::Reconnecting {
            since,
            give_up,
            ready_streak: 0,
        }
    }

    /// Stops a cloudflared left running by a previous postflow that was killed, if the pid
    /// file names one and that process is really ours.
    fn stop_leftover(&self) {
        let pid_path = self.pid_path();
        let Ok(text) = std::fs::read_to_string(&pid_path) else {
            return;
        };
        if let Ok(pid) = text.trim().parse::<u32>() {
            let ours = self.config_path.to_string_lossy().into_owned();
            match process::command_line(pid) {
                Some(cmd) if cmd.contains(&ours) => {
                    log::warn!(
                        "stopping cloudflared (pid {pid}) left running by an earlier postflow"
                    );
                    if !process::stop_pid(pid, GRACE_PERIOD + GRACE_MARGIN) {
                        log::error!("cloudflared (pid {pid}) from an earlier run would not stop");
                    }
                }
                Some(_) => log::info!(
                    "{} names pid {pid}, which is not our cloudflared: leaving it alone",
                    pid_path.display()
                ),
                None => {}
            }
        }
        let _ = std::fs::remove_file(&pid_path);
    }
}

/// The state dir as cloudflared is given it (`--config <state>/cloudflared.yml`), and as
/// the leftover check looks for it in a command line: canonical on unix; on Windows only
/// made absolute, since `canonicalize` there gives a `\\?\C:\...` verbatim path.
fn absolute_state_dir(state_dir: &Path) -> PathBuf {
    #[cfg(unix)]
    let absolute = std::fs::canonicalize(state_dir).or_else(|_| std::path::absolute(state_dir));
    #[cfg(windows)]
    let absolute = std::path::absolute(state_dir);
    absolute.unwrap_or_else(|_| state_dir.to_path_buf())
}

/// `cloudflared --version` (`cloudflared version 2026.8.2 (built …)` on stdout): the version,
/// for `postflow check`. Run with the same clean environment as the tunnel, for 10 s at most.
pub fn version(program: &Path) -> Result<String, String> {
    let mut cmd = Command::new(program);
    cmd.arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(withheld_from_cloudflared) {
            cmd.env_remove(name);
        }
    }
    let mut child = cmd.spawn().map_err(|e| e.to_string())?;
    let mut stdout = child.stdout.take();
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        if let Some(s) = stdout.as_mut() {
            let _ = s.take(4096).read_to_end(&mut out);
        }
        out
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err("`--version` did not answer within 10 s".into());
            }
            Err(e) => return Err(e.to_string()),
        }
    };
    let out = reader.join().unwrap_or_default();
    let text = String::from_utf8_lossy(&out);
    let line = text.lines().next().unwrap_or("").trim();
    if !status.success() {
        return Err(format!("`--version` failed ({status})"));
    }
    match line
        .split_whitespace()
        .skip_while(|w| *w != "version")
        .nth(1)
    {
        Some(v) => Ok(v.to_string()),
        None if line.is_empty() => Err("`--version` printed nothing".into()),
        None => Ok(shorten(line, 80)),
    }
}

/// Environment variables cloudflared must not see: what it binds its flags to (`TUNNEL*`,
/// `NO_AUTOUPDATE`, `NO_TLS_VERIFY`; `cmd/cloudflared/tunnel/cmd.go`), anything else named for
/// it, and postflow's own. Case-insensitive, as Windows' environment is.
fn withheld_from_cloudflared(name: &str) -> bool {
    let name = name.to_ascii_uppercase();
    ["TUNNEL", "CLOUDFLARED", "POSTFLOW_"]
        .iter()
        .any(|p| name.starts_with(p))
        || name == "NO_AUTOUPDATE"
        || name == "NO_TLS_VERIFY"
}

/// Reads cloudflared's stderr to the end: every line at DEBUG, the notable ones to the
/// supervisor, the last `TAIL_LINES` kept.
fn drain_stderr(stderr: ChildStderr, news: Sender<Line>, tail: Arc<Mutex<VecDeque<String>>>) {
    let mut reader = BufReader::with_capacity(64 * 1024, stderr);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.by_ref().take(MAX_LINE).read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&buf);
        let line = text.trim_end();
        if line.is_empty() {
            continue;
        }
        log::debug!(target: "postflow::tunnel::cloudflared", "{line}");
        match output::parse_line(line) {
            Line::Other => {}
            notable => {
                let _ = news.send(notable);
            }
        }
        if let Ok(mut t) = tail.lock() {
            if t.len() == TAIL_LINES {
                t.pop_front();
            }
            t.push_back(line.to_string());
        }
    }
}

fn describe_exit(status: ExitStatus, rate_limited: bool, tail: &[String]) -> String {
    if status.code() == Some(backoff::EXIT_UPDATED) {
        return "cloudflared updated itself (exit code 11)".into();
    }
    if rate_limited {
        return "the quick-tunnel API refused a new tunnel (429 Too Many Requests); \
                it rate-limits, so the next try waits"
            .into();
    }
    if status.code() == Some(0) {
        // A clean exit we did not ask for: someone sent it SIGTERM or SIGINT.
        return "cloudflared stopped by itself (exit code 0: was it stopped by hand?)".into();
    }
    let last = tail.last().map(|l| shorten(l, 300));
    match (status.code(), last) {
        (Some(code), Some(last)) => format!("cloudflared exited with code {code}: {last}"),
        (Some(code), None) => format!("cloudflared exited with code {code}"),
        (None, _) => format!("cloudflared ended: {status}"),
    }
}

fn describe_readiness(r: &Readiness) -> String {
    match r {
        Readiness::Ready => "ready".into(),
        Readiness::NotReady(status) => format!("HTTP {status}"),
        Readiness::Unreachable(e) => format!("no answer: {e}"),
    }
}

/// `4.6 s` under a minute (reconnects are usually that short), else `human::duration`.
fn seconds(d: Duration) -> String {
    if d < Duration::from_secs(60) {
        format!("{:.1} s", d.as_secs_f64())
    } else {
        human::duration(d)
    }
}

fn shorten(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// A loopback port nobody listens on right now, for cloudflared's metrics server. (Someone
/// could take it before cloudflared does; then cloudflared exits and the next start picks
/// another.)
fn free_local_port() -> std::io::Result<SocketAddr> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()
}

/// Waits `d`; true if `stop` closed meanwhile.
fn wait_or_stop(stop: &Receiver<()>, d: Duration) -> bool {
    !matches!(stop.recv_timeout(d), Err(RecvTimeoutError::Timeout))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::run_hub;
    use crossbeam_channel::bounded;
    use std::io::Write;

    /// An HTTP server that answers every request with `body`.
    fn answer_with(body: &'static [u8]) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { continue };
                let mut req = [0u8; 4096];
                let _ = s.read(&mut req);
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(head.as_bytes());
                let _ = s.write_all(body);
            }
        });
        addr
    }

    fn supervisor(mode: TunnelMode, public_url: Option<String>, hub: Hub) -> Supervisor {
        let dir = std::env::temp_dir().join(format!(
            "postflow-tunnel-unit-{}-{mode:?}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Supervisor {
            tunnel: TunnelConfig {
                mode,
                cloudflared: PathBuf::from("cloudflared"),
                public_url,
                token_file: None,
                protocol: crate::config::TunnelProtocol::Auto,
            },
            origin: "127.0.0.1:9".parse().unwrap(),
            state_dir: dir,
            hub,
            handle: TunnelHandle::default(),
            probe: Arc::new(|| {
                Some(ProbeLink {
                    path: "/f/t/probe.txt".into(),
                    expected: b"ours".to_vec(),
                })
            }),
            timing: Timing::production(),
        }
    }

    /// Runs the supervisor until `until` returns true for the handle, then stops it; returns
    /// every event it published.
    fn events_of(sup: Supervisor, until: impl Fn(&TunnelHandle) -> bool) -> Vec<Event> {
        let (hub, inbox) = Hub::new();
        let hub_thread = std::thread::spawn(move || run_hub(inbox));
        let events = hub.subscribe(100);
        let sup = Supervisor { hub, ..sup };
        let handle = sup.handle.clone();
        let (stop_tx, stop_rx) = bounded::<()>(0);
        let thread = std::thread::spawn(move || run_tunnel(sup, stop_rx));
        let start = Instant::now();
        while !until(&handle) {
            assert!(start.elapsed() < Duration::from_secs(10), "timed out");
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(stop_tx);
        thread.join().unwrap();
        hub_thread.join().unwrap();
        assert_eq!(
            handle.public(),
            Public::Down,
            "the URL is withdrawn on stop"
        );
        events.iter().map(|e| (*e).clone()).collect()
    }

    fn dummy_hub() -> Hub {
        Hub::new().0
    }

    #[test]
    fn an_external_url_that_reaches_us_is_published_on_the_handle_and_the_hub() {
        let url = format!("http://{}", answer_with(b"ours"));
        let sup = supervisor(TunnelMode::External, Some(url.clone()), dummy_hub());
        let expected = url.clone();
        let events = events_of(sup, move |h| h.public() == Public::Up(expected.clone()));
        let summary: Vec<String> = events
            .iter()
            .map(|e| match e {
                Event::Component { name, state, .. } => format!("{name} {}", state.as_str()),
                Event::TunnelUp { url } => format!("TunnelUp {url}"),
                Event::TunnelDown { reason } => format!("TunnelDown {reason}"),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            summary,
            [
                "tunnel starting".to_string(),
                "tunnel up".to_string(),
                format!("TunnelUp {url}"),
                "TunnelDown postflow is stopping".to_string(),
            ]
        );
    }

    #[test]
    fn an_external_url_that_leads_elsewhere_is_never_published() {
        let url = format!("http://{}", answer_with(b"theirs"));
        let sup = supervisor(TunnelMode::External, Some(url), dummy_hub());
        let (hub, inbox) = Hub::new();
        let hub_thread = std::thread::spawn(move || run_hub(inbox));
        let rx = hub.subscribe(100);
        let sup = Supervisor { hub, ..sup };
        let handle = sup.handle.clone();
        let (stop_tx, stop_rx) = bounded::<()>(0);
        let thread = std::thread::spawn(move || run_tunnel(sup, stop_rx));
        // Until the first probe has failed.
        let mut events = Vec::new();
        while let Ok(e) = rx.recv_timeout(Duration::from_secs(10)) {
            events.push((*e).clone());
            if matches!(
                &*e,
                Event::Component {
                    state: ComponentState::Down,
                    ..
                }
            ) {
                break;
            }
        }
        assert_eq!(handle.public(), Public::Down);
        drop(stop_tx);
        thread.join().unwrap();
        hub_thread.join().unwrap();
        assert!(!events.iter().any(|e| matches!(e, Event::TunnelUp { .. })));
        let Some(Event::Component { detail, .. }) = events.last() else {
            panic!("{events:?}")
        };
        assert!(
            detail.contains("does not lead to this postflow"),
            "{detail}"
        );
    }

    #[test]
    fn off_mode_says_off_and_never_has_a_url() {
        let sup = supervisor(TunnelMode::Off, None, dummy_hub());
        let events = events_of(sup, |_| true);
        assert!(matches!(
            events.first(),
            Some(Event::Component {
                name: COMPONENT,
                state: ComponentState::Off,
                ..
            })
        ));
        assert!(!events.iter().any(|e| matches!(e, Event::TunnelUp { .. })));
    }
}
