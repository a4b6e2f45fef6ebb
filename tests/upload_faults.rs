//! Uploads through a misbehaving Frame.io: server errors (some after the request took effect),
//! rate-limit bursts, access tokens that expire every few seconds, a fetch Frame.io silently
//! drops, a file over the remote limit, and S3's header rules. Every file still arrives once,
//! with the right bytes.

mod common;
mod frameio_support;
mod upload_support;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;
use sim::UploadMode as SimMode;
use upload_support::{stop, Rig};

/// A few files in nested folders; returns Frame.io path -> sha256.
fn drop_some(rig: &Rig, n: u32) -> BTreeMap<String, String> {
    (0..n)
        .map(|i| {
            let rel = match i % 3 {
                0 => format!("A{i}.mov"),
                1 => format!("day1/B{i}.wav"),
                _ => format!("day1/cam{i}/C{i}.mxf"),
            };
            let size = [1, 150_000, 1_200_000][i as usize % 3];
            let size = if rel.ends_with(".mov") {
                64 + i as u64 * 999
            } else {
                size
            };
            let sha = rig.make(&rel, size, 100 + i);
            (rel, sha)
        })
        .collect()
}

/// A rig with quick polling (the tests wait for Frame.io, not for the 2-s default).
fn rig(name: &str, mode: &str, change: impl FnOnce(&mut sim::Options)) -> Rig {
    let mut rig = Rig::new(name, mode, change);
    rig.env("POSTFLOW_POLL_MS", "200");
    rig
}

/// Waits for the tunnel (external mode) so `auto` sees it from the first file on.
fn wait_tunnel_up(rig: &Rig) {
    common::wait_until(Duration::from_secs(20), "the tunnel", || {
        rig.sandbox.log().contains("tunnel up: ")
    });
}

#[test]
fn server_errors_even_after_commit_and_429_bursts_still_give_one_copy_each() {
    for mode in ["remote", "local"] {
        let rig = rig(&format!("up-5xx-{mode}"), mode, |o| {
            o.faults.part_size = 512 * 1024;
            o.faults.single_part_below = 256 * 1024;
        });
        let child = rig.start();
        let expected = drop_some(&rig, 4);
        // The first folder creation and the first two uploads each take effect and still
        // answer 5xx (deterministic); on top of that, a fifth of all calls fail at random.
        rig.sim.set_faults(|f| {
            f.error_5xx_fraction = 0.2;
            f.error_5xx_after_commit = true;
            f.error_5xx_next = 3;
            f.error_5xx_only = vec!["create_folder".into(), format!("{mode}_upload")];
            f.burst_429 = 5;
        });
        // Bursts keep coming while the files go up.
        std::thread::scope(|s| {
            let bursting = s.spawn(|| {
                for _ in 0..6 {
                    std::thread::sleep(Duration::from_secs(2));
                    rig.sim.set_faults(|f| f.burst_429 = 4);
                }
            });
            rig.wait_arrived(&expected, Duration::from_secs(150));
            bursting.join().unwrap();
        });
        rig.sim.set_faults(|f| f.error_5xx_fraction = 0.0);
        stop(&rig, child);
        rig.assert_exactly(&expected);
        let counters = rig.sim.counters();
        // Requests served, summed over the counters ("<endpoint> <status>") that match.
        let served = |matches: &dyn Fn(&str) -> bool| -> u64 {
            counters
                .iter()
                .filter(|(k, _)| matches(k))
                .map(|(_, n)| *n)
                .sum()
        };
        assert_eq!(
            rig.sim.faults().error_5xx_next,
            0,
            "{mode}: the forced errors were all served: {counters:?}"
        );
        let upload_5xx = format!("{mode}_upload 5");
        assert!(
            served(&|k| k.starts_with(&upload_5xx)) > 0,
            "{mode}: an upload request got a 5xx: {counters:?}"
        );
        assert!(
            served(&|k| k.ends_with(" 429")) > 0,
            "{mode}: no 429 was served: {counters:?}"
        );
        assert!(rig.incomplete_files().is_empty(), "{mode}: leftovers");
    }
}

#[test]
fn three_second_access_tokens_do_not_stop_uploads() {
    let rig = rig("up-short-tokens", "remote", |o| {
        o.faults.access_token_lifetime_secs = 3;
        o.faults.fetch_delay_ms = 1500;
    });
    let child = rig.start();
    let expected = drop_some(&rig, 6);
    rig.wait_arrived(&expected, Duration::from_secs(90));
    let log = stop(&rig, child);
    rig.assert_exactly(&expected);
    assert!(
        frameio_support::token_requests(&rig.sim) >= 3,
        "the 3-second tokens were refreshed\n{log}"
    );
}

#[test]
fn a_fetch_frameio_drops_is_redone_after_the_stall_timeout() {
    let mut rig = rig("up-dropped-fetch", "remote", |o| o.faults.drop_fetches = 1);
    rig.env("POSTFLOW_STALL_SECS", "3");
    let child = rig.start();
    let expected = drop_some(&rig, 1);
    rig.wait_arrived(&expected, Duration::from_secs(60));
    let log = stop(&rig, child);
    rig.assert_exactly(&expected);
    assert!(
        log.contains("redoing the remote upload (no byte served for 3 s)"),
        "{log}"
    );
    assert_eq!(
        rig.sim.request_count("remote_upload", Some(202)),
        2,
        "one dropped pull, one redone"
    );
    assert!(
        rig.incomplete_files().is_empty(),
        "the dropped one is deleted"
    );
}

#[test]
fn auto_sends_local_without_a_tunnel() {
    // Parts of 64 KiB: the larger files say 25/50/75 % sent.
    let rig = rig("up-auto-off", "auto", |o| {
        o.faults.part_size = 64 << 10;
        o.faults.single_part_below = 0;
    });
    let mut rig = rig;
    rig.config["tunnel"] = json!({ "mode": "off" });
    let child = rig.start();
    let expected = drop_some(&rig, 3);
    rig.wait_arrived(&expected, Duration::from_secs(60));
    let log = stop(&rig, child);
    rig.assert_exactly(&expected);
    assert!(
        rig.sim.files().iter().all(|f| f.mode == SimMode::Local),
        "{log}"
    );
    assert_eq!(rig.sim.request_count("remote_upload", None), 0);
    upload_support::assert_quiet(&log, &["A0.mov", "B1.wav", "C2.mxf"]);
    assert!(log.contains("C2.mxf: 50% sent"), "{log}");
    assert!(
        !log.contains("A0.mov: 75% sent"),
        "a single part is all or nothing: {log}"
    );
}

#[test]
fn auto_sends_a_file_over_the_remote_limit_itself() {
    // The simulator's remote limit stands in for Frame.io's 50 GB.
    let rig = rig("up-auto-limit", "auto", |o| {
        o.faults.remote_size_limit = 100_000
    });
    let child = rig.start();
    wait_tunnel_up(&rig);
    let small = rig.make("small.wav", 5_000, 1);
    let big = rig.make("big.wav", 400_000, 2);
    let expected = BTreeMap::from([
        ("small.wav".to_string(), small),
        ("big.wav".to_string(), big),
    ]);
    rig.wait_arrived(&expected, Duration::from_secs(60));
    let log = stop(&rig, child);
    rig.assert_exactly(&expected);
    let mode_of = |name: &str| {
        rig.sim
            .files()
            .into_iter()
            .find(|f| f.name == name)
            .map(|f| f.mode)
    };
    assert_eq!(mode_of("small.wav"), Some(SimMode::Remote), "{log}");
    assert_eq!(mode_of("big.wav"), Some(SimMode::Local), "{log}");
    assert!(
        log.contains("big.wav: over Frame.io's remote limit, sending it ourselves"),
        "{log}"
    );
    assert_eq!(rig.sim.request_count("remote_upload", Some(422)), 1);
}

#[test]
fn presigned_puts_carry_exactly_the_headers_s3_demands() {
    for null_media_type in [false, true] {
        let name = format!("up-s3-headers-{null_media_type}");
        let rig = rig(&name, "local", |o| {
            o.faults.part_size = 256 * 1024;
            o.faults.single_part_below = 0;
            o.faults.media_type_null = null_media_type;
        });
        let child = rig.start();
        let expected = BTreeMap::from([
            ("clip.mov".to_string(), rig.make("clip.mov", 700_000, 7)),
            ("sound.wav".to_string(), rig.make("sound.wav", 300_000, 8)),
        ]);
        rig.wait_arrived(&expected, Duration::from_secs(60));
        let log = stop(&rig, child);
        rig.assert_exactly(&expected);
        let puts = rig.sim.s3_puts();
        assert!(puts.len() >= 5, "{puts:?}");
        for put in &puts {
            assert_eq!(put.status, 200, "{put:?}\n{log}");
            let mut names: Vec<&str> = put.headers.iter().map(|(k, _)| k.as_str()).collect();
            names.sort_unstable();
            // What S3 checks, and what any HTTP client sends; nothing that could break the
            // signature or the length (no Authorization, no Transfer-Encoding, no Expect).
            // Content-MD5: upload.verify "parts" (checked by S3 against the body).
            let allowed = [
                "accept",
                "accept-encoding",
                "connection",
                "content-length",
                "content-md5",
                "content-type",
                "host",
                "user-agent",
                "x-amz-acl",
            ];
            for n in &names {
                assert!(allowed.contains(n), "unexpected header {n}: {put:?}");
            }
            let header = |n: &str| {
                put.headers
                    .iter()
                    .find(|(k, _)| k == n)
                    .map(|(_, v)| v.as_str())
            };
            assert_eq!(header("x-amz-acl"), Some("private"));
            assert_eq!(
                header("content-length"),
                Some(put.body_len.to_string().as_str())
            );
            let media = if null_media_type {
                "application/octet-stream"
            } else if put.file_id == file_id(&rig, "clip.mov") {
                "video/quicktime"
            } else {
                "audio/wav"
            };
            assert_eq!(header("content-type"), Some(media), "{put:?}");
        }
    }
}

fn file_id(rig: &Rig, name: &str) -> String {
    rig.sim
        .files()
        .into_iter()
        .find(|f| f.name == name)
        .map(|f| f.id)
        .unwrap_or_default()
}

/// Frame.io's wording of a refused pull is undocumented: whatever its 422 says, `auto` sends
/// the file itself.
#[test]
fn a_pull_frameio_refuses_goes_local_in_auto_whatever_the_refusal_says() {
    let rig = rig("up-auto-422", "auto", |o| {
        o.faults.remote_size_limit = 100_000;
        o.faults.remote_limit_detail = Some("Unprocessable Entity".into());
    });
    let child = rig.start();
    rig.wait_tunnel_up();
    let expected = BTreeMap::from([("big.wav".to_string(), rig.make("big.wav", 400_000, 2))]);
    rig.wait_arrived(&expected, Duration::from_secs(60));
    let log = stop(&rig, child);
    rig.assert_exactly(&expected);
    assert_eq!(rig.sim.files()[0].mode, SimMode::Local, "{log}");
    assert_eq!(rig.sim.request_count("remote_upload", Some(422)), 1);
    assert!(
        log.contains("big.wav: Frame.io will not pull it") && log.contains("sending it ourselves"),
        "{log}"
    );
}

/// IMS answers the first token refresh with 429 and `Retry-After: 3`: postflow waits that
/// long (not its own one second) before asking again, and the upload goes on.
#[test]
fn ims_answering_429_to_a_refresh_is_waited_out_as_its_retry_after_asks() {
    let rig = rig("up-ims-429", "local", |o| {
        o.faults.ims_429_next = 1;
        o.faults.ims_retry_after_secs = 3;
    });
    // An access token that needs refreshing at once.
    frameio_support::seed_tokens(&rig.sim, &rig.sandbox.state_dir(), Some(0));
    let before = rig.sim.tokens().len();
    let asked_from = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let child = rig.start();
    let expected = BTreeMap::from([("after.wav".to_string(), rig.make("after.wav", 5_000, 3))]);
    rig.wait_arrived(&expected, Duration::from_secs(60));
    let log = stop(&rig, child);
    rig.assert_exactly(&expected);
    assert_eq!(rig.sim.request_count("ims_token", Some(429)), 1, "{log}");
    let refreshed = rig.sim.tokens()[before..]
        .iter()
        .find(|t| t.grant == "refresh_token")
        .map(|t| t.issued_at_ms)
        .expect("a refreshed token");
    assert!(
        refreshed >= asked_from + 3_000,
        "asked again {} ms after the start, before Retry-After's 3 s\n{log}",
        refreshed - asked_from
    );
    assert!(log.contains("waiting 3 s as its Retry-After asks"), "{log}");
}

/// Two folders with the same name (made by hand, or by another tool): the files go into the
/// oldest, whatever order Frame.io lists them in (here the newer one comes first).
#[test]
fn of_two_folders_with_the_same_name_files_go_into_the_oldest() {
    let rig = rig("up-dup-folders", "local", |_| {});
    let root = rig.sim.root_folder_id();
    let newer = rig.sim.add_folder(&root, "Dailies");
    let older = rig.sim.add_folder(&root, "Dailies");
    let day_ago = std::time::SystemTime::now() - Duration::from_secs(86_400);
    rig.sim.set_created_at(&older, day_ago);
    let child = rig.start();
    let expected = BTreeMap::from([(
        "Dailies/take.wav".to_string(),
        rig.make("Dailies/take.wav", 5_000, 4),
    )]);
    rig.wait_arrived(&expected, Duration::from_secs(60));
    let log = stop(&rig, child);
    let file = &rig.sim.files()[0];
    assert_eq!(
        file.parent_id, older,
        "not the first listed ({newer})\n{log}"
    );
    assert_eq!(
        rig.sim.create_count("", "Dailies", "folder"),
        0,
        "no third one"
    );
}
