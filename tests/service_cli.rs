//! `postflow stop` and `postflow service` with the real binary: stopping the instance that
//! runs on a config without a console, and the service definition `service install` prints
//! on Linux (on Windows it registers with the SCM, which a test must not touch).

mod common;

#[cfg(target_os = "linux")]
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use common::SpawnExt;
use common::{wait_exit, Sandbox};

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn postflow_stop_stops_the_running_instance_in_order_and_it_exits_0() {
    let sandbox = Sandbox::new("stop-running");
    let config = sandbox.write_config(&sandbox.base_config());
    let mut run = sandbox.spawn_run(&config);
    sandbox.wait_for_lock_owner(run.id());

    let stop = sandbox
        .postflow()
        .arg("stop")
        .arg(&config)
        .output_retrying()
        .unwrap();
    assert_eq!(stop.status.code(), Some(0), "{}", stderr(&stop));
    assert_eq!(stdout(&stop).trim(), format!("stopped (pid {})", run.id()));

    // `stop` returns once the lock is free, which the run releases as its last step.
    assert_eq!(wait_exit(&mut run, Duration::from_secs(5)).code(), Some(0));
    let log = sandbox.log();
    assert!(log.contains("stopping ("), "{log}");
    assert!(log.contains("stopped"), "{log}");
}

#[test]
fn postflow_stop_with_nothing_running_says_so_and_exits_0() {
    let sandbox = Sandbox::new("stop-idle");
    let config = sandbox.write_config(&sandbox.base_config());

    // Never started: no state dir at all.
    let out = sandbox
        .postflow()
        .arg("stop")
        .arg(&config)
        .output_retrying()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "not running");

    // Started and stopped: the lock file stays, the lock does not.
    let mut run = sandbox.spawn_run(&config);
    sandbox.wait_for_lock_owner(run.id());
    let first = sandbox
        .postflow()
        .arg("stop")
        .arg(&config)
        .output_retrying()
        .unwrap();
    assert_eq!(first.status.code(), Some(0));
    wait_exit(&mut run, Duration::from_secs(5));
    let again = sandbox
        .postflow()
        .arg("stop")
        .arg(&config)
        .output_retrying()
        .unwrap();
    assert_eq!(again.status.code(), Some(0));
    assert_eq!(stdout(&again).trim(), "not running");
}

#[cfg(target_os = "linux")]
#[test]
fn service_install_prints_a_systemd_unit_running_this_binary_on_the_absolute_config() {
    let sandbox = Sandbox::new("service-unit");
    sandbox.write_config(&sandbox.base_config());
    // A relative path, as typed: the unit must not depend on where it was typed.
    let out = sandbox
        .postflow()
        .args(["service", "install", "config.json"])
        .output_retrying()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let unit = stdout(&out);
    let canonical = |p: &Path| std::fs::canonicalize(p).unwrap();
    let exe = canonical(Path::new(env!("CARGO_BIN_EXE_postflow")));
    let config = canonical(&sandbox.dir.join("config.json"));
    let exec_start = format!("ExecStart={} run {}", exe.display(), config.display());
    assert!(
        unit.lines().any(|l| l == exec_start),
        "no `{exec_start}` in:\n{unit}"
    );
    // How to put it in place and start it is part of the text.
    assert!(
        unit.contains("sudo systemctl enable --now postflow"),
        "{unit}"
    );
    assert!(
        unit.contains("[Install]\nWantedBy=multi-user.target"),
        "{unit}"
    );

    let out = sandbox
        .postflow()
        .args(["service", "uninstall"])
        .output_retrying()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("sudo systemctl disable --now postflow"));
}

#[test]
fn service_install_refuses_a_missing_or_unrunnable_config_with_exit_2() {
    let sandbox = Sandbox::new("service-bad");
    let missing = sandbox
        .postflow()
        .args(["service", "install", "nowhere.json"])
        .output_retrying()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        stderr(&missing).contains("nowhere.json"),
        "{}",
        stderr(&missing)
    );

    let mut config = sandbox.base_config();
    config["frameio"]["project_id"] = "".into();
    let path = sandbox.write_config(&config);
    let unrunnable = sandbox
        .postflow()
        .args(["service", "install"])
        .arg(&path)
        .output_retrying()
        .unwrap();
    assert_eq!(unrunnable.status.code(), Some(2));
    assert!(
        stderr(&unrunnable).contains("frameio.project_id"),
        "{}",
        stderr(&unrunnable)
    );
}

#[test]
fn service_usage_mistakes_exit_2_saying_what_to_type() {
    let sandbox = Sandbox::new("service-usage");
    for (args, says) in [
        (&["service"][..], "postflow service install config.json"),
        (
            &["service", "install"],
            "postflow service install config.json",
        ),
        (&["service", "frobnicate"], "install or uninstall"),
        (&["service", "uninstall", "x.json"], "takes no arguments"),
        (&["stop"], "postflow stop config.json"),
    ] {
        let out = sandbox.postflow().args(args).output_retrying().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
    }
}

#[cfg(not(windows))]
#[test]
fn service_run_is_for_the_windows_service_manager_only() {
    let sandbox = Sandbox::new("service-run");
    let config = sandbox.write_config(&sandbox.base_config());
    let out = sandbox
        .postflow()
        .args(["service", "run"])
        .arg(&config)
        .output_retrying()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("postflow run config.json"),
        "{}",
        stderr(&out)
    );
}
