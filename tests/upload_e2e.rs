//! The heart of the product, on the real binary against the simulated Frame.io: every file
//! dropped into the watch folder arrives once, in the right folder, with the right bytes.

mod common;
mod frameio_support;

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::Child;
use std::time::Duration;

use common::{signal, wait_exit, Sandbox};
use frameio_support::{config_for, seed_tokens, start_sim};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use sim::{FetchMode, FrameIo};

/// A free loopback port (bound and released: a tiny race, fine for tests).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Writes a file of `size` bytes: pseudo-random data, or for big files random heads and tails
/// around a sparse middle (the bytes still differ from file to file). QuickTime/MP4 files get
/// a real top-level atom layout (`ftyp`, `moov`, then `mdat` to the end), because postflow
/// waits for a complete `moov` before uploading them.
fn make_file(path: &Path, size: u64, seed: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut x = seed.wrapping_mul(2_654_435_761).max(1);
    let mut noise = |n: u64| -> Vec<u8> {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect()
    };
    let tmp = path.with_extension("partial");
    let mut f = std::fs::File::create(&tmp).unwrap();
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let mut head = Vec::new();
    if ["mov", "mp4", "m4v"].contains(&ext) {
        assert!(size >= 64, "a QuickTime file needs room for its atoms");
        head.extend_from_slice(&20u32.to_be_bytes());
        head.extend_from_slice(b"ftypqt  \0\0\0\0qt  ");
        head.extend_from_slice(&24u32.to_be_bytes());
        head.extend_from_slice(b"moov");
        head.extend_from_slice(&noise(16));
        let mdat = size - head.len() as u64;
        head.extend_from_slice(&(mdat as u32).to_be_bytes());
        head.extend_from_slice(b"mdat");
    }
    f.write_all(&head).unwrap();
    let body = size - head.len() as u64;
    if body <= 4 << 20 {
        f.write_all(&noise(body)).unwrap();
    } else {
        f.write_all(&noise(1 << 20)).unwrap();
        f.set_len(size).unwrap();
        f.seek(SeekFrom::Start(size - (1 << 20))).unwrap();
        f.write_all(&noise(1 << 20)).unwrap();
    }
    drop(f);
    // Renamed into place finished, like a render that writes a temp file (excluded: *.partial).
    std::fs::rename(tmp, path).unwrap();
}

fn sha256_file(path: &Path) -> String {
    let mut f = std::fs::File::open(path).unwrap();
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// A sandbox, a simulator and a config for remote (external tunnel) or local uploads.
struct Rig {
    sandbox: Sandbox,
    sim: FrameIo,
    config: Value,
}

impl Rig {
    fn new(name: &str, mode: &str, change: impl FnOnce(&mut sim::Options)) -> Rig {
        let sandbox = Sandbox::new(name);
        let sim = start_sim(change);
        let mut config = config_for(&sandbox, &sim);
        let port = free_port();
        config["serve"] = json!({ "listen": format!("127.0.0.1:{port}") });
        config["frameio"]["upload"] = json!(mode);
        config["tunnel"] = match mode {
            "local" => json!({ "mode": "off" }),
            _ => json!({ "mode": "external", "public_url": format!("http://127.0.0.1:{port}") }),
        };
        config["upload"] = json!({ "concurrency": 3 });
        config["log_level"] = json!("info,postflow::upload=debug");
        // Files may land before the first scan ends; they are part of the run, not a baseline.
        config["watch"]["upload_existing"] = json!(true);
        seed_tokens(&sim, &sandbox.state_dir(), None);
        Rig {
            sandbox,
            sim,
            config,
        }
    }

    fn start(&self) -> Child {
        let path = self.sandbox.write_config(&self.config);
        let child = self.sandbox.spawn_run(&path);
        self.sandbox.wait_for_lock_owner(child.id());
        child
    }

    /// Waits until every expected Frame.io path has a complete copy.
    fn wait_arrived(&self, expected: &BTreeMap<String, String>, limit: Duration) {
        let start = std::time::Instant::now();
        loop {
            let have = self.sim.by_path();
            let missing: Vec<_> = expected
                .keys()
                .filter(|p| have.get(*p).is_none_or(|e| e.complete < 1))
                .collect();
            // Arrived in Frame.io, and postflow has seen it complete (its job is done).
            let done = self.sandbox.log().matches("upload done: ").count();
            if missing.is_empty() && done >= expected.len() {
                return;
            }
            assert!(
                start.elapsed() < limit,
                "after {limit:?}: missing {missing:?}, {done} done\nFrame.io has {have:?}\n\
                 S3 PUTs (part, status, bytes): {:?}\nlog:\n{}",
                self.sim
                    .s3_puts()
                    .iter()
                    .map(|p| (p.part_number, p.status, p.body_len))
                    .collect::<Vec<_>>(),
                self.sandbox.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Every expected file is there exactly once with the right bytes, and nothing else.
    fn assert_exactly(&self, expected: &BTreeMap<String, String>) {
        let have = self.sim.by_path();
        for (path, sha) in expected {
            let entry = have
                .get(path)
                .unwrap_or_else(|| panic!("{path} missing; Frame.io has {:?}", have.keys()));
            assert_eq!(entry.copies, 1, "{path}: copies");
            assert_eq!(entry.complete, 1, "{path}: complete copies");
            assert_eq!(entry.sha256.as_deref(), Some(sha.as_str()), "{path}: bytes");
        }
        let extra: Vec<_> = have.keys().filter(|p| !expected.contains_key(*p)).collect();
        assert!(extra.is_empty(), "unexpected files in Frame.io: {extra:?}");
    }
}

fn stop(rig: &Rig, mut child: Child) -> String {
    signal(child.id(), "TERM");
    let status = wait_exit(&mut child, Duration::from_secs(15));
    let log = rig.sandbox.log();
    assert_eq!(status.code(), Some(0), "{log}");
    log
}

/// Drops a varied set of files into the watch root; returns Frame.io path -> sha256.
fn drop_files(sandbox: &Sandbox, layout_dest: impl Fn(&str) -> String) -> BTreeMap<String, String> {
    let files: &[(&str, u64)] = &[
        ("one_byte.wav", 1),
        ("SQ01_UNDLM_00412_v001.mov", 700_000),
        ("SQ01_UNDLM_00413_v002.mov", 3_000_000),
        ("nested/deeper/plate.exr", 123_457),
        ("nested/notes.pdf", 5_000),
        ("SQ02_UNDLM_00001_v001.mp4", 48 << 20),
    ];
    let mut expected = BTreeMap::new();
    for (i, (rel, size)) in files.iter().enumerate() {
        let path = sandbox.watch_root().join(rel);
        make_file(&path, *size, i as u32 + 1);
        expected.insert(layout_dest(rel), sha256_file(&path));
    }
    expected
}

fn mirrored(rel: &str) -> String {
    rel.to_string()
}

#[test]
fn remote_uploads_with_plain_gets_arrive_once_with_the_right_bytes() {
    let rig = Rig::new("up-remote-plain", "remote", |o| {
        o.faults.fetch_mode = FetchMode::Plain
    });
    let child = rig.start();
    let expected = drop_files(&rig.sandbox, mirrored);
    rig.wait_arrived(&expected, Duration::from_secs(150));
    let log = stop(&rig, child);
    rig.assert_exactly(&expected);
    assert!(rig.sim.s3_puts().is_empty(), "remote mode sends no parts");
    assert!(
        log.contains("upload done: SQ01_UNDLM_00412_v001.mov"),
        "{log}"
    );
}

#[test]
fn remote_uploads_with_parallel_ranges_arrive_once_with_the_right_bytes() {
    let rig = Rig::new("up-remote-ranges", "remote", |o| {
        o.faults.fetch_mode = FetchMode::Ranges;
        o.faults.fetch_parallelism = 4;
    });
    let child = rig.start();
    let expected = drop_files(&rig.sandbox, mirrored);
    rig.wait_arrived(&expected, Duration::from_secs(150));
    stop(&rig, child);
    rig.assert_exactly(&expected);
    assert!(
        rig.sim.fetches().iter().any(|f| f.range.is_some()),
        "the fetcher used ranges"
    );
}

#[test]
fn local_uploads_arrive_once_with_the_right_bytes_and_the_layout_template() {
    let mut rig = Rig::new("up-local", "local", |o| {
        o.faults.part_size = 5 << 20;
        o.faults.single_part_below = 1 << 20;
    });
    rig.config["layout"] = json!({
        "pattern": "{seq}_UNDLM_{shot}_v{version}.{ext}",
        "folders": "{seq}/UNDLM_{shot}",
        "unmatched": "mirror"
    });
    rig.config["frameio"]["folder"] = json!("Dailies");
    let child = rig.start();
    let expected = drop_files(&rig.sandbox, |rel| {
        let name = rel.rsplit('/').next().unwrap();
        let dest = match name.split('_').collect::<Vec<_>>().as_slice() {
            [seq, "UNDLM", shot, _] => format!("{seq}/UNDLM_{shot}/{name}"),
            _ => rel.to_string(),
        };
        format!("Dailies/{dest}")
    });
    assert!(expected.contains_key("Dailies/SQ01/UNDLM_00412/SQ01_UNDLM_00412_v001.mov"));
    rig.wait_arrived(&expected, Duration::from_secs(150));
    stop(&rig, child);
    rig.assert_exactly(&expected);
    assert!(
        rig.sim.fetches().iter().all(|f| f.file_id.is_empty()),
        "local mode is never pulled"
    );
    let puts = rig.sim.s3_puts();
    for put in &puts {
        let header = |n: &str| {
            put.headers
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(header("x-amz-acl").as_deref(), Some("private"));
        assert_eq!(header("transfer-encoding"), None);
        assert!(header("content-type").is_some_and(|t| t != "application/octet-stream"));
    }
    // A part may have been sent twice (a stalled PUT is abandoned after 30 s and retried on
    // its own); what matters is that the last PUT of every part succeeded.
    let mut last: BTreeMap<(String, u32), u16> = BTreeMap::new();
    for put in &puts {
        last.insert((put.file_id.clone(), put.part_number), put.status);
    }
    let failed: Vec<_> = puts.iter().filter(|p| p.status != 200).collect();
    assert!(
        last.values().all(|&status| status == 200),
        "a part never went through: {failed:?}"
    );
    if !failed.is_empty() {
        eprintln!("parts sent again after a failed PUT: {failed:?}");
    }
    assert_eq!(
        rig.sim.create_count("Dailies", "SQ01", "folder"),
        1,
        "one folder, made once"
    );
}
