//! The public file server, over real sockets with raw HTTP, asserting on the raw replies.

#[path = "serve/util.rs"]
mod util;

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, SystemTime};

use postflow::serve::ServeEvent;
use util::{exchange, pattern, read_head, Fixture, Reply};

#[test]
fn every_single_range_form_returns_exactly_those_bytes() {
    let fx = Fixture::new();
    let data = pattern(10_000);
    let (_, link) = fx.file("forms.mov", &data);
    for (range, start, end) in [
        ("bytes=0-0", 0, 0),
        ("bytes=100-199", 100, 199),
        ("bytes=9990-", 9990, 9999),
        ("bytes=0-", 0, 9999),
        ("bytes=-10", 9990, 9999),
        ("bytes=-10000", 0, 9999),
        ("Bytes=5-5", 5, 5),
    ] {
        let reply = fx.get(&link.url_path, &[&format!("Range: {range}")]);
        assert_eq!(reply.status, 206, "{range}: {}", reply.head);
        assert_eq!(
            reply.header("content-range"),
            Some(format!("bytes {start}-{end}/10000").as_str()),
            "{range}"
        );
        assert_eq!(reply.body, &data[start..=end], "{range}");
        assert_eq!(reply.header("accept-ranges"), Some("bytes"));
    }
}

#[test]
fn a_plain_get_is_the_whole_file_with_every_header() {
    let fx = Fixture::new();
    let data = pattern(100_000);
    let (_, link) = fx.file("whole.mov", &data);
    let reply = fx.get(&link.url_path, &[]);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, data);
    assert_eq!(reply.header("content-length"), Some("100000"));
    assert_eq!(reply.header("accept-ranges"), Some("bytes"));
    assert_eq!(reply.header("content-type"), Some("video/quicktime"));
    assert_eq!(reply.header("cache-control"), Some("private, no-store"));
    assert!(reply.header("content-range").is_none());
    let etag = reply.header("etag").unwrap();
    assert!(
        etag.starts_with('"') && etag.ends_with('"'),
        "strong ETag: {etag}"
    );
    assert!(reply.header("last-modified").unwrap().ends_with(" GMT"));
    assert!(reply.header("date").unwrap().ends_with(" GMT"));
}

#[test]
fn content_type_follows_the_extension() {
    let fx = Fixture::new();
    for (name, ty) in [
        ("a.mp4", "video/mp4"),
        ("a.MXF", "application/mxf"),
        ("a.wav", "audio/wav"),
        ("a.exr", "image/x-exr"),
        ("a.bin", "application/octet-stream"),
    ] {
        let (_, link) = fx.file(name, b"x");
        assert_eq!(fx.get(&link.url_path, &[]).header("content-type"), Some(ty));
    }
}

#[test]
fn an_end_past_eof_is_clamped() {
    let fx = Fixture::new();
    let data = pattern(1000);
    let (_, link) = fx.file("clamp.mov", &data);
    let reply = fx.get(&link.url_path, &["Range: bytes=990-5000"]);
    assert_eq!(reply.status, 206);
    assert_eq!(reply.header("content-range"), Some("bytes 990-999/1000"));
    assert_eq!(reply.body, &data[990..]);
    let reply = fx.get(&link.url_path, &["Range: bytes=0-18446744073709551615"]);
    assert_eq!(reply.header("content-range"), Some("bytes 0-999/1000"));
    assert_eq!(reply.body, data);
}

#[test]
fn unsatisfiable_ranges_get_416_with_the_length() {
    let fx = Fixture::new();
    let (_, link) = fx.file("416.mov", &pattern(1000));
    for range in [
        "bytes=1000-",
        "bytes=1000-2000",
        "bytes=-0",
        "bytes=18446744073709551615-",
    ] {
        let reply = fx.get(&link.url_path, &[&format!("Range: {range}")]);
        assert_eq!(reply.status, 416, "{range}");
        assert_eq!(
            reply.header("content-range"),
            Some("bytes */1000"),
            "{range}"
        );
        assert!(reply.body.is_empty());
    }
}

#[test]
fn malformed_or_multiple_ranges_get_the_whole_file() {
    let fx = Fixture::new();
    let data = pattern(1000);
    let (_, link) = fx.file("malformed.mov", &data);
    for range in [
        "Range: bytes=abc",
        "Range: bytes=5-1",
        "Range: items=0-1",
        "Range:",
        "Range: bytes=",
        "Range: bytes=18446744073709551616-",
        "Range: bytes=0-99999999999999999999999",
        "Range: bytes=1 - 2",
        "Range: bytes=0-1,5-6",
        "Range: bytes=0-1, -5",
    ] {
        let reply = fx.get(&link.url_path, &[range]);
        assert_eq!(reply.status, 200, "{range}");
        assert_eq!(reply.body, data, "{range}");
    }
    let twice = fx.get(&link.url_path, &["Range: bytes=0-1", "Range: bytes=2-3"]);
    assert_eq!(twice.status, 200);
}

#[test]
fn if_range_honours_the_range_only_for_the_same_version() {
    let fx = Fixture::new();
    let data = pattern(1000);
    let (_, link) = fx.file("ifrange.mov", &data);
    let first = fx.get(&link.url_path, &[]);
    let etag = first.header("etag").unwrap();
    let date = first.header("last-modified").unwrap();
    let partial = |if_range: &str| {
        let reply = fx.get(
            &link.url_path,
            &["Range: bytes=10-19", &format!("If-Range: {if_range}")],
        );
        match reply.status {
            206 => {
                assert_eq!(reply.body, &data[10..20]);
                true
            }
            200 => {
                assert_eq!(reply.body, data);
                false
            }
            other => panic!("{other}"),
        }
    };
    assert!(partial(etag));
    assert!(partial(date));
    assert!(!partial("\"some-other-version\""));
    assert!(!partial(&format!("W/{etag}")));
    assert!(!partial("Thu, 01 Jan 1970 00:00:00 GMT"));
    assert!(!partial("not a date"));
}

#[test]
fn head_has_the_get_headers_and_no_body() {
    let fx = Fixture::new();
    let (_, link) = fx.file("head.mov", &pattern(5000));
    for range in [None, Some("Range: bytes=10-19")] {
        let headers: Vec<&str> = range.into_iter().collect();
        let get = fx.get(&link.url_path, &headers);
        let head = fx.request("HEAD", &link.url_path, &headers);
        assert!(head.body.is_empty());
        assert!(!get.body.is_empty());
        assert_eq!(head.head_without_date(), get.head_without_date());
    }
}

#[test]
fn a_zero_byte_file_has_content_length_0_and_no_chunks() {
    let fx = Fixture::new();
    let (_, link) = fx.file("empty.mov", b"");
    let raw = exchange(
        fx.addr(),
        format!(
            "GET {} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
            link.url_path
        )
        .as_bytes(),
    );
    let reply = Reply::parse(&raw, false);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-length"), Some("0"));
    assert!(raw.ends_with(b"\r\n\r\n"), "nothing after the head");
    let reply = fx.get(&link.url_path, &["Range: bytes=0-"]);
    assert_eq!(reply.status, 416);
    assert_eq!(reply.header("content-range"), Some("bytes */0"));
    assert_eq!(
        fx.request("HEAD", &link.url_path, &[])
            .header("content-length"),
        Some("0")
    );
}

#[test]
fn a_sparse_6_gib_file_has_its_exact_length_and_no_chunks() {
    const SIZE: u64 = 6 * 1024 * 1024 * 1024;
    let fx = Fixture::new();
    let path = fx.dir.path().join("big.mov");
    let file = File::create(&path).unwrap();
    file.set_len(SIZE).unwrap();
    {
        // A marker near the end, so the range below is checked against real content.
        use std::io::{Seek, SeekFrom};
        let mut f = &file;
        f.seek(SeekFrom::Start(SIZE - 4)).unwrap();
        f.write_all(b"tail").unwrap();
    }
    drop(file);
    let link = fx.server.links().register(9, &path).unwrap();

    let head = fx.request("HEAD", &link.url_path, &[]);
    assert_eq!(head.header("content-length"), Some("6442450944"));

    let mut s = TcpStream::connect(fx.addr()).unwrap();
    write!(s, "GET {} HTTP/1.1\r\nHost: t\r\n\r\n", link.url_path).unwrap();
    let head = read_head(&mut s);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.contains("\r\nContent-Length: 6442450944\r\n"),
        "{head}"
    );
    assert!(
        !head.to_ascii_lowercase().contains("transfer-encoding"),
        "{head}"
    );
    drop(s);

    let reply = fx.get(&link.url_path, &["Range: bytes=6442450930-"]);
    assert_eq!(reply.status, 206);
    assert_eq!(
        reply.header("content-range"),
        Some("bytes 6442450930-6442450943/6442450944")
    );
    assert_eq!(reply.body, b"\0\0\0\0\0\0\0\0\0\0tail");
    fx.wait_idle(Duration::from_secs(10));
}

#[test]
fn path_tricks_all_get_the_same_404_and_never_escape() {
    let fx = Fixture::new();
    std::fs::write(fx.dir.path().join("secret.txt"), b"TOP-SECRET").unwrap();
    let sub = fx.dir.path().join("served");
    std::fs::create_dir(&sub).unwrap();
    std::fs::write(sub.join("a b.mov"), b"clip").unwrap();
    std::fs::write(sub.join("other.mov"), b"other").unwrap();
    let links = fx.server.links();
    let link = links.register(1, &sub.join("a b.mov")).unwrap();
    let other = links.register(2, &sub.join("other.mov")).unwrap();
    let t = &link.token;
    assert_eq!(t.len(), 32);
    assert_eq!(link.url_path, format!("/f/{t}/a%20b.mov"));
    assert_eq!(fx.get(&link.url_path, &[]).body, b"clip");
    assert_eq!(
        fx.get(&format!("/f/{t}/a b.mov").replace(' ', "%20"), &[])
            .status,
        200
    );

    let reference = fx.get("/", &[]);
    assert_eq!(reference.status, 404);
    let tricks = [
        format!("/f/{t}/../secret.txt"),
        format!("/f/{t}/..%2fsecret.txt"),
        format!("/f/{t}/%2e%2e"),
        format!("/f/{t}/%2e%2e%2fsecret.txt"),
        format!("/f/{t}/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd"),
        format!("/f/{t}//etc/passwd"),
        format!("/f/{t}/%2Fetc%2Fpasswd"),
        format!("//f/{t}/a%20b.mov"),
        format!("/f//{t}/a%20b.mov"),
        format!("/f/{t}/a%20b.mov/"),
        format!("/f/{t}/a%20b.mov?download=1"),
        format!("/f/{t}/a%20b.mo"),
        format!("/f/{t}/other.mov"),
        format!("/f/{}/a%20b.mov", other.token),
        format!("/f/{}/a%20b.mov", t.to_uppercase()),
        format!("/f/{}/a%20b.mov", &t[..31]),
        format!("/f/{t}x/a%20b.mov"),
        format!("/f/{t}"),
        format!("/f/{t}/"),
        format!("http://127.0.0.1/f/{t}/../secret.txt"),
        "/etc/passwd".to_string(),
        "/f/".to_string(),
        "/f/../../secret.txt".to_string(),
    ];
    for path in &tricks {
        let reply = fx.get(path, &[]);
        assert_eq!(reply.without_date(), reference.without_date(), "{path}");
    }
    for method in ["POST", "PUT", "DELETE", "OPTIONS", "TRACE", "PATCH", "get"] {
        let reply = fx.request(method, &link.url_path, &[]);
        assert_eq!(reply.without_date(), reference.without_date(), "{method}");
    }
    assert!(all_bodies_clean(&fx, &tricks));
}

fn all_bodies_clean(fx: &Fixture, paths: &[String]) -> bool {
    paths
        .iter()
        .all(|p| !String::from_utf8_lossy(&fx.get(p, &[]).body).contains("SECRET"))
}

#[test]
fn expired_and_revoked_links_get_the_same_404() {
    let fx = Fixture::with(|o| o.link_ttl = Duration::from_millis(300));
    let (_, link) = fx.file("expires.mov", b"data");
    let (_, revoked) = fx.file("revoked.mov", b"data");
    let reference = fx.get("/", &[]);
    assert_eq!(fx.get(&revoked.url_path, &[]).status, 200);
    fx.server.links().revoke(&revoked.token);
    assert_eq!(
        fx.get(&revoked.url_path, &[]).without_date(),
        reference.without_date()
    );
    assert!(fx.server.links().activity(&revoked.token).is_none());
    assert_eq!(fx.get(&link.url_path, &[]).status, 200);
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(
        fx.get(&link.url_path, &[]).without_date(),
        reference.without_date()
    );
}

#[test]
fn a_file_changed_since_registration_gets_410_and_an_event() {
    let fx = Fixture::new();
    let (path, grown) = fx.file("grown.mov", b"0123456789");
    OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(b"!")
        .unwrap();
    assert_eq!(fx.get(&grown.url_path, &[]).status, 410);
    assert_eq!(fx.get(&grown.url_path, &["Range: bytes=0-1"]).status, 410);

    let (path, touched) = fx.file("touched.mov", b"0123456789");
    let file = File::options().write(true).open(&path).unwrap();
    file.set_modified(SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
    assert_eq!(fx.get(&touched.url_path, &[]).status, 410);

    let (path, vanished) = fx.file("vanished.mov", b"0123456789");
    let reference = fx.get("/", &[]);
    std::fs::remove_file(&path).unwrap();
    assert_eq!(
        fx.get(&vanished.url_path, &[]).without_date(),
        reference.without_date()
    );

    let changed = fx
        .drain_events()
        .into_iter()
        .filter(|e| matches!(e, ServeEvent::FileChanged { .. }))
        .count();
    assert_eq!(
        changed, 4,
        "two 410s for grown, one for touched, one for vanished"
    );
}

#[test]
fn transfers_over_the_cap_get_503_with_retry_after_and_idle_connections_do_not_count() {
    let fx = Fixture::with(|o| {
        o.max_connections = 2;
        o.io_timeout = Duration::from_secs(3);
    });
    let path = fx.dir.path().join("cap.mov");
    File::create(&path).unwrap().set_len(200_000_000).unwrap();
    let link = fx.server.links().register(3, &path).unwrap();
    // Idle connections and heads on their way hold no worker.
    let idle: Vec<TcpStream> = (0..10)
        .map(|_| TcpStream::connect(fx.addr()).unwrap())
        .collect();
    assert_eq!(fx.get(&link.url_path, &["Range: bytes=0-9"]).status, 206);
    // Two transfers whose clients stop reading hold both workers...
    let stalled: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut s = TcpStream::connect(fx.addr()).unwrap();
            write!(s, "GET {} HTTP/1.1\r\nHost: t\r\n\r\n", link.url_path).unwrap();
            assert!(read_head(&mut s).starts_with("HTTP/1.1 200"));
            s
        })
        .collect();
    // ...so the next request waits a moment for one, then is told to come back.
    let reply = fx.get(&link.url_path, &["Range: bytes=0-9"]);
    assert_eq!(reply.status, 503, "{}", reply.head);
    assert_eq!(reply.header("retry-after"), Some("5"));
    assert!(reply.header("date").is_some());
    // The stalled ones are cut after io_timeout, and the slots are free again.
    let start = std::time::Instant::now();
    loop {
        let reply = fx.get(&link.url_path, &["Range: bytes=0-9"]);
        if reply.status == 206 {
            break;
        }
        assert_eq!(reply.status, 503);
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "slots never freed"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    drop((idle, stalled));
}

#[test]
fn a_client_that_sends_nothing_or_trickles_is_cut_off_after_the_head_timeout() {
    let fx = Fixture::with(|o| o.head_timeout = Duration::from_secs(1));
    let silent = TcpStream::connect(fx.addr()).unwrap();
    let mut trickle = TcpStream::connect(fx.addr()).unwrap();
    trickle
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let trickler = std::thread::spawn(move || {
        // One byte every 200 ms (10 s for the line) never completes a head; the deadline
        // is for the whole head, so trickling does not extend it.
        for b in b"GET /f/0123456789abcdef0123456789abcdef/x HTTP/1.1\r\n".iter() {
            if trickle.write_all(&[*b]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let mut answer = Vec::new();
        let _ = trickle.read_to_end(&mut answer);
        answer
    });
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(fx.server.connections(), 2);
    let waited = fx.wait_idle(Duration::from_secs(15));
    assert!(
        waited < Duration::from_secs(8),
        "closed long before the trickle would end: {waited:?}"
    );
    let mut silent = silent;
    silent
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    assert_eq!(
        silent.read(&mut [0u8; 16]).unwrap(),
        0,
        "server closed the silent client without a word"
    );
    let answer = trickler.join().unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.1 408 Request Timeout\r\n"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
}

#[test]
fn a_client_that_stops_reading_is_cut_off_after_the_timeout() {
    let fx = Fixture::with(|o| o.io_timeout = Duration::from_secs(1));
    let path = fx.dir.path().join("stalled.mov");
    File::create(&path).unwrap().set_len(100_000_000).unwrap();
    let link = fx.server.links().register(5, &path).unwrap();
    let mut s = TcpStream::connect(fx.addr()).unwrap();
    write!(s, "GET {} HTTP/1.1\r\nHost: t\r\n\r\n", link.url_path).unwrap();
    let mut one = [0u8; 1];
    s.read_exact(&mut one).unwrap();
    // Never read again, but keep the socket open.
    fx.wait_idle(Duration::from_secs(10));
    let logs = util::logs_containing("stalled.mov");
    assert!(
        logs.iter()
            .any(|(l, m)| *l == log::Level::Info && m.contains("stopped reading")),
        "{logs:?}"
    );
    assert!(logs.iter().all(|(l, _)| *l >= log::Level::Info), "{logs:?}");
    drop(s);
}

#[test]
fn a_client_closing_mid_body_frees_its_thread_and_logs_info() {
    let fx = Fixture::new();
    let path = fx.dir.path().join("hangup.mov");
    File::create(&path).unwrap().set_len(100_000_000).unwrap();
    let link = fx.server.links().register(6, &path).unwrap();
    let mut s = TcpStream::connect(fx.addr()).unwrap();
    write!(s, "GET {} HTTP/1.1\r\nHost: t\r\n\r\n", link.url_path).unwrap();
    let mut some = vec![0u8; 64 * 1024];
    s.read_exact(&mut some).unwrap();
    drop(s);
    fx.wait_idle(Duration::from_secs(5));
    let logs = util::logs_containing("hangup.mov");
    assert!(
        logs.contains(&(
            log::Level::Info,
            "hangup.mov: connection closed by client".into()
        )),
        "{logs:?}"
    );
    assert!(
        logs.iter().all(|(l, _)| *l >= log::Level::Info),
        "nothing above INFO: {logs:?}"
    );
}

#[test]
fn progress_reaches_100_percent_once_over_parallel_and_repeated_ranges() {
    let fx = Fixture::new();
    let len = 8 * 1024 * 1024 + 3;
    let data = pattern(len);
    let (_, link) = fx.file("parallel.mov", &data);
    let quarter = len / 4;
    let mut ranges: Vec<(usize, usize)> = (0..4)
        .map(|i| {
            (
                i * quarter,
                if i == 3 {
                    len - 1
                } else {
                    (i + 1) * quarter - 1
                },
            )
        })
        .collect();
    ranges.push((quarter / 2, quarter + 10)); // repeated bytes count once
    let workers: Vec<_> = ranges
        .iter()
        .map(|&(a, b)| {
            let (addr, path) = (fx.addr(), link.url_path.clone());
            std::thread::spawn(move || {
                let raw = exchange(
                    addr,
                    format!("GET {path} HTTP/1.1\r\nHost: t\r\nRange: bytes={a}-{b}\r\nConnection: close\r\n\r\n")
                        .as_bytes(),
                );
                (a, b, Reply::parse(&raw, false))
            })
        })
        .collect();
    for worker in workers {
        let (a, b, reply) = worker.join().unwrap();
        assert_eq!(reply.status, 206);
        assert_eq!(reply.body, &data[a..=b]);
    }
    fx.wait_idle(Duration::from_secs(5));
    let activity = fx.server.links().activity(&link.token).unwrap();
    assert_eq!((activity.covered, activity.total), (len as u64, len as u64));
    assert!(activity.last_served_at.is_some());

    let events = fx.drain_events();
    let hundreds = events
        .iter()
        .filter(|e| matches!(e, ServeEvent::Milestone { percent: 100, .. }))
        .count();
    assert_eq!(hundreds, 1, "{events:?}");
    for p in [25, 50, 75] {
        let n = events
            .iter()
            .filter(|e| matches!(e, ServeEvent::Milestone { percent, .. } if *percent == p))
            .count();
        assert!(n <= 1, "{p}%: {events:?}");
    }
    assert!(events.iter().any(|e| matches!(
        e,
        ServeEvent::Transfer { covered, total, .. } if covered == total
    )));
    // Another full fetch changes nothing.
    assert_eq!(fx.get(&link.url_path, &[]).body, data);
    assert!(!fx
        .drain_events()
        .iter()
        .any(|e| matches!(e, ServeEvent::Milestone { .. })));
    let lines = util::logs_containing("parallel.mov: 100% served");
    assert_eq!(lines.len(), 1, "{lines:?}");
    let leaked = util::all_logs()
        .into_iter()
        .filter(|(l, m)| *l <= log::Level::Info && m.contains(&link.token))
        .count();
    assert_eq!(leaked, 0, "tokens never logged at INFO or above");
}

#[test]
fn keep_alive_serves_pipelined_requests_on_one_connection() {
    let fx = Fixture::new();
    let data = pattern(3000);
    let (_, link) = fx.file("keepalive.mov", &data);
    let raw = exchange(
        fx.addr(),
        format!(
            "GET {p} HTTP/1.1\r\nHost: t\r\nRange: bytes=0-9\r\n\r\nGET {p} HTTP/1.1\r\nHost: t\r\nRange: bytes=10-19\r\nConnection: close\r\n\r\n",
            p = link.url_path
        )
        .as_bytes(),
    );
    let (first, second) = raw.split_at(find_second(&raw));
    let (first, second) = (Reply::parse(first, false), Reply::parse(second, false));
    assert_eq!(first.body, &data[..10]);
    assert_eq!(second.body, &data[10..20]);
}

fn find_second(raw: &[u8]) -> usize {
    raw.windows(9)
        .enumerate()
        .skip(1)
        .find(|(_, w)| *w == b"HTTP/1.1 ")
        .map(|(i, _)| i)
        .unwrap()
}

#[test]
fn malformed_requests_get_400_and_oversized_heads_431() {
    let fx = Fixture::new();
    let reply = Reply::parse(&exchange(fx.addr(), b"GARBAGE\r\n\r\n"), false);
    assert_eq!(reply.status, 400);
    let huge = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(10_000));
    let reply = Reply::parse(&exchange(fx.addr(), huge.as_bytes()), false);
    assert_eq!(reply.status, 431);
}

#[test]
fn stop_closes_open_connections_and_joins() {
    let fx = Fixture::new();
    let _idle = TcpStream::connect(fx.addr()).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let started = std::time::Instant::now();
    let Fixture { server, .. } = fx;
    server.stop();
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn revoking_a_link_stops_its_transfer_in_flight() {
    let fx = Fixture::new();
    let path = fx.dir.path().join("revoked-midway.mov");
    File::create(&path).unwrap().set_len(100_000_000).unwrap();
    let link = fx.server.links().register(8, &path).unwrap();
    let mut s = TcpStream::connect(fx.addr()).unwrap();
    write!(s, "GET {} HTTP/1.1\r\nHost: t\r\n\r\n", link.url_path).unwrap();
    let mut some = vec![0u8; 64 * 1024];
    s.read_exact(&mut some).unwrap();
    fx.server.links().revoke(&link.token);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(
        (some.len() + rest.len()) < 100_000_000,
        "the body was cut short"
    );
    fx.wait_idle(Duration::from_secs(5));
    let logs = util::logs_containing("revoked-midway.mov");
    assert!(
        logs.contains(&(
            log::Level::Info,
            "revoked-midway.mov: link revoked; transfer stopped".into()
        )),
        "{logs:?}"
    );
}

#[test]
fn a_file_replaced_by_a_fifo_or_directory_gets_410_without_blocking() {
    let fx = Fixture::new();
    let (fifo_path, fifo) = fx.file("fifo.mov", b"data");
    std::fs::remove_file(&fifo_path).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo_path)
        .status();
    if made.is_ok_and(|s| s.success()) {
        assert_eq!(fx.get(&fifo.url_path, &[]).status, 410);
    }
    let (dir_path, dir) = fx.file("dir.mov", b"data");
    std::fs::remove_file(&dir_path).unwrap();
    std::fs::create_dir(&dir_path).unwrap();
    assert_eq!(fx.get(&dir.url_path, &[]).status, 410);
    fx.wait_idle(Duration::from_secs(5));
}
