//! `postflow status` against a running instance, and without one.

mod common;

use std::time::Duration;

use common::SpawnExt;
use common::{signal, wait_exit, wait_until, Sandbox};
use serde_json::json;

/// A port that was free a moment ago (the instance must listen where `status` looks).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn status_prints_the_running_instance_summary_and_exit_1_when_none_runs() {
    let sandbox = Sandbox::new("status-cmd");
    let mut config = sandbox.base_config();
    config["dashboard"] = json!({ "listen": format!("127.0.0.1:{}", free_port()) });
    let path = sandbox.write_config(&config);

    let none = sandbox
        .postflow()
        .arg("status")
        .arg(&path)
        .output_retrying()
        .unwrap();
    assert_eq!(none.status.code(), Some(1));
    let text = String::from_utf8_lossy(&none.stdout);
    assert!(text.contains("postflow is not running"), "{text}");

    let mut child = sandbox.spawn_run(&path);
    sandbox.wait_for_lock_owner(child.id());
    let mut out = String::new();
    wait_until(Duration::from_secs(15), "status to answer", || {
        let o = sandbox
            .postflow()
            .arg("status")
            .arg(&path)
            .output_retrying()
            .unwrap();
        out = String::from_utf8_lossy(&o.stdout).into_owned();
        o.status.success()
    });
    assert!(out.starts_with("postflow "), "{out}");
    assert!(out.contains("queue: "), "{out}");
    assert!(out.contains("watcher"), "{out}");

    signal(child.id(), "TERM");
    assert!(wait_exit(&mut child, Duration::from_secs(10)).success());
}
