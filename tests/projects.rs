//! Several projects in one postflow (issue 21), on the real binary against the simulated
//! Frame.io: each file once in its own project and folder, the small project not starved by
//! the big one, restarts and config changes that upload nothing twice, and a state dir
//! written by the release before projects existed.

mod common;
mod frameio_support;
mod upload_support;

use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use upload_support::{make_file, stop, Rig};

/// The files of the old-release fixture: (path, size, seed, mtime in unix seconds).
const OLD_RELEASE_FILES: &[(&str, u64, u32, u64)] = &[
    ("A001_C002.mov", 4_000, 1, 1_700_000_001),
    ("day1/B003.wav", 3_000, 2, 1_700_000_002),
    ("day1/notes.pdf", 2_000, 3, 1_700_000_003),
];

fn old_release_fixture() -> &'static Path {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/old-release"
    ))
}

/// Writes the old-release files into `root`, with the bytes and mtimes the fixture's ledger
/// recorded.
fn make_old_release_files(root: &Path) {
    for (rel, size, seed, mtime) in OLD_RELEASE_FILES {
        let path = root.join(rel);
        make_file(&path, *size, *seed);
        let f = std::fs::File::options().write(true).open(&path).unwrap();
        f.set_modified(UNIX_EPOCH + Duration::from_secs(*mtime))
            .unwrap();
    }
}

/// Not a test: how `tests/fixtures/old-release/jobs` was made. Runs the release before
/// projects existed (`OLD_POSTFLOW=/path/to/postflow`, e.g. a build of `main` before issue
/// 21) against the simulator until it has uploaded the fixture's files, then copies its
/// ledger into the fixture.
#[test]
#[ignore = "makes the fixture; needs OLD_POSTFLOW"]
fn make_the_old_release_fixture() {
    let old = std::env::var("OLD_POSTFLOW").expect("OLD_POSTFLOW: the old release's binary");
    let rig = Rig::new("projects-make-fixture", "local", |_| {});
    make_old_release_files(&rig.sandbox.watch_root());
    let config = rig.sandbox.write_config(&rig.config);
    let mut cmd = std::process::Command::new(old);
    cmd.current_dir(&rig.sandbox.dir).arg("run").arg(&config);
    let child = upload_support::spawn_logged(&mut cmd, &rig.sandbox.log_path());
    rig.sandbox.track(&child);
    common::wait_until(Duration::from_secs(60), "the old release's uploads", || {
        rig.sandbox.log().matches("upload done: ").count() >= OLD_RELEASE_FILES.len()
    });
    stop(&rig, child);
    let out = old_release_fixture();
    std::fs::create_dir_all(out).unwrap();
    std::fs::copy(rig.sandbox.state_dir().join("jobs"), out.join("jobs")).unwrap();
}
