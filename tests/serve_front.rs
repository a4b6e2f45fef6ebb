//! The file server's HTTP/1.1 front on real sockets: slow clients cost no worker and cannot
//! hold one, a client at exactly the cap is served, pipelining, and RFC 9112's rules for
//! request heads. Raw HTTP in, raw replies asserted, as in tiny_http's own tests.

#[path = "serve/util.rs"]
mod util;

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use util::{exchange, pattern, read_head, Fixture, Reply};

/// Opens `n` connections that each send the start of a head and stop, as slowhttptest -H
/// does between its header lines.
fn slowloris(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|i| {
            let mut s = TcpStream::connect(addr).unwrap();
            write!(s, "GET /f/x/y HTTP/1.1\r\nHost: t\r\nX-a-{i}: b\r\n").unwrap();
            s
        })
        .collect()
}

/// One GET with keep-alive on `s`; the reply, read to its Content-Length.
fn get_on(s: &mut TcpStream, path: &str, extra: &str) -> Reply {
    write!(s, "GET {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n").unwrap();
    let head = read_head(s);
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .expect("a Content-Length")
        .parse()
        .unwrap();
    let mut body = vec![0u8; length];
    s.read_exact(&mut body).unwrap();
    let mut raw = head.into_bytes();
    raw.extend_from_slice(&body);
    Reply::parse(&raw, false)
}

fn wait_for(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_500_connection_slowloris_costs_no_worker_and_a_normal_client_is_served() {
    let fx = Fixture::new();
    let data = pattern(50_000);
    let (_, link) = fx.file("slowloris.mov", &data);
    let attack = slowloris(fx.addr(), 500);
    wait_for(Duration::from_secs(20), "500 slow heads held", || {
        fx.server.connections() >= 500
    });
    for _ in 0..5 {
        let start = Instant::now();
        let reply = fx.get(&link.url_path, &["Range: bytes=100-199"]);
        assert_eq!(reply.status, 206, "{}", reply.head);
        assert_eq!(reply.body, &data[100..200]);
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "served in {:?} under the attack",
            start.elapsed()
        );
    }
    assert!(
        fx.server.connections() >= 500,
        "the attackers are still held"
    );
    drop(attack);
}

#[test]
fn a_client_that_reads_a_trickle_is_cut_within_io_timeout() {
    let fx = Fixture::with(|o| o.io_timeout = Duration::from_secs(1));
    let path = fx.dir.path().join("trickle.mov");
    File::create(&path).unwrap().set_len(200_000_000).unwrap();
    let link = fx.server.links().register(7, &path).unwrap();
    let mut s = TcpStream::connect(fx.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {} HTTP/1.1\r\nHost: t\r\n\r\n", link.url_path).unwrap();
    // 1 KiB every 100 ms: steady progress, far below 1 MiB per io_timeout. A send timeout
    // would restart on every read and never fire.
    let start = Instant::now();
    let mut got = 0usize;
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "still served after a minute ({got} bytes)"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(got < 100_000_000, "cut short: {got} bytes");
    // Reset, not closed gracefully: the megabytes still buffered are not owed to it.
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "cut after {:?}",
        start.elapsed()
    );
    fx.wait_idle(Duration::from_secs(10));
    let logs = util::logs_containing("trickle.mov");
    assert!(
        logs.iter()
            .any(|(l, m)| *l == log::Level::Info && m.contains("stopped reading")),
        "{logs:?}"
    );
}

#[test]
fn sixty_four_keep_alive_clients_at_a_cap_of_64_all_get_their_bytes() {
    let fx = Fixture::with(|o| o.max_connections = 64);
    let data = pattern(20_000);
    let (_, link) = fx.file("keepalive64.mov", &data);
    let clients: Vec<_> = (0..64)
        .map(|i| {
            let (addr, path, data) = (fx.addr(), link.url_path.clone(), data.clone());
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(addr).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                for r in 0..20 {
                    let a = (i * 97 + r * 13) % 19_000;
                    let reply = get_on(&mut s, &path, &format!("Range: bytes={a}-{}\r\n", a + 99));
                    assert_eq!(reply.status, 206, "client {i} request {r}: {}", reply.head);
                    assert_eq!(reply.body, &data[a..a + 100]);
                }
            })
        })
        .collect();
    for c in clients {
        c.join().expect("every request answered 206");
    }
}

#[test]
fn sixty_four_clients_reconnecting_at_a_cap_of_64_never_see_503() {
    // What `ab -n 2000 -c 64` does: a new connection per request, 64 at a time. A slot is
    // free as soon as the answer is written, not after the lingering close.
    let fx = Fixture::with(|o| o.max_connections = 64);
    let data = pattern(5_000);
    let (_, link) = fx.file("churn.mov", &data);
    let clients: Vec<_> = (0..64)
        .map(|_| {
            let (addr, path) = (fx.addr(), link.url_path.clone());
            std::thread::spawn(move || {
                (0..15)
                    .map(|_| {
                        let raw = exchange(
                            addr,
                            format!("GET {path} HTTP/1.0\r\nHost: t\r\n\r\n").as_bytes(),
                        );
                        Reply::parse(&raw, false).status
                    })
                    .collect::<Vec<u16>>()
            })
        })
        .collect();
    for c in clients {
        let statuses = c.join().unwrap();
        assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    }
}

#[test]
fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let fx = Fixture::new();
    let data = pattern(3000);
    let (_, link) = fx.file("pipelined.mov", &data);
    let p = &link.url_path;
    let raw = exchange(
        fx.addr(),
        format!(
            "GET {p} HTTP/1.1\r\nHost: t\r\nRange: bytes=0-9\r\n\r\n\
             HEAD {p} HTTP/1.1\r\nHost: t\r\n\r\n\
             GET {p} HTTP/1.1\r\nHost: t\r\nRange: bytes=-5\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    );
    let starts: Vec<usize> = (0..raw.len())
        .filter(|&i| raw[i..].starts_with(b"HTTP/1.1 "))
        .collect();
    assert_eq!(starts.len(), 3, "{:?}", String::from_utf8_lossy(&raw));
    let first = Reply::parse(&raw[starts[0]..starts[1]], false);
    let head = Reply::parse(&raw[starts[1]..starts[2]], true);
    let last = Reply::parse(&raw[starts[2]..], false);
    assert_eq!((first.status, first.body.as_slice()), (206, &data[..10]));
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("3000"));
    assert_eq!((last.status, last.body.as_slice()), (206, &data[2995..]));
    assert_eq!(last.header("connection"), Some("close"));
}

#[test]
fn a_keep_alive_connection_survives_between_requests() {
    let fx = Fixture::new();
    let data = pattern(1000);
    let (_, link) = fx.file("idle.mov", &data);
    let mut s = TcpStream::connect(fx.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(get_on(&mut s, &link.url_path, "").body, data);
    // Idle in the stage, then the next request on the same socket.
    std::thread::sleep(Duration::from_millis(300));
    let reply = get_on(&mut s, &link.url_path, "Range: bytes=1-2\r\n");
    assert_eq!((reply.status, reply.body.as_slice()), (206, &data[1..3]));
}

/// Sends `raw` and reads the reply head within 5 s; the connection may stay open.
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

#[test]
fn request_heads_follow_rfc_9112() {
    let fx = Fixture::new();
    let (_, link) = fx.file("rfc.mov", b"0123456789");
    let p = &link.url_path;
    let status = |raw: String| -> u16 {
        let head = answer_to(fx.addr(), raw.as_bytes());
        assert!(head.contains("\r\nDate: "), "{head}");
        head[9..12].parse().unwrap()
    };
    // §3.2: exactly one Host in HTTP/1.1.
    assert_eq!(status(format!("GET {p} HTTP/1.1\r\n\r\n")), 400);
    assert_eq!(
        status(format!("GET {p} HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")),
        400
    );
    // §3.2.2: the absolute form must be accepted.
    assert_eq!(
        status(format!(
            "GET http://tunnel.example{p} HTTP/1.1\r\nHost: tunnel.example\r\n\r\n"
        )),
        200
    );
    // §2.2: bare LF line ends, answered at once.
    assert_eq!(
        status(format!("GET {p} HTTP/1.1\nHost: t\nRange: bytes=2-3\n\n")),
        206
    );
    // §6.3: conflicting or repeated Content-Length.
    assert_eq!(
        status(format!(
            "GET {p} HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"
        )),
        400
    );
    assert_eq!(status(format!("GET {p} HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n")), 400);
    // §5: no NUL, no obs-fold, no space before the colon.
    assert_eq!(
        status(format!("GET {p} HTTP/1.1\r\nHost: t\r\nX: a\0b\r\n\r\n")),
        400
    );
    assert_eq!(
        status(format!("GET {p} HTTP/1.1\r\nHost: t\r\nX: a\r\n b\r\n\r\n")),
        400
    );
    assert_eq!(status(format!("GET {p} HTTP/1.1\r\nHost : t\r\n\r\n")), 400);
    // HTTP/1.0 may leave Host out.
    assert_eq!(status(format!("GET {p} HTTP/1.0\r\n\r\n")), 200);
    // `*` is for OPTIONS only.
    assert_eq!(status("GET * HTTP/1.1\r\nHost: t\r\n\r\n".into()), 400);
    assert_eq!(status("OPTIONS * HTTP/1.1\r\nHost: t\r\n\r\n".into()), 404);

    let absolute = Reply::parse(
        &exchange(
            fx.addr(),
            format!(
                "GET http://tunnel.example{p} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        ),
        false,
    );
    assert_eq!(absolute.body, b"0123456789");
}

#[test]
fn a_head_with_a_body_is_answered_and_the_connection_closed() {
    // GET has no body here; bytes announced by Content-Length must not be taken for the next
    // request, so the answer closes the connection.
    let fx = Fixture::new();
    let (_, link) = fx.file("withbody.mov", b"abc");
    let raw = exchange(
        fx.addr(),
        format!(
            "GET {} HTTP/1.1\r\nHost: t\r\nContent-Length: 40\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: t\r\n\r\n",
            link.url_path
        )
        .as_bytes(),
    );
    let reply = Reply::parse(&raw, false);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("connection"), Some("close"));
    assert_eq!(reply.body, b"abc", "one answer only");
}
