//! A card offload: hundreds of clips into one folder. Every clip goes up without listing the
//! folder (a listing is 100 calls a minute and a page per 100 files; listing per upload made
//! N files cost N²/200 pages).

mod common;
mod frameio_support;
mod upload_support;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;
use upload_support::{stop, Rig};

#[test]
fn three_hundred_files_into_one_folder_cost_no_folder_listing() {
    let mut rig = Rig::new("up-bulk", "local", |_| {});
    rig.with_dashboard();
    rig.config["upload"]["concurrency"] = json!(8);
    rig.env("POSTFLOW_POLL_MS", "200");
    let expected: BTreeMap<String, String> = (0..300u32)
        .map(|i| {
            let rel = format!("A001/A001C{i:03}.wav");
            let sha = rig.make(&rel, 1_000 + u64::from(i), i);
            (rel, sha)
        })
        .collect();
    let child = rig.start();
    rig.wait_done(300, Duration::from_secs(600));
    let log = stop(&rig, child);
    rig.assert_exactly(&expected);
    // One listing of the project root, to find (then create) the folder A001; none per file.
    let listings = rig.sim.request_count("list_children", None);
    assert!(
        listings <= 2,
        "{listings} folder listings\n{:?}",
        rig.sim.counters()
    );
    assert!(
        !log.contains("looking in /A001"),
        "no recovery search was needed"
    );
}
