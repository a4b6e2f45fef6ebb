//! The processing watch: one thread that asks Frame.io about every job whose bytes are all in.
//!
//! Once a pull has been served every byte, or S3 has accepted every part, nothing of ours moves
//! any more: what is left is Frame.io's (stitching, checking, transcoding), and it can take
//! from a second to an hour. The upload worker hands the job over here and takes the next
//! upload, so `upload.concurrency` counts only jobs whose bytes are moving, and a slow
//! transcode of one big file never holds back the next upload.
//!
//! One thread polls for all of them, in order of who is due, and paces its polls itself under
//! Frame.io's status limit (5 a second, `Class::FileStatus` in `frameio::api`; the client's
//! own pacer stays the guard shared with the workers' calls). Each job is first asked
//! `poll_min` after its last byte (a poll right after it is almost always too early), then at
//! intervals growing by half up to `poll_max`, and once more at its processing deadline. With
//! more jobs than the budget serves at those intervals, every job is still asked in turn,
//! just less often.
//!
//! Outcomes are the worker's: `upload_complete` → done; `upload_failed` → that Frame.io file
//! is deleted and the attempt retried; no word by `upload.processing_timeout_secs` after the
//! last byte → deleted and retried (counting as an attempt). A job the ledger has as
//! `processing` when postflow starts (after a stop, a crash, a `kill -9`) is watched again
//! here: its bytes are in Frame.io, so it is never sent again, and its file is never deleted
//! for still being processed.
//!
//! Pausing the queue does not stop the watch: a pause is about using the uplink, and these
//! jobs use none; Frame.io goes on processing whatever we do, and stopping the polls would only
//! leave finished uploads showing as unfinished.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver};

use super::{classify, fail, Failure, Uploader};
use crate::config::Verify;
use crate::frameio::api::{ApiError, UploadStatus};
use crate::human;
use crate::ledger::Job;
use crate::queue::{now_ms, AttemptUpdate, FailureKind};

/// The spacing of status polls: Frame.io allows 5 a second per user on the status endpoint
/// (`Class::FileStatus`, which paces every status call at the same rate).
pub const STATUS_SPACING: Duration = Duration::from_millis(200);

/// One job whose bytes are all in: a small record, kept until Frame.io has the last word.
#[derive(Debug)]
pub struct Watched {
    pub id: u64,
    /// The job's project: its account is asked.
    pub project: String,
    pub name: String,
    pub size: u64,
    pub file_id: String,
    /// The status link Frame.io returned with a remote upload; else the file's status path.
    pub status_path: Option<String>,
    pub view_url: Option<String>,
    /// The pull's link, kept alive until the end: Frame.io's fetcher may read again. `None`
    /// for parts, and after a restart (the file server's links die with the process).
    pub link: Option<String>,
    /// A local upload (its saved plan goes once the job ends); after a restart, whether a
    /// plan is saved.
    pub parts: bool,
    /// When every byte was in (unix ms, as the ledger has it).
    pub all_in_ms: u64,
    /// When the attempt started, in this run (`None` after a restart).
    pub started: Option<Instant>,
    /// How this attempt's bytes were verified (the job records it).
    pub verified: Option<crate::ledger::Verified>,
    /// The file, relative to its project's root, and its mtime when it was sent: the
    /// download check (`upload.verify: "download"`) compares Frame.io's copy with it.
    pub rel: String,
    pub mtime_ns: i64,
    /// The SHA-256 of Frame.io's copy, once downloaded back and found equal.
    pub sha256: Option<String>,
}

impl Watched {
    /// `job`'s Frame.io file `file_id` once every byte of this run's attempt (started at
    /// `started`) is in, sent by parts; a pull sets its `status_path`, `view_url` and `link`
    /// and `parts: false` over this.
    pub fn all_in(job: &Job, file_id: String, started: Instant) -> Watched {
        Watched {
            id: job.id,
            project: job.project.clone(),
            name: job.name().to_string(),
            size: job.size,
            file_id,
            status_path: None,
            view_url: None,
            link: None,
            parts: true,
            all_in_ms: super::now_unix_ms(),
            started: Some(started),
            verified: None,
            rel: job.path.clone(),
            mtime_ns: job.mtime_ns,
            sha256: None,
        }
    }

    /// A job the ledger has as processing at start (see `queue::watched_at_start`).
    pub fn resumed(job: &Job) -> Option<Watched> {
        Some(Watched {
            id: job.id,
            project: job.project.clone(),
            name: job.name().to_string(),
            size: job.size,
            file_id: job.file_id.clone()?,
            status_path: None,
            view_url: job.view_url.clone(),
            link: None,
            parts: false,
            all_in_ms: job.all_in_ms?,
            started: None,
            verified: None,
            rel: job.path.clone(),
            mtime_ns: job.mtime_ns,
            sha256: None,
        })
    }
}

/// Who is due when, and the status budget. Pure (time passed in), tested below.
pub(super) struct Schedule<T> {
    /// (next poll, id) of every job not being polled right now.
    due: BTreeSet<(Instant, u64)>,
    entries: HashMap<u64, Entry<T>>,
    /// The earliest moment the next poll may go out.
    slot: Instant,
    spacing: Duration,
    min: Duration,
    max: Duration,
}

struct Entry<T> {
    item: T,
    at: Instant,
    interval: Duration,
}

impl<T> Schedule<T> {
    pub fn new(spacing: Duration, min: Duration, max: Duration, now: Instant) -> Schedule<T> {
        Schedule {
            due: BTreeSet::new(),
            entries: HashMap::new(),
            slot: now,
            spacing,
            min,
            max: max.max(min),
        }
    }

    /// Watches `item` (job `id`), first asked at `first`.
    pub fn add(&mut self, id: u64, item: T, first: Instant) {
        if let Some(old) = self.entries.remove(&id) {
            self.due.remove(&(old.at, id));
        }
        self.due.insert((first, id));
        self.entries.insert(
            id,
            Entry {
                item,
                at: first,
                interval: self.min,
            },
        );
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// When the next poll may go out: the earliest due time, no sooner than the budget allows.
    pub fn next_at(&self) -> Option<Instant> {
        let &(at, _) = self.due.first()?;
        Some(at.max(self.slot))
    }

    /// The job to ask about now, if one is due and the budget has room; books the slot.
    pub fn take(&mut self, now: Instant) -> Option<(u64, &T)> {
        let &(at, id) = self.due.first()?;
        if at > now || self.slot > now {
            return None;
        }
        self.due.remove(&(at, id));
        self.slot = now + self.spacing;
        self.entries.get(&id).map(|e| (id, &e.item))
    }

    /// Asked and still processing: next asked after its interval, which grows by half up to
    /// `max`, and never after `deadline` (so the deadline is seen when it comes).
    pub fn again(&mut self, id: u64, now: Instant, deadline: Option<Instant>) {
        let Some(e) = self.entries.get_mut(&id) else {
            return;
        };
        self.due.remove(&(e.at, id));
        let mut at = now + e.interval;
        if let Some(d) = deadline.filter(|d| *d > now) {
            at = at.min(d);
        }
        e.at = at;
        e.interval = (e.interval * 3 / 2).min(self.max);
        self.due.insert((at, id));
    }

    /// Stops watching job `id`.
    pub fn remove(&mut self, id: u64) -> Option<T> {
        let e = self.entries.remove(&id)?;
        self.due.remove(&(e.at, id));
        Some(e.item)
    }
}

/// What one status poll said.
enum Poll {
    Complete,
    Failed,
    /// Still processing, or Frame.io could not be asked now (a login, the network): ask again.
    Processing {
        answered: bool,
    },
    /// The file is gone from Frame.io (someone deleted it).
    Gone,
    /// Frame.io refused the question; the attempt ends without touching the file.
    Error(Failure),
}

/// The watch thread: takes jobs from the workers (`handoffs`) and those left processing by the
/// last run (`resumed`), until shutdown.
pub fn run_poller(up: Arc<Uploader>, handoffs: Receiver<Watched>, resumed: Vec<Watched>) {
    let s = &up.settings;
    let now = Instant::now();
    let mut schedule = Schedule::new(STATUS_SPACING, s.poll_min, s.poll_max, now);
    if !resumed.is_empty() {
        log::info!(
            "{} upload(s) Frame.io was still processing at the last stop: watching them again",
            resumed.len()
        );
    }
    for mut w in resumed {
        w.parts = up.sidecar.has_plan(w.id);
        // It may well have finished while we were down: ask at once (in turn).
        schedule.add(w.id, w, now);
    }
    loop {
        let wait = schedule.next_at().map_or(Duration::from_secs(3600), |t| {
            t.saturating_duration_since(Instant::now())
        });
        select! {
            recv(handoffs) -> w => match w {
                Ok(w) => {
                    let first = Instant::now() + s.poll_min;
                    let name = w.name.clone();
                    schedule.add(w.id, w, first);
                    log::debug!(
                        "{name}: every byte in; watching Frame.io's processing ({} processing)",
                        schedule.len()
                    );
                }
                Err(_) => return,
            },
            recv(up.stop) -> _ => return,
            default(wait) => {
                if poll_next(&up, &mut schedule).is_err() {
                    return;
                }
            }
        }
    }
}

/// Asks about the job that is due, if the budget allows, and acts on the answer. `Err` on
/// shutdown.
fn poll_next(up: &Uploader, schedule: &mut Schedule<Watched>) -> Result<(), ApiError> {
    let Some((id, w)) = schedule.take(Instant::now()) else {
        return Ok(());
    };
    let poll = poll(up, w)?;
    let now = Instant::now();
    let deadline = deadline(up, w, now);
    let end = match poll {
        Poll::Complete => {
            if let Some(w) = schedule.remove(id) {
                complete(up, w);
            }
            return Ok(());
        }
        Poll::Failed => Some((
            fail(FailureKind::Retry, "Frame.io reported upload_failed"),
            Some("Frame.io reported upload_failed"),
        )),
        Poll::Processing { answered: true } if now >= deadline => Some((
            fail(
                FailureKind::Retry,
                format!(
                    "Frame.io {} and did not finish processing it within {}; \
                     deleted that Frame.io file (upload.processing_timeout_secs)",
                    if w.parts {
                        "accepted every part"
                    } else {
                        "got every byte"
                    },
                    human::duration(up.settings.processing_timeout)
                ),
            ),
            Some("Frame.io never finished processing it"),
        )),
        Poll::Processing { .. } => None,
        Poll::Gone => Some((
            fail(FailureKind::Retry, "the file disappeared from Frame.io"),
            None,
        )),
        Poll::Error(f) => {
            // The file is not ours to judge now: the next attempt looks at it first (adopts
            // it if complete, resumes or deletes it if not).
            if let Some(w) = schedule.remove(id) {
                revoke(up, &w);
                failed(up, &w, f);
            }
            return Ok(());
        }
    };
    match end {
        None => schedule.again(id, now, Some(deadline)),
        Some((failure, delete)) => {
            if let Some(w) = schedule.remove(id) {
                revoke(up, &w);
                let kept = delete.is_some_and(|why| !up.delete(&w.project, &w.file_id, why));
                if kept {
                    up.report(AttemptUpdate::UnknownFile {
                        id: w.id,
                        possible: true,
                    });
                }
                if w.parts {
                    up.sidecar.remove(w.id);
                }
                failed(up, &w, failure);
            }
        }
    }
    Ok(())
}

fn poll(up: &Uploader, w: &Watched) -> Result<Poll, ApiError> {
    let status = match &w.status_path {
        Some(path) => up.api.status_at(path),
        None => up.api.file_status(up.account(&w.project), &w.file_id),
    };
    Ok(match status {
        Ok(UploadStatus {
            upload_complete: true,
            ..
        }) => Poll::Complete,
        Ok(UploadStatus {
            upload_failed: true,
            ..
        }) => Poll::Failed,
        Ok(_) => Poll::Processing { answered: true },
        Err(ApiError::Stopped) => return Err(ApiError::Stopped),
        Err(e) if e.status() == Some(404) => Poll::Gone,
        // Waiting for a login or a flaky network: Frame.io goes on processing meanwhile.
        Err(ApiError::NeedsLogin(_)) => Poll::Processing { answered: false },
        Err(e) if e.is_transient() => {
            log::debug!("{}: status: {e}", w.name);
            Poll::Processing { answered: false }
        }
        Err(e) => match classify(e) {
            Ok(f) => Poll::Error(f),
            Err(_) => return Err(ApiError::Stopped),
        },
    })
}

/// When Frame.io's time is up: `processing_timeout` after the last byte. For a pull whose link
/// is alive that is the last byte served, so a fetcher that reads again is never cut.
fn deadline(up: &Uploader, w: &Watched, now: Instant) -> Instant {
    let ago = Duration::from_millis(now_ms().saturating_sub(w.all_in_ms));
    let all_in = now.checked_sub(ago).unwrap_or(now);
    let last = w
        .link
        .as_deref()
        .and_then(|token| up.links.activity(token))
        .and_then(|a| a.last_served_at)
        .map_or(all_in, |t| t.max(all_in));
    last + up.settings.processing_timeout
}

fn revoke(up: &Uploader, w: &Watched) {
    if let Some(token) = &w.link {
        up.links.revoke(token);
    }
}

/// Frame.io says complete: done, or first downloaded back (`upload.verify: "download"`).
fn complete(up: &Uploader, w: Watched) {
    revoke(up, &w);
    if w.parts {
        up.sidecar.remove(w.id);
    }
    if up.settings.verify == Verify::Download {
        // The verifiers live as long as this watch; a send fails only in a shutdown, and
        // the ledger then has the job as processing: the next start checks it again.
        let _ = up.verifying.send(w);
    } else {
        done(up, w);
    }
}

/// The job is `done`: logged, and reported with how its bytes were verified.
pub(super) fn done(up: &Uploader, w: Watched) {
    let view_url = w.view_url.clone().or_else(|| {
        up.api
            .file(up.account(&w.project), &w.file_id)
            .ok()
            .and_then(|f| f.view_url)
    });
    let mut link = view_url
        .as_deref()
        .map(|u| format!(": {u}"))
        .unwrap_or_default();
    if let Some(sha) = &w.sha256 {
        link.insert_str(
            0,
            &format!(", Frame.io's copy downloaded back and equal (SHA-256 {sha})"),
        );
    }
    match w.started {
        Some(started) => {
            let secs = started.elapsed().as_secs_f64();
            log::info!(
                "upload done: {} in {secs:.1} s ({:.1} MB/s){link}",
                w.name,
                w.size as f64 / 1e6 / secs.max(0.001),
            );
        }
        None => log::info!(
            "upload done: {} (its bytes went in before the restart){link}",
            w.name
        ),
    }
    up.report(AttemptUpdate::Done {
        id: w.id,
        file_id: w.file_id,
        view_url,
        verified: w.verified,
        sha256: w.sha256,
    });
}

pub(super) fn failed(up: &Uploader, w: &Watched, f: Failure) {
    log::warn!("upload of {} did not finish: {}", w.name, f.error);
    up.report(AttemptUpdate::Failed {
        id: w.id,
        error: f.error,
        kind: f.kind,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn schedule(t0: Instant) -> Schedule<()> {
        Schedule::new(200 * MS, 2000 * MS, 30_000 * MS, t0)
    }

    /// Drives the schedule like the thread does: at each moment it allows, polls the due job
    /// and calls `answer` (true: done, false: ask again). Returns (when, id) of every poll.
    fn drive(
        s: &mut Schedule<()>,
        t0: Instant,
        until: Duration,
        mut answer: impl FnMut(u64, Instant) -> bool,
    ) -> Vec<(Duration, u64)> {
        let mut polls = Vec::new();
        while let Some(at) = s.next_at() {
            if at > t0 + until {
                break;
            }
            let (id, _) = s.take(at).expect("due at next_at");
            polls.push((at - t0, id));
            if answer(id, at) {
                s.remove(id);
            } else {
                s.again(id, at, None);
            }
        }
        polls
    }

    #[test]
    fn three_hundred_jobs_due_at_once_are_asked_five_a_second_in_turn() {
        let t0 = Instant::now();
        let mut s = schedule(t0);
        for id in 0..300 {
            s.add(id, (), t0);
        }
        // Everyone completes at the first question.
        let polls = drive(&mut s, t0, Duration::from_secs(120), |_, _| true);
        assert_eq!(polls.len(), 300, "each asked once");
        let ids: Vec<u64> = polls.iter().map(|p| p.1).collect();
        assert_eq!(
            ids,
            (0..300).collect::<Vec<_>>(),
            "in the order they came due"
        );
        assert!(
            polls.windows(2).all(|w| w[1].0 - w[0].0 >= 200 * MS),
            "never more than one poll per 200 ms"
        );
        assert_eq!(polls[299].0, 299 * 200 * MS, "and no slower than that");
        assert_eq!(s.len(), 0);
    }

    #[test]
    fn a_job_is_asked_with_growing_intervals_up_to_the_maximum() {
        let t0 = Instant::now();
        let mut s = schedule(t0);
        s.add(7, (), t0 + 2000 * MS);
        let polls = drive(&mut s, t0, Duration::from_secs(200), |_, _| false);
        let gaps: Vec<u64> = polls
            .windows(2)
            .map(|w| (w[1].0 - w[0].0).as_millis() as u64)
            .collect();
        assert_eq!(
            polls[0].0,
            2000 * MS,
            "first asked poll_min after the last byte"
        );
        assert_eq!(
            &gaps[..8],
            &[2000, 3000, 4500, 6750, 10125, 15187, 22781, 30000],
            "half as long again each time"
        );
        assert!(gaps[8..].iter().all(|&g| g == 30_000), "capped: {gaps:?}");
    }

    #[test]
    fn the_deadline_is_asked_at_when_it_comes_before_the_next_interval() {
        let t0 = Instant::now();
        let mut s = schedule(t0);
        s.add(1, (), t0);
        let (id, _) = s.take(t0).unwrap();
        let deadline = t0 + 700 * MS;
        s.again(id, t0, Some(deadline));
        assert_eq!(s.next_at(), Some(deadline), "not at t0 + 2 s");
        let (_, _) = s.take(deadline).unwrap();
        // A deadline already passed (Frame.io could not be asked): the interval applies.
        s.again(id, deadline + 100 * MS, Some(deadline));
        assert_eq!(s.next_at(), Some(deadline + 100 * MS + 3000 * MS));
    }

    #[test]
    fn a_newcomer_due_first_goes_first_and_the_budget_is_shared() {
        let t0 = Instant::now();
        let mut s = schedule(t0);
        s.add(1, (), t0 + 10_000 * MS);
        s.add(2, (), t0);
        assert_eq!(s.take(t0).map(|(id, _)| id), Some(2));
        s.remove(2);
        // A job that comes due right now still waits for the slot the last poll booked.
        s.add(3, (), t0);
        assert!(
            s.take(t0 + 100 * MS).is_none(),
            "the budget has no room yet"
        );
        assert_eq!(s.next_at(), Some(t0 + 200 * MS));
        assert_eq!(s.take(t0 + 200 * MS).map(|(id, _)| id), Some(3));
        s.remove(3);
        assert!(s.take(t0 + 9_999 * MS).is_none(), "job 1 is not due yet");
        assert_eq!(s.take(t0 + 10_000 * MS).map(|(id, _)| id), Some(1));
    }

    #[test]
    fn many_slow_jobs_are_each_asked_in_turn_just_less_often() {
        let t0 = Instant::now();
        let mut s = schedule(t0);
        // 400 jobs at the 30 s maximum want 13 polls a second; the budget is 5.
        for id in 0..400 {
            s.add(id, (), t0);
        }
        let mut per_job: HashMap<u64, Vec<Duration>> = HashMap::new();
        let polls = drive(&mut s, t0, Duration::from_secs(600), |id, at| {
            per_job.entry(id).or_default().push(at - t0);
            false
        });
        let in_any_second = polls
            .windows(6)
            .all(|w| w[5].0 - w[0].0 >= Duration::from_secs(1));
        assert!(in_any_second, "at most 5 polls in any second");
        assert_eq!(per_job.len(), 400, "nobody starves");
        let fewest = per_job.values().map(Vec::len).min().unwrap();
        let most = per_job.values().map(Vec::len).max().unwrap();
        assert!(most - fewest <= 1, "asked in turn: {fewest}..{most}");
    }
}
