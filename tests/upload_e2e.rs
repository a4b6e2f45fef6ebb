//! The heart of the product, on the real binary against the simulated Frame.io: every file
//! dropped into the watch folder arrives once, in the right folder, with the right bytes.

mod common;
mod frameio_support;
mod upload_support;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;
use sim::FetchMode;
use upload_support::{drop_files, mirrored, stop, Rig};

#[test]
fn remote_uploads_with_plain_gets_arrive_once_with_the_right_bytes() {
    let rig = Rig::new("up-remote-plain", "remote", |o| {
        o.faults.fetch_mode = FetchMode::Plain
    });
    let child = rig.start();
    let expected = drop_files(&rig.sandbox, mirrored);
    rig.wait_arrived(&expected, Duration::from_secs(150));
    let log = stop(&rig, child);
    rig.assert_exactly(&expected);
    assert!(rig.sim.s3_puts().is_empty(), "remote mode sends no parts");
    assert!(
        log.contains("upload done: SQ01_UNDLM_00412_v001.mov"),
        "{log}"
    );
}

#[test]
fn remote_uploads_with_parallel_ranges_arrive_once_with_the_right_bytes() {
    let rig = Rig::new("up-remote-ranges", "remote", |o| {
        o.faults.fetch_mode = FetchMode::Ranges;
        o.faults.fetch_parallelism = 4;
    });
    let child = rig.start();
    let expected = drop_files(&rig.sandbox, mirrored);
    rig.wait_arrived(&expected, Duration::from_secs(150));
    stop(&rig, child);
    rig.assert_exactly(&expected);
    assert!(
        rig.sim.fetches().iter().any(|f| f.range.is_some()),
        "the fetcher used ranges"
    );
}

#[test]
fn local_uploads_arrive_once_with_the_right_bytes_and_the_layout_template() {
    let mut rig = Rig::new("up-local", "local", |o| {
        o.faults.part_size = 5 << 20;
        o.faults.single_part_below = 1 << 20;
    });
    rig.config["layout"] = json!({
        "pattern": "{seq}_UNDLM_{shot}_v{version}.{ext}",
        "folders": "{seq}/UNDLM_{shot}",
        "unmatched": "mirror"
    });
    rig.config["frameio"]["folder"] = json!("Dailies");
    let child = rig.start();
    let expected = drop_files(&rig.sandbox, |rel| {
        let name = rel.rsplit('/').next().unwrap();
        let dest = match name.split('_').collect::<Vec<_>>().as_slice() {
            [seq, "UNDLM", shot, _] => format!("{seq}/UNDLM_{shot}/{name}"),
            _ => rel.to_string(),
        };
        format!("Dailies/{dest}")
    });
    assert!(expected.contains_key("Dailies/SQ01/UNDLM_00412/SQ01_UNDLM_00412_v001.mov"));
    rig.wait_arrived(&expected, Duration::from_secs(150));
    stop(&rig, child);
    rig.assert_exactly(&expected);
    assert!(
        rig.sim.fetches().iter().all(|f| f.file_id.is_empty()),
        "local mode is never pulled"
    );
    let puts = rig.sim.s3_puts();
    for put in &puts {
        let header = |n: &str| {
            put.headers
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(header("x-amz-acl").as_deref(), Some("private"));
        assert_eq!(header("transfer-encoding"), None);
        assert!(header("content-type").is_some_and(|t| t != "application/octet-stream"));
    }
    // A part may have been sent twice (a stalled PUT is abandoned after 30 s and retried on
    // its own); what matters is that the last PUT of every part succeeded.
    let mut last: BTreeMap<(String, u32), u16> = BTreeMap::new();
    for put in &puts {
        last.insert((put.file_id.clone(), put.part_number), put.status);
    }
    let failed: Vec<_> = puts.iter().filter(|p| p.status != 200).collect();
    assert!(
        last.values().all(|&status| status == 200),
        "a part never went through: {failed:?}"
    );
    if !failed.is_empty() {
        eprintln!("parts sent again after a failed PUT: {failed:?}");
    }
    assert_eq!(
        rig.sim.create_count("Dailies", "SQ01", "folder"),
        1,
        "one folder, made once"
    );
}
