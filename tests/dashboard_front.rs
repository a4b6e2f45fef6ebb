//! The dashboard's HTTP/1.1 front on real sockets: a slowloris does not take `/health` or
//! the page down, the token is checked before any body is waited for, HEAD, `Allow`, `Date`,
//! keep-alive, RFC 9112's rules for heads, and the WebSocket's closing handshake.

mod dashboard_support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use dashboard_support::{raw_request, read_reply, Options, Pipeline};
use serde_json::json;
use tungstenite::Message;

/// Opens `n` connections that each send the start of a head and stop.
fn slowloris(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|i| {
            let mut s = TcpStream::connect(addr).unwrap();
            write!(s, "GET / HTTP/1.1\r\nHost: {addr}\r\nX-a-{i}: b\r\n").unwrap();
            s
        })
        .collect()
}

/// `raw` in, the reply head out, within 5 s (the connection may stay open).
fn answer_to(addr: SocketAddr, raw: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(raw).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            other => panic!(
                "no whole answer to {:?}: {other:?} after {:?}",
                String::from_utf8_lossy(raw),
                String::from_utf8_lossy(&head)
            ),
        }
    }
    String::from_utf8(head).unwrap()
}

fn status_of(head: &str) -> u16 {
    head[9..12].parse().unwrap()
}

#[test]
fn health_and_the_page_answer_during_a_500_connection_slowloris() {
    let p = Pipeline::start("front-slowloris");
    let attack = slowloris(p.addr, 500);
    for _ in 0..5 {
        let start = Instant::now();
        let health = p.get("/health");
        assert_eq!(health.status, 200, "{}", health.text());
        assert_eq!(health.json()["status"], "ok");
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
        assert!(p.get("/").text().contains("<title>postflow</title>"));
    }
    drop(attack);
}

#[test]
fn with_a_token_a_stranger_on_the_lan_cannot_hold_the_dashboard() {
    const TOKEN: &str = "correct-horse-battery-staple";
    let p = Pipeline::start_with(
        "front-token",
        Options {
            dashboard: json!({ "listen": "0.0.0.0:0", "token": TOKEN }),
            ..Options::default()
        },
    );
    let addr = SocketAddr::from(([127, 0, 0, 1], p.addr.port()));
    let host = format!("ingest.local:{}", p.addr.port());
    let attack = slowloris(addr, 500);
    // A POST that announces a body and never sends it: refused on its head alone, at once.
    let head = answer_to(
        addr,
        format!("POST /api/pause HTTP/1.1\r\nHost: {host}\r\nContent-Length: 1000\r\n\r\n")
            .as_bytes(),
    );
    assert_eq!(status_of(&head), 401, "{head}");
    assert!(head.contains("\r\nConnection: close\r\n"), "{head}");
    let health = raw_request(addr, "GET", "/health", &[("Host", &host)], b"");
    assert_eq!(health.status, 200);
    let bearer = format!("Bearer {TOKEN}");
    let status = raw_request(
        addr,
        "GET",
        "/api/status",
        &[("Host", &host), ("Authorization", &bearer)],
        b"",
    );
    assert_eq!(status.status, 200);
    assert_eq!(
        status.json()["queue"]["paused"],
        false,
        "the POST did nothing"
    );
    drop(attack);
}

#[test]
fn head_is_answered_wherever_get_is() {
    let p = Pipeline::start("front-head");
    let host = p.addr.to_string();
    for path in [
        "/",
        "/health",
        "/api/status",
        "/api/queue/stats",
        "/api/jobs",
        "/metrics",
    ] {
        let get = p.get(path);
        let head = raw_request(p.addr, "HEAD", path, &[("Host", &host)], b"");
        assert_eq!(head.status, get.status, "{path}");
        assert!(head.body.is_empty(), "{path}: {}", head.text());
        assert_eq!(
            head.header("content-type"),
            get.header("content-type"),
            "{path}"
        );
        assert!(head.header("content-length").is_some(), "{path}");
    }
    let page = raw_request(p.addr, "HEAD", "/", &[("Host", &host)], b"");
    assert_eq!(
        page.header("content-length"),
        Some(p.get("/").body.len().to_string())
    );
}

#[test]
fn a_405_says_what_is_allowed_and_every_allowed_method_is_answered() {
    let p = Pipeline::start("front-allow");
    let host = p.addr.to_string();
    for path in [
        "/",
        "/ws",
        "/health",
        "/api/status",
        "/api/queue/stats",
        "/api/jobs",
        "/api/jobs/1/retry",
        "/api/retry-failed",
        "/api/pause",
        "/api/resume",
        "/metrics",
        "/oauth/start",
        "/oauth/callback",
        "/oauth/code",
    ] {
        let refused = raw_request(p.addr, "DELETE", path, &[("Host", &host)], b"");
        assert_eq!(refused.status, 405, "{path}");
        let allow = refused
            .header("allow")
            .unwrap_or_else(|| panic!("{path}: no Allow"));
        for method in allow.split(", ") {
            let r = raw_request(p.addr, method, path, &[("Host", &host)], b"");
            assert!(
                ![404, 405].contains(&r.status),
                "{method} {path} is in Allow ({allow}) but answered {}",
                r.status
            );
        }
    }
    assert_eq!(p.get("/nope").status, 404);
}

#[test]
fn every_answer_carries_a_date() {
    let p = Pipeline::start("front-date");
    let host = p.addr.to_string();
    let mut heads = vec![
        p.get("/health").head,
        p.get("/nope").head,
        p.request("DELETE", "/api/status", &[], b"").head,
        raw_request(
            p.addr,
            "GET",
            "/api/status",
            &[("Host", "evil.example")],
            b"",
        )
        .head,
    ];
    heads.push(answer_to(p.addr, b"GET / HTTP/1.1\r\n\r\n"));
    heads.push(answer_to(
        p.addr,
        format!(
            "GET /ws HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        .as_bytes(),
    ));
    let statuses: Vec<u16> = heads.iter().map(|h| status_of(h)).collect();
    assert_eq!(statuses, [200, 404, 405, 403, 400, 101]);
    for head in &heads {
        let date = head
            .lines()
            .find_map(|l| l.strip_prefix("Date: "))
            .unwrap_or_else(|| panic!("no Date in {head}"));
        assert!(date.ends_with(" GMT"), "{date}");
    }
}

#[test]
fn a_connection_is_kept_alive_between_requests() {
    let p = Pipeline::start("front-keepalive");
    let mut s = TcpStream::connect(p.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for path in ["/health", "/api/queue/stats", "/health"] {
        write!(s, "GET {path} HTTP/1.1\r\nHost: {}\r\n\r\n", p.addr).unwrap();
        let reply = read_reply(&mut s);
        assert_eq!(reply.status, 200, "{path}");
        assert!(reply.header("connection").is_none(), "{}", reply.head);
        assert!(reply.json().is_object());
    }
}

#[test]
fn request_heads_follow_rfc_9112() {
    let p = Pipeline::start("front-rfc");
    let a = p.addr;
    let status = |raw: String| status_of(&answer_to(a, raw.as_bytes()));
    assert_eq!(status("GET /health HTTP/1.1\r\n\r\n".into()), 400);
    assert_eq!(
        status(format!(
            "GET /health HTTP/1.1\r\nHost: {a}\r\nHost: {a}\r\n\r\n"
        )),
        400
    );
    // §3.2.2: with an absolute-form target, its authority is the host.
    assert_eq!(
        status(format!(
            "GET http://{a}/api/status HTTP/1.1\r\nHost: x\r\n\r\n"
        )),
        200
    );
    assert_eq!(
        status(format!(
            "GET http://evil.example:{}/api/status HTTP/1.1\r\nHost: {a}\r\n\r\n",
            a.port()
        )),
        403
    );
    assert_eq!(
        status(format!("GET /api/status HTTP/1.1\nHost: {a}\n\n")),
        200
    );
    assert_eq!(
        status(format!("POST /api/pause HTTP/1.1\r\nHost: {a}\r\nContent-Length: 0\r\nContent-Length: 2\r\n\r\n")),
        400
    );
    assert_eq!(
        status(format!(
            "GET /health HTTP/1.1\r\nHost: {a}\r\nX: \0\r\n\r\n"
        )),
        400
    );
    assert_eq!(
        status(format!(
            "POST /api/jobs HTTP/1.1\r\nHost: {a}\r\nTransfer-Encoding: chunked\r\n\r\n"
        )),
        411
    );
    let bad = raw_request(a, "GET", "/health", &[("Host", "a"), ("Host", "b")], b"");
    assert_eq!(bad.status, 400);
    assert!(
        bad.json()["error"].as_str().unwrap().contains("Host"),
        "{}",
        bad.text()
    );
}

#[test]
fn a_body_is_read_after_100_continue() {
    let p = Pipeline::start("front-continue");
    std::fs::write(p.dir.join("watch").join("E1.mov"), b"x").unwrap();
    let body = json!({ "paths": ["E1.mov"] }).to_string();
    let mut s = TcpStream::connect(p.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "POST /api/jobs HTTP/1.1\r\nHost: {}\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        p.addr,
        body.len()
    )
    .unwrap();
    let mut interim = [0u8; 25];
    s.read_exact(&mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(body.as_bytes()).unwrap();
    let reply = read_reply(&mut s);
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(reply.json()["results"][0]["id"].is_u64());
}

/// A WebSocket handshake by hand; returns the socket after the 101 head.
fn ws_by_hand(p: &Pipeline, key: &str) -> (TcpStream, String) {
    let mut s = TcpStream::connect(p.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /ws HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\r\n",
        p.addr
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1, "closed inside the head");
        head.push(byte[0]);
    }
    (s, String::from_utf8(head).unwrap())
}

/// Reads server frames until a Close; its status code.
fn close_code(s: &mut TcpStream) -> u16 {
    loop {
        let mut h = [0u8; 2];
        s.read_exact(&mut h)
            .expect("a frame before the connection ends");
        let len = match h[1] & 0x7f {
            126 => {
                let mut l = [0u8; 2];
                s.read_exact(&mut l).unwrap();
                u64::from(u16::from_be_bytes(l))
            }
            127 => {
                let mut l = [0u8; 8];
                s.read_exact(&mut l).unwrap();
                u64::from_be_bytes(l)
            }
            n => u64::from(n),
        };
        let mut payload = vec![0u8; len as usize];
        s.read_exact(&mut payload).unwrap();
        if h[0] & 0x0f == 0x8 {
            return u16::from_be_bytes([payload[0], payload[1]]);
        }
    }
}

#[test]
fn a_close_from_the_page_is_answered_with_a_close() {
    let p = Pipeline::start("front-ws-close");
    let mut viewer = p.ws();
    assert_eq!(viewer.next()["type"], "snapshot");
    viewer.ws.close(None).unwrap();
    // RFC 6455 §5.5.1: the server answers the Close; without it the page sees 1006.
    loop {
        match viewer.ws.read() {
            Ok(Message::Close(_)) => break,
            Ok(_) => continue,
            Err(e) => panic!("no Close came back: {e}"),
        }
    }
}

#[test]
fn protocol_errors_close_with_1002_and_oversized_frames_with_1009() {
    let p = Pipeline::start("front-ws-errors");
    let (mut s, head) = ws_by_hand(&p, "dGhlIHNhbXBsZSBub25jZQ==");
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    // A client's frames must be masked (RFC 6455 §5.1): this one is not.
    s.write_all(&[0x81, 0x02, b'h', b'i']).unwrap();
    assert_eq!(close_code(&mut s), 1002);

    let (mut s, _) = ws_by_hand(&p, "dGhlIHNhbXBsZSBub25jZQ==");
    // A masked binary frame announcing 1 MiB, over the 64 KiB a page may send.
    let mut frame = vec![0x82, 0x80 | 127];
    frame.extend_from_slice(&(1u64 << 20).to_be_bytes());
    frame.extend_from_slice(&[1, 2, 3, 4]);
    s.write_all(&frame).unwrap();
    assert_eq!(close_code(&mut s), 1009);
}

#[test]
fn a_malformed_websocket_key_is_400() {
    let p = Pipeline::start("front-ws-key");
    let (_, head) = ws_by_hand(&p, "short");
    assert_eq!(status_of(&head), 400, "{head}");
}
