//! The queue: the one owner of the job ledger, and the scheduler of uploads.
//!
//! Every job change is written to the ledger first and published on the hub second, so what
//! anyone sees has already survived a crash. Other threads never touch the ledger; they send
//! the queue a [`QueueMsg`] and, when they need an answer, a reply channel.
//!
//! # Contract with the other threads
//!
//! - The **watcher** sends [`QueueMsg::FilesSeen`] batches (one ledger write per batch, never
//!   one fsync per file) and [`QueueMsg::ScanComplete`] after each full rescan. The queue turns
//!   what it hears into jobs: a new identity (path, size, mtime) becomes a new job; a `waiting`
//!   job is updated in place while its file is still changing; a file that vanishes before
//!   upload makes its job `skipped` ("vanished").
//! - **Upload workers** receive jobs on the `jobs_out` channel given to [`run_queue`]. It is a
//!   rendezvous channel (`bounded(0)`): the queue offers the next eligible job only while a
//!   worker is blocked in `recv`, so no job ever sits in a channel buffer where a pause,
//!   a retry or a crash could not see it. A worker reports on the queue's inbox with
//!   [`QueueMsg::Attempt`]: `Started` first (the job becomes `uploading`, `attempts += 1`),
//!   `FileCreated` as soon as Frame.io returns an id (written to the ledger at once), then
//!   `Processing` once every byte is in, and finally `Done` or `Failed`. Before each create call the worker sends
//!   [`QueueMsg::Creating`] and waits until the ledger says Frame.io may soon hold a file it
//!   does not know (`Job::unknown_file`); the answer, a clean refusal or a recovery search
//!   clears it, so only a job that may have left such a file lists its folder. A job counts
//!   against `upload.concurrency` from the moment it is handed out until its bytes are all in
//!   (`Processing`: the worker hands it to the status watch, `upload::poller`, and takes the
//!   next job) or its attempt ends. The watch reports `Done` or `Failed` like a worker. At most
//!   [`MAX_PROCESSING`] jobs are processing at once; at that many, nothing more is handed out
//!   until one ends. If nobody receives (no workers yet), nothing is handed out.
//! - Order: oldest stable first (the time the job became `queued`; a job sent back to the queue
//!   keeps its place). `retrying` jobs become eligible at `next_attempt_ms`.
//! - Failures carry a [`FailureKind`] chosen by the worker: `Retry` backs off exponentially with
//!   full jitter (base 5 s, capped at `upload.max_delay_secs`) and ends in `failed` after
//!   `upload.max_attempts`; `WaitForAuth` puts the job back to `queued` without counting the
//!   attempt and holds every hand-out until [`QueueMsg::AuthRestored`] (or `Resume`);
//!   `Permanent` fails the job now; `FileChanged` skips it (the watcher's new job takes over).
//! - **Control** (dashboard, `postflow upload`): `Jobs`, `Stats`, `Retry`, `RetryFailed`,
//!   `Pause`, `Resume`, `Enqueue`. Pause stops handing out jobs; jobs already out finish, and
//!   processing jobs go on being watched (they use no uplink, and Frame.io processes them
//!   whatever we do); nothing is lost. A one-off `postflow upload` (no instance running) runs the queue with
//!   [`QueueSettings::only_enqueued`]: only the jobs it enqueued are handed out.
//!
//! - **Version stacks** (`stack.rs`): a version's job gets its stacking record (`pending`) in
//!   the write that makes it `done`; the queue hands pending versions to the stacker thread in
//!   turn ([`crate::stack::Tracker`]) and records what it reports ([`QueueMsg::Stacked`]).
//!   `RetryStack` retries only a failed stacking.
//!
//! # When the ledger cannot be written
//!
//! A change that cannot be recorded (a full disk, a read-only or failing state dir) is never
//! dropped: the queue keeps the newest state of each job it could not record, builds on it
//! (so a file seen twice is still one job), and writes all of it in one batch, again and
//! again with backoff ([`UNRECORDED_RETRY`] doubling to [`UNRECORDED_RETRY_MAX`]) and with
//! every new change, until the write succeeds. Until then nothing that depends on it goes
//! ahead: nothing is published on the hub, no job is handed out (uploads pause; attempts are
//! not counted, since none start), and a worker's [`QueueMsg::Creating`] is answered only once
//! the record is on disk, so no Frame.io create goes out that the ledger would not know. The
//! `state_dir` component says `down` with the reason and the path (the page's banner,
//! `/health`'s 503, one notification), and `up` again once everything is recorded. While
//! nothing is written, the state dir is probed every [`PROBE_EVERY`] (a small file written and
//! removed), so a full disk is said before a change meets it.
//!
//! On start, jobs a crash left `uploading` go back to `queued`, keeping their `file_id` and
//! attempt count: the upload worker sees the `file_id` and adopts or resumes the Frame.io file
//! instead of creating a second one. Jobs left `processing` ([`watched_at_start`]) stay so:
//! their bytes are in Frame.io, and the status watch takes them up again. Versions still to
//! be stacked go to the stacker again.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Select, Sender};

use crate::config::{Config, UploadOrder};
use crate::events::{ComponentState, Event, Hub};
use crate::history::{self, History};
use crate::layout::{Destination, Layout};
use crate::ledger::{Job, JobState, Ledger, Review, StackState};
use crate::stack::{self, StackTask, StackUpdate, Tracker};

/// The reason of a job recorded as baseline at the very first start.
pub const BASELINE_REASON: &str = "present at first start (watch.upload_existing is false)";
/// The reason of a job whose file disappeared before it was uploaded.
pub const VANISHED_REASON: &str = "vanished";
/// First retry delay (before jitter); doubles per attempt.
pub const BASE_DELAY: Duration = Duration::from_secs(5);
/// At most this many jobs processing at once (each is a small record in the status watch).
/// Far more than the status budget serves at its usual intervals (5 a second, a job asked
/// every 30 s at most: 150 jobs), so it binds only when Frame.io has stopped finishing
/// uploads; then new uploads wait instead of piling up more of them.
pub const MAX_PROCESSING: usize = 1000;
/// First wait before writing unrecorded changes again; doubles per failure.
pub const UNRECORDED_RETRY: Duration = Duration::from_millis(500);
/// The longest wait between two tries to write unrecorded changes.
pub const UNRECORDED_RETRY_MAX: Duration = Duration::from_secs(5);
/// How often the state dir is probed while nothing is written to it (so that a full disk is
/// said before a change is lost to it, even when idle).
pub const PROBE_EVERY: Duration = Duration::from_secs(10);

/// Whether a job the ledger has as `processing` at start is watched again (its bytes are all
/// in Frame.io) rather than queued. A `processing` record without `all_in_ms` was written by
/// an older postflow, which also used that state while a pull was being served: it is queued,
/// and the upload worker looks at its Frame.io file first.
pub fn watched_at_start(job: &Job) -> bool {
    job.state == JobState::Processing && job.all_in_ms.is_some() && job.file_id.is_some()
}

/// One version of one file, as the watcher saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileVersion {
    /// Relative to its project's root, `/`-separated.
    pub path: String,
    pub size: u64,
    pub mtime_ns: i64,
}

/// What the watcher found out about one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileNews {
    /// Present at the very first start (empty ledger) while `watch.upload_existing` is false:
    /// recorded as `skipped` baseline, not uploaded.
    Present(FileVersion),
    /// Seen but not finished yet; `reason` is what it waits for ("size changing", …). The
    /// watcher sends this when the reason changes, not on every look.
    Waiting { file: FileVersion, reason: String },
    /// Stable, readable and (for QuickTime) complete: ready to be queued.
    Stable(FileVersion),
    /// The path is gone.
    Vanished { path: String },
}

/// What other threads tell or ask the queue.
pub enum QueueMsg {
    /// From a project's watcher: a batch of news, recorded with one ledger write.
    FilesSeen {
        project: String,
        news: Vec<FileNews>,
    },
    /// From a project's watcher: a full rescan finished and found `files` files.
    ScanComplete { project: String, files: usize },
    /// Asks for a copy of every job (for status pages and `postflow status`).
    Jobs(Sender<Vec<Job>>),
    /// Asks for counts per state and the paused flag.
    Stats(Sender<QueueStats>),
    /// Asks for a page of finished jobs (`/api/history`), answered from the history index.
    History {
        query: history::Query,
        reply: Sender<history::Page>,
    },
    /// Asks for the totals of the `days` UTC days up to `today` (`/api/throughput`).
    Days {
        today: u64,
        days: u64,
        reply: Sender<Vec<(u64, history::DayTotals)>>,
    },
    /// "Upload next": a `queued` or `retrying` job goes before every other, across projects
    /// (recorded in the ledger); an error for a job in another state.
    Next {
        id: u64,
        reply: Sender<Result<(), String>>,
    },
    /// A `failed` (or `skipped`) job goes back to `queued` with a fresh attempt count.
    Retry {
        id: u64,
        reply: Sender<Result<(), String>>,
    },
    /// Every `failed` job goes back to `queued`; replies how many.
    RetryFailed { reply: Sender<usize> },
    /// Stop handing out jobs (jobs already out finish).
    Pause,
    /// Hand out jobs again; also lifts a hold for Frame.io login.
    Resume,
    /// From auth: Frame.io calls work again after a `WaitForAuth` failure.
    AuthRestored,
    /// Queue these files now (absolute: the project is the one whose root holds it; or
    /// relative to the root of `project`, which may be left out when there is one project);
    /// one result per path, in order: the job id, or why not ("outside every project's root").
    Enqueue {
        paths: Vec<PathBuf>,
        project: Option<String>,
        reply: Sender<Vec<Result<u64, String>>>,
    },
    /// From an upload worker.
    Attempt(AttemptUpdate),
    /// From the stacker: a version's new stacking record.
    Stacked(StackUpdate),
    /// A `done` job whose stacking failed: stack it again (the upload is not touched).
    RetryStack {
        id: u64,
        reply: Sender<Result<(), String>>,
    },
    /// From an upload worker, before it sends a create call (`remote_upload`,
    /// `local_upload`): the job's `unknown_file` is set and written, then `written` says
    /// whether the ledger has it. A create goes out only once it does, so a crash between
    /// "Frame.io created the file" and "ledger written" always leaves a job that searches.
    Creating { id: u64, written: Sender<bool> },
    /// From the review follower: what Frame.io's review loop now says of a `done` job's file
    /// (recorded when it differs, then shown as the job's `review`).
    Review { id: u64, review: Review },
}

/// What an upload worker reports about the job it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttemptUpdate {
    /// The attempt began: `uploading`, `attempts += 1`. `mode` is "remote" or "local".
    Started { id: u64, mode: &'static str },
    /// Frame.io returned a file id: written to the ledger at once. `unknown_file` is the
    /// job's new `unknown_file`: false, unless an earlier file of this attempt could not be
    /// deleted.
    FileCreated {
        id: u64,
        file_id: String,
        unknown_file: bool,
    },
    /// Whether Frame.io may hold a file of this job that the ledger does not know: false
    /// after a create Frame.io surely refused or a recovery search that left nothing behind,
    /// true after a delete failed.
    UnknownFile { id: u64, possible: bool },
    /// Every byte is in (unix ms); the status watch has it now: `processing`, and the
    /// upload slot is free.
    Processing {
        id: u64,
        all_in_ms: u64,
        /// How the bytes were verified, if they were.
        verified: Option<crate::ledger::Verified>,
    },
    /// Frame.io says `upload_complete`: `done`.
    Done {
        id: u64,
        file_id: String,
        view_url: Option<String>,
        /// How the bytes were verified, when this says more than `Processing` did (a pull
        /// complete before its coverage was seen; an original downloaded back).
        verified: Option<crate::ledger::Verified>,
        /// The SHA-256 of the bytes Frame.io holds, when downloaded back.
        sha256: Option<String>,
    },
    /// The attempt failed; `kind` says what happens next.
    Failed {
        id: u64,
        error: String,
        kind: FailureKind,
    },
}

/// How a failed attempt is handled; the worker classifies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// Try again later: back off, count the attempt.
    Retry,
    /// Frame.io login needed: back to `queued`, attempt not counted, no backoff; hand-outs
    /// are held until `AuthRestored` (or `Resume`).
    WaitForAuth,
    /// Will never work: `failed` now.
    Permanent,
    /// The file changed under the upload: `skipped`; the watcher's new job takes over.
    FileChanged,
}

/// Counts per state and the scheduler's flags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueStats {
    /// Every state, zero included.
    pub counts: BTreeMap<JobState, usize>,
    pub paused: bool,
    /// Held after a `WaitForAuth` failure until auth is back.
    pub waiting_for_auth: bool,
    /// Jobs handed to workers and not finished (processing jobs not included).
    pub in_flight: usize,
    /// Files found by the last full rescans (`None` before every project's first one ends).
    pub watched_files: Option<usize>,
    /// Counts per state (every state, zero included) of each project: those of the config,
    /// and any other the ledger still holds jobs of (a project removed from the config).
    pub by_project: BTreeMap<String, BTreeMap<JobState, usize>>,
    /// Job changes kept in memory because the ledger could not record them yet.
    pub unrecorded: usize,
    /// Why the ledger cannot be written, while it cannot ("<path>: <error>").
    pub ledger_error: Option<String>,
}

/// A project, as the queue needs it.
#[derive(Clone, Debug)]
pub struct QueueProject {
    pub name: String,
    pub root: PathBuf,
    pub layout: Layout,
    /// Its stacker's inbox (`layout.stack_versions`); `None`: versions are recorded as
    /// pending and not stacked until a queue with a stacker runs.
    pub stacker: Option<Sender<StackTask>>,
}

/// What the queue needs from the config.
#[derive(Clone, Debug)]
pub struct QueueSettings {
    /// Never empty. Jobs of a project not listed (removed from the config) stay in the ledger
    /// and are never handed out.
    pub projects: Vec<QueueProject>,
    pub concurrency: usize,
    /// [`MAX_PROCESSING`] (smaller in tests).
    pub max_processing: usize,
    pub max_attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// A one-off `postflow upload`: hand out only the jobs enqueued by hand (`Enqueue`); the
    /// watcher's jobs are recorded and left for the next `run`.
    pub only_enqueued: bool,
    /// `upload.order`, within each project's turn.
    pub order: UploadOrder,
}

impl QueueSettings {
    pub fn from_config(config: &Config) -> QueueSettings {
        QueueSettings {
            projects: config
                .projects
                .iter()
                .map(|p| QueueProject {
                    name: p.name.clone(),
                    root: p.root.clone(),
                    layout: p.layout(),
                    stacker: None,
                })
                .collect(),
            concurrency: config.upload.concurrency.max(1),
            max_processing: MAX_PROCESSING,
            max_attempts: config.upload.max_attempts.max(1),
            base_delay: BASE_DELAY,
            max_delay: config.upload.max_delay,
            only_enqueued: false,
            order: config.upload.order,
        }
    }

    /// The project named `name`, if the config has it.
    pub fn project(&self, name: &str) -> Option<&QueueProject> {
        self.projects.iter().find(|p| p.name == name)
    }
}

/// Exponential backoff with full jitter: a delay uniform in `[0, min(cap, base * 2^(n-1))]`
/// for the `n`-th attempt; `unit` is a random number in `[0, 1)`.
pub fn backoff(attempt: u32, base: Duration, cap: Duration, unit: f64) -> Duration {
    let doublings = attempt.saturating_sub(1).min(40);
    let ceiling = base
        .checked_mul(1u32 << doublings.min(31))
        .unwrap_or(cap)
        .min(cap);
    ceiling.mul_f64(unit.clamp(0.0, 1.0))
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Runs until `stop` closes; flushes the ledger on the way out.
pub fn run_queue(
    ledger: Ledger,
    inbox: Receiver<QueueMsg>,
    stop: Receiver<()>,
    hub: Hub,
    settings: QueueSettings,
    jobs_out: Sender<Job>,
) {
    let mut queue = Queue::new(ledger, settings, hub, now_ms());
    // Set when every worker is gone (the receiver was dropped): stop offering.
    let mut workers_gone = false;
    loop {
        let now = now_ms();
        queue.tick(now);
        let offer = if workers_gone {
            None
        } else {
            queue.next_job(now)
        };
        let mut sel = Select::new();
        let from_inbox = sel.recv(&inbox);
        let from_stop = sel.recv(&stop);
        let to_worker = offer.as_ref().map(|_| sel.send(&jobs_out));
        // Wake for the next retry that comes due, or the state dir's turn.
        let wake = queue
            .next_wake()
            .map_or(queue.next_tick(), |t| t.min(queue.next_tick()));
        let timeout = Duration::from_millis(wake.saturating_sub(now));
        let Ok(oper) = sel.select_timeout(timeout) else {
            continue;
        };
        let index = oper.index();
        if index == from_inbox {
            match oper.recv(&inbox) {
                Ok(msg) => queue.handle(msg, now_ms()),
                Err(_) => break,
            }
        } else if index == from_stop {
            let _ = oper.recv(&stop);
            break;
        } else if Some(index) == to_worker {
            let job = offer.expect("an offer goes with the send operation");
            let id = job.id;
            match oper.send(&jobs_out, job) {
                Ok(()) => queue.handed_out(id),
                Err(_) => {
                    log::debug!("no upload workers left; not handing out jobs");
                    workers_gone = true;
                }
            }
        }
    }
    queue.close();
}

/// The queue's state. Methods take the current time so tests can drive a fake clock.
pub struct Queue {
    ledger: Ledger,
    settings: QueueSettings,
    hub: Hub,
    /// The newest job of each (project, path).
    by_path: HashMap<(String, String), u64>,
    /// When each unfinished job first became `queued`: its place in line.
    place: HashMap<u64, u64>,
    /// Eligible now, per project: (place, id), jobs not out. Projects take turns.
    ready: BTreeMap<String, BTreeSet<(u64, u64)>>,
    /// The project of each job in `ready`, and its key there (`upload.order`).
    ready_in: HashMap<u64, (String, u64)>,
    /// "Upload next" jobs, the latest asked first: (u64::MAX - next_ms, id). Handed out
    /// before any turn, once ready.
    pinned: BTreeSet<(u64, u64)>,
    /// The project whose job was handed out last: the next turn is the next project's.
    turn: Option<String>,
    /// `retrying`, not yet due: (next_attempt_ms, id).
    timed: BTreeSet<(u64, u64)>,
    /// The key of each job in `timed`.
    due: HashMap<u64, u64>,
    /// Handed to a worker and not finished.
    out: HashSet<u64>,
    /// Processing: in the status watch, holding no slot.
    watching: HashSet<u64>,
    /// The mode of each running attempt ("remote"/"local"), for the attempt's end event.
    modes: HashMap<u64, &'static str>,
    paused: bool,
    auth_held: bool,
    /// Files found by the last full rescan of each project.
    watched_files: HashMap<String, usize>,
    /// With `only_enqueued`: the jobs that may be handed out (those enqueued by hand).
    only: Option<HashSet<u64>>,
    /// Versions to stack, and whose turn it is: per project (items are per folder of a
    /// project).
    stacks: BTreeMap<String, Tracker>,
    rng: u64,
    /// The newest state of each job the ledger could not record yet (see the module doc).
    unrecorded: BTreeMap<u64, Job>,
    /// Workers waiting to send a create call until `unrecorded` is on disk.
    creates_waiting: Vec<Sender<bool>>,
    /// Set while the ledger cannot be written.
    outage: Option<Outage>,
    /// When to probe the state dir next (while there is no outage).
    next_probe: u64,
    /// The finished jobs the ledger holds, in the order they finished.
    history: History,
}

/// The ledger cannot be written: why, and when to try again.
struct Outage {
    reason: String,
    kind: std::io::ErrorKind,
    failures: u32,
    retry_at: u64,
}

/// Changes made while handling one message, written together.
#[derive(Default)]
struct Batch {
    jobs: BTreeMap<u64, Job>,
    new_paths: HashMap<(String, String), u64>,
}

impl Queue {
    /// Builds the scheduler from the ledger, and puts jobs a crash left in flight back in line.
    pub fn new(ledger: Ledger, settings: QueueSettings, hub: Hub, now: u64) -> Queue {
        let seed = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let only = settings.only_enqueued.then(HashSet::new);
        let stacks = settings
            .projects
            .iter()
            .map(|p| {
                (
                    p.name.clone(),
                    Tracker::new(p.layout.clone(), p.stacker.clone()),
                )
            })
            .collect();
        let mut queue = Queue {
            ledger,
            settings,
            hub,
            by_path: HashMap::new(),
            place: HashMap::new(),
            ready: BTreeMap::new(),
            ready_in: HashMap::new(),
            pinned: BTreeSet::new(),
            turn: None,
            timed: BTreeSet::new(),
            due: HashMap::new(),
            out: HashSet::new(),
            watching: HashSet::new(),
            modes: HashMap::new(),
            paused: false,
            auth_held: false,
            watched_files: HashMap::new(),
            only,
            stacks,
            rng: seed | 1,
            unrecorded: BTreeMap::new(),
            creates_waiting: Vec::new(),
            outage: None,
            next_probe: now,
            history: History::default(),
        };
        let mut interrupted = Vec::new();
        let jobs: Vec<Job> = queue.ledger.jobs().values().cloned().collect();
        for job in jobs {
            // A removed project's processing job is not watched (its account is not known).
            let configured = queue.settings.project(&job.project).is_some();
            if watched_at_start(&job) && configured {
                queue.watching.insert(job.id);
            } else if matches!(job.state, JobState::Uploading | JobState::Processing) {
                let mut j = job.clone();
                j.state = JobState::Queued;
                j.all_in_ms = None;
                j.updated_ms = now;
                interrupted.push(j);
            }
            // The place in line is lost with the process; when it was last touched is close.
            if matches!(job.state, JobState::Queued | JobState::Retrying) {
                queue.place.insert(job.id, job.updated_ms);
            }
            queue.index(&job, job.updated_ms);
        }
        if !interrupted.is_empty() {
            log::info!(
                "{} job(s) interrupted by the last stop are queued again (their Frame.io file is kept)",
                interrupted.len()
            );
            queue.commit(interrupted, now);
        }
        queue.dispatch_stacks(now);
        queue
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Handles one message.
    pub fn handle(&mut self, msg: QueueMsg, now: u64) {
        match msg {
            QueueMsg::FilesSeen { project, news } => self.files_seen(&project, news, now),
            QueueMsg::ScanComplete { project, files } => {
                self.watched_files.insert(project, files);
            }
            QueueMsg::Jobs(reply) => {
                let _ = reply.send(self.ledger.jobs().values().cloned().collect());
            }
            QueueMsg::Stats(reply) => {
                let _ = reply.send(self.stats());
            }
            QueueMsg::History { query, reply } => {
                let _ = reply.send(self.history.page(&query, |id| self.ledger.get(id)));
            }
            QueueMsg::Days { today, days, reply } => {
                let _ = reply.send(self.history.days(today, days));
            }
            QueueMsg::Retry { id, reply } => {
                let _ = reply.send(self.retry(id, now));
            }
            QueueMsg::Next { id, reply } => {
                let _ = reply.send(self.upload_next(id, now));
            }
            QueueMsg::RetryFailed { reply } => {
                let _ = reply.send(self.retry_failed(now));
            }
            QueueMsg::Pause => {
                if !self.paused {
                    log::info!("queue paused: no new uploads start until resumed");
                }
                self.paused = true;
            }
            QueueMsg::Resume => {
                if self.paused || self.auth_held {
                    log::info!("queue resumed");
                }
                self.paused = false;
                self.auth_held = false;
            }
            QueueMsg::AuthRestored => self.auth_held = false,
            QueueMsg::Enqueue {
                paths,
                project,
                reply,
            } => {
                let _ = reply.send(self.enqueue(&paths, project.as_deref(), now));
            }
            QueueMsg::Attempt(update) => self.attempt(update, now),
            QueueMsg::Stacked(update) => self.stacked(update, now),
            QueueMsg::Review { id, review } => self.reviewed(id, review, now),
            QueueMsg::RetryStack { id, reply } => {
                let _ = reply.send(self.retry_stack(id, now));
            }
            QueueMsg::Creating { id, written } => self.creating(id, written, now),
        }
    }

    /// The job to offer a worker now, if any: projects take turns (round robin), each
    /// project's oldest stable first, within the concurrency limit, not while paused or held
    /// for login.
    pub fn next_job(&mut self, now: u64) -> Option<Job> {
        while let Some(&(due, id)) = self.timed.first() {
            if due > now {
                break;
            }
            self.timed.remove(&(due, id));
            self.due.remove(&id);
            let place = *self.place.entry(id).or_insert(due);
            if let Some(job) = self.current(id).cloned() {
                self.make_ready(&job, place);
            }
        }
        if self.paused
            || self.auth_held
            || !self.unrecorded.is_empty()
            || self.out.len() >= self.settings.concurrency
            || self.watching.len() >= self.settings.max_processing
        {
            return None;
        }
        let allowed = |id: &u64| self.only.as_ref().is_none_or(|only| only.contains(id));
        if let Some(&(_, id)) = self
            .pinned
            .iter()
            .find(|(_, id)| self.ready_in.contains_key(id) && allowed(id))
        {
            return self.ledger.get(id).cloned();
        }
        // The projects after the last one served, then the others from the start.
        let (after, upto): (Vec<_>, Vec<_>) = self
            .ready
            .iter()
            .partition(|(name, _)| self.turn.as_ref().is_some_and(|t| *name > t));
        let id = after.into_iter().chain(upto).find_map(|(_, line)| {
            let &(_, id) = match &self.only {
                Some(only) => line.iter().find(|(_, id)| only.contains(id))?,
                None => line.first()?,
            };
            Some(id)
        })?;
        self.ledger.get(id).cloned()
    }

    /// A worker took job `id`.
    pub fn handed_out(&mut self, id: u64) {
        if let Some((project, _)) = self.ready_in.get(&id) {
            self.turn = Some(project.clone());
        }
        self.unschedule(id);
        self.out.insert(id);
    }

    /// Puts `job` in its project's line, where `upload.order` says (`place`: when it first
    /// became queued).
    fn make_ready(&mut self, job: &Job, place: u64) {
        let key = match self.settings.order {
            UploadOrder::Oldest => place,
            UploadOrder::Newest => u64::MAX - place,
            UploadOrder::Smallest => job.size,
        };
        self.ready
            .entry(job.project.clone())
            .or_default()
            .insert((key, job.id));
        self.ready_in.insert(job.id, (job.project.clone(), key));
        if let Some(asked) = job.next_ms {
            self.pinned.insert((u64::MAX - asked, job.id));
        }
    }

    /// When the next `retrying` job comes due.
    pub fn next_wake(&self) -> Option<u64> {
        self.timed.first().map(|&(due, _)| due)
    }

    /// When the state dir's next turn is (see [`Queue::tick`]).
    pub fn next_tick(&self) -> u64 {
        self.outage.as_ref().map_or(self.next_probe, |o| o.retry_at)
    }

    /// The state dir's turn: during an outage, the next try (writing what is unrecorded, or a
    /// probe when nothing is); otherwise the periodic probe.
    pub fn tick(&mut self, now: u64) {
        match &self.outage {
            Some(o) if now >= o.retry_at => {
                if self.unrecorded.is_empty() {
                    self.probe(now);
                } else {
                    self.record_unrecorded(now);
                }
            }
            None if now >= self.next_probe => self.probe(now),
            _ => {}
        }
    }

    fn probe(&mut self, now: u64) {
        self.next_probe = now + PROBE_EVERY.as_millis() as u64;
        let dir = self.ledger.path().parent().unwrap_or(Path::new("."));
        match crate::statedir::probe_writable(dir) {
            Ok(()) => self.ledger_up(0),
            Err(e) => self.ledger_down(e, now),
        }
    }

    pub fn stats(&self) -> QueueStats {
        let zero: BTreeMap<JobState, usize> = JobState::ALL.iter().map(|s| (*s, 0)).collect();
        let mut counts = zero.clone();
        let mut by_project: BTreeMap<String, BTreeMap<JobState, usize>> = self
            .settings
            .projects
            .iter()
            .map(|p| (p.name.clone(), zero.clone()))
            .collect();
        for job in self.ledger.jobs().values() {
            *counts.entry(job.state).or_default() += 1;
            *by_project
                .entry(job.project.clone())
                .or_insert_with(|| zero.clone())
                .entry(job.state)
                .or_default() += 1;
        }
        let scanned = self
            .settings
            .projects
            .iter()
            .map(|p| self.watched_files.get(&p.name))
            .sum::<Option<usize>>();
        QueueStats {
            counts,
            paused: self.paused,
            waiting_for_auth: self.auth_held,
            in_flight: self.out.len(),
            watched_files: scanned,
            by_project,
            unrecorded: self.unrecorded.len(),
            ledger_error: self.outage.as_ref().map(|o| o.reason.clone()),
        }
    }

    fn close(mut self) {
        if !self.record_unrecorded(now_ms()) {
            // What the watcher saw is seen again by the next start's rescan; a create that
            // went out is on disk as `unknown_file` (see `creating`) and found by its search.
            log::error!(
                "ledger {}: stopping with {} job change(s) not recorded",
                self.ledger.path().display(),
                self.unrecorded.len()
            );
        }
        if let Err(e) = self.ledger.flush() {
            log::error!(
                "ledger {}: final flush failed: {e}",
                self.ledger.path().display()
            );
        }
    }

    // ---- the watcher's news ----

    fn files_seen(&mut self, project: &str, news: Vec<FileNews>, now: u64) {
        let mut batch = Batch::default();
        let mut baseline = 0usize;
        for item in news {
            match item {
                FileNews::Present(file) => {
                    if self.record(&mut batch, project, file, Target::Baseline, now) {
                        baseline += 1;
                    }
                }
                FileNews::Waiting { file, reason } => {
                    self.record(&mut batch, project, file, Target::Waiting(reason), now);
                }
                FileNews::Stable(file) => {
                    self.record(&mut batch, project, file, Target::Queued, now);
                }
                FileNews::Vanished { path } => self.vanished(&mut batch, project, &path, now),
            }
        }
        let recorded = self.commit(batch.jobs.into_values().collect(), now);
        if baseline > 0 {
            let whose = if self.settings.projects.len() > 1 {
                format!(" of project {project}")
            } else {
                String::new()
            };
            log::info!(
                "first start{whose}: {baseline} file(s) already in the watch folder {} as \
                 baseline, not uploaded (set watch.upload_existing to upload them, or retry \
                 them on the page)",
                if recorded {
                    "recorded"
                } else {
                    "kept (to be recorded)"
                }
            );
        }
    }

    /// Records one version of a file; returns whether a job was created or changed.
    fn record(
        &mut self,
        batch: &mut Batch,
        project: &str,
        file: FileVersion,
        target: Target,
        now: u64,
    ) -> bool {
        let latest = self.latest(batch, project, &file.path).cloned();
        let mut job = match latest {
            Some(j) if same_version(&j, &file) => {
                let revive = j.state == JobState::Waiting
                    || (j.state == JobState::Skipped
                        && j.reason.as_deref() == Some(VANISHED_REASON)
                        && !matches!(target, Target::Baseline));
                if !revive {
                    return false; // already has its job
                }
                j
            }
            // A waiting job follows its file while it changes: same job, new size and mtime.
            Some(j) if j.state == JobState::Waiting => j,
            Some(old) => {
                self.superseded(batch, old, now);
                self.new_job(batch, project, &file, now)
            }
            None => self.new_job(batch, project, &file, now),
        };
        let prior = batch
            .jobs
            .get(&job.id)
            .or_else(|| self.current(job.id))
            .cloned();
        job.size = file.size;
        job.mtime_ns = file.mtime_ns;
        match target {
            Target::Baseline => {
                job.state = JobState::Skipped;
                job.reason = Some(BASELINE_REASON.into());
                if let Some(Destination::Folder(f)) = self.destination(&job) {
                    job.folder = f;
                }
            }
            Target::Waiting(reason) => {
                job.state = JobState::Waiting;
                job.reason = Some(reason);
                // Shown on the page while it settles: where it will go.
                if let Some(Destination::Folder(f)) = self.destination(&job) {
                    job.folder = f;
                }
            }
            Target::Queued => self.make_queued(&mut job),
        }
        if prior.as_ref() == Some(&job) {
            return false; // nothing new to record
        }
        job.updated_ms = now;
        batch.jobs.insert(job.id, job);
        true
    }

    /// The older version's job, if still unfinished, will never be uploaded: that file is gone.
    fn superseded(&mut self, batch: &mut Batch, mut old: Job, now: u64) {
        let idle = matches!(old.state, JobState::Queued | JobState::Retrying);
        if idle && !self.out.contains(&old.id) {
            old.state = JobState::Skipped;
            old.reason = Some("replaced by a newer version of the file".into());
            old.next_attempt_ms = None;
            old.updated_ms = now;
            batch.jobs.insert(old.id, old);
        }
        // Uploading or handed out: the worker finds the file changed and reports FileChanged.
    }

    fn vanished(&mut self, batch: &mut Batch, project: &str, path: &str, now: u64) {
        let Some(mut job) = self.latest(batch, project, path).cloned() else {
            return;
        };
        let idle = matches!(
            job.state,
            JobState::Waiting | JobState::Queued | JobState::Retrying
        );
        if idle && !self.out.contains(&job.id) {
            log::debug!("{path}: vanished before upload");
            job.state = JobState::Skipped;
            job.reason = Some(VANISHED_REASON.into());
            job.next_attempt_ms = None;
            job.updated_ms = now;
            batch.jobs.insert(job.id, job);
        }
    }

    fn latest<'a>(&'a self, batch: &'a Batch, project: &str, path: &str) -> Option<&'a Job> {
        let key = (project.to_string(), path.to_string());
        let id = batch
            .new_paths
            .get(&key)
            .or_else(|| self.by_path.get(&key))?;
        batch.jobs.get(id).or_else(|| self.current(*id))
    }

    /// A job as the queue knows it: its unrecorded state if it has one, else the ledger's.
    fn current(&self, id: u64) -> Option<&Job> {
        self.unrecorded.get(&id).or_else(|| self.ledger.get(id))
    }

    fn new_job(&mut self, batch: &mut Batch, project: &str, file: &FileVersion, now: u64) -> Job {
        let id = self.ledger.new_id();
        batch
            .new_paths
            .insert((project.to_string(), file.path.clone()), id);
        Job {
            id,
            project: project.to_string(),
            path: file.path.clone(),
            size: file.size,
            mtime_ns: file.mtime_ns,
            state: JobState::Waiting,
            folder: String::new(),
            attempts: 0,
            next_attempt_ms: None,
            reason: None,
            file_id: None,
            unknown_file: false,
            view_url: None,
            all_in_ms: None,
            created_ms: now,
            updated_ms: now,
            stack: None,
            times: None,
            review: Default::default(),
            verified: None,
            sha256: None,
            next_ms: None,
        }
    }

    /// Where the job's project's layout puts it; `None` for a project no longer configured.
    fn destination(&self, job: &Job) -> Option<Destination> {
        let project = self.settings.project(&job.project)?;
        Some(project.layout.destination(&job.path))
    }

    /// `queued` at its destination folder, or `skipped` with the layout's reason (or because
    /// its project is no longer in the config).
    fn make_queued(&self, job: &mut Job) {
        job.next_attempt_ms = None;
        match self.destination(job) {
            Some(Destination::Folder(folder)) => {
                job.state = JobState::Queued;
                job.folder = folder;
                job.reason = None;
            }
            Some(Destination::Skip(reason)) => {
                job.state = JobState::Skipped;
                job.reason = Some(reason);
            }
            None => {
                job.state = JobState::Skipped;
                job.reason = Some(removed_project(&job.project));
            }
        }
    }

    // ---- control ----

    fn retry(&mut self, id: u64, now: u64) -> Result<(), String> {
        let mut job = self
            .current(id)
            .cloned()
            .ok_or_else(|| format!("no job {id}"))?;
        if !matches!(job.state, JobState::Failed | JobState::Skipped) {
            return Err(format!(
                "job {id} is {}, only failed or skipped jobs can be retried",
                job.state.as_str()
            ));
        }
        self.requeue(&mut job)?;
        job.updated_ms = now;
        if self.commit(vec![job], now) {
            Ok(())
        } else {
            Err(self.not_recorded())
        }
    }

    /// "Upload next" (`POST /api/jobs/<id>/next`).
    fn upload_next(&mut self, id: u64, now: u64) -> Result<(), String> {
        let mut job = self
            .current(id)
            .cloned()
            .ok_or_else(|| format!("no job {id}"))?;
        if !matches!(job.state, JobState::Queued | JobState::Retrying) || self.out.contains(&id) {
            return Err(format!(
                "job {id} is {}, only a queued or retrying job can go next",
                job.state.as_str()
            ));
        }
        log::info!(
            "{}{}: upload next, asked from the dashboard",
            self.project_prefix(&job),
            job.path
        );
        job.next_ms = Some(now);
        job.updated_ms = now;
        if self.commit(vec![job], now) {
            Ok(())
        } else {
            Err(self.not_recorded())
        }
    }

    /// The answer to a person whose request is kept but not yet recorded.
    fn not_recorded(&self) -> String {
        let why = self.outage.as_ref().map_or("", |o| o.reason.as_str());
        format!("cannot write the ledger ({why}): kept, and done once it can be written")
    }

    fn retry_failed(&mut self, now: u64) -> usize {
        let failed: Vec<Job> = self
            .ledger
            .jobs()
            .keys()
            .chain(self.unrecorded.keys())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .filter_map(|&id| self.current(id))
            .filter(|j| j.state == JobState::Failed)
            .cloned()
            .collect();
        let mut jobs = Vec::new();
        for mut job in failed {
            if self.requeue(&mut job).is_ok() {
                job.updated_ms = now;
                jobs.push(job);
            }
        }
        let n = jobs.len();
        if self.commit(jobs, now) {
            n
        } else {
            0
        }
    }

    /// Back to `queued` with a fresh attempt count, at a place decided now.
    fn requeue(&mut self, job: &mut Job) -> Result<(), String> {
        self.make_queued(job);
        if job.state != JobState::Queued {
            return Err(job.reason.clone().unwrap_or_default());
        }
        job.attempts = 0;
        self.place.remove(&job.id);
        Ok(())
    }

    fn enqueue(
        &mut self,
        paths: &[PathBuf],
        project: Option<&str>,
        now: u64,
    ) -> Vec<Result<u64, String>> {
        let mut results = Vec::with_capacity(paths.len());
        let mut batch = Batch::default();
        for path in paths {
            results.push(self.enqueue_one(&mut batch, project, path, now));
        }
        if !self.commit(batch.jobs.into_values().collect(), now) {
            let err = self.not_recorded();
            return results.into_iter().map(|_| Err(err.clone())).collect();
        }
        if let Some(only) = &mut self.only {
            only.extend(results.iter().flatten());
        }
        results
    }

    /// The project and the root-relative path of a path to enqueue: an absolute path is in
    /// the project whose root holds it; a relative one in `project`'s root (which may be left
    /// out when there is one project).
    fn locate(
        &self,
        project: Option<&str>,
        path: &Path,
    ) -> Result<(String, String, PathBuf), String> {
        let projects = &self.settings.projects;
        let candidates: Vec<&QueueProject> = match project {
            Some(name) => vec![self.settings.project(name).ok_or_else(|| {
                format!(
                    "project: no project named {name:?} (projects: {})",
                    names(projects)
                )
            })?],
            None if path.is_absolute() || projects.len() == 1 => projects.iter().collect(),
            None => {
                return Err(format!(
                    "project: required for a relative path when there are several projects ({})",
                    names(projects)
                ))
            }
        };
        let outside = || {
            if projects.len() == 1 {
                "outside watch.root".to_string()
            } else {
                "outside every project's root".to_string()
            }
        };
        for p in candidates {
            let root = std::fs::canonicalize(&p.root)
                .map_err(|e| format!("{}: root {}: {e}", p.name, p.root.display()))?;
            let full = if path.is_absolute() {
                path.to_path_buf()
            } else {
                p.root.join(path)
            };
            // Canonical paths on both sides: no `..` and no symlink can lead out of the root.
            let full =
                std::fs::canonicalize(&full).map_err(|e| format!("{}: {e}", path.display()))?;
            let Ok(rel) = full.strip_prefix(&root) else {
                continue;
            };
            let rel = rel_string(rel).ok_or_else(outside)?;
            return Ok((p.name.clone(), rel, full));
        }
        Err(outside())
    }

    fn enqueue_one(
        &mut self,
        batch: &mut Batch,
        project: Option<&str>,
        path: &Path,
        now: u64,
    ) -> Result<u64, String> {
        let (project, rel, full) = self.locate(project, path)?;
        let meta = std::fs::metadata(&full).map_err(|e| format!("{}: {e}", path.display()))?;
        if !meta.is_file() {
            return Err(format!("{}: not a file", path.display()));
        }
        let file = FileVersion {
            path: rel,
            size: meta.len(),
            mtime_ns: mtime_ns(&meta),
        };
        if let Some(j) = self.latest(batch, &project, &file.path) {
            if same_version(j, &file) {
                match j.state {
                    JobState::Failed | JobState::Skipped => {
                        let mut j = j.clone();
                        self.requeue(&mut j)?;
                        j.updated_ms = now;
                        let id = j.id;
                        batch.jobs.insert(id, j);
                        return Ok(id);
                    }
                    JobState::Waiting => {}
                    // Already queued, uploading or done: that is the job.
                    _ => return Ok(j.id),
                }
            }
        }
        let layout = &self.settings.project(&project).expect("located").layout;
        if let Destination::Skip(reason) = layout.destination(&file.path) {
            return Err(reason);
        }
        self.record(batch, &project, file.clone(), Target::Queued, now);
        self.latest(batch, &project, &file.path)
            .map(|j| j.id)
            .ok_or_else(|| "internal: no job after enqueue".into())
    }

    // ---- workers ----

    fn attempt(&mut self, update: AttemptUpdate, now: u64) {
        let id = match &update {
            AttemptUpdate::Started { id, .. }
            | AttemptUpdate::FileCreated { id, .. }
            | AttemptUpdate::UnknownFile { id, .. }
            | AttemptUpdate::Processing { id, .. }
            | AttemptUpdate::Done { id, .. }
            | AttemptUpdate::Failed { id, .. } => *id,
        };
        let Some(mut job) = self.current(id).cloned() else {
            log::warn!("an upload worker reported on job {id}, which does not exist");
            return;
        };
        let ended = match &update {
            AttemptUpdate::Done { .. } => Some(true),
            AttemptUpdate::Failed { .. } => Some(false),
            _ => None,
        };
        match update {
            AttemptUpdate::Started { mode, .. } => {
                log::debug!("{}: attempt {} ({mode})", job.path, job.attempts + 1);
                self.modes.insert(id, mode);
                self.handed_out(id);
                job.state = JobState::Uploading;
                job.attempts += 1;
                job.next_attempt_ms = None;
                job.times_mut().started_ms = Some(now);
                job.times_mut().sent_ms = None;
                job.next_ms = None;
                // What an earlier attempt proved says nothing of this one.
                job.verified = None;
                job.sha256 = None;
            }
            AttemptUpdate::FileCreated {
                file_id,
                unknown_file,
                ..
            } => {
                job.file_id = Some(file_id);
                job.unknown_file = unknown_file;
            }
            AttemptUpdate::UnknownFile { possible, .. } if possible == job.unknown_file => return,
            AttemptUpdate::UnknownFile { possible, .. } => job.unknown_file = possible,
            AttemptUpdate::Processing {
                all_in_ms,
                verified,
                ..
            } => {
                job.verified = verified;
                self.out.remove(&id);
                self.watching.insert(id);
                if self.watching.len() == self.settings.max_processing {
                    log::info!(
                        "{} uploads are waiting for Frame.io to finish processing them: no new \
                         upload starts until one does",
                        self.watching.len()
                    );
                }
                job.state = JobState::Processing;
                job.all_in_ms = Some(all_in_ms);
                job.times_mut().sent_ms = Some(all_in_ms);
            }
            AttemptUpdate::Done {
                file_id,
                view_url,
                verified,
                sha256,
                ..
            } => {
                if verified.is_some() {
                    job.verified = verified;
                }
                job.sha256 = sha256;
                self.out.remove(&id);
                self.watching.remove(&id);
                job.all_in_ms = None;
                job.state = JobState::Done;
                job.file_id = Some(file_id);
                job.unknown_file = false;
                job.view_url = view_url;
                job.reason = None;
                if job.stack.is_none() {
                    if let Some(p) = self.settings.project(&job.project) {
                        job.stack = stack::after_upload(&p.layout, &job);
                    }
                }
            }
            AttemptUpdate::Failed { error, kind, .. } => {
                job.verified = None;
                job.sha256 = None;
                self.out.remove(&id);
                self.watching.remove(&id);
                job.all_in_ms = None;
                self.failed(&mut job, error, kind, now);
            }
        }
        job.updated_ms = now;
        self.commit(vec![job], now);
        if let Some(ok) = ended {
            // After the ledger write, like every event. An adopted file never started an
            // attempt in this run and has no mode: it counts as neither.
            if let Some(mode) = self.modes.remove(&id) {
                let project = self.current(id).map(|j| j.project.clone());
                self.hub.publish(Event::AttemptEnded {
                    job: id,
                    project: project.unwrap_or_default(),
                    mode,
                    ok,
                });
            }
        }
    }

    /// Sets `unknown_file` before a create call, and answers `written` once the ledger has it
    /// (at once, or when the unrecorded changes are written: the worker waits until then).
    fn creating(&mut self, id: u64, written: Sender<bool>, now: u64) {
        let Some(mut job) = self.current(id).cloned() else {
            log::warn!("an upload worker is creating a file for job {id}, which does not exist");
            let _ = written.send(false);
            return;
        };
        let on_disk = self.ledger.get(id).is_some_and(|j| j.unknown_file);
        if !job.unknown_file {
            job.unknown_file = true;
            job.updated_ms = now;
            if self.commit(vec![job], now) {
                let _ = written.send(true);
                return;
            }
        } else if on_disk {
            let _ = written.send(true);
            return;
        }
        log::info!("job {id}: its Frame.io file is created once the ledger can record it");
        self.creates_waiting.push(written);
    }

    fn failed(&mut self, job: &mut Job, error: String, kind: FailureKind, now: u64) {
        match kind {
            FailureKind::Retry if job.attempts >= self.settings.max_attempts => {
                job.state = JobState::Failed;
                job.reason = Some(format!("gave up after {} attempts: {error}", job.attempts));
                job.next_attempt_ms = None;
            }
            FailureKind::Retry => {
                let delay = backoff(
                    job.attempts,
                    self.settings.base_delay,
                    self.settings.max_delay,
                    self.random_unit(),
                );
                job.state = JobState::Retrying;
                job.next_attempt_ms = Some(now + delay.as_millis() as u64);
                log::debug!(
                    "{}: attempt {} failed ({error}); next in {:.0} s",
                    job.path,
                    job.attempts,
                    delay.as_secs_f64()
                );
                job.reason = Some(error);
            }
            FailureKind::WaitForAuth => {
                job.state = JobState::Queued;
                job.attempts = job.attempts.saturating_sub(1);
                job.next_attempt_ms = None;
                job.reason = Some(format!("waiting for Frame.io login: {error}"));
                self.auth_held = true;
            }
            FailureKind::Permanent => {
                job.state = JobState::Failed;
                job.reason = Some(error);
                job.next_attempt_ms = None;
            }
            FailureKind::FileChanged => {
                job.state = JobState::Skipped;
                job.reason = Some(format!(
                    "file changed during upload ({error}); its new version is a new job"
                ));
                job.next_attempt_ms = None;
            }
        }
    }

    // ---- version stacks ----

    fn stacked(&mut self, update: StackUpdate, now: u64) {
        let Some(mut job) = self.current(update.id).cloned() else {
            log::warn!(
                "the stacker reported on job {}, which does not exist",
                update.id
            );
            return;
        };
        if !update.neighbour && update.stacking.state != StackState::Pending {
            if let Some(stacks) = self.stacks.get_mut(&job.project) {
                stacks.finished(update.id);
            }
        }
        let stacking = match (update.neighbour, job.stack.as_deref()) {
            (false, _) => update.stacking,
            (true, Some(current)) => match stack::neighbours_changed(current, &update.stacking) {
                Some(s) => s,
                None => return,
            },
            (true, None) => return,
        };
        if job.state != JobState::Done || job.stack.as_deref() == Some(&stacking) {
            return;
        }
        job.stack = Some(Box::new(stacking));
        job.updated_ms = now;
        self.commit(vec![job], now);
    }

    fn reviewed(&mut self, id: u64, review: Review, now: u64) {
        let Some(mut job) = self.current(id).cloned() else {
            return;
        };
        if job.review == review {
            return;
        }
        // `updated_ms` stays: it says when the upload itself last changed (history, order).
        job.review = review;
        self.commit(vec![job], now);
    }

    fn retry_stack(&mut self, id: u64, now: u64) -> Result<(), String> {
        let mut job = self
            .current(id)
            .cloned()
            .ok_or_else(|| format!("no job {id}"))?;
        let stacking = job
            .stack
            .as_ref()
            .filter(|_| job.state == JobState::Done)
            .ok_or_else(|| format!("job {id} is not a version that was uploaded"))?;
        let again = stack::retried(stacking).map_err(|e| format!("job {id}: {e}"))?;
        job.stack = Some(Box::new(again));
        job.updated_ms = now;
        if self.commit(vec![job], now) {
            log::info!("job {id}: stacking it again, as asked");
            Ok(())
        } else {
            Err(self.not_recorded())
        }
    }

    /// Hands the stacker the versions whose turn it is, and records what the others wait for.
    fn dispatch_stacks(&mut self, now: u64) {
        let jobs = self.ledger.jobs();
        let waiting: Vec<Job> = self
            .stacks
            .values_mut()
            .flat_map(|stacks| stacks.dispatch(jobs))
            .collect();
        if !waiting.is_empty() {
            let waiting = waiting
                .into_iter()
                .map(|mut j| {
                    j.updated_ms = now;
                    j
                })
                .collect();
            self.commit(waiting, now);
        }
    }

    /// xorshift64*: jitter needs spread, not secrecy.
    fn random_unit(&mut self) -> f64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }

    // ---- ledger, index and hub ----

    /// Ledger first, then the scheduler's indexes, then the hub. `false` if the write failed:
    /// then the changes are kept with the others not recorded yet, written with the next try
    /// (see the module doc), and nobody hears of them before.
    fn commit(&mut self, jobs: Vec<Job>, now: u64) -> bool {
        if jobs.is_empty() {
            return true;
        }
        for mut job in jobs {
            self.stamp(&mut job, now);
            // A new job's path leads to it at once, recorded or not (a file is one job).
            let key = (job.project.clone(), job.path.clone());
            let latest = self.by_path.entry(key).or_insert(job.id);
            *latest = (*latest).max(job.id);
            self.unrecorded.insert(job.id, job);
        }
        self.record_unrecorded(now)
    }

    /// Writes every unrecorded change in one batch; on success publishes them, answers the
    /// workers waiting to create, and ends an outage. `false` while the ledger cannot be
    /// written.
    fn record_unrecorded(&mut self, now: u64) -> bool {
        if self.unrecorded.is_empty() {
            return true;
        }
        let jobs: Vec<Job> = self.unrecorded.values().cloned().collect();
        if let Err(e) = self.ledger.write(&jobs) {
            self.ledger_down(e, now);
            return false;
        }
        self.unrecorded.clear();
        if self.outage.is_some() {
            // The journal took it (an open file may still be written where new files are
            // refused, as on a read-only bind): the outage ends only when a new file can be
            // written too, or it would be said to end and begin again at every change.
            let dir = self.ledger.path().parent().unwrap_or(Path::new("."));
            match crate::statedir::probe_writable(dir) {
                Ok(()) => self.ledger_up(jobs.len()),
                Err(e) => self.ledger_down(e, now),
            }
        }
        for job in jobs {
            self.index(&job, now);
            if job.state == JobState::Queued && job.attempts == 0 && job.reason.is_none() {
                log::info!(
                    "queued {}{} ({}) for {}",
                    self.project_prefix(&job),
                    job.path,
                    crate::human::size(job.size),
                    if job.folder.is_empty() {
                        "the project root".to_string()
                    } else {
                        job.folder.clone()
                    }
                );
            }
            self.hub.publish(Event::JobChanged(job));
        }
        for written in self.creates_waiting.drain(..) {
            let _ = written.send(true);
        }
        self.dispatch_stacks(now);
        true
    }

    /// A write or a probe failed: the first failure (and a new kind of error) is logged and
    /// published (the `state_dir` component goes down); each one pushes the next try further,
    /// up to [`UNRECORDED_RETRY_MAX`].
    fn ledger_down(&mut self, e: std::io::Error, now: u64) {
        let reason = format!("{}: {e}", self.ledger.path().display());
        let failures = self.outage.as_ref().map_or(0, |o| o.failures) + 1;
        let wait = UNRECORDED_RETRY
            .checked_mul(1 << failures.saturating_sub(1).min(16))
            .unwrap_or(UNRECORDED_RETRY_MAX)
            .min(UNRECORDED_RETRY_MAX);
        if self.outage.as_ref().map(|o| o.kind) != Some(e.kind()) {
            log::error!(
                "state dir cannot be written ({reason}): job changes are kept in memory and \
                 recorded as soon as it can be written again; uploads are paused until then"
            );
            self.hub.publish(Event::Component {
                name: "state_dir",
                state: ComponentState::Down,
                detail: format!("cannot be written: {reason}"),
            });
        }
        self.outage = Some(Outage {
            reason,
            kind: e.kind(),
            failures,
            retry_at: now + wait.as_millis() as u64,
        });
    }

    /// A write or a probe worked: an outage ends (said once, and published).
    fn ledger_up(&mut self, recorded: usize) {
        let Some(outage) = self.outage.take() else {
            return;
        };
        log::info!(
            "state dir {} can be written again: {recorded} job change(s) kept meanwhile are \
             recorded (after {} failed tries); uploads go on",
            state_dir_detail(self.ledger.path()),
            outage.failures
        );
        self.hub.publish(Event::Component {
            name: "state_dir",
            state: ComponentState::Up,
            detail: state_dir_detail(self.ledger.path()),
        });
    }

    /// `<project>: ` when there are several projects, for log lines naming a file.
    fn project_prefix(&self, job: &Job) -> String {
        if self.settings.projects.len() > 1 || job.project != crate::config::DEFAULT_PROJECT {
            format!("{}: ", job.project)
        } else {
            String::new()
        }
    }

    /// The history's times: when a job first became `queued`, and when it finished (kept
    /// while it stays finished; cleared when it is retried).
    fn stamp(&self, job: &mut Job, now: u64) {
        let times = job.times();
        if job.state == JobState::Queued && times.stable_ms.is_none() {
            job.times_mut().stable_ms = Some(now);
        }
        if !job.state.is_final() {
            if times.finished_ms.is_some() {
                job.times_mut().finished_ms = None;
            }
        } else if times.finished_ms.is_none()
            && self.current(job.id).is_none_or(|j| !j.state.is_final())
        {
            job.times_mut().finished_ms = Some(now);
        }
    }

    fn unschedule(&mut self, id: u64) {
        if let Some((project, key)) = self.ready_in.remove(&id) {
            if let Some(line) = self.ready.get_mut(&project) {
                line.remove(&(key, id));
                if line.is_empty() {
                    self.ready.remove(&project);
                }
            }
        }
        self.pinned.retain(|&(_, p)| p != id);
        if let Some(due) = self.due.remove(&id) {
            self.timed.remove(&(due, id));
        }
    }

    fn index(&mut self, job: &Job, now: u64) {
        if let Some(stacks) = self.stacks.get_mut(&job.project) {
            stacks.observe(job);
        }
        self.history.observe(job);
        let key = (job.project.clone(), job.path.clone());
        match self.by_path.get_mut(&key) {
            Some(latest) => *latest = (*latest).max(job.id),
            None => {
                self.by_path.insert(key, job.id);
            }
        }
        self.unschedule(job.id);
        let configured = self.settings.project(&job.project).is_some();
        match job.state {
            // A worker holds it (changes before its `Started`, such as the search's
            // `UnknownFile`, must not offer it a second time).
            JobState::Queued | JobState::Retrying if self.out.contains(&job.id) => {}
            // A project removed from the config: its jobs stay as they are, never handed out.
            JobState::Queued | JobState::Retrying if !configured => {}
            // Queued, or retrying and asked to go next (its wait is over).
            JobState::Queued => {
                let place = *self.place.entry(job.id).or_insert(now);
                self.make_ready(job, place);
            }
            JobState::Retrying if job.next_ms.is_some() => {
                let place = *self.place.entry(job.id).or_insert(now);
                self.make_ready(job, place);
            }
            JobState::Retrying => {
                self.place.entry(job.id).or_insert(now);
                let due = job.next_attempt_ms.unwrap_or(now);
                self.timed.insert((due, job.id));
                self.due.insert(job.id, due);
            }
            JobState::Waiting => {}
            JobState::Uploading | JobState::Processing => {}
            JobState::Done | JobState::Failed | JobState::Skipped => {
                self.place.remove(&job.id);
                self.out.remove(&job.id);
                self.watching.remove(&job.id);
            }
        }
    }
}

enum Target {
    Baseline,
    Waiting(String),
    Queued,
}

/// Why a job of a project that is no longer in the config is not uploaded.
fn removed_project(name: &str) -> String {
    format!("its project {name:?} is no longer in the config")
}

fn names(projects: &[QueueProject]) -> String {
    projects
        .iter()
        .map(|p| p.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `state_dir` component's detail while it is up: the dir that holds the ledger.
fn state_dir_detail(ledger: &Path) -> String {
    ledger
        .parent()
        .map_or_else(|| ledger.display().to_string(), |d| d.display().to_string())
}

fn same_version(job: &Job, file: &FileVersion) -> bool {
    job.size == file.size && job.mtime_ns == file.mtime_ns
}

/// A relative path as the ledger spells it: `/`-separated normal components only.
pub fn rel_string(rel: &Path) -> Option<String> {
    let mut parts = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(p) => parts.push(p.to_str()?),
            _ => return None,
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// Modification time in nanoseconds since the Unix epoch (negative before it).
pub fn mtime_ns(meta: &std::fs::Metadata) -> i64 {
    match meta.modified() {
        Ok(t) => match t.duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_nanos() as i64,
            Err(e) => -(e.duration().as_nanos() as i64),
        },
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testutil::TempDir;

    const T0: u64 = 1_700_000_000_000;

    fn settings(dir: &Path, concurrency: usize, max_attempts: u32) -> QueueSettings {
        QueueSettings {
            projects: vec![QueueProject {
                name: "default".into(),
                root: dir.to_path_buf(),
                layout: Layout::new("", None, None, false).unwrap(),
                stacker: None,
            }],
            concurrency,
            max_processing: MAX_PROCESSING,
            max_attempts,
            base_delay: BASE_DELAY,
            max_delay: Duration::from_secs(60),
            only_enqueued: false,
            order: UploadOrder::Oldest,
        }
    }

    /// News from the watcher of the project `default`.
    fn seen(news: Vec<FileNews>) -> QueueMsg {
        QueueMsg::FilesSeen {
            project: "default".into(),
            news,
        }
    }

    /// The newest job of `path` in the project `default`.
    fn id_of(q: &Queue, path: &str) -> u64 {
        q.by_path[&("default".to_string(), path.to_string())]
    }

    fn queue(dir: &TempDir, concurrency: usize, max_attempts: u32) -> Queue {
        let (ledger, _) = Ledger::open(&dir.0.join("jobs")).unwrap();
        let (hub, _) = Hub::new();
        Queue::new(ledger, settings(&dir.0, concurrency, max_attempts), hub, T0)
    }

    fn file(path: &str, size: u64) -> FileVersion {
        FileVersion {
            path: path.into(),
            size,
            mtime_ns: 42,
        }
    }

    fn stable(q: &mut Queue, path: &str, now: u64) -> u64 {
        q.handle(seen(vec![FileNews::Stable(file(path, 10))]), now);
        id_of(q, path)
    }

    fn job(q: &Queue, id: u64) -> Job {
        q.ledger().get(id).cloned().unwrap()
    }

    /// What a worker does: take the next job and start it.
    fn take(q: &mut Queue, now: u64) -> Option<u64> {
        let id = q.next_job(now)?.id;
        q.handed_out(id);
        q.handle(
            QueueMsg::Attempt(AttemptUpdate::Started { id, mode: "local" }),
            now,
        );
        Some(id)
    }

    fn fail(q: &mut Queue, id: u64, kind: FailureKind, now: u64) {
        q.handle(
            QueueMsg::Attempt(AttemptUpdate::Failed {
                id,
                error: "boom".into(),
                kind,
            }),
            now,
        );
    }

    fn next(q: &mut Queue, id: u64, now: u64) -> Result<(), String> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        q.handle(QueueMsg::Next { id, reply: tx }, now);
        rx.recv().unwrap()
    }

    #[test]
    fn upload_next_puts_the_last_of_100_first_and_the_ledger_keeps_it() {
        let dir = TempDir::new();
        let mut q = queue(&dir, 1, 3);
        let ids: Vec<u64> = (0..100)
            .map(|i| stable(&mut q, &format!("f{i:03}.mov"), T0 + i))
            .collect();
        let last = ids[99];
        next(&mut q, last, T0 + 200).unwrap();
        assert!(job(&q, last).next_ms.is_some());
        // A restart reads it from the ledger.
        drop(q);
        let mut q = queue(&dir, 1, 3);
        assert_eq!(take(&mut q, T0 + 300), Some(last));
        assert_eq!(job(&q, last).next_ms, None, "cleared once it started");
        q.handle(
            QueueMsg::Attempt(AttemptUpdate::Done {
                id: last,
                file_id: "f".into(),
                view_url: None,
                verified: None,
                sha256: None,
            }),
            T0 + 301,
        );
        // Then the line as it was.
        assert_eq!(take(&mut q, T0 + 302), Some(ids[0]));
        // Not for a job uploading or done.
        assert!(next(&mut q, ids[0], T0 + 303)
            .unwrap_err()
            .contains("only a queued or retrying job"));
        assert!(next(&mut q, last, T0 + 303)
            .unwrap_err()
            .contains("is done"));
        assert!(next(&mut q, 9999, T0 + 303)
            .unwrap_err()
            .starts_with("no job"));
    }

    #[test]
    fn a_retrying_job_asked_to_go_next_does_not_wait_for_its_backoff() {
        let dir = TempDir::new();
        let mut q = queue(&dir, 1, 5);
        let a = stable(&mut q, "a.mov", T0);
        let b = stable(&mut q, "b.mov", T0 + 1);
        assert_eq!(take(&mut q, T0 + 2), Some(a));
        fail(&mut q, a, FailureKind::Retry, T0 + 3);
        next(&mut q, a, T0 + 4).unwrap();
        assert_eq!(
            take(&mut q, T0 + 5),
            Some(a),
            "before b, and before its due time"
        );
        let _ = b;
    }

    #[test]
    fn upload_order_smallest_and_newest() {
        for (order, want) in [
            (UploadOrder::Oldest, ["big.mov", "small.mov", "mid.mov"]),
            (UploadOrder::Smallest, ["small.mov", "mid.mov", "big.mov"]),
            (UploadOrder::Newest, ["mid.mov", "small.mov", "big.mov"]),
        ] {
            let dir = TempDir::new();
            let (ledger, _) = Ledger::open(&dir.0.join("jobs")).unwrap();
            let (hub, _) = Hub::new();
            let mut settings = settings(&dir.0, 1, 3);
            settings.order = order;
            let mut q = Queue::new(ledger, settings, hub, T0);
            for (i, (path, size)) in [("big.mov", 300), ("small.mov", 100), ("mid.mov", 200)]
                .into_iter()
                .enumerate()
            {
                q.handle(
                    seen(vec![FileNews::Stable(file(path, size))]),
                    T0 + i as u64,
                );
            }
            let mut got = Vec::new();
            for n in 0..3 {
                let id = take(&mut q, T0 + 10 + n).unwrap();
                got.push(job(&q, id).path);
                q.handle(
                    QueueMsg::Attempt(AttemptUpdate::Done {
                        id,
                        file_id: format!("f{n}"),
                        view_url: None,
                        verified: None,
                        sha256: None,
                    }),
                    T0 + 10 + n,
                );
            }
            assert_eq!(got, want, "{order:?}");
        }
    }

    #[test]
    fn backoff_grows_and_caps_with_full_jitter() {
        let cap = Duration::from_secs(1800);
        let top: Vec<u64> = (1..=12)
            .map(|n| backoff(n, BASE_DELAY, cap, 1.0).as_secs())
            .collect();
        assert_eq!(
            top,
            [5, 10, 20, 40, 80, 160, 320, 640, 1280, 1800, 1800, 1800]
        );
        assert_eq!(backoff(3, BASE_DELAY, cap, 0.0), Duration::ZERO);
        assert_eq!(backoff(3, BASE_DELAY, cap, 0.5), Duration::from_secs(10));
        assert_eq!(
            backoff(500, BASE_DELAY, cap, 0.25),
            Duration::from_secs(450)
        );
    }

    #[test]
    fn attempts_back_off_then_end_in_failed_and_a_manual_retry_starts_afresh() {
        let dir = TempDir::new();
        let mut q = queue(&dir, 2, 3);
        let id = stable(&mut q, "a.mov", T0);
        let mut now = T0;
        for attempt in 1..=2 {
            assert_eq!(take(&mut q, now), Some(id));
            assert_eq!(job(&q, id).attempts, attempt);
            fail(&mut q, id, FailureKind::Retry, now);
            let j = job(&q, id);
            assert_eq!(j.state, JobState::Retrying);
            assert_eq!(j.reason.as_deref(), Some("boom"));
            let due = j.next_attempt_ms.unwrap();
            let ceiling = 5_000 * (1 << (attempt - 1));
            assert!(
                due >= now && due <= now + ceiling,
                "attempt {attempt}: {due}"
            );
            if due > now {
                assert!(q.next_job(due - 1).is_none(), "not before it is due");
                assert_eq!(q.next_wake(), Some(due));
            }
            now = due;
        }
        assert_eq!(take(&mut q, now), Some(id));
        fail(&mut q, id, FailureKind::Retry, now);
        let j = job(&q, id);
        assert_eq!(j.state, JobState::Failed);
        assert_eq!(j.reason.as_deref(), Some("gave up after 3 attempts: boom"));
        assert!(q.next_job(now + 10_000_000).is_none());

        let (tx, rx) = crossbeam_channel::bounded(1);
        q.handle(QueueMsg::Retry { id, reply: tx }, now);
        assert_eq!(rx.recv().unwrap(), Ok(()));
        assert_eq!(job(&q, id).state, JobState::Queued);
        assert_eq!(job(&q, id).attempts, 0);
        assert_eq!(take(&mut q, now), Some(id));

        let (tx, rx) = crossbeam_channel::bounded(1);
        q.handle(QueueMsg::Retry { id, reply: tx }, now);
        assert!(rx.recv().unwrap().unwrap_err().contains("uploading"));
    }

    #[test]
    fn permanent_and_file_changed_failures_end_the_job_at_once() {
        let dir = TempDir::new();
        let mut q = queue(&dir, 2, 10);
        let a = stable(&mut q, "a.mov", T0);
        let b = stable(&mut q, "b.mov", T0 + 1);
        take(&mut q, T0);
        take(&mut q, T0);
        fail(&mut q, a, FailureKind::Permanent, T0);
        fail(&mut q, b, FailureKind::FileChanged, T0);
        assert_eq!(job(&q, a).state, JobState::Failed);
        assert_eq!(job(&q, b).state, JobState::Skipped);
        assert!(job(&q, b).reason.unwrap().contains("file changed"));
        let (tx, rx) = crossbeam_channel::bounded(1);
        q.handle(QueueMsg::RetryFailed { reply: tx }, T0);
        assert_eq!(rx.recv().unwrap(), 1);
        assert_eq!(job(&q, a).state, JobState::Queued);
    }

    #[test]
    fn at_most_concurrency_jobs_are_out_oldest_stable_first() {
        let dir = TempDir::new();
        let mut q = queue(&dir, 2, 10);
        let c = stable(&mut q, "c.mov", T0);
        let a = stable(&mut q, "a.mov", T0 + 1);
        let b = stable(&mut q, "b.mov", T0 + 2);
        assert_eq!(take(&mut q, T0 + 3), Some(c));
        assert_eq!(take(&mut q, T0 + 3), Some(a));
        assert_eq!(take(&mut q, T0 + 3), None, "two out at once");
        q.handle(
            QueueMsg::Attempt(AttemptUpdate::Done {
                id: c,
                file_id: "f-c".into(),
                view_url: None,
                verified: None,
                sha256: None,
            }),
            T0 + 4,
        );
        assert_eq!(job(&q, c).state, JobState::Done);
        assert_eq!(take(&mut q, T0 + 5), Some(b));
    }

    #[test]
    fn pause_and_resume_lose_nothing() {
        let dir = TempDir::new();
        let mut q = queue(&dir, 1, 10);
        let a = stable(&mut q, "a.mov", T0);
        let b = stable(&mut q, "b.mov", T0 + 1);
        q.handle(QueueMsg::Pause, T0);
        assert!(q.next_job(T0).is_none());
        let (tx, rx) = crossbeam_channel::bounded(1);
        q.handle(QueueMsg::Stats(tx), T0);
        let stats = rx.recv().unwrap();
        assert!(stats.paused);
        assert_eq!(stats.counts[&JobState::Queued], 2);
        q.handle(QueueMsg::Resume, T0);
        assert_eq!(take(&mut q, T0), Some(a));
        q.handle(QueueMsg::Pause, T0);
        // The job already out finishes while paused.
        q.handle(
            QueueMsg::Attempt(AttemptUpdate::Done {
                id: a,
                file_id: "f".into(),
                view_url: None,
                verified: None,
                sha256: None,
            }),
            T0,
        );
        assert!(q.next_job(T0).is_none());
        q.handle(QueueMsg::Resume, T0);
        assert_eq!(take(&mut q, T0), Some(b));
    }

    #[test]
    fn waiting_for_auth_does_not_count_the_attempt_and_holds_until_auth_is_back() {
        let dir = TempDir::new();
        let mut q = queue(&dir, 2, 10);
        let a = stable(&mut q, "a.mov", T0);
        stable(&mut q, "b.mov", T0 + 1);
        take(&mut q, T0);
        fail(&mut q, a, FailureKind::WaitForAuth, T0);
        let j = job(&q, a);
        assert_eq!((j.state, j.attempts), (JobState::Queued, 0));
        assert!(q.next_job(T0).is_none(), "held");
        q.handle(QueueMsg::AuthRestored, T0);
        assert_eq!(q.next_job(T0).map(|j| j.id), Some(a), "keeps its place");
    }

    fn created(q: &mut Queue, id: u64, file_id: &str) {
        q.handle(
            QueueMsg::Attempt(AttemptUpdate::FileCreated {
                id,
                file_id: file_id.into(),
                unknown_file: false,
            }),
            T0,
        );
    }

    fn all_in(q: &mut Queue, id: u64, now: u64) {
        q.handle(
            QueueMsg::Attempt(AttemptUpdate::Processing {
                id,
                all_in_ms: now,
                verified: None,
            }),
            now,
        );
    }

    fn history(q: &mut Queue, query: history::Query) -> history::Page {
        let (reply, rx) = crossbeam_channel::bounded(1);
        q.handle(QueueMsg::History { query, reply }, T0);
        rx.recv().unwrap()
    }

    #[test]
    fn a_finished_job_has_its_times_in_the_history_and_leaves_it_when_retried() {
        let dir = TempDir::new();
        let mut q = queue(&dir, 1, 10);
        let a = stable(&mut q, "a.mov", T0);
        assert_eq!(take(&mut q, T0 + 10), Some(a));
        all_in(&mut q, a, T0 + 20);
        q.handle(
            QueueMsg::Attempt(AttemptUpdate::Done {
                id: a,
                file_id: "f-a".into(),
                view_url: None,
                verified: None,
                sha256: None,
            }),
            T0 + 30,
        );
        let b = stable(&mut q, "b.mov", T0 + 40);
        take(&mut q, T0 + 40);
        fail(&mut q, b, FailureKind::Permanent, T0 + 50);
        let all = history::Query {
            page_size: 10,
            count: true,
            ..Default::default()
        };
        let page = history(&mut q, all.clone());
        assert_eq!(page.total, 2);
        let ids: Vec<u64> = page.jobs.iter().map(|j| j.id).collect();
        assert_eq!(ids, [b, a], "newest first");
        let done = &page.jobs[1];
        let t = done.times();
        assert_eq!(
            (t.stable_ms, t.started_ms, t.sent_ms, t.finished_ms),
            (Some(T0), Some(T0 + 10), Some(T0 + 20), Some(T0 + 30))
        );
        // The times are in the ledger: a restart (a new queue on it) has the same history.
        drop(q);
        let mut q = queue(&dir, 1, 10);
        assert_eq!(history(&mut q, all.clone()).jobs[1], *done);
        let (reply, rx) = crossbeam_channel::bounded(1);
        q.handle(QueueMsg::Retry { id: b, reply }, T0 + 60);
        rx.recv().unwrap().unwrap();
        let page = history(&mut q, all);
        assert_eq!(page.total, 1, "a failed job retried is no longer history");
        assert_eq!(job(&q, b).times().finished_ms, None);
    }

    #[test]
    fn file_ids_are_recorded_at_once_and_a_crash_mid_upload_requeues_with_the_id() {
        let dir = TempDir::new();
        let id = {
            let mut q = queue(&dir, 2, 10);
            let id = stable(&mut q, "a.mov", T0);
            take(&mut q, T0);
            created(&mut q, id, "f-1");
            id
        }; // "crash": the queue is dropped without a word
        let (ledger, _) = Ledger::open(&dir.0.join("jobs")).unwrap();
        assert_eq!(ledger.get(id).unwrap().state, JobState::Uploading);
        assert_eq!(ledger.get(id).unwrap().file_id.as_deref(), Some("f-1"));
        drop(ledger);
        let mut q = queue(&dir, 2, 10);
        let j = job(&q, id);
        assert_eq!(j.state, JobState::Queued);
        assert_eq!(j.file_id.as_deref(), Some("f-1"));
        assert_eq!(j.attempts, 1);
        assert_eq!(q.next_job(T0).map(|j| j.id), Some(id));
    }

    #[test]
    fn a_job_whose_bytes_are_all_in_frees_its_slot_and_ends_like_any_attempt() {
        let dir = TempDir::new();
        let mut q = queue(&dir, 1, 10);
        let a = stable(&mut q, "a.mov", T0);
        let b = stable(&mut q, "b.mov", T0 + 1);
        let c = stable(&mut q, "c.mov", T0 + 2);
        assert_eq!(take(&mut q, T0), Some(a));
        assert_eq!(q.next_job(T0), None, "one slot");
        created(&mut q, a, "f-a");
        all_in(&mut q, a, T0 + 10);
        let j = job(&q, a);
        assert_eq!(
            (j.state, j.all_in_ms),
            (JobState::Processing, Some(T0 + 10))
        );
        assert_eq!(take(&mut q, T0 + 10), Some(b), "a processes, b goes up");
        assert_eq!(q.stats().in_flight, 1);
        assert_eq!(q.stats().counts[&JobState::Processing], 1);
        // The watch's verdicts: a is done, b (once processing) failed to process.
        q.handle(
            QueueMsg::Attempt(AttemptUpdate::Done {
                id: a,
                file_id: "f-a".into(),
                view_url: None,
                verified: None,
                sha256: None,
            }),
            T0 + 20,
        );
        assert_eq!(job(&q, a).state, JobState::Done);
        assert_eq!(job(&q, a).all_in_ms, None);
        all_in(&mut q, b, T0 + 20);
        assert_eq!(take(&mut q, T0 + 20), Some(c));
        fail(&mut q, b, FailureKind::Retry, T0 + 30);
        let j = job(&q, b);
        assert_eq!(
            (j.state, j.attempts, j.all_in_ms),
            (JobState::Retrying, 1, None)
        );
    }

    #[test]
    fn processing_jobs_are_bounded_and_pause_leaves_them_be() {
        let dir = TempDir::new();
        let (ledger, _) = Ledger::open(&dir.0.join("jobs")).unwrap();
        let (hub, _) = Hub::new();
        let mut settings = settings(&dir.0, 4, 10);
        settings.max_processing = 2;
        let mut q = Queue::new(ledger, settings, hub, T0);
        let ids: Vec<u64> = (0..4)
            .map(|i| stable(&mut q, &format!("{i}.mov"), T0 + i))
            .collect();
        for &id in &ids[..2] {
            assert_eq!(take(&mut q, T0), Some(id));
            all_in(&mut q, id, T0);
        }
        assert_eq!(q.next_job(T0), None, "two processing: the bound");
        q.handle(QueueMsg::Pause, T0);
        // The watch goes on while paused: a verdict still lands, and frees room.
        fail(&mut q, ids[0], FailureKind::Retry, T0);
        assert_eq!(job(&q, ids[0]).state, JobState::Retrying);
        assert_eq!(q.next_job(T0), None, "paused");
        q.handle(QueueMsg::Resume, T0);
        assert_eq!(q.next_job(T0).map(|j| j.id), Some(ids[2]));
    }

    #[test]
    fn a_restart_keeps_processing_jobs_processing_and_out_of_the_slots() {
        let dir = TempDir::new();
        let (processing, legacy) = {
            let mut q = queue(&dir, 1, 10);
            let a = stable(&mut q, "a.mov", T0);
            take(&mut q, T0);
            created(&mut q, a, "f-a");
            all_in(&mut q, a, T0 + 5);
            // A record from an older postflow: `processing` while a pull was still served.
            let mut old = job(&q, a);
            old.id = q.ledger.new_id();
            old.path = "old.mov".into();
            old.all_in_ms = None;
            q.ledger.write(&[old.clone()]).unwrap();
            (a, old.id)
        }; // kill -9
        let (ledger, _) = Ledger::open(&dir.0.join("jobs")).unwrap();
        let at_start: Vec<u64> = ledger
            .jobs()
            .values()
            .filter(|j| watched_at_start(j))
            .map(|j| j.id)
            .collect();
        assert_eq!(at_start, vec![processing], "what the status watch takes up");
        drop(ledger);
        let mut q = queue(&dir, 1, 10);
        let j = job(&q, processing);
        assert_eq!((j.state, j.all_in_ms), (JobState::Processing, Some(T0 + 5)));
        assert_eq!(j.file_id.as_deref(), Some("f-a"));
        assert_eq!(job(&q, legacy).state, JobState::Queued);
        assert_eq!(
            take(&mut q, T0 + 10),
            Some(legacy),
            "never handed out again, and holds no slot"
        );
        q.handle(
            QueueMsg::Attempt(AttemptUpdate::Done {
                id: processing,
                file_id: "f-a".into(),
                view_url: None,
                verified: None,
                sha256: None,
            }),
            T0 + 20,
        );
        assert_eq!(job(&q, processing).state, JobState::Done);
    }

    #[test]
    fn a_create_is_on_disk_before_it_is_sent_and_cleared_once_its_answer_is() {
        let dir = TempDir::new();
        let creating = |q: &mut Queue, id: u64| {
            let (tx, rx) = crossbeam_channel::bounded(1);
            q.handle(QueueMsg::Creating { id, written: tx }, T0);
            rx.recv().unwrap()
        };
        let (a, b) = {
            let mut q = queue(&dir, 2, 10);
            let a = stable(&mut q, "a.mov", T0);
            let b = stable(&mut q, "b.mov", T0);
            take(&mut q, T0);
            take(&mut q, T0);
            assert!(!job(&q, a).unknown_file, "a first attempt searches nothing");
            assert!(creating(&mut q, a), "written before the create goes out");
            assert!(creating(&mut q, b));
            q.handle(
                QueueMsg::Attempt(AttemptUpdate::FileCreated {
                    id: b,
                    file_id: "f-b".into(),
                    unknown_file: false,
                }),
                T0,
            );
            (a, b)
        }; // "crash" while a's create was out
        let mut q = queue(&dir, 2, 10);
        assert!(job(&q, a).unknown_file, "a's next attempt searches");
        assert!(
            !job(&q, b).unknown_file,
            "b's file is known: nothing to search"
        );
        // A create Frame.io refused cleanly, or a search that found everything.
        q.handle(
            QueueMsg::Attempt(AttemptUpdate::UnknownFile {
                id: a,
                possible: false,
            }),
            T0,
        );
        assert!(!job(&q, a).unknown_file);
    }

    #[test]
    fn changes_the_ledger_cannot_record_are_kept_and_held_back_until_it_can() {
        let dir = TempDir::new();
        let (ledger, _) = Ledger::open(&dir.0.join("jobs")).unwrap();
        let (hub, inbox) = Hub::new();
        let published = hub.subscribe(64);
        std::thread::spawn(move || crate::events::run_hub(inbox));
        let mut q = Queue::new(ledger, settings(&dir.0, 2, 10), hub, T0);
        let started = stable(&mut q, "started.mov", T0);
        assert_eq!(take(&mut q, T0), Some(started));

        q.ledger.fail_writes(Some(std::io::ErrorKind::StorageFull));
        let baseline = vec![FileNews::Present(file("old.mov", 10))];
        q.handle(seen(baseline), T0);
        let new = stable(&mut q, "new.mov", T0);
        // Seen again while still unrecorded: the same job, not a second one.
        assert_eq!(stable(&mut q, "new.mov", T0 + 1), new);
        let (tx, created) = crossbeam_channel::bounded(1);
        q.handle(
            QueueMsg::Creating {
                id: started,
                written: tx,
            },
            T0,
        );

        assert_eq!(
            q.next_job(T0 + 2),
            None,
            "nothing handed out while unrecorded"
        );
        assert!(
            created.try_recv().is_err(),
            "no create before its record is on disk"
        );
        let stats = q.stats();
        assert_eq!(stats.unrecorded, 3);
        assert!(stats.ledger_error.as_deref().unwrap().contains("simulated"));
        assert!(q.next_tick() <= T0 + 5_000, "a retry is due");
        let (ledger, _) = Ledger::open(&dir.0.join("jobs")).unwrap();
        assert!(ledger.get(new).is_none(), "not on disk yet");
        drop(ledger);

        q.ledger.fail_writes(None);
        q.tick(T0 + 10_000);
        assert_eq!(created.try_recv(), Ok(true), "the create goes out now");
        assert_eq!(q.stats().ledger_error, None);
        assert_eq!(job(&q, new).state, JobState::Queued);
        assert_eq!(job(&q, id_of(&q, "old.mov")).state, JobState::Skipped);
        assert!(job(&q, started).unknown_file);
        assert_eq!(q.next_job(T0 + 10_000).map(|j| j.id), Some(new));

        let mut states = Vec::new();
        while let Ok(event) = published.recv_timeout(Duration::from_secs(5)) {
            match &*event {
                Event::Component {
                    name: "state_dir",
                    state,
                    ..
                } => states.push(state.as_str()),
                Event::JobChanged(j) if j.id == new => states.push("new.mov recorded"),
                _ => {}
            }
            if states.len() == 3 {
                break;
            }
        }
        assert_eq!(
            states,
            ["down", "up", "new.mov recorded"],
            "down once, up once, and the job heard of only once recorded"
        );
    }

    #[test]
    fn a_job_a_worker_holds_is_not_offered_again_when_it_changes_before_it_starts() {
        let dir = TempDir::new();
        let mut q = queue(&dir, 2, 10);
        let a = stable(&mut q, "a.mov", T0);
        take(&mut q, T0);
        fail(&mut q, a, FailureKind::Retry, T0);
        let due = job(&q, a).next_attempt_ms.unwrap();
        // Handed out again; before it reports `Started`, the worker's search reports.
        assert_eq!(q.next_job(due).map(|j| j.id), Some(a));
        q.handed_out(a);
        q.handle(
            QueueMsg::Attempt(AttemptUpdate::UnknownFile {
                id: a,
                possible: true,
            }),
            due,
        );
        assert!(q.next_job(due + 1).is_none(), "a is out, not due again");
    }

    #[test]
    fn a_waiting_job_already_shows_its_destination_folder() {
        let dir = TempDir::new();
        let mut q = queue(&dir, 2, 10);
        q.handle(
            seen(vec![FileNews::Waiting {
                file: file("SQ01/render.mov", 7),
                reason: "size changing".into(),
            }]),
            T0,
        );
        let id = id_of(&q, "SQ01/render.mov");
        assert_eq!(job(&q, id).state, JobState::Waiting);
        assert_eq!(
            job(&q, id).folder,
            "SQ01",
            "the page shows where it will go"
        );
    }

    #[test]
    fn a_waiting_job_follows_its_file_and_vanishes_with_it() {
        let dir = TempDir::new();
        let mut q = queue(&dir, 2, 10);
        let waiting = |size, reason: &str| {
            seen(vec![FileNews::Waiting {
                file: file("a.mov", size),
                reason: reason.into(),
            }])
        };
        q.handle(waiting(1, "settling (1s left)"), T0);
        let id = id_of(&q, "a.mov");
        q.handle(waiting(5, "size changing"), T0);
        assert_eq!(id_of(&q, "a.mov"), id, "same job");
        assert_eq!(job(&q, id).size, 5);
        q.handle(
            seen(vec![FileNews::Vanished {
                path: "a.mov".into(),
            }]),
            T0,
        );
        assert_eq!(job(&q, id).state, JobState::Skipped);
        assert_eq!(job(&q, id).reason.as_deref(), Some(VANISHED_REASON));
        // Back with the same content (a share remounted): the same job lives again.
        q.handle(seen(vec![FileNews::Stable(file("a.mov", 5))]), T0);
        assert_eq!(job(&q, id).state, JobState::Queued);
        assert_eq!(q.ledger().jobs().len(), 1);
    }

    #[test]
    fn a_new_version_is_a_new_job_and_an_old_unsent_version_is_skipped() {
        let dir = TempDir::new();
        let mut q = queue(&dir, 2, 10);
        let first = stable(&mut q, "a.mov", T0);
        q.handle(seen(vec![FileNews::Stable(file("a.mov", 10))]), T0);
        assert_eq!(
            q.ledger().jobs().len(),
            1,
            "the same version twice is one job"
        );
        q.handle(seen(vec![FileNews::Stable(file("a.mov", 99))]), T0);
        let second = id_of(&q, "a.mov");
        assert_ne!(first, second);
        assert_eq!(job(&q, first).state, JobState::Skipped);
        assert_eq!(job(&q, second).state, JobState::Queued);
    }

    #[test]
    fn baseline_files_are_skipped_and_can_be_retried() {
        let dir = TempDir::new();
        let mut q = queue(&dir, 2, 10);
        q.handle(seen(vec![FileNews::Present(file("old.mov", 3))]), T0);
        let id = id_of(&q, "old.mov");
        assert_eq!(job(&q, id).state, JobState::Skipped);
        assert_eq!(job(&q, id).reason.as_deref(), Some(BASELINE_REASON));
        assert!(q.next_job(T0).is_none());
        let (tx, rx) = crossbeam_channel::bounded(1);
        q.handle(QueueMsg::Retry { id, reply: tx }, T0);
        assert_eq!(rx.recv().unwrap(), Ok(()));
        assert_eq!(q.next_job(T0).map(|j| j.id), Some(id));
    }

    #[test]
    fn enqueue_refuses_paths_outside_the_root() {
        let dir = TempDir::new();
        let root = dir.0.join("watch");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/a.mov"), b"data").unwrap();
        std::fs::write(dir.0.join("outside.mov"), b"data").unwrap();
        let (ledger, _) = Ledger::open(&dir.0.join("jobs")).unwrap();
        let (hub, _) = Hub::new();
        let mut q = Queue::new(ledger, settings(&root, 2, 10), hub, T0);
        let (tx, rx) = crossbeam_channel::bounded(1);
        let paths = vec![
            PathBuf::from("sub/a.mov"),
            root.join("sub/a.mov"),
            dir.0.join("outside.mov"),
            PathBuf::from("../outside.mov"),
        ];
        q.handle(
            QueueMsg::Enqueue {
                paths,
                project: None,
                reply: tx,
            },
            T0,
        );
        let results = rx.recv().unwrap();
        let id = *results[0].as_ref().unwrap();
        assert_eq!(results[1], Ok(id), "the same file is the same job");
        assert_eq!(results[2], Err("outside watch.root".into()));
        assert_eq!(results[3], Err("outside watch.root".into()));
        let j = job(&q, id);
        assert_eq!((j.path.as_str(), j.state), ("sub/a.mov", JobState::Queued));
        assert_eq!(j.folder, "sub");
    }

    #[test]
    fn a_one_off_upload_hands_out_only_what_was_enqueued_by_hand() {
        let dir = TempDir::new();
        let root = dir.0.join("watch");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("by-hand.mov"), b"data").unwrap();
        let (ledger, _) = Ledger::open(&dir.0.join("jobs")).unwrap();
        let (hub, _) = Hub::new();
        let mut settings = settings(&root, 2, 10);
        settings.only_enqueued = true;
        let mut q = Queue::new(ledger, settings, hub, T0);
        let seen = stable(&mut q, "seen-by-the-watcher.mov", T0);
        assert_eq!(q.next_job(T0), None, "the watcher's job waits for `run`");
        let (tx, rx) = crossbeam_channel::bounded(1);
        let paths = vec![PathBuf::from("by-hand.mov")];
        q.handle(
            QueueMsg::Enqueue {
                paths,
                project: None,
                reply: tx,
            },
            T0 + 1,
        );
        let by_hand = *rx.recv().unwrap()[0].as_ref().unwrap();
        assert_eq!(take(&mut q, T0 + 1), Some(by_hand));
        assert_eq!(q.next_job(T0 + 1), None);
        assert_eq!(job(&q, seen).state, JobState::Queued, "recorded, not lost");
    }

    /// A queue over two projects, `big` and `small`, each in its own folder of `dir`.
    fn two_projects(dir: &TempDir, concurrency: usize) -> Queue {
        let (ledger, _) = Ledger::open(&dir.0.join("jobs")).unwrap();
        let (hub, _) = Hub::new();
        let mut s = settings(&dir.0, concurrency, 10);
        s.projects = ["big", "small"]
            .iter()
            .map(|name| {
                std::fs::create_dir_all(dir.0.join(name)).unwrap();
                QueueProject {
                    name: name.to_string(),
                    root: dir.0.join(name),
                    layout: Layout::new("", None, None, false).unwrap(),
                    stacker: None,
                }
            })
            .collect();
        Queue::new(ledger, s, hub, T0)
    }

    fn stable_in(q: &mut Queue, project: &str, path: &str, now: u64) -> u64 {
        q.handle(
            QueueMsg::FilesSeen {
                project: project.into(),
                news: vec![FileNews::Stable(file(path, 10))],
            },
            now,
        );
        q.by_path[&(project.to_string(), path.to_string())]
    }

    #[test]
    fn projects_take_turns_so_a_small_one_is_not_starved_by_a_big_one() {
        let dir = TempDir::new();
        let mut q = two_projects(&dir, 1);
        // 200 files of the big project are queued before the small one's 5.
        let big: Vec<u64> = (0..200)
            .map(|i| stable_in(&mut q, "big", &format!("b{i:03}.mov"), T0 + i))
            .collect();
        let small: Vec<u64> = (0..5)
            .map(|i| stable_in(&mut q, "small", &format!("s{i}.mov"), T0 + 300 + i))
            .collect();
        // Same path in both projects: two jobs, not one.
        let twin = stable_in(&mut q, "small", "b000.mov", T0 + 400);
        assert_ne!(twin, big[0]);
        let mut order = Vec::new();
        for n in 0..12 {
            let id = take(&mut q, T0 + 1000 + n).expect("a job");
            order.push(id);
            q.handle(
                QueueMsg::Attempt(AttemptUpdate::Done {
                    id,
                    file_id: format!("f{id}"),
                    view_url: None,
                    verified: None,
                    sha256: None,
                }),
                T0 + 1000 + n,
            );
        }
        // Turns alternate, each project in its own order.
        assert_eq!(
            order,
            vec![
                big[0], small[0], big[1], small[1], big[2], small[2], big[3], small[3], big[4],
                small[4], big[5], twin
            ]
        );
        let stats = q.stats();
        assert_eq!(stats.by_project["small"][&JobState::Done], 6);
        assert_eq!(stats.by_project["big"][&JobState::Done], 6);
        assert_eq!(stats.by_project["big"][&JobState::Queued], 194);
    }

    #[test]
    fn a_removed_projects_jobs_stay_in_the_ledger_and_are_not_handed_out() {
        let dir = TempDir::new();
        let mut q = two_projects(&dir, 2);
        let gone = stable_in(&mut q, "small", "s.mov", T0);
        let kept = stable_in(&mut q, "big", "b.mov", T0);
        let ledger = q.ledger;
        // Restarted with `small` no longer in the config.
        let (hub, _) = Hub::new();
        let mut s = settings(&dir.0, 2, 10);
        s.projects[0].name = "big".into();
        s.projects[0].root = dir.0.join("big");
        let mut q = Queue::new(ledger, s, hub, T0 + 1);
        assert_eq!(take(&mut q, T0 + 2), Some(kept));
        assert_eq!(q.next_job(T0 + 2), None);
        assert_eq!(job(&q, gone).state, JobState::Queued, "kept as it was");
        assert_eq!(q.stats().by_project["small"][&JobState::Queued], 1);
    }

    #[test]
    fn enqueue_finds_the_project_of_a_path_and_asks_for_one_when_it_cannot() {
        let dir = TempDir::new();
        let mut q = two_projects(&dir, 2);
        std::fs::write(dir.0.join("small/a.mov"), b"aa").unwrap();
        std::fs::write(dir.0.join("big/a.mov"), b"aaa").unwrap();
        std::fs::write(dir.0.join("outside.mov"), b"x").unwrap();
        let ask = |q: &mut Queue, project: Option<&str>, path: PathBuf| {
            let (tx, rx) = crossbeam_channel::bounded(1);
            q.handle(
                QueueMsg::Enqueue {
                    paths: vec![path],
                    project: project.map(str::to_string),
                    reply: tx,
                },
                T0,
            );
            rx.recv().unwrap().remove(0)
        };
        let id = ask(&mut q, None, dir.0.join("small/a.mov")).unwrap();
        assert_eq!(job(&q, id).project, "small");
        let id = ask(&mut q, Some("big"), "a.mov".into()).unwrap();
        assert_eq!((job(&q, id).project.as_str(), job(&q, id).size), ("big", 3));
        let e = ask(&mut q, None, "a.mov".into()).unwrap_err();
        assert!(e.starts_with("project: required"), "{e}");
        let e = ask(&mut q, Some("nope"), "a.mov".into()).unwrap_err();
        assert!(e.contains("no project named \"nope\""), "{e}");
        let e = ask(&mut q, None, dir.0.join("outside.mov")).unwrap_err();
        assert_eq!(e, "outside every project's root");
    }
}
