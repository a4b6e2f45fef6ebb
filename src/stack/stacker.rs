//! The stacker thread: stacks one version at a time in Frame.io, always looking before it
//! changes anything (the guarantees are in `stack.rs`).
//!
//! One step, for a version J of an item in folder F:
//! 1. where is J now (`GET …/files/{id}`, 10 calls a second: its `parent_id`)? Already in a
//!    stack of F means an earlier try got that far (a crash, a lost answer): nothing is
//!    created or moved again, only the order is checked;
//! 2. the other versions of the item, bare or in which stack. The ledger first: a version
//!    postflow stacked is where its record says, checked with one listing of that stack's
//!    files, and J joins it without looking at the folder. Else F's shared view
//!    (`view.rs`: one listing for every version postflow found before it was taken, kept
//!    true by this thread's own changes), with the versions postflow uploaded since placed
//!    by one look at each;
//! 3. another version in a stack: move J into that stack (its files listed just before, for
//!    J's neighbours). Bare versions only: each is checked to be still bare in F, then a
//!    stack is created of them and J, lowest version at the bottom (at most ten, around J).
//!    None: J stays a plain file. A check that finds the view wrong (a reviewer stacked or
//!    moved something since) corrects it and decides again;
//! 4. a create or a move whose answer is an error may still have happened (a 5xx after the
//!    fact, a lost answer): J's place is looked up before anything is sent again;
//! 5. the highest version must be the head: after a move J goes right below the next higher
//!    version, or on top if it is the highest (Frame.io's experimental reorder). If Frame.io
//!    refuses the reorder, that is said once in the log and on the job, and left.
//!
//! A version whose folder must be listed again before it can be answered for, and whose
//! folder was listed a moment ago, waits for the next listing ([`super::view::relist_interval`]);
//! meanwhile the thread goes on with other versions.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crossbeam_channel::{after, never, select, Receiver, RecvTimeoutError, Sender};

use super::view::{StackInfo, View, Views};
use super::{Known, StackTask, StackUpdate};
use crate::frameio::api::{Api, ApiError, File, StackPlace, VersionStack, PAGE_SIZE};
use crate::layout::Layout;
use crate::ledger::{StackState, Stacking};
use crate::queue::{now_ms, QueueMsg};
use crate::upload::folders::FolderCache;

/// Creates or moves sent for one version before giving up (each after looking).
const TRIES: u32 = 3;
/// The most files Frame.io stacks in one create.
const MAX_CREATE: usize = 10;
/// Decisions in one step: each one after a check found the folder's view wrong.
const ROUNDS: usize = 4;

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
    /// What this thread knows of each folder it stacks in.
    views: RefCell<Views>,
}

/// Why a step did not end with an outcome to record.
enum Halt {
    /// Shutdown: the ledger still says pending; the next start takes it up.
    Stopped,
    /// Frame.io needs a sign-in: wait for it, then do the step again.
    NeedsLogin,
    /// The folder must be listed again and may not be yet: do the step again then.
    Later(Instant),
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
    /// Its place was looked up in this step (not taken from the view).
    checked: bool,
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
#[derive(Debug)]
enum Place {
    Folder(File),
    /// In this stack, which is in the folder.
    Stack(File, Box<VersionStack>),
    Elsewhere,
}

/// Runs until shutdown: each task in turn; a task whose folder may not be listed yet again
/// waits aside until it may, while the others go on.
pub fn run_stacker(stacker: Stacker, tasks: Receiver<StackTask>) {
    let mut later: Vec<(Instant, StackTask)> = Vec::new();
    loop {
        let now = Instant::now();
        if let Some(i) = later.iter().position(|(at, _)| *at <= now) {
            let (_, task) = later.swap_remove(i);
            stacker.stack_or_wait(task, &mut later);
            continue;
        }
        let timer = match later.iter().map(|(at, _)| *at).min() {
            Some(at) => after(at.saturating_duration_since(now)),
            None => never(),
        };
        select! {
            recv(tasks) -> task => match task {
                Ok(task) => stacker.stack_or_wait(task, &mut later),
                Err(_) => return,
            },
            recv(stacker.stop) -> _ => return,
            recv(timer) -> _ => {}
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
            views: RefCell::new(Views::default()),
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

    fn stack_or_wait(&self, task: StackTask, later: &mut Vec<(Instant, StackTask)>) {
        if let Some(at) = self.stack(&task) {
            later.push((at, task));
        }
    }

    /// Stacks one version; `Some(when)` if it must wait for its folder's next listing.
    fn stack(&self, task: &StackTask) -> Option<Instant> {
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
                    self.report(task.job.id, stacking);
                    return None;
                }
                Err(Halt::Stopped) => return None,
                Err(Halt::Later(at)) => {
                    let secs = at.saturating_duration_since(Instant::now()).as_secs() + 1;
                    log::debug!("{name}: the Frame.io folder is listed again in {secs} s");
                    self.report(
                        task.job.id,
                        Stacking {
                            detail: Some(format!(
                                "looking at the Frame.io folder again in {secs} s"
                            )),
                            ..self.record(task)
                        },
                    );
                    return Some(at);
                }
                Err(Halt::NeedsLogin) => {
                    if !self
                        .api
                        .auth()
                        .wait_for_login(&self.stop, Duration::from_secs(2))
                    {
                        return None;
                    }
                }
                Err(Halt::Failed(detail)) => {
                    log::warn!("{name}: uploaded, but not stacked: {detail}");
                    self.report(
                        task.job.id,
                        Stacking {
                            state: StackState::Failed,
                            detail: Some(detail),
                            ..self.record(task)
                        },
                    );
                    return None;
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
        if let Some(at) = self.listing_not_due(&folder_id, task) {
            return Err(Halt::Later(at));
        }
        let record = self.record(task);
        let file = match self.place(file_id, &folder_id)? {
            // An earlier try created the stack or moved the file: do neither again.
            Place::Stack(file, stack) => {
                return self.already_stacked(task, &folder_id, file, *stack, record)
            }
            Place::Folder(file) => file,
            Place::Elsewhere => {
                return Err(Halt::Failed(format!(
                    "the file is no longer in Frame.io folder /{}",
                    task.job.folder
                )))
            }
        };
        self.patch(&folder_id, |v| v.put_bare(file.clone()));
        let me = Entry {
            file,
            number: task.version.number,
            label: task.version.label.clone(),
            stack: None,
            job: Some(task.job.id),
            checked: true,
        };
        for _ in 0..ROUNDS {
            if let Some(done) = self.decide(task, &folder_id, &me, &record)? {
                return Ok(done);
            }
        }
        Err(Halt::Failed(
            "the Frame.io folder kept changing while stacking it".into(),
        ))
    }

    /// One decision for J, bare in the folder: `None` when a check found the folder's view
    /// wrong (it is corrected; decide again).
    fn decide(
        &self,
        task: &StackTask,
        folder_id: &str,
        me: &Entry,
        record: &Stacking,
    ) -> Result<Option<Stacking>, Halt> {
        let alone = |why: &str| Stacking {
            state: StackState::Alone,
            detail: Some(why.into()),
            ..record.clone()
        };
        if !self.view_answers(folder_id, task) {
            if let Some(done) = self.join_known_stack(task, folder_id, me, record)? {
                return Ok(Some(done));
            }
        }
        let others = self.others(task, folder_id, me)?;
        if others.is_empty() {
            return Ok(Some(alone("no other version of it in the Frame.io folder")));
        }
        if let Some(stack_id) = target_stack(me, &others) {
            let stack = self
                .views
                .borrow()
                .get(folder_id)
                .and_then(|v| v.stack(&stack_id).map(|s| s.stack.clone()));
            let members = match stack {
                Some(_) => self.stack_files(&stack_id)?,
                None => None,
            };
            return match (stack, members) {
                (Some(stack), Some(members)) => self
                    .join(task, folder_id, me, stack, members, record)
                    .map(Some),
                _ => {
                    // Gone since the folder was listed.
                    self.patch(folder_id, |v| v.forget_stack(&stack_id));
                    Ok(None)
                }
            };
        }
        let mut group = create_group(me, &others, &task.on_the_way);
        if group.len() < 2 {
            return Ok(Some(alone(
                "the next version is still on its way; it stacks on this one",
            )));
        }
        if !self.still_bare(folder_id, &mut group)? {
            return Ok(None);
        }
        let stack = self.create(folder_id, &group, me, task)?;
        let files: Vec<File> = group.iter().map(|e| e.file.clone()).collect();
        self.patch(folder_id, |v| v.put_ordered_stack(stack.clone(), files));
        let members: Vec<Entry> = group
            .into_iter()
            .filter(|e| e.file.id != me.file.id)
            .collect();
        self.tell_neighbours(&stack.id, me, &members);
        let (below, above) = neighbours(me, &members);
        // Created bottom to top in version order: already in place.
        Ok(Some(stacked(record.clone(), stack.id, below, above, None)))
    }

    /// J found in a stack of the folder (an earlier try, or a person): its neighbours and
    /// its order.
    fn already_stacked(
        &self,
        task: &StackTask,
        folder_id: &str,
        file: File,
        stack: VersionStack,
        record: Stacking,
    ) -> Result<Stacking, Halt> {
        let mut files = self.stack_files(&stack.id)?.unwrap_or_default();
        if !files.iter().any(|f| f.id == file.id) {
            files.push(file.clone());
        }
        let order = self.known_order(folder_id, &stack, &files);
        let me = Entry {
            file,
            number: task.version.number,
            label: task.version.label.clone(),
            stack: Some(stack.id.clone()),
            job: Some(task.job.id),
            checked: true,
        };
        let members = self.versions_in(&files, &stack.id, &me, task);
        self.tell_neighbours(&stack.id, &me, &members);
        let (below, above) = neighbours(&me, &members);
        // A create of this run stacked J along, in its place: nothing to check or reorder.
        let in_place = order.as_ref().is_some_and(|o| {
            let at = o.iter().position(|id| *id == me.file.id);
            let next = at.and_then(|i| o.get(i + 1));
            at.is_some() && next == above.map(|a| &a.file.id)
        });
        let note = if in_place {
            None
        } else {
            self.put_in_order(&stack.id, &me, above, stack.head_version.as_ref())?
        };
        match order.filter(|_| in_place) {
            Some(o) => self.patch(folder_id, |v| {
                v.put_ordered_stack(stack.clone(), in_order(files, &o))
            }),
            None => self.patch(folder_id, |v| v.put_stack(stack.clone(), files)),
        }
        Ok(stacked(record, stack.id, below, above, note))
    }

    /// Moves J into a stack of the folder whose files were just listed, then puts it in
    /// order.
    fn join(
        &self,
        task: &StackTask,
        folder_id: &str,
        me: &Entry,
        stack: VersionStack,
        files: Vec<File>,
        record: &Stacking,
    ) -> Result<Stacking, Halt> {
        let order = self.known_order(folder_id, &stack, &files);
        self.move_into(&me.file.id, folder_id, &stack.id)?;
        let me = Entry {
            stack: Some(stack.id.clone()),
            ..me.clone()
        };
        let members = self.versions_in(&files, &stack.id, &me, task);
        self.tell_neighbours(&stack.id, &me, &members);
        let (below, above) = neighbours(&me, &members);
        let note = self.put_in_order(&stack.id, &me, above, None)?;
        let mut now_in = files;
        now_in.retain(|f| f.id != me.file.id);
        now_in.push(me.file.clone());
        // In the order the stacker knew, with J where it was just put.
        let order = order.filter(|_| note.is_none()).map(|mut o| {
            let at = above
                .and_then(|a| o.iter().position(|id| *id == a.file.id))
                .unwrap_or(o.len());
            o.insert(at, me.file.id.clone());
            o
        });
        match order {
            Some(o) => self.patch(folder_id, |v| {
                v.put_ordered_stack(stack.clone(), in_order(now_in, &o))
            }),
            None => self.patch(folder_id, |v| v.put_stack(stack.clone(), now_in)),
        }
        Ok(stacked(record.clone(), stack.id, below, above, note))
    }

    /// The order the stacker made of this stack, if its files are still exactly those (just
    /// listed) and its head is still the top.
    fn known_order(
        &self,
        folder_id: &str,
        stack: &VersionStack,
        files: &[File],
    ) -> Option<Vec<String>> {
        let views = self.views.borrow();
        let order = views.get(folder_id)?.stack(&stack.id)?.order.clone()?;
        let same: HashSet<&str> = order.iter().map(String::as_str).collect();
        let now: HashSet<&str> = files.iter().map(|f| f.id.as_str()).collect();
        let head_on_top = match &stack.head_version {
            Some(h) => order.last() == Some(&h.id),
            None => true,
        };
        (same == now && head_on_top).then_some(order)
    }

    /// The versions of the item among a stack's files, J left out.
    fn versions_in(
        &self,
        files: &[File],
        stack_id: &str,
        me: &Entry,
        task: &StackTask,
    ) -> Vec<Entry> {
        files
            .iter()
            .filter(|f| f.id != me.file.id)
            .filter_map(|f| self.entry(f.clone(), Some(stack_id.to_string()), task))
            .collect()
    }

    /// The ledger first: the version postflow stacked that J belongs with (the highest one
    /// up to J's, else the lowest above), in the stack its record names, checked: that stack
    /// still holds it and is still in the folder. Then J joins it, and the folder need not
    /// be listed. `None`: no such version, or the record is out of date.
    fn join_known_stack(
        &self,
        task: &StackTask,
        folder_id: &str,
        me: &Entry,
        record: &Stacking,
    ) -> Result<Option<Stacking>, Halt> {
        let Some((known, stack_id)) = known_stack(me.number, &task.known) else {
            return Ok(None);
        };
        let Some(files) = self.stack_files(stack_id)? else {
            return Ok(None);
        };
        if !files.iter().any(|f| f.id == known.file_id) {
            return Ok(None);
        }
        let stack = match self.api.version_stack(&self.account_id, stack_id) {
            Ok(s) if s.parent_id.as_deref().is_none_or(|p| p == folder_id) => s,
            Ok(_) => return Ok(None),
            Err(e) if matches!(e.status(), Some(404 | 422)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        self.join(task, folder_id, me, stack, files, record)
            .map(Some)
    }

    /// Does the folder's view answer for this version (listed after postflow found it)?
    fn view_answers(&self, folder_id: &str, task: &StackTask) -> bool {
        self.views
            .borrow()
            .get(folder_id)
            .is_some_and(|v| v.answers_for(task.job.created_ms))
    }

    /// When the step is sure to need a new listing of a folder that was listed a moment
    /// ago: the time it may be listed again.
    fn listing_not_due(&self, folder_id: &str, task: &StackTask) -> Option<Instant> {
        let views = self.views.borrow();
        let view = views.get(folder_id)?;
        if view.answers_for(task.job.created_ms) || task.known.iter().any(|k| k.stack_id.is_some())
        {
            return None;
        }
        let at = view.relist_at();
        (at > Instant::now()).then_some(at)
    }

    /// Makes sure the folder's view answers for this version: lists the folder if it does
    /// not (or says when it may), lists its stacks again if that part is stale.
    fn fresh_view(&self, folder_id: &str, task: &StackTask) -> Result<(), Halt> {
        let known = self.views.borrow().get(folder_id).map(|v| {
            (
                v.answers_for(task.job.created_ms),
                v.stacks_stale(),
                v.relist_at(),
            )
        });
        match known {
            Some((true, false, _)) => return Ok(()),
            Some((true, true, _)) => {
                let stacks = self.api.stacks_in_folder(&self.account_id, folder_id)?;
                self.patch(folder_id, |v| v.set_stacks(stacks));
                return Ok(());
            }
            Some((false, _, at)) if at > Instant::now() => return Err(Halt::Later(at)),
            _ => {}
        }
        let since = now_ms();
        let files = self.api.files_in_folder(&self.account_id, folder_id)?;
        let stacks = self.api.stacks_in_folder(&self.account_id, folder_id)?;
        let page = PAGE_SIZE as usize;
        let pages = files.len() / page + 1 + stacks.len() / page + 1;
        log::debug!(
            "/{}: listed {} files and {} stacks ({pages} pages)",
            task.job.folder,
            files.len(),
            stacks.len()
        );
        self.views
            .borrow_mut()
            .insert(folder_id, View::new(since, folder_id, files, stacks, pages));
        Ok(())
    }

    /// Changes the folder's view, if there is one.
    fn patch(&self, folder_id: &str, change: impl FnOnce(&mut View)) {
        if let Some(v) = self.views.borrow_mut().get_mut(folder_id) {
            change(v);
        }
    }

    /// The other versions of the item in the folder, bare or in which stack: from the view
    /// (which answers for J), and the versions postflow uploaded since it was taken, each
    /// looked up.
    fn others(&self, task: &StackTask, folder_id: &str, me: &Entry) -> Result<Vec<Entry>, Halt> {
        self.fresh_view(folder_id, task)?;
        let known: HashSet<&str> = task.known.iter().map(|k| k.file_id.as_str()).collect();
        let maybe_ours = |f: &File| known.contains(f.id.as_str()) || self.is_version(&f.name, task);
        // Copied out of the view, only what may be versions of the item: the look-ups below
        // change the view.
        let (stacks, unknown_stacks, bare) = {
            let views = self.views.borrow();
            let Some(view) = views.get(folder_id) else {
                return Ok(Vec::new());
            };
            let mut stacks: Vec<StackInfo> = Vec::new();
            let mut unknown = Vec::new();
            for s in view.stacks() {
                let files = s.files();
                if files.is_empty() {
                    unknown.push(s.stack.clone());
                } else if self.is_version(&s.stack.name, task) || files.iter().any(maybe_ours) {
                    stacks.push(s.clone());
                }
            }
            let bare: Vec<File> = view
                .bare_files()
                .filter(|f| f.id != me.file.id && maybe_ours(f))
                .cloned()
                .collect();
            (stacks, unknown, bare)
        };
        let mut entries: Vec<Entry> = Vec::new();
        let mut seen: HashSet<String> = HashSet::from([me.file.id.clone()]);
        let mut stacks = stacks;
        for stack in unknown_stacks {
            // The listing did not say which file heads it: its files do.
            match self.stack_files(&stack.id)? {
                Some(files) => {
                    self.patch(folder_id, |v| v.put_stack(stack.clone(), files.clone()));
                    if files.iter().any(maybe_ours) {
                        stacks.push(StackInfo {
                            stack,
                            members: files,
                            order: None,
                        });
                    }
                }
                None => self.patch(folder_id, |v| v.forget_stack(&stack.id)),
            }
        }
        for s in &stacks {
            for f in s.files() {
                if seen.insert(f.id.clone()) {
                    entries.extend(self.entry(f, Some(s.stack.id.clone()), task));
                }
            }
        }
        for f in bare {
            if !seen.insert(f.id.clone()) {
                continue;
            }
            if f.status.as_deref() == Some("created") && !known.contains(f.id.as_str()) {
                // An upload was under way when the folder was listed. postflow's own (a
                // version still on its way) joins when it is done; someone else's: has it
                // ended?
                let ours = self
                    .layout
                    .version(&f.name)
                    .is_some_and(|v| task.on_the_way.contains(&v.number));
                if !ours {
                    entries.extend(self.locate(&f.id, folder_id, task)?);
                }
            } else {
                entries.extend(self.entry(f, None, task));
            }
        }
        let gone: HashSet<&str> = {
            let views = self.views.borrow();
            let view = views.get(folder_id);
            task.known
                .iter()
                .map(|k| k.file_id.as_str())
                .filter(|id| view.is_some_and(|v| v.is_gone(id)))
                .collect()
        };
        for k in &task.known {
            if !seen.insert(k.file_id.clone()) || gone.contains(k.file_id.as_str()) {
                continue;
            }
            if k.stack_id.is_some() {
                // Stacked since the folder was listed (before a restart): the file says where.
                entries.extend(self.locate(&k.file_id, folder_id, task)?);
            } else {
                // Uploaded into the folder since it was listed, and not stacked by anyone who
                // wrote to the ledger: bare, as far as anyone knows. Checked before it is
                // stacked on, like every bare version.
                entries.push(Entry {
                    file: File {
                        id: k.file_id.clone(),
                        name: String::new(),
                        parent_id: Some(folder_id.to_string()),
                        file_size: None,
                        media_type: None,
                        status: None,
                        created_at: None,
                        view_url: None,
                    },
                    number: k.number,
                    label: k.label.clone(),
                    stack: None,
                    job: Some(k.job),
                    checked: false,
                });
            }
        }
        Ok(entries)
    }

    /// Looks a file up and writes what was found into the folder's view; the file as a
    /// version of the item, if it is one and is in the folder.
    fn locate(
        &self,
        file_id: &str,
        folder_id: &str,
        task: &StackTask,
    ) -> Result<Option<Entry>, Halt> {
        let (file, stack) = match self.place(file_id, folder_id)? {
            Place::Folder(f) => {
                self.patch(folder_id, |v| v.put_bare(f.clone()));
                (f, None)
            }
            Place::Stack(f, s) => {
                self.patch(folder_id, |v| v.put_in_stack(&s, f.clone()));
                (f, Some(s.id))
            }
            Place::Elsewhere => {
                self.patch(folder_id, |v| v.left(file_id));
                return Ok(None);
            }
        };
        Ok(self
            .entry(file, stack, task)
            .map(|e| Entry { checked: true, ..e }))
    }

    /// Checks that the versions about to be stacked are still bare in the folder; `false`
    /// (and the view corrected) when one is not.
    fn still_bare(&self, folder_id: &str, group: &mut [Entry]) -> Result<bool, Halt> {
        for e in group.iter_mut().filter(|e| !e.checked) {
            match self.place(&e.file.id, folder_id)? {
                Place::Folder(f) => {
                    self.patch(folder_id, |v| v.put_bare(f.clone()));
                    e.file = f;
                    e.checked = true;
                }
                Place::Stack(f, s) => {
                    log::debug!("{} was stacked meanwhile", f.name);
                    self.patch(folder_id, |v| v.put_in_stack(&s, f));
                    return Ok(false);
                }
                Place::Elsewhere => {
                    log::debug!("{} left the folder meanwhile", e.label);
                    self.patch(folder_id, |v| v.left(&e.file.id));
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    /// The files of a stack; `None` if it is gone.
    fn stack_files(&self, stack_id: &str) -> Result<Option<Vec<File>>, Halt> {
        match self.api.version_stack_children(&self.account_id, stack_id) {
            Ok(files) => Ok(Some(files)),
            Err(e) if matches!(e.status(), Some(404 | 422)) => Ok(None),
            Err(e) => Err(e.into()),
        }
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
            checked: false,
        })
    }

    /// Where a file is now: in the folder, in a stack of the folder, or somewhere else.
    fn place(&self, file_id: &str, folder_id: &str) -> Result<Place, Halt> {
        let file = match self.api.file(&self.account_id, file_id) {
            Ok(f) => f,
            Err(e) if e.status() == Some(404) => return Ok(Place::Elsewhere),
            Err(e) => return Err(e.into()),
        };
        match file.parent_id.clone() {
            Some(p) if p == folder_id => Ok(Place::Folder(file)),
            Some(p) => match self.api.version_stack(&self.account_id, &p) {
                Ok(s) if s.parent_id.as_deref().is_none_or(|f| f == folder_id) => {
                    Ok(Place::Stack(file, Box::new(s)))
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
            if matches!(self.place(file_id, folder_id)?, Place::Stack(_, s) if s.id == stack_id) {
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
    ) -> Result<VersionStack, Halt> {
        let ids: Vec<&str> = group.iter().map(|e| e.file.id.as_str()).collect();
        for tries in 1..=TRIES {
            let err = match self
                .api
                .create_version_stack(&self.account_id, folder_id, &ids)
            {
                Ok(stack) => {
                    self.remember(task, &stack.id);
                    return Ok(stack);
                }
                Err(e @ (ApiError::Stopped | ApiError::NeedsLogin(_))) => return Err(e.into()),
                Err(e) => e,
            };
            // Made although the answer is an error (a 5xx after the fact, a lost answer), or
            // refused because an earlier try already made it: J's parent says. Never create
            // blindly a second time.
            if let Place::Stack(_, s) = self.place(&me.file.id, folder_id)? {
                log::info!(
                    "{}: the version stack was made although Frame.io answered: {err}",
                    task.job.name()
                );
                self.remember(task, &s.id);
                return Ok(*s);
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
    /// version, or the head if it is the highest (`head`: the stack's head if just looked
    /// up). Returns a note for the job when Frame.io refuses the reorder; the stack itself is
    /// fine.
    fn put_in_order(
        &self,
        stack_id: &str,
        me: &Entry,
        above: Option<&Entry>,
        head: Option<&File>,
    ) -> Result<Option<String>, Halt> {
        let place = match above {
            Some(a) => StackPlace::Below(a.file.id.clone()),
            None => {
                let on_top = match head {
                    Some(h) => h.id == me.file.id,
                    None => self
                        .api
                        .version_stack(&self.account_id, stack_id)?
                        .head_version
                        .is_some_and(|h| h.id == me.file.id),
                };
                if on_top {
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

/// The version postflow stacked that a version numbered `number` joins, as [`target_stack`]
/// chooses: the highest up to it, else the lowest above; with its stack.
fn known_stack(number: u64, known: &[Known]) -> Option<(&Known, &str)> {
    let stacked = || {
        known
            .iter()
            .filter_map(|k| k.stack_id.as_deref().map(|s| (k, s)))
    };
    stacked()
        .filter(|(k, _)| k.number <= number)
        .max_by_key(|(k, _)| k.number)
        .or_else(|| {
            stacked()
                .filter(|(k, _)| k.number > number)
                .min_by_key(|(k, _)| k.number)
        })
}

/// `record` stacked in `stack_id`, between `below` and `above`.
fn stacked(
    record: Stacking,
    stack_id: String,
    below: Option<&Entry>,
    above: Option<&Entry>,
    detail: Option<String>,
) -> Stacking {
    Stacking {
        state: StackState::Stacked,
        stack_id: Some(stack_id),
        on: below.map(|e| e.label.clone()),
        under: above.map(|e| e.label.clone()),
        detail,
        ..record
    }
}

/// `files` in the order of `ids` (bottom first); a file not in it goes on top.
fn in_order(mut files: Vec<File>, ids: &[String]) -> Vec<File> {
    files.sort_by_key(|f| ids.iter().position(|id| *id == f.id).unwrap_or(usize::MAX));
    files
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
            checked: false,
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
    fn the_ledger_says_which_stack_a_version_joins() {
        let known = |number: u64, stack: Option<&str>| Known {
            job: number,
            file_id: format!("f{number}"),
            number,
            label: format!("v{number:03}"),
            stack_id: stack.map(str::to_string),
        };
        let all = [
            known(1, Some("old")),
            known(2, None),
            known(3, Some("main")),
            known(6, Some("later")),
        ];
        let pick = |n| known_stack(n, &all).map(|(k, s)| (k.number, s));
        assert_eq!(pick(4), Some((3, "main")), "the highest stacked one below");
        assert_eq!(pick(3), Some((3, "main")));
        assert_eq!(pick(2), Some((1, "old")), "v002 itself was left alone");
        assert_eq!(
            pick(0),
            Some((1, "old")),
            "a late lower version: the lowest above"
        );
        assert_eq!(known_stack(4, &all[1..2]), None, "none stacked");
    }

    #[test]
    fn a_stack_the_stacker_made_gives_its_files_in_its_order() {
        let files = vec![
            entry("c", 3, None).file,
            entry("a", 1, None).file,
            entry("x", 9, None).file,
            entry("b", 2, None).file,
        ];
        let ids: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let ordered: Vec<String> = in_order(files, &ids).into_iter().map(|f| f.id).collect();
        assert_eq!(
            ordered,
            ["a", "b", "c", "x"],
            "one not in the order goes on top"
        );
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
