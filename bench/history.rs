//! `cargo bench --bench history`: `/api/history` and `/api/throughput` on a 100 000-job ledger,
//! as the queue thread answers them (the index it keeps beside the ledger, a page of jobs
//! copied and rendered as the API's JSON). Prints each figure as a ratio to its budget
//! (DESIGN, issue #24): a page < 50 ms, throughput < 10 ms, memory growth < 20 MB (counted by
//! the allocator: the index the queue keeps, and the most answering holds at once). Not a
//! test.

use std::alloc::{GlobalAlloc, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::bounded;
use postflow::events::Hub;
use postflow::history::{self, Query};
use postflow::layout::Layout;
use postflow::ledger::{Job, JobState, JobTimes, Ledger};
use postflow::queue::{Queue, QueueMsg, QueueProject, QueueSettings};
use postflow::throughput::Throughput;

const JOBS: u64 = 100_000;

/// Counts the bytes allocated and not yet freed, and the most there were, so the memory the
/// history costs is measured exactly (RSS alone hides it when freed memory is reused).
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; it only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(live, Ordering::Relaxed);
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}
const DAY_MS: u64 = 86_400_000;

fn main() {
    let dir = std::env::temp_dir().join(format!("postflow-bench-history-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let now = postflow::queue::now_ms();
    write_ledger(&dir, now);

    let (ledger, _) = Ledger::open(&dir.join("jobs")).expect("open");
    // What the history adds to a queue: its index, measured on its own (the queue builds the
    // same one, beside indexes of its own that were there before)...
    let before_index = live();
    let mut index = history::History::default();
    for job in ledger.jobs().values() {
        index.observe(job);
    }
    let index_bytes = live() - before_index;
    assert_eq!(index.len() as u64, JOBS);
    drop(index);
    let (hub, _inbox) = Hub::new();
    let settings = QueueSettings {
        projects: vec![QueueProject {
            name: postflow::config::DEFAULT_PROJECT.into(),
            root: dir.clone(),
            layout: Layout::new("", None, None, false).expect("layout"),
            stacker: None,
        }],
        concurrency: 2,
        max_processing: 64,
        max_attempts: 10,
        base_delay: Duration::from_secs(1),
        max_delay: Duration::from_secs(60),
        only_enqueued: false,
        order: postflow::config::UploadOrder::Oldest,
    };
    let mut queue = Queue::new(ledger, settings, hub, now);
    // ...and what answering adds: every query below, and 24 h of minutes.
    let before_serving = live();
    PEAK.store(before_serving, Ordering::Relaxed);

    // The queries a person makes: the first page, a search that scans every job, failures of
    // the last week, and a page deep down the list.
    let plain = Query {
        page_size: 50,
        count: true,
        ..Query::default()
    };
    let deep_cursor = page(
        &mut queue,
        &Query {
            page_size: 1000,
            ..plain.clone()
        },
        now,
    )
    .0
    .next;
    let queries = [
        ("first page", plain.clone()),
        (
            "text search",
            Query {
                q: Some("undlm_0999".into()),
                ..plain.clone()
            },
        ),
        (
            "failed, last 7 days",
            Query {
                state: Some(JobState::Failed),
                since_ms: Some(now - 7 * DAY_MS),
                ..plain.clone()
            },
        ),
        (
            "page 21",
            Query {
                cursor: deep_cursor,
                ..plain.clone()
            },
        ),
    ];
    let mut worst_page = Duration::ZERO;
    for (name, query) in &queries {
        let mut best = Duration::MAX;
        let mut total = 0;
        for _ in 0..20 {
            let (p, took) = page(&mut queue, query, now);
            best = best.min(took);
            worst_page = worst_page.max(took);
            total = p.total;
        }
        println!(
            "history: {name:<20} {:>7.2} ms (best of 20; {total} match)",
            best.as_secs_f64() * 1e3
        );
    }

    // Throughput: 24 h of minutes, each with bytes, and the days from the index.
    let store = Throughput::open(&dir);
    for m in 0..1440 {
        store.add(now - m * 60_000, 1_000_000 + m);
    }
    let mut worst_throughput = Duration::ZERO;
    let mut best_throughput = Duration::MAX;
    for _ in 0..20 {
        let start = Instant::now();
        let (minutes, _) = store.recent(now);
        let (reply, rx) = bounded(1);
        queue.handle(
            QueueMsg::Days {
                today: history::day_of(now),
                days: 30,
                reply,
            },
            now,
        );
        let days = rx.recv().expect("days");
        let body = serde_json::json!({
            "minutes": minutes.iter().map(|(s, b)| serde_json::json!({
                "start": history::rfc3339_ms(*s), "bytes": b})).collect::<Vec<_>>(),
            "days": days.iter().map(|(d, t)| serde_json::json!({
                "date": history::date_of_day(*d), "bytes": t.bytes, "files": t.files,
                "failed": t.failed})).collect::<Vec<_>>(),
        })
        .to_string();
        assert!(body.len() > 1000);
        worst_throughput = worst_throughput.max(start.elapsed());
        best_throughput = best_throughput.min(start.elapsed());
    }
    println!(
        "history: throughput, 1440 minutes {:>7.2} ms (best of 20)",
        best_throughput.as_secs_f64() * 1e3
    );
    // The most answering held at once, and what it kept.
    let serving_bytes = PEAK.load(Ordering::Relaxed) - before_serving;
    let kept = live().saturating_sub(before_serving);
    let growth = index_bytes + serving_bytes;

    println!(
        "history: {JOBS} jobs: page {:.2} ms worst = {:.3}x of 50 ms; throughput {:.2} ms worst = \
         {:.3}x of 10 ms; memory {:.1} MB = {:.3}x of 20 MB (index {:.1} MB, answering at most \
         {:.1} MB at once, {:.1} MB kept: the minutes)",
        worst_page.as_secs_f64() * 1e3,
        worst_page.as_secs_f64() / 0.050,
        worst_throughput.as_secs_f64() * 1e3,
        worst_throughput.as_secs_f64() / 0.010,
        growth as f64 / 1e6,
        growth as f64 / 20e6,
        index_bytes as f64 / 1e6,
        serving_bytes as f64 / 1e6,
        kept as f64 / 1e6
    );
    drop(queue);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A page as `/api/history` makes it: asked of the queue, rendered as JSON.
fn page(queue: &mut Queue, query: &Query, now: u64) -> (history::Page, Duration) {
    let start = Instant::now();
    let (reply, rx) = bounded(1);
    queue.handle(
        QueueMsg::History {
            query: query.clone(),
            reply,
        },
        now,
    );
    let page = rx.recv().expect("a page");
    let body: Vec<serde_json::Value> = page
        .jobs
        .iter()
        .map(postflow::dashboard::model::history_json)
        .collect();
    let text = serde_json::to_string(&body).expect("json");
    assert!(page.jobs.is_empty() || text.len() > 100);
    (page, start.elapsed())
}

/// 100 000 finished jobs over 60 days: 90 % done, 5 % failed, 5 % skipped.
fn write_ledger(dir: &std::path::Path, now: u64) {
    let (mut ledger, _) = Ledger::open(&dir.join("jobs")).expect("open");
    let jobs: Vec<Job> = (1..=JOBS)
        .map(|id| {
            let finished = now - (JOBS - id) * (60 * DAY_MS / JOBS);
            let state = match id % 20 {
                0 => JobState::Failed,
                1 => JobState::Skipped,
                _ => JobState::Done,
            };
            Job {
                id,
                project: postflow::config::DEFAULT_PROJECT.into(),
                path: format!("SQ{:02}/SQ{:02}_UNDLM_{id:05}_v001.mov", id % 50, id % 50),
                size: 1_000_000 + id,
                mtime_ns: 1_700_000_000_000_000_000 + id as i64,
                state,
                folder: format!("SQ{:02}/UNDLM_{id:05}", id % 50),
                attempts: 1,
                next_attempt_ms: None,
                reason: (state != JobState::Done).then(|| "Frame.io said: no".to_string()),
                file_id: Some(format!("2f1c7a3e-0000-4000-8000-{id:012}")),
                unknown_file: false,
                view_url: Some(format!("https://next.frame.io/project/p/view/{id}")),
                all_in_ms: None,
                created_ms: finished - 60_000,
                updated_ms: finished,
                stack: None,
                times: Some(Box::new(JobTimes {
                    stable_ms: Some(finished - 60_000),
                    started_ms: Some(finished - 50_000),
                    sent_ms: Some(finished - 10_000),
                    finished_ms: Some(finished),
                })),
                review: Default::default(),
                verified: None,
                sha256: None,
                next_ms: None,
            }
        })
        .collect();
    ledger.write(&jobs).expect("write");
}
