//! Version stacks (`layout.stack_versions`): once a version's upload is `done`, it joins the
//! other versions of its item in one Frame.io version stack, the highest version on top, so
//! reviewers watch v004 over v003 with every earlier version's comments a click away.
//!
//! Stacking is a step of the job after the upload, with the upload's guarantees:
//! - recorded in the ledger: the queue gives a `done` version a [`Stacking`] record in the same
//!   write that makes it `done` (`pending`), and records every report of the stacker;
//! - one at a time per item, lowest version first: a version waits while a lower version of
//!   the same item is still on its way (queued, uploading, retrying…) or still to be stacked,
//!   so versions dropped together stack in order without relying on the reorder;
//! - idempotent across `kill -9` at any instant: the stacker always looks first (where is the
//!   file now?), so a restart never creates a second stack or moves a file twice, and never
//!   uploads again (the job is `done`);
//! - a failure never loses the upload: the job stays `done`, its record says
//!   `failed` with Frame.io's detail, and retrying it by hand retries only the stacking.
//!
//! This file is the queue's side ([`Tracker`]: which pending versions may go now) and the
//! shared words; [`stacker`] does the Frame.io part on its own thread.

pub mod stacker;
pub mod view;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crossbeam_channel::Sender;

use crate::layout::{Layout, Version};
use crate::ledger::{Job, JobState, StackState, Stacking};

/// One version to stack, as the queue hands it to the stacker.
#[derive(Clone, Debug)]
pub struct StackTask {
    /// The job, `done`, with its Frame.io file id.
    pub job: Job,
    pub version: Version,
    /// Other versions of the item that postflow uploaded into the same folder: their Frame.io
    /// file ids say which files are versions even if someone renamed them in Frame.io.
    pub known: Vec<Known>,
    /// Version numbers of the item still on their way here (queued, uploading, retrying…).
    /// A new stack leaves out a higher version with one of these below it, so that the
    /// version on its way can join in order later, without a reorder.
    pub on_the_way: Vec<u64>,
}

/// A version postflow uploaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Known {
    pub job: u64,
    pub file_id: String,
    pub number: u64,
    pub label: String,
    /// The version stack its record says it is in (`stacked`). The stacker checks it before
    /// relying on it: a reviewer may have changed the stack since.
    pub stack_id: Option<String>,
}

/// What the stacker tells the queue about a job: its new stacking record (`pending` with news,
/// such as the stack id as soon as Frame.io returns it, or the outcome).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StackUpdate {
    pub id: u64,
    pub stacking: Stacking,
    /// Not the job being stacked but another version in the same stack, whose neighbours
    /// changed (a version joined around it): see [`neighbours_changed`].
    pub neighbour: bool,
}

/// The record of a version whose stack gained a version (`update`, a `neighbour` update):
/// its stack and neighbours, keeping a note on its order. `None`: leave the record alone (a
/// version still to be stacked does its own step).
pub fn neighbours_changed(current: &Stacking, update: &Stacking) -> Option<Stacking> {
    let detail = match current.state {
        StackState::Pending => return None,
        StackState::Stacked => current.detail.clone(),
        StackState::Alone | StackState::Failed => None,
    };
    Some(Stacking {
        state: StackState::Stacked,
        version: current.version.clone(),
        stack_id: update.stack_id.clone(),
        on: update.on.clone(),
        under: update.under.clone(),
        detail,
    })
}

/// The record a version's job gets when its upload completes; `None` for a file that is not
/// a version (stacking off, name not matching, `{version}` not a number).
pub fn after_upload(layout: &Layout, job: &Job) -> Option<Box<Stacking>> {
    let version = layout.version(job.name())?;
    Some(Box::new(pending(version.label, None)))
}

fn pending(version: String, detail: Option<String>) -> Stacking {
    Stacking {
        state: StackState::Pending,
        version,
        stack_id: None,
        on: None,
        under: None,
        detail,
    }
}

/// The record after a retry asked by hand: only a `failed` stacking is retried.
pub fn retried(stacking: &Stacking) -> Result<Stacking, String> {
    match stacking.state {
        StackState::Failed => Ok(pending(stacking.version.clone(), None)),
        other => Err(format!(
            "its stacking is {}, only a failed stacking can be retried",
            state_name(other)
        )),
    }
}

fn state_name(state: StackState) -> &'static str {
    match state {
        StackState::Pending => "pending",
        StackState::Stacked => "stacked",
        StackState::Alone => "alone",
        StackState::Failed => "failed",
    }
}

/// One line for a person: the page's job row and the notifications ("v004, stacked on v003").
pub fn summary(s: &Stacking) -> String {
    let v = &s.version;
    let mut text = match s.state {
        StackState::Pending => match &s.detail {
            Some(d) => format!("{v}, stacking: {d}"),
            None => format!("{v}, stacking…"),
        },
        StackState::Stacked => match (&s.on, &s.under) {
            (Some(on), Some(under)) => format!("{v}, stacked on {on} (below {under})"),
            (Some(on), None) => format!("{v}, stacked on {on}"),
            (None, Some(under)) => format!("{v}, stacked below {under}"),
            (None, None) => format!("{v}, stacked"),
        },
        StackState::Alone => format!(
            "{v}, not stacked: {}",
            s.detail.as_deref().unwrap_or("no other version")
        ),
        StackState::Failed => {
            return format!(
                "uploaded; not stacked: {}",
                s.detail.as_deref().unwrap_or("unknown error")
            )
        }
    };
    if s.state == StackState::Stacked {
        if let Some(note) = &s.detail {
            text.push_str(&format!("; {note}"));
        }
    }
    text
}

/// An item in one folder: (folder path, item key).
type Item = (String, String);

/// The queue's bookkeeping for stacking: versions per item, the ones waiting, the ones with
/// the stacker. Pure (no I/O besides sending tasks); the queue calls [`Tracker::observe`] for
/// every job it records and [`Tracker::dispatch`] after each ledger write.
pub struct Tracker {
    layout: Layout,
    out: Option<Sender<StackTask>>,
    /// Every version job (whatever its state) per item, with its number.
    items: HashMap<Item, BTreeMap<u64, u64>>,
    /// The item each version job was last filed under (a job's folder is set when it settles).
    item_of: HashMap<u64, Item>,
    /// `done` jobs whose stacking is pending and not with the stacker.
    waiting: BTreeSet<u64>,
    /// Jobs with the stacker, and their item: one per item at a time.
    running: HashMap<u64, Item>,
}

impl Tracker {
    /// `out` is the stacker's inbox; without one nothing is handed out (tests of the queue
    /// alone, or stacking off).
    pub fn new(layout: Layout, out: Option<Sender<StackTask>>) -> Tracker {
        Tracker {
            layout,
            out,
            items: HashMap::new(),
            item_of: HashMap::new(),
            waiting: BTreeSet::new(),
            running: HashMap::new(),
        }
    }

    /// A job as just recorded.
    pub fn observe(&mut self, job: &Job) {
        let item = self
            .layout
            .version(job.name())
            .map(|v| ((job.folder.clone(), v.item), v.number));
        if let Some(old) = self.item_of.get(&job.id) {
            if item.as_ref().map(|(i, _)| i) != Some(old) {
                if let Some(jobs) = self.items.get_mut(old) {
                    jobs.remove(&job.id);
                }
                self.item_of.remove(&job.id);
            }
        }
        if let Some((item, number)) = item {
            self.items
                .entry(item.clone())
                .or_default()
                .insert(job.id, number);
            self.item_of.insert(job.id, item);
        }
        let pending = job.state == JobState::Done
            && job
                .stack
                .as_ref()
                .is_some_and(|s| s.state == StackState::Pending);
        if pending && !self.running.contains_key(&job.id) {
            self.waiting.insert(job.id);
        } else {
            self.waiting.remove(&job.id);
        }
    }

    /// The stacker is done with a job (whatever the outcome): its item may go on.
    pub fn finished(&mut self, id: u64) {
        self.running.remove(&id);
    }

    /// Hands the stacker every waiting version whose turn it is. Returns the records to
    /// write for the others: what each one waits for (only when that changed), or `alone`
    /// for a pending job that the layout no longer calls a version (the config changed).
    pub fn dispatch(&mut self, jobs: &BTreeMap<u64, Job>) -> Vec<Job> {
        let mut changed = Vec::new();
        let Some(out) = self.out.clone() else {
            return changed;
        };
        for id in self.waiting.clone() {
            let Some(job) = jobs.get(&id) else {
                self.waiting.remove(&id);
                continue;
            };
            let Some(stacking) = job.stack.as_ref() else {
                continue;
            };
            let (Some(version), Some(_)) = (self.layout.version(job.name()), &job.file_id) else {
                let mut j = job.clone();
                j.stack = Some(Box::new(Stacking {
                    state: StackState::Alone,
                    detail: Some("not a version under the current layout".into()),
                    ..(**stacking).clone()
                }));
                changed.push(j);
                continue;
            };
            let item = (job.folder.clone(), version.item.clone());
            let busy = self
                .running
                .iter()
                .find(|(_, i)| **i == item)
                .and_then(|(other, _)| jobs.get(other))
                .map(|o| self.label(o));
            let wait = busy
                .or_else(|| self.blocker(&item, job, version.number, jobs))
                .map(|label| format!("waiting for {label}"));
            if let Some(reason) = wait {
                if stacking.detail.as_deref() != Some(reason.as_str()) {
                    let mut j = job.clone();
                    j.stack = Some(Box::new(pending(stacking.version.clone(), Some(reason))));
                    changed.push(j);
                }
                continue;
            }
            let known = self.known(&item, id, jobs);
            let on_the_way = self.on_the_way(&item, jobs);
            let task = StackTask {
                job: job.clone(),
                version,
                known,
                on_the_way,
            };
            if out.send(task).is_err() {
                // The stacker is gone (shutdown): the ledger still says pending.
                return changed;
            }
            self.waiting.remove(&id);
            self.running.insert(id, item);
        }
        changed
    }

    /// A lower version of the item still on its way (or to be stacked) that `job` must wait
    /// for, as its label. Equal numbers go in job order.
    fn blocker(
        &self,
        item: &Item,
        job: &Job,
        number: u64,
        jobs: &BTreeMap<u64, Job>,
    ) -> Option<String> {
        self.items.get(item)?.iter().find_map(|(&other, &n)| {
            if other == job.id || (n, other) > (number, job.id) {
                return None;
            }
            let o = jobs.get(&other)?;
            let unstacked = o
                .stack
                .as_ref()
                .is_some_and(|s| s.state == StackState::Pending);
            let on_its_way = !o.state.is_final() || (o.state == JobState::Done && unstacked);
            on_its_way.then(|| self.label(o))
        })
    }

    fn label(&self, job: &Job) -> String {
        self.layout
            .version(job.name())
            .map_or_else(|| job.name().to_string(), |v| v.label)
    }

    fn on_the_way(&self, item: &Item, jobs: &BTreeMap<u64, Job>) -> Vec<u64> {
        self.items.get(item).map_or_else(Vec::new, |versions| {
            versions
                .iter()
                .filter(|(id, _)| jobs.get(id).is_some_and(|j| !j.state.is_final()))
                .map(|(_, &number)| number)
                .collect()
        })
    }

    /// The other `done` versions of the item with a Frame.io file id.
    fn known(&self, item: &Item, id: u64, jobs: &BTreeMap<u64, Job>) -> Vec<Known> {
        let Some(versions) = self.items.get(item) else {
            return Vec::new();
        };
        versions
            .iter()
            .filter(|(&other, _)| other != id)
            .filter_map(|(other, &number)| {
                let o = jobs.get(other)?;
                let file_id = o.file_id.clone().filter(|_| o.state == JobState::Done)?;
                let stack_id = o
                    .stack
                    .as_ref()
                    .filter(|s| s.state == StackState::Stacked)
                    .and_then(|s| s.stack_id.clone());
                Some(Known {
                    job: *other,
                    file_id,
                    number,
                    label: self.label(o),
                    stack_id,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::Template;

    fn layout() -> Layout {
        Layout::new(
            "",
            Some(Template::parse("{shot}_v{version}.{ext}").unwrap()),
            Some(Template::parse("{shot}").unwrap()),
            false,
        )
        .unwrap()
        .stacking(true)
    }

    fn job(id: u64, name: &str, state: JobState) -> Job {
        let mut j = Job {
            id,
            project: "default".into(),
            path: name.into(),
            size: 1,
            mtime_ns: 0,
            state,
            folder: name.split('_').next().unwrap().into(),
            attempts: 1,
            next_attempt_ms: None,
            reason: None,
            file_id: None,
            view_url: None,
            all_in_ms: None,
            created_ms: 0,
            updated_ms: 0,
            unknown_file: false,
            stack: None,
            times: None,
            review: Default::default(),
            verified: None,
            sha256: None,
            next_ms: None,
        };
        if state == JobState::Done {
            j.file_id = Some(format!("file-{id}"));
            j.stack = after_upload(&layout(), &j);
        }
        j
    }

    struct World {
        tracker: Tracker,
        jobs: BTreeMap<u64, Job>,
        tasks: crossbeam_channel::Receiver<StackTask>,
    }

    impl World {
        fn new() -> World {
            let (tx, rx) = crossbeam_channel::unbounded();
            World {
                tracker: Tracker::new(layout(), Some(tx)),
                jobs: BTreeMap::new(),
                tasks: rx,
            }
        }

        fn record(&mut self, job: Job) {
            self.tracker.observe(&job);
            self.jobs.insert(job.id, job);
        }

        /// Dispatches (recording what the tracker asks to record) and returns the job ids
        /// handed to the stacker.
        fn dispatch(&mut self) -> Vec<u64> {
            for j in self.tracker.dispatch(&self.jobs) {
                self.record(j);
            }
            self.tasks.try_iter().map(|t| t.job.id).collect()
        }

        fn finish(&mut self, id: u64, state: StackState) {
            let mut j = self.jobs[&id].clone();
            j.stack.as_mut().unwrap().state = state;
            self.tracker.finished(id);
            self.record(j);
        }

        fn detail(&self, id: u64) -> Option<String> {
            self.jobs[&id].stack.as_ref()?.detail.clone()
        }
    }

    #[test]
    fn a_version_waits_for_a_lower_version_still_uploading() {
        let mut w = World::new();
        w.record(job(1, "SH010_v001.mov", JobState::Uploading));
        w.record(job(2, "SH010_v002.mov", JobState::Done));
        assert_eq!(w.dispatch(), Vec::<u64>::new());
        assert_eq!(w.detail(2).as_deref(), Some("waiting for v001"));
        w.record(job(1, "SH010_v001.mov", JobState::Done));
        assert_eq!(w.dispatch(), vec![1], "the lower version goes first");
        assert_eq!(w.dispatch(), Vec::<u64>::new(), "one per item at a time");
        w.finish(1, StackState::Alone);
        assert_eq!(w.dispatch(), vec![2]);
    }

    #[test]
    fn a_lower_version_that_failed_for_good_holds_nothing_up() {
        let mut w = World::new();
        w.record(job(1, "SH010_v001.mov", JobState::Failed));
        w.record(job(2, "SH010_v010.mov", JobState::Done));
        assert_eq!(w.dispatch(), vec![2]);
    }

    #[test]
    fn other_items_and_higher_versions_do_not_wait() {
        let mut w = World::new();
        w.record(job(1, "SH010_v003.mov", JobState::Queued));
        w.record(job(2, "SH010_v002.mov", JobState::Done));
        w.record(job(3, "SH020_v001.mov", JobState::Queued));
        w.record(job(4, "SH020_v002.mp4", JobState::Done));
        let mut sent = w.dispatch();
        sent.sort();
        assert_eq!(sent, vec![2, 4], "v003 is higher; .mp4 is another item");
    }

    #[test]
    fn versions_compare_as_numbers_and_the_task_knows_the_others() {
        let mut w = World::new();
        w.record(job(1, "SH010_v10.mov", JobState::Done));
        w.record(job(2, "SH010_v9.mov", JobState::Done));
        let sent: Vec<StackTask> = {
            for j in w.tracker.dispatch(&w.jobs) {
                w.record(j);
            }
            w.tasks.try_iter().collect()
        };
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].job.id, 2, "v9 before v10");
        assert_eq!(
            sent[0].known,
            vec![Known {
                job: 1,
                file_id: "file-1".into(),
                number: 10,
                label: "v10".into(),
                stack_id: None,
            }]
        );
    }

    #[test]
    fn the_task_says_which_versions_are_still_on_their_way() {
        let mut w = World::new();
        w.record(job(1, "SH010_v001.mov", JobState::Done));
        w.record(job(2, "SH010_v002.mov", JobState::Uploading));
        w.record(job(3, "SH010_v003.mov", JobState::Done));
        let tasks: Vec<StackTask> = {
            for j in w.tracker.dispatch(&w.jobs) {
                w.record(j);
            }
            w.tasks.try_iter().collect()
        };
        assert_eq!(tasks.len(), 1);
        assert_eq!((tasks[0].job.id, tasks[0].on_the_way.clone()), (1, vec![2]));
    }

    #[test]
    fn a_pending_job_the_layout_no_longer_calls_a_version_ends_alone() {
        let mut w = World::new();
        let mut j = job(1, "SH010_v001.mov", JobState::Done);
        j.path = "renamed.mov".into();
        w.record(j);
        assert_eq!(w.dispatch(), Vec::<u64>::new());
        assert_eq!(w.jobs[&1].stack.as_ref().unwrap().state, StackState::Alone);
    }

    #[test]
    fn summaries_say_what_happened() {
        let mut s = pending("v004".into(), None);
        assert_eq!(summary(&s), "v004, stacking…");
        s.state = StackState::Stacked;
        s.on = Some("v003".into());
        assert_eq!(summary(&s), "v004, stacked on v003");
        s.under = Some("v005".into());
        assert_eq!(summary(&s), "v004, stacked on v003 (below v005)");
        s.state = StackState::Failed;
        s.detail = Some("File x must exist in the parent directory".into());
        assert_eq!(
            summary(&s),
            "uploaded; not stacked: File x must exist in the parent directory"
        );
        assert_eq!(retried(&s).unwrap().state, StackState::Pending);
        s.state = StackState::Stacked;
        assert!(retried(&s).unwrap_err().contains("stacked"));
    }

    #[test]
    fn a_neighbour_update_moves_the_labels_and_keeps_a_note_on_the_order() {
        let update = Stacking {
            state: StackState::Stacked,
            version: "v003".into(),
            stack_id: Some("s".into()),
            on: Some("v002".into()),
            under: None,
            detail: None,
        };
        let mut current = Stacking {
            on: Some("v001".into()),
            detail: Some("out of order".into()),
            ..update.clone()
        };
        let merged = neighbours_changed(&current, &update).unwrap();
        assert_eq!(merged.on.as_deref(), Some("v002"));
        assert_eq!(merged.detail.as_deref(), Some("out of order"));
        current.state = StackState::Alone;
        let merged = neighbours_changed(&current, &update).unwrap();
        assert_eq!((merged.state, merged.detail), (StackState::Stacked, None));
        current.state = StackState::Pending;
        assert_eq!(
            neighbours_changed(&current, &update),
            None,
            "it stacks itself"
        );
    }
}
