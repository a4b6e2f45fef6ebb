//! Remote uploads through a quick tunnel (the fake cloudflared stand-in, with the simulator
//! resolving `*.trycloudflare.com` through the shared registry): a tunnel whose URL changes
//! while Frame.io is about to pull, edge drops that cloudflared rides out by itself (before
//! and in the middle of a pull), and what the file server sends whatever the caller accepts.
//!
//! Drops are made with the stand-in's SIGUSR1 ("the edge drops the connection now"), so those
//! stories do not run on Windows, which has no signal to send it; each says so. Where a
//! story names a long drop, time is scaled, and said so: `TENTH` runs the stand-in's clock and
//! postflow's tunnel timing at a tenth.

mod common;
mod frameio_support;
mod upload_support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use common::signal;
use common::sim_bins::fake_cloudflared;
use serde_json::json;
use sha2::{Digest, Sha256};
use upload_support::{stop, Rig};

/// The stand-in's clock and postflow's tunnel timing at a tenth: a "45 s" drop takes 4.5 s,
/// the start deadline is 6 s (60 s), the patience 30 s (5 min).
const TENTH: &[(&str, &str)] = &[
    ("FAKE_CLOUDFLARED_TIME_SCALE", "0.1"),
    ("POSTFLOW_TEST_TUNNEL_READY_MS", "6000"),
    ("POSTFLOW_TEST_TUNNEL_PATIENCE_MS", "30000"),
];

/// A remote-mode rig on a quick tunnel through the cloudflared stand-in.
fn quick_rig(name: &str) -> Rig {
    // Beside the sandbox (which starts empty, so it cannot hold what the sim needs first).
    let registry = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{name}-registry-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&registry);
    std::fs::create_dir_all(&registry).unwrap();
    let reg = registry.clone();
    let mut rig = Rig::new(name, "remote", move |o| o.tunnel_registry = Some(reg));
    rig.config["tunnel"] = json!({ "mode": "quick", "cloudflared": fake_cloudflared() });
    rig.env("SIM_TUNNEL_REGISTRY", registry.display().to_string());
    rig.env("POSTFLOW_TEST_TUNNEL_BACKOFF_MS", "200");
    rig.env("POSTFLOW_POLL_MS", "200");
    rig
}

fn wait_tunnel_up(rig: &Rig, times: usize) {
    common::wait_until(Duration::from_secs(30), "the quick tunnel", || {
        rig.sandbox.log().matches("tunnel up: https://").count() >= times
    });
}

fn wait_log(rig: &Rig, needle: &str, limit: Duration) {
    common::wait_until(limit, needle, || rig.sandbox.log().contains(needle));
}

/// The URL of the first `tunnel up:` line.
fn first_url(log: &str) -> String {
    log.split("tunnel up: ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .to_string()
}

/// The running cloudflared (the stand-in), from postflow's pid file.
fn cloudflared_pid(rig: &Rig) -> u32 {
    let path = rig.sandbox.state_dir().join("cloudflared.pid");
    std::fs::read_to_string(&path)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Files named `name` Frame.io was asked to create, deleted ones included.
fn creates(rig: &Rig, name: &str) -> u32 {
    rig.sim
        .create_counts()
        .iter()
        .filter(|c| c.name == name && c.kind == "file")
        .map(|c| c.count)
        .sum()
}

/// Pulls that reached a tunnel with no connection behind it (Cloudflare's 530).
fn pulls_into_a_dead_tunnel(rig: &Rig) -> usize {
    rig.sim
        .fetches()
        .iter()
        .filter(|f| f.status == Some(530))
        .count()
}

#[test]
fn remote_uploads_go_through_a_quick_tunnel() {
    let rig = quick_rig("up-quick");
    let child = rig.start();
    wait_tunnel_up(&rig, 1);
    let expected = BTreeMap::from([
        ("a/one.mov".to_string(), rig.make("a/one.mov", 400_000, 1)),
        ("two.wav".to_string(), rig.make("two.wav", 70_000, 2)),
        ("three.mxf".to_string(), rig.make("three.mxf", 24 << 20, 3)),
    ]);
    rig.wait_arrived(&expected, Duration::from_secs(60));
    let log = stop(&rig, child);
    rig.assert_exactly(&expected);
    upload_support::assert_quiet(&log, &["one.mov", "two.wav", "three.mxf"]);
    for f in rig.sim.files() {
        let source = f.source_url.unwrap_or_default();
        assert!(
            source.starts_with("https://") && source.contains(".trycloudflare.com/f/"),
            "{source}\n{log}"
        );
    }
}

#[test]
fn a_cloudflared_that_dies_is_restarted_with_a_new_url_and_only_then_is_the_pull_redone() {
    // The first cloudflared dies (killed, as a crash ends it) while Frame.io waits to pull;
    // the one after it stays up. postflow restarts it and gets a new hostname.
    let rig = quick_rig("up-quick-change");
    rig.sim.set_faults(|f| f.fetch_delay_ms = 30_000);
    let child = rig.start();
    wait_tunnel_up(&rig, 1);
    let expected = BTreeMap::from([("moving.mov".to_string(), rig.make("moving.mov", 300_000, 3))]);
    common::wait_until(
        Duration::from_secs(30),
        "Frame.io to be asked to pull",
        || rig.sim.request_count("remote_upload", Some(202)) == 1,
    );
    signal(cloudflared_pid(&rig), "KILL");
    common::wait_until(Duration::from_secs(30), "the URL change", || {
        rig.sandbox
            .log()
            .contains("the tunnel's public URL changed")
    });
    rig.sim.set_faults(|f| f.fetch_delay_ms = 0);
    wait_tunnel_up(&rig, 2);
    rig.wait_arrived(&expected, Duration::from_secs(60));
    let log = stop(&rig, child);
    rig.assert_exactly(&expected);
    let first_url = first_url(&log);
    let first_url = first_url.as_str();
    let source = rig.sim.files()[0].source_url.clone().unwrap();
    assert!(
        source.starts_with("https://") && !source.starts_with(first_url),
        "pulled from {source}, the first URL was {first_url}\n{log}"
    );
    assert_eq!(
        rig.sim.request_count("remote_upload", Some(202)),
        2,
        "one pull asked on the old URL, one on the new\n{log}"
    );
}

#[test]
#[cfg_attr(
    windows,
    ignore = "the edge drop is the stand-in's SIGUSR1; Windows has no signal to send it"
)]
fn a_45_s_edge_drop_starts_no_pull_into_the_dead_tunnel_and_the_next_pull_uses_the_same_url() {
    let mut rig = quick_rig("up-drop-45");
    rig.env("FAKE_CLOUDFLARED_RECONNECT", "45");
    for (k, v) in TENTH {
        rig.env(k, *v);
    }
    let child = rig.start();
    wait_tunnel_up(&rig, 1);
    let url = first_url(&rig.sandbox.log());

    signal(cloudflared_pid(&rig), "USR1");
    wait_log(&rig, "tunnel reconnecting: ", Duration::from_secs(10));
    let expected = BTreeMap::from([("during.mov".to_string(), rig.make("during.mov", 300_000, 7))]);
    wait_log(
        &rig,
        "during.mov: the tunnel is reconnecting; waiting for it",
        Duration::from_secs(30),
    );
    // Until cloudflared is back, Frame.io is asked for nothing. (The log line comes before
    // the tunnel is offered again, so this cannot miss a pull.)
    while !rig.sandbox.log().contains("cloudflared reconnected after") {
        assert_eq!(
            rig.sim.request_count("remote_upload", None),
            0,
            "a pull was asked for while the tunnel was reconnecting\n{}",
            rig.sandbox.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    rig.wait_arrived(&expected, Duration::from_secs(60));
    let log = stop(&rig, child);
    rig.assert_exactly(&expected);
    let source = rig.sim.files()[0].source_url.clone().unwrap();
    assert!(
        source.starts_with(&format!("{url}/f/")),
        "{source} is not on {url}\n{log}"
    );
    assert_eq!(creates(&rig, "during.mov"), 1, "{log}");
    assert_eq!(pulls_into_a_dead_tunnel(&rig), 0, "{:?}", rig.sim.fetches());
    assert_eq!(
        log.matches("tunnel starting").count(),
        1,
        "cloudflared was restarted\n{log}"
    );
    assert!(!log.contains("tunnel down"), "{log}");
}

/// A pull cut by an edge drop is redone once the tunnel is back, through the same URL; the
/// file is in Frame.io once, and no create was spent on a pull into the dead tunnel.
fn a_cut_pull_is_redone_once_the_tunnel_is_back(name: &str, protocol: &str) {
    let mut rig = quick_rig(name);
    rig.config["tunnel"]["protocol"] = json!(protocol);
    // The stand-in reconnects as measured for the protocol: QUIC in 0.2 to 1.9 s, HTTP/2 in
    // cloudflared's random 4.5 to 59 s (here at a tenth), long after Frame.io reported the
    // cut pull as failed.
    rig.env("FAKE_CLOUDFLARED_RECONNECT", protocol);
    // A slow uplink (2 MB/s), so the drop comes in the middle of the pull.
    rig.env("FAKE_CLOUDFLARED_RATE", "2000000");
    for (k, v) in TENTH {
        rig.env(k, *v);
    }
    let child = rig.start();
    wait_tunnel_up(&rig, 1);
    let url = first_url(&rig.sandbox.log());
    let expected = BTreeMap::from([("cut.mov".to_string(), rig.make("cut.mov", 20_000_000, 8))]);
    wait_log(&rig, "cut.mov: 50% served", Duration::from_secs(60));
    assert_eq!(
        rig.sim.by_path().get("cut.mov").map(|e| e.complete),
        Some(0)
    );
    signal(cloudflared_pid(&rig), "USR1");
    wait_log(&rig, "tunnel reconnecting: ", Duration::from_secs(10));
    rig.wait_arrived(&expected, Duration::from_secs(120));
    let log = stop(&rig, child);
    rig.assert_exactly(&expected);
    // The redo waited for the tunnel (over QUIC it may be back before Frame.io's failure is
    // seen; the redo is the same either way).
    assert!(
        log.contains("cut.mov: redoing the remote upload (the pull was cut when the tunnel lost its connection)")
            || log.contains("cut.mov: redoing the remote upload (Frame.io reported upload_failed)"),
        "{log}"
    );
    // One create for the pull that was cut, one for the pull redone through the tunnel
    // once it was back; none into the dead tunnel (measured before this: three).
    assert_eq!(creates(&rig, "cut.mov"), 2, "{log}");
    assert_eq!(rig.sim.request_count("delete_file", None), 1, "{log}");
    assert_eq!(pulls_into_a_dead_tunnel(&rig), 0, "{:?}", rig.sim.fetches());
    let source = rig.sim.files()[0].source_url.clone().unwrap();
    assert!(
        source.starts_with(&format!("{url}/f/")),
        "{source} is not on {url}"
    );
    assert_eq!(
        log.matches("tunnel starting").count(),
        1,
        "cloudflared was restarted\n{log}"
    );
    assert!(!log.contains("the tunnel's public URL changed"), "{log}");
}

#[test]
#[cfg_attr(
    windows,
    ignore = "the edge drop is the stand-in's SIGUSR1; Windows has no signal to send it"
)]
fn over_quic_a_pull_cut_by_an_edge_drop_is_redone_once_with_no_wasted_create() {
    a_cut_pull_is_redone_once_the_tunnel_is_back("up-drop-cut-quic", "quic");
}

#[test]
#[cfg_attr(
    windows,
    ignore = "the edge drop is the stand-in's SIGUSR1; Windows has no signal to send it"
)]
fn over_http2_a_pull_cut_by_an_edge_drop_is_redone_once_with_no_wasted_create() {
    a_cut_pull_is_redone_once_the_tunnel_is_back("up-drop-cut-http2", "http2");
}

#[test]
#[cfg_attr(
    windows,
    ignore = "the edge drop is the stand-in's SIGUSR1; Windows has no signal to send it"
)]
fn in_auto_a_long_reconnect_sends_the_file_ourselves_after_a_short_wait() {
    let mut rig = quick_rig("up-drop-auto");
    rig.config["frameio"]["upload"] = json!("auto");
    rig.env("FAKE_CLOUDFLARED_RECONNECT", "never");
    let child = rig.start();
    wait_tunnel_up(&rig, 1);
    signal(cloudflared_pid(&rig), "USR1");
    wait_log(&rig, "tunnel reconnecting: ", Duration::from_secs(10));
    let expected = BTreeMap::from([(
        "meanwhile.wav".to_string(),
        rig.make("meanwhile.wav", 200_000, 9),
    )]);
    rig.wait_arrived(&expected, Duration::from_secs(60));
    let log = stop(&rig, child);
    rig.assert_exactly(&expected);
    assert!(
        log.contains("the tunnel is reconnecting; waiting for it"),
        "{log}"
    );
    assert!(log.contains("meanwhile.wav ("), "{log}");
    assert!(log.contains(", local) to Frame.io"), "{log}");
    assert_eq!(rig.sim.request_count("remote_upload", None), 0, "{log}");
    assert!(!rig.sim.s3_puts().is_empty());
    assert_eq!(log.matches("tunnel starting").count(), 1, "{log}");
}

/// A raw GET (no client that asks for or undoes compression on its own): status line, head,
/// body.
fn raw_get(
    addr: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (String, String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head");
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let status = head.lines().next().unwrap_or("").to_string();
    (status, head, raw[split + 4..].to_vec())
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn the_file_server_never_gzips_whatever_accept_encoding_says() {
    let rig = quick_rig("up-no-gzip");
    // Frame.io waits before pulling, so the link stays valid while we look.
    rig.sim.set_faults(|f| f.fetch_delay_ms = 20_000);
    let child = rig.start();
    wait_tunnel_up(&rig, 1);
    let size = 300_000;
    let sha = rig.make("plain.mov", size, 10);
    common::wait_until(Duration::from_secs(30), "Frame.io asked to pull", || {
        rig.sim.files().iter().any(|f| f.source_url.is_some())
    });
    let source = rig.sim.files()[0].source_url.clone().unwrap();
    let (host, path) = source
        .strip_prefix("https://")
        .and_then(|r| r.split_once('/'))
        .map(|(h, p)| (h.to_string(), format!("/{p}")))
        .unwrap();

    let serve = rig.config["serve"]["listen"].as_str().unwrap().to_string();
    for accept in [
        "gzip",
        "gzip, deflate, br",
        "*",
        "br;q=1.0, gzip;q=0.8",
        "identity;q=0, *",
    ] {
        let (status, head, body) = raw_get(&serve, &host, &path, &[("Accept-Encoding", accept)]);
        assert!(status.contains(" 200 "), "{accept}: {status}");
        assert!(!head.contains("content-encoding"), "{accept}: {head}");
        assert!(
            head.contains(&format!("content-length: {size}")),
            "{accept}: {head}"
        );
        assert_eq!(sha256(&body), sha, "{accept}: the bytes differ");
    }
    let (status, head, body) = raw_get(
        &serve,
        &host,
        &path,
        &[("Accept-Encoding", "gzip"), ("Range", "bytes=100-199")],
    );
    assert!(status.contains(" 206 "), "{status}");
    assert!(!head.contains("content-encoding"), "{head}");
    assert_eq!(body.len(), 100);

    // Through the tunnel, where cloudflared adds `Accept-Encoding: gzip` to a plain GET: the
    // file comes back whole, with its exact length (a gzip answer would come back chunked).
    let edge = rig
        .env
        .iter()
        .find(|(k, _)| k == "SIM_TUNNEL_REGISTRY")
        .map(|(_, dir)| std::fs::read_to_string(Path::new(dir).join(&host)).unwrap())
        .unwrap();
    let (status, head, body) = raw_get(edge.trim(), &host, &path, &[]);
    assert!(status.contains(" 200 "), "{status}");
    assert!(
        !head.contains("content-encoding") && !head.contains("chunked"),
        "{head}"
    );
    assert!(head.contains(&format!("content-length: {size}")), "{head}");
    assert_eq!(sha256(&body), sha);
    stop(&rig, child);
}
