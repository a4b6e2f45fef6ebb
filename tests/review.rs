//! The review loop (issue 23) through the quick-tunnel stand-in: Frame.io's webhook reaches
//! postflow through the same public URL as its pulls, and what reviewers do in Frame.io shows
//! on the page and in notifications, once.
//!
//! The simulator signs and delivers as Frame.io does (`sim/README.md`, "Review"), with its
//! retry schedule scaled down (`webhook_retry_secs`) and each event sent twice where a story
//! says so (`webhook_duplicates`). Notifications go to a local receiver in the `json` format.

mod common;
mod frameio_support;
mod upload_support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::hooks::Hook;
use common::signal;
use common::sim_bins::fake_cloudflared;
use serde_json::{json, Value};
use upload_support::{stop, Rig};

/// A remote-mode rig on a quick tunnel through the cloudflared stand-in, with a dashboard,
/// notifications to `notices`, and Frame.io's deliveries scaled down.
fn review_rig(name: &str, notices: &Hook) -> Rig {
    let registry = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{name}-registry-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&registry);
    std::fs::create_dir_all(&registry).unwrap();
    let reg = registry.clone();
    let mut rig = Rig::new(name, "remote", move |o| o.tunnel_registry = Some(reg));
    rig.config["tunnel"] = json!({ "mode": "quick", "cloudflared": fake_cloudflared() });
    rig.config["notify"] = json!({ "webhook_url": notices.url, "format": "json" });
    rig.config["log_level"] = json!("info,postflow::review=debug");
    rig.with_dashboard();
    rig.env("SIM_TUNNEL_REGISTRY", registry.display().to_string());
    rig.env("POSTFLOW_TEST_TUNNEL_BACKOFF_MS", "200");
    rig.env("POSTFLOW_POLL_MS", "200");
    rig.sim.set_faults(|f| {
        f.webhook_retry_secs = 0.5;
        f.ready_delay_ms = 300;
    });
    rig
}

fn wait_webhook(rig: &Rig) -> sim::WebhookView {
    common::wait_until(Duration::from_secs(60), "postflow's webhook", || {
        rig.sim
            .webhooks()
            .iter()
            .any(|w| w.url.contains(".trycloudflare.com/hooks/frameio/"))
    });
    let hooks = rig.sim.webhooks();
    assert_eq!(hooks.len(), 1, "{hooks:?}");
    hooks[0].clone()
}

/// The one job of the running instance.
fn the_job(rig: &Rig) -> Value {
    let jobs = rig.jobs();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    jobs[0].clone()
}

fn comments(rig: &Rig, job: u64) -> Vec<Value> {
    let listen = rig.config["dashboard"]["listen"].as_str().unwrap();
    // Empty while the dashboard is not listening yet (just started).
    let Ok(mut resp) = ureq::get(&format!("http://{listen}/api/jobs/{job}/comments")).call() else {
        return Vec::new();
    };
    let v: Value = serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
    v["comments"].as_array().cloned().unwrap()
}

/// Uploads one file and waits until Frame.io said it is ready and postflow shows it.
fn upload_one_ready(rig: &Rig, name: &str) -> (u64, String) {
    let expected = BTreeMap::from([(name.to_string(), rig.make(name, 300_000, 7))]);
    rig.wait_arrived(&expected, Duration::from_secs(60));
    rig.wait_done(1, Duration::from_secs(60));
    common::wait_until(Duration::from_secs(30), "the job ready for review", || {
        the_job(rig)["review"]["ready"] == true
    });
    let job = the_job(rig);
    (
        job["id"].as_u64().unwrap(),
        job["file_id"].as_str().unwrap().to_string(),
    )
}

/// POSTs `body` to the file server as Frame.io would (through no tunnel: the listener is the
/// same); returns the status.
fn post(rig: &Rig, path: &str, headers: &[(&str, String)], body: &[u8]) -> u16 {
    let listen = rig.config["serve"]["listen"].as_str().unwrap();
    let mut conn = TcpStream::connect(listen).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut head =
        format!("POST {path} HTTP/1.1\r\nHost: {listen}\r\nContent-Type: application/json\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    conn.write_all(head.as_bytes()).unwrap();
    // A refused body may be cut off while it is still being sent.
    let _ = conn.write_all(body);
    let mut answer = String::new();
    let _ = conn.read_to_string(&mut answer);
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no answer: {answer:?}"))
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn signed(secret: &str, ts: u64, body: &[u8]) -> Vec<(&'static str, String)> {
    vec![
        ("X-Frameio-Request-Timestamp", ts.to_string()),
        (
            "X-Frameio-Signature",
            postflow::review::gate::sign(secret, &ts.to_string(), body),
        ),
    ]
}

#[test]
fn a_ready_file_and_a_comment_are_shown_and_told_once_even_when_frameio_repeats_them() {
    let notices = Hook::start();
    let rig = review_rig("review-once", &notices);
    rig.sim.set_faults(|f| f.webhook_duplicates = 1);
    let child = rig.start();
    let hook = wait_webhook(&rig);
    let (job, file_id) = upload_one_ready(&rig, "SQ01_UNDLM_00412_v002.mov");

    // One notification with the link, though file.ready came twice.
    common::wait_until(Duration::from_secs(20), "the ready notice", || {
        notices.of("review_ready").len() == 1
    });
    let view_url = the_job(&rig)["view_url"].as_str().unwrap().to_string();
    assert_eq!(notices.of("review_ready")[0]["link"], view_url.as_str());

    let c = rig
        .sim
        .add_comment(&file_id, Some("Ada"), "too dark", Some(84));
    common::wait_until(Duration::from_secs(20), "the comment on the page", || {
        comments(&rig, job).len() == 1
    });
    let shown = &comments(&rig, job)[0];
    assert_eq!(shown["id"], c.as_str());
    assert_eq!(shown["author"], "Ada");
    assert_eq!(shown["text"], "too dark");
    assert_eq!(shown["timecode"], "00:00:03:12");
    assert_eq!(shown["completed"], false);
    assert_eq!(the_job(&rig)["review"]["comments"], 1);

    // Both copies of comment.created answered; then a later event, so that everything before
    // it has been handled by the time its notice arrives.
    common::wait_until(Duration::from_secs(30), "the repeated delivery", || {
        rig.sim.deliveries().iter().any(|d| {
            d.event == "comment.created" && d.copy == 1 && d.status.is_some_and(|s| s < 300)
        })
    });
    rig.sim.set_status(&file_id, "Needs changes");
    common::wait_until(Duration::from_secs(20), "the status", || {
        the_job(&rig)["review"]["status"] == "Needs changes"
    });
    rig.sim.complete_comment(&c);
    common::wait_until(Duration::from_secs(20), "the comment marked done", || {
        notices.of("review_comment_done").len() == 1
    });
    let told = notices.of("review_comment");
    assert_eq!(told.len(), 1, "{told:?}");
    assert_eq!(
        told[0]["text"],
        "Ada on SQ01_UNDLM_00412_v002.mov at 00:00:03:12: too dark"
    );
    assert_eq!(notices.of("review_ready").len(), 1);
    assert_eq!(comments(&rig, job)[0]["completed"], true);
    // The upload itself was told once, not again for each review change.
    assert_eq!(notices.of("upload_done").len(), 1);
    let log = stop(&rig, child);
    assert!(!log.contains("refused"), "{log}");
    assert_eq!(rig.sim.webhooks().len(), 1);
    assert_eq!(rig.sim.webhooks()[0].id, hook.id);
}

#[test]
fn a_file_ready_and_commented_on_before_postflow_saw_it_complete_is_not_lost() {
    // Frame.io says file.ready at once and postflow polls the upload's status slowly: the
    // webhook and a reviewer's comment arrive while the job is still `processing`.
    let notices = Hook::start();
    let mut rig = review_rig("review-early", &notices);
    rig.env("POSTFLOW_POLL_MS", "4000");
    rig.sim.set_faults(|f| f.ready_delay_ms = 0);
    let child = rig.start();
    wait_webhook(&rig);
    let name = "SQ01_UNDLM_00500_v001.mov";
    let expected = BTreeMap::from([(name.to_string(), rig.make(name, 300_000, 3))]);
    rig.wait_arrived(&expected, Duration::from_secs(60));
    common::wait_until(Duration::from_secs(20), "file.ready delivered", || {
        rig.sim
            .deliveries()
            .iter()
            .any(|d| d.event == "file.ready" && d.status.is_some_and(|s| s < 300))
    });
    let file_id = rig.sim.files()[0].id.clone();
    rig.sim
        .add_comment(&file_id, Some("Ada"), "too dark", Some(84));
    rig.wait_done(1, Duration::from_secs(60));
    common::wait_until(
        Duration::from_secs(30),
        "ready and the comment shown",
        || {
            let job = the_job(&rig);
            job["review"]["ready"] == true && job["review"]["comments"] == 1
        },
    );
    common::wait_until(Duration::from_secs(20), "both told", || {
        notices.of("review_ready").len() == 1 && notices.of("review_comment").len() == 1
    });
    stop(&rig, child);
}

#[test]
fn forged_stale_replayed_and_huge_deliveries_are_refused_and_change_nothing() {
    let notices = Hook::start();
    let rig = review_rig("review-refused", &notices);
    let child = rig.start();
    let hook = wait_webhook(&rig);
    let (job, file_id) = upload_one_ready(&rig, "shot.mov");
    common::wait_until(Duration::from_secs(20), "the ready notice", || {
        notices.of("review_ready").len() == 1
    });
    let path = format!("/hooks/frameio/{}", hook.url.rsplit('/').next().unwrap());
    let event = |kind: &str, id: &str, rtype: &str| {
        json!({"account": {"id": rig.sim.account_id()}, "project": {"id": "p"},
               "resource": {"id": id, "type": rtype}, "type": kind,
               "user": {"id": "u"}, "workspace": {"id": hook.workspace_id}})
        .to_string()
        .into_bytes()
    };
    // A real comment (the simulator's delivery of it is what the replay below copies); a
    // stranger who does not know the secret then announces it again.
    let c = rig
        .sim
        .add_comment(&file_id, Some("Ada"), "a real note", None);
    common::wait_until(Duration::from_secs(20), "the real comment", || {
        comments(&rig, job).len() == 1 && the_job(&rig)["review"]["comments"] == 1
    });
    let before = the_job(&rig);
    let body = event("comment.created", &c, "comment");
    let forged = signed("not-the-secret", now_secs(), &body);
    assert_eq!(post(&rig, &path, &forged, &body), 401);
    let stale = signed(&hook.secret, now_secs() - 600, &body);
    assert_eq!(post(&rig, &path, &stale, &body), 401);
    // The simulator's own delivery, sent again byte for byte.
    let original = rig
        .sim
        .deliveries()
        .into_iter()
        .find(|d| d.event == "comment.created" && d.status.is_some_and(|s| s < 300))
        .unwrap();
    let replay = signed(&hook.secret, original.timestamp, original.body.as_bytes());
    assert_eq!(post(&rig, &path, &replay, original.body.as_bytes()), 200);
    // 10 MB, never read.
    let huge = vec![b' '; 10 << 20];
    assert_eq!(
        post(&rig, &path, &signed(&hook.secret, now_secs(), &huge), &huge),
        413
    );
    // A wrong path token is the file server's plain 404.
    let good = signed(&hook.secret, now_secs(), &body);
    assert_eq!(post(&rig, "/hooks/frameio/0000", &good, &body), 404);

    // Nothing changed: one comment, one notice of it, the job's review as it was.
    let after = the_job(&rig);
    assert_eq!(after["review"], before["review"]);
    assert_eq!(comments(&rig, job).len(), 1);
    assert_eq!(notices.of("review_comment").len(), 1);
    assert_eq!(notices.of("review_ready").len(), 1);
    // The dashboard still answers.
    assert!(rig.status().is_some());
    let log = stop(&rig, child);
    let warned = log.matches("a webhook delivery was refused").count();
    assert_eq!(warned, 1, "one WARN a minute at most\n{log}");
}

#[test]
fn a_new_quick_tunnel_hostname_moves_the_webhook_and_no_second_one_is_made() {
    let notices = Hook::start();
    let rig = review_rig("review-move", &notices);
    let child = rig.start();
    let first = wait_webhook(&rig);
    let pid: u32 = std::fs::read_to_string(rig.sandbox.state_dir().join("cloudflared.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    signal(pid, "KILL");
    common::wait_until(Duration::from_secs(60), "the webhook's new URL", || {
        rig.sim.webhooks().iter().any(|w| w.url != first.url)
    });
    let moved = rig.sim.webhooks();
    assert_eq!(moved.len(), 1, "{moved:?}");
    assert_eq!(moved[0].id, first.id);
    let host = |u: &str| u.split('/').nth(2).unwrap().to_string();
    assert_ne!(host(&moved[0].url), host(&first.url));
    let log = stop(&rig, child);

    // A restart finds it again: the same webhook, pointed at the new tunnel.
    let child = rig.start();
    common::wait_until(
        Duration::from_secs(60),
        "the webhook after a restart",
        || {
            rig.sim.webhooks().iter().all(|w| w.url != moved[0].url)
                && rig.sandbox.log().len() > log.len()
        },
    );
    let again = rig.sim.webhooks();
    assert_eq!(again.len(), 1, "{again:?}");
    assert_eq!(again[0].id, first.id);
    // And it works: a file is ready and told.
    upload_one_ready(&rig, "after.mov");
    common::wait_until(Duration::from_secs(20), "the ready notice", || {
        notices.of("review_ready").len() == 1
    });
    stop(&rig, child);
}

#[test]
fn comments_made_while_postflow_was_down_are_told_once_after_the_restart() {
    let notices = Hook::start();
    let mut rig = review_rig("review-catch-up", &notices);
    // Before the feature: an upload, and a comment on it that must never be announced.
    rig.config["review"] = json!({ "webhooks": "off" });
    let child = rig.start();
    rig.wait_tunnel_up();
    let expected = BTreeMap::from([("old.mov".to_string(), rig.make("old.mov", 200_000, 3))]);
    rig.wait_arrived(&expected, Duration::from_secs(60));
    rig.wait_done(1, Duration::from_secs(60));
    stop(&rig, child);
    assert!(rig.sim.webhooks().is_empty());
    let file_id = rig.sim.files()[0].id.clone();
    let old = rig
        .sim
        .add_comment(&file_id, Some("Ada"), "an old note", None);

    // The first start with review on: the old comment is recorded, not announced.
    rig.config["review"] = json!({ "webhooks": "auto", "catch_up_days": 7 });
    let child = rig.start();
    wait_webhook(&rig);
    let job = the_job(&rig)["id"].as_u64().unwrap();
    common::wait_until(Duration::from_secs(30), "the old comment recorded", || {
        comments(&rig, job).len() == 1
    });
    stop(&rig, child);

    // Down: two comments are made (Frame.io's deliveries find no tunnel).
    let c1 = rig
        .sim
        .add_comment(&file_id, Some("Ada"), "too dark", Some(84));
    let c2 = rig.sim.add_comment(&file_id, None, "love it", None);
    let child = rig.start();
    common::wait_until(Duration::from_secs(60), "both comments shown", || {
        comments(&rig, job).len() == 3
    });
    // A later event marks the point by which everything before it was handled.
    rig.sim.complete_comment(&c2);
    common::wait_until(Duration::from_secs(30), "the comment marked done", || {
        notices.of("review_comment_done").len() == 1
    });
    // Give Frame.io's retries of the two downtime deliveries (to the new URL) their chance to
    // repeat: they are answered once the webhook points at the new tunnel.
    common::wait_until(
        Duration::from_secs(30),
        "the downtime deliveries retried",
        || {
            let d = rig.sim.deliveries();
            [&c1, &c2].iter().all(|c| {
                d.iter()
                    .any(|r| &&r.resource_id == c && r.status.is_some_and(|s| s < 300))
                    || d.iter().filter(|r| &&r.resource_id == c).count() >= 5
            })
        },
    );
    rig.sim.set_status(&file_id, "Approved");
    common::wait_until(Duration::from_secs(20), "the status notice", || {
        !notices.of("review_status").is_empty()
    });
    let told: Vec<String> = notices
        .of("review_comment")
        .iter()
        .map(|n| n["comment_id"].as_str().unwrap().to_string())
        .collect();
    let mut sorted = told.clone();
    sorted.sort();
    let mut want = vec![c1.clone(), c2.clone()];
    want.sort();
    assert_eq!(
        sorted, want,
        "each new comment once, the old one never: {told:?}"
    );
    assert!(!told.contains(&old));
    let shown = comments(&rig, job);
    let guest = shown.iter().find(|c| c["id"] == c2.as_str()).unwrap();
    assert_eq!(guest["author"], Value::Null);
    assert_eq!(the_job(&rig)["review"]["comments"], 3);
    stop(&rig, child);
}

#[test]
fn a_file_ready_and_a_status_set_while_postflow_was_down_are_told_once_after_the_restart() {
    let notices = Hook::start();
    let rig = review_rig("review-ready-down", &notices);
    // Frame.io finishes its proxies 6 s after the upload completes: postflow is down by then.
    rig.sim.set_faults(|f| {
        f.ready_delay_ms = 6_000;
        f.transcode_delay_ms = 6_000;
    });
    let child = rig.start();
    wait_webhook(&rig);
    let expected = BTreeMap::from([("late.mov".to_string(), rig.make("late.mov", 200_000, 9))]);
    rig.wait_arrived(&expected, Duration::from_secs(60));
    rig.wait_done(1, Duration::from_secs(60));
    let job = the_job(&rig);
    assert_eq!(job["review"]["ready"], false, "{job}");
    let file_id = job["file_id"].as_str().unwrap().to_string();
    stop(&rig, child);

    // Down: the file becomes ready and someone sets its Status; every delivery of both finds
    // no tunnel, and Frame.io gives up on them.
    common::wait_until(Duration::from_secs(30), "Frame.io's file.ready", || {
        rig.sim
            .deliveries()
            .iter()
            .any(|d| d.event == "file.ready" && d.resource_id == file_id)
    });
    rig.sim.set_status(&file_id, "Needs Review");
    common::wait_until(Duration::from_secs(60), "every delivery given up", || {
        let d = rig.sim.deliveries();
        ["file.ready", "metadata.value.updated"].iter().all(|kind| {
            d.iter()
                .filter(|r| r.event == *kind && r.resource_id == file_id)
                .count()
                >= 5
        })
    });
    assert!(notices.of("review_ready").is_empty());

    let child = rig.start();
    common::wait_until(
        Duration::from_secs(60),
        "ready and its Status shown",
        || {
            let job = the_job(&rig);
            job["review"]["ready"] == true && job["review"]["status"] == "Needs Review"
        },
    );
    common::wait_until(Duration::from_secs(20), "both told", || {
        notices.of("review_ready").len() == 1 && notices.of("review_status").len() == 1
    });
    // Nothing told twice, whatever else comes in meanwhile.
    std::thread::sleep(Duration::from_secs(2));
    stop(&rig, child);
    assert_eq!(notices.of("review_ready").len(), 1);
    assert_eq!(notices.of("review_status").len(), 1);
    assert_eq!(notices.of("review_status")[0]["status"], "Needs Review");
}

#[test]
fn without_a_tunnel_the_status_says_review_updates_need_one() {
    let mut rig = Rig::new("review-no-tunnel", "local", |_| {});
    rig.with_dashboard();
    let child = rig.start();
    common::wait_until(Duration::from_secs(30), "the review component", || {
        rig.status()
            .is_some_and(|s| s["components"]["review"]["state"] == "off")
    });
    let status = rig.status().unwrap();
    let detail = status["components"]["review"]["detail"].as_str().unwrap();
    assert!(detail.contains("review updates need a tunnel"), "{detail}");
    stop(&rig, child);
    assert!(rig.sim.webhooks().is_empty());
}
