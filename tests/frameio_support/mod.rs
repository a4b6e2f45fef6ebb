//! Helpers for the Frame.io tests: a simulator, a config pointing at it, tokens as if
//! `postflow auth` had run, and the browser's part of the sign-in. Plumbing only.
#![allow(dead_code)] // each test file uses a different subset

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use postflow::config::Config;
use postflow::frameio::{Api, Auth};
use serde_json::{json, Value};
use sim::{FrameIo, Options};

use crate::common::{Sandbox, SpawnExt};

/// A simulator with the default options changed by `change`.
pub fn start_sim(change: impl FnOnce(&mut Options)) -> FrameIo {
    let mut options = Options::default();
    change(&mut options);
    FrameIo::start(options).expect("start the simulator")
}

/// The sandbox's base config, with the credential, ids and URLs of `sim`.
pub fn config_for(sandbox: &Sandbox, sim: &FrameIo) -> Value {
    let mut config = sandbox.base_config();
    config["frameio"] = json!({
        "client_id": sim.client_id(),
        "client_secret": sim.client_secret(),
        "redirect_uri": sim.redirect_uri(),
        "account_id": sim.account_id(),
        "project_id": sim.project_id(),
        "api_base": sim.base_url(),
        "ims_base": sim.base_url(),
    });
    config
}

/// Writes `config` and loads it as `run` would.
pub fn load(sandbox: &Sandbox, config: &Value) -> Config {
    Config::load(&sandbox.write_config(config)).expect("valid config")
}

/// Writes `tokens.json` as `postflow auth` would, with the sim's freshly minted pair;
/// `expires_in` overrides the lifetime written (e.g. 0 for a token postflow must refresh).
/// Returns the refresh token.
pub fn seed_tokens(sim: &FrameIo, state_dir: &Path, expires_in: Option<u64>) -> String {
    let t = sim.login_tokens();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let file = json!({
        "access_token": t.access_token,
        "refresh_token": t.refresh_token,
        "expires_at": now + expires_in.unwrap_or(t.expires_in),
    });
    std::fs::create_dir_all(state_dir).unwrap();
    let path = state_dir.join("tokens.json");
    std::fs::write(&path, serde_json::to_vec(&file).unwrap()).unwrap();
    crate::common::owner_only(&path);
    t.refresh_token
}

/// `tokens.json` as a JSON value.
pub fn saved_tokens(state_dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(state_dir.join("tokens.json")).unwrap()).unwrap()
}

/// The token owner and a client for `config`.
pub fn client(config: &Config) -> (Auth, Api) {
    let auth = Auth::new(&config.frameio, &config.state_dir, None);
    let api = Api::new(&config.frameio, auth.clone());
    (auth, api)
}

/// What the browser does: open the authorize URL, sign in (the sim approves at once), and
/// land on the redirect URI. Returns that final address (the 302's Location).
pub fn browser_sign_in(authorize_url: &str) -> String {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .max_redirects(0)
        .http_status_as_error(false)
        .build()
        .into();
    let resp = agent
        .get(authorize_url)
        .call()
        .expect("reach the authorize URL");
    assert_eq!(resp.status().as_u16(), 302, "IMS authorize should redirect");
    resp.headers()
        .get("location")
        .expect("a Location header")
        .to_str()
        .unwrap()
        .to_string()
}

/// A refresh grant sent straight to the sim's IMS; returns (status, `error` field).
pub fn try_refresh(sim: &FrameIo, refresh_token: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let body = postflow::frameio::form_encode(&[
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token),
        ("client_id", sim.client_id()),
        ("client_secret", sim.client_secret()),
    ]);
    let mut resp = agent
        .post(&format!("{}/ims/token/v3", sim.base_url()))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .send(body.as_bytes())
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    (status, v["error"].as_str().unwrap_or("").to_string())
}

/// Token requests the sim answered so far.
pub fn token_requests(sim: &FrameIo) -> u64 {
    sim.request_count("ims_token", None)
}

/// Runs `postflow auth config.json` in the sandbox, does the browser's part with the URL it
/// prints, and pastes `paste(final address)` on its stdin. Returns (status, stdout, stderr).
pub fn run_auth(
    sandbox: &Sandbox,
    paste: impl FnOnce(String) -> String,
) -> (std::process::ExitStatus, String, String) {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::process::Stdio;
    let mut child = sandbox
        .postflow()
        .arg("auth")
        .arg(sandbox.dir.join("config.json"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn_retrying()
        .expect("start postflow auth");
    sandbox.track(&child);
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    let url = loop {
        let mut line = String::new();
        if out.read_line(&mut line).unwrap() == 0 {
            let _ = child.kill();
            panic!("postflow auth printed no authorize URL: {seen}");
        }
        seen.push_str(&line);
        if line.contains("/ims/authorize/v2") {
            break line.trim().to_string();
        }
    };
    let location = browser_sign_in(&url);
    writeln!(child.stdin.take().unwrap(), "{}", paste(location)).unwrap();
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (child.wait().unwrap(), seen + &rest, err)
}
