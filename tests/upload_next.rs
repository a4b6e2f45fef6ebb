//! "Upload next" (issue 22): the hero shot needed in an hour does not wait behind a card of
//! clips. Asked for the last of 100 queued files, it is the next to start, and a restart in
//! between keeps it so (the ledger records it).

mod common;
mod frameio_support;
mod upload_support;

use std::time::Duration;

use serde_json::{json, Value};
use upload_support::{stop, Rig};

fn post(rig: &Rig, path: &str) -> (u16, Value) {
    let listen = rig.config["dashboard"]["listen"].as_str().unwrap();
    let mut resp = ureq::post(&format!("http://{listen}{path}"))
        .config()
        .http_status_as_error(false)
        .build()
        .header("content-type", "application/json")
        .send("{}")
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[test]
fn upload_next_on_the_last_of_100_queued_makes_it_the_next_to_start_even_after_a_restart() {
    let mut rig = Rig::new("upload-next", "local", |_| {});
    rig.with_dashboard();
    rig.config["upload"]["concurrency"] = json!(1);
    let child = rig.start();
    common::wait_until(Duration::from_secs(30), "the dashboard", || {
        rig.status().is_some()
    });
    assert_eq!(post(&rig, "/api/pause").0, 200);
    for i in 0..100u32 {
        rig.make(&format!("card/clip_{i:03}.mov"), 64 * 1024, i);
    }
    common::wait_until(Duration::from_secs(120), "100 queued jobs", || {
        rig.queue_stats()
            .and_then(|s| s["counts"]["queued"].as_u64())
            == Some(100)
    });
    let jobs = rig.jobs();
    let last = jobs
        .iter()
        .find(|j| j["path"] == "card/clip_099.mov")
        .unwrap();
    let id = last["id"].as_u64().unwrap();
    let (status, body) = post(&rig, &format!("/api/jobs/{id}/next"));
    assert_eq!((status, &body), (200, &json!({"ok": true, "id": id})));
    let (status, _) = post(&rig, "/api/jobs/999999/next");
    assert_eq!(status, 404);
    stop(&rig, child);
    assert!(rig.sim.s3_puts().is_empty(), "nothing went while paused");

    let child = rig.start();
    common::wait_until(Duration::from_secs(30), "the dashboard", || {
        rig.status().is_some()
    });
    post(&rig, "/api/resume");
    common::wait_until(Duration::from_secs(60), "a first upload", || {
        !rig.sim.s3_puts().is_empty()
    });
    let first = rig.sim.s3_puts()[0].file_id.clone();
    let file = rig.sim.files().into_iter().find(|f| f.id == first).unwrap();
    assert_eq!(file.name, "clip_099.mov", "the first to start");
    // Once started it is an upload like any other: 409 for "next" now that it is not queued.
    rig.wait_done(1, Duration::from_secs(60));
    let (status, body) = post(&rig, &format!("/api/jobs/{id}/next"));
    assert_eq!(status, 409, "{body}");
    stop(&rig, child);
}
