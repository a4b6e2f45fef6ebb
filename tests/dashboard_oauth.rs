//! "Connect Frame.io" from the page, on the real binary against the simulator's IMS: the
//! tokens land in the same store as `postflow auth`.

mod common;
mod dashboard_support;
mod frameio_support;

use std::time::Duration;

use common::{signal, wait_exit, wait_until, Sandbox};
use dashboard_support::raw_request;
use frameio_support::{browser_sign_in, config_for, saved_tokens, start_sim};
use serde_json::json;

#[test]
fn a_person_connects_frameio_by_pasting_the_address_the_browser_ended_on() {
    let sb = Sandbox::new("dash-oauth");
    let sim = start_sim(|_| {});
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = config_for(&sb, &sim);
    config["dashboard"] = json!({ "listen": format!("127.0.0.1:{port}") });
    let path = sb.write_config(&config);
    let mut run = sb.spawn_run(&path);
    sb.wait_for_lock_owner(run.id());
    let host = format!("127.0.0.1:{port}");
    let addr = host.parse().unwrap();
    let get = |p: &str| raw_request(addr, "GET", p, &[("Host", &host)], b"");
    wait_until(Duration::from_secs(15), "the dashboard", || {
        std::net::TcpStream::connect(addr).is_ok()
    });

    let status = get("/api/status").json();
    assert_eq!(status["auth"]["logged_in"], false, "{status}");
    assert_eq!(status["login_available"], true);
    // A first start without tokens needs a person: degraded (not 503, a restart would not
    // help), and the page says why.
    let health = get("/health");
    assert_eq!(health.status, 200, "{}", health.text());
    assert_eq!(health.json()["status"], "degraded", "{}", health.text());
    assert_eq!(status["components"]["auth"]["state"], "down", "{status}");

    let start = get("/oauth/start");
    assert_eq!(start.status, 303);
    let authorize = start.header("location").unwrap();
    assert!(authorize.contains("/ims/authorize/v2") && authorize.contains("state="));
    let ended_on = browser_sign_in(&authorize);

    let origin = format!("http://{host}");
    let body = json!({ "url": ended_on }).to_string();
    let r = raw_request(
        addr,
        "POST",
        "/oauth/code",
        &[("Host", &host), ("Origin", &origin)],
        body.as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(saved_tokens(&sb.state_dir())["refresh_token"].is_string());
    let status = get("/api/status").json();
    assert_eq!(status["auth"]["logged_in"], true, "{status}");
    assert!(status["auth"]["expires_at"].as_u64().unwrap() > 1_700_000_000);
    wait_until(
        Duration::from_secs(10),
        "/health ok after the sign-in",
        || get("/health").json()["status"] == "ok",
    );
    assert_eq!(
        get("/api/status").json()["components"]["auth"]["state"],
        "up"
    );

    // The same address a second time is refused: its state was used up.
    let again = raw_request(
        addr,
        "POST",
        "/oauth/code",
        &[("Host", &host)],
        body.as_bytes(),
    );
    assert_eq!(again.status, 400);

    signal(run.id(), "TERM");
    assert!(wait_exit(&mut run, Duration::from_secs(20)).success());
}
