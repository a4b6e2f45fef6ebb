//! Exactly once through the worst stops: `kill -9` at random moments, a stop long enough for
//! the part URLs to expire, and a file deleted while it goes up.

mod common;
mod frameio_support;
mod upload_support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::json;
use sim::FetchMode;
use upload_support::{stop, Rig};

/// xorshift64*: the kill moments come from a seed, printed, so a failure can be replayed
/// with `UPLOAD_KILL_SEED=<seed>`.
struct Prng(u64);

impl Prng {
    fn below(&mut self, n: u64) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

#[test]
fn kill_9_at_random_moments_during_30_files_every_file_arrives_exactly_once() {
    let seed = std::env::var("UPLOAD_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    // Shown with the failure (test output is printed only for failing tests).
    println!("kill moments from seed {seed} (replay: UPLOAD_KILL_SEED={seed})");
    let mut rng = Prng(seed);
    let mut rig = Rig::new("up-kill9", "remote", |o| {
        o.faults.fetch_mode = FetchMode::Alternate;
        o.faults.part_size = 256 * 1024;
        o.faults.single_part_below = 256 * 1024;
        // Slow enough that every kill lands with uploads in flight.
        o.faults.response_delay_ms = 40;
        o.faults.fetch_delay_ms = 300;
    });
    rig.with_dashboard();
    rig.env("POSTFLOW_POLL_MS", "200");
    let mut expected = BTreeMap::new();
    for i in 0..30u32 {
        let rel = format!(
            "reel{}/shot_{i:02}.{}",
            i % 4,
            ["mov", "wav", "mxf"][i as usize % 3]
        );
        let size = 64 + rng.below(900_000);
        expected.insert(rel.clone(), rig.make(&rel, size, 1000 + i));
    }
    // Remote and local runs take turns, so a restart also finds the other mode's leftovers.
    for (run, mode) in ["remote", "local", "remote"].iter().enumerate() {
        rig.config["frameio"]["upload"] = json!(mode);
        let child = rig.start();
        let moment = Duration::from_millis(500 + rng.below(2500));
        std::thread::sleep(moment);
        println!("run {run} ({mode}): kill -9 after {moment:?}");
        rig.kill9(child);
    }
    rig.config["frameio"]["upload"] = json!("local");
    let child = rig.start();
    rig.wait_done(expected.len() as u64, Duration::from_secs(120));
    let log = stop(&rig, child);
    rig.assert_exactly(&expected);
    assert!(
        rig.incomplete_files().is_empty(),
        "leftovers: {:?}",
        rig.incomplete_files()
    );
    let creates: u32 = rig
        .sim
        .create_counts()
        .iter()
        .filter(|c| c.kind == "file")
        .map(|c| c.count)
        .sum();
    println!(
        "{creates} files created for {} wanted; {} adopted after a crash",
        expected.len(),
        log.matches("already in Frame.io, adopting it").count()
    );
}

#[test]
fn expired_part_urls_after_a_long_stop_start_the_file_over_cleanly() {
    let mut rig = Rig::new("up-expired", "local", |o| {
        o.faults.part_size = 128 * 1024;
        o.faults.single_part_below = 0;
        o.faults.part_url_lifetime_secs = 4;
        o.faults.response_delay_ms = 150;
    });
    rig.config["upload"] = json!({ "concurrency": 1, "parallel_parts": 2 });
    rig.env("POSTFLOW_POLL_MS", "200");
    let child = rig.start();
    let sha = rig.make("long/take.mov", 3_000_000, 5);
    // Killed with some parts sent and some not.
    common::wait_until(Duration::from_secs(30), "a few parts sent", || {
        rig.sim.s3_puts().iter().filter(|p| p.status == 200).count() >= 3
    });
    rig.kill9(child);
    let first_id = rig.sim.files()[0].id.clone();
    // A long stop: past the URLs' life.
    std::thread::sleep(Duration::from_secs(5));
    // The restart's own URLs live long enough for a busy machine to send every part on them.
    rig.sim.set_faults(|f| f.part_url_lifetime_secs = 600);
    let puts_before = rig.sim.s3_puts().len();
    let child = rig.start();
    let expected = BTreeMap::from([("long/take.mov".to_string(), sha)]);
    rig.wait_arrived(&expected, Duration::from_secs(60));
    let log = stop(&rig, child);
    rig.assert_exactly(&expected);
    assert!(
        rig.sim.file(&first_id).is_none(),
        "the first file was deleted\n{log}"
    );
    assert_eq!(rig.sim.request_count("local_upload", Some(201)), 2, "{log}");
    let expired: Vec<_> = rig.sim.s3_puts()[puts_before..]
        .iter()
        .filter(|p| p.status != 200)
        .map(|p| (p.part_number, p.status, p.error_code.clone()))
        .collect();
    assert!(
        expired.is_empty(),
        "expired URLs were used after the restart: {expired:?}\n{log}"
    );
}

#[test]
fn a_file_deleted_mid_upload_leaves_nothing_in_frameio() {
    for mode in ["remote", "local"] {
        let mut rig = Rig::new(&format!("up-deleted-{mode}"), mode, |o| {
            // Remote: the pull waits; local: each part takes a while.
            o.faults.fetch_delay_ms = 4000;
            o.faults.part_size = 128 * 1024;
            o.faults.single_part_below = 0;
        });
        rig.with_dashboard();
        rig.env("POSTFLOW_POLL_MS", "200");
        let child = rig.start();
        rig.make("gone.mov", 2_000_000, 9);
        if mode == "local" {
            rig.sim.set_faults(|f| f.response_delay_ms = 300);
        }
        common::wait_until(Duration::from_secs(30), "the upload to start", || {
            !rig.sim.files().is_empty()
        });
        std::fs::remove_file(rig.sandbox.watch_root().join("gone.mov")).unwrap();
        let started = Instant::now();
        let job = loop {
            let jobs = rig.jobs();
            if let Some(j) = jobs.iter().find(|j| j["state"] == "skipped") {
                break j.clone();
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "{mode}: jobs {jobs:?}\n{}",
                rig.sandbox.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        rig.sim.set_faults(|f| f.response_delay_ms = 0);
        let log = stop(&rig, child);
        let reason = job["reason"].as_str().unwrap_or("");
        assert!(
            reason.contains("vanished") || reason.contains("changed"),
            "{mode}: {job}"
        );
        assert!(
            rig.sim.files().is_empty(),
            "{mode}: left in Frame.io: {:?}\n{log}",
            rig.sim.files()
        );
    }
}

/// Starts postflow with a file to upload, waits until Frame.io has created it while its answer
/// is held back (`create_answer_delay_ms`), and then kills postflow with `kill -9`: the
/// crash between "Frame.io created the file" and "ledger written". Waits for `ready` (the
/// Frame.io file's state) before the kill. Returns the file's expected SHA-256.
fn crash_after_the_create(
    rig: &mut Rig,
    name: &str,
    ready: impl Fn(&sim::FileView) -> bool,
) -> String {
    let child = rig.start();
    let sha = rig.make(name, 700_000, 7);
    common::wait_until(
        Duration::from_secs(60),
        "Frame.io to create the file",
        || rig.sim.files().iter().any(&ready),
    );
    rig.kill9(child);
    let jobs = std::fs::read_to_string(rig.sandbox.state_dir().join("jobs")).unwrap();
    assert!(
        !jobs.contains("file_id"),
        "the answer never came, so the ledger has no file id: {jobs}"
    );
    rig.sim.set_faults(|f| f.create_answer_delay_ms = 0);
    sha
}

/// A crash right after Frame.io created the file, before its id reached the ledger: the
/// restart lists the folder (it knows a create went out) and adopts the complete copy instead
/// of uploading it again.
#[test]
fn a_crash_between_the_create_call_and_the_ledger_write_is_still_adopted() {
    let mut rig = Rig::new("up-crash-adopt", "remote", |o| {
        o.faults.create_answer_delay_ms = 60_000;
    });
    rig.with_dashboard();
    rig.env("POSTFLOW_POLL_MS", "200");
    // The pull finishes while postflow still waits for the answer to its create.
    let sha = crash_after_the_create(&mut rig, "take_1.wav", |f| f.upload_complete);
    assert_eq!(rig.sim.request_count("list_children", None), 0);
    let child = rig.start();
    rig.wait_done(1, Duration::from_secs(60));
    let log = stop(&rig, child);
    rig.assert_exactly(&BTreeMap::from([("take_1.wav".to_string(), sha)]));
    assert!(
        log.contains("take_1.wav: already in Frame.io, adopting it"),
        "{log}"
    );
    assert_eq!(
        rig.sim.create_count("", "take_1.wav", "file"),
        1,
        "not sent twice"
    );
    assert_eq!(
        rig.sim.request_count("list_children", None),
        1,
        "one search, by the restart"
    );
}

/// The same crash during a local upload: the copy Frame.io holds has no bytes, so the restart
/// deletes it and uploads the file once.
#[test]
fn a_crash_between_the_create_call_and_the_ledger_write_is_still_cleaned_up() {
    let mut rig = Rig::new("up-crash-clean", "local", |o| {
        o.faults.create_answer_delay_ms = 60_000;
    });
    rig.with_dashboard();
    rig.env("POSTFLOW_POLL_MS", "200");
    let sha = crash_after_the_create(&mut rig, "take_2.wav", |_| true);
    let leftover = rig.sim.files()[0].id.clone();
    let child = rig.start();
    rig.wait_done(1, Duration::from_secs(60));
    let log = stop(&rig, child);
    rig.assert_exactly(&BTreeMap::from([("take_2.wav".to_string(), sha)]));
    assert!(
        rig.sim.file(&leftover).is_none(),
        "the leftover was deleted\n{log}"
    );
    assert!(
        rig.incomplete_files().is_empty(),
        "{:?}",
        rig.incomplete_files()
    );
    assert_eq!(rig.sim.create_count("", "take_2.wav", "file"), 2, "{log}");
}

/// Three uploads into one folder are cut by a crash before Frame.io's answers came: after the
/// restart all three search the folder, and they share one listing.
#[test]
fn jobs_recovering_in_the_same_folder_share_one_listing() {
    let mut rig = Rig::new("up-crash-shared", "local", |o| {
        o.faults.create_answer_delay_ms = 60_000;
    });
    rig.with_dashboard();
    rig.env("POSTFLOW_POLL_MS", "200");
    let child = rig.start();
    let expected: BTreeMap<String, String> = (0..3)
        .map(|i| {
            let name = format!("take_{i}.wav");
            let sha = rig.make(&name, 300_000 + i, 20 + i as u32);
            (name, sha)
        })
        .collect();
    common::wait_until(
        Duration::from_secs(60),
        "three creates taking effect",
        || rig.sim.files().len() == 3,
    );
    rig.kill9(child);
    rig.sim.set_faults(|f| f.create_answer_delay_ms = 0);
    let child = rig.start();
    rig.wait_done(3, Duration::from_secs(60));
    let log = stop(&rig, child);
    rig.assert_exactly(&expected);
    assert!(
        rig.incomplete_files().is_empty(),
        "{:?}",
        rig.incomplete_files()
    );
    assert_eq!(
        log.matches("an earlier attempt may have created it")
            .count(),
        3,
        "{log}"
    );
    assert_eq!(rig.sim.request_count("list_children", None), 1, "{log}");
}

/// Regression (found by the kill -9 test): a crash while `remote_upload` was in flight left a
/// Frame.io file that never learned its size (Frame.io could not reach the dead file server)
/// and was not recognised as our leftover, because the search wanted the same size. The next
/// attempt must delete it, whatever size it shows, and the file must end up there once.
#[test]
fn an_incomplete_leftover_whose_size_frameio_never_learned_is_deleted() {
    let mut rig = Rig::new("up-leftover", "remote", |o| {
        o.faults.create_answer_delay_ms = 60_000;
        // Frame.io learns the size only from the pull, which has not started at the crash.
        o.faults.remote_probe = false;
        o.faults.fetch_delay_ms = 60_000;
    });
    rig.with_dashboard();
    rig.env("POSTFLOW_POLL_MS", "200");
    let sha = crash_after_the_create(&mut rig, "take_3.wav", |_| true);
    let leftover = rig.sim.files();
    assert_eq!(leftover.len(), 1);
    assert_ne!(
        leftover[0].size, 700_000,
        "the leftover does not know the real size"
    );
    rig.sim.set_faults(|f| f.fetch_delay_ms = 0);
    let child = rig.start();
    rig.wait_done(1, Duration::from_secs(60));
    stop(&rig, child);
    rig.assert_exactly(&BTreeMap::from([("take_3.wav".to_string(), sha)]));
    assert!(
        rig.incomplete_files().is_empty(),
        "{:?}",
        rig.incomplete_files()
    );
    assert!(rig.sim.file(&leftover[0].id).is_none(), "deleted");
}

/// Regression (found by the soak): a local upload cut short by `kill -9` while the tunnel was
/// down was left behind in Frame.io when the restart found the tunnel up and pulled the file
/// remotely instead. The half-sent upload must be resumed locally; one copy, nothing left over.
#[test]
fn a_local_upload_cut_short_resumes_locally_even_when_the_tunnel_is_back() {
    let mut rig = Rig::new("up-resume-mode", "auto", |o| {
        o.faults.part_size = 1 << 20;
        o.faults.single_part_below = 1 << 20;
    });
    rig.with_dashboard();
    rig.env("POSTFLOW_POLL_MS", "200");
    let tunnel_up = rig.config["tunnel"].clone();
    rig.config["tunnel"] = json!({ "mode": "off" });
    rig.config["upload"]["parallel_parts"] = json!(1);
    let mut expected = BTreeMap::new();
    expected.insert(
        "long_take.mov".to_string(),
        rig.make("long_take.mov", 300 << 20, 11),
    );

    // First run: no tunnel, so auto sends it in parts; killed once some parts are recorded.
    let child = rig.start();
    let uploads = rig.sandbox.state_dir().join("uploads");
    common::wait_until(Duration::from_secs(60), "a finished part", || {
        std::fs::read_dir(&uploads).is_ok_and(|dir| {
            dir.flatten().any(|e| {
                e.path().extension().is_some_and(|x| x == "done")
                    && std::fs::metadata(e.path()).is_ok_and(|m| m.len() > 0)
            })
        })
    });
    rig.kill9(child);
    assert!(
        rig.sim.files().iter().all(|f| !f.upload_complete),
        "killed before the upload finished"
    );

    // Second run: the tunnel is up now; the upload must go on where it stopped.
    rig.config["tunnel"] = tunnel_up;
    let child = rig.start();
    rig.wait_done(1, Duration::from_secs(120));
    let log = stop(&rig, child);
    rig.assert_exactly(&expected);
    assert!(
        rig.incomplete_files().is_empty(),
        "{:?}",
        rig.incomplete_files()
    );
    assert!(log.contains("long_take.mov: resuming"), "{log}");
    assert_eq!(
        rig.sim.request_count("remote_upload", None),
        0,
        "never pulled remotely"
    );
}
