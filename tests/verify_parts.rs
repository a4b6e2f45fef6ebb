//! Verified bytes on local uploads (issue 22, DESIGN "Verification"): every part PUT carries
//! `Content-MD5`, so S3 refuses a part that changed on the way (`BadDigest`) and that part
//! alone is sent again; presigned URLs that refuse the header do not stop an upload.

mod common;
mod frameio_support;
mod upload_support;

use std::collections::BTreeMap;
use std::time::Duration;

use upload_support::{stop, Rig};

const MIB: u64 = 1 << 20;

#[test]
fn with_one_part_in_five_corrupted_every_file_arrives_once_and_only_those_parts_went_twice() {
    let mut rig = Rig::new("verify-corrupt", "local", |o| {
        o.faults.part_size = 2 * MIB;
        o.faults.single_part_below = 0;
        o.faults.s3_corrupt_every = 5;
    });
    rig.with_dashboard();
    let child = rig.start();
    let mut expected = BTreeMap::new();
    for i in 0..4u32 {
        let rel = format!("SQ01/shot_{i}.mov");
        // 5 parts each: 20 parts, every fifth PUT corrupted on the way in.
        let sha = rig.make(&rel, 10 * MIB, 10 + i);
        expected.insert(rel, sha);
    }
    rig.wait_arrived(&expected, Duration::from_secs(180));
    rig.wait_done(4, Duration::from_secs(60));
    for job in rig.jobs() {
        assert_eq!(job["verified"], "parts-md5", "{job}");
        assert_eq!(job["sha256"], serde_json::Value::Null, "{job}");
    }
    let log = stop(&rig, child);
    rig.assert_exactly(&expected);
    let puts = rig.sim.s3_puts();
    assert!(
        puts.iter()
            .all(|p| p.headers.iter().any(|(k, _)| k == "content-md5")),
        "a PUT without Content-MD5"
    );
    let refused: Vec<_> = puts.iter().filter(|p| p.status != 200).collect();
    assert!(!refused.is_empty(), "nothing was corrupted: {puts:?}");
    assert!(
        refused
            .iter()
            .all(|p| p.error_code.as_deref() == Some("BadDigest")),
        "{refused:?}"
    );
    // Each part was accepted exactly once; only the refused ones were sent again.
    let mut accepted = BTreeMap::new();
    for p in puts.iter().filter(|p| p.status == 200) {
        *accepted
            .entry((p.file_id.clone(), p.part_number))
            .or_insert(0) += 1;
    }
    assert_eq!(accepted.len(), 20, "{accepted:?}");
    assert!(accepted.values().all(|&n| n == 1), "{accepted:?}");
    assert_eq!(puts.len(), 20 + refused.len());
    for r in &refused {
        assert!(accepted.contains_key(&(r.file_id.clone(), r.part_number)));
    }
    assert!(log.contains("BadDigest"), "{log}");
}

#[test]
fn urls_that_refuse_content_md5_still_take_every_part_without_it() {
    let mut rig = Rig::new("verify-refused", "local", |o| {
        o.faults.part_size = 2 * MIB;
        o.faults.single_part_below = 0;
        o.faults.s3_refuse_content_md5 = true;
    });
    rig.with_dashboard();
    let child = rig.start();
    let sha = rig.make("SQ01/plain.mov", 6 * MIB, 7);
    let expected = BTreeMap::from([("SQ01/plain.mov".to_string(), sha)]);
    rig.wait_arrived(&expected, Duration::from_secs(120));
    rig.wait_done(1, Duration::from_secs(60));
    // Done, and not said to be verified.
    let jobs = rig.jobs();
    assert_eq!(jobs[0]["verified"], serde_json::Value::Null, "{jobs:?}");
    let log = stop(&rig, child);
    rig.assert_exactly(&expected);
    assert!(log.contains("refuse Content-MD5"), "{log}");
    assert!(log.contains("sent without Content-MD5"), "{log}");
    let accepted = rig.sim.s3_puts().into_iter().filter(|p| p.status == 200);
    assert!(accepted
        .into_iter()
        .all(|p| !p.headers.iter().any(|(k, _)| k == "content-md5")));
}

#[test]
fn with_verify_off_no_part_carries_content_md5_and_no_job_claims_verification() {
    let mut rig = Rig::new("verify-off", "local", |o| {
        o.faults.part_size = 2 * MIB;
        o.faults.single_part_below = 0;
    });
    rig.with_dashboard();
    rig.config["upload"]["verify"] = serde_json::json!("off");
    let child = rig.start();
    let sha = rig.make("SQ01/off.mov", 5 * MIB, 8);
    let expected = BTreeMap::from([("SQ01/off.mov".to_string(), sha)]);
    rig.wait_arrived(&expected, Duration::from_secs(120));
    rig.wait_done(1, Duration::from_secs(60));
    assert_eq!(rig.jobs()[0]["verified"], serde_json::Value::Null);
    stop(&rig, child);
    rig.assert_exactly(&expected);
    let puts = rig.sim.s3_puts();
    assert_eq!(puts.len(), 3);
    assert!(puts
        .iter()
        .all(|p| !p.headers.iter().any(|(k, _)| k == "content-md5")));
}
