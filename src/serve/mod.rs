//! The public file server: the only listener the Cloudflare tunnel exposes.
//!
//! It answers `GET` and `HEAD /f/<token>/<file name>` for links registered through
//! [`Links`], with single byte ranges (RFC 9110), and, while the review loop has opened it,
//! `POST /hooks/frameio/<path token>` (Frame.io's webhook deliveries, judged by
//! [`crate::review::gate`]: a declared body over 64 KiB is refused unread, the body must
//! arrive within 10 s). Nothing else: every other request, method, path, unknown, expired or
//! revoked token gets the same 404.
//!
//! The HTTP/1.1 layer is the front both listeners share (`crate::http1`, which also says why
//! not tiny_http): heads are read without a thread, and every write must make progress.
//! Here:
//!
//! - At most `max_connections` requests are served at once, each on a worker thread; idle
//!   keep-alive connections and clients still sending their head do not count. Beyond that a
//!   request waits up to a second for a worker, then gets 503 with `Retry-After`.
//! - A request head must arrive whole within `head_timeout`; every step of up to 1 MiB of a
//!   response must be taken by the client within `io_timeout`, or the connection is closed.
//!   Cloudflare's proxy gives an origin 100 s between reads, so the default stays under it.
//! - Keep-alive for HTTP/1.1 (cloudflared reuses its origin connections; an idle one is kept
//!   100 s, longer than cloudflared's own 90 s, so cloudflared is the one that closes it and
//!   never sends a request on a connection we are closing). Any error answer closes the
//!   connection, so every 404 is the same bytes whatever was asked.
//! - On Linux the body goes from the page cache to the socket inside the kernel (`sendfile`,
//!   see `zerocopy`), non-blocking, a step at a time; elsewhere through one buffer per
//!   transfer, 1 MiB while all transfers' buffers stay under 16 MiB, 128 KiB past that.
//!   Either way a revoked link stops being served within a fraction of a second.
//!
//! `HEAD` answers exactly what `GET` would, Range included (206 and `Content-Range`), so a
//! probe sees the real answer. RFC 9110 §14.2 defines Range for GET only; a 206 to HEAD is
//! what a client sending Range on HEAD is asking for, and a plain HEAD gets 200.
//!
//! A file that vanished since its link was made gets the usual 404 (the link is not
//! special to a stranger) and a `FileChanged` event, like a file that changed (410): either
//! way this version of the file can no longer be delivered and the job must be requeued.
//!
//! Not handled, on purpose: multipart/byteranges (several ranges get the whole file with
//! 200), `If-None-Match`/`If-Modified-Since` (the response is `no-store`, nobody caches
//! it), request bodies but a webhook's, query strings (404), HTTP/2, TLS (cloudflared
//! terminates it).
// `deny`, not `forbid`: `zerocopy` alone calls sendfile(2), which std does not offer.
#![deny(unsafe_code)]

#[cfg(target_os = "linux")]
mod zerocopy;

use std::fs::File;
use std::io;
#[cfg(not(target_os = "linux"))]
use std::io::{Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
#[cfg(not(target_os = "linux"))]
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use crate::http1::{self, Body, Conn, Front, Handler, Limits, Outcome, Request, Response};
use crate::links::LinkState;
pub use crate::links::{Link, LinkActivity, Links};
use crate::range::{self, RangeRequest};
use crate::review::gate::{self, Gate};
use crate::timefmt;

/// Bytes read from the file and written to the socket per step of a body: large reads
/// suit high-latency network mounts.
const CHUNK: usize = http1::front::STEP;
/// The step once `BUFFER_BUDGET` is spent by other transfers.
#[cfg(not(target_os = "linux"))]
const SMALL_CHUNK: usize = 128 * 1024;
/// All transfers' full-size buffers together stay within this.
#[cfg(not(target_os = "linux"))]
const BUFFER_BUDGET: usize = 16 * CHUNK;
/// Transfer events per link are at least this far apart (the last one excepted).
const TRANSFER_EVENT_EVERY: Duration = Duration::from_millis(500);
/// Sent with 503: how long a client over the connection cap should wait.
const RETRY_AFTER_SECS: u32 = 5;
/// Longest request head: Range requests from Frame.io and cloudflared are a few hundred bytes.
const MAX_HEAD: usize = 8 * 1024;
/// Connections held while they send their head or sit idle between requests.
const MAX_WAITING: usize = 1024;
/// How long an idle keep-alive connection is kept: longer than cloudflared's 90 s.
const IDLE_TIMEOUT: Duration = Duration::from_secs(100);

const NOT_FOUND_BODY: &str = "Not Found\n";

/// How the server listens and what it allows.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// `serve.listen`.
    pub listen: SocketAddr,
    /// `serve.link_ttl_secs`: links stop working this long after registration.
    pub link_ttl: Duration,
    /// `serve.max_connections`: requests served at once (each on a thread).
    pub max_connections: usize,
    /// How long a client may take to send a whole request head.
    pub head_timeout: Duration,
    /// How long a client may keep a step of a response (up to 1 MiB) from being taken
    /// before its connection is closed.
    pub io_timeout: Duration,
}

impl Default for ServeOptions {
    fn default() -> ServeOptions {
        ServeOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            link_ttl: Duration::from_secs(86_400),
            max_connections: 64,
            head_timeout: Duration::from_secs(10),
            io_timeout: Duration::from_secs(60),
        }
    }
}

/// What happened on the server, for the event hub. Sent with `try_send`: when the channel
/// is full the event is dropped rather than slowing a transfer.
#[derive(Debug, Clone, PartialEq)]
pub enum ServeEvent {
    /// Bytes of a link were served. At most about twice a second per link.
    Transfer {
        job: u64,
        covered: u64,
        total: u64,
        bytes_per_sec: f64,
    },
    /// A link's coverage reached 25, 50, 75 or 100 %, each at most once (also logged at INFO).
    Milestone { job: u64, percent: u8 },
    /// The file no longer matches the link (size or mtime differ, or it vanished); the
    /// request got 410 (404 if vanished) and the job should be requeued.
    FileChanged { job: u64 },
}

/// The running server. Stops (closing open connections and joining every thread) on
/// [`FileServer::stop`] or drop.
pub struct FileServer {
    local_addr: SocketAddr,
    links: Links,
    hooks: Arc<Gate>,
    front: Front,
}

/// What a request handler needs.
struct Files {
    links: Links,
    /// Frame.io's webhook deliveries (`POST /hooks/frameio/<token>`), while review is on.
    hooks: Arc<Gate>,
    events: Sender<ServeEvent>,
    /// Bytes of body buffers reserved against `BUFFER_BUDGET`.
    #[cfg_attr(target_os = "linux", allow(dead_code))]
    buffer_bytes: AtomicUsize,
}

impl Files {
    fn send(&self, event: ServeEvent) {
        // Full or nobody listening: progress is advisory, serving is not.
        let _ = self.events.try_send(event);
    }
}

impl FileServer {
    /// Binds `opts.listen` and starts serving.
    pub fn start(opts: ServeOptions, events: Sender<ServeEvent>) -> io::Result<FileServer> {
        let listener = crate::http1::bind_listener(opts.listen)?;
        let local_addr = listener.local_addr()?;
        let links = Links::new(opts.link_ttl);
        let hooks = Arc::new(Gate::default());
        let files = Arc::new(Files {
            links: links.clone(),
            hooks: Arc::clone(&hooks),
            events,
            buffer_bytes: AtomicUsize::new(0),
        });
        let limits = Limits {
            name: "serve",
            workers: opts.max_connections,
            max_head: MAX_HEAD,
            head_timeout: opts.head_timeout,
            idle_timeout: IDLE_TIMEOUT,
            io_timeout: opts.io_timeout,
            max_waiting: MAX_WAITING,
            retry_after_secs: RETRY_AFTER_SECS,
        };
        let front = Front::start(listener, limits, files)?;
        Ok(FileServer {
            local_addr,
            links,
            hooks,
            front,
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The link registry this server serves from.
    pub fn links(&self) -> Links {
        self.links.clone()
    }

    /// The door for Frame.io's webhook deliveries (closed until the review follower opens it).
    pub fn hooks(&self) -> Arc<Gate> {
        Arc::clone(&self.hooks)
    }

    /// Connections open right now (transfers, idle keep-alives, heads on their way).
    pub fn connections(&self) -> usize {
        self.front.open_connections()
    }

    /// Stops accepting, closes open connections and joins every thread.
    pub fn stop(mut self) {
        self.front.stop();
    }
}

impl Handler for Files {
    fn serve(&self, req: &Request, mut conn: Conn) -> Outcome {
        match self.respond(req, &mut conn) {
            Ok(true) => Outcome::KeepAlive(conn),
            Ok(false) => Outcome::Close(conn),
            Err((name, e)) => {
                log_io_error(&name, &e);
                Outcome::Close(conn)
            }
        }
    }

    fn refusal(&self, status: u16, _why: &str) -> Response {
        plain_page(status, &format!("{}\n", http1::reason(status)))
    }
}

/// How an I/O error on a client connection is logged. A client going away or stalling is
/// normal on the internet: INFO. Anything else (a failing disk or mount) is a WARN with the
/// file's name, which a person can act on.
pub(crate) fn io_error_level(e: &io::Error) -> (log::Level, &'static str) {
    use io::ErrorKind::*;
    if let Some(inner) = e.get_ref() {
        if inner.is::<Revoked>() {
            return (log::Level::Info, "link revoked; transfer stopped");
        }
        if inner.is::<http1::front::Stopping>() {
            return (log::Level::Info, "postflow is stopping; transfer cut");
        }
        if inner.is::<http1::front::Cut>() {
            return (
                log::Level::Info,
                "client too slow while other requests waited; connection closed",
            );
        }
    }
    match e.kind() {
        BrokenPipe | ConnectionReset | ConnectionAborted | UnexpectedEof | NotConnected => {
            (log::Level::Info, "connection closed by client")
        }
        WouldBlock | TimedOut => (
            log::Level::Info,
            "client stopped reading; connection closed",
        ),
        _ => (log::Level::Warn, "transfer failed"),
    }
}

fn log_io_error(name: &str, e: &io::Error) {
    let (level, what) = io_error_level(e);
    let prefix = if name.is_empty() {
        String::new()
    } else {
        format!("{name}: ")
    };
    if level == log::Level::Info {
        log::log!(level, "{prefix}{what}");
        log::debug!("{prefix}{what}: {e}");
    } else {
        log::log!(level, "{prefix}{what}: {e}");
    }
}

/// Splits `/f/<token>/<name>` into the token and the percent-decoded name. Anything else,
/// including an empty or extra segment, or a bad escape, is `None` (404).
fn route(path: &str) -> Option<(&str, Vec<u8>)> {
    let rest = path.strip_prefix("/f/")?;
    let (token, name) = rest.split_once('/')?;
    if name.is_empty() || name.contains(['/', '#']) {
        return None;
    }
    Some((token, http1::percent_decode(name)?))
}

impl Files {
    /// Answers one request. `Ok(true)` if the connection may carry another; `Err` carries the
    /// file name for the log.
    fn respond(&self, req: &Request, conn: &mut Conn) -> Result<bool, (String, io::Error)> {
        let is_head = req.is_head();
        let peer = conn.peer();
        let not_found = |conn: &mut Conn, why: &str| {
            log::debug!("file server: {} from {peer}: 404 ({why})", req.method);
            write_simple(conn, req, 404, NOT_FOUND_BODY)
                .map(|()| false)
                .map_err(|e| (String::new(), e))
        };
        if req.method == "POST" && req.query.is_empty() && self.hooks.is_ours(&req.path) {
            return self.webhook(req, conn).map_err(|e| (String::new(), e));
        }
        if req.method != "GET" && !is_head {
            return not_found(conn, "method");
        }
        // The token and name come from the URL only to find a link; the path served is the
        // registered one, so nothing in the URL can point anywhere else.
        let Some((token, name)) = route(&req.path).filter(|_| req.query.is_empty()) else {
            return not_found(conn, "path");
        };
        let Some(link) = self.links.lookup(token) else {
            return not_found(conn, "unknown, expired or revoked link");
        };
        if name != link.name {
            return not_found(conn, "name does not match the link");
        }
        let display = link.display_name();
        let fail = |e: io::Error| (display.clone(), e);
        // Checked before opening too: opening something that is no longer a regular file
        // (a FIFO put in its place) could block this thread for good.
        let opened = std::fs::metadata(&link.path).and_then(|meta| {
            if link.unchanged(&meta) {
                let file = File::open(&link.path)?;
                let meta = file.metadata()?;
                Ok(Some(file).filter(|_| link.unchanged(&meta)))
            } else {
                Ok(None)
            }
        });
        let file = match opened {
            Ok(Some(file)) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                log::info!("{display}: file vanished since its link was made");
                self.send(ServeEvent::FileChanged { job: link.job });
                return not_found(conn, "file vanished");
            }
            Err(e) => {
                log::warn!("{display}: cannot read the file: {e}");
                return write_simple(conn, req, 500, "Internal Server Error\n")
                    .map(|()| false)
                    .map_err(fail);
            }
            Ok(None) => {
                log::info!("{display}: file changed since its link was made; answering 410");
                self.send(ServeEvent::FileChanged { job: link.job });
                return write_simple(conn, req, 410, "Gone\n")
                    .map(|()| false)
                    .map_err(fail);
            }
        };

        let validators = Validators::of(&link);
        // A repeated Range or If-Range header is as good as a malformed one: ignore the range.
        let range_header = match (req.single("range"), req.single("if-range")) {
            (Ok(Some(range)), Ok(if_range)) if validators.if_range_allows(if_range) => Some(range),
            _ => None,
        };
        let decision = range::resolve(range_header, link.size);
        // A body we do not read leaves the connection unusable for another request.
        let keep_alive = req.keep_alive && req.body == Body::None;
        let (status, start, len) = match decision {
            RangeRequest::Whole => (200, 0, link.size),
            RangeRequest::Partial { start, end } => (206, start, end - start + 1),
            RangeRequest::Unsatisfiable => (416, 0, 0),
        };
        log::debug!(
            "file server: {} job {} {display} from {peer}: {status} bytes {start}+{len}",
            req.method,
            link.job
        );
        let content_range = match status {
            206 => Some(format!("bytes {start}-{}/{}", start + len - 1, link.size)),
            416 => Some(format!("bytes */{}", link.size)),
            _ => None,
        };
        let mut headers = vec![
            ("Accept-Ranges", "bytes"),
            ("Cache-Control", "private, no-store"),
            ("Content-Type", content_type(&link.name)),
        ];
        if let Some(range) = &content_range {
            headers.push(("Content-Range", range));
        }
        headers.push(("ETag", &validators.etag));
        headers.push(("Last-Modified", &validators.last_modified));
        headers.push(("X-Content-Type-Options", "nosniff"));
        let head = http1::head(
            status,
            &headers,
            Some(len),
            req.connection_header(keep_alive),
        );
        conn.write_all(head.as_bytes()).map_err(fail)?;
        if is_head || status == 416 {
            return Ok(keep_alive);
        }
        self.send_body(conn, &file, start, len, &link)
            .map_err(fail)?;
        Ok(keep_alive)
    }
}

impl Files {
    /// A Frame.io webhook delivery: the body read within [`HOOK_BODY_WITHIN`] (after its
    /// declared length is checked), judged by the gate, answered at once; the follower does
    /// the work. The connection closes after it.
    fn webhook(&self, req: &Request, conn: &mut Conn) -> io::Result<bool> {
        let verdict = match req.body {
            Body::Length(n) if n > gate::MAX_BODY => self.hooks.too_large(),
            // Never decoded here: a chunked body could be any size.
            Body::Chunked => self.hooks.too_large(),
            Body::None | Body::Length(_) => {
                let body = match req.body {
                    Body::None => Vec::new(),
                    _ => conn.read_body_within(HOOK_BODY_WITHIN)?,
                };
                let (ts, sig) = match (
                    req.single("x-frameio-request-timestamp"),
                    req.single("x-frameio-signature"),
                ) {
                    (Ok(ts), Ok(sig)) => (ts, sig),
                    _ => (None, None),
                };
                self.hooks
                    .deliver(&req.path, ts, sig, &body, std::time::SystemTime::now())
            }
        };
        let status = verdict.status();
        log::debug!("file server: POST webhook from {}: {status}", conn.peer());
        write_simple(conn, req, status, &format!("{}\n", http1::reason(status)))?;
        Ok(false)
    }
}

/// A webhook delivery's body must arrive whole within this (64 KiB at most).
const HOOK_BODY_WITHIN: Duration = Duration::from_secs(10);

/// A small plain-text page (errors).
fn plain_page(status: u16, body: &str) -> Response {
    Response::new(status, "text/plain; charset=utf-8", body)
        .with_header("Cache-Control", "private, no-store")
        .with_header("X-Content-Type-Options", "nosniff")
}

/// Writes a small complete response (error pages). It always closes the connection, so
/// every 404 is the same bytes whatever was asked.
fn write_simple(conn: &mut Conn, req: &Request, status: u16, body: &str) -> io::Result<()> {
    conn.write_all(&plain_page(status, body).encode(req.is_head(), Some("close")))
}

/// The registered version's validators. Both derive from the registration-time size and
/// mtime, which the file is checked against before anything is served.
struct Validators {
    etag: String,
    last_modified: String,
    mtime_secs: u64,
}

impl Validators {
    fn of(link: &LinkState) -> Validators {
        let since_epoch = link
            .mtime
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Validators {
            etag: format!(
                "\"{:x}-{:x}.{:x}\"",
                link.size,
                since_epoch.as_secs(),
                since_epoch.subsec_nanos()
            ),
            last_modified: timefmt::http_date(link.mtime),
            mtime_secs: since_epoch.as_secs(),
        }
    }

    /// RFC 9110 §13.1.5: the range applies only if `If-Range` is absent, equals the ETag
    /// (strong comparison, so never a weak `W/` tag), or is exactly the Last-Modified date.
    fn if_range_allows(&self, if_range: Option<&str>) -> bool {
        match if_range {
            None => true,
            Some(v) if v.starts_with('"') || v.starts_with("W/") => v == self.etag,
            Some(v) => timefmt::parse_http_date(v) == Some(self.mtime_secs),
        }
    }
}

/// A transfer stopped because its link was revoked (the job ended).
#[derive(Debug)]
struct Revoked;

impl std::fmt::Display for Revoked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("link revoked")
    }
}

impl std::error::Error for Revoked {}

fn still_wanted(link: &LinkState) -> io::Result<()> {
    if link.is_revoked() {
        Err(io::Error::other(Revoked))
    } else {
        Ok(())
    }
}

impl Files {
    /// Sends `len` bytes of `file` from `start`, recording progress after each step and
    /// stopping if the link is revoked.
    fn send_body(
        &self,
        conn: &mut Conn,
        file: &File,
        start: u64,
        len: u64,
        link: &LinkState,
    ) -> io::Result<()> {
        if len == 0 {
            self.record(link, 0, 0);
            return Ok(());
        }
        #[cfg(target_os = "linux")]
        return self.send_body_zero_copy(conn, file, start, len, link);
        #[cfg(not(target_os = "linux"))]
        self.send_body_buffered(conn, file, start, len, link)
    }

    /// Linux: the kernel moves the bytes (`sendfile` on the non-blocking socket). Each step
    /// of `CHUNK` bytes must be taken within `io_timeout`; revocation is looked at after
    /// every call and every short wait.
    #[cfg(target_os = "linux")]
    fn send_body_zero_copy(
        &self,
        conn: &mut Conn,
        file: &File,
        start: u64,
        len: u64,
        link: &LinkState,
    ) -> io::Result<()> {
        let bandwidth = crate::bandwidth::shared();
        let mut pos = start;
        let end = start + len;
        let mut step_end = pos;
        let mut deadline = Instant::now();
        while pos < end {
            still_wanted(link)?;
            if pos == step_end {
                step_end = end.min(pos + CHUNK as u64);
                deadline = conn.begin_step();
            }
            // At most to the end of the step (a usize: CHUNK is), and what upload.bandwidth
            // grants; a wait for the bucket is ours, not the client's: the step starts again.
            let (want, waited) = bandwidth.take((step_end - pos) as usize);
            if waited {
                deadline = conn.begin_step();
            }
            let result = zerocopy::sendfile(conn.stream(), file, pos, want);
            bandwidth.give_back(want - *result.as_ref().unwrap_or(&0));
            match result {
                Ok(0) => {
                    // The file shrank after the check: the promised Content-Length cannot
                    // be met.
                    self.send(ServeEvent::FileChanged { job: link.job });
                    return Err(io::Error::other("file shrank while being served"));
                }
                Ok(sent) => {
                    self.record(link, pos, pos + sent as u64);
                    pos += sent as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    conn.wait_writable(deadline)?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Elsewhere: through one bounded buffer.
    #[cfg(not(target_os = "linux"))]
    fn send_body_buffered(
        &self,
        conn: &mut Conn,
        mut file: &File,
        start: u64,
        len: u64,
        link: &LinkState,
    ) -> io::Result<()> {
        file.seek(SeekFrom::Start(start))?;
        let mut buffer = BodyBuffer::take(self, len);
        let buf = buffer.as_mut();
        let mut pos = start;
        let end = start + len;
        while pos < end {
            still_wanted(link)?;
            let want = usize::try_from(end - pos).map_or(buf.len(), |left| left.min(buf.len()));
            // What upload.bandwidth grants (the write's own timeout starts after the wait).
            let (want, _) = crate::bandwidth::shared().take(want);
            let got = read_up_to(file, &mut buf[..want])?;
            if got < want {
                // The file shrank after the check: the promised Content-Length cannot be met.
                self.send(ServeEvent::FileChanged { job: link.job });
                return Err(io::Error::other("file shrank while being served"));
            }
            conn.write_all_checked(&buf[..got], &|| still_wanted(link))?;
            self.record(link, pos, pos + got as u64);
            pos += got as u64;
        }
        Ok(())
    }
}

/// Fills `buf` unless the file ends first; returns how much was read.
#[cfg(not(target_os = "linux"))]
fn read_up_to(mut file: &File, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// A transfer's buffer. `CHUNK` bytes while the server's buffers stay within
/// `BUFFER_BUDGET`, `SMALL_CHUNK` beyond that, so memory stays bounded however many
/// transfers run. Used where `sendfile` is not (see `zerocopy`).
#[cfg(not(target_os = "linux"))]
struct BodyBuffer<'a> {
    buf: Vec<u8>,
    budget: Option<&'a AtomicUsize>,
}

#[cfg(not(target_os = "linux"))]
impl<'a> BodyBuffer<'a> {
    fn take(files: &'a Files, len: u64) -> BodyBuffer<'a> {
        let wanted = usize::try_from(len).map_or(CHUNK, |len| len.min(CHUNK));
        let reserved = files
            .buffer_bytes
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                (used + wanted <= BUFFER_BUDGET).then_some(used + wanted)
            })
            .is_ok();
        let size = if reserved {
            wanted
        } else {
            wanted.min(SMALL_CHUNK)
        };
        BodyBuffer {
            buf: vec![0; size],
            budget: reserved.then_some(&files.buffer_bytes),
        }
    }

    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.buf
    }
}

#[cfg(not(target_os = "linux"))]
impl Drop for BodyBuffer<'_> {
    fn drop(&mut self) {
        if let Some(budget) = self.budget {
            budget.fetch_sub(self.buf.len(), Ordering::SeqCst);
        }
    }
}

impl Files {
    /// Adds served bytes to the link's progress and emits milestone and transfer events.
    fn record(&self, link: &LinkState, start: u64, end: u64) {
        crate::throughput::count_sent(end - start);
        let now = Instant::now();
        let mut progress = link.progress();
        let covered = progress.add(start, end, now);
        let milestone = progress.milestone(link.size);
        let window = progress
            .window_start
            .map_or(Duration::ZERO, |s| now.duration_since(s));
        let transfer = (window >= TRANSFER_EVENT_EVERY || covered == link.size).then(|| {
            let secs = window.as_secs_f64();
            let rate = if secs > 0.0 {
                progress.window_bytes as f64 / secs
            } else {
                0.0
            };
            progress.window_bytes = 0;
            progress.window_start = Some(now);
            ServeEvent::Transfer {
                job: link.job,
                covered,
                total: link.size,
                bytes_per_sec: rate,
            }
        });
        drop(progress);
        if let Some(percent) = milestone {
            // 100 % is said by the job's `upload done` line (at most six INFO lines an upload).
            let level = if percent < 100 {
                log::Level::Info
            } else {
                log::Level::Debug
            };
            log::log!(level, "{}: {percent}% served", link.display_name());
            self.send(ServeEvent::Milestone {
                job: link.job,
                percent,
            });
        }
        if let Some(event) = transfer {
            self.send(event);
        }
    }
}

/// `Content-Type` by file extension (case-insensitive).
pub(crate) fn content_type(name: &[u8]) -> &'static str {
    let ext = name
        .iter()
        .rposition(|&b| b == b'.')
        .map(|i| name[i + 1..].to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_slice() {
        b"mov" => "video/quicktime",
        b"mp4" | b"m4v" => "video/mp4",
        b"mxf" => "application/mxf",
        b"wav" => "audio/wav",
        b"aif" | b"aiff" => "audio/aiff",
        b"zip" => "application/zip",
        b"pdf" => "application/pdf",
        b"png" => "image/png",
        b"jpg" | b"jpeg" => "image/jpeg",
        b"exr" => "image/x-exr",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_type_by_extension() {
        assert_eq!(content_type(b"A.MOV"), "video/quicktime");
        assert_eq!(content_type(b"a.m4v"), "video/mp4");
        assert_eq!(content_type(b"a.mxf"), "application/mxf");
        assert_eq!(content_type(b"a.exr"), "image/x-exr");
        assert_eq!(content_type(b"a.aif"), "audio/aiff");
        assert_eq!(content_type(b"mov"), "application/octet-stream");
        assert_eq!(content_type(b"a.tar.gz"), "application/octet-stream");
    }

    #[test]
    fn clients_going_away_are_info_and_disk_errors_warn() {
        for kind in [
            io::ErrorKind::BrokenPipe,
            io::ErrorKind::ConnectionReset,
            io::ErrorKind::ConnectionAborted,
        ] {
            assert_eq!(
                io_error_level(&kind.into()),
                (log::Level::Info, "connection closed by client")
            );
        }
        assert_eq!(
            io_error_level(&io::ErrorKind::WouldBlock.into()).0,
            log::Level::Info
        );
        assert_eq!(io_error_level(&io::Error::other("EIO")).0, log::Level::Warn);
    }

    #[test]
    fn routes_only_file_links() {
        assert_eq!(route("/f/t/a%20b.mov"), Some(("t", b"a b.mov".to_vec())));
        assert_eq!(route("/f/t/%2e%2e"), Some(("t", b"..".to_vec())));
        for bad in [
            "/", "/f/", "/f/t", "/f/t/", "/f/t/a/b", "/f/t/a#x", "/f/t/%zz", "/f/t/%4", "/g/t/a",
            "//f/t/a", "*",
        ] {
            assert_eq!(route(bad), None, "{bad}");
        }
    }

    #[test]
    fn if_range_needs_the_exact_strong_etag_or_date() {
        let v = Validators {
            etag: "\"a-b.c\"".into(),
            last_modified: "Sun, 06 Nov 1994 08:49:37 GMT".into(),
            mtime_secs: 784_111_777,
        };
        assert!(v.if_range_allows(None));
        assert!(v.if_range_allows(Some("\"a-b.c\"")));
        assert!(!v.if_range_allows(Some("W/\"a-b.c\"")));
        assert!(!v.if_range_allows(Some("\"a-b.d\"")));
        assert!(v.if_range_allows(Some("Sun, 06 Nov 1994 08:49:37 GMT")));
        assert!(!v.if_range_allows(Some("Sun, 06 Nov 1994 08:49:38 GMT")));
        assert!(!v.if_range_allows(Some("garbage")));
    }
}
