//! The review side of Frame.io (`frameio_v4_features.md` (b), (c), (d)): webhooks and their
//! signed deliveries, comments on files, and the account's `Status` select field.

use super::api::{
    check_account, data_object, error, file, invalid_field, not_found, page, ApiResult,
};
use super::fetch::{resolve, Target};
use super::state::{NodeKind, State};
use super::{Meta, Reply, Shared};
use crate::util::{hex, hmac_sha256, iso8601, query_get, Prng};
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Every event a webhook may subscribe to (the create page's "Valid events").
pub(crate) const EVENTS: &[&str] = &[
    "file.created",
    "file.upload.completed",
    "file.ready",
    "file.updated",
    "file.deleted",
    "file.versioned",
    "file.copied",
    "folder.created",
    "folder.updated",
    "folder.deleted",
    "folder.copied",
    "comment.created",
    "comment.updated",
    "comment.deleted",
    "comment.completed",
    "comment.uncompleted",
    "metadata.value.updated",
    "customfield.created",
    "customfield.updated",
    "customfield.deleted",
    "project.created",
    "project.updated",
    "project.deleted",
    "collection.created",
    "collection.updated",
    "collection.deleted",
    "share.created",
    "share.updated",
    "share.deleted",
    "share.viewed",
];

/// Delivery attempts per event and copy: the first and four retries.
const ATTEMPTS: u32 = 5;
/// A receiver that has not answered within this long counts as failed.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);
/// Frames per second of comment timecodes.
const FPS: u64 = 24;
/// The `Status` select field's options, in the order Frame.io's UI lists them.
pub const STATUS_OPTIONS: [&str; 4] = ["Needs Review", "In Progress", "Needs changes", "Approved"];

pub(crate) struct Webhook {
    pub id: String,
    pub name: String,
    pub url: String,
    pub events: Vec<String>,
    pub active: bool,
    pub workspace_id: String,
    pub account_id: String,
    pub secret: String,
    pub seq: u64,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
}

pub(crate) struct Comment {
    pub id: String,
    pub file_id: String,
    /// The top-level comment this one answers.
    pub parent_id: Option<String>,
    /// A reviewer's user id; `None` for a guest.
    pub owner: Option<String>,
    pub text: String,
    /// Frames from the start of the clip.
    pub timestamp: Option<u64>,
    pub completed_at: Option<SystemTime>,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
    pub seq: u64,
}

pub(crate) struct Reviewer {
    pub id: String,
    pub name: String,
    pub email: String,
}

/// One account's `Status` select field definition.
pub(crate) struct StatusField {
    pub account_id: String,
    pub id: String,
    /// (option id, display name), in `STATUS_OPTIONS` order.
    pub options: Vec<(String, &'static str)>,
    pub created_at: SystemTime,
}

/// The review world, part of [`State`].
pub(crate) struct Review {
    pub webhooks: Vec<Webhook>,
    pub comments: Vec<Comment>,
    pub reviewers: Vec<Reviewer>,
    pub fields: Vec<StatusField>,
    /// File id → the option id of its Status.
    pub status: HashMap<String, String>,
    pub deliveries: Vec<DeliveryRecord>,
}

impl Review {
    pub(crate) fn new(rng: &mut Prng, account_ids: &[String]) -> Review {
        let now = SystemTime::now();
        let fields = account_ids
            .iter()
            .map(|a| StatusField {
                account_id: a.clone(),
                id: rng.uuid(),
                options: STATUS_OPTIONS.iter().map(|o| (rng.uuid(), *o)).collect(),
                created_at: now,
            })
            .collect();
        Review {
            webhooks: Vec::new(),
            comments: Vec::new(),
            reviewers: Vec::new(),
            fields,
            status: HashMap::new(),
            deliveries: Vec::new(),
        }
    }
}

/// A webhook as tests see it (`secret` included, unlike every API answer but the create's).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WebhookView {
    pub id: String,
    pub name: String,
    pub url: String,
    pub events: Vec<String>,
    pub active: bool,
    pub workspace_id: String,
    pub account_id: String,
    pub secret: String,
}

/// One delivery attempt of one webhook event.
#[derive(Clone, Debug, Serialize)]
pub struct DeliveryRecord {
    pub webhook_id: String,
    /// `file.ready`, `comment.created`, …
    pub event: String,
    pub resource_id: String,
    /// 1 for the first try, up to 5.
    pub attempt: u32,
    /// The receiver's answer; `None` when it did not answer within 5 s (or could not be
    /// reached).
    pub status: Option<u16>,
    /// When the attempt was sent.
    pub at: SystemTime,
    /// 0 for the event's delivery, 1.. for the repeats `webhook_duplicates` asks for.
    pub copy: u32,
    /// Where it was sent (the webhook's URL at that moment).
    pub url: String,
    /// `X-Frameio-Request-Timestamp` of the attempt.
    pub timestamp: u64,
    /// Why there was no answer.
    pub error: Option<String>,
    /// The body sent (the same for every attempt and copy of an event).
    pub body: String,
}

fn webhook_view(w: &Webhook) -> WebhookView {
    WebhookView {
        id: w.id.clone(),
        name: w.name.clone(),
        url: w.url.clone(),
        events: w.events.clone(),
        active: w.active,
        workspace_id: w.workspace_id.clone(),
        account_id: w.account_id.clone(),
        secret: w.secret.clone(),
    }
}

pub(crate) fn webhooks(st: &State) -> Vec<WebhookView> {
    st.review.webhooks.iter().map(webhook_view).collect()
}

/// Every comment and reply, oldest first, for `GET /_sim/comments` (with `parent_id`, the
/// author's name and the file's Status, which the API would not give in one call).
pub(crate) fn comments_json(st: &State) -> Value {
    let mut all: Vec<&Comment> = st.review.comments.iter().collect();
    all.sort_by_key(|c| c.seq);
    all.into_iter()
        .map(|c| {
            let author = c
                .owner
                .as_ref()
                .and_then(|id| st.review.reviewers.iter().find(|r| r.id == *id))
                .map(|r| r.name.clone());
            json!({
                "id": c.id, "file_id": c.file_id, "parent_id": c.parent_id, "author": author,
                "text": c.text, "timestamp": c.timestamp,
                "timecode": c.timestamp.map(timecode),
                "completed_at": c.completed_at.map(iso8601),
                "created_at": iso8601(c.created_at),
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Webhooks over HTTP

fn webhook_json(w: &Webhook) -> Value {
    json!({
        "id": w.id, "name": w.name, "url": w.url, "events": w.events, "active": w.active,
        "workspace_id": w.workspace_id,
        "created_at": iso8601(w.created_at), "updated_at": iso8601(w.updated_at),
    })
}

fn valid_url(data: &Map<String, Value>) -> Result<Option<String>, Reply> {
    match data.get("url") {
        None => Ok(None),
        Some(Value::String(u)) => {
            let host = u
                .strip_prefix("https://")
                .map(|rest| rest.split(['/', '?', '#']).next().unwrap_or(""));
            match host {
                Some(h) if !h.is_empty() && !h.contains(char::is_whitespace) => Ok(Some(u.clone())),
                _ => Err(invalid_field("url must be a public HTTPS URL", "/data/url")),
            }
        }
        Some(_) => Err(invalid_field("url must be a string", "/data/url")),
    }
}

fn valid_events(data: &Map<String, Value>) -> Result<Option<Vec<String>>, Reply> {
    let Some(v) = data.get("events") else {
        return Ok(None);
    };
    let list = v
        .as_array()
        .filter(|a| !a.is_empty())
        .ok_or_else(|| invalid_field("events must be a non-empty list", "/data/events"))?;
    let mut out: Vec<String> = Vec::new();
    for e in list {
        let name = e.as_str().unwrap_or_default();
        if !EVENTS.contains(&name) {
            return Err(invalid_field(
                &format!("Invalid event: {e}"),
                "/data/events",
            ));
        }
        if !out.iter().any(|o| o == name) {
            out.push(name.to_string());
        }
    }
    Ok(Some(out))
}

fn valid_name(data: &Map<String, Value>) -> Result<Option<String>, Reply> {
    match data.get("name") {
        None => Ok(None),
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.clone())),
        Some(_) => Err(invalid_field(
            "name must be a non-empty string",
            "/data/name",
        )),
    }
}

/// `POST /v4/accounts/{a}/workspaces/{w}/webhooks` `{"data":{"name","url","events"}}`: 201
/// with the webhook and its `secret` (shown only here).
pub(crate) fn create_webhook(
    shared: &Shared,
    meta: &Meta,
    body: &[u8],
    account_id: &str,
    workspace_id: &str,
) -> ApiResult {
    let data = data_object(meta, body, &["name", "url", "events"])?;
    let name = valid_name(&data)?.ok_or_else(|| invalid_field("name is required", "/data/name"))?;
    let url = valid_url(&data)?.ok_or_else(|| invalid_field("url is required", "/data/url"))?;
    let events =
        valid_events(&data)?.ok_or_else(|| invalid_field("events is required", "/data/events"))?;
    let mut st = shared.lock();
    workspace(&st, account_id, workspace_id)?;
    let now = SystemTime::now();
    let w = Webhook {
        id: st.rng.uuid(),
        name,
        url,
        events,
        active: true,
        workspace_id: workspace_id.to_string(),
        account_id: account_id.to_string(),
        secret: st.rng.hex(24),
        seq: st.next_seq(),
        created_at: now,
        updated_at: now,
    };
    let mut v = webhook_json(&w);
    v["secret"] = json!(w.secret);
    st.review.webhooks.push(w);
    Ok(Reply::json(201, &json!({"data": v})))
}

/// [`crate::FrameIo::add_webhook`].
pub(crate) fn add_webhook(
    st: &mut State,
    workspace_id: &str,
    name: &str,
    url: &str,
    events: &[&str],
) -> Result<WebhookView, String> {
    let account_id = st
        .workspaces
        .iter()
        .find(|w| w.id == workspace_id)
        .map(|w| w.account_id.clone())
        .ok_or_else(|| format!("no workspace {workspace_id}"))?;
    let now = SystemTime::now();
    let w = Webhook {
        id: st.rng.uuid(),
        name: name.to_string(),
        url: url.to_string(),
        events: events.iter().map(|e| e.to_string()).collect(),
        active: true,
        workspace_id: workspace_id.to_string(),
        account_id,
        secret: st.rng.hex(24),
        seq: st.next_seq(),
        created_at: now,
        updated_at: now,
    };
    let view = webhook_view(&w);
    st.review.webhooks.push(w);
    Ok(view)
}

fn workspace(st: &State, account_id: &str, workspace_id: &str) -> Result<(), Reply> {
    check_account(st, account_id)?;
    if st
        .workspaces
        .iter()
        .any(|w| w.id == workspace_id && w.account_id == account_id)
    {
        Ok(())
    } else {
        Err(not_found("Workspace"))
    }
}

/// `GET /v4/accounts/{a}/workspaces/{w}/webhooks`, paged, oldest first.
pub(crate) fn list_webhooks(
    shared: &Shared,
    meta: &Meta,
    account_id: &str,
    workspace_id: &str,
) -> ApiResult {
    let st = shared.lock();
    workspace(&st, account_id, workspace_id)?;
    let items = st
        .review
        .webhooks
        .iter()
        .filter(|w| w.workspace_id == workspace_id)
        .map(|w| (w.seq, webhook_json(w)))
        .collect();
    page(meta, items)
}

fn webhook_index(st: &State, account_id: &str, id: &str) -> Result<usize, Reply> {
    check_account(st, account_id)?;
    st.review
        .webhooks
        .iter()
        .position(|w| w.id == id && w.account_id == account_id)
        .ok_or_else(|| not_found("Webhook"))
}

pub(crate) fn show_webhook(shared: &Shared, account_id: &str, id: &str) -> ApiResult {
    let st = shared.lock();
    let i = webhook_index(&st, account_id, id)?;
    Ok(Reply::json(
        200,
        &json!({"data": webhook_json(&st.review.webhooks[i])}),
    ))
}

/// `PATCH /v4/accounts/{a}/webhooks/{id}` `{"data":{"active"?,"events"?,"name"?,"url"?}}`.
pub(crate) fn update_webhook(
    shared: &Shared,
    meta: &Meta,
    body: &[u8],
    account_id: &str,
    id: &str,
) -> ApiResult {
    let data = data_object(meta, body, &["active", "events", "name", "url"])?;
    let name = valid_name(&data)?;
    let url = valid_url(&data)?;
    let events = valid_events(&data)?;
    let active = match data.get("active") {
        None => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => {
            return Err(invalid_field(
                "active must be true or false",
                "/data/active",
            ))
        }
    };
    let mut st = shared.lock();
    let i = webhook_index(&st, account_id, id)?;
    let w = &mut st.review.webhooks[i];
    if let Some(v) = name {
        w.name = v;
    }
    if let Some(v) = url {
        w.url = v;
    }
    if let Some(v) = events {
        w.events = v;
    }
    if let Some(v) = active {
        w.active = v;
    }
    w.updated_at = SystemTime::now();
    Ok(Reply::json(200, &json!({"data": webhook_json(w)})))
}

pub(crate) fn delete_webhook(shared: &Shared, account_id: &str, id: &str) -> ApiResult {
    let mut st = shared.lock();
    let i = webhook_index(&st, account_id, id)?;
    st.review.webhooks.remove(i);
    Ok(Reply::empty(204))
}

// ---------------------------------------------------------------------------------------------
// Comments over HTTP

/// The comment object of (c), with `owner` only when asked for and `replies` nested under
/// their parent.
#[derive(Clone, Copy)]
struct CommentOpts {
    owner: bool,
    replies: bool,
    timecode: bool,
}

fn comment_opts(meta: &Meta) -> Result<CommentOpts, Reply> {
    // One comma-separated value; with repeated keys only the last one counts.
    let include = meta
        .query
        .iter()
        .rev()
        .find(|(k, _)| k == "include")
        .map_or("", |(_, v)| v.as_str());
    let mut opts = CommentOpts {
        owner: false,
        replies: false,
        timecode: false,
    };
    for part in include.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part {
            "owner" => opts.owner = true,
            "replies" => opts.replies = true,
            other => {
                return Err(error(
                    422,
                    "Invalid value",
                    &format!("include: unknown value {other:?} (owner, replies)"),
                ))
            }
        }
    }
    opts.timecode = match query_get(&meta.query, "timestamp_as_timecode") {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => {
            return Err(error(
                422,
                "Invalid value",
                "timestamp_as_timecode must be true or false",
            ))
        }
    };
    Ok(opts)
}

/// `HH:MM:SS:FF` at 24 fps.
pub(crate) fn timecode(frames: u64) -> String {
    let secs = frames / FPS;
    format!(
        "{:02}:{:02}:{:02}:{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        frames % FPS
    )
}

fn comment_json(st: &State, c: &Comment, opts: &CommentOpts) -> Value {
    let timestamp = match c.timestamp {
        None => Value::Null,
        Some(f) if opts.timecode => json!(timecode(f)),
        Some(f) => json!(f),
    };
    let mut v = json!({
        "id": c.id, "file_id": c.file_id, "text": c.text, "timestamp": timestamp,
        "duration": null, "page": null, "anchor": null, "annotation": null,
        "links": [], "mentions": [],
        "completed_at": c.completed_at.map(iso8601),
        "completer_id": c.completed_at.map(|_| st.user.id.clone()),
        "created_at": iso8601(c.created_at), "updated_at": iso8601(c.updated_at),
    });
    if opts.owner {
        v["owner"] = match c
            .owner
            .as_ref()
            .and_then(|id| st.review.reviewers.iter().find(|r| r.id == *id))
        {
            Some(r) => json!({"id": r.id, "name": r.name, "email": r.email}),
            None => Value::Null,
        };
    }
    if opts.replies {
        let mut replies: Vec<&Comment> = st
            .review
            .comments
            .iter()
            .filter(|r| r.parent_id.as_deref() == Some(c.id.as_str()))
            .collect();
        replies.sort_by_key(|r| (r.created_at, r.seq));
        v["replies"] = replies
            .into_iter()
            .map(|r| {
                comment_json(
                    st,
                    r,
                    &CommentOpts {
                        replies: false,
                        ..*opts
                    },
                )
            })
            .collect();
    }
    v
}

/// A paging key that grows with (created_at, seq): micros since the epoch, with the low 10
/// bits from the sequence number to break ties.
fn created_key(c: &Comment) -> u64 {
    let micros = c
        .created_at
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros() as u64;
    (micros << 10) | (c.seq & 1023)
}

/// `GET /v4/accounts/{a}/files/{file_id}/comments`: the file's top-level comments (replies
/// only nest under their parent), paged, oldest first or with `sort=created_at_desc`.
pub(crate) fn list_comments(
    shared: &Shared,
    meta: &Meta,
    account_id: &str,
    file_id: &str,
) -> ApiResult {
    let opts = comment_opts(meta)?;
    let desc = match query_get(&meta.query, "sort") {
        None | Some("created_at_asc") => false,
        Some("created_at_desc") => true,
        Some(other) => {
            return Err(error(
                422,
                "Invalid value",
                &format!("sort: {other:?} is not supported by the simulator (created_at_asc, created_at_desc)"),
            ))
        }
    };
    let st = shared.lock();
    file(&st, account_id, file_id)?;
    let mut items: Vec<(u64, Value)> = st
        .review
        .comments
        .iter()
        .filter(|c| c.file_id == file_id && c.parent_id.is_none())
        .map(|c| {
            let k = created_key(c);
            (
                if desc { u64::MAX - k } else { k },
                comment_json(&st, c, &opts),
            )
        })
        .collect();
    items.sort_by_key(|(k, _)| *k);
    page(meta, items)
}

/// `GET /v4/accounts/{a}/comments/{id}` (a reply too), with the same includes.
pub(crate) fn show_comment(shared: &Shared, meta: &Meta, account_id: &str, id: &str) -> ApiResult {
    let opts = comment_opts(meta)?;
    let st = shared.lock();
    check_account(&st, account_id)?;
    let c = st
        .review
        .comments
        .iter()
        .find(|c| c.id == id)
        .filter(|c| st.node_in_account(account_id, &c.file_id).is_some())
        .ok_or_else(|| not_found("Comment"))?;
    Ok(Reply::json(
        200,
        &json!({"data": comment_json(&st, c, &opts)}),
    ))
}

// ---------------------------------------------------------------------------------------------
// Metadata over HTTP

fn status_field<'a>(st: &'a State, account_id: &str) -> Option<&'a StatusField> {
    st.review.fields.iter().find(|f| f.account_id == account_id)
}

fn options_json(f: &StatusField) -> Value {
    f.options
        .iter()
        .map(|(id, name)| json!({"id": id, "display_name": name}))
        .collect()
}

/// `GET /v4/accounts/{a}/metadata/field_definitions`: the account's one select field, `Status`.
pub(crate) fn list_field_definitions(shared: &Shared, meta: &Meta, account_id: &str) -> ApiResult {
    let st = shared.lock();
    check_account(&st, account_id)?;
    let items = status_field(&st, account_id)
        .map(|f| {
            (
                1,
                json!({
                    "id": f.id, "name": "Status", "field_type": "select",
                    "field_configuration": {"options": options_json(f), "enable_add_new": false},
                    "mutable": true, "creator_id": null,
                    "created_at": iso8601(f.created_at), "updated_at": iso8601(f.created_at),
                }),
            )
        })
        .into_iter()
        .collect();
    page(meta, items)
}

/// `GET /v4/accounts/{a}/files/{id}/metadata[?show_null=true]`: the file's Status as a list
/// of the chosen option (`{id, display_name}`); without a Status the field is left out unless
/// `show_null=true` (then its value is null).
pub(crate) fn file_metadata(
    shared: &Shared,
    meta: &Meta,
    account_id: &str,
    file_id: &str,
) -> ApiResult {
    let show_null = match query_get(&meta.query, "show_null") {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => {
            return Err(error(
                422,
                "Invalid value",
                "show_null must be true or false",
            ))
        }
    };
    let st = shared.lock();
    file(&st, account_id, file_id)?;
    let mut fields = Vec::new();
    if let Some(f) = status_field(&st, account_id) {
        let value = st.review.status.get(file_id).and_then(|opt| {
            f.options
                .iter()
                .find(|(id, _)| id == opt)
                .map(|(id, name)| json!([{"id": id, "display_name": name}]))
        });
        if value.is_some() || show_null {
            fields.push(json!({
                "field_definition_id": f.id, "field_definition_name": "Status",
                "field_type": "select", "mutable": true,
                "value": value.unwrap_or(Value::Null),
                "field_options": options_json(f),
            }));
        }
    }
    Ok(Reply::json(
        200,
        &json!({"data": {"file_id": file_id, "metadata": fields}}),
    ))
}

// ---------------------------------------------------------------------------------------------
// What happens in Frame.io's UI (the Rust handle and `/_sim/…`)

fn is_live_file(st: &State, id: &str) -> bool {
    matches!(st.nodes.get(id).map(|n| &n.kind), Some(NodeKind::File(_)))
}

fn reviewer_id(st: &mut State, name: &str) -> String {
    if let Some(r) = st.review.reviewers.iter().find(|r| r.name == name) {
        return r.id.clone();
    }
    let slug: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '.'
            }
        })
        .collect();
    let r = Reviewer {
        id: st.rng.uuid(),
        name: name.to_string(),
        email: format!("{slug}@reviewers.invalid"),
    };
    let id = r.id.clone();
    st.review.reviewers.push(r);
    id
}

/// A reviewer (or a guest, `author: None`) comments on a file: fires `comment.created`.
pub(crate) fn add_comment(
    shared: &Arc<Shared>,
    file_id: &str,
    author: Option<&str>,
    text: &str,
    timestamp: Option<u64>,
    parent: Option<&str>,
) -> Result<String, String> {
    let (id, owner) = {
        let mut st = shared.lock();
        let (file_id, parent_id) = match parent {
            None => {
                if !is_live_file(&st, file_id) {
                    return Err(format!("no file {file_id}"));
                }
                (file_id.to_string(), None)
            }
            Some(p) => {
                let c = st
                    .review
                    .comments
                    .iter()
                    .find(|c| c.id == p)
                    .ok_or_else(|| format!("no comment {p}"))?;
                // A reply to a reply belongs to the same thread.
                let top = c.parent_id.clone().unwrap_or_else(|| c.id.clone());
                (c.file_id.clone(), Some(top))
            }
        };
        let owner = author.map(|a| reviewer_id(&mut st, a));
        let now = SystemTime::now();
        let c = Comment {
            id: st.rng.uuid(),
            file_id,
            parent_id,
            owner: owner.clone(),
            text: text.to_string(),
            timestamp,
            completed_at: None,
            created_at: now,
            updated_at: now,
            seq: st.next_seq(),
        };
        let id = c.id.clone();
        let file_id = c.file_id.clone();
        st.review.comments.push(c);
        (id, (file_id, owner))
    };
    fire(shared, "comment.created", "comment", &id, &owner.0, owner.1);
    Ok(id)
}

/// Marks a comment done: fires `comment.completed`.
pub(crate) fn complete_comment(shared: &Arc<Shared>, id: &str) -> Result<(), String> {
    let file_id = {
        let mut st = shared.lock();
        let c = st
            .review
            .comments
            .iter_mut()
            .find(|c| c.id == id)
            .ok_or_else(|| format!("no comment {id}"))?;
        let now = SystemTime::now();
        c.completed_at = Some(now);
        c.updated_at = now;
        c.file_id.clone()
    };
    fire(shared, "comment.completed", "comment", id, &file_id, None);
    Ok(())
}

pub(crate) fn set_comment_created_at(
    shared: &Shared,
    id: &str,
    when: SystemTime,
) -> Result<(), String> {
    let mut st = shared.lock();
    let c = st
        .review
        .comments
        .iter_mut()
        .find(|c| c.id == id)
        .ok_or_else(|| format!("no comment {id}"))?;
    c.created_at = when;
    Ok(())
}

/// Sets a file's Status by its display name: fires `metadata.value.updated` when it changes.
pub(crate) fn set_status(shared: &Arc<Shared>, file_id: &str, status: &str) -> Result<(), String> {
    let changed = {
        let mut st = shared.lock();
        if !is_live_file(&st, file_id) {
            return Err(format!("no file {file_id}"));
        }
        let account = st
            .project_of(file_id)
            .map(|p| p.account_id.clone())
            .unwrap_or_default();
        let option = status_field(&st, &account)
            .and_then(|f| f.options.iter().find(|(_, n)| *n == status))
            .map(|(id, _)| id.clone())
            .ok_or_else(|| {
                format!(
                    "unknown status {status:?} (one of {})",
                    STATUS_OPTIONS.join(", ")
                )
            })?;
        st.review.status.insert(file_id.to_string(), option.clone()) != Some(option)
    };
    if changed {
        fire(
            shared,
            "metadata.value.updated",
            "file",
            file_id,
            file_id,
            None,
        );
    }
    Ok(())
}

pub(crate) fn status_of(st: &State, file_id: &str) -> Option<String> {
    let opt = st.review.status.get(file_id)?;
    st.review
        .fields
        .iter()
        .flat_map(|f| f.options.iter())
        .find(|(id, _)| id == opt)
        .map(|(_, n)| n.to_string())
}

/// A file's bytes are all in and it is complete: `file.upload.completed` now, `file.ready`
/// `ready_delay_ms` later (if the file is still there).
pub(crate) fn file_completed(shared: &Arc<Shared>, file_id: &str) {
    fire(
        shared,
        "file.upload.completed",
        "file",
        file_id,
        file_id,
        None,
    );
    let delay = Duration::from_millis(shared.faults().ready_delay_ms);
    let shared = Arc::clone(shared);
    let file_id = file_id.to_string();
    let spawned = std::thread::Builder::new()
        .name("frameio-sim-ready".into())
        .spawn(move || {
            if sleep_unless_stopped(&shared, delay) && is_live_file(&shared.lock(), &file_id) {
                fire(&shared, "file.ready", "file", &file_id, &file_id, None);
            }
        });
    if let Err(e) = spawned {
        log::error!("frameio-sim: cannot spawn a file.ready thread: {e}");
    }
}

// ---------------------------------------------------------------------------------------------
// Deliveries

/// Sleeps, waking early when the simulator is dropped: whether it slept the whole time.
fn sleep_unless_stopped(shared: &Shared, d: Duration) -> bool {
    let until = std::time::Instant::now() + d;
    loop {
        if shared.stopped.load(Ordering::SeqCst) {
            return false;
        }
        let now = std::time::Instant::now();
        if now >= until {
            return true;
        }
        std::thread::sleep((until - now).min(Duration::from_millis(50)));
    }
}

/// Sends `event` about a resource (of the project holding `file_id`) to every active webhook
/// of that project's workspace subscribed to it, each on its own thread.
pub(crate) fn fire(
    shared: &Arc<Shared>,
    event: &'static str,
    resource_type: &str,
    resource_id: &str,
    file_id: &str,
    user_id: Option<String>,
) {
    let (targets, body) = {
        let st = shared.lock();
        let Some(p) = st.project_of(file_id) else {
            return;
        };
        let body = json!({
            "account": {"id": p.account_id},
            "project": {"id": p.id},
            "resource": {"id": resource_id, "type": resource_type},
            "type": event,
            "user": {"id": user_id.unwrap_or_else(|| st.user.id.clone())},
            "workspace": {"id": p.workspace_id},
        })
        .to_string();
        let targets: Vec<String> = st
            .review
            .webhooks
            .iter()
            .filter(|w| w.active && w.workspace_id == p.workspace_id)
            .filter(|w| w.events.iter().any(|e| e == event))
            .map(|w| w.id.clone())
            .collect();
        (targets, body)
    };
    let (copies, retry_secs) = {
        let f = shared.faults();
        (f.webhook_duplicates, f.webhook_retry_secs.max(0.0))
    };
    for webhook_id in targets {
        let shared = Arc::clone(shared);
        let body = body.clone();
        let resource_id = resource_id.to_string();
        let spawned = std::thread::Builder::new()
            .name("frameio-sim-webhook".into())
            .spawn(move || {
                let d = Delivery {
                    shared: &shared,
                    webhook_id: &webhook_id,
                    event,
                    resource_id: &resource_id,
                    body: &body,
                    retry_secs,
                };
                for copy in 0..=copies {
                    d.send(copy);
                }
            });
        if let Err(e) = spawned {
            log::error!("frameio-sim: cannot spawn a webhook delivery: {e}");
        }
    }
}

struct Delivery<'a> {
    shared: &'a Shared,
    webhook_id: &'a str,
    event: &'static str,
    resource_id: &'a str,
    body: &'a str,
    retry_secs: f64,
}

impl Delivery<'_> {
    /// One copy of the event: up to 5 attempts, retried on a non-2xx answer or none within
    /// 5 s, waiting `retry_secs`, then twice that, …, each with up to 25% jitter added. Each
    /// attempt is signed afresh, to the webhook's URL and secret of the moment; a webhook
    /// deleted or deactivated meanwhile gets no more attempts.
    fn send(&self, copy: u32) {
        for attempt in 1..=ATTEMPTS {
            if attempt > 1 {
                let jitter = 1.0 + 0.25 * self.shared.lock().rng.next_f64();
                let wait = self.retry_secs * f64::from(1u32 << (attempt - 2)) * jitter;
                if !sleep_unless_stopped(self.shared, Duration::from_secs_f64(wait)) {
                    return;
                }
            }
            let target = {
                let st = self.shared.lock();
                st.review
                    .webhooks
                    .iter()
                    .find(|w| w.id == self.webhook_id && w.active)
                    .map(|w| (w.url.clone(), w.secret.clone()))
            };
            let Some((url, secret)) = target else { return };
            let at = SystemTime::now();
            let ts = at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
            let signature = hex(&hmac_sha256(
                secret.as_bytes(),
                format!("v0:{ts}:{}", self.body).as_bytes(),
            ));
            let result = resolve(self.shared.registry.as_deref(), &url)
                .and_then(|t| post(&t, ts, &signature, self.body));
            let (status, error) = match result {
                Ok(s) => (Some(s), None),
                Err(e) => (None, Some(e)),
            };
            log::debug!(
                "frameio-sim: webhook {} {} attempt {attempt} -> {status:?} {error:?}",
                self.webhook_id,
                self.event
            );
            self.shared.lock().review.deliveries.push(DeliveryRecord {
                webhook_id: self.webhook_id.to_string(),
                event: self.event.to_string(),
                resource_id: self.resource_id.to_string(),
                attempt,
                status,
                at,
                copy,
                url,
                timestamp: ts,
                error,
                body: self.body.to_string(),
            });
            if status.is_some_and(|s| (200..300).contains(&s)) {
                return;
            }
        }
    }
}

fn post(t: &Target, ts: u64, signature: &str, body: &str) -> Result<u16, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .max_redirects(0)
        .max_redirects_will_error(false)
        .timeout_global(Some(ANSWER_WITHIN))
        .user_agent("Frame.io V4 API")
        .build()
        .into();
    let mut req = agent
        .post(&t.url)
        .header("Content-Type", "application/json")
        .header("X-Frameio-Request-Timestamp", ts.to_string())
        .header("X-Frameio-Signature", format!("v0={signature}"));
    if let Some(h) = &t.host {
        req = req.header("Host", h);
    }
    let resp = req.send(body.as_bytes()).map_err(|e| e.to_string())?;
    Ok(resp.status().as_u16())
}
