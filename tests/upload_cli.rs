//! `postflow upload config.json PATH…`: files uploaded by hand, through the running instance
//! or, when none runs, by the command itself; a path outside the watch root is refused.

mod common;
mod frameio_support;
mod upload_support;

use common::SpawnExt;

use std::collections::BTreeMap;
use std::process::Output;
use std::time::Duration;

use serde_json::json;
use upload_support::{stop, Rig};

/// Runs `postflow upload config.json ARGS…` from the sandbox (relative paths are relative to
/// it), its log appended to the sandbox's log; returns (exit code, stdout, stderr).
fn upload_cmd(rig: &Rig, args: &[&str]) -> (Option<i32>, String, String) {
    let config = rig.config_path();
    let mut cmd = rig.sandbox.postflow();
    cmd.envs(rig.env.iter().map(|(k, v)| (k, v)));
    let Output {
        status,
        stdout,
        stderr,
    } = cmd
        .arg("upload")
        .arg(&config)
        .args(args)
        .output_retrying()
        .expect("run postflow upload");
    let (out, err) = (
        String::from_utf8_lossy(&stdout).to_string(),
        String::from_utf8_lossy(&stderr).to_string(),
    );
    // Its log belongs with the runs' log (which counts "upload done" lines).
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(rig.sandbox.log_path())
        .unwrap();
    std::io::Write::write_all(&mut log, err.as_bytes()).unwrap();
    (status.code(), out, err)
}

fn local_rig(name: &str) -> Rig {
    let mut rig = Rig::new(name, "local", |_| {});
    rig.with_dashboard();
    rig.env("POSTFLOW_POLL_MS", "200");
    rig
}

#[test]
fn upload_by_hand_asks_the_running_instance_and_refuses_paths_outside_the_root() {
    let mut rig = local_rig("up-cli-running");
    // Present at the very first start: a baseline, not uploaded, until asked by hand.
    rig.config["watch"]["upload_existing"] = json!(false);
    let sha = rig.make("old/take1.mov", 200_000, 1);
    let child = rig.start();
    common::wait_until(Duration::from_secs(20), "the baseline", || {
        rig.sandbox.log().contains("recorded as baseline")
    });

    std::fs::write(rig.sandbox.dir.join("elsewhere.mov"), b"not in the root").unwrap();
    let (code, out, err) = upload_cmd(&rig, &["watch/old/take1.mov", "elsewhere.mov"]);
    assert_eq!(code, Some(2), "stdout: {out}\nstderr: {err}");
    assert!(
        err.contains("elsewhere.mov is outside watch.root") && err.contains("nothing was queued"),
        "{err}"
    );
    let (code, out, err) = upload_cmd(&rig, &["watch/no-such.mov"]);
    assert_eq!(code, Some(2), "stdout: {out}\nstderr: {err}");

    let (code, out, err) = upload_cmd(&rig, &["watch/old/take1.mov"]);
    assert_eq!(code, Some(0), "stdout: {out}\nstderr: {err}");
    assert!(
        out.contains("queued ") && out.contains("in the running postflow"),
        "{out}"
    );
    let expected = BTreeMap::from([("old/take1.mov".to_string(), sha)]);
    rig.wait_arrived(&expected, Duration::from_secs(60));
    stop(&rig, child);
    rig.assert_exactly(&expected);
}

#[test]
fn upload_by_hand_without_an_instance_uploads_just_those_files_then_run_does_the_rest() {
    let rig = local_rig("up-cli-oneoff");
    let wanted = rig.make("reel/wanted.mov", 300_000, 2);
    let other = rig.make("reel/other.mov", 100_000, 3);

    // A slow Frame.io keeps the one-off running well past the watcher's settle time, so the
    // other file is stable (and queued) while it runs.
    rig.sim.set_faults(|f| f.response_delay_ms = 400);
    let started = std::time::Instant::now();
    let (code, out, err) = upload_cmd(&rig, &["watch/reel/wanted.mov"]);
    assert_eq!(code, Some(0), "stdout: {out}\nstderr: {err}");
    assert!(out.contains("uploaded reel/wanted.mov: "), "{out}");
    assert!(started.elapsed() > Duration::from_secs(3), "{err}");
    assert!(err.contains("queued reel/other.mov"), "{err}");
    assert!(!err.contains("upload start: other.mov"), "{err}");
    rig.sim.set_faults(|f| f.response_delay_ms = 0);
    let only_wanted = BTreeMap::from([("reel/wanted.mov".to_string(), wanted.clone())]);
    rig.assert_exactly(&only_wanted);
    // The file the one-off only recorded is uploaded by the next `run` (which could take the
    // lock: the one-off let it go); the one it uploaded is not sent again.
    let child = rig.start();
    let all = BTreeMap::from([
        ("reel/wanted.mov".to_string(), wanted),
        ("reel/other.mov".to_string(), other),
    ]);
    rig.wait_arrived(&all, Duration::from_secs(60));
    stop(&rig, child);
    rig.assert_exactly(&all);
}
