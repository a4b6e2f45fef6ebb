//! `fake-cloudflared`: stand-in for `cloudflared` (2026.8.2) used by postflow's
//! tests and demo. Full contract: the doc comment of `sim::cloudflared`.
//!
//! Spawn it exactly like the real binary:
//!   fake-cloudflared tunnel --no-autoupdate --config F --metrics 127.0.0.1:P --url http://127.0.0.1:S
//!   fake-cloudflared tunnel --no-autoupdate --config F --metrics 127.0.0.1:P run --token-file F
//!   fake-cloudflared --version
//!
//! Environment knobs (all optional):
//!   FAKE_CLOUDFLARED_MODE            comma list: no-network | rate-limit | edge-unreachable |
//!                                    registration-refused | crash-after=N | update-after=N |
//!                                    drop-after=N | log-flood | slow-shutdown=N |
//!                                    no-quicktunnel-endpoint   (N seconds)
//!   FAKE_CLOUDFLARED_RECONNECT       after an edge drop: quic (0.2-1.9 s, default) | http2
//!                                    (4.5-59 s, default with --protocol http2) | refused
//!                                    (23-83 s) | never | SECONDS; the hostname is kept
//!   FAKE_CLOUDFLARED_READY_DELAY_MS  delay before "Registered tunnel connection" (default 300)
//!   FAKE_CLOUDFLARED_API_DELAY_MS    length of the simulated quick-tunnel API call (default 0)
//!   FAKE_CLOUDFLARED_TIME_SCALE      multiplies edge-unreachable retry waits and reconnect
//!                                    delays (default 1.0)
//!   FAKE_CLOUDFLARED_RATE            bytes per second through the edge (default unlimited)
//!   FAKE_CLOUDFLARED_EDGE_LISTEN     local "edge" listen address (default 127.0.0.1:0)
//!   FAKE_CLOUDFLARED_HOSTNAME        hostname to register (named mode; overrides the random
//!                                    quick-tunnel name in quick mode)
//!   FAKE_CLOUDFLARED_ORIGIN          named mode: origin URL of the remote ingress (default --url)
//!   FAKE_CLOUDFLARED_LAX_TOKEN=1     accept any non-empty token (default: must be a real-shaped
//!                                    base64 JSON token, see sim::cloudflared::make_token)
//!   FAKE_CLOUDFLARED_LOG_DIR         append "<pid> <argv JSON array>" to <dir>/starts.log
//!   SIM_TUNNEL_REGISTRY              directory; file <hostname> = "127.0.0.1:<edge port>\n"
//!                                    while registered (kept through an edge drop)
//!
//! Signals: SIGTERM/SIGINT graceful shutdown (a second one kills); SIGUSR1 drops the edge
//! connection now (`kill -USR1 <pid>`: what a flaky uplink does), see FAKE_CLOUDFLARED_RECONNECT.
//!
//! Exit codes: 0 version/help/graceful shutdown; 1 start-up errors, no-network, rate-limit,
//! registration-refused, crash-after; 11 update-after; 255 `tunnel run` usage errors (token
//! missing/unreadable/empty/invalid); death by SIGTERM/SIGINT (143/130 in a shell) on a second
//! signal.

fn main() {
    let code = sim::cloudflared::main_with_args(std::env::args().collect());
    std::process::exit(code);
}
