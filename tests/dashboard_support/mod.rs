//! A pipeline in the test process for the dashboard tests: the real hub, the real queue over a
//! real ledger, the real dashboard on port 0, and the test playing the upload worker and the
//! file server. Plus a raw HTTP client and a WebSocket client.
#![allow(dead_code)] // each test file uses a different subset

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{bounded, unbounded, Receiver, Sender};
use postflow::config::Config;
use postflow::dashboard::{Dashboard, Deps, FrameioLogin};
use postflow::events::{self, Event, Hub};
use postflow::ledger::{Job, Ledger};
use postflow::queue::{self, AttemptUpdate, QueueMsg, QueueSettings};
use postflow::statedir::StateDir;
use serde_json::{json, Value};
use tungstenite::WebSocket;

pub struct Pipeline {
    pub dir: PathBuf,
    pub addr: SocketAddr,
    pub hub: Hub,
    pub queue: Sender<QueueMsg>,
    /// Where the queue hands out jobs: the test is the upload worker.
    pub work: Receiver<Job>,
    pub state_dir: PathBuf,
    stop: Option<Sender<()>>,
    threads: Vec<JoinHandle<()>>,
}

pub struct Options {
    pub dashboard: Value,
    pub login: Option<Arc<dyn FrameioLogin>>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            dashboard: json!({ "listen": "127.0.0.1:0" }),
            login: None,
        }
    }
}

impl Pipeline {
    pub fn start(name: &str) -> Pipeline {
        Pipeline::start_with(name, Options::default())
    }

    pub fn start_with(name: &str, opts: Options) -> Pipeline {
        let dir =
            Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("watch")).unwrap();
        let config_path = dir.join("config.json");
        let config = json!({
            "watch": { "root": "watch" },
            "frameio": {
                "client_id": "c", "client_secret": "s",
                "redirect_uri": "https://localhost/cb",
                "account_id": "a", "project_id": "p"
            },
            "dashboard": opts.dashboard,
            "tunnel": { "mode": "off" }
        });
        std::fs::write(&config_path, config.to_string()).unwrap();
        let config = Config::load(&config_path).unwrap();
        let state = Arc::new(StateDir::lock(&config.state_dir).unwrap());
        let (ledger, _) = Ledger::open(&state.ledger_path()).unwrap();

        let (stop_tx, stop_rx) = bounded::<()>(0);
        let (hub, inbox) = Hub::new();
        let (queue_tx, queue_rx) = unbounded();
        let (jobs_tx, jobs_rx) = bounded::<Job>(0);
        let dash = Dashboard::bind(
            &config.dashboard,
            Deps {
                hub: hub.clone(),
                queue: queue_tx.clone(),
                state_dir: Arc::clone(&state),
                dead_threads: Arc::new(Mutex::new(Vec::new())),
                login: opts.login,
                projects: config.projects.clone(),
                throughput: Arc::new(postflow::throughput::Throughput::in_memory()),
                review: Default::default(),
            },
        )
        .unwrap();
        let addr = dash.local_addr();
        let (server, follower) = dash.into_loops();
        // The hub thread ends with the last `Hub` handle, which this struct holds: not joined.
        std::thread::spawn(move || events::run_hub(inbox));
        let mut threads = Vec::new();
        {
            let (stop, hub) = (stop_rx.clone(), hub.clone());
            let settings = QueueSettings::from_config(&config);
            threads.push(std::thread::spawn(move || {
                queue::run_queue(ledger, queue_rx, stop, hub, settings, jobs_tx)
            }));
        }
        let stop = stop_rx.clone();
        threads.push(std::thread::spawn(move || server.run(stop)));
        threads.push(std::thread::spawn(move || follower.run(stop_rx)));
        Pipeline {
            dir,
            addr,
            hub,
            queue: queue_tx,
            work: jobs_rx,
            state_dir: state.path().to_path_buf(),
            stop: Some(stop_tx),
            threads,
        }
    }

    /// Writes a file in the watch root and queues it through `POST /api/jobs`; its job id.
    pub fn add_file(&self, name: &str, size: usize) -> u64 {
        std::fs::write(self.dir.join("watch").join(name), vec![7u8; size]).unwrap();
        let body = json!({ "paths": [name] }).to_string();
        let r = self.request("POST", "/api/jobs", &[], body.as_bytes());
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["results"][0]["id"]
            .as_u64()
            .unwrap_or_else(|| panic!("{}", r.text()))
    }

    /// Plays the upload worker: takes the next job the queue hands out.
    pub fn take_job(&self) -> Job {
        self.work
            .recv_timeout(Duration::from_secs(10))
            .expect("the queue hands out a job")
    }

    pub fn report(&self, update: AttemptUpdate) {
        self.queue.send(QueueMsg::Attempt(update)).unwrap();
    }

    /// Plays the file server.
    pub fn transfer(&self, job: u64, covered: u64, total: u64) {
        self.hub.publish(Event::Transfer {
            job,
            covered,
            total,
            bytes_per_sec: 25e6,
        });
    }

    /// A request with the right `Host`.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Reply {
        let host = self.addr.to_string();
        let mut all = vec![("Host", host.as_str())];
        all.extend_from_slice(headers);
        raw_request(self.addr, method, path, &all, body)
    }

    pub fn get(&self, path: &str) -> Reply {
        self.request("GET", path, &[], b"")
    }

    pub fn post(&self, path: &str) -> Reply {
        self.request("POST", path, &[], b"")
    }

    pub fn ws(&self) -> Viewer {
        Viewer::connect(self.addr, &[])
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        drop(self.stop.take());
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub struct Reply {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
}

/// Writes one raw HTTP/1.1 request and reads the whole reply (the server closes).
pub fn raw_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("Connection: close\r\n");
    if !body.is_empty() || method == "POST" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    read_reply(&mut s)
}

/// Reads one reply: to Content-Length when there is one (the connection may stay open), else
/// to the end.
pub fn read_reply(s: &mut TcpStream) -> Reply {
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let split = loop {
        let n = s.read(&mut buf).unwrap();
        out.extend_from_slice(&buf[..n]);
        if let Some(i) = out.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        assert!(n > 0, "the connection closed before a whole HTTP head");
    };
    let head = String::from_utf8_lossy(&out[..split]).into_owned();
    let length = head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse::<usize>().ok())?
    });
    loop {
        if length.is_some_and(|len| out.len() >= split + 4 + len) {
            break;
        }
        let n = s.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status code");
    Reply {
        status,
        head,
        body: out[split + 4..].to_vec(),
    }
}

/// A WebSocket client as a page would be.
pub struct Viewer {
    pub ws: WebSocket<TcpStream>,
}

impl Viewer {
    pub fn try_connect(
        addr: SocketAddr,
        headers: &[(&str, &str)],
    ) -> Result<Viewer, tungstenite::Error> {
        use tungstenite::client::IntoClientRequest;
        let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
        for (n, v) in headers {
            let name = tungstenite::http::HeaderName::from_bytes(n.as_bytes()).unwrap();
            req.headers_mut()
                .insert(name, tungstenite::http::HeaderValue::from_str(v).unwrap());
        }
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let (ws, _) = tungstenite::client(req, stream).map_err(|e| match e {
            tungstenite::HandshakeError::Failure(e) => e,
            tungstenite::HandshakeError::Interrupted(_) => panic!("handshake interrupted"),
        })?;
        Ok(Viewer { ws })
    }

    pub fn connect(addr: SocketAddr, headers: &[(&str, &str)]) -> Viewer {
        Viewer::try_connect(addr, headers).expect("WebSocket connects")
    }

    /// The next envelope (pings are answered by tungstenite and skipped).
    pub fn next(&mut self) -> Value {
        loop {
            match self.ws.read().expect("a message") {
                tungstenite::Message::Text(t) => return serde_json::from_str(&t).unwrap(),
                tungstenite::Message::Close(c) => panic!("closed: {c:?}"),
                _ => continue,
            }
        }
    }

    /// Reads envelopes until one of `kind` satisfies `pred`; returns every envelope read.
    pub fn until(&mut self, kind: &str, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        let mut seen = Vec::new();
        loop {
            let m = self.next();
            let done = m["type"] == kind && pred(&m["data"]);
            seen.push(m);
            if done {
                return seen;
            }
        }
    }
}
