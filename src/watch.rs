//! The watcher: turns files appearing under `watch.root` into news for the queue.
//!
//! A full rescan every `watch.rescan_secs` is the source of truth, because network mounts
//! (LucidLink, SMB, NFS) often send no file events at all. OS events (`watch.events`) are only
//! hints that make us look at a path sooner. A file becomes [`FileNews::Stable`] when its size
//! and mtime have not changed for `watch.settle_secs`, it is not empty (LucidLink creates 0-byte
//! placeholders), it opens for reading and, for .mov/.mp4/.m4v with `watch.verify_container`,
//! its top-level atoms are complete (see `container`). Until then it is `waiting`, and the
//! queue hears the reason once each time the reason changes, never once per look.
//!
//! What is looked at: files whose name matches `watch.include` and not `watch.exclude`, in
//! folders that are neither hidden (a name starting with `.`) nor excluded; such folders are not
//! descended into. Nor are a volume's `$RECYCLE.BIN` and `System Volume Information` (by name,
//! on every platform: a drive-root watch such as `E:\` lists them, and the latter cannot even
//! be read), nor, on Windows, any folder or file marked hidden or system (see
//! [`marked_by_os`]). Symbolic links are skipped, files and folders alike: a link can point out
//! of the root, and what is uploaded must stay inside it. Paths handed to the queue are relative to
//! the root and `/`-separated; names that are not valid UTF-8 are skipped (logged at DEBUG).
//!
//! A folder that cannot be read during a rescan (a network hiccup) does not make its files
//! "vanished": only what a successful listing no longer shows has vanished. If the root itself
//! cannot be read, the scan is abandoned and the watcher reports itself degraded.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crossbeam_channel::{select, unbounded, Receiver, Sender};

use crate::config::WatchConfig;
use crate::container;
use crate::events::{ComponentState, Event, Hub};
use crate::glob::GlobSet;
use crate::ledger::{JobState, Ledger};
use crate::queue::{mtime_ns, now_ms, FileNews, FileVersion, QueueMsg, VANISHED_REASON};

/// OS events arriving together are handled together, at most this often.
const EVENT_COALESCE: Duration = Duration::from_millis(200);

/// What the watcher knows before its first scan, from the ledger.
pub struct StartState {
    /// The newest version of each path that has a job: (path, size, mtime_ns, settled).
    /// Not settled means its job still waits for the file (or vanished): look at it again.
    pub known: Vec<(String, u64, i64, bool)>,
    /// The ledger holds no job of this project: files present now are the baseline (the
    /// project's first start, which is the very first start without `projects`).
    pub first_start: bool,
    /// An earlier first start whose baseline was never recorded (the state dir was full, say)
    /// began at this time (ns since the epoch): only files older than it are the baseline,
    /// what arrived since is uploaded.
    pub baseline_before_ns: Option<i64>,
}

/// In the state dir while no baseline is recorded: an empty file whose mtime says when the
/// first start was. Empty, so that it can be created even on a full disk. (Another project
/// than `default` has its own, `first-start.<name>`.)
pub const FIRST_START_MARK: &str = "first-start";

/// The first-start mark of `project`.
pub fn first_start_mark_name(project: &str) -> String {
    if project == crate::config::DEFAULT_PROJECT {
        FIRST_START_MARK.to_string()
    } else {
        format!("{FIRST_START_MARK}.{project}")
    }
}

impl StartState {
    /// What the ledger says about `project`'s files.
    pub fn from_ledger(ledger: &Ledger, project: &str) -> StartState {
        let mut latest: HashMap<&str, (u64, i64, bool)> = HashMap::new();
        let jobs = || ledger.jobs().values().filter(|j| j.project == project);
        for job in jobs() {
            let settled = !(job.state == JobState::Waiting
                || (job.state == JobState::Skipped
                    && job.reason.as_deref() == Some(VANISHED_REASON)));
            latest.insert(job.path.as_str(), (job.size, job.mtime_ns, settled));
        }
        let first_start = jobs().next().is_none();
        let mark = ledger.path().with_file_name(first_start_mark_name(project));
        let baseline_before_ns = if first_start {
            first_start_mark(&mark)
        } else {
            // The baseline is recorded: the mark has done its work.
            let _ = std::fs::remove_file(&mark);
            None
        };
        StartState {
            known: latest
                .into_iter()
                .map(|(p, (s, m, settled))| (p.to_string(), s, m, settled))
                .collect(),
            first_start,
            baseline_before_ns,
        }
    }
}

/// At a start with an empty ledger: the time of an earlier first start from its mark, or none
/// (this is the first start: the mark is made now).
fn first_start_mark(mark: &Path) -> Option<i64> {
    match std::fs::metadata(mark) {
        Ok(meta) => {
            let since = mtime_ns(&meta);
            log::info!(
                "first start again with no baseline recorded: files changed since the first \
                 start ({}) are uploaded, older ones are the baseline",
                mark.display()
            );
            Some(since)
        }
        Err(_) => {
            if let Err(e) = std::fs::File::create(mark) {
                log::warn!(
                    "{}: {e}; if the baseline cannot be recorded either, a restart takes what \
                     arrives meanwhile for baseline too",
                    mark.display()
                );
            }
            None
        }
    }
}

/// Which names the watcher looks at.
#[derive(Clone, Debug)]
pub struct Filter {
    pub include: GlobSet,
    pub exclude: GlobSet,
}

impl Filter {
    /// Folders: not hidden, not a volume's system folder, not excluded.
    pub fn dir_ok(&self, name: &str) -> bool {
        !name.starts_with('.') && !marked_by_os(name, 0) && !self.exclude.matches(name)
    }

    /// Files: included and not excluded.
    pub fn file_ok(&self, name: &str) -> bool {
        self.include.matches(name) && !self.exclude.matches(name)
    }

    /// A root-relative path: every folder and the file name pass.
    pub fn path_ok(&self, rel: &str) -> bool {
        let mut parts = rel.split('/').peekable();
        while let Some(part) = parts.next() {
            let ok = if parts.peek().is_some() {
                self.dir_ok(part)
            } else {
                self.file_ok(part)
            };
            if !ok {
                return false;
            }
        }
        true
    }
}

/// The folders Windows keeps at the root of every volume: deleted files (whose copies keep
/// their names' extensions, `$R1A2B3C.mov`) and restore points.
const VOLUME_FOLDERS: [&str; 2] = ["$RECYCLE.BIN", "System Volume Information"];

/// FILE_ATTRIBUTE_HIDDEN | FILE_ATTRIBUTE_SYSTEM.
const HIDDEN_OR_SYSTEM: u32 = 0x2 | 0x4;

/// Whether the system, not a person, owns an entry: one of a volume's own folders by name
/// (any case), or, with `attributes` from Windows, one marked hidden or system. Unix has no
/// such attributes (hidden there is a name starting with `.`, which [`Filter`] checks), and its
/// `attributes` is 0.
pub fn marked_by_os(name: &str, attributes: u32) -> bool {
    attributes & HIDDEN_OR_SYSTEM != 0
        || VOLUME_FOLDERS
            .iter()
            .any(|folder| folder.eq_ignore_ascii_case(name))
}

/// An entry's Windows attributes: free there, as they come with the listing.
#[cfg(windows)]
fn attributes(meta: &std::fs::Metadata) -> u32 {
    std::os::windows::fs::MetadataExt::file_attributes(meta)
}

/// Unix has no hidden or system attributes.
#[cfg(unix)]
fn attributes(_meta: &std::fs::Metadata) -> u32 {
    0
}

/// Whether a folder on the way from the root to `rel`, or `rel` itself, is marked hidden or
/// system (an OS event can name a path deep inside such a folder). Names are checked by the
/// filter; this asks Windows for the attributes, and on unix there are none to ask for.
fn under_marked_folder(root: &Path, rel: &str) -> bool {
    if cfg!(unix) {
        return false;
    }
    let mut path = root.to_path_buf();
    rel.split('/').any(|name| {
        path.push(name);
        std::fs::symlink_metadata(&path).is_ok_and(|m| marked_by_os(name, attributes(&m)))
    })
}

/// An OS event's path relative to the root, `/`-separated; None when it is not under the
/// root. The event may name the root as configured or, as macOS's FSEvents does, in its
/// canonical form (`/private/var/…` for a root under `/var`, a symlinked root resolved).
fn event_rel(path: &Path, root: &Path, canonical_root: Option<&Path>) -> Option<String> {
    let rel = path
        .strip_prefix(root)
        .ok()
        .or_else(|| path.strip_prefix(canonical_root?).ok())?;
    crate::queue::rel_string(rel)
}

/// What a walk found, besides the files it reported.
#[derive(Debug, Default)]
pub struct WalkOutcome {
    pub files: usize,
    /// Root-relative folders that could not be listed (their files are not "vanished").
    pub failed_dirs: Vec<String>,
}

/// Walks `root/start` (start = "" for the whole root), calling `found(rel, size, mtime_ns)` for
/// each file that passes the filter. `Err` when `root/start` itself cannot be listed.
pub fn walk(
    root: &Path,
    start: &str,
    filter: &Filter,
    found: &mut dyn FnMut(&str, u64, i64),
) -> Result<WalkOutcome, String> {
    let mut outcome = WalkOutcome::default();
    let mut stack = vec![start.to_string()];
    let mut rel = String::new();
    let mut first = true;
    while let Some(dir) = stack.pop() {
        let abs = if dir.is_empty() {
            root.to_path_buf()
        } else {
            root.join(&dir)
        };
        let entries = match std::fs::read_dir(&abs) {
            Ok(e) => e,
            Err(e) if first => return Err(format!("{}: {e}", abs.display())),
            Err(e) => {
                log::debug!("cannot list {}: {e}", abs.display());
                outcome.failed_dirs.push(dir);
                continue;
            }
        };
        first = false;
        for entry in entries {
            let Ok(entry) = entry else {
                outcome.failed_dirs.push(dir.clone());
                continue;
            };
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                log::debug!("skipping a name that is not UTF-8 in {}", abs.display());
                continue;
            };
            // file_type() does not follow symlinks: a link is neither a dir nor a file here.
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            rel.clear();
            if !dir.is_empty() {
                rel.push_str(&dir);
                rel.push('/');
            }
            rel.push_str(name);
            if kind.is_dir() {
                // Only Windows has attributes to look at, and there they come with the listing.
                let marked = cfg!(windows)
                    && entry
                        .metadata()
                        .is_ok_and(|m| marked_by_os(name, attributes(&m)));
                if filter.dir_ok(name) && !marked {
                    stack.push(rel.clone());
                }
            } else if kind.is_file() && filter.file_ok(name) {
                match entry.metadata() {
                    Ok(meta) if marked_by_os(name, attributes(&meta)) => {}
                    Ok(meta) => {
                        outcome.files += 1;
                        found(&rel, meta.len(), mtime_ns(&meta));
                    }
                    // Gone between listing and stat: the next look settles it.
                    Err(e) => log::debug!("{rel}: {e}"),
                }
            }
        }
    }
    Ok(outcome)
}

/// Why a file is not ready yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Wait {
    Placeholder,
    Changing,
    /// Seconds left when first reported (the ledger is not rewritten for the countdown).
    Settling(u64),
    /// Cannot open, or an incomplete container: the text says which.
    Blocked(String),
}

impl Wait {
    pub fn reason(&self) -> String {
        match self {
            Wait::Placeholder => "0 bytes (placeholder)".into(),
            Wait::Changing => "size changing".into(),
            Wait::Settling(s) => format!("settling ({s}s left)"),
            Wait::Blocked(r) => r.clone(),
        }
    }

    /// Same kind of wait: no news for the queue.
    fn same_as(&self, other: &Wait) -> bool {
        match (self, other) {
            (Wait::Blocked(a), Wait::Blocked(b)) => a == b,
            (a, b) => std::mem::discriminant(a) == std::mem::discriminant(b),
        }
    }
}

struct Seen {
    size: u64,
    mtime_ns: i64,
    /// The rescan that last saw it.
    generation: u32,
}

struct Pending {
    /// When the size or mtime last changed (or the file was first seen).
    changed_ms: u64,
    /// Changes seen since it was first seen.
    changes: u32,
    /// When to look at it again.
    next_look_ms: u64,
    /// Something happened since the last decision.
    dirty: bool,
    /// What the queue was last told.
    told: Option<Wait>,
}

/// The stability tracker: pure bookkeeping with the clock passed in, so tests drive time.
pub struct Tracker {
    settle_ms: u64,
    /// How long a file that cannot be opened (or is incomplete) waits before another try.
    recheck_ms: u64,
    seen: HashMap<Box<str>, Seen>,
    pending: HashMap<Box<str>, Pending>,
    generation: u32,
}

impl Tracker {
    pub fn new(settle: Duration, recheck: Duration) -> Tracker {
        Tracker {
            settle_ms: settle.as_millis() as u64,
            recheck_ms: recheck.as_millis().max(1000) as u64,
            seen: HashMap::new(),
            pending: HashMap::new(),
            generation: 0,
        }
    }

    /// A file the ledger already has a job for. `settled` false: decide about it again.
    pub fn know(&mut self, path: &str, size: u64, mtime_ns: i64, settled: bool, now: u64) {
        self.seen.insert(
            path.into(),
            Seen {
                size,
                mtime_ns,
                generation: self.generation,
            },
        );
        if !settled {
            self.pending.insert(path.into(), self.fresh(now));
        }
    }

    fn fresh(&self, now: u64) -> Pending {
        Pending {
            changed_ms: now,
            changes: 0,
            next_look_ms: now + self.settle_ms,
            dirty: true,
            told: None,
        }
    }

    pub fn files(&self) -> usize {
        self.seen.len()
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Starts a full rescan: what it does not see has vanished (see `sweep`).
    pub fn begin_scan(&mut self) {
        self.generation = self.generation.wrapping_add(1);
    }

    /// A look at a file. With `baseline`, a file seen for the first time is recorded as
    /// present at first start instead of tracked; returns that news.
    pub fn saw(
        &mut self,
        path: &str,
        size: u64,
        mtime_ns: i64,
        now: u64,
        baseline: bool,
    ) -> Option<FileNews> {
        let generation = self.generation;
        if let Some(seen) = self.seen.get_mut(path) {
            seen.generation = generation;
            if seen.size == size && seen.mtime_ns == mtime_ns {
                return None;
            }
            seen.size = size;
            seen.mtime_ns = mtime_ns;
            let settle = self.settle_ms;
            match self.pending.get_mut(path) {
                Some(p) => {
                    p.changed_ms = now;
                    p.changes += 1;
                    p.next_look_ms = now + settle;
                    p.dirty = true;
                }
                None => {
                    let fresh = self.fresh(now);
                    self.pending.insert(path.into(), fresh);
                }
            }
            return None;
        }
        self.seen.insert(
            path.into(),
            Seen {
                size,
                mtime_ns,
                generation,
            },
        );
        if baseline {
            return Some(FileNews::Present(FileVersion {
                path: path.to_string(),
                size,
                mtime_ns,
            }));
        }
        let fresh = self.fresh(now);
        self.pending.insert(path.into(), fresh);
        None
    }

    /// The path is gone (a look found nothing).
    pub fn gone(&mut self, path: &str) -> Option<FileNews> {
        self.pending.remove(path);
        self.seen.remove(path).map(|_| FileNews::Vanished {
            path: path.to_string(),
        })
    }

    /// After a full rescan: everything it did not see has vanished, except under folders that
    /// could not be listed.
    pub fn sweep(&mut self, failed_dirs: &[String]) -> Vec<FileNews> {
        let generation = self.generation;
        let under_failed = |p: &str| {
            failed_dirs.iter().any(|d| {
                d.is_empty()
                    || (p.starts_with(d.as_str()) && p.as_bytes().get(d.len()) == Some(&b'/'))
            })
        };
        let gone: Vec<Box<str>> = self
            .seen
            .iter()
            .filter(|(p, s)| s.generation != generation && !under_failed(p))
            .map(|(p, _)| p.clone())
            .collect();
        gone.iter().filter_map(|p| self.gone(p)).collect()
    }

    /// Pending files whose time to be looked at again has come.
    pub fn due(&self, now: u64) -> Vec<String> {
        self.pending
            .iter()
            .filter(|(_, p)| p.next_look_ms <= now)
            .map(|(path, _)| path.to_string())
            .collect()
    }

    /// When the next pending file is due.
    pub fn next_look(&self) -> Option<u64> {
        self.pending.values().map(|p| p.next_look_ms).min()
    }

    /// Decides about every pending file that changed or came due: news for the queue.
    /// `verify(path, size)` opens the file and checks its container; it runs only once size
    /// and mtime have held still for the settle time.
    pub fn decide(
        &mut self,
        now: u64,
        verify: &mut dyn FnMut(&str, u64) -> Result<(), String>,
    ) -> Vec<FileNews> {
        let mut news = Vec::new();
        let mut stable = Vec::new();
        for (path, p) in self.pending.iter_mut() {
            if !p.dirty && p.next_look_ms > now {
                continue;
            }
            p.dirty = false;
            let Some(seen) = self.seen.get(path) else {
                continue;
            };
            let file = FileVersion {
                path: path.to_string(),
                size: seen.size,
                mtime_ns: seen.mtime_ns,
            };
            let settled_at = p.changed_ms + self.settle_ms;
            let wait = if seen.size == 0 {
                p.next_look_ms = now + self.settle_ms;
                Wait::Placeholder
            } else if now < settled_at {
                p.next_look_ms = settled_at;
                if p.changes > 0 {
                    Wait::Changing
                } else {
                    Wait::Settling((settled_at - now).div_ceil(1000))
                }
            } else {
                match verify(path, seen.size) {
                    Ok(()) => {
                        stable.push(path.clone());
                        news.push(FileNews::Stable(file));
                        continue;
                    }
                    Err(reason) => {
                        p.next_look_ms = now + self.recheck_ms;
                        Wait::Blocked(reason)
                    }
                }
            };
            if !p.told.as_ref().is_some_and(|t| t.same_as(&wait)) {
                news.push(FileNews::Waiting {
                    file,
                    reason: wait.reason(),
                });
                p.told = Some(wait);
            }
        }
        for path in stable {
            self.pending.remove(&path);
        }
        news
    }
}

/// Opens the file and, for QuickTime, checks its atoms.
pub fn verify_file(root: &Path, rel: &str, verify_container: bool) -> Result<(), String> {
    let path = root.join(rel);
    if verify_container && container::is_quicktime(rel) {
        container::check_file(&path)
    } else {
        std::fs::File::open(&path)
            .map(|_| ())
            .map_err(|e| format!("cannot open: {e}"))
    }
}

/// The watcher thread: runs until `stop` closes or the queue is gone.
pub fn run_watcher(
    project: Project,
    config: WatchConfig,
    start: StartState,
    queue: Sender<QueueMsg>,
    stop: Receiver<()>,
    hub: Hub,
) {
    let mut w = Watcher::new(project, config, start, queue, hub);
    let (hint_tx, hint_rx) = unbounded::<PathBuf>();
    // Kept alive for as long as the loop runs; dropping it stops the OS watch. `hint_tx`
    // stays alive too, so that without events `hint_rx` simply never fires.
    let _os_watch = if w.config.events {
        w.start_events(hint_tx.clone())
    } else {
        None
    };
    let mut next_scan = Instant::now();
    loop {
        let now = Instant::now();
        let mut wake = next_scan;
        if let Some(t) = w.tracker.next_look() {
            let ms = t.saturating_sub(now_ms());
            wake = wake.min(now + Duration::from_millis(ms));
        }
        let mut hints = HashSet::new();
        select! {
            recv(stop) -> _ => break,
            recv(hint_rx) -> path => {
                if let Ok(p) = path {
                    hints.insert(p);
                }
                // Let a burst of events arrive, then handle them together.
                std::thread::sleep(EVENT_COALESCE);
                hints.extend(hint_rx.try_iter());
            }
            default(wake.saturating_duration_since(now)) => {}
        }
        if Instant::now() >= next_scan {
            w.full_scan();
            next_scan = Instant::now() + w.config.rescan;
        }
        for hint in hints {
            w.look_at(&hint);
        }
        if !w.tick() {
            break;
        }
    }
}

/// Whose files a watcher looks at: the project's name, and the component it reports as
/// (`watcher` with one project, `watcher:<name>` with several).
#[derive(Clone, Debug)]
pub struct Project {
    pub name: String,
    pub component: &'static str,
}

impl Project {
    /// The project `name`; `several`: the config lists several projects.
    pub fn new(name: &str, several: bool) -> Project {
        let component = if several {
            // Component names are 'static; one small leak per project at start.
            Box::leak(format!("watcher:{name}").into_boxed_str())
        } else {
            "watcher"
        };
        Project {
            name: name.to_string(),
            component,
        }
    }
}

struct Watcher {
    project: Project,
    config: WatchConfig,
    filter: Filter,
    tracker: Tracker,
    queue: Sender<QueueMsg>,
    hub: Hub,
    /// News not sent yet (sent once per loop turn, as one batch).
    news: Vec<FileNews>,
    /// First start with an empty ledger, until the first full scan ends.
    baseline: bool,
    /// See [`StartState::baseline_before_ns`].
    baseline_before_ns: Option<i64>,
    scans: u64,
    /// The root as the OS resolves it, when that differs from `config.root`: what event
    /// paths may start with instead (see `event_rel`).
    canonical_root: Option<PathBuf>,
}

impl Watcher {
    fn new(
        project: Project,
        config: WatchConfig,
        start: StartState,
        queue: Sender<QueueMsg>,
        hub: Hub,
    ) -> Watcher {
        let mut tracker = Tracker::new(config.settle, config.rescan);
        let now = now_ms();
        for (path, size, mtime, settled) in start.known {
            tracker.know(&path, size, mtime, settled, now);
        }
        hub.publish(Event::Component {
            name: project.component,
            state: ComponentState::Starting,
            detail: format!("{}: first scan", config.root.display()),
        });
        Watcher {
            project,
            filter: Filter {
                include: config.include.clone(),
                exclude: config.exclude.clone(),
            },
            baseline: start.first_start && !config.upload_existing,
            baseline_before_ns: start.baseline_before_ns,
            canonical_root: std::fs::canonicalize(&config.root)
                .ok()
                .filter(|c| *c != config.root),
            config,
            tracker,
            queue,
            hub,
            news: Vec::new(),
            scans: 0,
        }
    }

    fn start_events(&self, hints: Sender<PathBuf>) -> Option<notify::RecommendedWatcher> {
        use notify::Watcher as _;
        let handler = move |res: notify::Result<notify::Event>| match res {
            Ok(event) => {
                for path in event.paths {
                    let _ = hints.send(path);
                }
            }
            Err(e) => log::debug!("file events: {e}"),
        };
        let watched = notify::recommended_watcher(handler).and_then(|mut w| {
            w.watch(&self.config.root, notify::RecursiveMode::Recursive)
                .map(|()| w)
        });
        match watched {
            Ok(w) => Some(w),
            Err(e) => {
                log::warn!(
                    "{}: no file events ({e}); relying on rescans every {} s",
                    self.config.root.display(),
                    self.config.rescan.as_secs()
                );
                None
            }
        }
    }

    fn full_scan(&mut self) {
        let started = Instant::now();
        self.tracker.begin_scan();
        let now = now_ms();
        let baseline = self.baseline;
        let before = self.baseline_before_ns;
        let (tracker, news) = (&mut self.tracker, &mut self.news);
        let result = walk(
            &self.config.root,
            "",
            &self.filter,
            &mut |rel, size, mtime| {
                let baseline = baseline && before.is_none_or(|t| mtime <= t);
                if let Some(n) = tracker.saw(rel, size, mtime, now, baseline) {
                    news.push(n);
                }
            },
        );
        self.scans += 1;
        let root = self.config.root.display();
        match result {
            Ok(outcome) => {
                let vanished = self.tracker.sweep(&outcome.failed_dirs);
                self.news.extend(vanished);
                self.baseline = false;
                let (state, detail) = if outcome.failed_dirs.is_empty() {
                    (
                        ComponentState::Up,
                        format!("{root}: {} files", outcome.files),
                    )
                } else {
                    (
                        ComponentState::Degraded,
                        format!(
                            "{root}: {} files; {} folder(s) could not be read",
                            outcome.files,
                            outcome.failed_dirs.len()
                        ),
                    )
                };
                log::debug!(
                    "rescan {}: {} files, {} pending, {:.3} s",
                    self.scans,
                    outcome.files,
                    self.tracker.pending(),
                    started.elapsed().as_secs_f64()
                );
                let _ = self.queue.send(QueueMsg::ScanComplete {
                    project: self.project.name.clone(),
                    files: outcome.files,
                });
                self.hub.publish(Event::Component {
                    name: self.project.component,
                    state,
                    detail,
                });
            }
            Err(e) => {
                // Nothing is "vanished" when we could not look: an unmounted share stays calm.
                if self.scans == 1 || self.scans.is_multiple_of(10) {
                    log::warn!("cannot scan {}: {e}", self.root_key());
                }
                self.hub.publish(Event::Component {
                    name: self.project.component,
                    state: ComponentState::Degraded,
                    detail: format!("{root}: cannot read: {e}"),
                });
            }
        }
    }

    /// How the config names this watcher's root.
    fn root_key(&self) -> String {
        if self.project.component == "watcher" {
            "watch.root".into()
        } else {
            format!("the root of project {}", self.project.name)
        }
    }

    /// An OS event named `path`: look at it (a folder: walk it) now.
    fn look_at(&mut self, path: &Path) {
        let canonical_root = self.canonical_root.as_deref();
        let Some(rel) = event_rel(path, &self.config.root, canonical_root) else {
            return;
        };
        if under_marked_folder(&self.config.root, &rel) {
            return;
        }
        let now = now_ms();
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.is_dir() => {
                let dirs_ok = rel.split('/').all(|d| self.filter.dir_ok(d));
                if dirs_ok {
                    let (tracker, news) = (&mut self.tracker, &mut self.news);
                    let _ = walk(&self.config.root, &rel, &self.filter, &mut |r, s, m| {
                        if let Some(n) = tracker.saw(r, s, m, now, false) {
                            news.push(n);
                        }
                    });
                }
            }
            Ok(meta) if meta.is_file() => {
                if self.filter.path_ok(&rel) {
                    if let Some(n) = self
                        .tracker
                        .saw(&rel, meta.len(), mtime_ns(&meta), now, false)
                    {
                        self.news.push(n);
                    }
                }
            }
            Ok(_) => {} // a symlink or something else: not ours
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(n) = self.tracker.gone(&rel) {
                    self.news.push(n);
                }
            }
            Err(e) => log::debug!("{rel}: {e}"),
        }
    }

    /// Looks again at pending files that are due, decides, and sends the news. `false` when
    /// the queue is gone.
    fn tick(&mut self) -> bool {
        let now = now_ms();
        for rel in self.tracker.due(now) {
            match std::fs::symlink_metadata(self.config.root.join(&rel)) {
                Ok(meta) if meta.is_file() => {
                    self.tracker
                        .saw(&rel, meta.len(), mtime_ns(&meta), now, false);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if let Some(n) = self.tracker.gone(&rel) {
                        self.news.push(n);
                    }
                }
                _ => {}
            }
        }
        let (root, containers) = (&self.config.root, self.config.verify_container);
        let decided = self
            .tracker
            .decide(now, &mut |rel, _| verify_file(root, rel, containers));
        self.news.extend(decided);
        if self.news.is_empty() {
            return true;
        }
        let batch = std::mem::take(&mut self.news);
        let project = self.project.name.clone();
        self.queue
            .send(QueueMsg::FilesSeen {
                project,
                news: batch,
            })
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::glob::Glob;

    const T0: u64 = 1_000_000;

    fn tracker() -> Tracker {
        Tracker::new(Duration::from_secs(1), Duration::from_secs(60))
    }

    fn ok(_: &str, _: u64) -> Result<(), String> {
        Ok(())
    }

    fn reasons(news: &[FileNews]) -> Vec<String> {
        news.iter()
            .map(|n| match n {
                FileNews::Waiting { reason, .. } => reason.clone(),
                FileNews::Stable(f) => format!("stable {}", f.size),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_first_start_whose_baseline_was_never_recorded_is_remembered_until_it_is() {
        let dir = crate::testutil::TempDir::new();
        let mark = dir.0.join(FIRST_START_MARK);
        let (mut ledger, _) = Ledger::open(&dir.0.join("jobs")).unwrap();
        let first = StartState::from_ledger(&ledger, "default");
        assert!(first.first_start);
        assert_eq!(
            first.baseline_before_ns, None,
            "the very first start: all is baseline"
        );
        assert!(mark.exists(), "the first start is marked");
        assert_eq!(
            std::fs::metadata(&mark).unwrap().len(),
            0,
            "empty: fits a full disk"
        );

        // Restarted before anything was recorded (a full disk): the first start's time.
        let again = StartState::from_ledger(&ledger, "default");
        let since = mtime_ns(&std::fs::metadata(&mark).unwrap());
        assert!(again.first_start);
        assert_eq!(again.baseline_before_ns, Some(since));

        // Once the baseline is recorded the mark goes.
        let mut job = crate::ledger::Job {
            id: ledger.new_id(),
            project: "default".into(),
            path: "old.mov".into(),
            size: 1,
            mtime_ns: 1,
            state: JobState::Skipped,
            folder: String::new(),
            attempts: 0,
            next_attempt_ms: None,
            reason: None,
            file_id: None,
            unknown_file: false,
            view_url: None,
            all_in_ms: None,
            created_ms: 1,
            updated_ms: 1,
            stack: None,
            times: None,
            review: Default::default(),
            verified: None,
            sha256: None,
            next_ms: None,
        };
        job.reason = Some(crate::queue::BASELINE_REASON.into());
        ledger.write(&[job]).unwrap();
        let later = StartState::from_ledger(&ledger, "default");
        assert!(!later.first_start);
        assert_eq!(later.baseline_before_ns, None);
        assert!(!mark.exists());
    }

    #[test]
    fn a_growing_file_waits_until_it_holds_still_for_the_settle_time() {
        let mut t = tracker();
        t.saw("a.mov", 10, 1, T0, false);
        assert_eq!(reasons(&t.decide(T0, &mut ok)), ["settling (1s left)"]);
        assert!(t.due(T0 + 999).is_empty());
        assert_eq!(t.due(T0 + 1000), ["a.mov"]);
        t.saw("a.mov", 20, 2, T0 + 1000, false);
        assert_eq!(reasons(&t.decide(T0 + 1000, &mut ok)), ["size changing"]);
        t.saw("a.mov", 30, 3, T0 + 2000, false);
        assert!(
            t.decide(T0 + 2000, &mut ok).is_empty(),
            "told once per reason"
        );
        t.saw("a.mov", 30, 3, T0 + 3000, false);
        assert_eq!(reasons(&t.decide(T0 + 3000, &mut ok)), ["stable 30"]);
        assert_eq!(t.pending(), 0);
        t.saw("a.mov", 30, 3, T0 + 4000, false);
        assert!(t.decide(T0 + 4000, &mut ok).is_empty(), "stable once");
    }

    #[test]
    fn a_placeholder_never_becomes_stable() {
        let mut t = tracker();
        t.saw("p.mov", 0, 1, T0, false);
        assert_eq!(reasons(&t.decide(T0, &mut ok)), ["0 bytes (placeholder)"]);
        for s in 1..5 {
            assert!(t.decide(T0 + s * 1000, &mut ok).is_empty());
        }
        t.saw("p.mov", 100, 2, T0 + 5000, false);
        assert_eq!(reasons(&t.decide(T0 + 5000, &mut ok)), ["size changing"]);
        assert_eq!(reasons(&t.decide(T0 + 6000, &mut ok)), ["stable 100"]);
    }

    #[test]
    fn an_incomplete_container_waits_with_its_reason_and_is_checked_again_later() {
        let mut t = tracker();
        let mut checks = 0;
        let mut no_moov = |_: &str, _: u64| {
            checks += 1;
            Err("incomplete QuickTime: no moov atom".to_string())
        };
        t.saw("m.mov", 10, 1, T0, false);
        t.decide(T0, &mut no_moov);
        assert_eq!(
            reasons(&t.decide(T0 + 1000, &mut no_moov)),
            ["incomplete QuickTime: no moov atom"]
        );
        assert!(t.decide(T0 + 2000, &mut no_moov).is_empty());
        assert_eq!(checks, 1, "not reopened every second");
        assert_eq!(t.next_look(), Some(T0 + 61_000));
        // The writer finishes: the file changes, then holds still.
        t.saw("m.mov", 50, 2, T0 + 3000, false);
        assert_eq!(reasons(&t.decide(T0 + 3000, &mut ok)), ["size changing"]);
        assert_eq!(reasons(&t.decide(T0 + 4000, &mut ok)), ["stable 50"]);
    }

    #[test]
    fn a_rescan_that_misses_a_file_reports_it_vanished_unless_its_folder_failed() {
        let mut t = tracker();
        t.know("done.mov", 1, 1, true, T0);
        t.know("a/x.mov", 1, 1, true, T0);
        t.know("ab.mov", 1, 1, true, T0);
        t.begin_scan();
        t.saw("done.mov", 1, 1, T0, false);
        let mut gone = reasons(&t.sweep(&["a".to_string()]));
        gone.sort();
        assert_eq!(gone, [r#"Vanished { path: "ab.mov" }"#]);
        assert_eq!(t.files(), 2);
    }

    #[test]
    fn the_first_scan_at_first_start_records_a_baseline() {
        let mut t = tracker();
        let news = t.saw("old.mov", 5, 1, T0, true);
        assert!(matches!(news, Some(FileNews::Present(_))));
        assert_eq!(t.pending(), 0);
        assert!(t.saw("old.mov", 5, 1, T0, false).is_none());
    }

    #[test]
    fn filters_skip_hidden_and_excluded_folders() {
        let globs = |g: &[&str]| GlobSet::new(g.iter().map(|s| Glob::new(s).unwrap()).collect());
        let f = Filter {
            include: globs(&["*.mov"]),
            exclude: globs(&[".*", "._*", "*.part", "Proxies"]),
        };
        assert!(f.path_ok("SQ01/SHOT.MOV"));
        assert!(!f.path_ok(".hidden/a.mov"));
        assert!(!f.path_ok("Proxies/a.mov"));
        assert!(!f.path_ok("a/._a.mov"));
        assert!(!f.path_ok("a.mov.part"));
        assert!(!f.path_ok("a.mxf"));
        assert!(!f.path_ok("$Recycle.Bin/S-1-5-21-1/$R1A2B3C.mov"));
        assert!(!f.path_ok("system volume information/a.mov"));
    }

    const HIDDEN: u32 = 0x2;
    const SYSTEM: u32 = 0x4;
    /// FILE_ATTRIBUTE_DIRECTORY | FILE_ATTRIBUTE_READONLY | FILE_ATTRIBUTE_ARCHIVE.
    const PLAIN: u32 = 0x10 | 0x1 | 0x20;

    #[test]
    fn a_volumes_own_folders_and_what_windows_marks_hidden_or_system_are_not_walked() {
        for name in ["$RECYCLE.BIN", "$Recycle.Bin", "System Volume Information"] {
            assert!(marked_by_os(name, 0), "{name} by name, on every platform");
        }
        assert!(marked_by_os("Config.Msi", HIDDEN | SYSTEM));
        assert!(marked_by_os("Thumbs.db", HIDDEN));
        assert!(marked_by_os("pagefile.sys", SYSTEM));
        assert!(
            !marked_by_os("4_OUT", PLAIN),
            "read-only or archived is the user's"
        );
        assert!(!marked_by_os("SQ07", 0));
        assert!(!marked_by_os("System Volume", 0));
    }

    #[test]
    fn a_drive_root_watch_skips_the_system_folders_and_is_not_degraded() {
        let dir = crate::testutil::TempDir::new();
        let root = &dir.0;
        std::fs::create_dir_all(root.join("$RECYCLE.BIN/S-1-5-21-1")).unwrap();
        std::fs::write(root.join("$RECYCLE.BIN/S-1-5-21-1/$R1A2B3C.mov"), b"x").unwrap();
        let svi = root.join("System Volume Information");
        std::fs::create_dir_all(&svi).unwrap();
        std::fs::write(svi.join("old.mov"), b"x").unwrap();
        std::fs::create_dir_all(root.join("SQ07")).unwrap();
        std::fs::write(root.join("SQ07/a.mov"), b"x").unwrap();
        // As on Windows: nobody but SYSTEM may list it.
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&svi, std::fs::Permissions::from_mode(0o000)).unwrap();
        }
        let globs = |g: &[&str]| GlobSet::new(g.iter().map(|s| Glob::new(s).unwrap()).collect());
        let filter = Filter {
            include: globs(&["*.mov"]),
            exclude: globs(&[]),
        };
        let mut found = Vec::new();
        let outcome = walk(root, "", &filter, &mut |rel, _, _| {
            found.push(rel.to_string())
        });
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&svi, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let outcome = outcome.unwrap();
        assert_eq!(found, vec!["SQ07/a.mov"]);
        assert!(outcome.failed_dirs.is_empty(), "{:?}", outcome.failed_dirs);
    }

    #[test]
    fn event_paths_match_the_root_as_configured_or_as_the_os_resolves_it() {
        let root = Path::new("/var/folders/ab/inbox");
        let canonical = Path::new("/private/var/folders/ab/inbox");
        let rel = |p: &str| event_rel(Path::new(p), root, Some(canonical));
        assert_eq!(
            rel("/var/folders/ab/inbox/SQ07/a.mov").as_deref(),
            Some("SQ07/a.mov")
        );
        assert_eq!(
            rel("/private/var/folders/ab/inbox/SQ07/a.mov").as_deref(),
            Some("SQ07/a.mov"),
            "FSEvents' canonical form"
        );
        assert_eq!(rel("/private/var/folders/ab/other/a.mov"), None);
        assert_eq!(rel("/var/folders/ab/inbox"), None, "the root itself");
        assert_eq!(
            event_rel(Path::new("/private/var/folders/ab/inbox/a.mov"), root, None),
            None
        );
    }

    /// The stand-in for macOS on Linux: a root reached through a symlink, and events named
    /// by the resolved path, as FSEvents names them.
    #[cfg(unix)]
    #[test]
    fn events_under_a_symlinked_root_are_matched_by_its_resolved_path() {
        let dir = crate::testutil::TempDir::new();
        let real = dir.0.join("real");
        std::fs::create_dir_all(real.join("SQ07")).unwrap();
        let link = dir.0.join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let canonical = std::fs::canonicalize(&link).unwrap();
        assert_ne!(canonical, link);
        let event = canonical.join("SQ07").join("a.mov");
        assert_eq!(
            event_rel(&event, &link, None),
            None,
            "what was dropped before"
        );
        assert_eq!(
            event_rel(&event, &link, Some(&canonical)).as_deref(),
            Some("SQ07/a.mov")
        );
    }
}
