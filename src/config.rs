//! `config.json`: every key of the contract with its default, validated before anything starts.
//!
//! The file is read with serde_json into a `Value` and then walked key by key, so that every
//! error names the key path and what is wrong in one line, e.g.
//! `config.json: watch.settle_secs: expected a number, found "abc"`. Unknown keys are errors
//! (a typo must not silently fall back to a default). Relative paths are resolved against the
//! folder holding the config file.

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

use crate::glob::{Glob, GlobSet};
use crate::layout::{folder_parts, Layout, Template};

pub const DEFAULT_INCLUDE: &[&str] = &[
    "*.mov", "*.mp4", "*.mxf", "*.m4v", "*.wav", "*.aif", "*.zip", "*.pdf", "*.png", "*.jpg",
    "*.exr",
];
pub const DEFAULT_EXCLUDE: &[&str] = &[
    ".*",
    "._*",
    "~*",
    "*.tmp",
    "*.part",
    "*.partial",
    "Thumbs.db",
    "desktop.ini",
];
pub const DEFAULT_SCOPES: &str = "openid email profile offline_access additional_info.roles";
pub const SECRET_ENV: &str = "POSTFLOW_CLIENT_SECRET";

#[derive(Clone)]
pub struct Config {
    /// The config file itself.
    pub path: PathBuf,
    pub watch: WatchConfig,
    pub frameio: FrameioConfig,
    pub layout: LayoutConfig,
    pub upload: UploadConfig,
    pub serve: ServeConfig,
    pub tunnel: TunnelConfig,
    pub dashboard: DashboardConfig,
    pub state_dir: PathBuf,
    pub notify: NotifyConfig,
    pub review: ReviewConfig,
    pub log_level: String,
    /// The projects, never empty: the `projects` list, or without one the project
    /// [`DEFAULT_PROJECT`] made from `watch.root`, `frameio.project_id` and the rest.
    pub projects: Vec<ProjectConfig>,
    /// The file has a `projects` list (notifications then name the project).
    pub several_projects: bool,
    /// Every key the file may hold, dotted (`watch.settle_secs`), as the parser read them:
    /// every key is read whether the file sets it or not, and any other key is refused. The
    /// configuration reference (docs/guide.md) is tested against this list.
    pub keys: Vec<String>,
    /// Non-fatal findings (e.g. a readable secret) for the caller to log once logging is up.
    pub warnings: Vec<String>,
}

/// The name of the one project of a config without `projects` (and of every job in a ledger
/// written before projects existed).
pub const DEFAULT_PROJECT: &str = "default";

/// One project: a folder watched, and where its files go in Frame.io. Everything not here
/// (the sign-in, the tunnel, the scheduler, the page) is shared by all projects.
#[derive(Clone, Debug)]
pub struct ProjectConfig {
    /// `[A-Za-z0-9_.-]+`; jobs, the API and `/metrics` carry it.
    pub name: String,
    pub root: PathBuf,
    pub account_id: String,
    pub project_id: String,
    /// Destination path under the project's root folder ("" = the root).
    pub folder: String,
    pub layout: LayoutConfig,
    pub notify: NotifyConfig,
    pub include: GlobSet,
    pub exclude: GlobSet,
    /// Where its errors point: `watch.root` for the default project, `projects[i]` else.
    pub key: String,
}

impl ProjectConfig {
    /// The layout engine of this project.
    pub fn layout(&self) -> Layout {
        Layout::new(
            &self.folder,
            self.layout.pattern.clone(),
            self.layout.folders.clone(),
            self.layout.mirror_unmatched,
        )
        .expect("the folder was validated at load")
        .stacking(self.layout.stack_versions)
    }

    /// What the watcher of this project needs: its root and names, the shared timings.
    pub fn watch(&self, shared: &WatchConfig) -> WatchConfig {
        WatchConfig {
            root: self.root.clone(),
            include: self.include.clone(),
            exclude: self.exclude.clone(),
            ..shared.clone()
        }
    }

    /// The key naming this project's root in messages (`watch.root`, `projects[1].root`).
    pub fn root_key(&self) -> String {
        if self.key == "watch.root" {
            self.key.clone()
        } else {
            format!("{}.root", self.key)
        }
    }
}

#[derive(Clone, Debug)]
pub struct WatchConfig {
    /// The default project's root; empty with a `projects` list (each has its own).
    pub root: PathBuf,
    pub include: GlobSet,
    pub exclude: GlobSet,
    pub settle: Duration,
    pub rescan: Duration,
    pub events: bool,
    pub upload_existing: bool,
    pub verify_container: bool,
}

#[derive(Clone)]
pub struct FrameioConfig {
    pub client_id: String,
    pub client_secret: String,
    pub redirect_uri: String,
    pub scopes: String,
    pub account_id: String,
    pub project_id: String,
    /// Destination path under the project's root folder ("" = the root).
    pub folder: String,
    pub upload: UploadMode,
    pub api_base: String,
    pub ims_base: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UploadMode {
    Auto,
    Remote,
    Local,
}

#[derive(Clone, Debug)]
pub struct LayoutConfig {
    pub pattern: Option<Template>,
    pub folders: Option<Template>,
    pub mirror_unmatched: bool,
    /// Stack each new version on the previous one in Frame.io.
    pub stack_versions: bool,
}

#[derive(Clone, Debug)]
pub struct UploadConfig {
    pub concurrency: usize,
    pub parallel_parts: usize,
    pub max_attempts: u32,
    pub max_delay: Duration,
    /// Every byte in and Frame.io still not complete after this long: delete, retry.
    pub processing_timeout: Duration,
    /// `upload.bandwidth`: the limit on every outgoing file byte, by time of week.
    pub bandwidth: crate::bandwidth::Timetable,
    /// `upload.order`: which queued job of a project's turn goes first.
    pub order: UploadOrder,
    /// `upload.verify`: how the bytes that arrived are checked.
    pub verify: Verify,
}

/// `upload.verify` (DESIGN "Verification").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verify {
    /// No `Content-MD5`, no claim.
    Off,
    /// Every part carries its MD5 for S3 to check; a pull must be served in full.
    Parts,
    /// `Parts`, then Frame.io's original downloaded back and compared (SHA-256).
    Download,
}

impl Verify {
    /// Parts carry `Content-MD5` and done jobs say how they were verified.
    pub fn parts(self) -> bool {
        self != Verify::Off
    }
}

/// `upload.order`: among a project's queued jobs, which goes first (an "upload next" goes
/// before all of them, across projects).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UploadOrder {
    /// First stable, first out.
    Oldest,
    Smallest,
    /// Last stable, first out.
    Newest,
}

/// `review`: Frame.io's webhooks back to postflow (DESIGN.md, "Review loop").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReviewConfig {
    /// `review.webhooks`: "auto" (on whenever a public URL exists) is `true`, "off" `false`.
    pub webhooks: bool,
    /// `review.events`: what the webhook subscribes to.
    pub events: Vec<String>,
    /// `review.catch_up_days`: comments on files uploaded this recently are fetched after a
    /// restart.
    pub catch_up_days: u64,
}

/// The events a webhook subscribes to unless `review.events` says otherwise.
pub const REVIEW_EVENTS: &[&str] = &[
    "file.ready",
    "comment.created",
    "comment.completed",
    "metadata.value.updated",
];

/// The events postflow acts on (`review.events` may name only these).
const REVIEW_EVENTS_KNOWN: &[&str] = &[
    "file.ready",
    "comment.created",
    "comment.completed",
    "comment.updated",
    "comment.uncompleted",
    "metadata.value.updated",
];

impl Default for ReviewConfig {
    fn default() -> ReviewConfig {
        ReviewConfig {
            webhooks: true,
            events: REVIEW_EVENTS.iter().map(|s| s.to_string()).collect(),
            catch_up_days: 7,
        }
    }
}

#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub link_ttl: Duration,
    pub max_connections: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TunnelMode {
    Quick,
    Named,
    External,
    Off,
}

/// cloudflared's transport to Cloudflare's edge (`tunnel.protocol`, passed as `--protocol`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TunnelProtocol {
    /// cloudflared's own choice: QUIC, falling back to HTTP/2 when QUIC fails.
    Auto,
    /// QUIC over UDP 7844.
    Quic,
    /// HTTP/2 over TCP 7844: for networks that block UDP.
    Http2,
}

impl TunnelProtocol {
    /// The `--protocol` value; None for `auto` (cloudflared's default, on every version).
    pub fn flag(self) -> Option<&'static str> {
        match self {
            TunnelProtocol::Auto => None,
            TunnelProtocol::Quic => Some("quic"),
            TunnelProtocol::Http2 => Some("http2"),
        }
    }
}

#[derive(Clone, Debug)]
pub struct TunnelConfig {
    pub mode: TunnelMode,
    /// A bare name is looked up on PATH; anything with a separator is a path.
    pub cloudflared: PathBuf,
    /// Without a trailing `/`.
    pub public_url: Option<String>,
    pub token_file: Option<PathBuf>,
    pub protocol: TunnelProtocol,
}

#[derive(Clone)]
pub struct DashboardConfig {
    pub listen: SocketAddr,
    pub token: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotifyFormat {
    Discord,
    Slack,
    Json,
}

#[derive(Clone, Debug)]
pub struct NotifyConfig {
    pub webhook_url: Option<String>,
    pub format: NotifyFormat,
}

/// What a config problem is: the key path and the sentence. Displayed by `main` as
/// `<file>: <key>: <message>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    /// Dotted key path; empty for whole-file problems.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}: {}: {}", self.file, self.key, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

type KeyResult<T> = Result<T, (String, String)>;

fn key_err<T>(key: &str, message: impl Into<String>) -> KeyResult<T> {
    Err((key.to_string(), message.into()))
}

impl Config {
    /// Reads and validates a config file. The secret may come from `POSTFLOW_CLIENT_SECRET`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let secret_env = std::env::var(SECRET_ENV).ok().filter(|s| !s.is_empty());
        Config::load_with_env(path, secret_env)
    }

    pub fn load_with_env(path: &Path, secret_env: Option<String>) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let whole = |message: String| ConfigError {
            file: file.clone(),
            key: String::new(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| whole(format!("cannot read: {e}")))?;
        let value: Value = serde_json::from_str(&text).map_err(|e| {
            whole(format!(
                "not valid JSON at line {}, column {}: {}",
                e.line(),
                e.column(),
                strip_position(&e.to_string())
            ))
        })?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let base = std::path::absolute(base).unwrap_or_else(|_| base.to_path_buf());
        let mut config =
            from_value(value, &base, secret_env.clone()).map_err(|(key, message)| ConfigError {
                file: file.clone(),
                key,
                message,
            })?;
        config.path = path.to_path_buf();
        // A Discord or Slack webhook URL is a credential too: whoever holds it may post.
        let holds_secret = (!config.frameio.client_secret.is_empty() && secret_env.is_none())
            || config.dashboard.token.is_some()
            || config.notify.webhook_url.is_some();
        if holds_secret && crate::private_file::readable_by_others(path) {
            config.warnings.push(format!(
                "{file} holds a secret and is readable by other users: run `{}` \
                 (or pass the client secret in {SECRET_ENV})",
                crate::private_file::how_to_restrict(path)
            ));
        }
        Ok(config)
    }

    /// What `run` needs beyond a valid file: the Frame.io ids.
    pub fn require_for_run(&self) -> Result<(), ConfigError> {
        const CREDENTIAL: &str =
            "required to run: your Adobe OAuth Web App credential (docs/guide.md, \"Set-up\")";
        const IDS: &str =
            "required to run: `postflow check` lists the accounts and projects you can see";
        let mut ids = Vec::new();
        for p in &self.projects {
            let (account, project) = if self.several_projects {
                (
                    format!("{}.account_id", p.key),
                    format!("{}.project_id", p.key),
                )
            } else {
                ("frameio.account_id".into(), "frameio.project_id".into())
            };
            ids.push((account, &p.account_id, IDS));
            ids.push((project, &p.project_id, IDS));
        }
        let missing = [
            ("frameio.client_id", &self.frameio.client_id, CREDENTIAL),
            (
                "frameio.client_secret",
                &self.frameio.client_secret,
                "required to run: set it here or in the POSTFLOW_CLIENT_SECRET environment variable",
            ),
            ("frameio.redirect_uri", &self.frameio.redirect_uri, CREDENTIAL),
        ]
        .into_iter()
        .map(|(k, v, m)| (k.to_string(), v, m))
        .chain(ids)
        .find(|(_, v, _)| v.is_empty());
        match missing {
            None => Ok(()),
            Some((key, _, message)) => Err(ConfigError {
                file: self.path.display().to_string(),
                key,
                message: message.to_string(),
            }),
        }
    }

    /// The project named `name`.
    pub fn project(&self, name: &str) -> Option<&ProjectConfig> {
        self.projects.iter().find(|p| p.name == name)
    }

    /// The project whose root holds `path` (canonical on both sides), with the path relative
    /// to that root; `None` for a path under no root.
    pub fn project_of(&self, path: &Path) -> Option<(&ProjectConfig, PathBuf)> {
        let full = std::fs::canonicalize(path).ok()?;
        self.projects.iter().find_map(|p| {
            let root = std::fs::canonicalize(&p.root).ok()?;
            full.strip_prefix(&root)
                .ok()
                .map(|rel| (p, rel.to_path_buf()))
        })
    }
}

/// Frame.io folder paths (`frameio.folder`, `layout.folders`) are `/`-separated, and a `\` in
/// them is a separator too, on every platform: a Windows user writes `Dailies\\Day 01` (JSON
/// for `Dailies\Day 01`) meaning two folders, and a Frame.io folder named with a backslash is
/// never what anyone meant.
fn backslashes_as_slashes(path: String) -> String {
    path.replace('\\', "/")
}

/// serde_json appends " at line L column C"; we print the position ourselves.
fn strip_position(message: &str) -> &str {
    match message.rfind(" at line ") {
        Some(i) => &message[..i],
        None => message,
    }
}

/// A JSON object being consumed key by key; leftover keys are unknown keys.
struct Section {
    prefix: String,
    map: Map<String, Value>,
    /// Every key read so far, values and sub-sections: the "did you mean" candidates.
    known: Vec<&'static str>,
    /// The keys read as values, dotted: what `finish` hands to `Config::keys`.
    leaves: Vec<String>,
}

impl Section {
    fn new(prefix: &str, value: Option<Value>) -> KeyResult<Section> {
        let map = match value {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(map)) => map,
            Some(other) => {
                let key = if prefix.is_empty() { "" } else { prefix };
                return key_err(
                    key,
                    format!("expected an object, found {}", describe(&other)),
                );
            }
        };
        Ok(Section {
            prefix: prefix.to_string(),
            map,
            known: Vec::new(),
            leaves: Vec::new(),
        })
    }

    fn path(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}.{}", self.prefix, key)
        }
    }

    fn take(&mut self, key: &'static str) -> Option<Value> {
        self.known.push(key);
        self.map.remove(key).filter(|v| !v.is_null())
    }

    /// A key holding a value (not a sub-section).
    fn value(&mut self, key: &'static str) -> Option<Value> {
        self.leaves.push(self.path(key));
        self.take(key)
    }

    fn section(&mut self, key: &'static str) -> KeyResult<Section> {
        let value = self.take(key);
        Section::new(&self.path(key), value)
    }

    fn string(&mut self, key: &'static str) -> KeyResult<Option<String>> {
        match self.value(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => key_err(
                &self.path(key),
                format!("expected a string, found {}", describe(&other)),
            ),
        }
    }

    fn string_or(&mut self, key: &'static str, default: &str) -> KeyResult<String> {
        Ok(self.string(key)?.unwrap_or_else(|| default.to_string()))
    }

    fn bool_or(&mut self, key: &'static str, default: bool) -> KeyResult<bool> {
        Ok(self.bool(key)?.unwrap_or(default))
    }

    fn bool(&mut self, key: &'static str) -> KeyResult<Option<bool>> {
        match self.value(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(other) => key_err(
                &self.path(key),
                format!("expected true or false, found {}", describe(&other)),
            ),
        }
    }

    /// A whole number in `min..=max`.
    fn number_or(&mut self, key: &'static str, default: u64, min: u64, max: u64) -> KeyResult<u64> {
        let n = match self.value(key) {
            None => return Ok(default),
            Some(Value::Number(n)) => n,
            Some(other) => {
                return key_err(
                    &self.path(key),
                    format!("expected a number, found {}", describe(&other)),
                )
            }
        };
        match n.as_u64() {
            Some(v) if (min..=max).contains(&v) => Ok(v),
            _ => key_err(
                &self.path(key),
                format!("expected a whole number from {min} to {max}, found {n}"),
            ),
        }
    }

    fn strings_or(&mut self, key: &'static str, default: &[&str]) -> KeyResult<Vec<String>> {
        match self.value(key) {
            None => Ok(default.iter().map(|s| s.to_string()).collect()),
            Some(Value::Array(items)) => items
                .into_iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::String(s) => Ok(s),
                    other => key_err(
                        &format!("{}[{i}]", self.path(key)),
                        format!("expected a string, found {}", describe(&other)),
                    ),
                })
                .collect(),
            Some(other) => key_err(
                &self.path(key),
                format!("expected a list of strings, found {}", describe(&other)),
            ),
        }
    }

    fn choice<T: Copy>(
        &mut self,
        key: &'static str,
        default: T,
        options: &[(&str, T)],
    ) -> KeyResult<T> {
        let Some(s) = self.string(key)? else {
            return Ok(default);
        };
        options
            .iter()
            .find(|(name, _)| *name == s)
            .map(|(_, v)| *v)
            .ok_or_else(|| {
                let names: Vec<String> = options.iter().map(|(n, _)| format!("{n:?}")).collect();
                (
                    self.path(key),
                    format!("expected one of {}, found {s:?}", names.join(", ")),
                )
            })
    }

    /// Every key left over is unknown; name the first, with a suggestion when one is close.
    /// Otherwise hands back the keys read as values.
    fn finish(self) -> KeyResult<Vec<String>> {
        let Some(key) = self.map.keys().next() else {
            return Ok(self.leaves);
        };
        let hint = self
            .known
            .iter()
            .filter(|k| edit_distance(k, key) <= 2)
            .min_by_key(|k| edit_distance(k, key))
            .map(|k| format!(" (did you mean {k:?}?)"))
            .unwrap_or_default();
        key_err(&self.path(key), format!("unknown key{hint}"))
    }
}

fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("{s:?}"),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "an object".into(),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

fn resolve(base: &Path, p: &str) -> PathBuf {
    let path = Path::new(p);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

fn parse_addr(key: &str, s: &str) -> KeyResult<SocketAddr> {
    s.parse().or_else(|_| {
        key_err(
            key,
            format!("expected an address like \"127.0.0.1:8080\", found {s:?}"),
        )
    })
}

fn parse_url(key: &str, s: &str) -> KeyResult<String> {
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"));
    match rest {
        Some(r) if !r.is_empty() && !r.starts_with('/') && !s.contains(char::is_whitespace) => {
            Ok(s.trim_end_matches('/').to_string())
        }
        _ => key_err(key, format!("expected an http(s) URL, found {s:?}")),
    }
}

fn parse_globs(key: &str, patterns: Vec<String>) -> KeyResult<GlobSet> {
    patterns
        .iter()
        .enumerate()
        .map(|(i, p)| Glob::new(p).or_else(|e| key_err(&format!("{key}[{i}]"), e)))
        .collect::<KeyResult<Vec<_>>>()
        .map(GlobSet::new)
}

const LEVELS: &[&str] = &["off", "error", "warn", "info", "debug", "trace"];

/// Accepts a level (`info`) or an env_logger filter (`info,postflow::serve=debug`).
fn check_log_level(s: &str) -> KeyResult<()> {
    let bad = s.split(',').map(str::trim).find(|part| {
        let level = part.rsplit('=').next().unwrap_or(part);
        !LEVELS.contains(&level.to_ascii_lowercase().as_str())
    });
    match bad {
        None if !s.trim().is_empty() => Ok(()),
        _ => key_err(
            "log_level",
            format!(
                "expected one of {} (or module=level pairs), found {s:?}",
                LEVELS.join(", ")
            ),
        ),
    }
}

fn from_value(value: Value, base: &Path, secret_env: Option<String>) -> KeyResult<Config> {
    let mut top = Section::new("", Some(value))?;
    let mut keys = Vec::new();

    let mut w = top.section("watch")?;
    let root = match w.string("root")? {
        Some(r) if !r.trim().is_empty() => Some(resolve(base, &r)),
        _ => None,
    };
    if let Some(root) = &root {
        check_root("watch.root", root)?;
    }
    let include = w.strings_or("include", DEFAULT_INCLUDE)?;
    let exclude = w.strings_or("exclude", DEFAULT_EXCLUDE)?;
    let watch = WatchConfig {
        root: root.clone().unwrap_or_default(),
        include: parse_globs("watch.include", include)?,
        exclude: parse_globs("watch.exclude", exclude)?,
        settle: Duration::from_secs(w.number_or("settle_secs", 15, 0, 86_400)?),
        rescan: Duration::from_secs(w.number_or("rescan_secs", 60, 1, 86_400)?),
        events: w.bool_or("events", true)?,
        upload_existing: w.bool_or("upload_existing", false)?,
        verify_container: w.bool_or("verify_container", true)?,
    };
    keys.extend(w.finish()?);

    let mut f = top.section("frameio")?;
    let project_id_set = f.map.get("project_id").is_some_and(|v| !v.is_null());
    let folder_set = f.map.get("folder").is_some_and(|v| !v.is_null());
    let file_secret = f.string_or("client_secret", "")?;
    let frameio = FrameioConfig {
        client_id: f.string_or("client_id", "")?,
        client_secret: secret_env.unwrap_or(file_secret),
        redirect_uri: match f.string("redirect_uri")? {
            Some(u) if !u.is_empty() => parse_url("frameio.redirect_uri", &u)?,
            _ => String::new(),
        },
        scopes: f.string_or("scopes", DEFAULT_SCOPES)?,
        account_id: f.string_or("account_id", "")?,
        project_id: f.string_or("project_id", "")?,
        folder: {
            let folder = backslashes_as_slashes(f.string_or("folder", "")?);
            folder_parts(&folder).or_else(|e| key_err("frameio.folder", e))?;
            folder
        },
        upload: f.choice(
            "upload",
            UploadMode::Auto,
            &[
                ("auto", UploadMode::Auto),
                ("remote", UploadMode::Remote),
                ("local", UploadMode::Local),
            ],
        )?,
        api_base: parse_url(
            "frameio.api_base",
            &f.string_or("api_base", "https://api.frame.io")?,
        )?,
        ims_base: parse_url(
            "frameio.ims_base",
            &f.string_or("ims_base", "https://ims-na1.adobelogin.com")?,
        )?,
    };
    if frameio.scopes.trim().is_empty() {
        return key_err("frameio.scopes", "must not be empty");
    }
    keys.extend(f.finish()?);

    let mut l = top.section("layout")?;
    let layout = parse_layout(&mut l)?;
    keys.extend(l.finish()?);

    let mut u = top.section("upload")?;
    let upload = UploadConfig {
        concurrency: u.number_or("concurrency", 2, 1, 64)? as usize,
        parallel_parts: u.number_or("parallel_parts", 4, 1, 64)? as usize,
        max_attempts: u.number_or("max_attempts", 10, 1, 1000)? as u32,
        max_delay: Duration::from_secs(u.number_or("max_delay_secs", 1800, 1, 604_800)?),
        processing_timeout: Duration::from_secs(u.number_or(
            "processing_timeout_secs",
            3600,
            1,
            30 * 86_400,
        )?),
        verify: u.choice(
            "verify",
            Verify::Parts,
            &[
                ("parts", Verify::Parts),
                ("download", Verify::Download),
                ("off", Verify::Off),
            ],
        )?,
        order: u.choice(
            "order",
            UploadOrder::Oldest,
            &[
                ("oldest", UploadOrder::Oldest),
                ("smallest", UploadOrder::Smallest),
                ("newest", UploadOrder::Newest),
            ],
        )?,
        bandwidth: match crate::bandwidth::parse(&u.string_or("bandwidth", "off")?) {
            Ok(t) => t,
            Err(e) => return key_err("upload.bandwidth", e),
        },
    };
    keys.extend(u.finish()?);

    let mut s = top.section("serve")?;
    let serve = ServeConfig {
        listen: parse_addr("serve.listen", &s.string_or("listen", "127.0.0.1:8081")?)?,
        link_ttl: Duration::from_secs(s.number_or("link_ttl_secs", 86_400, 60, 30 * 86_400)?),
        max_connections: s.number_or("max_connections", 64, 1, 4096)? as usize,
    };
    keys.extend(s.finish()?);

    let mut t = top.section("tunnel")?;
    let mode = t.choice(
        "mode",
        TunnelMode::Quick,
        &[
            ("quick", TunnelMode::Quick),
            ("named", TunnelMode::Named),
            ("external", TunnelMode::External),
            ("off", TunnelMode::Off),
        ],
    )?;
    let cloudflared = t.string_or("cloudflared", "cloudflared")?;
    let cloudflared =
        if cloudflared.contains(std::path::MAIN_SEPARATOR) || cloudflared.contains('/') {
            resolve(base, &cloudflared)
        } else {
            PathBuf::from(cloudflared)
        };
    let public_url = t
        .string("public_url")?
        .filter(|u| !u.is_empty())
        .map(|u| parse_url("tunnel.public_url", &u))
        .transpose()?;
    let token_file = t
        .string("token_file")?
        .filter(|p| !p.is_empty())
        .map(|p| resolve(base, &p));
    let protocol = t.choice(
        "protocol",
        TunnelProtocol::Auto,
        &[
            ("auto", TunnelProtocol::Auto),
            ("quic", TunnelProtocol::Quic),
            ("http2", TunnelProtocol::Http2),
        ],
    )?;
    match mode {
        TunnelMode::Named | TunnelMode::External if public_url.is_none() => {
            let m = if mode == TunnelMode::Named {
                "named"
            } else {
                "external"
            };
            return key_err(
                "tunnel.public_url",
                format!("required when tunnel.mode is {m:?} (the https address that reaches serve.listen)"),
            );
        }
        TunnelMode::Named => match &token_file {
            None => {
                return key_err(
                    "tunnel.token_file",
                    "required when tunnel.mode is \"named\" (a file holding the tunnel token)",
                )
            }
            Some(p) if !p.is_file() => {
                return key_err(
                    "tunnel.token_file",
                    format!("no such file: {}", p.display()),
                )
            }
            Some(_) => {}
        },
        _ => {}
    }
    let tunnel = TunnelConfig {
        mode,
        cloudflared,
        public_url,
        token_file,
        protocol,
    };
    keys.extend(t.finish()?);

    let mut d = top.section("dashboard")?;
    let dashboard = DashboardConfig {
        listen: parse_addr(
            "dashboard.listen",
            &d.string_or("listen", "127.0.0.1:8080")?,
        )?,
        token: d.string("token")?.filter(|t| !t.is_empty()),
    };
    if !dashboard.listen.ip().is_loopback() && dashboard.token.is_none() {
        return key_err(
            "dashboard.token",
            format!(
                "required because dashboard.listen ({}) is not a loopback address",
                dashboard.listen
            ),
        );
    }
    if dashboard.token.as_ref().is_some_and(|t| t.len() < 16) {
        return key_err("dashboard.token", "too short: use at least 16 characters");
    }
    keys.extend(d.finish()?);

    let state_dir = resolve(base, &top.string_or("state_dir", "postflow-state")?);

    let mut n = top.section("notify")?;
    let notify = parse_notify(&mut n)?;
    keys.extend(n.finish()?);

    let mut r = top.section("review")?;
    let review = ReviewConfig {
        webhooks: r.choice("webhooks", true, &[("auto", true), ("off", false)])?,
        events: {
            let events = r.strings_or("events", REVIEW_EVENTS)?;
            if events.is_empty() {
                return key_err(
                    "review.events",
                    "empty: name at least one event, or set review.webhooks to \"off\"",
                );
            }
            for (i, e) in events.iter().enumerate() {
                if !REVIEW_EVENTS_KNOWN.contains(&e.as_str()) {
                    return key_err(
                        &format!("review.events[{i}]"),
                        format!(
                            "unknown event {e:?}: expected one of {}",
                            REVIEW_EVENTS_KNOWN.join(", ")
                        ),
                    );
                }
            }
            events
        },
        catch_up_days: r.number_or("catch_up_days", 7, 0, 365)?,
    };
    keys.extend(r.finish()?);

    let log_level = top.string_or("log_level", "info")?;
    check_log_level(&log_level)?;

    let defaults = ProjectDefaults {
        account_id: &frameio.account_id,
        layout: &layout,
        notify: &notify,
        include: &watch.include,
        exclude: &watch.exclude,
    };
    let entries = top.take("projects");
    keys.extend(PROJECT_KEYS.iter().map(|k| k.to_string()));
    let several_projects = entries.is_some();
    let projects = match entries {
        Some(entries) => {
            let mixed = [
                ("watch.root", root.is_some()),
                ("frameio.project_id", project_id_set),
                ("frameio.folder", folder_set),
            ];
            if let Some((key, _)) = mixed.iter().find(|(_, set)| *set) {
                return key_err(
                    key,
                    "must not be set with `projects`: each project has its own (projects[].root, \
                     projects[].project_id, projects[].folder)",
                );
            }
            parse_projects(entries, base, &defaults)?
        }
        None => {
            let Some(root) = root else {
                return key_err(
                    "watch.root",
                    "required: the folder to watch (or a `projects` list)",
                );
            };
            vec![ProjectConfig {
                name: DEFAULT_PROJECT.into(),
                root,
                account_id: frameio.account_id.clone(),
                project_id: frameio.project_id.clone(),
                folder: frameio.folder.clone(),
                layout: layout.clone(),
                notify: notify.clone(),
                include: watch.include.clone(),
                exclude: watch.exclude.clone(),
                key: "watch.root".into(),
            }]
        }
    };
    keys.extend(top.finish()?);

    Ok(Config {
        path: PathBuf::new(),
        watch,
        frameio,
        layout,
        upload,
        serve,
        tunnel,
        dashboard,
        state_dir,
        notify,
        review,
        log_level,
        projects,
        several_projects,
        keys,
        warnings: Vec::new(),
    })
}

fn check_root(key: &str, root: &Path) -> KeyResult<()> {
    match std::fs::metadata(root) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => key_err(key, format!("{} is not a folder", root.display())),
        Err(e) => key_err(key, format!("cannot open {}: {e}", root.display())),
    }
}

/// `layout` (top level, or a project's own).
fn parse_layout(l: &mut Section) -> KeyResult<LayoutConfig> {
    let (pattern_key, folders_key, stack_key) = (
        l.path("pattern"),
        l.path("folders"),
        l.path("stack_versions"),
    );
    let template = |key: &str, s: Option<String>| -> KeyResult<Option<Template>> {
        s.map(|s| Template::parse(&s).or_else(|e| key_err(key, e)))
            .transpose()
    };
    let pattern = template(&pattern_key, l.string("pattern")?)?;
    let folders = template(
        &folders_key,
        l.string("folders")?.map(backslashes_as_slashes),
    )?;
    if let Some(p) = &pattern {
        // A `\` would be a folder separator here too (see `backslashes_as_slashes`).
        if p.as_str().contains(['/', '\\']) {
            return key_err(
                &pattern_key,
                "matches file names only and cannot contain `/` or `\\`",
            );
        }
    }
    if let Some(folders) = &folders {
        let Some(p) = &pattern else {
            return key_err(&folders_key, "needs layout.pattern to take its values from");
        };
        let known: BTreeSet<&str> = p.placeholders().collect();
        if let Some(missing) = folders.placeholders().find(|name| !known.contains(name)) {
            return key_err(
                &folders_key,
                format!("placeholder {{{missing}}} does not appear in layout.pattern"),
            );
        }
    }
    let has_version = pattern
        .as_ref()
        .is_some_and(|p| p.placeholders().any(|name| name == crate::layout::VERSION));
    let stack_versions = match l.bool("stack_versions")? {
        Some(true) if !has_version => {
            return key_err(
                &stack_key,
                "needs a layout.pattern with {version} to tell versions apart",
            )
        }
        Some(on) => on,
        None => has_version,
    };
    let layout = LayoutConfig {
        pattern,
        folders,
        mirror_unmatched: l.choice("unmatched", false, &[("skip", false), ("mirror", true)])?,
        stack_versions,
    };
    Ok(layout)
}

/// `notify` (top level, or a project's own).
fn parse_notify(n: &mut Section) -> KeyResult<NotifyConfig> {
    let url_key = n.path("webhook_url");
    Ok(NotifyConfig {
        webhook_url: n
            .string("webhook_url")?
            .filter(|u| !u.is_empty())
            .map(|u| parse_url(&url_key, &u))
            .transpose()?,
        format: n.choice(
            "format",
            NotifyFormat::Json,
            &[
                ("discord", NotifyFormat::Discord),
                ("slack", NotifyFormat::Slack),
                ("json", NotifyFormat::Json),
            ],
        )?,
    })
}

/// The keys of a `projects` entry, as the reference lists them (read whether set or not).
const PROJECT_KEYS: &[&str] = &[
    "projects[].name",
    "projects[].root",
    "projects[].account_id",
    "projects[].project_id",
    "projects[].folder",
    "projects[].layout",
    "projects[].notify",
    "projects[].include",
    "projects[].exclude",
];

/// What a project entry takes from the top level when it does not set it.
struct ProjectDefaults<'a> {
    account_id: &'a str,
    layout: &'a LayoutConfig,
    notify: &'a NotifyConfig,
    include: &'a GlobSet,
    exclude: &'a GlobSet,
}

fn valid_project_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn parse_projects(
    entries: Value,
    base: &Path,
    defaults: &ProjectDefaults,
) -> KeyResult<Vec<ProjectConfig>> {
    let Value::Array(entries) = entries else {
        return key_err(
            "projects",
            format!("expected a list of projects, found {}", describe(&entries)),
        );
    };
    if entries.is_empty() {
        return key_err(
            "projects",
            "empty: list at least one project, or remove the key",
        );
    }
    let mut projects: Vec<ProjectConfig> = Vec::new();
    for (i, entry) in entries.into_iter().enumerate() {
        let key = format!("projects[{i}]");
        let mut e = Section::new(&key, Some(entry))?;
        let name = match e.string("name")? {
            Some(n) if valid_project_name(&n) => n,
            Some(n) => {
                return key_err(
                    &e.path("name"),
                    format!("{n:?}: use letters, digits, `_`, `.` and `-` only"),
                )
            }
            None => return key_err(&e.path("name"), "required: the project's name"),
        };
        if let Some(other) = projects.iter().find(|p| p.name == name) {
            return key_err(
                &e.path("name"),
                format!("{name:?} is already the name of {}", other.key),
            );
        }
        let root = match e.string("root")? {
            Some(r) if !r.trim().is_empty() => resolve(base, &r),
            _ => {
                return key_err(
                    &e.path("root"),
                    "required: the folder to watch for this project",
                )
            }
        };
        check_root(&e.path("root"), &root)?;
        let account_id = e
            .string("account_id")?
            .filter(|a| !a.is_empty())
            .unwrap_or_else(|| defaults.account_id.to_string());
        let project_id = match e.string("project_id")? {
            Some(p) if !p.is_empty() => p,
            _ => {
                return key_err(
                    &e.path("project_id"),
                    "required: the Frame.io project (`postflow check` lists those you can see)",
                )
            }
        };
        let folder = backslashes_as_slashes(e.string_or("folder", "")?);
        folder_parts(&folder).or_else(|err| key_err(&e.path("folder"), err))?;
        let layout = match e.take("layout") {
            Some(v) => {
                let mut l = Section::new(&e.path("layout"), Some(v))?;
                let layout = parse_layout(&mut l)?;
                l.finish()?;
                layout
            }
            None => defaults.layout.clone(),
        };
        let notify = match e.take("notify") {
            Some(v) => {
                let mut n = Section::new(&e.path("notify"), Some(v))?;
                let notify = parse_notify(&mut n)?;
                n.finish()?;
                notify
            }
            None => defaults.notify.clone(),
        };
        let globs = |e: &mut Section, k: &'static str, default: &GlobSet| -> KeyResult<GlobSet> {
            let key = e.path(k);
            match e.value(k) {
                None => Ok(default.clone()),
                Some(v) => {
                    // Read as the top level's lists are, so an error names the same place.
                    let mut one = Section::new(&e.prefix, Some(serde_json::json!({ k: v })))?;
                    parse_globs(&key, one.strings_or(k, &[])?)
                }
            }
        };
        let include = globs(&mut e, "include", defaults.include)?;
        let exclude = globs(&mut e, "exclude", defaults.exclude)?;
        e.finish()?;
        let project = ProjectConfig {
            name,
            root,
            account_id,
            project_id,
            folder,
            layout,
            notify,
            include,
            exclude,
            key,
        };
        if let Some(other) = projects
            .iter()
            .find(|p| roots_overlap(&p.root, &project.root))
        {
            return key_err(
                &project.root_key(),
                format!(
                    "{} overlaps {} ({}): one root must not be inside another",
                    project.root.display(),
                    other.root_key(),
                    other.root.display()
                ),
            );
        }
        projects.push(project);
    }
    Ok(projects)
}

/// Whether one root is inside the other (or both are one folder), compared as the OS resolves
/// them (symlinks, `..`), and without regard to case where the file system usually ignores it
/// (Windows, macOS).
fn roots_overlap(a: &Path, b: &Path) -> bool {
    let canonical = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let (a, b) = (fold_case(&canonical(a)), fold_case(&canonical(b)));
    a.starts_with(&b) || b.starts_with(&a)
}

#[cfg(any(windows, target_os = "macos"))]
fn fold_case(p: &Path) -> PathBuf {
    PathBuf::from(p.to_string_lossy().to_lowercase())
}

#[cfg(not(any(windows, target_os = "macos")))]
fn fold_case(p: &Path) -> PathBuf {
    p.to_path_buf()
}

const REDACTED: &str = "<redacted>";

impl fmt::Debug for FrameioConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameioConfig")
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &if self.client_secret.is_empty() {
                    ""
                } else {
                    REDACTED
                },
            )
            .field("redirect_uri", &self.redirect_uri)
            .field("scopes", &self.scopes)
            .field("account_id", &self.account_id)
            .field("project_id", &self.project_id)
            .field("folder", &self.folder)
            .field("upload", &self.upload)
            .field("api_base", &self.api_base)
            .field("ims_base", &self.ims_base)
            .finish()
    }
}

impl fmt::Debug for DashboardConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DashboardConfig")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| REDACTED))
            .finish()
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("path", &self.path)
            .field("watch", &self.watch)
            .field("frameio", &self.frameio)
            .field("layout", &self.layout)
            .field("upload", &self.upload)
            .field("serve", &self.serve)
            .field("tunnel", &self.tunnel)
            .field("dashboard", &self.dashboard)
            .field("state_dir", &self.state_dir)
            .field("notify", &self.notify)
            .field("review", &self.review)
            .field("log_level", &self.log_level)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn root() -> PathBuf {
        std::env::temp_dir()
    }

    fn load(v: Value) -> KeyResult<Config> {
        from_value(v, &root(), None)
    }

    fn minimal() -> Value {
        json!({ "watch": { "root": root().display().to_string() } })
    }

    fn with(mut base: Value, section: &str, key: &str, v: Value) -> Value {
        let obj = base.as_object_mut().unwrap();
        if section.is_empty() {
            obj.insert(key.into(), v);
        } else {
            obj.entry(section)
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .unwrap()
                .insert(key.into(), v);
        }
        base
    }

    fn err_of(v: Value) -> (String, String) {
        match load(v) {
            Ok(_) => panic!("expected an error"),
            Err(e) => e,
        }
    }

    #[test]
    fn defaults_match_the_contract() {
        let c = load(minimal()).unwrap();
        assert_eq!(c.watch.settle, Duration::from_secs(15));
        assert_eq!(c.watch.rescan, Duration::from_secs(60));
        assert!(c.watch.events && !c.watch.upload_existing && c.watch.verify_container);
        assert!(c.watch.include.matches("A.MOV") && c.watch.exclude.matches("._a.mov"));
        assert_eq!(c.frameio.scopes, DEFAULT_SCOPES);
        assert_eq!(c.frameio.upload, UploadMode::Auto);
        assert_eq!(c.frameio.api_base, "https://api.frame.io");
        assert_eq!(c.frameio.ims_base, "https://ims-na1.adobelogin.com");
        assert_eq!(c.upload.concurrency, 2);
        assert_eq!(c.upload.parallel_parts, 4);
        assert_eq!(c.upload.max_attempts, 10);
        assert_eq!(c.upload.max_delay, Duration::from_secs(1800));
        assert_eq!(c.upload.processing_timeout, Duration::from_secs(3600));
        assert_eq!(c.serve.listen.to_string(), "127.0.0.1:8081");
        assert_eq!(c.serve.link_ttl, Duration::from_secs(86_400));
        assert_eq!(c.serve.max_connections, 64);
        assert_eq!(c.tunnel.mode, TunnelMode::Quick);
        assert_eq!(c.tunnel.cloudflared, PathBuf::from("cloudflared"));
        assert_eq!(c.dashboard.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.state_dir, root().join("postflow-state"));
        assert_eq!(c.notify.format, NotifyFormat::Json);
        assert_eq!(c.log_level, "info");
        assert!(!c.layout.mirror_unmatched);
    }

    #[test]
    fn wrong_types_name_the_key_and_the_value() {
        let (key, msg) = err_of(with(minimal(), "watch", "settle_secs", json!("abc")));
        assert_eq!(key, "watch.settle_secs");
        assert_eq!(msg, "expected a number, found \"abc\"");
        let (key, _) = err_of(with(minimal(), "watch", "events", json!(1)));
        assert_eq!(key, "watch.events");
        let (key, _) = err_of(with(minimal(), "watch", "include", json!(["*.mov", 3])));
        assert_eq!(key, "watch.include[1]");
        let (key, msg) = err_of(with(minimal(), "upload", "concurrency", json!(0)));
        assert_eq!(key, "upload.concurrency");
        assert!(msg.contains("from 1 to 64"), "{msg}");
        let (key, msg) = err_of(with(
            minimal(),
            "upload",
            "bandwidth",
            json!("08:00,20M 19:70,off"),
        ));
        assert_eq!(key, "upload.bandwidth");
        assert!(msg.contains("\"19:70,off\""), "{msg}");
        let (key, msg) = err_of(with(minimal(), "upload", "order", json!("largest")));
        assert_eq!(key, "upload.order");
        assert!(msg.contains("\"smallest\""), "{msg}");
        assert_eq!(load(minimal()).unwrap().upload.verify, Verify::Parts);
        for (name, want) in [
            ("parts", Verify::Parts),
            ("download", Verify::Download),
            ("off", Verify::Off),
        ] {
            let c = load(with(minimal(), "upload", "verify", json!(name))).unwrap();
            assert_eq!(c.upload.verify, want, "{name}");
        }
        let (key, msg) = err_of(with(minimal(), "upload", "verify", json!("md5")));
        assert_eq!(key, "upload.verify");
        assert!(
            msg.contains("\"download\"") && msg.contains("\"md5\""),
            "{msg}"
        );
    }

    #[test]
    fn unknown_keys_are_refused_with_a_suggestion() {
        let (key, msg) = err_of(with(minimal(), "watch", "setle_secs", json!(3)));
        assert_eq!(key, "watch.setle_secs");
        assert!(msg.contains("did you mean \"settle_secs\""), "{msg}");
        let (key, _) = err_of(with(minimal(), "", "bogus", json!(1)));
        assert_eq!(key, "bogus");
    }

    #[test]
    fn watch_root_is_required_and_must_exist() {
        assert_eq!(err_of(json!({})).0, "watch.root");
        let (key, msg) = err_of(json!({"watch": {"root": "/no/such/folder/xyz"}}));
        assert_eq!(key, "watch.root");
        assert!(msg.contains("/no/such/folder/xyz"));
    }

    #[test]
    fn relative_paths_are_resolved_against_the_config_folder() {
        let c = from_value(
            json!({"watch": {"root": "."}, "state_dir": "st"}),
            &root(),
            None,
        )
        .unwrap();
        assert_eq!(c.watch.root, root().join("."));
        assert_eq!(c.state_dir, root().join("st"));
    }

    #[test]
    fn listen_addresses_globs_and_templates_are_checked() {
        assert_eq!(
            err_of(with(minimal(), "serve", "listen", json!("localhost"))).0,
            "serve.listen"
        );
        assert_eq!(
            err_of(with(minimal(), "watch", "exclude", json!(["[x"]))).0,
            "watch.exclude[0]"
        );
        let v = with(minimal(), "layout", "pattern", json!("{seq}_{shot}.mov"));
        let v = with(v, "layout", "folders", json!("{seq}/{version}"));
        let (key, msg) = err_of(v);
        assert_eq!(key, "layout.folders");
        assert!(msg.contains("{version}"));
        assert_eq!(
            err_of(with(minimal(), "layout", "folders", json!("{a}"))).0,
            "layout.folders"
        );
        assert_eq!(
            err_of(with(minimal(), "layout", "pattern", json!("{a}{b}"))).0,
            "layout.pattern"
        );
    }

    #[test]
    fn versions_stack_by_default_only_with_a_version_in_the_pattern() {
        assert!(!load(minimal()).unwrap().layout.stack_versions);
        let versioned = with(
            minimal(),
            "layout",
            "pattern",
            json!("{shot}_v{version}.{ext}"),
        );
        assert!(load(versioned.clone()).unwrap().layout.stack_versions);
        let off = with(versioned, "layout", "stack_versions", json!(false));
        assert!(!load(off).unwrap().layout.stack_versions);
        let plain = with(minimal(), "layout", "pattern", json!("{shot}.{ext}"));
        let (key, msg) = err_of(with(plain, "layout", "stack_versions", json!(true)));
        assert_eq!(key, "layout.stack_versions");
        assert!(msg.contains("{version}"), "{msg}");
        let (key, _) = err_of(with(minimal(), "layout", "stack_versions", json!("yes")));
        assert_eq!(key, "layout.stack_versions");
    }

    #[test]
    fn tunnel_modes_require_what_they_need() {
        let (key, _) = err_of(with(minimal(), "tunnel", "mode", json!("external")));
        assert_eq!(key, "tunnel.public_url");
        let v = with(minimal(), "tunnel", "mode", json!("named"));
        let v = with(
            v,
            "tunnel",
            "public_url",
            json!("https://files.example.com/"),
        );
        assert_eq!(err_of(v).0, "tunnel.token_file");
        let (key, msg) = err_of(with(minimal(), "tunnel", "mode", json!("fast")));
        assert_eq!(key, "tunnel.mode");
        assert!(msg.contains("\"quick\""));
        let v = with(minimal(), "tunnel", "mode", json!("external"));
        let v = with(
            v,
            "tunnel",
            "public_url",
            json!("https://files.example.com/"),
        );
        assert_eq!(
            load(v).unwrap().tunnel.public_url.as_deref(),
            Some("https://files.example.com")
        );
    }

    #[test]
    fn tunnel_protocol_is_cloudflareds_choice_unless_set() {
        assert_eq!(
            load(minimal()).unwrap().tunnel.protocol,
            TunnelProtocol::Auto
        );
        let c = load(with(minimal(), "tunnel", "protocol", json!("http2"))).unwrap();
        assert_eq!(c.tunnel.protocol.flag(), Some("http2"));
        let (key, msg) = err_of(with(minimal(), "tunnel", "protocol", json!("udp")));
        assert_eq!(key, "tunnel.protocol");
        assert!(msg.contains("\"auto\", \"quic\", \"http2\""), "{msg}");
    }

    #[test]
    fn a_public_dashboard_needs_a_token() {
        let v = with(minimal(), "dashboard", "listen", json!("0.0.0.0:8080"));
        assert_eq!(err_of(v.clone()).0, "dashboard.token");
        let ok = with(v, "dashboard", "token", json!("a-long-enough-token-123"));
        assert!(load(ok).is_ok());
    }

    #[test]
    fn secret_comes_from_the_environment_first_and_never_shows_in_debug() {
        let v = with(minimal(), "frameio", "client_secret", json!("from-file"));
        let c = from_value(v.clone(), &root(), Some("from-env".into())).unwrap();
        assert_eq!(c.frameio.client_secret, "from-env");
        let c = load(v).unwrap();
        assert_eq!(c.frameio.client_secret, "from-file");
        let debug = format!("{c:?}");
        assert!(!debug.contains("from-file") && debug.contains("<redacted>"));
    }

    #[test]
    fn log_levels_are_checked() {
        assert!(load(with(minimal(), "", "log_level", json!("debug"))).is_ok());
        assert!(load(with(
            minimal(),
            "",
            "log_level",
            json!("info,postflow::serve=debug")
        ))
        .is_ok());
        assert_eq!(
            err_of(with(minimal(), "", "log_level", json!("loud"))).0,
            "log_level"
        );
    }

    #[test]
    fn a_backslash_in_a_frameio_folder_path_makes_nested_folders() {
        let v = with(minimal(), "frameio", "folder", json!("Dailies\\Day 01"));
        let v = with(
            v,
            "layout",
            "pattern",
            json!("{seq}_UNDLM_{shot}_v{version}.{ext}"),
        );
        let v = with(v, "layout", "folders", json!("{seq}\\UNDLM_{shot}"));
        let config = load(v).unwrap();
        assert_eq!(config.frameio.folder, "Dailies/Day 01");
        assert_eq!(
            config.projects[0]
                .layout()
                .destination("SQ07_UNDLM_00146_v003.mov"),
            crate::layout::Destination::Folder("Dailies/Day 01/SQ07/UNDLM_00146".into())
        );
        let (key, msg) = err_of(with(
            minimal(),
            "layout",
            "pattern",
            json!("{seq}\\{shot}.{ext}"),
        ));
        assert_eq!(key, "layout.pattern");
        assert!(msg.contains("file names only"), "{msg}");
        assert_eq!(
            err_of(with(minimal(), "frameio", "folder", json!("a\\..\\b"))).0,
            "frameio.folder"
        );
    }

    #[test]
    fn frameio_folder_is_checked() {
        assert_eq!(
            err_of(with(minimal(), "frameio", "folder", json!("a/../b"))).0,
            "frameio.folder"
        );
    }

    #[test]
    fn without_projects_the_one_project_is_default_made_of_the_top_level_keys() {
        let v = with(minimal(), "frameio", "project_id", json!("p1"));
        let v = with(v, "frameio", "account_id", json!("a1"));
        let v = with(v, "frameio", "folder", json!("Dailies"));
        let c = load(v).unwrap();
        assert!(!c.several_projects);
        assert_eq!(c.projects.len(), 1);
        let p = &c.projects[0];
        assert_eq!(p.name, DEFAULT_PROJECT);
        assert_eq!(p.root, root());
        assert_eq!((p.account_id.as_str(), p.project_id.as_str()), ("a1", "p1"));
        assert_eq!(p.folder, "Dailies");
        assert_eq!(p.root_key(), "watch.root");
    }

    #[test]
    fn a_project_takes_the_top_level_keys_it_does_not_set() {
        let dir = std::env::temp_dir().join(format!("postflow-config-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("a")).unwrap();
        std::fs::create_dir_all(dir.join("b")).unwrap();
        let v = json!({
            "frameio": { "account_id": "acc" },
            "layout": { "pattern": "{shot}_v{version}.{ext}" },
            "notify": { "webhook_url": "https://hooks.example/top" },
            "watch": { "include": ["*.mov"] },
            "projects": [
                { "name": "a", "root": dir.join("a"), "project_id": "pa" },
                { "name": "b.2", "root": dir.join("b"), "project_id": "pb", "account_id": "other",
                  "folder": "In\\Day 1", "layout": { "unmatched": "mirror" },
                  "notify": { "webhook_url": "https://hooks.example/b", "format": "slack" },
                  "include": ["*.wav"] }
            ]
        });
        let c = from_value(v, &root(), None).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(c.several_projects);
        let (a, b) = (&c.projects[0], &c.projects[1]);
        assert_eq!(a.account_id, "acc");
        assert!(a.layout.stack_versions && a.include.matches("x.mov"));
        assert_eq!(
            a.notify.webhook_url.as_deref(),
            Some("https://hooks.example/top")
        );
        assert_eq!(b.account_id, "other");
        assert_eq!(b.folder, "In/Day 1");
        assert!(b.layout.pattern.is_none() && b.layout.mirror_unmatched);
        assert_eq!(b.notify.format, NotifyFormat::Slack);
        assert!(b.include.matches("x.wav") && !b.include.matches("x.mov"));
        assert_eq!(b.root_key(), "projects[1].root");
        for key in PROJECT_KEYS {
            assert!(c.keys.iter().any(|k| k == key), "{key} recorded");
        }
    }
}
