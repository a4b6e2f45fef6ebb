//! The REST API, `/health` and `/metrics`, and the dashboard's guards (Host, Origin, token,
//! body size), on real sockets.

mod common;
mod dashboard_support;

use common::SpawnExt;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dashboard_support::{raw_request, Options, Pipeline};
use postflow::dashboard::{AuthStatus, FrameioLogin};
use postflow::queue::{AttemptUpdate, FailureKind};
use serde_json::json;

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn each_route_answers_with_its_json_shape() {
    let p = Pipeline::start("api-shapes");
    let id = p.add_file("C003.mov", 10);

    let status = p.get("/api/status");
    assert_eq!(status.status, 200);
    assert_eq!(
        status.header("content-type").as_deref(),
        Some("application/json")
    );
    let s = status.json();
    for key in [
        "version",
        "components",
        "queue",
        "jobs",
        "transfers",
        "log",
        "viewers",
    ] {
        assert!(s.get(key).is_some(), "/api/status has {key}: {s}");
    }
    assert_eq!(s["jobs"][0]["id"], id);
    assert_eq!(s["jobs"][0]["name"], "C003.mov");
    assert_eq!(s["queue"]["counts"]["queued"], 1);

    let stats = p.get("/api/queue/stats").json();
    assert_eq!(stats["counts"]["queued"], 1);
    assert_eq!(stats["total"], 1);
    assert_eq!(stats["paused"], false);

    let jobs = p.get("/api/jobs?state=queued&limit=5").json();
    assert_eq!(jobs["total"], 1);
    assert_eq!(jobs["jobs"][0]["path"], "C003.mov");
    assert_eq!(jobs["jobs"][0]["size"], 10);
    assert_eq!(p.get("/api/jobs?state=done").json()["total"], 0);
    assert_eq!(p.get("/api/jobs?state=bogus").status, 400);
    assert_eq!(p.get("/api/jobs?limit=0").status, 400);

    let health = p.get("/health");
    assert_eq!(health.status, 200);
    assert_eq!(health.json()["status"], "ok");
    assert!(health.json()["components"]["state_dir"].is_object());

    let page = p.get("/");
    assert_eq!(page.status, 200);
    assert!(page.text().contains("<title>postflow</title>"));
    assert!(page.header("content-security-policy").is_some());

    let outside = p.request(
        "POST",
        "/api/jobs",
        &[],
        json!({"paths": ["/etc/passwd"]}).to_string().as_bytes(),
    );
    assert_eq!(outside.json()["results"][0]["error"], "outside watch.root");
    assert_eq!(p.post("/api/jobs").status, 400);

    // Without a Frame.io client wired in, login routes say so.
    assert_eq!(p.get("/oauth/start").status, 503);
    assert_eq!(p.get("/nope").status, 404);
    assert_eq!(p.request("DELETE", "/api/status", &[], b"").status, 405);
}

#[test]
fn retry_and_pause_resume_through_the_api_change_the_queue() {
    let p = Pipeline::start("api-control");
    let id = p.add_file("D004.mov", 10);
    let job = p.take_job();
    p.report(AttemptUpdate::Started {
        id: job.id,
        mode: "local",
    });
    p.report(AttemptUpdate::Failed {
        id,
        error: "Frame.io said: no".into(),
        kind: FailureKind::Permanent,
    });
    wait_for("failed", || {
        p.get("/api/jobs?state=failed").json()["total"] == 1
    });

    // Paused: the retried job is queued but not handed out.
    let paused = p.post("/api/pause");
    assert_eq!(paused.status, 200);
    assert_eq!(paused.json()["paused"], true);
    let r = p.post(&format!("/api/jobs/{id}/retry"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(p.get("/api/queue/stats").json()["counts"]["queued"], 1);
    assert!(p.work.recv_timeout(Duration::from_millis(500)).is_err());
    assert_eq!(
        p.get("/api/status").json()["components"]["queue"]["state"],
        "off"
    );

    let resumed = p.post("/api/resume");
    assert_eq!(resumed.json()["paused"], false);
    assert_eq!(p.take_job().id, id, "handed out again after resume");

    assert_eq!(p.post("/api/jobs/999/retry").status, 409);
    assert_eq!(p.post("/api/jobs/abc/retry").status, 404);
    let all = p.post("/api/retry-failed");
    assert_eq!(all.json()["retried"], 0);
}

#[test]
fn a_post_from_a_foreign_origin_or_host_gets_403() {
    let p = Pipeline::start("api-origin");
    let host = p.addr.to_string();
    let evil = raw_request(
        p.addr,
        "POST",
        "/api/pause",
        &[("Host", &host), ("Origin", "http://evil.example")],
        b"",
    );
    assert_eq!(evil.status, 403);
    assert_eq!(p.get("/api/queue/stats").json()["paused"], false);

    let own = format!("http://{host}");
    let ok = raw_request(
        p.addr,
        "POST",
        "/api/pause",
        &[("Host", &host), ("Origin", &own)],
        b"",
    );
    assert_eq!(ok.status, 200);
    let localhost = format!("localhost:{}", p.addr.port());
    let ok = raw_request(p.addr, "GET", "/api/status", &[("Host", &localhost)], b"");
    assert_eq!(ok.status, 200);

    // DNS rebinding: a page on evil.example resolving to 127.0.0.1.
    let port = p.addr.port();
    let rebound = format!("evil.example:{port}");
    let r = raw_request(p.addr, "GET", "/api/status", &[("Host", &rebound)], b"");
    assert_eq!(r.status, 403);
    // A WebSocket from another page.
    let ws = dashboard_support::Viewer::try_connect(p.addr, &[("Origin", "http://evil.example")]);
    assert!(matches!(ws, Err(tungstenite::Error::Http(r)) if r.status() == 403));
}

#[test]
fn request_bodies_are_size_limited() {
    let p = Pipeline::start("api-body");
    let big = vec![b'x'; 65 * 1024];
    assert_eq!(p.request("POST", "/api/jobs", &[], &big).status, 413);
}

#[test]
fn a_public_listen_without_a_token_refuses_to_start() {
    let sandbox = common::Sandbox::new("api-public-no-token");
    let mut config = sandbox.base_config();
    config["dashboard"] = json!({ "listen": "0.0.0.0:0" });
    let path = sandbox.write_config(&config);
    let out = sandbox
        .postflow()
        .arg("run")
        .arg(&path)
        .output_retrying()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("dashboard.token"));
}

#[test]
fn a_public_listen_with_a_token_answers_401_without_it() {
    const TOKEN: &str = "correct-horse-battery-staple";
    let p = Pipeline::start_with(
        "api-token",
        Options {
            dashboard: json!({ "listen": "0.0.0.0:0", "token": TOKEN }),
            ..Options::default()
        },
    );
    let host = format!("ingest.local:{}", p.addr.port());
    let get = |path: &str, extra: &[(&str, &str)]| {
        let mut h = vec![("Host", host.as_str())];
        h.extend_from_slice(extra);
        raw_request(p.addr, "GET", path, &h, b"")
    };
    assert_eq!(get("/api/status", &[]).status, 401);
    assert_eq!(get("/", &[]).status, 401);
    assert_eq!(get("/metrics", &[]).status, 401);
    assert_eq!(
        get(
            "/api/status",
            &[("Authorization", "Bearer wrong-wrong-wrong")]
        )
        .status,
        401
    );
    let bearer = format!("Bearer {TOKEN}");
    assert_eq!(
        get("/api/status", &[("Authorization", &bearer)]).status,
        200
    );
    assert_eq!(get("/health", &[]).status, 200, "/health stays open");

    let login = get(&format!("/?token={TOKEN}"), &[]);
    assert_eq!(login.status, 303);
    let cookie = login.header("set-cookie").unwrap();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
    let pair = cookie.split(';').next().unwrap().to_string();
    assert_eq!(get("/", &[("Cookie", &pair)]).status, 200);
    assert_eq!(get("/?token=nope", &[]).status, 401);
}

#[test]
fn health_turns_503_when_the_state_dir_is_not_writable() {
    let p = Pipeline::start("api-health");
    assert_eq!(p.get("/health").status, 200);
    let dir = &p.state_dir;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555)).unwrap();
    }
    // Root writes through permissions: then take the directory away instead.
    let moved = dir.with_extension("moved");
    let still_writable = std::fs::write(dir.join(".probe"), b"x").is_ok();
    if still_writable {
        let _ = std::fs::remove_file(dir.join(".probe"));
        std::fs::rename(dir, &moved).unwrap();
        std::fs::write(dir, b"not a directory").unwrap();
    }
    let h = p.get("/health");
    assert_eq!(h.status, 503, "{}", h.text());
    assert_eq!(h.json()["status"], "degraded");
    assert_eq!(h.json()["components"]["state_dir"]["state"], "down");
    if still_writable {
        std::fs::remove_file(dir).unwrap();
        std::fs::rename(&moved, dir).unwrap();
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    assert_eq!(
        p.get("/health").status,
        200,
        "back when it is writable again"
    );
}

/// A Prometheus text-format parser, strict enough to catch what scrapers reject: every sample
/// belongs to a family declared by `# TYPE`, names and labels are well formed, values parse.
fn parse_prometheus(text: &str) -> BTreeMap<String, f64> {
    let mut types = BTreeMap::new();
    let mut samples = BTreeMap::new();
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            && !n.starts_with(|c: char| c.is_ascii_digit())
    };
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(name_ok(name), "{line}");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line}"
            );
            assert!(
                types.insert(name.to_string(), kind).is_none(),
                "TYPE twice: {line}"
            );
            continue;
        }
        if line.starts_with("# HELP ") || line.is_empty() {
            continue;
        }
        assert!(!line.starts_with('#'), "unknown comment: {line}");
        let (series, value) = line.rsplit_once(' ').expect("series value");
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("value in {line}"));
        let name = series.split('{').next().unwrap();
        assert!(name_ok(name), "{line}");
        assert!(types.contains_key(name), "sample before its TYPE: {line}");
        if let Some(labels) = series.strip_prefix(name).filter(|l| !l.is_empty()) {
            let inner = labels
                .strip_prefix('{')
                .and_then(|l| l.strip_suffix('}'))
                .expect("{labels}");
            for pair in inner.split(',') {
                let (k, v) = pair.split_once('=').expect("label=value");
                assert!(name_ok(k), "{line}");
                assert!(
                    v.starts_with('"') && v.ends_with('"') && v.len() >= 2,
                    "{line}"
                );
            }
        }
        assert!(
            samples.insert(series.to_string(), value).is_none(),
            "twice: {line}"
        );
    }
    samples
}

#[test]
fn metrics_parse_as_prometheus_text() {
    let p = Pipeline::start("api-metrics");
    p.add_file("E005.mov", 10);
    p.hub.publish(postflow::events::Event::Transfer {
        job: 1,
        covered: 600,
        total: 1000,
        bytes_per_sec: 1.0,
    });
    p.hub.publish(postflow::events::Event::AttemptEnded {
        job: 1,
        project: "default".into(),
        mode: "remote",
        ok: true,
    });
    p.hub.publish(postflow::events::Event::Component {
        name: "tunnel",
        state: postflow::events::ComponentState::Reconnecting,
        detail: "https://a-b-c.trycloudflare.com".into(),
    });
    std::thread::sleep(Duration::from_millis(200));
    let r = p.get("/metrics");
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let m = parse_prometheus(&r.text());
    assert_eq!(m[r#"postflow_jobs{project="default",state="queued"}"#], 1.0);
    assert_eq!(m[r#"postflow_jobs{project="default",state="done"}"#], 0.0);
    assert_eq!(
        m[r#"postflow_uploads_total{project="default",result="ok",mode="remote"}"#],
        1.0
    );
    assert_eq!(
        m[r#"postflow_uploads_total{project="default",result="error",mode="local"}"#],
        0.0
    );
    assert_eq!(m["postflow_served_bytes_total"], 600.0);
    assert_eq!(m["postflow_tunnel_up"], 0.0, "reconnecting is not ready");
    assert_eq!(m[r#"postflow_tunnel_state{state="reconnecting"}"#], 1.0);
    for other in ["starting", "up", "degraded", "down", "off"] {
        assert_eq!(
            m[format!(r#"postflow_tunnel_state{{state="{other}"}}"#).as_str()],
            0.0
        );
    }
    assert_eq!(m["postflow_auth_ok"], 0.0);
    let version = format!(
        r#"postflow_build_info{{version="{}"}}"#,
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(m[&version], 1.0);
}

/// Stands in for the Frame.io token owner: records what the dashboard hands it.
#[derive(Default)]
struct FakeLogin {
    completed: Mutex<Vec<String>>,
}

impl FrameioLogin for FakeLogin {
    fn status(&self) -> AuthStatus {
        let logged_in = !self.completed.lock().unwrap().is_empty();
        AuthStatus {
            logged_in,
            needs_login: (!logged_in).then(|| "no tokens saved yet".into()),
            account: Some("editor@example.com".into()),
            expires_at: Some(4_000_000_000),
        }
    }

    fn authorize_url(&self) -> Result<String, String> {
        Ok("https://ims.example/ims/authorize/v2?state=s1".into())
    }

    fn complete(&self, redirected: &str) -> Result<(), String> {
        if !redirected.contains("state=s1") {
            return Err("the state does not match: start again".into());
        }
        self.completed.lock().unwrap().push(redirected.to_string());
        Ok(())
    }
}

#[test]
fn connect_frameio_from_the_page() {
    let login = Arc::new(FakeLogin::default());
    let p = Pipeline::start_with(
        "api-oauth",
        Options {
            login: Some(login.clone()),
            ..Options::default()
        },
    );
    let start = p.get("/oauth/start");
    assert_eq!(start.status, 303);
    assert_eq!(
        start.header("location").as_deref(),
        Some("https://ims.example/ims/authorize/v2?state=s1")
    );

    let pasted = json!({ "url": "https://localhost/cb?code=abc&state=s1" }).to_string();
    let r = p.request("POST", "/oauth/code", &[], pasted.as_bytes());
    assert_eq!(r.status, 200, "{}", r.text());
    let wrong = p.request(
        "POST",
        "/oauth/code",
        &[],
        b"https://localhost/cb?code=abc&state=zz",
    );
    assert_eq!(wrong.status, 400);
    assert!(wrong.json()["error"].as_str().unwrap().contains("state"));

    let cb = p.get("/oauth/callback?code=xyz&state=s1");
    assert_eq!(cb.status, 303);
    let done = login.completed.lock().unwrap().clone();
    assert_eq!(done.len(), 2);
    assert!(done[1].contains("code=xyz"));

    let s = p.get("/api/status").json();
    assert_eq!(s["auth"]["logged_in"], true);
    assert_eq!(s["auth"]["account"], "editor@example.com");
    let m = parse_prometheus(&p.get("/metrics").text());
    assert_eq!(m["postflow_auth_ok"], 1.0);
    assert!(m["postflow_token_expiry_seconds"] > 0.0);
}

#[test]
fn health_is_degraded_until_frameio_is_signed_in() {
    let login = Arc::new(FakeLogin::default());
    let p = Pipeline::start_with(
        "api-health-login",
        Options {
            login: Some(login.clone()),
            ..Options::default()
        },
    );
    let h = p.get("/health");
    assert_eq!(h.status, 200, "a person is needed, not a restart");
    assert_eq!(h.json()["status"], "degraded");
    assert_eq!(h.json()["components"]["auth"]["state"], "down");
    assert!(h.json()["components"]["auth"]["detail"]
        .as_str()
        .unwrap()
        .contains("no tokens saved yet"));

    let pasted = json!({ "url": "https://localhost/cb?code=abc&state=s1" }).to_string();
    assert_eq!(
        p.request("POST", "/oauth/code", &[], pasted.as_bytes())
            .status,
        200
    );
    // The token owner announces the change, as frameio::Auth does.
    p.hub.publish(postflow::events::Event::AuthChanged(
        postflow::frameio::AuthState::Connected,
    ));
    wait_for("ok after the sign-in", || {
        p.get("/health").json()["status"] == "ok"
    });
    assert_eq!(p.get("/health").json()["components"]["auth"]["state"], "up");
}
