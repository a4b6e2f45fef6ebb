//! Frame.io v4 REST stand-in: auth, rate limits, injected faults, then one function per
//! endpoint.

use super::ims::check_bearer;
use super::options::{take_one, Faults, RetryHint};
use super::ratelimit::{self, Verdict};
use super::state::{FileData, Node, NodeKind, Project, State, UploadMode};
use super::{fetch, review, s3, Meta, Reply, Shared};
use crate::util::{base64_decode, base64url, iso8601, media_type_for, query_get};
use serde_json::{json, Map, Value};
use std::sync::Arc;
use std::time::SystemTime;

/// Largest `file_size` a local upload accepts ("file_size ≤ 5 TB").
const MAX_LOCAL_FILE_SIZE: u64 = 5_000_000_000_000;
const DEFAULT_PAGE_SIZE: usize = 50;
const MAX_PAGE_SIZE: usize = 100;

pub(crate) fn error(status: u16, title: &str, detail: &str) -> Reply {
    Reply::json(
        status,
        &json!({"errors": [{"detail": detail, "title": title}]}),
    )
}

pub(crate) fn invalid_field(detail: &str, pointer: &str) -> Reply {
    Reply::json(
        422,
        &json!({"errors": [{"detail": detail, "source": {"pointer": pointer}, "title": "Invalid value"}]}),
    )
}

pub(crate) fn not_found(what: &str) -> Reply {
    error(404, "Not Found", &format!("{what} not found"))
}

/// Maps method + path segments (after `/v4/`) to an endpoint name, used for rate limits and
/// counters. `Err(true)`: the path exists with another method.
fn classify(method: &str, segs: &[&str]) -> Result<&'static str, bool> {
    let name = match segs {
        ["me"] => [("GET", "me")].as_slice(),
        ["accounts"] => &[("GET", "list_accounts")],
        ["accounts", _, "workspaces"] => &[("GET", "list_workspaces")],
        ["accounts", _, "workspaces", _, "projects"] => &[("GET", "list_projects")],
        ["accounts", _, "projects", _] => &[("GET", "show_project")],
        ["accounts", _, "folders", _] => &[("GET", "show_folder"), ("DELETE", "delete_folder")],
        ["accounts", _, "folders", _, "children"] => &[("GET", "list_children")],
        ["accounts", _, "folders", _, "folders"] => {
            &[("GET", "list_folders"), ("POST", "create_folder")]
        }
        ["accounts", _, "folders", _, "files"] => &[("GET", "list_files")],
        ["accounts", _, "folders", _, "files", "remote_upload"] => &[("POST", "remote_upload")],
        ["accounts", _, "folders", _, "files", "local_upload"] => &[("POST", "local_upload")],
        ["accounts", _, "folders", _, "version_stacks"] => &[
            ("GET", "list_version_stacks"),
            ("POST", "create_version_stack"),
        ],
        ["accounts", _, "files", _] => &[("GET", "show_file"), ("DELETE", "delete_file")],
        ["accounts", _, "files", _, "status"] => &[("GET", "file_status")],
        ["accounts", _, "files", _, "move"] => &[("PATCH", "move_file")],
        ["accounts", _, "version_stacks", _] => &[("GET", "show_version_stack")],
        ["accounts", _, "version_stacks", _, "children"] => {
            &[("GET", "list_version_stack_children")]
        }
        ["accounts", _, "workspaces", _, "webhooks"] => {
            &[("GET", "list_webhooks"), ("POST", "create_webhook")]
        }
        ["accounts", _, "webhooks", _] => &[
            ("GET", "show_webhook"),
            ("PATCH", "update_webhook"),
            ("DELETE", "delete_webhook"),
        ],
        ["accounts", _, "files", _, "comments"] => &[("GET", "list_comments")],
        ["accounts", _, "comments", _] => &[("GET", "show_comment")],
        ["accounts", _, "metadata", "field_definitions"] => &[("GET", "list_field_definitions")],
        ["accounts", _, "files", _, "metadata"] => &[("GET", "file_metadata")],
        // Experimental: only with `api-version: experimental` (see `reorder_versions`).
        ["accounts", _, "version_stacks", _, "versions"] => &[("PATCH", "reorder_versions")],
        _ => return Err(false),
    };
    name.iter()
        .find(|(m, _)| *m == method)
        .map(|(_, n)| *n)
        .ok_or(true)
}

fn with_rate_headers(mut r: Reply, v: &Verdict) -> Reply {
    r.headers.extend(v.headers());
    r
}

pub(crate) fn handle(
    shared: &Arc<Shared>,
    meta: &Meta,
    rest: &str,
    body: &[u8],
) -> (&'static str, Reply) {
    let segs: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    let endpoint = match classify(&meta.method, &segs) {
        Ok(e) => e,
        Err(true) => {
            return (
                "v4_method_not_allowed",
                error(405, "Method Not Allowed", "method not allowed on this path"),
            )
        }
        Err(false) => return ("v4_unknown", not_found("route")),
    };
    let faults = shared.faults_now();
    let user = check_bearer(&shared.lock(), meta);
    let Ok(user) = user else {
        let r = error(
            401,
            "Unauthorized",
            "Invalid or missing authorization token",
        );
        return (
            endpoint,
            with_rate_headers(r, &ratelimit::untouched(endpoint)),
        );
    };

    let burst = take_one(&mut shared.faults().burst_429);
    let verdict = if burst {
        let mut v = ratelimit::untouched(endpoint);
        v.allowed = false;
        v.remaining = 0;
        v
    } else {
        let account = match segs.as_slice() {
            ["accounts", a, ..] => *a,
            _ => "",
        };
        ratelimit::take(
            &mut shared.lock(),
            &user,
            account,
            endpoint,
            faults.rate_limits,
        )
    };
    if !verdict.allowed {
        return (endpoint, too_many(&verdict, faults.retry_hint));
    }

    if let Some(v) = meta.header("api-version") {
        if v != "4.0" && v != "experimental" {
            let r = error(
                400,
                "Bad Request",
                &format!("unsupported api-version {v:?}"),
            );
            return (endpoint, with_rate_headers(r, &verdict));
        }
    }

    let forced = {
        let mut f = shared.faults();
        let applies = f.error_5xx_only.is_empty() || f.error_5xx_only.iter().any(|e| e == endpoint);
        applies && take_one(&mut f.error_5xx_next)
    };
    let injected = {
        let mut st = shared.lock();
        (forced
            || (faults.error_5xx_fraction > 0.0 && st.rng.next_f64() < faults.error_5xx_fraction))
            .then(|| [500u16, 502, 503][(st.rng.next_u64() % 3) as usize])
    };
    let mutating = matches!(meta.method.as_str(), "POST" | "DELETE" | "PATCH");
    let after_commit = faults.error_5xx_after_commit && mutating;
    if let Some(status) = injected.filter(|_| !after_commit) {
        return (endpoint, with_rate_headers(server_error(status), &verdict));
    }
    let reply = dispatch(shared, meta, &segs, body, endpoint, &faults);
    if matches!(endpoint, "remote_upload" | "local_upload") && reply.status < 300 {
        std::thread::sleep(std::time::Duration::from_millis(
            faults.create_answer_delay_ms,
        ));
    }
    let reply = match injected {
        Some(status) => server_error(status),
        None => reply,
    };
    (endpoint, with_rate_headers(reply, &verdict))
}

fn server_error(status: u16) -> Reply {
    let title = match status {
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    };
    error(status, title, "injected server error")
}

fn too_many(v: &Verdict, hint: RetryHint) -> Reply {
    let r = error(
        429,
        "Too Many Requests",
        "Rate limit exceeded, please retry later",
    );
    match hint {
        RetryHint::RetryAfter => {
            with_rate_headers(r, v).with_header("Retry-After", &v.retry_after_secs.to_string())
        }
        RetryHint::WindowOnly => with_rate_headers(r, v),
        RetryHint::None => r,
    }
}

fn dispatch(
    shared: &Arc<Shared>,
    meta: &Meta,
    segs: &[&str],
    body: &[u8],
    endpoint: &str,
    faults: &Faults,
) -> Reply {
    let arg = |i: usize| segs.get(i).copied().unwrap_or("");
    let result = match endpoint {
        "me" => me(shared),
        "list_accounts" => list_accounts(shared, meta),
        "list_workspaces" => list_workspaces(shared, meta, arg(1)),
        "list_projects" => list_projects(shared, meta, arg(1), arg(3)),
        "show_project" => show_project(shared, arg(1), arg(3)),
        "show_folder" => show_folder(shared, arg(1), arg(3)),
        "list_children" => list_in_folder(shared, meta, arg(1), arg(3), faults, Filter::All),
        "list_folders" => list_in_folder(shared, meta, arg(1), arg(3), faults, Filter::Folders),
        "list_files" => list_in_folder(shared, meta, arg(1), arg(3), faults, Filter::Files),
        "create_folder" => create_folder(shared, meta, body, arg(1), arg(3)),
        "remote_upload" => remote_upload(shared, meta, body, arg(1), arg(3), faults),
        "local_upload" => local_upload(shared, meta, body, arg(1), arg(3), faults),
        "show_file" => show_file(shared, meta, arg(1), arg(3), faults),
        "file_status" => file_status(shared, arg(1), arg(3)),
        "delete_file" => delete_node(shared, arg(1), arg(3), false),
        "delete_folder" => delete_node(shared, arg(1), arg(3), true),
        "create_version_stack" => create_stack(shared, meta, body, arg(1), arg(3), faults),
        "list_version_stacks" => list_stacks(shared, meta, arg(1), arg(3), faults),
        "move_file" => move_file(shared, meta, body, arg(1), arg(3), faults),
        "show_version_stack" => show_stack(shared, arg(1), arg(3), faults),
        "list_version_stack_children" => list_stack_children(shared, meta, arg(1), arg(3), faults),
        "reorder_versions" => reorder_versions(shared, meta, body, arg(1), arg(3), faults),
        "create_webhook" => review::create_webhook(shared, meta, body, arg(1), arg(3)),
        "list_webhooks" => review::list_webhooks(shared, meta, arg(1), arg(3)),
        "show_webhook" => review::show_webhook(shared, arg(1), arg(3)),
        "update_webhook" => review::update_webhook(shared, meta, body, arg(1), arg(3)),
        "delete_webhook" => review::delete_webhook(shared, arg(1), arg(3)),
        "list_comments" => review::list_comments(shared, meta, arg(1), arg(3)),
        "show_comment" => review::show_comment(shared, meta, arg(1), arg(3)),
        "list_field_definitions" => review::list_field_definitions(shared, meta, arg(1)),
        "file_metadata" => review::file_metadata(shared, meta, arg(1), arg(3)),
        _ => Err(not_found("route")),
    };
    result.unwrap_or_else(|e| e)
}

pub(crate) type ApiResult = Result<Reply, Reply>;

fn me(shared: &Shared) -> ApiResult {
    let st = shared.lock();
    Ok(Reply::json(
        200,
        &json!({"data": {"id": st.user.id, "name": st.user.name, "email": st.user.email, "avatar_url": null}}),
    ))
}

fn account_json(st: &State, i: usize) -> Value {
    let a = &st.accounts[i];
    let usage: u64 = st
        .nodes
        .values()
        .filter_map(|n| match &n.kind {
            NodeKind::File(f) => Some((n, f.bytes_received)),
            NodeKind::Folder | NodeKind::Stack(_) => None,
        })
        .filter(|(n, _)| st.project_of(&n.id).is_some_and(|p| p.account_id == a.id))
        .map(|(_, bytes)| bytes)
        .sum();
    json!({
        "id": a.id, "display_name": a.display_name, "roles": ["owner"],
        "storage_limit": null, "storage_usage": usage,
        "created_at": iso8601(a.created_at), "updated_at": iso8601(a.created_at),
    })
}

fn list_accounts(shared: &Shared, meta: &Meta) -> ApiResult {
    let st = shared.lock();
    let items = (0..st.accounts.len())
        .map(|i| (i as u64 + 1, account_json(&st, i)))
        .collect();
    page(meta, items)
}

pub(crate) fn check_account(st: &State, account_id: &str) -> Result<(), Reply> {
    if st.accounts.iter().any(|a| a.id == account_id) {
        Ok(())
    } else {
        Err(not_found("Account"))
    }
}

fn list_workspaces(shared: &Shared, meta: &Meta, account_id: &str) -> ApiResult {
    let st = shared.lock();
    check_account(&st, account_id)?;
    let items = st
        .workspaces
        .iter()
        .enumerate()
        .filter(|(_, w)| w.account_id == account_id)
        .map(|(i, w)| {
            (
                i as u64 + 1,
                json!({"id": w.id, "account_id": w.account_id, "name": w.name,
                       "created_at": iso8601(w.created_at), "updated_at": iso8601(w.created_at)}),
            )
        })
        .collect();
    page(meta, items)
}

fn project_json(p: &Project) -> Value {
    json!({
        "id": p.id, "name": p.name, "root_folder_id": p.root_folder_id, "status": "active",
        "storage": 0, "workspace_id": p.workspace_id, "description": null,
        "view_url": format!("https://next.frame.io/project/{}", p.id),
        "created_at": iso8601(p.created_at), "updated_at": iso8601(p.created_at),
    })
}

fn list_projects(shared: &Shared, meta: &Meta, account_id: &str, ws: &str) -> ApiResult {
    let st = shared.lock();
    check_account(&st, account_id)?;
    if !st
        .workspaces
        .iter()
        .any(|w| w.id == ws && w.account_id == account_id)
    {
        return Err(not_found("Workspace"));
    }
    let items = st
        .projects
        .iter()
        .enumerate()
        .filter(|(_, p)| p.workspace_id == ws)
        .map(|(i, p)| (i as u64 + 1, project_json(p)))
        .collect();
    page(meta, items)
}

fn show_project(shared: &Shared, account_id: &str, project_id: &str) -> ApiResult {
    let st = shared.lock();
    check_account(&st, account_id)?;
    match st.project(project_id) {
        Some(p) if p.account_id == account_id => {
            Ok(Reply::json(200, &json!({"data": project_json(p)})))
        }
        _ => Err(not_found("Project")),
    }
}

fn folder_json(st: &State, n: &Node) -> Value {
    let project_id = st.project_id_of(&n.id);
    json!({
        "id": n.id, "name": n.name, "type": "folder", "parent_id": n.parent_id,
        "project_id": project_id,
        "view_url": format!("https://next.frame.io/project/{project_id}/{}", n.id),
        "created_at": iso8601(n.created_at), "updated_at": iso8601(n.updated_at),
        "cover_file_id": null, "restricted": false,
    })
}

fn file_json(st: &State, n: &Node, f: &FileData, faults: &Faults) -> Value {
    let project_id = st.project_id_of(&n.id);
    json!({
        "id": n.id, "name": n.name, "type": "file", "parent_id": n.parent_id,
        "project_id": project_id,
        "view_url": format!("https://next.frame.io/project/{project_id}/view/{}", n.id),
        "created_at": iso8601(n.created_at), "updated_at": iso8601(n.updated_at),
        "file_size": f.file_size, "media_type": f.media_type,
        "status": super::state::file_status(f, faults),
    })
}

/// A version stack (`VersionStackWithIncludes`): asset fields, named after its head, with the
/// head as `head_version`.
fn stack_json(st: &State, n: &Node, faults: &Faults) -> Value {
    let head = st.stack_order(&n.id).last().and_then(|id| st.nodes.get(id));
    let head_json = head.and_then(|h| match &h.kind {
        NodeKind::File(f) => Some(file_json(st, h, f, faults)),
        _ => None,
    });
    let project_id = st.project_id_of(&n.id);
    json!({
        "id": n.id, "name": head.map_or(n.name.as_str(), |h| h.name.as_str()),
        "type": "version_stack", "parent_id": n.parent_id, "project_id": project_id,
        "view_url": format!("https://next.frame.io/project/{project_id}/view/{}", n.id),
        "created_at": iso8601(n.created_at), "updated_at": iso8601(n.updated_at),
        "head_version": head_json,
    })
}

fn node_json(st: &State, n: &Node, faults: &Faults) -> Value {
    match &n.kind {
        NodeKind::Folder => folder_json(st, n),
        NodeKind::File(f) => file_json(st, n, f, faults),
        NodeKind::Stack(_) => stack_json(st, n, faults),
    }
}

fn folder<'a>(st: &'a State, account_id: &str, folder_id: &str) -> Result<&'a Node, Reply> {
    check_account(st, account_id)?;
    match st.node_in_account(account_id, folder_id) {
        Some(n) if matches!(n.kind, NodeKind::Folder) => Ok(n),
        Some(_) => Err(error(
            422,
            "Invalid value",
            &format!("Entity {folder_id} is not a folder"),
        )),
        None => Err(not_found("Folder")),
    }
}

pub(crate) fn file<'a>(
    st: &'a State,
    account_id: &str,
    file_id: &str,
) -> Result<(&'a Node, &'a FileData), Reply> {
    check_account(st, account_id)?;
    match st.node_in_account(account_id, file_id) {
        Some(n) => match &n.kind {
            NodeKind::File(f) => Ok((n, f)),
            NodeKind::Folder | NodeKind::Stack(_) => Err(not_found("File")),
        },
        None => Err(not_found("File")),
    }
}

fn show_folder(shared: &Shared, account_id: &str, folder_id: &str) -> ApiResult {
    let st = shared.lock();
    let n = folder(&st, account_id, folder_id)?;
    Ok(Reply::json(200, &json!({"data": folder_json(&st, n)})))
}

#[derive(Clone, Copy)]
enum Filter {
    All,
    Folders,
    Files,
}

fn list_in_folder(
    shared: &Shared,
    meta: &Meta,
    account_id: &str,
    folder_id: &str,
    faults: &Faults,
    filter: Filter,
) -> ApiResult {
    let st = shared.lock();
    folder(&st, account_id, folder_id)?;
    let items = st
        .children(folder_id)
        .into_iter()
        .filter(|n| match (filter, &n.kind) {
            (Filter::All, _) => true,
            (Filter::Folders, k) => matches!(k, NodeKind::Folder),
            (Filter::Files, k) => matches!(k, NodeKind::File(_)),
        })
        .map(|n| (n.seq, node_json(&st, n, faults)))
        .collect();
    page(meta, items)
}

/// Cursor paging over items keyed by a strictly increasing sequence number. The cursor is the
/// last sequence number of the page, so items created or deleted between pages neither repeat
/// nor shift the rest. `page_size` outside 1..=100 is a 422 (the schema's maximum is 100;
/// rejecting rather than clamping makes a client that asks for more notice).
pub(crate) fn page(meta: &Meta, items: Vec<(u64, Value)>) -> ApiResult {
    let q = &meta.query;
    let size = match query_get(q, "page_size") {
        None => DEFAULT_PAGE_SIZE,
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE_SIZE).contains(&n) => n,
            _ => {
                return Err(error(
                    422,
                    "Invalid value",
                    &format!("page_size must be an integer between 1 and {MAX_PAGE_SIZE}"),
                ))
            }
        },
    };
    let include_total = match query_get(q, "include_total_count") {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => {
            return Err(error(
                422,
                "Invalid value",
                "include_total_count must be true or false",
            ))
        }
    };
    let after = match query_get(q, "after") {
        None => 0,
        Some(c) => decode_cursor(c)
            .ok_or_else(|| error(422, "Invalid value", "Invalid pagination cursor"))?,
    };
    let total = items.len();
    let rest: Vec<_> = items.into_iter().filter(|(s, _)| *s > after).collect();
    let more = rest.len() > size;
    let page: Vec<_> = rest.into_iter().take(size).collect();
    let next = match page.last() {
        Some((seq, _)) if more => {
            Value::String(format!("{}?after={}", meta.path, encode_cursor(*seq)))
        }
        _ => Value::Null,
    };
    let data: Vec<Value> = page.into_iter().map(|(_, v)| v).collect();
    let total = if include_total {
        json!(total)
    } else {
        Value::Null
    };
    Ok(Reply::json(
        200,
        &json!({"data": data, "links": {"next": next}, "total_count": total}),
    ))
}

fn encode_cursor(seq: u64) -> String {
    // Real cursors look like `g3QAAAAC…==` (Erlang terms); ours are just opaque.
    base64url(format!("g3:after:{seq}").as_bytes())
}

fn decode_cursor(c: &str) -> Option<u64> {
    let raw = String::from_utf8(base64_decode(c)?).ok()?;
    raw.strip_prefix("g3:after:")?.parse().ok()
}

/// Checks `Content-Type`, parses `{"data":{…}}` and rejects fields not in `allowed`.
pub(crate) fn data_object(
    meta: &Meta,
    body: &[u8],
    allowed: &[&str],
) -> Result<Map<String, Value>, Reply> {
    let ct = meta.header("content-type").unwrap_or("");
    if !ct.to_ascii_lowercase().contains("application/json") {
        return Err(error(
            400,
            "Bad Request",
            "Content-Type must be application/json",
        ));
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| error(400, "Bad Request", &format!("Malformed JSON body: {e}")))?;
    let Value::Object(mut top) = v else {
        return Err(error(400, "Bad Request", "body must be a JSON object"));
    };
    if let Some(k) = top.keys().find(|k| *k != "data") {
        return Err(invalid_field(
            &format!("Unexpected field: {k}"),
            &format!("/{k}"),
        ));
    }
    let Some(Value::Object(data)) = top.remove("data") else {
        return Err(invalid_field(
            "data is required and must be an object",
            "/data",
        ));
    };
    if let Some(k) = data.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(invalid_field(
            &format!("Unexpected field: {k}"),
            &format!("/data/{k}"),
        ));
    }
    Ok(data)
}

fn required_name(data: &Map<String, Value>) -> Result<String, Reply> {
    match data.get("name") {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
        Some(_) => Err(invalid_field(
            "name must be a non-empty string",
            "/data/name",
        )),
        None => Err(invalid_field("name is required", "/data/name")),
    }
}

fn create_folder(
    shared: &Shared,
    meta: &Meta,
    body: &[u8],
    account_id: &str,
    parent: &str,
) -> ApiResult {
    let data = data_object(meta, body, &["name"])?;
    let name = required_name(&data)?;
    let mut st = shared.lock();
    folder(&st, account_id, parent)?;
    // Frame.io allows duplicate names; so does the simulator (and it counts them).
    let id = st.insert_node(parent, &name, NodeKind::Folder, true);
    let n = &st.nodes[&id];
    Ok(Reply::json(201, &json!({"data": folder_json(&st, n)})))
}

fn new_file(media_type: Option<String>, part_content_type: String, mode: UploadMode) -> FileData {
    FileData {
        file_size: 0,
        media_type,
        part_content_type,
        mode,
        source_url: None,
        uploaded_at: None,
        completed_at: None,
        failed: false,
        failure_reason: None,
        sha256: None,
        bytes_received: 0,
        parts: Vec::new(),
        assembling: false,
        staging: None,
        original: None,
        original_corrupted: false,
    }
}

fn media(name: &str, faults: &Faults) -> (Option<String>, String) {
    if faults.media_type_null {
        (None, "application/octet-stream".into())
    } else {
        let m = media_type_for(name).to_string();
        (Some(m.clone()), m)
    }
}

fn remote_upload(
    shared: &Arc<Shared>,
    meta: &Meta,
    body: &[u8],
    account_id: &str,
    parent: &str,
    faults: &Faults,
) -> ApiResult {
    let data = data_object(meta, body, &["name", "source_url"])?;
    let name = required_name(&data)?;
    let source_url = match data.get("source_url") {
        Some(Value::String(s)) if s.starts_with("https://") || s.starts_with("http://") => {
            s.clone()
        }
        Some(_) => {
            return Err(invalid_field(
                "source_url must be an http(s) URL",
                "/data/source_url",
            ))
        }
        None => return Err(invalid_field("source_url is required", "/data/source_url")),
    };
    folder(&shared.lock(), account_id, parent)?;
    let size = if faults.remote_probe {
        fetch::probe_size(shared, &source_url)
    } else {
        None
    };
    if let Some(size) = size.filter(|s| *s > faults.remote_size_limit) {
        let detail = faults.remote_limit_detail.clone().unwrap_or_else(|| {
            format!(
                "File size {size} exceeds the remote upload limit of {} bytes; use local upload",
                faults.remote_size_limit
            )
        });
        return Err(invalid_field(&detail, "/data/source_url"));
    }
    let (media_type, ct) = media(&name, faults);
    let mut f = new_file(media_type, ct, UploadMode::Remote);
    f.file_size = size.unwrap_or(0);
    f.source_url = Some(source_url.clone());
    f.uploaded_at = Some(SystemTime::now());
    let (id, reply) = {
        let mut st = shared.lock();
        // The folder may have been deleted while probing.
        folder(&st, account_id, parent)?;
        let id = st.insert_node(parent, &name, NodeKind::File(Box::new(f)), true);
        let n = &st.nodes[&id];
        let NodeKind::File(f) = &n.kind else {
            unreachable!("just inserted a file")
        };
        let body = json!({
            "data": file_json(&st, n, f, faults),
            "links": {"status": format!("/v4/accounts/{account_id}/files/{id}/status")},
        });
        (id, Reply::json(202, &body))
    };
    fetch::start(Arc::clone(shared), id, source_url);
    Ok(reply)
}

fn local_upload(
    shared: &Shared,
    meta: &Meta,
    body: &[u8],
    account_id: &str,
    parent: &str,
    faults: &Faults,
) -> ApiResult {
    let data = data_object(meta, body, &["name", "file_size"])?;
    let name = required_name(&data)?;
    let size = match data.get("file_size") {
        Some(v) => match v.as_u64() {
            Some(n) if n <= MAX_LOCAL_FILE_SIZE => n,
            _ => {
                return Err(invalid_field(
                    "file_size must be an integer between 0 and 5 TB",
                    "/data/file_size",
                ))
            }
        },
        None => return Err(invalid_field("file_size is required", "/data/file_size")),
    };
    let sizes = s3::part_sizes(size, faults.part_size, faults.single_part_below);
    let (media_type, ct) = media(&name, faults);
    let mut f = new_file(media_type, ct, UploadMode::Local);
    f.file_size = size;
    f.uploaded_at = Some(SystemTime::now());
    let mut offset = 0;
    for s in &sizes {
        f.parts.push(super::state::Part {
            offset,
            size: *s,
            received: false,
        });
        offset += s;
    }
    let mut st = shared.lock();
    folder(&st, account_id, parent)?;
    let id = st.insert_node(parent, &name, NodeKind::File(Box::new(f)), true);
    let now = SystemTime::now();
    let urls: Vec<Value> = sizes
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let url = s3::part_url(
                &shared.base_url,
                &st.s3_secret,
                &id,
                i as u32 + 1,
                sizes.len() as u32,
                now,
                faults.part_url_lifetime_secs,
            );
            json!({"size": s, "url": url})
        })
        .collect();
    let n = &st.nodes[&id];
    let NodeKind::File(f) = &n.kind else {
        unreachable!("just inserted a file")
    };
    let mut data = file_json(&st, n, f, faults);
    data["upload_urls"] = Value::Array(urls);
    Ok(Reply::json(201, &json!({"data": data})))
}

/// `GET …/files/{id}`. `include` (comma-separated, the key may repeat) with `media_links` or
/// `media_links.<rendition>` adds `media_links` (see `originals::media_links`), or answers 403
/// with `download_forbidden`; other includes (`creator`, `project`, `metadata`) are accepted
/// and ignored.
fn show_file(
    shared: &Shared,
    meta: &Meta,
    account_id: &str,
    file_id: &str,
    faults: &Faults,
) -> ApiResult {
    let links = meta
        .query
        .iter()
        .filter(|(k, _)| k == "include")
        .flat_map(|(_, v)| v.split(','))
        .map(str::trim)
        .any(|i| i == "media_links" || i.starts_with("media_links."));
    let st = shared.lock();
    let (n, f) = file(&st, account_id, file_id)?;
    let mut data = file_json(&st, n, f, faults);
    if links {
        if faults.download_forbidden {
            return Err(error(
                403,
                "Forbidden",
                "You do not have permission to download this file",
            ));
        }
        data["media_links"] =
            super::originals::media_links(shared, &st.s3_secret, &n.id, f, faults);
    }
    Ok(Reply::json(200, &json!({"data": data})))
}

fn file_status(shared: &Shared, account_id: &str, file_id: &str) -> ApiResult {
    let st = shared.lock();
    let (n, f) = file(&st, account_id, file_id)?;
    Ok(Reply::json(
        200,
        &json!({"data": {
            "id": n.id,
            "filetype": f.media_type,
            "upload_complete": f.completed_at.is_some(),
            "upload_completed_at": f.completed_at.map(iso8601),
            "upload_failed": f.failed,
            "uploaded_at": f.uploaded_at.map(iso8601),
        }}),
    ))
}

fn delete_node(shared: &Shared, account_id: &str, id: &str, is_folder: bool) -> ApiResult {
    let staging = {
        let mut st = shared.lock();
        if is_folder {
            folder(&st, account_id, id)?;
            if st.nodes.get(id).is_some_and(|n| n.parent_id.is_none()) {
                return Err(error(
                    422,
                    "Invalid value",
                    "The root folder cannot be deleted",
                ));
            }
        } else {
            file(&st, account_id, id)?;
        }
        st.remove_tree(id)
    };
    for p in staging {
        let _ = std::fs::remove_file(p);
    }
    Ok(Reply::empty(204))
}

fn stack<'a>(st: &'a State, account_id: &str, stack_id: &str) -> Result<&'a Node, Reply> {
    check_account(st, account_id)?;
    match st.node_in_account(account_id, stack_id) {
        Some(n) if matches!(n.kind, NodeKind::Stack(_)) => Ok(n),
        _ => Err(not_found("Version stack")),
    }
}

/// Waits `hold_after_commit_ms` after a stack change took effect (the lock is released).
fn hold(faults: &Faults) {
    if faults.stacks.hold_after_commit_ms > 0 {
        std::thread::sleep(std::time::Duration::from_millis(
            faults.stacks.hold_after_commit_ms,
        ));
    }
}

/// `data.<field>` as a string, or a 422 naming it.
fn required_id(data: &Map<String, Value>, field: &str) -> Result<String, Reply> {
    match data.get(field) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        _ => Err(invalid_field(
            &format!("{field} is required and must be an id"),
            &format!("/data/{field}"),
        )),
    }
}

/// `POST …/folders/{folder}/version_stacks` `{"data":{"file_ids":[oldest … newest]}}`: 2 to
/// 10 distinct files, all directly in that folder (not already stacked). 201 with the stack.
fn create_stack(
    shared: &Shared,
    meta: &Meta,
    body: &[u8],
    account_id: &str,
    folder_id: &str,
    faults: &Faults,
) -> ApiResult {
    let data = data_object(meta, body, &["file_ids"])?;
    let ids: Vec<String> = match data.get("file_ids") {
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or_else(|| invalid_field("file_ids must be a list of ids", "/data/file_ids"))?,
        _ => return Err(invalid_field("file_ids is required", "/data/file_ids")),
    };
    if !(2..=10).contains(&ids.len()) {
        return Err(invalid_field(
            "Two file IDs are required and up to a maximum of ten",
            "/data/file_ids",
        ));
    }
    let reply = {
        let mut st = shared.lock();
        folder(&st, account_id, folder_id)?;
        for (i, id) in ids.iter().enumerate() {
            if ids[..i].contains(id) {
                return Err(invalid_field(
                    &format!("File {id} is listed twice"),
                    "/data/file_ids",
                ));
            }
            let (n, _) = file(&st, account_id, id)
                .map_err(|_| invalid_field(&format!("File {id} not found"), "/data/file_ids"))?;
            if n.parent_id.as_deref() != Some(folder_id) {
                return Err(invalid_field(
                    &format!("File {id} must exist in the parent directory {folder_id}"),
                    "/data/file_ids",
                ));
            }
        }
        let head_name = st.nodes[&ids[ids.len() - 1]].name.clone();
        let stack_id = st.insert_node(folder_id, &head_name, NodeKind::Stack(ids.clone()), true);
        let now = SystemTime::now();
        for id in &ids {
            if let Some(n) = st.nodes.get_mut(id) {
                n.parent_id = Some(stack_id.clone());
                n.updated_at = now;
            }
        }
        let n = &st.nodes[&stack_id];
        Reply::json(201, &json!({"data": stack_json(&st, n, faults)}))
    };
    hold(faults);
    Ok(reply)
}

fn list_stacks(
    shared: &Shared,
    meta: &Meta,
    account_id: &str,
    folder_id: &str,
    faults: &Faults,
) -> ApiResult {
    let st = shared.lock();
    folder(&st, account_id, folder_id)?;
    let items = st
        .children(folder_id)
        .into_iter()
        .filter(|n| matches!(n.kind, NodeKind::Stack(_)))
        .map(|n| (n.seq, stack_json(&st, n, faults)))
        .collect();
    page(meta, items)
}

fn show_stack(shared: &Shared, account_id: &str, stack_id: &str, faults: &Faults) -> ApiResult {
    let st = shared.lock();
    let n = stack(&st, account_id, stack_id)?;
    Ok(Reply::json(
        200,
        &json!({"data": stack_json(&st, n, faults)}),
    ))
}

/// The versions of a stack, in creation order (the order the third-party probes saw; their
/// `version_number` was present but null).
fn list_stack_children(
    shared: &Shared,
    meta: &Meta,
    account_id: &str,
    stack_id: &str,
    faults: &Faults,
) -> ApiResult {
    let st = shared.lock();
    stack(&st, account_id, stack_id)?;
    let items = st
        .children(stack_id)
        .into_iter()
        .map(|n| {
            let mut v = node_json(&st, n, faults);
            v["version_number"] = Value::Null;
            (n.seq, v)
        })
        .collect();
    page(meta, items)
}

/// `PATCH …/files/{id}/move` `{"data":{"parent_id"}}`: into a folder, or into a version
/// stack, where it becomes the head (or the bottom, with `moved_in_at_bottom`). A stack left
/// empty disappears. Moving to where the file already is changes nothing.
fn move_file(
    shared: &Shared,
    meta: &Meta,
    body: &[u8],
    account_id: &str,
    file_id: &str,
    faults: &Faults,
) -> ApiResult {
    let data = data_object(meta, body, &["parent_id"])?;
    let target = required_id(&data, "parent_id")?;
    let reply = {
        let mut st = shared.lock();
        file(&st, account_id, file_id)?;
        let into_stack = match st.node_in_account(account_id, &target).map(|n| &n.kind) {
            Some(NodeKind::Folder) => false,
            Some(NodeKind::Stack(_)) => true,
            Some(NodeKind::File(_)) => {
                return Err(invalid_field(
                    &format!("Entity {target} is not a folder or version stack"),
                    "/data/parent_id",
                ))
            }
            None => return Err(not_found("Folder or version stack")),
        };
        if st.nodes[file_id].parent_id.as_deref() != Some(target.as_str()) {
            st.unstack(file_id);
            if into_stack {
                if let Some(NodeKind::Stack(order)) = st.nodes.get_mut(&target).map(|n| &mut n.kind)
                {
                    if faults.stacks.moved_in_at_bottom {
                        order.insert(0, file_id.to_string());
                    } else {
                        order.push(file_id.to_string());
                    }
                }
            }
            if let Some(n) = st.nodes.get_mut(file_id) {
                n.parent_id = Some(target.clone());
                n.updated_at = SystemTime::now();
            }
        }
        let (n, f) = file(&st, account_id, file_id)?;
        Reply::json(200, &json!({"data": file_json(&st, n, f, faults)}))
    };
    hold(faults);
    Ok(reply)
}

/// Experimental `PATCH …/version_stacks/{id}/versions` (header `api-version: experimental`)
/// `{"data":{"target_file_id", "move_to": "top"|"bottom"}}`, or with `move_above_file_id` /
/// `move_below_file_id` instead of `move_to`. 200 with the versions, bottom first. Without
/// the header the route does not exist (404), as on the stable API.
fn reorder_versions(
    shared: &Shared,
    meta: &Meta,
    body: &[u8],
    account_id: &str,
    stack_id: &str,
    faults: &Faults,
) -> ApiResult {
    if meta.header("api-version") != Some("experimental") || faults.stacks.reorder_unavailable {
        return Err(not_found("route"));
    }
    let data = data_object(
        meta,
        body,
        &[
            "target_file_id",
            "move_to",
            "move_above_file_id",
            "move_below_file_id",
        ],
    )?;
    let target = required_id(&data, "target_file_id")?;
    let places: Vec<&str> = ["move_to", "move_above_file_id", "move_below_file_id"]
        .into_iter()
        .filter(|k| data.contains_key(*k))
        .collect();
    let [place] = places.as_slice() else {
        return Err(invalid_field(
            "exactly one of move_to, move_above_file_id, move_below_file_id is required",
            "/data",
        ));
    };
    let mut st = shared.lock();
    stack(&st, account_id, stack_id)?;
    let mut order = st.stack_order(stack_id).to_vec();
    let not_in = |id: &str| {
        invalid_field(
            &format!("File {id} is not a version of this stack"),
            "/data",
        )
    };
    if !order.contains(&target) {
        return Err(not_in(&target));
    }
    order.retain(|id| *id != target);
    let at = match *place {
        "move_to" => match data.get("move_to").and_then(Value::as_str) {
            Some("top") => order.len(),
            Some("bottom") => 0,
            _ => {
                return Err(invalid_field(
                    "move_to must be \"top\" or \"bottom\"",
                    "/data/move_to",
                ))
            }
        },
        key => {
            let other = required_id(&data, key)?;
            let i = order
                .iter()
                .position(|id| *id == other)
                .ok_or_else(|| not_in(&other))?;
            if key == "move_above_file_id" {
                i + 1
            } else {
                i
            }
        }
    };
    order.insert(at, target);
    if let Some(n) = st.nodes.get_mut(stack_id) {
        n.kind = NodeKind::Stack(order.clone());
        n.updated_at = SystemTime::now();
    }
    let versions: Vec<Value> = order
        .iter()
        .filter_map(|id| st.nodes.get(id))
        .map(|n| node_json(&st, n, faults))
        .collect();
    Ok(Reply::json(200, &json!({"data": versions})))
}
