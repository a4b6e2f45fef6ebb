//! The review loop of Frame.io in the simulator: webhooks (CRUD, validation, signed
//! deliveries with retries and repeats), `file.upload.completed` and `file.ready` after an
//! upload, comments with owner, replies and timecodes, and the Status field.

mod common;

use common::{delete, get, patch_json, post_json, put};
use serde_json::{json, Value};
use sim::{FrameIo, Options, SimProject};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// One request a receiver got.
#[derive(Clone, Debug)]
struct Received {
    path: String,
    headers: Vec<(String, String)>,
    body: String,
    at: Instant,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }
}

/// A webhook receiver: answers the scripted statuses in turn (then 200), after `delay` for
/// the first request when set.
struct Receiver {
    port: u16,
    got: Arc<Mutex<Vec<Received>>>,
    server: Arc<tiny_http::Server>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    fn start(script: &[u16], first_delay: Duration) -> Receiver {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
        let port = server.server_addr().to_ip().unwrap().port();
        let got = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(script.to_vec()));
        let thread = {
            let server = Arc::clone(&server);
            let got = Arc::clone(&got);
            std::thread::spawn(move || {
                for mut rq in server.incoming_requests() {
                    let at = Instant::now();
                    let mut body = String::new();
                    let _ = rq.as_reader().read_to_string(&mut body);
                    let headers = rq
                        .headers()
                        .iter()
                        .map(|h| {
                            (
                                h.field.as_str().as_str().to_string(),
                                h.value.as_str().to_string(),
                            )
                        })
                        .collect();
                    let n = {
                        let mut g = got.lock().unwrap();
                        g.push(Received {
                            path: rq.url().to_string(),
                            headers,
                            body,
                            at,
                        });
                        g.len()
                    };
                    let status = {
                        let mut s = script.lock().unwrap();
                        if s.is_empty() {
                            200
                        } else {
                            s.remove(0)
                        }
                    };
                    let slow = n == 1 && !first_delay.is_zero();
                    std::thread::spawn(move || {
                        if slow {
                            std::thread::sleep(first_delay);
                        }
                        let _ = rq.respond(tiny_http::Response::empty(status));
                    });
                }
            })
        };
        Receiver {
            port,
            got,
            server,
            thread: Some(thread),
        }
    }

    fn ok() -> Receiver {
        Receiver::start(&[], Duration::ZERO)
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn got(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Waits until `n` requests arrived (panics after 20 s).
    fn wait_for(&self, n: usize) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let got = self.got();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "waited for {n} deliveries, got {}: {got:?}",
                got.len()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A tunnel registry directory (as the cloudflared stand-in writes it), removed on drop.
struct Registry(PathBuf);

impl Registry {
    fn new() -> Registry {
        let dir = std::env::temp_dir().join(format!(
            "sim-review-registry-{}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Registry(dir)
    }

    fn register(&self, host: &str, port: u16) {
        std::fs::write(self.0.join(host), format!("127.0.0.1:{port}\n")).unwrap();
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The main project and "Show C" in extra account 1, with a registry.
fn studio(registry: &Registry) -> (FrameIo, String) {
    let sim = FrameIo::start(Options {
        extra_accounts: 1,
        projects: vec![SimProject {
            name: "Show C".into(),
            account: 1,
        }],
        tunnel_registry: Some(registry.0.clone()),
        ..Options::default()
    })
    .unwrap();
    let t = sim.login_tokens().access_token;
    (sim, t)
}

fn hooks_path(sim: &FrameIo) -> String {
    format!(
        "/v4/accounts/{}/workspaces/{}/webhooks",
        sim.account_id(),
        sim.workspace_id()
    )
}

fn create_hook(sim: &FrameIo, t: &str, url: &str, events: &[&str]) -> Value {
    let r = post_json(
        sim.base_url(),
        t,
        &hooks_path(sim),
        &json!({"data": {"name": "postflow", "url": url, "events": events}}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.header("x-ratelimit-limit"), Some("10"));
    r.json()["data"].clone()
}

fn file_in_main(sim: &FrameIo, name: &str) -> String {
    sim.add_file(&sim.root_folder_id(), name, 1000)
}

/// `v0=` + hex HMAC-SHA256(secret, "v0:" + ts + ":" + body), computed with ring.
fn expected_signature(secret: &str, ts: &str, body: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = ring::hmac::sign(&key, format!("v0:{ts}:{body}").as_bytes());
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("v0={hex}")
}

/// Waits until the simulator has logged `n` delivery attempts (a receiver sees a request
/// before the simulator has its answer and logs it); panics after 20 s.
fn wait_deliveries(sim: &FrameIo, n: usize) -> Vec<sim::DeliveryRecord> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = sim.deliveries();
        if log.len() >= n {
            return log;
        }
        assert!(
            Instant::now() < deadline,
            "waited for {n} deliveries: {log:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn webhooks_are_created_listed_shown_updated_and_deleted_as_the_sdk_has_them() {
    let registry = Registry::new();
    let (sim, t) = studio(&registry);
    let b = sim.base_url();
    let a = sim.account_id();
    let made = create_hook(
        &sim,
        &t,
        "https://hooks.example/frameio/abc",
        &["file.ready", "comment.created"],
    );
    let id = made["id"].as_str().unwrap().to_string();
    let secret = made["secret"].as_str().unwrap().to_string();
    assert!(secret.len() >= 32, "a secret worth the name: {secret:?}");
    assert_eq!(made["active"], true);
    assert_eq!(made["events"], json!(["file.ready", "comment.created"]));
    assert_eq!(made["workspace_id"], *sim.workspace_id());
    assert_eq!(made["url"], "https://hooks.example/frameio/abc");
    let views = sim.webhooks();
    assert_eq!(views.len(), 1);
    assert_eq!(views[0].id, id);
    assert_eq!(views[0].secret, secret);
    assert_eq!(views[0].account_id, a);

    // The secret is shown only once.
    let shown = get(b, &t, &format!("/v4/accounts/{a}/webhooks/{id}"));
    assert_eq!(shown.status, 200, "{}", shown.body);
    assert_eq!(shown.header("x-ratelimit-limit"), Some("100"));
    assert_eq!(shown.json()["data"]["id"], *id);
    assert!(shown.json()["data"].get("secret").is_none());

    // Listed, paged.
    let second = create_hook(&sim, &t, "https://hooks.example/two", &["file.ready"]);
    let page1 = get(b, &t, &format!("{}?page_size=1", hooks_path(&sim))).json();
    assert_eq!(page1["data"].as_array().unwrap().len(), 1);
    assert_eq!(page1["data"][0]["id"], *id);
    assert!(page1["data"][0].get("secret").is_none());
    let page2 = get(b, &t, page1["links"]["next"].as_str().unwrap()).json();
    assert_eq!(page2["data"][0]["id"], second["id"]);
    assert!(page2["links"]["next"].is_null());

    // Updated: each field alone.
    let path = format!("/v4/accounts/{a}/webhooks/{id}");
    let r = patch_json(
        b,
        &t,
        &path,
        &[],
        &json!({"data": {"url": "https://new-host.example/frameio/abc", "active": false}}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-ratelimit-limit"), Some("10"));
    assert_eq!(
        r.json()["data"]["url"],
        "https://new-host.example/frameio/abc"
    );
    assert_eq!(r.json()["data"]["active"], false);
    assert_eq!(
        r.json()["data"]["events"],
        json!(["file.ready", "comment.created"])
    );
    let r = patch_json(
        b,
        &t,
        &path,
        &[],
        &json!({"data": {"events": ["comment.completed"], "name": "renamed"}}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let view = sim.webhooks().into_iter().find(|w| w.id == id).unwrap();
    assert_eq!(view.events, ["comment.completed"]);
    assert_eq!(view.name, "renamed");
    assert!(!view.active);
    assert_eq!(view.secret, secret, "an update keeps the secret");

    // Deleted.
    let r = delete(b, &t, &path);
    assert_eq!(r.status, 204, "{}", r.body);
    assert_eq!(r.header("x-ratelimit-limit"), Some("60"));
    assert_eq!(get(b, &t, &path).status, 404);
    assert_eq!(delete(b, &t, &path).status, 404);
    assert_eq!(sim.webhooks().len(), 1);
}

#[test]
fn a_webhook_with_an_unknown_event_or_a_url_that_is_not_https_is_refused() {
    let registry = Registry::new();
    let (sim, t) = studio(&registry);
    let b = sim.base_url();
    let cases = [
        (
            json!({"name": "x", "url": "http://hooks.example/a", "events": ["file.ready"]}),
            "/data/url",
        ),
        (
            json!({"name": "x", "url": "hooks.example/a", "events": ["file.ready"]}),
            "/data/url",
        ),
        (
            json!({"name": "x", "url": "https://", "events": ["file.ready"]}),
            "/data/url",
        ),
        (
            json!({"name": "x", "url": "https://hooks.example/a", "events": ["file.readyy"]}),
            "/data/events",
        ),
        (
            json!({"name": "x", "url": "https://hooks.example/a", "events": []}),
            "/data/events",
        ),
        (
            json!({"name": "x", "url": "https://hooks.example/a"}),
            "/data/events",
        ),
        (
            json!({"url": "https://hooks.example/a", "events": ["file.ready"]}),
            "/data/name",
        ),
        (
            json!({"name": "x", "url": "https://hooks.example/a", "events": ["file.ready"], "is_active": true}),
            "/data/is_active",
        ),
    ];
    for (data, pointer) in cases {
        let r = post_json(b, &t, &hooks_path(&sim), &json!({ "data": data }));
        assert_eq!(r.status, 422, "{data}: {}", r.body);
        assert_eq!(
            r.json()["errors"][0]["source"]["pointer"],
            pointer,
            "{data}"
        );
    }
    let r = post_json(
        b,
        &t,
        &hooks_path(&sim),
        &json!({"data": {"name": "x", "url": "https://hooks.example/a", "events": ["file.ready", "nope"]}}),
    );
    assert!(
        r.body.contains("nope"),
        "the error names the event: {}",
        r.body
    );
    assert!(sim.webhooks().is_empty());

    // An update is checked the same way and changes nothing when refused.
    let made = create_hook(&sim, &t, "https://hooks.example/a", &["file.ready"]);
    let path = format!(
        "/v4/accounts/{}/webhooks/{}",
        sim.account_id(),
        made["id"].as_str().unwrap()
    );
    for data in [
        json!({"url": "http://hooks.example/b"}),
        json!({"events": ["comment.created", "comment.maybe"]}),
        json!({"active": "yes"}),
    ] {
        let r = patch_json(b, &t, &path, &[], &json!({ "data": data }));
        assert_eq!(r.status, 422, "{data}: {}", r.body);
    }
    let w = &sim.webhooks()[0];
    assert_eq!(
        (w.url.as_str(), w.events.as_slice(), w.active),
        (
            "https://hooks.example/a",
            &["file.ready".to_string()][..],
            true
        )
    );
}

#[test]
fn webhooks_stay_in_their_account() {
    let registry = Registry::new();
    let (sim, t) = studio(&registry);
    let b = sim.base_url();
    let c = sim.project_named("Show C").unwrap();
    let main_account = sim.account_id();
    // The other account's workspace under the main account: 404, as for an unknown id.
    let r = post_json(
        b,
        &t,
        &format!(
            "/v4/accounts/{main_account}/workspaces/{}/webhooks",
            c.workspace_id
        ),
        &json!({"data": {"name": "x", "url": "https://h.example/", "events": ["file.ready"]}}),
    );
    assert_eq!(r.status, 404, "{}", r.body);
    let r = get(
        b,
        &t,
        &format!(
            "/v4/accounts/{main_account}/workspaces/{}/webhooks",
            c.workspace_id
        ),
    );
    assert_eq!(r.status, 404, "{}", r.body);
    // Made in account 1, it is not there through the main account.
    let r = post_json(
        b,
        &t,
        &format!(
            "/v4/accounts/{}/workspaces/{}/webhooks",
            c.account_id, c.workspace_id
        ),
        &json!({"data": {"name": "c", "url": "https://h.example/", "events": ["file.ready"]}}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.json()["data"]["id"].as_str().unwrap().to_string();
    let path = format!("/v4/accounts/{main_account}/webhooks/{id}");
    assert_eq!(get(b, &t, &path).status, 404);
    assert_eq!(
        patch_json(b, &t, &path, &[], &json!({"data": {"active": false}})).status,
        404
    );
    assert_eq!(delete(b, &t, &path).status, 404);
    let listed = get(b, &t, &hooks_path(&sim)).json();
    assert_eq!(listed["data"], json!([]));
    assert!(sim.webhooks()[0].active);
    assert_eq!(
        get(
            b,
            &t,
            &format!("/v4/accounts/{}/webhooks/{id}", c.account_id)
        )
        .status,
        200
    );
}

#[test]
fn a_delivery_is_signed_as_frameio_documents_and_goes_through_the_tunnel_registry() {
    let registry = Registry::new();
    let (sim, t) = studio(&registry);
    let rx = Receiver::ok();
    registry.register("quick-tunnel-1.trycloudflare.com", rx.port);
    let made = create_hook(
        &sim,
        &t,
        "https://quick-tunnel-1.trycloudflare.com/hooks/frameio/tok3n",
        &["comment.created"],
    );
    let secret = made["secret"].as_str().unwrap();
    let file = file_in_main(&sim, "SQ01_UNDLM_00412_v002.mov");
    let before = now_secs();
    let comment = sim.add_comment(&file, Some("Ada"), "too dark", Some(84));
    let got = rx.wait_for(1);
    let d = &got[0];
    assert_eq!(d.path, "/hooks/frameio/tok3n");
    assert_eq!(d.header("Host"), Some("quick-tunnel-1.trycloudflare.com"));
    assert_eq!(d.header("Content-Type"), Some("application/json"));
    assert_eq!(d.header("User-Agent"), Some("Frame.io V4 API"));
    let ts = d.header("X-Frameio-Request-Timestamp").unwrap();
    let ts_n: u64 = ts.parse().unwrap();
    assert!(
        ts_n >= before && ts_n <= now_secs(),
        "{ts} is now, in epoch seconds"
    );
    assert_eq!(
        d.header("X-Frameio-Signature"),
        Some(expected_signature(secret, ts, &d.body).as_str())
    );
    // A signature with another secret or another timestamp does not match.
    assert_ne!(
        d.header("X-Frameio-Signature"),
        Some(expected_signature("not-the-secret", ts, &d.body).as_str())
    );
    assert_eq!(
        d.json(),
        json!({
            "account": {"id": sim.account_id()},
            "project": {"id": sim.project_id()},
            "resource": {"id": comment, "type": "comment"},
            "type": "comment.created",
            "user": {"id": d.json()["user"]["id"]},
            "workspace": {"id": sim.workspace_id()},
        })
    );
    assert!(d.json()["user"]["id"]
        .as_str()
        .is_some_and(|s| !s.is_empty()));
    let log = wait_deliveries(&sim, 1);
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].webhook_id, made["id"].as_str().unwrap());
    assert_eq!(log[0].event, "comment.created");
    assert_eq!(log[0].resource_id, comment);
    assert_eq!((log[0].attempt, log[0].status), (1, Some(200)));
}

#[test]
fn only_active_webhooks_of_the_events_workspace_subscribed_to_the_event_hear_it() {
    let registry = Registry::new();
    let (sim, _t) = studio(&registry);
    let c = sim.project_named("Show C").unwrap();
    let (main_rx, other_rx, off_rx, wrong_event_rx, c_rx) = (
        Receiver::ok(),
        Receiver::ok(),
        Receiver::ok(),
        Receiver::ok(),
        Receiver::ok(),
    );
    let ws = sim.workspace_id();
    sim.add_webhook(&ws, "main", &main_rx.url("/h"), &["comment.created"]);
    sim.add_webhook(
        &ws,
        "second",
        &other_rx.url("/h"),
        &["comment.created", "file.ready"],
    );
    let off = sim.add_webhook(&ws, "off", &off_rx.url("/h"), &["comment.created"]);
    sim.add_webhook(
        &ws,
        "files only",
        &wrong_event_rx.url("/h"),
        &["file.ready"],
    );
    sim.add_webhook(
        &c.workspace_id,
        "show c",
        &c_rx.url("/h"),
        &["comment.created"],
    );
    let t = sim.login_tokens().access_token;
    let r = patch_json(
        sim.base_url(),
        &t,
        &format!("/v4/accounts/{}/webhooks/{}", sim.account_id(), off.id),
        &[],
        &json!({"data": {"active": false}}),
    );
    assert_eq!(r.status, 200, "{}", r.body);

    let file = file_in_main(&sim, "a.mov");
    let id = sim.add_comment(&file, None, "guest note", None);
    main_rx.wait_for(1);
    other_rx.wait_for(1);
    // The C project's file: only C's webhook.
    let c_file = sim.add_file(&c.root_folder_id, "c.mov", 10);
    let c_comment = sim.add_comment(&c_file, Some("Bob"), "in C", None);
    let got = c_rx.wait_for(1);
    assert_eq!(got[0].json()["resource"]["id"], *c_comment);
    assert_eq!(got[0].json()["account"]["id"], *c.account_id);
    assert_eq!(got[0].json()["project"]["id"], *c.id);
    assert_eq!(got[0].json()["workspace"]["id"], *c.workspace_id);
    // Everything fired has been attempted once by now: 3 deliveries in the log.
    wait_deliveries(&sim, 3);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(sim.deliveries().len(), 3, "{:?}", sim.deliveries());
    assert_eq!(main_rx.got().len(), 1);
    assert_eq!(main_rx.got()[0].json()["resource"]["id"], *id);
    assert_eq!(other_rx.got().len(), 1);
    assert!(off_rx.got().is_empty());
    assert!(wrong_event_rx.got().is_empty());
    assert_eq!(c_rx.got().len(), 1);
}

#[test]
fn a_receiver_answering_500_twice_gets_three_attempts_spaced_by_the_doubling_schedule() {
    let registry = Registry::new();
    let (sim, _t) = studio(&registry);
    sim.set_faults(|f| f.webhook_retry_secs = 0.3);
    let rx = Receiver::start(&[500, 500, 200], Duration::ZERO);
    let hook = sim.add_webhook(
        &sim.workspace_id(),
        "h",
        &rx.url("/h"),
        &["metadata.value.updated"],
    );
    let file = file_in_main(&sim, "a.mov");
    sim.set_status(&file, "Needs changes");
    let got = rx.wait_for(3);
    // Each attempt is the same event, signed afresh.
    for d in &got {
        assert_eq!(d.body, got[0].body);
        let ts = d.header("X-Frameio-Request-Timestamp").unwrap();
        assert_eq!(
            d.header("X-Frameio-Signature"),
            Some(expected_signature(&hook.secret, ts, &d.body).as_str())
        );
    }
    assert_eq!(got[0].json()["type"], "metadata.value.updated");
    assert_eq!(
        got[0].json()["resource"],
        json!({"id": file, "type": "file"})
    );
    // 0.3 s before the 2nd attempt, 0.6 s before the 3rd (jitter only adds).
    let gap1 = got[1].at - got[0].at;
    let gap2 = got[2].at - got[1].at;
    assert!(gap1 >= Duration::from_millis(300), "{gap1:?}");
    assert!(gap2 >= Duration::from_millis(600), "{gap2:?}");
    // The 3rd succeeded: no 4th, even after the 4th would have been due (1.2 s + jitter).
    std::thread::sleep(Duration::from_millis(1600));
    assert_eq!(rx.got().len(), 3);
    let log = sim.deliveries();
    let seen: Vec<(u32, Option<u16>)> = log.iter().map(|d| (d.attempt, d.status)).collect();
    assert_eq!(seen, [(1, Some(500)), (2, Some(500)), (3, Some(200))]);
}

#[test]
fn a_receiver_that_always_fails_gets_five_attempts_and_one_that_hangs_counts_as_failed() {
    let registry = Registry::new();
    let (sim, _t) = studio(&registry);
    sim.set_faults(|f| f.webhook_retry_secs = 0.05);
    let failing = Receiver::start(&[503; 10], Duration::ZERO);
    // Answers the first delivery only after 6 s: past Frame.io's 5 s.
    let hanging = Receiver::start(&[], Duration::from_secs(6));
    let ws = sim.workspace_id();
    let bad = sim.add_webhook(&ws, "bad", &failing.url("/h"), &["comment.created"]);
    let slow = sim.add_webhook(&ws, "slow", &hanging.url("/h"), &["comment.created"]);
    let file = file_in_main(&sim, "a.mov");
    sim.add_comment(&file, Some("Ada"), "x", None);
    failing.wait_for(5);
    hanging.wait_for(2);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(failing.got().len(), 5, "5 attempts in all");
    let log = sim.deliveries();
    let of = |id: &str| -> Vec<(u32, Option<u16>)> {
        log.iter()
            .filter(|d| d.webhook_id == id)
            .map(|d| (d.attempt, d.status))
            .collect()
    };
    assert_eq!(
        of(&bad.id),
        (1..=5).map(|i| (i, Some(503))).collect::<Vec<_>>()
    );
    assert_eq!(of(&slow.id), [(1, None), (2, Some(200))]);
    let first = log.iter().find(|d| d.webhook_id == slow.id).unwrap();
    assert!(first.error.is_some());
}

#[test]
fn with_duplicates_each_event_arrives_that_many_extra_times_with_the_same_body() {
    let registry = Registry::new();
    let (sim, _t) = studio(&registry);
    sim.set_faults(|f| f.webhook_duplicates = 2);
    let rx = Receiver::ok();
    let hook = sim.add_webhook(
        &sim.workspace_id(),
        "h",
        &rx.url("/h"),
        &["comment.completed"],
    );
    let file = file_in_main(&sim, "a.mov");
    let c = sim.add_comment(&file, Some("Ada"), "fix the flicker", Some(10));
    sim.complete_comment(&c);
    let got = rx.wait_for(3);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(rx.got().len(), 3);
    for d in &got {
        assert_eq!(d.body, got[0].body);
        let ts = d.header("X-Frameio-Request-Timestamp").unwrap();
        assert_eq!(
            d.header("X-Frameio-Signature"),
            Some(expected_signature(&hook.secret, ts, &d.body).as_str())
        );
    }
    assert_eq!(got[0].json()["type"], "comment.completed");
    assert_eq!(
        got[0].json()["resource"],
        json!({"id": c, "type": "comment"})
    );
    let copies: Vec<u32> = wait_deliveries(&sim, 3).iter().map(|d| d.copy).collect();
    assert_eq!(copies, [0, 1, 2]);
}

/// A local upload of `data` into the main root (one part), its id.
fn upload(sim: &FrameIo, t: &str, name: &str, data: &[u8]) -> String {
    let r = post_json(
        sim.base_url(),
        t,
        &format!(
            "/v4/accounts/{}/folders/{}/files/local_upload",
            sim.account_id(),
            sim.root_folder_id()
        ),
        &json!({"data": {"name": name, "file_size": data.len()}}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let d = r.json()["data"].clone();
    let r = put(
        d["upload_urls"][0]["url"].as_str().unwrap(),
        &[
            ("Content-Type", "video/quicktime"),
            ("x-amz-acl", "private"),
        ],
        data,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    d["id"].as_str().unwrap().to_string()
}

#[test]
fn an_upload_that_completes_fires_upload_completed_then_file_ready_after_the_delay() {
    let registry = Registry::new();
    let (sim, t) = studio(&registry);
    sim.set_faults(|f| f.ready_delay_ms = 400);
    let rx = Receiver::ok();
    registry.register("tunnel.example", rx.port);
    create_hook(
        &sim,
        &t,
        "https://tunnel.example/hook",
        &["file.upload.completed", "file.ready"],
    );
    let start = Instant::now();
    let id = upload(&sim, &t, "SQ01_UNDLM_00412_v001.mov", b"0123456789 frames");
    let got = rx.wait_for(2);
    let kinds: Vec<Value> = got.iter().map(|d| d.json()["type"].clone()).collect();
    assert_eq!(kinds, [json!("file.upload.completed"), json!("file.ready")]);
    for d in &got {
        assert_eq!(d.json()["resource"], json!({"id": id, "type": "file"}));
        assert_eq!(d.json()["project"]["id"], *sim.project_id());
    }
    // Ready no sooner than 400 ms after the upload completed (which was after `start`).
    assert!(got[1].at - start >= Duration::from_millis(400));
    assert!(sim.file(&id).unwrap().upload_complete);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(rx.got().len(), 2, "each event once");
}

#[test]
fn a_remote_upload_fires_file_ready_and_a_deleted_file_never_becomes_ready() {
    let registry = Registry::new();
    let (sim, t) = studio(&registry);
    sim.set_faults(|f| f.ready_delay_ms = 300);
    // The receiver serves as the source too: a GET for the bytes, a POST for the hook.
    let source = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let src_port = source.server_addr().to_ip().unwrap().port();
    let source = Arc::new(source);
    let src = Arc::clone(&source);
    let serving = std::thread::spawn(move || {
        for rq in src.incoming_requests() {
            let _ = rq.respond(tiny_http::Response::from_data(b"remote bytes".to_vec()));
        }
    });
    let rx = Receiver::ok();
    sim.add_webhook(&sim.workspace_id(), "h", &rx.url("/h"), &["file.ready"]);
    let r = post_json(
        sim.base_url(),
        &t,
        &format!(
            "/v4/accounts/{}/folders/{}/files/remote_upload",
            sim.account_id(),
            sim.root_folder_id()
        ),
        &json!({"data": {"name": "r.mov", "source_url": format!("http://127.0.0.1:{src_port}/r.mov")}}),
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let id = r.json()["data"]["id"].as_str().unwrap().to_string();
    let got = rx.wait_for(1);
    assert_eq!(got[0].json()["resource"]["id"], *id);
    assert_eq!(got[0].json()["type"], "file.ready");

    // Deleted between completing and being ready: no file.ready.
    sim.set_faults(|f| f.ready_delay_ms = 800);
    let id2 = upload(&sim, &t, "gone.mov", b"abc");
    assert!(
        sim.wait_for_file(&id2, Duration::from_secs(10))
            .unwrap()
            .upload_complete
    );
    let r = delete(
        sim.base_url(),
        &t,
        &format!("/v4/accounts/{}/files/{id2}", sim.account_id()),
    );
    assert_eq!(r.status, 204);
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(rx.got().len(), 1, "{:?}", rx.got());
    source.unblock();
    let _ = serving.join();
}

fn comments_path(sim: &FrameIo, file: &str, query: &str) -> String {
    format!(
        "/v4/accounts/{}/files/{file}/comments{query}",
        sim.account_id()
    )
}

#[test]
fn comments_list_with_owner_replies_and_timecodes_only_when_asked() {
    let registry = Registry::new();
    let (sim, t) = studio(&registry);
    let b = sim.base_url();
    let file = file_in_main(&sim, "SQ01_UNDLM_00412_v002.mov");
    let other = file_in_main(&sim, "other.mov");
    let ada = sim.add_comment(&file, Some("Ada"), "too dark", Some(84));
    let guest = sim.add_comment(&file, None, "love it", None);
    let reply = sim.add_reply(&ada, Some("Bob"), "agreed, lift the mids");
    let reply2 = sim.add_reply(&reply, None, "a reply to the reply");
    sim.add_comment(&other, Some("Ada"), "elsewhere", Some(1));

    // Plain: top-level comments only, oldest first, no owner, no replies, frames.
    let r = get(b, &t, &comments_path(&sim, &file, ""));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-ratelimit-limit"), Some("100"));
    let data = r.json()["data"].clone();
    assert_eq!(data.as_array().unwrap().len(), 2);
    assert_eq!(data[0]["id"], *ada);
    assert_eq!(data[0]["file_id"], *file);
    assert_eq!(data[0]["text"], "too dark");
    assert_eq!(data[0]["timestamp"], 84);
    assert!(data[0]["completed_at"].is_null());
    assert!(data[0]["created_at"].is_string() && data[0]["updated_at"].is_string());
    assert!(data[0].get("owner").is_none() && data[0].get("replies").is_none());
    assert_eq!(data[1]["id"], *guest);
    assert!(data[1]["timestamp"].is_null());

    // include=owner,replies (one value) and timecodes at 24 fps.
    let r = get(
        b,
        &t,
        &comments_path(
            &sim,
            &file,
            "?include=owner,replies&timestamp_as_timecode=true",
        ),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let data = r.json()["data"].clone();
    assert_eq!(data[0]["timestamp"], "00:00:03:12");
    assert_eq!(data[0]["owner"]["name"], "Ada");
    assert!(data[0]["owner"]["id"]
        .as_str()
        .is_some_and(|s| !s.is_empty()));
    assert!(data[0]["owner"]["email"]
        .as_str()
        .is_some_and(|s| s.contains('@')));
    let replies = data[0]["replies"].as_array().unwrap();
    assert_eq!(replies.len(), 2, "a reply to a reply joins the thread");
    assert_eq!(replies[0]["id"], *reply);
    assert_eq!(replies[0]["text"], "agreed, lift the mids");
    assert_eq!(replies[0]["owner"]["name"], "Bob");
    assert!(
        replies[0].get("parent_id").is_none(),
        "replies carry no parent id"
    );
    assert_eq!(replies[1]["id"], *reply2);
    assert!(replies[1]["owner"].is_null());
    assert!(data[1]["owner"].is_null(), "a guest's owner is null");
    assert_eq!(data[1]["replies"], json!([]));

    // Repeated include keys: only the last counts.
    let r = get(
        b,
        &t,
        &comments_path(&sim, &file, "?include=replies&include=owner"),
    );
    let data = r.json()["data"].clone();
    assert_eq!(data[0]["owner"]["name"], "Ada");
    assert!(data[0].get("replies").is_none());
    assert_eq!(
        get(b, &t, &comments_path(&sim, &file, "?include=author")).status,
        422
    );

    // Sorted newest first; paged.
    let r = get(
        b,
        &t,
        &comments_path(&sim, &file, "?sort=created_at_desc&page_size=1"),
    );
    assert_eq!(r.json()["data"][0]["id"], *guest);
    // `links.next` carries only `after`: the client adds its parameters again.
    let next = r.json()["links"]["next"].as_str().unwrap().to_string();
    let r = get(b, &t, &format!("{next}&sort=created_at_desc&page_size=1"));
    assert_eq!(r.json()["data"][0]["id"], *ada);
    assert!(r.json()["links"]["next"].is_null());

    // Backdated (catch-up): the order follows created_at.
    sim.set_comment_created_at(&guest, SystemTime::now() - Duration::from_secs(3600));
    let r = get(b, &t, &comments_path(&sim, &file, "?sort=created_at_asc"));
    assert_eq!(r.json()["data"][0]["id"], *guest);

    // Show one, a reply too, with the same options; completing sets completed_at.
    sim.complete_comment(&ada);
    let show = |id: &str, q: &str| {
        get(
            b,
            &t,
            &format!("/v4/accounts/{}/comments/{id}{q}", sim.account_id()),
        )
    };
    let r = show(&ada, "?include=owner&timestamp_as_timecode=true");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["data"]["owner"]["name"], "Ada");
    assert_eq!(r.json()["data"]["timestamp"], "00:00:03:12");
    assert!(r.json()["data"]["completed_at"].is_string());
    let r = show(&reply, "?include=owner");
    assert_eq!(r.json()["data"]["text"], "agreed, lift the mids");
    assert_eq!(r.json()["data"]["file_id"], *file);
    assert_eq!(show("no-such-comment", "").status, 404);
}

#[test]
fn timecodes_count_hours_minutes_seconds_and_frames_at_24_fps() {
    let registry = Registry::new();
    let (sim, t) = studio(&registry);
    let file = file_in_main(&sim, "a.mov");
    let frames = [0u64, 23, 24, 24 * 60 + 5, 24 * 3600 + 24 * 61 + 23];
    for f in frames {
        sim.add_comment(&file, None, "x", Some(f));
    }
    let r = get(
        sim.base_url(),
        &t,
        &comments_path(&sim, &file, "?timestamp_as_timecode=true"),
    );
    let got: Vec<Value> = r.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["timestamp"].clone())
        .collect();
    assert_eq!(
        got,
        [
            json!("00:00:00:00"),
            json!("00:00:00:23"),
            json!("00:00:01:00"),
            json!("00:01:00:05"),
            json!("01:01:01:23")
        ]
    );
}

#[test]
fn comments_and_metadata_of_another_accounts_file_are_not_found() {
    let registry = Registry::new();
    let (sim, t) = studio(&registry);
    let b = sim.base_url();
    let c = sim.project_named("Show C").unwrap();
    let c_file = sim.add_file(&c.root_folder_id, "c.mov", 10);
    let comment = sim.add_comment(&c_file, Some("Ada"), "in C", None);
    let main = sim.account_id();
    for path in [
        format!("/v4/accounts/{main}/files/{c_file}/comments"),
        format!("/v4/accounts/{main}/comments/{comment}"),
        format!("/v4/accounts/{main}/files/{c_file}/metadata"),
    ] {
        let r = get(b, &t, &path);
        assert_eq!(r.status, 404, "{path}: {}", r.body);
    }
    let ca = &c.account_id;
    for path in [
        format!("/v4/accounts/{ca}/files/{c_file}/comments"),
        format!("/v4/accounts/{ca}/comments/{comment}"),
        format!("/v4/accounts/{ca}/files/{c_file}/metadata"),
    ] {
        let r = get(b, &t, &path);
        assert_eq!(r.status, 200, "{path}: {}", r.body);
    }
    // Without a token: 401.
    assert_eq!(
        get(b, "", &format!("/v4/accounts/{ca}/comments/{comment}")).status,
        401
    );
}

#[test]
fn the_status_field_is_listed_and_a_files_status_shows_and_fires_when_it_changes() {
    let registry = Registry::new();
    let (sim, t) = studio(&registry);
    let b = sim.base_url();
    let a = sim.account_id();
    let rx = Receiver::ok();
    sim.add_webhook(
        &sim.workspace_id(),
        "h",
        &rx.url("/h"),
        &["metadata.value.updated"],
    );
    let defs = get(
        b,
        &t,
        &format!("/v4/accounts/{a}/metadata/field_definitions"),
    );
    assert_eq!(defs.status, 200, "{}", defs.body);
    let status = defs.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "Status")
        .cloned()
        .expect("a Status field");
    assert_eq!(status["field_type"], "select");
    let options = status["field_configuration"]["options"].as_array().unwrap();
    let names: Vec<&str> = options
        .iter()
        .map(|o| o["display_name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["Needs Review", "In Progress", "Needs changes", "Approved"]
    );
    let approved = options[3]["id"].as_str().unwrap();

    let file = file_in_main(&sim, "a.mov");
    let md = |q: &str| get(b, &t, &format!("/v4/accounts/{a}/files/{file}/metadata{q}")).json();
    assert_eq!(md("")["data"], json!({"file_id": file, "metadata": []}));
    assert!(md("?show_null=true")["data"]["metadata"][0]["value"].is_null());

    sim.set_status(&file, "Approved");
    let field = md("")["data"]["metadata"][0].clone();
    assert_eq!(field["field_definition_id"], status["id"]);
    assert_eq!(field["field_definition_name"], "Status");
    assert_eq!(
        field["value"],
        json!([{"id": approved, "display_name": "Approved"}])
    );
    assert_eq!(sim.status_of(&file).as_deref(), Some("Approved"));
    let got = rx.wait_for(1);
    assert_eq!(got[0].json()["type"], "metadata.value.updated");
    assert_eq!(got[0].json()["resource"]["id"], *file);
    // The same status again changes nothing and fires nothing.
    sim.set_status(&file, "Approved");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(rx.got().len(), 1);
}

#[test]
fn the_demo_routes_comment_complete_and_set_a_status_over_http() {
    let registry = Registry::new();
    let (sim, t) = studio(&registry);
    let b = sim.base_url();
    let rx = Receiver::ok();
    sim.add_webhook(
        &sim.workspace_id(),
        "h",
        &rx.url("/h"),
        &[
            "comment.created",
            "comment.completed",
            "metadata.value.updated",
        ],
    );
    let file = file_in_main(&sim, "a.mov");
    let agent = common::agent();
    let post = |path: &str, body: Value| {
        let mut r = agent
            .post(format!("{b}{path}"))
            .header("Content-Type", "application/json")
            .send(body.to_string().as_bytes())
            .unwrap();
        let status = r.status().as_u16();
        (status, r.body_mut().read_to_string().unwrap_or_default())
    };
    let (s, body) = post(
        "/_sim/comments",
        json!({"file_id": file, "author": "Ada", "text": "too dark", "timestamp": 84}),
    );
    assert_eq!(s, 200, "{body}");
    let id = serde_json::from_str::<Value>(&body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, body) = post(&format!("/_sim/comments/{id}/complete"), json!({}));
    assert_eq!(s, 200, "{body}");
    let (s, body) = post(
        "/_sim/status",
        json!({"file_id": file, "status": "Needs changes"}),
    );
    assert_eq!(s, 200, "{body}");
    let r = get(
        b,
        &t,
        &format!(
            "/v4/accounts/{}/comments/{id}?include=owner",
            sim.account_id()
        ),
    );
    assert_eq!(r.json()["data"]["owner"]["name"], "Ada");
    assert_eq!(r.json()["data"]["timestamp"], 84);
    assert!(r.json()["data"]["completed_at"].is_string());
    assert_eq!(sim.status_of(&file).as_deref(), Some("Needs changes"));
    let got = rx.wait_for(3);
    let mut kinds: Vec<String> = got
        .iter()
        .map(|d| d.json()["type"].as_str().unwrap().to_string())
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "comment.completed",
            "comment.created",
            "metadata.value.updated"
        ]
    );
    // Refusals name the problem.
    assert_eq!(
        post("/_sim/comments", json!({"file_id": "nope", "text": "x"})).0,
        404
    );
    assert_eq!(post("/_sim/comments", json!({"file_id": file})).0, 400);
    let (s, body) = post("/_sim/status", json!({"file_id": file, "status": "Done"}));
    assert_eq!(s, 400);
    assert!(body.contains("Done"), "{body}");
    assert_eq!(post("/_sim/comments/nope/complete", json!({})).0, 404);
    // Inspection.
    wait_deliveries(&sim, 3);
    let all = get(b, "", "/_sim/comments").json();
    assert_eq!(all[0]["author"], "Ada");
    assert_eq!(all[0]["timecode"], "00:00:03:12");
    assert_eq!(get(b, "", "/_sim/webhooks").json()[0]["name"], "h");
    assert!(
        get(b, "", "/_sim/deliveries")
            .json()
            .as_array()
            .unwrap()
            .len()
            >= 3
    );
}
