//! The dashboard on `dashboard.listen`: the page, the WebSocket, the REST API, `/health` and
//! `/metrics`. See DESIGN "Dashboard and API"; the route table is in `routes.rs`.
//!
//! Threads: `dashboard` accepts connections and gives each one a short-lived thread (at most
//! `MAX_CONNECTIONS` at once); `dashboard-events` follows the hub, keeps the status model and
//! queues pushes for the viewers; each WebSocket viewer has its own thread (`ws.rs`).
//! Nothing here writes state: the queue owns the jobs and is asked over its channel.

pub mod http;
pub mod login;
pub mod metrics;
pub mod model;
pub mod routes;
pub mod ws;

use std::io::{self, BufReader, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{bounded, select, Receiver, RecvTimeoutError, Sender};
use serde_json::{json, Value};

use crate::config::DashboardConfig;
use crate::events::{ComponentState, Hub};
use crate::ledger::Job;
use crate::queue::{QueueMsg, QueueStats};
use crate::statedir::StateDir;
use http::{ReadError, Response};
use model::Model;
use ws::{Outgoing, Viewers};

/// Requests being handled at once; more get 503.
const MAX_CONNECTIONS: usize = 64;
/// A request must arrive whole within this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
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
        })
    }

    /// `/health`: 503 only for what a restart can fix.
    pub fn health(&self) -> (u16, Value) {
        let dead = self
            .dead_threads
            .lock()
            .map(|d| d.clone())
            .unwrap_or_default();
        let writable = self.state_dir.is_writable();
        let m = self.model();
        let degraded = m
            .components
            .values()
            .any(|c| matches!(c.state, ComponentState::Degraded | ComponentState::Down));
        let mut components = m.components_json(SystemTime::now());
        drop(m);
        if let Value::Object(c) = &mut components {
            c.insert(
                "state_dir".into(),
                json!({"state": if writable { "up" } else { "down" },
                       "detail": self.state_dir.path().display().to_string()}),
            );
        }
        let broken = !dead.is_empty() || !writable;
        let status = if broken || degraded { "degraded" } else { "ok" };
        let mut body = json!({ "status": status, "components": components });
        if !dead.is_empty() {
            body["dead_threads"] = json!(dead);
        }
        (if broken { 503 } else { 200 }, body)
    }
}

/// The queue's numbers as the API shows them (`null` when the queue did not answer).
pub fn stats_json(stats: Option<&QueueStats>) -> Value {
    let Some(s) = stats else {
        return Value::Null;
    };
    let counts: serde_json::Map<String, Value> = s
        .counts
        .iter()
        .map(|(state, n)| (state.as_str().to_string(), json!(n)))
        .collect();
    json!({
        "counts": counts,
        "total": s.counts.values().sum::<usize>(),
        "paused": s.paused,
        "waiting_for_auth": s.waiting_for_auth,
        "in_flight": s.in_flight,
        "watched_files": s.watched_files,
    })
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
        let listener = TcpListener::bind(config.listen)?;
        let listen = listener.local_addr()?;
        let events = deps.hub.subscribe(HUB_QUEUE);
        let ctx = Arc::new(Ctx {
            listen,
            token: config.token.clone(),
            model: Mutex::new(Model::default()),
            viewers: Arc::new(Viewers::default()),
            queue: deps.queue,
            state_dir: deps.state_dir,
            dead_threads: deps.dead_threads,
            login: deps.login,
            hub: deps.hub.clone(),
            started: SystemTime::now(),
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

pub struct Server {
    listener: TcpListener,
    ctx: Arc<Ctx>,
}

impl Server {
    /// Accepts connections until `stop` closes.
    pub fn run(self, stop: Receiver<()>) {
        let addr = self.ctx.listen;
        // `accept` blocks; when told to stop, wake it with a connection of our own.
        let stopping = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stopping);
        let waker = std::thread::Builder::new()
            .name("dashboard-stop".into())
            .spawn(move || {
                let _ = stop.recv();
                flag.store(true, Ordering::SeqCst);
                let _ = TcpStream::connect_timeout(&wake_addr(addr), Duration::from_secs(1));
            });
        if let Err(e) = &waker {
            log::error!("dashboard: cannot start its stop thread: {e}");
            return;
        }
        log::info!("dashboard on http://{addr}");
        let busy = Arc::new(AtomicUsize::new(0));
        for conn in self.listener.incoming() {
            if stopping.load(Ordering::SeqCst) {
                break;
            }
            let stream = match conn {
                Ok(s) => s,
                Err(e) => {
                    log::debug!("dashboard: accept: {e}");
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            };
            if busy.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
                refuse(stream);
                continue;
            }
            busy.fetch_add(1, Ordering::SeqCst);
            let (ctx, busy2) = (Arc::clone(&self.ctx), Arc::clone(&busy));
            let spawned = std::thread::Builder::new()
                .name("dashboard-conn".into())
                .spawn(move || {
                    handle_connection(&ctx, stream);
                    busy2.fetch_sub(1, Ordering::SeqCst);
                });
            if let Err(e) = spawned {
                busy.fetch_sub(1, Ordering::SeqCst);
                log::warn!("dashboard: cannot start a connection thread: {e}");
            }
        }
    }
}

/// Where to connect to reach our own listener (an unspecified address is not connectable).
fn wake_addr(addr: SocketAddr) -> SocketAddr {
    let mut a = addr;
    if a.ip().is_unspecified() {
        a.set_ip(match a {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    a
}

fn refuse(mut stream: TcpStream) {
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let _ = Response::error(503, "too many connections")
        .with_header("Retry-After", "1")
        .write_to(&mut stream);
}

fn handle_connection(ctx: &Ctx, stream: TcpStream) {
    if stream.set_read_timeout(Some(REQUEST_TIMEOUT)).is_err()
        || stream.set_write_timeout(Some(REQUEST_TIMEOUT)).is_err()
    {
        return;
    }
    let Ok(read_half) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    let mut stream = stream;
    let reply = match http::read_request(&mut reader) {
        Ok(req) => routes::handle(ctx, &req),
        Err(ReadError::Gone) => return,
        Err(ReadError::Bad(why)) => routes::Reply::Http(Response::error(400, why)),
        Err(ReadError::HeadTooLarge) => {
            routes::Reply::Http(Response::error(431, "request head too large"))
        }
        Err(ReadError::BodyTooLarge) => routes::Reply::Http(Response::error(
            413,
            &format!("request body over {} bytes", http::MAX_BODY),
        )),
        Err(ReadError::LengthRequired) => {
            routes::Reply::Http(Response::error(411, "send the body with Content-Length"))
        }
    };
    match reply {
        routes::Reply::Http(resp) => {
            if let Err(e) = resp.write_to(&mut stream) {
                log::debug!("dashboard: reply not sent: {e}");
            }
            linger(&mut reader, &stream);
        }
        routes::Reply::WebSocket { accept_key, ticket } => {
            if let Err(e) = ws::accept(&mut stream, &accept_key) {
                log::debug!("dashboard: WebSocket handshake not sent: {e}");
                return;
            }
            drop(reader);
            let snapshot = Outgoing {
                kind: "snapshot",
                time: model::rfc3339(SystemTime::now()),
                data: ctx.status().to_string(),
            };
            ws::serve_viewer(stream, ticket, snapshot);
        }
    }
}

/// Closes gently: after our reply, read (and drop) what the client still sends for a moment.
/// Closing with unread input makes the kernel send a reset, which can destroy the reply before
/// the client reads it (a 413 sent before the body was read, for example).
fn linger(reader: &mut BufReader<TcpStream>, stream: &TcpStream) {
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let _ = io::copy(&mut reader.take(1 << 20), &mut io::sink());
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
