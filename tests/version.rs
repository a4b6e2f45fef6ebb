//! `postflow --version` names the exact build, so a bug report from an ingest machine can be
//! matched to the source: `postflow 0.1.0 (abc1234, x86_64-unknown-linux-gnu)`.

mod common;

use std::path::Path;
use std::process::Command;

use common::Sandbox;
use common::SpawnExt;

/// What the version line must name as the commit: HEAD of this checkout, or "unknown" when
/// the sources are not a git checkout of their own (a tarball) or git is not installed.
/// None when this test cannot run git although the build could: under Wine the build ran git
/// on Linux, but a Windows program finds no git.exe.
fn expected_commit() -> Option<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output_retrying()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    if cfg!(windows) && git(&["--version"]).is_none() {
        return None;
    }
    let is_own_checkout = git(&["rev-parse", "--show-toplevel"])
        .is_some_and(|top| Path::new(&top).canonicalize().ok() == dir.canonicalize().ok());
    Some(match is_own_checkout {
        true => git(&["rev-parse", "--short=7", "HEAD"]).expect("git rev-parse HEAD"),
        false => "unknown".to_string(),
    })
}

#[test]
fn the_version_line_names_the_version_the_commit_and_the_target() {
    let sandbox = Sandbox::new("version");
    let out = sandbox
        .postflow()
        .arg("--version")
        .output_retrying()
        .unwrap();
    assert!(out.status.success());
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();

    let inside = line
        .strip_prefix(&format!("postflow {} (", env!("CARGO_PKG_VERSION")))
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("not `postflow VERSION (COMMIT, TARGET)`: {line:?}"));
    let (commit, target) = inside
        .split_once(", ")
        .unwrap_or_else(|| panic!("no `COMMIT, TARGET` in {line:?}"));
    match expected_commit() {
        Some(expected) => assert_eq!(commit, expected, "{line:?}"),
        None => assert!(
            commit == "unknown"
                || (commit.len() == 7 && commit.chars().all(|c| c.is_ascii_hexdigit())),
            "a short commit hash or `unknown`: {line:?}"
        ),
    }
    assert!(
        target.starts_with(&format!("{}-", std::env::consts::ARCH)),
        "the target triple of this machine's architecture: {line:?}"
    );
    #[cfg(target_os = "linux")]
    assert!(target.contains("-linux-"), "{line:?}");
    #[cfg(windows)]
    assert!(target.contains("-windows-"), "{line:?}");

    for flag in ["-V", "version"] {
        let out = sandbox.postflow().arg(flag).output_retrying().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), line, "{flag}");
    }
}
