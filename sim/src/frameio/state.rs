//! The simulated world (user, accounts, folders, files, tokens) and the records tests inspect.

use super::options::{Faults, SimProject};
use crate::util::{iso8601, unix_ms, Prng};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

pub(crate) struct User {
    pub id: String,
    pub name: String,
    pub email: String,
}

pub(crate) struct Account {
    pub id: String,
    pub display_name: String,
    pub created_at: SystemTime,
}

pub(crate) struct Workspace {
    pub id: String,
    pub account_id: String,
    pub name: String,
    pub created_at: SystemTime,
}

#[derive(Clone)]
pub(crate) struct Project {
    pub id: String,
    pub account_id: String,
    pub workspace_id: String,
    pub name: String,
    pub root_folder_id: String,
    pub created_at: SystemTime,
}

/// How a file's bytes arrive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UploadMode {
    /// `remote_upload`: the simulator pulls `source_url`.
    Remote,
    /// `local_upload`: the client PUTs parts.
    Local,
    /// Put there by a test helper ([`crate::FrameIo::add_file`]); complete, no bytes.
    Seeded,
}

pub(crate) struct Part {
    pub offset: u64,
    pub size: u64,
    pub received: bool,
}

pub(crate) struct FileData {
    pub file_size: u64,
    pub media_type: Option<String>,
    /// The `Content-Type` every part PUT must carry.
    pub part_content_type: String,
    pub mode: UploadMode,
    pub source_url: Option<String>,
    pub uploaded_at: Option<SystemTime>,
    pub completed_at: Option<SystemTime>,
    pub failed: bool,
    pub failure_reason: Option<String>,
    pub sha256: Option<String>,
    pub bytes_received: u64,
    pub parts: Vec<Part>,
    /// Set while the assembled parts are being hashed, so a late part cannot start it twice.
    pub assembling: bool,
    pub staging: Option<PathBuf>,
    /// The kept original (`Options::originals_dir`), once every byte arrived.
    pub original: Option<PathBuf>,
    /// `corrupt_original_next` changed a byte of the kept original.
    pub original_corrupted: bool,
}

pub(crate) enum NodeKind {
    Folder,
    File(Box<FileData>),
    /// A version stack in a folder. Its files are the nodes whose `parent_id` is the stack;
    /// this is their order, bottom (oldest) first: the last one is the head.
    Stack(Vec<String>),
}

pub(crate) struct Node {
    pub id: String,
    pub name: String,
    pub parent_id: Option<String>,
    pub seq: u64,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
    pub kind: NodeKind,
}

pub(crate) struct AuthCode {
    pub client_id: String,
    pub redirect_uri: String,
    pub scopes: Vec<String>,
    pub expires_at: SystemTime,
    pub used: bool,
}

pub(crate) struct AccessToken {
    pub user_id: String,
    pub expires_at: SystemTime,
    pub revoked: bool,
}

pub(crate) struct RefreshToken {
    pub client_id: String,
    pub scopes: Vec<String>,
    pub expires_at: SystemTime,
    pub used: bool,
    pub revoked: bool,
}

/// One token the IMS stand-in issued.
#[derive(Clone, Debug, Serialize)]
pub struct TokenRecord {
    /// `"access"` or `"refresh"`.
    pub kind: &'static str,
    pub token: String,
    /// `"authorization_code"`, `"refresh_token"` or `"test_login"`.
    pub grant: &'static str,
    pub issued_at_ms: u64,
    pub expires_at_ms: u64,
}

/// One PUT to a presigned part URL, as received.
#[derive(Clone, Debug, Serialize)]
pub struct S3PutRecord {
    pub file_id: String,
    pub part_number: u32,
    /// Request headers, names lower-cased, in the order received.
    pub headers: Vec<(String, String)>,
    /// Bytes of body actually read.
    pub body_len: u64,
    pub status: u16,
    /// The S3 error `Code`, when not 200.
    pub error_code: Option<String>,
}

impl S3PutRecord {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP request the remote fetcher made (or a fetch it skipped).
#[derive(Clone, Debug, Serialize)]
pub struct FetchRecord {
    pub file_id: String,
    /// The `source_url` as given by the client.
    pub source_url: String,
    /// `"GET"`, `"HEAD"`, or `"DROPPED"` / `"FAILED"` for injected faults.
    pub method: &'static str,
    /// The `Range` header sent, if any.
    pub range: Option<String>,
    /// Where the request actually went (after registry resolution).
    pub connected_to: Option<String>,
    pub status: Option<u16>,
    /// Body bytes received.
    pub bytes: u64,
    pub error: Option<String>,
}

/// A file as tests see it.
#[derive(Clone, Debug, Serialize)]
pub struct FileView {
    pub id: String,
    pub name: String,
    /// The project holding the file.
    pub project_id: String,
    /// Path under its project's root, e.g. `SQ01/UNDLM_00412/SQ01_UNDLM_00412_v001.mov`.
    pub path: String,
    pub parent_id: String,
    /// Declared (local) or learnt (remote) size.
    pub size: u64,
    /// Bytes actually received (parts or fetch).
    pub bytes_received: u64,
    /// SHA-256 (hex) of the assembled bytes, once complete.
    pub sha256: Option<String>,
    pub upload_complete: bool,
    pub upload_failed: bool,
    pub failure_reason: Option<String>,
    pub mode: UploadMode,
    pub media_type: Option<String>,
    /// `created`, `uploaded` or `transcoded`.
    pub status: &'static str,
    pub source_url: Option<String>,
    pub created_at: String,
    /// The version stack holding the file (its `parent_id` then), if any.
    pub stack_id: Option<String>,
    /// Its original bytes are kept (`Options::originals_dir`; set once every byte arrived).
    pub original_kept: bool,
    /// `corrupt_original_next` changed one byte of the kept original: a download gives other
    /// bytes than `sha256` says were received ([`crate::FrameIo::original_sha256`] hashes what
    /// is kept).
    pub original_corrupted: bool,
}

/// One request for a kept original (`GET`/`HEAD` of a `media_links.original.download_url`).
#[derive(Clone, Debug, Serialize)]
pub struct DownloadRecord {
    pub file_id: String,
    /// `"GET"` or `"HEAD"`.
    pub method: String,
    /// The `Range` header sent, if any.
    pub range: Option<String>,
    /// 200, 206, 403, 404, 416, …
    pub status: u16,
    /// Body bytes handed to the connection (less than asked when the client went away or the
    /// download is stalled; updated when the answer ends).
    pub bytes_sent: u64,
    /// Milliseconds since the Unix epoch at which the request came in.
    pub at_ms: u64,
}

/// A version stack as tests see it.
#[derive(Clone, Debug, Serialize)]
pub struct StackView {
    pub id: String,
    /// The project holding the stack.
    pub project_id: String,
    /// The folder holding the stack, under the project root (`""` for the root).
    pub folder: String,
    /// File names, bottom (oldest) first: the last is the head, what reviewers see.
    pub versions: Vec<String>,
    /// The same files' ids, in the same order.
    pub file_ids: Vec<String>,
    pub created_at: String,
}

/// A folder and everything under it.
#[derive(Clone, Debug, Serialize)]
pub struct FolderView {
    pub id: String,
    pub name: String,
    /// `""` for the root folder.
    pub path: String,
    pub created_at: String,
    pub folders: Vec<FolderView>,
    /// Every file of the folder, stacked ones included (see `FileView::stack_id`).
    pub files: Vec<FileView>,
    pub stacks: Vec<StackView>,
}

/// What is at one path: duplicates (same path, several files) show as `copies > 1`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PathEntry {
    /// Size of the first complete copy (else of the first copy).
    pub size: u64,
    /// SHA-256 of the first complete copy.
    pub sha256: Option<String>,
    /// Live files at this path, complete or not.
    pub copies: usize,
    /// Copies with `upload_complete`.
    pub complete: usize,
    /// The first complete copy's kept original had a byte changed (`corrupt_original_next`).
    pub original_corrupted: bool,
}

/// How many create calls named `name` under the folder at `parent_path` succeeded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CreateCount {
    /// The project the create happened in.
    pub project_id: String,
    pub parent_path: String,
    pub name: String,
    /// `"folder"` or `"file"`.
    pub kind: &'static str,
    pub count: u32,
}

/// A project as tests see it.
#[derive(Clone, Debug, Serialize)]
pub struct ProjectView {
    pub id: String,
    pub name: String,
    pub account_id: String,
    pub workspace_id: String,
    pub root_folder_id: String,
}

pub(crate) struct Bucket {
    pub level: f64,
    pub last: std::time::Instant,
}

pub(crate) struct State {
    pub rng: Prng,
    pub user: User,
    pub accounts: Vec<Account>,
    /// The main workspace first, then one per extra account holding a project.
    pub workspaces: Vec<Workspace>,
    /// The main project first, then `Options::projects` in order.
    pub projects: Vec<Project>,
    pub nodes: HashMap<String, Node>,
    pub seq: u64,
    pub codes: HashMap<String, AuthCode>,
    pub access: HashMap<String, AccessToken>,
    pub refresh: HashMap<String, RefreshToken>,
    pub token_log: Vec<TokenRecord>,
    /// (project id, parent path, name, kind) → successful create calls.
    pub creates: BTreeMap<(String, String, String, &'static str), u32>,
    /// (endpoint, status) → requests.
    pub counters: BTreeMap<(String, u16), u64>,
    pub s3_log: Vec<S3PutRecord>,
    /// Part PUTs whose body the simulator began to read (for `s3_corrupt_every`).
    pub s3_bodies: u64,
    pub fetch_log: Vec<FetchRecord>,
    /// Requests for kept originals, in arrival order.
    pub download_log: Vec<DownloadRecord>,
    /// (user, account, endpoint) → bucket: Frame.io limits "per account_user".
    pub buckets: HashMap<(String, String, &'static str), Bucket>,
    pub fetches_started: u64,
    /// Signing key for part URLs.
    pub s3_secret: String,
    /// Webhooks, comments, Status values and webhook deliveries.
    pub review: super::review::Review,
}

impl State {
    /// The world: one user, the main account, workspace and project, `extra_accounts` more
    /// accounts, and `more_projects` (an account index beyond `extra_accounts` is an error).
    pub(crate) fn new(
        mut rng: Prng,
        extra_accounts: usize,
        more_projects: &[SimProject],
    ) -> Result<State, String> {
        if let Some(p) = more_projects.iter().find(|p| p.account > extra_accounts) {
            return Err(format!(
                "project {:?} is in account {}, but there are only {extra_accounts} extra accounts \
                 (set extra_accounts, --extra-accounts for frameio-sim, to at least {})",
                p.name, p.account, p.account
            ));
        }
        let now = SystemTime::now();
        let user = User {
            id: rng.uuid(),
            name: "Sim Editor".into(),
            email: "editor@postflow.invalid".into(),
        };
        let mut accounts = vec![Account {
            id: rng.uuid(),
            display_name: "Sim Post House".into(),
            created_at: now,
        }];
        for i in 0..extra_accounts {
            accounts.push(Account {
                id: rng.uuid(),
                display_name: format!("Sim Extra Account {}", i + 1),
                created_at: now,
            });
        }
        let workspace = Workspace {
            id: rng.uuid(),
            account_id: accounts[0].id.clone(),
            name: "Sim Workspace".into(),
            created_at: now,
        };
        let root = root_node(&mut rng, now);
        let project = Project {
            id: rng.uuid(),
            account_id: accounts[0].id.clone(),
            workspace_id: workspace.id.clone(),
            name: "Sim Project".into(),
            root_folder_id: root.id.clone(),
            created_at: now,
        };
        // Drawn before the extra projects, so a seed gives the main ids it always gave.
        let s3_secret = rng.hex(32);
        let mut nodes = HashMap::new();
        nodes.insert(root.id.clone(), root);
        let mut workspaces = vec![workspace];
        let mut projects = vec![project];
        for p in more_projects {
            let account_id = accounts[p.account].id.clone();
            let workspace_id = match workspaces.iter().find(|w| w.account_id == account_id) {
                Some(w) => w.id.clone(),
                None => {
                    let w = Workspace {
                        id: rng.uuid(),
                        account_id: account_id.clone(),
                        name: format!("Sim Workspace {}", p.account),
                        created_at: now,
                    };
                    let id = w.id.clone();
                    workspaces.push(w);
                    id
                }
            };
            let root = root_node(&mut rng, now);
            projects.push(Project {
                id: rng.uuid(),
                account_id,
                workspace_id,
                name: p.name.clone(),
                root_folder_id: root.id.clone(),
                created_at: now,
            });
            nodes.insert(root.id.clone(), root);
        }
        // Drawn last, so a seed gives the ids it gave before there were Status fields.
        let account_ids: Vec<String> = accounts.iter().map(|a| a.id.clone()).collect();
        let review = super::review::Review::new(&mut rng, &account_ids);
        Ok(State {
            review,
            rng,
            user,
            accounts,
            workspaces,
            projects,
            nodes,
            seq: 0,
            codes: HashMap::new(),
            access: HashMap::new(),
            refresh: HashMap::new(),
            token_log: Vec::new(),
            creates: BTreeMap::new(),
            counters: BTreeMap::new(),
            s3_log: Vec::new(),
            s3_bodies: 0,
            fetch_log: Vec::new(),
            download_log: Vec::new(),
            buckets: HashMap::new(),
            fetches_started: 0,
            s3_secret,
        })
    }

    /// The main project ("Sim Project", in the main account and workspace).
    pub(crate) fn main_project(&self) -> &Project {
        &self.projects[0]
    }

    pub(crate) fn project(&self, project_id: &str) -> Option<&Project> {
        self.projects.iter().find(|p| p.id == project_id)
    }

    /// The project a node (folder, file or stack) belongs to: the one whose root folder is
    /// at the top of its parent chain.
    pub(crate) fn project_of(&self, id: &str) -> Option<&Project> {
        let mut cur = self.nodes.get(id)?;
        while let Some(p) = &cur.parent_id {
            cur = self.nodes.get(p)?;
        }
        self.projects.iter().find(|p| p.root_folder_id == cur.id)
    }

    /// `project_of`'s id, `""` for a node in no project.
    pub(crate) fn project_id_of(&self, id: &str) -> String {
        self.project_of(id)
            .map_or_else(String::new, |p| p.id.clone())
    }

    /// The node, if it exists and belongs to a project of that account: a node of another
    /// account is as unknown as one that does not exist.
    pub(crate) fn node_in_account(&self, account_id: &str, id: &str) -> Option<&Node> {
        let project = self.project_of(id)?;
        (project.account_id == account_id)
            .then(|| self.nodes.get(id))
            .flatten()
    }

    pub(crate) fn project_view(&self, p: &Project) -> ProjectView {
        ProjectView {
            id: p.id.clone(),
            name: p.name.clone(),
            account_id: p.account_id.clone(),
            workspace_id: p.workspace_id.clone(),
            root_folder_id: p.root_folder_id.clone(),
        }
    }

    pub(crate) fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    pub(crate) fn is_folder(&self, id: &str) -> bool {
        matches!(
            self.nodes.get(id),
            Some(Node {
                kind: NodeKind::Folder,
                ..
            })
        )
    }

    pub(crate) fn is_stack(&self, id: &str) -> bool {
        matches!(
            self.nodes.get(id),
            Some(Node {
                kind: NodeKind::Stack(_),
                ..
            })
        )
    }

    /// A stack's files, bottom first.
    pub(crate) fn stack_order(&self, stack_id: &str) -> &[String] {
        match self.nodes.get(stack_id).map(|n| &n.kind) {
            Some(NodeKind::Stack(order)) => order,
            _ => &[],
        }
    }

    /// Takes a file out of its stack's order (its `parent_id` is the caller's business); a
    /// stack left empty is removed.
    pub(crate) fn unstack(&mut self, file_id: &str) {
        let Some(stack_id) = self.nodes.get(file_id).and_then(|n| n.parent_id.clone()) else {
            return;
        };
        let empty = match self.nodes.get_mut(&stack_id).map(|n| &mut n.kind) {
            Some(NodeKind::Stack(order)) => {
                order.retain(|id| id != file_id);
                order.is_empty()
            }
            _ => return,
        };
        if empty {
            self.nodes.remove(&stack_id);
        }
    }

    /// Children of a folder in creation order.
    pub(crate) fn children(&self, folder_id: &str) -> Vec<&Node> {
        let mut v: Vec<&Node> = self
            .nodes
            .values()
            .filter(|n| n.parent_id.as_deref() == Some(folder_id))
            .collect();
        v.sort_by_key(|n| n.seq);
        v
    }

    /// `"SQ01/UNDLM_00412"` for a folder, `""` for the root. A version stack is not a level
    /// of the path: a stacked file's path is its folder's path and its name.
    pub(crate) fn path_of(&self, id: &str) -> String {
        let mut names = Vec::new();
        let mut cur = self.nodes.get(id);
        while let Some(n) = cur {
            match &n.parent_id {
                Some(p) => {
                    if !matches!(n.kind, NodeKind::Stack(_)) {
                        names.push(n.name.as_str());
                    }
                    cur = self.nodes.get(p);
                }
                None => break,
            }
        }
        names.reverse();
        names.join("/")
    }

    pub(crate) fn insert_node(
        &mut self,
        parent_id: &str,
        name: &str,
        kind: NodeKind,
        count_create: bool,
    ) -> String {
        let id = self.rng.uuid();
        let seq = self.next_seq();
        let now = SystemTime::now();
        let kind_name = match kind {
            NodeKind::Folder => "folder",
            NodeKind::File(_) => "file",
            NodeKind::Stack(_) => "version_stack",
        };
        if count_create {
            let key = (
                self.project_id_of(parent_id),
                self.path_of(parent_id),
                name.to_string(),
                kind_name,
            );
            *self.creates.entry(key).or_insert(0) += 1;
        }
        self.nodes.insert(
            id.clone(),
            Node {
                id: id.clone(),
                name: name.to_string(),
                parent_id: Some(parent_id.to_string()),
                seq,
                created_at: now,
                updated_at: now,
                kind,
            },
        );
        id
    }

    /// Removes a node and, for a folder, everything under it; returns the staging files and
    /// kept originals to delete.
    pub(crate) fn remove_tree(&mut self, id: &str) -> Vec<PathBuf> {
        self.unstack(id);
        let mut staging = Vec::new();
        let mut stack = vec![id.to_string()];
        while let Some(cur) = stack.pop() {
            stack.extend(
                self.nodes
                    .values()
                    .filter(|n| n.parent_id.as_deref() == Some(cur.as_str()))
                    .map(|n| n.id.clone()),
            );
            if let Some(Node {
                kind: NodeKind::File(f),
                ..
            }) = self.nodes.remove(&cur)
            {
                staging.extend(f.staging);
                staging.extend(f.original);
            }
        }
        staging
    }

    pub(crate) fn file_view(&self, node: &Node, faults: &Faults) -> Option<FileView> {
        let NodeKind::File(f) = &node.kind else {
            return None;
        };
        let parent_id = node.parent_id.clone().unwrap_or_default();
        let dir = self.path_of(&parent_id);
        let stack_id = self.is_stack(&parent_id).then(|| parent_id.clone());
        Some(FileView {
            id: node.id.clone(),
            name: node.name.clone(),
            project_id: self.project_id_of(&node.id),
            path: if dir.is_empty() {
                node.name.clone()
            } else {
                format!("{dir}/{}", node.name)
            },
            parent_id,
            size: f.file_size,
            bytes_received: f.bytes_received,
            sha256: f.sha256.clone(),
            upload_complete: f.completed_at.is_some(),
            upload_failed: f.failed,
            failure_reason: f.failure_reason.clone(),
            mode: f.mode,
            media_type: f.media_type.clone(),
            status: file_status(f, faults),
            source_url: f.source_url.clone(),
            created_at: iso8601(node.created_at),
            stack_id,
            original_kept: f.original.is_some(),
            original_corrupted: f.original_corrupted,
        })
    }

    pub(crate) fn stack_view(&self, node: &Node) -> Option<StackView> {
        let NodeKind::Stack(order) = &node.kind else {
            return None;
        };
        let name = |id: &String| {
            self.nodes
                .get(id)
                .map_or_else(String::new, |n| n.name.clone())
        };
        Some(StackView {
            id: node.id.clone(),
            project_id: self.project_id_of(&node.id),
            folder: self.path_of(node.parent_id.as_deref().unwrap_or_default()),
            versions: order.iter().map(name).collect(),
            file_ids: order.clone(),
            created_at: iso8601(node.created_at),
        })
    }

    pub(crate) fn folder_view(&self, id: &str, faults: &Faults) -> Option<FolderView> {
        let node = self.nodes.get(id)?;
        let mut view = FolderView {
            id: node.id.clone(),
            name: node.name.clone(),
            path: self.path_of(id),
            created_at: iso8601(node.created_at),
            folders: Vec::new(),
            files: Vec::new(),
            stacks: Vec::new(),
        };
        for child in self.children(id) {
            match child.kind {
                NodeKind::Folder => view.folders.extend(self.folder_view(&child.id, faults)),
                NodeKind::File(_) => view.files.extend(self.file_view(child, faults)),
                NodeKind::Stack(_) => {
                    view.stacks.extend(self.stack_view(child));
                    for file in self.children(&child.id) {
                        view.files.extend(self.file_view(file, faults));
                    }
                }
            }
        }
        Some(view)
    }

    pub(crate) fn count(&mut self, endpoint: &str, status: u16) {
        *self
            .counters
            .entry((endpoint.to_string(), status))
            .or_insert(0) += 1;
    }

    pub(crate) fn log_token(
        &mut self,
        kind: &'static str,
        token: &str,
        grant: &'static str,
        expires_at: SystemTime,
    ) {
        self.token_log.push(TokenRecord {
            kind,
            token: token.to_string(),
            grant,
            issued_at_ms: unix_ms(SystemTime::now()),
            expires_at_ms: unix_ms(expires_at),
        });
    }
}

fn root_node(rng: &mut Prng, now: SystemTime) -> Node {
    Node {
        id: rng.uuid(),
        name: "root".into(),
        parent_id: None,
        seq: 0,
        created_at: now,
        updated_at: now,
        kind: NodeKind::Folder,
    }
}

/// `created` until all bytes are in, `uploaded` until the transcode delay passed, then
/// `transcoded`. A failed upload stays `created` (Frame.io has no failure status).
pub(crate) fn file_status(f: &FileData, faults: &Faults) -> &'static str {
    match f.completed_at {
        None => "created",
        Some(t) => {
            let ready = t + Duration::from_millis(faults.transcode_delay_ms);
            if SystemTime::now() >= ready {
                "transcoded"
            } else {
                "uploaded"
            }
        }
    }
}
