//! A bad config stops the binary before it does anything, with exit code 2 and one line on
//! stderr that names the key and what is wrong.

mod common;

use common::Sandbox;
use common::SpawnExt;
use serde_json::{json, Value};

fn set(config: &mut Value, path: &str, v: Value) {
    let mut parts: Vec<&str> = path.split('.').collect();
    let last = parts.pop().unwrap();
    let mut cur = config;
    for p in parts {
        cur = cur
            .as_object_mut()
            .unwrap()
            .entry(p)
            .or_insert_with(|| json!({}));
    }
    cur.as_object_mut().unwrap().insert(last.into(), v);
}

fn remove(config: &mut Value, section: &str, key: &str) {
    config[section].as_object_mut().unwrap().remove(key);
}

#[test]
fn each_kind_of_bad_config_exits_2_and_names_the_key() {
    let sandbox = Sandbox::new("config-errors");
    // (what is wrong, how to break a good config, the key stderr must name, a word it must say)
    type Breaker = fn(&mut Value);
    let cases: Vec<(&str, Breaker, &str, &str)> = vec![
        (
            "wrong type",
            |c| set(c, "watch.settle_secs", json!("abc")),
            "watch.settle_secs",
            "expected a number, found \"abc\"",
        ),
        (
            "unknown key",
            |c| set(c, "watch.setle_secs", json!(3)),
            "watch.setle_secs",
            "unknown key",
        ),
        (
            "unknown section",
            |c| set(c, "watchh", json!({})),
            "watchh",
            "unknown key",
        ),
        (
            "missing required",
            |c| remove(c, "watch", "root"),
            "watch.root",
            "required",
        ),
        (
            "missing folder",
            |c| set(c, "watch.root", json!("nope")),
            "watch.root",
            "nope",
        ),
        (
            "missing id for run",
            |c| remove(c, "frameio", "project_id"),
            "frameio.project_id",
            "required",
        ),
        (
            "bad address",
            |c| set(c, "serve.listen", json!("localhost:80:80")),
            "serve.listen",
            "address",
        ),
        (
            "bad glob",
            |c| set(c, "watch.include", json!(["*.mov", "[abc"])),
            "watch.include[1]",
            "unclosed",
        ),
        (
            "bad template",
            |c| set(c, "layout.pattern", json!("{seq}{shot}.mov")),
            "layout.pattern",
            "touch",
        ),
        (
            "folder placeholder not in pattern",
            |c| {
                set(c, "layout.pattern", json!("{seq}_{shot}.mov"));
                set(c, "layout.folders", json!("{seq}/{version}"));
            },
            "layout.folders",
            "{version}",
        ),
        (
            "stacking versions without a version in the pattern",
            |c| {
                set(c, "layout.pattern", json!("{seq}_{shot}.mov"));
                set(c, "layout.stack_versions", json!(true));
            },
            "layout.stack_versions",
            "{version}",
        ),
        (
            "token rule",
            |c| set(c, "dashboard.listen", json!("0.0.0.0:8080")),
            "dashboard.token",
            "loopback",
        ),
        (
            "named tunnel without url",
            |c| set(c, "tunnel.mode", json!("named")),
            "tunnel.public_url",
            "named",
        ),
        (
            "bad choice",
            |c| set(c, "frameio.upload", json!("fast")),
            "frameio.upload",
            "\"auto\"",
        ),
        (
            "out of range",
            |c| set(c, "upload.concurrency", json!(0)),
            "upload.concurrency",
            "from 1",
        ),
        (
            "bad url",
            |c| set(c, "frameio.api_base", json!("api.frame.io")),
            "frameio.api_base",
            "URL",
        ),
    ];
    for (what, breaker, key, word) in cases {
        let mut config = sandbox.base_config();
        breaker(&mut config);
        let path = sandbox.write_config(&config);
        let out = sandbox
            .postflow()
            .arg("run")
            .arg(&path)
            .output_retrying()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{what}: exit code; stderr: {stderr}"
        );
        let expected_prefix = format!("{}: {key}: ", path.display());
        assert!(
            stderr.starts_with(&expected_prefix) && stderr.contains(word),
            "{what}: stderr should start with {expected_prefix:?} and say {word:?}, got {stderr:?}"
        );
        assert_eq!(
            stderr.lines().count(),
            1,
            "{what}: one line, got {stderr:?}"
        );
        assert!(!sandbox.state_dir().exists(), "{what}: nothing was created");
    }
}

/// The base config turned into two projects, `a` in `show-a` and `b` in `show-b` (folders of
/// the sandbox), with `change` applied to the list.
fn two_projects(config: &mut Value, change: fn(&mut Vec<Value>)) {
    config["watch"].as_object_mut().unwrap().remove("root");
    config["frameio"]
        .as_object_mut()
        .unwrap()
        .remove("project_id");
    let mut projects = vec![
        json!({ "name": "a", "root": "show-a", "project_id": "p-a" }),
        json!({ "name": "b", "root": "show-b", "project_id": "p-b" }),
    ];
    change(&mut projects);
    config["projects"] = Value::Array(projects);
}

#[test]
fn each_kind_of_bad_projects_list_exits_2_and_names_the_key() {
    let sandbox = Sandbox::new("config-errors-projects");
    for dir in ["show-a", "show-b", "show-a/nested", "Show-C"] {
        std::fs::create_dir_all(sandbox.dir.join(dir)).unwrap();
    }
    type Breaker = fn(&mut Value);
    let cases: Vec<(&str, Breaker, &str, &str)> = vec![
        (
            "duplicate names",
            |c| two_projects(c, |p| p[1]["name"] = json!("a")),
            "projects[1].name",
            "already the name of projects[0]",
        ),
        (
            "bad name",
            |c| two_projects(c, |p| p[0]["name"] = json!("show a")),
            "projects[0].name",
            "letters, digits",
        ),
        (
            "no name",
            |c| two_projects(c, |p| p[1].as_object_mut().unwrap().clear()),
            "projects[1].name",
            "required",
        ),
        (
            "a root inside another",
            |c| two_projects(c, |p| p[1]["root"] = json!("show-a/nested")),
            "projects[1].root",
            "overlaps projects[0].root",
        ),
        (
            "the same root twice, spelled differently",
            |c| two_projects(c, |p| p[1]["root"] = json!("show-a/nested/..")),
            "projects[1].root",
            "overlaps",
        ),
        (
            "no root",
            |c| {
                two_projects(c, |p| {
                    p[1].as_object_mut().unwrap().remove("root");
                })
            },
            "projects[1].root",
            "required",
        ),
        (
            "no project_id",
            |c| {
                two_projects(c, |p| {
                    p[0].as_object_mut().unwrap().remove("project_id");
                })
            },
            "projects[0].project_id",
            "required",
        ),
        (
            "unknown key in an entry",
            |c| two_projects(c, |p| p[0]["folders"] = json!("x")),
            "projects[0].folders",
            "did you mean \"folder\"",
        ),
        (
            "a bad layout in an entry",
            |c| two_projects(c, |p| p[1]["layout"] = json!({ "folders": "{seq}" })),
            "projects[1].layout.folders",
            "needs layout.pattern",
        ),
        (
            "projects with watch.root",
            |c| {
                two_projects(c, |_| {});
                c["watch"]["root"] = json!("watch");
            },
            "watch.root",
            "must not be set with `projects`",
        ),
        (
            "projects with frameio.project_id",
            |c| {
                two_projects(c, |_| {});
                c["frameio"]["project_id"] = json!("p");
            },
            "frameio.project_id",
            "must not be set with `projects`",
        ),
        (
            "projects with frameio.folder",
            |c| {
                two_projects(c, |_| {});
                c["frameio"]["folder"] = json!("Dailies");
            },
            "frameio.folder",
            "must not be set with `projects`",
        ),
        (
            "not a list",
            |c| {
                two_projects(c, |_| {});
                c["projects"] = json!({ "a": {} });
            },
            "projects",
            "expected a list",
        ),
    ];
    for (what, breaker, key, word) in cases {
        let mut config = sandbox.base_config();
        breaker(&mut config);
        let path = sandbox.write_config(&config);
        let out = sandbox
            .postflow()
            .arg("run")
            .arg(&path)
            .output_retrying()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{what}: exit code; stderr: {stderr}"
        );
        let expected_prefix = format!("{}: {key}: ", path.display());
        assert!(
            stderr.starts_with(&expected_prefix) && stderr.contains(word),
            "{what}: stderr should start with {expected_prefix:?} and say {word:?}, got {stderr:?}"
        );
        assert!(!sandbox.state_dir().exists(), "{what}: nothing was created");
    }
    // Roots that differ only in case are one folder where case is ignored (Windows, macOS),
    // and two folders elsewhere.
    let mut config = sandbox.base_config();
    two_projects(&mut config, |p| p[1]["root"] = json!("Show-C"));
    config["projects"][0]["root"] = json!("show-c");
    std::fs::create_dir_all(sandbox.dir.join("show-c")).unwrap();
    let path = sandbox.write_config(&config);
    let out = sandbox
        .postflow()
        .arg("check")
        .arg(&path)
        .output_retrying()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let refused = stderr.contains("projects[1].root: ") && stderr.contains("overlaps");
    assert_eq!(
        refused,
        cfg!(any(windows, target_os = "macos")),
        "case-folded roots: {stderr}"
    );
}

#[test]
fn invalid_json_names_the_line_and_column() {
    let sandbox = Sandbox::new("config-json");
    let path = sandbox.dir.join("config.json");
    std::fs::write(&path, "{\n  \"watch\": { \"root\": \"watch\", }\n}\n").unwrap();
    let out = sandbox.postflow().arg(&path).output_retrying().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains("line 2, column"), "{stderr}");
}

#[test]
fn a_missing_config_file_is_a_usage_error() {
    let sandbox = Sandbox::new("config-missing");
    let out = sandbox
        .postflow()
        .arg("nothere.json")
        .output_retrying()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothere.json: cannot read"));
}

#[test]
fn bad_usage_exits_2_and_says_what_to_type() {
    let sandbox = Sandbox::new("usage");
    for args in [
        &[][..],
        &["run"][..],
        &["frobnicate", "x"][..],
        &["--bogus"][..],
    ] {
        let out = sandbox.postflow().args(args).output_retrying().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("postflow --help"),
            "{args:?}"
        );
    }
    let out = sandbox.postflow().arg("--help").output_retrying().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("postflow run CONFIG") && help.contains("postflow check CONFIG"));
}

#[test]
fn a_config_holding_a_secret_readable_by_others_gets_a_warning() {
    let sandbox = Sandbox::new("config-perms");
    let path = sandbox.write_config(&sandbox.base_config());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    // Windows: read for Everyone (Wine keeps no ACLs, and reads a fresh file's 0644 mode as
    // that already; its icacls does nothing).
    #[cfg(windows)]
    {
        let body = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, body).unwrap();
        let _ = std::process::Command::new("icacls")
            .arg(&path)
            .args(["/grant", "*S-1-1-0:R"])
            .output_retrying();
    }
    let out = sandbox
        .postflow()
        .arg("check")
        .arg(&path)
        .output_retrying()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let fix = if cfg!(windows) { "icacls" } else { "chmod 600" };
    assert!(stdout.contains(fix), "{stdout}");
    assert!(
        !stdout.contains("test-secret"),
        "the secret itself is never printed"
    );
}
