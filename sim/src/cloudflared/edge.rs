//! The local "edge": what Cloudflare's edge and cloudflared together do to a request for the
//! public hostname, as measured on cloudflared 2026.8.2 (reference, "Measured on the real
//! binary"):
//!
//! - HTTP/1.1 from the caller, HTTP/1.1 to the origin through Go's `net/http` client: the
//!   origin sees the caller's head plus `Cf-Warp-Tag-Id: <connector id>` and
//!   `Connection: keep-alive`, and origin connections are kept alive and reused;
//! - `Accept-Encoding: gzip` is added when the caller sent neither `Accept-Encoding` nor
//!   `Range` (and the method is not HEAD), and a gzip answer to such a request is then
//!   decompressed before it goes back, without `Content-Encoding` and `Content-Length`;
//! - bodies are streamed through (16 KiB at a time), never buffered whole;
//! - while the edge connection is lost, requests get `530` (Cloudflare's error 1033) and
//!   everything in flight is cut; the hostname stays registered.
//!
//! Request bodies with `Transfer-Encoding: chunked` are not simulated (501).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::server::{http_response, Shared};
use super::text::Level;
use super::EDGE_IP;

/// cloudflared copies bodies with a 16 KiB buffer (`cfio/copy.go`).
const COPY_BUF: usize = 16 * 1024;
/// Longest request or response head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Go's `IdleConnTimeout` as cloudflared sets it (`proxy-keepalive-timeout`, 90 s).
const KEEPALIVE_IDLE: Duration = Duration::from_secs(90);
/// Headers that describe one hop, not the message (RFC 9110 §7.6.1).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// An origin connection waiting for its next request.
pub struct Idle {
    reader: BufReader<TcpStream>,
    since: Instant,
}

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
            thread::spawn(move || serve_caller(stream, &shared));
        }
    })
}

/// Unblocks the edge accept loop after `stop_edge` was set.
pub fn wake_edge(addr: SocketAddr) {
    let _ = TcpStream::connect_timeout(&addr, Duration::from_millis(500));
}

/// A message head: the first line and the header fields in order.
struct Head {
    first: String,
    fields: Vec<(String, String)>,
}

impl Head {
    fn parse(raw: &[u8]) -> Option<Head> {
        let text = std::str::from_utf8(raw).ok()?;
        let mut lines = text.split("\r\n").filter(|l| !l.is_empty());
        let first = lines.next()?.to_string();
        let mut fields = Vec::new();
        for line in lines {
            let (k, v) = line.split_once(':')?;
            fields.push((k.trim().to_string(), v.trim().to_string()));
        }
        Some(Head { first, fields })
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn has_token(&self, name: &str, token: &str) -> bool {
        self.fields
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// The fields worth passing on: no hop-by-hop header, nor one `Connection` names.
    fn end_to_end(&self) -> impl Iterator<Item = &(String, String)> {
        let named: Vec<String> = self
            .fields
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("connection"))
            .flat_map(|(_, v)| v.split(','))
            .map(|t| t.trim().to_ascii_lowercase())
            .collect();
        self.fields.iter().filter(move |(k, _)| {
            let k = k.to_ascii_lowercase();
            !HOP_BY_HOP.contains(&k.as_str()) && !named.contains(&k)
        })
    }
}

/// Reads a head up to its blank line. `Ok(None)`: the peer closed before sending a byte.
fn read_head(r: &mut impl BufRead) -> io::Result<Option<Vec<u8>>> {
    let mut head = Vec::new();
    loop {
        let before = head.len();
        let n = r
            .by_ref()
            .take((MAX_HEAD + 1 - head.len()) as u64)
            .read_until(b'\n', &mut head)?;
        if n == 0 {
            return if head.is_empty() {
                Ok(None)
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
        if head.len() > MAX_HEAD {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "head too large"));
        }
        // Blank lines before a request line are tolerated (RFC 9112 §2.2).
        if before == 0 && (head == b"\r\n" || head == b"\n") {
            head.clear();
            continue;
        }
        if head.ends_with(b"\n\r\n") || head.ends_with(b"\n\n") {
            return Ok(Some(head));
        }
    }
}

/// Decrements the in-flight count when a request is over, however it ends.
struct InFlight<'a>(&'a Shared);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Forgets a tracked socket when its connection is over.
struct Tracked<'a>(&'a Shared, Option<u64>);

impl Drop for Tracked<'_> {
    fn drop(&mut self) {
        self.0.forget(self.1);
    }
}

/// One caller connection: requests one after another (keep-alive) until it closes.
fn serve_caller(client: TcpStream, shared: &Shared) {
    if shared.stop_edge.load(Ordering::SeqCst) {
        return;
    }
    let _ = client.set_nodelay(true);
    let _tracked = Tracked(shared, shared.track(&client));
    let Ok(write_half) = client.try_clone() else {
        return;
    };
    let mut out = write_half;
    let mut reader = BufReader::with_capacity(COPY_BUF, client);
    loop {
        let raw = match read_head(&mut reader) {
            Ok(Some(raw)) => raw,
            _ => return,
        };
        // A drop cuts the callers too; one that asks again meanwhile meets the edge
        // without a tunnel behind it. During the graceful shutdown no new request starts.
        if shared.shutting_down.load(Ordering::SeqCst) {
            return;
        }
        let head_only = raw.starts_with(b"HEAD ");
        if shared.edge_lost.load(Ordering::SeqCst) {
            let _ = out.write_all(&http_response(530, "", "error code: 1033", head_only));
            return;
        }
        let Some(head) = Head::parse(&raw) else {
            let _ = out.write_all(&http_response(400, "Bad Request", "", head_only));
            return;
        };
        shared.total_requests.fetch_add(1, Ordering::SeqCst);
        let keep_alive = proxy(&head, &mut reader, &mut out, shared).unwrap_or_default();
        if !keep_alive {
            let _ = out.shutdown(Shutdown::Both);
            return;
        }
    }
}

/// How a body is framed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

/// Proxies one request; returns whether the caller's connection may carry another.
fn proxy(
    head: &Head,
    caller: &mut BufReader<TcpStream>,
    out: &mut TcpStream,
    shared: &Shared,
) -> io::Result<bool> {
    let mut parts = head.first.split_whitespace();
    let (method, target, version) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or("/"),
        parts.next().unwrap_or("HTTP/1.1"),
    );
    let head_only = method == "HEAD";
    let caller_keeps = if version == "HTTP/1.0" {
        head.has_token("connection", "keep-alive")
    } else {
        !head.has_token("connection", "close")
    };
    if head.has_token("transfer-encoding", "chunked") {
        out.write_all(&http_response(501, "Not Implemented", "", head_only))?;
        return Ok(false);
    }
    let body_len: u64 = match head.get("content-length").map(|v| v.parse()) {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(_)) => {
            out.write_all(&http_response(400, "Bad Request", "", head_only))?;
            return Ok(false);
        }
    };
    let Some(addr) = shared.origin.clone() else {
        // A named tunnel without an origin: the catch-all `http_status:404`.
        io::copy(&mut caller.by_ref().take(body_len), &mut io::sink())?;
        out.write_all(&http_response(404, "Not Found", "", head_only))?;
        return Ok(false);
    };

    // What Go's http.Transport sends on cloudflared's behalf.
    let gzip_added =
        head.get("accept-encoding").is_none() && head.get("range").is_none() && !head_only;
    let mut request = format!("{method} {target} HTTP/1.1\r\n");
    for (k, v) in head.end_to_end() {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str(&format!("Cf-Warp-Tag-Id: {}\r\n", shared.connector_id));
    request.push_str("Connection: keep-alive\r\n");
    if gzip_added {
        request.push_str("Accept-Encoding: gzip\r\n");
    }
    request.push_str("\r\n");

    shared.in_flight.fetch_add(1, Ordering::SeqCst);
    let _in_flight = InFlight(shared);

    // A kept-alive connection the origin closed meanwhile fails at once; Go then retries
    // a request without a body on a new connection, and so does this.
    let mut attempt = 0;
    let (mut origin, response) = loop {
        attempt += 1;
        let (mut conn, reused) = match take_origin(shared, &addr) {
            Ok(c) => c,
            Err(e) => {
                origin_down(out, shared, head, &addr, &e)?;
                return Ok(false);
            }
        };
        let tracked = shared.track(conn.get_ref());
        let sent = conn.get_mut().write_all(request.as_bytes()).and_then(|()| {
            let mut body = caller.by_ref().take(body_len);
            io::copy(&mut body, conn.get_mut()).map(|_| ())
        });
        let answer = sent.and_then(|()| read_head(&mut conn));
        match answer {
            Ok(Some(raw)) => break ((conn, tracked), raw),
            other => {
                shared.forget(tracked);
                if reused && body_len == 0 && attempt == 1 {
                    continue;
                }
                let e = match other {
                    Err(e) => e,
                    _ => io::ErrorKind::UnexpectedEof.into(),
                };
                origin_down(out, shared, head, &addr, &e)?;
                return Ok(false);
            }
        }
    };
    let _origin_tracked = Tracked(shared, origin.1);
    let Some(resp) = Head::parse(&response) else {
        out.write_all(&http_response(
            502,
            "Bad Gateway",
            "error code: 502\n",
            head_only,
        ))?;
        return Ok(false);
    };
    let status: u16 = resp
        .first
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(502);
    let framing = if head_only || status / 100 == 1 || status == 204 || status == 304 {
        Framing::None
    } else if resp.has_token("transfer-encoding", "chunked") {
        Framing::Chunked
    } else if let Some(n) = resp.get("content-length").and_then(|v| v.parse().ok()) {
        Framing::Length(n)
    } else {
        Framing::UntilClose
    };
    let decompress = gzip_added
        && framing != Framing::None
        && resp
            .get("content-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
    // Fixed-length bodies go back as they are; anything else (decompressed, chunked, or
    // delimited by the origin closing) goes back chunked.
    let chunked_out = decompress || matches!(framing, Framing::Chunked | Framing::UntilClose);

    let reason = resp.first.splitn(3, ' ').nth(2).unwrap_or("");
    let mut back = format!("HTTP/1.1 {status} {reason}\r\n");
    for (k, v) in resp.end_to_end() {
        let drop_it = decompress
            && (k.eq_ignore_ascii_case("content-encoding")
                || k.eq_ignore_ascii_case("content-length"));
        if !drop_it {
            back.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    if chunked_out {
        back.push_str("Transfer-Encoding: chunked\r\n");
    }
    if !caller_keeps {
        back.push_str("Connection: close\r\n");
    }
    back.push_str("\r\n");
    out.write_all(back.as_bytes())?;

    let conn = &mut origin.0;
    let origin_keeps = !resp.has_token("connection", "close");
    let complete = match framing {
        Framing::None => true,
        Framing::Length(n) if !decompress => {
            let copied = relay(&mut conn.by_ref().take(n), out, false, shared)?;
            if copied < n {
                // The origin stopped short: the caller must see the body cut, not end.
                return Ok(false);
            }
            true
        }
        Framing::Length(n) => {
            let mut gz = flate2::read::GzDecoder::new(conn.by_ref().take(n));
            relay(&mut gz, out, true, shared)?;
            false
        }
        Framing::Chunked => {
            let mut body = Chunked::new(conn.by_ref());
            if decompress {
                relay(
                    &mut flate2::read::GzDecoder::new(&mut body),
                    out,
                    true,
                    shared,
                )?;
                false
            } else {
                relay(&mut body, out, true, shared)?;
                body.done
            }
        }
        Framing::UntilClose => {
            if decompress {
                relay(
                    &mut flate2::read::GzDecoder::new(conn.by_ref()),
                    out,
                    true,
                    shared,
                )?;
            } else {
                relay(conn, out, true, shared)?;
            }
            false
        }
    };
    // A decompressed body may leave bytes of the gzip stream unread: that connection is
    // not reused. Neither is one with bytes beyond the response.
    if complete && origin_keeps && conn.buffer().is_empty() && !decompress {
        let (reader, _) = origin;
        shared.idle.lock().unwrap().push(Idle {
            reader,
            since: Instant::now(),
        });
    }
    Ok(caller_keeps)
}

/// A kept-alive origin connection that still works, or a new one; and whether it was reused.
fn take_origin(shared: &Shared, addr: &str) -> io::Result<(BufReader<TcpStream>, bool)> {
    loop {
        let idle = shared.idle.lock().unwrap().pop();
        let Some(idle) = idle else { break };
        if idle.since.elapsed() < KEEPALIVE_IDLE && still_open(idle.reader.get_ref()) {
            return Ok((idle.reader, true));
        }
    }
    let stream = dial(addr)?;
    shared.origin_dials.fetch_add(1, Ordering::SeqCst);
    let _ = stream.set_nodelay(true);
    Ok((BufReader::with_capacity(COPY_BUF, stream), false))
}

/// An idle connection the origin has not closed (nothing to read, no EOF).
fn still_open(s: &TcpStream) -> bool {
    if s.set_nonblocking(true).is_err() {
        return false;
    }
    let mut b = [0u8; 1];
    let open = matches!(s.peek(&mut b), Err(e) if e.kind() == io::ErrorKind::WouldBlock);
    s.set_nonblocking(false).is_ok() && open
}

fn dial(addr: &str) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no such host");
    for sa in addr.to_socket_addrs()? {
        match TcpStream::connect_timeout(&sa, Duration::from_secs(10)) {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Copies a body to the caller, paced, as is or as chunks; returns the bytes read.
fn relay(
    from: &mut impl Read,
    to: &mut TcpStream,
    chunked: bool,
    shared: &Shared,
) -> io::Result<u64> {
    let mut buf = vec![0u8; COPY_BUF];
    let mut total = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        shared.pace(n);
        if chunked {
            to.write_all(format!("{n:x}\r\n").as_bytes())?;
            to.write_all(&buf[..n])?;
            to.write_all(b"\r\n")?;
        } else {
            to.write_all(&buf[..n])?;
        }
        total += n as u64;
    }
    if chunked {
        to.write_all(b"0\r\n\r\n")?;
    }
    Ok(total)
}

/// Reads a chunked body's data; `done` once the last chunk and the trailers are read.
struct Chunked<R> {
    inner: R,
    left: u64,
    done: bool,
}

impl<R: BufRead> Chunked<R> {
    fn new(inner: R) -> Chunked<R> {
        Chunked {
            inner,
            left: 0,
            done: false,
        }
    }

    fn line(&mut self) -> io::Result<String> {
        let mut line = String::new();
        if self.inner.by_ref().take(4096).read_line(&mut line)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        Ok(line.trim_end().to_string())
    }
}

impl<R: BufRead> Read for Chunked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done {
            return Ok(0);
        }
        if self.left == 0 {
            let size = self.line()?;
            let size = size.split(';').next().unwrap_or("").trim();
            self.left = u64::from_str_radix(size, 16)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad chunk size"))?;
            if self.left == 0 {
                while !self.line()?.is_empty() {}
                self.done = true;
                return Ok(0);
            }
        }
        let want = buf.len().min(self.left as usize);
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.left -= n as u64;
        if self.left == 0 && !self.line()?.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "no CRLF after a chunk",
            ));
        }
        Ok(n)
    }
}

fn go_dial_error(addr: &str, e: &io::Error) -> String {
    use io::ErrorKind::*;
    let what = match e.kind() {
        ConnectionRefused => "connect: connection refused".to_string(),
        TimedOut | WouldBlock => "i/o timeout".to_string(),
        UnexpectedEof => "EOF".to_string(),
        _ => e.to_string(),
    };
    if e.kind() == UnexpectedEof {
        return what;
    }
    format!("dial tcp {addr}: {what}")
}

/// cloudflared's answer when the origin cannot be reached: 502, and its two ERR lines.
fn origin_down(
    out: &mut TcpStream,
    shared: &Shared,
    head: &Head,
    addr: &str,
    e: &io::Error,
) -> io::Result<()> {
    let path = head.first.split_whitespace().nth(1).unwrap_or("/");
    let host = head
        .get("host")
        .map(str::to_string)
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
    let head_only = head.first.starts_with("HEAD ");
    out.write_all(&http_response(
        502,
        "Bad Gateway",
        "error code: 502\n",
        head_only,
    ))?;
    out.flush()
}
