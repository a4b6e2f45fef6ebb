//! Helpers for the upload stories: a sandbox with a simulated Frame.io and a postflow config
//! pointing at it, files with known bytes, and the checks "arrived once with these bytes".
//! They hide plumbing, never assertions about the product.
#![allow(dead_code)] // each test file uses a different subset

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use sim::FrameIo;

use crate::common::{signal, wait_exit, Sandbox, SpawnExt};
use crate::frameio_support::{config_for, seed_tokens, start_sim};

/// A loopback port postflow can be started on again after a `kill -9` (`common::free_port`).
pub fn free_port() -> u16 {
    crate::common::free_port()
}

/// The body of a GET to the running instance, within 30 s: a port that answers nothing must
/// fail the test, not hang it.
fn get(url: &str) -> Result<String, ureq::Error> {
    ureq::get(url)
        .config()
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .call()?
        .body_mut()
        .read_to_string()
}

/// Panics with the log when the postflow this test keeps running has exited.
fn fail_if_exited(what: &str) {
    if let Some(exited) = crate::common::exited_unexpectedly() {
        panic!("{exited} while the test waited for {what}");
    }
}

/// Writes a file of `size` bytes: pseudo-random data, or for big files random heads and tails
/// around a sparse middle (the bytes still differ from file to file). QuickTime/MP4 files get
/// a real top-level atom layout (`ftyp`, `moov`, then `mdat` to the end), because postflow
/// waits for a complete `moov` before uploading them.
pub fn make_file(path: &Path, size: u64, seed: u32) {
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

pub fn sha256_file(path: &Path) -> String {
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
pub struct Rig {
    pub sandbox: Sandbox,
    pub sim: FrameIo,
    pub config: Value,
    /// Extra environment for every postflow started by this rig.
    pub env: Vec<(String, String)>,
}

impl Rig {
    pub fn new(name: &str, mode: &str, change: impl FnOnce(&mut sim::Options)) -> Rig {
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
            env: Vec::new(),
        }
    }

    pub fn start(&self) -> Child {
        let path = self.sandbox.write_config(&self.config);
        let mut cmd = self.sandbox.postflow();
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        let child = spawn_logged(cmd.arg("run").arg(&path), &self.sandbox.log_path());
        self.sandbox.track(&child);
        // From here on, a postflow that exits by itself fails the test at once, with its log.
        crate::common::expect_running(child.id(), &self.sandbox.log_path());
        self.sandbox.wait_for_lock_owner(child.id());
        // Listening on its fixed dashboard port (the one the test reads the API on).
        if let Some(listen) = self.config["dashboard"]["listen"].as_str() {
            if !listen.ends_with(":0") {
                let url = format!("http://{listen}/health");
                crate::common::wait_until(Duration::from_secs(60), "the dashboard", || {
                    matches!(get(&url), Ok(_) | Err(ureq::Error::StatusCode(_)))
                });
            }
        }
        child
    }

    /// Waits until every expected Frame.io path has a complete copy.
    pub fn wait_arrived(&self, expected: &BTreeMap<String, String>, limit: Duration) {
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
            fail_if_exited("files to arrive");
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
    pub fn assert_exactly(&self, expected: &BTreeMap<String, String>) {
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

pub fn stop(rig: &Rig, mut child: Child) -> String {
    signal(child.id(), "TERM");
    let waited = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_exit(&mut child, Duration::from_secs(15))
    }));
    let log = rig.sandbox.log();
    let Ok(status) = waited else {
        panic!("postflow did not stop within 15 s of being asked; its log:\n{log}");
    };
    assert_eq!(status.code(), Some(0), "{log}");
    log
}

/// Asserts that a clean upload of each of `names` (file names) said at most six lines at INFO
/// and above, as DESIGN.md promises (start, 25/50/75 %, done, and one more).
pub fn assert_quiet(log: &str, names: &[&str]) {
    for name in names {
        let said: Vec<&str> = log
            .lines()
            .filter(|l| {
                [" INFO ", " WARN ", " ERROR "]
                    .iter()
                    .any(|lv| l.contains(lv))
            })
            .filter(|l| l.contains(name))
            .collect();
        assert!(!said.is_empty(), "{name}: nothing logged at INFO?\n{log}");
        assert!(
            said.len() <= 6,
            "{name}: {} lines at INFO:\n{}",
            said.len(),
            said.join("\n")
        );
    }
}

/// Drops a varied set of files into the watch root; returns Frame.io path -> sha256.
pub fn drop_files(
    sandbox: &Sandbox,
    layout_dest: impl Fn(&str) -> String,
) -> BTreeMap<String, String> {
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

pub fn mirrored(rel: &str) -> String {
    rel.to_string()
}

/// Starts `cmd` with its stderr (the log) appended to `log` and stdout piped.
pub fn spawn_logged(cmd: &mut std::process::Command, log: &Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    cmd.stdout(std::process::Stdio::piped())
        .stderr(log)
        .spawn_retrying()
        .expect("start postflow")
}

/// `kill -9`, and reaps the process.
pub fn kill9(mut child: Child) {
    signal(child.id(), "KILL");
    wait_exit(&mut child, Duration::from_secs(10));
}

impl Rig {
    /// `kill -9` of this rig's postflow, ready for a restart. Under Wine a killed process's
    /// listening port can stay taken for good (measured: still after 30 s, about 1 run in 3;
    /// Windows frees it with the process), so there the dashboard moves to a fresh port: the
    /// API helpers follow it, and nothing a story checks depends on the port.
    pub fn kill9(&mut self, child: Child) {
        kill9(child);
        if cfg!(windows) && self.config["dashboard"]["listen"].is_string() {
            self.with_dashboard();
        }
    }

    /// Gives the dashboard a fixed port (for `postflow upload` and the API); returns it.
    pub fn with_dashboard(&mut self) -> u16 {
        let port = free_port();
        self.config["dashboard"] = json!({ "listen": format!("127.0.0.1:{port}") });
        port
    }

    /// Adds an environment variable for every postflow this rig starts.
    pub fn env(&mut self, key: &str, value: impl Into<String>) {
        self.env.push((key.to_string(), value.into()));
    }

    /// Writes a file of `size` bytes at `rel` under the watch root; returns its SHA-256.
    pub fn make(&self, rel: &str, size: u64, seed: u32) -> String {
        let path = self.sandbox.watch_root().join(rel);
        make_file(&path, size, seed);
        sha256_file(&path)
    }

    /// The running instance's `/api/queue/stats` (the dashboard must have a fixed port).
    pub fn queue_stats(&self) -> Option<Value> {
        let listen = self.config["dashboard"]["listen"].as_str()?;
        serde_json::from_str(&get(&format!("http://{listen}/api/queue/stats")).ok()?).ok()
    }

    /// The running instance's `/api/status` (the dashboard must have a fixed port).
    pub fn status(&self) -> Option<Value> {
        let listen = self.config["dashboard"]["listen"].as_str()?;
        serde_json::from_str(&get(&format!("http://{listen}/api/status")).ok()?).ok()
    }

    /// The transfer the page shows for `name`, if any.
    pub fn transfer(&self, name: &str) -> Option<Value> {
        self.status()?["transfers"]
            .as_array()?
            .iter()
            .find(|t| t["name"] == name)
            .cloned()
    }

    /// Waits for the external tunnel (remote and auto rigs) so the first file already sees it.
    pub fn wait_tunnel_up(&self) {
        crate::common::wait_until(Duration::from_secs(20), "the tunnel", || {
            self.sandbox.log().contains("tunnel up: ")
        });
    }

    /// Jobs of the running instance, from `/api/jobs` (the dashboard must have a fixed port).
    pub fn jobs(&self) -> Vec<Value> {
        let listen = self.config["dashboard"]["listen"].as_str().unwrap();
        let text = get(&format!("http://{listen}/api/jobs?limit=1000")).unwrap_or_else(|e| {
            fail_if_exited("/api/jobs");
            panic!("GET /api/jobs: {e}")
        });
        let body: Value = serde_json::from_str(&text).unwrap();
        body["jobs"].as_array().cloned().unwrap_or_default()
    }

    /// Waits until the running instance has `n` jobs `done` (after a restart the log alone
    /// cannot say: an adopted file logs "upload done" again).
    pub fn wait_done(&self, n: u64, limit: Duration) {
        let start = Instant::now();
        loop {
            let done = self
                .queue_stats()
                .and_then(|s| s["counts"]["done"].as_u64())
                .unwrap_or(0);
            if done >= n {
                return;
            }
            fail_if_exited(&format!("{n} jobs done"));
            assert!(
                start.elapsed() < limit,
                "after {limit:?}: {done} of {n} jobs done\nFrame.io has {:?}\nlog:\n{}",
                self.sim.by_path(),
                self.sandbox.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Frame.io files that are not complete (leftovers), as (path, id).
    pub fn incomplete_files(&self) -> Vec<(String, String)> {
        self.sim
            .files()
            .into_iter()
            .filter(|f| !f.upload_complete)
            .map(|f| (f.path.clone(), f.id.clone()))
            .collect()
    }

    /// The config file this rig writes (for commands other than `run`).
    pub fn config_path(&self) -> PathBuf {
        self.sandbox.write_config(&self.config)
    }
}
