//! `cargo bench --bench ledger`: how long the ledger takes to open with 100 000 finished jobs
//! (the contract wants "well under a second"). Prints one line; not a test.

use std::time::Instant;

use postflow::ledger::{Job, JobState, Ledger};

fn main() {
    let dir = std::env::temp_dir().join(format!("postflow-bench-ledger-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("jobs");
    let (mut ledger, _) = Ledger::open(&path).expect("open");
    let jobs: Vec<Job> = (1..=100_000u64)
        .map(|id| Job {
            id,
            project: "default".into(),
            path: format!("SQ{:02}/SQ{:02}_UNDLM_{id:05}_v001.mov", id % 50, id % 50),
            size: 1_000_000 + id,
            mtime_ns: 1_700_000_000_000_000_000 + id as i64,
            state: JobState::Done,
            folder: format!("SQ{:02}/UNDLM_{id:05}", id % 50),
            attempts: 1,
            next_attempt_ms: None,
            reason: None,
            file_id: Some(format!("2f1c7a3e-0000-4000-8000-{id:012}")),
            unknown_file: false,
            view_url: Some(format!("https://next.frame.io/project/p/view/{id}")),
            all_in_ms: None,
            created_ms: 1_700_000_000_000,
            updated_ms: 1_700_000_000_000,
            stack: None,
            times: None,
            review: Default::default(),
            verified: None,
            sha256: None,
            next_ms: None,
        })
        .collect();
    ledger.write(&jobs).expect("write");
    drop(ledger);
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let runs = 5;
    let mut best = f64::MAX;
    for _ in 0..runs {
        let start = Instant::now();
        let (ledger, report) = Ledger::open(&path).expect("reopen");
        best = best.min(start.elapsed().as_secs_f64());
        assert_eq!(report.jobs, 100_000);
        drop(ledger);
    }
    println!(
        "ledger: open with 100000 finished jobs ({:.1} MB): best of {runs} {:.3} s (target < 1 s)",
        size as f64 / 1e6,
        best
    );
    let _ = std::fs::remove_dir_all(&dir);
}
