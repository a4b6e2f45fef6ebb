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
        // The workspace's binaries, not `-p sim --bin`: alone, sim's dependencies resolve
        // with other features than for the workspace's tests, and cargo would build them
        // (and sim) a second time, in the middle of the run; this way it is a no-op after
        // `cargo test --workspace` or `make test`.
        .args(["build", "--quiet", "--workspace", "--bins", "--target-dir"])
        .arg(target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    // Without what cargo sets for a test process: ring's build script reruns when
    // CARGO_MANIFEST_DIR changes, so this build would rebuild ring and all that depends on it
    // (rustls, ureq, sim, postflow) here, and the next `cargo` from a shell all of it again.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if [
            "CARGO_MANIFEST_",
            "CARGO_PKG_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
        ]
        .iter()
        .any(|prefix| key.starts_with(prefix))
            || ["CARGO_PRIMARY_PACKAGE", "CARGO_TARGET_TMPDIR", "OUT_DIR"].contains(&&*key)
        {
            cargo.env_remove(&*key);
        }
    }
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cargo.arg("--release");
    }
    let status = cargo.status().expect("run cargo build for the sim crate");
    assert!(
        status.success(),
        "cargo build --workspace --bins failed (for {bin})"
    );
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
