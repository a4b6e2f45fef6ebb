//! The tunnel, end to end: the real postflow runs the `fake-cloudflared` stand-in exactly as
//! it would run cloudflared. These tests look where a person would look: postflow's log, the
//! processes, the stand-in's record of how it was started, and whether a request
//! to the public name reaches the file server.
//!
//! These test the supervisor: a small origin in this file stands in for the file server (the
//! test-only `POSTFLOW_TEST_TUNNEL_ORIGIN` points the tunnel at it), and the probe file is
//! described through the test-only `POSTFLOW_TEST_TUNNEL_PROBE_*` variables. The real origin
//! and probe (postflow's own file server and a link on it) are exercised by tests/upload_e2e.rs.
//!
//! On Windows (under Wine in CI) cloudflared is asked to stop with a Ctrl-Break to its process
//! group, which Wine cannot deliver (GenerateConsoleCtrlEvent fails there), and the stand-in's
//! other signals (SIGUSR1 for an edge drop, SIGSTOP) have no Windows counterpart: the tests of
//! a graceful cloudflared stop, and those that signal the stand-in, are not run there; each
//! says so. macOS has no /proc to tell a live
//! process from a zombie with (`common::is_alive`).
#![cfg(any(target_os = "linux", windows))]

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::sim_bins::fake_cloudflared;
use common::SpawnExt;
use common::{is_alive, signal, wait_until, Sandbox};

const PROBE_PATH: &str = "/f/probe-4f1c9a/probe.txt";
const PROBE_BODY: &str = "postflow probe 4f1c9a\n";
/// Generous: the machine running the tests may be busy.
const T: Duration = Duration::from_secs(30);

// ------------------------------------------------------------------ the story helpers

/// One test's world: a sandbox, an origin standing in for the file server, the stand-in's
/// hostname registry and its start log.
struct Fixture {
    sandbox: Sandbox,
    origin_port: u16,
    registry: PathBuf,
    cf_logs: PathBuf,
    clip: Vec<u8>,
}

impl Fixture {
    fn new(name: &str) -> Fixture {
        let sandbox = Sandbox::new(name);
        let clip: Vec<u8> = (0..300_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let origin_port = start_origin(vec![
            ("/files/clip.mov".into(), clip.clone()),
            (PROBE_PATH.into(), PROBE_BODY.as_bytes().to_vec()),
        ]);
        Fixture {
            registry: sandbox.dir.join("registry"),
            cf_logs: sandbox.dir.join("cf-logs"),
            sandbox,
            origin_port,
            clip,
        }
    }

    /// A config with this `tunnel` section. postflow's own file server listens on a port of
    /// its own; the tunnel forwards to our origin instead (POSTFLOW_TEST_TUNNEL_ORIGIN, set in
    /// `run`), so these tests decide what the public name serves.
    fn config(&self, tunnel: Value) -> PathBuf {
        let mut config = self.sandbox.base_config();
        config["serve"]["listen"] = "127.0.0.1:0".into();
        config["tunnel"] = tunnel;
        self.sandbox.write_config(&config)
    }

    fn quick_config(&self) -> PathBuf {
        self.config(json!({ "mode": "quick", "cloudflared": fake_cloudflared() }))
    }

    /// Starts `postflow run` with the stand-in's knobs in its environment (the child
    /// inherits them) and nothing else leaking in from ours.
    fn run(&self, config: &Path, env: &[(&str, &str)]) -> Run {
        let mut cmd = self.sandbox.postflow();
        for (k, _) in std::env::vars() {
            if [
                "FAKE_CLOUDFLARED_",
                "TUNNEL_",
                "SIM_TUNNEL_",
                "POSTFLOW_TEST_",
            ]
            .iter()
            .any(|p| k.starts_with(p))
            {
                cmd.env_remove(k);
            }
        }
        cmd.env("FAKE_CLOUDFLARED_LOG_DIR", &self.cf_logs)
            .env("SIM_TUNNEL_REGISTRY", &self.registry)
            .env("POSTFLOW_TEST_TUNNEL_PROBE_PATH", PROBE_PATH)
            .env("POSTFLOW_TEST_TUNNEL_PROBE_BODY", PROBE_BODY)
            .env(
                "POSTFLOW_TEST_TUNNEL_ORIGIN",
                format!("127.0.0.1:{}", self.origin_port),
            )
            .envs(env.iter().copied());
        let run = Run::start(cmd.arg("run").arg(config));
        self.sandbox.track(&run.child);
        run
    }

    /// Every start of the stand-in: its pid and argv.
    fn starts(&self) -> Vec<(u32, Vec<String>)> {
        let text = std::fs::read_to_string(self.cf_logs.join("starts.log")).unwrap_or_default();
        text.lines()
            .map(|line| {
                let (pid, argv) = line.split_once(' ').unwrap();
                (pid.parse().unwrap(), serde_json::from_str(argv).unwrap())
            })
            .collect()
    }

    fn wait_for_starts(&self, n: usize) -> Vec<(u32, Vec<String>)> {
        wait_until(T, &format!("{n} starts of cloudflared"), || {
            self.starts().len() >= n
        });
        self.starts()
    }

    /// The stand-in's local "edge" address for a public hostname.
    fn edge_for(&self, url: &str) -> String {
        let host = url.split("://").nth(1).unwrap();
        std::fs::read_to_string(self.registry.join(host))
            .unwrap_or_else(|e| panic!("{host} is not registered: {e}"))
            .trim()
            .to_string()
    }

    fn state_file(&self, name: &str) -> PathBuf {
        self.sandbox.state_dir().join(name)
    }
}

/// A running postflow whose log is collected as it comes.
struct Run {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Run {
    fn start(cmd: &mut Command) -> Run {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn_retrying()
            .expect("start postflow");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        Run { child, log }
    }

    fn lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    fn text(&self) -> String {
        self.lines().join("\n")
    }

    fn count(&self, needle: &str) -> usize {
        self.lines().iter().filter(|l| l.contains(needle)).count()
    }

    /// Waits until the log has `n` lines containing `needle`; returns the n-th.
    fn wait_for_nth(&self, n: usize, needle: &str, limit: Duration) -> String {
        let start = Instant::now();
        loop {
            let found: Vec<String> = self
                .lines()
                .into_iter()
                .filter(|l| l.contains(needle))
                .collect();
            if found.len() >= n {
                return found[n - 1].clone();
            }
            if !is_alive(self.child.id()) {
                panic!(
                    "postflow exited before logging {needle:?}:\n{}",
                    self.text()
                );
            }
            assert!(
                start.elapsed() < limit,
                "no {needle:?} (x{n}) in the log within {limit:?}:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_for(&self, needle: &str) -> String {
        self.wait_for_nth(1, needle, T)
    }

    /// Waits for the n-th `tunnel up: URL` line and returns the URL.
    fn wait_for_url(&self, n: usize) -> String {
        let line = self.wait_for_nth(n, "tunnel up: ", T);
        url_of(&line)
    }

    /// SIGTERM, then waits for the exit; returns the status and how long it took.
    fn stop(&mut self) -> (ExitStatus, Duration) {
        let start = Instant::now();
        signal(self.child.id(), "TERM");
        let status = common::wait_exit(&mut self.child, T);
        (status, start.elapsed())
    }

    fn kill_9(&mut self) {
        signal(self.child.id(), "KILL");
        common::wait_exit(&mut self.child, T);
    }
}

impl Drop for Run {
    /// A failed test must not leave postflow (and its cloudflared) running. On unix it gets a
    /// SIGTERM first, to stop its cloudflared; on Windows cloudflared dies with postflow (its
    /// job object).
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            #[cfg(unix)]
            {
                let _ = Command::new("kill")
                    .args(["-TERM", &self.child.id().to_string()])
                    .status();
                let start = Instant::now();
                while matches!(self.child.try_wait(), Ok(None)) && start.elapsed() < T {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The URL of a `tunnel up: URL …` line.
fn url_of(line: &str) -> String {
    let rest = line.split("tunnel up: ").nth(1).unwrap();
    rest.split_whitespace().next().unwrap().to_string()
}

/// The value following `flag` in an argv.
fn arg_after<'a>(argv: &'a [String], flag: &str) -> Option<&'a str> {
    let at = argv.iter().position(|a| a == flag)?;
    argv.get(at + 1).map(String::as_str)
}

/// The delays of `starting cloudflared again in …` lines, in order.
fn restart_delays(run: &Run) -> Vec<String> {
    run.lines()
        .iter()
        .filter_map(|l| l.split("starting cloudflared again in ").nth(1))
        .map(|d| d.trim().to_string())
        .collect()
}

// ------------------------------------------------------------------ an origin and a client

/// A tiny HTTP/1.1 server standing in for the file server: GET/HEAD of fixed paths, with
/// single `bytes=a-b` / `bytes=a-` ranges. One connection per request.
fn start_origin(files: Vec<(String, Vec<u8>)>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let files: Arc<HashMap<String, Vec<u8>>> = Arc::new(files.into_iter().collect());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let files = Arc::clone(&files);
            std::thread::spawn(move || serve_one(stream, &files));
        }
    });
    port
}

fn serve_one(stream: TcpStream, files: &HashMap<String, Vec<u8>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut range = None;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).unwrap_or(0) == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = header.split_once(':') {
            if k.eq_ignore_ascii_case("range") {
                range = Some(v.trim().to_string());
            }
        }
    }
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let mut out = stream;
    let Some(body) = files.get(path) else {
        let _ = out
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return;
    };
    let len = body.len();
    let (status, slice, extra) = match range.as_deref().and_then(|r| r.strip_prefix("bytes=")) {
        Some(spec) => {
            let (a, b) = spec.split_once('-').unwrap();
            let a: usize = a.parse().unwrap();
            let b: usize = if b.is_empty() {
                len - 1
            } else {
                b.parse::<usize>().unwrap().min(len - 1)
            };
            (
                "206 Partial Content",
                &body[a..=b],
                format!("Content-Range: bytes {a}-{b}/{len}\r\n"),
            )
        }
        None => ("200 OK", &body[..], String::new()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nAccept-Ranges: bytes\r\n{extra}Connection: close\r\n\r\n",
        slice.len()
    );
    let _ = out.write_all(head.as_bytes());
    if method != "HEAD" {
        let _ = out.write_all(slice);
    }
}

/// A raw GET to `addr` with the given Host (and Range): status line, headers, body.
fn get(addr: &str, host: &str, path: &str, range: Option<&str>) -> (String, String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    let range = range.map(|r| format!("Range: {r}\r\n")).unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\n{range}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let (status, headers) = head.split_once("\r\n").unwrap_or((&head, ""));
    (
        status.to_string(),
        headers.to_string(),
        raw[split + 4..].to_vec(),
    )
}

// ------------------------------------------------------------------ quick tunnels

#[test]
fn quick_mode_comes_up_with_the_stand_ins_url_started_with_our_own_arguments() {
    let f = Fixture::new("tunnel-quick");
    let mut run = f.run(&f.quick_config(), &[]);
    let url = run.wait_for_url(1);
    assert!(
        url.starts_with("https://") && url.ends_with(".trycloudflare.com"),
        "{url}"
    );
    f.edge_for(&url); // the stand-in registered exactly that name

    let starts = f.starts();
    assert_eq!(starts.len(), 1);
    let (pid, argv) = &starts[0];
    // As postflow names it to cloudflared: canonical on unix; on Windows only made absolute,
    // since a canonical path there is a `\\?\C:\...` verbatim one.
    #[cfg(unix)]
    let config_file = std::fs::canonicalize(f.state_file("cloudflared.yml")).unwrap();
    #[cfg(windows)]
    let config_file = std::path::absolute(f.state_file("cloudflared.yml")).unwrap();
    assert_eq!(argv[1], "tunnel");
    assert!(argv.contains(&"--no-autoupdate".to_string()), "{argv:?}");
    assert_eq!(
        arg_after(argv, "--config"),
        Some(config_file.to_str().unwrap())
    );
    assert_eq!(
        std::fs::read_to_string(&config_file).unwrap().trim(),
        "{}",
        "our own config, so a user's ~/.cloudflared/config.yml cannot take over"
    );
    let metrics = arg_after(argv, "--metrics").unwrap();
    assert!(
        metrics.starts_with("127.0.0.1:") && !metrics.ends_with(":0"),
        "{metrics}"
    );
    assert_eq!(
        arg_after(argv, "--url"),
        Some(format!("http://127.0.0.1:{}", f.origin_port).as_str())
    );
    assert_eq!(
        std::fs::read_to_string(f.state_file("cloudflared.pid"))
            .unwrap()
            .trim(),
        pid.to_string()
    );

    let (status, _) = run.stop();
    assert!(status.success(), "{}", run.text());
    assert!(!is_alive(*pid), "cloudflared outlived postflow");
    assert!(!f.state_file("cloudflared.pid").exists());
    // It stopped by itself: on Windows that is a Ctrl-Break, which Wine cannot deliver.
    #[cfg(unix)]
    assert!(
        run.text().contains("cloudflared stopped (exit status: 0)"),
        "{}",
        run.text()
    );
}

#[test]
fn a_file_is_fetched_through_the_public_name_with_correct_bytes_and_ranges() {
    let f = Fixture::new("tunnel-fetch");
    let run = f.run(&f.quick_config(), &[]);
    let url = run.wait_for_url(1);
    let host = url.strip_prefix("https://").unwrap();
    let edge = f.edge_for(&url);

    let (status, _, body) = get(&edge, host, "/files/clip.mov", None);
    assert!(status.contains(" 200 "), "{status}");
    assert!(body == f.clip, "the whole file came back different");

    let (status, headers, body) = get(&edge, host, "/files/clip.mov", Some("bytes=1000-1999"));
    assert!(status.contains(" 206 "), "{status}");
    assert!(
        headers.contains("Content-Range: bytes 1000-1999/300000"),
        "{headers}"
    );
    assert_eq!(body, &f.clip[1000..2000]);

    let (status, _, body) = get(&edge, host, "/files/clip.mov", Some("bytes=299000-"));
    assert!(status.contains(" 206 "), "{status}");
    assert_eq!(body, &f.clip[299_000..]);
}

#[test]
fn the_url_from_cloudflareds_stderr_alone_is_enough() {
    let f = Fixture::new("tunnel-stderr-url");
    let run = f.run(
        &f.quick_config(),
        &[("FAKE_CLOUDFLARED_MODE", "no-quicktunnel-endpoint")],
    );
    let url = run.wait_for_url(1);
    assert!(url.ends_with(".trycloudflare.com"), "{url}");
    // The endpoint really was missing.
    let metrics = arg_after(&f.starts()[0].1, "--metrics")
        .unwrap()
        .to_string();
    let (status, _, _) = get(&metrics, "127.0.0.1", "/quicktunnel", None);
    assert!(status.contains(" 404 "), "{status}");
    f.edge_for(&url);
}

// ------------------------------------------------------------------ failure modes

#[test]
fn a_start_that_never_gets_ready_is_stopped_at_the_deadline_and_tried_again() {
    let f = Fixture::new("tunnel-deadline");
    let run = f.run(
        &f.quick_config(),
        &[
            ("FAKE_CLOUDFLARED_MODE", "edge-unreachable"),
            ("POSTFLOW_TEST_TUNNEL_READY_MS", "1500"),
            ("POSTFLOW_TEST_TUNNEL_BACKOFF_MS", "200"),
        ],
    );
    let down = run.wait_for("tunnel down: cloudflared was not ready within 1.5s");
    assert!(down.contains("/ready: HTTP 503"), "{down}");
    let starts = f.wait_for_starts(2);
    assert!(
        !is_alive(starts[0].0),
        "the stuck cloudflared was left running"
    );
    assert_eq!(run.count("tunnel up: "), 0);
}

#[test]
fn failed_starts_back_off_doubling_up_to_the_cap() {
    let f = Fixture::new("tunnel-backoff");
    let run = f.run(
        &f.quick_config(),
        &[
            ("FAKE_CLOUDFLARED_MODE", "rate-limit"),
            ("POSTFLOW_TEST_TUNNEL_BACKOFF_MS", "100"),
            ("POSTFLOW_TEST_TUNNEL_BACKOFF_MAX_MS", "400"),
        ],
    );
    run.wait_for_nth(5, "starting cloudflared again in", T);
    assert_eq!(
        restart_delays(&run)[..5],
        ["100ms", "200ms", "400ms", "400ms", "400ms"]
    );
    let down = run.wait_for("tunnel down: ");
    assert!(down.contains("429 Too Many Requests"), "{down}");
    assert!(f.starts().len() >= 5);
}

#[test]
fn no_network_is_reported_in_cloudflareds_words_and_retried_later() {
    let f = Fixture::new("tunnel-no-network");
    let run = f.run(
        &f.quick_config(),
        &[
            ("FAKE_CLOUDFLARED_MODE", "no-network"),
            ("POSTFLOW_TEST_TUNNEL_BACKOFF_MS", "200"),
        ],
    );
    let down = run.wait_for("tunnel down: ");
    assert!(
        down.contains("cloudflared exited with code 1: failed to request quick Tunnel"),
        "{down}"
    );
    run.wait_for("cloudflared's last lines:");
    run.wait_for("starting cloudflared again in 200ms");
    f.wait_for_starts(2);
}

#[test]
fn a_crash_after_coming_up_takes_the_url_back_and_brings_a_new_one() {
    let f = Fixture::new("tunnel-crash");
    let run = f.run(
        &f.quick_config(),
        &[
            ("FAKE_CLOUDFLARED_MODE", "crash-after=1"),
            ("POSTFLOW_TEST_TUNNEL_BACKOFF_MS", "200"),
        ],
    );
    run.wait_for_url(1);
    let down = run.wait_for("tunnel down: ");
    assert!(down.contains("cloudflared exited with code 1"), "{down}");
    run.wait_for_url(2);
    let lines = run.lines();
    let first_up = lines
        .iter()
        .position(|l| l.contains("tunnel up: "))
        .unwrap();
    let first_down = lines
        .iter()
        .position(|l| l.contains("tunnel down: "))
        .unwrap();
    assert!(first_up < first_down);
}

#[test]
#[cfg_attr(
    windows,
    ignore = "freezes the stand-in with SIGSTOP; Windows has no signal to send it"
)]
fn a_tunnel_that_stops_answering_is_reconnecting_and_comes_back_with_the_same_url() {
    let f = Fixture::new("tunnel-frozen");
    let run = f.run(&f.quick_config(), &[]);
    let url = run.wait_for_url(1);
    let pid = f.starts()[0].0;
    // Frozen, it says nothing and its /ready stops answering: only the polls can tell.
    signal(pid, "STOP");
    let lost = run.wait_for("tunnel reconnecting: ");
    assert!(lost.contains("/ready: no answer"), "{lost}");
    signal(pid, "CONT");
    assert_eq!(run.wait_for_url(2), url);
    assert_eq!(f.starts().len(), 1, "it recovered without a restart");
    assert_eq!(run.count("tunnel down"), 0, "{}", run.text());
}

#[test]
#[cfg_attr(
    windows,
    ignore = "stops the stand-in by hand with a signal: on Windows a Ctrl-Break to its \
              console group, which Wine cannot deliver"
)]
fn a_cloudflared_stopped_by_hand_is_brought_back() {
    let f = Fixture::new("tunnel-by-hand");
    let run = f.run(
        &f.quick_config(),
        &[("POSTFLOW_TEST_TUNNEL_BACKOFF_MS", "200")],
    );
    run.wait_for_url(1);
    signal(f.starts()[0].0, "TERM");
    run.wait_for("cloudflared is shutting down: it was sent a signal, not by postflow");
    let down = run.wait_for("tunnel down: ");
    assert!(down.contains("stopped by itself"), "{down}");
    run.wait_for_url(2);
    assert_eq!(f.starts().len(), 2);
    // Its shutdown's `ERR Connection terminated` is not a connection lost.
    assert_eq!(run.count("tunnel reconnecting"), 0, "{}", run.text());
    assert_eq!(run.count("tunnel down: "), 1, "{}", run.text());
}

// ------------------------------------------------------------------ the edge drops

/// Scaled time, honestly: the stand-in runs its clock at a tenth
/// (`FAKE_CLOUDFLARED_TIME_SCALE=0.1`), and so does postflow (start deadline 6 s for 60 s,
/// patience 30 s for 5 min). A "45 s" drop takes 4.5 s.
const TENTH: &[(&str, &str)] = &[
    ("FAKE_CLOUDFLARED_TIME_SCALE", "0.1"),
    ("POSTFLOW_TEST_TUNNEL_READY_MS", "6000"),
    ("POSTFLOW_TEST_TUNNEL_PATIENCE_MS", "30000"),
];

/// The `/api/status` of a run whose config has `dashboard.listen` on `port`.
fn api_status(port: u16) -> Value {
    let addr = format!("127.0.0.1:{port}");
    let (status, _, body) = get(&addr, &addr, "/api/status", None);
    assert!(status.contains(" 200 "), "{status}");
    serde_json::from_slice(&body).unwrap()
}

#[test]
#[cfg_attr(
    windows,
    ignore = "the edge drop is the stand-in's SIGUSR1; Windows has no signal to send it"
)]
fn a_45_s_edge_drop_does_not_restart_cloudflared_and_the_url_stays() {
    let f = Fixture::new("tunnel-drop-45");
    let dashboard = free_port();
    let mut config = f.sandbox.base_config();
    config["serve"]["listen"] = "127.0.0.1:0".into();
    config["dashboard"]["listen"] = format!("127.0.0.1:{dashboard}").into();
    config["tunnel"] = json!({ "mode": "quick", "cloudflared": fake_cloudflared() });
    let config = f.sandbox.write_config(&config);
    let env: Vec<(&str, &str)> = [("FAKE_CLOUDFLARED_RECONNECT", "45")]
        .iter()
        .chain(TENTH)
        .copied()
        .collect();
    let run = f.run(&config, &env);
    let url = run.wait_for_url(1);
    let pid = f.starts()[0].0;

    signal(pid, "USR1"); // the edge drops the connection
                         // Known at once, from cloudflared's own line, not from a /ready poll seconds later.
    let lost = run.wait_for("tunnel reconnecting: ");
    assert!(
        lost.contains("failed to accept incoming stream requests"),
        "{lost}"
    );
    assert!(lost.contains(&url), "{lost}");
    let tunnel = wait_for_state(dashboard, "reconnecting");
    assert!(
        tunnel["detail"].as_str().unwrap().contains(&url),
        "{tunnel}"
    );
    assert!(tunnel["since_ms"].as_u64().unwrap() > 0);
    std::thread::sleep(Duration::from_secs(1));
    let tunnel = api_status(dashboard)["components"]["tunnel"].clone();
    assert_eq!(tunnel["state"], "reconnecting", "{tunnel}");
    assert!(tunnel["for_ms"].as_u64().unwrap() >= 1000, "{tunnel}");

    let back = run.wait_for_nth(2, "tunnel up: ", T);
    assert_eq!(url_of(&back), url);
    assert!(back.contains("cloudflared reconnected after"), "{back}");
    assert_eq!(
        wait_for_state(dashboard, "up")["detail"].as_str(),
        Some(url.as_str())
    );
    assert_eq!(f.starts().len(), 1, "cloudflared was never restarted");
    assert_eq!(run.count("tunnel down"), 0, "{}", run.text());
    // The URL still leads here.
    let host = url.strip_prefix("https://").unwrap();
    let (status, _, body) = get(&f.edge_for(&url), host, PROBE_PATH, None);
    assert!(status.contains(" 200 "), "{status}");
    assert_eq!(body, PROBE_BODY.as_bytes());
}

/// Polls `/api/status` until the tunnel is in `state`; returns its component.
fn wait_for_state(dashboard: u16, state: &str) -> Value {
    let mut last = Value::Null;
    let start = Instant::now();
    while start.elapsed() < T {
        last = api_status(dashboard)["components"]["tunnel"].clone();
        if last["state"] == state {
            return last;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the tunnel never became {state}: {last}");
}

#[test]
#[cfg_attr(
    windows,
    ignore = "the edge drop is the stand-in's SIGUSR1; Windows has no signal to send it"
)]
fn over_http2_a_drop_of_up_to_a_minute_is_waited_out_too() {
    let f = Fixture::new("tunnel-drop-http2");
    let config = f.config(json!({
        "mode": "quick",
        "cloudflared": fake_cloudflared(),
        "protocol": "http2",
    }));
    // HTTP/2's reconnect: cloudflared's random backoff of 4.5 to 59 s, here at a tenth.
    let env: Vec<(&str, &str)> = [
        ("FAKE_CLOUDFLARED_RECONNECT", "http2"),
        ("RUST_LOG", "info,postflow::tunnel=debug"),
    ]
    .iter()
    .chain(TENTH)
    .copied()
    .collect();
    let mut run = f.run(&config, &env);
    let url = run.wait_for_url(1);
    let (pid, argv) = f.starts()[0].clone();
    assert_eq!(arg_after(&argv, "--protocol"), Some("http2"), "{argv:?}");
    signal(pid, "USR1");
    let lost = run.wait_for("tunnel reconnecting: ");
    assert!(lost.contains("Lost connection with the edge"), "{lost}");
    assert_eq!(
        url_of(&run.wait_for_nth(2, "tunnel up: ", Duration::from_secs(60))),
        url
    );
    assert_eq!(f.starts().len(), 1);
    assert_eq!(
        run.count("Registered tunnel connection connIndex=0"),
        2,
        "{}",
        run.text()
    );
    assert!(run.text().contains("protocol=http2"));
    assert!(run.stop().0.success());
}

#[test]
#[cfg_attr(
    windows,
    ignore = "the edge drop is the stand-in's SIGUSR1; Windows has no signal to send it"
)]
fn a_cloudflared_that_does_not_reconnect_within_the_patience_is_restarted() {
    let f = Fixture::new("tunnel-patience");
    let run = f.run(
        &f.quick_config(),
        &[
            ("FAKE_CLOUDFLARED_RECONNECT", "never"),
            ("POSTFLOW_TEST_TUNNEL_PATIENCE_MS", "2000"),
            ("POSTFLOW_TEST_TUNNEL_BACKOFF_MS", "200"),
        ],
    );
    let first = run.wait_for_url(1);
    let pid = f.starts()[0].0;
    signal(pid, "USR1");
    run.wait_for("tunnel reconnecting: ");
    let down = run.wait_for("tunnel down: ");
    assert!(
        down.contains("cloudflared did not reconnect within 2 s of losing its connection"),
        "{down}"
    );
    let second = run.wait_for_url(2);
    assert_ne!(second, first, "a restart gets a new hostname");
    assert_eq!(f.starts().len(), 2);
    assert!(!is_alive(pid), "the stuck cloudflared was stopped");
}

// ------------------------------------------------------------------ the child's environment

#[test]
fn tunnel_variables_in_postflows_environment_change_nothing() {
    let f = Fixture::new("tunnel-env");
    let secret = "s3cr3t-0a9f";
    let mut run = f.run(
        &f.quick_config(),
        &[
            // What an operator who also runs cloudflared for something else may have set.
            ("TUNNEL_LOGFILE", "cf.log"),
            ("TUNNEL_TRANSPORT_PROTOCOL", "http2"),
            ("TUNNEL_LOGLEVEL", "error"),
            ("CLOUDFLARED_HOME", "/nowhere"),
            ("NO_TLS_VERIFY", "true"),
            ("POSTFLOW_CLIENT_SECRET", secret),
            ("RUST_LOG", "info,postflow::tunnel=debug"),
        ],
    );
    let url = run.wait_for_url(1);
    // Its log stayed on the stderr postflow reads, at INFO, and its transport is its own
    // choice (QUIC).
    let registered = run.wait_for("Registered tunnel connection");
    assert!(registered.ends_with(" protocol=quic"), "{registered}");
    assert!(
        !f.sandbox.dir.join("cf.log").exists(),
        "cloudflared wrote a log file"
    );
    let withheld = run.wait_for("cloudflared's environment: withheld ");
    for name in [
        "CLOUDFLARED_HOME",
        "NO_TLS_VERIFY",
        "POSTFLOW_CLIENT_SECRET",
        "TUNNEL_LOGFILE",
        "TUNNEL_LOGLEVEL",
        "TUNNEL_TRANSPORT_PROTOCOL",
    ] {
        assert!(withheld.contains(name), "{withheld}");
    }
    assert!(!withheld.contains("cf.log") && !withheld.contains(secret));
    assert!(!run.text().contains(secret), "a secret reached the log");
    f.edge_for(&url);
    assert!(run.stop().0.success());
    assert!(!f.sandbox.dir.join("cf.log").exists());
}

#[test]
fn an_update_exit_restarts_at_once() {
    let f = Fixture::new("tunnel-update");
    // The normal backoff (5 s) would be far longer than this test allows between starts.
    let run = f.run(
        &f.quick_config(),
        &[("FAKE_CLOUDFLARED_MODE", "update-after=1")],
    );
    run.wait_for_url(1);
    run.wait_for("tunnel down: cloudflared updated itself (exit code 11)");
    run.wait_for("starting cloudflared again now");
    let seen = Instant::now();
    f.wait_for_starts(2);
    assert!(seen.elapsed() < Duration::from_secs(3));
    run.wait_for_url(2);
}

#[test]
#[cfg_attr(
    windows,
    ignore = "checks cloudflared's graceful stop: a Ctrl-Break to its process group on \
              Windows, which Wine cannot deliver (the decision is unit-tested in src/)"
)]
fn a_log_flood_stalls_nothing() {
    let f = Fixture::new("tunnel-flood");
    let mut run = f.run(&f.quick_config(), &[("FAKE_CLOUDFLARED_MODE", "log-flood")]);
    let url = run.wait_for_url(1);
    // The flood runs; the tunnel keeps serving and stays up.
    let host = url.strip_prefix("https://").unwrap();
    let (status, _, body) = get(&f.edge_for(&url), host, PROBE_PATH, None);
    assert!(status.contains(" 200 "), "{status}");
    assert_eq!(body, PROBE_BODY.as_bytes());
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(run.count("tunnel down"), 0, "{}", run.text());
    // Its "Request failed" ERR lines are about requests, not the connection.
    assert_eq!(run.count("tunnel reconnecting"), 0, "{}", run.text());
    // A stderr nobody reads would block cloudflared's logging, and with it its graceful
    // shutdown: postflow would have to wait out the grace period and kill it.
    let (status, took) = run.stop();
    assert!(status.success());
    assert!(took < Duration::from_secs(8), "stopping took {took:?}");
    assert!(
        run.text().contains("cloudflared stopped (exit status: 0)"),
        "{}",
        run.text()
    );
}

#[test]
fn a_missing_cloudflared_is_one_clear_error_not_a_crash_loop() {
    let f = Fixture::new("tunnel-missing");
    let config = f.config(json!({ "mode": "quick", "cloudflared": "/nonexistent/cloudflared" }));
    let mut run = f.run(&config, &[]);
    let error = run.wait_for("cloudflared not found");
    assert!(error.contains("tunnel.cloudflared"), "{error}");
    assert!(error.contains("install"), "{error}");
    assert!(error.contains("tunnel.mode to \"off\""), "{error}");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(run.count("cloudflared not found"), 1);
    let (status, _) = run.stop();
    assert!(status.success(), "postflow keeps running without a tunnel");
}

// ------------------------------------------------------------------ stopping and leftovers

#[test]
#[cfg_attr(
    windows,
    ignore = "checks cloudflared's graceful stop: a Ctrl-Break to its process group on \
              Windows, which Wine cannot deliver (the decision is unit-tested in src/)"
)]
fn a_clean_cloudflared_shutdown_and_its_err_lines_are_not_a_failure() {
    let f = Fixture::new("tunnel-clean-stop");
    let mut run = f.run(
        &f.quick_config(),
        &[("RUST_LOG", "info,postflow::tunnel=debug")],
    );
    run.wait_for_url(1);
    let (status, _) = run.stop();
    assert_eq!(status.code(), Some(0));
    let lines = run.lines();
    let stopping = lines
        .iter()
        .position(|l| l.contains(common::STOPPING))
        .unwrap();
    let after = &lines[stopping..];
    // cloudflared said ERR, as the real one does on a clean shutdown ...
    for err in [
        " ERR Connection terminated connIndex=0",
        " ERR no more connections active and exiting",
    ] {
        assert!(
            after
                .iter()
                .any(|l| l.contains(err) && l.contains(" DEBUG ")),
            "{err} not seen (at DEBUG):\n{}",
            run.text()
        );
    }
    // ... and postflow reported nothing wrong.
    let alarming: Vec<&String> = after
        .iter()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    assert!(alarming.is_empty(), "{alarming:#?}");
    assert!(run.text().contains("cloudflared stopped (exit status: 0)"));
    assert_eq!(run.count("tunnel reconnecting"), 0);
}

#[test]
#[cfg_attr(
    windows,
    ignore = "checks cloudflared's graceful stop: a Ctrl-Break to its process group on \
              Windows, which Wine cannot deliver (the decision is unit-tested in src/)"
)]
fn sigterm_to_postflow_stops_cloudflared_within_its_grace_period() {
    let f = Fixture::new("tunnel-sigterm");
    let mut run = f.run(
        &f.quick_config(),
        &[("FAKE_CLOUDFLARED_MODE", "slow-shutdown=2")],
    );
    run.wait_for_url(1);
    let pid = f.starts()[0].0;
    let (status, took) = run.stop();
    assert_eq!(status.code(), Some(0));
    assert!(!is_alive(pid));
    // It was given its time (2 s of draining) and exited by itself, well before the 10 s
    // grace period ran out.
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(10),
        "{took:?}"
    );
    assert!(
        run.text().contains("cloudflared stopped (exit status: 0)"),
        "{}",
        run.text()
    );
}

#[test]
fn after_kill_9_of_postflow_a_restart_leaves_exactly_one_cloudflared() {
    let f = Fixture::new("tunnel-orphan");
    let config = f.quick_config();
    let mut first = f.run(&config, &[]);
    first.wait_for_url(1);
    let orphan = f.starts()[0].0;
    first.kill_9();
    // On unix the stand-in outlives a kill -9 of postflow, and the next postflow stops it; on
    // Windows it dies with postflow, whose job object it runs in.
    if cfg!(windows) {
        wait_until(T, "cloudflared to die with postflow's job object", || {
            !is_alive(orphan)
        });
    } else {
        assert!(
            is_alive(orphan),
            "the stand-in should outlive a kill -9 of postflow"
        );
    }

    let mut second = f.run(&config, &[]);
    second.wait_for_url(1);
    if cfg!(unix) {
        second.wait_for("left running by an earlier postflow");
    }
    let alive: Vec<u32> = f
        .starts()
        .iter()
        .map(|(pid, _)| *pid)
        .filter(|pid| is_alive(*pid))
        .collect();
    assert_eq!(alive.len(), 1, "running: {alive:?}");
    assert_ne!(alive[0], orphan);
    assert!(second.stop().0.success());
}

#[test]
fn a_pid_file_naming_an_unrelated_process_leaves_it_alone() {
    let f = Fixture::new("tunnel-foreign-pid");
    let mut bystander = bystander();
    f.sandbox.track(&bystander);
    std::fs::create_dir_all(f.sandbox.state_dir()).unwrap();
    std::fs::write(
        f.state_file("cloudflared.pid"),
        format!("{}\n", bystander.id()),
    )
    .unwrap();
    let mut run = f.run(&f.quick_config(), &[]);
    run.wait_for_url(1);
    // On Windows postflow does not read another process's command line: no cloudflared can
    // be left over there (it dies with postflow's job object), so the pid file is not weighed.
    #[cfg(unix)]
    assert!(
        run.text().contains("which is not our cloudflared"),
        "{}",
        run.text()
    );
    assert!(is_alive(bystander.id()));
    assert!(run.stop().0.success());
    let _ = bystander.kill();
    let _ = bystander.wait();
}

/// A process that is not cloudflared and keeps running for 30 s.
fn bystander() -> Child {
    #[cfg(unix)]
    let mut cmd = Command::new("sleep");
    #[cfg(unix)]
    cmd.arg("30");
    #[cfg(windows)]
    let mut cmd = Command::new("ping");
    #[cfg(windows)]
    cmd.args(["-n", "31", "127.0.0.1"]);
    cmd.stdout(Stdio::null())
        .spawn_retrying()
        .expect("start a bystander process")
}

// ------------------------------------------------------------------ named and external

/// A named tunnel whose dashboard routes `files.example.test` to `origin_port`.
fn named_run(f: &Fixture, origin_port: u16, extra: &[(&str, &str)]) -> (Run, String) {
    let token = sim::cloudflared::make_token(
        "0123456789abcdef0123456789abcdef",
        "6ff42ae2-765d-4adf-8112-31c55c1551ef",
        "c2VjcmV0LXNlY3JldC1zZWNyZXQ=",
    );
    std::fs::write(f.sandbox.dir.join("tunnel.token"), &token).unwrap();
    let config = f.config(json!({
        "mode": "named",
        "cloudflared": fake_cloudflared(),
        "public_url": "http://files.example.test",
        "token_file": "tunnel.token",
    }));
    let edge = format!("127.0.0.1:{}", free_port());
    let origin = format!("http://127.0.0.1:{origin_port}");
    let resolve = format!("files.example.test:80={edge}");
    let mut env = vec![
        ("FAKE_CLOUDFLARED_HOSTNAME", "files.example.test"),
        ("FAKE_CLOUDFLARED_ORIGIN", origin.as_str()),
        ("FAKE_CLOUDFLARED_EDGE_LISTEN", edge.as_str()),
        ("POSTFLOW_TEST_RESOLVE", resolve.as_str()),
    ];
    env.extend_from_slice(extra);
    (f.run(&config, &env), token)
}

#[test]
fn named_mode_keeps_the_token_off_the_command_line_and_probes_before_coming_up() {
    let f = Fixture::new("tunnel-named");
    let (mut run, token) = named_run(&f, f.origin_port, &[]);
    assert_eq!(run.wait_for_url(1), "http://files.example.test");

    let (pid, argv) = f.starts()[0].clone();
    // What `ps` shows; elsewhere the stand-in's own record of its argv below is the check.
    #[cfg(target_os = "linux")]
    {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        assert!(cmdline.contains("--token-file"), "{cmdline}");
        assert!(
            !cmdline.contains(&token),
            "the token is visible in ps: {cmdline}"
        );
    }
    #[cfg(not(target_os = "linux"))]
    let _ = pid;
    assert!(argv.iter().any(|a| a == "--token-file"), "{argv:?}");
    assert!(!argv.iter().any(|a| a.contains(&token)));
    assert_eq!(argv.iter().filter(|a| *a == "run").count(), 1, "{argv:?}");
    assert!(!argv.contains(&"--url".to_string()), "{argv:?}");
    assert!(run.stop().0.success());
}

#[test]
fn named_mode_whose_public_name_leads_elsewhere_never_comes_up() {
    let f = Fixture::new("tunnel-named-elsewhere");
    let elsewhere = start_origin(vec![(PROBE_PATH.into(), b"someone else's file".to_vec())]);
    let (run, _) = named_run(
        &f,
        elsewhere,
        &[
            ("POSTFLOW_TEST_TUNNEL_READY_MS", "2000"),
            ("POSTFLOW_TEST_TUNNEL_BACKOFF_MS", "200"),
        ],
    );
    let down = run.wait_for("tunnel down: ");
    assert!(down.contains("not ready within 2s"), "{down}");
    assert!(down.contains("does not lead to this postflow"), "{down}");
    assert_eq!(run.count("tunnel up: "), 0);
}

#[test]
fn external_mode_probes_its_url_and_comes_up_without_a_child() {
    let f = Fixture::new("tunnel-external");
    let url = format!("http://127.0.0.1:{}", f.origin_port);
    let config = f.config(json!({ "mode": "external", "public_url": url }));
    let mut run = f.run(&config, &[]);
    assert_eq!(
        run.wait_for_url(1),
        url,
        "a loopback URL is fine when the user set it"
    );
    assert!(f.starts().is_empty(), "no cloudflared in external mode");
    assert!(run.stop().0.success());
}

#[test]
fn external_mode_refuses_a_url_that_does_not_reach_us() {
    let f = Fixture::new("tunnel-external-wrong");
    let elsewhere = start_origin(vec![(PROBE_PATH.into(), b"not ours".to_vec())]);
    let wrong = format!("http://127.0.0.1:{elsewhere}");
    let config = f.config(json!({ "mode": "external", "public_url": wrong }));
    let run = f.run(&config, &[("POSTFLOW_TEST_TUNNEL_BACKOFF_MS", "200")]);
    let down = run.wait_for_nth(2, "tunnel down: ", T);
    assert!(down.contains("does not lead to this postflow"), "{down}");
    assert_eq!(run.count("tunnel up: "), 0);

    let g = Fixture::new("tunnel-external-closed");
    let closed = format!("http://127.0.0.1:{}", free_port());
    let config = g.config(json!({ "mode": "external", "public_url": closed }));
    let run = g.run(&config, &[("POSTFLOW_TEST_TUNNEL_BACKOFF_MS", "200")]);
    let down = run.wait_for("tunnel down: ");
    assert!(
        down.contains(&format!("probe through {closed} failed")),
        "{down}"
    );
    assert_eq!(run.count("tunnel up: "), 0);
}

#[test]
fn off_mode_starts_nothing_and_publishes_no_url() {
    let f = Fixture::new("tunnel-off");
    let config = f.config(json!({ "mode": "off", "cloudflared": fake_cloudflared() }));
    let mut run = f.run(&config, &[]);
    run.wait_for("tunnel off");
    std::thread::sleep(Duration::from_millis(500));
    assert!(f.starts().is_empty());
    assert_eq!(run.count("tunnel up: "), 0);
    assert!(run.stop().0.success());
}
