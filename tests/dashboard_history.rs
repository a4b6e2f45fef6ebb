//! What happened, after the fact: `/api/history` lists the finished uploads with their times,
//! `/api/throughput` has their bytes in the minutes they went out and their day's totals,
//! and both are still there after `kill -9` and a restart. The real binary, against the
//! simulated Frame.io.

mod common;
mod frameio_support;
mod upload_support;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use upload_support::{stop, Rig};

fn get(rig: &Rig, path: &str) -> Value {
    let listen = rig.config["dashboard"]["listen"].as_str().unwrap();
    let text = ureq::get(&format!("http://{listen}{path}"))
        .call()
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
        .body_mut()
        .read_to_string()
        .unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {path}: {e}: {text}"))
}

fn ms(v: &Value) -> u64 {
    let s = v.as_str().unwrap_or_else(|| panic!("not a time: {v}"));
    postflow::timefmt::parse_rfc3339_ms(s).unwrap_or_else(|| panic!("not RFC 3339: {s}"))
}

/// Minute start (unix ms) → bytes.
fn minutes(throughput: &Value) -> BTreeMap<u64, u64> {
    throughput["minutes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (ms(&m["start"]), m["bytes"].as_u64().unwrap()))
        .collect()
}

/// What the recorder has written to the state dir: the sum of its minutes.
fn saved_bytes(rig: &Rig) -> u64 {
    let text =
        std::fs::read_to_string(rig.sandbox.state_dir().join("throughput")).unwrap_or_default();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(' ')?.1.parse::<u64>().ok())
        .sum()
}

fn story(name: &str, mode: &str) {
    let mut rig = Rig::new(name, mode, |o| {
        o.faults.part_size = 5 << 20;
        o.faults.single_part_below = 1 << 20;
    });
    rig.with_dashboard();
    let began = postflow::queue::now_ms();
    let child = rig.start();
    let files = [
        ("SQ01_UNDLM_00412_v001.mov", 700_000u64),
        ("shots/SQ01_UNDLM_00413_v001.mov", 12_000_000),
        ("notes.pdf", 5_000),
    ];
    for (i, (rel, size)) in files.iter().enumerate() {
        rig.make(rel, *size, i as u32 + 1);
    }
    rig.wait_done(files.len() as u64, Duration::from_secs(150));
    let ended = postflow::queue::now_ms();

    // The history: every upload, newest first, with what happened and when.
    let history = get(&rig, "/api/history");
    assert_eq!(history["total"], files.len(), "{history}");
    let jobs = history["jobs"].as_array().unwrap();
    for (rel, size) in files {
        let job = jobs
            .iter()
            .find(|j| j["path"] == rel)
            .unwrap_or_else(|| panic!("{rel} not in the history: {history}"));
        assert_eq!(job["state"], "done");
        assert_eq!(job["size"], size);
        assert_eq!(job["project"], "default");
        assert!(job["view_url"].is_string(), "{job}");
        assert!(job.get("verified").is_some(), "{job}");
        let (stable, started, sent, finished) = (
            ms(&job["stable"]),
            ms(&job["started"]),
            ms(&job["sent"]),
            ms(&job["finished"]),
        );
        assert!(
            began <= stable
                && stable <= started
                && started <= sent
                && sent <= finished
                && finished <= ended,
            "{rel}: times out of order: {job}"
        );
        assert!(job["bytes_per_sec"].as_u64().unwrap() > 0, "{job}");
    }
    let finished: Vec<u64> = jobs.iter().map(|j| ms(&j["finished"])).collect();
    assert!(finished.windows(2).all(|w| w[0] >= w[1]), "newest first");
    // The text filter finds one file.
    let found = get(&rig, "/api/history?q=00413");
    assert_eq!(found["total"], 1, "{found}");
    assert_eq!(found["jobs"][0]["path"], "shots/SQ01_UNDLM_00413_v001.mov");
    // Two at a time, the cursor leads to the last one.
    let first = get(&rig, "/api/history?page_size=2");
    let next = first["next"].as_str().expect("a second page");
    let second = get(&rig, &format!("/api/history?page_size=2&cursor={next}"));
    assert_eq!(second["jobs"].as_array().unwrap().len(), 1, "{second}");
    assert_eq!(second["next"], Value::Null);

    // The throughput: every byte went out in a minute between the first start and the last
    // byte (the tunnel's probe and retried parts can only add).
    let throughput = get(&rig, "/api/throughput");
    let asked = postflow::queue::now_ms();
    let sizes: u64 = files.iter().map(|(_, s)| s).sum();
    let by_minute = minutes(&throughput);
    let first_start = jobs.iter().map(|j| ms(&j["started"])).min().unwrap();
    // Counted bytes are moved into their minute once a second and when this route asks, so
    // the last ones may land in the minute after the last byte: up to the asking.
    let in_window: u64 = by_minute
        .range(first_start / 60_000 * 60_000..=asked)
        .map(|(_, b)| b)
        .sum();
    assert!(
        in_window >= sizes,
        "{in_window} bytes in the upload's minutes, files are {sizes}: {throughput}"
    );
    assert!(
        by_minute.keys().all(|&m| m + 60_000 > began && m <= asked),
        "{throughput}"
    );
    // Today's totals are the sum of today's history.
    let days = throughput["days"].as_array().unwrap();
    assert_eq!(days.len(), 30);
    let today = days.last().unwrap();
    let date = today["date"].as_str().unwrap();
    let of_today = get(
        &rig,
        &format!("/api/history?state=done&since={date}T00:00:00Z&until={date}T23:59:59.999Z&page_size=1000"),
    );
    let listed: u64 = of_today["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["size"].as_u64().unwrap())
        .sum();
    assert_eq!(
        today["files"], of_today["total"],
        "{throughput}\n{of_today}"
    );
    assert_eq!(today["bytes"], listed);
    assert_eq!(today["bytes"], sizes);
    assert_eq!(today["failed"], 0);

    // kill -9 once the recorder has written the minutes; the restart has both again.
    let shown: u64 = by_minute.values().sum();
    common::wait_until(Duration::from_secs(20), "the minutes written", || {
        saved_bytes(&rig) >= shown
    });
    rig.kill9(child);
    let child = rig.start();
    rig.wait_done(files.len() as u64, Duration::from_secs(30));
    let again = get(&rig, "/api/history");
    assert_eq!(
        again["jobs"], history["jobs"],
        "the same history after kill -9"
    );
    let after = get(&rig, "/api/throughput");
    let after_minutes = minutes(&after);
    for (minute, bytes) in &by_minute {
        assert!(
            after_minutes.get(minute).is_some_and(|b| b >= bytes),
            "minute {minute}: {bytes} bytes before kill -9, now {after}"
        );
    }
    assert_eq!(after["days"].as_array().unwrap().last(), Some(today));
    // The CSV has a header and one row per upload.
    let listen = rig.config["dashboard"]["listen"].as_str().unwrap();
    let csv = ureq::get(&format!("http://{listen}/api/history.csv"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert_eq!(csv.lines().count(), 1 + files.len(), "{csv}");
    assert!(csv.starts_with("id,project,path,state,size,"), "{csv}");
    stop(&rig, child);
}

#[test]
fn local_uploads_are_in_the_history_and_the_minutes_and_survive_kill_9() {
    story("history-local", "local");
}

#[test]
fn pulled_files_are_in_the_history_and_the_minutes_and_survive_kill_9() {
    story("history-remote", "remote");
}
