//! The state dir: created on start, and locked so that only one `run` uses it.
//!
//! The lock is an OS lock on `<state_dir>/lock` (see `lockfile`: `flock` on Unix, a byte range
//! past the data on Windows), held for the life of the process. The kernel releases it when the
//! process dies, however it dies (`kill -9` included), so a stale lock file never blocks a
//! restart. The file holds the owner's pid, readable while locked, so a second instance can say
//! who is running.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// A locked state dir. Dropping it releases the lock.
#[derive(Debug)]
pub struct StateDir {
    path: PathBuf,
    _lock: File,
}

#[derive(Debug)]
pub enum LockError {
    /// Another process holds the lock; its pid when the file says so.
    AlreadyRunning(Option<u32>),
    /// The dir could not be created or the lock file opened.
    Io(PathBuf, io::Error),
}

impl std::fmt::Display for LockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LockError::AlreadyRunning(Some(pid)) => write!(f, "already running (pid {pid})"),
            LockError::AlreadyRunning(None) => write!(f, "already running"),
            LockError::Io(path, e) => write!(f, "state dir {}: {e}", path.display()),
        }
    }
}

impl StateDir {
    /// Creates the dir if needed and takes the lock without waiting.
    pub fn lock(path: &Path) -> Result<StateDir, LockError> {
        let io_err = |p: &Path, e| LockError::Io(p.to_path_buf(), e);
        std::fs::create_dir_all(path).map_err(|e| io_err(path, e))?;
        let lock_path = path.join("lock");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| io_err(&lock_path, e))?;
        match crate::lockfile::try_lock(&file) {
            Ok(true) => {}
            Ok(false) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(LockError::AlreadyRunning(text.trim().parse().ok()));
            }
            Err(e) => return Err(io_err(&lock_path, e)),
        }
        let write_pid = |f: &mut File| -> io::Result<()> {
            f.set_len(0)?;
            f.seek(SeekFrom::Start(0))?;
            writeln!(f, "{}", std::process::id())?;
            f.sync_all()
        };
        // The lock keeps a second instance out; the pid only lets it say who runs. A full
        // state dir (no block left for the pid) must not keep postflow from starting: it then
        // says so on /health and holds what it cannot record until space comes back.
        if let Err(e) = write_pid(&mut file) {
            log::warn!(
                "cannot write this instance's pid into {}: {e} (a second instance will say \
                 \"already running\" without it)",
                lock_path.display()
            );
        }
        Ok(StateDir {
            path: path.to_path_buf(),
            _lock: file,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn ledger_path(&self) -> PathBuf {
        self.path.join("jobs")
    }

    /// Whether the dir takes new data right now (for `/health`); see [`probe_writable`].
    pub fn probe_writable(&self) -> io::Result<()> {
        probe_writable(&self.path)
    }
}

/// Whether `dir` takes new data right now: a small file is created, written, synced and
/// removed. Bytes, not just a name: a full disk still creates an empty file (it needs no
/// block), and only a write says `No space left on device`.
pub fn probe_writable(dir: &Path) -> io::Result<()> {
    // A name of its own per probe: `/health` and the queue probe at the same time, and on
    // Windows a file another probe is deleting cannot be created again until its last handle
    // closes ("Access is denied"), which would read as a state dir that cannot be written.
    static PROBES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let probe = dir.join(format!(".write-probe-{}-{n}", std::process::id()));
    let written = File::create(&probe).and_then(|mut f| {
        f.write_all(&[b'.'; 4096])?;
        f.sync_all()
    });
    let _ = std::fs::remove_file(&probe);
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_instance_on_the_same_state_dir_says_which_pid_runs() {
        let dir = crate::testutil::TempDir::new();
        let first = StateDir::lock(&dir.0).unwrap();
        match StateDir::lock(&dir.0) {
            Err(e @ LockError::AlreadyRunning(_)) => assert_eq!(
                e.to_string(),
                format!("already running (pid {})", std::process::id())
            ),
            other => panic!("the second lock was not refused: {other:?}"),
        }
        drop(first);
        assert!(
            StateDir::lock(&dir.0).is_ok(),
            "the lock is free once the first instance is gone"
        );
    }
}
