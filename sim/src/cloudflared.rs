//! `fake-cloudflared`: a stand-in for `cloudflared` 2026.8.2 for tests and the
//! demo, faithful to `reference/cloudflared.md` (§1, §3, §7). It prints what
//! cloudflared prints (stderr only, zerolog console format, no colours), serves
//! the metrics endpoints, proxies "public" traffic to the `--url` origin
//! through a local "edge" port the way cloudflared does (see [`edge`]), loses
//! and regains its edge connection like the measured binary, and can fail in
//! the ways the real one does.
//!
//! # Command line (as postflow spawns the real binary)
//!
//! ```text
//! fake-cloudflared --version | -v | version   -> stdout "cloudflared version 2026.8.2 (built 2026-08-20-1000 UTC)", exit 0
//! fake-cloudflared tunnel --no-autoupdate --config F --metrics 127.0.0.1:P --url http://127.0.0.1:S
//!                  [--protocol auto|quic|http2] [--grace-period 30s] [--loglevel info] [--pidfile F]   (quick)
//! fake-cloudflared tunnel [flags] run [flags] --token-file F | --token T | [TUNNEL]                     (named)
//! ```
//!
//! Flags follow Go's `flag` syntax (`-f`, `--f`, `--f=v`, `--f v`) and may sit
//! before or after `run`. Env equivalents (honoured, as the real binary honours
//! them, so a leaked variable shows): `TUNNEL_METRICS`, `TUNNEL_URL`,
//! `TUNNEL_LOGLEVEL`, `TUNNEL_LOGFILE`, `TUNNEL_GRACE_PERIOD`,
//! `TUNNEL_TRANSPORT_PROTOCOL`, `TUNNEL_TOKEN`, `TUNNEL_TOKEN_FILE`,
//! `TUNNEL_PIDFILE`, `NO_AUTOUPDATE`. `--logfile` gets every line again as
//! zerolog JSON.
//! An unknown flag prints `Incorrect Usage: flag provided but not defined: -x`
//! and exits 1. `--grace-period` over `3m0s` or unparsable exits 1.
//!
//! # Environment knobs of the stand-in
//!
//! | variable | effect |
//! |---|---|
//! | `FAKE_CLOUDFLARED_MODE` | comma-separated list of: `no-network`, `rate-limit`, `edge-unreachable`, `registration-refused`, `crash-after=N`, `update-after=N`, `drop-after=N`, `log-flood`, `slow-shutdown=N`, `no-quicktunnel-endpoint` (N = seconds, fractions allowed). Unset/empty = healthy. |
//! | `FAKE_CLOUDFLARED_RECONNECT` | after an edge drop (`drop-after=N`, or SIGUSR1 at any time): `quic` (back in 0.2 to 1.9 s, the default), `http2` (back in 4.5 to 59 s, the default with `--protocol http2`), `refused` (the edge refuses the first re-registration; back in 23 to 83 s), `never`, or a number of seconds. Random within the measured range; the hostname is kept. |
//! | `FAKE_CLOUDFLARED_READY_DELAY_MS` | delay before `Registered tunnel connection` (default 300; named mode also waits 50 ms between its 4 connections) |
//! | `FAKE_CLOUDFLARED_API_DELAY_MS` | duration of the simulated quick-tunnel API call (default 0). Signals during it kill the process (no handler yet, as in cloudflared). |
//! | `FAKE_CLOUDFLARED_TIME_SCALE` | multiplies the `edge-unreachable` retry waits and the reconnect delay after a drop (default 1.0; 0.01 makes `2s` take 20 ms) |
//! | `FAKE_CLOUDFLARED_RATE` | bytes per second through the edge, all transfers together, like a slow uplink (default: unlimited) |
//! | `FAKE_CLOUDFLARED_EDGE_LISTEN` | address of the local "edge" listener (default `127.0.0.1:0`) |
//! | `FAKE_CLOUDFLARED_HOSTNAME` | named mode: the public hostname to register (optional); quick mode: replaces the random `<words>.trycloudflare.com` |
//! | `FAKE_CLOUDFLARED_ORIGIN` | named mode: the origin URL of the "dashboard" ingress rule (default: `--url`; with neither, the edge answers 404 like the `http_status:404` catch-all) |
//! | `FAKE_CLOUDFLARED_LAX_TOKEN` | `1`: accept any non-empty token (the real one, and this stand-in by default, require base64 JSON with `a`,`t`,`s`; see [`make_token`]) |
//! | `FAKE_CLOUDFLARED_LOG_DIR` | append `<pid> <argv as JSON array>` to `<dir>/starts.log` on every invocation (argv\[0\] included) |
//! | `SIM_TUNNEL_REGISTRY` | directory; once registered, write file `<hostname>` (e.g. `quiet-river-moon.trycloudflare.com`) containing `127.0.0.1:<edge port>\n` (atomic rename); removed on every exit path the process controls |
//!
//! # Exit codes
//!
//! - 0: `--version`, `help`, graceful shutdown after the first SIGTERM/SIGINT.
//! - 1: start-up errors (unknown flag, bad `--grace-period`, metrics port busy,
//!   `no-network`, `rate-limit`), `crash-after=N`, `registration-refused`
//!   ("initial tunnel connection failed").
//! - 11: `update-after=N` ("cloudflared has been updated").
//! - 255: usage errors of `tunnel run` (no/unreadable/empty/invalid token, extra
//!   arguments), as `cliutil.UsageError` (exit -1) does; the message is followed
//!   by `See 'cloudflared tunnel run --help'.`
//! - killed by the signal (shell status 143 for SIGTERM, 130 for SIGINT): a
//!   second SIGTERM/SIGINT, or any signal before the handler is installed
//!   (during the quick-tunnel API call). The registry file is left behind then.
//! - killed by SIGPIPE if stderr's reader goes away (Go does the same for fd 2).
//!
//! # Shutdown
//!
//! First SIGTERM/SIGINT: `Initiating graceful shutdown due to signal terminated ...`
//! (`interrupt`), `/ready` goes 503 at once, `Unregistered tunnel connection …`
//! per connection, the edge stops accepting (connection refused), then it waits
//! until no request is in flight (and `slow-shutdown=N` has passed) or
//! `--grace-period` runs out, cuts what is left, logs the two ERR lines a clean
//! shutdown of the real binary logs (`Connection terminated connIndex=N`, `no
//! more connections active and exiting`), `Tunnel server stopped`, `Metrics
//! server stopped`, removes the registry file, exits 0.
//!
//! On Windows, Ctrl-Break (what postflow sends to cloudflared's process group) or
//! Ctrl-C is Go's `os.Interrupt`: the same graceful shutdown, `due to signal
//! interrupt`; a second one ends the process at once (exit code 0xC000013A,
//! `STATUS_CONTROL_C_EXIT`, as the default console handler does).
//!
//! # Edge drops
//!
//! `drop-after=N` (once) or SIGUSR1 (any time) drops the edge connection: the
//! loss lines of the protocol in use (QUIC: `ERR failed to accept incoming
//! stream requests …`; HTTP/2: `INF Lost connection with the edge`, `WRN Serve
//! tunnel error`, `INF Retrying connection in up to 1s`, `ERR failed to serve
//! incoming request`, `ERR Connection terminated`), `/ready` 503 at once,
//! everything in flight cut, the edge answering 530; then, after the
//! `FAKE_CLOUDFLARED_RECONNECT` delay, only a new `Registered tunnel
//! connection` line, and the same hostname works again.

mod args;
mod edge;
mod server;
#[allow(unsafe_code)] // sigaction: the one place the stand-in needs it
mod signals;
pub mod text;

use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use args::{Args, CliError, Command};
use server::Shared;
use text::{Level, Logger, PrecheckRow, Rng};

pub const VERSION: &str = "2026.8.2";
pub const VERSION_LINE: &str = "cloudflared version 2026.8.2 (built 2026-08-20-1000 UTC)";
pub const EDGE_IP: &str = "198.41.200.63";
pub const DISCLAIMER: &str = "Thank you for trying Cloudflare Tunnel. Doing so, without a Cloudflare account, is a quick way to experiment and try it out. However, be aware that these account-less Tunnels have no uptime guarantee, are subject to the Cloudflare Online Services Terms of Use (https://www.cloudflare.com/website-terms/), and Cloudflare reserves the right to investigate your use of Tunnels for violations of such terms. If you intend to use Tunnels in production you should use a pre-created named tunnel by following: https://developers.cloudflare.com/cloudflare-one/connections/connect-apps";
const CHECKSUM: &str = "5f4f3c1fb0a9bd31b6e7a1d2f0c3e9a4d8b7c6e5f4a3b2c1d0e9f8a7b6c5d4e3";
/// Edge connections of a named tunnel (ip, colo), from a 2026.7.3 capture.
const NAMED_EDGES: [(&str, &str); 4] = [
    (EDGE_IP, "lax01"),
    ("198.41.192.37", "lax09"),
    ("198.41.200.43", "lax01"),
    ("198.41.192.7", "lax09"),
];

/// A named-tunnel token as the dashboard hands it out: base64 of
/// `{"a":account,"t":tunnel-uuid,"s":secret}`.
pub fn make_token(account: &str, tunnel_id: &str, secret: &str) -> String {
    let json = format!("{{\"a\":\"{account}\",\"t\":\"{tunnel_id}\",\"s\":\"{secret}\"}}");
    base64_encode(json.as_bytes())
}

fn base64_encode(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(4) {
        return None;
    }
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::new();
    for chunk in s.as_bytes().chunks(4) {
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 {
            return None;
        }
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            let v = if i >= 4 - pad { 0 } else { val(c)? };
            n = (n << 6) | v;
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    Some(out)
}

/// The tunnel id (`t`) of a valid token.
fn parse_token(token: &str) -> Option<String> {
    let raw = base64_decode(token.trim())?;
    let json = String::from_utf8(raw).ok()?;
    let json = json.trim();
    if !json.starts_with('{') || !json.ends_with('}') {
        return None;
    }
    let field = |k: &str| -> Option<String> {
        let start = json.find(&format!("\"{k}\""))? + k.len() + 2;
        let rest = json[start..].trim_start().strip_prefix(':')?.trim_start();
        let rest = rest.strip_prefix('"')?;
        Some(rest[..rest.find('"')?].to_string())
    };
    field("a")?;
    field("s")?;
    field("t")
}

fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Failure modes and knobs from the environment.
#[derive(Debug, Default)]
struct Mode {
    no_network: bool,
    rate_limit: bool,
    edge_unreachable: bool,
    crash_after: Option<Duration>,
    update_after: Option<Duration>,
    log_flood: bool,
    slow_shutdown: Option<Duration>,
    no_quicktunnel_endpoint: bool,
    registration_refused: bool,
    drop_after: Option<Duration>,
    reconnect: Option<Reconnect>,
    ready_delay: Duration,
    api_delay: Duration,
    time_scale: f64,
    rate: u64,
    lax_token: bool,
}

/// How the connection comes back after an edge drop (`FAKE_CLOUDFLARED_RECONNECT`).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Reconnect {
    /// Measured over QUIC: 0.2 to 1.9 s.
    Quic,
    /// Measured over HTTP/2: 4.5 to 59 s (cloudflared's own random backoff).
    Http2,
    /// The edge refuses the first re-registration; measured back after 23 to 83 s.
    Refused,
    Never,
    After(Duration),
}

impl Reconnect {
    fn parse(v: &str) -> Result<Reconnect, String> {
        Ok(match v.trim() {
            "quic" => Reconnect::Quic,
            "http2" => Reconnect::Http2,
            "refused" => Reconnect::Refused,
            "never" => Reconnect::Never,
            n => Reconnect::After(
                n.parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite() && *v >= 0.0)
                    .map(Duration::from_secs_f64)
                    .ok_or_else(|| {
                        format!("fake-cloudflared: FAKE_CLOUDFLARED_RECONNECT: {n:?} is not quic, http2, refused, never or seconds")
                    })?,
            ),
        })
    }

    /// The delay before the connection is registered again (unscaled); None: never.
    fn delay(self, rng: &mut Rng) -> Option<Duration> {
        let s = Duration::from_secs_f64;
        match self {
            Reconnect::Quic => Some(rng.between(s(0.2), s(1.9))),
            Reconnect::Http2 => Some(rng.between(s(4.5), s(59.0))),
            Reconnect::Refused => Some(rng.between(s(23.0), s(83.0))),
            Reconnect::Never => None,
            Reconnect::After(d) => Some(d),
        }
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn env_ms(name: &str, default: u64) -> Duration {
    Duration::from_millis(
        env(name)
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(default),
    )
}

impl Mode {
    fn from_env() -> Result<Mode, String> {
        let mut m = Mode {
            ready_delay: env_ms("FAKE_CLOUDFLARED_READY_DELAY_MS", 300),
            api_delay: env_ms("FAKE_CLOUDFLARED_API_DELAY_MS", 0),
            rate: env("FAKE_CLOUDFLARED_RATE")
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0),
            reconnect: env("FAKE_CLOUDFLARED_RECONNECT")
                .map(|v| Reconnect::parse(&v))
                .transpose()?,
            time_scale: env("FAKE_CLOUDFLARED_TIME_SCALE")
                .and_then(|v| v.trim().parse().ok())
                .filter(|v: &f64| v.is_finite() && *v >= 0.0)
                .unwrap_or(1.0),
            lax_token: env("FAKE_CLOUDFLARED_LAX_TOKEN").is_some_and(|v| v != "0"),
            ..Mode::default()
        };
        let secs = |k: &str, v: Option<&str>| -> Result<Duration, String> {
            v.and_then(|v| v.trim().parse::<f64>().ok())
                .filter(|v| v.is_finite() && *v >= 0.0)
                .map(Duration::from_secs_f64)
                .ok_or_else(|| {
                    format!("fake-cloudflared: FAKE_CLOUDFLARED_MODE: {k} needs =SECONDS")
                })
        };
        for item in env("FAKE_CLOUDFLARED_MODE").unwrap_or_default().split(',') {
            let item = item.trim();
            let (k, v) = match item.split_once('=') {
                Some((k, v)) => (k.trim(), Some(v)),
                None => (item, None),
            };
            match k {
                "" | "normal" | "ok" => {}
                "no-network" => m.no_network = true,
                "rate-limit" => m.rate_limit = true,
                "edge-unreachable" => m.edge_unreachable = true,
                "crash-after" => m.crash_after = Some(secs(k, v)?),
                "update-after" => m.update_after = Some(secs(k, v)?),
                "drop-after" => m.drop_after = Some(secs(k, v)?),
                "registration-refused" => m.registration_refused = true,
                "log-flood" => m.log_flood = true,
                "slow-shutdown" => m.slow_shutdown = Some(secs(k, v)?),
                "no-quicktunnel-endpoint" => m.no_quicktunnel_endpoint = true,
                other => {
                    return Err(format!(
                        "fake-cloudflared: unknown FAKE_CLOUDFLARED_MODE item {other:?}"
                    ))
                }
            }
        }
        Ok(m)
    }
}

/// Appends `<pid> <argv JSON>` to `$FAKE_CLOUDFLARED_LOG_DIR/starts.log`.
fn record_start(argv: &[String]) {
    let Some(dir) = env("FAKE_CLOUDFLARED_LOG_DIR") else {
        return;
    };
    let _ = fs::create_dir_all(&dir);
    let args: Vec<String> = argv.iter().map(|a| json_str(a)).collect();
    let line = format!("{} [{}]\n", std::process::id(), args.join(","));
    if let Ok(mut f) = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(PathBuf::from(dir).join("starts.log"))
    {
        let _ = f.write_all(line.as_bytes());
    }
}

/// The hostname file in `$SIM_TUNNEL_REGISTRY`.
struct Registration {
    path: PathBuf,
    content: String,
}

impl Registration {
    fn write(hostname: &str, edge_port: u16) -> Option<Registration> {
        let dir = PathBuf::from(env("SIM_TUNNEL_REGISTRY")?);
        let _ = fs::create_dir_all(&dir);
        let path = dir.join(hostname);
        let tmp = dir.join(format!(".{hostname}.{}.tmp", std::process::id()));
        let content = format!("127.0.0.1:{edge_port}\n");
        fs::write(&tmp, &content).ok()?;
        fs::rename(&tmp, &path).ok()?;
        Some(Registration { path, content })
    }

    /// Removes the file unless another process has re-registered the name.
    fn remove(&self) {
        if fs::read_to_string(&self.path).ok().as_deref() == Some(self.content.as_str()) {
            let _ = fs::remove_file(&self.path);
        }
    }
}

fn go_os_error(op: &str, path: &str, e: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    let what = match e.kind() {
        NotFound => "no such file or directory".to_string(),
        PermissionDenied => "permission denied".to_string(),
        _ if e.raw_os_error() == Some(21) => return format!("read {path}: is a directory"),
        _ => e.to_string(),
    };
    format!("{op} {path}: {what}")
}

/// Entry point of the binary: returns the exit code (or exits/dies itself).
pub fn main_with_args(argv: Vec<String>) -> i32 {
    let started = Instant::now();
    record_start(&argv);
    let parsed = args::parse(argv.get(1..).unwrap_or(&[]));
    let a = match parsed {
        Ok(a) => a,
        Err(e) => return fail(e),
    };
    match a.command {
        Command::Version => {
            println!("{VERSION_LINE}");
            0
        }
        Command::Help => {
            println!(
                "NAME:\n   cloudflared - Cloudflare's command-line tool and agent (fake-cloudflared stand-in)\n\nUSAGE:\n   cloudflared tunnel [--metrics ADDR] --url URL\n   cloudflared tunnel [--metrics ADDR] run --token-file FILE\n\nVERSION:\n   {VERSION} (built 2026-08-20-1000 UTC)"
            );
            0
        }
        Command::Quick | Command::Named => {
            let mode = match Mode::from_env() {
                Ok(m) => m,
                Err(e) => return fail(CliError::exit1(e)),
            };
            Tunnel::start(a, mode, started)
        }
    }
}

fn fail(e: CliError) -> i32 {
    text::write_stderr_line(&e.message);
    e.code
}

struct Tunnel {
    args: Args,
    mode: Mode,
    log: Logger,
    named: bool,
    shared: Arc<Shared>,
    edge_addr: std::net::SocketAddr,
    edge_thread: Option<std::thread::JoinHandle<()>>,
    registration: Option<Registration>,
    /// Edge connections registered now.
    registered: usize,
    hostname: Option<String>,
    rng: Rng,
    /// The transport in use: `quic` or `http2`.
    protocol: &'static str,
    /// Connections to register again after an edge drop.
    lost: usize,
}

/// The real metrics port refuses connections for about this long after spawn.
const METRICS_LATE: Duration = Duration::from_millis(60);
/// `/ready` says 200 this long after the `Registered tunnel connection` line.
const READY_LAG: Duration = Duration::from_millis(90);

impl Tunnel {
    fn start(mut args: Args, mode: Mode, started: Instant) -> i32 {
        let log = Logger { min: args.loglevel };
        if let Some(path) = &args.logfile {
            if let Err(e) = text::set_log_file(path) {
                log.log(
                    Level::Error,
                    &format!("unable to create log file {path}: {e}"),
                    &[],
                );
            }
        }
        let named = matches!(args.command, Command::Named);
        let mut rng = Rng::new();

        // --- named: the token is checked before anything is logged.
        let mut tunnel_id = None;
        if named {
            let mut token = args.token.clone();
            if let Some(path) = &args.token_file {
                match fs::read_to_string(path) {
                    Ok(t) => token = Some(t.trim().to_string()),
                    Err(e) => {
                        return fail(CliError::usage(
                            &format!(
                                "Failed to read token file: {}",
                                go_os_error("open", path, &e)
                            ),
                            "tunnel run",
                        ))
                    }
                }
            }
            match token.filter(|t| !t.is_empty()) {
                Some(t) => match parse_token(&t) {
                    Some(id) => tunnel_id = Some(id),
                    None if mode.lax_token => tunnel_id = Some(rng.uuid_v4()),
                    None => {
                        return fail(CliError::usage(
                            "Provided Tunnel token is not valid.",
                            "tunnel run",
                        ))
                    }
                },
                None => match &args.tunnel_ref {
                    Some(r) => tunnel_id = Some(if r.len() == 36 { r.clone() } else { rng.uuid_v4() }),
                    None => return fail(CliError::usage(
                        "\"cloudflared tunnel run\" requires the ID or name of the tunnel to run as the last command line argument or in the configuration file.",
                        "tunnel run",
                    )),
                },
            }
        } else if args.url.is_none() {
            return fail(CliError::exit1(
                "fake-cloudflared: a quick tunnel needs --url (the only quick-tunnel form simulated)",
            ));
        }

        // --- quick: the API call.
        if !named {
            log.info(DISCLAIMER);
            log.info("Requesting new quick Tunnel on trycloudflare.com...");
            std::thread::sleep(mode.api_delay);
            if mode.no_network {
                return fail(CliError::exit1(
                    "failed to request quick Tunnel: Post \"https://api.trycloudflare.com/tunnel\": dial tcp: lookup api.trycloudflare.com: no such host",
                ));
            }
            if mode.rate_limit {
                log.log(
                    Level::Error,
                    "Error unmarshaling QuickTunnel response: error code: 1015",
                    &[
                        (
                            "error",
                            "invalid character 'e' looking for beginning of value".into(),
                        ),
                        ("status_code", "429 Too Many Requests".into()),
                    ],
                );
                return fail(CliError::exit1(
                    "failed to unmarshal quick Tunnel: invalid character 'e' looking for beginning of value",
                ));
            }
        }

        let hostname = match (named, env("FAKE_CLOUDFLARED_HOSTNAME")) {
            (_, Some(h)) => Some(h.trim().to_string()),
            (false, None) => Some(rng.quick_hostname()),
            (true, None) => None,
        };
        if !named {
            for line in text::quick_tunnel_box(hostname.as_deref().unwrap_or_default()) {
                log.info(&line);
            }
        } else {
            log.infof(
                "Starting tunnel",
                &[("tunnelID", tunnel_id.clone().unwrap_or_default())],
            );
        }

        match &args.config {
            None => log.info("Cannot determine default configuration path. No file [config.yml config.yaml] in [~/.cloudflared ~/.cloudflare-warp ~/cloudflare-warp /etc/cloudflared /usr/local/etc/cloudflared]"),
            Some(p) => {
                if fs::read_to_string(p).is_ok_and(|c| c.trim().is_empty()) {
                    log.log(Level::Error, &format!("Configuration file {p} was empty"), &[]);
                }
            }
        }
        log.info(&format!("Version {VERSION} (Checksum {CHECKSUM})"));
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            other => other,
        };
        log.info(&format!(
            "GOOS: {}, GOVersion: go1.26.4, GoArch: {arch}",
            std::env::consts::OS
        ));
        if !named {
            // What quick_tunnel.go sets before starting: one connection, QUIC unless told.
            args.settings.insert("ha-connections".into(), "1".into());
            args.settings
                .entry("protocol".into())
                .or_insert_with(|| "quic".into());
        }
        log.info(&args::settings_line(&args.settings));
        if !args.no_autoupdate {
            log.infof(
                "Autoupdate frequency is set",
                &[("autoupdateFreq", "86400000".into())],
            );
        }
        let connector_id = rng.uuid_v4();
        log.info(&format!("Generated Connector ID: {connector_id}"));
        let protocol: &'static str = if args.protocol == "http2" {
            "http2"
        } else {
            "quic"
        };
        log.info(&format!("Initial protocol {protocol}"));
        log.info("ICMP proxy will use 127.0.0.1 as source for IPv4");
        log.info("ICMP proxy will use ::1 in zone lo as source for IPv6");

        // --- listeners
        let edge_listen =
            env("FAKE_CLOUDFLARED_EDGE_LISTEN").unwrap_or_else(|| "127.0.0.1:0".into());
        let edge = match TcpListener::bind(edge_listen.trim()) {
            Ok(l) => l,
            Err(e) => {
                return fail(CliError::exit1(format!(
                    "fake-cloudflared: cannot listen on FAKE_CLOUDFLARED_EDGE_LISTEN {edge_listen}: {e}"
                )))
            }
        };
        let edge_addr = edge.local_addr().expect("edge address");
        if let Some(wait) = METRICS_LATE.checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
        let metrics = match bind_metrics(args.metrics.as_deref()) {
            Ok(l) => l,
            Err(msg) => {
                log.log(
                    Level::Error,
                    "Error opening metrics server listener",
                    &[("error", msg.clone())],
                );
                return fail(CliError::exit1(format!(
                    "Error opening metrics server listener: {msg}"
                )));
            }
        };
        let metrics_addr = metrics.local_addr().expect("metrics address");

        let origin_url = if named {
            env("FAKE_CLOUDFLARED_ORIGIN").or_else(|| args.url.clone())
        } else {
            args.url.clone()
        };
        let mut ingress = Vec::new();
        if let Some(o) = &origin_url {
            match (&hostname, named) {
                (Some(h), true) => ingress.push(format!(
                    "{{\"hostname\":{},\"service\":{}}}",
                    json_str(h),
                    json_str(o)
                )),
                _ => ingress.push(format!("{{\"service\":{}}}", json_str(o))),
            }
        }
        if named {
            ingress.push("{\"service\":\"http_status:404\"}".into());
        }
        let inner_config = format!(
            "{{\"ingress\":[{}],\"warp-routing\":{{\"enabled\":false}}}}",
            ingress.join(",")
        );
        let config_json = format!(
            "{{\"version\":{},\"config\":{{\"ingress\":[{}],\"warp-routing\":{{\"enabled\":false}},\"originRequest\":{{}}}}}}",
            u8::from(named),
            ingress.join(",")
        );
        let shared = Arc::new(Shared::new(
            log,
            connector_id,
            if named {
                String::new()
            } else {
                hostname.clone().unwrap_or_default()
            },
            hostname.clone(),
            mode.no_quicktunnel_endpoint,
            origin_url,
            config_json,
            mode.rate,
        ));
        log.info(&format!(
            "Starting metrics server on {metrics_addr}/metrics"
        ));
        server::spawn_metrics(metrics, shared.clone());
        let edge_thread = Some(edge::spawn_edge(edge, shared.clone()));
        log.log(
            Level::Debug,
            &format!("fake-cloudflared edge listening on {edge_addr}"),
            &[],
        );
        signals::install();

        let mut t = Tunnel {
            args,
            mode,
            log,
            named,
            shared,
            edge_addr,
            edge_thread,
            registration: None,
            registered: 0,
            hostname,
            rng,
            protocol,
            lost: 0,
        };
        t.run(&inner_config)
    }

    /// Sleeps, returning early with the signal if one arrives.
    fn wait(&self, d: Duration) -> Option<i32> {
        let end = Instant::now() + d;
        loop {
            if let Some(s) = signals::received() {
                return Some(s);
            }
            let now = Instant::now();
            if now >= end {
                return None;
            }
            std::thread::sleep((end - now).min(Duration::from_millis(10)));
        }
    }

    fn conn_fields(idx: usize, ip: &str) -> Vec<(&'static str, String)> {
        vec![
            ("connIndex", idx.to_string()),
            ("event", "0".into()),
            ("ip", ip.to_string()),
        ]
    }

    fn run(&mut self, inner_config: &str) -> i32 {
        let n_conns = if self.named { 4 } else { 1 };
        if self.mode.edge_unreachable {
            return self.edge_unreachable_loop();
        }
        for (idx, (ip, _)) in NAMED_EDGES.iter().enumerate().take(n_conns) {
            if self.protocol == "quic" {
                self.log.infof(
                    "Tunnel connection curve preferences: [X25519MLKEM768 CurveID(65074) CurveP256]",
                    &Self::conn_fields(idx, ip),
                );
            }
            let delay = if idx == 0 {
                self.mode.ready_delay
            } else {
                Duration::from_millis(50)
            };
            if let Some(sig) = self.wait(delay) {
                return self.graceful(sig);
            }
            if self.mode.registration_refused {
                return self.refused_first_registration();
            }
            if let Some(sig) = self.register(idx) {
                return self.graceful(sig);
            }
        }
        if self.named && self.hostname.is_some() && self.shared.origin.is_some() {
            self.log.infof(
                "Updated to new configuration",
                &[
                    ("config", inner_config.to_string()),
                    ("version", "1".into()),
                ],
            );
        }
        self.prechecks(true);

        let ready_at = Instant::now();
        if self.mode.log_flood {
            self.spawn_flood();
        }
        let mut drop_at = self.mode.drop_after.map(|d| ready_at + d);
        // While the edge connection is lost: when it comes back (None: never), and when the
        // edge refuses the first try (`refused`).
        let mut back_at: Option<Option<Instant>> = None;
        let mut refusal_at: Option<Instant> = None;
        loop {
            if let Some(sig) = self.wait(Duration::from_millis(10)) {
                return self.graceful(sig);
            }
            let up = ready_at.elapsed();
            if self.mode.crash_after.is_some_and(|d| up >= d) {
                let err = "timeout: no recent network activity";
                self.log.log(
                    Level::Error,
                    "Connection terminated",
                    &[("error", err.into()), ("connIndex", "0".into())],
                );
                self.teardown();
                return fail(CliError::exit1(format!(
                    "Unable to establish connection with Cloudflare edge: {err}"
                )));
            }
            if self.mode.update_after.is_some_and(|d| up >= d) {
                self.log
                    .info("cloudflared has been updated to version 2026.9.0");
                self.teardown();
                return 11;
            }
            let now = Instant::now();
            let mut drop_now = signals::take_drop_request();
            if drop_at.is_some_and(|t| now >= t) {
                drop_at = None;
                drop_now = true;
            }
            if drop_now && back_at.is_none() {
                let n = self.registered;
                self.lose_edge();
                let how = self.mode.reconnect.unwrap_or(if self.protocol == "http2" {
                    Reconnect::Http2
                } else {
                    Reconnect::Quic
                });
                let scale = self.mode.time_scale;
                back_at = Some(how.delay(&mut self.rng).map(|d| now + d.mul_f64(scale)));
                if how == Reconnect::Refused {
                    refusal_at = Some(now + Duration::from_secs(1).mul_f64(scale));
                }
                self.lost = n;
            }
            if refusal_at.is_some_and(|t| now >= t) {
                refusal_at = None;
                let mut f = vec![("error", "Unauthorized: Failed to get tunnel".to_string())];
                f.extend(Self::conn_fields(0, EDGE_IP));
                self.log
                    .log(Level::Error, "Register tunnel error from server side", &f);
            }
            if back_at.is_some_and(|t| t.is_some_and(|t| now >= t)) {
                back_at = None;
                refusal_at = None;
                self.shared.edge_lost.store(false, Ordering::SeqCst);
                for idx in 0..self.lost {
                    if let Some(sig) = self.register(idx) {
                        return self.graceful(sig);
                    }
                }
            }
        }
    }

    /// Registers connection `idx`: its line, the hostname on the first, and `/ready` a
    /// moment later (measured: 0.09 s). Some(signal) if one came meanwhile.
    fn register(&mut self, idx: usize) -> Option<i32> {
        let (ip, colo) = NAMED_EDGES[idx];
        let mut f = Self::conn_fields(idx, ip);
        f.push(("connection", self.rng.uuid_v4()));
        f.push(("location", colo.to_string()));
        f.push(("protocol", self.protocol.to_string()));
        self.log.infof("Registered tunnel connection", &f);
        self.registered += 1;
        if idx == 0 && self.lost == 0 {
            self.on_first_registration();
        }
        let sig = self.wait(READY_LAG);
        self.shared.ready_connections.fetch_add(1, Ordering::SeqCst);
        sig
    }

    /// The edge drops every connection: `/ready` 503 at once, the loss lines of the
    /// protocol in use, everything in flight cut, the hostname answering 530.
    fn lose_edge(&mut self) {
        self.shared.ready_connections.store(0, Ordering::SeqCst);
        self.shared.edge_lost.store(true, Ordering::SeqCst);
        for (idx, (ip, _)) in NAMED_EDGES.iter().enumerate().take(self.registered) {
            let f = Self::conn_fields(idx, ip);
            let with_error = |e: &str| {
                let mut g = vec![("error", e.to_string())];
                g.extend(f.clone());
                g
            };
            if self.protocol == "quic" {
                self.log.log(
                    Level::Error,
                    "failed to accept incoming stream requests",
                    &with_error("failed to accept QUIC stream: Application error 0x0 (remote)"),
                );
            } else {
                self.log.infof(
                    "Lost connection with the edge",
                    &[("connIndex", idx.to_string())],
                );
                self.log.log(
                    Level::Warn,
                    "Serve tunnel error",
                    &with_error("connection with edge closed"),
                );
                self.log.infof("Retrying connection in up to 1s", &f);
                self.log.log(
                    Level::Error,
                    "failed to serve incoming request",
                    &[(
                        "error",
                        "Error shutting down control stream: context canceled".into(),
                    )],
                );
                self.log.log(
                    Level::Error,
                    "Connection terminated",
                    &[
                        ("error", "connection with edge closed".into()),
                        ("connIndex", idx.to_string()),
                    ],
                );
            }
        }
        self.registered = 0;
        self.shared.close_all();
    }

    /// `registration-refused`: the edge refuses the first registration; cloudflared gives
    /// up ("initial tunnel connection failed") and exits 1.
    fn refused_first_registration(&mut self) -> i32 {
        let err = "Unauthorized: Failed to get tunnel";
        let mut f = vec![("error", err.to_string())];
        f.extend(Self::conn_fields(0, EDGE_IP));
        self.log
            .log(Level::Error, "Register tunnel error from server side", &f);
        self.log
            .log(Level::Error, "initial tunnel connection failed", &f);
        self.teardown();
        fail(CliError::exit1(err))
    }

    fn on_first_registration(&mut self) {
        if let Some(h) = &self.hostname {
            self.registration = Registration::write(h, self.edge_addr.port());
        }
        if let Some(p) = &self.args.pidfile {
            let _ = fs::write(p, format!("{}", std::process::id()));
        }
    }

    fn prechecks(&mut self, healthy: bool) {
        let r1 = "region1.v2.argotunnel.com";
        let r2 = "region2.v2.argotunnel.com";
        let (udp_ok, udp_msg) = if healthy {
            (true, "QUIC connection successful")
        } else {
            (false, "QUIC connection timed out")
        };
        let (tcp_ok, tcp_msg) = if healthy {
            (true, "HTTP/2 connection successful")
        } else {
            (false, "HTTP/2 connection timed out")
        };
        let rows = [
            PrecheckRow {
                component: "DNS Resolution",
                target: r1,
                pass: true,
                details: "DNS Resolved successfully",
            },
            PrecheckRow {
                component: "DNS Resolution",
                target: r2,
                pass: true,
                details: "DNS Resolved successfully",
            },
            PrecheckRow {
                component: "UDP Connectivity",
                target: r1,
                pass: udp_ok,
                details: udp_msg,
            },
            PrecheckRow {
                component: "UDP Connectivity",
                target: r2,
                pass: udp_ok,
                details: udp_msg,
            },
            PrecheckRow {
                component: "TCP Connectivity",
                target: r1,
                pass: tcp_ok,
                details: tcp_msg,
            },
            PrecheckRow {
                component: "TCP Connectivity",
                target: r2,
                pass: tcp_ok,
                details: tcp_msg,
            },
            PrecheckRow {
                component: "Cloudflare API",
                target: "api.cloudflare.com:443",
                pass: true,
                details: "API is reachable",
            },
        ];
        let summary = if healthy {
            "Environment is healthy. cloudflared will use 'quic' as primary protocol."
        } else {
            "Cloudflare edge is unreachable on port 7844 over UDP and TCP. Check your firewall."
        };
        for line in text::precheck_table(&rows, summary) {
            self.log.info(&line);
        }
        let run_id = self.rng.uuid_v4();
        for r in &rows {
            self.log.infof(
                "precheck",
                &[
                    ("component", r.component.into()),
                    ("details", r.details.into()),
                    ("run_id", run_id.clone()),
                    ("status", if r.pass { "pass" } else { "fail" }.into()),
                    ("target", r.target.into()),
                ],
            );
        }
        self.log.infof(
            "precheck complete",
            &[
                ("hard_fail", "false".into()),
                ("run_id", run_id),
                (
                    "suggested_protocol",
                    if healthy { "quic" } else { "http2" }.into(),
                ),
            ],
        );
    }

    /// Never registers, never exits on its own; backoff 2s, 4s, … 1m4s
    /// (scaled by FAKE_CLOUDFLARED_TIME_SCALE), falling back to http2 after 5.
    fn edge_unreachable_loop(&mut self) -> i32 {
        if let Some(sig) = self.wait(self.mode.ready_delay) {
            return self.graceful(sig);
        }
        let mut attempt: u32 = 0;
        let mut http2 = self.args.protocol == "http2";
        loop {
            let f = Self::conn_fields(0, EDGE_IP);
            if http2 {
                let mut g = vec![(
                    "error",
                    format!("DialContext error: dial tcp {EDGE_IP}:7844: i/o timeout"),
                )];
                g.extend(f.clone());
                self.log.log(
                    Level::Error,
                    "Unable to establish connection with Cloudflare edge",
                    &g,
                );
            } else {
                let mut g = vec![(
                    "error",
                    "failed to dial to edge with quic: timeout: no recent network activity"
                        .to_string(),
                )];
                g.extend(f.clone());
                self.log
                    .log(Level::Error, "Failed to dial a quic connection", &g);
            }
            let backoff = Duration::from_secs(2u64 << attempt.min(5));
            self.log.infof(
                &format!(
                    "Retrying connection in up to {}",
                    text::format_go_duration(backoff)
                ),
                &f,
            );
            if attempt == 0 {
                self.prechecks(false);
            }
            attempt += 1;
            if attempt == 5 && !http2 {
                self.log.log(Level::Warn, "If this log occurs persistently, and cloudflared is unable to connect to Cloudflare Network with `quic` protocol, then most likely your machine/network is getting its egress UDP to port 7844 (or 443) blocked or dropped. Make sure to allow egress connection through UDP/7844 (or 443) on your infrastructure.", &f);
                self.log.infof("Switching to fallback protocol http2", &f);
                http2 = true;
            }
            if let Some(sig) = self.wait(backoff.mul_f64(self.mode.time_scale)) {
                return self.graceful(sig);
            }
        }
    }

    fn spawn_flood(&self) {
        let log = self.log;
        let host = self.hostname.clone().unwrap_or_else(|| "localhost".into());
        std::thread::spawn(move || {
            let mut n: u64 = 0;
            loop {
                n += 1;
                log.log(
                    Level::Error,
                    "Request failed",
                    &[
                        (
                            "error",
                            "Incoming request ended abruptly: context canceled".into(),
                        ),
                        ("connIndex", "0".into()),
                        ("dest", format!("https://{host}/flood/{n}")),
                        ("event", "0".into()),
                        ("ip", EDGE_IP.into()),
                        ("type", "http".into()),
                    ],
                );
            }
        });
    }

    /// Stops the edge and removes the registry entry.
    fn stop_edge(&mut self) {
        self.shared.stop_edge.store(true, Ordering::SeqCst);
        edge::wake_edge(self.edge_addr);
        if let Some(t) = self.edge_thread.take() {
            let _ = t.join();
        }
    }

    fn teardown(&mut self) {
        self.shared.shutting_down.store(true, Ordering::SeqCst);
        if let Some(r) = self.registration.take() {
            r.remove();
        }
        self.stop_edge();
        self.shared.close_all();
    }

    fn graceful(&mut self, sig: i32) -> i32 {
        let started = Instant::now();
        self.log.info(&format!(
            "Initiating graceful shutdown due to signal {} ...",
            signals::name(sig)
        ));
        self.shared.shutting_down.store(true, Ordering::SeqCst);
        let n_conns = self.registered;
        for (idx, (ip, _)) in NAMED_EDGES.iter().enumerate().take(n_conns) {
            self.log.infof(
                "Unregistered tunnel connection",
                &Self::conn_fields(idx, ip),
            );
        }
        // The hostname no longer routes here once unregistered.
        if let Some(r) = self.registration.take() {
            r.remove();
        }
        self.stop_edge();
        let grace = self.args.grace;
        let slow = self.mode.slow_shutdown.unwrap_or(Duration::ZERO).min(grace);
        loop {
            let el = started.elapsed();
            if el >= grace || (el >= slow && self.shared.in_flight() == 0) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.shared.close_all();
        // A clean shutdown of the real binary logs these at ERR: the level alone does not
        // say "failure".
        if n_conns > 0 {
            for idx in 0..n_conns {
                self.log.log(
                    Level::Error,
                    "Connection terminated",
                    &[("connIndex", idx.to_string())],
                );
            }
            self.log
                .log(Level::Error, "no more connections active and exiting", &[]);
        }
        self.log.info("Tunnel server stopped");
        self.log.info("Metrics server stopped");
        0
    }
}

fn bind_metrics(addr: Option<&str>) -> Result<TcpListener, String> {
    let go_err = |a: &str, e: std::io::Error| {
        let what = match e.kind() {
            std::io::ErrorKind::AddrInUse => "bind: address already in use".to_string(),
            std::io::ErrorKind::AddrNotAvailable => {
                "bind: cannot assign requested address".to_string()
            }
            _ => e.to_string(),
        };
        format!("listen tcp {a}: {what}")
    };
    match addr {
        Some(a) => {
            let bind_to = a
                .strip_prefix("localhost:")
                .map(|p| format!("127.0.0.1:{p}"));
            let bind_to = bind_to.as_deref().unwrap_or(a);
            TcpListener::bind(bind_to).map_err(|e| go_err(a, e))
        }
        None => {
            for port in 20241..=20245 {
                if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
                    return Ok(l);
                }
            }
            TcpListener::bind("127.0.0.1:0").map_err(|e| go_err("127.0.0.1:0", e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_delays_stay_within_what_was_measured() {
        let mut rng = Rng::new();
        let s = Duration::from_secs_f64;
        for (how, low, high) in [
            (Reconnect::Quic, 0.2, 1.9),
            (Reconnect::Http2, 4.5, 59.0),
            (Reconnect::Refused, 23.0, 83.0),
        ] {
            let draws: Vec<Duration> = (0..500).map(|_| how.delay(&mut rng).unwrap()).collect();
            assert!(
                draws.iter().all(|d| *d >= s(low) && *d <= s(high)),
                "{how:?}"
            );
            // Spread over the range, not stuck at one end.
            let mid = s((low + high) / 2.0);
            assert!(draws.iter().any(|d| *d < mid) && draws.iter().any(|d| *d > mid));
        }
        assert_eq!(Reconnect::Never.delay(&mut rng), None);
        assert_eq!(
            Reconnect::parse("45").unwrap().delay(&mut rng),
            Some(s(45.0))
        );
        assert!(Reconnect::parse("soon").is_err());
    }

    #[test]
    fn token_round_trip() {
        let t = make_token("acct", "6ff42ae2-765d-4adf-8112-31c55c1551ef", "c2VjcmV0");
        assert_eq!(
            parse_token(&t).as_deref(),
            Some("6ff42ae2-765d-4adf-8112-31c55c1551ef")
        );
        assert_eq!(parse_token("not-a-token"), None);
        assert_eq!(parse_token(&base64_encode(b"{\"t\":\"x\"}")), None);
        for s in ["", "a", "ab", "abc", "abcd", "hello world"] {
            assert_eq!(
                base64_decode(&base64_encode(s.as_bytes())).unwrap(),
                s.as_bytes()
            );
        }
    }
}
