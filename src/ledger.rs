//! The job ledger: the durable record of every job and its state, in `<state_dir>/jobs`.
//!
//! Format: an append-only journal, one record per line, `<crc32 hex> <job json>\n`; each record
//! is the whole job as it is after a change, so replay is "last record per id wins". A batch of
//! several records is preceded by a header line `#<count>\n` and counts only when all of its
//! records are there: a batch is all or nothing (the first start's baseline, say, is never
//! half recorded). Writes go out in one `write` call per batch followed by `fsync`, so after a
//! crash at any instant the file is a sequence of whole batches followed by at most one torn
//! one.
//!
//! Opening reads records until the end; a torn tail (no newline, bad checksum, bad JSON, a batch
//! short of records) is cut off and the journal continues from the last whole batch. A damaged
//! record in the middle (which a crash cannot produce, but a disk can) is skipped with a warning
//! rather than making the program refuse to start. When the journal holds many superseded records it is compacted:
//! the current jobs are written to `jobs.tmp`, fsynced, and renamed over `jobs` (atomic on the
//! same file system); a crash during compaction leaves either the old or the new journal.
//!
//! The journal is closed while it is renamed over: Windows (and FAT, exFAT, some SMB shares)
//! refuse to replace a file that is open. A compaction that fails (that, or a full disk) never
//! fails the write that asked for it: the journal it would have replaced is still whole, a
//! warning says why once, and compaction is tried again some records later. A write that
//! fails leaves nothing behind: the journal is cut back to its last whole record before the
//! next write goes on.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where a job is in its life. See DESIGN "Jobs".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Seen, not yet stable (`reason` says what it waits for).
    Waiting,
    /// Stable, waiting for a worker.
    Queued,
    /// A worker is sending it (or Frame.io is pulling it).
    Uploading,
    /// Every byte is in Frame.io (a pull served every byte, or S3 accepted every part);
    /// polling its status until Frame.io says complete. Holds no upload slot.
    Processing,
    /// Frame.io says `upload_complete`.
    Done,
    /// The last attempt failed; `next_attempt_ms` says when the next one starts.
    Retrying,
    /// Out of attempts (kept, shown, retryable by hand).
    Failed,
    /// Not uploaded, with the reason (vanished, unmatched name, baseline at first start…).
    Skipped,
}

impl JobState {
    pub const ALL: [JobState; 8] = [
        JobState::Waiting,
        JobState::Queued,
        JobState::Uploading,
        JobState::Processing,
        JobState::Done,
        JobState::Retrying,
        JobState::Failed,
        JobState::Skipped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Waiting => "waiting",
            JobState::Queued => "queued",
            JobState::Uploading => "uploading",
            JobState::Processing => "processing",
            JobState::Done => "done",
            JobState::Retrying => "retrying",
            JobState::Failed => "failed",
            JobState::Skipped => "skipped",
        }
    }

    /// Finished one way or another: nothing more happens without a person.
    pub fn is_final(self) -> bool {
        matches!(self, JobState::Done | JobState::Failed | JobState::Skipped)
    }
}

/// One version of one file: (project, path relative to its root, size, mtime).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: u64,
    /// The project's name (`projects[].name`; `default` without `projects`, and for every
    /// record written before projects existed, so such a ledger reads unchanged).
    #[serde(default = "default_project")]
    pub project: String,
    /// Relative to the project's root, `/`-separated.
    pub path: String,
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    pub state: JobState,
    /// Frame.io destination folder path under the project root ("" = the root).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub folder: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempts: u32,
    /// When the next attempt may start (unix ms), for `retrying`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_ms: Option<u64>,
    /// Why it waits, why it was skipped, or the last error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The Frame.io file id, written as soon as Frame.io returns it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_id: Option<String>,
    /// Frame.io may hold a file of this job that `file_id` does not name: a create call was
    /// sent and its answer never recorded (a crash, a timeout, a 5xx), or a delete failed.
    /// Written before every create call; the next attempt then searches the folder first.
    #[serde(default, skip_serializing_if = "is_false")]
    pub unknown_file: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub view_url: Option<String>,
    /// While `processing`: when every byte was in (unix ms). Frame.io's processing deadline
    /// counts from it, across restarts, and the page shows how long it has been.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all_in_ms: Option<u64>,
    pub created_ms: u64,
    pub updated_ms: u64,
    /// A version of an item (`layout.stack_versions`) once its upload is `done`: stacking it
    /// on the other versions in Frame.io. (Boxed: most jobs have none, and jobs travel by value.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<Box<Stacking>>,
    /// When it became stable, started, was all in and finished, for the history. Missing from
    /// jobs recorded before postflow kept them (serde default): the history shows what is
    /// known. (Boxed, like `stack`: jobs travel by value in every event.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times: Option<Box<JobTimes>>,
    /// What Frame.io's review loop said of the uploaded file (`review.webhooks`).
    #[serde(default, skip_serializing_if = "Review::is_empty")]
    pub review: Review,
    /// How the bytes of this job's upload were verified (DESIGN "Verification"):
    /// `parts-md5` (S3 checked every part's Content-MD5), `served-in-full` (a pull that was
    /// served every byte of the unchanged file), `download-sha256` (Frame.io's original
    /// downloaded back equals the local file); none when neither could be said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified: Option<Verified>,
    /// The SHA-256 (hex) of the bytes Frame.io holds, when they were downloaded back and
    /// found equal to the local file (`upload.verify: "download"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// "Upload next" was asked (unix ms) for this queued or retrying job: it goes before
    /// every other, across projects (the latest asked first), until its attempt starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_ms: Option<u64>,
}

/// A job's times, unix ms; `None` when not known.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobTimes {
    /// When it first became `queued` (its file stable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_ms: Option<u64>,
    /// When the attempt that finished it (or the one under way) began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_ms: Option<u64>,
    /// When its last byte was in Frame.io (the `all_in_ms` of that attempt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_ms: Option<u64>,
    /// When it became `done`, `failed` or `skipped`; `None` while unfinished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<u64>,
}

/// The review of a `done` job's file in Frame.io, as its webhooks tell it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Review {
    /// Frame.io finished its proxies (`file.ready`): the link can be sent to reviewers.
    #[serde(default)]
    pub ready: bool,
    /// The file's Status field ("Needs Review", "Approved", …), when set.
    #[serde(default)]
    pub status: Option<String>,
    /// Comments known on the file (the follower keeps them, `GET /api/jobs/<id>/comments`).
    #[serde(default)]
    pub comments: u32,
}

impl Review {
    pub fn is_empty(&self) -> bool {
        *self == Review::default()
    }
}

/// How a job's bytes were verified (DESIGN "Verification").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verified {
    /// Every part went with `Content-MD5` and S3 took it.
    PartsMd5,
    /// A pull served every byte of the file, unchanged from link to completion.
    ServedInFull,
    /// Frame.io's original, downloaded back, equals the local file byte for byte.
    DownloadSha256,
}

impl Verified {
    /// As the API says it.
    pub fn as_str(self) -> &'static str {
        match self {
            Verified::PartsMd5 => "parts-md5",
            Verified::ServedInFull => "served-in-full",
            Verified::DownloadSha256 => "download-sha256",
        }
    }

    /// For a person: what was checked.
    pub fn describe(self) -> &'static str {
        match self {
            Verified::PartsMd5 => "every part checked by S3 against its MD5",
            Verified::ServedInFull => "every byte served, the file unchanged",
            Verified::DownloadSha256 => "downloaded back from Frame.io, equal to the local file",
        }
    }
}

/// Where stacking a version stands. A step after the upload: whatever happens to it, the
/// job stays `done`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stacking {
    pub state: StackState,
    /// This file's version, as people say it (`v004`).
    pub version: String,
    /// The Frame.io version stack, as soon as it is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack_id: Option<String>,
    /// The version right below this one in the stack (`v003`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on: Option<String>,
    /// The version right above, when this one arrived late (a lower version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub under: Option<String>,
    /// `pending`: what it waits for; `failed`: Frame.io's detail; `stacked`: a problem with
    /// the order, if any; `alone`: why there is nothing to stack on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StackState {
    /// To be stacked (waiting for an earlier version's upload, or for its turn).
    Pending,
    /// In a version stack with the other versions.
    Stacked,
    /// No other version of the item in the folder: a plain file.
    Alone,
    /// Frame.io refused or kept failing; retryable by hand (only the stacking is retried).
    Failed,
}

fn default_project() -> String {
    crate::config::DEFAULT_PROJECT.to_string()
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Job {
    /// The file name (last path component).
    pub fn name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or(&self.path)
    }

    /// Its times as far as known.
    pub fn times(&self) -> JobTimes {
        self.times.as_deref().cloned().unwrap_or_default()
    }

    /// Its times, to change them.
    pub fn times_mut(&mut self) -> &mut JobTimes {
        self.times.get_or_insert_with(Default::default)
    }
}

/// What `open` found, for one log line at start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpenReport {
    pub records: usize,
    pub jobs: usize,
    /// Bytes of a torn tail that were cut off.
    pub dropped_bytes: u64,
    /// Damaged records skipped in the middle of the journal.
    pub damaged: usize,
}

pub struct Ledger {
    path: PathBuf,
    /// The journal, open for appending at `len`. `None` after a compaction could not open it
    /// again: the next write opens it.
    file: Option<File>,
    /// Length of the journal: whole records only.
    len: u64,
    /// A write failed and the journal may hold part of it past `len`: cut before writing on.
    torn: bool,
    records: usize,
    jobs: BTreeMap<u64, Job>,
    next_id: u64,
    /// No compaction before the journal holds this many records (raised after one fails).
    compact_after: usize,
    /// A failed compaction was reported; said again only after one succeeds.
    compaction_warned: bool,
    /// Tests of what uses the ledger: every write fails with this, as on a full disk.
    #[cfg(test)]
    fail_writes: Option<io::ErrorKind>,
}

/// Records written between a failed compaction and the next try.
const COMPACTION_RETRY_RECORDS: usize = 1024;

impl Ledger {
    /// Opens (or creates) the journal at `path`, replaying it.
    pub fn open(path: &Path) -> io::Result<(Ledger, OpenReport)> {
        let tmp = tmp_path(path);
        // A leftover from a compaction cut short: the journal itself is still whole.
        if tmp.exists() {
            std::fs::remove_file(&tmp)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let mut report = OpenReport::default();
        let mut jobs = BTreeMap::new();
        let mut good_end = 0u64;
        let mut offset = 0u64;
        let mut reader = BufReader::with_capacity(1 << 16, &mut file);
        let mut line = Vec::new();
        // The unit being read: one record, or a batch announced by its header.
        let mut unit = Unit::default();
        // Units with damaged records: applied (minus the damage) only once a whole unit
        // follows them; at the end of the file they are the torn tail, not damage.
        let mut held: Vec<Unit> = Vec::new();
        loop {
            line.clear();
            let n = reader.read_until(b'\n', &mut line)?;
            if n == 0 {
                break;
            }
            offset += n as u64;
            if line.last() != Some(&b'\n') {
                break; // torn tail
            }
            let body = &line[..line.len() - 1];
            if unit.expected == 0 {
                if let Some(count) = batch_header(body) {
                    unit.expected = count;
                    continue;
                }
                unit.expected = 1;
            }
            match decode(body) {
                Some(job) => unit.jobs.push(job),
                None => unit.damaged += 1,
            }
            if unit.jobs.len() + unit.damaged < unit.expected {
                continue;
            }
            let done = std::mem::take(&mut unit);
            if done.damaged > 0 {
                held.push(done);
                continue;
            }
            for earlier in held.drain(..).chain([done]) {
                report.records += earlier.jobs.len();
                report.damaged += earlier.damaged;
                for job in earlier.jobs {
                    jobs.insert(job.id, job);
                }
            }
            good_end = offset;
        }
        drop(reader);
        let file_len = file.seek(SeekFrom::End(0))?;
        if good_end < file_len {
            // Everything after the last whole record is a torn write (or damage at the end,
            // which we cannot tell apart): cut it so new records start on a clean line.
            report.dropped_bytes = file_len - good_end;
            file.set_len(good_end)?;
            file.sync_all()?;
        }
        report.jobs = jobs.len();
        let next_id = jobs.keys().next_back().map_or(1, |id| id + 1);
        file.seek(SeekFrom::Start(good_end))?;
        let mut ledger = Ledger {
            path: path.to_path_buf(),
            file: Some(file),
            len: good_end,
            torn: false,
            records: report.records + report.damaged,
            jobs,
            next_id,
            compact_after: 0,
            compaction_warned: false,
            #[cfg(test)]
            fail_writes: None,
        };
        ledger.maybe_compact();
        Ok((ledger, report))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn jobs(&self) -> &BTreeMap<u64, Job> {
        &self.jobs
    }

    pub fn get(&self, id: u64) -> Option<&Job> {
        self.jobs.get(&id)
    }

    /// A fresh job id (ids are never reused).
    pub fn new_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Records the given jobs' current state durably (one write, one fsync). Only after this
    /// returns may anyone else hear about the change. On `Err` nothing was recorded: the
    /// journal and this ledger are as they were, and the same jobs can be written again.
    pub fn write(&mut self, jobs: &[Job]) -> io::Result<()> {
        if jobs.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::with_capacity(jobs.len() * 256 + 16);
        if jobs.len() > 1 {
            writeln!(buf, "#{}", jobs.len())?;
        }
        for job in jobs {
            encode(job, &mut buf)?;
        }
        #[cfg(test)]
        if let Some(kind) = self.fail_writes {
            return Err(io::Error::new(kind, "simulated for a test"));
        }
        let len = self.len;
        let torn = self.torn;
        let file = self.journal()?;
        let result = (|| {
            if torn {
                // A failed write may have left part of itself: a later write must not glue
                // a good record onto it.
                file.set_len(len)?;
                file.seek(SeekFrom::Start(len))?;
            }
            file.write_all(&buf)?;
            file.sync_data()
        })();
        if let Err(e) = result {
            // Cut back now if we can; if not, before the next write.
            let cut = file
                .set_len(len)
                .and_then(|()| file.seek(SeekFrom::Start(len)).map(drop));
            self.torn = cut.is_err();
            return Err(e);
        }
        self.torn = false;
        self.len += buf.len() as u64;
        self.records += jobs.len();
        for job in jobs {
            self.next_id = self.next_id.max(job.id + 1);
            self.jobs.insert(job.id, job.clone());
        }
        // The batch is on disk: whatever compaction does, this write succeeded.
        self.maybe_compact();
        Ok(())
    }

    /// The open journal, opened again (at its last whole record) when a compaction left it
    /// closed.
    fn journal(&mut self) -> io::Result<&mut File> {
        let file = match self.file.take() {
            Some(file) => file,
            None => {
                let mut file = OpenOptions::new().read(true).write(true).open(&self.path)?;
                file.seek(SeekFrom::Start(self.len))?;
                file
            }
        };
        Ok(self.file.insert(file))
    }

    fn wants_compaction(&self) -> bool {
        self.records > 2 * self.jobs.len() + 1024 && self.records >= self.compact_after
    }

    /// Compacts when the journal has grown enough; a failure is a warning (once), and the next
    /// try waits for [`COMPACTION_RETRY_RECORDS`] more records.
    fn maybe_compact(&mut self) {
        if !self.wants_compaction() {
            return;
        }
        match self.compact() {
            Ok(()) => self.compaction_warned = false,
            Err(e) => {
                if !self.compaction_warned {
                    log::warn!(
                        "ledger {}: cannot compact the journal ({e}); it stays as it is, valid, \
                         and compaction is tried again later",
                        self.path.display()
                    );
                    self.compaction_warned = true;
                }
                self.compact_after = self.records + COMPACTION_RETRY_RECORDS;
            }
        }
    }

    /// Rewrites the journal with one record per job (write temp, fsync, close the journal,
    /// rename, fsync dir, open again). On `Err` the journal at `path` is the old one, whole.
    pub fn compact(&mut self) -> io::Result<()> {
        let tmp = tmp_path(&self.path);
        let mut buf = Vec::with_capacity(self.jobs.len() * 256);
        for job in self.jobs.values() {
            encode(job, &mut buf)?;
        }
        let written = File::create(&tmp).and_then(|mut out| {
            out.write_all(&buf)?;
            out.sync_all()
        });
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        // Closed before the rename: Windows will not replace a file that is open.
        self.file = None;
        if let Err(e) = std::fs::rename(&tmp, &self.path) {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        sync_dir(&self.path);
        self.len = buf.len() as u64;
        self.torn = false;
        self.records = self.jobs.len();
        self.compact_after = 0;
        // Opened again here; if that fails, the next write tries (the new journal is whole).
        self.journal()?;
        Ok(())
    }

    /// From now on every write fails with `kind` (`None`: writes work again).
    #[cfg(test)]
    pub fn fail_writes(&mut self, kind: Option<io::ErrorKind>) {
        self.fail_writes = kind;
    }

    /// Makes sure everything written is on disk (writes already fsync; this is for shutdown).
    pub fn flush(&mut self) -> io::Result<()> {
        match &self.file {
            Some(file) => file.sync_all(),
            None => Ok(()),
        }
    }
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Best effort: on Linux a rename is only durable once its directory is synced.
fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent() {
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
}

/// Records read for one unit of the journal (a single record or a batch).
#[derive(Default)]
struct Unit {
    /// How many records the unit holds (0: not started).
    expected: usize,
    jobs: Vec<Job>,
    damaged: usize,
}

/// The count of a batch header line `#<count>` (at least 2; a record line starts with hex).
fn batch_header(line: &[u8]) -> Option<usize> {
    let digits = std::str::from_utf8(line.strip_prefix(b"#")?).ok()?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|&n| n >= 2)
}

fn encode(job: &Job, out: &mut Vec<u8>) -> io::Result<()> {
    let json = serde_json::to_vec(job)?;
    write!(out, "{:08x} ", crc32(&json))?;
    out.extend_from_slice(&json);
    out.push(b'\n');
    Ok(())
}

fn decode(line: &[u8]) -> Option<Job> {
    if line.len() < 10 || line[8] != b' ' {
        return None;
    }
    let crc = u32::from_str_radix(std::str::from_utf8(&line[..8]).ok()?, 16).ok()?;
    let json = &line[9..];
    if crc32(json) != crc {
        return None;
    }
    serde_json::from_slice(json).ok()
}

/// CRC-32 (IEEE), bitwise with a table built at compile time.
fn crc32(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    let mut crc = !0u32;
    for &b in data {
        crc = TABLE[((crc ^ b as u32) & 0xFF) as usize] ^ (crc >> 8);
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    fn job(id: u64, state: JobState) -> Job {
        Job {
            id,
            project: "default".into(),
            path: format!("renders/SQ01_UNDLM_{id:05}_v001.mov"),
            size: 1000 + id,
            mtime_ns: 1_700_000_000_000_000_000 + id as i64,
            state,
            folder: "SQ01/UNDLM".into(),
            attempts: 0,
            next_attempt_ms: None,
            reason: None,
            file_id: None,
            unknown_file: false,
            view_url: None,
            all_in_ms: None,
            created_ms: 1,
            updated_ms: 2,
            stack: None,
            times: None,
            review: Default::default(),
            verified: None,
            sha256: None,
            next_ms: None,
        }
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn jobs_survive_a_reopen() {
        let dir = TempDir::new();
        let path = dir.0.join("jobs");
        let (mut l, report) = Ledger::open(&path).unwrap();
        assert_eq!(report, OpenReport::default());
        let id = l.new_id();
        l.write(&[job(id, JobState::Queued)]).unwrap();
        let mut j = job(id, JobState::Done);
        j.file_id = Some("f-1".into());
        l.write(&[j.clone()]).unwrap();
        drop(l);
        let (l, report) = Ledger::open(&path).unwrap();
        assert_eq!(report.records, 2);
        assert_eq!(l.get(id), Some(&j));
        let mut l = l;
        assert_eq!(l.new_id(), id + 1, "ids are never reused");
    }

    /// The history used by the torn-write tests, and the state after each prefix of it.
    fn history() -> Vec<Job> {
        let mut h = Vec::new();
        for id in 1..=3 {
            h.push(job(id, JobState::Waiting));
        }
        for state in [JobState::Queued, JobState::Uploading, JobState::Done] {
            for id in 1..=3 {
                let mut j = job(id, state);
                j.reason = Some(format!("step {state:?} \"quoted\" ✓"));
                h.push(j);
            }
        }
        h
    }

    fn expected_after(records: &[Job]) -> BTreeMap<u64, Job> {
        records.iter().map(|j| (j.id, j.clone())).collect()
    }

    /// `history()` as the queue writes it: single records and batches.
    fn units() -> Vec<Vec<Job>> {
        let hist = history();
        let mut units = vec![hist[0..3].to_vec()];
        units.extend(hist[3..6].iter().map(|j| vec![j.clone()]));
        units.push(hist[6..9].to_vec());
        units.push(hist[9..11].to_vec());
        units.push(vec![hist[11].clone()]);
        units
    }

    #[test]
    fn a_journal_torn_at_any_byte_reopens_as_a_consistent_prefix() {
        let dir = TempDir::new();
        let path = dir.0.join("jobs");
        let units = units();
        let (mut l, _) = Ledger::open(&path).unwrap();
        let mut boundaries = vec![0u64];
        for unit in &units {
            l.write(unit).unwrap();
            boundaries.push(std::fs::metadata(&path).unwrap().len());
        }
        drop(l);
        let full = std::fs::read(&path).unwrap();
        // Every offset inside the last four units (batches among them), and a sample before.
        let start = boundaries[boundaries.len() - 5] as usize;
        let offsets = (0..start).step_by(7).chain(start..=full.len());
        for cut in offsets {
            let torn = dir.0.join("torn");
            std::fs::write(&torn, &full[..cut]).unwrap();
            let whole = boundaries.iter().filter(|&&b| b as usize <= cut).count() - 1;
            let applied: Vec<Job> = units[..whole].concat();
            let (mut l, report) = Ledger::open(&torn)
                .unwrap_or_else(|e| panic!("refused to open when cut at {cut}: {e}"));
            assert_eq!(
                l.jobs(),
                &expected_after(&applied),
                "cut at {cut}: whole batches only"
            );
            assert_eq!(report.records, applied.len());
            assert_eq!(
                report.damaged, 0,
                "a torn tail is not damage (cut at {cut})"
            );
            assert_eq!(report.dropped_bytes, (cut as u64) - boundaries[whole]);
            // The journal goes on cleanly after the cut.
            let mut next = job(9, JobState::Queued);
            next.id = l.new_id().max(9);
            l.write(std::slice::from_ref(&next)).unwrap();
            drop(l);
            let (l, report) = Ledger::open(&torn).unwrap();
            assert_eq!(report.dropped_bytes, 0);
            assert_eq!(l.get(next.id), Some(&next), "cut at {cut}");
            assert_eq!(l.jobs().len(), expected_after(&applied).len() + 1);
        }
    }

    #[test]
    fn a_batch_cut_anywhere_leaves_none_of_its_records() {
        // The first start's baseline: many new jobs in one batch.
        let dir = TempDir::new();
        let path = dir.0.join("jobs");
        let (mut l, _) = Ledger::open(&path).unwrap();
        let baseline: Vec<Job> = (1..=50).map(|id| job(id, JobState::Skipped)).collect();
        l.write(&baseline).unwrap();
        drop(l);
        let full = std::fs::read(&path).unwrap();
        assert!(full.starts_with(b"#50\n"));
        for cut in 0..full.len() {
            let torn = dir.0.join("torn");
            std::fs::write(&torn, &full[..cut]).unwrap();
            let (l, report) = Ledger::open(&torn).unwrap();
            assert!(l.jobs().is_empty(), "cut at {cut}: {} jobs", l.jobs().len());
            assert_eq!(report.dropped_bytes, cut as u64);
        }
        let (l, report) = Ledger::open(&path).unwrap();
        assert_eq!(l.jobs().len(), 50);
        assert_eq!(report.records, 50);
    }

    #[test]
    fn damage_inside_a_batch_skips_that_record_only() {
        let dir = TempDir::new();
        let path = dir.0.join("jobs");
        let (mut l, _) = Ledger::open(&path).unwrap();
        l.write(&[job(1, JobState::Queued), job(2, JobState::Queued)])
            .unwrap();
        l.write(&[job(3, JobState::Queued)]).unwrap();
        drop(l);
        let mut bytes = std::fs::read(&path).unwrap();
        // The second line is the first record of the batch (after its header).
        let header_end = bytes.iter().position(|&b| b == b'\n').unwrap();
        bytes[header_end + 20] ^= 0x20;
        std::fs::write(&path, &bytes).unwrap();
        let (l, report) = Ledger::open(&path).unwrap();
        assert_eq!(report.damaged, 1);
        assert_eq!(l.jobs().keys().copied().collect::<Vec<_>>(), vec![2, 3]);

        // The same damage at the very end of the journal is a torn tail: cut, not counted.
        let (mut l, _) = Ledger::open(&dir.0.join("tail")).unwrap();
        l.write(&[job(1, JobState::Queued), job(2, JobState::Queued)])
            .unwrap();
        drop(l);
        let mut bytes = std::fs::read(dir.0.join("tail")).unwrap();
        bytes[header_end + 20] ^= 0x20;
        std::fs::write(dir.0.join("tail"), &bytes).unwrap();
        let (l, report) = Ledger::open(&dir.0.join("tail")).unwrap();
        assert_eq!(report.damaged, 0);
        assert!(l.jobs().is_empty());
        assert_eq!(report.dropped_bytes, bytes.len() as u64);
    }

    #[test]
    fn damage_in_the_middle_skips_one_record_and_keeps_the_rest() {
        let dir = TempDir::new();
        let path = dir.0.join("jobs");
        let (mut l, _) = Ledger::open(&path).unwrap();
        for id in 1..=3 {
            l.write(&[job(id, JobState::Queued)]).unwrap();
        }
        drop(l);
        let mut bytes = std::fs::read(&path).unwrap();
        let second_line = bytes.iter().position(|&b| b == b'\n').unwrap() + 20;
        bytes[second_line] ^= 0x20;
        std::fs::write(&path, &bytes).unwrap();
        let (l, report) = Ledger::open(&path).unwrap();
        assert_eq!(report.damaged, 1);
        assert_eq!(l.jobs().keys().copied().collect::<Vec<_>>(), vec![1, 3]);
    }

    #[test]
    fn compaction_keeps_the_current_state_and_shrinks_the_file() {
        let dir = TempDir::new();
        let path = dir.0.join("jobs");
        let (mut l, _) = Ledger::open(&path).unwrap();
        for round in 0..600 {
            let state = if round % 2 == 0 {
                JobState::Uploading
            } else {
                JobState::Processing
            };
            l.write(&[job(1, state), job(2, state)]).unwrap();
        }
        l.write(&[job(1, JobState::Done)]).unwrap();
        let size = std::fs::metadata(&path).unwrap().len();
        assert!(size < 200 * 1024, "compaction should have run, size {size}");
        drop(l);
        let (l, report) = Ledger::open(&path).unwrap();
        assert_eq!(l.get(1).unwrap().state, JobState::Done);
        assert_eq!(l.get(2).unwrap().state, JobState::Processing);
        assert!(report.records < 1100);
    }

    #[test]
    fn a_compaction_that_fails_never_fails_a_write_and_is_tried_again_later() {
        let dir = TempDir::new();
        let path = dir.0.join("jobs");
        let (mut l, _) = Ledger::open(&path).unwrap();
        // Where compaction writes its temp file, a directory: every compaction fails (as a
        // rename over an open journal does on Windows, or a full disk).
        std::fs::create_dir(dir.0.join("jobs.tmp")).unwrap();
        let round = |l: &mut Ledger, n: usize| {
            for i in 0..n {
                let state = [JobState::Uploading, JobState::Processing][i % 2];
                l.write(&[job(1, state), job(2, state)])
                    .expect("a write whose batch is on disk succeeds");
            }
        };
        round(&mut l, 600);
        let grown = std::fs::metadata(&path).unwrap().len();
        assert!(grown > 200 * 1024, "no compaction could run, size {grown}");
        l.write(&[job(3, JobState::Queued)]).unwrap();
        // (Read from a copy: opening clears what a compaction left, here the obstacle.)
        std::fs::copy(&path, dir.0.join("copy")).unwrap();
        let (reopened, report) = Ledger::open(&dir.0.join("copy")).unwrap();
        assert_eq!(report.dropped_bytes, 0, "the journal stayed whole");
        assert_eq!(reopened.get(3).unwrap().state, JobState::Queued);
        drop(reopened);

        // The obstacle gone, a later write compacts.
        std::fs::remove_dir(dir.0.join("jobs.tmp")).unwrap();
        round(&mut l, 600);
        l.write(&[job(1, JobState::Done)]).unwrap();
        let size = std::fs::metadata(&path).unwrap().len();
        assert!(size < 200 * 1024, "compaction ran again, size {size}");
        drop(l);
        let (l, _) = Ledger::open(&path).unwrap();
        assert_eq!(l.get(1).unwrap().state, JobState::Done);
        assert_eq!(l.get(3).unwrap().state, JobState::Queued);
    }

    #[test]
    fn a_compaction_cut_short_leaves_the_old_journal_whole() {
        let dir = TempDir::new();
        let path = dir.0.join("jobs");
        let (mut l, _) = Ledger::open(&path).unwrap();
        l.write(&[job(1, JobState::Done)]).unwrap();
        drop(l);
        std::fs::write(dir.0.join("jobs.tmp"), b"0000 half a compaction").unwrap();
        let (l, _) = Ledger::open(&path).unwrap();
        assert_eq!(l.get(1).unwrap().state, JobState::Done);
        assert!(!dir.0.join("jobs.tmp").exists());
    }

    /// The open time itself is measured by `cargo bench --bench ledger` (see BENCHMARKS.md).
    #[test]
    fn a_hundred_thousand_finished_jobs_reopen_whole() {
        let dir = TempDir::new();
        let path = dir.0.join("jobs");
        let (mut l, _) = Ledger::open(&path).unwrap();
        let batch: Vec<Job> = (1..=100_000)
            .map(|id| {
                let mut j = job(id, JobState::Done);
                j.file_id = Some(format!("2f1c7a3e-0000-4000-8000-{id:012}"));
                j.view_url = Some(format!("https://next.frame.io/project/p/view/{id}"));
                j
            })
            .collect();
        l.write(&batch).unwrap();
        drop(l);
        let (l, report) = Ledger::open(&path).unwrap();
        assert_eq!(report.jobs, 100_000);
        assert_eq!(report.records, 100_000);
        assert_eq!(l.get(77_777).unwrap().size, 1000 + 77_777);
        assert_eq!(l.get(100_000), batch.last());
    }
}
