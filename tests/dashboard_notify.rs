//! Webhook notifications arrive at a small local receiver, in each format, with the fields a
//! person needs; a failing webhook is retried.

mod common;

use std::time::Duration;

use common::hooks::Hook;
use crossbeam_channel::{bounded, Sender};
use postflow::config::{NotifyConfig, NotifyFormat};
use postflow::events::{self, ComponentState, Event, Hub};
use postflow::frameio::AuthState;
use postflow::ledger::{Job, JobState};
use postflow::notify::{self, Notices};

/// The notifier's two threads on a hub of their own.
fn notifier(format: NotifyFormat, url: &str, tunnel_after: Duration) -> (Hub, Sender<()>) {
    let (hub, inbox) = Hub::new();
    std::thread::spawn(move || events::run_hub(inbox));
    let (stop_tx, stop) = bounded::<()>(0);
    let config = NotifyConfig {
        webhook_url: Some(url.to_string()),
        format,
    };
    let (url, tx, rx) = notify::channel(&config).unwrap();
    let (h, s) = (hub.clone(), stop.clone());
    std::thread::spawn(move || notify::run_notifier(Notices::new(tunnel_after), h, tx, s));
    std::thread::spawn(move || notify::run_sender(url, format, rx, stop));
    // Let the subscription land before publishing.
    std::thread::sleep(Duration::from_millis(100));
    (hub, stop_tx)
}

fn job(state: JobState) -> Job {
    Job {
        id: 42,
        project: "default".into(),
        path: "SQ01/SQ01_UNDLM_010_v003.mov".into(),
        size: 3_200_000_000,
        mtime_ns: 0,
        state,
        folder: "SQ01/UNDLM_010".into(),
        attempts: 10,
        next_attempt_ms: None,
        reason: Some("Frame.io said: quota exceeded".into()),
        file_id: Some("f-42".into()),
        unknown_file: false,
        view_url: Some("https://next.frame.io/project/p/view/f-42".into()),
        all_in_ms: None,
        created_ms: 1_700_000_000_000,
        updated_ms: 1_700_000_100_000,
        stack: None,
        times: None,
        review: Default::default(),
        verified: None,
        sha256: None,
        next_ms: None,
    }
}

fn publish_story(hub: &Hub) {
    hub.publish(Event::JobChanged(job(JobState::Uploading)));
    hub.publish(Event::JobChanged(job(JobState::Done)));
    hub.publish(Event::JobChanged(job(JobState::Failed)));
    hub.publish(Event::AuthChanged(AuthState::NeedsLogin {
        reason: "the refresh token was refused".into(),
    }));
}

#[test]
fn json_webhooks_carry_every_field_and_are_retried() {
    let rx = Hook::failing_first(1);
    let (hub, _stop) = notifier(NotifyFormat::Json, &rx.url, Duration::from_millis(300));
    publish_story(&hub);
    hub.publish(Event::Component {
        name: "tunnel",
        state: ComponentState::Down,
        detail: "cloudflared exited".into(),
    });
    let got = rx.wait_for(4);
    let done = &got[0];
    assert_eq!(
        done["event"], "upload_done",
        "the first one came through a retry"
    );
    assert_eq!(done["name"], "SQ01_UNDLM_010_v003.mov");
    assert_eq!(done["folder"], "SQ01/UNDLM_010");
    assert_eq!(done["link"], "https://next.frame.io/project/p/view/f-42");
    assert_eq!(done["size"], 3_200_000_000u64);
    assert_eq!(done["time"], "2023-11-14T22:15:00.000Z");
    assert!(done["seconds"].is_number());
    let failed = &got[1];
    assert_eq!(failed["event"], "upload_failed");
    assert_eq!(failed["error"], "Frame.io said: quota exceeded");
    assert_eq!(failed["attempts"], 10);
    assert_eq!(got[2]["event"], "needs_login");
    assert_eq!(got[3]["event"], "tunnel_down");
    assert_eq!(got[3]["detail"], "cloudflared exited");
}

#[test]
fn slack_webhooks_are_text() {
    let rx = Hook::start();
    let (hub, _stop) = notifier(NotifyFormat::Slack, &rx.url, notify::TUNNEL_DOWN_AFTER);
    publish_story(&hub);
    let got = rx.wait_for(3);
    let text = got[0]["text"].as_str().unwrap();
    assert!(text.contains("SQ01_UNDLM_010_v003.mov"), "{text}");
    assert!(text.contains("SQ01/UNDLM_010"), "{text}");
    assert!(text.contains("3.2 GB"), "{text}");
    assert!(
        text.contains("https://next.frame.io/project/p/view/f-42"),
        "{text}"
    );
    assert!(got[1]["text"].as_str().unwrap().contains("failed for good"));
    assert!(got[2]["text"]
        .as_str()
        .unwrap()
        .contains("Connect Frame.io"));
}

#[test]
fn discord_webhooks_have_content_and_fields() {
    let rx = Hook::start();
    let (hub, _stop) = notifier(NotifyFormat::Discord, &rx.url, notify::TUNNEL_DOWN_AFTER);
    publish_story(&hub);
    let got = rx.wait_for(3);
    let done = &got[0];
    assert!(done["content"]
        .as_str()
        .unwrap()
        .starts_with("Uploaded SQ01_UNDLM_010_v003.mov"));
    let fields: Vec<(String, String)> = done["embeds"][0]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["name"].as_str().unwrap().into(),
                f["value"].as_str().unwrap().into(),
            )
        })
        .collect();
    for (name, value) in [
        ("File", "SQ01_UNDLM_010_v003.mov"),
        ("Folder", "SQ01/UNDLM_010"),
        ("Size", "3.2 GB"),
        ("Frame.io", "https://next.frame.io/project/p/view/f-42"),
    ] {
        assert!(
            fields.iter().any(|(n, v)| n == name && v == value),
            "{name}={value} in {fields:?}"
        );
    }
    assert_eq!(done["allowed_mentions"]["parse"], serde_json::json!([]));
    assert_eq!(got[2]["embeds"][0]["title"], "needs_login");
}
