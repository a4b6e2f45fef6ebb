//! Bytes sent per minute for the last 24 hours (`/api/throughput`'s `minutes`), kept in
//! `<state_dir>/throughput` across restarts.
//!
//! What counts: every file byte postflow sends out, local part PUTs (as the connection to S3
//! takes them, a part sent again counting again) and bytes the file server writes for `/f/`
//! links. Both add to [`WIRE_BYTES`], a process-wide counter like a metrics counter: adding is
//! one atomic add, so the pipeline never waits for the recorder. The `throughput` thread
//! moves the counter into the current minute every second and writes the minutes when they
//! changed, at most every [`SAVE_EVERY`].
//!
//! The file is small and bounded (at most 1440 lines of `<unix minute> <bytes>`) and is
//! replaced atomically (`private_file::write_atomic`: temp file, fsync, rename), so a crash
//! at any instant leaves the previous file or the new one. A file that cannot be read, or
//! lines in it that make no sense, cost those minutes and a warning, never a start. A state
//! dir that is full or read-only costs nothing but a warning (once): the minutes stay in
//! memory and are written once it can be written again. Losing at most the last
//! [`SAVE_EVERY`] of a `kill -9` is the price of not writing on every byte.
//!
//! The per-day totals of `/api/throughput` are not kept here: they come from the ledger's
//! history (`history.rs`), so they always equal what `/api/history` lists for the day.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError};

use crate::queue::now_ms;

/// File bytes sent out since the recorder last took them.
pub static WIRE_BYTES: AtomicU64 = AtomicU64::new(0);
/// The file in the state dir.
pub const FILE_NAME: &str = "throughput";
/// How often changed minutes are written (and so what a `kill -9` may lose).
pub const SAVE_EVERY: Duration = Duration::from_secs(2);
const MINUTE_MS: u64 = 60_000;
/// Minutes kept: 24 hours.
pub const KEPT_MINUTES: u64 = 24 * 60;

/// Counts `n` file bytes sent out now.
pub fn count_sent(n: u64) {
    WIRE_BYTES.fetch_add(n, Ordering::Relaxed);
}

/// Bytes per unix minute (`ms / 60 000`), the last [`KEPT_MINUTES`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Minutes {
    bytes: BTreeMap<u64, u64>,
}

impl Minutes {
    pub fn add(&mut self, now_ms: u64, n: u64) {
        if n > 0 {
            *self.bytes.entry(now_ms / MINUTE_MS).or_default() += n;
        }
    }

    /// Forgets minutes older than 24 hours before `now_ms`.
    pub fn prune(&mut self, now_ms: u64) {
        let first = (now_ms / MINUTE_MS).saturating_sub(KEPT_MINUTES - 1);
        self.bytes = self.bytes.split_off(&first);
    }

    /// The minutes with bytes in the 24 hours up to `now_ms`, oldest first: (minute start in
    /// unix ms, bytes).
    pub fn recent(&self, now_ms: u64) -> Vec<(u64, u64)> {
        let first = (now_ms / MINUTE_MS).saturating_sub(KEPT_MINUTES - 1);
        self.bytes
            .range(first..)
            .map(|(&m, &b)| (m * MINUTE_MS, b))
            .collect()
    }

    pub fn encode(&self) -> String {
        let mut out = String::from("# postflow: file bytes sent per minute (unix minute, bytes)\n");
        for (m, b) in &self.bytes {
            out.push_str(&format!("{m} {b}\n"));
        }
        out
    }

    /// Reads what `encode` wrote; returns the minutes and the number of lines skipped (a
    /// damaged file loses those lines, not the others).
    pub fn decode(text: &str) -> (Minutes, usize) {
        let mut minutes = Minutes::default();
        let mut bad = 0;
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let parsed = line
                .split_once(' ')
                .and_then(|(m, b)| Some((m.parse::<u64>().ok()?, b.parse::<u64>().ok()?)));
            match parsed {
                Some((m, b)) => *minutes.bytes.entry(m).or_default() += b,
                None => bad += 1,
            }
        }
        (minutes, bad)
    }
}

/// The minutes, shared by the recorder thread and the dashboard.
pub struct Throughput {
    /// `None`: kept in memory only (tests of the dashboard).
    path: Option<PathBuf>,
    state: Mutex<State>,
}

struct State {
    minutes: Minutes,
    /// Changed since the last write.
    dirty: bool,
    /// When the minutes were last written (unix ms).
    saved_ms: Option<u64>,
    /// The last write failed with this (said once).
    failing: Option<std::io::ErrorKind>,
}

impl Throughput {
    /// Reads `<state_dir>/throughput`; whatever cannot be read is a warning, never an error.
    pub fn open(state_dir: &Path) -> Throughput {
        let path = state_dir.join(FILE_NAME);
        remove_leftovers(state_dir);
        let minutes = match std::fs::read(&path) {
            Ok(bytes) => {
                let (minutes, bad) = Minutes::decode(&String::from_utf8_lossy(&bytes));
                if bad > 0 {
                    log::warn!(
                        "{}: {bad} damaged line(s) skipped (those minutes of the throughput \
                         chart are lost)",
                        path.display()
                    );
                }
                minutes
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Minutes::default(),
            Err(e) => {
                log::warn!("{}: {e}; the throughput chart starts empty", path.display());
                Minutes::default()
            }
        };
        Throughput::with(Some(path), minutes)
    }

    /// Minutes kept in memory only.
    pub fn in_memory() -> Throughput {
        Throughput::with(None, Minutes::default())
    }

    fn with(path: Option<PathBuf>, mut minutes: Minutes) -> Throughput {
        minutes.prune(now_ms());
        Throughput {
            path,
            state: Mutex::new(State {
                minutes,
                dirty: false,
                saved_ms: None,
                failing: None,
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Plain data; a panic while holding it ends the process anyway.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Moves the bytes counted since the last call into the minute of `now_ms`.
    pub fn collect(&self, now_ms: u64) {
        let n = WIRE_BYTES.swap(0, Ordering::Relaxed);
        self.add(now_ms, n);
    }

    /// Adds `n` bytes sent at `now_ms`.
    pub fn add(&self, now_ms: u64, n: u64) {
        if n > 0 {
            let mut s = self.state();
            s.minutes.add(now_ms, n);
            s.dirty = true;
        }
    }

    /// The minutes with bytes in the last 24 hours (minute start in unix ms, bytes), and when
    /// they were last written to the state dir.
    pub fn recent(&self, now_ms: u64) -> (Vec<(u64, u64)>, Option<u64>) {
        let s = self.state();
        (s.minutes.recent(now_ms), s.saved_ms)
    }

    /// Writes the minutes if they changed. A failure is said once (and again after a
    /// success): the minutes stay in memory for the next try.
    pub fn save(&self, now_ms: u64) {
        let Some(path) = &self.path else {
            return;
        };
        let text = {
            let mut s = self.state();
            if !s.dirty {
                return;
            }
            s.minutes.prune(now_ms);
            s.dirty = false;
            s.minutes.encode()
        };
        // Written without the lock: the dashboard never waits for a disk.
        let result = crate::private_file::write_atomic(path, text.as_bytes(), |_| Ok(()));
        let mut s = self.state();
        match result {
            Ok(()) => {
                if s.failing.take().is_some() {
                    log::info!("{}: written again", path.display());
                }
                s.saved_ms = Some(now_ms);
            }
            Err(e) => {
                s.dirty = true;
                if s.failing != Some(e.kind()) {
                    log::warn!(
                        "{}: cannot be written ({e}); the throughput chart is kept in memory \
                         and written when it can be",
                        path.display()
                    );
                    s.failing = Some(e.kind());
                }
            }
        }
    }
}

/// Temp files of writes a crash cut short (`.throughput.<pid>.<n>.tmp`).
fn remove_leftovers(state_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(state_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(".throughput.") && name.ends_with(".tmp") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// The `throughput` thread: counts into minutes every second, writes them every
/// [`SAVE_EVERY`] when they changed, and once more when `stop` closes.
pub fn run_recorder(store: std::sync::Arc<Throughput>, stop: Receiver<()>) {
    let mut last_save = now_ms();
    loop {
        let stopping = !matches!(
            stop.recv_timeout(Duration::from_secs(1)),
            Err(RecvTimeoutError::Timeout)
        );
        let now = now_ms();
        store.collect(now);
        if stopping || now.saturating_sub(last_save) >= SAVE_EVERY.as_millis() as u64 {
            store.save(now);
            last_save = now;
        }
        if stopping {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: u64 = 1_733_500_000_000 / MINUTE_MS * MINUTE_MS;

    #[test]
    fn bytes_land_in_their_minute_and_only_the_last_24_hours_are_kept() {
        let mut m = Minutes::default();
        m.add(T, 10);
        m.add(T + 59_999, 5);
        m.add(T + MINUTE_MS, 7);
        m.add(T, 0);
        assert_eq!(m.recent(T + MINUTE_MS), [(T, 15), (T + MINUTE_MS, 7)]);
        let day_later = T + KEPT_MINUTES * MINUTE_MS;
        assert_eq!(
            m.recent(day_later),
            [(T + MINUTE_MS, 7)],
            "24 h on, the first minute is gone"
        );
        m.prune(day_later);
        assert_eq!(m.bytes.len(), 1);
    }

    #[test]
    fn a_damaged_or_torn_file_keeps_its_good_lines() {
        let mut m = Minutes::default();
        m.add(T, 100);
        m.add(T + MINUTE_MS, 200);
        let text = m.encode();
        let torn = format!("{text}garbage\n{} 3", T / MINUTE_MS + 2);
        let torn = &torn[..torn.len() - 1];
        let (back, bad) = Minutes::decode(torn);
        assert_eq!(bad, 2, "the garbage line and the torn last one");
        assert_eq!(back, m);
    }

    #[test]
    fn minutes_survive_a_restart_and_a_torn_temp_file_is_ignored() {
        let dir = crate::testutil::TempDir::new();
        let store = Throughput::open(&dir.0);
        let now = now_ms();
        store.add(now, 1234);
        store.save(now);
        // A crash while writing the next version leaves a temp file beside it.
        let torn = dir.0.join(".throughput.999.0.tmp");
        std::fs::write(&torn, b"12 3").unwrap();
        let again = Throughput::open(&dir.0);
        assert_eq!(again.recent(now).0, [(now / MINUTE_MS * MINUTE_MS, 1234)]);
        assert!(!torn.exists(), "the leftover is removed");
    }

    #[test]
    fn an_unreadable_file_starts_empty_instead_of_stopping_the_start() {
        let dir = crate::testutil::TempDir::new();
        std::fs::create_dir(dir.0.join(FILE_NAME)).unwrap();
        let store = Throughput::open(&dir.0);
        assert!(store.recent(now_ms()).0.is_empty());
    }

    #[test]
    fn a_state_dir_that_cannot_be_written_keeps_the_minutes_until_it_can() {
        let dir = crate::testutil::TempDir::new();
        let gone = dir.0.join("not-yet");
        let store = Throughput::with(Some(gone.join(FILE_NAME)), Minutes::default());
        let now = now_ms();
        store.add(now, 42);
        store.save(now); // the folder does not exist: as on a full or read-only disk
        assert_eq!(store.recent(now).1, None, "nothing was written");
        assert!(!gone.join(FILE_NAME).exists());
        std::fs::create_dir(&gone).unwrap();
        store.save(now + 1000);
        assert_eq!(store.recent(now).1, Some(now + 1000));
        let back = Throughput::open(&gone);
        assert_eq!(back.recent(now).0, [(now / MINUTE_MS * MINUTE_MS, 42)]);
    }
}
