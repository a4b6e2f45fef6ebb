//! Tells `postflow --version` which commit and target it was built from, so a bug report
//! from an ingest machine names the exact build. Without git (a source tarball, a machine
//! without the git binary) the commit is "unknown" and the build still succeeds.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    // Only what is listed here reruns this script: without the line, cargo would rerun it
    // (and rebuild the crate) on every change to any file of the package.
    println!("cargo:rerun-if-changed=build.rs");
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let commit = match git_commit(&manifest_dir) {
        Some(commit) => {
            for path in files_that_move_head(&manifest_dir) {
                println!("cargo:rerun-if-changed={}", path.display());
            }
            commit
        }
        None => "unknown".to_string(),
    };
    println!("cargo:rustc-env=POSTFLOW_COMMIT={commit}");
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".to_string());
    println!("cargo:rustc-env=POSTFLOW_TARGET={target}");
}

/// Runs git in `dir` and returns its trimmed output, or None if git is missing or fails.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    Some(text.trim().to_string())
}

/// The short hash of HEAD, but only when the package is the top of its own checkout: sources
/// unpacked inside some other repository must not claim that repository's commit.
fn git_commit(manifest_dir: &Path) -> Option<String> {
    let top = PathBuf::from(git(manifest_dir, &["rev-parse", "--show-toplevel"])?);
    if top.canonicalize().ok()? != manifest_dir.canonicalize().ok()? {
        return None;
    }
    git(manifest_dir, &["rev-parse", "--short=7", "HEAD"])
}

/// The files a commit, checkout or reset rewrites: HEAD itself, HEAD's reflog, and the branch
/// HEAD points at, loose or, after `git pack-refs`, in packed-refs (a commit then writes a
/// loose ref again, which the reflog catches). Asked through `--git-path` because in a
/// worktree HEAD and the refs live in different directories. Only existing files are listed:
/// cargo reruns a script every build while a file it watches is missing.
fn files_that_move_head(dir: &Path) -> Vec<PathBuf> {
    let git_path = |name: &str| {
        git(dir, &["rev-parse", "--git-path", name])
            .map(|path| dir.join(path))
            .filter(|path| path.is_file())
    };
    let mut paths: Vec<PathBuf> = ["HEAD", "logs/HEAD"]
        .into_iter()
        .filter_map(git_path)
        .collect();
    if let Some(branch) = git(dir, &["symbolic-ref", "-q", "HEAD"]) {
        paths.extend(git_path(&branch).or_else(|| git_path("packed-refs")));
    }
    paths
}
