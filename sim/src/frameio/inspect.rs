//! The inspection API: the same views as the Rust handle, as JSON under `/_sim/`, plus the
//! fault knobs for the demo and soak scripts. Not authenticated: the simulator is a test tool.

use super::options::Faults;
use super::state::{CreateCount, FileView, PathEntry, Project, ProjectView, StackView, State};
use super::{Meta, Reply, Shared};
use crate::util::query_get;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

pub(crate) fn by_path(files: &[FileView]) -> BTreeMap<String, PathEntry> {
    let mut out: BTreeMap<String, PathEntry> = BTreeMap::new();
    for f in files {
        let e = out.entry(f.path.clone()).or_insert(PathEntry {
            size: f.size,
            sha256: None,
            copies: 0,
            complete: 0,
            original_corrupted: false,
        });
        e.copies += 1;
        if f.upload_complete {
            if e.complete == 0 {
                e.size = f.size;
                e.sha256 = f.sha256.clone();
                e.original_corrupted = f.original_corrupted;
            }
            e.complete += 1;
        }
    }
    out
}

pub(crate) fn create_counts(st: &State) -> Vec<CreateCount> {
    st.creates
        .iter()
        .map(
            |((project_id, parent_path, name, kind), count)| CreateCount {
                project_id: project_id.clone(),
                parent_path: parent_path.clone(),
                name: name.clone(),
                kind,
                count: *count,
            },
        )
        .collect()
}

pub(crate) fn stacks(st: &State) -> Vec<StackView> {
    let mut nodes: Vec<_> = st.nodes.values().collect();
    nodes.sort_by_key(|n| n.seq);
    nodes.into_iter().filter_map(|n| st.stack_view(n)).collect()
}

pub(crate) fn counters(st: &State) -> BTreeMap<String, u64> {
    st.counters
        .iter()
        .map(|((e, s), n)| (format!("{e} {s}"), *n))
        .collect()
}

/// Every live file of every project, in creation order.
pub(crate) fn files(shared: &Shared, faults: &Faults) -> Vec<FileView> {
    let st = shared.lock();
    let mut nodes: Vec<_> = st.nodes.values().collect();
    nodes.sort_by_key(|n| n.seq);
    nodes
        .into_iter()
        .filter_map(|n| st.file_view(n, faults))
        .collect()
}

fn info(shared: &Shared) -> Value {
    let st = shared.lock();
    json!({
        "base_url": shared.base_url,
        "client_id": shared.client_id,
        "client_secret": shared.client_secret,
        "redirect_uri": shared.redirect_uri,
        "user_id": st.user.id,
        "account_id": st.main_project().account_id,
        "workspace_id": st.main_project().workspace_id,
        "project_id": st.main_project().id,
        "root_folder_id": st.main_project().root_folder_id,
        "projects": projects(&st),
    })
}

fn projects(st: &State) -> Vec<ProjectView> {
    st.projects.iter().map(|p| st.project_view(p)).collect()
}

/// The project named by `?project=ID`, `None` without one; `Err` for an unknown id.
fn only_project(st: &State, meta: &Meta) -> Result<Option<Project>, Reply> {
    match query_get(&meta.query, "project") {
        None => Ok(None),
        Some(id) => match st.project(id) {
            Some(p) => Ok(Some(p.clone())),
            None => Err(Reply::text(404, &format!("no project {id}"))),
        },
    }
}

/// The project named by `?project=ID`, else the main one; `Err` for an unknown id.
fn project_param(st: &State, meta: &Meta) -> Result<Project, Reply> {
    Ok(only_project(st, meta)?.unwrap_or_else(|| st.main_project().clone()))
}

pub(crate) fn state_json(shared: &Shared) -> Value {
    let faults = shared.faults_now();
    let files = files(shared, &faults);
    let st = shared.lock();
    let root = st.main_project().root_folder_id.clone();
    // Every project with its own tree and paths; `tree` and `paths` are the main project's.
    let each: Vec<Value> = st
        .projects
        .iter()
        .map(|p| {
            let mine: Vec<FileView> = files
                .iter()
                .filter(|f| f.project_id == p.id)
                .cloned()
                .collect();
            let mut v = json!(st.project_view(p));
            v["tree"] = json!(st.folder_view(&p.root_folder_id, &faults));
            v["paths"] = json!(by_path(&mine));
            v
        })
        .collect();
    let main_files: Vec<FileView> = files
        .iter()
        .filter(|f| f.project_id == st.main_project().id)
        .cloned()
        .collect();
    json!({
        "tree": st.folder_view(&root, &faults),
        "paths": by_path(&main_files),
        "projects": each,
        "creates": create_counts(&st),
        "stacks": stacks(&st),
        "tokens": st.token_log,
        "counters": counters(&st),
        "s3_puts": st.s3_log,
        "fetches": st.fetch_log,
        "downloads": st.download_log,
        "faults": faults,
    })
}

pub(crate) fn handle(shared: &Arc<Shared>, meta: &Meta, body: &[u8]) -> (&'static str, Reply) {
    let faults = shared.faults_now();
    let ok = |v: Value| ("sim", Reply::json(200, &v));
    let review_route = meta.path.starts_with("/_sim/comments/")
        || meta.path == "/_sim/status"
        || meta.path == "/_sim/comments";
    if meta.method == "POST" && review_route {
        return ("sim", review_action(shared, meta, body));
    }
    match (meta.method.as_str(), meta.path.as_str()) {
        ("GET", "/_sim/info") => ok(info(shared)),
        ("GET", "/_sim/state") => ok(state_json(shared)),
        ("GET", "/_sim/projects") => ok(json!(projects(&shared.lock()))),
        ("GET", "/_sim/tree") => {
            let st = shared.lock();
            match project_param(&st, meta) {
                Ok(p) => ok(json!(st.folder_view(&p.root_folder_id, &faults))),
                Err(r) => ("sim", r),
            }
        }
        ("GET", "/_sim/paths") => {
            let project = project_param(&shared.lock(), meta);
            match project {
                Ok(p) => {
                    let mut files = files(shared, &faults);
                    files.retain(|f| f.project_id == p.id);
                    ok(json!(by_path(&files)))
                }
                Err(r) => ("sim", r),
            }
        }
        ("GET", "/_sim/creates") => {
            let st = shared.lock();
            let mut creates = create_counts(&st);
            match only_project(&st, meta) {
                Ok(only) => {
                    creates.retain(|c| only.as_ref().is_none_or(|p| c.project_id == p.id));
                    ok(json!(creates))
                }
                Err(r) => ("sim", r),
            }
        }
        ("GET", "/_sim/stacks") => {
            let st = shared.lock();
            let mut stacks = stacks(&st);
            match only_project(&st, meta) {
                Ok(only) => {
                    stacks.retain(|s| only.as_ref().is_none_or(|p| s.project_id == p.id));
                    ok(json!(stacks))
                }
                Err(r) => ("sim", r),
            }
        }
        ("GET", "/_sim/tokens") => ok(json!(shared.lock().token_log)),
        ("GET", "/_sim/counters") => ok(json!(counters(&shared.lock()))),
        ("GET", "/_sim/s3") => ok(json!(shared.lock().s3_log)),
        ("GET", "/_sim/fetches") => ok(json!(shared.lock().fetch_log)),
        ("GET", "/_sim/downloads") => ok(json!(shared.lock().download_log)),
        ("GET", "/_sim/faults") => ok(json!(faults)),
        ("GET", "/_sim/webhooks") => ok(json!(super::review::webhooks(&shared.lock()))),
        ("GET", "/_sim/deliveries") => ok(json!(shared.lock().review.deliveries)),
        ("GET", "/_sim/comments") => ok(super::review::comments_json(&shared.lock())),
        ("POST", "/_sim/faults") => match merge_faults(&faults, body) {
            Ok(new) => {
                *shared.faults() = new.clone();
                ok(json!(new))
            }
            Err(e) => ("sim", Reply::text(400, &e)),
        },
        ("POST", "/_sim/login") => {
            let scopes = super::ims::DEFAULT_SCOPES
                .iter()
                .map(|s| s.to_string())
                .collect();
            let mut st = shared.lock();
            let (a, r) =
                super::ims::issue_pair(&mut st, &shared.client_id, scopes, &faults, "test_login");
            ok(
                json!({"access_token": a, "refresh_token": r, "token_type": "bearer",
                      "expires_in": faults.access_token_lifetime_secs}),
            )
        }
        ("POST", "/_sim/expire-refresh-tokens") => {
            let now = SystemTime::now();
            for t in shared.lock().refresh.values_mut() {
                t.expires_at = t.expires_at.min(now);
            }
            ok(json!({"ok": true}))
        }
        ("POST", "/_sim/expire-access-tokens") => {
            let now = SystemTime::now();
            for t in shared.lock().access.values_mut() {
                t.expires_at = t.expires_at.min(now);
            }
            ok(json!({"ok": true}))
        }
        _ => ("sim", Reply::text(404, "unknown /_sim route")),
    }
}

/// `POST /_sim/comments`, `/_sim/comments/{id}/reply`, `/_sim/comments/{id}/complete`,
/// `/_sim/status`: what reviewers do in Frame.io's UI, for the demo.
fn review_action(shared: &Arc<Shared>, meta: &Meta, body: &[u8]) -> Reply {
    let v: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(body) {
            Ok(v @ Value::Object(_)) => v,
            _ => return Reply::text(400, "body must be a JSON object"),
        }
    };
    let text_of = |k: &str| v.get(k).and_then(Value::as_str);
    let missing = |k: &str| Reply::text(400, &format!("{k} is required"));
    // Unknown ids are 404s; anything else refused is a 400.
    let refused = |e: String| Reply::text(if e.starts_with("no ") { 404 } else { 400 }, &e);
    let tail = meta.path.strip_prefix("/_sim/comments/");
    let result = match (meta.path.as_str(), tail.and_then(|t| t.split_once('/'))) {
        ("/_sim/comments", _) => {
            let Some(file_id) = text_of("file_id") else {
                return missing("file_id");
            };
            let Some(text) = text_of("text") else {
                return missing("text");
            };
            let timestamp = match v.get("timestamp") {
                None | Some(Value::Null) => None,
                Some(t) => match t.as_u64() {
                    Some(n) => Some(n),
                    None => return Reply::text(400, "timestamp must be a frame count"),
                },
            };
            super::review::add_comment(shared, file_id, text_of("author"), text, timestamp, None)
                .map(|id| json!({"id": id}))
        }
        (_, Some((id, "reply"))) => {
            let Some(text) = text_of("text") else {
                return missing("text");
            };
            super::review::add_comment(shared, "", text_of("author"), text, None, Some(id))
                .map(|id| json!({"id": id}))
        }
        (_, Some((id, "complete"))) => {
            super::review::complete_comment(shared, id).map(|()| json!({"ok": true}))
        }
        ("/_sim/status", _) => {
            let (Some(file_id), Some(status)) = (text_of("file_id"), text_of("status")) else {
                return missing("file_id and status");
            };
            super::review::set_status(shared, file_id, status).map(|()| json!({"ok": true}))
        }
        _ => return Reply::text(404, "unknown /_sim route"),
    };
    match result {
        Ok(v) => Reply::json(200, &v),
        Err(e) => refused(e),
    }
}

/// Applies a partial JSON object onto the current knobs; unknown keys are an error.
pub(crate) fn merge_faults(current: &Faults, body: &[u8]) -> Result<Faults, String> {
    let patch: Value =
        serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
    let Value::Object(patch) = patch else {
        return Err("body must be a JSON object".into());
    };
    let mut v = serde_json::to_value(current).map_err(|e| e.to_string())?;
    for (k, val) in patch {
        v[k] = val;
    }
    serde_json::from_value(v).map_err(|e| format!("invalid faults: {e}"))
}
