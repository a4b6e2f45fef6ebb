//! The log file of a postflow with no console (the Windows service): `postflow.log`, moved to
//! `postflow.log.1` when the next line would take it past the size limit (`.1` to `.2` and so
//! on, the oldest beyond `keep` removed), so the disk never fills however long it runs.
//!
//! Logging must never stop the program: a line that cannot be written (disk full, the folder
//! gone, a share that went away) is dropped, and the file is tried again a little later. The
//! writer always reports success to the logger and never waits.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The size at which the service's log is rotated.
pub const LIMIT: u64 = 10 * 1024 * 1024;
/// How many rotated files are kept beside the current one.
pub const KEEP: usize = 5;
/// After a failure, lines are dropped for this long before the file is tried again, so a
/// broken disk costs one failed open per interval, not one per line.
const RETRY_AFTER: Duration = Duration::from_secs(10);

/// A log file rotated by size; give it to env_logger as `Target::Pipe`.
pub struct LogFile {
    path: PathBuf,
    limit: u64,
    keep: usize,
    /// The open file and how many bytes it holds; `None` until opened or after a failure.
    file: Option<(File, u64)>,
    /// While set and in the future, lines are dropped without touching the disk.
    retry_at: Option<Instant>,
}

impl LogFile {
    /// A writer for `path` (its folder is created on the first line), rotated at `limit` bytes
    /// with `keep` old files.
    pub fn new(path: &Path, limit: u64, keep: usize) -> LogFile {
        LogFile {
            path: path.to_path_buf(),
            limit,
            keep,
            file: None,
            retry_at: None,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `postflow.log.N`.
    fn rotated(&self, n: usize) -> PathBuf {
        let mut name = self.path.clone().into_os_string();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    fn open(&self) -> io::Result<(File, u64)> {
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        let len = file.metadata()?.len();
        Ok((file, len))
    }

    /// Shifts `.N` to `.N+1` (the oldest is overwritten, so exactly `keep` remain) and the
    /// current file to `.1`. The file is closed first: Windows does not rename an open file.
    fn rotate(&mut self) -> io::Result<()> {
        self.file = None;
        for n in (1..self.keep).rev() {
            let from = self.rotated(n);
            if from.exists() {
                std::fs::rename(&from, self.rotated(n + 1))?;
            }
        }
        if self.keep == 0 {
            std::fs::remove_file(&self.path)
        } else {
            std::fs::rename(&self.path, self.rotated(1))
        }
    }

    /// Writes one line (env_logger hands over one record per call), rotating first when it
    /// would not fit.
    fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        if self.file.is_none() {
            self.file = Some(self.open()?);
        }
        let size = self.file.as_ref().map_or(0, |(_, size)| *size);
        // A line longer than the limit still goes into a file of its own.
        if size > 0 && size + line.len() as u64 > self.limit {
            self.rotate()?;
            self.file = Some(self.open()?);
        }
        let Some((file, size)) = self.file.as_mut() else {
            return Err(io::Error::other("log file not open"));
        };
        file.write_all(line)?;
        *size += line.len() as u64;
        Ok(())
    }
}

impl Write for LogFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.retry_at.is_some_and(|at| Instant::now() < at) {
            return Ok(buf.len());
        }
        self.retry_at = None;
        if self.write_line(buf).is_err() {
            // Dropped: there is nowhere to report it, and the program must go on.
            self.file = None;
            self.retry_at = Some(Instant::now() + RETRY_AFTER);
        }
        Ok(buf.len())
    }

    /// Lines go straight to the file (no buffer of ours), so there is nothing to flush; the
    /// OS writes them out even if the process is killed right after.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("postflow-logfile-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap_or_default()
    }

    #[test]
    fn lines_go_to_the_file_in_a_folder_made_on_the_first_line() {
        let dir = dir("first");
        let mut log = LogFile::new(&dir.join("logs/postflow.log"), 1000, 5);
        log.write_all(b"one\n").unwrap();
        log.write_all(b"two\n").unwrap();
        assert_eq!(read(&dir.join("logs/postflow.log")), "one\ntwo\n");
        drop(log); // Windows removes no folder holding an open file
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_line_that_would_pass_the_limit_starts_a_new_file() {
        let dir = dir("rotate");
        let path = dir.join("postflow.log");
        let mut log = LogFile::new(&path, 10, 5);
        log.write_all(b"aaaa\n").unwrap();
        log.write_all(b"bbbb\n").unwrap(); // exactly 10 bytes: still fits
        log.write_all(b"cccc\n").unwrap();
        assert_eq!(read(&log.rotated(1)), "aaaa\nbbbb\n");
        assert_eq!(read(&path), "cccc\n");
        drop(log); // Windows removes no folder holding an open file
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn exactly_five_old_files_are_kept_newest_first() {
        let dir = dir("keep");
        let path = dir.join("postflow.log");
        let mut log = LogFile::new(&path, 6, 5);
        for n in 0..9 {
            log.write_all(format!("line{n}\n").as_bytes()).unwrap();
        }
        // Each line fills a file: line8 is current, line7 … line3 are .1 … .5.
        assert_eq!(read(&path), "line8\n");
        for (n, line) in (1..=5).zip((3..=7).rev()) {
            assert_eq!(read(&log.rotated(n)), format!("line{line}\n"));
        }
        assert!(!log.rotated(6).exists());
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 6);
        drop(log); // Windows removes no folder holding an open file
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_log_that_cannot_be_written_drops_lines_and_tries_again_later() {
        let dir = dir("fail");
        std::fs::create_dir_all(&dir).unwrap();
        // The log's folder is a file: nothing can be written there.
        let blocker = dir.join("logs");
        std::fs::write(&blocker, "not a folder").unwrap();
        let mut log = LogFile::new(&blocker.join("postflow.log"), 1000, 5);
        let started = Instant::now();
        log.write_all(b"lost\n").unwrap();
        log.write_all(b"lost too\n").unwrap();
        log.flush().unwrap();
        assert!(started.elapsed() < Duration::from_secs(1), "never waits");
        assert!(log.retry_at.is_some(), "waits before trying the disk again");

        // The problem goes away; once the retry time has come, lines arrive again.
        std::fs::remove_file(&blocker).unwrap();
        log.write_all(b"still dropped\n").unwrap();
        log.retry_at = Some(Instant::now());
        log.write_all(b"back\n").unwrap();
        assert_eq!(read(&blocker.join("postflow.log")), "back\n");
        drop(log); // Windows removes no folder holding an open file
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
