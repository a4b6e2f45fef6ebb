//! The release archives' layout (`scripts/dist.sh package` and `package-windows`, the last
//! steps of `make dist`): what a studio unpacks on an ingest machine. The cross-builds
//! themselves are too slow for the test suite and need PyPI or mingw-w64; `make dist` checks
//! its binaries (glibc symbol versions, size; the Windows one's target under Wine).
// Linux only: scripts/dist.sh is the packager, run on Linux (bash, GNU tar, sha256sum,
// python3); a Windows build of this test could not run it.
#![cfg(target_os = "linux")]

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::Sandbox;
use common::SpawnExt;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// Stands in for the release binary: the packager asks it for its version, nothing more.
fn fake_binary(sandbox: &Sandbox, version_line: &str) -> PathBuf {
    let path = sandbox.dir.join("postflow-built");
    std::fs::write(&path, format!("#!/bin/sh\necho '{version_line}'\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn package(sandbox: &Sandbox, binary: &Path, out: &str) -> Output {
    Command::new(Path::new(REPO).join("scripts/dist.sh"))
        .args(["package".as_ref(), binary.as_os_str(), out.as_ref()])
        .current_dir(&sandbox.dir)
        .output_retrying()
        .unwrap()
}

/// `scripts/dist.sh package-windows`, with the stand-in binary asked its version by `sh`
/// instead of Wine.
fn package_windows(sandbox: &Sandbox, exe: &Path, out: &str) -> Output {
    Command::new(Path::new(REPO).join("scripts/dist.sh"))
        .args(["package-windows".as_ref(), exe.as_os_str(), out.as_ref()])
        .env("RUN_EXE", "sh")
        .current_dir(&sandbox.dir)
        .output_retrying()
        .unwrap()
}

/// The names inside a zip, as a user's unzip lists them.
fn zip_names(zip: &Path) -> BTreeSet<String> {
    let script = "import sys, zipfile; print('\\n'.join(zipfile.ZipFile(sys.argv[1]).namelist()))";
    let listed = run(
        zip.parent().unwrap(),
        "python3",
        &["-c", script, zip.to_str().unwrap()],
    );
    listed.lines().map(str::to_string).collect()
}

fn run(dir: &Path, program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output_retrying()
        .unwrap();
    assert!(out.status.success(), "{program} {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_tarball_holds_the_binary_the_readme_the_manual_the_example_config_the_license_and_contrib() {
    let sandbox = Sandbox::new("dist-layout");
    let binary = fake_binary(
        &sandbox,
        "postflow 9.8.7 (abc1234, x86_64-unknown-linux-gnu)",
    );
    let out = package(&sandbox, &binary, "out");
    assert!(out.status.success(), "{out:?}");
    let out_dir = sandbox.dir.join("out");
    let tarball = out_dir.join("postflow-9.8.7-x86_64-linux.tar.gz");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        tarball.display().to_string(),
        "the version in the name is the one the binary prints"
    );

    // The download verifies with the checksum file beside it, as a user would check it.
    let checked = run(
        &out_dir,
        "sha256sum",
        &["-c", "postflow-9.8.7-x86_64-linux.tar.gz.sha256"],
    );
    assert_eq!(checked.trim(), "postflow-9.8.7-x86_64-linux.tar.gz: OK");

    // One folder, holding exactly what the README's install section promises.
    let top = "postflow-9.8.7-x86_64-linux";
    let listed: BTreeSet<String> = run(
        &out_dir,
        "tar",
        &["-tzf", "postflow-9.8.7-x86_64-linux.tar.gz"],
    )
    .lines()
    .map(|l| l.trim_end_matches('/').to_string())
    .collect();
    let mut expected: BTreeSet<String> = [
        "",
        "/postflow",
        "/README.md",
        "/config.json",
        "/LICENSE",
        "/contrib",
        "/docs",
    ]
    .iter()
    .map(|p| format!("{top}{p}"))
    .collect();
    // The README links into docs/: an ingest machine is often offline.
    for dir in ["contrib", "docs"] {
        for entry in std::fs::read_dir(Path::new(REPO).join(dir)).unwrap() {
            let name = entry.unwrap().file_name();
            expected.insert(format!("{top}/{dir}/{}", name.to_string_lossy()));
        }
    }
    assert_eq!(listed, expected);

    // Unpacked, the files are the repository's, and the binary can be run as `./postflow`.
    run(
        &out_dir,
        "tar",
        &["-xzf", "postflow-9.8.7-x86_64-linux.tar.gz"],
    );
    let unpacked = out_dir.join(top);
    for file in [
        "README.md",
        "config.json",
        "LICENSE",
        "contrib/postflow.service",
        "docs/guide.md",
        "docs/screenshot.png",
    ] {
        assert_eq!(
            std::fs::read(unpacked.join(file)).unwrap(),
            std::fs::read(Path::new(REPO).join(file)).unwrap(),
            "{file}"
        );
    }
    let version = run(&unpacked, "./postflow", &["--version"]);
    assert_eq!(
        version.trim(),
        "postflow 9.8.7 (abc1234, x86_64-unknown-linux-gnu)"
    );

    // Packaging the same binary again gives the same bytes, so a checksum can be compared.
    let first = std::fs::read(&tarball).unwrap();
    let again = package(&sandbox, &binary, "again");
    assert!(again.status.success(), "{again:?}");
    let second =
        std::fs::read(sandbox.dir.join("again/postflow-9.8.7-x86_64-linux.tar.gz")).unwrap();
    assert!(first == second, "two packagings of one binary differ");
}

#[test]
fn a_binary_that_does_not_say_its_version_is_refused() {
    let sandbox = Sandbox::new("dist-no-version");
    let binary = fake_binary(&sandbox, "something else");
    let out = package(&sandbox, &binary, "out");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("does not print `postflow VERSION"),
        "{stderr}"
    );
    assert!(
        !sandbox.dir.join("out").exists(),
        "nothing half-made is left"
    );
}

#[test]
fn the_windows_zip_holds_the_exe_the_readme_the_manual_the_example_config_and_the_license() {
    let sandbox = Sandbox::new("dist-zip");
    let exe = fake_binary(&sandbox, "postflow 9.8.7 (abc1234, x86_64-pc-windows-gnu)");
    let out = package_windows(&sandbox, &exe, "out");
    assert!(out.status.success(), "{out:?}");
    let out_dir = sandbox.dir.join("out");
    let zip = out_dir.join("postflow-9.8.7-x86_64-windows.zip");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        zip.display().to_string(),
        "the version in the name is the one the binary prints"
    );
    let checked = run(
        &out_dir,
        "sha256sum",
        &["-c", "postflow-9.8.7-x86_64-windows.zip.sha256"],
    );
    assert_eq!(checked.trim(), "postflow-9.8.7-x86_64-windows.zip: OK");

    // One folder, holding what the install guide's Windows section promises (no systemd
    // unit or launchd agent: contrib/ is for Linux and macOS).
    let top = "postflow-9.8.7-x86_64-windows";
    let mut expected: BTreeSet<String> = ["postflow.exe", "README.md", "config.json", "LICENSE"]
        .iter()
        .map(|f| format!("{top}/{f}"))
        .collect();
    for entry in std::fs::read_dir(Path::new(REPO).join("docs")).unwrap() {
        let name = entry.unwrap().file_name();
        expected.insert(format!("{top}/docs/{}", name.to_string_lossy()));
    }
    assert_eq!(zip_names(&zip), expected);

    // Packaging the same binary again gives the same bytes, so a checksum can be compared.
    let again = package_windows(&sandbox, &exe, "again");
    assert!(again.status.success(), "{again:?}");
    let second =
        std::fs::read(sandbox.dir.join("again/postflow-9.8.7-x86_64-windows.zip")).unwrap();
    assert!(
        std::fs::read(&zip).unwrap() == second,
        "two packagings of one binary differ"
    );
}

#[test]
fn a_binary_not_built_for_windows_is_refused_for_the_zip() {
    let sandbox = Sandbox::new("dist-zip-linux");
    let exe = fake_binary(
        &sandbox,
        "postflow 9.8.7 (abc1234, x86_64-unknown-linux-gnu)",
    );
    let out = package_windows(&sandbox, &exe, "out");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not built for x86_64-pc-windows-gnu"),
        "{stderr}"
    );
    assert!(
        !sandbox.dir.join("out").exists(),
        "nothing half-made is left"
    );
}
