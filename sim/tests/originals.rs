//! Kept originals (`Options::originals_dir`): `include=media_links.original` on show file,
//! the presigned download it points to (whole, ranged, HEAD, stalled), and the knobs that
//! make it go wrong (`download_forbidden`, `corrupt_original_next`, `original_missing_ms`).

mod common;

use common::{agent, delete, get, local_upload, path_and_query, post_json, put};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use sim::{FrameIo, Options};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// A fresh directory for kept originals, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "sim-originals-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&p);
        TempDir(p)
    }

    /// Names of the files in it.
    fn files(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.0)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn start(originals: Option<&TempDir>) -> (FrameIo, String) {
    let sim = FrameIo::start(Options {
        originals_dir: originals.map(|d| d.0.clone()),
        ..Options::default()
    })
    .unwrap();
    sim.set_faults(|f| {
        f.rate_limits = false;
        f.part_size = 100_000;
        f.single_part_below = 0;
    });
    let t = sim.login_tokens().access_token;
    (sim, t)
}

fn bytes(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| ((i * 7 % 251) as u8).wrapping_add(seed))
        .collect()
}

fn sha(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// Serves `data` to any GET or HEAD (200, exact `Content-Length`), one connection per request:
/// the source of a remote upload.
fn source(data: Vec<u8>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
            }
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                data.len()
            );
            let _ = conn.write_all(head.as_bytes());
            if line.starts_with("GET ") {
                let _ = conn.write_all(&data);
            }
        }
    });
    addr
}

/// A remote upload of `data` into `folder_id`, pulled and complete.
fn pulled(sim: &FrameIo, t: &str, folder_id: &str, name: &str, data: &[u8]) -> String {
    let url = format!("http://{}/f/tok/{name}", source(data.to_vec()));
    let path = format!(
        "/v4/accounts/{}/folders/{folder_id}/files/remote_upload",
        sim.account_id()
    );
    let r = post_json(
        sim.base_url(),
        t,
        &path,
        &json!({"data":{"name":name,"source_url":url}}),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let id = r.json()["data"]["id"].as_str().unwrap().to_string();
    let f = sim.wait_for_file(&id, Duration::from_secs(10)).unwrap();
    assert!(f.upload_complete, "{f:?}");
    id
}

/// A local upload of `name` (`size` bytes); returns its id and part URLs (size, url).
fn created(sim: &FrameIo, t: &str, name: &str, size: usize) -> (String, Vec<(usize, String)>) {
    let u = local_upload(sim, t, name, size as u64);
    let urls = u
        .urls
        .into_iter()
        .map(|(n, url)| (n as usize, url))
        .collect();
    (u.id, urls)
}

/// PUTs part `i` (0-based) of `data` to its URL.
fn put_part(urls: &[(usize, String)], data: &[u8], i: usize) {
    let offset: usize = urls[..i].iter().map(|(s, _)| s).sum();
    let (size, url) = &urls[i];
    let r = put(
        url,
        &[
            ("Content-Type", "video/quicktime"),
            ("x-amz-acl", "private"),
        ],
        &data[offset..offset + size],
    );
    assert_eq!(r.status, 200, "{}", r.body);
}

/// A local upload of `data`, its parts sent last to first, complete.
fn uploaded(sim: &FrameIo, t: &str, name: &str, data: &[u8]) -> String {
    let (id, urls) = created(sim, t, name, data.len());
    assert!(urls.len() > 1, "the test wants several parts");
    for i in (0..urls.len()).rev() {
        put_part(&urls, data, i);
    }
    let f = sim.wait_for_file(&id, Duration::from_secs(10)).unwrap();
    assert!(f.upload_complete, "{f:?}");
    id
}

/// `GET …/files/{id}?include=…` as the product sends it; the answer's status and JSON.
fn show(sim: &FrameIo, t: &str, id: &str, include: Option<&str>) -> (u16, Value) {
    let mut path = format!("/v4/accounts/{}/files/{id}", sim.account_id());
    if let Some(i) = include {
        path.push_str(&format!("?include={i}"));
    }
    let r = get(sim.base_url(), t, &path);
    (r.status, r.json())
}

/// `data.media_links.original.download_url`, which must be there.
fn download_url(sim: &FrameIo, t: &str, id: &str) -> String {
    let (status, j) = show(sim, t, id, Some("media_links.original"));
    assert_eq!(status, 200, "{j}");
    j["data"]["media_links"]["original"]["download_url"]
        .as_str()
        .unwrap_or_else(|| panic!("no download_url: {j}"))
        .to_string()
}

struct Got {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Got {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A plain GET (or HEAD) of a download URL, no Authorization header, as the product sends it.
fn fetch(method: &str, url: &str, range: Option<&str>) -> Got {
    let mut req = ureq::http::Request::builder().method(method).uri(url);
    if let Some(r) = range {
        req = req.header("Range", r);
    }
    let mut r = agent().run(req.body(()).unwrap()).unwrap();
    let headers = r
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let mut body = Vec::new();
    r.body_mut()
        .as_reader()
        .read_to_end(&mut body)
        .expect("download body");
    Got {
        status: r.status().as_u16(),
        headers,
        body,
    }
}

fn xml_code(body: &str) -> &str {
    let s = body.find("<Code>").expect("S3 XML error") + 6;
    &body[s..s + body[s..].find("</Code>").unwrap()]
}

#[test]
fn originals_pulled_or_put_come_back_byte_for_byte_whole_and_in_ranges() {
    let dir = TempDir::new();
    let (sim, t) = start(Some(&dir));
    let folder = sim.add_folder(&sim.root_folder_id(), "SQ01");
    let pulled_data = bytes(300_001, 1);
    let put_data = bytes(250_000, 2);
    let remote = pulled(&sim, &t, &folder, "A001.mov", &pulled_data);
    let local = uploaded(&sim, &t, "A002.mov", &put_data);
    assert_eq!(dir.files(), {
        let mut v = vec![remote.clone(), local.clone()];
        v.sort();
        v
    });

    // Without the include, no media_links (as before); with it, only `original` is set.
    let (_, plain) = show(&sim, &t, &remote, None);
    assert!(plain["data"].get("media_links").is_none(), "{plain}");
    let (status, j) = show(&sim, &t, &remote, Some("media_links.original,creator"));
    assert_eq!(status, 200, "{j}");
    let links = &j["data"]["media_links"];
    assert!(
        links["thumbnail"].is_null() && links["high_quality"].is_null(),
        "{j}"
    );
    let url = links["original"]["download_url"].as_str().unwrap();
    assert_eq!(links["original"]["inline_url"], url);
    assert!(url.starts_with(&format!("{}/", sim.base_url())), "{url}");
    assert!(url.contains("X-Amz-Expires=3600"), "{url}");

    for (id, data) in [(&remote, &pulled_data), (&local, &put_data)] {
        let url = download_url(&sim, &t, id);
        let whole = fetch("GET", &url, None);
        assert_eq!(whole.status, 200);
        assert_eq!(
            whole.header("content-length"),
            Some(data.len().to_string().as_str())
        );
        assert_eq!(whole.header("content-type"), Some("video/quicktime"));
        assert!(whole.header("etag").is_some_and(|e| e.len() > 2));
        assert!(
            whole.body == *data,
            "the download differs from what was sent"
        );

        let part = fetch("GET", &url, Some("bytes=1000-1999"));
        assert_eq!(part.status, 206);
        assert_eq!(
            part.header("content-range").map(str::to_string),
            Some(format!("bytes 1000-1999/{}", data.len()))
        );
        assert_eq!(part.header("content-length"), Some("1000"));
        assert!(part.body == data[1000..2000]);

        let tail = fetch("GET", &url, Some(&format!("bytes={}-", data.len() - 10)));
        assert_eq!(tail.status, 206);
        assert!(tail.body == data[data.len() - 10..]);

        let past = fetch("GET", &url, Some(&format!("bytes={}-", data.len())));
        assert_eq!(past.status, 416);
        assert_eq!(
            past.header("content-range").map(str::to_string),
            Some(format!("bytes */{}", data.len()))
        );

        let head = fetch("HEAD", &url, None);
        assert_eq!(head.status, 200);
        assert_eq!(
            head.header("content-length"),
            Some(data.len().to_string().as_str())
        );
        assert!(head.body.is_empty());
        assert_eq!(sim.download_count(id), 3, "whole, range, tail");
    }
    assert_eq!(sim.request_count("download_original", Some(206)), 4);
    let logged = sim.downloads();
    assert_eq!(logged.len(), 10);
    assert_eq!(logged[0].bytes_sent, 300_001);
    assert_eq!(logged[1].range.as_deref(), Some("bytes=1000-1999"));
    assert_eq!(logged[1].bytes_sent, 1000);

    // Deleting the file (or its folder) removes what was kept, and the link with it.
    let stale = download_url(&sim, &t, &local);
    let account = sim.account_id();
    let r = delete(
        sim.base_url(),
        &t,
        &format!("/v4/accounts/{account}/files/{local}"),
    );
    assert_eq!(r.status, 204);
    assert_eq!(dir.files(), std::slice::from_ref(&remote));
    let gone = fetch("GET", &stale, None);
    assert_eq!(gone.status, 404);
    assert_eq!(xml_code(&gone.text()), "NoSuchKey");
    let r = delete(
        sim.base_url(),
        &t,
        &format!("/v4/accounts/{account}/folders/{folder}"),
    );
    assert_eq!(r.status, 204);
    assert!(dir.files().is_empty(), "{:?}", dir.files());
}

#[test]
fn the_link_is_null_until_the_file_is_complete_and_while_original_missing_ms_lasts() {
    let dir = TempDir::new();
    let (sim, t) = start(Some(&dir));
    let data = bytes(250_000, 3);
    let (id, urls) = created(&sim, &t, "B001.mov", data.len());
    let original = |sim: &FrameIo| {
        let (status, j) = show(sim, &t, &id, Some("media_links.original"));
        assert_eq!(status, 200, "{j}");
        j["data"]["media_links"]["original"].clone()
    };
    assert!(original(&sim).is_null());
    put_part(&urls, &data, 0);
    assert!(original(&sim).is_null(), "one part of three is in");

    sim.set_faults(|f| f.original_missing_ms = 3_600_000);
    for i in 1..urls.len() {
        put_part(&urls, &data, i);
    }
    assert!(
        sim.wait_for_file(&id, Duration::from_secs(10))
            .unwrap()
            .upload_complete
    );
    assert!(
        original(&sim).is_null(),
        "complete, but Frame.io has not made the link yet"
    );
    sim.set_faults(|f| f.original_missing_ms = 0);
    let url = original(&sim)["download_url"].as_str().unwrap().to_string();
    assert!(fetch("GET", &url, None).body == data);

    // Without originals_dir nothing is kept and the link never appears.
    let (bare, t2) = start(None);
    let id = uploaded(&bare, &t2, "B002.mov", &data);
    let (status, j) = show(&bare, &t2, &id, Some("media_links.original"));
    assert_eq!(status, 200);
    assert!(j["data"]["media_links"]["original"].is_null(), "{j}");
    assert!(!bare.file(&id).unwrap().original_kept);
}

#[test]
fn corrupt_original_next_changes_one_byte_of_what_is_downloaded() {
    let dir = TempDir::new();
    let (sim, t) = start(Some(&dir));
    sim.set_faults(|f| f.corrupt_original_next = 1);
    let data = bytes(250_000, 4);
    let bad = uploaded(&sim, &t, "C001.mov", &data);
    let good = pulled(&sim, &t, &sim.root_folder_id(), "C002.mov", &data);

    let got = fetch("GET", &download_url(&sim, &t, &bad), None).body;
    assert_eq!(got.len(), data.len());
    let differing: Vec<usize> = (0..data.len()).filter(|&i| got[i] != data[i]).collect();
    assert_eq!(differing, [data.len() / 2]);
    let f = sim.file(&bad).unwrap();
    assert_eq!(
        f.sha256.as_deref(),
        Some(sha(&data).as_str()),
        "what was received"
    );
    assert!(f.original_corrupted && f.original_kept);
    assert_eq!(
        sim.original_sha256(&bad).as_deref(),
        Some(sha(&got).as_str())
    );
    assert!(sim.by_path()["C001.mov"].original_corrupted);

    // Only the next one: the file after it is kept as sent.
    assert!(fetch("GET", &download_url(&sim, &t, &good), None).body == data);
    assert!(!sim.file(&good).unwrap().original_corrupted);
    assert!(!sim.by_path()["C002.mov"].original_corrupted);
    assert_eq!(
        sim.original_sha256(&good).as_deref(),
        Some(sha(&data).as_str())
    );
}

#[test]
fn a_part_s3_accepted_corrupted_is_kept_corrupted() {
    let dir = TempDir::new();
    let (sim, t) = start(Some(&dir));
    sim.set_faults(|f| f.s3_corrupt_every = 3);
    let data = bytes(250_000, 5);
    let id = uploaded(&sim, &t, "D001.mov", &data);
    // Parts go last to first; the third PUT read is part 1, whose first byte changed.
    let got = fetch("GET", &download_url(&sim, &t, &id), None).body;
    let differing: Vec<usize> = (0..data.len()).filter(|&i| got[i] != data[i]).collect();
    assert_eq!(differing, [0]);
    assert_eq!(sim.file(&id).unwrap().sha256, Some(sha(&got)));
}

#[test]
fn download_forbidden_answers_the_include_with_403() {
    let dir = TempDir::new();
    let (sim, t) = start(Some(&dir));
    let id = uploaded(&sim, &t, "E001.mov", &bytes(250_000, 6));
    sim.set_faults(|f| f.download_forbidden = true);
    let (status, j) = show(&sim, &t, &id, Some("media_links.original"));
    assert_eq!(status, 403, "{j}");
    assert_eq!(j["errors"][0]["title"], "Forbidden");
    assert!(j["errors"][0]["detail"]
        .as_str()
        .unwrap()
        .contains("download"));
    let (status, _) = show(&sim, &t, &id, None);
    assert_eq!(status, 200, "the file itself can still be shown");
    assert_eq!(sim.request_count("show_file", Some(403)), 1);
}

#[test]
fn tampered_expired_or_authorised_download_urls_are_refused_as_s3_does() {
    let dir = TempDir::new();
    let (sim, t) = start(Some(&dir));
    let id = uploaded(&sim, &t, "F001.mov", &bytes(250_000, 7));
    let url = download_url(&sim, &t, &id);

    let tampered = url.replace("X-Amz-Expires=3600", "X-Amz-Expires=7200");
    let r = fetch("GET", &tampered, None);
    assert_eq!(r.status, 403);
    assert_eq!(xml_code(&r.text()), "SignatureDoesNotMatch");

    let r = agent()
        .get(&url)
        .header("Authorization", format!("Bearer {t}"))
        .call()
        .unwrap();
    assert_eq!(r.status().as_u16(), 400, "one auth mechanism only");

    sim.set_faults(|f| f.download_url_lifetime_secs = 0);
    let expired = download_url(&sim, &t, &id);
    let r = fetch("GET", &expired, None);
    assert_eq!(r.status, 403);
    assert_eq!(xml_code(&r.text()), "AccessDenied");
    assert!(r.text().contains("Request has expired"));
    assert_eq!(sim.download_count(&id), 0);
    assert_eq!(sim.request_count("download_original", Some(403)), 2);
    assert!(path_and_query(&url).starts_with(&format!("/s3/originals/{id}?")));
}

#[test]
fn a_stalled_download_holds_the_connection_until_released() {
    let dir = TempDir::new();
    let (sim, t) = start(Some(&dir));
    let data = bytes(300_000, 8);
    let id = uploaded(&sim, &t, "G001.mov", &data);
    let url = download_url(&sim, &t, &id);
    sim.set_faults(|f| f.download_stall_after = Some(65_536));

    let addr = sim.base_url().trim_start_matches("http://").to_string();
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n",
        path_and_query(&url)
    )
    .unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut head = String::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        if line == "\r\n" || line.is_empty() {
            break;
        }
        head.push_str(&line);
    }
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("Content-Length: 300000"), "{head}");
    let mut body = vec![0u8; 65_536];
    r.read_exact(&mut body).unwrap();

    // Nothing more comes while the stall lasts, and the download is already counted.
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut more = [0u8; 1];
    let held = r.read(&mut more);
    assert!(
        held.as_ref().is_err_and(|e| matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        )),
        "{held:?}"
    );
    assert_eq!(sim.download_count(&id), 1);

    sim.set_faults(|f| f.download_stall_after = None);
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    r.read_to_end(&mut body).unwrap();
    assert!(body == data, "the rest came once released");
}
