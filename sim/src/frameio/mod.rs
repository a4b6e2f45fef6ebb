//! Frame.io v4 + Adobe IMS + S3 simulator on one local HTTP server.
//!
//! Route table (one thread per request; every handler is a plain function from request to
//! reply):
//!
//! ```text
//! GET  /ims/.well-known/openid-configuration   discovery document
//! GET  /ims/authorize/v2?client_id&redirect_uri&scope&state&response_type=code   302 to redirect_uri
//! POST /ims/token/v3        grant_type=authorization_code|refresh_token (Basic or body client auth)
//! POST /ims/revoke          token=…
//! *    /v4/…                Frame.io v4 (see api.rs), Bearer token required
//! PUT  /s3/parts/{file_id}/part_{n}?X-Amz-…    presigned part upload (see s3.rs)
//! GET|HEAD /s3/originals/{file_id}?X-Amz-…     a kept original's download (see originals.rs)
//! GET  /_sim/state | /_sim/tree[?project=ID] | /_sim/paths[?project=ID] | /_sim/projects
//!      /_sim/creates | /_sim/tokens
//!      /_sim/counters | /_sim/s3 | /_sim/fetches | /_sim/downloads | /_sim/faults | /_sim/info | /_sim/stacks
//! POST /_sim/faults         JSON object with any subset of Faults fields
//! POST /_sim/login          mint a token pair (skip the browser)
//! POST /_sim/expire-refresh-tokens | /_sim/expire-access-tokens
//! GET  /_sim/webhooks | /_sim/deliveries | /_sim/comments
//! POST /_sim/comments {"file_id","author","text","timestamp"} | /_sim/comments/{id}/reply
//!      /_sim/comments/{id}/complete | /_sim/status {"file_id","status"}
//! ```
//!
//! Webhook deliveries, `file.ready` and the other events: see review.rs.

mod api;
mod fetch;
mod ims;
mod inspect;
mod options;
mod originals;
mod ratelimit;
mod review;
mod s3;
mod state;

pub use options::{Faults, FetchMode, Options, RetryHint, SimProject, StackKnobs};
pub use review::{DeliveryRecord, WebhookView, STATUS_OPTIONS};
pub use s3::part_sizes;
pub use state::{
    CreateCount, DownloadRecord, FetchRecord, FileView, FolderView, PathEntry, ProjectView,
    S3PutRecord, StackView, TokenRecord, UploadMode,
};

use crate::util::Prng;
use state::{FileData, NodeKind, State};
use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

/// Largest request body read for IMS and `/v4` calls.
const MAX_API_BODY: u64 = 1024 * 1024;

/// A running simulator. Dropping it stops the server (background fetches finish on their own).
pub struct FrameIo {
    shared: Arc<Shared>,
    server: Arc<tiny_http::Server>,
    acceptor: Option<JoinHandle<()>>,
    kicker: Option<(Arc<AtomicBool>, JoinHandle<()>)>,
}

/// Tokens minted by [`FrameIo::login_tokens`].
#[derive(Clone, Debug)]
pub struct Tokens {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: u64,
}

pub(crate) struct Shared {
    pub base_url: String,
    pub client_id: String,
    pub client_secret: String,
    pub redirect_uri: String,
    pub registry: Option<PathBuf>,
    pub data_dir: PathBuf,
    remove_data_dir: bool,
    /// `Options::originals_dir`.
    pub originals_dir: Option<PathBuf>,
    state: Mutex<State>,
    faults: Mutex<Faults>,
    /// Set when the [`FrameIo`] is dropped: webhook retries and pending `file.ready` events
    /// give up.
    pub stopped: AtomicBool,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking request thread must not take the whole simulator down with it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn faults(&self) -> MutexGuard<'_, Faults> {
        self.faults.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn faults_now(&self) -> Faults {
        self.faults().clone()
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        if self.remove_data_dir {
            let _ = std::fs::remove_dir_all(&self.data_dir);
        }
    }
}

/// A request as handlers see it (the body is passed separately).
pub(crate) struct Meta {
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    /// Names lower-cased, in order.
    pub headers: Vec<(String, String)>,
}

impl Meta {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A response before it is handed to tiny_http.
pub(crate) struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub(crate) fn json(status: u16, v: &serde_json::Value) -> Reply {
        Reply {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: serde_json::to_vec(v).unwrap_or_default(),
        }
    }

    pub(crate) fn text(status: u16, s: &str) -> Reply {
        Reply {
            status,
            headers: vec![("Content-Type".into(), "text/plain; charset=utf-8".into())],
            body: s.as_bytes().to_vec(),
        }
    }

    pub(crate) fn empty(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub(crate) fn with_header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }
}

impl FrameIo {
    /// Binds `options.listen` and starts serving.
    pub fn start(options: Options) -> io::Result<FrameIo> {
        let server = tiny_http::Server::http(options.listen.as_str())
            .map_err(|e| io::Error::other(format!("cannot listen on {}: {e}", options.listen)))?;
        let addr = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| io::Error::other("listener has no IP address"))?;
        let mut rng = match options.seed {
            Some(s) => Prng::seeded(s),
            None => Prng::from_entropy(),
        };
        let (data_dir, remove_data_dir) = match &options.data_dir {
            Some(d) => (d.clone(), false),
            None => (
                std::env::temp_dir().join(format!(
                    "frameio-sim-{}-{}",
                    std::process::id(),
                    rng.hex(6)
                )),
                true,
            ),
        };
        let state =
            State::new(rng, options.extra_accounts, &options.projects).map_err(io::Error::other)?;
        std::fs::create_dir_all(&data_dir)?;
        if let Some(d) = &options.originals_dir {
            std::fs::create_dir_all(d)?;
        }
        let shared = Arc::new(Shared {
            base_url: format!("http://{addr}"),
            client_id: options.client_id.clone(),
            client_secret: options.client_secret.clone(),
            redirect_uri: options.redirect_uri.clone(),
            registry: options.tunnel_registry.clone(),
            data_dir,
            remove_data_dir,
            originals_dir: options.originals_dir.clone(),
            state: Mutex::new(state),
            faults: Mutex::new(options.faults.clone()),
            stopped: AtomicBool::new(false),
        });
        let server = Arc::new(server);
        let acceptor = {
            let server = Arc::clone(&server);
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("frameio-sim-accept".into())
                .spawn(move || accept_loop(&server, &shared))?
        };
        let kicker = {
            let stop = Arc::new(AtomicBool::new(false));
            let flag = Arc::clone(&stop);
            let thread = std::thread::Builder::new()
                .name("frameio-sim-kick".into())
                .spawn(move || kick_connection_pool(addr, &flag))?;
            (stop, thread)
        };
        log::info!("frameio-sim listening on {}", shared.base_url);
        Ok(FrameIo {
            shared,
            server,
            acceptor: Some(acceptor),
            kicker: Some(kicker),
        })
    }

    /// `http://127.0.0.1:PORT`: use as both `frameio.api_base` and `frameio.ims_base`.
    pub fn base_url(&self) -> &str {
        &self.shared.base_url
    }
    pub fn client_id(&self) -> &str {
        &self.shared.client_id
    }
    pub fn client_secret(&self) -> &str {
        &self.shared.client_secret
    }
    pub fn redirect_uri(&self) -> &str {
        &self.shared.redirect_uri
    }
    pub fn user_id(&self) -> String {
        self.shared.lock().user.id.clone()
    }
    /// The main project's account, workspace, project and root folder.
    pub fn account_id(&self) -> String {
        self.shared.lock().main_project().account_id.clone()
    }
    pub fn workspace_id(&self) -> String {
        self.shared.lock().main_project().workspace_id.clone()
    }
    pub fn project_id(&self) -> String {
        self.shared.lock().main_project().id.clone()
    }
    pub fn root_folder_id(&self) -> String {
        self.shared.lock().main_project().root_folder_id.clone()
    }

    /// Every project, the main one first, then `Options::projects` in order.
    pub fn projects(&self) -> Vec<ProjectView> {
        let st = self.shared.lock();
        st.projects.iter().map(|p| st.project_view(p)).collect()
    }

    /// The first project with that name (the main one is "Sim Project").
    pub fn project_named(&self, name: &str) -> Option<ProjectView> {
        let st = self.shared.lock();
        let p = st.projects.iter().find(|p| p.name == name)?;
        Some(st.project_view(p))
    }

    /// Mints a valid access + refresh token pair as if the browser flow had run (scopes
    /// include `offline_access`), using the current token lifetimes.
    pub fn login_tokens(&self) -> Tokens {
        let faults = self.shared.faults_now();
        let scopes = ims::DEFAULT_SCOPES.iter().map(|s| s.to_string()).collect();
        let mut st = self.shared.lock();
        let (access_token, refresh_token) = ims::issue_pair(
            &mut st,
            &self.shared.client_id,
            scopes,
            &faults,
            "test_login",
        );
        Tokens {
            access_token,
            refresh_token: refresh_token.unwrap_or_default(),
            expires_in: faults.access_token_lifetime_secs,
        }
    }

    /// A copy of the current knobs.
    pub fn faults(&self) -> Faults {
        self.shared.faults_now()
    }

    /// Changes knobs at runtime: `sim.set_faults(|f| f.burst_429 = 3)`.
    pub fn set_faults(&self, change: impl FnOnce(&mut Faults)) {
        change(&mut self.shared.faults());
    }

    /// Every refresh token issued so far is expired: the next refresh gets `invalid_grant`.
    pub fn expire_refresh_tokens_now(&self) {
        let now = SystemTime::now();
        for t in self.shared.lock().refresh.values_mut() {
            t.expires_at = t.expires_at.min(now);
        }
    }

    /// Every access token issued so far is expired: the next `/v4` call gets 401.
    pub fn expire_access_tokens_now(&self) {
        let now = SystemTime::now();
        for t in self.shared.lock().access.values_mut() {
            t.expires_at = t.expires_at.min(now);
        }
    }

    /// The main project's tree from its root folder.
    pub fn tree(&self) -> FolderView {
        self.tree_of(&self.project_id())
    }

    /// One project's tree from its root folder. Panics on an unknown project id.
    pub fn tree_of(&self, project_id: &str) -> FolderView {
        let faults = self.shared.faults_now();
        let st = self.shared.lock();
        let root = st
            .project(project_id)
            .unwrap_or_else(|| panic!("tree_of: no project {project_id}"))
            .root_folder_id
            .clone();
        st.folder_view(&root, &faults)
            .expect("the root folder is never deleted")
    }

    /// Every live file of every project, in creation order.
    pub fn files(&self) -> Vec<FileView> {
        inspect::files(&self.shared, &self.shared.faults_now())
    }

    /// Every live file of one project, in creation order.
    pub fn files_in(&self, project_id: &str) -> Vec<FileView> {
        let mut files = self.files();
        files.retain(|f| f.project_id == project_id);
        files
    }

    /// One live file by id.
    pub fn file(&self, id: &str) -> Option<FileView> {
        let faults = self.shared.faults_now();
        let st = self.shared.lock();
        st.nodes.get(id).and_then(|n| st.file_view(n, &faults))
    }

    /// `"SQ01/UNDLM_00412/SQ01_UNDLM_00412_v001.mov" -> PathEntry { size, sha256, copies, .. }`
    /// for every live file. Folders with the same name merge here, so a file uploaded into
    /// two duplicate folders shows as two copies. The main project's files.
    pub fn by_path(&self) -> BTreeMap<String, PathEntry> {
        self.by_path_in(&self.project_id())
    }

    /// [`FrameIo::by_path`] for one project's files (paths under its own root).
    pub fn by_path_in(&self, project_id: &str) -> BTreeMap<String, PathEntry> {
        inspect::by_path(&self.files_in(project_id))
    }

    /// Live folders per path in the main project (duplicates from concurrent creates show as
    /// counts > 1).
    pub fn folder_copies(&self) -> BTreeMap<String, usize> {
        let st = self.shared.lock();
        let main = st.main_project().id.clone();
        let mut out = BTreeMap::new();
        for n in st.nodes.values() {
            if matches!(n.kind, NodeKind::Folder)
                && n.parent_id.is_some()
                && st.project_of(&n.id).is_some_and(|p| p.id == main)
            {
                *out.entry(st.path_of(&n.id)).or_insert(0) += 1;
            }
        }
        out
    }

    /// Successful create calls per (project, parent path, name, kind), deleted ones included.
    pub fn create_counts(&self) -> Vec<CreateCount> {
        inspect::create_counts(&self.shared.lock())
    }

    /// Successful create calls for one (parent path, name) in the main project; `kind` is
    /// `"folder"` or `"file"`.
    pub fn create_count(&self, parent_path: &str, name: &str, kind: &str) -> u32 {
        self.create_count_in(&self.project_id(), parent_path, name, kind)
    }

    /// [`FrameIo::create_count`] in one project.
    pub fn create_count_in(
        &self,
        project_id: &str,
        parent_path: &str,
        name: &str,
        kind: &str,
    ) -> u32 {
        self.create_counts()
            .into_iter()
            .find(|c| {
                c.project_id == project_id
                    && c.parent_path == parent_path
                    && c.name == name
                    && c.kind == kind
            })
            .map_or(0, |c| c.count)
    }

    /// Every token issued, oldest first.
    pub fn tokens(&self) -> Vec<TokenRecord> {
        self.shared.lock().token_log.clone()
    }

    /// Requests answered per `"endpoint status"`, e.g. `"create_folder 201"`.
    pub fn counters(&self) -> BTreeMap<String, u64> {
        inspect::counters(&self.shared.lock())
    }

    /// Requests to one endpoint (see `counters` for the names), with one status or any.
    pub fn request_count(&self, endpoint: &str, status: Option<u16>) -> u64 {
        self.shared
            .lock()
            .counters
            .iter()
            .filter(|((e, s), _)| e == endpoint && status.is_none_or(|want| *s == want))
            .map(|(_, n)| n)
            .sum()
    }

    /// Every part PUT received, in order.
    pub fn s3_puts(&self) -> Vec<S3PutRecord> {
        self.shared.lock().s3_log.clone()
    }

    /// Every request the remote fetcher made, in order.
    pub fn fetches(&self) -> Vec<FetchRecord> {
        self.shared.lock().fetch_log.clone()
    }

    /// Every request for a kept original (`download_url` GETs and HEADs, refused ones
    /// included), in arrival order.
    pub fn downloads(&self) -> Vec<DownloadRecord> {
        self.shared.lock().download_log.clone()
    }

    /// How many times a file's original was downloaded: its GETs answered 200 or 206 (a
    /// range counts as one; HEADs and refusals do not).
    pub fn download_count(&self, file_id: &str) -> usize {
        self.shared
            .lock()
            .download_log
            .iter()
            .filter(|d| d.file_id == file_id && d.method == "GET" && matches!(d.status, 200 | 206))
            .count()
    }

    /// Where a file's original is kept (`Options::originals_dir`), once every byte arrived.
    pub fn original_path(&self, file_id: &str) -> Option<PathBuf> {
        match self.shared.lock().nodes.get(file_id).map(|n| &n.kind) {
            Some(NodeKind::File(f)) => f.original.clone(),
            _ => None,
        }
    }

    /// SHA-256 (hex) of the kept original's bytes as they are now, hashed on demand (what a
    /// download gives; differs from `FileView::sha256` after `corrupt_original_next`).
    pub fn original_sha256(&self, file_id: &str) -> Option<String> {
        let (path, size) = match self.shared.lock().nodes.get(file_id).map(|n| &n.kind) {
            Some(NodeKind::File(f)) => (f.original.clone()?, f.file_size),
            _ => return None,
        };
        s3::hash_file(&path, size).ok().map(|(sha, _)| sha)
    }

    /// Adds a folder directly (no rate limit, not counted as a create call).
    pub fn add_folder(&self, parent_id: &str, name: &str) -> String {
        let mut st = self.shared.lock();
        assert!(
            st.is_folder(parent_id),
            "add_folder: {parent_id} is not a folder"
        );
        st.insert_node(parent_id, name, NodeKind::Folder, false)
    }

    /// Backdates a file or folder: as if it had been created at `when` (Frame.io's listing
    /// order is undocumented, so a test can make it differ from the age order).
    pub fn set_created_at(&self, id: &str, when: SystemTime) {
        let mut st = self.shared.lock();
        let node = st.nodes.get_mut(id).expect("set_created_at: no such node");
        node.created_at = when;
    }

    /// Adds a complete file directly (no bytes, no rate limit, not counted as a create call).
    pub fn add_file(&self, parent_id: &str, name: &str, size: u64) -> String {
        let mut st = self.shared.lock();
        assert!(
            st.is_folder(parent_id),
            "add_file: {parent_id} is not a folder"
        );
        let media = crate::util::media_type_for(name).to_string();
        let now = SystemTime::now();
        let data = FileData {
            file_size: size,
            media_type: Some(media.clone()),
            part_content_type: media,
            mode: UploadMode::Seeded,
            source_url: None,
            uploaded_at: Some(now),
            completed_at: Some(now),
            failed: false,
            failure_reason: None,
            sha256: None,
            bytes_received: size,
            parts: Vec::new(),
            assembling: false,
            staging: None,
            original: None,
            original_corrupted: false,
        };
        st.insert_node(parent_id, name, NodeKind::File(Box::new(data)), false)
    }

    /// Every version stack of every project, oldest first.
    pub fn stacks(&self) -> Vec<StackView> {
        inspect::stacks(&self.shared.lock())
    }

    /// Stacks files of one folder by hand, bottom (oldest) first, as a person would in
    /// Frame.io (no rate limit, not counted as a create call). Panics unless every file is
    /// directly in `folder_id`.
    pub fn add_stack(&self, folder_id: &str, file_ids: &[&str]) -> String {
        let mut st = self.shared.lock();
        for id in file_ids {
            assert!(
                st.nodes.get(*id).and_then(|n| n.parent_id.as_deref()) == Some(folder_id),
                "add_stack: {id} is not a file directly in {folder_id}"
            );
        }
        let order: Vec<String> = file_ids.iter().map(|s| s.to_string()).collect();
        let head = st.nodes[*file_ids.last().expect("add_stack: no files")]
            .name
            .clone();
        let stack_id = st.insert_node(folder_id, &head, NodeKind::Stack(order), false);
        for id in file_ids {
            if let Some(n) = st.nodes.get_mut(*id) {
                n.parent_id = Some(stack_id.clone());
            }
        }
        stack_id
    }

    /// Polls until the file is complete or failed, or `timeout` passes; returns its last view.
    pub fn wait_for_file(&self, id: &str, timeout: Duration) -> Option<FileView> {
        let deadline = Instant::now() + timeout;
        loop {
            let view = self.file(id);
            let settled = view
                .as_ref()
                .is_none_or(|v| v.upload_complete || v.upload_failed);
            if settled || Instant::now() >= deadline {
                return view;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every webhook (any account, active or not), oldest first, with its secret.
    pub fn webhooks(&self) -> Vec<WebhookView> {
        review::webhooks(&self.shared.lock())
    }

    /// Registers a webhook directly, as if created through the API, except that any http(s)
    /// URL is taken (`http://127.0.0.1:PORT/…` reaches a test's receiver without a tunnel
    /// registry) and event names are not checked. Panics on an unknown workspace.
    pub fn add_webhook(
        &self,
        workspace_id: &str,
        name: &str,
        url: &str,
        events: &[&str],
    ) -> WebhookView {
        review::add_webhook(&mut self.shared.lock(), workspace_id, name, url, events)
            .unwrap_or_else(|e| panic!("add_webhook: {e}"))
    }

    /// Every webhook delivery attempt so far, in the order they were made.
    pub fn deliveries(&self) -> Vec<DeliveryRecord> {
        self.shared.lock().review.deliveries.clone()
    }

    /// A reviewer (`author`: their name; `None`: a guest, whose `owner` is null) comments on a
    /// file, at `timestamp_frames` (24 fps) or on the whole file: fires `comment.created`.
    /// Returns the comment's id. Panics on an unknown file.
    pub fn add_comment(
        &self,
        file_id: &str,
        author: Option<&str>,
        text: &str,
        timestamp_frames: Option<u64>,
    ) -> String {
        review::add_comment(&self.shared, file_id, author, text, timestamp_frames, None)
            .unwrap_or_else(|e| panic!("add_comment: {e}"))
    }

    /// A reply to a comment (to a reply: into the same thread): fires `comment.created`.
    /// Panics on an unknown comment.
    pub fn add_reply(&self, parent_id: &str, author: Option<&str>, text: &str) -> String {
        review::add_comment(&self.shared, "", author, text, None, Some(parent_id))
            .unwrap_or_else(|e| panic!("add_reply: {e}"))
    }

    /// Marks a comment done (`completed_at`): fires `comment.completed`.
    pub fn complete_comment(&self, id: &str) {
        review::complete_comment(&self.shared, id)
            .unwrap_or_else(|e| panic!("complete_comment: {e}"));
    }

    /// Backdates a comment (for catch-up tests). Fires nothing.
    pub fn set_comment_created_at(&self, id: &str, when: SystemTime) {
        review::set_comment_created_at(&self.shared, id, when)
            .unwrap_or_else(|e| panic!("set_comment_created_at: {e}"));
    }

    /// Sets a file's Status by name (one of [`STATUS_OPTIONS`]): fires
    /// `metadata.value.updated` when it changes. Panics on an unknown file or status.
    pub fn set_status(&self, file_id: &str, status: &str) {
        review::set_status(&self.shared, file_id, status)
            .unwrap_or_else(|e| panic!("set_status: {e}"));
    }

    /// A file's Status, by name.
    pub fn status_of(&self, file_id: &str) -> Option<String> {
        review::status_of(&self.shared.lock(), file_id)
    }

    /// The JSON that `GET /_sim/state` serves.
    pub fn state_json(&self) -> serde_json::Value {
        inspect::state_json(&self.shared)
    }
}

impl Drop for FrameIo {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        if let Some((stop, thread)) = self.kicker.take() {
            stop.store(true, Ordering::SeqCst);
            let _ = thread.join();
        }
        self.server.unblock();
        if let Some(h) = self.acceptor.take() {
            let _ = h.join();
        }
    }
}

/// Works around a lost wakeup in tiny_http 0.12's connection pool (`util::TaskPool::spawn`):
/// a new connection is queued instead of given a thread when the pool counts a worker as
/// waiting that another new connection has already claimed (its count drops only after it
/// takes the lock back). The queued connection then waits until some worker finishes its
/// current connection, and with keep-alive clients that can be never: a client sees its
/// request go unanswered until it gives up (postflow abandons a part PUT after 30 s). Every
/// connection accepted later wakes a worker, which takes the oldest queued connection first;
/// so an empty connection (closed at once, no request: nothing is counted or logged) every
/// 50 ms bounds the wait to about that.
fn kick_connection_pool(mut addr: std::net::SocketAddr, stop: &AtomicBool) {
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(50));
        let _ = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1));
    }
}

fn accept_loop(server: &tiny_http::Server, shared: &Arc<Shared>) {
    for rq in server.incoming_requests() {
        let shared = Arc::clone(shared);
        let spawned = std::thread::Builder::new()
            .name("frameio-sim-req".into())
            .spawn(move || serve(&shared, rq));
        if let Err(e) = spawned {
            log::error!("frameio-sim: cannot spawn a request thread: {e}");
        }
    }
}

fn serve(shared: &Arc<Shared>, mut rq: tiny_http::Request) {
    let url = rq.url().to_string();
    let (path, raw_query) = match url.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (url.clone(), String::new()),
    };
    let meta = Meta {
        method: rq.method().as_str().to_ascii_uppercase(),
        query: crate::util::parse_query(&raw_query),
        path,
        headers: rq
            .headers()
            .iter()
            .map(|h| {
                (
                    h.field.as_str().as_str().to_ascii_lowercase(),
                    h.value.as_str().to_string(),
                )
            })
            .collect(),
    };
    let is_sim = meta.path.starts_with("/_sim/");
    if !is_sim {
        let delay = shared.faults().response_delay_ms;
        if delay > 0 {
            std::thread::sleep(Duration::from_millis(delay));
        }
    }
    if meta.path.starts_with(originals::PREFIX) {
        originals::serve(shared, &meta, rq);
        return;
    }
    let (endpoint, reply) = if meta.path.starts_with("/s3/") {
        s3::put_part(shared, &meta, rq.as_reader())
    } else {
        let mut body = Vec::new();
        let read = rq.as_reader().take(MAX_API_BODY + 1).read_to_end(&mut body);
        if read.is_err() || body.len() as u64 > MAX_API_BODY {
            (
                "bad_body",
                Reply::text(400, "request body unreadable or too large"),
            )
        } else if let Some(rest) = meta.path.strip_prefix("/ims/") {
            ims::handle(shared, &meta, rest, &body)
        } else if let Some(rest) = meta.path.strip_prefix("/v4/") {
            api::handle(shared, &meta, rest, &body)
        } else if is_sim {
            inspect::handle(shared, &meta, &body)
        } else {
            ("not_found", Reply::text(404, "not found"))
        }
    };
    if !is_sim {
        shared.lock().count(endpoint, reply.status);
    }
    log::debug!(
        "frameio-sim: {} {} -> {} ({endpoint})",
        meta.method,
        meta.path,
        reply.status
    );
    let mut response = tiny_http::Response::from_data(reply.body).with_status_code(reply.status);
    for (k, v) in &reply.headers {
        if let Ok(h) = tiny_http::Header::from_bytes(k.as_bytes(), v.as_bytes()) {
            response.add_header(h);
        }
    }
    // The client may have gone away; nothing to do about it here.
    let _ = rq.respond(response);
}
