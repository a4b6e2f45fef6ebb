//! Black-box tests of the `fake-cloudflared` binary: spawned like postflow
//! spawns cloudflared, observed only through stderr, stdout, the metrics
//! port, the edge port, files and exit status.
//!
//! The tests that signal the stand-in (SIGTERM, SIGINT, SIGUSR1) do not run on Windows, where
//! a stop is a Ctrl-Break to its console group that Wine cannot deliver, and an edge drop
//! (SIGUSR1) has no counterpart; each such test says so.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_fake-cloudflared");

/// The signals the stand-in reacts to (unix only).
#[derive(Debug, Clone, Copy)]
enum Sig {
    Term,
    Int,
    Usr1,
}
const T: Duration = Duration::from_secs(15);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "fake-cf-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

struct Fake {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    stdout: Arc<Mutex<Vec<u8>>>,
    metrics: u16,
}

fn command(args: &[&str], envs: &[(&str, &str)]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("FAKE_CLOUDFLARED_")
            || k.starts_with("TUNNEL_")
            || k == "SIM_TUNNEL_REGISTRY"
        {
            c.env_remove(k);
        }
    }
    c.envs(envs.iter().copied());
    c
}

impl Fake {
    /// Quick tunnel to `origin_port`, like postflow's command line.
    fn quick(origin_port: u16, extra: &[&str], envs: &[(&str, &str)]) -> Fake {
        let metrics = free_port();
        let m = format!("127.0.0.1:{metrics}");
        let u = format!("http://127.0.0.1:{origin_port}");
        let mut args = vec![
            "tunnel",
            "--no-autoupdate",
            "--config",
            "/dev/null",
            "--metrics",
            &m,
            "--url",
            &u,
        ];
        args.extend_from_slice(extra);
        Fake::spawn(&args, envs, metrics)
    }

    fn spawn(args: &[&str], envs: &[(&str, &str)], metrics: u16) -> Fake {
        let mut child = command(args, envs)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let l2 = lines.clone();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                l2.lock().unwrap().push(line);
            }
        });
        let stdout_buf = Arc::new(Mutex::new(Vec::new()));
        let mut stdout = child.stdout.take().unwrap();
        let s2 = stdout_buf.clone();
        thread::spawn(move || {
            let mut b = Vec::new();
            let _ = stdout.read_to_end(&mut b);
            s2.lock().unwrap().extend(b);
        });
        Fake {
            child,
            lines,
            stdout: stdout_buf,
            metrics,
        }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    fn wait_line(&self, needle: &str) -> String {
        let end = Instant::now() + T;
        loop {
            if let Some(l) = self.lines().into_iter().find(|l| l.contains(needle)) {
                return l;
            }
            assert!(
                Instant::now() < end,
                "no line containing {needle:?} in:\n{}",
                self.lines().join("\n")
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn count(&self, needle: &str) -> usize {
        self.lines().iter().filter(|l| l.contains(needle)).count()
    }

    fn get(&self, path: &str) -> (u16, String) {
        http_get(self.metrics, path, &[])
            .map(|(s, _, b)| (s, String::from_utf8(b).unwrap()))
            .unwrap()
    }

    fn wait_ready(&self) {
        let end = Instant::now() + T;
        while http_get(self.metrics, "/ready", &[]).map(|r| r.0) != Some(200) {
            assert!(
                Instant::now() < end,
                "never ready:\n{}",
                self.lines().join("\n")
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    #[cfg(unix)]
    fn signal(&self, sig: Sig) {
        let sig = match sig {
            Sig::Term => libc::SIGTERM,
            Sig::Int => libc::SIGINT,
            Sig::Usr1 => libc::SIGUSR1,
        };
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    #[cfg(not(unix))]
    fn signal(&self, sig: Sig) {
        panic!("{sig:?} has no counterpart here; this test must not run on this platform");
    }

    fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let end = Instant::now() + within;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                // Let the reader threads drain the pipes.
                thread::sleep(Duration::from_millis(50));
                return s;
            }
            if Instant::now() > end {
                let _ = self.child.kill();
                panic!(
                    "did not exit within {within:?}:\n{}",
                    self.lines().join("\n")
                );
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn stdout(&self) -> Vec<u8> {
        self.stdout.lock().unwrap().clone()
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Minimal HTTP/1.1 GET; returns status, raw head, body (Content-Length or EOF).
fn http_get(port: u16, path: &str, headers: &[(&str, &str)]) -> Option<(u16, String, Vec<u8>)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(T)).ok()?;
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: example.trycloudflare.com\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, head, raw[split + 4..].to_vec()))
}

fn header(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
    })
}

/// A small origin with Range support; records each request head. A path
/// starting with `/slow/N` waits N ms before answering, `/hang` never answers.
struct Origin {
    port: u16,
    body: Arc<Vec<u8>>,
    heads: Arc<Mutex<Vec<String>>>,
}

fn origin() -> Origin {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let body: Arc<Vec<u8>> = Arc::new((0..1_000_000u32).map(|i| (i * 7 % 251) as u8).collect());
    let heads = Arc::new(Mutex::new(Vec::new()));
    let (b2, h2) = (body.clone(), heads.clone());
    thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let (b, h) = (b2.clone(), h2.clone());
            thread::spawn(move || {
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut head = String::new();
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    head.push_str(&line);
                    if line == "\r\n" {
                        break;
                    }
                }
                h.lock().unwrap().push(head.clone());
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                if path == "/hang" {
                    thread::sleep(Duration::from_secs(60));
                    return;
                }
                if let Some(ms) = path.strip_prefix("/slow/") {
                    thread::sleep(Duration::from_millis(ms.parse().unwrap()));
                }
                let range = header(&head, "range").and_then(|v| {
                    let (a, z) = v.strip_prefix("bytes=")?.split_once('-')?;
                    Some((a.parse::<usize>().ok()?, z.parse::<usize>().ok()?))
                });
                let resp = match range {
                    Some((a, z)) => {
                        let mut r = format!(
                            "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {a}-{z}/{}\r\nContent-Length: {}\r\nAccept-Ranges: bytes\r\n\r\n",
                            b.len(),
                            z - a + 1
                        )
                        .into_bytes();
                        r.extend_from_slice(&b[a..=z]);
                        r
                    }
                    None => {
                        let mut r = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nAccept-Ranges: bytes\r\n\r\n",
                            b.len()
                        )
                        .into_bytes();
                        r.extend_from_slice(&b);
                        r
                    }
                };
                let _ = s.write_all(&resp);
            });
        }
    });
    Origin { port, body, heads }
}

fn url_in(line: &str) -> String {
    let start = line.find("https://").unwrap() + "https://".len();
    line[start..].split_whitespace().next().unwrap().to_string()
}

fn is_console_line(l: &str) -> bool {
    // 2026-08-20T10:00:00Z INF …
    let b = l.as_bytes();
    b.len() > 25
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'Z'
        && ["DBG", "INF", "WRN", "ERR", "FTL"].contains(&&l[21..24])
        && !l.contains('\u{1b}')
}

// ---------------------------------------------------------------- quick mode

#[test]
#[cfg_attr(
    windows,
    ignore = "sends SIGTERM: on Windows a Ctrl-Break to its console group, which Wine cannot deliver"
)]
fn quick_tunnel_prints_box_serves_metrics_and_stops_on_sigterm() {
    let o = origin();
    let mut f = Fake::quick(o.port, &[], &[("FAKE_CLOUDFLARED_READY_DELAY_MS", "1500")]);
    let url_line = f.wait_line(".trycloudflare.com");
    let host = url_in(&url_line);
    let sub = host.strip_suffix(".trycloudflare.com").unwrap();
    assert!((3..=4).contains(&sub.split('-').count()), "{host}");

    // Metrics up (after the box) but not registered yet: 503.
    f.wait_line("Starting metrics server on");
    let (s, body) = f.get("/ready");
    assert_eq!(s, 503, "{body}");
    assert!(body.starts_with("{\"status\":503,\"readyConnections\":0,\"connectorId\":\""));
    f.wait_ready();
    let (_, body) = f.get("/ready");
    let id = f.wait_line("Generated Connector ID: ");
    let id = id.rsplit(' ').next().unwrap();
    assert_eq!(
        body,
        format!("{{\"status\":200,\"readyConnections\":1,\"connectorId\":\"{id}\"}}")
    );
    assert_eq!(
        f.get("/quicktunnel"),
        (200, format!("{{\"hostname\":\"{host}\"}}"))
    );
    assert_eq!(f.get("/healthcheck"), (200, "OK\n".to_string()));
    let (_, m) = f.get("/metrics");
    assert!(m.contains("\ncloudflared_tunnel_ha_connections 1\n"), "{m}");
    assert_eq!(f.get("/nope").0, 404);

    let reg = f.wait_line("Registered tunnel connection");
    assert!(
        reg.contains(" INF Registered tunnel connection connIndex=0 connection=")
            && reg.ends_with(" event=0 ip=198.41.200.63 location=lax01 protocol=quic"),
        "{reg}"
    );

    // Order and shape of the start-up lines.
    let lines = f.lines();
    let pos = |needle: &str| {
        lines
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("missing {needle}"))
    };
    assert!(pos("Thank you for trying Cloudflare Tunnel") < pos("Requesting new quick Tunnel"));
    let top = pos("Your quick Tunnel has been created!") - 1;
    let border = format!("+{}+", "-".repeat(92));
    assert!(
        lines[top].ends_with(&format!(" INF {border}")),
        "{}",
        lines[top]
    );
    assert!(lines[top + 2].ends_with(&format!(
        "|  https://{host}{}  |",
        " ".repeat(88 - 8 - host.len())
    )));
    assert!(lines[top + 3].ends_with(&border));
    assert!(pos("Requesting new quick Tunnel") < top);
    assert!(top < pos("Starting metrics server on"));
    assert!(pos("Generated Connector ID") < pos("Initial protocol quic"));
    assert!(pos("Starting metrics server on") < pos("Registered tunnel connection"));
    assert!(lines.iter().any(|l| l.contains("CONNECTIVITY PRE-CHECKS")));
    assert!(lines.iter().all(|l| is_console_line(l)), "{lines:#?}");

    f.signal(Sig::Term);
    let st = f.wait_exit(Duration::from_secs(5));
    assert_eq!(st.code(), Some(0));
    let lines = f.lines();
    let tail: Vec<&str> = lines.iter().rev().take(6).rev().map(|l| &l[21..]).collect();
    // As measured: a clean shutdown logs two ERR lines.
    assert_eq!(
        tail,
        [
            "INF Initiating graceful shutdown due to signal terminated ...",
            "INF Unregistered tunnel connection connIndex=0 event=0 ip=198.41.200.63",
            "ERR Connection terminated connIndex=0",
            "ERR no more connections active and exiting",
            "INF Tunnel server stopped",
            "INF Metrics server stopped",
        ]
    );
    assert!(f.stdout().is_empty(), "stdout must stay empty");
}

#[test]
#[cfg_attr(
    windows,
    ignore = "sends SIGTERM: on Windows a Ctrl-Break to its console group, which Wine cannot deliver"
)]
fn edge_forwards_bytes_and_ranges_exactly_and_registry_follows_lifetime() {
    let o = origin();
    let reg = temp_dir("reg");
    let regs = reg.to_str().unwrap();
    let mut f = Fake::quick(
        o.port,
        &[],
        &[
            ("SIM_TUNNEL_REGISTRY", regs),
            ("FAKE_CLOUDFLARED_READY_DELAY_MS", "50"),
        ],
    );
    let host = url_in(&f.wait_line("trycloudflare.com  "));
    f.wait_ready();
    let file = reg.join(&host);
    let content = std::fs::read_to_string(&file).expect("registry file");
    assert!(
        content.starts_with("127.0.0.1:") && content.ends_with('\n'),
        "{content:?}"
    );
    let edge: u16 = content
        .trim()
        .strip_prefix("127.0.0.1:")
        .unwrap()
        .parse()
        .unwrap();

    let (s, head, body) =
        http_get(edge, "/f/tok/clip.mov", &[("Range", "bytes=1000-66535")]).unwrap();
    assert_eq!(s, 206);
    assert_eq!(
        header(&head, "content-range").as_deref(),
        Some("bytes 1000-66535/1000000")
    );
    assert_eq!(body, o.body[1000..=66535]);
    let seen = o.heads.lock().unwrap().last().unwrap().clone();
    assert!(
        seen.starts_with("GET /f/tok/clip.mov HTTP/1.1\r\n"),
        "{seen}"
    );
    assert!(seen.contains("\r\nRange: bytes=1000-66535\r\n"), "{seen}");

    let (s, _, body) = http_get(edge, "/f/tok/clip.mov", &[]).unwrap();
    assert_eq!(s, 200);
    assert!(body == *o.body, "full body differs");
    let (_, m) = f.get("/metrics");
    assert!(m.contains("cloudflared_tunnel_total_requests 2"), "{m}");

    f.signal(Sig::Term);
    assert_eq!(f.wait_exit(Duration::from_secs(5)).code(), Some(0));
    assert!(!file.exists(), "registry file must be removed on exit");
    assert!(
        TcpStream::connect(("127.0.0.1", edge)).is_err(),
        "edge still open"
    );
}

#[test]
fn refused_origin_gives_502_and_the_origin_error_line() {
    let dead = free_port();
    let reg = temp_dir("reg502");
    let f = Fake::quick(
        dead,
        &[],
        &[
            ("SIM_TUNNEL_REGISTRY", reg.to_str().unwrap()),
            ("FAKE_CLOUDFLARED_READY_DELAY_MS", "0"),
        ],
    );
    let host = url_in(&f.wait_line("trycloudflare.com  "));
    f.wait_ready();
    let edge: u16 = std::fs::read_to_string(reg.join(&host)).unwrap().trim()[10..]
        .parse()
        .unwrap();
    let (s, _, _) = http_get(edge, "/x", &[]).unwrap();
    assert_eq!(s, 502);
    let l = f.wait_line("Unable to reach the origin service");
    assert!(
        l.contains(&format!(
            " ERR  error=\"Unable to reach the origin service. The service may be down or it may not be responding to traffic from cloudflared: dial tcp 127.0.0.1:{dead}: connect: connection refused\""
        )),
        "{l}"
    );
    assert!(
        l.contains(&format!("originService=http://127.0.0.1:{dead}")),
        "{l}"
    );
}

// ---------------------------------------------------------------- failure modes

fn run_to_exit(envs: &[(&str, &str)]) -> (Fake, ExitStatus) {
    let mut f = Fake::quick(free_port(), &[], envs);
    let st = f.wait_exit(T);
    (f, st)
}

#[test]
fn no_network_exits_1_before_starting_anything() {
    let (f, st) = run_to_exit(&[("FAKE_CLOUDFLARED_MODE", "no-network")]);
    assert_eq!(st.code(), Some(1));
    let lines = f.lines();
    assert_eq!(
        lines.last().unwrap(),
        "failed to request quick Tunnel: Post \"https://api.trycloudflare.com/tunnel\": dial tcp: lookup api.trycloudflare.com: no such host"
    );
    assert!(!lines
        .iter()
        .any(|l| l.contains("Starting metrics server") || l.contains("+---")));
    assert!(TcpStream::connect(("127.0.0.1", f.metrics)).is_err());
}

#[test]
fn rate_limit_exits_1_with_the_429_line() {
    let (f, st) = run_to_exit(&[("FAKE_CLOUDFLARED_MODE", "rate-limit")]);
    assert_eq!(st.code(), Some(1));
    let lines = f.lines();
    let n = lines.len();
    assert!(lines[n - 2].ends_with(" ERR Error unmarshaling QuickTunnel response: error code: 1015 error=\"invalid character 'e' looking for beginning of value\" status_code=\"429 Too Many Requests\""), "{}", lines[n - 2]);
    assert_eq!(
        lines[n - 1],
        "failed to unmarshal quick Tunnel: invalid character 'e' looking for beginning of value"
    );
}

#[test]
#[cfg_attr(
    windows,
    ignore = "sends SIGTERM: on Windows a Ctrl-Break to its console group, which Wine cannot deliver"
)]
fn edge_unreachable_retries_with_growing_backoff_and_never_gets_ready() {
    let mut f = Fake::quick(
        free_port(),
        &[],
        &[
            ("FAKE_CLOUDFLARED_MODE", "edge-unreachable"),
            ("FAKE_CLOUDFLARED_TIME_SCALE", "0.01"),
            ("FAKE_CLOUDFLARED_READY_DELAY_MS", "0"),
        ],
    );
    f.wait_line("Retrying connection in up to 16s");
    assert!(f.count(" ERR Failed to dial a quic connection error=\"failed to dial to edge with quic: timeout: no recent network activity\" connIndex=0 event=0 ip=198.41.200.63") >= 4);
    for d in ["2s", "4s", "8s"] {
        f.wait_line(&format!(
            " INF Retrying connection in up to {d} connIndex=0 event=0 ip=198.41.200.63"
        ));
    }
    f.wait_line("+---");
    assert_eq!(f.get("/ready").0, 503);
    assert_eq!(f.count("Registered tunnel connection"), 0);
    assert!(
        f.child.try_wait().unwrap().is_none(),
        "must not exit on its own"
    );
    f.signal(Sig::Term);
    assert_eq!(f.wait_exit(Duration::from_secs(5)).code(), Some(0));
    assert_eq!(f.count("Unregistered"), 0);
}

#[test]
fn crash_after_exits_1_and_unregisters_the_hostname() {
    let reg = temp_dir("crash");
    let (f, st) = run_to_exit(&[
        ("FAKE_CLOUDFLARED_MODE", "crash-after=0.3"),
        ("FAKE_CLOUDFLARED_READY_DELAY_MS", "0"),
        ("SIM_TUNNEL_REGISTRY", reg.to_str().unwrap()),
    ]);
    assert_eq!(st.code(), Some(1));
    f.wait_line("Registered tunnel connection");
    let l = f.wait_line("Connection terminated");
    assert!(
        l.contains(" ERR Connection terminated error=\"") && l.ends_with("\" connIndex=0"),
        "{l}"
    );
    assert_eq!(
        std::fs::read_dir(&reg).unwrap().count(),
        0,
        "registry not cleaned"
    );
}

#[test]
fn update_after_exits_11() {
    let (f, st) = run_to_exit(&[
        ("FAKE_CLOUDFLARED_MODE", "update-after=0.2"),
        ("FAKE_CLOUDFLARED_READY_DELAY_MS", "0"),
    ]);
    assert_eq!(st.code(), Some(11));
    assert!(f
        .lines()
        .last()
        .unwrap()
        .ends_with(" INF cloudflared has been updated to version 2026.9.0"));
}

#[test]
fn no_quicktunnel_endpoint_still_prints_the_url() {
    let f = Fake::quick(
        free_port(),
        &[],
        &[
            ("FAKE_CLOUDFLARED_MODE", "no-quicktunnel-endpoint"),
            ("FAKE_CLOUDFLARED_READY_DELAY_MS", "0"),
        ],
    );
    f.wait_line("https://");
    f.wait_ready();
    assert_eq!(f.get("/quicktunnel").0, 404);
}

#[test]
fn log_flood_keeps_writing() {
    let f = Fake::quick(
        free_port(),
        &[],
        &[
            ("FAKE_CLOUDFLARED_MODE", "log-flood"),
            ("FAKE_CLOUDFLARED_READY_DELAY_MS", "0"),
        ],
    );
    f.wait_line("/flood/1 ");
    let a = f.count("/flood/");
    // Keeps writing: 500 lines more come (a flood writes thousands a second, a writer blocked
    // on a full pipe none), however busy the machine.
    let start = Instant::now();
    loop {
        let b = f.count("/flood/");
        if b > a + 500 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the flood stopped: {a} -> {b} lines in 30 s"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn log_flood_blocks_when_stderr_is_not_drained() {
    // Nobody reads stderr: the pipe fills (64 KiB) and the writer blocks, so
    // the process stays alive and the metrics server still answers.
    let metrics = free_port();
    let m = format!("127.0.0.1:{metrics}");
    let mut child = command(
        &["tunnel", "--metrics", &m, "--url", "http://127.0.0.1:9"],
        &[
            ("FAKE_CLOUDFLARED_MODE", "log-flood"),
            ("FAKE_CLOUDFLARED_READY_DELAY_MS", "0"),
        ],
    )
    .stderr(Stdio::piped())
    .stdout(Stdio::null())
    .spawn()
    .unwrap();
    let end = Instant::now() + T;
    while http_get(metrics, "/ready", &[]).map(|r| r.0) != Some(200) {
        assert!(Instant::now() < end);
        thread::sleep(Duration::from_millis(20));
    }
    thread::sleep(Duration::from_millis(300));
    assert!(child.try_wait().unwrap().is_none());
    // Drain a little: plenty is waiting.
    let mut buf = vec![0u8; 60_000];
    child.stderr.as_mut().unwrap().read_exact(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf).contains("/flood/"));
    let _ = child.kill();
    let _ = child.wait();
}

// ---------------------------------------------------------------- signals

#[test]
#[cfg_attr(
    windows,
    ignore = "sends SIGINT: on Windows a Ctrl-Break to its console group, which Wine cannot deliver"
)]
fn sigint_says_interrupt_and_exits_0() {
    let mut f = Fake::quick(
        free_port(),
        &[],
        &[("FAKE_CLOUDFLARED_READY_DELAY_MS", "0")],
    );
    f.wait_ready();
    let t = Instant::now();
    f.signal(Sig::Int);
    assert_eq!(f.wait_exit(Duration::from_secs(5)).code(), Some(0));
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "idle shutdown should be quick"
    );
    f.wait_line(" INF Initiating graceful shutdown due to signal interrupt ...");
}

#[test]
#[cfg_attr(
    windows,
    ignore = "sends SIGTERM: on Windows a Ctrl-Break to its console group, which Wine cannot deliver"
)]
fn sigterm_waits_for_an_in_flight_download_then_exits_0() {
    let o = origin();
    let reg = temp_dir("inflight");
    let mut f = Fake::quick(
        o.port,
        &[],
        &[
            ("SIM_TUNNEL_REGISTRY", reg.to_str().unwrap()),
            ("FAKE_CLOUDFLARED_READY_DELAY_MS", "0"),
        ],
    );
    let host = url_in(&f.wait_line("trycloudflare.com  "));
    f.wait_ready();
    let edge: u16 = std::fs::read_to_string(reg.join(&host)).unwrap().trim()[10..]
        .parse()
        .unwrap();
    let dl = thread::spawn(move || http_get(edge, "/slow/1500", &[]));
    thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    f.signal(Sig::Term);
    // /ready flips to 503 straight away.
    let end = Instant::now() + Duration::from_secs(2);
    while f.get("/ready").0 != 503 {
        assert!(Instant::now() < end, "/ready still 200 during shutdown");
        thread::sleep(Duration::from_millis(10));
    }
    assert!(
        TcpStream::connect(("127.0.0.1", edge)).is_err(),
        "edge must stop accepting"
    );
    assert_eq!(f.wait_exit(Duration::from_secs(10)).code(), Some(0));
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "exited before the download finished"
    );
    let (s, _, body) = dl.join().unwrap().expect("download cut short");
    assert_eq!(s, 200);
    assert!(body == *o.body);
}

#[test]
#[cfg_attr(
    windows,
    ignore = "sends SIGTERM: on Windows a Ctrl-Break to its console group, which Wine cannot deliver"
)]
fn grace_period_bounds_the_wait_for_a_hung_request() {
    let o = origin();
    let reg = temp_dir("grace");
    let mut f = Fake::quick(
        o.port,
        &["--grace-period", "1s"],
        &[
            ("SIM_TUNNEL_REGISTRY", reg.to_str().unwrap()),
            ("FAKE_CLOUDFLARED_READY_DELAY_MS", "0"),
        ],
    );
    let host = url_in(&f.wait_line("trycloudflare.com  "));
    f.wait_ready();
    let edge: u16 = std::fs::read_to_string(reg.join(&host)).unwrap().trim()[10..]
        .parse()
        .unwrap();
    let _dl = thread::spawn(move || http_get(edge, "/hang", &[]));
    thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    f.signal(Sig::Term);
    assert_eq!(f.wait_exit(Duration::from_secs(10)).code(), Some(0));
    let el = t.elapsed();
    assert!(
        el >= Duration::from_millis(900) && el < Duration::from_secs(4),
        "{el:?}"
    );
}

#[test]
#[cfg_attr(
    windows,
    ignore = "sends SIGTERM: on Windows a Ctrl-Break to its console group, which Wine cannot deliver"
)]
fn slow_shutdown_is_capped_by_grace_and_a_second_signal_kills() {
    // slow-shutdown=1 with the default grace: takes about 1 s, exit 0.
    let mut f = Fake::quick(
        free_port(),
        &[],
        &[
            ("FAKE_CLOUDFLARED_MODE", "slow-shutdown=1"),
            ("FAKE_CLOUDFLARED_READY_DELAY_MS", "0"),
        ],
    );
    f.wait_ready();
    let t = Instant::now();
    f.signal(Sig::Term);
    assert_eq!(f.wait_exit(Duration::from_secs(10)).code(), Some(0));
    assert!(
        t.elapsed() >= Duration::from_millis(950),
        "{:?}",
        t.elapsed()
    );

    // slow-shutdown=60 but --grace-period 500ms: capped.
    let mut f = Fake::quick(
        free_port(),
        &["--grace-period=500ms"],
        &[
            ("FAKE_CLOUDFLARED_MODE", "slow-shutdown=60"),
            ("FAKE_CLOUDFLARED_READY_DELAY_MS", "0"),
        ],
    );
    f.wait_ready();
    let t = Instant::now();
    f.signal(Sig::Term);
    assert_eq!(f.wait_exit(Duration::from_secs(10)).code(), Some(0));
    assert!(t.elapsed() < Duration::from_secs(3));

    // Second SIGTERM during a slow shutdown: death by signal, no cleanup.
    let mut f = Fake::quick(
        free_port(),
        &[],
        &[
            ("FAKE_CLOUDFLARED_MODE", "slow-shutdown=20"),
            ("FAKE_CLOUDFLARED_READY_DELAY_MS", "0"),
        ],
    );
    f.wait_ready();
    f.signal(Sig::Term);
    f.wait_line("Initiating graceful shutdown");
    let t = Instant::now();
    f.signal(Sig::Term);
    let st = f.wait_exit(Duration::from_secs(5));
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(st.signal(), Some(libc::SIGTERM), "{st:?}");
    }
    #[cfg(not(unix))]
    let _ = st;
    assert!(t.elapsed() < Duration::from_secs(1));
    assert_eq!(f.count("Tunnel server stopped"), 0);
}

// ---------------------------------------------------------------- named mode

fn named(extra_before_run: &[&str], after_run: &[&str], envs: &[(&str, &str)]) -> Fake {
    let metrics = free_port();
    let m = format!("127.0.0.1:{metrics}");
    let mut args = vec!["tunnel", "--no-autoupdate", "--config", "/dev/null"];
    args.extend_from_slice(extra_before_run);
    args.push("--metrics");
    args.push(&m);
    args.push("run");
    args.extend_from_slice(after_run);
    Fake::spawn(&args, envs, metrics)
}

#[test]
#[cfg_attr(
    windows,
    ignore = "sends SIGTERM: on Windows a Ctrl-Break to its console group, which Wine cannot deliver"
)]
fn named_tunnel_reads_the_token_file_and_registers_four_connections() {
    let o = origin();
    let dir = temp_dir("named");
    let token_path = dir.join("tunnel.token");
    let token =
        sim::cloudflared::make_token("acc", "6ff42ae2-765d-4adf-8112-31c55c1551ef", "c2VjcmV0");
    std::fs::write(&token_path, format!("{token}\n")).unwrap();
    let reg = dir.join("reg");
    let logs = dir.join("logs");
    let origin_url = format!("http://127.0.0.1:{}", o.port);
    let mut f = named(
        &[],
        &["--token-file", token_path.to_str().unwrap()],
        &[
            ("FAKE_CLOUDFLARED_READY_DELAY_MS", "0"),
            ("FAKE_CLOUDFLARED_HOSTNAME", "files.example.com"),
            ("FAKE_CLOUDFLARED_ORIGIN", &origin_url),
            ("SIM_TUNNEL_REGISTRY", reg.to_str().unwrap()),
            ("FAKE_CLOUDFLARED_LOG_DIR", logs.to_str().unwrap()),
        ],
    );
    f.wait_line("Starting tunnel tunnelID=6ff42ae2-765d-4adf-8112-31c55c1551ef");
    f.wait_line("Registered tunnel connection connIndex=3 ");
    for i in 0..4 {
        assert_eq!(
            f.count(&format!("Registered tunnel connection connIndex={i} ")),
            1
        );
    }
    assert!(!f
        .lines()
        .iter()
        .any(|l| l.contains("trycloudflare") || l.contains(&token)));
    f.wait_line("Updated to new configuration config=");
    let (s, body) = f.get("/ready");
    assert_eq!(s, 200);
    assert!(
        body.starts_with("{\"status\":200,\"readyConnections\":4,"),
        "{body}"
    );
    assert_eq!(
        f.get("/quicktunnel"),
        (200, "{\"hostname\":\"\"}".to_string())
    );
    let edge: u16 = std::fs::read_to_string(reg.join("files.example.com"))
        .unwrap()
        .trim()[10..]
        .parse()
        .unwrap();
    let (s, _, body) = http_get(edge, "/f/x", &[("Range", "bytes=0-9")]).unwrap();
    assert_eq!((s, body.as_slice()), (206, &o.body[..10]));

    let starts = std::fs::read_to_string(logs.join("starts.log")).unwrap();
    assert_eq!(starts.lines().count(), 1);
    let line = starts.lines().next().unwrap();
    assert!(line.starts_with(&format!("{} [", f.child.id())), "{line}");
    assert!(line.contains("\"run\",\"--token-file\""), "{line}");
    assert!(!line.contains(&token), "token leaked into argv");

    f.signal(Sig::Term);
    assert_eq!(f.wait_exit(Duration::from_secs(5)).code(), Some(0));
    assert_eq!(f.count("Unregistered tunnel connection"), 4);
    assert!(!reg.join("files.example.com").exists());
}

#[test]
#[cfg_attr(
    windows,
    ignore = "sends SIGTERM: on Windows a Ctrl-Break to its console group, which Wine cannot deliver"
)]
fn named_flags_may_come_before_run_and_token_problems_are_usage_errors() {
    let dir = temp_dir("named-errs");
    let good = dir.join("good");
    std::fs::write(
        &good,
        sim::cloudflared::make_token("a", "0c39bcfb-0c96-4858-9025-d54131e062ec", "cw=="),
    )
    .unwrap();
    let mut f = named(
        &["--token-file", good.to_str().unwrap()],
        &[],
        &[("FAKE_CLOUDFLARED_READY_DELAY_MS", "0")],
    );
    f.wait_ready();
    f.signal(Sig::Term);
    assert_eq!(f.wait_exit(T).code(), Some(0));

    let missing = dir.join("missing");
    let mut f = named(&[], &["--token-file", missing.to_str().unwrap()], &[]);
    assert_eq!(f.wait_exit(T).code(), Some(255));
    assert_eq!(
        f.lines(),
        [
            format!(
                "Failed to read token file: open {}: no such file or directory",
                missing.display()
            ),
            "See 'cloudflared tunnel run --help'.".to_string()
        ]
    );

    let empty = dir.join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let mut f = named(&[], &["--token-file", empty.to_str().unwrap()], &[]);
    assert_eq!(f.wait_exit(T).code(), Some(255));
    f.wait_line("\"cloudflared tunnel run\" requires the ID or name of the tunnel to run");

    let bad = dir.join("bad");
    std::fs::write(&bad, "dummy-token").unwrap();
    let mut f = named(&[], &["--token-file", bad.to_str().unwrap()], &[]);
    assert_eq!(f.wait_exit(T).code(), Some(255));
    f.wait_line("Provided Tunnel token is not valid.");

    let f = named(
        &[],
        &["--token-file", bad.to_str().unwrap()],
        &[
            ("FAKE_CLOUDFLARED_LAX_TOKEN", "1"),
            ("FAKE_CLOUDFLARED_READY_DELAY_MS", "0"),
        ],
    );
    f.wait_ready();
}

// ---------------------------------------------------------------- cli

#[test]
fn version_goes_to_stdout_and_unknown_flags_fail() {
    for args in [&["--version"][..], &["version"][..]] {
        let out = command(args, &[]).output().unwrap();
        assert_eq!(out.status.code(), Some(0));
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            "cloudflared version 2026.8.2 (built 2026-08-20-1000 UTC)\n"
        );
        assert!(out.stderr.is_empty());
    }
    let out = command(
        &["tunnel", "--bogus-flag", "--url", "http://127.0.0.1:1"],
        &[],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "Incorrect Usage: flag provided but not defined: -bogus-flag\n"
    );
    let out = command(
        &[
            "tunnel",
            "--grace-period",
            "5m",
            "--url",
            "http://127.0.0.1:1",
        ],
        &[],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8(out.stderr).unwrap(),
        "grace-period must be equal or less than 3m0s\n"
    );
}

#[test]
fn starts_log_counts_restarts() {
    let logs = temp_dir("starts");
    let l = logs.to_str().unwrap();
    for _ in 0..3 {
        let mut f = Fake::quick(
            free_port(),
            &[],
            &[
                ("FAKE_CLOUDFLARED_LOG_DIR", l),
                ("FAKE_CLOUDFLARED_MODE", "rate-limit"),
            ],
        );
        assert_eq!(f.wait_exit(T).code(), Some(1));
    }
    let s = std::fs::read_to_string(Path::new(&logs).join("starts.log")).unwrap();
    assert_eq!(s.lines().count(), 3);
    for line in s.lines() {
        let (pid, argv) = line.split_once(' ').unwrap();
        pid.parse::<u32>().unwrap();
        assert!(
            argv.starts_with('[') && argv.contains("\"tunnel\",\"--no-autoupdate\""),
            "{line}"
        );
    }
}

// ---------------------------------------------------------------- measured on the real binary

/// The edge port the registry names for `host`.
fn edge_port(reg: &Path, host: &str) -> u16 {
    std::fs::read_to_string(reg.join(host)).unwrap().trim()[10..]
        .parse()
        .unwrap()
}

/// Undoes `Transfer-Encoding: chunked`.
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let eol = raw
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size line");
        let size = usize::from_str_radix(std::str::from_utf8(&raw[..eol]).unwrap(), 16).unwrap();
        raw = &raw[eol + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&raw[..size]);
        assert_eq!(&raw[size..size + 2], b"\r\n");
        raw = &raw[size + 2..];
    }
}

impl Fake {
    fn wait_count(&self, needle: &str, n: usize) {
        let end = Instant::now() + T;
        while self.count(needle) < n {
            assert!(
                Instant::now() < end,
                "fewer than {n} lines containing {needle:?} in:\n{}",
                self.lines().join("\n")
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// The console lines without their timestamps.
    fn bodies(&self) -> Vec<String> {
        self.lines()
            .iter()
            .filter(|l| is_console_line(l))
            .map(|l| l[21..].to_string())
            .collect()
    }
}

/// An origin like the file server: HTTP/1.1 keep-alive, exact `Content-Length`, ranges.
/// Counts the TCP connections it accepted and records every request head. `/gzip` answers
/// gzip-encoded bytes when the request accepts gzip (what an origin must never do for a file).
struct KeepAliveOrigin {
    port: u16,
    body: Arc<Vec<u8>>,
    heads: Arc<Mutex<Vec<String>>>,
    accepted: Arc<AtomicUsize>,
}

fn keepalive_origin() -> KeepAliveOrigin {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let body: Arc<Vec<u8>> = Arc::new((0..200_000u32).map(|i| (i * 13 % 251) as u8).collect());
    let heads = Arc::new(Mutex::new(Vec::new()));
    let accepted = Arc::new(AtomicUsize::new(0));
    let (b2, h2, a2) = (body.clone(), heads.clone(), accepted.clone());
    thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            a2.fetch_add(1, Ordering::SeqCst);
            let (b, h) = (b2.clone(), h2.clone());
            thread::spawn(move || {
                let mut r = BufReader::new(s.try_clone().unwrap());
                loop {
                    let mut head = String::new();
                    loop {
                        let mut line = String::new();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        head.push_str(&line);
                        if line == "\r\n" {
                            break;
                        }
                    }
                    h.lock().unwrap().push(head.clone());
                    let mut words = head.split_whitespace();
                    let (method, path) = (words.next().unwrap(), words.next().unwrap());
                    let gzip = path == "/gzip"
                        && header(&head, "accept-encoding").is_some_and(|v| v.contains("gzip"));
                    let range = header(&head, "range").and_then(|v| {
                        let (a, z) = v.strip_prefix("bytes=")?.split_once('-')?;
                        Some((a.parse::<usize>().ok()?, z.parse::<usize>().ok()?))
                    });
                    let (status, extra, payload) = if gzip {
                        let mut enc = flate2::write::GzEncoder::new(
                            Vec::new(),
                            flate2::Compression::default(),
                        );
                        enc.write_all(&b).unwrap();
                        (
                            "200 OK",
                            "Content-Encoding: gzip\r\n".to_string(),
                            enc.finish().unwrap(),
                        )
                    } else if let Some((a, z)) = range {
                        (
                            "206 Partial Content",
                            format!("Content-Range: bytes {a}-{z}/{}\r\n", b.len()),
                            b[a..=z].to_vec(),
                        )
                    } else {
                        ("200 OK", String::new(), b.to_vec())
                    };
                    let resp = format!(
                        "HTTP/1.1 {status}\r\n{extra}Content-Length: {}\r\nAccept-Ranges: bytes\r\n\r\n",
                        payload.len()
                    );
                    if s.write_all(resp.as_bytes()).is_err() {
                        return;
                    }
                    if method != "HEAD" && s.write_all(&payload).is_err() {
                        return;
                    }
                }
            });
        }
    });
    KeepAliveOrigin {
        port,
        body,
        heads,
        accepted,
    }
}

#[test]
fn the_metrics_port_opens_late_then_ready_says_503_until_registered() {
    let t0 = Instant::now();
    let f = Fake::quick(
        free_port(),
        &[],
        &[("FAKE_CLOUDFLARED_READY_DELAY_MS", "1000")],
    );
    let end = t0 + T;
    while TcpStream::connect(("127.0.0.1", f.metrics)).is_err() {
        assert!(Instant::now() < end, "metrics port never opened");
        thread::sleep(Duration::from_millis(2));
    }
    assert!(
        t0.elapsed() >= Duration::from_millis(60),
        "measured: the metrics port refuses connections for about 60 ms"
    );
    let (s, body) = f.get("/ready");
    assert_eq!(s, 503);
    let id = f.wait_line("Generated Connector ID: ");
    let id = id.rsplit(' ').next().unwrap();
    assert_eq!(
        body,
        format!("{{\"status\":503,\"readyConnections\":0,\"connectorId\":\"{id}\"}}")
    );
    // A quick tunnel has one connection and QUIC unless told, as its settings show.
    let settings = f.wait_line("Settings: map[");
    assert!(
        settings.contains("ha-connections:1") && settings.contains("protocol:quic"),
        "{settings}"
    );
    f.wait_ready();
}

#[test]
fn the_origin_sees_what_cloudflared_adds_and_one_kept_alive_connection() {
    let o = keepalive_origin();
    let reg = temp_dir("headers");
    let f = Fake::quick(
        o.port,
        &[],
        &[
            ("SIM_TUNNEL_REGISTRY", reg.to_str().unwrap()),
            ("FAKE_CLOUDFLARED_READY_DELAY_MS", "0"),
        ],
    );
    let host = url_in(&f.wait_line("trycloudflare.com  "));
    f.wait_ready();
    let edge = edge_port(&reg, &host);
    let connector = f.wait_line("Generated Connector ID: ");
    let connector = connector.rsplit(' ').next().unwrap();

    // Three callers, one after another, each on its own connection (and each saying
    // `Connection: close`).
    let (s, head, body) = http_get(edge, "/f/a", &[]).unwrap();
    assert_eq!(s, 200);
    assert!(body == *o.body);
    assert_eq!(header(&head, "content-length"), Some("200000".into()));
    let (s, _, body) = http_get(edge, "/f/a", &[("Range", "bytes=0-99")]).unwrap();
    assert_eq!((s, body.as_slice()), (206, &o.body[..100]));
    let (s, _, _) = http_get(edge, "/f/a", &[("Accept-Encoding", "identity")]).unwrap();
    assert_eq!(s, 200);

    let heads = o.heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 3, "{heads:?}");
    for h in &heads {
        assert_eq!(
            header(h, "cf-warp-tag-id").as_deref(),
            Some(connector),
            "{h}"
        );
        assert_eq!(
            header(h, "connection").as_deref(),
            Some("keep-alive"),
            "{h}"
        );
        assert_eq!(
            header(h, "host").as_deref(),
            Some("example.trycloudflare.com")
        );
    }
    // Go asks for gzip only when the caller said nothing about encodings or ranges.
    assert_eq!(
        header(&heads[0], "accept-encoding").as_deref(),
        Some("gzip")
    );
    assert_eq!(header(&heads[1], "accept-encoding"), None);
    assert_eq!(
        header(&heads[2], "accept-encoding").as_deref(),
        Some("identity")
    );
    assert_eq!(
        o.accepted.load(Ordering::SeqCst),
        1,
        "cloudflared reuses one kept-alive origin connection"
    );
}

#[test]
fn a_gzip_answer_to_the_gzip_cloudflared_asked_for_is_decompressed_on_the_way_back() {
    let o = keepalive_origin();
    let reg = temp_dir("gzip");
    let f = Fake::quick(
        o.port,
        &[],
        &[
            ("SIM_TUNNEL_REGISTRY", reg.to_str().unwrap()),
            ("FAKE_CLOUDFLARED_READY_DELAY_MS", "0"),
        ],
    );
    let host = url_in(&f.wait_line("trycloudflare.com  "));
    f.wait_ready();
    let edge = edge_port(&reg, &host);

    let (s, head, raw) = http_get(edge, "/gzip", &[]).unwrap();
    assert_eq!(s, 200);
    assert_eq!(header(&head, "content-encoding"), None, "{head}");
    assert_eq!(header(&head, "content-length"), None, "{head}");
    assert_eq!(
        header(&head, "transfer-encoding").as_deref(),
        Some("chunked")
    );
    assert!(dechunk(&raw) == *o.body, "decompressed bytes differ");

    // A caller that asked for gzip itself gets it as the origin sent it.
    let (s, head, raw) = http_get(edge, "/gzip", &[("Accept-Encoding", "gzip")]).unwrap();
    assert_eq!(s, 200);
    assert_eq!(header(&head, "content-encoding").as_deref(), Some("gzip"));
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(raw.as_slice())
        .read_to_end(&mut plain)
        .unwrap();
    assert!(plain == *o.body);
}

#[test]
#[cfg_attr(
    windows,
    ignore = "sends SIGUSR1 (an edge drop), which has no Windows counterpart"
)]
fn an_edge_drop_cuts_what_is_in_flight_answers_530_and_comes_back_with_the_same_hostname() {
    let o = origin();
    let reg = temp_dir("drop");
    let f = Fake::quick(
        o.port,
        &[],
        &[
            ("SIM_TUNNEL_REGISTRY", reg.to_str().unwrap()),
            ("FAKE_CLOUDFLARED_READY_DELAY_MS", "0"),
            // 1 MB at 200 kB/s: five seconds of transfer to cut into.
            ("FAKE_CLOUDFLARED_RATE", "200000"),
            ("FAKE_CLOUDFLARED_RECONNECT", "3"),
        ],
    );
    let host = url_in(&f.wait_line("trycloudflare.com  "));
    f.wait_ready();
    let edge = edge_port(&reg, &host);
    let registered = std::fs::read_to_string(reg.join(&host)).unwrap();
    let download = thread::spawn(move || http_get(edge, "/f/big", &[]));
    thread::sleep(Duration::from_millis(500));

    f.signal(Sig::Usr1);
    let lost = f.wait_line("failed to accept incoming stream requests");
    assert!(
        lost.ends_with(" ERR failed to accept incoming stream requests error=\"failed to accept QUIC stream: Application error 0x0 (remote)\" connIndex=0 event=0 ip=198.41.200.63"),
        "{lost}"
    );
    let (s, body) = f.get("/ready");
    assert_eq!(s, 503, "{body}");
    assert!(body.starts_with("{\"status\":503,\"readyConnections\":0,"));
    let (s, _, body) = http_get(edge, "/f/x", &[]).unwrap();
    assert_eq!((s, body.as_slice()), (530, &b"error code: 1033"[..]));
    // None: cut before a whole head came back.
    if let Some((_, _, body)) = download.join().unwrap() {
        assert!(body.len() < o.body.len(), "the transfer was not cut");
    }
    assert_eq!(
        std::fs::read_to_string(reg.join(&host)).unwrap(),
        registered,
        "the hostname stays registered through a drop"
    );

    f.wait_count("Registered tunnel connection", 2);
    f.wait_ready();
    let (s, _, body) = http_get(edge, "/f/x", &[("Range", "bytes=10-19")]).unwrap();
    assert_eq!((s, body.as_slice()), (206, &o.body[10..20]));
    assert_eq!(
        f.get("/quicktunnel").1,
        format!("{{\"hostname\":\"{host}\"}}")
    );
    assert_eq!(
        f.count("Lost connection with the edge"),
        0,
        "that is HTTP/2's line"
    );
}

#[test]
#[cfg_attr(
    windows,
    ignore = "sends SIGUSR1 (an edge drop), which has no Windows counterpart"
)]
fn over_http2_a_drop_logs_what_the_real_one_logs_and_the_reconnect_only_registers() {
    let f = Fake::quick(
        free_port(),
        &["--protocol", "http2"],
        &[
            ("FAKE_CLOUDFLARED_READY_DELAY_MS", "0"),
            ("FAKE_CLOUDFLARED_RECONNECT", "0.5"),
        ],
    );
    f.wait_ready();
    f.signal(Sig::Usr1);
    f.wait_count("Registered tunnel connection", 2);
    let lines = f.bodies();
    let lost = lines
        .iter()
        .position(|l| l.starts_with("INF Lost connection with the edge"))
        .unwrap();
    assert_eq!(
        lines[lost..lost + 5],
        [
            "INF Lost connection with the edge connIndex=0",
            "WRN Serve tunnel error error=\"connection with edge closed\" connIndex=0 event=0 ip=198.41.200.63",
            "INF Retrying connection in up to 1s connIndex=0 event=0 ip=198.41.200.63",
            "ERR failed to serve incoming request error=\"Error shutting down control stream: context canceled\"",
            "ERR Connection terminated error=\"connection with edge closed\" connIndex=0",
        ]
    );
    // Nothing is logged while it waits; then only the new registration.
    assert!(
        lines[lost + 5].starts_with("INF Registered tunnel connection connIndex=0 connection=")
            && lines[lost + 5].ends_with(" protocol=http2"),
        "{}",
        lines[lost + 5]
    );
    f.wait_ready();
}

#[test]
#[cfg_attr(
    windows,
    ignore = "sends SIGUSR1 (an edge drop), which has no Windows counterpart"
)]
fn a_refused_reregistration_is_logged_and_the_tunnel_comes_back_later() {
    let f = Fake::quick(
        free_port(),
        &[],
        &[
            ("FAKE_CLOUDFLARED_READY_DELAY_MS", "0"),
            ("FAKE_CLOUDFLARED_RECONNECT", "refused"),
            // 23 to 83 s measured; 0.46 to 1.66 s here.
            ("FAKE_CLOUDFLARED_TIME_SCALE", "0.02"),
        ],
    );
    f.wait_ready();
    f.signal(Sig::Usr1);
    let refused = f.wait_line("Register tunnel error from server side");
    assert!(
        refused.contains(" ERR Register tunnel error from server side error=\""),
        "{refused}"
    );
    f.wait_count("Registered tunnel connection", 2);
    f.wait_ready();
}

#[test]
fn a_refused_first_registration_exits_1() {
    let (f, st) = run_to_exit(&[
        ("FAKE_CLOUDFLARED_MODE", "registration-refused"),
        ("FAKE_CLOUDFLARED_READY_DELAY_MS", "0"),
    ]);
    assert_eq!(st.code(), Some(1));
    f.wait_line(" ERR Register tunnel error from server side error=");
    f.wait_line(" ERR initial tunnel connection failed error=");
    assert_eq!(f.count("Registered tunnel connection"), 0);
}

#[test]
fn a_tunnel_logfile_from_the_environment_is_honoured_as_the_real_one_does() {
    // Why postflow gives cloudflared a clean environment: these change what it does.
    let dir = temp_dir("logfile");
    let file = dir.join("cf.log");
    let f = Fake::quick(
        free_port(),
        &[],
        &[
            ("FAKE_CLOUDFLARED_READY_DELAY_MS", "0"),
            ("TUNNEL_LOGFILE", file.to_str().unwrap()),
            ("TUNNEL_TRANSPORT_PROTOCOL", "http2"),
        ],
    );
    f.wait_ready();
    let reg = f.wait_line("Registered tunnel connection");
    assert!(reg.ends_with(" protocol=http2"), "{reg}");
    let json = std::fs::read_to_string(&file).unwrap();
    let registered = json
        .lines()
        .find(|l| l.contains("\"message\":\"Registered tunnel connection\""))
        .unwrap_or_else(|| panic!("{json}"));
    let v: serde_json::Value = serde_json::from_str(registered).unwrap();
    assert_eq!(v["level"], "info");
    assert_eq!(v["protocol"], "http2");
}
