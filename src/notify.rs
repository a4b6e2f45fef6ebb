//! Notifications to `notify.webhook_url` (Discord, Slack or plain JSON): an upload done, an
//! upload failed for good, Frame.io needs a login, the tunnel down for more than five minutes.
//!
//! With several projects, a job's notice names its project and goes to that project's
//! `notify` when it has one, else to the top-level one; the others (login, tunnel, state dir)
//! go to the top-level webhook, or, without one, to every project's.
//!
//! Two threads: `notify` follows the hub and decides what is worth saying (`Notices`, pure and
//! unit-tested); `notify-send` posts, with retries (one such thread per webhook). Between them a small bounded queue: when the
//! webhook is slow or down, notices beyond it are dropped with a warning, never waited for, so
//! the pipeline cannot be slowed by a chat service.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{bounded, select, Receiver, RecvTimeoutError, Sender, TrySendError};
use serde_json::{json, Value};

use crate::config::{Config, NotifyConfig, NotifyFormat, DEFAULT_PROJECT};
use crate::events::{ComponentState, Event, Hub};
use crate::frameio::AuthState;
use crate::human;
use crate::ledger::{Job, JobState, StackState};
use crate::review::ReviewNews;
use crate::timefmt::rfc3339;

/// The tunnel must be down this long before anyone is told.
pub const TUNNEL_DOWN_AFTER: Duration = Duration::from_secs(5 * 60);
/// The state dir must stay writable this long before its recovery is told: near full, space
/// comes and goes (a file removed here, a record written there), and one outage is one pair of
/// notices, not one per flicker.
pub const STATE_DIR_UP_AFTER: Duration = Duration::from_secs(30);
/// Hub events waiting for the notifier.
const HUB_QUEUE: usize = 4096;
/// Notices waiting to be sent.
const QUEUE: usize = 64;
/// Tries per notice, with 1 s, 2 s, 4 s… between them.
const ATTEMPTS: u32 = 4;
const TIMEOUT: Duration = Duration::from_secs(10);

/// Something worth telling a person.
#[derive(Clone, Debug, PartialEq)]
pub enum Notice {
    UploadDone {
        job: Job,
        /// From the start of the last attempt to done, when known.
        took: Option<Duration>,
    },
    UploadFailed {
        job: Job,
    },
    NeedsLogin {
        detail: String,
    },
    TunnelDown {
        since: SystemTime,
        detail: String,
    },
    /// The state dir cannot be written (full, read-only, failing): uploads are paused, what
    /// is seen is kept in memory. Said once per outage.
    StateDirUnwritable {
        detail: String,
    },
    /// It can be written again: everything kept was recorded, uploads go on.
    StateDirWritable {
        detail: String,
    },
    /// Frame.io's review loop: a file ready for review, a comment, a comment done, a Status.
    Review {
        job: Job,
        news: ReviewNews,
    },
}

/// Decides which events become notices.
pub struct Notices {
    tunnel_down_after: Duration,
    /// When each job's current attempt started.
    started: HashMap<u64, Instant>,
    tunnel_down: Option<(Instant, SystemTime, String)>,
    tunnel_told: bool,
    auth_down: bool,
    /// An unwritable state dir was told, its recovery not yet.
    state_dir_told: bool,
    /// Writable again since then (and the detail), while `state_dir_told`.
    state_dir_up: Option<(Instant, String)>,
}

impl Notices {
    pub fn new(tunnel_down_after: Duration) -> Notices {
        Notices {
            tunnel_down_after,
            started: HashMap::new(),
            tunnel_down: None,
            tunnel_told: false,
            auth_down: false,
            state_dir_told: false,
            state_dir_up: None,
        }
    }

    pub fn on_event(&mut self, event: &Event, now: Instant) -> Option<Notice> {
        // Checked on events too: a busy hub may leave no quiet moment for `on_tick`.
        self.event_notice(event, now)
            .or_else(|| self.state_dir_recovered(now))
    }

    fn event_notice(&mut self, event: &Event, now: Instant) -> Option<Notice> {
        match event {
            Event::JobChanged(job) => match job.state {
                JobState::Uploading => {
                    self.started.insert(job.id, now);
                    None
                }
                // A version is told about once it is stacked (or could not be), so the
                // message can say "v004, stacked on v003".
                JobState::Done
                    if job
                        .stack
                        .as_ref()
                        .is_some_and(|s| s.state == StackState::Pending) =>
                {
                    None
                }
                // The review loop's news about a done job (ready, status, comments) is told
                // by its own notices, not as the upload again.
                JobState::Done if !job.review.is_empty() => None,
                JobState::Done => Some(Notice::UploadDone {
                    job: job.clone(),
                    took: self.started.remove(&job.id).map(|t| now - t),
                }),
                JobState::Failed => {
                    self.started.remove(&job.id);
                    Some(Notice::UploadFailed { job: job.clone() })
                }
                s if s.is_final() => {
                    self.started.remove(&job.id);
                    None
                }
                _ => None,
            },
            Event::Review { job, news } => Some(Notice::Review {
                job: job.clone(),
                news: news.clone(),
            }),
            Event::AuthChanged(state) => {
                let down = matches!(state, AuthState::NeedsLogin { .. });
                let notice = match state {
                    AuthState::NeedsLogin { reason } if !self.auth_down => {
                        Some(Notice::NeedsLogin {
                            detail: reason.clone(),
                        })
                    }
                    _ => None,
                };
                self.auth_down = down;
                notice
            }
            Event::Component {
                name: "state_dir",
                state,
                detail,
            } => {
                if *state == ComponentState::Down {
                    self.state_dir_up = None;
                    if !std::mem::replace(&mut self.state_dir_told, true) {
                        return Some(Notice::StateDirUnwritable {
                            detail: detail.clone(),
                        });
                    }
                } else if self.state_dir_told && self.state_dir_up.is_none() {
                    self.state_dir_up = Some((now, detail.clone()));
                }
                None
            }
            Event::Component {
                name: "tunnel",
                state,
                detail,
            } => {
                match state {
                    ComponentState::Up | ComponentState::Off => {
                        self.tunnel_down = None;
                        self.tunnel_told = false;
                    }
                    _ => match &mut self.tunnel_down {
                        Some((_, _, d)) => *d = detail.clone(),
                        None => {
                            self.tunnel_down = Some((now, SystemTime::now(), detail.clone()));
                        }
                    },
                }
                None
            }
            _ => None,
        }
    }

    /// The state dir's recovery, once it has lasted [`STATE_DIR_UP_AFTER`].
    fn state_dir_recovered(&mut self, now: Instant) -> Option<Notice> {
        let (since, _) = self.state_dir_up.as_ref()?;
        if now.duration_since(*since) < STATE_DIR_UP_AFTER {
            return None;
        }
        let (_, detail) = self.state_dir_up.take()?;
        self.state_dir_told = false;
        Some(Notice::StateDirWritable { detail })
    }

    /// Called now and then: the tunnel-down notice once it has been down long enough, and
    /// the state dir's recovery once it has lasted.
    pub fn on_tick(&mut self, now: Instant) -> Option<Notice> {
        if let Some(notice) = self.state_dir_recovered(now) {
            return Some(notice);
        }
        let (since, wall, detail) = self.tunnel_down.as_ref()?;
        if self.tunnel_told || now.duration_since(*since) < self.tunnel_down_after {
            return None;
        }
        self.tunnel_told = true;
        Some(Notice::TunnelDown {
            since: *wall,
            detail: detail.clone(),
        })
    }
}

impl Notice {
    /// The job a notice is about, if any.
    fn job(&self) -> Option<&Job> {
        match self {
            Notice::UploadDone { job, .. }
            | Notice::UploadFailed { job }
            | Notice::Review { job, .. } => Some(job),
            _ => None,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Notice::UploadDone { .. } => "upload_done",
            Notice::UploadFailed { .. } => "upload_failed",
            Notice::NeedsLogin { .. } => "needs_login",
            Notice::TunnelDown { .. } => "tunnel_down",
            Notice::StateDirUnwritable { .. } => "state_dir_unwritable",
            Notice::StateDirWritable { .. } => "state_dir_writable",
            Notice::Review { news, .. } => match news {
                ReviewNews::Ready => "review_ready",
                ReviewNews::Comment(_) => "review_comment",
                ReviewNews::Completed(_) => "review_comment_done",
                ReviewNews::Status(_) => "review_status",
            },
        }
    }

    /// One line for a person.
    pub fn text(&self) -> String {
        match self {
            Notice::UploadDone { job, took } => {
                let mut t = format!(
                    "Uploaded {}{} ({}) to {}",
                    project_prefix(job),
                    job.name(),
                    human::size(job.size),
                    folder_name(job)
                );
                if let Some(d) = took {
                    t.push_str(&format!(" in {}", human::duration(*d)));
                }
                match job.verified {
                    Some(v) => t.push_str(&format!(", verified: {}", v.describe())),
                    None => t.push_str(", not verified"),
                }
                if let Some(stacking) = &job.stack {
                    t.push_str(&format!(" ({})", crate::stack::summary(stacking)));
                }
                if let Some(url) = &job.view_url {
                    t.push_str(&format!(": {url}"));
                }
                t
            }
            Notice::UploadFailed { job } => format!(
                "Upload of {}{} failed for good after {} attempts: {}",
                project_prefix(job),
                job.name(),
                job.attempts,
                job.reason.as_deref().unwrap_or("unknown error")
            ),
            Notice::NeedsLogin { .. } => {
                "postflow needs a Frame.io login: uploads wait until someone clicks \
                 \"Connect Frame.io\" on the status page"
                    .to_string()
            }
            Notice::TunnelDown { detail, .. } => format!(
                "The Cloudflare tunnel has been down for more than 5 minutes ({detail}); \
                 uploads fall back to local upload or wait"
            ),
            Notice::StateDirUnwritable { detail } => format!(
                "postflow's state dir {detail}. Uploads are paused; files seen meanwhile are \
                 kept and uploaded once it can be written again (free space, or make it writable)"
            ),
            Notice::StateDirWritable { detail } => format!(
                "postflow's state dir {detail} can be written again: everything seen meanwhile \
                 is recorded, uploads go on"
            ),
            Notice::Review { job, news } => review_text(job, news),
        }
    }

    /// The machine-readable fields (the `json` format, and the Discord embed's fields).
    pub fn fields(&self) -> Value {
        let mut v = json!({ "event": self.kind(), "text": self.text() });
        if let Some(job) = self.job() {
            v["project"] = json!(job.project);
        }
        match self {
            Notice::UploadDone { job, took } => {
                v["name"] = json!(job.name());
                v["path"] = json!(job.path);
                v["folder"] = json!(folder_name(job));
                v["size"] = json!(job.size);
                v["link"] = json!(job.view_url);
                v["time"] = json!(rfc3339(ms_to_time(job.updated_ms)));
                v["seconds"] = json!(took.map(|d| d.as_secs_f64()));
                v["job"] = json!(job.id);
                v["verified"] = json!(job.verified.map(|v| v.as_str()));
                v["sha256"] = json!(job.sha256);
                if let Some(stacking) = &job.stack {
                    v["stack"] = json!(crate::stack::summary(stacking));
                    v["stack_id"] = json!(stacking.stack_id);
                }
            }
            Notice::UploadFailed { job } => {
                v["name"] = json!(job.name());
                v["path"] = json!(job.path);
                v["folder"] = json!(folder_name(job));
                v["size"] = json!(job.size);
                v["attempts"] = json!(job.attempts);
                v["error"] = json!(job.reason);
                v["time"] = json!(rfc3339(ms_to_time(job.updated_ms)));
                v["job"] = json!(job.id);
            }
            Notice::NeedsLogin { detail } => {
                v["detail"] = json!(detail);
                v["time"] = json!(rfc3339(SystemTime::now()));
            }
            Notice::TunnelDown { since, detail } => {
                v["detail"] = json!(detail);
                v["since"] = json!(rfc3339(*since));
            }
            Notice::StateDirUnwritable { detail } | Notice::StateDirWritable { detail } => {
                v["detail"] = json!(detail);
                v["time"] = json!(rfc3339(SystemTime::now()));
            }
            Notice::Review { job, news } => {
                v["name"] = json!(job.name());
                v["path"] = json!(job.path);
                v["folder"] = json!(folder_name(job));
                v["link"] = json!(job.view_url);
                v["job"] = json!(job.id);
                v["review_status"] = json!(job.review.status);
                v["time"] = json!(rfc3339(SystemTime::now()));
                match news {
                    ReviewNews::Comment(c) | ReviewNews::Completed(c) => {
                        v["author"] = json!(c.author);
                        v["comment"] = json!(c.text);
                        v["timecode"] = json!(c.timecode);
                        v["comment_id"] = json!(c.id);
                    }
                    ReviewNews::Status(s) => v["status"] = json!(s),
                    ReviewNews::Ready => {}
                }
            }
        }
        v
    }

    /// The webhook body in `format`.
    pub fn payload(&self, format: NotifyFormat) -> Value {
        match format {
            NotifyFormat::Json => self.fields(),
            NotifyFormat::Slack => json!({ "text": slack_escape(&self.text()) }),
            NotifyFormat::Discord => {
                let f = self.fields();
                let mut fields = Vec::new();
                for (key, label) in [
                    ("project", "Project"),
                    ("name", "File"),
                    ("folder", "Folder"),
                    ("size", "Size"),
                    ("seconds", "Time"),
                    ("link", "Frame.io"),
                    ("stack", "Versions"),
                    ("error", "Error"),
                ] {
                    let value = match (&f[key], key) {
                        (Value::Null, _) => continue,
                        (Value::String(p), "project") if p == DEFAULT_PROJECT => continue,
                        (Value::Number(n), "size") => human::size(n.as_u64().unwrap_or(0)),
                        (Value::Number(n), "seconds") => {
                            human::duration(Duration::from_secs_f64(n.as_f64().unwrap_or(0.0)))
                        }
                        (Value::String(s), _) => s.clone(),
                        (other, _) => other.to_string(),
                    };
                    let inline = !matches!(key, "link" | "error" | "stack");
                    fields.push(json!({ "name": label, "value": value, "inline": inline }));
                }
                json!({
                    "username": "postflow",
                    "content": self.text(),
                    // File names are user data: never let them ping @everyone.
                    "allowed_mentions": { "parse": [] },
                    "embeds": [{ "title": self.kind(), "fields": fields }],
                })
            }
        }
    }
}

/// One line about a review: "Ada on SQ01_UNDLM_00412_v002.mov at 00:00:03:12: too dark,
/// Needs changes" (the file's Status last, when it has one).
fn review_text(job: &Job, news: &ReviewNews) -> String {
    let name = format!("{}{}", project_prefix(job), job.name());
    let link = job
        .view_url
        .as_deref()
        .map(|u| format!(": {u}"))
        .unwrap_or_default();
    let said = |c: &crate::review::store::Comment| {
        let who = c.author.as_deref().unwrap_or("A guest reviewer");
        let at = c
            .timecode
            .as_deref()
            .map(|t| format!(" at {t}"))
            .unwrap_or_default();
        (who.to_string(), at)
    };
    let status = job
        .review
        .status
        .as_deref()
        .map(|s| format!(", {s}"))
        .unwrap_or_default();
    match news {
        ReviewNews::Ready => format!("{name} is ready for review in Frame.io{link}"),
        ReviewNews::Comment(c) => {
            let (who, at) = said(c);
            format!("{who} on {name}{at}: {}{status}", c.text)
        }
        ReviewNews::Completed(c) => {
            let (who, at) = said(c);
            format!("Done: {who}'s comment on {name}{at}: {}{status}", c.text)
        }
        ReviewNews::Status(s) => format!("{name} is now {s} in Frame.io{link}"),
    }
}

/// `<project>: ` for a job of a named project (a config with `projects`); nothing for the one
/// project of a config without.
fn project_prefix(job: &Job) -> String {
    if job.project == DEFAULT_PROJECT {
        String::new()
    } else {
        format!("{}: ", job.project)
    }
}

fn folder_name(job: &Job) -> String {
    if job.folder.is_empty() {
        "the project root".into()
    } else {
        job.folder.clone()
    }
}

fn ms_to_time(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
}

/// Slack treats `&`, `<` and `>` as markup.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Where each notice goes: the queues of the `notify-send` threads, one per webhook.
pub struct Router {
    /// The top-level `notify`.
    top: Option<Sender<Notice>>,
    /// Projects with a `notify` of their own.
    projects: HashMap<String, Sender<Notice>>,
    /// Every webhook: where notices not about a job go when there is no top-level one.
    all: Vec<Sender<Notice>>,
}

impl From<Sender<Notice>> for Router {
    /// Everything to one webhook.
    fn from(out: Sender<Notice>) -> Router {
        Router {
            top: Some(out.clone()),
            projects: HashMap::new(),
            all: vec![out],
        }
    }
}

impl Router {
    fn targets(&self, notice: &Notice) -> Vec<&Sender<Notice>> {
        if let Some(job) = notice.job() {
            if let Some(out) = self.projects.get(&job.project) {
                return vec![out];
            }
        }
        match (&self.top, notice.job()) {
            (Some(top), _) => vec![top],
            (None, Some(_)) => Vec::new(),
            (None, None) => self.all.iter().collect(),
        }
    }
}

/// A webhook to post to, and the queue its `notify-send` thread reads.
pub struct Webhook {
    pub url: String,
    pub format: NotifyFormat,
    pub notices: Receiver<Notice>,
}

/// The webhooks of `config` (top level and projects', one per URL) and the router to them;
/// `None` when there is none.
pub fn plan(config: &Config) -> Option<(Router, Vec<Webhook>)> {
    let mut webhooks: Vec<Webhook> = Vec::new();
    let mut senders: HashMap<String, Sender<Notice>> = HashMap::new();
    let mut sender_for = |n: &NotifyConfig| -> Option<Sender<Notice>> {
        let url = n.webhook_url.clone()?;
        if let Some(tx) = senders.get(&url) {
            return Some(tx.clone());
        }
        let (tx, rx) = bounded(QUEUE);
        senders.insert(url.clone(), tx.clone());
        webhooks.push(Webhook {
            url,
            format: n.format,
            notices: rx,
        });
        Some(tx)
    };
    let top = sender_for(&config.notify);
    let mut projects = HashMap::new();
    for p in &config.projects {
        if let Some(tx) = sender_for(&p.notify) {
            projects.insert(p.name.clone(), tx);
        }
    }
    let all = senders.into_values().collect();
    (!webhooks.is_empty()).then_some((Router { top, projects, all }, webhooks))
}

/// The `notify` thread: follows the hub, queues notices for `run_sender`.
pub fn run_notifier(mut notices: Notices, hub: Hub, out: impl Into<Router>, stop: Receiver<()>) {
    let out: Router = out.into();
    let tick = Duration::from_secs(5).min(notices.tunnel_down_after);
    let mut events = hub.subscribe(HUB_QUEUE);
    loop {
        let notice = select! {
            recv(events) -> ev => match ev {
                Ok(ev) => notices.on_event(&ev, Instant::now()),
                // The hub dropped us after a burst bigger than our inbox (a first scan of a
                // big folder): follow again; the missed events were not worth a message.
                Err(_) => {
                    log::warn!("notify: fell behind the event hub; following again");
                    events = hub.subscribe(HUB_QUEUE);
                    None
                }
            },
            recv(stop) -> _ => break,
            default(tick) => notices.on_tick(Instant::now()),
        };
        if let Some(n) = notice {
            for target in out.targets(&n) {
                if let Err(TrySendError::Full(n)) = target.try_send(n.clone()) {
                    log::warn!("notify: webhook is behind; dropped notice: {}", n.text());
                }
            }
        }
    }
}

/// The `notify-send` thread: posts each notice, retrying transport errors, 429 and 5xx.
pub fn run_sender(
    url: String,
    format: NotifyFormat,
    notices: Receiver<Notice>,
    stop: Receiver<()>,
) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(TIMEOUT))
        .http_status_as_error(false)
        .build()
        .into();
    loop {
        let notice = select! {
            recv(notices) -> n => match n { Ok(n) => n, Err(_) => break },
            recv(stop) -> _ => break,
        };
        let body = notice.payload(format).to_string();
        let mut delay = Duration::from_secs(1);
        for attempt in 1..=ATTEMPTS {
            let result = agent
                .post(&url)
                .header("Content-Type", "application/json")
                .send(body.as_str());
            let retry = match result {
                Ok(r) if r.status().is_success() => break,
                Ok(r) => {
                    let s = r.status().as_u16();
                    log::warn!("notify: webhook answered {s} to a {} notice", notice.kind());
                    s == 429 || s >= 500
                }
                Err(e) => {
                    log::warn!("notify: webhook unreachable: {e}");
                    true
                }
            };
            if !retry || attempt == ATTEMPTS {
                break;
            }
            match stop.recv_timeout(delay) {
                Err(RecvTimeoutError::Timeout) => delay *= 2,
                _ => return,
            }
        }
    }
}

/// Starts nothing without a `webhook_url`; otherwise the bounded queue between the two loops.
pub fn channel(config: &NotifyConfig) -> Option<(String, Sender<Notice>, Receiver<Notice>)> {
    let url = config.webhook_url.clone()?;
    let (tx, rx) = bounded(QUEUE);
    Some((url, tx, rx))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(state: JobState) -> Job {
        Job {
            id: 3,
            project: "default".into(),
            path: "SQ01/<i>@everyone.mov".into(),
            size: 2_500_000_000,
            mtime_ns: 0,
            state,
            folder: "SQ01/UNDLM_010".into(),
            attempts: 2,
            next_attempt_ms: None,
            reason: Some("Frame.io said: bad".into()),
            file_id: Some("f".into()),
            unknown_file: false,
            view_url: Some("https://next.frame.io/view/f".into()),
            all_in_ms: None,
            created_ms: 0,
            updated_ms: 1_714_566_896_000,
            stack: None,
            times: None,
            review: Default::default(),
            verified: None,
            sha256: None,
            next_ms: None,
        }
    }

    #[test]
    fn done_carries_the_upload_time() {
        let mut n = Notices::new(TUNNEL_DOWN_AFTER);
        let t0 = Instant::now();
        assert!(n
            .on_event(&Event::JobChanged(job(JobState::Uploading)), t0)
            .is_none());
        let notice = n
            .on_event(
                &Event::JobChanged(job(JobState::Done)),
                t0 + Duration::from_secs(42),
            )
            .unwrap();
        let f = notice.fields();
        assert_eq!(f["event"], "upload_done");
        assert_eq!(f["seconds"], 42.0);
        assert_eq!(f["time"], "2024-05-01T12:34:56.000Z");
        assert!(notice.text().contains("2.5 GB"), "{}", notice.text());
        assert_eq!(f["verified"], Value::Null);
        assert!(notice.text().contains("not verified"), "{}", notice.text());
        let mut verified = job(JobState::Done);
        verified.verified = Some(crate::ledger::Verified::PartsMd5);
        let notice = Notice::UploadDone {
            job: verified,
            took: None,
        };
        assert_eq!(notice.fields()["verified"], "parts-md5");
        assert!(
            notice.text().contains("verified: every part checked by S3"),
            "{}",
            notice.text()
        );
        assert_eq!(notice.fields()["sha256"], Value::Null);
        let mut downloaded = job(JobState::Done);
        downloaded.verified = Some(crate::ledger::Verified::DownloadSha256);
        downloaded.sha256 = Some("ab".repeat(32));
        let notice = Notice::UploadDone {
            job: downloaded,
            took: None,
        };
        assert_eq!(notice.fields()["verified"], "download-sha256");
        assert_eq!(notice.fields()["sha256"], "ab".repeat(32));
        assert!(
            notice
                .text()
                .contains("verified: downloaded back from Frame.io"),
            "{}",
            notice.text()
        );
    }

    #[test]
    fn a_version_is_told_about_once_stacked_and_says_on_what() {
        let mut n = Notices::new(TUNNEL_DOWN_AFTER);
        let t0 = Instant::now();
        n.on_event(&Event::JobChanged(job(JobState::Uploading)), t0);
        let mut done = job(JobState::Done);
        done.stack = Some(Box::new(crate::ledger::Stacking {
            state: StackState::Pending,
            version: "v004".into(),
            stack_id: None,
            on: None,
            under: None,
            detail: None,
        }));
        assert!(n.on_event(&Event::JobChanged(done.clone()), t0).is_none());
        let stacking = done.stack.as_mut().unwrap();
        stacking.state = StackState::Stacked;
        stacking.on = Some("v003".into());
        stacking.stack_id = Some("stack-1".into());
        let notice = n
            .on_event(&Event::JobChanged(done), t0 + Duration::from_secs(3))
            .unwrap();
        assert!(
            notice.text().contains("(v004, stacked on v003)"),
            "{}",
            notice.text()
        );
        assert_eq!(notice.fields()["stack_id"], "stack-1");
        assert_eq!(notice.fields()["seconds"], 3.0);
    }

    #[test]
    fn needs_login_is_said_once_per_logout() {
        let mut n = Notices::new(TUNNEL_DOWN_AFTER);
        let needs = Event::AuthChanged(AuthState::NeedsLogin {
            reason: "refresh token refused".into(),
        });
        let connected = Event::AuthChanged(AuthState::Connected);
        let t = Instant::now();
        assert!(n.on_event(&needs, t).is_some());
        assert!(n.on_event(&needs, t).is_none());
        assert!(n.on_event(&connected, t).is_none());
        assert!(n.on_event(&needs, t).is_some());
    }

    #[test]
    fn an_unwritable_state_dir_is_said_once_and_its_recovery_once_it_lasts() {
        let mut n = Notices::new(TUNNEL_DOWN_AFTER);
        let t = Instant::now();
        let state_dir = |state, detail: &str| Event::Component {
            name: "state_dir",
            state,
            detail: detail.into(),
        };
        let full = "cannot be written: /srv/state/jobs: No space left on device (os error 28)";
        let told = n.on_event(&state_dir(ComponentState::Down, full), t);
        let Some(notice @ Notice::StateDirUnwritable { .. }) = told else {
            panic!("the outage is told: {told:?}");
        };
        assert!(notice.text().contains("No space left on device"));
        assert!(notice.text().contains("Uploads are paused"));
        // Another reason during the same outage (it went read-only too): still one notice.
        let ro = "cannot be written: /srv/state/jobs: Read-only file system (os error 30)";
        assert_eq!(n.on_event(&state_dir(ComponentState::Down, ro), t), None);
        // Near full, space flickers: writable for a moment, then full again. Not told.
        let up = state_dir(ComponentState::Up, "/srv/state");
        assert_eq!(n.on_event(&up, t), None);
        assert_eq!(n.on_tick(t + Duration::from_secs(5)), None);
        let again = state_dir(ComponentState::Down, full);
        assert_eq!(n.on_event(&again, t + Duration::from_secs(6)), None);
        // Writable for good: told once, when it has lasted.
        let back = t + Duration::from_secs(10);
        assert_eq!(n.on_event(&up, back), None);
        assert_eq!(n.on_tick(back + STATE_DIR_UP_AFTER / 2), None);
        let told = n.on_tick(back + STATE_DIR_UP_AFTER);
        assert!(
            matches!(told, Some(Notice::StateDirWritable { .. })),
            "{told:?}"
        );
        assert_eq!(n.on_tick(back + STATE_DIR_UP_AFTER * 2), None);
        assert_eq!(n.on_event(&up, back + STATE_DIR_UP_AFTER * 2), None);
    }

    #[test]
    fn the_tunnel_must_stay_down_for_the_whole_delay() {
        let mut n = Notices::new(Duration::from_secs(300));
        let tunnel = |state| Event::Component {
            name: "tunnel",
            state,
            detail: "restarting".into(),
        };
        let t = Instant::now();
        n.on_event(&tunnel(ComponentState::Down), t);
        assert!(n.on_tick(t + Duration::from_secs(299)).is_none());
        n.on_event(&tunnel(ComponentState::Up), t + Duration::from_secs(299));
        assert!(n.on_tick(t + Duration::from_secs(400)).is_none());
        n.on_event(&tunnel(ComponentState::Down), t + Duration::from_secs(400));
        assert!(n.on_tick(t + Duration::from_secs(701)).is_some());
        assert!(n.on_tick(t + Duration::from_secs(800)).is_none(), "once");
    }

    #[test]
    fn payloads_escape_what_chat_services_would_interpret() {
        let notice = Notice::UploadDone {
            job: job(JobState::Done),
            took: None,
        };
        let slack = notice.payload(NotifyFormat::Slack);
        assert!(slack["text"]
            .as_str()
            .unwrap()
            .contains("&lt;i&gt;@everyone.mov"));
        let discord = notice.payload(NotifyFormat::Discord);
        assert_eq!(discord["allowed_mentions"]["parse"], json!([]));
        assert_eq!(
            discord["embeds"][0]["fields"][0]["value"],
            "<i>@everyone.mov"
        );
    }
}
