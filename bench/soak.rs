//! The soak (`make soak`, `make soak-ci`): the real postflow binary, restarted as cron would,
//! against the simulated Frame.io (in this process) under every fault we know of, until each
//! generated file has arrived exactly once with the right bytes.
//!
//! - N files (default 500) from 1 KB to 200 MB (log-uniform sizes; sparse above 4 MB), dropped
//!   into the watch folder over `--drop-secs`, half of them named for the layout template;
//! - Frame.io answers 10 % of its calls with a 5xx (after the effect, for creates: the worst
//!   case), sends bursts of 429s every 20 s, gives 5-second access tokens (refresh tokens
//!   rotate), and its fetcher alternates plain and ranged pulls;
//! - the cloudflared stand-in (quick tunnel) crashes twice (`crash-after`);
//! - postflow is `kill -9`ed three times; a "cron" starts `postflow run` every 3 s whatever
//!   runs (the lock turns the extra starts away).
//! - with `--disk-full` (root: a mount namespace), the state dir is a 16 MB tmpfs that is
//!   filled and freed twice during the drops (one kill -9 falls while it is full): every file
//!   must still arrive once, and `/health` must say 503 while it is full.
//!
//! Prints one summary line and exits non-zero if anything is wrong (a file missing, twice,
//! with other bytes; a job failed; a descriptor leak; a stand-in left running).
//!
//! `cargo build --workspace --bins [--release]` first (the Makefile does), then
//! `cargo run [--release] --example soak -- [--files N] [--max-mb M] [--drop-secs S]
//! [--timeout-secs T] [--dir D] [--seed X] [--disk-full]`.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use sim::{FetchMode, FrameIo, Options};

const KILLS: usize = 3;
const TUNNEL_CRASHES: usize = 2;
const CRON_PERIOD: Duration = Duration::from_secs(3);
/// The stand-in's `crash-after` while crashes are due; each doomed instance lives
/// CRASH_AFTER + KILL_MARGIN seconds, so its tunnel crashes once (restart after 5 s, then
/// killed before the second crash).
const CRASH_AFTER: u64 = 10;
const KILL_MARGIN: u64 = 8;

struct Args {
    files: usize,
    max_size: u64,
    drop_secs: f64,
    timeout: Duration,
    dir: PathBuf,
    seed: u64,
    disk_full: bool,
}

fn parse_args() -> Result<Args, String> {
    let bin_dir = bin_dir();
    let mut a = Args {
        files: 500,
        max_size: 200 << 20,
        drop_secs: 0.0,
        timeout: Duration::ZERO,
        dir: bin_dir.parent().unwrap_or(&bin_dir).join("soak"),
        seed: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64),
        disk_full: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--disk-full" {
            a.disk_full = true;
            continue;
        }
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let num = |v: String| {
            v.parse::<f64>()
                .map_err(|_| format!("{flag}: not a number"))
        };
        match flag.as_str() {
            "--files" => a.files = num(value()?)? as usize,
            "--max-mb" => a.max_size = (num(value()?)? * 1048576.0) as u64,
            "--drop-secs" => a.drop_secs = num(value()?)?,
            "--timeout-secs" => a.timeout = Duration::from_secs_f64(num(value()?)?),
            "--dir" => a.dir = value()?.into(),
            "--seed" => a.seed = num(value()?)? as u64,
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    if a.files < 2 || a.max_size < 4096 {
        return Err("need --files >= 2 and --max-mb large enough".into());
    }
    if a.drop_secs == 0.0 {
        // Long enough for the three kills and two crashes to land among the uploads.
        a.drop_secs = (a.files as f64 * 0.2).max(60.0);
    }
    if a.timeout.is_zero() {
        a.timeout = Duration::from_secs(300 + a.files as u64 * 2);
    }
    Ok(a)
}

/// target/<profile>: this example lives in target/<profile>/examples.
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>/examples/soak")
        .to_path_buf()
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One generated file: where it goes under the watch root and where it must land in Frame.io.
fn plan(i: usize, rng: &mut Rng) -> (String, String) {
    let seq = 1 + rng.next() % 6;
    let shot = 100 + rng.next() % 40;
    let reel = rng.next() % 4;
    let day = rng.next() % 3;
    let templated = |ext: &str| {
        let name = format!("SQ{seq:02}_UNDLM_{shot:05}_v{i:03}.{ext}");
        let dest = format!("SQ{seq:02}/UNDLM_{shot:05}/{name}");
        (name, dest)
    };
    let mirrored = |rel: String| (rel.clone(), rel);
    match i % 10 {
        0..=3 => templated("mov"),
        4 => mirrored(format!("reel{reel}/day{day}/A{i:04}_C001.mp4")),
        5 => mirrored(format!("audio/mix_{i:04}.wav")),
        6 => mirrored(format!("vfx/shot_{shot}/plate_{i:04}.exr")),
        7 => mirrored(format!("docs/notes_{i:04}.pdf")),
        8 => mirrored(format!("reel{reel}/B{i:04}.mxf")),
        _ => templated("mp4"),
    }
}

/// Writes `size` bytes (random head and tail around a sparse middle when big; a real
/// ftyp/moov/mdat layout for QuickTime) under a temporary name, renames it into place and
/// returns its SHA-256.
fn make_file(path: &Path, size: u64, seed: u64) -> std::io::Result<String> {
    std::fs::create_dir_all(path.parent().expect("a parent"))?;
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut noise = |n: u64| -> Vec<u8> { (0..n).map(|_| rng.next() as u8).collect() };
    let tmp = path.with_extension("partial");
    let mut f = File::create(&tmp)?;
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let mut head = Vec::new();
    if ["mov", "mp4", "m4v"].contains(&ext) {
        head.extend_from_slice(&20u32.to_be_bytes());
        head.extend_from_slice(b"ftypqt  \0\0\0\0qt  ");
        head.extend_from_slice(&24u32.to_be_bytes());
        head.extend_from_slice(b"moov");
        head.extend_from_slice(&noise(16));
        let mdat = size - head.len() as u64;
        head.extend_from_slice(&(mdat as u32).to_be_bytes());
        head.extend_from_slice(b"mdat");
    }
    f.write_all(&head)?;
    let body = size - head.len() as u64;
    if body <= 4 << 20 {
        f.write_all(&noise(body))?;
    } else {
        f.write_all(&noise(1 << 20))?;
        f.set_len(size)?;
        f.seek(SeekFrom::Start(size - (1 << 20)))?;
        f.write_all(&noise(1 << 20))?;
    }
    drop(f);
    let sha = sha256_file(&tmp)?;
    std::fs::rename(tmp, path)?;
    Ok(sha)
}

fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// (RSS, peak RSS) in bytes and open descriptors of a live process, from /proc.
fn sample(pid: u32) -> Option<(u64, u64, usize)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map(|v| v * 1024)
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
    Some((kb("VmRSS:")?, kb("VmHWM:")?, fds))
}

fn alive(pid: u32) -> bool {
    // Zombies count as gone.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

fn sigterm(pid: u32) {
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// One `postflow run` that got the lock.
struct Instance {
    child: Child,
    started: Instant,
    crash_env: bool,
    first: Option<(u64, usize)>,
    last: Option<(u64, usize)>,
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("soak: {e}");
            return ExitCode::from(2);
        }
    };
    match soak(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("soak: {e}");
            ExitCode::FAILURE
        }
    }
}

fn soak(args: &Args) -> Result<bool, String> {
    let bins = bin_dir();
    let postflow = bins.join("postflow");
    let cloudflared = bins.join("fake-cloudflared");
    for b in [&postflow, &cloudflared] {
        if !b.is_file() {
            return Err(format!(
                "{} not found: run `cargo build --workspace --bins` (same profile) first",
                b.display()
            ));
        }
    }
    let dir = &args.dir;
    // A postflow left over from an interrupted soak would share (and fight over) the state dir.
    if let Some(pid) = std::fs::read_to_string(dir.join("postflow-state/lock"))
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
    {
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if alive(pid) && String::from_utf8_lossy(&cmd).contains("postflow") {
            return Err(format!(
                "a postflow from an earlier soak still runs (pid {pid}) on {}: stop it first",
                dir.display()
            ));
        }
    }
    let _ = std::fs::remove_dir_all(dir);
    let watch = dir.join("watch");
    let registry = dir.join("registry");
    let state = dir.join("postflow-state");
    for d in [&watch, &registry, &state] {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    let log_path = dir.join("postflow.log");

    let mut options = Options {
        tunnel_registry: Some(registry.clone()),
        seed: Some(args.seed),
        ..Options::default()
    };
    let f = &mut options.faults;
    f.error_5xx_fraction = 0.10;
    f.error_5xx_after_commit = true;
    f.access_token_lifetime_secs = 5;
    f.fetch_mode = FetchMode::Alternate;
    let sim = Arc::new(FrameIo::start(options).map_err(|e| format!("simulator: {e}"))?);

    // tokens.json as `postflow auth` leaves it.
    let t = sim.login_tokens();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let tokens = json!({"access_token": t.access_token, "refresh_token": t.refresh_token,
                        "expires_at": now + t.expires_in});
    std::fs::write(state.join("tokens.json"), tokens.to_string()).map_err(|e| e.to_string())?;

    let dash = free_port();
    let config = json!({
        "watch": {"root": "watch", "settle_secs": 1, "rescan_secs": 3, "upload_existing": true},
        "frameio": {
            "client_id": sim.client_id(), "client_secret": sim.client_secret(),
            "redirect_uri": sim.redirect_uri(), "account_id": sim.account_id(),
            "project_id": sim.project_id(), "api_base": sim.base_url(), "ims_base": sim.base_url()
        },
        "layout": {"pattern": "{seq}_UNDLM_{shot}_v{version}.{ext}",
                   "folders": "{seq}/UNDLM_{shot}", "unmatched": "mirror"},
        "upload": {"concurrency": 4, "max_attempts": 50, "max_delay_secs": 30},
        "serve": {"listen": format!("127.0.0.1:{}", free_port())},
        "tunnel": {"mode": "quick", "cloudflared": cloudflared},
        "dashboard": {"listen": format!("127.0.0.1:{dash}")},
        "state_dir": "postflow-state",
        "log_level": "info"
    });
    let config_path = dir.join("config.json");
    std::fs::write(&config_path, serde_json::to_vec_pretty(&config).unwrap())
        .map_err(|e| e.to_string())?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&config_path, std::fs::Permissions::from_mode(0o600));
    }

    // --disk-full: the state dir on a tmpfs of its own, in a mount namespace held by a sleeping
    // process; postflow is started in it with nsenter, and filled and freed from here through
    // the holder's root link (which resolves paths in its namespace).
    let holder = if args.disk_full {
        Some(StateMount::new(&state)?)
    } else {
        None
    };
    let state_view = holder.as_ref().map_or(state.clone(), |h| h.view.clone());
    let full_windows: Vec<(Duration, Duration)> = if args.disk_full {
        [(0.25, 0.45), (0.60, 0.80)]
            .iter()
            .map(|&(a, b)| {
                (
                    Duration::from_secs_f64(args.drop_secs * a),
                    Duration::from_secs_f64(args.drop_secs * b),
                )
            })
            .collect()
    } else {
        Vec::new()
    };
    let mut full_now: Option<usize> = None;
    let mut fills = 0usize;
    let mut said_503 = vec![false; full_windows.len()];

    eprintln!(
        "soak: {} files up to {} over {:.0} s, seed {}, in {}",
        args.files,
        mb(args.max_size),
        args.drop_secs,
        args.seed,
        dir.display()
    );
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    // Ctrl-C ends the soak early but still stops the postflow it runs.
    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let interrupted = interrupted.clone();
        let _ = ctrlc::set_handler(move || interrupted.store(true, Ordering::Relaxed));
    }

    // The renders: files appear one by one over drop_secs.
    let expected: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    let dropped = Arc::new(AtomicUsize::new(0));
    let dropper = {
        let (expected, dropped, stop) = (expected.clone(), dropped.clone(), stop.clone());
        let (watch, n, max, secs, seed) = (
            watch.clone(),
            args.files,
            args.max_size,
            args.drop_secs,
            args.seed,
        );
        std::thread::spawn(move || -> Result<(), String> {
            let mut rng = Rng(seed | 1);
            let (lo, hi) = ((1024f64).ln(), (max as f64).ln());
            for i in 0..n {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let at = Duration::from_secs_f64(secs * i as f64 / n as f64);
                if let Some(wait) = at.checked_sub(start.elapsed()) {
                    std::thread::sleep(wait);
                }
                let size = match i {
                    0 => 1024,
                    1 => max,
                    _ => (lo + rng.unit() * (hi - lo)).exp() as u64,
                };
                let (rel, dest) = plan(i, &mut rng);
                let sha = make_file(&watch.join(&rel), size, i as u64 + seed)
                    .map_err(|e| format!("{rel}: {e}"))?;
                expected.lock().unwrap().insert(dest, sha);
                dropped.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        })
    };

    // Frame.io's 429 bursts: every 20 s, the next 8 calls within 3 s are refused. (A burst
    // left armed would refuse a quiet client's every call: the window closes it.)
    let bursts = {
        let (sim, stop) = (sim.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut tick = 0u64;
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                tick += 1;
                match tick % 200 {
                    0 => sim.set_faults(|f| f.burst_429 = 8),
                    30 => sim.set_faults(|f| f.burst_429 = 0),
                    _ => {}
                }
            }
        })
    };

    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .http_status_as_error(false)
        .build()
        .into();
    let queue_stats = || -> Option<Value> {
        let mut r = agent
            .get(&format!("http://127.0.0.1:{dash}/api/queue/stats"))
            .call()
            .ok()?;
        serde_json::from_str(&r.body_mut().read_to_string().ok()?).ok()
    };

    // The cron and the killer.
    let mut problems: Vec<String> = Vec::new();
    let mut spares: Vec<Child> = Vec::new(); // starts that found the lock taken
    let mut owner: Option<Instance> = None;
    let mut instances: Vec<(u64, usize, u64, usize)> = Vec::new(); // first/last rss, fds
    let mut peak_rss = 0u64;
    let mut kills = 0usize;
    let mut starts = 0usize;
    let mut next_cron = Instant::now();
    let mut next_report = Instant::now() + Duration::from_secs(10);
    let mut done_at: Option<Instant> = None;
    let mut final_stop: Option<String> = None;
    let kill_times: Vec<Duration> = (1..=KILLS)
        .map(|k| Duration::from_secs_f64(args.drop_secs * k as f64 / (KILLS + 1) as f64))
        .collect();
    let lock_pid = || -> Option<u32> {
        std::fs::read_to_string(state_view.join("lock"))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    let spawn = |crash: bool| -> Result<Child, String> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| e.to_string())?;
        let mut cmd = match &holder {
            Some(h) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--target={}", h.pid()))
                    .args(["--mount", "--"])
                    .arg(&postflow);
                c
            }
            None => Command::new(&postflow),
        };
        cmd.arg("run")
            .arg(&config_path)
            .current_dir(dir)
            .env_remove("RUST_LOG")
            .env("SIM_TUNNEL_REGISTRY", &registry)
            .env("FAKE_CLOUDFLARED_LOG_DIR", dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log);
        if crash {
            cmd.env(
                "FAKE_CLOUDFLARED_MODE",
                format!("crash-after={CRASH_AFTER}"),
            );
        } else {
            cmd.env_remove("FAKE_CLOUDFLARED_MODE");
        }
        cmd.spawn().map_err(|e| format!("start postflow: {e}"))
    };

    loop {
        std::thread::sleep(Duration::from_millis(200));
        let elapsed = start.elapsed();

        // Reap: spare starts must leave at once with 0 ("already running").
        spares.retain_mut(|c| match c.try_wait() {
            Ok(Some(st)) => {
                if !st.success() {
                    problems.push(format!("a cron start of postflow exited with {st}"));
                }
                false
            }
            _ => true,
        });
        if let Some(inst) = &mut owner {
            if let Ok(Some(st)) = inst.child.try_wait() {
                problems.push(format!(
                    "postflow (pid {}) exited by itself: {st}",
                    inst.child.id()
                ));
                let inst = owner.take().unwrap();
                if let (Some(a), Some(b)) = (inst.first, inst.last) {
                    instances.push((a.0, a.1, b.0, b.1));
                }
            }
        }
        // A spare that took the lock (the owner died) becomes the owner.
        if owner.is_none() {
            if let Some(pid) = lock_pid() {
                if let Some(i) = spares.iter().position(|c| c.id() == pid) {
                    let child = spares.remove(i);
                    let crash_env = kills < TUNNEL_CRASHES;
                    owner = Some(Instance {
                        child,
                        started: Instant::now(),
                        crash_env,
                        first: None,
                        last: None,
                    });
                }
            }
        }

        // Cron: a start every period, whatever runs.
        if Instant::now() >= next_cron && done_at.is_none() {
            next_cron += CRON_PERIOD;
            spares.push(spawn(kills < TUNNEL_CRASHES)?);
            starts += 1;
        }

        if let Some(inst) = &mut owner {
            if let Some((rss, hwm, fds)) = sample(inst.child.id()) {
                peak_rss = peak_rss.max(hwm);
                if inst.started.elapsed() >= Duration::from_secs(3) {
                    inst.first.get_or_insert((rss, fds));
                }
                inst.last = Some((rss, fds));
            }
            // kill -9 when due; an instance whose tunnel is to crash first lives long enough
            // for that (and not for a second crash).
            let due = kills < KILLS
                && elapsed >= kill_times[kills]
                && (!inst.crash_env
                    || inst.started.elapsed() >= Duration::from_secs(CRASH_AFTER + KILL_MARGIN));
            if due {
                let mut inst = owner.take().unwrap();
                let _ = inst.child.kill(); // SIGKILL
                let _ = inst.child.wait();
                kills += 1;
                eprintln!(
                    "soak: {:>5.0} s  kill -9 postflow (pid {})",
                    elapsed.as_secs_f64(),
                    inst.child.id()
                );
                if let (Some(a), Some(b)) = (inst.first, inst.last) {
                    instances.push((a.0, a.1, b.0, b.1));
                }
            }
        }

        // --disk-full: fill and free the state dir on schedule; /health must say 503 meanwhile.
        if let Some(h) = &holder {
            let window = full_windows
                .iter()
                .position(|&(from, to)| elapsed >= from && elapsed < to);
            if window != full_now {
                match window {
                    Some(_) => {
                        h.fill()?;
                        fills += 1;
                    }
                    None => h.free()?,
                }
                eprintln!(
                    "soak: {:>5.0} s  state dir {}",
                    elapsed.as_secs_f64(),
                    if window.is_some() { "filled" } else { "freed" }
                );
                full_now = window;
            }
            if let Some(w) = full_now {
                let health = agent
                    .get(&format!("http://127.0.0.1:{dash}/health"))
                    .call()
                    .map(|r| r.status().as_u16());
                if health.is_ok_and(|code| code == 503) {
                    said_503[w] = true;
                }
            }
        }

        let n_dropped = dropped.load(Ordering::Relaxed);
        let have = sim.by_path();
        let want = expected.lock().unwrap().clone();
        let arrived = want
            .keys()
            .filter(|p| have.get(*p).is_some_and(|e| e.complete >= 1))
            .count();
        if Instant::now() >= next_report {
            next_report += Duration::from_secs(10);
            let crashes = std::fs::read_to_string(&log_path)
                .unwrap_or_default()
                .matches("tunnel down: cloudflared exited")
                .count();
            let counts = queue_stats().map_or("-".into(), |q| {
                format!("{} in_flight {}", q["counts"], q["in_flight"])
            });
            eprintln!(
                "soak: {:>5.0} s  dropped {n_dropped}/{}, arrived {arrived}, kill -9 {kills}, \
                 tunnel crashes {crashes}, postflow pid {}, its queue {counts}",
                elapsed.as_secs_f64(),
                args.files,
                owner
                    .as_ref()
                    .map_or("-".into(), |i| i.child.id().to_string())
            );
        }

        // Done: everything dropped and in Frame.io, all kills made, and postflow's own
        // queue says every job is done.
        if done_at.is_none() && n_dropped == args.files && arrived == args.files && kills == KILLS {
            let settled = owner.is_some()
                && queue_stats().is_some_and(|q| {
                    let c = &q["counts"];
                    c["done"].as_u64() == Some(args.files as u64)
                        && q["total"].as_u64() == Some(args.files as u64)
                });
            if settled {
                done_at = Some(Instant::now());
            }
        }
        // A few quiet seconds after that for anything late (a duplicate, a stray retry),
        // then a clean stop.
        if done_at.is_some_and(|d| d.elapsed() >= Duration::from_secs(5)) {
            let mut inst = owner.take().unwrap();
            if let Some((rss, hwm, fds)) = sample(inst.child.id()) {
                peak_rss = peak_rss.max(hwm);
                inst.last = Some((rss, fds));
            }
            if let (Some(a), Some(b)) = (inst.first, inst.last) {
                instances.push((a.0, a.1, b.0, b.1));
            }
            sigterm(inst.child.id());
            let t0 = Instant::now();
            let st = loop {
                if let Ok(Some(st)) = inst.child.try_wait() {
                    break Some(st);
                }
                if t0.elapsed() > Duration::from_secs(30) {
                    let _ = inst.child.kill();
                    let _ = inst.child.wait();
                    break None;
                }
                std::thread::sleep(Duration::from_millis(50));
            };
            final_stop = Some(match st {
                Some(st) if st.success() => "ok".into(),
                Some(st) => format!("{st}"),
                None => "did not stop in 30 s".into(),
            });
            break;
        }
        let interrupt = interrupted.load(Ordering::Relaxed);
        if elapsed > args.timeout || interrupt {
            problems.push(if interrupt {
                "interrupted".to_string()
            } else {
                format!("not finished after {:?}", args.timeout)
            });
            // What postflow itself still holds as unfinished.
            if let Ok(mut r) = agent
                .get(&format!("http://127.0.0.1:{dash}/api/jobs?limit=1000"))
                .call()
            {
                let v: Value =
                    serde_json::from_str(&r.body_mut().read_to_string().unwrap_or_default())
                        .unwrap_or(Value::Null);
                for job in v["jobs"].as_array().into_iter().flatten() {
                    if job["state"] != "done" {
                        problems.push(format!("postflow's job not done: {job}"));
                    }
                }
            }
            if let Some(mut inst) = owner.take() {
                sigterm(inst.child.id());
                let t0 = Instant::now();
                while !matches!(inst.child.try_wait(), Ok(Some(_))) {
                    if t0.elapsed() > Duration::from_secs(30) {
                        let _ = inst.child.kill();
                        let _ = inst.child.wait();
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            break;
        }
    }
    let wall = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    for mut c in spares {
        let _ = c.wait();
    }
    if let Ok(Err(e)) = dropper.join() {
        problems.push(format!("writing the files: {e}"));
    }
    let _ = bursts.join();

    // What arrived.
    let want = expected.lock().unwrap().clone();
    let have = sim.by_path();
    let files = sim.files();
    let (mut once, mut dups, mut missing, mut mismatches, mut leftovers) = (0, 0, 0, 0, 0);
    for (path, sha) in &want {
        let copies: Vec<_> = files.iter().filter(|f| &f.path == path).collect();
        let complete: Vec<_> = copies.iter().filter(|f| f.upload_complete).collect();
        match complete.len() {
            0 => {
                missing += 1;
                problems.push(format!("missing: {path}"));
            }
            n => {
                if n > 1 {
                    dups += n - 1;
                    problems.push(format!("{path}: {n} complete copies"));
                }
                let bad = complete
                    .iter()
                    .filter(|f| f.sha256.as_deref() != Some(sha.as_str()))
                    .count();
                if bad > 0 {
                    mismatches += bad;
                    problems.push(format!("{path}: other bytes than the file's"));
                }
                if n == 1 && bad == 0 {
                    once += 1;
                }
            }
        }
        let broken = copies.len() - complete.len();
        if broken > 0 {
            leftovers += broken;
            let why: Vec<_> = copies
                .iter()
                .filter(|f| !f.upload_complete)
                .map(|f| {
                    format!(
                        "{} {}/{} bytes{}",
                        f.status,
                        f.bytes_received,
                        f.size,
                        f.failure_reason
                            .as_deref()
                            .map(|r| format!(" ({r})"))
                            .unwrap_or_default()
                    )
                })
                .collect();
            problems.push(format!(
                "{path}: {broken} unfinished copies left in Frame.io: {}",
                why.join("; ")
            ));
        }
    }
    for path in have.keys().filter(|p| !want.contains_key(*p)) {
        dups += 1;
        problems.push(format!("unexpected file in Frame.io: {path}"));
    }
    let dup_folders: Vec<_> = sim
        .folder_copies()
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .collect();
    if !dup_folders.is_empty() {
        problems.push(format!("folders made twice: {dup_folders:?}"));
    }

    // The run itself.
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    let crashes = log.matches("tunnel down: cloudflared exited").count();
    if kills < KILLS {
        problems.push(format!("only {kills} kill -9 of {KILLS}"));
    }
    if crashes < TUNNEL_CRASHES {
        problems.push(format!(
            "the tunnel crashed {crashes} times, not {TUNNEL_CRASHES}"
        ));
    }
    match &final_stop {
        Some(s) if s == "ok" => {}
        Some(s) => problems.push(format!("the last postflow did not stop cleanly: {s}")),
        None => {}
    }
    if args.disk_full {
        if fills < full_windows.len() {
            problems.push(format!(
                "the state dir was filled {fills} times, not {}",
                full_windows.len()
            ));
        }
        for (w, said) in said_503.iter().enumerate() {
            if !said {
                problems.push(format!(
                    "/health never said 503 while full (window {})",
                    w + 1
                ));
            }
        }
    }
    // Under --disk-full, saying that the state dir cannot be written is the point.
    let expected_error = |l: &str| {
        args.disk_full
            && (l.contains("state dir cannot be written")
                || l.contains("cannot save Frame.io tokens"))
    };
    for line in log
        .lines()
        .filter(|l| (l.contains(" ERROR ") && !expected_error(l)) || l.contains("panicked"))
    {
        if problems.len() < 40 {
            problems.push(format!("log: {line}"));
        }
    }
    // Every stand-in started is gone (a kill -9'ed postflow's cloudflared is stopped by the
    // next start; the last one by the clean stop).
    let cf_starts = std::fs::read_to_string(dir.join("starts.log")).unwrap_or_default();
    let cf_pids: Vec<u32> = cf_starts
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    for pid in cf_pids.iter().filter(|p| alive(**p)) {
        problems.push(format!(
            "fake-cloudflared (pid {pid}) still running; stopping it"
        ));
        sigterm(*pid);
    }
    let ledger = std::fs::metadata(state_view.join("jobs")).map_or(0, |m| m.len());
    drop(holder);
    let info_lines = log.lines().filter(|l| l.contains(" INFO ")).count();
    // Calls answered "endpoint status": 5xx and 429 seen by postflow.
    let counters = sim.counters();
    let answered = |code: &dyn Fn(u16) -> bool| -> u64 {
        counters
            .iter()
            .filter(|(k, _)| {
                k.rsplit(' ')
                    .next()
                    .and_then(|s| s.parse().ok())
                    .is_some_and(code)
            })
            .map(|(_, v)| *v)
            .sum()
    };
    let (n5xx, n429) = (answered(&|c| c >= 500), answered(&|c| c == 429));
    let refreshes = sim
        .tokens()
        .iter()
        .filter(|t| t.kind == "access" && t.grant == "refresh_token")
        .count();
    let last = instances.last().copied();
    if let Some((_, fds0, _, fds1)) = last {
        if fds1 > fds0 + 16 {
            problems.push(format!("descriptors grew from {fds0} to {fds1}"));
        }
    }
    let flat = last.map_or("not measured".into(), |(r0, f0, r1, f1)| {
        format!(
            "rss {} -> {}, fds {f0} -> {f1}",
            mb(r0).trim_end_matches(" MB"),
            mb(r1)
        )
    });

    for p in problems.iter().take(40) {
        eprintln!("soak: PROBLEM {p}");
    }
    let ok = problems.is_empty() && once == args.files;
    println!(
        "soak: files {}, arrived once {once}, duplicates {dups}, missing {missing}, checksum \
         mismatches {mismatches}, wall {:.0} s, peak RSS {} | last instance {flat}; kill -9 \
         {kills}, tunnel crashes {crashes}, cron starts {starts}, 5xx {n5xx}, 429 {n429}, token \
         refreshes {refreshes}, unfinished copies {leftovers}, ledger {} KB, {:.1} INFO lines/file{}: {}",
        args.files,
        wall.as_secs_f64(),
        mb(peak_rss),
        ledger / 1024,
        info_lines as f64 / args.files as f64,
        if args.disk_full {
            format!(
                ", state dir filled {fills} times, /health 503 while full {}/{}",
                said_503.iter().filter(|s| **s).count(),
                said_503.len()
            )
        } else {
            String::new()
        },
        if ok { "OK" } else { "FAILED" }
    );
    Ok(ok)
}

/// The state dir on a tmpfs in a private mount namespace (`--disk-full`), held by a sleeping
/// process; ended when dropped.
struct StateMount {
    holder: Child,
    /// The state dir as seen from here: through the holder's root link.
    view: PathBuf,
}

impl StateMount {
    fn new(state: &Path) -> Result<StateMount, String> {
        use std::io::BufRead;
        let script = r#"set -e
            cp -a "$STATE" "$STATE.seed"
            mount -t tmpfs -o "size=16m,mode=0700" postflow-state "$STATE"
            cp -a "$STATE.seed/." "$STATE/"
            echo ready
            exec sleep 100000"#;
        let mut holder = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", script])
            .env("STATE", state)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("--disk-full needs unshare (util-linux): {e}"))?;
        let mut line = String::new();
        let out = holder.stdout.take().ok_or("no stdout from unshare")?;
        let _ = std::io::BufReader::new(out).read_line(&mut line);
        if line.trim() != "ready" {
            let _ = holder.kill();
            let _ = holder.wait();
            return Err(
                "--disk-full: cannot mount a tmpfs in a mount namespace (run as root)".into(),
            );
        }
        let rel = state
            .strip_prefix("/")
            .map_err(|_| "the soak dir must be absolute")?;
        let view = Path::new(&format!("/proc/{}/root", holder.id())).join(rel);
        Ok(StateMount { holder, view })
    }

    fn pid(&self) -> u32 {
        self.holder.id()
    }

    /// Writes a filler until the tmpfs refuses.
    fn fill(&self) -> Result<(), String> {
        let path = self.view.join("filler");
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let chunk = vec![0u8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
        while f.write_all(&chunk[..4096]).is_ok() {}
        Ok(())
    }

    fn free(&self) -> Result<(), String> {
        let path = self.view.join("filler");
        std::fs::remove_file(&path).map_err(|e| format!("{}: {e}", path.display()))
    }
}

impl Drop for StateMount {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}
