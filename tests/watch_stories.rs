//! From a watched folder to jobs in the ledger, on the real binary. Each test is one story;
//! the ledger (`postflow-state/jobs`) is read from a copy, as another program would.

mod common;

use std::path::Path;
use std::process::Child;
use std::time::Duration;

use common::{signal, wait_exit, wait_until, Sandbox};
use postflow::ledger::{Job, JobState, Ledger};
use serde_json::Value;

const PATIENCE: Duration = Duration::from_secs(20);

/// Every job in the ledger, read from a copy so the running instance is undisturbed.
fn jobs(sandbox: &Sandbox) -> Vec<Job> {
    let copy = sandbox.dir.join("jobs-copy");
    if std::fs::copy(sandbox.state_dir().join("jobs"), &copy).is_err() {
        return Vec::new();
    }
    let (ledger, _) = Ledger::open(&copy).unwrap();
    ledger.jobs().values().cloned().collect()
}

fn jobs_for(sandbox: &Sandbox, path: &str) -> Vec<Job> {
    jobs(sandbox)
        .into_iter()
        .filter(|j| j.path == path)
        .collect()
}

/// Waits until the newest job of `path` is in `state`, and returns it.
fn wait_for(sandbox: &Sandbox, path: &str, state: JobState) -> Job {
    let mut last = None;
    wait_until(
        PATIENCE,
        &format!("{path} to be {}", state.as_str()),
        || {
            last = jobs_for(sandbox, path).pop();
            last.as_ref().is_some_and(|j| j.state == state)
        },
    );
    last.unwrap()
}

fn write(sandbox: &Sandbox, rel: &str, bytes: &[u8]) {
    let path = sandbox.watch_root().join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// Starts postflow with a file already present, and waits for the first scan to record it
/// as the baseline: from then on, new files are new work.
fn start(sandbox: &Sandbox, config: &Value) -> Child {
    if !sandbox.watch_root().join("baseline.mov").exists() {
        write(sandbox, "baseline.mov", &movie(100));
    }
    restart(sandbox, config)
}

fn restart(sandbox: &Sandbox, config: &Value) -> Child {
    let path = sandbox.write_config(config);
    let child = sandbox.spawn_run(&path);
    sandbox.wait_for_lock_owner(child.id());
    wait_for(sandbox, "baseline.mov", JobState::Skipped);
    child
}

fn stop(mut child: Child) {
    signal(child.id(), "TERM");
    assert!(wait_exit(&mut child, Duration::from_secs(10)).success());
}

/// A complete QuickTime file: ftyp, mdat of `n` bytes, moov.
fn movie(n: usize) -> Vec<u8> {
    let mut v = half_movie(n);
    v.extend_from_slice(&moov());
    v
}

fn half_movie(n: usize) -> Vec<u8> {
    let mut v = atom(b"ftyp", b"qt  \0\0\0\0qt  ");
    v.extend_from_slice(&atom(b"mdat", &vec![0x55; n]));
    v
}

fn moov() -> Vec<u8> {
    atom(b"moov", &[0; 32])
}

fn atom(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut v = ((8 + body.len()) as u32).to_be_bytes().to_vec();
    v.extend_from_slice(kind);
    v.extend_from_slice(body);
    v
}

fn append(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(bytes).unwrap();
}

#[test]
fn a_file_still_being_written_is_not_queued_until_it_stops() {
    let sandbox = Sandbox::new("watch-growing");
    let mut config = sandbox.base_config();
    config["watch"]["settle_secs"] = 2.into();
    let child = start(&sandbox, &config);
    let path = sandbox.watch_root().join("render.wav");
    std::fs::write(&path, b"RIFF").unwrap();
    for _ in 0..6 {
        std::thread::sleep(Duration::from_secs(1));
        append(&path, &[0u8; 1000]);
        let newest = jobs_for(&sandbox, "render.wav").pop();
        assert!(
            newest.as_ref().is_none_or(|j| j.state == JobState::Waiting),
            "queued while still growing: {newest:?}"
        );
    }
    let job = wait_for(&sandbox, "render.wav", JobState::Queued);
    assert_eq!(job.size, 6004);
    assert_eq!(
        jobs_for(&sandbox, "render.wav").len(),
        1,
        "one job for the file"
    );
    stop(child);
    let log = sandbox.log();
    assert!(
        log.contains("queued render.wav (6.0 KB) for the project root"),
        "{log}"
    );
}

#[test]
fn a_zero_byte_placeholder_is_not_queued() {
    let sandbox = Sandbox::new("watch-placeholder");
    let child = start(&sandbox, &sandbox.base_config());
    write(&sandbox, "placeholder.mov", b"");
    let job = wait_for(&sandbox, "placeholder.mov", JobState::Waiting);
    std::thread::sleep(Duration::from_secs(3));
    let job_later = jobs_for(&sandbox, "placeholder.mov").pop().unwrap();
    assert_eq!(job_later.state, JobState::Waiting);
    assert_eq!(job_later.reason.as_deref(), Some("0 bytes (placeholder)"));
    assert_eq!(job.id, job_later.id);
    stop(child);
}

#[test]
fn a_half_written_movie_waits_for_its_moov_and_is_queued_once_complete() {
    let sandbox = Sandbox::new("watch-moov");
    let child = start(&sandbox, &sandbox.base_config());
    write(&sandbox, "A001.mov", &half_movie(5000));
    wait_until(PATIENCE, "the no-moov reason", || {
        jobs_for(&sandbox, "A001.mov")
            .pop()
            .is_some_and(|j| j.reason.as_deref() == Some("incomplete QuickTime: no moov atom"))
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        jobs_for(&sandbox, "A001.mov").pop().unwrap().state,
        JobState::Waiting
    );
    append(&sandbox.watch_root().join("A001.mov"), &moov());
    let job = wait_for(&sandbox, "A001.mov", JobState::Queued);
    assert_eq!(job.size, movie(5000).len() as u64);
    assert_eq!(jobs_for(&sandbox, "A001.mov").len(), 1);
    stop(child);
}

#[test]
fn junk_names_and_hidden_folders_are_ignored_and_upper_case_extensions_are_not() {
    let sandbox = Sandbox::new("watch-filters");
    let child = start(&sandbox, &sandbox.base_config());
    for junk in [
        ".DS_Store",
        "._x.mov",
        "x.mov.part",
        ".cache/a.mov",
        "notes.txt",
    ] {
        write(&sandbox, junk, &movie(10));
    }
    write(&sandbox, "SHOT.MOV", &movie(10));
    wait_for(&sandbox, "SHOT.MOV", JobState::Queued);
    std::thread::sleep(Duration::from_secs(2));
    let mut paths: Vec<String> = jobs(&sandbox).into_iter().map(|j| j.path).collect();
    paths.sort();
    assert_eq!(paths, ["SHOT.MOV", "baseline.mov"]);
    stop(child);
}

#[test]
fn nested_folders_are_mirrored() {
    let sandbox = Sandbox::new("watch-mirror");
    let child = start(&sandbox, &sandbox.base_config());
    write(&sandbox, "SQ01/comp/v2/shot.mov", &movie(10));
    let job = wait_for(&sandbox, "SQ01/comp/v2/shot.mov", JobState::Queued);
    assert_eq!(job.folder, "SQ01/comp/v2");
    stop(child);
}

#[test]
fn a_layout_pattern_maps_names_to_folders_and_unmatched_names_are_skipped() {
    let sandbox = Sandbox::new("watch-layout");
    let mut config = sandbox.base_config();
    config["layout"] = serde_json::json!({
        "pattern": "{seq}_UNDLM_{shot}_v{version}.{ext}",
        "folders": "{seq}/UNDLM_{shot}"
    });
    let child = start(&sandbox, &config);
    write(&sandbox, "exports/SQ01_UNDLM_00412_v003.mov", &movie(10));
    write(&sandbox, "exports/random_name.mov", &movie(10));
    let job = wait_for(
        &sandbox,
        "exports/SQ01_UNDLM_00412_v003.mov",
        JobState::Queued,
    );
    assert_eq!(job.folder, "SQ01/UNDLM_00412");
    let skipped = wait_for(&sandbox, "exports/random_name.mov", JobState::Skipped);
    assert_eq!(
        skipped.reason.as_deref(),
        Some("name does not match layout.pattern \"{seq}_UNDLM_{shot}_v{version}.{ext}\"")
    );
    stop(child);
}

#[test]
fn with_events_off_rescans_alone_find_a_new_file() {
    let sandbox = Sandbox::new("watch-no-events");
    let mut config = sandbox.base_config();
    config["watch"]["events"] = false.into();
    let child = start(&sandbox, &config);
    write(&sandbox, "late/arrival.mp4", &movie(10));
    let job = wait_for(&sandbox, "late/arrival.mp4", JobState::Queued);
    assert_eq!(job.folder, "late");
    stop(child);
}

#[test]
fn restart_catches_up_with_files_added_while_stopped_and_the_baseline_is_not_uploaded() {
    let sandbox = Sandbox::new("watch-catch-up");
    write(&sandbox, "old/one.mov", &movie(10));
    let child = start(&sandbox, &sandbox.base_config());
    let old = wait_for(&sandbox, "old/one.mov", JobState::Skipped);
    assert_eq!(
        old.reason.as_deref(),
        Some("present at first start (watch.upload_existing is false)")
    );
    stop(child);

    write(&sandbox, "new/two.mov", &movie(10));
    // A baseline file changed while we were down is a new version: new work.
    write(&sandbox, "old/one.mov", &movie(20));
    let child = restart(&sandbox, &sandbox.base_config());
    wait_for(&sandbox, "new/two.mov", JobState::Queued);
    wait_for(&sandbox, "old/one.mov", JobState::Queued);
    assert_eq!(jobs_for(&sandbox, "old/one.mov").len(), 2);
    let baseline = jobs_for(&sandbox, "baseline.mov");
    assert_eq!(baseline.len(), 1);
    assert_eq!(baseline[0].state, JobState::Skipped);
    stop(child);
}

#[test]
fn with_upload_existing_files_present_at_first_start_are_queued() {
    let sandbox = Sandbox::new("watch-upload-existing");
    write(&sandbox, "present.mov", &movie(10));
    let mut config = sandbox.base_config();
    config["watch"]["upload_existing"] = true.into();
    let path = sandbox.write_config(&config);
    let child = sandbox.spawn_run(&path);
    wait_for(&sandbox, "present.mov", JobState::Queued);
    stop(child);
}

#[test]
fn a_renamed_file_is_one_new_job() {
    let sandbox = Sandbox::new("watch-rename");
    let mut config = sandbox.base_config();
    config["watch"]["settle_secs"] = 2.into();
    let child = start(&sandbox, &config);
    write(&sandbox, "draft.mov", &movie(10));
    let first = wait_for(&sandbox, "draft.mov", JobState::Waiting);
    std::fs::rename(
        sandbox.watch_root().join("draft.mov"),
        sandbox.watch_root().join("final.mov"),
    )
    .unwrap();
    let renamed = wait_for(&sandbox, "final.mov", JobState::Queued);
    let old = wait_for(&sandbox, "draft.mov", JobState::Skipped);
    assert_eq!(old.id, first.id);
    assert_eq!(old.reason.as_deref(), Some("vanished"));
    assert_eq!(jobs_for(&sandbox, "final.mov").len(), 1);
    assert_ne!(renamed.id, first.id);
    stop(child);
}
