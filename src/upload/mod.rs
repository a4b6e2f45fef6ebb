//! The uploader: worker threads that take jobs from the queue and get each file into Frame.io
//! once, in the right folder, with the right bytes.
//!
//! One attempt of a job, in order:
//! 1. the file must still be the version the job is for (else the watcher's new job takes over);
//! 2. the destination folder is resolved (created once if missing, see `folders`);
//! 3. exactly once: if the job already has a Frame.io file id (a crash or stop mid-upload),
//!    that file is checked: complete → adopted; a local upload whose parts were all accepted
//!    → watched (step 5); an unfinished local upload whose part URLs are still valid →
//!    resumed; anything else → deleted and started clean. (A job the ledger has as
//!    `processing` never comes here: the status watch takes it up at start.) If the ledger says an
//!    earlier attempt may have created a file it does not know (`Job::unknown_file`: a create
//!    sent and its answer lost), the folder is searched for a file of the same name created
//!    after the job was (see `recovery`): a complete one is adopted, an incomplete one is our
//!    leftover and is deleted. A first attempt, or one after a clean failure, lists nothing;
//! 4. remote (Frame.io pulls from our file server through the tunnel) or local (we PUT the
//!    parts). Before each create call the ledger records that one is going out; the Frame.io
//!    file id goes to the ledger as soon as Frame.io returns it;
//! 5. once every byte is in (a pull served every byte; S3 accepted every part) the job is
//!    `processing` and goes to the one status watch shared by all such jobs (see `poller`);
//!    the worker takes the next upload. Only when Frame.io says `upload_complete` is the job
//!    `done`. (While a pull is still being served, the worker watches it itself: the stall
//!    rule and the tunnel's reconnects decide whether to redo it.)
//! 6. with `upload.verify: "download"`, a complete file is downloaded back and compared with
//!    the local file first (see `verify`); it is `done` only when equal, deleted and retried
//!    when not.
//!
//! Nothing waits forever: a part or a pull is cut when no byte moves for a stall period
//! (never for being slow), and once every byte is in, Frame.io gets
//! `upload.processing_timeout_secs` to say `upload_complete`; after that the Frame.io file is
//! deleted and the attempt fails (the queue retries it).
//!
//! Workers and the watch never write the ledger: they report to the queue, which does.

pub mod folders;
pub mod parts;
pub mod poller;
pub mod recovery;
pub mod sidecar;
pub mod verify;

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{bounded, select, Receiver, RecvTimeoutError, Sender};

use crate::config::{UploadMode, Verify};
use crate::events::{Event, Hub};
use crate::frameio::api::{Api, ApiError, UploadStatus};
use crate::human;
use crate::ledger::Job;
use crate::links::Links;
use crate::queue::{now_ms as now_unix_ms, AttemptUpdate, FailureKind, QueueMsg};
use crate::timefmt::parse_rfc3339_ms;
use crate::tunnel::Public;
use folders::FolderCache;
use parts::{check_layout, put_parts, s3_agent, Part, PartError, PartPlan, PART_STALL};
pub use poller::{run_poller, Watched};
use recovery::Listings;
use sidecar::{LocalPlan, Sidecar};
pub use verify::run_verifier;

/// Frame.io's limit for remote uploads (reference: "Size limit 50 GB").
pub const REMOTE_LIMIT: u64 = 50 * 1000 * 1000 * 1000;
/// A file this large that Frame.io refuses to pull (422) is taken as over the limit, whatever
/// the refusal says: the reference does not say whether "50 GB" means 10^9 or 2^30 bytes, nor
/// what else Frame.io counts, nor how it words the refusal.
const NEAR_REMOTE_LIMIT: u64 = REMOTE_LIMIT / 10 * 9;
/// Presigned part URLs live 24 h; resume only with a comfortable margin left. (When the URLs
/// say when they expire, that is used instead: see `urls_expire_at`.)
const PART_URL_LIFE: Duration = Duration::from_secs(23 * 3600);
/// How long a job in `auto` waits for a reconnecting tunnel before it goes local instead. QUIC
/// comes back within 2 s (measured); an HTTP/2 reconnect can take a minute, and a local
/// upload costs the same uplink as a pull, so waiting longer gains nothing.
const LOCAL_AFTER: Duration = Duration::from_secs(10);
/// How many times one attempt redoes a remote pull (Frame.io failed or dropped it, the public
/// URL changed) before handing the job back to the queue's backoff.
const MAX_REDOS: u32 = 3;

/// What the tunnel offers the file server now: up with a URL, reconnecting (same URL, no new
/// pull meanwhile), or down/off.
pub type PublicUrl = Arc<dyn Fn() -> Public + Send + Sync>;

/// Where one project's files come from and go to.
#[derive(Clone, Debug)]
pub struct Project {
    pub name: String,
    pub account_id: String,
    pub project_id: String,
    pub root: PathBuf,
}

/// Everything an attempt needs to know besides the job.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Each job goes by its project's (jobs of other projects are never handed out).
    pub projects: Vec<Project>,
    pub mode: UploadMode,
    pub state_dir: PathBuf,
    pub parallel_parts: usize,
    /// Status polling backoff: starts at `poll_min`, grows to `poll_max`.
    pub poll_min: Duration,
    pub poll_max: Duration,
    /// A remote pull with no byte served for this long while incomplete is redone.
    pub stall: Duration,
    /// A part PUT whose connection takes no byte for this long is cut and sent again.
    pub part_stall: Duration,
    /// `upload.verify`: parts carry Content-MD5 and a done job says how it was verified
    /// (unless "off"); "download" also downloads Frame.io's copy back (`verify.rs`).
    pub verify: Verify,
    /// Every byte in, and Frame.io still not `upload_complete` after this long: the Frame.io
    /// file is deleted and the attempt fails (`upload.processing_timeout_secs`).
    pub processing_timeout: Duration,
}

impl Settings {
    /// The contract's timings. Two environment variables, for tests and for people debugging
    /// a link (not config keys on purpose: the defaults are right for Frame.io):
    /// `POSTFLOW_STALL_SECS` shortens the stall timeouts (5 minutes for a pull, one for a
    /// part); `POSTFLOW_POLL_MS` sets the first status poll interval (2 s), which then grows
    /// to ten times that (at most 30 s).
    pub fn timings(mut self) -> Settings {
        let env = |key: &str| std::env::var(key).ok().and_then(|s| s.parse::<u64>().ok());
        self.poll_min = Duration::from_secs(2);
        self.poll_max = Duration::from_secs(30);
        if let Some(ms) = env("POSTFLOW_POLL_MS") {
            log::warn!("POSTFLOW_POLL_MS={ms}: test-only status polling in effect");
            self.poll_min = Duration::from_millis(ms.max(1));
            self.poll_max = (self.poll_min * 10).min(self.poll_max);
        }
        let stall = env("POSTFLOW_STALL_SECS").map(|s| {
            log::warn!("POSTFLOW_STALL_SECS={s}: test-only stall timeouts in effect");
            Duration::from_secs(s.max(1))
        });
        self.stall = stall.unwrap_or(Duration::from_secs(300));
        self.part_stall = stall.unwrap_or(PART_STALL);
        self
    }
}

/// Shared by all workers.
pub struct Uploader {
    api: Api,
    links: Links,
    public_url: PublicUrl,
    settings: Settings,
    /// Per project: the folder ids of one project mean nothing in another.
    folders: HashMap<String, FolderCache>,
    listings: Listings,
    sidecar: Sidecar,
    s3: ureq::Agent,
    queue: Sender<QueueMsg>,
    /// Jobs whose bytes are all in, to the status watch (`run_poller`).
    processing: Sender<Watched>,
    /// Jobs Frame.io has complete, to be downloaded back (`upload.verify: "download"`).
    verifying: Sender<Watched>,
    hub: Hub,
    stop: Receiver<()>,
    /// Jobs whose current attempt could not delete a Frame.io file it meant to: the ledger
    /// must go on saying that Frame.io may hold a file it does not know.
    strays: Mutex<HashSet<u64>>,
}

/// How an attempt ended, when it did not end with the file in Frame.io.
#[derive(Debug)]
struct Failure {
    error: String,
    kind: FailureKind,
}

/// Not a failure: shutdown interrupted the attempt. The job stays as recorded and is taken up
/// again at the next start.
struct Stopped;

enum Outcome {
    Done {
        file_id: String,
        view_url: Option<String>,
        /// How the bytes were verified, when this attempt can say.
        verified: Option<crate::ledger::Verified>,
    },
    /// Every byte is in: the status watch takes it from here.
    Processing(Box<Watched>),
    Failed(Failure),
    Stopped,
}

impl From<Stopped> for Outcome {
    fn from(_: Stopped) -> Outcome {
        Outcome::Stopped
    }
}

impl From<Failure> for Outcome {
    fn from(f: Failure) -> Outcome {
        Outcome::Failed(f)
    }
}

fn fail(kind: FailureKind, error: impl Into<String>) -> Failure {
    Failure {
        error: error.into(),
        kind,
    }
}

/// Maps a Frame.io error to what the queue should do with the job.
fn classify(e: ApiError) -> Result<Failure, Stopped> {
    Ok(match e {
        ApiError::Stopped => return Err(Stopped),
        ApiError::NeedsLogin(_) => fail(FailureKind::WaitForAuth, e.to_string()),
        other => fail(FailureKind::Retry, other.to_string()),
    })
}

impl Uploader {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        api: Api,
        links: Links,
        public_url: PublicUrl,
        settings: Settings,
        queue: Sender<QueueMsg>,
        processing: Sender<Watched>,
        verifying: Sender<Watched>,
        hub: Hub,
        stop: Receiver<()>,
    ) -> Uploader {
        Uploader {
            folders: settings
                .projects
                .iter()
                .map(|p| {
                    (
                        p.name.clone(),
                        FolderCache::new(&p.account_id, &p.project_id),
                    )
                })
                .collect(),
            listings: Listings::default(),
            sidecar: Sidecar::new(&settings.state_dir),
            s3: s3_agent(),
            api: api.with_stop(stop.clone()),
            links,
            public_url,
            settings,
            queue,
            processing,
            verifying,
            hub,
            stop,
            strays: Mutex::new(HashSet::new()),
        }
    }

    fn report(&self, update: AttemptUpdate) {
        // The queue outlives the workers (it is stopped after them), so this only fails
        // during a shutdown, when the ledger already holds what a restart needs.
        let _ = self.queue.send(QueueMsg::Attempt(update));
    }

    /// Sleeps, or returns `Stopped` at once when shutdown begins.
    fn sleep(&self, d: Duration) -> Result<(), Stopped> {
        match self.stop.recv_timeout(d) {
            Err(RecvTimeoutError::Timeout) => Ok(()),
            _ => Err(Stopped),
        }
    }

    /// The Frame.io account of `project`'s files ("" for a project not in the config, whose
    /// jobs are never handed out).
    fn account(&self, project: &str) -> &str {
        self.project(project).map_or("", |p| p.account_id.as_str())
    }

    fn project(&self, name: &str) -> Option<&Project> {
        self.settings.projects.iter().find(|p| p.name == name)
    }

    /// Deletes a Frame.io file we no longer want (best effort: a leftover is harmless to the
    /// product, only untidy). One that stays is recorded as a file the ledger does not know,
    /// so the job's next attempt searches for it and deletes it then.
    fn discard(&self, job: &Job, file_id: &str, why: &str) {
        if !self.delete(&job.project, file_id, why) {
            self.lock_strays().insert(job.id);
            self.report(AttemptUpdate::UnknownFile {
                id: job.id,
                possible: true,
            });
        }
    }

    /// Deletes a Frame.io file; whether it is gone.
    fn delete(&self, project: &str, file_id: &str, why: &str) -> bool {
        match self.api.delete_file(self.account(project), file_id) {
            Ok(()) => {
                log::debug!("deleted Frame.io file {file_id} ({why})");
                true
            }
            Err(e) => {
                log::warn!("could not delete Frame.io file {file_id} ({why}): {e}");
                false
            }
        }
    }

    fn lock_strays(&self) -> std::sync::MutexGuard<'_, HashSet<u64>> {
        self.strays.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Before a create call: has the ledger record that one is going out (see
    /// `QueueMsg::Creating`) and only then returns.
    fn creating(&self, job: &Job) -> Result<(), Outcome> {
        let (written, answer) = bounded(1);
        if self
            .queue
            .send(QueueMsg::Creating {
                id: job.id,
                written,
            })
            .is_err()
        {
            return Err(Outcome::Stopped);
        }
        match answer.recv() {
            Ok(true) => Ok(()),
            Ok(false) => Err(fail(
                FailureKind::Retry,
                "the ledger cannot record the upload (see the log); not creating a Frame.io file it would not know",
            )
            .into()),
            Err(_) => Err(Outcome::Stopped),
        }
    }

    /// Frame.io answered a create with a file: the ledger knows it now.
    fn created(&self, job: &Job, file_id: &str) {
        self.report(AttemptUpdate::FileCreated {
            id: job.id,
            file_id: file_id.to_string(),
            unknown_file: self.lock_strays().contains(&job.id),
        });
    }

    /// Frame.io surely created nothing (a create it refused, or a search that cleaned up).
    fn nothing_unknown(&self, job: &Job) {
        self.report(AttemptUpdate::UnknownFile {
            id: job.id,
            possible: self.lock_strays().contains(&job.id),
        });
    }
}

/// A worker: takes jobs until shutdown.
pub fn run_worker(up: Arc<Uploader>, jobs: Receiver<Job>) {
    loop {
        select! {
            recv(jobs) -> job => match job {
                Ok(job) => attempt(&up, job),
                Err(_) => return,
            },
            recv(up.stop) -> _ => return,
        }
    }
}

fn attempt(up: &Uploader, job: Job) {
    let started = Instant::now();
    let outcome = run_attempt(up, &job, started);
    up.lock_strays().remove(&job.id);
    // Frame.io's copy is downloaded back before anything is called done: the status watch
    // confirms it complete and hands it on.
    let outcome = match outcome {
        Outcome::Done {
            file_id,
            view_url,
            verified,
        } if up.settings.verify == Verify::Download => Outcome::Processing(Box::new(Watched {
            view_url,
            verified,
            parts: false,
            ..Watched::all_in(&job, file_id, started)
        })),
        other => other,
    };
    match outcome {
        Outcome::Done {
            file_id,
            view_url,
            verified,
        } => {
            let secs = started.elapsed().as_secs_f64();
            log::info!(
                "upload done: {} in {:.1} s ({:.1} MB/s){}",
                job.name(),
                secs,
                job.size as f64 / 1e6 / secs.max(0.001),
                view_url
                    .as_deref()
                    .map(|u| format!(": {u}"))
                    .unwrap_or_default()
            );
            up.report(AttemptUpdate::Done {
                id: job.id,
                file_id,
                view_url,
                verified,
                sha256: None,
            });
        }
        Outcome::Processing(watched) => {
            up.report(AttemptUpdate::Processing {
                id: job.id,
                all_in_ms: watched.all_in_ms,
                verified: watched.verified,
            });
            // After the report, so the queue hears `processing` before the watch's verdict.
            // The watch lives as long as the workers; a send fails only in a shutdown, and
            // the ledger then has the job as processing for the next start.
            let _ = up.processing.send(*watched);
        }
        Outcome::Failed(f) => {
            log::warn!("upload of {} did not finish: {}", job.name(), f.error);
            up.report(AttemptUpdate::Failed {
                id: job.id,
                error: f.error,
                kind: f.kind,
            });
        }
        Outcome::Stopped => log::debug!("upload of {} interrupted by shutdown", job.name()),
    }
}

fn run_attempt(up: &Uploader, job: &Job, started: Instant) -> Outcome {
    let (Some(project), Some(folders)) = (up.project(&job.project), up.folders.get(&job.project))
    else {
        let why = format!("its project {:?} is no longer in the config", job.project);
        return fail(FailureKind::Permanent, why).into();
    };
    let path = project.root.join(&job.path);
    if let Err(f) = check_unchanged(&path, job) {
        return f.into();
    }
    let folder_id = match folders.resolve(&up.api, &job.folder) {
        Ok(id) => id,
        Err(e) => return classify(e).map_or(Outcome::Stopped, Outcome::Failed),
    };
    match adopt_or_clean(up, job, &folder_id, started) {
        Ok(Some(done)) => return done,
        Ok(None) => {}
        Err(e) => return classify(e).map_or(Outcome::Stopped, Outcome::Failed),
    }
    // A local upload cut short goes on locally whatever the tunnel does now: a remote pull
    // instead would leave the half-sent file behind in Frame.io.
    let mode = if up.settings.mode != UploadMode::Remote && resumable(up, job).is_some() {
        Mode::Local
    } else {
        let public = match (up.settings.mode, job.size > REMOTE_LIMIT) {
            (UploadMode::Local, _) | (UploadMode::Auto, true) => None,
            _ => match tunnel_for_pull(up, job) {
                Ok(url) => url,
                Err(Stopped) => return Outcome::Stopped,
            },
        };
        choose_mode(up.settings.mode, public.as_deref(), job.size)
    };
    let mode_name = match mode {
        Mode::Remote(_) => "remote",
        Mode::Local => "local",
        Mode::WaitForTunnel => {
            return fail(
                FailureKind::Retry,
                "frameio.upload is \"remote\" but the tunnel is not up",
            )
            .into()
        }
    };
    // With several projects, the destination names its project.
    let project_name = if up.settings.projects.len() > 1 {
        format!("{} ", job.project)
    } else {
        String::new()
    };
    log::info!(
        "upload start: {} ({}, {mode_name}) to Frame.io {project_name}/{}",
        job.name(),
        human::size(job.size),
        job.folder
    );
    up.report(AttemptUpdate::Started {
        id: job.id,
        mode: mode_name,
    });
    match mode {
        Mode::Remote(public) => match remote(up, job, &path, &folder_id, &public, started) {
            // In auto, local upload is the way round whatever made Frame.io refuse the pull:
            // the size (its limit and how it counts are not documented) or the URL.
            Err(RemoteError::Refused(e)) if up.settings.mode == UploadMode::Auto => {
                let why = if over_remote_limit(job.size, &e) {
                    "over Frame.io's remote limit".to_string()
                } else {
                    format!("Frame.io will not pull it ({e})")
                };
                log::info!("{}: {why}, sending it ourselves", job.name());
                local(up, job, &path, &folder_id, started)
            }
            Err(RemoteError::Refused(e)) if over_remote_limit(job.size, &e) => fail(
                FailureKind::Permanent,
                format!("Frame.io refuses remote uploads this large ({e}); set frameio.upload to \"auto\" or \"local\""),
            )
            .into(),
            Err(RemoteError::NoTunnel(reason)) if up.settings.mode == UploadMode::Auto => {
                log::info!("{}: {reason}; sending it ourselves", job.name());
                local(up, job, &path, &folder_id, started)
            }
            Err(RemoteError::NoTunnel(reason)) => fail(FailureKind::Retry, reason).into(),
            Err(RemoteError::Refused(e)) => classify(e).map_or(Outcome::Stopped, Outcome::Failed),
            Err(RemoteError::Outcome(o)) => o,
            Ok(o) => o,
        },
        _ => local(up, job, &path, &folder_id, started),
    }
}

/// Whether Frame.io's 422 to a remote upload is about the size: for a file near the limit,
/// always; for a smaller one, when the refusal says so.
fn over_remote_limit(size: u64, refusal: &ApiError) -> bool {
    size >= NEAR_REMOTE_LIMIT || refusal.to_string().to_ascii_lowercase().contains("limit")
}

enum Mode {
    Remote(String),
    Local,
    WaitForTunnel,
}

fn choose_mode(configured: UploadMode, public: Option<&str>, size: u64) -> Mode {
    match (configured, public) {
        (UploadMode::Local, _) => Mode::Local,
        (UploadMode::Remote, Some(url)) => Mode::Remote(url.to_string()),
        (UploadMode::Remote, None) => Mode::WaitForTunnel,
        (UploadMode::Auto, Some(url)) if size <= REMOTE_LIMIT => Mode::Remote(url.to_string()),
        (UploadMode::Auto, _) => Mode::Local,
    }
}

/// The file must still be the version the job was made for.
fn check_unchanged(path: &Path, job: &Job) -> Result<(), Failure> {
    match is_version(path, job.size, job.mtime_ns) {
        Ok(true) => Ok(()),
        Ok(false) => Err(fail(FailureKind::FileChanged, "the file changed")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(fail(FailureKind::FileChanged, "vanished"))
        }
        Err(e) => Err(fail(
            FailureKind::Retry,
            format!("cannot read the file: {e}"),
        )),
    }
}

/// Whether the file at `path` is still the version of `size` bytes and mtime `mtime_ns`.
fn is_version(path: &Path, size: u64, mtime_ns_then: i64) -> std::io::Result<bool> {
    let m = std::fs::metadata(path)?;
    Ok(m.len() == size && mtime_ns(&m) == mtime_ns_then)
}

pub fn mtime_ns(m: &std::fs::Metadata) -> i64 {
    m.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as i64)
}

/// Step 3 of the module doc. `Ok(Some(outcome))` ends the attempt (adopted, or watched).
fn adopt_or_clean(
    up: &Uploader,
    job: &Job,
    folder_id: &str,
    started: Instant,
) -> Result<Option<Outcome>, ApiError> {
    if let Some(file_id) = &job.file_id {
        match up.api.file_status(up.account(&job.project), file_id) {
            Ok(s) if s.upload_complete => return adopt(up, job, file_id).map(Some),
            // Every part went in before the stop, and the ledger had not heard yet: Frame.io
            // is processing it, and it is watched (however old its part URLs are now).
            Ok(s) if !s.upload_failed && all_parts_sent(up, job) => {
                log::debug!("{}: every part was in before the stop", job.name());
                return Ok(Some(Outcome::Processing(Box::new(Watched::all_in(
                    job,
                    file_id.clone(),
                    started,
                )))));
            }
            // Resumed below, in local mode (unless the user now wants remote only).
            Ok(_) if up.settings.mode != UploadMode::Remote && resumable(up, job).is_some() => {
                return Ok(None)
            }
            Ok(_) => up.discard(job, file_id, "unfinished upload from an earlier attempt"),
            Err(e) if e.status() == Some(404) => {}
            Err(e) => return Err(e),
        }
        up.sidecar.remove(job.id);
    }
    if !job.unknown_file {
        return Ok(None);
    }
    search(up, job, folder_id)
}

/// The recovery search (see `recovery`): looks for a file of this job that the ledger does
/// not know, created after the job was (give or take clock skew).
fn search(up: &Uploader, job: &Job, folder_id: &str) -> Result<Option<Outcome>, ApiError> {
    log::info!(
        "{}: an earlier attempt may have created it in Frame.io; looking in /{}",
        job.name(),
        job.folder
    );
    let not_before_ms = job.created_ms.saturating_sub(60_000);
    // Every earlier attempt ended before the job was last written (the queue writes the end
    // of each attempt, and a restart's requeue).
    let files = up
        .listings
        .files(&up.api, up.account(&job.project), folder_id, job.updated_ms)?;
    for f in files.iter() {
        if f.name != job.name() || Some(&f.id) == job.file_id.as_ref() {
            continue;
        }
        // An older file with the same name is a previous version of this file, not this
        // job's upload.
        if f.created_at
            .as_deref()
            .and_then(parse_rfc3339_ms)
            .is_some_and(|ms| ms < not_before_ms)
        {
            continue;
        }
        let complete = match up.api.file_status(up.account(&job.project), &f.id) {
            Ok(s) => s.upload_complete,
            // Gone since the listing (another job's search, a person): nothing to do.
            Err(e) if e.status() == Some(404) => continue,
            Err(e) => return Err(e),
        };
        if complete && f.file_size == Some(job.size) {
            log::info!("{}: already in Frame.io, adopting it", job.name());
            return adopt(up, job, &f.id).map(Some);
        }
        // An incomplete one is our leftover whatever size it shows: a request cut short by a
        // crash can leave a file whose size Frame.io never learned (it could not reach us).
        // A complete one of another size is another version, not ours to touch.
        if !complete {
            up.discard(job, &f.id, "incomplete leftover of an interrupted upload");
        }
    }
    up.nothing_unknown(job);
    Ok(None)
}

fn adopt(up: &Uploader, job: &Job, file_id: &str) -> Result<Outcome, ApiError> {
    let view_url = up.api.file(up.account(&job.project), file_id)?.view_url;
    up.sidecar.remove(job.id);
    Ok(Outcome::Done {
        file_id: file_id.to_string(),
        view_url,
        verified: None,
    })
}

/// Whether the saved plan of this job's Frame.io file had every part accepted: its bytes are
/// all in Frame.io, whether or not its URLs are still valid.
fn all_parts_sent(up: &Uploader, job: &Job) -> bool {
    up.sidecar.load(job.id).is_some_and(|(plan, done)| {
        Some(&plan.file_id) == job.file_id.as_ref()
            && plan.size == job.size
            && plan.mtime_ns == job.mtime_ns
            && check_layout(&plan.parts, plan.size).is_ok()
            && done.len() == plan.parts.len()
    })
}

/// A saved local-upload plan this job can go on with.
fn resumable(up: &Uploader, job: &Job) -> Option<(LocalPlan, Vec<usize>)> {
    let (plan, done) = up.sidecar.load(job.id)?;
    let now = now_secs();
    let fresh = match urls_expire_at(&plan.parts) {
        // Keep a twenty-fourth of their life in hand (1 h of 24 h) to send what is missing.
        Some((expires_at, life)) => now + life / 24 < expires_at,
        None => now.saturating_sub(plan.issued_at) < PART_URL_LIFE.as_secs(),
    };
    let same = Some(&plan.file_id) == job.file_id.as_ref()
        && plan.size == job.size
        && plan.mtime_ns == job.mtime_ns
        && check_layout(&plan.parts, plan.size).is_ok();
    (fresh && same).then_some((plan, done))
}

enum RemoteError {
    /// A pull must be redone and the tunnel cannot carry it now (why).
    NoTunnel(String),
    /// Frame.io answered 422 to the pull request (nothing was created).
    Refused(ApiError),
    Outcome(Outcome),
}

impl From<Failure> for RemoteError {
    fn from(f: Failure) -> RemoteError {
        RemoteError::Outcome(Outcome::Failed(f))
    }
}

impl From<Stopped> for RemoteError {
    fn from(_: Stopped) -> RemoteError {
        RemoteError::Outcome(Outcome::Stopped)
    }
}

/// How watching a remote pull ended.
enum Watch {
    Complete,
    /// Every byte served: Frame.io's processing is the status watch's to follow.
    AllIn,
    /// Redo the pull within this attempt.
    Redo(String),
}

/// How often a pull's progress is looked at while it is served (the file server's counters,
/// in memory): a pull that has been served every byte frees its worker this soon.
const PULL_LOOK: Duration = Duration::from_millis(100);

fn remote(
    up: &Uploader,
    job: &Job,
    path: &Path,
    folder_id: &str,
    public: &str,
    started: Instant,
) -> Result<Outcome, RemoteError> {
    let mut redos = 0;
    loop {
        let link = up.links.register(job.id, path).map_err(|e| {
            fail(
                FailureKind::FileChanged,
                format!("cannot serve the file: {e}"),
            )
        })?;
        let source = format!("{public}{}", link.url_path);
        if let Err(o) = up.creating(job) {
            up.links.revoke(&link.token);
            return Err(RemoteError::Outcome(o));
        }
        let created =
            match up
                .api
                .remote_upload(up.account(&job.project), folder_id, job.name(), &source)
            {
                Ok(c) => c,
                Err(e) => {
                    up.links.revoke(&link.token);
                    if !e.maybe_committed() {
                        up.nothing_unknown(job);
                    }
                    if e.status() == Some(422) {
                        return Err(RemoteError::Refused(e));
                    }
                    return Err(classify(e)?.into());
                }
            };
        let file_id = created.file.id.clone();
        up.created(job, &file_id);
        let watched = watch_remote(up, job, path, &link.token, &created.status_path, public);
        let reason = match watched {
            Ok(Watch::AllIn) => {
                // The link stays: Frame.io's fetcher may read again while it processes.
                return Ok(Outcome::Processing(Box::new(Watched {
                    status_path: Some(created.status_path),
                    view_url: created.file.view_url,
                    link: Some(link.token),
                    parts: false,
                    // Every byte served (the union of the ranges covers the file), the file
                    // unchanged all along (a change ends the pull: Watch::Redo).
                    verified: up
                        .settings
                        .verify
                        .parts()
                        .then_some(crate::ledger::Verified::ServedInFull),
                    ..Watched::all_in(job, file_id, started)
                })));
            }
            Ok(Watch::Complete) => {
                // Frame.io may say complete before the last look at the link saw every
                // byte served: the coverage is read once more, the file checked unchanged.
                let served = up
                    .links
                    .activity(&link.token)
                    .is_some_and(|a| a.covered >= a.total);
                let verified =
                    (up.settings.verify.parts() && served && check_unchanged(path, job).is_ok())
                        .then_some(crate::ledger::Verified::ServedInFull);
                up.links.revoke(&link.token);
                return Ok(Outcome::Done {
                    file_id,
                    view_url: created.file.view_url,
                    verified,
                });
            }
            Ok(Watch::Redo(reason)) => reason,
            Err(RemoteError::Outcome(Outcome::Stopped)) => {
                up.links.revoke(&link.token);
                return Ok(Outcome::Stopped);
            }
            Err(e) => {
                up.links.revoke(&link.token);
                up.discard(job, &file_id, "the attempt failed");
                return Err(e);
            }
        };
        up.links.revoke(&link.token);
        up.discard(job, &file_id, &reason);
        redos += 1;
        if redos > MAX_REDOS {
            return Err(fail(FailureKind::Retry, reason).into());
        }
        // The next pull goes out only through a tunnel that is up: after a reconnect on the
        // same URL, here; a new URL (cloudflared restarted) means the attempt starts over.
        match tunnel_for_pull(up, job)? {
            Some(now) if now == public => {}
            Some(_) => return Err(fail(FailureKind::Retry, reason).into()),
            None => {
                return Err(RemoteError::NoTunnel(format!(
                    "{reason}, and the tunnel is not up"
                )))
            }
        }
        log::info!("{}: redoing the remote upload ({reason})", job.name());
    }
}

/// The URL a pull may use now. While cloudflared reconnects no pull starts: in `remote` mode
/// the job waits until the tunnel is back (or down: cloudflared restarts after its
/// patience); in `auto` it waits until the reconnect has lasted [`LOCAL_AFTER`], then gets
/// None and goes local. None at once while the tunnel is down or off.
fn tunnel_for_pull(up: &Uploader, job: &Job) -> Result<Option<String>, Stopped> {
    let mut told = false;
    loop {
        match (up.public_url)() {
            Public::Up(url) => return Ok(Some(url)),
            Public::Down => return Ok(None),
            Public::Reconnecting { since, .. } => {
                let auto = up.settings.mode == UploadMode::Auto;
                if auto && since.elapsed() >= LOCAL_AFTER {
                    return Ok(None);
                }
                if !told {
                    log::info!(
                        "{}: the tunnel is reconnecting; waiting for it before Frame.io pulls{}",
                        job.name(),
                        if auto {
                            " (or sending it ourselves if it takes long)"
                        } else {
                            ""
                        }
                    );
                    told = true;
                }
                up.sleep(Duration::from_millis(250))?;
            }
        }
    }
}

/// Watches a pull while it is served: every [`PULL_LOOK`] how far it is (every byte served:
/// `AllIn`; none for the stall period while bytes are missing: redo), and on the status
/// polling schedule (from `poll_min`, growing to `poll_max`) the file, the tunnel and what
/// Frame.io says.
fn watch_remote(
    up: &Uploader,
    job: &Job,
    path: &Path,
    token: &str,
    status_path: &str,
    public: &str,
) -> Result<Watch, RemoteError> {
    let requested = Instant::now();
    let mut interval = up.settings.poll_min;
    let mut next_status = requested + interval;
    // Whether the tunnel lost its edge connection during this pull (it keeps the URL).
    let mut dropped = false;
    loop {
        up.sleep(PULL_LOOK.min(next_status.saturating_duration_since(Instant::now())))?;
        if let Some(activity) = up.links.activity(token) {
            let last = activity.last_served_at.unwrap_or(requested);
            // An empty file is all in once something has asked for it.
            let started = activity.total > 0 || activity.last_served_at.is_some();
            if started && activity.covered >= activity.total {
                return Ok(Watch::AllIn);
            }
            if last.elapsed() >= up.settings.stall {
                return Ok(Watch::Redo(format!(
                    "no byte served for {} s",
                    up.settings.stall.as_secs()
                )));
            }
        }
        if Instant::now() < next_status {
            continue;
        }
        interval = (interval * 3 / 2).min(up.settings.poll_max);
        next_status = Instant::now() + interval;
        check_unchanged(path, job)?;
        match (up.public_url)() {
            Public::Up(url) if url == public => {}
            // A reconnect keeps the URL: the pull may have survived (it may not have started
            // yet); if it was cut, Frame.io says so and it is redone once the tunnel is back.
            Public::Reconnecting { url, .. } if url == public => dropped = true,
            _ => return Ok(Watch::Redo("the tunnel's public URL changed".into())),
        }
        match up.api.status_at(status_path) {
            Ok(UploadStatus {
                upload_complete: true,
                ..
            }) => return Ok(Watch::Complete),
            Ok(UploadStatus {
                upload_failed: true,
                ..
            }) if dropped => {
                return Ok(Watch::Redo(
                    "the pull was cut when the tunnel lost its connection".into(),
                ))
            }
            Ok(UploadStatus {
                upload_failed: true,
                ..
            }) => return Ok(Watch::Redo("Frame.io reported upload_failed".into())),
            Ok(_) => {}
            Err(e) if e.status() == Some(404) => {
                return Ok(Watch::Redo("the file disappeared from Frame.io".into()))
            }
            // Waiting for a login or a flaky network: keep watching, the pull goes on.
            Err(ApiError::NeedsLogin(_)) => {}
            Err(e) if e.is_transient() => log::debug!("{}: status: {e}", job.name()),
            Err(e) => return Err(classify(e)?.into()),
        }
    }
}

fn local(up: &Uploader, job: &Job, path: &Path, folder_id: &str, started: Instant) -> Outcome {
    match local_inner(up, job, path, folder_id, started) {
        Ok(o) => o,
        Err(o) => o,
    }
}

fn local_inner(
    up: &Uploader,
    job: &Job,
    path: &Path,
    folder_id: &str,
    started: Instant,
) -> Result<Outcome, Outcome> {
    let (plan, done) = match resumable(up, job) {
        Some((plan, done)) => {
            log::info!(
                "{}: resuming, {} of {} parts already sent",
                job.name(),
                done.len(),
                plan.parts.len()
            );
            (plan, done)
        }
        None => (new_local_upload(up, job, folder_id)?, Vec::new()),
    };
    let total: u64 = plan.parts.iter().map(|p| p.size).sum();
    let sent = AtomicU64::new(done.iter().map(|&i| plan.parts[i].size).sum::<u64>());
    let accepted = AtomicU64::new(sent.load(Ordering::SeqCst));
    let milestone = AtomicU8::new(0);
    let on_done = |index: usize| {
        if let Err(e) = up.sidecar.record_done(job.id, index) {
            log::warn!("cannot record a finished part of {}: {e}", job.name());
        }
        let now =
            accepted.fetch_add(plan.parts[index].size, Ordering::SeqCst) + plan.parts[index].size;
        let percent = (now * 100 / total.max(1)) as u8;
        // 25, 50 and 75 % as they are crossed; all of it is said by the `upload done` line
        // (a single part says nothing here, not "75 % sent").
        let step = (percent / 25) * 25;
        if (25..100).contains(&step) && milestone.fetch_max(step, Ordering::SeqCst) < step {
            log::info!("{}: {step}% sent", job.name());
        }
    };
    let part_plan = PartPlan {
        path,
        parts: &plan.parts,
        done: &done,
        content_type: &plan.media_type,
        parallel: up.settings.parallel_parts,
        tries: 3,
        backoff: Duration::from_secs(1),
        stall: up.settings.part_stall,
        md5: up.settings.verify.parts(),
    };
    let (finished, parts_finished) = bounded::<()>(0);
    let sending = std::thread::scope(|s| {
        s.spawn(|| show_progress(up, job.id, &sent, total, &parts_finished));
        let result = put_parts(&up.s3, &part_plan, &sent, &on_done, &up.stop);
        drop(finished);
        result
    });
    let verified = match sending {
        Ok(true) => Some(crate::ledger::Verified::PartsMd5),
        Ok(false) if !up.settings.verify.parts() => None,
        Ok(false) => {
            log::warn!(
                "{}: sent without Content-MD5 (the part URLs refuse it): S3 could not check \
                 the parts' bytes",
                job.name()
            );
            None
        }
        Err(PartError::Stopped) => return Err(Outcome::Stopped),
        Err(PartError::Transient(m)) => {
            // Keep the plan: the next attempt sends only the missing parts.
            return Err(fail(FailureKind::Retry, m).into());
        }
        Err(e) => {
            up.discard(job, &plan.file_id, "the local upload could not finish");
            up.sidecar.remove(job.id);
            let kind = match e {
                PartError::File(_) => FailureKind::FileChanged,
                _ => FailureKind::Retry,
            };
            return Err(fail(kind, e.to_string()).into());
        }
    };
    // Every part is in: from here Frame.io stitches and checks them, and the status watch
    // follows it. The saved plan stays until then: a restart that finds the job processing
    // watches it again, and one that does not (a crash before the ledger heard) resumes it
    // with nothing left to send.
    Ok(Outcome::Processing(Box::new(Watched {
        verified,
        ..Watched::all_in(job, plan.file_id, started)
    })))
}

/// Creates the Frame.io file of a local upload and saves its plan.
fn new_local_upload(up: &Uploader, job: &Job, folder_id: &str) -> Result<LocalPlan, Outcome> {
    up.creating(job)?;
    let created =
        match up
            .api
            .local_upload(up.account(&job.project), folder_id, job.name(), job.size)
        {
            Ok(c) => c,
            Err(e) => {
                if !e.maybe_committed() {
                    up.nothing_unknown(job);
                }
                return Err(classify(e).map_or(Outcome::Stopped, Outcome::Failed));
            }
        };
    up.created(job, &created.file.id);
    let plan = LocalPlan {
        file_id: created.file.id.clone(),
        // Part URLs are signed for a Content-Type. With no media type returned, the one
        // Frame.io's own SDK sends is octet-stream; a type guessed from the extension would
        // not match the signature (S3: SignatureDoesNotMatch).
        media_type: created
            .file
            .media_type
            .clone()
            .unwrap_or_else(|| NO_MEDIA_TYPE.to_string()),
        parts: created
            .upload_urls
            .iter()
            .map(|u| Part {
                url: u.url.clone(),
                size: u.size,
            })
            .collect(),
        issued_at: now_secs(),
        size: job.size,
        mtime_ns: job.mtime_ns,
    };
    // Never send a file with a hole or an overlap: the part sizes are Frame.io's to choose
    // (and undocumented), so they are checked.
    if let Err(m) = check_layout(&plan.parts, job.size) {
        up.discard(job, &plan.file_id, "its parts do not fit the file");
        return Err(fail(FailureKind::Retry, m).into());
    }
    if let Err(e) = up.sidecar.save_plan(job.id, &plan) {
        // Not fatal: the upload works, only a resume after a crash would start over.
        log::warn!("cannot save upload progress for {}: {e}", job.name());
    }
    Ok(plan)
}

/// How often the page hears how far a local upload is.
const PROGRESS_EVERY: Duration = Duration::from_millis(500);
/// The span a local upload's rate is measured over.
const RATE_WINDOW: Duration = Duration::from_secs(10);

/// Publishes the bytes the connections to S3 have taken, while parts go up (until
/// `finished` closes), and once more at the end. The rate is over the last `RATE_WINDOW`: a
/// connection takes bytes in batches of what its socket buffer frees, which makes a
/// half-second rate jump about.
fn show_progress(up: &Uploader, job: u64, sent: &AtomicU64, total: u64, finished: &Receiver<()>) {
    let mut window: VecDeque<(Instant, u64)> = VecDeque::new();
    let mut shown = None;
    loop {
        let done = !matches!(
            finished.recv_timeout(PROGRESS_EVERY),
            Err(RecvTimeoutError::Timeout)
        );
        let now = (Instant::now(), sent.load(Ordering::SeqCst));
        window.push_back(now);
        while window
            .front()
            .is_some_and(|(at, _)| now.0.duration_since(*at) > RATE_WINDOW)
        {
            window.pop_front();
        }
        if shown != Some(now.1) {
            let (from, from_bytes) = window.front().copied().unwrap_or(now);
            let secs = now.0.duration_since(from).as_secs_f64();
            up.hub.publish(Event::PartsSent {
                job,
                sent: now.1,
                total,
                bytes_per_sec: if secs > 0.0 {
                    now.1.saturating_sub(from_bytes) as f64 / secs
                } else {
                    0.0
                },
            });
            shown = Some(now.1);
        }
        if done {
            return;
        }
    }
}

/// When the first of the presigned URLs expires, and how long they lived (unix seconds,
/// seconds), from their SigV4 query (`X-Amz-Date=20250626T201433Z&X-Amz-Expires=86400`).
fn urls_expire_at(parts: &[Part]) -> Option<(u64, u64)> {
    parts
        .iter()
        .map(|p| {
            let query = p.url.split_once('?')?.1;
            let param = |name: &str| {
                query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            };
            let date = param("X-Amz-Date")?;
            let life: u64 = param("X-Amz-Expires")?.parse().ok()?;
            // 20250626T201433Z -> 2025-06-26T20:14:33Z
            let rfc3339 = format!(
                "{}-{}-{}T{}:{}:{}Z",
                date.get(0..4)?,
                date.get(4..6)?,
                date.get(6..8)?,
                date.get(9..11)?,
                date.get(11..13)?,
                date.get(13..15)?
            );
            let signed = parse_rfc3339_ms(&rfc3339)? / 1000;
            Some((signed + life, life))
        })
        .collect::<Option<Vec<_>>>()?
        .into_iter()
        .min()
}

/// The part Content-Type when Frame.io returned no `media_type` (reference: the SDK's fallback).
const NO_MEDIA_TYPE: &str = "application/octet-stream";

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_goes_remote_only_with_a_tunnel_and_under_the_limit() {
        let url = Some("https://x.trycloudflare.com");
        assert!(matches!(
            choose_mode(UploadMode::Auto, url, 10),
            Mode::Remote(_)
        ));
        assert!(matches!(
            choose_mode(UploadMode::Auto, None, 10),
            Mode::Local
        ));
        assert!(matches!(
            choose_mode(UploadMode::Auto, url, REMOTE_LIMIT + 1),
            Mode::Local
        ));
        assert!(matches!(
            choose_mode(UploadMode::Local, url, 10),
            Mode::Local
        ));
        assert!(matches!(
            choose_mode(UploadMode::Remote, None, 10),
            Mode::WaitForTunnel
        ));
    }

    #[test]
    fn a_refused_pull_near_the_limit_is_over_it_whatever_frameio_says() {
        let refusal = |detail: &str| ApiError::Status {
            method: "POST",
            path: "/v4/accounts/a/folders/f/files/remote_upload".into(),
            status: 422,
            detail: detail.into(),
            maybe_committed: false,
        };
        // 49.9 GB: under the limit as postflow counts, maybe over it as Frame.io does.
        let near = 49_900_000_000;
        assert!(over_remote_limit(near, &refusal("Invalid value")));
        assert!(over_remote_limit(near, &refusal("")));
        assert!(over_remote_limit(
            REMOTE_LIMIT,
            &refusal("Unprocessable Entity")
        ));
        assert!(over_remote_limit(
            1_000,
            &refusal("exceeds the remote upload limit")
        ));
        assert!(!over_remote_limit(
            1_000,
            &refusal("source_url must be https")
        ));
    }

    #[test]
    fn part_urls_say_when_they_expire() {
        let part = |date: &str, expires: &str| Part {
            url: format!(
                "https://s3/parts/f/part_1?x-amz-meta-part_number=1&X-Amz-Date={date}\
                 &X-Amz-Expires={expires}&X-Amz-Signature=abc"
            ),
            size: 1,
        };
        let parts = [
            part("20250626T201433Z", "86400"),
            part("20250626T201432Z", "86400"),
        ];
        assert_eq!(
            urls_expire_at(&parts),
            Some((1_750_968_872 + 86_400, 86_400))
        );
        let unsigned = Part {
            url: "https://s3/parts/f/part_1".into(),
            size: 1,
        };
        assert_eq!(urls_expire_at(&[unsigned]), None);
        assert_eq!(urls_expire_at(&[part("junk", "10")]), None);
    }
}
