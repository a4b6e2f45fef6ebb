//! bench/bulk: a card offload. N small clips dropped at once into one folder of the watch root
//! go through the real postflow binary into the simulated Frame.io, which enforces Frame.io's
//! documented per-endpoint rate limits (5 creates a second, 5 status polls a second, 100
//! folder listings a minute, …).
//!
//! Prints the wall time (postflow started with the files in place → every job `done`), the
//! floor Frame.io's create and status limits set (every file needs one create and at least
//! one status poll; they have a bucket each, so N / 5 s), the ratio, and the calls per file by
//! endpoint. Targets (issue 12): at most 0.1 folder listings per file for 300 files, and the
//! wall time within 1.5x of the floor. Exits non-zero only if a file did not arrive exactly
//! once with the right bytes.
//!
//! `cargo build --release --workspace --bins --examples` first (`bench/bulk` does), then
//! `cargo run --release --example bulk -- [--files N] [--mode local|remote]
//! [--concurrency C] [--existing K] [--dir D] [--postflow PATH]`. `--existing K` puts K files
//! in the Frame.io folder beforehand (a dailies folder that has grown: a listing would cost
//! K/100 pages); `--postflow` runs another build (an older one, for a before/after).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use sim::{FrameIo, Options};

/// Frame.io's limits that set the floor: remote_upload / local_upload, and file status.
const CREATES_PER_SEC: f64 = 5.0;
const STATUS_PER_SEC: f64 = 5.0;

struct Args {
    files: usize,
    mode: String,
    concurrency: usize,
    existing: usize,
    dir: PathBuf,
    postflow: PathBuf,
}

fn parse_args() -> Result<Args, String> {
    let bin_dir = bin_dir();
    let mut a = Args {
        files: 300,
        mode: "local".into(),
        concurrency: 2,
        existing: 0,
        dir: bin_dir.parent().unwrap_or(&bin_dir).join("bulk"),
        postflow: bin_dir.join("postflow"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let num = |v: String| {
            v.parse::<usize>()
                .map_err(|_| format!("{flag}: not a number"))
        };
        match flag.as_str() {
            "--files" => a.files = num(value()?)?,
            "--mode" => a.mode = value()?,
            "--concurrency" => a.concurrency = num(value()?)?,
            "--existing" => a.existing = num(value()?)?,
            "--dir" => a.dir = value()?.into(),
            "--postflow" => a.postflow = value()?.into(),
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    if a.files == 0 || !["local", "remote"].contains(&a.mode.as_str()) {
        return Err("need --files >= 1 and --mode local|remote".into());
    }
    Ok(a)
}

/// target/<profile>: this example lives in target/<profile>/examples.
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>/examples/bulk")
        .to_path_buf()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `/api/queue/stats` of the running instance: jobs done.
fn done(dashboard: u16) -> Option<u64> {
    let mut resp = ureq::get(&format!("http://127.0.0.1:{dashboard}/api/queue/stats"))
        .call()
        .ok()?;
    let v: Value = serde_json::from_str(&resp.body_mut().read_to_string().ok()?).ok()?;
    v["counts"]["done"].as_u64()
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("bulk: {e}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<bool, String> {
    let args = parse_args()?;
    let postflow = std::path::absolute(&args.postflow).map_err(|e| e.to_string())?;
    if !postflow.exists() {
        return Err(format!(
            "{} missing: cargo build --release --workspace --bins --examples",
            postflow.display()
        ));
    }
    let _ = std::fs::remove_dir_all(&args.dir);
    let (watch, state) = (args.dir.join("watch"), args.dir.join("state"));
    std::fs::create_dir_all(watch.join("A001")).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(&state).map_err(|e| e.to_string())?;

    let sim = FrameIo::start(Options::default()).map_err(|e| format!("simulator: {e}"))?;
    if args.existing > 0 {
        let folder = sim.add_folder(&sim.root_folder_id(), "A001");
        for i in 0..args.existing {
            sim.add_file(&folder, &format!("B001C{i:04}.wav"), 1000);
        }
    }
    let t = sim.login_tokens();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let tokens = json!({"access_token": t.access_token, "refresh_token": t.refresh_token,
                        "expires_at": now + t.expires_in});
    std::fs::write(state.join("tokens.json"), tokens.to_string()).map_err(|e| e.to_string())?;

    // The clips: 1 to 64 KB of distinct bytes each, so bytes are never the bottleneck.
    let mut expected = BTreeMap::new();
    let mut x: u32 = 0x9E37_79B9;
    for i in 0..args.files {
        let size = 1000 + (i * 2_117) % 63_000;
        let bytes: Vec<u8> = (0..size)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        let rel = format!("A001/A001C{i:04}.wav");
        std::fs::write(watch.join(&rel), &bytes).map_err(|e| e.to_string())?;
        expected.insert(rel, sha256(&bytes));
    }

    let (dash, serve) = (free_port(), free_port());
    let tunnel = match args.mode.as_str() {
        "remote" => json!({"mode": "external", "public_url": format!("http://127.0.0.1:{serve}")}),
        _ => json!({"mode": "off"}),
    };
    let config = json!({
        "watch": {"root": "watch", "settle_secs": 1, "rescan_secs": 60, "upload_existing": true},
        "frameio": {
            "client_id": sim.client_id(), "client_secret": sim.client_secret(),
            "redirect_uri": sim.redirect_uri(), "account_id": sim.account_id(),
            "project_id": sim.project_id(), "api_base": sim.base_url(),
            "ims_base": sim.base_url(), "upload": args.mode,
        },
        "upload": {"concurrency": args.concurrency},
        "serve": {"listen": format!("127.0.0.1:{serve}")},
        "tunnel": tunnel,
        "dashboard": {"listen": format!("127.0.0.1:{dash}")},
        "state_dir": "state",
        "log_level": "info",
    });
    let config_path = args.dir.join("config.json");
    std::fs::write(&config_path, config.to_string()).map_err(|e| e.to_string())?;
    let log = std::fs::File::create(args.dir.join("postflow.log")).map_err(|e| e.to_string())?;

    let started = Instant::now();
    let mut child = Command::new(&postflow)
        .arg("run")
        .arg(&config_path)
        .current_dir(&args.dir)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("start postflow: {e}"))?;
    let limit = Duration::from_secs(120 + args.files as u64 * 3);
    let wall = loop {
        if done(dash) == Some(args.files as u64) {
            break started.elapsed();
        }
        if started.elapsed() > limit || child.try_wait().ok().flatten().is_some() {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "not done after {:.0} s (see {})",
                started.elapsed().as_secs_f64(),
                args.dir.join("postflow.log").display()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();

    // Exactly once, with the right bytes.
    let have = sim.by_path();
    let wrong: Vec<&String> = expected
        .iter()
        .filter(|(path, sha)| {
            have.get(*path).is_none_or(|e| {
                e.copies != 1 || e.complete != 1 || e.sha256.as_deref() != Some(sha.as_str())
            })
        })
        .map(|(path, _)| path)
        .collect();

    let n = args.files as f64;
    let floor = (n / CREATES_PER_SEC).max(n / STATUS_PER_SEC);
    let mut calls: BTreeMap<String, u64> = BTreeMap::new();
    let mut limited = 0;
    for (key, count) in sim.counters() {
        let (endpoint, status) = key.rsplit_once(' ').unwrap_or((&key, ""));
        *calls.entry(endpoint.to_string()).or_default() += count;
        if status == "429" {
            limited += count;
        }
    }
    let listings = *calls.get("list_children").unwrap_or(&0) as f64 / n;
    let ratio = wall.as_secs_f64() / floor;
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    println!(
        "bulk: {} files ({}, upload.concurrency {}) into one folder already holding {} files",
        args.files, args.mode, args.concurrency, args.existing
    );
    println!(
        "wall {:.1} s (start to last done; includes the 1 s settle); floor {floor:.1} s \
         ({} creates at {CREATES_PER_SEC}/s, as many status polls at {STATUS_PER_SEC}/s): \
         {ratio:.2}x the floor [target <= 1.5x: {}]",
        wall.as_secs_f64(),
        args.files,
        verdict(ratio <= 1.5)
    );
    println!(
        "folder listings: {listings:.3} per file ({} in all) [target <= 0.1: {}]",
        calls.get("list_children").unwrap_or(&0),
        verdict(listings <= 0.1)
    );
    let per_file: Vec<String> = calls
        .iter()
        .filter(|(e, _)| !e.starts_with("ims_"))
        .map(|(e, c)| format!("{e} {:.3}", *c as f64 / n))
        .collect();
    println!("calls per file: {}; 429s: {limited}", per_file.join(", "));
    if wrong.is_empty() {
        println!(
            "arrived once with the right bytes: {} of {}",
            args.files, args.files
        );
        let _ = std::fs::remove_dir_all(&args.dir);
        Ok(true)
    } else {
        println!(
            "NOT exactly once: {} files, e.g. {:?} (left in {})",
            wrong.len(),
            &wrong[..wrong.len().min(5)],
            args.dir.display()
        );
        Ok(false)
    }
}
