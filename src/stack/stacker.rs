//! The stacker thread: stacks one version at a time in Frame.io, always looking before it
//! changes anything (the guarantees are in `stack.rs`).
//!
//! One step, for a version J of an item in folder F:
//! 1. list F, the versions inside the item's stacks included: which versions of the item are
//!    there (by name, or by the file ids postflow uploaded), bare or in which stack, and where
//!    J is. J already in a stack means an earlier try got that far (a crash, a lost answer):
//!    nothing is created or moved again, only the order is checked;
//! 2. another version in a stack: move J into that stack. Bare versions only: create a stack
//!    of them and J, lowest version at the bottom (at most ten, around J). None: J stays a
//!    plain file;
//! 3. a create or a move whose answer is an error may still have happened (a 5xx after the
//!    fact, a lost answer): J's place is looked up before anything is sent again;
//! 4. the highest version must be the head: after a move J goes right below the next higher
//!    version, or on top if it is the highest (Frame.io's experimental reorder). If Frame.io
//!    refuses the reorder, that is said once in the log and on the job, and left.

use std::cell::Cell;
use std::collections::HashMap;
use std::time::Duration;

use crossbeam_channel::{select, Receiver, RecvTimeoutError, Sender};

use super::{Known, StackTask, StackUpdate};
use crate::frameio::api::{Api, ApiError, Child, File, StackPlace};
use crate::layout::Layout;
use crate::ledger::{StackState, Stacking};
use crate::queue::QueueMsg;
use crate::upload::folders::FolderCache;

/// Creates or moves sent for one version before giving up (each after looking).
const TRIES: u32 = 3;
/// The most files Frame.io stacks in one create.
const MAX_CREATE: usize = 10;

/// Everything the stacker thread owns.
pub struct Stacker {
    api: Api,
    account_id: String,
    folders: FolderCache,
    layout: Layout,
    queue: Sender<QueueMsg>,
    stop: Receiver<()>,
    /// Frame.io answered the experimental reorder as if it did not exist: not asked again in
    /// this run (and said once in the log).
    reorder_off: Cell<bool>,
}

/// Why a step did not end with an outcome to record.
enum Halt {
    /// Shutdown: the ledger still says pending; the next start takes it up.
    Stopped,
    /// Frame.io needs a sign-in: wait for it, then do the step again.
    NeedsLogin,
    /// The detail a person reads: "uploaded; not stacked: <detail>".
    Failed(String),
}

impl From<ApiError> for Halt {
    fn from(e: ApiError) -> Halt {
        match e {
            ApiError::Stopped => Halt::Stopped,
            ApiError::NeedsLogin(_) => Halt::NeedsLogin,
            other => Halt::Failed(detail(&other)),
        }
    }
}

/// Frame.io's own words when it gave any (with the status), else the whole error.
fn detail(e: &ApiError) -> String {
    match e {
        ApiError::Status { status, detail, .. } => format!("{detail} (HTTP {status})"),
        other => other.to_string(),
    }
}

/// A version of the item found in the folder.
#[derive(Clone, Debug)]
struct Entry {
    file: File,
    number: u64,
    label: String,
    /// The stack holding it, if any.
    stack: Option<String>,
    /// Its job, when postflow uploaded it.
    job: Option<u64>,
}

impl Entry {
    /// Lowest first; equal numbers by creation, so a re-export of the same version goes on
    /// top of the older one.
    fn rank(&self) -> (u64, &str, &str) {
        (
            self.number,
            self.file.created_at.as_deref().unwrap_or(""),
            &self.file.id,
        )
    }
}

/// Where a file is, looked up.
#[derive(Debug, PartialEq, Eq)]
enum Place {
    Folder,
    Stack(String),
    Elsewhere,
}

/// Runs until shutdown: each task in turn.
pub fn run_stacker(stacker: Stacker, tasks: Receiver<StackTask>) {
    loop {
        select! {
            recv(tasks) -> task => match task {
                Ok(task) => stacker.stack(&task),
                Err(_) => return,
            },
            recv(stacker.stop) -> _ => return,
        }
    }
}

impl Stacker {
    pub fn new(
        api: Api,
        account_id: &str,
        project_id: &str,
        layout: Layout,
        queue: Sender<QueueMsg>,
        stop: Receiver<()>,
    ) -> Stacker {
        Stacker {
            api: api.with_stop(stop.clone()),
            account_id: account_id.to_string(),
            folders: FolderCache::new(account_id, project_id),
            layout,
            queue,
            stop,
            reorder_off: Cell::new(false),
        }
    }

    fn report(&self, id: u64, stacking: Stacking) {
        self.send(StackUpdate {
            id,
            stacking,
            neighbour: false,
        });
    }

    fn send(&self, update: StackUpdate) {
        // The queue outlives this thread; a failed send means shutdown, and the ledger
        // already says pending.
        let _ = self.queue.send(QueueMsg::Stacked(update));
    }

    fn stack(&self, task: &StackTask) {
        let name = task.job.name();
        loop {
            match self.step(task) {
                Ok(stacking) => {
                    match stacking.state {
                        StackState::Stacked => {
                            log::info!("{name}: {} in Frame.io", super::summary(&stacking))
                        }
                        _ => log::debug!("{name}: {}", super::summary(&stacking)),
                    }
                    return self.report(task.job.id, stacking);
                }
                Err(Halt::Stopped) => return,
                Err(Halt::NeedsLogin) => {
                    if !self
                        .api
                        .auth()
                        .wait_for_login(&self.stop, Duration::from_secs(2))
                    {
                        return;
                    }
                }
                Err(Halt::Failed(detail)) => {
                    log::warn!("{name}: uploaded, but not stacked: {detail}");
                    return self.report(
                        task.job.id,
                        Stacking {
                            state: StackState::Failed,
                            detail: Some(detail),
                            ..self.record(task)
                        },
                    );
                }
            }
        }
    }

    /// The job's record as it stands (pending), to build the next one from.
    fn record(&self, task: &StackTask) -> Stacking {
        task.job.stack.as_deref().cloned().unwrap_or(Stacking {
            state: StackState::Pending,
            version: task.version.label.clone(),
            stack_id: None,
            on: None,
            under: None,
            detail: None,
        })
    }

    fn step(&self, task: &StackTask) -> Result<Stacking, Halt> {
        let Some(file_id) = task.job.file_id.as_deref() else {
            return Err(Halt::Failed("no Frame.io file id".into()));
        };
        let folder_id = self.folders.resolve(&self.api, &task.job.folder)?;
        let mut view = self.look(&folder_id, task)?;
        if !view.iter().any(|e| e.file.id == file_id) {
            // Not in the folder nor in the item's stacks: perhaps in a stack someone made of
            // other files. Its parent says.
            match self.place(file_id, &folder_id)? {
                Place::Stack(s) => view.extend(self.stack_entries(&s, task)?),
                _ => {
                    return Err(Halt::Failed(format!(
                        "the file is no longer in Frame.io folder /{}",
                        task.job.folder
                    )))
                }
            }
        }
        let me = view
            .iter()
            .find(|e| e.file.id == file_id)
            .cloned()
            .ok_or_else(|| Halt::Failed("the file is not where Frame.io says it is".into()))?;
        let others: Vec<Entry> = view.into_iter().filter(|e| e.file.id != file_id).collect();
        let record = self.record(task);

        let (stack_id, members, created) = match &me.stack {
            // An earlier try created the stack or moved the file: do neither again.
            Some(s) => (s.clone(), in_stack(&others, s), false),
            None => {
                if others.is_empty() {
                    return Ok(Stacking {
                        state: StackState::Alone,
                        detail: Some("no other version of it in the Frame.io folder".into()),
                        ..record
                    });
                }
                match target_stack(&me, &others) {
                    Some(s) => {
                        self.move_into(file_id, &folder_id, &s)?;
                        (s.clone(), in_stack(&others, &s), false)
                    }
                    None => {
                        let group = create_group(&me, &others, &task.on_the_way);
                        if group.len() < 2 {
                            return Ok(Stacking {
                                state: StackState::Alone,
                                detail: Some(
                                    "the next version is still on its way; it stacks on this one"
                                        .into(),
                                ),
                                ..record
                            });
                        }
                        let s = self.create(&folder_id, &group, &me, task)?;
                        let members: Vec<Entry> =
                            group.into_iter().filter(|e| e.file.id != file_id).collect();
                        (s, members, true)
                    }
                }
            }
        };
        self.tell_neighbours(&stack_id, &me, &members);
        let (below, above) = neighbours(&me, &members);
        let note = if created {
            // Created bottom to top in version order: already in place.
            None
        } else {
            self.put_in_order(&stack_id, &me, above)?
        };
        Ok(Stacking {
            state: StackState::Stacked,
            stack_id: Some(stack_id),
            on: below.map(|e| e.label.clone()),
            under: above.map(|e| e.label.clone()),
            detail: note,
            ..record
        })
    }

    /// The versions of the item in the folder: bare files, and the files of every stack that
    /// may hold the item (its head is a version of it, or the listing does not say).
    fn look(&self, folder_id: &str, task: &StackTask) -> Result<Vec<Entry>, Halt> {
        let mut entries = Vec::new();
        for child in self.api.folder_children(&self.account_id, folder_id)? {
            match child {
                Child::File(f) => entries.extend(self.entry(f, None, task)),
                Child::VersionStack(s) => {
                    let ours = match &s.head_version {
                        None => true,
                        Some(head) => {
                            self.entry(head.clone(), None, task).is_some()
                                || self.is_version(&s.name, task)
                        }
                    };
                    if ours {
                        entries.extend(self.stack_entries(&s.id, task)?);
                    }
                }
                Child::Folder(_) | Child::Other { .. } => {}
            }
        }
        Ok(entries)
    }

    fn stack_entries(&self, stack_id: &str, task: &StackTask) -> Result<Vec<Entry>, Halt> {
        Ok(self
            .api
            .version_stack_children(&self.account_id, stack_id)?
            .into_iter()
            .filter_map(|f| self.entry(f, Some(stack_id.to_string()), task))
            .collect())
    }

    fn is_version(&self, name: &str, task: &StackTask) -> bool {
        self.layout
            .version(name)
            .is_some_and(|v| v.item == task.version.item)
    }

    /// The file as a version of the item, or None. A file whose bytes are not all in
    /// (`created`) is left out unless postflow knows it is done: someone's upload under way.
    fn entry(&self, file: File, stack: Option<String>, task: &StackTask) -> Option<Entry> {
        let known: HashMap<&str, &Known> =
            task.known.iter().map(|k| (k.file_id.as_str(), k)).collect();
        let (number, label, job) = if Some(file.id.as_str()) == task.job.file_id.as_deref() {
            (
                task.version.number,
                task.version.label.clone(),
                Some(task.job.id),
            )
        } else if let Some(k) = known.get(file.id.as_str()) {
            (k.number, k.label.clone(), Some(k.job))
        } else {
            let v = self
                .layout
                .version(&file.name)
                .filter(|v| v.item == task.version.item)?;
            if file.status.as_deref() == Some("created") {
                return None;
            }
            (v.number, v.label, None)
        };
        Some(Entry {
            file,
            number,
            label,
            stack,
            job,
        })
    }

    /// Where a file is now: in the folder, in a stack, or somewhere else.
    fn place(&self, file_id: &str, folder_id: &str) -> Result<Place, Halt> {
        let file = match self.api.file(&self.account_id, file_id) {
            Ok(f) => f,
            Err(e) if e.status() == Some(404) => return Ok(Place::Elsewhere),
            Err(e) => return Err(e.into()),
        };
        match file.parent_id {
            Some(p) if p == folder_id => Ok(Place::Folder),
            Some(p) => match self.api.version_stack(&self.account_id, &p) {
                Ok(s) if s.parent_id.as_deref().is_none_or(|f| f == folder_id) => {
                    Ok(Place::Stack(p))
                }
                Ok(_) => Ok(Place::Elsewhere),
                Err(e) if matches!(e.status(), Some(404 | 422)) => Ok(Place::Elsewhere),
                Err(e) => Err(e.into()),
            },
            None => Ok(Place::Elsewhere),
        }
    }

    /// Sleeps before sending a create or move again, unless shutdown comes first.
    fn pause(&self, tries: u32) -> Result<(), Halt> {
        match self
            .stop
            .recv_timeout(Duration::from_secs(1 << tries.min(4)))
        {
            Err(RecvTimeoutError::Timeout) => Ok(()),
            _ => Err(Halt::Stopped),
        }
    }

    fn move_into(&self, file_id: &str, folder_id: &str, stack_id: &str) -> Result<(), Halt> {
        for tries in 1..=TRIES {
            let err = match self.api.move_file(&self.account_id, file_id, stack_id) {
                Ok(_) => return Ok(()),
                Err(e @ (ApiError::Stopped | ApiError::NeedsLogin(_))) => return Err(e.into()),
                Err(e) => e,
            };
            // The move may have happened although the answer says otherwise: look first.
            if self.place(file_id, folder_id)? == Place::Stack(stack_id.to_string()) {
                log::info!("moved into the stack although Frame.io answered: {err}");
                return Ok(());
            }
            if !err.is_transient() || tries == TRIES {
                return Err(Halt::Failed(detail(&err)));
            }
            self.pause(tries)?;
        }
        unreachable!("the last try returns")
    }

    fn create(
        &self,
        folder_id: &str,
        group: &[Entry],
        me: &Entry,
        task: &StackTask,
    ) -> Result<String, Halt> {
        let ids: Vec<&str> = group.iter().map(|e| e.file.id.as_str()).collect();
        for tries in 1..=TRIES {
            let err = match self
                .api
                .create_version_stack(&self.account_id, folder_id, &ids)
            {
                Ok(stack) => {
                    self.remember(task, &stack.id);
                    return Ok(stack.id);
                }
                Err(e @ (ApiError::Stopped | ApiError::NeedsLogin(_))) => return Err(e.into()),
                Err(e) => e,
            };
            // Made although the answer is an error (a 5xx after the fact, a lost answer), or
            // refused because an earlier try already made it: J's parent says. Never create
            // blindly a second time.
            if let Place::Stack(s) = self.place(&me.file.id, folder_id)? {
                log::info!(
                    "{}: the version stack was made although Frame.io answered: {err}",
                    task.job.name()
                );
                self.remember(task, &s);
                return Ok(s);
            }
            if !err.is_transient() || tries == TRIES {
                return Err(Halt::Failed(detail(&err)));
            }
            self.pause(tries)?;
        }
        unreachable!("the last try returns")
    }

    /// The stack id goes to the ledger as soon as it is known.
    fn remember(&self, task: &StackTask, stack_id: &str) {
        self.report(
            task.job.id,
            Stacking {
                stack_id: Some(stack_id.to_string()),
                ..self.record(task)
            },
        );
    }

    /// The other versions postflow uploaded in J's stack: their jobs say where they are now
    /// (a create stacked them; J landed next to them).
    fn tell_neighbours(&self, stack_id: &str, me: &Entry, others: &[Entry]) {
        let mut all: Vec<Entry> = others.to_vec();
        all.push(me.clone());
        for sibling in others {
            let Some(job) = sibling.job else { continue };
            let rest: Vec<Entry> = all
                .iter()
                .filter(|e| e.file.id != sibling.file.id)
                .cloned()
                .collect();
            let (below, above) = neighbours(sibling, &rest);
            self.send(StackUpdate {
                id: job,
                stacking: Stacking {
                    state: StackState::Stacked,
                    version: sibling.label.clone(),
                    stack_id: Some(stack_id.to_string()),
                    on: below.map(|e| e.label.clone()),
                    under: above.map(|e| e.label.clone()),
                    detail: None,
                },
                neighbour: true,
            });
        }
    }

    /// After a move (or when an earlier try may have moved it): J right below the next higher
    /// version, or the head if it is the highest. Returns a note for the job when Frame.io
    /// refuses the reorder; the stack itself is fine.
    fn put_in_order(
        &self,
        stack_id: &str,
        me: &Entry,
        above: Option<&Entry>,
    ) -> Result<Option<String>, Halt> {
        let place = match above {
            Some(a) => StackPlace::Below(a.file.id.clone()),
            None => {
                let stack = self.api.version_stack(&self.account_id, stack_id)?;
                if stack.head_version.is_some_and(|h| h.id == me.file.id) {
                    return Ok(None);
                }
                StackPlace::Top
            }
        };
        let wanted = match (&place, above) {
            (StackPlace::Below(_), Some(a)) => format!("{} belongs below {}", me.label, a.label),
            _ => format!("{} belongs on top", me.label),
        };
        if self.reorder_off.get() {
            return Ok(Some(format!(
                "out of order ({wanted}): Frame.io's experimental reorder is not available"
            )));
        }
        match self
            .api
            .reorder_version(&self.account_id, stack_id, &me.file.id, &place)
        {
            Ok(()) => Ok(None),
            Err(e @ (ApiError::Stopped | ApiError::NeedsLogin(_))) => Err(e.into()),
            Err(e) => {
                // 404/405/400: the experimental endpoint is not there for this account. Say it
                // once; stacks then keep the order Frame.io gives them.
                if matches!(e.status(), Some(400 | 403 | 404 | 405 | 501)) {
                    if !self.reorder_off.replace(true) {
                        log::warn!(
                            "Frame.io refused the experimental version reorder ({e}); \
                             versions arriving out of order stay where Frame.io puts them"
                        );
                    }
                } else {
                    log::warn!("could not reorder version stack {stack_id}: {e}");
                }
                Ok(Some(format!(
                    "out of order ({wanted}): Frame.io refused to reorder the stack: {}",
                    detail(&e)
                )))
            }
        }
    }
}

/// The entries of one stack.
fn in_stack(entries: &[Entry], stack_id: &str) -> Vec<Entry> {
    entries
        .iter()
        .filter(|e| e.stack.as_deref() == Some(stack_id))
        .cloned()
        .collect()
}

/// The stack J joins: the one holding the highest version up to J's, else the one holding
/// the lowest version above it.
fn target_stack(me: &Entry, others: &[Entry]) -> Option<String> {
    let stacked = || others.iter().filter(|e| e.stack.is_some());
    stacked()
        .filter(|e| e.number <= me.number)
        .max_by(|a, b| a.rank().cmp(&b.rank()))
        .or_else(|| {
            stacked()
                .filter(|e| e.number > me.number)
                .min_by(|a, b| a.rank().cmp(&b.rank()))
        })
        .and_then(|e| e.stack.clone())
}

/// The files of a new stack, bottom first: J and the bare versions in version order; at most
/// ten, J and the nearest ones (lower ones first). A higher version with a version still on
/// its way below it is left out: that one will join in order, and the higher one after it.
fn create_group(me: &Entry, others: &[Entry], on_the_way: &[u64]) -> Vec<Entry> {
    let gap_below = |e: &Entry| on_the_way.iter().any(|&n| me.number < n && n < e.number);
    let mut all: Vec<Entry> = others
        .iter()
        .filter(|e| e.number <= me.number || !gap_below(e))
        .cloned()
        .collect();
    all.push(me.clone());
    all.sort_by(|a, b| a.rank().cmp(&b.rank()));
    if all.len() > MAX_CREATE {
        let at = all
            .iter()
            .position(|e| e.file.id == me.file.id)
            .unwrap_or(0);
        let start = at
            .saturating_sub(MAX_CREATE - 1)
            .min(all.len() - MAX_CREATE);
        all = all[start..start + MAX_CREATE].to_vec();
    }
    all
}

/// The versions right below and right above J among the other members of its stack.
fn neighbours<'a>(me: &Entry, members: &'a [Entry]) -> (Option<&'a Entry>, Option<&'a Entry>) {
    let below = members
        .iter()
        .filter(|e| e.rank() < me.rank())
        .max_by(|a, b| a.rank().cmp(&b.rank()));
    let above = members
        .iter()
        .filter(|e| e.rank() > me.rank())
        .min_by(|a, b| a.rank().cmp(&b.rank()));
    (below, above)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, number: u64, stack: Option<&str>) -> Entry {
        Entry {
            file: File {
                id: id.into(),
                name: format!("SH010_v{number:03}.mov"),
                parent_id: None,
                file_size: None,
                media_type: None,
                status: None,
                created_at: Some(format!("2026-01-01T00:00:{number:02}Z")),
                view_url: None,
            },
            number,
            label: format!("v{number:03}"),
            stack: stack.map(str::to_string),
            job: None,
        }
    }

    fn ids(entries: &[Entry]) -> Vec<&str> {
        entries.iter().map(|e| e.file.id.as_str()).collect()
    }

    #[test]
    fn a_new_stack_is_in_version_order_and_at_most_ten_around_the_new_file() {
        let me = entry("v3", 3, None);
        let others = [entry("v4", 4, None), entry("v1", 1, None)];
        assert_eq!(ids(&create_group(&me, &others, &[])), ["v1", "v3", "v4"]);
        let many: Vec<Entry> = (1..=14)
            .filter(|n| *n != 12)
            .map(|n| entry(&format!("v{n}"), n, None))
            .collect();
        let group = create_group(&entry("v12", 12, None), &many, &[]);
        assert_eq!(group.len(), 10);
        assert_eq!(group.first().map(|e| e.number), Some(3));
        assert_eq!(group.last().map(|e| e.number), Some(12), "lower ones first");
        let group = create_group(&entry("v0", 0, None), &many, &[]);
        assert_eq!((group[0].number, group[9].number), (0, 9));
    }

    #[test]
    fn a_new_stack_leaves_out_what_comes_after_a_version_still_on_its_way() {
        let me = entry("v1", 1, None);
        let others = [entry("v3", 3, None), entry("v4", 4, None)];
        assert_eq!(ids(&create_group(&me, &others, &[2])), ["v1"]);
        let others = [entry("v3", 3, None), entry("v5", 5, None)];
        assert_eq!(ids(&create_group(&me, &others, &[4])), ["v1", "v3"]);
        let me = entry("v3", 3, None);
        let others = [entry("v1", 1, None), entry("v5", 5, None)];
        assert_eq!(ids(&create_group(&me, &others, &[2, 4])), ["v1", "v3"]);
    }

    #[test]
    fn a_version_joins_the_stack_of_the_version_below_it() {
        let me = entry("v3", 3, None);
        let others = [
            entry("v1", 1, Some("old")),
            entry("v2", 2, Some("main")),
            entry("v5", 5, Some("later")),
        ];
        assert_eq!(target_stack(&me, &others).as_deref(), Some("main"));
        let late = entry("v0", 0, None);
        assert_eq!(target_stack(&late, &others).as_deref(), Some("old"));
        assert_eq!(target_stack(&me, &[entry("v1", 1, None)]), None);
    }

    #[test]
    fn neighbours_are_the_next_versions_down_and_up() {
        let me = entry("v3", 3, None);
        let members = [
            entry("v1", 1, None),
            entry("v5", 5, None),
            entry("v2", 2, None),
        ];
        let (below, above) = neighbours(&me, &members);
        assert_eq!(below.map(|e| e.number), Some(2));
        assert_eq!(above.map(|e| e.number), Some(5));
        let (below, above) = neighbours(&entry("v9", 9, None), &members);
        assert_eq!((below.map(|e| e.number), above.is_none()), (Some(5), true));
    }
}
