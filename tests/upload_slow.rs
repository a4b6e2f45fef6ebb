//! Uploads as production meets them: a slow uplink, a part whose connection stalls, and a
//! Frame.io that gets every byte and never says it is done. Nothing is abandoned for being
//! slow, nothing waits forever, and every file ends up in Frame.io once.

mod common;
mod frameio_support;
mod upload_support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::json;
use upload_support::{stop, Rig};

const MIB: u64 = 1 << 20;

/// The old rule gave a part `max(30 s, size / 1 MB/s)` for its whole body: 30 s for a 16 MiB
/// part, which takes 84 s at 200 KB/s, so nothing ever arrived.
#[test]
fn a_local_upload_over_a_200_kb_s_uplink_with_16_mib_parts_arrives_whole() {
    let mut rig = Rig::new("up-slow-link", "local", |o| {
        o.faults.part_size = 16 * MIB;
        o.faults.single_part_below = 0;
        o.faults.s3_bytes_per_sec = 200_000;
    });
    rig.with_dashboard();
    rig.env("POSTFLOW_POLL_MS", "200");
    let child = rig.start();
    let sha = rig.make("slow/take.mov", 32 * MIB, 3);
    // What the page shows while it goes up: bytes sent, growing, sampled every second.
    let mut shown = Vec::new();
    let started = Instant::now();
    while rig.sim.files().iter().all(|f| !f.upload_complete) {
        assert!(
            started.elapsed() < Duration::from_secs(400),
            "not there after 400 s\n{}",
            rig.sandbox.log()
        );
        if let Some(covered) = rig.transfer("take.mov").and_then(|t| t["covered"].as_u64()) {
            shown.push(covered);
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    rig.wait_done(1, Duration::from_secs(60));
    let log = stop(&rig, child);
    rig.assert_exactly(&BTreeMap::from([("slow/take.mov".to_string(), sha)]));
    assert!(
        started.elapsed() > Duration::from_secs(60),
        "the link was slow: {:?}",
        started.elapsed()
    );
    let puts = rig.sim.s3_puts();
    assert_eq!(puts.len(), 2, "one PUT per part, none abandoned: {puts:?}");
    assert!(puts.iter().all(|p| p.status == 200), "{puts:?}");
    assert!(!log.contains("sending it again"), "{log}");
    // Steady progress: rising all along (the connection takes bytes in batches of what its
    // buffer frees, every few seconds here), never going back, 100 % only once S3 has it all.
    let mut steps: Vec<u64> = shown.clone();
    steps.dedup();
    assert!(steps.len() >= 6, "progress seen on the page: {shown:?}");
    assert!(shown.windows(2).all(|w| w[0] <= w[1]), "{shown:?}");
    let longest_still = shown
        .chunk_by(|a, b| a == b)
        .filter(|run| run[0] < 32 * MIB)
        .map(<[u64]>::len)
        .max()
        .unwrap_or(0);
    assert!(
        longest_still <= 45,
        "progress stood still for {longest_still} s: {shown:?}"
    );
}

/// One part's connection stops taking bytes (S3 or the link hangs): after the stall period it
/// is cut and that part alone is sent again; the other parts are sent once and the job needs
/// no second attempt.
#[test]
fn a_part_that_stalls_is_cut_and_sent_again_alone_while_the_others_go_on() {
    let mut rig = Rig::new("up-stalled-part", "local", |o| {
        // Parts larger than what loopback's socket buffers hold, so the writes really block.
        o.faults.part_size = 64 * MIB;
        o.faults.single_part_below = 0;
        o.faults.s3_stall_next = 1;
        o.faults.s3_stall_ms = 15_000;
    });
    rig.with_dashboard();
    rig.config["upload"]["parallel_parts"] = json!(3);
    rig.env("POSTFLOW_POLL_MS", "200");
    rig.env("POSTFLOW_STALL_SECS", "2");
    let child = rig.start();
    let sha = rig.make("stall.mov", 192 * MIB, 4);
    rig.wait_done(1, Duration::from_secs(180));
    // The stalled PUT is recorded once the simulator stops holding it.
    common::wait_until(Duration::from_secs(60), "the stalled PUT to end", || {
        rig.sim.s3_puts().iter().any(|p| p.status != 200)
    });
    let jobs = rig.jobs();
    let log = stop(&rig, child);
    rig.assert_exactly(&BTreeMap::from([("stall.mov".to_string(), sha)]));
    let puts = rig.sim.s3_puts();
    let failed: Vec<_> = puts.iter().filter(|p| p.status != 200).collect();
    assert_eq!(failed.len(), 1, "{puts:?}");
    let stalled = failed[0].part_number;
    assert!(failed[0].body_len < 64 * MIB, "cut short: {:?}", failed[0]);
    for part in 1..=3 {
        let tries: Vec<u16> = puts
            .iter()
            .filter(|p| p.part_number == part)
            .map(|p| p.status)
            .collect();
        let expected: &[u16] = if part == stalled { &[200, 400] } else { &[200] };
        let mut sorted = tries.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, expected, "part {part}: {tries:?}\n{log}");
    }
    assert!(
        log.contains(&format!(
            "part {stalled} of 3: no byte went out for 2 s, or the connection timed out; sending it again"
        )),
        "{log}"
    );
    assert_eq!(jobs[0]["attempts"], 1, "no second attempt: {jobs:?}");
}

/// Frame.io gets every byte and never says `upload_complete` (its fetcher or pipeline lost
/// the file). After `upload.processing_timeout_secs` that Frame.io file is deleted and the
/// attempt retried; the file arrives once, and the retry lists no folder.
#[test]
fn an_upload_frameio_never_completes_is_redone_after_the_processing_deadline() {
    for mode in ["remote", "local"] {
        let mut rig = Rig::new(&format!("up-deadline-{mode}"), mode, |o| {
            o.faults.never_complete_next = 1;
        });
        rig.with_dashboard();
        rig.config["upload"]["processing_timeout_secs"] = json!(3);
        rig.env("POSTFLOW_POLL_MS", "200");
        let child = rig.start();
        if mode == "remote" {
            rig.wait_tunnel_up();
        }
        let sha = rig.make("lost.wav", 300_000, 5);
        // The page says since when Frame.io has had every byte.
        common::wait_until(Duration::from_secs(60), "all bytes in, on the page", || {
            rig.transfer("lost.wav")
                .is_some_and(|t| t["all_in_ms"].as_u64().is_some())
        });
        rig.wait_done(1, Duration::from_secs(120));
        let jobs = rig.jobs();
        let log = stop(&rig, child);
        rig.assert_exactly(&BTreeMap::from([("lost.wav".to_string(), sha)]));
        assert!(
            rig.incomplete_files().is_empty(),
            "{mode}: the lost one is deleted: {:?}",
            rig.incomplete_files()
        );
        assert_eq!(
            rig.sim.create_count("", "lost.wav", "file"),
            2,
            "{mode}\n{log}"
        );
        assert!(
            log.contains("did not finish processing it within 3 s"),
            "{mode}\n{log}"
        );
        assert_eq!(
            jobs[0]["attempts"], 2,
            "{mode}: counts as an attempt: {jobs:?}"
        );
        assert_eq!(
            rig.sim.request_count("list_children", None),
            0,
            "{mode}: a retry after a clean failure searches nothing"
        );
    }
}
