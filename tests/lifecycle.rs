//! Starting and stopping the real binary as cron and a watchdog would.

mod common;

use std::time::Duration;

use common::SpawnExt;
use common::{signal, wait_exit, Sandbox};

#[test]
fn a_second_run_on_the_same_state_dir_says_already_running_and_exits_0() {
    let sandbox = Sandbox::new("lock");
    let config = sandbox.write_config(&sandbox.base_config());
    let mut first = sandbox.spawn_run(&config);
    sandbox.wait_for_lock_owner(first.id());

    let second = sandbox.postflow().arg(&config).output_retrying().unwrap();
    assert_eq!(second.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&second.stdout).trim(),
        format!("already running (pid {})", first.id())
    );

    // kill -9 leaves the lock file behind, but not the lock: a new run starts.
    signal(first.id(), "KILL");
    wait_exit(&mut first, Duration::from_secs(5));
    let mut third = sandbox.spawn_run(&config);
    sandbox.wait_for_lock_owner(third.id());
    signal(third.id(), "TERM");
    assert!(wait_exit(&mut third, Duration::from_secs(5)).success());
}

#[test]
fn sigterm_stops_a_running_instance_with_exit_0_within_5_seconds() {
    let sandbox = Sandbox::new("sigterm");
    let config = sandbox.write_config(&sandbox.base_config());
    let mut child = sandbox.spawn_run(&config);
    sandbox.wait_for_lock_owner(child.id());
    signal(child.id(), "TERM");
    let status = wait_exit(&mut child, Duration::from_secs(5));
    assert_eq!(status.code(), Some(0));
    let log = sandbox.log();
    assert!(log.contains(common::STOPPING), "{log}");
    assert!(log.contains("stopped"), "{log}");
}

#[test]
fn ctrl_c_stops_it_too() {
    let sandbox = Sandbox::new("sigint");
    let config = sandbox.write_config(&sandbox.base_config());
    let mut child = sandbox.spawn_run(&config);
    sandbox.wait_for_lock_owner(child.id());
    signal(child.id(), "INT");
    assert_eq!(
        wait_exit(&mut child, Duration::from_secs(5)).code(),
        Some(0)
    );
}

#[test]
fn the_state_dir_and_ledger_are_created_beside_the_config() {
    let sandbox = Sandbox::new("statedir");
    let config = sandbox.write_config(&sandbox.base_config());
    let mut child = sandbox.spawn_run(&config);
    sandbox.wait_for_lock_owner(child.id());
    let ledger = sandbox.state_dir().join("jobs");
    common::wait_until(Duration::from_secs(10), "the ledger file", || {
        ledger.is_file()
    });
    signal(child.id(), "TERM");
    assert!(wait_exit(&mut child, Duration::from_secs(5)).success());
}

#[test]
fn an_unwritable_state_dir_is_a_runtime_failure_with_a_clear_message() {
    let sandbox = Sandbox::new("statedir-bad");
    let mut config = sandbox.base_config();
    // A regular file where the state dir should be.
    std::fs::write(sandbox.dir.join("blocker"), b"").unwrap();
    config["state_dir"] = "blocker/state".into();
    let path = sandbox.write_config(&config);
    let out = sandbox.postflow().arg(&path).output_retrying().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("state dir") && stderr.contains("blocker"),
        "{stderr}"
    );
}
