//! What the stacker knows of each Frame.io folder it stacks in: one listing shared by every
//! stacking step of that folder, kept true by the stacker's own changes.
//!
//! A listing is the scarce thing: a page per 100 files, and a folder that has grown to 5 000
//! files is 50 pages. Taking one for every version made N versions into one folder cost
//! about N²/200 pages. So a listing is taken once and reused by every version it can answer
//! for:
//! - it shows every file and stack that was in the folder when it was asked for, so it
//!   answers for a version that postflow found in the watch folder before that (the versions
//!   a person expects it to stack on are the ones in Frame.io when the new one showed up);
//! - what the stacker itself does (a version left alone, a stack made, a version moved in) is
//!   written into it at once, and what it finds when it checks a file is too;
//! - the versions postflow uploaded since are in the ledger, and the stacker places each of
//!   them with one look at the file (10 calls a second) instead of listing again;
//! - the stacks part (usually a page or two) is listed again when it is a minute old, so a
//!   stack a reviewer made or moved is seen within a minute;
//! - a folder is listed again at most every [`relist_interval`], so versions trickling in
//!   one at a time (a card copied into the watch folder over minutes) share a listing too.
//!
//! A view can still be wrong about what people did since: the stacker checks every file it
//! is about to stack and the stack it is about to move into, so a stale view costs one more
//! look, or leaves a version unstacked, and never makes a second stack of the same files or
//! moves a file twice.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::frameio::api::{File, VersionStack};

/// The stacks part is listed again when it is older than this.
pub const STACKS_FRESH: Duration = Duration::from_secs(60);

/// A view nobody used for this long is dropped (memory; a new one would be needed anyway).
const KEEP: Duration = Duration::from_secs(600);

/// The shortest wait between two listings of one folder.
const MIN_RELIST: Duration = Duration::from_secs(5);

/// The wait per page of the last listing: a folder's listings use at most a tenth of the
/// list endpoints' budget (5 calls a second each).
const PER_PAGE: Duration = Duration::from_secs(2);

/// How long after a listing of `pages` pages the folder may be listed again.
pub fn relist_interval(pages: usize) -> Duration {
    MIN_RELIST.max(PER_PAGE * u32::try_from(pages).unwrap_or(u32::MAX))
}

/// A stack in the folder and the files known to be in it.
#[derive(Clone, Debug)]
pub struct StackInfo {
    pub stack: VersionStack,
    /// All of its files when they were listed or the stacker made the stack; else the ones
    /// seen in it (possibly none: then `stack.head_version` is all there is).
    pub members: Vec<File>,
    /// The order of its files (ids, bottom first) when the stacker made it so: the stack it
    /// created, with the versions it put in order since. A stack's file list has no
    /// documented order, so only this says that a version the create stacked along is in
    /// place already.
    pub order: Option<Vec<String>>,
}

impl StackInfo {
    /// The files known to be in it, the head included, each once.
    pub fn files(&self) -> Vec<File> {
        let mut files = self.members.clone();
        if let Some(head) = &self.stack.head_version {
            if !files.iter().any(|f| f.id == head.id) {
                files.push(head.clone());
            }
        }
        files
    }
}

/// One folder as last listed, with the stacker's changes since.
#[derive(Debug)]
pub struct View {
    /// When the files listing was asked for (unix ms): it shows every file put in the folder
    /// before that.
    pub since_ms: u64,
    listed: Instant,
    pages: usize,
    stacks_listed: Instant,
    used: Instant,
    /// Files directly in the folder (not in a stack), by id.
    bare: HashMap<String, File>,
    /// Stacks in the folder, by id.
    stacks: HashMap<String, StackInfo>,
    /// Files looked up since and found elsewhere (moved out, deleted).
    gone: HashSet<String>,
}

impl View {
    /// A view from a listing asked for at `since_ms`: the folder's files (entries whose
    /// parent is a stack are left to the stacks) and its stacks.
    pub fn new(
        since_ms: u64,
        folder_id: &str,
        files: Vec<File>,
        stacks: Vec<VersionStack>,
        pages: usize,
    ) -> View {
        let now = Instant::now();
        let mut view = View {
            since_ms,
            listed: now,
            pages,
            stacks_listed: now,
            used: now,
            bare: files
                .into_iter()
                .filter(|f| f.parent_id.as_deref().is_none_or(|p| p == folder_id))
                .map(|f| (f.id.clone(), f))
                .collect(),
            stacks: HashMap::new(),
            gone: HashSet::new(),
        };
        view.set_stacks(stacks);
        view
    }

    /// Does this view answer for a version found (its job created) at `created_ms`?
    pub fn answers_for(&self, created_ms: u64) -> bool {
        self.since_ms > created_ms
    }

    /// When the folder may be listed again.
    pub fn relist_at(&self) -> Instant {
        self.listed + relist_interval(self.pages)
    }

    pub fn stacks_stale(&self) -> bool {
        self.stacks_listed.elapsed() > STACKS_FRESH
    }

    /// The stacks part from a new listing of the folder's stacks. What the stacker knew of
    /// their files goes (a reviewer may have changed them); a file listed as a head is no
    /// longer bare.
    /// The order the stacker made is kept for a stack whose head is still its top.
    pub fn set_stacks(&mut self, stacks: Vec<VersionStack>) {
        self.stacks_listed = Instant::now();
        let mut before = std::mem::take(&mut self.stacks);
        self.stacks = stacks
            .into_iter()
            .map(|s| {
                let head = s.head_version.as_ref().map(|h| h.id.clone());
                let order = before
                    .remove(&s.id)
                    .and_then(|b| b.order)
                    .filter(|o| head.is_some() && o.last() == head.as_ref());
                (
                    s.id.clone(),
                    StackInfo {
                        stack: s,
                        members: Vec::new(),
                        order,
                    },
                )
            })
            .collect();
        for s in self.stacks.values() {
            if let Some(head) = &s.stack.head_version {
                self.bare.remove(&head.id);
            }
        }
    }

    pub fn touch(&mut self) {
        self.used = Instant::now();
    }

    pub fn bare_files(&self) -> impl Iterator<Item = &File> {
        self.bare.values()
    }

    pub fn stacks(&self) -> impl Iterator<Item = &StackInfo> {
        self.stacks.values()
    }

    pub fn stack(&self, id: &str) -> Option<&StackInfo> {
        self.stacks.get(id)
    }

    /// Was the file looked up and found outside the folder?
    pub fn is_gone(&self, file_id: &str) -> bool {
        self.gone.contains(file_id)
    }

    /// The file is directly in the folder.
    pub fn put_bare(&mut self, file: File) {
        self.remove_file(&file.id);
        self.bare.insert(file.id.clone(), file);
    }

    /// The file was looked up and is not in the folder (moved elsewhere, deleted).
    pub fn left(&mut self, file_id: &str) {
        self.remove_file(file_id);
        self.gone.insert(file_id.to_string());
    }

    /// Takes the file out of wherever the view has it (it is going somewhere else in it).
    fn remove_file(&mut self, file_id: &str) {
        self.gone.remove(file_id);
        self.bare.remove(file_id);
        for s in self.stacks.values_mut() {
            s.members.retain(|f| f.id != file_id);
            if s.order
                .as_ref()
                .is_some_and(|o| o.iter().any(|id| id == file_id))
            {
                s.order = None;
            }
            if s.stack
                .head_version
                .as_ref()
                .is_some_and(|h| h.id == file_id)
            {
                s.stack.head_version = None;
            }
        }
    }

    /// The stack is in the folder with exactly these files (listed), in an order the
    /// stacker does not know.
    pub fn put_stack(&mut self, stack: VersionStack, members: Vec<File>) {
        self.put(stack, members, None);
    }

    /// The stack is in the folder with exactly these files, bottom first, as the stacker
    /// made it (a create, a version put in its place).
    pub fn put_ordered_stack(&mut self, stack: VersionStack, bottom_first: Vec<File>) {
        let order = bottom_first.iter().map(|f| f.id.clone()).collect();
        self.put(stack, bottom_first, Some(order));
    }

    fn put(&mut self, stack: VersionStack, members: Vec<File>, order: Option<Vec<String>>) {
        for f in &members {
            self.remove_file(&f.id);
        }
        self.stacks.insert(
            stack.id.clone(),
            StackInfo {
                stack,
                members,
                order,
            },
        );
    }

    /// The file is in this stack of the folder (others may be too).
    pub fn put_in_stack(&mut self, stack: &VersionStack, file: File) {
        self.remove_file(&file.id);
        let info = self
            .stacks
            .entry(stack.id.clone())
            .or_insert_with(|| StackInfo {
                stack: stack.clone(),
                members: Vec::new(),
                order: None,
            });
        if stack.head_version.is_some() {
            info.stack.head_version = stack.head_version.clone();
        }
        info.order = None;
        info.members.push(file);
    }

    /// The stack is not (or no longer) in the folder.
    pub fn forget_stack(&mut self, stack_id: &str) {
        self.stacks.remove(stack_id);
    }
}

/// The views of every folder the stacker works in, by Frame.io folder id.
#[derive(Default)]
pub struct Views {
    folders: HashMap<String, View>,
}

impl Views {
    pub fn get(&self, folder_id: &str) -> Option<&View> {
        self.folders.get(folder_id)
    }

    pub fn get_mut(&mut self, folder_id: &str) -> Option<&mut View> {
        let view = self.folders.get_mut(folder_id)?;
        view.touch();
        Some(view)
    }

    pub fn insert(&mut self, folder_id: &str, view: View) {
        self.folders
            .retain(|id, v| id != folder_id && v.used.elapsed() < KEEP);
        self.folders.insert(folder_id.to_string(), view);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(id: &str, parent: &str) -> File {
        File {
            id: id.into(),
            name: format!("{id}.mov"),
            parent_id: Some(parent.into()),
            file_size: None,
            media_type: None,
            status: None,
            created_at: None,
            view_url: None,
        }
    }

    fn stack(id: &str, head: Option<File>) -> VersionStack {
        VersionStack {
            id: id.into(),
            name: String::new(),
            parent_id: Some("F".into()),
            head_version: head,
        }
    }

    #[test]
    fn a_listing_answers_for_versions_found_before_it_was_asked_for() {
        let v = View::new(1_000, "F", Vec::new(), Vec::new(), 1);
        assert!(v.answers_for(999));
        assert!(!v.answers_for(1_000));
        assert!(!v.answers_for(5_000));
    }

    #[test]
    fn big_folders_are_listed_again_less_often() {
        assert_eq!(relist_interval(1), MIN_RELIST);
        assert_eq!(relist_interval(50), Duration::from_secs(100));
    }

    fn ids(files: Vec<File>) -> Vec<String> {
        let mut ids: Vec<String> = files.into_iter().map(|f| f.id).collect();
        ids.sort();
        ids
    }

    #[test]
    fn files_listed_inside_a_stack_are_not_bare_and_heads_leave_the_bare_files() {
        let listed = vec![file("a", "F"), file("b", "S"), file("c", "F")];
        let v = View::new(0, "F", listed, vec![stack("S", Some(file("c", "S")))], 1);
        assert_eq!(
            ids(v.bare_files().cloned().collect()),
            ["a"],
            "b is in a stack; c is the head of one"
        );
        assert_eq!(ids(v.stack("S").unwrap().files()), ["c"], "S's head");
    }

    #[test]
    fn the_stackers_changes_move_files_between_the_folder_and_its_stacks() {
        let mut v = View::new(0, "F", vec![file("a", "F"), file("b", "F")], Vec::new(), 1);
        let made = stack("S", Some(file("b", "S")));
        v.put_ordered_stack(made.clone(), vec![file("a", "S"), file("b", "S")]);
        assert_eq!(v.bare_files().count(), 0);
        assert_eq!(
            v.stack("S").unwrap().order.as_deref(),
            Some(&["a".to_string(), "b".to_string()][..])
        );
        v.put_in_stack(&made, file("c", "S"));
        assert_eq!(ids(v.stack("S").unwrap().files()), ["a", "b", "c"]);
        assert_eq!(v.stack("S").unwrap().order, None, "c came in some place");
        v.left("b");
        assert!(v.is_gone("b"));
        assert!(v.stack("S").unwrap().stack.head_version.is_none());
        v.put_bare(file("a", "F"));
        assert_eq!(ids(v.stack("S").unwrap().files()), ["c"]);
        assert_eq!(ids(v.bare_files().cloned().collect()), ["a"]);
        v.put_bare(file("b", "F"));
        assert!(!v.is_gone("b"), "it came back");
        v.forget_stack("S");
        assert!(v.stack("S").is_none());
    }

    #[test]
    fn a_stacks_listing_keeps_the_order_the_stacker_made_while_its_head_is_on_top() {
        let mut v = View::new(0, "F", Vec::new(), Vec::new(), 1);
        v.put_ordered_stack(
            stack("S", Some(file("b", "S"))),
            vec![file("a", "S"), file("b", "S")],
        );
        v.put_ordered_stack(
            stack("T", Some(file("d", "T"))),
            vec![file("c", "T"), file("d", "T")],
        );
        // A reviewer put c on top of T meanwhile.
        v.set_stacks(vec![
            stack("S", Some(file("b", "S"))),
            stack("T", Some(file("c", "T"))),
        ]);
        assert!(v.stack("S").unwrap().order.is_some());
        assert!(v.stack("T").unwrap().order.is_none());
    }
}
