//! The `sim` crate's binaries, for tests of the real postflow binary. Cargo only provides
//! `CARGO_BIN_EXE_*` for the package under test, so the stand-ins are built here, once per
//! test process, into the same target directory.
//!
//! Except on Windows: there the tests run under Wine in CI, and a Wine process cannot wait for
//! the (Linux) cargo it would start, so `make test-windows` builds the sim binaries first and
//! the tests take them from beside `postflow.exe`.

use std::path::PathBuf;
use std::sync::OnceLock;

/// The `fake-cloudflared` stand-in (built on first use).
pub fn fake_cloudflared() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| sim_bin("fake-cloudflared")).clone()
}

/// target/<profile>/postflow -> target/<profile>, where cargo puts the sim binaries too.
fn profile_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_postflow"))
        .parent()
        .expect("the postflow binary has a directory")
        .to_path_buf()
}

#[cfg(not(windows))]
fn sim_bin(bin: &str) -> PathBuf {
    let profile_dir = profile_dir();
    let target_dir = profile_dir.parent().expect("a target directory");
    let mut cargo = std::process::Command::new(env!("CARGO"));
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

#[cfg(windows)]
fn sim_bin(bin: &str) -> PathBuf {
    let path = profile_dir().join(format!("{bin}.exe"));
    assert!(
        path.is_file(),
        "{} is missing: on Windows the tests do not build the sim binaries themselves; \
         build them first (`cargo build --workspace --bins` for this target, as \
         `make test-windows` does)",
        path.display()
    );
    path
}
