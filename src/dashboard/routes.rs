//! The route table and the checks every request passes first.
//!
//! Security (DESIGN "Dashboard and API"): on a loopback listen the `Host` header must name the
//! loopback address we listen on (no DNS rebinding); POST routes and `/ws` also need an
//! `Origin`, when the client sends one, naming that same host (no CSRF from another page).
//! With `dashboard.token` set, every route but `/health` needs the token: an
//! `Authorization: Bearer` header or the login cookie that `/?token=…` sets.

use std::path::PathBuf;

use serde_json::{json, Value};

use super::http::{error, json, Request, Response};
use super::{metrics, ws, Ctx};
use crate::events::{ComponentState, Event};
use crate::history;
use crate::ledger::JobState;
use crate::queue::QueueMsg;

pub(crate) enum Reply {
    Http(Response),
    /// Answer 101 with `accept_key` and serve the viewer holding `ticket`.
    WebSocket {
        accept_key: String,
        ticket: ws::Ticket,
    },
}

impl From<Response> for Reply {
    fn from(r: Response) -> Reply {
        Reply::Http(r)
    }
}

const PAGE: &str = include_str!("../../www/index.html");
const COOKIE: &str = "postflow_token";

/// Every path the dashboard answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route<'a> {
    Page,
    Ws,
    Health,
    Status,
    QueueStats,
    Jobs,
    Retry(&'a str),
    Next(&'a str),
    RetryStack(&'a str),
    Comments(&'a str),
    RetryFailed,
    History,
    HistoryCsv,
    Throughput,
    Pause,
    Resume,
    Bandwidth,
    Metrics,
    OauthStart,
    OauthCallback,
    OauthCode,
}

/// The route table. HEAD is answered wherever GET is (the same head, no body).
fn route<'a>(path: &[&'a str]) -> Option<Route<'a>> {
    Some(match path {
        // GET: the page. `?token=T` (only with dashboard.token) sets the login cookie.
        [""] => Route::Page,
        // GET: live updates (WebSocket): a `snapshot`, then `job`, `transfer`, `component`, `log`.
        ["ws"] => Route::Ws,
        // GET: 200 {"status":"ok"|"degraded","components":{…}}; 503 when a restart would help.
        ["health"] => Route::Health,
        // GET: everything the page shows (same data as the WebSocket snapshot).
        ["api", "status"] => Route::Status,
        // GET: job counts by state, and whether the queue is paused.
        ["api", "queue", "stats"] => Route::QueueStats,
        // GET: jobs, newest first. ?state=<waiting|queued|…|skipped> &limit=<1..1000, default 100>
        // POST: queue files now (`postflow upload`). Body {"paths": ["…"]}
        ["api", "jobs"] => Route::Jobs,
        // POST: a failed or skipped job back to queued. <id>: the job id
        ["api", "jobs", id, "retry"] => Route::Retry(id),
        // POST: a queued or retrying job goes next, before every other (409 otherwise).
        ["api", "jobs", id, "next"] => Route::Next(id),
        // POST: a done version whose stacking failed: stack it again (only the stacking).
        ["api", "jobs", id, "retry-stack"] => Route::RetryStack(id),
        // GET: the comments Frame.io's review loop brought on the job's file, oldest first.
        // {"comments": [{"id","author","text","timecode","created_at","completed"}…]}
        ["api", "jobs", id, "comments"] => Route::Comments(id),
        // POST: every failed job back to queued; {"retried": n}
        ["api", "retry-failed"] => Route::RetryFailed,
        // GET: finished jobs, newest first, a page at a time. ?project= &q=<text in the path>
        // &state=<done|failed|skipped> &since= &until=<RFC 3339> &cursor=<next> &page_size=<1..1000>
        ["api", "history"] => Route::History,
        // GET: the same filter as CSV, every page at once (at most CSV_ROWS rows).
        ["api", "history.csv"] => Route::HistoryCsv,
        // GET: bytes sent per minute (last 24 h) and files, bytes, failures per UTC day (30 days).
        ["api", "throughput"] => Route::Throughput,
        // POST: no new uploads start (those under way finish); replies the queue stats.
        ["api", "pause"] => Route::Pause,
        // POST: uploads start again (also lifts a hold for Frame.io login).
        ["api", "resume"] => Route::Resume,
        // GET: the upload.bandwidth limit now, its source and next change.
        // POST: {"limit": "5M"|"off"|null} overrides it until null (or a restart).
        ["api", "bandwidth"] => Route::Bandwidth,
        // GET: Prometheus text format.
        ["metrics"] => Route::Metrics,
        // GET: redirects to Adobe IMS with a fresh `state`.
        ["oauth", "start"] => Route::OauthStart,
        // GET: IMS redirects here when it can reach the dashboard. ?code=&state=
        ["oauth", "callback"] => Route::OauthCallback,
        // POST: the URL the browser ended on after logging in (or the bare code).
        ["oauth", "code"] => Route::OauthCode,
        _ => return None,
    })
}

impl Route<'_> {
    /// The `Allow` header of a 405 on this route.
    fn allow(self) -> &'static str {
        match self {
            Route::Jobs | Route::Bandwidth => "GET, HEAD, POST",
            Route::Retry(_)
            | Route::Next(_)
            | Route::RetryStack(_)
            | Route::RetryFailed
            | Route::Pause
            | Route::Resume
            | Route::OauthCode => "POST",
            _ => "GET, HEAD",
        }
    }
}

/// The checks every request passes on its head alone, before any body is read: `Some` is
/// the refusal.
pub(crate) fn check(ctx: &Ctx, req: &Request) -> Option<Response> {
    if req.path == "/health" {
        return None;
    }
    if let Err(resp) = check_host(ctx, req) {
        return Some(resp);
    }
    if req.method == "POST" || req.path == "/ws" {
        if let Err(resp) = check_origin(ctx, req) {
            return Some(resp);
        }
    }
    check_token(ctx, req)
}

/// Answers a request that passed [`check`], with its body.
pub(crate) fn handle(ctx: &Ctx, req: &Request, body: &[u8]) -> Reply {
    let path: Vec<&str> = req.path.split('/').skip(1).collect();
    let Some(route) = route(&path) else {
        return error(404, "not found").into();
    };
    let method = if req.is_head() {
        "GET"
    } else {
        req.method.as_str()
    };
    match (method, route) {
        ("GET", Route::Page) => Response::new(200, "text/html; charset=utf-8", PAGE)
            .with_header(
                "Content-Security-Policy",
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                 connect-src 'self'; img-src 'self' data:; form-action 'self'; \
                 frame-ancestors 'none'",
            )
            .into(),
        ("GET", Route::Ws) => websocket(ctx, req),
        ("GET", Route::Health) => {
            let (status, body) = ctx.health();
            json(status, &body).into()
        }
        ("GET", Route::Status) => json(200, &ctx.status()).into(),
        ("GET", Route::QueueStats) => queue_stats(ctx).into(),
        ("GET", Route::Jobs) => list_jobs(ctx, req).into(),
        ("POST", Route::Jobs) => enqueue(ctx, body).into(),
        ("POST", Route::Retry(id)) => retry(ctx, id).into(),
        ("POST", Route::Next(id)) => upload_next(ctx, id).into(),
        ("POST", Route::RetryStack(id)) => retry_stack(ctx, id).into(),
        ("GET", Route::Comments(id)) => comments(ctx, id).into(),
        ("POST", Route::RetryFailed) => retry_failed(ctx).into(),
        ("POST", Route::Pause) => pause(ctx, true).into(),
        ("POST", Route::Resume) => pause(ctx, false).into(),
        ("GET", Route::History) => history(ctx, req).into(),
        ("GET", Route::HistoryCsv) => history_csv(ctx, req).into(),
        ("GET", Route::Throughput) => throughput(ctx).into(),
        ("GET", Route::Bandwidth) => {
            json(200, &crate::bandwidth::shared().snapshot().to_json()).into()
        }
        ("POST", Route::Bandwidth) => set_bandwidth(body).into(),
        ("GET", Route::Metrics) => metrics::render(ctx).into(),
        ("GET", Route::OauthStart) => oauth_start(ctx).into(),
        ("GET", Route::OauthCallback) => oauth_callback(ctx, req).into(),
        ("POST", Route::OauthCode) => oauth_code(ctx, body).into(),
        (_, route) => error(405, "method not allowed")
            .with_header("Allow", route.allow())
            .into(),
    }
}

fn websocket(ctx: &Ctx, req: &Request) -> Reply {
    let accept_key = match ws::check_handshake(req) {
        Ok(k) => k,
        Err(resp) => return resp.into(),
    };
    match ctx.viewers.join() {
        Some(ticket) => Reply::WebSocket { accept_key, ticket },
        None => error(
            503,
            &format!(
                "too many viewers: at most {} pages can watch at once",
                ws::MAX_VIEWERS
            ),
        )
        .with_header("Retry-After", "30")
        .into(),
    }
}

fn queue_stats(ctx: &Ctx) -> Response {
    match ctx.stats() {
        Ok(stats) => json(200, &super::stats_json(Some(&stats))),
        Err(e) => error(503, &e),
    }
}

fn retry(ctx: &Ctx, id: &str) -> Response {
    let Ok(id) = id.parse::<u64>() else {
        return error(404, "no such job");
    };
    match ctx.ask(|reply| QueueMsg::Retry { id, reply }) {
        Ok(Ok(())) => {
            log::info!("job {id}: retry asked from the dashboard");
            json(200, &json!({ "ok": true, "id": id }))
        }
        Ok(Err(e)) => error(409, &e),
        Err(e) => error(503, &e),
    }
}

fn upload_next(ctx: &Ctx, id: &str) -> Response {
    let Ok(id) = id.parse::<u64>() else {
        return error(404, "no such job");
    };
    match ctx.ask(|reply| QueueMsg::Next { id, reply }) {
        Ok(Ok(())) => json(200, &json!({ "ok": true, "id": id })),
        Ok(Err(e)) if e.starts_with("no job") => error(404, &e),
        Ok(Err(e)) => error(409, &e),
        Err(e) => error(503, &e),
    }
}

fn retry_stack(ctx: &Ctx, id: &str) -> Response {
    let Ok(id) = id.parse::<u64>() else {
        return error(404, "no such job");
    };
    match ctx.ask(|reply| QueueMsg::RetryStack { id, reply }) {
        Ok(Ok(())) => json(200, &json!({ "ok": true, "id": id })),
        Ok(Err(e)) if e.starts_with("no job") => error(404, &e),
        Ok(Err(e)) => error(409, &e),
        Err(e) => error(503, &e),
    }
}

fn comments(ctx: &Ctx, id: &str) -> Response {
    let Ok(id) = id.parse::<u64>() else {
        return error(404, "no such job");
    };
    match ctx.ask(QueueMsg::Jobs) {
        Ok(jobs) if jobs.iter().any(|j| j.id == id) => {}
        Ok(_) => return error(404, "no such job"),
        Err(e) => return error(503, &e),
    }
    let list: Vec<Value> = ctx.review.comments(id).iter().map(|c| c.json()).collect();
    json(200, &json!({ "comments": list }))
}

fn retry_failed(ctx: &Ctx) -> Response {
    match ctx.ask(|reply| QueueMsg::RetryFailed { reply }) {
        Ok(n) => {
            log::info!("{n} failed jobs queued again from the dashboard");
            json(200, &json!({ "ok": true, "retried": n }))
        }
        Err(e) => error(503, &e),
    }
}

/// Pauses or resumes, then reads the queue's state back (same channel, so in order) and tells
/// the viewers.
fn pause(ctx: &Ctx, paused: bool) -> Response {
    let msg = if paused {
        QueueMsg::Pause
    } else {
        QueueMsg::Resume
    };
    if ctx.queue.send(msg).is_err() {
        return error(503, "the queue is not running");
    }
    match ctx.stats() {
        Ok(stats) => {
            ctx.hub.publish(Event::Component {
                name: "queue",
                state: if stats.paused {
                    ComponentState::Off
                } else {
                    ComponentState::Up
                },
                detail: if stats.paused { "paused" } else { "running" }.into(),
            });
            json(200, &super::stats_json(Some(&stats)))
        }
        Err(e) => error(503, &e),
    }
}

/// Body `{"limit": "5M"|"off"|null}`: a live override of upload.bandwidth (a rate or "off"),
/// or null to go back to the timetable. Answers as GET does.
fn set_bandwidth(body: &[u8]) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(body) else {
        return error(400, "expected {\"limit\": \"5M\" | \"off\" | null}");
    };
    let limit = match body.get("limit") {
        Some(Value::Null) => None,
        Some(Value::String(s)) => match crate::bandwidth::parse_rate(s) {
            Ok(limit) => Some(limit),
            Err(e) => return error(400, &format!("limit: {e}")),
        },
        _ => return error(400, "expected {\"limit\": \"5M\" | \"off\" | null}"),
    };
    let bandwidth = crate::bandwidth::shared();
    match limit {
        Some(l) => log::info!(
            "bandwidth: override to {} from the dashboard",
            l.map_or("off".to_string(), |n| format!(
                "{}/s",
                crate::human::size(n)
            ))
        ),
        None => log::info!("bandwidth: back to the timetable"),
    }
    bandwidth.set_override(limit);
    json(200, &bandwidth.snapshot().to_json())
}

/// Body `{"paths": ["/abs/path", "relative/to/the/project/root", …], "project": "name"}`
/// (`project` may be left out with one project, or with absolute paths only); one result per
/// path.
fn enqueue(ctx: &Ctx, body: &[u8]) -> Response {
    let body = serde_json::from_slice::<Value>(body).unwrap_or_default();
    let paths: Vec<PathBuf> = match body
        .get("paths")
        .cloned()
        .and_then(|p| serde_json::from_value::<Vec<String>>(p).ok())
    {
        Some(p) if !p.is_empty() => p.into_iter().map(PathBuf::from).collect(),
        _ => return error(400, r#"send {"paths": ["file", …]}"#),
    };
    let project = match body.get("project") {
        None | Some(Value::Null) => None,
        Some(Value::String(p)) => Some(p.clone()),
        Some(_) => return error(400, "project: expected a project's name"),
    };
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    match ctx.ask(|reply| QueueMsg::Enqueue {
        paths,
        project,
        reply,
    }) {
        Ok(results) => {
            let results: Vec<Value> = names
                .iter()
                .zip(results)
                .map(|(path, r)| match r {
                    Ok(id) => json!({ "path": path, "id": id }),
                    Err(e) => json!({ "path": path, "error": e }),
                })
                .collect();
            json(200, &json!({ "results": results }))
        }
        Err(e) => error(503, &e),
    }
}

fn list_jobs(ctx: &Ctx, req: &Request) -> Response {
    let state = req.query_param("state").filter(|s| !s.is_empty());
    if let Some(s) = &state {
        if !crate::ledger::JobState::ALL.iter().any(|k| k.as_str() == s) {
            return error(400, &format!("unknown state {s:?}"));
        }
    }
    let limit = match req.query_param("limit").map(|l| l.parse::<usize>()) {
        None => 100,
        Some(Ok(n)) if (1..=1000).contains(&n) => n,
        Some(_) => return error(400, "limit must be a number from 1 to 1000"),
    };
    let mut jobs = match ctx.jobs() {
        Ok(j) => j,
        Err(e) => return error(503, &e),
    };
    let project = req.query_param("project").filter(|p| !p.is_empty());
    jobs.retain(|j| state.as_deref().is_none_or(|s| j.state.as_str() == s));
    jobs.retain(|j| project.as_deref().is_none_or(|p| j.project == p));
    jobs.sort_by(|a, b| b.updated_ms.cmp(&a.updated_ms).then(b.id.cmp(&a.id)));
    let total = jobs.len();
    jobs.truncate(limit);
    let list: Vec<Value> = jobs.iter().map(super::model::job_json).collect();
    json(200, &json!({ "total": total, "jobs": list }))
}

/// The filter of `/api/history` and `/api/history.csv`; the error names the parameter.
fn history_query(req: &Request) -> Result<history::Query, Response> {
    let param = |name: &str| req.query_param(name).filter(|v| !v.is_empty());
    let state = match param("state") {
        None => None,
        Some(s) => match JobState::ALL.iter().find(|k| k.as_str() == s) {
            Some(k) if k.is_final() => Some(*k),
            _ => {
                return Err(error(
                    400,
                    &format!("state {s:?}: the history holds done, failed and skipped jobs"),
                ))
            }
        },
    };
    let time = |name: &str| match param(name) {
        None => Ok(None),
        Some(t) => crate::timefmt::parse_rfc3339_ms(&t)
            .map(Some)
            .ok_or_else(|| {
                error(
                    400,
                    &format!("{name} {t:?} is not an RFC 3339 time (2025-06-26T20:14:33Z)"),
                )
            }),
    };
    let cursor = match param("cursor") {
        None => None,
        Some(c) => Some(
            history::Cursor::decode(&c)
                .ok_or_else(|| error(400, "cursor: give back the `next` of an earlier page"))?,
        ),
    };
    let page_size = match param("page_size").map(|n| n.parse::<usize>()) {
        None => history::DEFAULT_PAGE,
        Some(Ok(n)) if (1..=history::MAX_PAGE).contains(&n) => n,
        Some(_) => {
            return Err(error(
                400,
                &format!("page_size must be a number from 1 to {}", history::MAX_PAGE),
            ))
        }
    };
    Ok(history::Query {
        project: param("project"),
        q: param("q"),
        state,
        since_ms: time("since")?,
        until_ms: time("until")?,
        cursor,
        page_size,
        count: true,
    })
}

fn history(ctx: &Ctx, req: &Request) -> Response {
    let query = match history_query(req) {
        Ok(q) => q,
        Err(resp) => return resp,
    };
    match ctx.ask(|reply| QueueMsg::History { query, reply }) {
        Ok(page) => {
            let jobs: Vec<Value> = page.jobs.iter().map(super::model::history_json).collect();
            json(
                200,
                &json!({
                    "jobs": jobs,
                    "next": page.next.map(history::Cursor::encode),
                    "total": page.total,
                }),
            )
        }
        Err(e) => error(503, &e),
    }
}

/// Rows in one CSV export; a narrower filter gets the rest.
const CSV_ROWS: usize = 100_000;

/// The whole filter as CSV, asked from the queue a page at a time (it never holds the queue
/// for long).
fn history_csv(ctx: &Ctx, req: &Request) -> Response {
    let mut query = match history_query(req) {
        Ok(q) => q,
        Err(resp) => return resp,
    };
    query.page_size = history::MAX_PAGE;
    query.count = false;
    let mut out = String::new();
    history::csv_line(history::CSV_HEADER.iter().copied(), &mut out);
    let mut rows = 0;
    loop {
        let q = query.clone();
        let page = match ctx.ask(|reply| QueueMsg::History { query: q, reply }) {
            Ok(p) => p,
            Err(e) => return error(503, &e),
        };
        for job in page.jobs.iter().take(CSV_ROWS - rows) {
            history::csv_row(job, &mut out);
        }
        rows += page.jobs.len();
        match page.next {
            Some(next) if rows < CSV_ROWS => query.cursor = Some(next),
            _ => break,
        }
    }
    Response::new(200, "text/csv; charset=utf-8", out).with_header(
        "Content-Disposition",
        "attachment; filename=\"postflow-history.csv\"",
    )
}

/// Days in `/api/throughput`.
const THROUGHPUT_DAYS: u64 = 30;

fn throughput(ctx: &Ctx) -> Response {
    let now = crate::queue::now_ms();
    ctx.throughput.collect(now);
    let (minutes, saved) = ctx.throughput.recent(now);
    let today = history::day_of(now);
    let days = match ctx.ask(|reply| QueueMsg::Days {
        today,
        days: THROUGHPUT_DAYS,
        reply,
    }) {
        Ok(d) => d,
        Err(e) => return error(503, &e),
    };
    let minutes: Vec<Value> = minutes
        .into_iter()
        .map(|(start, bytes)| json!({ "start": history::rfc3339_ms(start), "bytes": bytes }))
        .collect();
    let days: Vec<Value> = days
        .into_iter()
        .map(|(day, t)| {
            json!({
                "date": history::date_of_day(day),
                "bytes": t.bytes,
                "files": t.files,
                "failed": t.failed,
            })
        })
        .collect();
    json(
        200,
        &json!({
            "minutes": minutes,
            "days": days,
            "time_zone": "UTC",
            "saved": saved.map(history::rfc3339_ms),
        }),
    )
}

fn oauth_start(ctx: &Ctx) -> Response {
    let Some(login) = &ctx.login else {
        return login_unavailable();
    };
    match login.authorize_url() {
        Ok(url) => Response::new(303, "text/plain; charset=utf-8", "")
            .with_header("Location", url)
            .with_header("Referrer-Policy", "no-referrer"),
        Err(e) => error(502, &e),
    }
}

fn oauth_callback(ctx: &Ctx, req: &Request) -> Response {
    let Some(login) = &ctx.login else {
        return login_unavailable();
    };
    let url = format!("http://{}{}?{}", ctx.listen, req.path, req.query);
    match login.complete(&url) {
        Ok(()) => Response::new(303, "text/plain; charset=utf-8", "").with_header("Location", "/"),
        Err(e) => Response::new(
            400,
            "text/plain; charset=utf-8",
            format!("Frame.io login failed: {e}\n"),
        ),
    }
}

fn oauth_code(ctx: &Ctx, body: &[u8]) -> Response {
    let Some(login) = &ctx.login else {
        return login_unavailable();
    };
    // The page sends {"url": "..."}; a plain-text body is accepted too (curl).
    let text = String::from_utf8_lossy(body);
    let pasted = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| v.get("url").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| text.trim().to_string());
    if pasted.is_empty() {
        return error(
            400,
            "paste the address your browser ended on after logging in",
        );
    }
    match login.complete(&pasted) {
        Ok(()) => json(200, &json!({ "ok": true })),
        Err(e) => error(400, &e),
    }
}

fn login_unavailable() -> Response {
    error(
        503,
        "Frame.io login is not available from the dashboard in this build; run `postflow auth config.json`",
    )
}

/// The host names that mean "this dashboard", with the port.
fn host_allowed(ctx: &Ctx, host: &str) -> bool {
    let port = ctx.listen.port();
    let (name, host_port) = match host.rsplit_once(':') {
        Some((n, p)) if !p.contains(']') => (n, p.parse::<u16>().ok()),
        _ => (host, Some(80)),
    };
    if host_port != Some(port) {
        return false;
    }
    if !ctx.listen.ip().is_loopback() {
        // Reachable from other machines under names we cannot know; the token guards it.
        return true;
    }
    let ip = ctx.listen.ip().to_string();
    name.eq_ignore_ascii_case("localhost")
        || name == ip
        || name.trim_start_matches('[').trim_end_matches(']') == ip
}

/// `authority` is `Host`, or the host of an absolute-form target (RFC 9112 §3.2.2).
fn check_host(ctx: &Ctx, req: &Request) -> Result<(), Response> {
    match req.authority.as_str() {
        h if host_allowed(ctx, h) => Ok(()),
        _ => Err(error(403, "the Host header does not name this dashboard")),
    }
}

/// Browsers send `Origin` on every cross-site POST and WebSocket; a client without one (curl,
/// `postflow upload`) is not a browser page and cannot be tricked into a request.
fn check_origin(ctx: &Ctx, req: &Request) -> Result<(), Response> {
    let Some(origin) = req.header("origin") else {
        return Ok(());
    };
    let ok = origin
        .strip_prefix("http://")
        .is_some_and(|h| host_allowed(ctx, h));
    if ok {
        Ok(())
    } else {
        Err(error(403, "requests from other web pages are refused"))
    }
}

/// With a token configured: `None` when the request carries it; else the reply (401, or the
/// cookie-setting redirect for `/?token=…`).
fn check_token(ctx: &Ctx, req: &Request) -> Option<Response> {
    let token = ctx.token.as_deref()?;
    let bearer = req
        .header("authorization")
        .and_then(|a| a.strip_prefix("Bearer "));
    let cookie = req.cookie(COOKIE);
    if [bearer, cookie]
        .into_iter()
        .flatten()
        .any(|t| same(t.trim(), token))
    {
        return None;
    }
    if req.method == "GET" && req.path == "/" {
        if let Some(given) = req.query_param("token") {
            if same(&given, token) {
                return Some(
                    Response::new(303, "text/plain; charset=utf-8", "")
                        .with_header("Location", "/")
                        .with_header(
                            "Set-Cookie",
                            format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict"),
                        ),
                );
            }
        }
        return Some(Response::new(
            401,
            "text/plain; charset=utf-8",
            "This dashboard needs its token: open /?token=<dashboard.token from config.json>\n",
        ));
    }
    Some(error(401, "missing or wrong dashboard token").with_header("WWW-Authenticate", "Bearer"))
}

/// Compares without stopping at the first difference, so timing says nothing about the token.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}
