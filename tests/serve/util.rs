#![allow(dead_code)] // shared by serve.rs and serve_front.rs, each using a subset
//! Plumbing for the file server tests: a started server, raw HTTP over real sockets, a
//! temp directory, and a logger that keeps every record for assertions.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use postflow::serve::{FileServer, Link, ServeEvent, ServeOptions};

/// A server on 127.0.0.1:0 with its event receiver and a private temp directory.
pub struct Fixture {
    pub server: FileServer,
    pub events: Receiver<ServeEvent>,
    pub dir: TempDir,
}

impl Fixture {
    pub fn new() -> Fixture {
        Fixture::with(|_| {})
    }

    pub fn with(tweak: impl FnOnce(&mut ServeOptions)) -> Fixture {
        capture_logs();
        let mut opts = ServeOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..ServeOptions::default()
        };
        tweak(&mut opts);
        let (tx, events) = crossbeam_channel::bounded(4096);
        let server = FileServer::start(opts, tx).expect("server starts");
        Fixture {
            server,
            events,
            dir: TempDir::new(),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// Writes `bytes` to a file called `name` and registers a link to it.
    pub fn file(&self, name: &str, bytes: &[u8]) -> (PathBuf, Link) {
        let path = self.dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let link = self.server.links().register(1, &path).unwrap();
        (path, link)
    }

    /// `GET path` with `Connection: close` and extra header lines; the whole reply.
    pub fn get(&self, path: &str, headers: &[&str]) -> Reply {
        self.request("GET", path, headers)
    }

    pub fn request(&self, method: &str, path: &str, headers: &[&str]) -> Reply {
        let mut raw = format!("{method} {path} HTTP/1.1\r\nHost: test\r\n");
        for h in headers {
            raw.push_str(h);
            raw.push_str("\r\n");
        }
        raw.push_str("Connection: close\r\n\r\n");
        Reply::parse(&exchange(self.addr(), raw.as_bytes()), method == "HEAD")
    }

    /// Waits until the server has no open connection (panics after `limit`).
    pub fn wait_idle(&self, limit: Duration) -> Duration {
        let start = Instant::now();
        while self.server.connections() > 0 {
            assert!(
                start.elapsed() < limit,
                "{} connections still open after {limit:?}",
                self.server.connections()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        start.elapsed()
    }

    pub fn drain_events(&self) -> Vec<ServeEvent> {
        self.events.try_iter().collect()
    }
}

/// Sends raw bytes, reads until the server closes.
pub fn exchange(addr: SocketAddr, raw: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(raw).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    out
}

/// Reads from `s` until a full response head has arrived; returns it (body bytes beyond
/// the head that came along are dropped).
pub fn read_head(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        assert_eq!(
            s.read(&mut byte).unwrap(),
            1,
            "connection closed inside the head"
        );
        buf.push(byte[0]);
    }
    String::from_utf8(buf).unwrap()
}

/// One parsed HTTP response.
#[derive(Debug)]
pub struct Reply {
    pub head: String,
    pub status: u16,
    pub body: Vec<u8>,
}

impl Reply {
    /// Parses a complete response and checks framing: an exact Content-Length that matches
    /// the body (none for HEAD), never chunked.
    pub fn parse(raw: &[u8], is_head: bool) -> Reply {
        let end = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no head in {:?}", String::from_utf8_lossy(raw)))
            + 4;
        let head = String::from_utf8(raw[..end].to_vec()).unwrap();
        let status = head[9..12].parse().unwrap();
        let reply = Reply {
            head,
            status,
            body: raw[end..].to_vec(),
        };
        assert!(
            reply.header("transfer-encoding").is_none(),
            "{}",
            reply.head
        );
        let length: u64 = reply
            .header("content-length")
            .unwrap_or_else(|| panic!("no Content-Length in {}", reply.head))
            .parse()
            .unwrap();
        let expected = if is_head { 0 } else { length };
        assert_eq!(reply.body.len() as u64, expected, "{}", reply.head);
        reply
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.split("\r\n").skip(1).find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    /// The head without its Date line.
    pub fn head_without_date(&self) -> String {
        self.head
            .split("\r\n")
            .filter(|l| !l.starts_with("Date:"))
            .collect::<Vec<_>>()
            .join("\r\n")
    }

    /// The whole reply without its Date line, to compare replies byte for byte.
    pub fn without_date(&self) -> Vec<u8> {
        let mut out = self.head_without_date().into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}

/// Deterministic, non-repeating-looking content.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "postflow-serve-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Every log record of this test binary, all levels.
static RECORDS: Mutex<Vec<(log::Level, String)>> = Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        RECORDS
            .lock()
            .unwrap()
            .push((record.level(), record.args().to_string()));
    }
    fn flush(&self) {}
}

fn capture_logs() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        log::set_logger(&Capture).unwrap();
        log::set_max_level(log::LevelFilter::Trace);
    });
}

/// Records (tests run in parallel, so filter by something unique to the test, like the
/// file name).
pub fn logs_containing(needle: &str) -> Vec<(log::Level, String)> {
    RECORDS
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, m)| m.contains(needle))
        .cloned()
        .collect()
}

pub fn all_logs() -> Vec<(log::Level, String)> {
    RECORDS.lock().unwrap().clone()
}
