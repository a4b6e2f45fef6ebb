//! Local upload parts against the simulated S3: the bytes arrive whole, and every PUT carries
//! exactly the headers a presigned S3 URL demands.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_channel::never;
use postflow::upload::parts::{put_parts, s3_agent, Part, PartError, PartPlan, PART_STALL};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

fn temp_file(name: &str, size: usize) -> PathBuf {
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("parts-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    let mut f = std::fs::File::create(&path).unwrap();
    let mut x: u32 = 0x1234_5678;
    let bytes: Vec<u8> = (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    f.write_all(&bytes).unwrap();
    path
}

fn sha256_hex(path: &PathBuf) -> String {
    let bytes = std::fs::read(path).unwrap();
    Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Creates a local upload directly (the API client is tested elsewhere).
fn create_local_upload(sim: &sim::FrameIo, name: &str, size: u64) -> (String, Vec<Part>, String) {
    let token = sim.login_tokens().access_token;
    let url = format!(
        "{}/v4/accounts/{}/folders/{}/files/local_upload",
        sim.base_url(),
        sim.account_id(),
        sim.root_folder_id()
    );
    let request = json!({"data": {"name": name, "file_size": size}}).to_string();
    let text = ureq::post(&url)
        .header("authorization", &format!("Bearer {token}"))
        .header("content-type", "application/json")
        .send(&request)
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    let body: Value = serde_json::from_str(&text).unwrap();
    let data = &body["data"];
    let parts = data["upload_urls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| Part {
            url: p["url"].as_str().unwrap().to_string(),
            size: p["size"].as_u64().unwrap(),
        })
        .collect();
    (
        data["id"].as_str().unwrap().to_string(),
        parts,
        data["media_type"]
            .as_str()
            .unwrap_or("application/octet-stream")
            .to_string(),
    )
}

fn small_parts_sim() -> sim::FrameIo {
    let sim = sim::FrameIo::start(sim::Options::default()).unwrap();
    sim.set_faults(|f| {
        f.part_size = 64 * 1024;
        f.single_part_below = 0;
    });
    sim
}

#[test]
fn parts_sent_in_parallel_arrive_whole_with_exactly_the_headers_s3_demands() {
    let sim = small_parts_sim();
    let path = temp_file("SHOT_010.mov", 300 * 1024 + 17);
    let (file_id, parts, media_type) = create_local_upload(&sim, "SHOT_010.mov", 300 * 1024 + 17);
    assert!(
        parts.len() >= 4,
        "expected several parts, got {}",
        parts.len()
    );
    assert_eq!(media_type, "video/quicktime");
    let done = std::sync::Mutex::new(Vec::new());
    let plan = PartPlan {
        path: &path,
        parts: &parts,
        done: &[],
        content_type: &media_type,
        parallel: 3,
        tries: 3,
        backoff: Duration::from_millis(10),
        stall: PART_STALL,
        md5: true,
    };
    let sent = AtomicU64::new(0);
    put_parts(
        &s3_agent(),
        &plan,
        &sent,
        &|i| done.lock().unwrap().push(i),
        &never(),
    )
    .unwrap();
    assert_eq!(
        sent.load(Ordering::SeqCst),
        300 * 1024 + 17,
        "every byte counted once"
    );
    let mut done = done.into_inner().unwrap();
    done.sort();
    assert_eq!(done, (0..parts.len()).collect::<Vec<_>>());

    let file = sim
        .wait_for_file(&file_id, Duration::from_secs(10))
        .unwrap();
    assert!(file.upload_complete, "{file:?}");
    assert_eq!(file.sha256.as_deref(), Some(sha256_hex(&path).as_str()));

    let puts = sim.s3_puts();
    assert_eq!(
        puts.len(),
        parts.len(),
        "one PUT per part, no retries needed"
    );
    for put in &puts {
        assert_eq!(put.status, 200);
        let header = |name: &str| {
            put.headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(header("content-type"), Some("video/quicktime"));
        assert_eq!(header("x-amz-acl"), Some("private"));
        assert_eq!(
            header("content-length"),
            Some(put.body_len.to_string().as_str())
        );
        assert_eq!(header("transfer-encoding"), None, "never chunked");
        assert_eq!(
            header("authorization"),
            None,
            "presigned: no Authorization header"
        );
    }
}

#[test]
fn only_missing_parts_are_sent_on_resume() {
    let sim = small_parts_sim();
    let path = temp_file("resume.mov", 256 * 1024);
    let (file_id, parts, media_type) = create_local_upload(&sim, "resume.mov", 256 * 1024);
    let plan = |done: &'static [usize]| PartPlan {
        path: &path,
        parts: &parts,
        done,
        content_type: &media_type,
        parallel: 2,
        tries: 1,
        backoff: Duration::from_millis(1),
        stall: PART_STALL,
        md5: true,
    };
    put_parts(
        &s3_agent(),
        &plan(&[]),
        &AtomicU64::new(0),
        &|_| {},
        &never(),
    )
    .unwrap();
    let first = sim.s3_puts().len();
    // Pretend parts 0 and 2 were recorded before a restart: only the others go again.
    let before = sim.s3_puts().len();
    put_parts(
        &s3_agent(),
        &plan(&[0, 2]),
        &AtomicU64::new(0),
        &|_| {},
        &never(),
    )
    .unwrap();
    assert_eq!(first, parts.len());
    assert_eq!(sim.s3_puts().len() - before, parts.len() - 2);
    assert!(
        sim.wait_for_file(&file_id, Duration::from_secs(10))
            .unwrap()
            .upload_complete
    );
}

#[test]
fn expired_part_urls_are_reported_as_expired() {
    let sim = small_parts_sim();
    sim.set_faults(|f| f.part_url_lifetime_secs = 0);
    let path = temp_file("late.mov", 100 * 1024);
    let (_, parts, media_type) = create_local_upload(&sim, "late.mov", 100 * 1024);
    std::thread::sleep(Duration::from_millis(1100));
    let plan = PartPlan {
        path: &path,
        parts: &parts,
        done: &[],
        content_type: &media_type,
        parallel: 2,
        tries: 3,
        backoff: Duration::from_millis(1),
        stall: PART_STALL,
        md5: true,
    };
    assert_eq!(
        put_parts(&s3_agent(), &plan, &AtomicU64::new(0), &|_| {}, &never()),
        Err(PartError::Expired)
    );
}

#[test]
fn a_wrong_content_type_is_rejected_not_retried() {
    let sim = small_parts_sim();
    let path = temp_file("wrong.mov", 1000);
    let (_, parts, _) = create_local_upload(&sim, "wrong.mov", 1000);
    let plan = PartPlan {
        path: &path,
        parts: &parts,
        done: &[],
        content_type: "application/octet-stream",
        parallel: 1,
        tries: 3,
        backoff: Duration::from_millis(1),
        stall: PART_STALL,
        md5: true,
    };
    match put_parts(&s3_agent(), &plan, &AtomicU64::new(0), &|_| {}, &never()) {
        Err(PartError::Rejected(m)) => assert!(m.contains("SignatureDoesNotMatch"), "{m}"),
        other => panic!("expected a rejection, got {other:?}"),
    }
    // A signature mismatch is not retried, but for one PUT without Content-MD5 (the URLs may
    // be signed without it: DESIGN "Verification").
    let puts = sim.s3_puts();
    assert_eq!(puts.len(), 2, "{puts:?}");
    let has_md5 = |i: usize| puts[i].headers.iter().any(|(k, _)| k == "content-md5");
    assert!(has_md5(0) && !has_md5(1), "{puts:?}");
}

#[test]
fn a_file_truncated_under_us_fails_cleanly() {
    let sim = small_parts_sim();
    let path = temp_file("shrunk.mov", 200 * 1024);
    let (_, parts, media_type) = create_local_upload(&sim, "shrunk.mov", 200 * 1024);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(1000)
        .unwrap();
    let plan = PartPlan {
        path: &path,
        parts: &parts,
        done: &[],
        content_type: &media_type,
        parallel: 2,
        tries: 3,
        backoff: Duration::from_millis(1),
        stall: PART_STALL,
        md5: true,
    };
    assert!(matches!(
        put_parts(&s3_agent(), &plan, &AtomicU64::new(0), &|_| {}, &never()),
        Err(PartError::File(_))
    ));
}

/// A peer that accepts the connection and then never reads: the part must be cut after the
/// stall period (not wait forever, nor a time scaled to its size) and sent again alone.
#[test]
fn a_connection_that_stops_taking_bytes_is_cut_after_the_stall_period() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/parts/f/part_1", listener.local_addr().unwrap());
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    {
        let accepted = std::sync::Arc::clone(&accepted);
        std::thread::spawn(move || {
            // Holds every connection open, reading nothing.
            let mut held = Vec::new();
            for stream in listener.incoming().flatten() {
                accepted.fetch_add(1, Ordering::SeqCst);
                held.push(stream);
            }
        });
    }
    // Far more than loopback's socket buffers can take without the peer reading.
    let size = 64u64 << 20;
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("stall-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("stalled.mov");
    std::fs::File::create(&path).unwrap().set_len(size).unwrap();
    let parts = [Part { url, size }];
    let plan = PartPlan {
        path: &path,
        parts: &parts,
        done: &[],
        content_type: "video/quicktime",
        parallel: 1,
        tries: 2,
        backoff: Duration::from_millis(10),
        stall: Duration::from_secs(1),
        md5: true,
    };
    let sent = AtomicU64::new(0);
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::scope(|s| {
        s.spawn(|| {
            let _ = tx.send(put_parts(&s3_agent(), &plan, &sent, &|_| {}, &never()));
        });
        let result = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("a stalled part must not hang");
        match result {
            Err(PartError::Transient(m)) => {
                assert!(m.contains("no byte went out for 1 s"), "{m}")
            }
            other => panic!("expected a stall, got {other:?}"),
        }
    });
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        2,
        "cut, then sent again once"
    );
    assert_eq!(
        sent.load(Ordering::SeqCst),
        0,
        "a cut try's bytes are not counted as sent"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
