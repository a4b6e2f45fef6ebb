//! The `frameio-sim` binary prints what a postflow config needs and serves until SIGTERM.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

#[test]
fn the_binary_prints_its_settings_serves_and_stops_on_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_frameio-sim"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--token-lifetime",
            "3",
            "--fetch",
            "ranges",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut settings = std::collections::HashMap::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line == "ready" {
            break;
        }
        let (k, v) = line.split_once('=').expect("key=value lines");
        settings.insert(k.to_string(), v.to_string());
    }
    for k in [
        "base_url",
        "client_id",
        "client_secret",
        "redirect_uri",
        "account_id",
        "project_id",
    ] {
        assert!(settings.contains_key(k), "missing {k}");
    }
    let base = &settings["base_url"];
    let info = common::get(base, "", "/_sim/info").json();
    assert_eq!(info["project_id"], settings["project_id"].as_str());
    let faults = common::get(base, "", "/_sim/faults").json();
    assert_eq!(faults["access_token_lifetime_secs"], 3);
    assert_eq!(faults["fetch_mode"], "ranges");

    #[cfg(unix)]
    {
        let st = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
        let status = child.wait().unwrap();
        assert!(status.success(), "exit 0 on SIGTERM: {status:?}");
    }
    #[cfg(not(unix))]
    {
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

#[test]
fn bad_options_exit_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_frameio-sim"))
        .args(["--fetch", "sideways"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--fetch"));
}
