//! The two listeners: the metrics server (`/ready`, `/quicktunnel`,
//! `/healthcheck`, `/metrics`, `/config`) and the local "edge" that forwards
//! raw TCP to the origin.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::text::{http_date, now_unix, Level, Logger};
use super::EDGE_IP;

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
    pub total_requests: AtomicU64,
    pub idle: Duration,
    start: Instant,
    next_conn_id: AtomicU64,
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
}

/// One forwarded connection.
pub struct Conn {
    client: TcpStream,
    origin: TcpStream,
    /// Milliseconds since `Shared::start` of the last byte moved.
    last_ms: AtomicU64,
    /// 0 nothing yet, 1 last bytes went client→origin, 2 origin→client.
    last_dir: AtomicU8,
    /// Writes in progress (a blocked write means a transfer is under way).
    writing: AtomicU8,
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
        idle: Duration,
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
            total_requests: AtomicU64::new(0),
            idle,
            start: Instant::now(),
            next_conn_id: AtomicU64::new(1),
            conns: Mutex::new(HashMap::new()),
        }
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    /// Connections reported as ready by `/ready` (0 once shutting down).
    pub fn ready_count(&self) -> usize {
        if self.shutting_down.load(Ordering::SeqCst) {
            0
        } else {
            self.ready_connections.load(Ordering::SeqCst)
        }
    }

    /// Forwarded connections that look busy: a request went up and no
    /// response bytes came back yet, or bytes moved within `idle`.
    pub fn in_flight(&self) -> usize {
        let now = self.now_ms();
        let idle = self.idle.as_millis() as u64;
        let conns = self.conns.lock().unwrap();
        conns
            .values()
            .filter(|c| match c.last_dir.load(Ordering::SeqCst) {
                _ if c.writing.load(Ordering::SeqCst) > 0 => true,
                0 => false,
                1 => true,
                _ => now.saturating_sub(c.last_ms.load(Ordering::SeqCst)) < idle,
            })
            .count()
    }

    /// Cuts every forwarded connection.
    pub fn close_all(&self) {
        let conns = self.conns.lock().unwrap();
        for c in conns.values() {
            let _ = c.client.shutdown(Shutdown::Both);
            let _ = c.origin.shutdown(Shutdown::Both);
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

fn http_response(status: u16, reason: &str, body: &str, head_only: bool) -> Vec<u8> {
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

// ---------------------------------------------------------------- edge

/// Accepts on the edge listener until `stop_edge` is set (wake it with
/// [`wake_edge`]); then the listener is dropped, so new connections are refused.
pub fn spawn_edge(listener: TcpListener, shared: Arc<Shared>) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        for stream in listener.incoming() {
            if shared.stop_edge.load(Ordering::SeqCst) {
                break;
            }
            let Ok(stream) = stream else { continue };
            let shared = shared.clone();
            thread::spawn(move || handle_edge(stream, shared));
        }
    })
}

/// Unblocks the edge accept loop after `stop_edge` was set.
pub fn wake_edge(addr: SocketAddr) {
    let _ = TcpStream::connect_timeout(&addr, Duration::from_millis(500));
}

fn go_dial_error(addr: &str, e: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    let what = match e.kind() {
        ConnectionRefused => "connect: connection refused".to_string(),
        TimedOut | WouldBlock => "i/o timeout".to_string(),
        _ => e.to_string(),
    };
    format!("dial tcp {addr}: {what}")
}

fn dial(addr: &str) -> std::io::Result<TcpStream> {
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no such host");
    for sa in addr.to_socket_addrs()? {
        match TcpStream::connect_timeout(&sa, Duration::from_secs(10)) {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn handle_edge(mut client: TcpStream, shared: Arc<Shared>) {
    if shared.stop_edge.load(Ordering::SeqCst) {
        return;
    }
    shared.total_requests.fetch_add(1, Ordering::SeqCst);
    let _ = client.set_nodelay(true);
    let Some(addr) = shared.origin.clone() else {
        // Named tunnel without an origin: the catch-all `http_status:404`.
        let _ = client.set_read_timeout(Some(Duration::from_secs(2)));
        let head = read_head(&mut client, 16 * 1024);
        let head_only = head.starts_with(b"HEAD ");
        let _ = client.write_all(&http_response(404, "Not Found", "", head_only));
        return;
    };
    let origin = match dial(&addr) {
        Ok(o) => o,
        Err(e) => return origin_down(client, &shared, &addr, &e),
    };
    let _ = origin.set_nodelay(true);
    let (Ok(client2), Ok(origin2)) = (client.try_clone(), origin.try_clone()) else {
        return;
    };
    let (Ok(client3), Ok(origin3)) = (client.try_clone(), origin.try_clone()) else {
        return;
    };
    let id = shared.next_conn_id.fetch_add(1, Ordering::SeqCst);
    let conn = Arc::new(Conn {
        client: client3,
        origin: origin3,
        last_ms: AtomicU64::new(shared.now_ms()),
        last_dir: AtomicU8::new(0),
        writing: AtomicU8::new(0),
    });
    shared.conns.lock().unwrap().insert(id, conn.clone());

    let up = {
        let conn = conn.clone();
        let shared = shared.clone();
        thread::spawn(move || pump(client2, origin2, 1, &conn, &shared))
    };
    pump(origin, client, 2, &conn, &shared);
    let _ = up.join();
    shared.conns.lock().unwrap().remove(&id);
}

fn pump(mut from: TcpStream, mut to: TcpStream, dir: u8, conn: &Conn, shared: &Shared) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => {
                conn.last_ms.store(shared.now_ms(), Ordering::SeqCst);
                conn.last_dir.store(dir, Ordering::SeqCst);
                conn.writing.fetch_add(1, Ordering::SeqCst);
                let ok = to.write_all(&buf[..n]).is_ok();
                conn.writing.fetch_sub(1, Ordering::SeqCst);
                conn.last_ms.store(shared.now_ms(), Ordering::SeqCst);
                if !ok {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

fn origin_down(mut client: TcpStream, shared: &Shared, addr: &str, e: &std::io::Error) {
    let _ = client.set_read_timeout(Some(Duration::from_secs(2)));
    let head = read_head(&mut client, 16 * 1024);
    let text = String::from_utf8_lossy(&head);
    let path = text
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("/")
        .to_string();
    let host = text
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("host").then(|| v.trim().to_string())
        })
        .or_else(|| shared.public_hostname.clone())
        .unwrap_or_default();
    let err = format!(
        "Unable to reach the origin service. The service may be down or it may not be responding to traffic from cloudflared: {}",
        go_dial_error(addr, e)
    );
    let dest = format!("https://{host}{path}");
    let origin_service = shared.origin_url.clone().unwrap_or_default();
    shared.log.log(
        Level::Error,
        "",
        &[
            ("error", err.clone()),
            ("connIndex", "0".into()),
            ("dest", dest.clone()),
            ("event", "0".into()),
            ("ip", EDGE_IP.into()),
            ("originService", origin_service),
            ("type", "http".into()),
        ],
    );
    shared.log.log(
        Level::Error,
        "Request failed",
        &[
            ("error", err),
            ("connIndex", "0".into()),
            ("dest", dest),
            ("event", "0".into()),
            ("ip", EDGE_IP.into()),
            ("type", "http".into()),
        ],
    );
    let head_only = head.starts_with(b"HEAD ");
    let _ = client.write_all(&http_response(
        502,
        "Bad Gateway",
        "error code: 502\n",
        head_only,
    ));
    let _ = client.flush();
    let _ = client.shutdown(Shutdown::Write);
}
