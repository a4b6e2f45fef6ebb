//! The metrics server (`/ready`, `/quicktunnel`, `/healthcheck`, `/metrics`,
//! `/config`) and the state it shares with the edge ([`super::edge`]) and the
//! supervisor loop.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::edge::Idle;
use super::text::{http_date, now_unix, Logger};

/// State shared by the listeners and the supervisor loop.
pub struct Shared {
    pub log: Logger,
    pub connector_id: String,
    /// Quick-tunnel hostname (no scheme); empty for named tunnels.
    pub quick_hostname: String,
    /// Hostname the edge answers for (quick hostname, or the named one).
    pub public_hostname: Option<String>,
    pub quicktunnel_404: bool,
    /// `host:port` to forward to, if any.
    pub origin: Option<String>,
    pub origin_url: Option<String>,
    pub config_json: String,
    pub ready_connections: AtomicUsize,
    pub shutting_down: AtomicBool,
    pub stop_edge: AtomicBool,
    /// The edge connection is lost: requests for the hostname get 530 until it is back.
    pub edge_lost: AtomicBool,
    /// Requests proxied (counted per request, as cloudflared's metric does).
    pub total_requests: AtomicU64,
    /// New TCP connections made to the origin (keep-alive reuse shows as fewer of these).
    pub origin_dials: AtomicU64,
    /// Requests whose response has not been delivered yet.
    pub(super) in_flight: AtomicUsize,
    /// Every open socket of the edge (callers' and origin's), so a drop or the end of
    /// the process can cut them all.
    sockets: Mutex<HashMap<u64, TcpStream>>,
    next_socket: AtomicU64,
    /// Origin connections kept alive between requests.
    pub(super) idle: Mutex<Vec<Idle>>,
    /// Bytes per second through the edge, all transfers together (0: unlimited).
    rate: u64,
    /// When the paced link is free again.
    next_free: Mutex<Instant>,
}

impl Shared {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        log: Logger,
        connector_id: String,
        quick_hostname: String,
        public_hostname: Option<String>,
        quicktunnel_404: bool,
        origin_url: Option<String>,
        config_json: String,
        rate: u64,
    ) -> Shared {
        Shared {
            log,
            connector_id,
            quick_hostname,
            public_hostname,
            quicktunnel_404,
            origin: origin_url.as_deref().and_then(super::args::origin_addr),
            origin_url,
            config_json,
            ready_connections: AtomicUsize::new(0),
            shutting_down: AtomicBool::new(false),
            stop_edge: AtomicBool::new(false),
            edge_lost: AtomicBool::new(false),
            total_requests: AtomicU64::new(0),
            origin_dials: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            sockets: Mutex::new(HashMap::new()),
            next_socket: AtomicU64::new(1),
            idle: Mutex::new(Vec::new()),
            rate,
            next_free: Mutex::new(Instant::now()),
        }
    }

    /// Connections reported as ready by `/ready` (0 once shutting down).
    pub fn ready_count(&self) -> usize {
        if self.shutting_down.load(Ordering::SeqCst) {
            0
        } else {
            self.ready_connections.load(Ordering::SeqCst)
        }
    }

    /// Requests being proxied right now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Remembers an open socket until the returned id is forgotten.
    pub(super) fn track(&self, stream: &TcpStream) -> Option<u64> {
        let clone = stream.try_clone().ok()?;
        let id = self.next_socket.fetch_add(1, Ordering::SeqCst);
        self.sockets.lock().unwrap().insert(id, clone);
        Some(id)
    }

    pub(super) fn forget(&self, id: Option<u64>) {
        if let Some(id) = id {
            self.sockets.lock().unwrap().remove(&id);
        }
    }

    /// Cuts every socket of the edge, in flight or idle: what callers and the origin
    /// see when the edge connection drops or the process ends.
    pub fn close_all(&self) {
        for s in self.sockets.lock().unwrap().values() {
            let _ = s.shutdown(Shutdown::Both);
        }
        self.idle.lock().unwrap().clear();
    }

    /// Waits until `n` more bytes may go through the edge (no wait when unlimited).
    pub(super) fn pace(&self, n: usize) {
        if self.rate == 0 {
            return;
        }
        let slot = Duration::from_secs_f64(n as f64 / self.rate as f64);
        let until = {
            let mut next = self.next_free.lock().unwrap();
            *next = (*next).max(Instant::now()) + slot;
            *next
        };
        let now = Instant::now();
        if until > now {
            thread::sleep(until - now);
        }
    }
}

fn read_head(stream: &mut TcpStream, limit: usize) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 2048];
    while buf.len() < limit {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
        }
    }
    buf
}

pub(super) fn http_response(status: u16, reason: &str, body: &str, head_only: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nDate: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        http_date(now_unix()),
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

// ---------------------------------------------------------------- metrics

/// Starts serving on an already bound listener.
pub fn spawn_metrics(listener: TcpListener, shared: Arc<Shared>) {
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let shared = shared.clone();
            thread::spawn(move || handle_metrics(stream, &shared));
        }
    });
}

fn handle_metrics(mut stream: TcpStream, shared: &Shared) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(10)));
    let head = read_head(&mut stream, 16 * 1024);
    let text = String::from_utf8_lossy(&head);
    let mut parts = text.lines().next().unwrap_or("").split_whitespace();
    let method = parts.next().unwrap_or("");
    let target = parts.next().unwrap_or("");
    let path = target.split('?').next().unwrap_or("");
    let head_only = method == "HEAD";
    let resp = match path {
        "/ready" => {
            let n = shared.ready_count();
            let status = if n > 0 { 200 } else { 503 };
            let body = format!(
                "{{\"status\":{status},\"readyConnections\":{n},\"connectorId\":\"{}\"}}",
                shared.connector_id
            );
            let reason = if n > 0 { "OK" } else { "Service Unavailable" };
            http_response(status, reason, &body, head_only)
        }
        "/quicktunnel" if !shared.quicktunnel_404 => {
            let body = format!("{{\"hostname\":\"{}\"}}", shared.quick_hostname);
            http_response(200, "OK", &body, head_only)
        }
        "/healthcheck" => http_response(200, "OK", "OK\n", head_only),
        "/metrics" => http_response(200, "OK", &prometheus(shared), head_only),
        "/config" => http_response(200, "OK", &shared.config_json, head_only),
        "/debug/pprof/cmdline" => http_response(403, "Forbidden", "", head_only),
        _ => http_response(404, "Not Found", "404 page not found\n", head_only),
    };
    let _ = stream.write_all(&resp);
    let _ = stream.flush();
}

fn prometheus(shared: &Shared) -> String {
    let mut s = String::new();
    s.push_str("# HELP build_info Build and version information\n# TYPE build_info gauge\n");
    s.push_str(&format!(
        "build_info{{goversion=\"go1.26.4\",revision=\"2026-08-20-1000 UTC\",type=\"\",version=\"{}\"}} 1\n",
        super::VERSION
    ));
    s.push_str("# HELP cloudflared_tunnel_concurrent_requests_per_tunnel Concurrent requests proxied through each tunnel\n# TYPE cloudflared_tunnel_concurrent_requests_per_tunnel gauge\n");
    s.push_str(&format!(
        "cloudflared_tunnel_concurrent_requests_per_tunnel {}\n",
        shared.in_flight()
    ));
    s.push_str("# HELP cloudflared_tunnel_ha_connections Number of active ha connections\n# TYPE cloudflared_tunnel_ha_connections gauge\n");
    s.push_str(&format!(
        "cloudflared_tunnel_ha_connections {}\n",
        shared.ready_count()
    ));
    s.push_str("# HELP cloudflared_tunnel_total_requests Amount of requests proxied through all the tunnels\n# TYPE cloudflared_tunnel_total_requests counter\n");
    s.push_str(&format!(
        "cloudflared_tunnel_total_requests {}\n",
        shared.total_requests.load(Ordering::SeqCst)
    ));
    if let Some(h) = &shared.public_hostname {
        s.push_str("# HELP cloudflared_tunnel_user_hostnames_counts Which user hostnames cloudflared is serving\n# TYPE cloudflared_tunnel_user_hostnames_counts counter\n");
        s.push_str(&format!(
            "cloudflared_tunnel_user_hostnames_counts{{userHostname=\"https://{h}\"}} 1\n"
        ));
    }
    s
}
