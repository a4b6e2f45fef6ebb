//! Versions of a shot stack in Frame.io (issue #15), told on the real binary against the
//! simulator: v002 over v001, v003 moved on top, versions dropped together, versions uploaded
//! by hand, a late lower version, `kill -9` right after the stack is made or the move is sent,
//! a 5xx on the create, a stacking that fails and is retried alone; and what it costs: a card
//! of versioned clips into one big folder shares one listing of it, a new version of a shot
//! postflow stacked lists nothing, and what reviewers change after a listing is checked, not
//! trusted.

mod common;
mod frameio_support;
mod upload_support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sim::StackView;
use upload_support::{stop, Rig};

const FOLDER: &str = "SQ01/UNDLM_00412";

fn name(v: u32) -> String {
    format!("SQ01_UNDLM_00412_v{v:03}.mov")
}

/// A rig uploading locally with the studio's naming convention (stacking on by default).
fn rig(test: &str, change: impl FnOnce(&mut sim::Options)) -> Rig {
    let mut rig = Rig::new(test, "local", change);
    rig.config["layout"] = json!({
        "pattern": "{seq}_UNDLM_{shot}_v{version}.{ext}",
        "folders": "{seq}/UNDLM_{shot}",
    });
    rig.with_dashboard();
    rig.env("POSTFLOW_POLL_MS", "100");
    rig
}

/// Writes version `v` of the shot into the watch root.
fn drop_version(rig: &Rig, v: u32, size: u64) {
    rig.make(&name(v), size, v);
}

/// The job of a file, from `/api/jobs` (None too while the dashboard is not up yet).
fn job(rig: &Rig, file: &str) -> Option<Value> {
    let listen = rig.config["dashboard"]["listen"].as_str()?;
    let mut resp = ureq::get(&format!("http://{listen}/api/jobs?limit=1000"))
        .call()
        .ok()?;
    let body: Value = serde_json::from_str(&resp.body_mut().read_to_string().ok()?).ok()?;
    body["jobs"]
        .as_array()?
        .iter()
        .find(|j| j["name"] == file)
        .cloned()
}

/// Waits until the job of `file` is done and its stacking is no longer pending; returns it.
fn settled(rig: &Rig, file: &str) -> Value {
    let start = Instant::now();
    loop {
        if let Some(j) = job(rig, file) {
            let state = j["stack"]["state"].as_str().unwrap_or("");
            if j["state"] == "done" && !state.is_empty() && state != "pending" {
                return j;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "{file} never settled: {:?}\nstacks {:?}\nlog:\n{}",
            job(rig, file),
            rig.sim.stacks(),
            rig.sandbox.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The one stack in Frame.io, its file names bottom first.
fn the_stack(rig: &Rig) -> StackView {
    let stacks = rig.sim.stacks();
    assert_eq!(
        stacks.len(),
        1,
        "one stack: {stacks:?}\n{}",
        rig.sandbox.log()
    );
    stacks.into_iter().next().unwrap()
}

fn names(versions: &[u32]) -> Vec<String> {
    versions.iter().map(|v| name(*v)).collect()
}

/// Each version was sent once (local uploads: one `local_upload` per file), each file is in
/// Frame.io once, in the shot's folder.
fn uploaded_once(rig: &Rig, versions: &[u32]) {
    assert_eq!(
        rig.sim.request_count("local_upload", Some(201)),
        versions.len() as u64,
        "one upload per version\n{}",
        rig.sandbox.log()
    );
    let paths = rig.sim.by_path();
    for v in versions {
        let path = format!("{FOLDER}/{}", name(*v));
        let entry = paths
            .get(&path)
            .unwrap_or_else(|| panic!("{path} missing: {paths:?}"));
        assert_eq!((entry.copies, entry.complete), (1, 1), "{path}");
    }
}

#[test]
fn v001_then_v002_make_one_stack_and_v003_later_is_moved_on_top() {
    let rig = rig("stack-sequence", |_| {});
    let child = rig.start();
    drop_version(&rig, 1, 300_000);
    let v1 = settled(&rig, &name(1));
    assert_eq!(v1["stack"]["state"], "alone");
    assert!(rig.sim.stacks().is_empty());

    drop_version(&rig, 2, 200_000);
    let v2 = settled(&rig, &name(2));
    let stack = the_stack(&rig);
    assert_eq!(stack.folder, FOLDER);
    assert_eq!(stack.versions, names(&[1, 2]), "v002 on top");
    assert_eq!(v2["stack_summary"], "v002, stacked on v001");
    assert_eq!(
        v2["stack"]["stack_id"],
        stack.id.as_str(),
        "/api/jobs carries the stack id"
    );
    // v001's job says it is in the stack now too.
    let v1 = job(&rig, &name(1)).unwrap();
    assert_eq!(v1["stack_summary"], "v001, stacked below v002");

    drop_version(&rig, 3, 250_000);
    let v3 = settled(&rig, &name(3));
    assert_eq!(the_stack(&rig).versions, names(&[1, 2, 3]));
    assert_eq!(v3["stack_summary"], "v003, stacked on v002");
    let v2 = job(&rig, &name(2)).unwrap();
    assert_eq!(v2["stack_summary"], "v002, stacked on v001 (below v003)");
    // The Frame.io link opens the new version itself.
    let v3_file = rig.sim.file(v3["file_id"].as_str().unwrap()).unwrap();
    assert_eq!(v3_file.stack_id.as_deref(), Some(stack.id.as_str()));
    assert!(v3["view_url"].as_str().unwrap().ends_with(&v3_file.id));
    let log = stop(&rig, child);
    assert_eq!(rig.sim.request_count("create_version_stack", None), 1);
    assert_eq!(rig.sim.request_count("move_file", None), 1);
    assert_eq!(
        rig.sim.request_count("reorder_versions", None),
        0,
        "v003 landed on top"
    );
    uploaded_once(&rig, &[1, 2, 3]);
    assert!(log.contains("v003, stacked on v002 in Frame.io"), "{log}");
}

#[test]
fn v001_and_v002_dropped_together_stack_in_order() {
    let rig = rig("stack-together", |o| {
        // Small parts: the big v001 takes longer than the small v002.
        o.faults.part_size = 256 * 1024;
        o.faults.single_part_below = 256 * 1024;
        o.faults.response_delay_ms = 20;
    });
    let child = rig.start();
    drop_version(&rig, 1, 4_000_000);
    drop_version(&rig, 2, 100_000);
    let v2 = settled(&rig, &name(2));
    settled(&rig, &name(1));
    stop(&rig, child);
    assert_eq!(the_stack(&rig).versions, names(&[1, 2]));
    assert_eq!(v2["stack_summary"], "v002, stacked on v001");
    assert_eq!(rig.sim.request_count("create_version_stack", None), 1);
    assert_eq!(rig.sim.request_count("reorder_versions", None), 0);
    uploaded_once(&rig, &[1, 2]);
}

#[test]
fn three_versions_dropped_together_stack_in_order_even_when_the_middle_one_is_slowest() {
    let rig = rig("stack-middle-slow", |o| {
        // v002 has a hundred parts to send; v001 and v003 one each.
        o.faults.part_size = 256 * 1024;
        o.faults.single_part_below = 256 * 1024;
        o.faults.response_delay_ms = 100;
    });
    let child = rig.start();
    drop_version(&rig, 1, 100_000);
    drop_version(&rig, 2, 26_000_000);
    drop_version(&rig, 3, 100_000);
    let v3 = settled(&rig, &name(3));
    settled(&rig, &name(2));
    settled(&rig, &name(1));
    let log = stop(&rig, child);
    let done_at = |v: u32| log.find(&format!("upload done: {}", name(v))).unwrap();
    assert!(
        done_at(3) < done_at(2),
        "the story needs v003 in before v002\n{log}"
    );
    assert_eq!(the_stack(&rig).versions, names(&[1, 2, 3]));
    assert_eq!(v3["stack_summary"], "v003, stacked on v002");
    // v003 waited for v002 to land below it: no reorder was needed.
    assert_eq!(rig.sim.request_count("reorder_versions", None), 0);
    assert_eq!(rig.sim.request_count("create_version_stack", None), 1);
    uploaded_once(&rig, &[1, 2, 3]);
}

/// The shot's folder in the simulator, made by hand (as a person or an earlier tool would).
fn shot_folder(rig: &Rig) -> String {
    let seq = rig.sim.add_folder(&rig.sim.root_folder_id(), "SQ01");
    rig.sim.add_folder(&seq, "UNDLM_00412")
}

#[test]
fn a_v002_whose_v001_was_uploaded_by_hand_still_stacks() {
    let rig = rig("stack-by-hand", |_| {});
    let folder = shot_folder(&rig);
    let by_hand = rig.sim.add_file(&folder, &name(1), 5_000);
    let child = rig.start();
    drop_version(&rig, 2, 200_000);
    let v2 = settled(&rig, &name(2));
    stop(&rig, child);
    let stack = the_stack(&rig);
    assert_eq!(stack.versions, names(&[1, 2]));
    assert_eq!(stack.file_ids[0], by_hand);
    assert_eq!(v2["stack_summary"], "v002, stacked on v001");
    assert_eq!(rig.sim.request_count("local_upload", Some(201)), 1);
}

#[test]
fn a_v003_joins_the_stack_someone_made_by_hand() {
    let rig = rig("stack-hand-made", |_| {});
    let folder = shot_folder(&rig);
    let v1 = rig.sim.add_file(&folder, &name(1), 5_000);
    let v2 = rig.sim.add_file(&folder, &name(2), 5_000);
    let by_hand = rig.sim.add_stack(&folder, &[&v1, &v2]);
    let child = rig.start();
    drop_version(&rig, 3, 200_000);
    let v3 = settled(&rig, &name(3));
    stop(&rig, child);
    let stack = the_stack(&rig);
    assert_eq!(stack.id, by_hand);
    assert_eq!(stack.versions, names(&[1, 2, 3]));
    assert_eq!(v3["stack_summary"], "v003, stacked on v002");
    assert_eq!(rig.sim.request_count("create_version_stack", None), 0);
}

#[test]
fn a_v002_with_no_earlier_version_stays_a_plain_file() {
    let rig = rig("stack-alone", |_| {});
    let child = rig.start();
    drop_version(&rig, 2, 200_000);
    // Another shot's v001 is not an earlier version of it, nor is a .mp4 of the same shot.
    rig.make("SQ01_UNDLM_00413_v001.mov", 100_000, 7);
    rig.make("SQ01_UNDLM_00412_v001.mp4", 100_000, 8);
    let v2 = settled(&rig, &name(2));
    settled(&rig, "SQ01_UNDLM_00413_v001.mov");
    settled(&rig, "SQ01_UNDLM_00412_v001.mp4");
    stop(&rig, child);
    assert_eq!(v2["stack"]["state"], "alone");
    assert_eq!(
        v2["stack_summary"],
        "v002, not stacked: no other version of it in the Frame.io folder"
    );
    assert!(rig.sim.stacks().is_empty());
    assert_eq!(rig.sim.request_count("create_version_stack", None), 0);
}

#[test]
fn stacking_off_leaves_versions_side_by_side() {
    let mut rig = rig("stack-off", |_| {});
    rig.config["layout"]["stack_versions"] = json!(false);
    let child = rig.start();
    drop_version(&rig, 1, 100_000);
    drop_version(&rig, 2, 100_000);
    rig.wait_done(2, Duration::from_secs(60));
    let jobs = rig.jobs();
    stop(&rig, child);
    assert!(rig.sim.stacks().is_empty());
    assert!(jobs.iter().all(|j| j["stack"].is_null()), "{jobs:?}");
    uploaded_once(&rig, &[1, 2]);
}

#[test]
fn a_late_lower_version_goes_below_the_higher_one() {
    let rig = rig("stack-late", |_| {});
    let child = rig.start();
    drop_version(&rig, 1, 100_000);
    settled(&rig, &name(1));
    drop_version(&rig, 3, 100_000);
    settled(&rig, &name(3));
    drop_version(&rig, 2, 100_000);
    let v2 = settled(&rig, &name(2));
    let v3 = job(&rig, &name(3)).unwrap();
    stop(&rig, child);
    assert_eq!(
        the_stack(&rig).versions,
        names(&[1, 2, 3]),
        "v003 stays on top"
    );
    assert_eq!(v2["stack_summary"], "v002, stacked on v001 (below v003)");
    assert_eq!(
        v3["stack_summary"], "v003, stacked on v002",
        "its neighbour changed"
    );
    assert_eq!(rig.sim.request_count("reorder_versions", Some(200)), 1);
}

#[test]
fn when_frameio_refuses_the_reorder_it_is_said_once_and_the_upload_stays_done() {
    let rig = rig("stack-no-reorder", |o| {
        o.faults.stacks.reorder_unavailable = true
    });
    let child = rig.start();
    for v in [1, 4] {
        drop_version(&rig, v, 100_000);
        settled(&rig, &name(v));
    }
    // Two late versions: the first refusal is logged; the second is not asked for again.
    drop_version(&rig, 2, 100_000);
    let v2 = settled(&rig, &name(2));
    drop_version(&rig, 3, 100_000);
    settled(&rig, &name(3));
    let log = stop(&rig, child);
    assert_eq!(v2["state"], "done");
    assert_eq!(v2["stack"]["state"], "stacked");
    let summary = v2["stack_summary"].as_str().unwrap();
    assert!(
        summary.contains("out of order (v002 belongs below v004)"),
        "{summary}"
    );
    assert_eq!(
        log.matches("Frame.io refused the experimental version reorder")
            .count(),
        1,
        "{log}"
    );
    assert_eq!(rig.sim.request_count("reorder_versions", None), 1);
    // Where Frame.io put them: moved-in files on top.
    assert_eq!(the_stack(&rig).versions, names(&[1, 4, 2, 3]));
}

#[test]
fn wherever_frameio_puts_a_moved_in_file_the_highest_version_ends_on_top() {
    let rig = rig("stack-bottom", |o| {
        o.faults.stacks.moved_in_at_bottom = true
    });
    let child = rig.start();
    for v in [1, 2, 3] {
        drop_version(&rig, v, 100_000);
        settled(&rig, &name(v));
    }
    stop(&rig, child);
    assert_eq!(the_stack(&rig).versions, names(&[1, 2, 3]));
    assert_eq!(rig.sim.request_count("reorder_versions", Some(200)), 1);
}

/// How long the simulator holds the answer to a create or move that took effect: time for
/// the test to kill postflow before it hears.
const HOLD_MS: u64 = 3000;

/// The simulator counts a request when it answers; the one held while postflow was killed
/// is counted once its hold ends (whoever listens).
fn held_answer_counted(rig: &Rig, endpoint: &str) {
    common::wait_until(Duration::from_secs(30), "the held answer", || {
        rig.sim.request_count(endpoint, None) >= 1
    });
}

/// Waits until the simulator's stacks satisfy `cond`.
fn wait_stacks(rig: &Rig, what: &str, cond: impl Fn(&[StackView]) -> bool) {
    common::wait_until(Duration::from_secs(60), what, || cond(&rig.sim.stacks()));
}

#[test]
fn kill_9_right_after_the_stack_is_created_then_a_restart_one_stack_nothing_uploaded_twice() {
    let mut rig = rig("stack-kill-create", |_| {});
    let child = rig.start();
    drop_version(&rig, 1, 150_000);
    settled(&rig, &name(1));
    // Frame.io makes the stack and is slow to say so: postflow dies before it hears.
    rig.sim
        .set_faults(|f| f.stacks.hold_after_commit_ms = HOLD_MS);
    drop_version(&rig, 2, 150_000);
    wait_stacks(&rig, "the stack to be made", |s| s.len() == 1);
    rig.kill9(child);
    rig.sim.set_faults(|f| f.stacks.hold_after_commit_ms = 0);

    let child = rig.start();
    let v2 = settled(&rig, &name(2));
    held_answer_counted(&rig, "create_version_stack");
    stop(&rig, child);
    assert_eq!(the_stack(&rig).versions, names(&[1, 2]));
    assert_eq!(v2["stack_summary"], "v002, stacked on v001");
    assert_eq!(
        rig.sim.request_count("create_version_stack", None),
        1,
        "never a second"
    );
    uploaded_once(&rig, &[1, 2]);
}

#[test]
fn kill_9_right_after_the_move_is_sent_then_a_restart_no_second_move() {
    let mut rig = rig("stack-kill-move", |_| {});
    let child = rig.start();
    for v in [1, 2] {
        drop_version(&rig, v, 150_000);
        settled(&rig, &name(v));
    }
    rig.sim
        .set_faults(|f| f.stacks.hold_after_commit_ms = HOLD_MS);
    drop_version(&rig, 3, 150_000);
    wait_stacks(&rig, "v003 to be moved in", |s| {
        s.first().is_some_and(|s| s.versions.len() == 3)
    });
    rig.kill9(child);
    rig.sim.set_faults(|f| f.stacks.hold_after_commit_ms = 0);

    let child = rig.start();
    let v3 = settled(&rig, &name(3));
    held_answer_counted(&rig, "move_file");
    stop(&rig, child);
    assert_eq!(the_stack(&rig).versions, names(&[1, 2, 3]));
    assert_eq!(v3["stack_summary"], "v003, stacked on v002");
    assert_eq!(
        rig.sim.request_count("move_file", None),
        1,
        "never moved twice"
    );
    assert_eq!(rig.sim.request_count("create_version_stack", None), 1);
    uploaded_once(&rig, &[1, 2, 3]);
}

#[test]
fn a_5xx_on_the_create_is_looked_up_not_repeated() {
    // The 5xx comes after Frame.io made the stack (a gateway error on a request that went
    // through), then one that comes before: looked up both times, one stack in the end.
    for (after_commit, creates) in [(true, 1), (false, 2)] {
        let rig = rig(&format!("stack-5xx-{after_commit}"), |o| {
            o.faults.error_5xx_after_commit = after_commit;
        });
        let child = rig.start();
        drop_version(&rig, 1, 100_000);
        settled(&rig, &name(1));
        rig.sim.set_faults(|f| {
            f.error_5xx_next = 1;
            f.error_5xx_only = vec!["create_version_stack".into()];
        });
        drop_version(&rig, 2, 100_000);
        let v2 = settled(&rig, &name(2));
        let log = stop(&rig, child);
        assert_eq!(v2["stack_summary"], "v002, stacked on v001", "{log}");
        assert_eq!(the_stack(&rig).versions, names(&[1, 2]));
        let counters = rig.sim.counters();
        let sent = rig.sim.request_count("create_version_stack", None);
        assert_eq!(
            sent, creates,
            "after commit {after_commit}: {counters:?}\n{log}"
        );
        assert_eq!(
            log.contains("the version stack was made although Frame.io answered"),
            after_commit,
            "{log}"
        );
        uploaded_once(&rig, &[1, 2]);
    }
}

#[test]
fn a_stacking_failure_leaves_the_upload_done_with_a_warning_and_a_retry_that_only_stacks() {
    let rig = rig("stack-fail", |_| {});
    let child = rig.start();
    drop_version(&rig, 1, 100_000);
    settled(&rig, &name(1));
    // Every create answers 500 (before doing anything): the step gives up.
    rig.sim.set_faults(|f| {
        f.error_5xx_next = 100;
        f.error_5xx_only = vec!["create_version_stack".into()];
    });
    drop_version(&rig, 2, 100_000);
    let v2 = settled(&rig, &name(2));
    assert_eq!(v2["state"], "done", "the upload is not lost");
    assert_eq!(v2["stack"]["state"], "failed");
    let warning = v2["stack_summary"].as_str().unwrap();
    assert!(
        warning.starts_with("uploaded; not stacked: injected server error (HTTP 5"),
        "{warning}"
    );
    assert!(rig.sim.stacks().is_empty());

    // The existing retry is for failed uploads; the stacking has its own.
    let listen = rig.config["dashboard"]["listen"]
        .as_str()
        .unwrap()
        .to_string();
    let post = |path: &str| {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut r = agent
            .post(&format!("http://{listen}{path}"))
            .send("")
            .unwrap();
        (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
    };
    let id = v2["id"].as_u64().unwrap();
    assert_eq!(post(&format!("/api/jobs/{id}/retry")).0, 409);
    rig.sim.set_faults(|f| f.error_5xx_next = 0);
    assert_eq!(post(&format!("/api/jobs/{id}/retry-stack")).0, 200);
    let v2 = settled(&rig, &name(2));
    assert_eq!(v2["stack_summary"], "v002, stacked on v001");
    let (status, body) = post(&format!("/api/jobs/{id}/retry-stack"));
    assert_eq!(status, 409, "only a failed stacking: {body}");
    assert_eq!(post("/api/jobs/99999/retry-stack").0, 404);
    stop(&rig, child);
    assert_eq!(the_stack(&rig).versions, names(&[1, 2]));
    uploaded_once(&rig, &[1, 2]);
}

#[test]
fn the_recovery_search_finds_a_copy_inside_a_stack_and_adopts_it() {
    // A complete copy of v002 already sits in a stack (an earlier attempt made it before its
    // answer was lost, and someone stacked it since). The first attempt's request fails
    // ambiguously, so the next one searches the folder: it must look inside the stack.
    let rig = rig("stack-adopt", |o| {
        o.faults.error_5xx_next = 1;
        o.faults.error_5xx_only = vec!["local_upload".into()];
    });
    let folder = shot_folder(&rig);
    let path = rig.sandbox.watch_root().join(name(2));
    upload_support::make_file(&path, 123_456, 2);
    let v1 = rig.sim.add_file(&folder, &name(1), 5_000);
    let copy = rig.sim.add_file(&folder, &name(2), 123_456);
    rig.sim.add_stack(&folder, &[&v1, &copy]);
    let child = rig.start();
    let v2 = settled(&rig, &name(2));
    let log = stop(&rig, child);
    assert_eq!(v2["file_id"], copy.as_str(), "adopted\n{log}");
    assert!(log.contains("already in Frame.io, adopting it"), "{log}");
    assert_eq!(rig.sim.request_count("local_upload", Some(201)), 0, "{log}");
    assert_eq!(rig.sim.files().len(), 2, "no second copy");
    assert_eq!(v2["stack_summary"], "v002, stacked on v001");
}

/// Calls that list a folder's contents (a page per 100 entries each), in all.
fn folder_listings(rig: &Rig) -> u64 {
    ["list_children", "list_files", "list_version_stacks"]
        .iter()
        .map(|e| rig.sim.request_count(e, None))
        .sum()
}

#[test]
fn a_card_of_versioned_clips_into_one_folder_costs_no_folder_listing_per_file() {
    // A roll's dailies folder that already holds 250 clips (three pages to list), one of
    // them a v001 uploaded by hand; then a card lands in the watch folder, every clip of it
    // bound for that one folder: 14 shots with a v001 only, 2 with v001 and v002, 2 with v001
    // to v003, and the v002 of the shot uploaded by hand.
    let mut rig = Rig::new("stack-card", "local", |_| {});
    rig.config["layout"] = json!({ "pattern": "{roll}_{shot}_v{version}.{ext}" });
    rig.with_dashboard();
    rig.env("POSTFLOW_POLL_MS", "100");
    let roll = rig.sim.add_folder(&rig.sim.root_folder_id(), "A001");
    for i in 0..249 {
        rig.sim
            .add_file(&roll, &format!("A001C{i:03}_dailies.mxf"), 1_000);
    }
    let by_hand = rig.sim.add_file(&roll, "A001_SH0099_v001.mxf", 5_000);
    let clip = |shot: u32, v: u32| format!("A001_SH{shot:04}_v{v:03}.mxf");
    let mut card: Vec<(u32, u32)> = Vec::new();
    for shot in 0..18 {
        let versions = match shot {
            0..14 => 1,
            14..16 => 2,
            _ => 3,
        };
        card.extend((1..=versions).map(|v| (shot, v)));
    }
    card.push((99, 2));
    let child = rig.start();
    let mut expected = BTreeMap::new();
    for (i, (shot, v)) in card.iter().enumerate() {
        let name = clip(*shot, *v);
        let sha = rig.make(
            &format!("A001/{name}"),
            20_000 + i as u64 * 1_000,
            i as u32 + 1,
        );
        expected.insert(format!("A001/{name}"), sha);
    }
    for (shot, v) in &card {
        settled(&rig, &clip(*shot, *v));
    }
    let log = stop(&rig, child);

    // Every clip once, and one stack per shot with versions, highest on top.
    let have = rig.sim.by_path();
    for (path, sha) in &expected {
        let entry = have.get(path).unwrap_or_else(|| panic!("{path} missing"));
        assert_eq!((entry.copies, entry.complete), (1, 1), "{path}");
        assert_eq!(entry.sha256.as_deref(), Some(sha.as_str()), "{path}");
    }
    let mut stacks = rig.sim.stacks();
    stacks.sort_by(|a, b| a.versions.cmp(&b.versions));
    let want: Vec<Vec<String>> = vec![
        vec![clip(14, 1), clip(14, 2)],
        vec![clip(15, 1), clip(15, 2)],
        vec![clip(16, 1), clip(16, 2), clip(16, 3)],
        vec![clip(17, 1), clip(17, 2), clip(17, 3)],
        vec![clip(99, 1), clip(99, 2)],
    ];
    let got: Vec<Vec<String>> = stacks.iter().map(|s| s.versions.clone()).collect();
    assert_eq!(got, want, "{log}");
    assert_eq!(stacks[4].file_ids[0], by_hand);
    assert!(stacks.iter().all(|s| s.folder == "A001"));

    // Listing before every stacking step cost a listing of the folder (three pages, and
    // growing) per clip: 75 calls or more for these 25. Now the card shares one listing of
    // the folder (files and stacks: four calls), taken again at most twice for clips found
    // after it was, plus one listing of the project root each for the uploads and the
    // stacking to find the folder.
    let listings = folder_listings(&rig);
    assert!(
        listings <= 14,
        "{listings} folder listings for {} clips: {:?}",
        card.len(),
        rig.sim.counters()
    );
    assert_eq!(
        rig.sim.request_count("local_upload", Some(201)),
        card.len() as u64
    );
    assert_eq!(
        rig.sim.request_count("reorder_versions", None),
        0,
        "a card's versions stack in order"
    );
}

#[test]
fn a_new_version_of_a_shot_postflow_stacked_lists_nothing() {
    // The ledger knows v002 is in the shot's stack: v003 checks that stack and joins it,
    // without listing the folder (which could hold thousands of files).
    let rig = rig("stack-ledger-first", |_| {});
    let child = rig.start();
    for v in [1, 2] {
        drop_version(&rig, v, 100_000);
        settled(&rig, &name(v));
    }
    let before = folder_listings(&rig);
    drop_version(&rig, 3, 100_000);
    let v3 = settled(&rig, &name(3));
    stop(&rig, child);
    assert_eq!(v3["stack_summary"], "v003, stacked on v002");
    assert_eq!(the_stack(&rig).versions, names(&[1, 2, 3]));
    assert_eq!(
        folder_listings(&rig),
        before,
        "no folder listing for v003: {:?}",
        rig.sim.counters()
    );
    assert_eq!(rig.sim.request_count("move_file", None), 1);
}

/// A rig where v001 is in Frame.io (and stacked alone) while v002, found with it, is still
/// uploading: v002 then stacks from the folder listing taken for v001. Returns the rig, the
/// running postflow and v001's file.
fn v002_still_uploading(test: &str) -> (Rig, std::process::Child, sim::FileView) {
    let rig = rig(test, |o| {
        // 1 MiB parts at 1 MB/s, four at a time: v002's 40 parts take ten seconds.
        o.faults.part_size = 1 << 20;
        o.faults.single_part_below = 1 << 20;
        o.faults.s3_bytes_per_sec = 1_000_000;
    });
    let child = rig.start();
    drop_version(&rig, 1, 100_000);
    drop_version(&rig, 2, 40 << 20);
    let v1 = settled(&rig, &name(1));
    let v2 = job(&rig, &name(2)).unwrap();
    assert_ne!(v2["state"], "done", "the story needs v002 still on its way");
    let file = rig.sim.file(v1["file_id"].as_str().unwrap()).unwrap();
    (rig, child, file)
}

/// What a reviewer does in Frame.io's web app: move a file into another folder or a stack.
fn move_by_hand(rig: &Rig, file_id: &str, parent_id: &str) {
    let token = rig.sim.login_tokens().access_token;
    let url = format!(
        "{}/v4/accounts/{}/files/{file_id}/move",
        rig.sim.base_url(),
        rig.sim.account_id()
    );
    let body = json!({"data": {"parent_id": parent_id}}).to_string();
    let resp = ureq::patch(&url)
        .header("Authorization", &format!("Bearer {token}"))
        .header("Content-Type", "application/json")
        .send(body)
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
}

#[test]
fn a_stack_a_reviewer_made_after_the_folder_was_listed_is_joined_not_doubled() {
    let (rig, child, v1) = v002_still_uploading("stack-stale-stack");
    // Meanwhile a reviewer stacks v001 on an older cut uploaded by hand.
    let v0 = rig.sim.add_file(&v1.parent_id, &name(0), 5_000);
    let by_hand = rig.sim.add_stack(&v1.parent_id, &[&v0, &v1.id]);
    let v2 = settled(&rig, &name(2));
    let log = stop(&rig, child);
    let stack = the_stack(&rig);
    assert_eq!(stack.id, by_hand, "{log}");
    assert_eq!(stack.versions, names(&[0, 1, 2]));
    assert_eq!(v2["stack_summary"], "v002, stacked on v001");
    assert_eq!(rig.sim.request_count("create_version_stack", None), 0);
    assert_eq!(
        rig.sim.request_count("list_files", None),
        1,
        "v002 was stacked from the listing taken for v001, which did not show the new stack"
    );
    uploaded_once(&rig, &[1, 2]);
}

#[test]
fn a_version_a_reviewer_moved_away_after_the_folder_was_listed_is_not_stacked_on() {
    let (rig, child, v1) = v002_still_uploading("stack-stale-moved");
    let selects = rig.sim.add_folder(&rig.sim.root_folder_id(), "Selects");
    move_by_hand(&rig, &v1.id, &selects);
    let v2 = settled(&rig, &name(2));
    stop(&rig, child);
    assert_eq!(
        v2["stack_summary"],
        "v002, not stacked: no other version of it in the Frame.io folder"
    );
    assert!(rig.sim.stacks().is_empty());
    assert_eq!(rig.sim.request_count("create_version_stack", None), 0);
    let v1_now = rig.sim.file(&v1.id).unwrap();
    assert_eq!(
        (v1_now.parent_id.as_str(), v1_now.upload_complete),
        (selects.as_str(), true),
        "where the reviewer put it"
    );
    assert_eq!(
        rig.sim.request_count("list_files", None),
        1,
        "v002 was stacked from the listing taken for v001, which still showed v001"
    );
}

/// xorshift64*: the kill moments come from a seed, printed, so a failure can be replayed with
/// `STACK_KILL_SEED=<seed>`.
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
fn versions_through_kill_9_and_5xx_end_in_one_stack_per_shot_highest_on_top() {
    let seed = std::env::var("STACK_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    println!("kill moments from seed {seed} (replay: STACK_KILL_SEED={seed})");
    let mut rng = Prng(seed);
    let mut rig = rig("stack-chaos", |o| {
        // A tenth of the calls fail, and those that change something fail after doing it.
        o.faults.error_5xx_fraction = 0.1;
        o.faults.error_5xx_after_commit = true;
        o.faults.response_delay_ms = 30;
    });
    let shots = ["00412", "00413", "00414"];
    let file = |shot: &str, v: u32| format!("SQ01_UNDLM_{shot}_v{v:03}.mov");
    let mut child = rig.start();
    for v in 1..=3u32 {
        for (i, shot) in shots.iter().enumerate() {
            rig.make(
                &file(shot, v),
                50_000 + rng.below(400_000),
                v * 10 + i as u32,
            );
        }
        let moment = Duration::from_millis(800 + rng.below(2000));
        std::thread::sleep(moment);
        println!("v{v:03} dropped; kill -9 after {moment:?}");
        rig.kill9(child);
        child = rig.start();
    }
    // A first version is alone until its next version stacks on it: wait for all nine.
    let names: Vec<String> = shots
        .iter()
        .flat_map(|shot| (1..=3).map(move |v| file(shot, v)))
        .collect();
    let start = Instant::now();
    while !names.iter().all(|n| {
        job(&rig, n).is_some_and(|j| j["state"] == "done" && j["stack"]["state"] == "stacked")
    }) {
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "seed {seed}: not all stacked: {:?}\n{}",
            names
                .iter()
                .map(|n| job(&rig, n).map(|j| j["stack_summary"].clone()))
                .collect::<Vec<_>>(),
            rig.sandbox.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    stop(&rig, child);
    let stacks = rig.sim.stacks();
    assert_eq!(stacks.len(), 3, "one stack per shot: {stacks:?}");
    for shot in shots {
        let folder = format!("SQ01/UNDLM_{shot}");
        let stack = stacks.iter().find(|s| s.folder == folder).unwrap();
        let want: Vec<String> = (1..=3).map(|v| file(shot, v)).collect();
        assert_eq!(stack.versions, want, "{folder}, seed {seed}");
    }
    let paths = rig.sim.by_path();
    assert_eq!(paths.len(), 9, "{paths:?}");
    for (path, entry) in &paths {
        assert_eq!((entry.copies, entry.complete), (1, 1), "{path}");
    }
}
