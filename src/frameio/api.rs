//! The Frame.io v4 client: one function ([`Api::call`]) that every request goes through, and
//! typed methods on top of it for what postflow needs.
//!
//! What `call` does, in order, for each try:
//! - waits for a slot of the endpoint's class in the account's budget ([`Pacer`]), so postflow
//!   stays under the documented per-endpoint limits (Frame.io counts them per account and
//!   user, whatever the project) instead of learning them from 429s;
//! - asks [`Auth`] for a valid token and sends it as `Authorization: Bearer`;
//! - 401: asks `Auth` to refresh (once per token; single-flight) and tries again;
//! - 429: waits `Retry-After` (seconds or HTTP date), else `x-ratelimit-window / limit`
//!   (Frame.io's buckets are leaky: one request fits again after one window/limit), else 1 s
//!   doubling; and tries again;
//! - 5xx, 408, 409 and transport errors: backoff with jitter for a bounded number of tries, then an
//!   error. Only for calls that are safe to repeat: a POST (or a PATCH such as a move) that may
//!   have reached Frame.io is not sent twice (it could create a second file, folder or stack,
//!   or move a file twice); its error says [`ApiError::maybe_committed`] and the caller looks
//!   before trying again;
//! - any other status is an [`ApiError::Status`] with the call, the status and Frame.io's
//!   `errors[0].detail`.
//!
//! Every wait listens to the stop channel given with [`Api::with_stop`], so shutdown is never
//! held up by a backoff.
//!
//! `Api` is cheap to clone; clones share the agent, the token owner and the pacer, so any
//! number of worker threads can use it at once.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::{AccessToken, Auth, AuthError};
use crate::config::FrameioConfig;

/// Page size asked of every list (Frame.io's maximum).
pub const PAGE_SIZE: u32 = 100;

/// Largest response body read (lists of 100 items are a few hundred kB at most).
const MAX_BODY: u64 = 16 * 1024 * 1024;

/// Refresh-and-retry rounds per call after a 401. One is the rule; a second covers a token
/// that expired again during a long 429 wait.
const UNAUTHORIZED_ROUNDS: u32 = 2;

/// A stop on runaway paging (a server handing back the same cursor forever).
const MAX_PAGES: usize = 100_000;

/// How hard `call` tries before giving up.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Tries per call on 5xx and transport errors (1 = no retry).
    pub tries: u32,
    /// First backoff after a 5xx or transport error; doubles each time, with jitter.
    pub first_backoff: Duration,
    pub max_backoff: Duration,
    /// Tries per call on 429.
    pub rate_limit_tries: u32,
    /// Longest single wait after a 429, whatever the hint says.
    pub max_rate_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            tries: 5,
            first_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            rate_limit_tries: 10,
            max_rate_wait: Duration::from_secs(60),
        }
    }
}

/// What went wrong with a Frame.io call.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ApiError {
    /// No usable tokens (none saved, or Adobe refused the refresh token). Not the job's fault:
    /// wait with [`Auth::wait_for_login`] and try again; never fail a job for it.
    NeedsLogin(String),
    /// Getting a token failed another way (IMS unreachable, `invalid_client`, tokens.json not
    /// writable). Worth retrying later.
    Auth(AuthError),
    /// Frame.io answered an error status: any 4xx but 401/408/409/429 at once; 401 after a
    /// refresh did not help; 408, 409, 429 and 5xx after the retries ran out (a POST: at
    /// once, except 429). `detail` is Frame.io's
    /// `errors[0].detail` (or the start of the body).
    Status {
        method: &'static str,
        path: String,
        status: u16,
        detail: String,
        /// A POST answered 5xx or 408: it may have taken effect.
        maybe_committed: bool,
    },
    /// Frame.io could not be reached, or the connection broke (after the retries that were
    /// safe).
    Transport {
        method: &'static str,
        path: String,
        message: String,
        /// A POST whose request may have been sent before the connection broke.
        maybe_committed: bool,
    },
    /// A success answer whose body is not what the API reference describes.
    Decode {
        method: &'static str,
        path: String,
        message: String,
    },
    /// The stop signal arrived during a wait.
    Stopped,
}

impl ApiError {
    /// The HTTP status, for `Status` errors.
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// True when a POST may have created something although it failed: look (list the folder)
    /// before sending it again.
    pub fn maybe_committed(&self) -> bool {
        matches!(
            self,
            ApiError::Status {
                maybe_committed: true,
                ..
            } | ApiError::Transport {
                maybe_committed: true,
                ..
            }
        )
    }

    /// Worth another attempt later (the network, Frame.io having a bad moment, IMS), as
    /// opposed to a request Frame.io refuses for good (4xx).
    pub fn is_transient(&self) -> bool {
        match self {
            ApiError::Status { status, .. } => matches!(status, 408 | 409 | 429) || *status >= 500,
            ApiError::Transport { .. } | ApiError::Auth(_) => true,
            _ => false,
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::NeedsLogin(reason) => write!(
                f,
                "Frame.io needs a new sign-in ({reason}): run `postflow auth config.json`"
            ),
            ApiError::Auth(e) => e.fmt(f),
            ApiError::Status {
                method,
                path,
                status,
                detail,
                ..
            } => write!(f, "Frame.io {method} {path}: {status}: {detail}"),
            ApiError::Transport {
                method,
                path,
                message,
                ..
            } => write!(f, "Frame.io {method} {path}: {message}"),
            ApiError::Decode {
                method,
                path,
                message,
            } => write!(f, "Frame.io {method} {path}: unexpected answer: {message}"),
            ApiError::Stopped => write!(f, "stopped"),
        }
    }
}

impl std::error::Error for ApiError {}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> ApiError {
        match e {
            AuthError::NeedsLogin(reason) => ApiError::NeedsLogin(reason),
            other => ApiError::Auth(other),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Patch,
    Delete,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }
}

/// How [`Api::call_with`] sends one request, beyond method, path and body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallOptions {
    /// Sent again after a 5xx or a broken connection. Reads and deletes are; a POST or a
    /// PATCH that may have taken effect is not (the caller looks first).
    pub repeatable: bool,
    /// Adds `api-version: experimental` (Frame.io's experimental endpoints).
    pub experimental: bool,
}

impl CallOptions {
    /// What `call` uses: GET and DELETE are repeated, POST and PATCH are not.
    pub fn for_method(method: Method) -> CallOptions {
        CallOptions {
            repeatable: matches!(method, Method::Get | Method::Delete),
            experimental: false,
        }
    }
}

/// Endpoint classes with their documented limits (per account user). Frame.io keeps one
/// bucket per endpoint, so the upload endpoints each get their own: a status poll never waits
/// for a create.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// me, accounts, workspaces, projects, project, folder, children: 100/min each, paced
    /// here as one budget (postflow makes few of these).
    Read,
    /// Create folder: 3/s.
    CreateFolder,
    /// `remote_upload`: 5/s.
    RemoteUpload,
    /// `local_upload`: 5/s.
    LocalUpload,
    /// Show file: 10/s (SDK 4.0; the API reference page said 5/s).
    ShowFile,
    /// File upload status: 5/s.
    FileStatus,
    /// Delete file: 100/min.
    Delete,
    /// Create a version stack: 10/min.
    CreateStack,
    /// The files directly in a folder (`…/folders/{id}/files`): 5/s, where children are
    /// 100/min.
    ListFiles,
    /// The version stacks of a folder: 5/s.
    ListStacks,
    /// Show a version stack: 100/min.
    ShowStack,
    /// The files of a version stack: 100/min.
    StackChildren,
    /// Move a file (into a folder or a version stack): 100/min.
    Move,
    /// Reorder a version stack (experimental): 10/min.
    Reorder,
    /// Create or update a webhook: 10/min each.
    WebhookChange,
    /// The review loop's reads: list webhooks, show a comment, list a file's comments, a
    /// file's metadata and the field definitions: 100/min each, paced here as one budget.
    ReviewRead,
}

/// How many classes there are (the pacer keeps one slot each).
const CLASSES: usize = 16;

impl Class {
    /// (one request per interval, burst). Each burst keeps one slot of Frame.io's bucket in
    /// hand: requests leave here paced to the interval but reach Frame.io with the jitter of
    /// thread scheduling and the network, and a bucket paced to its brim refuses the one
    /// that arrives a little early (seen with two projects' uploads sharing one account's
    /// budget on a busy machine). The 10-a-minute classes keep half their bucket in hand, so
    /// a clock a little off never tips them over.
    fn rate(self) -> (Duration, u32) {
        match self {
            Class::Read => (Duration::from_millis(600), 19),
            Class::CreateFolder => (Duration::from_millis(334), 2),
            Class::RemoteUpload
            | Class::LocalUpload
            | Class::FileStatus
            | Class::ListFiles
            | Class::ListStacks => (Duration::from_millis(200), 4),
            Class::ShowFile => (Duration::from_millis(100), 9),
            Class::Delete => (Duration::from_millis(600), 9),
            Class::CreateStack | Class::Reorder | Class::WebhookChange => {
                (Duration::from_secs(6), 5)
            }
            Class::ReviewRead => (Duration::from_millis(600), 9),
            Class::Move | Class::ShowStack | Class::StackChildren => {
                (Duration::from_millis(600), 9)
            }
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Per-class pacing (GCRA, a token bucket in one timestamp per class): at most `burst` at once,
/// then one per interval. Frame.io counts per account and user, so each account has its own
/// budget: projects in one account share it, projects in two accounts do not. Shared by
/// every clone of an `Api`.
struct Pacer {
    next: Mutex<HashMap<String, [Instant; CLASSES]>>,
}

impl Pacer {
    fn new() -> Pacer {
        Pacer {
            next: Mutex::new(HashMap::new()),
        }
    }

    /// Books a slot in `account`'s budget ("" for calls outside any account) and says how
    /// long to wait for it.
    fn reserve(&self, account: &str, class: Class) -> Duration {
        let (interval, burst) = class.rate();
        let now = Instant::now();
        let mut budgets = self.next.lock().unwrap_or_else(|e| e.into_inner());
        let next = budgets.entry(account.to_string()).or_insert([now; CLASSES]);
        let tat = next[class.index()].max(now);
        next[class.index()] = tat + interval;
        tat.saturating_duration_since(now)
            .saturating_sub(interval * (burst - 1))
    }
}

/// The account a `/v4/accounts/{id}/…` path is in; "" for the others (`/v4/me`, the account
/// list).
fn account_of(path: &str) -> &str {
    path.strip_prefix("/v4/accounts/")
        .and_then(|rest| rest.split(['/', '?']).next())
        .unwrap_or("")
}

/// The Frame.io client. Clone it for each worker; clones share everything.
#[derive(Clone)]
pub struct Api {
    agent: ureq::Agent,
    base: Arc<str>,
    auth: Auth,
    pacer: Arc<Pacer>,
    policy: RetryPolicy,
    stop: Option<Receiver<()>>,
}

impl fmt::Debug for Api {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Api")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// One try's outcome, before deciding what to do.
struct Answer {
    status: u16,
    text: String,
    retry_after: Option<String>,
    limit: Option<String>,
    window: Option<String>,
}

impl Api {
    /// A client for `frameio.api_base`, taking tokens from `auth`.
    pub fn new(frameio: &FrameioConfig, auth: Auth) -> Api {
        Api {
            agent: super::agent(),
            base: frameio.api_base.trim_end_matches('/').into(),
            auth,
            pacer: Arc::new(Pacer::new()),
            policy: RetryPolicy::default(),
            stop: None,
        }
    }

    /// The same client whose waits end with [`ApiError::Stopped`] once `stop` is closed (or
    /// receives anything).
    pub fn with_stop(&self, stop: Receiver<()>) -> Api {
        Api {
            stop: Some(stop),
            ..self.clone()
        }
    }

    /// The same client with other retry limits.
    pub fn with_retry(&self, policy: RetryPolicy) -> Api {
        Api {
            policy,
            ..self.clone()
        }
    }

    /// The token owner behind this client.
    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    /// Sleeps, unless the stop signal comes first.
    fn pause(&self, d: Duration) -> Result<(), ApiError> {
        if d.is_zero() {
            return Ok(());
        }
        match &self.stop {
            None => {
                std::thread::sleep(d);
                Ok(())
            }
            Some(stop) => match stop.recv_timeout(d) {
                Err(RecvTimeoutError::Timeout) => Ok(()),
                _ => Err(ApiError::Stopped),
            },
        }
    }

    /// Sends one request through the whole policy (see the module docs). `path` starts with
    /// `/v4/` and may carry a query.
    pub fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        class: Class,
    ) -> Result<Value, ApiError> {
        self.call_with(method, path, body, class, CallOptions::for_method(method))
    }

    /// [`Api::call`] with explicit [`CallOptions`].
    pub fn call_with(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        class: Class,
        options: CallOptions,
    ) -> Result<Value, ApiError> {
        let url = format!("{}{}", self.base, path);
        let payload = body.map(|b| b.to_string());
        let repeatable = options.repeatable;
        let (mut failures, mut limited, mut unauthorized) = (0u32, 0u32, 0u32);
        loop {
            self.pause(self.pacer.reserve(account_of(path), class))?;
            let token = self.auth.access_token()?;
            let started = Instant::now();
            let answer = self.send(method, &url, &token, payload.as_deref(), options);
            let took = started.elapsed();
            let answer = match answer {
                Ok(a) => a,
                Err(e) => {
                    // A POST is repeated only when it surely never left this machine.
                    let sent = !matches!(
                        e,
                        ureq::Error::ConnectionFailed
                            | ureq::Error::HostNotFound
                            | ureq::Error::Timeout(ureq::Timeout::Connect | ureq::Timeout::Resolve)
                    );
                    failures += 1;
                    log::warn!(
                        "Frame.io {} {path}: {e} (try {failures} of {})",
                        method.as_str(),
                        self.policy.tries
                    );
                    if (!repeatable && sent) || failures >= self.policy.tries {
                        return Err(ApiError::Transport {
                            method: method.as_str(),
                            path: path.to_string(),
                            message: e.to_string(),
                            maybe_committed: !repeatable && sent,
                        });
                    }
                    self.pause(self.backoff(failures))?;
                    continue;
                }
            };
            log::debug!(
                "Frame.io {} {path} -> {} ({} ms)",
                method.as_str(),
                answer.status,
                took.as_millis()
            );
            let status = answer.status;
            let error = |maybe_committed: bool| ApiError::Status {
                method: method.as_str(),
                path: path.to_string(),
                status,
                detail: error_detail(&answer.text),
                maybe_committed,
            };
            match status {
                200..=299 => {
                    let body = if answer.text.trim().is_empty() {
                        Value::Null
                    } else {
                        serde_json::from_str(&answer.text).map_err(|e| ApiError::Decode {
                            method: method.as_str(),
                            path: path.to_string(),
                            message: e.to_string(),
                        })?
                    };
                    return Ok(body);
                }
                401 => {
                    unauthorized += 1;
                    if unauthorized > UNAUTHORIZED_ROUNDS {
                        return Err(error(false));
                    }
                    self.auth.on_unauthorized(&token)?;
                }
                429 => {
                    limited += 1;
                    if limited >= self.policy.rate_limit_tries {
                        return Err(error(false));
                    }
                    let wait = rate_limit_wait(
                        answer.retry_after.as_deref(),
                        answer.limit.as_deref(),
                        answer.window.as_deref(),
                        limited,
                        SystemTime::now(),
                        self.policy.max_rate_wait,
                    );
                    // One line per call at INFO; a storm's further waits only at DEBUG.
                    let level = if limited == 1 {
                        log::Level::Info
                    } else {
                        log::Level::Debug
                    };
                    log::log!(
                        level,
                        "Frame.io {} {path}: rate limited (429 #{limited}), waiting {} ms",
                        method.as_str(),
                        wait.as_millis()
                    );
                    self.pause(wait)?;
                }
                // Server trouble, a request timeout, a conflict with something in progress.
                408 | 409 | 500..=599 => {
                    failures += 1;
                    log::warn!(
                        "Frame.io {} {path}: {status} (try {failures} of {})",
                        method.as_str(),
                        self.policy.tries
                    );
                    if !repeatable || failures >= self.policy.tries {
                        return Err(error(!repeatable && status != 409));
                    }
                    self.pause(self.backoff(failures))?;
                }
                // A repeated DELETE whose first try went through (and then answered 5xx).
                404 if method == Method::Delete && failures > 0 => return Ok(Value::Null),
                _ => return Err(error(false)),
            }
        }
    }

    /// Exponential backoff with jitter (50–100 % of the doubled delay).
    fn backoff(&self, failures: u32) -> Duration {
        let doubled = self
            .policy
            .first_backoff
            .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
            .min(self.policy.max_backoff);
        doubled.mul_f64(0.5 + super::jitter() / 2.0)
    }

    fn send(
        &self,
        method: Method,
        url: &str,
        token: &AccessToken,
        payload: Option<&str>,
        options: CallOptions,
    ) -> Result<Answer, ureq::Error> {
        let bearer = format!("Bearer {}", token.value());
        // Stable endpoints send no `api-version` (as the official SDK does).
        fn head<B>(
            req: ureq::RequestBuilder<B>,
            bearer: &str,
            experimental: bool,
        ) -> ureq::RequestBuilder<B> {
            let req = req
                .header("Authorization", bearer)
                .header("Accept", "application/json");
            if experimental {
                req.header("api-version", "experimental")
            } else {
                req
            }
        }
        let x = options.experimental;
        let body = payload.unwrap_or("{}").as_bytes();
        let mut resp = match method {
            Method::Get => head(self.agent.get(url), &bearer, x).call()?,
            Method::Delete => head(self.agent.delete(url), &bearer, x).call()?,
            Method::Post => head(self.agent.post(url), &bearer, x)
                .header("Content-Type", "application/json")
                .send(body)?,
            Method::Patch => head(self.agent.patch(url), &bearer, x)
                .header("Content-Type", "application/json")
                .send(body)?,
        };
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let (retry_after, limit, window) = (
            header("retry-after"),
            header("x-ratelimit-limit"),
            header("x-ratelimit-window"),
        );
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .with_config()
            .limit(MAX_BODY)
            .read_to_string()?;
        Ok(Answer {
            status,
            text,
            retry_after,
            limit,
            window,
        })
    }

    fn get_data<T: DeserializeOwned>(&self, path: &str, class: Class) -> Result<T, ApiError> {
        let body = self.call(Method::Get, path, None, class)?;
        data_of(Method::Get, path, body)
    }

    /// Every item of a list, following `links.next` (a relative path that carries only the
    /// cursor, so `page_size` is added again each time).
    pub fn list_all(&self, path: &str, class: Class) -> Result<Vec<Value>, ApiError> {
        let mut items = Vec::new();
        let mut next = Some(with_page_size(path));
        let mut pages = 0;
        while let Some(page) = next.take() {
            pages += 1;
            let body = self.call(Method::Get, &page, None, class)?;
            let decode = |message: String| ApiError::Decode {
                method: "GET",
                path: page.clone(),
                message,
            };
            match body.get("data") {
                Some(Value::Array(data)) => items.extend(data.iter().cloned()),
                _ => return Err(decode("no \"data\" list".into())),
            }
            next = match body.get("links").and_then(|l| l.get("next")) {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) if s.is_empty() => None,
                Some(Value::String(s)) => Some(
                    self.relative(s)
                        .map(|p| with_page_size(&p))
                        .ok_or_else(|| {
                            decode(format!("links.next {s:?} is not on {}", self.base))
                        })?,
                ),
                Some(other) => return Err(decode(format!("links.next is {other}"))),
            };
            if next.as_deref() == Some(page.as_str()) || pages >= MAX_PAGES {
                return Err(decode("links.next does not move on".into()));
            }
        }
        Ok(items)
    }

    /// `links.next` as a path on our base (never follow a link elsewhere with our token).
    fn relative(&self, next: &str) -> Option<String> {
        if next.starts_with('/') {
            return Some(next.to_string());
        }
        next.strip_prefix(&*self.base)
            .filter(|rest| rest.starts_with('/'))
            .map(str::to_string)
    }

    fn list_typed<T: DeserializeOwned>(
        &self,
        path: &str,
        class: Class,
    ) -> Result<Vec<T>, ApiError> {
        self.list_all(path, class)?
            .into_iter()
            .map(|v| decode_item("GET", path, v))
            .collect()
    }

    /// `GET /v4/me`: who the tokens belong to.
    pub fn me(&self) -> Result<Me, ApiError> {
        self.get_data("/v4/me", Class::Read)
    }

    /// `GET /v4/accounts`, all pages.
    pub fn accounts(&self) -> Result<Vec<Account>, ApiError> {
        self.list_typed("/v4/accounts", Class::Read)
    }

    /// The workspaces of an account, all pages.
    pub fn workspaces(&self, account_id: &str) -> Result<Vec<Workspace>, ApiError> {
        self.list_typed(
            &format!("/v4/accounts/{}/workspaces", seg(account_id)),
            Class::Read,
        )
    }

    /// The projects of a workspace, all pages.
    pub fn projects(&self, account_id: &str, workspace_id: &str) -> Result<Vec<Project>, ApiError> {
        self.list_typed(
            &format!(
                "/v4/accounts/{}/workspaces/{}/projects",
                seg(account_id),
                seg(workspace_id)
            ),
            Class::Read,
        )
    }

    /// One project (with its `root_folder_id`).
    pub fn project(&self, account_id: &str, project_id: &str) -> Result<Project, ApiError> {
        self.get_data(
            &format!(
                "/v4/accounts/{}/projects/{}",
                seg(account_id),
                seg(project_id)
            ),
            Class::Read,
        )
    }

    /// One folder.
    pub fn folder(&self, account_id: &str, folder_id: &str) -> Result<Folder, ApiError> {
        self.get_data(
            &format!(
                "/v4/accounts/{}/folders/{}",
                seg(account_id),
                seg(folder_id)
            ),
            Class::Read,
        )
    }

    /// Everything in a folder (files, folders, version stacks), all pages.
    pub fn folder_children(
        &self,
        account_id: &str,
        folder_id: &str,
    ) -> Result<Vec<Child>, ApiError> {
        let path = format!(
            "/v4/accounts/{}/folders/{}/children",
            seg(account_id),
            seg(folder_id)
        );
        self.list_all(&path, Class::Read)?
            .into_iter()
            .map(|v| {
                Child::from_value(v).map_err(|message| ApiError::Decode {
                    method: "GET",
                    path: path.clone(),
                    message,
                })
            })
            .collect()
    }

    /// Creates a folder (Frame.io allows duplicate names: look first). Not repeated after a
    /// 5xx; see [`ApiError::maybe_committed`].
    pub fn create_folder(
        &self,
        account_id: &str,
        parent_id: &str,
        name: &str,
    ) -> Result<Folder, ApiError> {
        let path = format!(
            "/v4/accounts/{}/folders/{}/folders",
            seg(account_id),
            seg(parent_id)
        );
        let body = self.call(
            Method::Post,
            &path,
            Some(&json!({"data": {"name": name}})),
            Class::CreateFolder,
        )?;
        data_of(Method::Post, &path, body)
    }

    /// Asks Frame.io to fetch `source_url` into the folder (202). Returns the new file and the
    /// status path. Not repeated after a 5xx; see [`ApiError::maybe_committed`].
    pub fn remote_upload(
        &self,
        account_id: &str,
        folder_id: &str,
        name: &str,
        source_url: &str,
    ) -> Result<RemoteUpload, ApiError> {
        let path = format!(
            "/v4/accounts/{}/folders/{}/files/remote_upload",
            seg(account_id),
            seg(folder_id)
        );
        let body = self.call(
            Method::Post,
            &path,
            Some(&json!({"data": {"name": name, "source_url": source_url}})),
            Class::RemoteUpload,
        )?;
        let status_path = body
            .get("links")
            .and_then(|l| l.get("status"))
            .and_then(Value::as_str)
            .and_then(|s| self.relative(s));
        let file: File = data_of(Method::Post, &path, body)?;
        let status_path = status_path.unwrap_or_else(|| {
            format!(
                "/v4/accounts/{}/files/{}/status",
                seg(account_id),
                seg(&file.id)
            )
        });
        Ok(RemoteUpload { file, status_path })
    }

    /// Creates a file to be uploaded in parts (201) with its presigned part URLs. Not repeated
    /// after a 5xx; see [`ApiError::maybe_committed`].
    pub fn local_upload(
        &self,
        account_id: &str,
        folder_id: &str,
        name: &str,
        size: u64,
    ) -> Result<LocalUpload, ApiError> {
        let path = format!(
            "/v4/accounts/{}/folders/{}/files/local_upload",
            seg(account_id),
            seg(folder_id)
        );
        let body = self.call(
            Method::Post,
            &path,
            Some(&json!({"data": {"name": name, "file_size": size}})),
            Class::LocalUpload,
        )?;
        let data = body.get("data").cloned().unwrap_or(Value::Null);
        let upload_urls: Vec<UploadUrl> = match data.get("upload_urls") {
            Some(urls) => serde_json::from_value(urls.clone()).map_err(|e| ApiError::Decode {
                method: "POST",
                path: path.clone(),
                message: format!("upload_urls: {e}"),
            })?,
            None => Vec::new(),
        };
        if upload_urls.is_empty() {
            return Err(ApiError::Decode {
                method: "POST",
                path,
                message: "no upload_urls".into(),
            });
        }
        let file = decode_item("POST", &path, data)?;
        Ok(LocalUpload { file, upload_urls })
    }

    /// One file.
    pub fn file(&self, account_id: &str, file_id: &str) -> Result<File, ApiError> {
        self.get_data(
            &format!("/v4/accounts/{}/files/{}", seg(account_id), seg(file_id)),
            Class::ShowFile,
        )
    }

    /// Where Frame.io's original of a file can be downloaded (`include=media_links.original`:
    /// a presigned link, fetched without our token). `Ok(None)` while Frame.io offers none
    /// (links may be null, and appear some time after the file is complete); 403 when the
    /// user may not download.
    pub fn original_url(
        &self,
        account_id: &str,
        file_id: &str,
    ) -> Result<Option<String>, ApiError> {
        let path = format!(
            "/v4/accounts/{}/files/{}?include=media_links.original",
            seg(account_id),
            seg(file_id)
        );
        let file: Value = self.get_data(&path, Class::ShowFile)?;
        Ok(file
            .pointer("/media_links/original/download_url")
            .and_then(Value::as_str)
            .filter(|u| !u.is_empty())
            .map(str::to_string))
    }

    /// A file's upload status (`upload_complete`, `upload_failed`).
    pub fn file_status(&self, account_id: &str, file_id: &str) -> Result<UploadStatus, ApiError> {
        self.status_at(&format!(
            "/v4/accounts/{}/files/{}/status",
            seg(account_id),
            seg(file_id)
        ))
    }

    /// The status behind a `links.status` path (as returned by [`Api::remote_upload`]).
    pub fn status_at(&self, status_path: &str) -> Result<UploadStatus, ApiError> {
        self.get_data(status_path, Class::FileStatus)
    }

    /// Every file of a folder, the versions inside its version stacks included (a stacked
    /// file is no child of the folder: the folder lists its stack, and the file's
    /// `parent_id` is the stack). One listing of the folder, one per stack in it.
    pub fn folder_files(&self, account_id: &str, folder_id: &str) -> Result<Vec<File>, ApiError> {
        let mut files = Vec::new();
        for child in self.folder_children(account_id, folder_id)? {
            match child {
                Child::File(f) => files.push(f),
                Child::VersionStack(stack) => {
                    files.extend(self.version_stack_children(account_id, &stack.id)?)
                }
                Child::Folder(_) | Child::Other { .. } => {}
            }
        }
        Ok(files)
    }

    /// The files directly in a folder (`GET …/folders/{id}/files`, all pages), not the ones
    /// inside its version stacks. 5 calls a second where a folder's children are 100 a
    /// minute. An entry of another `type`, should Frame.io list one, is left out.
    pub fn files_in_folder(
        &self,
        account_id: &str,
        folder_id: &str,
    ) -> Result<Vec<File>, ApiError> {
        let path = format!(
            "/v4/accounts/{}/folders/{}/files",
            seg(account_id),
            seg(folder_id)
        );
        self.list_all(&path, Class::ListFiles)?
            .into_iter()
            .filter(|v| {
                v.get("type")
                    .and_then(Value::as_str)
                    .is_none_or(|t| t == "file")
            })
            .map(|v| decode_item("GET", &path, v))
            .collect()
    }

    /// The version stacks of a folder, each with its `head_version` when Frame.io includes
    /// it (all pages; 5 calls a second).
    pub fn stacks_in_folder(
        &self,
        account_id: &str,
        folder_id: &str,
    ) -> Result<Vec<VersionStack>, ApiError> {
        self.list_typed(
            &format!(
                "/v4/accounts/{}/folders/{}/version_stacks",
                seg(account_id),
                seg(folder_id)
            ),
            Class::ListStacks,
        )
    }

    /// Stacks files of one folder, `file_ids` from the bottom (oldest) to the top (newest),
    /// 2 to 10 of them (201). Not repeated after a 5xx; see [`ApiError::maybe_committed`].
    pub fn create_version_stack(
        &self,
        account_id: &str,
        folder_id: &str,
        file_ids: &[&str],
    ) -> Result<VersionStack, ApiError> {
        let path = format!(
            "/v4/accounts/{}/folders/{}/version_stacks",
            seg(account_id),
            seg(folder_id)
        );
        let body = self.call(
            Method::Post,
            &path,
            Some(&json!({"data": {"file_ids": file_ids}})),
            Class::CreateStack,
        )?;
        data_of(Method::Post, &path, body)
    }

    /// One version stack, with its `head_version`.
    pub fn version_stack(
        &self,
        account_id: &str,
        stack_id: &str,
    ) -> Result<VersionStack, ApiError> {
        self.get_data(
            &format!(
                "/v4/accounts/{}/version_stacks/{}",
                seg(account_id),
                seg(stack_id)
            ),
            Class::ShowStack,
        )
    }

    /// The files of a version stack, all pages (in no documented order).
    pub fn version_stack_children(
        &self,
        account_id: &str,
        stack_id: &str,
    ) -> Result<Vec<File>, ApiError> {
        self.list_typed(
            &format!(
                "/v4/accounts/{}/version_stacks/{}/children",
                seg(account_id),
                seg(stack_id)
            ),
            Class::StackChildren,
        )
    }

    /// Moves a file into a folder or a version stack (`parent_id`). Not repeated after a 5xx:
    /// look where the file is before moving it again.
    pub fn move_file(
        &self,
        account_id: &str,
        file_id: &str,
        parent_id: &str,
    ) -> Result<File, ApiError> {
        let path = format!(
            "/v4/accounts/{}/files/{}/move",
            seg(account_id),
            seg(file_id)
        );
        let body = self.call(
            Method::Patch,
            &path,
            Some(&json!({"data": {"parent_id": parent_id}})),
            Class::Move,
        )?;
        data_of(Method::Patch, &path, body)
    }

    /// Puts a version of a stack at `place` (the experimental reorder; the same request twice
    /// gives the same order, so it is repeated after a 5xx).
    pub fn reorder_version(
        &self,
        account_id: &str,
        stack_id: &str,
        file_id: &str,
        place: &StackPlace,
    ) -> Result<(), ApiError> {
        let path = format!(
            "/v4/accounts/{}/version_stacks/{}/versions",
            seg(account_id),
            seg(stack_id)
        );
        let data = match place {
            StackPlace::Top => json!({"target_file_id": file_id, "move_to": "top"}),
            StackPlace::Below(other) => {
                json!({"target_file_id": file_id, "move_below_file_id": other})
            }
        };
        self.call_with(
            Method::Patch,
            &path,
            Some(&json!({ "data": data })),
            Class::Reorder,
            CallOptions {
                repeatable: true,
                experimental: true,
            },
        )
        .map(|_| ())
    }

    /// Deletes a file (204). A file already gone after a retried delete counts as deleted.
    pub fn delete_file(&self, account_id: &str, file_id: &str) -> Result<(), ApiError> {
        let path = format!("/v4/accounts/{}/files/{}", seg(account_id), seg(file_id));
        self.call(Method::Delete, &path, None, Class::Delete)
            .map(|_| ())
    }
}

/// Encodes an id for a path segment (ids are UUIDs or `adobe:…`; `:` is fine in a path).
fn seg(id: &str) -> String {
    super::url_encode(id).replace("%3A", ":")
}

fn with_page_size(path: &str) -> String {
    let query = path.split_once('?').map_or("", |(_, q)| q);
    if query.split('&').any(|p| p.starts_with("page_size=")) {
        return path.to_string();
    }
    let sep = if path.contains('?') { '&' } else { '?' };
    format!("{path}{sep}page_size={PAGE_SIZE}")
}

fn decode_item<T: DeserializeOwned>(
    method: &'static str,
    path: &str,
    v: Value,
) -> Result<T, ApiError> {
    serde_json::from_value(v).map_err(|e| ApiError::Decode {
        method,
        path: path.to_string(),
        message: e.to_string(),
    })
}

/// The `data` of an answer, typed.
fn data_of<T: DeserializeOwned>(
    method: Method,
    path: &str,
    mut body: Value,
) -> Result<T, ApiError> {
    match body.get_mut("data").map(Value::take) {
        Some(data) => decode_item(method.as_str(), path, data),
        None => Err(ApiError::Decode {
            method: method.as_str(),
            path: path.to_string(),
            message: "no \"data\" in the answer".into(),
        }),
    }
}

/// Frame.io's `errors[0].detail` (with the title when there is no detail), else the start of
/// the body.
pub fn error_detail(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let first = v.get("errors").and_then(|e| e.get(0));
    let field = |k: &str| {
        first
            .and_then(|f| f.get(k))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    if let Some(detail) = field("detail").or_else(|| field("title")) {
        return detail.to_string();
    }
    let text: String = body.trim().chars().take(200).collect();
    if text.is_empty() {
        "no details".into()
    } else {
        text
    }
}

/// How long to wait after the `attempt`-th 429 in a row: `Retry-After` (seconds or an HTTP
/// date), else one leak of the bucket (`x-ratelimit-window` ms / `x-ratelimit-limit`, the
/// whole window without a limit) doubling on repeats up to the window, else 1 s doubling.
/// Never more than `cap`, never less than 100 ms.
pub fn rate_limit_wait(
    retry_after: Option<&str>,
    limit: Option<&str>,
    window_ms: Option<&str>,
    attempt: u32,
    now: SystemTime,
    cap: Duration,
) -> Duration {
    let doubling = |base: Duration| base.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    let from_retry_after = retry_after.and_then(|v| {
        let v = v.trim();
        match v.parse::<u64>() {
            Ok(secs) => Some(Duration::from_secs(secs)),
            Err(_) => parse_http_date(v).map(|t| t.duration_since(now).unwrap_or(Duration::ZERO)),
        }
    });
    let from_window = || {
        let window = Duration::from_millis(window_ms?.trim().parse().ok()?);
        let per = match limit.and_then(|l| l.trim().parse::<u32>().ok()) {
            Some(n) if n > 0 => window / n,
            _ => window,
        };
        Some(doubling(per).min(window))
    };
    from_retry_after
        .or_else(from_window)
        .unwrap_or_else(|| doubling(Duration::from_secs(1)))
        .clamp(
            Duration::from_millis(100),
            cap.max(Duration::from_millis(100)),
        )
}

/// An HTTP-date (as in `Retry-After: Sun, 06 Nov 1994 08:49:37 GMT`).
pub fn parse_http_date(s: &str) -> Option<SystemTime> {
    crate::timefmt::parse_http_date(s.trim()).map(|secs| UNIX_EPOCH + Duration::from_secs(secs))
}

/// `GET /v4/me`.
#[derive(Clone, Debug, Deserialize)]
pub struct Me {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
}

impl Me {
    /// `Name <email>`, or whichever is known.
    pub fn display(&self) -> String {
        match (self.name.as_deref(), self.email.as_deref()) {
            (Some(n), Some(e)) => format!("{n} <{e}>"),
            (Some(n), None) => n.to_string(),
            (None, Some(e)) => e.to_string(),
            (None, None) => format!("user {}", self.id),
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
pub struct Account {
    pub id: String,
    #[serde(default)]
    pub display_name: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Workspace {
    pub id: String,
    #[serde(default)]
    pub name: String,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Project {
    pub id: String,
    #[serde(default)]
    pub name: String,
    pub root_folder_id: String,
    #[serde(default)]
    pub workspace_id: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
pub struct Folder {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub parent_id: Option<String>,
    /// ISO-8601; picks one of several folders with the same name.
    #[serde(default)]
    pub created_at: Option<String>,
}

/// A file. `media_type` is null until Frame.io has looked at the bytes (SDK 4.0 says so;
/// the docs show it filled in): fall back to the extension.
#[derive(Clone, Debug, Deserialize)]
pub struct File {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub parent_id: Option<String>,
    #[serde(default)]
    pub file_size: Option<u64>,
    #[serde(default)]
    pub media_type: Option<String>,
    /// `created`, `uploaded`, `transcoded`, or something newer.
    #[serde(default)]
    pub status: Option<String>,
    /// ISO-8601; tells our own upload from an older file of the same name.
    #[serde(default)]
    pub created_at: Option<String>,
    #[serde(default)]
    pub view_url: Option<String>,
}

/// A version stack, with its newest file when Frame.io includes it (always when shown or
/// created; a folder listing may leave it out).
#[derive(Clone, Debug, Deserialize)]
pub struct VersionStack {
    pub id: String,
    #[serde(default)]
    pub name: String,
    /// The folder holding the stack.
    #[serde(default)]
    pub parent_id: Option<String>,
    #[serde(default)]
    pub head_version: Option<File>,
}

/// Where [`Api::reorder_version`] puts a version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StackPlace {
    /// On top: the head, what reviewers see first.
    Top,
    /// Right below this file of the stack.
    Below(String),
}

/// An entry of a folder listing.
#[derive(Clone, Debug)]
pub enum Child {
    File(File),
    Folder(Folder),
    VersionStack(VersionStack),
    /// A `type` this client does not know yet.
    Other {
        kind: String,
        id: String,
        name: String,
    },
}

impl Child {
    fn from_value(v: Value) -> Result<Child, String> {
        let kind = v
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let de = |e: serde_json::Error| format!("{kind} entry: {e}");
        Ok(match kind.as_str() {
            "file" => Child::File(serde_json::from_value(v).map_err(de)?),
            "folder" => Child::Folder(serde_json::from_value(v).map_err(de)?),
            "version_stack" => Child::VersionStack(serde_json::from_value(v).map_err(de)?),
            _ => {
                let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                Child::Other {
                    id: s("id"),
                    name: s("name"),
                    kind,
                }
            }
        })
    }

    pub fn id(&self) -> &str {
        match self {
            Child::File(f) => &f.id,
            Child::Folder(f) => &f.id,
            Child::VersionStack(v) => &v.id,
            Child::Other { id, .. } => id,
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Child::File(f) => &f.name,
            Child::Folder(f) => &f.name,
            Child::VersionStack(v) => &v.name,
            Child::Other { name, .. } => name,
        }
    }
}

/// A presigned part URL. `Debug` hides the query (the signature).
#[derive(Clone, Deserialize)]
pub struct UploadUrl {
    pub size: u64,
    pub url: String,
}

impl fmt::Debug for UploadUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = self.url.split('?').next().unwrap_or("");
        write!(f, "UploadUrl {{ size: {}, url: {shown}?… }}", self.size)
    }
}

/// What `local_upload` returns.
#[derive(Clone, Debug)]
pub struct LocalUpload {
    pub file: File,
    pub upload_urls: Vec<UploadUrl>,
}

/// What `remote_upload` returns.
#[derive(Clone, Debug)]
pub struct RemoteUpload {
    pub file: File,
    /// `links.status`, a path for [`Api::status_at`].
    pub status_path: String,
}

/// `GET …/files/{id}/status`.
#[derive(Clone, Debug, Deserialize)]
pub struct UploadStatus {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub upload_complete: bool,
    #[serde(default)]
    pub upload_failed: bool,
    #[serde(default)]
    pub upload_completed_at: Option<String>,
    #[serde(default)]
    pub uploaded_at: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_and_http_dates() {
        let now = UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        let cap = Duration::from_secs(60);
        assert_eq!(
            rate_limit_wait(Some("3"), Some("100"), Some("60000"), 1, now, cap),
            Duration::from_secs(3)
        );
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"), Some(now));
        assert_eq!(
            rate_limit_wait(
                Some("Sun, 06 Nov 1994 08:49:42 GMT"),
                None,
                None,
                1,
                now,
                cap
            ),
            Duration::from_secs(5)
        );
        assert_eq!(
            rate_limit_wait(
                Some("Sun, 06 Nov 1994 08:49:30 GMT"),
                None,
                None,
                1,
                now,
                cap
            ),
            Duration::from_millis(100),
            "a date in the past: a short pause, not none"
        );
        assert_eq!(rate_limit_wait(Some("600"), None, None, 1, now, cap), cap);
        assert_eq!(
            parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"),
            Some(UNIX_EPOCH)
        );
        assert_eq!(parse_http_date("yesterday"), None);
    }

    #[test]
    fn window_hint_waits_one_leak_then_doubles_up_to_the_window() {
        let now = SystemTime::now();
        let cap = Duration::from_secs(60);
        let w = |limit, attempt| rate_limit_wait(None, limit, Some("1000"), attempt, now, cap);
        assert_eq!(w(Some("5"), 1), Duration::from_millis(200));
        assert_eq!(w(Some("5"), 2), Duration::from_millis(400));
        assert_eq!(w(Some("5"), 4), Duration::from_millis(1000));
        assert_eq!(w(None, 1), Duration::from_millis(1000));
        assert_eq!(
            rate_limit_wait(Some("soon"), Some("5"), Some("1000"), 1, now, cap),
            Duration::from_millis(200),
            "an unreadable Retry-After falls through to the window"
        );
    }

    #[test]
    fn no_hint_means_one_second_doubling_capped() {
        let now = SystemTime::now();
        let cap = Duration::from_secs(60);
        let n = |attempt| rate_limit_wait(None, None, None, attempt, now, cap);
        assert_eq!(n(1), Duration::from_secs(1));
        assert_eq!(n(2), Duration::from_secs(2));
        assert_eq!(n(3), Duration::from_secs(4));
        assert_eq!(n(10), cap);
    }

    #[test]
    fn error_details_come_from_the_errors_envelope() {
        assert_eq!(
            error_detail(
                r#"{"errors":[{"detail":"Unexpected field: foo","title":"Invalid value"}]}"#
            ),
            "Unexpected field: foo"
        );
        assert_eq!(
            error_detail(r#"{"errors":[{"title":"Not Found"}]}"#),
            "Not Found"
        );
        assert_eq!(
            error_detail("<html>Bad gateway</html>"),
            "<html>Bad gateway</html>"
        );
        assert_eq!(error_detail(""), "no details");
    }

    #[test]
    fn page_size_is_added_once() {
        assert_eq!(with_page_size("/v4/accounts"), "/v4/accounts?page_size=100");
        assert_eq!(
            with_page_size("/v4/a/children?after=g3%3D%3D"),
            "/v4/a/children?after=g3%3D%3D&page_size=100"
        );
        assert_eq!(with_page_size("/v4/a?page_size=10"), "/v4/a?page_size=10");
    }

    #[test]
    fn children_of_every_kind_and_unknown_fields_are_read() {
        let file = json!({"id":"f","name":"a.mov","type":"file","media_type":null,"file_size":5,
                          "status":"created","brand_new_field":{"x":1}});
        match Child::from_value(file).unwrap() {
            Child::File(f) => assert_eq!((f.media_type, f.file_size), (None, Some(5))),
            other => panic!("{other:?}"),
        }
        let folder = json!({"id":"d","name":"SQ01","type":"folder","parent_id":null});
        assert!(matches!(
            Child::from_value(folder).unwrap(),
            Child::Folder(_)
        ));
        let stack = json!({"id":"v","name":"x","type":"version_stack","head_version":{"id":"f2","name":"x","type":"file"}});
        assert!(matches!(
            Child::from_value(stack).unwrap(),
            Child::VersionStack(_)
        ));
        let other = json!({"id":"o","name":"n","type":"hologram"});
        assert_eq!(Child::from_value(other).unwrap().name(), "n");
    }

    #[test]
    fn the_pacer_allows_a_burst_then_one_per_interval() {
        let p = Pacer::new();
        // Frame.io's 3 at once, less the one kept in hand.
        for _ in 0..2 {
            assert_eq!(p.reserve("acc", Class::CreateFolder), Duration::ZERO);
        }
        let wait = p.reserve("acc", Class::CreateFolder);
        assert!(
            wait > Duration::from_millis(300) && wait <= Duration::from_millis(334),
            "{wait:?}"
        );
        assert_eq!(
            p.reserve("acc", Class::Read),
            Duration::ZERO,
            "classes are separate"
        );
        assert_eq!(
            p.reserve("other", Class::CreateFolder),
            Duration::ZERO,
            "so are accounts"
        );
        assert_eq!(account_of("/v4/accounts/a1/projects/p"), "a1");
        assert_eq!(account_of("/v4/accounts/a1?page=2"), "a1");
        assert_eq!(account_of("/v4/me"), "");
    }

    #[test]
    fn each_upload_endpoint_has_its_own_budget_as_on_frameio() {
        let p = Pacer::new();
        for _ in 0..4 {
            assert_eq!(p.reserve("acc", Class::RemoteUpload), Duration::ZERO);
        }
        assert!(p.reserve("acc", Class::RemoteUpload) > Duration::ZERO);
        // Creates used up their burst; a status poll and a local upload still go at once.
        for _ in 0..4 {
            assert_eq!(p.reserve("acc", Class::FileStatus), Duration::ZERO);
            assert_eq!(p.reserve("acc", Class::LocalUpload), Duration::ZERO);
        }
        // Show file is 10/s.
        for _ in 0..9 {
            assert_eq!(p.reserve("acc", Class::ShowFile), Duration::ZERO);
        }
        let wait = p.reserve("acc", Class::ShowFile);
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(100),
            "{wait:?}"
        );
    }

    #[test]
    fn upload_urls_never_show_their_signature() {
        let u = UploadUrl {
            size: 1,
            url: "https://s3.example/parts/f/part_1?X-Amz-Signature=secret".into(),
        };
        let shown = format!("{u:?}");
        assert!(!shown.contains("secret") && shown.contains("part_1"));
    }
}
