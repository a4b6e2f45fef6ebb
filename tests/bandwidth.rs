//! `upload.bandwidth` as a studio meets it (issue 22): one limit for every outgoing file byte,
//! local part PUTs and remote pulls alike, shared by transfers running together, changed
//! live from the dashboard or by the timetable's next slot without cutting what is running.
//!
//! The rates are measured over transfers long enough (15 s at 4 MiB/s) for the issue's
//! 0.9x-1.2x to hold on a busy machine; the other tests assert only what a limit lifted or
//! kept must make obvious.

mod common;
mod frameio_support;
mod upload_support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};
use upload_support::{stop, Rig};

const MIB: u64 = 1 << 20;

fn get(rig: &Rig, path: &str) -> String {
    common::wait_until(Duration::from_secs(30), "the dashboard", || {
        rig.status().is_some()
    });
    let listen = rig.config["dashboard"]["listen"].as_str().unwrap();
    ureq::get(&format!("http://{listen}{path}"))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap()
}

fn post(rig: &Rig, path: &str, body: &Value) -> (u16, Value) {
    let listen = rig.config["dashboard"]["listen"].as_str().unwrap();
    let mut resp = ureq::post(&format!("http://{listen}{path}"))
        .config()
        .http_status_as_error(false)
        .build()
        .header("content-type", "application/json")
        .send(body.to_string())
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Waits until the page shows bytes of `name` moving; returns when.
fn wait_moving(rig: &Rig, name: &str) -> Instant {
    common::wait_until(Duration::from_secs(60), "the transfer to start", || {
        rig.transfer(name)
            .and_then(|t| t["covered"].as_u64())
            .is_some_and(|c| c > 0)
    });
    Instant::now()
}

/// Waits until Frame.io has every byte of `n` files; returns when.
fn wait_complete(rig: &Rig, n: usize, limit: Duration) -> Instant {
    let start = Instant::now();
    while rig.sim.files().iter().filter(|f| f.upload_complete).count() < n {
        assert!(
            start.elapsed() < limit,
            "not complete after {limit:?}\n{}",
            rig.sandbox.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Instant::now()
}

fn assert_rate(what: &str, took: Duration, expected: Duration) {
    let ratio = took.as_secs_f64() / expected.as_secs_f64();
    assert!(
        (0.9..=1.2).contains(&ratio),
        "{what} took {took:?}: {ratio:.2}x the {expected:?} the limit allows"
    );
}

fn limited_rig(name: &str, mode: &str, limit: &str) -> Rig {
    let mut rig = Rig::new(name, mode, |o| {
        o.faults.part_size = 8 * MIB;
    });
    rig.with_dashboard();
    rig.config["upload"]["bandwidth"] = json!(limit);
    rig
}

#[test]
fn a_60_mib_local_upload_at_4_mib_s_takes_15_s_and_the_api_says_why() {
    let rig = limited_rig("bw-local", "local", "4M");
    let child = rig.start();
    let mut api: Value = serde_json::from_str(&get(&rig, "/api/bandwidth")).unwrap();
    // The system's zone, whatever this machine's is (see the Tokyo test for its use).
    let zone = api.as_object_mut().unwrap().remove("time_zone");
    assert!(zone.as_ref().is_some_and(Value::is_string), "{zone:?}");
    assert_eq!(
        api,
        json!({"limit_bps": 4 * MIB, "source": "timetable", "timetable": "4M", "next_change": null})
    );
    assert_eq!(rig.status().unwrap()["bandwidth"]["limit_bps"], 4 * MIB);
    assert!(
        get(&rig, "/metrics").contains(&format!(
            "postflow_bandwidth_limit_bytes_per_second {}",
            4 * MIB
        )),
        "{}",
        get(&rig, "/metrics")
    );
    let sha = rig.make("SQ01/big.mov", 60 * MIB, 1);
    let started = wait_moving(&rig, "big.mov");
    let done = wait_complete(&rig, 1, Duration::from_secs(120));
    assert_rate("the upload", done - started, Duration::from_secs(15));
    rig.wait_done(1, Duration::from_secs(60));
    let log = stop(&rig, child);
    rig.assert_exactly(&BTreeMap::from([("SQ01/big.mov".to_string(), sha)]));
    // Paced, never stalled: every part went once.
    assert_eq!(rig.sim.s3_puts().len(), 8, "{log}");
    assert!(!log.contains("sending it again"), "{log}");
}

#[test]
fn a_60_mib_remote_pull_at_4_mib_s_takes_15_s() {
    let rig = limited_rig("bw-pull", "remote", "4M");
    let child = rig.start();
    rig.wait_tunnel_up();
    let sha = rig.make("SQ01/pulled.mov", 60 * MIB, 2);
    let started = wait_moving(&rig, "pulled.mov");
    let done = wait_complete(&rig, 1, Duration::from_secs(120));
    assert_rate("the pull", done - started, Duration::from_secs(15));
    rig.wait_done(1, Duration::from_secs(60));
    assert_eq!(rig.jobs()[0]["verified"], "served-in-full");
    let log = stop(&rig, child);
    rig.assert_exactly(&BTreeMap::from([("SQ01/pulled.mov".to_string(), sha)]));
    assert_eq!(rig.sim.files().len(), 1, "one pull, never redone: {log}");
}

#[test]
fn two_uploads_at_once_share_the_limit() {
    let rig = limited_rig("bw-share", "local", "4M");
    let child = rig.start();
    let a = rig.make("SQ01/a.mov", 30 * MIB, 3);
    let b = rig.make("SQ01/b.mov", 30 * MIB, 4);
    let started = wait_moving(&rig, "a.mov").min(wait_moving(&rig, "b.mov"));
    let done = wait_complete(&rig, 2, Duration::from_secs(120));
    // 60 MiB together at 4 MiB/s: 15 s, as for one file of both sizes. The issue asks the pair
    // to stay within 1.2x; the lower bound shows the limit held for both together. It is
    // looser than the single file's 0.9x: the start is seen through the page's transfer
    // reports (about two a second), one of two files a report late, and under Wine later still
    // (measured: 0.90x there).
    let ratio = (done - started).as_secs_f64() / 15.0;
    assert!(
        (0.8..=1.2).contains(&ratio),
        "the pair took {:?}: {ratio:.2}x the 15 s the limit allows",
        done - started
    );
    rig.wait_done(2, Duration::from_secs(60));
    stop(&rig, child);
    rig.assert_exactly(&BTreeMap::from([
        ("SQ01/a.mov".to_string(), a),
        ("SQ01/b.mov".to_string(), b),
    ]));
}

#[test]
fn an_override_to_off_speeds_a_running_upload_up_without_cutting_it() {
    let rig = limited_rig("bw-override", "local", "1M");
    let child = rig.start();
    // 48 MiB at 1 MiB/s would take 48 s.
    let sha = rig.make("SQ01/hero.mov", 48 * MIB, 5);
    wait_moving(&rig, "hero.mov");
    std::thread::sleep(Duration::from_secs(3));
    let (status, body) = post(&rig, "/api/bandwidth", &json!({"limit": "off"}));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["limit_bps"], Value::Null);
    assert_eq!(body["source"], "override");
    assert_eq!(body["timetable"], "1M");
    let lifted = Instant::now();
    let done = wait_complete(&rig, 1, Duration::from_secs(120));
    assert!(
        done - lifted < Duration::from_secs(20),
        "still slow {:?} after the limit was lifted",
        done - lifted
    );
    rig.wait_done(1, Duration::from_secs(60));
    // Back to the timetable; a bad limit names what is wrong.
    let (_, body) = post(&rig, "/api/bandwidth", &json!({"limit": null}));
    assert_eq!(body["source"], "timetable");
    assert_eq!(body["limit_bps"], MIB);
    let (status, body) = post(&rig, "/api/bandwidth", &json!({"limit": "fast"}));
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("fast"), "{body}");
    let log = stop(&rig, child);
    rig.assert_exactly(&BTreeMap::from([("SQ01/hero.mov".to_string(), sha)]));
    assert_eq!(rig.sim.s3_puts().len(), 6, "no part restarted: {log}");
    assert!(!log.contains("sending it again"), "{log}");
    assert!(log.contains("bandwidth: override to off"), "{log}");
}

/// The timetable is read in local time, the zone `TZ` names (on Windows, the zone Windows
/// has, from the database postflow bundles there; Wine takes it from TZ). Tokyo is UTC+9 with
/// no daylight saving: a two-hour slot starting at Tokyo's current hour is not in force in UTC.
#[test]
fn the_timetable_is_read_in_the_local_time_zone() {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let tokyo_hour = (now / 3600 + 9) % 24;
    let timetable = format!(
        "{:02}:00,4M {:02}:00,off",
        tokyo_hour,
        (tokyo_hour + 2) % 24
    );
    let mut rig = limited_rig("bw-zone", "local", &timetable);
    rig.env("TZ", "Asia/Tokyo");
    let child = rig.start();
    let api: Value = serde_json::from_str(&get(&rig, "/api/bandwidth")).unwrap();
    stop(&rig, child);
    assert_eq!(api["time_zone"], "Asia/Tokyo", "{api}");
    assert_eq!(api["limit_bps"], 4 * MIB, "the Tokyo slot in force: {api}");
    // The slot ends two hours after the start of the Tokyo hour (whole hours: UTC+9).
    let ends = jiff::Timestamp::from_second((now / 3600 * 3600 + 2 * 3600) as i64).unwrap();
    assert_eq!(api["next_change"], ends.to_string(), "{api}");
}

/// The next minute, in UTC (postflow runs with TZ=UTC here): "HH:MM".
fn hhmm(t: SystemTime) -> (String, u64) {
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    let day = secs % 86_400;
    (format!("{:02}:{:02}", day / 3600, day % 3600 / 60), secs)
}

#[test]
fn a_timetable_slot_changes_the_rate_of_a_running_upload_at_its_minute() {
    let (_, now) = hhmm(SystemTime::now());
    // Leave at least 20 s of the slow slot for the upload to get going.
    let switch = if 60 - now % 60 >= 20 {
        now - now % 60 + 60
    } else {
        now - now % 60 + 120
    };
    let at = |secs: u64| hhmm(SystemTime::UNIX_EPOCH + Duration::from_secs(secs)).0;
    // The slow slot begins at this minute (not at the one before the switch: with the switch
    // two minutes away that one is still to come, and the slot in force would be `off`).
    let timetable = format!("{},512k {},off", at(now - now % 60), at(switch));
    let mut rig = limited_rig("bw-timetable", "local", &timetable);
    rig.env("TZ", "UTC");
    let child = rig.start();
    let api: Value = serde_json::from_str(&get(&rig, "/api/bandwidth")).unwrap();
    assert_eq!(api["limit_bps"], 512 * 1024, "{api}");
    assert_eq!(api["source"], "timetable");
    let next = jiff::Timestamp::from_second(switch as i64).unwrap();
    assert_eq!(api["next_change"], next.to_string(), "{api}");
    // 64 MiB: at 512 KiB/s it would take over two minutes.
    let sha = rig.make("SQ01/night.mov", 64 * MIB, 6);
    wait_moving(&rig, "night.mov");
    let switch_at = SystemTime::UNIX_EPOCH + Duration::from_secs(switch);
    // Before the minute: no faster than the slot allows (with room for the first burst).
    while SystemTime::now() + Duration::from_secs(2) < switch_at {
        std::thread::sleep(Duration::from_millis(500));
    }
    let sent_before: u64 = rig.transfer("night.mov").unwrap()["covered"]
        .as_u64()
        .unwrap();
    assert!(
        sent_before < 45 * MIB,
        "{sent_before} bytes sent before the slot changed: the 512k slot was not kept"
    );
    assert!(rig.sim.files().iter().all(|f| !f.upload_complete));
    // After it: the rest goes at once.
    let done = wait_complete(&rig, 1, Duration::from_secs(180));
    let after = SystemTime::now()
        .duration_since(switch_at)
        .unwrap_or_default();
    assert!(
        after < Duration::from_secs(30),
        "done {after:?} after the minute the limit went off ({:?} of the file were left)",
        64 * MIB - sent_before
    );
    let _ = done;
    rig.wait_done(1, Duration::from_secs(60));
    let log = stop(&rig, child);
    rig.assert_exactly(&BTreeMap::from([("SQ01/night.mov".to_string(), sha)]));
    assert!(log.contains("bandwidth limit now off"), "{log}");
    assert!(!log.contains("sending it again"), "{log}");
}
