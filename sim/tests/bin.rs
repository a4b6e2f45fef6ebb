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

#[test]
fn each_extra_project_gets_a_line_with_its_id_before_ready() {
    // A staging dir of our own: the process is killed, so it cannot remove one of its own.
    let data_dir = std::env::temp_dir().join(format!("sim-bin-projects-{}", std::process::id()));
    let mut child = Command::new(env!("CARGO_BIN_EXE_frameio-sim"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--extra-accounts",
            "1",
            "--project",
            "Show B",
            "--project",
            "Show C@1",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut keys = Vec::new();
    let mut settings = std::collections::HashMap::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if line == "ready" {
            break;
        }
        let (k, v) = line.split_once('=').expect("key=value lines");
        keys.push(k.to_string());
        settings.insert(k.to_string(), v.to_string());
    }
    assert_eq!(
        keys[keys.len() - 2..],
        ["project.Show B", "project.Show C"],
        "after the existing lines: {keys:?}"
    );
    let info = common::get(&settings["base_url"], "", "/_sim/info").json();
    child.kill().unwrap();
    child.wait().unwrap();
    std::fs::remove_dir_all(&data_dir).unwrap();
    assert_eq!(info["project_id"], settings["project_id"].as_str());
    assert_eq!(
        info["projects"][1]["id"],
        settings["project.Show B"].as_str()
    );
    assert_eq!(
        info["projects"][2]["id"],
        settings["project.Show C"].as_str()
    );
    assert_ne!(info["projects"][2]["account_id"], info["account_id"]);
}

#[test]
fn a_project_in_a_missing_account_exits_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_frameio-sim"))
        .args(["--listen", "127.0.0.1:0", "--project", "Show C@1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Show C") && err.contains("extra"), "{err}");
}
