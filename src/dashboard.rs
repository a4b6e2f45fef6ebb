//! The dashboard on `dashboard.listen`: the page, the WebSocket, the REST API, `/health` and
//! `/metrics`. See DESIGN "Dashboard and API"; the route table is in `routes.rs`.
//!
//! Threads: `dashboard` runs the listener on the HTTP/1.1 front both listeners share
//! (`crate::http1`: `dashboard-front` reads request heads from every connection at once, at
//! most 64 `dashboard-conn` workers answer them); `dashboard-events` follows the hub, keeps the
//! status model and queues pushes for the viewers; each WebSocket viewer has its own thread
//! (`ws.rs`). Nothing here writes state: the queue owns the jobs and is asked over its channel.
//!
//! Every answer carries `Date`; HEAD is answered wherever GET is, and a 405 says what is
//! `Allow`ed. The `Host`, `Origin` and token checks run as soon as a head is in, before any
//! body is read: a client without the token never gets a worker to wait for it.

mod http;
pub mod login;
mod metrics;
pub mod model;
mod routes;
mod ws;

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{bounded, select, Receiver, RecvTimeoutError, Sender};
use serde_json::{json, Value};

use crate::config::DashboardConfig;
use crate::events::{ComponentState, Event, Hub};
use crate::frameio::AuthState;
use crate::http1::{Body, Conn, Front, Handler, Outcome, Request, Response};
use crate::ledger::Job;
use crate::queue::{QueueMsg, QueueStats};
use crate::statedir::StateDir;
use crate::throughput::Throughput;
use model::Model;
use routes::Reply;
use ws::{Outgoing, Viewers};

/// How long the dashboard waits for the queue to answer.
const QUEUE_TIMEOUT: Duration = Duration::from_secs(5);
/// Pending hub events for the dashboard (it never blocks, so this is only a burst buffer).
const HUB_QUEUE: usize = 4096;

/// Frame.io login as the dashboard needs it, implemented by the auth token owner.
pub trait FrameioLogin: Send + Sync {
    fn status(&self) -> AuthStatus;
    /// The Adobe IMS authorize URL, with a fresh `state` remembered for `complete`.
    fn authorize_url(&self) -> Result<String, String>;
    /// Finishes a login from the URL the browser ended on (or a bare code): checks `state`,
    /// exchanges the code, saves the tokens. The error is a sentence for the page.
    fn complete(&self, redirected: &str) -> Result<(), String>;
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthStatus {
    /// Tokens are present and usable (refreshing as needed).
    pub logged_in: bool,
    /// Why a sign-in is needed, when it is.
    pub needs_login: Option<String>,
    pub account: Option<String>,
    /// When the access token expires (unix seconds).
    pub expires_at: Option<u64>,
}

/// What the dashboard reads from the rest of the program.
pub struct Deps {
    pub hub: Hub,
    pub queue: Sender<QueueMsg>,
    pub state_dir: Arc<StateDir>,
    /// Threads that ended while they should still run (for `/health`).
    pub dead_threads: Arc<Mutex<Vec<&'static str>>>,
    /// `None` until the Frame.io client is wired in: the `/oauth` routes then answer 503.
    pub login: Option<Arc<dyn FrameioLogin>>,
    /// The config's projects, as `/api/status` lists them.
    pub projects: Vec<crate::config::ProjectConfig>,
    /// Bytes sent per minute (`/api/throughput`).
    pub throughput: Arc<Throughput>,
    /// The comments Frame.io's review loop brought (`GET /api/jobs/<id>/comments`).
    pub review: crate::review::store::Board,
}

/// Everything a request handler can see.
pub struct Ctx {
    /// The address actually bound (the port is known even when the config said 0).
    pub listen: SocketAddr,
    pub token: Option<String>,
    pub model: Mutex<Model>,
    pub viewers: Arc<Viewers>,
    pub queue: Sender<QueueMsg>,
    pub state_dir: Arc<StateDir>,
    pub dead_threads: Arc<Mutex<Vec<&'static str>>>,
    pub login: Option<Arc<dyn FrameioLogin>>,
    pub hub: Hub,
    pub started: SystemTime,
    /// `/api/status`'s `projects`: name, root, project_id, folder.
    pub projects: Value,
    pub throughput: Arc<Throughput>,
    pub review: crate::review::store::Board,
}

impl Ctx {
    pub fn model(&self) -> MutexGuard<'_, Model> {
        // The model is plain data; a panic while holding it ends the process anyway.
        self.model.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks the queue something and waits for the answer (up to `QUEUE_TIMEOUT`).
    pub fn ask<T>(&self, make: impl FnOnce(Sender<T>) -> QueueMsg) -> Result<T, String> {
        let (tx, rx) = bounded(1);
        self.queue
            .send(make(tx))
            .map_err(|_| "the queue is not running".to_string())?;
        rx.recv_timeout(QUEUE_TIMEOUT).map_err(|e| match e {
            RecvTimeoutError::Timeout => "the queue did not answer in time".to_string(),
            RecvTimeoutError::Disconnected => "the queue did not answer".to_string(),
        })
    }

    pub fn jobs(&self) -> Result<Vec<Job>, String> {
        self.ask(QueueMsg::Jobs)
    }

    pub fn stats(&self) -> Result<QueueStats, String> {
        self.ask(QueueMsg::Stats)
    }

    /// The whole picture: what a new viewer gets first and what `/api/status` returns.
    pub fn status(&self) -> Value {
        let (jobs, stats) = match (self.jobs(), self.stats()) {
            (Ok(jobs), Ok(stats)) => (jobs, Ok(stats)),
            (Err(e), _) | (_, Err(e)) => (Vec::new(), Err(e)),
        };
        let recent: Vec<Value> = model::recent(jobs).iter().map(model::job_json).collect();
        let auth = self.login.as_ref().map(|l| l.status());
        let m = self.model();
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "started": model::rfc3339(self.started),
            "components": m.components_json(SystemTime::now()),
            "queue": stats_json(stats.as_ref().ok()),
            "jobs": recent,
            "transfers": m.transfers_json(),
            "log": m.log_json(),
            "auth": auth.map(|a| json!({
                "logged_in": a.logged_in,
                "account": a.account,
                "expires_at": a.expires_at,
            })),
            "login_available": self.login.is_some(),
            "viewers": self.viewers.count(),
            "queue_error": stats.err(),
            "projects": self.projects,
            "bandwidth": crate::bandwidth::shared().snapshot().to_json(),
        })
    }

    /// `/health`: `degraded` whenever a person is needed (a sign-in, first start included, or
    /// a component down); 503 only for what a restart can fix.
    pub fn health(&self) -> (u16, Value) {
        let dead = self
            .dead_threads
            .lock()
            .map(|d| d.clone())
            .unwrap_or_default();
        // Unwritable when a probe write fails now, or when the queue holds changes the ledger
        // could not record (its `state_dir` component is down: the reason it got).
        let unwritable = match self.state_dir.probe_writable() {
            Err(e) => Some(format!(
                "cannot be written: {}: {e}",
                self.state_dir.path().display()
            )),
            Ok(()) => self
                .model()
                .components
                .get("state_dir")
                .filter(|c| c.state == ComponentState::Down)
                .map(|c| c.detail.clone()),
        };
        // Asked, not taken from the model: the token owner is the truth, and its very first
        // state (no tokens yet) is never an event.
        let needs_login = self.login.as_ref().is_some_and(|l| !l.status().logged_in);
        let m = self.model();
        let degraded = needs_login
            || m.components
                .values()
                .any(|c| matches!(c.state, ComponentState::Degraded | ComponentState::Down));
        let mut components = m.components_json(SystemTime::now());
        drop(m);
        if let Value::Object(c) = &mut components {
            let detail = unwritable
                .clone()
                .unwrap_or_else(|| self.state_dir.path().display().to_string());
            c.insert(
                "state_dir".into(),
                json!({"state": if unwritable.is_some() { "down" } else { "up" },
                       "detail": detail,
                       "path": self.state_dir.path().display().to_string()}),
            );
        }
        let broken = !dead.is_empty() || unwritable.is_some();
        let status = if broken || degraded { "degraded" } else { "ok" };
        let mut body = json!({ "status": status, "components": components });
        if !dead.is_empty() {
            body["dead_threads"] = json!(dead);
        }
        if let Some(reason) = unwritable {
            body["reason"] = json!(format!("state dir {reason}"));
        }
        (if broken { 503 } else { 200 }, body)
    }
}

/// The queue's numbers as the API shows them (`null` when the queue did not answer).
pub fn stats_json(stats: Option<&QueueStats>) -> Value {
    let Some(s) = stats else {
        return Value::Null;
    };
    let counts_json = |counts: &std::collections::BTreeMap<crate::ledger::JobState, usize>| {
        counts
            .iter()
            .map(|(state, n)| (state.as_str().to_string(), json!(n)))
            .collect::<serde_json::Map<String, Value>>()
    };
    let by_project: serde_json::Map<String, Value> = s
        .by_project
        .iter()
        .map(|(name, counts)| {
            let total = counts.values().sum::<usize>();
            (
                name.clone(),
                json!({ "counts": counts_json(counts), "total": total }),
            )
        })
        .collect();
    json!({
        "counts": counts_json(&s.counts),
        "total": s.counts.values().sum::<usize>(),
        "by_project": by_project,
        "paused": s.paused,
        "waiting_for_auth": s.waiting_for_auth,
        "in_flight": s.in_flight,
        "watched_files": s.watched_files,
        "unrecorded": s.unrecorded,
        "ledger_error": s.ledger_error,
    })
}

/// The projects as `/api/status` lists them: where each one's files come from and go.
fn projects_json(projects: &[crate::config::ProjectConfig]) -> Value {
    projects
        .iter()
        .map(|p| {
            json!({
                "name": p.name,
                "root": crate::paths::simplified(&p.root).display().to_string(),
                "project_id": p.project_id,
                "folder": p.folder,
            })
        })
        .collect()
}

/// `postflow status`'s text for an `/api/status` answer: components, counts, transfers.
pub fn summary(status: &Value, url: &str) -> String {
    let mut out = format!(
        "postflow {} at {url} (up since {})\n",
        status["version"].as_str().unwrap_or("?"),
        status["started"].as_str().unwrap_or("?")
    );
    if let Some(components) = status["components"].as_object() {
        for (name, c) in components {
            let state = c["state"].as_str().unwrap_or("?");
            let detail = c["detail"].as_str().unwrap_or("");
            match (state, c["for_ms"].as_u64()) {
                ("reconnecting", Some(ms)) => out.push_str(&format!(
                    "  {name:<10} {state} for {}: {detail}\n",
                    crate::human::duration(Duration::from_millis(ms))
                )),
                _ => out.push_str(&format!("  {name:<10} {state:<9} {detail}\n")),
            }
        }
    }
    let q = &status["queue"];
    match q["counts"].as_object() {
        Some(counts) => {
            let parts: Vec<String> = counts
                .iter()
                .filter(|(_, n)| n.as_u64().unwrap_or(0) > 0)
                .map(|(state, n)| format!("{n} {state}"))
                .collect();
            let mut line = if parts.is_empty() {
                "no jobs".to_string()
            } else {
                parts.join(", ")
            };
            if q["paused"] == true {
                line.push_str(" (paused)");
            }
            if q["waiting_for_auth"] == true {
                line.push_str(" (waiting for a Frame.io login)");
            }
            out.push_str(&format!("queue: {line}\n"));
            // With several projects, each one's counts under the total.
            let projects = q["by_project"].as_object().filter(|p| p.len() > 1);
            for (name, p) in projects.into_iter().flatten() {
                let parts: Vec<String> = p["counts"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(_, n)| n.as_u64().unwrap_or(0) > 0)
                    .map(|(state, n)| format!("{n} {state}"))
                    .collect();
                let line = if parts.is_empty() {
                    "no jobs".to_string()
                } else {
                    parts.join(", ")
                };
                out.push_str(&format!("  {name}: {line}\n"));
            }
        }
        None => out.push_str(&format!(
            "queue: not answering ({})\n",
            status["queue_error"].as_str().unwrap_or("unknown")
        )),
    }
    if status["auth"]["logged_in"] == false {
        out.push_str("Frame.io: needs a login (open the status page, or run `postflow auth`)\n");
    }
    for t in status["transfers"].as_array().into_iter().flatten() {
        let (covered, total) = (
            t["covered"].as_u64().unwrap_or(0),
            t["total"].as_u64().unwrap_or(0),
        );
        let pct = covered.saturating_mul(100).checked_div(total).unwrap_or(0);
        out.push_str(&format!(
            "  {} {pct}% of {} at {:.1} MB/s\n",
            t["name"].as_str().unwrap_or("?"),
            crate::human::size(total),
            t["bytes_per_sec"].as_f64().unwrap_or(0.0) / 1e6
        ));
    }
    out
}

/// A bound dashboard, ready to run on two threads: `serve` and `follow_events`.
pub struct Dashboard {
    listener: TcpListener,
    ctx: Arc<Ctx>,
    events: Receiver<Arc<crate::events::Event>>,
    hub: Hub,
}

impl Dashboard {
    /// Binds `config.listen` (so a taken port is reported at start) and subscribes to the hub.
    pub fn bind(config: &DashboardConfig, deps: Deps) -> io::Result<Dashboard> {
        let listener = crate::http1::bind_listener(config.listen)?;
        let listen = listener.local_addr()?;
        let events = deps.hub.subscribe(HUB_QUEUE);
        let mut model = Model::default();
        // The token owner's state as of now: it only sends changes, and started before we
        // subscribed. Any later change comes as an event.
        if let Some(login) = &deps.login {
            let now = (Instant::now(), SystemTime::now());
            model.apply(
                &Event::AuthChanged(auth_state(&login.status())),
                now.0,
                now.1,
            );
        }
        let ctx = Arc::new(Ctx {
            listen,
            token: config.token.clone(),
            model: Mutex::new(model),
            viewers: Arc::new(Viewers::default()),
            queue: deps.queue,
            state_dir: deps.state_dir,
            dead_threads: deps.dead_threads,
            login: deps.login,
            hub: deps.hub.clone(),
            started: SystemTime::now(),
            projects: projects_json(&deps.projects),
            throughput: deps.throughput,
            review: deps.review,
        });
        Ok(Dashboard {
            listener,
            ctx,
            events,
            hub: deps.hub,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.ctx.listen
    }

    /// Splits into the two loops, each for its own thread.
    pub fn into_loops(self) -> (Server, Follower) {
        (
            Server {
                listener: self.listener,
                ctx: Arc::clone(&self.ctx),
            },
            Follower {
                ctx: self.ctx,
                events: self.events,
                hub: self.hub,
            },
        )
    }
}

/// The `AuthState` an `AuthStatus` describes.
fn auth_state(status: &AuthStatus) -> AuthState {
    match (&status.needs_login, status.logged_in) {
        (_, true) => AuthState::Connected,
        (Some(reason), false) => AuthState::NeedsLogin {
            reason: reason.clone(),
        },
        (None, false) => AuthState::NeedsLogin {
            reason: "not signed in".into(),
        },
    }
}

pub struct Server {
    listener: TcpListener,
    ctx: Arc<Ctx>,
}

impl Server {
    /// Serves until `stop` closes.
    pub fn run(self, stop: Receiver<()>) {
        let addr = self.ctx.listen;
        let site = Arc::new(Site { ctx: self.ctx });
        let mut front = match Front::start(self.listener, http::limits(), site) {
            Ok(front) => front,
            Err(e) => {
                log::error!("dashboard: cannot start serving on {addr}: {e}");
                return;
            }
        };
        log::info!("dashboard on http://{addr}");
        let _ = stop.recv();
        front.stop();
    }
}

/// The dashboard as the front's handler.
struct Site {
    ctx: Arc<Ctx>,
}

impl Handler for Site {
    fn serve(&self, req: &Request, mut conn: Conn) -> Outcome {
        let reply = match routes::check(&self.ctx, req) {
            Some(refused) => Reply::Http(refused),
            None => match read_body(req, &mut conn) {
                Ok(body) => routes::handle(&self.ctx, req, &body),
                Err(Some(refused)) => Reply::Http(refused),
                Err(None) => return Outcome::Close(conn),
            },
        };
        match reply {
            Reply::Http(response) => http::send(conn, req, response),
            Reply::WebSocket { accept_key, ticket } => {
                upgrade(&self.ctx, conn, &accept_key, ticket)
            }
        }
    }

    fn refusal(&self, status: u16, why: &str) -> Response {
        let why = match status {
            503 => "too many requests at once; try again in a second",
            _ => why,
        };
        http::guarded(http::error(status, why))
    }
}

/// The request's body, read after the checks. `Err(Some)` is the answer instead (too large,
/// chunked); `Err(None)`: the client did not send it in time, nobody to answer.
fn read_body(req: &Request, conn: &mut Conn) -> Result<Vec<u8>, Option<Response>> {
    match req.body {
        Body::None => Ok(Vec::new()),
        Body::Chunked => Err(Some(http::error(411, "send the body with Content-Length"))),
        Body::Length(n) if n > http::MAX_BODY as u64 => Err(Some(http::error(
            413,
            &format!("request body over {} bytes", http::MAX_BODY),
        ))),
        Body::Length(_) => conn.read_body().map_err(|e| {
            log::debug!("dashboard: body from {} not received: {e}", conn.peer());
            None
        }),
    }
}

/// Answers 101 and hands the socket to a viewer thread of its own.
fn upgrade(ctx: &Arc<Ctx>, mut conn: Conn, accept_key: &str, ticket: ws::Ticket) -> Outcome {
    if let Err(e) = conn.write_all(ws::accept_response(accept_key).as_bytes()) {
        log::debug!("dashboard: WebSocket handshake not sent: {e}");
        return Outcome::Close(conn);
    }
    let (stream, early) = match conn.detach() {
        Ok(detached) => detached,
        Err(e) => {
            log::debug!("dashboard: viewer socket: {e}");
            return Outcome::Detached;
        }
    };
    let ctx = Arc::clone(ctx);
    let spawned = std::thread::Builder::new()
        .name("dashboard-ws".into())
        .spawn(move || {
            let snapshot = Outgoing {
                kind: "snapshot",
                time: model::rfc3339(SystemTime::now()),
                data: ctx.status().to_string(),
            };
            ws::serve_viewer(stream, early, ticket, snapshot);
        });
    if let Err(e) = spawned {
        log::warn!("dashboard: cannot start a viewer thread: {e}");
    }
    Outcome::Detached
}

/// Follows the hub: keeps the model and feeds the viewers.
pub struct Follower {
    ctx: Arc<Ctx>,
    events: Receiver<Arc<crate::events::Event>>,
    hub: Hub,
}

impl Follower {
    pub fn run(self, stop: Receiver<()>) {
        let Follower {
            ctx,
            mut events,
            hub,
        } = self;
        loop {
            select! {
                recv(events) -> ev => match ev {
                    Ok(ev) => {
                        let push = ctx.model().apply(&ev, Instant::now(), SystemTime::now());
                        if let Some((kind, data)) = push {
                            ctx.viewers.broadcast(Outgoing {
                                kind,
                                time: model::rfc3339(SystemTime::now()),
                                data: data.to_string(),
                            });
                        }
                    }
                    Err(_) => match stop.recv_timeout(Duration::from_millis(100)) {
                        // The hub dropped us for falling behind: follow again, and make the
                        // viewers reconnect for a fresh snapshot, since they missed events.
                        Err(RecvTimeoutError::Timeout) => {
                            log::warn!("dashboard: fell behind the event hub; following again");
                            events = hub.subscribe(HUB_QUEUE);
                            ctx.viewers.drop_all();
                        }
                        _ => break,
                    },
                },
                recv(stop) -> _ => break,
            }
        }
        // Viewers close (their threads hold the context, and with it a hub handle).
        ctx.viewers.drop_all();
    }
}
