//! The remote fetcher against a small Range server written here: plain and ranged pulls,
//! the tunnel registry indirection, and the ways a fetch goes wrong.

mod common;

use common::{get, post_json};
use serde_json::json;
use sha2::{Digest, Sha256};
use sim::{FetchMode, FrameIo, Options};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Copy, PartialEq)]
enum Behaviour {
    Good,
    /// Answers 200 with the whole file whatever the Range.
    IgnoresRanges,
    /// Announces the full length, sends half, closes.
    ShortBody,
}

#[derive(Clone, Debug, PartialEq)]
struct Seen {
    method: String,
    range: Option<String>,
    host: Option<String>,
}

struct Source {
    addr: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Source {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// One connection per request (`Connection: close`), enough for the fetcher.
fn source(data: Vec<u8>, behaviour: Behaviour) -> Source {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let data = Arc::new(data);
    let log = Arc::clone(&seen);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let data = Arc::clone(&data);
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let method = line.split(' ').next().unwrap_or("").to_string();
                let (mut range, mut host) = (None, None);
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                    let (k, v) = h.split_once(':').unwrap();
                    let v = v.trim().to_string();
                    match k.to_ascii_lowercase().as_str() {
                        "range" => range = Some(v),
                        "host" => host = Some(v),
                        _ => {}
                    }
                }
                log.lock().unwrap().push(Seen {
                    method: method.clone(),
                    range: range.clone(),
                    host,
                });
                let len = data.len() as u64;
                let parsed = range
                    .as_deref()
                    .and_then(|r| r.strip_prefix("bytes="))
                    .and_then(|r| r.split_once('-'))
                    .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)));
                let (status, a, b) = match parsed {
                    Some((a, b)) if behaviour != Behaviour::IgnoresRanges && a < len => {
                        ("206 Partial Content", a, b.min(len - 1))
                    }
                    _ => ("200 OK", 0, len.saturating_sub(1)),
                };
                let body_len = if len == 0 { 0 } else { b - a + 1 };
                let mut head = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {body_len}\r\nAccept-Ranges: bytes\r\nConnection: close\r\n"
                );
                if status.starts_with("206") {
                    head.push_str(&format!("Content-Range: bytes {a}-{b}/{len}\r\n"));
                }
                head.push_str("\r\n");
                let _ = conn.write_all(head.as_bytes());
                if method == "GET" && body_len > 0 {
                    let body = &data[a as usize..=b as usize];
                    let body = if behaviour == Behaviour::ShortBody {
                        &body[..body.len() / 2]
                    } else {
                        body
                    };
                    let _ = conn.write_all(body);
                }
            });
        }
    });
    Source { addr, seen }
}

fn bytes(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 251) as u8).collect()
}

fn sha(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

fn start(options: Options) -> (FrameIo, String) {
    let sim = FrameIo::start(options).unwrap();
    sim.set_faults(|f| f.rate_limits = false);
    let t = sim.login_tokens().access_token;
    (sim, t)
}

/// `POST remote_upload`; returns (status, body JSON).
fn remote_upload(sim: &FrameIo, t: &str, name: &str, url: &str) -> (u16, serde_json::Value) {
    let path = format!(
        "/v4/accounts/{}/folders/{}/files/remote_upload",
        sim.account_id(),
        sim.root_folder_id()
    );
    let r = post_json(
        sim.base_url(),
        t,
        &path,
        &json!({"data":{"name":name,"source_url":url}}),
    );
    (r.status, r.json())
}

fn upload_ok(sim: &FrameIo, t: &str, name: &str, url: &str) -> String {
    let (status, j) = remote_upload(sim, t, name, url);
    assert_eq!(status, 202, "{j}");
    let id = j["data"]["id"].as_str().unwrap().to_string();
    assert_eq!(
        j["links"]["status"],
        format!("/v4/accounts/{}/files/{id}/status", sim.account_id())
    );
    id
}

#[test]
fn plain_mode_pulls_with_one_get() {
    let data = bytes(300_001);
    let src = source(data.clone(), Behaviour::Good);
    let (sim, t) = start(Options::default());
    let url = format!("http://{}/f/tok123/A001.mov", src.addr);
    let (status, j) = remote_upload(&sim, &t, "A001.mov", &url);
    assert_eq!(status, 202);
    assert_eq!(j["data"]["status"], "created");
    assert_eq!(j["data"]["file_size"], 300_001, "learnt by the HEAD probe");
    let id = j["data"]["id"].as_str().unwrap();

    let f = sim.wait_for_file(id, Duration::from_secs(10)).unwrap();
    assert!(f.upload_complete, "{f:?}");
    assert_eq!(f.sha256.as_deref(), Some(sha(&data).as_str()));
    assert_eq!(f.bytes_received, 300_001);
    let st = get(
        sim.base_url(),
        &t,
        &format!("/v4/accounts/{}/files/{id}/status", sim.account_id()),
    )
    .json();
    assert_eq!(st["data"]["upload_complete"], true);
    assert!(st["data"]["upload_completed_at"].is_string());

    let seen = src.seen();
    let methods: Vec<_> = seen
        .iter()
        .map(|s| (s.method.as_str(), s.range.as_deref()))
        .collect();
    assert_eq!(methods, [("HEAD", None), ("GET", None)]);
    let fetches = sim.fetches();
    assert_eq!(fetches.len(), 2);
    assert_eq!(fetches[1].method, "GET");
    assert_eq!(fetches[1].status, Some(200));
    assert_eq!(fetches[1].bytes, 300_001);
}

#[test]
fn ranges_mode_probes_then_pulls_four_ranges_in_parallel() {
    let data = bytes(1_000_003);
    let src = source(data.clone(), Behaviour::Good);
    let (sim, t) = start(Options::default());
    sim.set_faults(|f| {
        f.fetch_mode = FetchMode::Ranges;
        f.fetch_parallelism = 4;
    });
    let id = upload_ok(&sim, &t, "B.mov", &format!("http://{}/f/x/B.mov", src.addr));
    let f = sim.wait_for_file(&id, Duration::from_secs(10)).unwrap();
    assert!(f.upload_complete, "{f:?}");
    assert_eq!(f.sha256.unwrap(), sha(&data));

    let mut ranges: Vec<String> = src.seen().iter().filter_map(|s| s.range.clone()).collect();
    assert_eq!(ranges[0], "bytes=0-0", "size probe first");
    ranges.remove(0);
    ranges.sort_by_key(|r| r[6..].split('-').next().unwrap().parse::<u64>().unwrap());
    assert_eq!(
        ranges,
        [
            "bytes=0-250000",
            "bytes=250001-500001",
            "bytes=500002-750002",
            "bytes=750003-1000002"
        ]
    );
    let recorded: Vec<_> = sim
        .fetches()
        .iter()
        .filter(|f| f.range.is_some())
        .map(|f| f.status)
        .collect();
    assert_eq!(recorded, [Some(206); 5]);
}

#[test]
fn alternate_mode_switches_per_file() {
    let data = bytes(5000);
    let src = source(data.clone(), Behaviour::Good);
    let (sim, t) = start(Options::default());
    sim.set_faults(|f| {
        f.fetch_mode = FetchMode::Alternate;
        f.remote_probe = false;
    });
    let a = upload_ok(&sim, &t, "1.mov", &format!("http://{}/f/1/1.mov", src.addr));
    assert!(
        sim.wait_for_file(&a, Duration::from_secs(10))
            .unwrap()
            .upload_complete
    );
    let b = upload_ok(&sim, &t, "2.mov", &format!("http://{}/f/2/2.mov", src.addr));
    assert!(
        sim.wait_for_file(&b, Duration::from_secs(10))
            .unwrap()
            .upload_complete
    );
    let seen = src.seen();
    assert_eq!(seen[0].range, None, "first file: plain GET");
    assert_eq!(
        seen[1].range.as_deref(),
        Some("bytes=0-0"),
        "second file: ranges"
    );
    assert_eq!(seen.len(), 1 + 1 + 4);
}

#[test]
fn https_hosts_go_through_the_tunnel_registry_with_their_host_header() {
    let data = bytes(70_000);
    let src = source(data.clone(), Behaviour::Good);
    let reg = std::env::temp_dir().join(format!("sim-fetch-reg-{}", std::process::id()));
    std::fs::create_dir_all(&reg).unwrap();
    std::fs::write(
        reg.join("gentle-otter-river.trycloudflare.com"),
        format!("{}\n", src.addr),
    )
    .unwrap();
    let (sim, t) = start(Options {
        tunnel_registry: Some(reg.clone()),
        ..Options::default()
    });
    sim.set_faults(|f| f.fetch_mode = FetchMode::Ranges);
    let url = "https://gentle-otter-river.trycloudflare.com/f/tok/C.mov";
    let id = upload_ok(&sim, &t, "C.mov", url);
    let f = sim.wait_for_file(&id, Duration::from_secs(10)).unwrap();
    assert!(f.upload_complete, "{f:?}");
    assert_eq!(f.sha256.unwrap(), sha(&data));
    assert_eq!(f.source_url.as_deref(), Some(url));
    let seen = src.seen();
    assert!(seen.len() >= 3);
    assert!(seen
        .iter()
        .all(|s| s.host.as_deref() == Some("gentle-otter-river.trycloudflare.com")));
    assert!(sim
        .fetches()
        .iter()
        .all(|f| f.connected_to.as_deref() == Some(src.addr.as_str())));

    // A host nobody registered: the upload fails, with the reason kept.
    let id = upload_ok(
        &sim,
        &t,
        "D.mov",
        "https://nobody-here.trycloudflare.com/f/t/D.mov",
    );
    let f = sim.wait_for_file(&id, Duration::from_secs(10)).unwrap();
    assert!(f.upload_failed && !f.upload_complete);
    assert!(f.failure_reason.unwrap().contains("not registered"));
    let st = get(
        sim.base_url(),
        &t,
        &format!("/v4/accounts/{}/files/{id}/status", sim.account_id()),
    )
    .json();
    assert_eq!(st["data"]["upload_failed"], true);
    std::fs::remove_dir_all(&reg).unwrap();
}

#[test]
fn a_dropped_fetch_leaves_the_file_incomplete_forever() {
    let data = bytes(1000);
    let src = source(data, Behaviour::Good);
    let (sim, t) = start(Options::default());
    sim.set_faults(|f| f.drop_fetches = 1);
    let url = format!("http://{}/f/t/E.mov", src.addr);
    let dropped = upload_ok(&sim, &t, "E.mov", &url);
    std::thread::sleep(Duration::from_millis(500));
    let f = sim.file(&dropped).unwrap();
    assert!(!f.upload_complete && !f.upload_failed, "{f:?}");
    assert_eq!(f.status, "created");
    assert!(
        src.seen().iter().all(|s| s.method == "HEAD"),
        "no GET was made"
    );
    assert_eq!(sim.fetches().last().unwrap().method, "DROPPED");

    // The knob counts down: the client's redo goes through.
    let redo = upload_ok(&sim, &t, "E.mov", &url);
    assert!(
        sim.wait_for_file(&redo, Duration::from_secs(10))
            .unwrap()
            .upload_complete
    );
    assert_eq!(
        sim.by_path()["E.mov"].copies,
        2,
        "the stalled one is still there"
    );
    assert_eq!(sim.by_path()["E.mov"].complete, 1);
}

#[test]
fn injected_failures_short_bodies_and_ignored_ranges_fail_the_upload() {
    let data = bytes(10_000);
    let (sim, t) = start(Options::default());
    let good = source(data.clone(), Behaviour::Good);
    sim.set_faults(|f| f.fail_fetches = 1);
    let id = upload_ok(
        &sim,
        &t,
        "F.mov",
        &format!("http://{}/f/t/F.mov", good.addr),
    );
    let f = sim.wait_for_file(&id, Duration::from_secs(10)).unwrap();
    assert!(f.upload_failed);

    let short = source(data.clone(), Behaviour::ShortBody);
    let id = upload_ok(
        &sim,
        &t,
        "G.mov",
        &format!("http://{}/f/t/G.mov", short.addr),
    );
    let f = sim.wait_for_file(&id, Duration::from_secs(10)).unwrap();
    assert!(f.upload_failed, "{f:?}");
    assert!(f.sha256.is_none());

    let ignores = source(data, Behaviour::IgnoresRanges);
    sim.set_faults(|f| f.fetch_mode = FetchMode::Ranges);
    let id = upload_ok(
        &sim,
        &t,
        "H.mov",
        &format!("http://{}/f/t/H.mov", ignores.addr),
    );
    let f = sim.wait_for_file(&id, Duration::from_secs(10)).unwrap();
    assert!(f.upload_failed);
    assert!(f.failure_reason.unwrap().contains("ignored the Range"));
}

#[test]
fn sources_over_the_remote_limit_are_refused() {
    let data = bytes(1000);
    let src = source(data, Behaviour::Good);
    let (sim, t) = start(Options::default());
    sim.set_faults(|f| f.remote_size_limit = 999);
    let url = format!("http://{}/f/t/I.mov", src.addr);
    let (status, j) = remote_upload(&sim, &t, "I.mov", &url);
    assert_eq!(status, 422, "{j}");
    assert!(j["errors"][0]["detail"]
        .as_str()
        .unwrap()
        .contains("remote upload limit"));
    assert_eq!(sim.create_count("", "I.mov", "file"), 0);

    // Without the probe the limit is found by the fetch.
    sim.set_faults(|f| f.remote_probe = false);
    let id = upload_ok(&sim, &t, "I.mov", &url);
    let f = sim.wait_for_file(&id, Duration::from_secs(10)).unwrap();
    assert!(f.upload_failed);
    assert!(f.failure_reason.unwrap().contains("limit"));
}
