//! The `sim` crate's binaries, for tests of the real postflow binary. Cargo only provides
//! `CARGO_BIN_EXE_*` for the package under test, so the stand-ins are built here, once per
//! test process, into the same target directory.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The `fake-cloudflared` stand-in (built on first use).
pub fn fake_cloudflared() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| build("fake-cloudflared")).clone()
}

fn build(bin: &str) -> PathBuf {
    // target/<profile>/postflow -> target/<profile>
    let profile_dir = PathBuf::from(env!("CARGO_BIN_EXE_postflow"))
        .parent()
        .expect("the postflow binary has a directory")
        .to_path_buf();
    let target_dir = profile_dir.parent().expect("a target directory");
    let mut cargo = Command::new(env!("CARGO"));
    cargo
        .args([
            "build",
            "--quiet",
            "-p",
            "sim",
            "--bin",
            bin,
            "--target-dir",
        ])
        .arg(target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cargo.arg("--release");
    }
    let status = cargo.status().expect("run cargo build for the sim crate");
    assert!(status.success(), "cargo build -p sim --bin {bin} failed");
    let path = profile_dir.join(format!("{bin}{}", std::env::consts::EXE_SUFFIX));
    assert!(path.is_file(), "{} was not built", path.display());
    path
}
