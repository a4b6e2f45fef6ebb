//! `kill -9` while the first scan of a big tree is running: after a restart, every file has
//! exactly one job in the ledger, and the baseline is still a baseline.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{signal, wait_exit, wait_until, Sandbox};
use postflow::ledger::{JobState, Ledger};

#[test]
fn the_ledger_after_kill_9_mid_scan_holds_every_job_once() {
    let sandbox = Sandbox::new("watch-kill-mid-scan");
    let (dirs, per_dir) = (100, 100);
    for d in 0..dirs {
        let dir = sandbox.watch_root().join(format!("SQ{d:03}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..per_dir {
            std::fs::write(dir.join(format!("shot_{f:03}.exr")), b"x").unwrap();
        }
    }
    let config = sandbox.write_config(&sandbox.base_config());
    // Kill at different moments of the first scan (and perhaps just after it).
    for delay_ms in [30, 80, 150, 250, 400] {
        let mut child = sandbox.spawn_run(&config);
        sandbox.wait_for_lock_owner(child.id());
        std::thread::sleep(Duration::from_millis(delay_ms));
        signal(child.id(), "KILL");
        wait_exit(&mut child, Duration::from_secs(10));
    }
    let mut child = sandbox.spawn_run(&config);
    sandbox.wait_for_lock_owner(child.id());
    let ledger_path = sandbox.state_dir().join("jobs");
    let copy = sandbox.dir.join("jobs-copy");
    let read = || {
        std::fs::copy(&ledger_path, &copy).unwrap();
        Ledger::open(&copy).unwrap().0
    };
    wait_until(Duration::from_secs(60), "every file in the ledger", || {
        read().jobs().len() >= dirs * per_dir
    });
    std::thread::sleep(Duration::from_secs(2));
    signal(child.id(), "TERM");
    assert!(wait_exit(&mut child, Duration::from_secs(10)).success());

    let ledger = read();
    let mut per_path: HashMap<&str, usize> = HashMap::new();
    for job in ledger.jobs().values() {
        *per_path.entry(job.path.as_str()).or_default() += 1;
        assert_eq!(job.state, JobState::Skipped, "{job:?}");
    }
    assert_eq!(per_path.len(), dirs * per_dir);
    assert!(per_path.values().all(|&n| n == 1), "a file with two jobs");
}
