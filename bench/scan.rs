//! `cargo bench --bench scan`: the watcher on a tree of 100 000 files in 1 000 folders.
//!
//! Prints (not a test; figures go in README "Benchmarks"):
//! - CPU time of one full rescan of an already-known tree (the steady state every
//!   `watch.rescan_secs`), best of 5; target < 0.5 s;
//! - memory the watcher's bookkeeping for that tree adds (RSS growth); target < 50 MB;
//! - detection latency with events on: file created -> the watcher's first news to the queue.

use std::path::Path;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, unbounded};
use postflow::config::Config;
use postflow::events::Hub;
use postflow::ledger::Ledger;
use postflow::queue::QueueMsg;
use postflow::watch::{self, Filter, StartState, Tracker};

const DIRS: usize = 1_000;
const PER_DIR: usize = 100;

fn main() {
    let dir = std::env::temp_dir().join(format!("postflow-bench-scan-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let root = dir.join("watch");
    build_tree(&root);
    let config_path = dir.join("config.json");
    let config_json = serde_json::json!({"watch": {"root": "watch", "settle_secs": 1}});
    std::fs::write(&config_path, config_json.to_string()).expect("config");
    let config = Config::load(&config_path).expect("load config");
    let filter = Filter {
        include: config.watch.include.clone(),
        exclude: config.watch.exclude.clone(),
    };

    let rss_before = rss_kb();
    let mut tracker = Tracker::new(Duration::from_secs(15), Duration::from_secs(60));
    // First scan as at first start: every file becomes known (baseline).
    let mut news = Vec::new();
    scan(&root, &filter, &mut tracker, true, &mut news);
    assert_eq!(news.len(), DIRS * PER_DIR);
    drop(news);
    let mut best_cpu = f64::MAX;
    let mut best_wall = f64::MAX;
    for _ in 0..5 {
        let (cpu0, wall0) = (thread_cpu_secs(), Instant::now());
        let mut news = Vec::new();
        let files = scan(&root, &filter, &mut tracker, false, &mut news);
        best_cpu = best_cpu.min(thread_cpu_secs() - cpu0);
        best_wall = best_wall.min(wall0.elapsed().as_secs_f64());
        assert_eq!(files, DIRS * PER_DIR);
        assert!(news.is_empty());
    }
    let rss_after = rss_kb();
    println!(
        "scan: rescan of {} files in {DIRS} folders: best of 5 {:.3} s CPU ({:.3} s wall) (target < 0.5 s CPU)",
        DIRS * PER_DIR,
        best_cpu,
        best_wall
    );
    println!(
        "scan: watcher bookkeeping for that tree: {:.1} MB RSS growth (target < 50 MB)",
        (rss_after.saturating_sub(rss_before)) as f64 / 1024.0
    );
    drop(tracker);

    println!(
        "scan: detection latency with events on (created -> first news): {}",
        latency(&config, &root)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn build_tree(root: &Path) {
    for d in 0..DIRS {
        let dir = root.join(format!("SQ{:02}/SH{d:04}", d % 20));
        std::fs::create_dir_all(&dir).expect("mkdir");
        for f in 0..PER_DIR {
            std::fs::write(dir.join(format!("SQ_SH{d:04}_v{f:03}.exr")), b"x").expect("write");
        }
    }
}

fn scan(
    root: &Path,
    filter: &Filter,
    tracker: &mut Tracker,
    baseline: bool,
    news: &mut Vec<postflow::queue::FileNews>,
) -> usize {
    tracker.begin_scan();
    let outcome = watch::walk(root, "", filter, &mut |rel, size, mtime| {
        if let Some(n) = tracker.saw(rel, size, mtime, 0, baseline) {
            news.push(n);
        }
    })
    .expect("walk");
    news.extend(tracker.sweep(&outcome.failed_dirs));
    outcome.files
}

/// Median over 5 new files of "created -> FilesSeen naming it", with the real watcher thread.
fn latency(config: &Config, root: &Path) -> String {
    let (queue_tx, queue_rx) = unbounded::<QueueMsg>();
    let (stop_tx, stop_rx) = bounded::<()>(0);
    let (hub, _inbox) = Hub::new();
    let ledger_dir = root.with_file_name("state");
    std::fs::create_dir_all(&ledger_dir).expect("state dir");
    let (ledger, _) = Ledger::open(&ledger_dir.join("jobs")).expect("ledger");
    let start = StartState::from_ledger(&ledger, "default");
    let mut watch_config = config.watch.clone();
    watch_config.rescan = Duration::from_secs(3600);
    let thread = std::thread::spawn(move || {
        watch::run_watcher(
            watch::Project::new("default", false),
            watch_config,
            start,
            queue_tx,
            stop_rx,
            hub,
        )
    });
    // The first scan (baseline) ends with ScanComplete.
    loop {
        if let Ok(QueueMsg::ScanComplete { .. }) = queue_rx.recv() {
            break;
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let mut samples = Vec::new();
    for i in 0..5 {
        let rel = format!("SQ03/SH0003/new_{i}.mov");
        let t0 = Instant::now();
        std::fs::write(root.join(&rel), b"new").expect("write");
        let deadline = t0 + Duration::from_secs(10);
        'wait: while Instant::now() < deadline {
            if let Ok(QueueMsg::FilesSeen { news, .. }) =
                queue_rx.recv_timeout(Duration::from_secs(10))
            {
                for n in news {
                    if format!("{n:?}").contains(&rel) {
                        samples.push(t0.elapsed());
                        break 'wait;
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    drop(stop_tx);
    let _ = thread.join();
    if samples.len() < 5 {
        return format!("only {} of 5 files seen within 10 s", samples.len());
    }
    samples.sort();
    format!(
        "median {:.0} ms (min {:.0}, max {:.0}; includes the 200 ms event coalescing)",
        samples[2].as_secs_f64() * 1000.0,
        samples[0].as_secs_f64() * 1000.0,
        samples[4].as_secs_f64() * 1000.0
    )
}

/// This thread's CPU time (Linux: /proc/thread-self/schedstat, in ns); wall time elsewhere.
fn thread_cpu_secs() -> f64 {
    if let Ok(s) = std::fs::read_to_string("/proc/thread-self/schedstat") {
        if let Some(ns) = s
            .split_whitespace()
            .next()
            .and_then(|n| n.parse::<u64>().ok())
        {
            return ns as f64 / 1e9;
        }
    }
    use std::sync::OnceLock;
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_secs_f64()
}

/// Resident set size in KiB (Linux: /proc/self/status; 0 elsewhere).
fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}
