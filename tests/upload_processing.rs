//! Frame.io processing a file is Frame.io's time, not an upload slot's: once every byte of a
//! job is in, the next upload starts, the job is watched until Frame.io says it is complete,
//! and that holds through a pause and through `kill -9`.

mod common;
mod frameio_support;
mod upload_support;

use std::collections::BTreeMap;
use std::time::Duration;

use postflow::ledger::{JobState, Ledger};
use serde_json::{json, Value};
use upload_support::{kill9, stop, Rig};

/// The state of the job for `name` on the running instance.
fn state(rig: &Rig, name: &str) -> Option<String> {
    rig.jobs()
        .iter()
        .find(|j| j["name"] == name)
        .and_then(|j| j["state"].as_str().map(str::to_string))
}

fn job(rig: &Rig, name: &str) -> Value {
    rig.jobs()
        .into_iter()
        .find(|j| j["name"] == name)
        .unwrap_or_else(|| panic!("no job for {name}"))
}

/// Whether Frame.io has a complete copy at `path`.
fn complete(rig: &Rig, path: &str) -> bool {
    rig.sim.by_path().get(path).is_some_and(|e| e.complete >= 1)
}

/// Frame.io holds the next file whose bytes are all in as processing until `finish_processing`
/// (or, should a test never get there, for ten minutes).
fn hold_processing(o: &mut sim::Options) {
    o.faults.slow_complete_next = 1;
    o.faults.slow_complete_ms = 600_000;
}

/// Frame.io ends the processing `hold_processing` holds: the file becomes complete.
fn finish_processing(rig: &Rig) {
    rig.sim.set_faults(|f| f.slow_complete_ms = 0);
}

fn post(rig: &Rig, path: &str) {
    let listen = rig.config["dashboard"]["listen"].as_str().unwrap();
    let status = ureq::post(&format!("http://{listen}{path}"))
        .send_empty()
        .map(|r| r.status().as_u16())
        .unwrap_or(0);
    assert_eq!(status, 200, "POST {path}");
}

/// With one upload slot, Frame.io is still processing the first file when the second is
/// uploaded and done; pausing stops a third from starting but not the first from finishing;
/// every file is there once, and nothing was deleted.
#[test]
fn a_slow_frameio_transcode_of_one_file_does_not_hold_back_the_next_upload() {
    for mode in ["local", "remote"] {
        let mut rig = Rig::new(&format!("up-slow-transcode-{mode}"), mode, hold_processing);
        rig.with_dashboard();
        rig.config["upload"]["concurrency"] = json!(1);
        rig.env("POSTFLOW_POLL_MS", "200");
        let child = rig.start();
        if mode == "remote" {
            rig.wait_tunnel_up();
        }
        let mut expected = BTreeMap::new();
        expected.insert("big.mov".to_string(), rig.make("big.mov", 2_000_000, 1));
        common::wait_until(Duration::from_secs(60), "big.mov processing", || {
            state(&rig, "big.mov").as_deref() == Some("processing")
        });
        expected.insert("next.mov".to_string(), rig.make("next.mov", 300_000, 2));
        common::wait_until(Duration::from_secs(40), "next.mov done", || {
            state(&rig, "next.mov").as_deref() == Some("done")
        });
        assert!(
            !complete(&rig, "big.mov"),
            "{mode}: next.mov was done while Frame.io still processed big.mov"
        );
        assert_eq!(state(&rig, "big.mov").as_deref(), Some("processing"));

        // Paused: no new upload starts, and the one processing is still watched to the end.
        post(&rig, "/api/pause");
        expected.insert("later.mov".to_string(), rig.make("later.mov", 100_000, 3));
        finish_processing(&rig);
        common::wait_until(
            Duration::from_secs(120),
            "big.mov done while paused",
            || state(&rig, "big.mov").as_deref() == Some("done"),
        );
        common::wait_until(Duration::from_secs(30), "later.mov queued", || {
            state(&rig, "later.mov").as_deref() == Some("queued")
        });
        assert_eq!(rig.sim.create_count("", "later.mov", "file"), 0, "{mode}");
        post(&rig, "/api/resume");
        rig.wait_done(3, Duration::from_secs(60));
        let jobs = rig.jobs();
        let log = stop(&rig, child);
        rig.assert_exactly(&expected);
        assert!(jobs.iter().all(|j| j["attempts"] == 1), "{mode}: {jobs:?}");
        assert_eq!(rig.sim.request_count("delete_file", None), 0, "{mode}");
        assert!(
            log.contains("upload done: big.mov in "),
            "{mode}: the page and the log say when it was done\n{log}"
        );
    }
}

/// `kill -9` while Frame.io is still processing a file whose bytes are all in: the restart
/// watches it again instead of sending it again, and never deletes it for being unfinished.
#[test]
fn kill_9_while_a_job_is_processing_leaves_it_done_uploaded_once_and_never_deleted() {
    for mode in ["remote", "local"] {
        let mut rig = Rig::new(&format!("up-kill-processing-{mode}"), mode, hold_processing);
        rig.with_dashboard();
        rig.env("POSTFLOW_POLL_MS", "200");
        let child = rig.start();
        if mode == "remote" {
            rig.wait_tunnel_up();
        }
        let sha = rig.make("card/A001C003.mov", 1_500_000, 7);
        common::wait_until(Duration::from_secs(60), "the job processing", || {
            state(&rig, "A001C003.mov").as_deref() == Some("processing")
        });
        let before = job(&rig, "A001C003.mov");
        assert!(before["all_in_ms"].as_u64().is_some(), "{before}");
        assert!(
            !complete(&rig, "card/A001C003.mov"),
            "{mode}: still processing"
        );
        rig.kill9(child);

        let child = rig.start();
        // The restart finds it still processing, and watches it.
        common::wait_until(Duration::from_secs(60), "the job processing again", || {
            state(&rig, "A001C003.mov").as_deref() == Some("processing")
        });
        finish_processing(&rig);
        rig.wait_done(1, Duration::from_secs(90));
        let after = job(&rig, "A001C003.mov");
        let log = stop(&rig, child);
        rig.assert_exactly(&BTreeMap::from([("card/A001C003.mov".to_string(), sha)]));
        assert_eq!(
            rig.sim.create_count("card", "A001C003.mov", "file"),
            1,
            "{mode}: one create\n{log}"
        );
        assert_eq!(
            rig.sim.request_count("delete_file", None),
            0,
            "{mode}: its Frame.io file was never deleted\n{log}"
        );
        assert_eq!(
            log.matches("upload start: A001C003.mov").count(),
            1,
            "{mode}: never uploaded again\n{log}"
        );
        match mode {
            "remote" => {
                let pulls: Vec<_> = rig
                    .sim
                    .fetches()
                    .into_iter()
                    .filter(|f| !f.file_id.is_empty())
                    .collect();
                assert_eq!(pulls.len(), 1, "{mode}: pulled once: {pulls:?}");
            }
            _ => {
                let puts = rig.sim.s3_puts();
                assert_eq!(puts.len(), 1, "{mode}: one part, sent once: {puts:?}");
            }
        }
        assert!(
            log.contains("1 upload(s) Frame.io was still processing at the last stop"),
            "{mode}\n{log}"
        );
        assert_eq!(after["attempts"], 1, "{mode}: {after}");
        assert_eq!(after["file_id"], before["file_id"], "{mode}");
    }
}

/// A crash between S3 taking the last part and the ledger hearing of it (or a ledger written
/// by an older postflow) leaves a local upload recorded as `uploading` although Frame.io has
/// every part. The restart, long after its part URLs expired, watches it to the end instead
/// of deleting it and sending it again.
#[test]
fn a_local_upload_whose_parts_were_all_in_at_the_crash_is_watched_not_sent_again() {
    let mut rig = Rig::new("up-all-parts-in", "local", |o| {
        o.faults.part_size = 256 * 1024;
        o.faults.single_part_below = 0;
        o.faults.part_url_lifetime_secs = 8;
        hold_processing(o);
    });
    rig.with_dashboard();
    rig.env("POSTFLOW_POLL_MS", "200");
    let child = rig.start();
    let sha = rig.make("A002C001.mov", 1_000_000, 9);
    common::wait_until(Duration::from_secs(60), "the job processing", || {
        state(&rig, "A002C001.mov").as_deref() == Some("processing")
    });
    kill9(child);
    // What the ledger holds when the kill comes before it heard that every part was in.
    {
        let path = rig.sandbox.state_dir().join("jobs");
        let (mut ledger, _) = Ledger::open(&path).unwrap();
        let mut job = ledger
            .jobs()
            .values()
            .find(|j| j.name() == "A002C001.mov")
            .cloned()
            .unwrap();
        job.state = JobState::Uploading;
        job.all_in_ms = None;
        ledger.write(&[job]).unwrap();
    }
    // A stop longer than the part URLs live.
    std::thread::sleep(Duration::from_secs(9));
    let child = rig.start();
    // The restart finds every part in and Frame.io processing, and watches it.
    common::wait_until(Duration::from_secs(60), "the job processing again", || {
        state(&rig, "A002C001.mov").as_deref() == Some("processing")
    });
    finish_processing(&rig);
    rig.wait_done(1, Duration::from_secs(90));
    let after = job(&rig, "A002C001.mov");
    let log = stop(&rig, child);
    rig.assert_exactly(&BTreeMap::from([("A002C001.mov".to_string(), sha)]));
    assert_eq!(rig.sim.request_count("local_upload", None), 1, "{log}");
    assert_eq!(rig.sim.request_count("delete_file", None), 0, "{log}");
    let puts = rig.sim.s3_puts();
    assert_eq!(puts.len(), 4, "each part sent once: {puts:?}");
    assert!(puts.iter().all(|p| p.status == 200), "{puts:?}");
    assert_eq!(after["attempts"], 1, "{after}");
}
