//! The review loop (`review.webhooks`, DESIGN.md "Review loop"): Frame.io tells postflow when
//! a file it uploaded is ready for review, what reviewers wrote on it and its Status.
//!
//! One thread, the follower, owns it all:
//! - the webhooks: one per workspace postflow uploads to, named [`HOOK_NAME`], at
//!   `<public URL>/hooks/frameio/<path token>`; made once, kept in `review.json` (with their
//!   secrets, owner-only), found again in Frame.io's list after a restart, their URL updated
//!   when a quick tunnel's hostname changes, never made twice (see [`Follower::ensure`]);
//! - the door on the file server ([`gate::Gate`]), opened with the webhooks' secrets;
//! - what comes in: `file.ready` marks the job ready; `comment.*` fetches the comment and
//!   keeps it ([`store`]); `metadata.value.updated` reads the file's Status. Only files in the
//!   ledger are followed. The job's `review` is recorded by the queue
//!   ([`QueueMsg::Review`]), news goes to the hub ([`Event::Review`]) for the notifier;
//! - the catch-up after downtime: comments on files uploaded in the last
//!   `review.catch_up_days`, paced under the comment limits; at the very first start they
//!   are recorded without notifications.

pub mod gate;
pub mod store;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{bounded, select, Receiver, Sender};
use serde_json::{json, Value};

use crate::config::{ProjectConfig, ReviewConfig};
use crate::events::{ComponentState, Event, Hub};
use crate::frameio::api::{Api, ApiError, Class, Method};
use crate::ledger::{Job, JobState, Review};
use crate::queue::QueueMsg;
use crate::upload::PublicUrl;
use gate::{Delivery, Gate};
use store::{Board, Comment, Hook, State};

/// The name of postflow's webhooks in Frame.io (with the path token, how it knows its own).
pub const HOOK_NAME: &str = "postflow";
/// Said on the page and in `/api/status` when there is no public URL.
pub const NEEDS_TUNNEL: &str = "review updates need a tunnel (tunnel.mode is \"off\")";
/// Deliveries waiting for the follower (beyond: 503, Frame.io retries).
const INBOX: usize = 256;
/// After a failure to set the webhooks up, the next try waits this long.
const RETRY_SETUP: Duration = Duration::from_secs(30);
const TICK: Duration = Duration::from_secs(1);

/// News about a job's file in Frame.io, for the notifier and the page.
#[derive(Clone, Debug, PartialEq)]
pub enum ReviewNews {
    /// Frame.io finished its proxies: reviewers can look.
    Ready,
    /// A new comment.
    Comment(Comment),
    /// A comment was marked done.
    Completed(Comment),
    /// The Status field changed.
    Status(String),
}

/// What the follower needs.
pub struct Follower {
    pub api: Api,
    pub gate: Arc<Gate>,
    pub public: PublicUrl,
    pub queue: Sender<QueueMsg>,
    pub hub: Hub,
    pub board: Board,
    pub state_dir: PathBuf,
    pub config: ReviewConfig,
    pub projects: Vec<ProjectConfig>,
    pub stop: Receiver<()>,
}

/// Publishes the `review` component for a pipeline without a follower.
pub fn announce_off(hub: &Hub, why: &str) {
    hub.publish(Event::Component {
        name: "review",
        state: ComponentState::Off,
        detail: why.to_string(),
    });
}

/// The follower's loop (the `review` thread).
pub fn run_follower(f: Follower) {
    let mut state = State::load(&f.state_dir);
    f.board.replace(state.comments.clone());
    if state.path_token.is_empty() {
        match crate::frameio::random_hex(16) {
            Ok(t) => state.path_token = t,
            Err(e) => {
                log::error!("review: no random token for the webhook's path: {e}");
                announce_off(&f.hub, "no random source for the webhook's path");
                let _ = f.stop.recv();
                return;
            }
        }
        f.save(&state);
    }
    let api = f.api.with_stop(f.stop.clone());
    let (tx, inbox) = bounded::<Delivery>(INBOX);
    f.component(
        ComponentState::Starting,
        "waiting for the tunnel's public URL",
    );
    let mut ensured: Option<String> = None;
    let mut next_try = Instant::now();
    let mut workspaces: HashMap<(String, String), String> = HashMap::new();
    let mut caught_up_now = false;
    let mut plain_http: Option<String> = None;
    loop {
        let url = (f.public)()
            .url()
            .map(str::to_string)
            .or_else(|| match (f.public)() {
                crate::tunnel::Public::Reconnecting { url, .. } => Some(url),
                _ => None,
            });
        if let Some(url) = url.filter(|u| ensured.as_deref() != Some(u.as_str())) {
            if !url.starts_with("https://") {
                // Frame.io delivers only to a public https URL (an external tunnel's
                // `http://` address is a test's or a LAN's): no webhook, no calls.
                if plain_http.as_deref() != Some(url.as_str()) {
                    f.component(
                        ComponentState::Off,
                        &format!("review updates need an https public URL ({url} is not)"),
                    );
                    plain_http = Some(url);
                }
            } else if Instant::now() >= next_try {
                match f.ensure(&api, &mut state, &url, &mut workspaces) {
                    Ok(()) => {
                        let secrets = state.hooks.iter().map(|h| h.secret.clone()).collect();
                        f.gate.open(&state.path_token, secrets, tx.clone());
                        f.component(
                            ComponentState::Up,
                            &format!("{} webhook(s) to {url}/hooks/frameio/…", state.hooks.len()),
                        );
                        ensured = Some(url);
                    }
                    Err(ApiError::Stopped) => break,
                    Err(e) => {
                        log::warn!(
                            "review: cannot set up Frame.io's webhook: {e}; trying again in {} s",
                            RETRY_SETUP.as_secs()
                        );
                        f.component(
                            ComponentState::Degraded,
                            &format!("webhook not set up: {e}"),
                        );
                        next_try = Instant::now() + RETRY_SETUP;
                    }
                }
            }
        }
        if ensured.is_some() && !caught_up_now {
            caught_up_now = true;
            match f.catch_up(&api, &mut state, &inbox) {
                Ok(()) => {}
                Err(ApiError::Stopped) => break,
                Err(e) => log::warn!("review: catch-up stopped: {e}"),
            }
        }
        select! {
            recv(inbox) -> d => match d {
                Ok(d) => match f.handle(&api, &mut state, &d) {
                    Err(ApiError::Stopped) => break,
                    Err(e) => log::warn!("review: {} for {}: {e}", d.kind, d.resource_id),
                    Ok(()) => {}
                },
                Err(_) => break,
            },
            recv(f.stop) -> _ => break,
            default(TICK) => {}
        }
    }
    f.gate.close();
}

impl Follower {
    fn component(&self, state: ComponentState, detail: &str) {
        self.hub.publish(Event::Component {
            name: "review",
            state,
            detail: detail.to_string(),
        });
    }

    fn save(&self, state: &State) {
        if let Err(e) = state.save(&self.state_dir) {
            log::warn!(
                "review: cannot write {}: {e}",
                self.state_dir.join(store::FILE).display()
            );
        }
    }

    /// Makes sure each workspace postflow uploads to has exactly one of our webhooks, at
    /// `url`, for `review.events`.
    fn ensure(
        &self,
        api: &Api,
        state: &mut State,
        url: &str,
        workspaces: &mut HashMap<(String, String), String>,
    ) -> Result<(), ApiError> {
        let hook_url = format!("{url}/hooks/frameio/{}", state.path_token);
        let suffix = format!("/hooks/frameio/{}", state.path_token);
        let mut wanted: Vec<(String, String)> = Vec::new();
        for p in &self.projects {
            let key = (p.account_id.clone(), p.project_id.clone());
            let ws = match workspaces.get(&key) {
                Some(w) => w.clone(),
                None => {
                    let project = api.project(&p.account_id, &p.project_id)?;
                    let Some(w) = project.workspace_id else {
                        return Err(ApiError::Decode {
                            method: "GET",
                            path: format!(
                                "/v4/accounts/{}/projects/{}",
                                p.account_id, p.project_id
                            ),
                            message: "the project names no workspace_id".into(),
                        });
                    };
                    workspaces.insert(key, w.clone());
                    w
                }
            };
            let pair = (p.account_id.clone(), ws);
            if !wanted.contains(&pair) {
                wanted.push(pair);
            }
        }
        for (account, ws) in wanted {
            let list = api.list_all(
                &format!("/v4/accounts/{account}/workspaces/{ws}/webhooks"),
                Class::ReviewRead,
            )?;
            let ours: Vec<&Value> = list
                .iter()
                .filter(|h| h["name"].as_str() == Some(HOOK_NAME))
                .filter(|h| h["url"].as_str().is_some_and(|u| u.ends_with(&suffix)))
                .collect();
            let stored = state
                .hooks
                .iter()
                .position(|h| h.account_id == account && h.workspace_id == ws);
            let live = stored.and_then(|i| {
                let id = &state.hooks[i].id;
                ours.iter().find(|h| h["id"].as_str() == Some(id.as_str()))
            });
            // Ours by name and path but not the one we hold the secret of: a create whose
            // answer was lost. Its deliveries could never be checked: it goes.
            for extra in &ours {
                let id = extra["id"].as_str().unwrap_or_default();
                if live.is_some_and(|l| l["id"].as_str() == Some(id)) || id.is_empty() {
                    continue;
                }
                log::info!(
                    "review: removing webhook {id}, a copy of ours whose secret we never got"
                );
                api.call(
                    Method::Delete,
                    &format!("/v4/accounts/{account}/webhooks/{id}"),
                    None,
                    Class::Delete,
                )?;
            }
            match (live, stored) {
                (Some(h), Some(i)) => {
                    let events: Vec<&str> = h["events"]
                        .as_array()
                        .map(|a| a.iter().filter_map(Value::as_str).collect())
                        .unwrap_or_default();
                    let same_events = events.len() == self.config.events.len()
                        && self
                            .config
                            .events
                            .iter()
                            .all(|e| events.contains(&e.as_str()));
                    let active = h["active"].as_bool().unwrap_or(true);
                    if h["url"].as_str() != Some(hook_url.as_str()) || !same_events || !active {
                        let id = state.hooks[i].id.clone();
                        log::info!("review: webhook {id} now points at {hook_url}");
                        api.call(
                            Method::Patch,
                            &format!("/v4/accounts/{account}/webhooks/{id}"),
                            Some(&json!({"data": {
                                "url": hook_url,
                                "events": self.config.events,
                                "active": true,
                            }})),
                            Class::WebhookChange,
                        )?;
                    }
                    state.hooks[i].url = hook_url.clone();
                    self.save(state);
                }
                (_, stored) => {
                    if let Some(i) = stored {
                        log::info!(
                            "review: webhook {} is gone from Frame.io; making it again",
                            state.hooks[i].id
                        );
                        state.hooks.remove(i);
                    }
                    let body = api.call(
                        Method::Post,
                        &format!("/v4/accounts/{account}/workspaces/{ws}/webhooks"),
                        Some(&json!({"data": {
                            "name": HOOK_NAME,
                            "url": hook_url,
                            "events": self.config.events,
                        }})),
                        Class::WebhookChange,
                    )?;
                    let data = &body["data"];
                    let (Some(id), Some(secret)) = (data["id"].as_str(), data["secret"].as_str())
                    else {
                        return Err(ApiError::Decode {
                            method: "POST",
                            path: format!("/v4/accounts/{account}/workspaces/{ws}/webhooks"),
                            message: "no id or secret in the new webhook".into(),
                        });
                    };
                    log::info!("review: made webhook {id} for workspace {ws} at {hook_url}");
                    state.hooks.push(Hook {
                        account_id: account.clone(),
                        workspace_id: ws.clone(),
                        id: id.to_string(),
                        secret: secret.to_string(),
                        url: hook_url.clone(),
                    });
                    self.save(state);
                }
            }
        }
        Ok(())
    }

    /// Every job of the ledger with a file in Frame.io, by Frame.io file id: `done`, and also
    /// `uploading` and `processing`: Frame.io may say `file.ready` (and a reviewer may
    /// comment) before postflow has seen the pull end or its status poll has seen the upload
    /// complete, and dropping those would lose them for good (seen in the demo: the file was
    /// ready and commented on while its job was not `done` yet, and neither showed). Frame.io
    /// sends neither for a file whose bytes are not all in.
    fn jobs_by_file(&self) -> HashMap<String, Job> {
        let (tx, rx) = bounded(1);
        if self.queue.send(QueueMsg::Jobs(tx)).is_err() {
            return HashMap::new();
        }
        rx.recv_timeout(Duration::from_secs(10))
            .unwrap_or_default()
            .into_iter()
            .filter(|j| {
                matches!(
                    j.state,
                    JobState::Uploading | JobState::Processing | JobState::Done
                )
            })
            .filter_map(|j| Some((j.file_id.clone()?, j)))
            .collect()
    }

    fn project_account(&self, job: &Job) -> Option<String> {
        self.projects
            .iter()
            .find(|p| p.name == job.project)
            .map(|p| p.account_id.clone())
    }

    fn record(&self, job: &Job, review: Review) {
        let _ = self.queue.send(QueueMsg::Review { id: job.id, review });
    }

    fn tell(&self, job: &Job, review: &Review, news: ReviewNews) {
        let mut job = job.clone();
        job.review = review.clone();
        self.hub.publish(Event::Review { job, news });
    }

    fn handle(&self, api: &Api, state: &mut State, d: &Delivery) -> Result<(), ApiError> {
        log::debug!(
            "review: {} for {} {}",
            d.kind,
            d.resource_type,
            d.resource_id
        );
        match d.kind.as_str() {
            "file.ready" => {
                let jobs = self.jobs_by_file();
                let Some(job) = jobs.get(&d.resource_id) else {
                    log::debug!("review: file {} is not one of ours", d.resource_id);
                    return Ok(());
                };
                if !job.review.ready {
                    let review = Review {
                        ready: true,
                        ..job.review.clone()
                    };
                    // DEBUG: an upload says at most six lines at INFO (DESIGN "Logs"); the
                    // page and the notification carry this one.
                    log::debug!("{}: ready for review in Frame.io", job.name());
                    self.record(job, review.clone());
                    self.tell(job, &review, ReviewNews::Ready);
                }
            }
            "metadata.value.updated" => {
                let jobs = self.jobs_by_file();
                let Some(job) = jobs.get(&d.resource_id) else {
                    return Ok(());
                };
                let account = self.project_account(job).unwrap_or(d.account_id.clone());
                let body = api.call(
                    Method::Get,
                    &format!("/v4/accounts/{account}/files/{}/metadata", d.resource_id),
                    None,
                    Class::ReviewRead,
                )?;
                let status = status_of(&body);
                if status != job.review.status {
                    let review = Review {
                        status: status.clone(),
                        ..job.review.clone()
                    };
                    self.record(job, review.clone());
                    if let Some(s) = status {
                        log::info!("{}: Status is now {s}", job.name());
                        self.tell(job, &review, ReviewNews::Status(s));
                    }
                }
            }
            kind if kind.starts_with("comment.") => {
                let body = api.call(
                    Method::Get,
                    &format!(
                        "/v4/accounts/{}/comments/{}?include=owner&timestamp_as_timecode=true",
                        d.account_id, d.resource_id
                    ),
                    None,
                    Class::ReviewRead,
                )?;
                let data = &body["data"];
                let Some(file_id) = data["file_id"].as_str() else {
                    return Ok(());
                };
                let jobs = self.jobs_by_file();
                let Some(job) = jobs.get(file_id) else {
                    log::debug!("review: a comment on file {file_id}, not one of ours");
                    return Ok(());
                };
                let Some(comment) = comment_of(data) else {
                    return Ok(());
                };
                let was_done = state
                    .comments
                    .get(&job.id)
                    .and_then(|l| l.iter().find(|c| c.id == comment.id))
                    .is_some_and(|c| c.completed);
                let news = match state.upsert(job.id, comment.clone()) {
                    Some(true) => Some(ReviewNews::Comment(comment.clone())),
                    Some(false) if comment.completed && !was_done => {
                        Some(ReviewNews::Completed(comment.clone()))
                    }
                    Some(false) => None,
                    None => return Ok(()),
                };
                self.comments_changed(state, job);
                if let Some(news) = news {
                    let review = Review {
                        comments: count(state, job.id),
                        ..job.review.clone()
                    };
                    self.tell(job, &review, news);
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// After comments of `job` changed: written down, shown, counted on the job.
    fn comments_changed(&self, state: &State, job: &Job) {
        self.save(state);
        self.board.set(
            job.id,
            state.comments.get(&job.id).cloned().unwrap_or_default(),
        );
        let n = count(state, job.id);
        if n != job.review.comments {
            self.record(
                job,
                Review {
                    comments: n,
                    ..job.review.clone()
                },
            );
        }
    }

    /// A file's readiness (Frame.io's `status` is `transcoded` once its proxies are done, what
    /// `file.ready` says) and its Status field, as they are now: recorded when they changed,
    /// and told unless this is the first start with review on (old news is not announced).
    fn catch_up_file(
        &self,
        api: &Api,
        account: &str,
        file_id: &str,
        job: &Job,
        first: bool,
    ) -> Result<(), ApiError> {
        let mut review = job.review.clone();
        let mut news = Vec::new();
        if !review.ready && api.file(account, file_id)?.status.as_deref() == Some("transcoded") {
            review.ready = true;
            news.push(ReviewNews::Ready);
        }
        let body = api.call(
            Method::Get,
            &format!("/v4/accounts/{account}/files/{file_id}/metadata"),
            None,
            Class::ReviewRead,
        )?;
        let status = status_of(&body);
        if status != review.status {
            review.status = status.clone();
            news.extend(status.map(ReviewNews::Status));
        }
        if review == job.review {
            return Ok(());
        }
        self.record(job, review.clone());
        if !first {
            for n in news {
                log::debug!("review: {} caught up: {:?}", job.name(), n);
                self.tell(job, &review, n);
            }
        }
        Ok(())
    }

    /// Comments on files uploaded in the last `review.catch_up_days`, once per start, paced
    /// (`Class::ReviewRead`); deliveries that arrive meanwhile are handled between files.
    fn catch_up(
        &self,
        api: &Api,
        state: &mut State,
        inbox: &Receiver<Delivery>,
    ) -> Result<(), ApiError> {
        let first = !state.caught_up;
        let since = SystemTime::now()
            .checked_sub(Duration::from_secs(self.config.catch_up_days * 86_400))
            .unwrap_or(UNIX_EPOCH);
        let since_ms = since
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis() as u64;
        let mut jobs: Vec<Job> = self
            .jobs_by_file()
            .into_values()
            .filter(|j| j.updated_ms >= since_ms || j.created_ms >= since_ms)
            .collect();
        jobs.sort_by_key(|j| std::cmp::Reverse(j.updated_ms));
        let mut new = 0usize;
        for job in &jobs {
            while let Ok(d) = inbox.try_recv() {
                if let Err(e) = self.handle(api, state, &d) {
                    if matches!(e, ApiError::Stopped) {
                        return Err(e);
                    }
                    log::warn!("review: {} for {}: {e}", d.kind, d.resource_id);
                }
            }
            let Some(account) = self.project_account(job) else {
                continue;
            };
            let file_id = job.file_id.clone().unwrap_or_default();
            let items = match list_comments(api, &account, &file_id) {
                Ok(items) => items,
                Err(ApiError::Stopped) => return Err(ApiError::Stopped),
                Err(e) => {
                    log::warn!("review: comments of {}: {e}", job.name());
                    continue;
                }
            };
            let mut flat = Vec::new();
            for item in &items {
                flat.push(item.clone());
                if let Some(replies) = item["replies"].as_array() {
                    flat.extend(replies.iter().cloned());
                }
            }
            let mut changed = false;
            for c in flat.iter().filter_map(comment_of) {
                match state.upsert(job.id, c.clone()) {
                    Some(true) => {
                        changed = true;
                        if !first {
                            new += 1;
                            let review = Review {
                                comments: count(state, job.id),
                                ..job.review.clone()
                            };
                            self.tell(job, &review, ReviewNews::Comment(c));
                        }
                    }
                    Some(false) => changed = true,
                    None => {}
                }
            }
            if changed {
                self.comments_changed(state, job);
            }
            // Then what a `file.ready` or a Status change delivered while down would have said
            // (on the job as just recorded: its comment count may have moved).
            let mut job = job.clone();
            job.review.comments = count(state, job.id);
            match self.catch_up_file(api, &account, &file_id, &job, first) {
                Ok(()) => {}
                Err(ApiError::Stopped) => return Err(ApiError::Stopped),
                Err(e) => log::warn!("review: readiness and Status of {}: {e}", job.name()),
            }
        }
        if first {
            log::info!(
                "review: first start: comments already on {} file(s) recorded, not announced",
                jobs.len()
            );
        } else {
            log::info!(
                "review: caught up on {} file(s) from the last {} day(s): {new} new comment(s)",
                jobs.len(),
                self.config.catch_up_days
            );
        }
        state.caught_up = true;
        self.save(state);
        Ok(())
    }
}

/// The WebSocket's `review` message: `{"job": id, "kind": "ready"|"comment"|"completed"|
/// "status", "comment": {…}|absent, "status": text|absent}`.
pub fn news_json(job: u64, news: &ReviewNews) -> Value {
    match news {
        ReviewNews::Ready => json!({"job": job, "kind": "ready"}),
        ReviewNews::Comment(c) => json!({"job": job, "kind": "comment", "comment": c.json()}),
        ReviewNews::Completed(c) => {
            json!({"job": job, "kind": "completed", "comment": c.json()})
        }
        ReviewNews::Status(s) => json!({"job": job, "kind": "status", "status": s}),
    }
}

/// Every comment of a file with its owner, replies and timecode. Frame.io's `links.next`
/// carries only the cursor, so the parameters are added again to each page.
fn list_comments(api: &Api, account: &str, file_id: &str) -> Result<Vec<Value>, ApiError> {
    const QUERY: &str = "include=owner,replies&timestamp_as_timecode=true&page_size=100";
    let mut path = format!("/v4/accounts/{account}/files/{file_id}/comments?{QUERY}");
    let mut items = Vec::new();
    for _ in 0..1000 {
        let body = api.call(Method::Get, &path, None, Class::ReviewRead)?;
        if let Some(data) = body["data"].as_array() {
            items.extend(data.iter().cloned());
        }
        let Some(next) = body["links"]["next"].as_str().filter(|n| !n.is_empty()) else {
            return Ok(items);
        };
        // Only the path is used, on our own base: a link elsewhere never gets our token.
        let Some(at) = next.find("/v4/") else {
            return Ok(items);
        };
        let next = &next[at..];
        let sep = if next.contains('?') { '&' } else { '?' };
        let next = format!("{next}{sep}{QUERY}");
        if next == path {
            return Ok(items);
        }
        path = next;
    }
    Ok(items)
}

fn count(state: &State, job: u64) -> u32 {
    state.comments.get(&job).map_or(0, |l| l.len() as u32)
}

/// A comment as Frame.io gives it (`include=owner`, `timestamp_as_timecode=true`).
fn comment_of(v: &Value) -> Option<Comment> {
    let owner = &v["owner"];
    let author = owner["name"]
        .as_str()
        .filter(|s| !s.is_empty())
        .or_else(|| owner["email"].as_str())
        .map(str::to_string);
    Some(Comment {
        id: v["id"].as_str()?.to_string(),
        author,
        text: v["text"].as_str().unwrap_or_default().to_string(),
        // A number is frames at a rate the comment does not say: no timecode then.
        timecode: v["timestamp"].as_str().map(str::to_string),
        created_at: v["created_at"].as_str().unwrap_or_default().to_string(),
        completed: !v["completed_at"].is_null(),
    })
}

/// The value of the select field named Status in a file's metadata, as its option's name.
fn status_of(body: &Value) -> Option<String> {
    let fields = body["data"]["metadata"].as_array()?;
    let field = fields
        .iter()
        .find(|f| f["field_definition_name"].as_str() == Some("Status"))?;
    let options = field["field_options"].as_array();
    let name_of = |v: &Value| -> Option<String> {
        if let Some(n) = v["display_name"].as_str() {
            return Some(n.to_string());
        }
        let s = v.as_str()?;
        let by_id = options.and_then(|o| {
            o.iter()
                .find(|opt| opt["id"].as_str() == Some(s))
                .and_then(|opt| opt["display_name"].as_str())
        });
        Some(by_id.unwrap_or(s).to_string())
    };
    match &field["value"] {
        Value::Array(items) => items.first().and_then(name_of),
        Value::Null => None,
        other => name_of(other),
    }
}

/// What `postflow check` says of the webhooks: one line each, from `review.json` and
/// Frame.io.
pub fn check_lines(api: &Api, state_dir: &std::path::Path) -> Vec<(bool, String)> {
    let state = State::load(state_dir);
    if state.hooks.is_empty() {
        return vec![(
            true,
            "review webhook: none yet (made when postflow runs with a public URL)".into(),
        )];
    }
    state
        .hooks
        .iter()
        .map(|h| {
            match api.call(
                Method::Get,
                &format!("/v4/accounts/{}/webhooks/{}", h.account_id, h.id),
                None,
                Class::ReviewRead,
            ) {
                Ok(v) => {
                    let d = &v["data"];
                    let events: Vec<&str> = d["events"]
                        .as_array()
                        .map(|a| a.iter().filter_map(Value::as_str).collect())
                        .unwrap_or_default();
                    (
                        true,
                        format!(
                            "review webhook {} (workspace {}): {} for {}{}",
                            h.id,
                            h.workspace_id,
                            d["url"].as_str().unwrap_or(&h.url),
                            events.join(", "),
                            if d["active"].as_bool() == Some(false) {
                                " (inactive)"
                            } else {
                                ""
                            }
                        ),
                    )
                }
                Err(e) => (
                    false,
                    format!(
                        "review webhook {} (workspace {}): {e}",
                        h.id, h.workspace_id
                    ),
                ),
            }
        })
        .collect()
}

/// The comments of every job, for the dashboard's first read (before the follower runs).
pub fn load_board(state_dir: &std::path::Path) -> Board {
    let board = Board::new(state_dir);
    board.load();
    board
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_comment_with_owner_and_timecode() {
        let v = json!({"id": "c1", "file_id": "f", "text": "too dark", "timestamp": "00:00:03:12",
            "created_at": "2026-12-06T10:00:00Z", "completed_at": null,
            "owner": {"id": "u", "name": "Ada", "email": "ada@example.com"}});
        let c = comment_of(&v).unwrap();
        assert_eq!(c.author.as_deref(), Some("Ada"));
        assert_eq!(c.timecode.as_deref(), Some("00:00:03:12"));
        assert!(!c.completed);
        let guest = json!({"id": "c2", "text": "hi", "timestamp": 75, "owner": null,
            "created_at": "x", "completed_at": "y"});
        let c = comment_of(&guest).unwrap();
        assert_eq!((c.author, c.timecode, c.completed), (None, None, true));
    }

    #[test]
    fn the_status_field_by_option_name_or_id() {
        let by_obj = json!({"data": {"metadata": [
            {"field_definition_name": "Rating", "value": 3},
            {"field_definition_name": "Status", "value": [{"id": "o2", "display_name": "Approved"}]}
        ]}});
        assert_eq!(status_of(&by_obj).as_deref(), Some("Approved"));
        let by_id = json!({"data": {"metadata": [
            {"field_definition_name": "Status", "value": ["o3"],
             "field_options": [{"id": "o3", "display_name": "Needs changes"}]}
        ]}});
        assert_eq!(status_of(&by_id).as_deref(), Some("Needs changes"));
        let none =
            json!({"data": {"metadata": [{"field_definition_name": "Status", "value": []}]}});
        assert_eq!(status_of(&none), None);
    }
}
