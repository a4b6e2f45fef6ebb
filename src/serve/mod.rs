//! The public file server: the only listener the Cloudflare tunnel exposes.
//!
//! It answers `GET` and `HEAD /f/<token>/<file name>` for links registered through
//! [`Links`], with single byte ranges (RFC 9110), and nothing else: every other request,
//! method, path, unknown, expired or revoked token gets the same 404.
//!
//! # Why not tiny_http here
//!
//! The design card named tiny_http for postflow's listeners, but this one faces the internet
//! and tiny_http 0.12 cannot bound what a client holds (the dashboard has its own reasons,
//! in `dashboard::http`; postflow therefore does not depend on tiny_http at all):
//!
//! - It never sets socket timeouts, and accepted sockets are not reachable before it starts
//!   reading them, so a client that connects and sends nothing (or one header byte a
//!   minute) keeps a thread blocked in `read` forever. Writing the response runs on the
//!   caller's thread with no write timeout either, so a client that stops reading does the
//!   same.
//! - Each connection takes a thread from a pool that grows without limit, before any request
//!   is seen, so `serve.max_connections` cannot be enforced at accept time.
//! - Its accept thread logs at ERROR and exits on the first `accept` error (EMFILE under
//!   load), silently ending the server.
//! - It picks chunked encoding for bodies of 32 KiB or more unless told otherwise, and also
//!   whenever the request carries `TE: chunked`; here every response needs an exact
//!   `Content-Length`.
//!
//! GET and HEAD without bodies are a small subset of HTTP/1.1, so this module speaks it
//! directly on `std::net` ([`http`] holds the pure parsing, tested on its own):
//!
//! - One thread per connection, at most `max_connections` of them; connections beyond that
//!   get 503 with `Retry-After` from a single refusing thread, and are dropped outright if
//!   even that falls behind.
//! - A request head must arrive whole within `io_timeout` of the connection going idle
//!   (a deadline, not a per-read timeout, so trickling bytes does not extend it), and every
//!   write must make progress within `io_timeout`. Either way the thread ends.
//! - Bodies go through one buffer per transfer, 1 MiB (large reads suit high-latency
//!   network mounts) while all transfers' buffers stay under 16 MiB, 128 KiB past that:
//!   memory is bounded whatever the file sizes and the number of transfers.
//! - Keep-alive is honoured for HTTP/1.1 (cloudflared reuses connections); any error
//!   response closes the connection.
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
//! it), request bodies, HTTP/2, TLS (cloudflared terminates it).
// `deny`, not `forbid`: `zerocopy` alone calls sendfile(2), which std does not offer.
#![deny(unsafe_code)]

pub(crate) mod http;
#[cfg(target_os = "linux")]
mod zerocopy;

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;

use crate::links::LinkState;
pub use crate::links::{Link, LinkActivity, Links};
use crate::range::{self, RangeRequest};
use crate::timefmt;

/// Bytes read from the file and written to the socket per step of a body: large reads
/// suit high-latency network mounts.
const CHUNK: usize = 1024 * 1024;
/// The step once `BUFFER_BUDGET` is spent by other transfers.
const SMALL_CHUNK: usize = 128 * 1024;
/// All transfers' full-size buffers together stay within this.
const BUFFER_BUDGET: usize = 16 * CHUNK;
/// Transfer events per link are at least this far apart (the last one excepted).
const TRANSFER_EVENT_EVERY: Duration = Duration::from_millis(500);
/// Sent with 503: how long a client over the connection cap should wait.
const RETRY_AFTER_SECS: u32 = 5;
/// Refused connections waiting for their 503; beyond this they are just closed.
const REFUSE_QUEUE: usize = 64;
/// How long a connection is read before an answer that closes it (the 503 from the
/// refuser) and after it (see `linger_close`), so the client gets to read that answer.
const REFUSE_TIME: Duration = Duration::from_millis(250);

const NOT_FOUND_BODY: &str = "Not Found\n";

/// How the server listens and what it allows.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// `serve.listen`.
    pub listen: SocketAddr,
    /// `serve.link_ttl_secs`: links stop working this long after registration.
    pub link_ttl: Duration,
    /// `serve.max_connections`: open connections (each a thread) at once.
    pub max_connections: usize,
    /// How long a client may take to send a request head, or keep a write from making
    /// progress, before its connection is closed. Cloudflare's own proxy gives an origin
    /// 100 s between reads, so the default stays under that.
    pub io_timeout: Duration,
}

impl Default for ServeOptions {
    fn default() -> ServeOptions {
        ServeOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            link_ttl: Duration::from_secs(86_400),
            max_connections: 64,
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
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

struct Shared {
    links: Links,
    events: Sender<ServeEvent>,
    max_connections: usize,
    io_timeout: Duration,
    stopping: AtomicBool,
    connections: AtomicUsize,
    /// Bytes of body buffers reserved against `BUFFER_BUDGET`.
    buffer_bytes: AtomicUsize,
    /// A handle on every open connection, so `stop` can shut them down mid-read or write.
    open: Mutex<HashMap<u64, TcpStream>>,
}

impl Shared {
    fn open(&self) -> MutexGuard<'_, HashMap<u64, TcpStream>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn send(&self, event: ServeEvent) {
        // Full or nobody listening: progress is advisory, serving is not.
        let _ = self.events.try_send(event);
    }
}

impl FileServer {
    /// Binds `opts.listen` and starts serving.
    pub fn start(opts: ServeOptions, events: Sender<ServeEvent>) -> io::Result<FileServer> {
        let listener = TcpListener::bind(opts.listen)?;
        let local_addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            links: Links::new(opts.link_ttl),
            events,
            max_connections: opts.max_connections,
            io_timeout: opts.io_timeout,
            stopping: AtomicBool::new(false),
            connections: AtomicUsize::new(0),
            buffer_bytes: AtomicUsize::new(0),
            open: Mutex::new(HashMap::new()),
        });
        let accept = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name("serve-accept".into())
                .spawn(move || accept_connections(&listener, &shared))?
        };
        Ok(FileServer {
            local_addr,
            shared,
            accept: Some(accept),
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The link registry this server serves from.
    pub fn links(&self) -> Links {
        self.shared.links.clone()
    }

    /// Connections open right now (transfers and idle keep-alives).
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// Stops accepting, closes open connections and joins every thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let Some(accept) = self.accept.take() else {
            return;
        };
        self.shared.stopping.store(true, Ordering::SeqCst);
        // The accept thread is blocked in accept(): wake it with a connection of our own.
        let mut wake = self.local_addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake {
                SocketAddr::V4(_) => [127, 0, 0, 1].into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        match TcpStream::connect_timeout(&wake, Duration::from_secs(5)) {
            Ok(_) => {
                let _ = accept.join();
            }
            // Joining would hang; the thread ends with the process.
            Err(e) => log::warn!("file server: cannot wake the accept thread to stop it: {e}"),
        }
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The accept thread: admits connections up to the cap, hands the rest to the refuser, and
/// on stop closes and joins everything it started.
fn accept_connections(listener: &TcpListener, shared: &Arc<Shared>) {
    let (refuse_tx, refuse_rx) = crossbeam_channel::bounded::<TcpStream>(REFUSE_QUEUE);
    let refuser = thread::Builder::new()
        .name("serve-refuse".into())
        .spawn(move || refuse_rx.iter().for_each(refuse));
    let mut workers: Vec<JoinHandle<()>> = Vec::new();
    let mut next_id = 0u64;
    loop {
        let accepted = listener.accept();
        if shared.stopping.load(Ordering::SeqCst) {
            break;
        }
        let (stream, peer) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors and the like: wait a little and carry on; a
                // server that stops accepting for good is worse than a slow one.
                log::warn!("file server: accept failed: {e}");
                thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        workers.retain(|w| !w.is_finished());
        if shared.connections.load(Ordering::SeqCst) >= shared.max_connections {
            log::debug!(
                "file server: refusing {peer}: {} connections open",
                shared.max_connections
            );
            // Full queue: dropping the stream closes it, which is all we can afford.
            let _ = refuse_tx.try_send(stream);
            continue;
        }
        next_id += 1;
        let guard = match ConnectionGuard::new(next_id, &stream, shared) {
            Ok(guard) => guard,
            Err(e) => {
                log::warn!("file server: cannot set up connection from {peer}: {e}");
                continue;
            }
        };
        let conn_shared = Arc::clone(shared);
        let spawned = thread::Builder::new()
            .name("serve-conn".into())
            .spawn(move || {
                let _guard = guard;
                serve_connection(stream, peer, &conn_shared);
            });
        match spawned {
            Ok(worker) => workers.push(worker),
            Err(e) => log::warn!("file server: cannot start a thread for {peer}: {e}"),
        }
    }
    drop(refuse_tx);
    for stream in shared.open().values() {
        let _ = stream.shutdown(Shutdown::Both);
    }
    for worker in workers {
        let _ = worker.join();
    }
    if let Ok(refuser) = refuser {
        let _ = refuser.join();
    }
}

/// Counts a connection as open from accept until its thread ends (or fails to start).
struct ConnectionGuard {
    id: u64,
    shared: Arc<Shared>,
}

impl ConnectionGuard {
    fn new(id: u64, stream: &TcpStream, shared: &Arc<Shared>) -> io::Result<ConnectionGuard> {
        let handle = stream.try_clone()?;
        shared.connections.fetch_add(1, Ordering::SeqCst);
        shared.open().insert(id, handle);
        Ok(ConnectionGuard {
            id,
            shared: Arc::clone(shared),
        })
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.shared.open().remove(&self.id);
        self.shared.connections.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Answers a connection over the cap with 503. Reads what the client sent first (briefly),
/// so closing does not turn into a reset that loses the response.
fn refuse(mut stream: TcpStream) {
    let deadline = Instant::now() + REFUSE_TIME;
    let _ = stream.set_write_timeout(Some(REFUSE_TIME));
    let mut buf = [0u8; 2048];
    let mut seen = Vec::new();
    while http::head_end(&seen).is_none() && seen.len() < http::MAX_HEAD {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            break;
        };
        let _ = stream.set_read_timeout(Some(left.max(Duration::from_millis(1))));
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    let body = "Service Unavailable\n";
    let response = format!(
        "{}Date: {}\r\nRetry-After: {RETRY_AFTER_SECS}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nCache-Control: private, no-store\r\nConnection: close\r\n\r\n{body}",
        http::status_line(503),
        timefmt::http_date(std::time::SystemTime::now()),
        body.len()
    );
    if stream.write_all(response.as_bytes()).is_ok() {
        linger_close(stream);
    }
}

/// Why reading a request head stopped.
enum HeadError {
    /// The client closed, or the connection failed.
    Io(io::Error),
    /// `io_timeout` passed; `partial` if some bytes of a request had arrived.
    TimedOut {
        partial: bool,
    },
    TooLarge,
}

/// One connection's thread: requests in order until the client closes, an error response,
/// or a timeout; then a lingering close.
fn serve_connection(stream: TcpStream, peer: SocketAddr, shared: &Shared) {
    serve_requests(&stream, peer, shared);
    linger_close(stream);
}

/// Closes without losing the last response: closing a socket that still has unread input
/// (the rest of an oversized head, a pipelined request) makes the kernel send a reset,
/// and the client may lose the response it has not read yet. So: stop sending, read and
/// discard for a short while, then close.
fn linger_close(mut stream: TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
    let deadline = Instant::now() + REFUSE_TIME;
    let mut buf = [0u8; 4096];
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        if stream
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .is_err()
        {
            break;
        }
        match stream.read(&mut buf) {
            Ok(n) if n > 0 => {}
            _ => break,
        }
    }
}

fn serve_requests(stream: &TcpStream, peer: SocketAddr, shared: &Shared) {
    if let Err(e) = stream
        .set_nodelay(true)
        .and_then(|()| stream.set_write_timeout(Some(shared.io_timeout)))
    {
        log::warn!("file server: cannot configure connection from {peer}: {e}");
        return;
    }
    let mut buf = vec![0u8; http::MAX_HEAD];
    let mut filled = 0;
    loop {
        let head_len = match read_head(stream, &mut buf, &mut filled, shared.io_timeout) {
            Ok(Some(len)) => len,
            Ok(None) => return,
            Err(HeadError::TimedOut { partial }) => {
                log::debug!("file server: {peer} sent no complete request in time");
                if partial {
                    let _ = write_simple(stream, 408, "Request Timeout\n", false);
                }
                return;
            }
            Err(HeadError::TooLarge) => {
                let _ = write_simple(stream, 431, "Request Header Fields Too Large\n", false);
                return;
            }
            Err(HeadError::Io(e)) => {
                log_io_error("", &e);
                return;
            }
        };
        let keep_alive = match http::parse_head(&buf[..head_len]) {
            None => {
                log::debug!("file server: {peer} sent a malformed request");
                let _ = write_simple(stream, 400, "Bad Request\n", false);
                return;
            }
            Some(head) => match respond(stream, &head, peer, shared) {
                Ok(keep_alive) => keep_alive,
                Err((name, e)) => {
                    log_io_error(&name, &e);
                    return;
                }
            },
        };
        if !keep_alive {
            return;
        }
        buf.copy_within(head_len..filled, 0);
        filled -= head_len;
    }
}

/// Reads until `buf[..filled]` holds a whole request head and returns its length;
/// `Ok(None)` if the client closed cleanly between requests.
fn read_head(
    mut stream: &TcpStream,
    buf: &mut [u8],
    filled: &mut usize,
    timeout: Duration,
) -> Result<Option<usize>, HeadError> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(end) = http::head_end(&buf[..*filled]) {
            return Ok(Some(end));
        }
        if *filled == buf.len() {
            return Err(HeadError::TooLarge);
        }
        let partial = *filled > 0;
        let left = deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or(HeadError::TimedOut { partial })?;
        stream.set_read_timeout(Some(left)).map_err(HeadError::Io)?;
        match stream.read(&mut buf[*filled..]) {
            Ok(0) if partial => {
                return Err(HeadError::Io(io::ErrorKind::UnexpectedEof.into()));
            }
            Ok(0) => return Ok(None),
            Ok(n) => *filled += n,
            Err(e) if is_timeout(&e) => return Err(HeadError::TimedOut { partial }),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(HeadError::Io(e)),
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// How an I/O error on a client connection is logged. A client going away or stalling is
/// normal on the internet: INFO. Anything else (a failing disk or mount) is a WARN with the
/// file's name, which a person can act on.
pub(crate) fn io_error_level(e: &io::Error) -> (log::Level, &'static str) {
    use io::ErrorKind::*;
    if e.get_ref().is_some_and(|inner| inner.is::<Revoked>()) {
        return (log::Level::Info, "link revoked; transfer stopped");
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

/// Answers one request. `Ok(true)` if the connection may carry another; `Err` carries the
/// file name for the log.
fn respond(
    stream: &TcpStream,
    head: &http::RequestHead<'_>,
    peer: SocketAddr,
    shared: &Shared,
) -> Result<bool, (String, io::Error)> {
    let is_head = head.method == "HEAD";
    let not_found = |why: &str| {
        log::debug!("file server: {} from {peer}: 404 ({why})", head.method);
        write_simple(stream, 404, NOT_FOUND_BODY, is_head)
            .map(|()| false)
            .map_err(|e| (String::new(), e))
    };
    if head.method != "GET" && !is_head {
        return not_found("method");
    }
    // The token and name come from the URL only to find a link; the path served is the
    // registered one, so nothing in the URL can point anywhere else.
    let Some((token, name)) = http::route(head.target) else {
        return not_found("path");
    };
    let Some(link) = shared.links.lookup(token) else {
        return not_found("unknown, expired or revoked link");
    };
    if name != link.name {
        return not_found("name does not match the link");
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
            shared.send(ServeEvent::FileChanged { job: link.job });
            return not_found("file vanished");
        }
        Err(e) => {
            log::warn!("{display}: cannot read the file: {e}");
            return write_simple(stream, 500, "Internal Server Error\n", is_head)
                .map(|()| false)
                .map_err(fail);
        }
        Ok(None) => {
            log::info!("{display}: file changed since its link was made; answering 410");
            shared.send(ServeEvent::FileChanged { job: link.job });
            return write_simple(stream, 410, "Gone\n", is_head)
                .map(|()| false)
                .map_err(fail);
        }
    };

    let validators = Validators::of(&link);
    // A repeated Range or If-Range header is as good as a malformed one: ignore the range.
    let range_header = match (head.single("range"), head.single("if-range")) {
        (Ok(Some(range)), Ok(if_range)) if validators.if_range_allows(if_range) => Some(range),
        _ => None,
    };
    let decision = range::resolve(range_header, link.size);
    let keep_alive = head.keep_alive();
    let (status, start, len) = match decision {
        RangeRequest::Whole => (200, 0, link.size),
        RangeRequest::Partial { start, end } => (206, start, end - start + 1),
        RangeRequest::Unsatisfiable => (416, 0, 0),
    };
    log::debug!(
        "file server: {} job {} {display} from {peer}: {status} bytes {start}+{len}",
        head.method,
        link.job
    );
    let mut out = response_head(status, 512);
    push_header(&mut out, "Accept-Ranges", "bytes");
    push_header(&mut out, "Cache-Control", "private, no-store");
    push_header(&mut out, "Content-Type", content_type(&link.name));
    push_header(&mut out, "Content-Length", &len.to_string());
    match status {
        206 => push_header(
            &mut out,
            "Content-Range",
            &format!("bytes {start}-{}/{}", start + len - 1, link.size),
        ),
        416 => push_header(&mut out, "Content-Range", &format!("bytes */{}", link.size)),
        _ => {}
    }
    push_header(&mut out, "ETag", &validators.etag);
    push_header(&mut out, "Last-Modified", &validators.last_modified);
    push_header(&mut out, "X-Content-Type-Options", "nosniff");
    if !keep_alive {
        push_header(&mut out, "Connection", "close");
    }
    out.push_str("\r\n");
    let mut writer = stream;
    writer.write_all(out.as_bytes()).map_err(fail)?;
    if is_head || status == 416 {
        return Ok(keep_alive);
    }
    send_body(stream, &file, start, len, &link, shared).map_err(fail)?;
    Ok(keep_alive)
}

/// The status line and `Date`, in a buffer with room for `capacity` bytes of head.
fn response_head(status: u16, capacity: usize) -> String {
    let mut out = String::with_capacity(capacity);
    out.push_str(http::status_line(status));
    push_header(
        &mut out,
        "Date",
        &timefmt::http_date(std::time::SystemTime::now()),
    );
    out
}

fn push_header(out: &mut String, name: &str, value: &str) {
    out.push_str(name);
    out.push_str(": ");
    out.push_str(value);
    out.push_str("\r\n");
}

/// Writes a small complete response (error pages). It always closes the connection, so
/// every 404 is the same bytes whatever was asked.
fn write_simple(mut stream: &TcpStream, status: u16, body: &str, is_head: bool) -> io::Result<()> {
    let mut out = response_head(status, 256);
    push_header(&mut out, "Content-Type", "text/plain; charset=utf-8");
    push_header(&mut out, "Content-Length", &body.len().to_string());
    push_header(&mut out, "Cache-Control", "private, no-store");
    push_header(&mut out, "X-Content-Type-Options", "nosniff");
    push_header(&mut out, "Connection", "close");
    out.push_str("\r\n");
    if !is_head {
        out.push_str(body);
    }
    stream.write_all(out.as_bytes())
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

/// Sends `len` bytes of `file` from `start`, recording progress after each step and stopping
/// if the link is revoked.
fn send_body(
    stream: &TcpStream,
    file: &File,
    start: u64,
    len: u64,
    link: &LinkState,
    shared: &Shared,
) -> io::Result<()> {
    if len == 0 {
        record(link, shared, 0, 0);
        return Ok(());
    }
    #[cfg(target_os = "linux")]
    return send_body_zero_copy(stream, file, start, len, link, shared);
    #[cfg(not(target_os = "linux"))]
    send_body_buffered(stream, file, start, len, link, shared)
}

/// Linux: the kernel moves the bytes (`sendfile`), a `CHUNK` at a time so progress and
/// revocation are checked as often as with a buffer.
#[cfg(target_os = "linux")]
fn send_body_zero_copy(
    stream: &TcpStream,
    file: &File,
    start: u64,
    len: u64,
    link: &LinkState,
    shared: &Shared,
) -> io::Result<()> {
    let mut pos = start;
    let end = start + len;
    while pos < end {
        if link.is_revoked() {
            return Err(io::Error::other(Revoked));
        }
        let want = usize::try_from(end - pos).map_or(CHUNK, |left| left.min(CHUNK));
        let sent = zerocopy::sendfile(stream, file, pos, want)?;
        if sent == 0 {
            // The file shrank after the check: the promised Content-Length cannot be met.
            shared.send(ServeEvent::FileChanged { job: link.job });
            return Err(io::Error::other("file shrank while being served"));
        }
        record(link, shared, pos, pos + sent as u64);
        pos += sent as u64;
    }
    Ok(())
}

/// Elsewhere: through one bounded buffer.
#[cfg_attr(target_os = "linux", allow(dead_code))]
fn send_body_buffered(
    mut stream: &TcpStream,
    mut file: &File,
    start: u64,
    len: u64,
    link: &LinkState,
    shared: &Shared,
) -> io::Result<()> {
    file.seek(SeekFrom::Start(start))?;
    let mut buffer = BodyBuffer::take(shared, len);
    let buf = buffer.as_mut();
    let mut pos = start;
    let end = start + len;
    while pos < end {
        if link.is_revoked() {
            return Err(io::Error::other(Revoked));
        }
        let want = usize::try_from(end - pos).map_or(buf.len(), |left| left.min(buf.len()));
        let got = read_up_to(file, &mut buf[..want])?;
        if got < want {
            // The file shrank after the check: the promised Content-Length cannot be met.
            shared.send(ServeEvent::FileChanged { job: link.job });
            return Err(io::Error::other("file shrank while being served"));
        }
        stream.write_all(&buf[..got])?;
        record(link, shared, pos, pos + got as u64);
        pos += got as u64;
    }
    Ok(())
}

/// Fills `buf` unless the file ends first; returns how much was read.
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
struct BodyBuffer<'a> {
    buf: Vec<u8>,
    budget: Option<&'a AtomicUsize>,
}

impl<'a> BodyBuffer<'a> {
    fn take(shared: &'a Shared, len: u64) -> BodyBuffer<'a> {
        let wanted = usize::try_from(len).map_or(CHUNK, |len| len.min(CHUNK));
        let reserved = shared
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
            budget: reserved.then_some(&shared.buffer_bytes),
        }
    }

    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.buf
    }
}

impl Drop for BodyBuffer<'_> {
    fn drop(&mut self) {
        if let Some(budget) = self.budget {
            budget.fetch_sub(self.buf.len(), Ordering::SeqCst);
        }
    }
}

/// Adds served bytes to the link's progress and emits milestone and transfer events.
fn record(link: &LinkState, shared: &Shared, start: u64, end: u64) {
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
        log::info!("{}: {percent}% served", link.display_name());
        shared.send(ServeEvent::Milestone {
            job: link.job,
            percent,
        });
    }
    if let Some(event) = transfer {
        shared.send(event);
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
