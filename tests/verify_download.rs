//! `upload.verify: "download"` (issue 22, DESIGN "Verification"): once Frame.io has a file
//! complete, postflow downloads Frame.io's original back and compares it with the local file.
//! Equal: `done`, `verified: download-sha256` and the SHA-256 on the job. Different: that
//! Frame.io file is deleted and the file uploaded again. Not possible (the user may not
//! download): `done` with what the upload proved, and a WARN.

mod common;
mod frameio_support;
mod upload_support;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};
use upload_support::{stop, Rig};

const MIB: u64 = 1 << 20;
const LIMIT: Duration = Duration::from_secs(120);

/// A rig whose simulator keeps every file's bytes (in the sandbox, removed with it) so they
/// can be downloaded.
fn rig(name: &str, mode: &str, change: impl FnOnce(&mut sim::Options)) -> Rig {
    let mut rig = Rig::new(name, mode, |o| {
        // The sandbox Rig::new has just made (common::Sandbox's naming).
        let originals = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("{name}-{}", std::process::id()))
            .join("sim-originals");
        std::fs::create_dir_all(&originals).unwrap();
        o.originals_dir = Some(originals);
        o.faults.part_size = 2 * MIB;
        o.faults.single_part_below = 0;
        change(o);
    });
    rig.with_dashboard();
    rig.config["upload"]["verify"] = json!("download");
    rig
}

fn job_of<'a>(jobs: &'a [Value], path: &str) -> &'a Value {
    jobs.iter()
        .find(|j| j["path"] == path)
        .unwrap_or_else(|| panic!("no job for {path}: {jobs:?}"))
}

fn downloaded_back(mode: &str) {
    let rig = rig(&format!("verify-dl-{mode}"), mode, |_| {});
    let child = rig.start();
    let mut expected = BTreeMap::new();
    for i in 0..3u32 {
        let rel = format!("SQ01/shot_{i}.mov");
        expected.insert(
            rel.clone(),
            rig.make(&rel, 5 * MIB + 1000 * u64::from(i), 20 + i),
        );
    }
    rig.wait_arrived(&expected, LIMIT);
    rig.wait_done(3, LIMIT);
    let jobs = rig.jobs();
    for (rel, sha) in &expected {
        let job = job_of(&jobs, rel);
        assert_eq!(job["verified"], "download-sha256", "{job}");
        assert_eq!(job["sha256"].as_str(), Some(sha.as_str()), "{job}");
        assert_eq!(job["attempts"], 1, "{job}");
        let file_id = job["file_id"].as_str().unwrap();
        assert_eq!(rig.sim.download_count(file_id), 1, "{rel} downloaded once");
    }
    let log = stop(&rig, child);
    rig.assert_exactly(&expected);
    assert!(log.contains("downloaded back and equal (SHA-256"), "{log}");
    assert!(!log.contains("WARN"), "{log}");
}

#[test]
fn local_uploads_downloaded_back_are_done_with_their_sha256() {
    downloaded_back("local");
}

#[test]
fn pulls_downloaded_back_are_done_with_their_sha256() {
    downloaded_back("remote");
}

#[test]
fn a_copy_frameio_stored_wrong_is_deleted_and_the_file_uploaded_again_once() {
    let rig = rig("verify-dl-corrupt", "local", |o| {
        o.faults.corrupt_original_next = 1
    });
    let child = rig.start();
    let sha = rig.make("SQ01/hero.mov", 6 * MIB, 31);
    let expected = BTreeMap::from([("SQ01/hero.mov".to_string(), sha.clone())]);
    rig.wait_done(1, LIMIT);
    let jobs = rig.jobs();
    let job = job_of(&jobs, "SQ01/hero.mov");
    assert_eq!(job["verified"], "download-sha256", "{job}");
    assert_eq!(job["sha256"].as_str(), Some(sha.as_str()), "{job}");
    assert_eq!(job["attempts"], 2, "the first copy was bad: {job}");
    let log = stop(&rig, child);
    // One file in Frame.io, the second upload, with the right bytes; the bad one is gone.
    rig.assert_exactly(&expected);
    assert!(
        log.contains("Frame.io's copy differs from the local file at byte"),
        "{log}"
    );
    let creates: u64 = rig.sim.request_count("local_upload", Some(201))
        + rig.sim.request_count("local_upload", Some(200));
    assert_eq!(creates, 2, "uploaded twice in all");
}

#[test]
fn a_user_who_may_not_download_gets_done_with_what_the_upload_proved() {
    let rig = rig("verify-dl-forbidden", "local", |o| {
        o.faults.download_forbidden = true
    });
    let child = rig.start();
    let sha = rig.make("SQ01/plate.mov", 4 * MIB, 41);
    let expected = BTreeMap::from([("SQ01/plate.mov".to_string(), sha)]);
    rig.wait_done(1, LIMIT);
    let job = rig.jobs().remove(0);
    assert_eq!(job["verified"], "parts-md5", "{job}");
    assert_eq!(job["sha256"], Value::Null, "{job}");
    assert_eq!(job["attempts"], 1, "{job}");
    let log = stop(&rig, child);
    rig.assert_exactly(&expected);
    assert!(
        log.contains("not downloaded back to compare: Frame.io does not let this user download"),
        "{log}"
    );
}

#[test]
fn a_download_that_stalls_goes_on_from_where_it_stopped() {
    let size = 8 * MIB;
    let mut rig = rig("verify-dl-stall", "local", |o| {
        o.faults.download_stall_after = Some(3 * MIB)
    });
    rig.env("POSTFLOW_STALL_SECS", "2");
    let child = rig.start();
    let sha = rig.make("SQ01/long.mov", size, 51);
    rig.wait_done(1, LIMIT);
    let job = rig.jobs().remove(0);
    assert_eq!(job["verified"], "download-sha256", "{job}");
    assert_eq!(job["sha256"].as_str(), Some(sha.as_str()), "{job}");
    // Release the simulator's held connections before stopping.
    rig.sim.set_faults(|f| f.download_stall_after = None);
    stop(&rig, child);
    let file_id = job["file_id"].as_str().unwrap();
    let ranges: Vec<Option<String>> = rig
        .sim
        .downloads()
        .into_iter()
        .filter(|d| d.file_id == file_id && d.method == "GET")
        .map(|d| d.range)
        .collect();
    // 3 MiB, then from there 3 more, then the rest: never the start again.
    assert_eq!(
        ranges,
        vec![
            None,
            Some(format!("bytes={}-", 3 * MIB)),
            Some(format!("bytes={}-", 6 * MIB)),
        ],
        "{:?}",
        rig.sim.downloads()
    );
}

#[test]
fn killed_while_downloading_back_the_restart_checks_again_and_uploads_nothing_twice() {
    let mut rig = rig("verify-dl-kill", "local", |o| {
        o.faults.original_missing_ms = 600_000
    });
    let child = rig.start();
    let sha = rig.make("SQ01/kill.mov", 4 * MIB, 61);
    let expected = BTreeMap::from([("SQ01/kill.mov".to_string(), sha.clone())]);
    // Complete in Frame.io, no link yet: the job waits in `processing` for its download.
    common::wait_until(LIMIT, "the download check asking for a link", || {
        rig.sandbox
            .log()
            .contains("Frame.io offers no download link yet")
    });
    assert_eq!(rig.jobs()[0]["state"], "processing");
    rig.kill9(child);
    rig.sim.set_faults(|f| f.original_missing_ms = 0);
    let child = rig.start();
    rig.wait_done(1, LIMIT);
    let job = rig.jobs().remove(0);
    assert_eq!(job["verified"], "download-sha256", "{job}");
    assert_eq!(job["sha256"].as_str(), Some(sha.as_str()), "{job}");
    assert_eq!(job["attempts"], 1, "{job}");
    stop(&rig, child);
    rig.assert_exactly(&expected);
    assert_eq!(rig.sim.s3_puts().len(), 2, "two parts, each sent once");
}
