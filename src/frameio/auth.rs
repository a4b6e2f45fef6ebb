//! Adobe IMS OAuth (Web App credential, authorization code) and the one owner of the tokens.
//!
//! [`Auth`] is a cheap clonable handle shared by every thread that calls Frame.io. It hands out
//! a valid access token ([`Auth::access_token`]), refreshes it before it expires, and refreshes
//! once after a 401 ([`Auth::on_unauthorized`]). Refreshes are single-flight: a gate mutex in
//! the process and an advisory lock on `tokens.lock` across processes (`run` and `check` may
//! both hold tokens), and each handed-out token carries the generation it came from, so ten
//! threads hitting 401 with the same token cause one refresh and the other nine get the new
//! token.
//!
//! `tokens.json` (`{"access_token","refresh_token","expires_at"}`, unix seconds, mode 0600) is
//! replaced atomically: temp file, fsync, rename, fsync of the directory. IMS rotates refresh
//! tokens and the used one stops working, so the new pair is on disk before the new access
//! token is handed to anyone. The file is also how `postflow auth` talks to a running
//! instance: before every use the file's identity (inode, size, mtime) is compared with the
//! last one seen, and a changed file is read again, which ends a `needs_login` state without a
//! restart.
//!
//! A full or read-only state dir never costs a sign-in: a refresh token is spent only when the
//! dir takes a write (a probe first; until it does, the current access token is used while it
//! lasts and calls wait after that), and a rotated pair whose save fails anyway is saved again
//! a few times at once and then before every later use, until it is on disk.
//!
//! Token strings never reach a log line or a `Debug` output.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::api::rate_limit_wait;
use super::{base64, form_encode, parse_query, url_encode};
use crate::config::FrameioConfig;
use crate::events::{Event, Hub};
use crate::file_id::FileId;

/// Refresh this long before the access token expires (or at half its lifetime when that is
/// shorter, so that tokens of a few seconds still get used).
const REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);

/// Assumed lifetime when IMS omits `expires_in` (it documents 24 h; be conservative).
const DEFAULT_LIFETIME_SECS: u64 = 3600;

/// Tries per IMS token request on 429, 5xx or an unreachable IMS.
const IMS_TRIES: u32 = 3;

/// Longest wait between two tries of a token request, whatever IMS's `Retry-After` says.
const IMS_MAX_WAIT: Duration = Duration::from_secs(60);

/// Whether postflow can call Frame.io, as shown on the page and sent to the hub.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthState {
    /// Tokens are present and the last refresh (if any) worked.
    Connected,
    /// No usable tokens: none saved yet, or Adobe refused the refresh token. Uploads wait
    /// until `postflow auth` (or the dashboard's login) saves new ones.
    NeedsLogin { reason: String },
}

impl AuthState {
    /// `"connected"` or `"needs_login"`, for JSON and the page.
    pub fn as_str(&self) -> &'static str {
        match self {
            AuthState::Connected => "connected",
            AuthState::NeedsLogin { .. } => "needs_login",
        }
    }
}

/// What went wrong with Adobe IMS or the token store.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthError {
    /// No usable tokens: none saved yet, unreadable, or Adobe refused the refresh token
    /// (`invalid_grant`). Only a new sign-in (`postflow auth`) fixes it.
    NeedsLogin(String),
    /// IMS refused the client credentials (`invalid_client`): `frameio.client_id` or
    /// `frameio.client_secret` do not match the Adobe Developer Console credential.
    InvalidClient(String),
    /// IMS refused the authorization code (used, expired, or issued for another redirect URI).
    CodeRejected(String),
    /// IMS answered with another error; `error` and `error_description` as it sent them.
    Ims {
        status: u16,
        error: String,
        description: String,
    },
    /// A token response without a refresh token: `offline_access` is missing from
    /// `frameio.scopes` (or was not consented).
    NoRefreshToken,
    /// IMS could not be reached or answered garbage, after a few tries.
    Transport(String),
    /// `tokens.json` could not be written.
    Store { path: PathBuf, message: String },
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::NeedsLogin(reason) => write!(
                f,
                "Frame.io needs a new sign-in ({reason}): run `postflow auth config.json`"
            ),
            AuthError::InvalidClient(d) => write!(
                f,
                "Adobe refused the OAuth client (invalid_client: {d}): check frameio.client_id and \
                 frameio.client_secret against the OAuth Web App credential in the Adobe Developer Console"
            ),
            AuthError::CodeRejected(d) => write!(
                f,
                "Adobe refused the sign-in code ({d}): codes work once and only for a few minutes, \
                 run `postflow auth config.json` again"
            ),
            AuthError::Ims {
                status,
                error,
                description,
            } => write!(f, "Adobe IMS answered {status} {error}: {description}"),
            AuthError::NoRefreshToken => write!(
                f,
                "Adobe returned no refresh token, so the connection would end within a day: \
                 frameio.scopes must include offline_access"
            ),
            AuthError::Transport(e) => write!(f, "cannot reach Adobe IMS: {e}"),
            AuthError::Store { path, message } => {
                write!(f, "cannot save Frame.io tokens to {}: {message}", path.display())
            }
        }
    }
}

impl std::error::Error for AuthError {}

/// An access token as handed out, with the generation it belongs to. `Debug` never shows it.
#[derive(Clone)]
pub struct AccessToken {
    value: String,
    generation: u64,
}

impl AccessToken {
    /// The bearer token.
    pub fn value(&self) -> &str {
        &self.value
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AccessToken(<redacted>, generation {})", self.generation)
    }
}

/// A token pair in memory; `expires_at` is exact here and rounded down on disk.
#[derive(Clone)]
struct TokenSet {
    access_token: String,
    refresh_token: String,
    expires_at: SystemTime,
    lifetime: Duration,
}

impl TokenSet {
    /// When to refresh: 5 minutes before expiry, or at half the lifetime when that is less.
    fn is_fresh(&self, now: SystemTime) -> bool {
        let margin = REFRESH_MARGIN.min(self.lifetime / 2);
        self.expires_at
            .duration_since(now)
            .is_ok_and(|left| left > margin)
    }

    fn is_expired(&self, now: SystemTime) -> bool {
        self.expires_at <= now
    }
}

/// `tokens.json` as on disk.
#[derive(Serialize, Deserialize)]
struct TokenFile {
    access_token: String,
    refresh_token: String,
    expires_at: u64,
}

/// What identifies one version of `tokens.json`: a replace changes the file's identity (inode,
/// or volume and file index on Windows), an edit the size or mtime.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    id: FileId,
    len: u64,
    modified: Option<SystemTime>,
}

impl Stamp {
    fn of(file: &File) -> std::io::Result<Stamp> {
        let meta = file.metadata()?;
        Ok(Stamp {
            id: FileId::of(file)?,
            len: meta.len(),
            modified: meta.modified().ok(),
        })
    }
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Reads `tokens.json`; `Ok(None)` when there is none. The lifetime is estimated from the
/// file's mtime (written right after the token was issued).
fn read_tokens(path: &Path) -> Result<Option<(TokenSet, Stamp)>, String> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let stamp = Stamp::of(&file).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut text = String::new();
    file.read_to_string(&mut text)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let t: TokenFile = serde_json::from_str(&text)
        .map_err(|e| format!("{} is not a token file: {e}", path.display()))?;
    if t.access_token.is_empty() || t.refresh_token.is_empty() {
        return Err(format!("{} holds empty tokens", path.display()));
    }
    let expires_at = UNIX_EPOCH + Duration::from_secs(t.expires_at);
    let written = meta.modified().unwrap_or(SystemTime::now());
    let lifetime = expires_at
        .duration_since(written)
        .unwrap_or(Duration::ZERO)
        .max(Duration::from_secs(1));
    let set = TokenSet {
        access_token: t.access_token,
        refresh_token: t.refresh_token,
        expires_at,
        lifetime,
    };
    Ok(Some((set, stamp)))
}

/// Replaces `tokens.json` atomically, owner-only (`private_file`); returns the new file's
/// stamp.
fn save_tokens(path: &Path, set: &TokenSet) -> Result<Stamp, AuthError> {
    let store_err = |e: std::io::Error| AuthError::Store {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(store_err)?;
    }
    let mut body = serde_json::to_vec_pretty(&TokenFile {
        access_token: set.access_token.clone(),
        refresh_token: set.refresh_token.clone(),
        // Rounded down: never later than the real expiry.
        expires_at: unix_secs(set.expires_at),
    })
    .map_err(|e| store_err(std::io::Error::other(e)))?;
    body.push(b'\n');
    crate::private_file::write_atomic(path, &body, Stamp::of).map_err(store_err)
}

/// An exclusive advisory lock on `tokens.lock`, held across a refresh so that two processes
/// sharing the state dir never spend the same single-use refresh token twice. Best effort: a
/// state dir that cannot hold the file still works within one process.
struct FileLock(Option<File>);

impl FileLock {
    fn acquire(path: &Path) -> FileLock {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .ok()
            .filter(|f| f.lock().is_ok());
        FileLock(file)
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        if let Some(f) = &self.0 {
            let _ = f.unlock();
        }
    }
}

/// A successful token response.
struct Grant {
    access_token: String,
    refresh_token: Option<String>,
    expires_in: u64,
}

impl Grant {
    /// `issued` is taken before the request was sent, so the expiry errs early.
    fn into_set(
        self,
        issued: SystemTime,
        previous_refresh: Option<String>,
    ) -> Result<TokenSet, AuthError> {
        let refresh_token = self
            .refresh_token
            .or(previous_refresh)
            .ok_or(AuthError::NoRefreshToken)?;
        let lifetime = Duration::from_secs(self.expires_in);
        Ok(TokenSet {
            access_token: self.access_token,
            refresh_token,
            expires_at: issued + lifetime,
            lifetime,
        })
    }
}

/// How IMS authenticates the client on the token endpoint. Both are advertised; the
/// Frame.io SDK posts the secret in the body, Adobe's docs show Basic.
#[derive(Clone, Copy)]
enum ClientAuth {
    Post,
    Basic,
}

/// The IMS endpoints postflow uses.
struct Ims {
    agent: ureq::Agent,
    base: String,
    client_id: String,
    client_secret: String,
    redirect_uri: String,
    scopes: String,
}

impl Ims {
    fn authorize_url(&self, state: &str) -> String {
        format!(
            "{}/ims/authorize/v2?client_id={}&redirect_uri={}&scope={}&state={}&response_type=code",
            self.base,
            url_encode(&self.client_id),
            url_encode(&self.redirect_uri),
            url_encode(&self.scopes),
            url_encode(state)
        )
    }

    fn exchange_code(&self, code: &str) -> Result<Grant, AuthError> {
        self.token(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", &self.redirect_uri),
        ])
        .map_err(|e| match e {
            ImsFailure::InvalidGrant(d) => AuthError::CodeRejected(d),
            ImsFailure::Other(e) => e,
        })
    }

    fn refresh(&self, refresh_token: &str) -> Result<Grant, ImsFailure> {
        self.token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ])
    }

    /// `POST /ims/token/v3`, form-encoded, client_secret_post first; on `invalid_client` once
    /// more with client_secret_basic, since IMS documents both and only one may be enabled.
    fn token(&self, params: &[(&str, &str)]) -> Result<Grant, ImsFailure> {
        match self.token_with(params, ClientAuth::Post) {
            Err(ImsFailure::Other(AuthError::InvalidClient(first))) => {
                match self.token_with(params, ClientAuth::Basic) {
                    Err(ImsFailure::Other(AuthError::InvalidClient(_))) => {
                        Err(ImsFailure::Other(AuthError::InvalidClient(first)))
                    }
                    other => other,
                }
            }
            other => other,
        }
    }

    fn token_with(&self, params: &[(&str, &str)], how: ClientAuth) -> Result<Grant, ImsFailure> {
        let mut pairs: Vec<(&str, &str)> = params.to_vec();
        if let ClientAuth::Post = how {
            pairs.push(("client_id", &self.client_id));
            pairs.push(("client_secret", &self.client_secret));
        }
        let body = form_encode(&pairs);
        let url = format!("{}/ims/token/v3", self.base);
        let mut last = String::new();
        let mut wait = Duration::ZERO;
        for attempt in 1..=IMS_TRIES {
            std::thread::sleep(wait);
            // What to wait before the next try: IMS's Retry-After when it sends one (the
            // SDK honours it too, capped at a minute), else 1 s doubling.
            let next_wait = |retry_after: Option<&str>| {
                rate_limit_wait(
                    retry_after,
                    None,
                    None,
                    attempt,
                    SystemTime::now(),
                    IMS_MAX_WAIT,
                )
            };
            let mut req = self
                .agent
                .post(&url)
                .header("Content-Type", "application/x-www-form-urlencoded")
                .header("Accept", "application/json");
            if let ClientAuth::Basic = how {
                let basic = base64(format!("{}:{}", self.client_id, self.client_secret).as_bytes());
                req = req.header("Authorization", &format!("Basic {basic}"));
            }
            let mut resp = match req.send(body.as_bytes()) {
                Ok(r) => r,
                Err(e) => {
                    last = e.to_string();
                    log::warn!("IMS token request failed (try {attempt} of {IMS_TRIES}): {last}");
                    wait = next_wait(None);
                    continue;
                }
            };
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let text = resp
                .body_mut()
                .with_config()
                .limit(1024 * 1024)
                .read_to_string()
                .unwrap_or_default();
            match parse_token_response(status, &text) {
                Err(ImsFailure::Other(AuthError::Ims {
                    status,
                    error,
                    description,
                })) if status == 429 || status >= 500 => {
                    last = format!("{status} {error} {description}");
                    wait = next_wait(retry_after.as_deref());
                    log::warn!(
                        "IMS token request answered {status} (try {attempt} of {IMS_TRIES}){}",
                        match &retry_after {
                            Some(_) if attempt < IMS_TRIES => format!(
                                "; waiting {} s as its Retry-After asks",
                                wait.as_secs_f64().round()
                            ),
                            _ => String::new(),
                        }
                    );
                }
                other => return other,
            }
        }
        Err(ImsFailure::Other(AuthError::Transport(last)))
    }
}

/// A refresh that failed: `invalid_grant` is the one that means "sign in again".
enum ImsFailure {
    InvalidGrant(String),
    Other(AuthError),
}

/// Reads an IMS token response (pure, for unit tests).
fn parse_token_response(status: u16, body: &str) -> Result<Grant, ImsFailure> {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let field = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    if status == 200 {
        let access_token = field("access_token");
        if access_token.is_empty() {
            return Err(ImsFailure::Other(AuthError::Transport(
                "IMS answered 200 without an access_token".into(),
            )));
        }
        let expires_in = match v.get("expires_in") {
            Some(Value::Number(n)) => n.as_u64(),
            Some(Value::String(s)) => s.trim().parse().ok(),
            _ => None,
        }
        .unwrap_or(DEFAULT_LIFETIME_SECS);
        let refresh_token = Some(field("refresh_token")).filter(|s| !s.is_empty());
        return Ok(Grant {
            access_token,
            refresh_token,
            expires_in,
        });
    }
    let error = field("error");
    let description = Some(field("error_description"))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| body.chars().take(200).collect());
    Err(match error.as_str() {
        "invalid_grant" | "invalid_token" => ImsFailure::InvalidGrant(description),
        "invalid_client" | "unauthorized_client" => {
            ImsFailure::Other(AuthError::InvalidClient(description))
        }
        _ => ImsFailure::Other(AuthError::Ims {
            status,
            error: if error.is_empty() {
                "error".into()
            } else {
                error
            },
            description,
        }),
    })
}

struct Current {
    tokens: Option<TokenSet>,
    /// Bumped whenever `tokens` changes (refresh, login, or a new file on disk).
    generation: u64,
    /// The version of `tokens.json` that `tokens` came from or went to.
    stamp: Option<Stamp>,
    state: AuthState,
    /// Refreshes are held back because the tokens' dir takes no write (said once).
    refresh_held: bool,
    /// The rotated pair in `tokens` could not be saved yet (the file still holds the spent
    /// one): saved again before every use until it is.
    unsaved: bool,
}

/// Saves of a rotated pair tried at once before it is left to later uses: the waits between.
const SAVE_RETRIES: [Duration; 3] = [
    Duration::from_millis(100),
    Duration::from_millis(400),
    Duration::from_millis(1600),
];

/// Whether the tokens' dir takes new bytes now (the state dir's own probe).
fn dir_takes_writes(tokens: &Path) -> std::io::Result<()> {
    let dir = tokens
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    crate::statedir::probe_writable(dir)
}

struct Inner {
    ims: Ims,
    path: PathBuf,
    lock_path: PathBuf,
    hub: Option<Hub>,
    current: Mutex<Current>,
    /// Held for the whole of a refresh or login: single-flight within the process.
    gate: Mutex<()>,
}

/// The token owner. Clone it freely; every clone is the same owner.
#[derive(Clone)]
pub struct Auth {
    inner: Arc<Inner>,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("tokens", &self.inner.path)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A thread that panicked while holding it ends the process anyway (abort on panic).
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Auth {
    /// The token owner for `tokens.json` in `state_dir`. Never fails: missing or unreadable
    /// tokens just mean `needs_login`. `hub` receives [`Event::AuthChanged`].
    pub fn new(frameio: &FrameioConfig, state_dir: &Path, hub: Option<Hub>) -> Auth {
        let ims = Ims {
            agent: super::agent(),
            base: frameio.ims_base.trim_end_matches('/').to_string(),
            client_id: frameio.client_id.clone(),
            client_secret: frameio.client_secret.clone(),
            redirect_uri: frameio.redirect_uri.clone(),
            scopes: frameio.scopes.clone(),
        };
        let path = state_dir.join("tokens.json");
        let current = Current {
            tokens: None,
            generation: 0,
            stamp: None,
            state: AuthState::NeedsLogin {
                reason: "no tokens saved yet".into(),
            },
            refresh_held: false,
            unsaved: false,
        };
        let auth = Auth {
            inner: Arc::new(Inner {
                ims,
                lock_path: state_dir.join("tokens.lock"),
                path,
                hub,
                current: Mutex::new(current),
                gate: Mutex::new(()),
            }),
        };
        auth.sync_from_disk(&mut lock(&auth.inner.current));
        auth
    }

    /// Where the tokens live.
    pub fn tokens_path(&self) -> &Path {
        &self.inner.path
    }

    /// The address to open in a browser to sign in; `state` comes back in the redirect.
    pub fn authorize_url(&self, state: &str) -> String {
        self.inner.ims.authorize_url(state)
    }

    /// Connected or needs_login, as of now (a new `tokens.json` counts).
    pub fn state(&self) -> AuthState {
        let mut cur = lock(&self.inner.current);
        self.sync_from_disk(&mut cur);
        cur.state.clone()
    }

    /// How long the current access token has left, when there is one.
    pub fn expires_in(&self) -> Option<Duration> {
        let cur = lock(&self.inner.current);
        cur.tokens.as_ref().map(|t| {
            t.expires_at
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO)
        })
    }

    /// A valid access token, refreshed first when it is near its expiry.
    /// `Err(NeedsLogin)` means wait for a sign-in; `Err(Transport)` is worth retrying later.
    pub fn access_token(&self) -> Result<AccessToken, AuthError> {
        self.save_if_unsaved();
        let mut refreshed = false;
        loop {
            let generation = {
                let mut cur = lock(&self.inner.current);
                self.sync_from_disk(&mut cur);
                if let AuthState::NeedsLogin { reason } = &cur.state {
                    return Err(AuthError::NeedsLogin(reason.clone()));
                }
                let Some(t) = &cur.tokens else {
                    return Err(AuthError::NeedsLogin("no tokens saved yet".into()));
                };
                let now = SystemTime::now();
                // After one refresh, a token that is not expired is good enough (a lifetime
                // shorter than the margin must not loop).
                if t.is_fresh(now) || (refreshed && !t.is_expired(now)) {
                    return Ok(AccessToken {
                        value: t.access_token.clone(),
                        generation: cur.generation,
                    });
                }
                cur.generation
            };
            if refreshed {
                return Err(AuthError::Transport(
                    "IMS keeps issuing access tokens that are already expired".into(),
                ));
            }
            if let Err(e) = self.refresh(generation) {
                // An early refresh that failed for a passing reason (IMS unreachable) must not
                // stop calls while the current token still works; the next call tries again.
                if !matches!(e, AuthError::NeedsLogin(_)) {
                    if let Some(token) = self.unexpired() {
                        // A refresh held back for the state dir was said once, in `refresh`.
                        if matches!(e, AuthError::Store { .. }) {
                            log::debug!(
                                "early token refresh held back, using the current token: {e}"
                            );
                        } else {
                            log::warn!("early token refresh failed, using the current token: {e}");
                        }
                        return Ok(token);
                    }
                }
                return Err(e);
            }
            refreshed = true;
        }
    }

    /// The current access token if it has not expired yet.
    fn unexpired(&self) -> Option<AccessToken> {
        let cur = lock(&self.inner.current);
        let t = cur.tokens.as_ref()?;
        (!t.is_expired(SystemTime::now())).then(|| AccessToken {
            value: t.access_token.clone(),
            generation: cur.generation,
        })
    }

    /// Frame.io answered 401 to `used`: refresh, unless someone already did since `used` was
    /// handed out. Then ask [`Auth::access_token`] again.
    pub fn on_unauthorized(&self, used: &AccessToken) -> Result<(), AuthError> {
        self.refresh(used.generation)
    }

    /// Exchanges a sign-in code (from the redirect) for tokens and saves them; ends
    /// `needs_login`. Used by `postflow auth` and the dashboard.
    pub fn login_with_code(&self, code: &str) -> Result<(), AuthError> {
        let issued = SystemTime::now();
        let set = self.inner.ims.exchange_code(code)?.into_set(issued, None)?;
        let _gate = lock(&self.inner.gate);
        let stamp = save_tokens(&self.inner.path, &set)?;
        let mut cur = lock(&self.inner.current);
        cur.tokens = Some(set);
        cur.stamp = Some(stamp);
        cur.generation += 1;
        self.set_state(&mut cur, AuthState::Connected);
        Ok(())
    }

    /// Blocks until the state is `connected` (a sign-in happened, here or by `postflow auth`)
    /// or `stop` is closed; true when connected. Polls the file every `poll`.
    pub fn wait_for_login(&self, stop: &Receiver<()>, poll: Duration) -> bool {
        loop {
            if self.state() == AuthState::Connected {
                return true;
            }
            match stop.recv_timeout(poll) {
                Err(RecvTimeoutError::Timeout) => {}
                _ => return false,
            }
        }
    }

    /// The single-flight refresh. Does nothing when the tokens changed since `seen` (someone
    /// refreshed, or a new file arrived).
    fn refresh(&self, seen: u64) -> Result<(), AuthError> {
        let _gate = lock(&self.inner.gate);
        let _file_lock = FileLock::acquire(&self.inner.lock_path);
        let refresh_token = {
            let mut cur = lock(&self.inner.current);
            self.sync_from_disk(&mut cur);
            if cur.generation != seen {
                return Ok(());
            }
            if let AuthState::NeedsLogin { reason } = &cur.state {
                return Err(AuthError::NeedsLogin(reason.clone()));
            }
            match &cur.tokens {
                Some(t) => t.refresh_token.clone(),
                None => return Err(AuthError::NeedsLogin("no tokens saved yet".into())),
            }
        };
        // IMS rotates the refresh token: the one on disk is spent by this call. Spend it only
        // when its successor can be saved, or a restart would need a new sign-in.
        self.hold_while_unwritable()?;
        let issued = SystemTime::now();
        log::debug!("refreshing the Frame.io access token");
        match self.inner.ims.refresh(&refresh_token) {
            Ok(grant) => {
                let set = grant.into_set(issued, Some(refresh_token))?;
                // On disk before anyone uses it: the old refresh token is spent now. A save
                // that fails (the disk filled since the probe) is tried again.
                let mut saved = save_tokens(&self.inner.path, &set);
                for wait in SAVE_RETRIES {
                    if saved.is_ok() {
                        break;
                    }
                    std::thread::sleep(wait);
                    saved = save_tokens(&self.inner.path, &set);
                }
                let mut cur = lock(&self.inner.current);
                match saved {
                    Ok(stamp) => {
                        cur.stamp = Some(stamp);
                        cur.unsaved = false;
                    }
                    // Keep going with the new pair in memory (the old one is spent); it is
                    // saved again before every use until that works.
                    Err(e) => {
                        log::error!(
                            "{e}; the new tokens are kept in memory and saved as soon as the \
                             state dir can be written (a restart before that needs `postflow auth`)"
                        );
                        cur.unsaved = true;
                    }
                }
                cur.tokens = Some(set);
                cur.generation += 1;
                self.set_state(&mut cur, AuthState::Connected);
                Ok(())
            }
            Err(ImsFailure::InvalidGrant(description)) => {
                let mut cur = lock(&self.inner.current);
                // Another process may have refreshed (or signed in) meanwhile.
                self.sync_from_disk(&mut cur);
                if cur.generation != seen {
                    return Ok(());
                }
                let reason = format!("Adobe refused the saved refresh token: {description}");
                self.set_state(
                    &mut cur,
                    AuthState::NeedsLogin {
                        reason: reason.clone(),
                    },
                );
                Err(AuthError::NeedsLogin(reason))
            }
            Err(ImsFailure::Other(e)) => Err(e),
        }
    }

    /// `Err(Store)` while the tokens' dir takes no write: the refresh token on disk is not spent
    /// then. Said once at WARN when it starts, at INFO when it ends.
    fn hold_while_unwritable(&self) -> Result<(), AuthError> {
        let probe = dir_takes_writes(&self.inner.path);
        let mut cur = lock(&self.inner.current);
        match probe {
            Ok(()) => {
                if std::mem::take(&mut cur.refresh_held) {
                    log::info!("the state dir takes writes again: Frame.io tokens are refreshed");
                }
                Ok(())
            }
            Err(e) => {
                let message =
                    format!("{e}; the refresh token is not spent until its successor can be saved");
                if !std::mem::replace(&mut cur.refresh_held, true) {
                    log::warn!(
                        "cannot save Frame.io tokens to {}: {message}",
                        self.inner.path.display()
                    );
                }
                Err(AuthError::Store {
                    path: self.inner.path.clone(),
                    message,
                })
            }
        }
    }

    /// A rotated pair that could not be saved: tried again (skipped while a refresh runs).
    fn save_if_unsaved(&self) {
        let Ok(_gate) = self.inner.gate.try_lock() else {
            return;
        };
        let mut cur = lock(&self.inner.current);
        if !cur.unsaved {
            return;
        }
        let Some(set) = cur.tokens.clone() else {
            return;
        };
        if let Ok(stamp) = save_tokens(&self.inner.path, &set) {
            log::info!(
                "Frame.io tokens saved to {} now that the state dir takes writes",
                self.inner.path.display()
            );
            cur.stamp = Some(stamp);
            cur.unsaved = false;
        }
    }

    /// Reads `tokens.json` again when it is not the version we last saw.
    fn sync_from_disk(&self, cur: &mut Current) {
        let path = &self.inner.path;
        let stamp = match File::open(path).and_then(|f| Stamp::of(&f)) {
            Ok(stamp) => stamp,
            // Gone or unreadable: keep what we have in memory.
            Err(_) => return,
        };
        if cur.stamp == Some(stamp) {
            return;
        }
        match read_tokens(path) {
            Ok(Some((set, stamp))) => {
                // A new sign-in (`postflow auth`): it replaces a pair not saved yet.
                cur.unsaved = false;
                cur.tokens = Some(set);
                cur.stamp = Some(stamp);
                cur.generation += 1;
                self.set_state(cur, AuthState::Connected);
            }
            Ok(None) => {}
            Err(reason) => {
                cur.stamp = Some(stamp);
                if cur.tokens.is_none() {
                    self.set_state(cur, AuthState::NeedsLogin { reason });
                } else {
                    log::warn!("{reason}; keeping the tokens in memory");
                }
            }
        }
    }

    fn set_state(&self, cur: &mut Current, new: AuthState) {
        if cur.state == new {
            return;
        }
        match &new {
            AuthState::Connected => log::info!("Frame.io: connected"),
            AuthState::NeedsLogin { reason } => log::warn!(
                "Frame.io needs a new sign-in ({reason}); uploads wait until `postflow auth` is run"
            ),
        }
        cur.state = new.clone();
        if let Some(hub) = &self.inner.hub {
            hub.publish(Event::AuthChanged(new));
        }
    }
}

/// What was wrong with what the person pasted after signing in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasteError {
    /// Nothing was pasted.
    Empty,
    /// The address carries another sign-in attempt's `state` (or none).
    StateMismatch,
    /// Adobe redirected with `error=` (the person declined, or the credential is misconfigured).
    Denied { error: String, description: String },
    /// An address without a `code`.
    NoCode,
}

impl fmt::Display for PasteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PasteError::Empty => write!(
                f,
                "nothing was pasted: run `postflow auth config.json` again and paste the address \
                 the browser shows after signing in"
            ),
            PasteError::StateMismatch => write!(
                f,
                "the pasted address is not from this sign-in (its state does not match): open the \
                 link printed by this run of `postflow auth` and paste the address it leads to"
            ),
            PasteError::Denied { error, description } if description.is_empty() => {
                write!(f, "Adobe did not sign you in ({error})")
            }
            PasteError::Denied { error, description } => {
                write!(f, "Adobe did not sign you in ({error}: {description})")
            }
            PasteError::NoCode => write!(
                f,
                "the pasted address has no code= in it: paste the whole address from the browser's \
                 address bar after signing in"
            ),
        }
    }
}

impl std::error::Error for PasteError {}

/// The sign-in code from a pasted redirect address (whose `state` must equal `expected`) or a
/// bare code.
pub fn code_from_paste(pasted: &str, expected_state: &str) -> Result<String, PasteError> {
    let pasted = pasted.trim();
    if pasted.is_empty() {
        return Err(PasteError::Empty);
    }
    // A bare code may end in Base64 padding (`=`), so only these mark an address.
    let is_address = pasted.contains(['?', '#'])
        || pasted.contains("://")
        || ["code=", "state=", "error="]
            .iter()
            .any(|p| pasted.starts_with(p) || pasted.contains(&format!("&{p}")));
    if !is_address {
        return Ok(pasted.to_string());
    }
    // The parameters come in the query, or in the fragment with response_mode=fragment.
    let after_path = pasted
        .split_once('?')
        .map(|(_, rest)| rest)
        .or_else(|| pasted.split_once('#').map(|(_, rest)| rest))
        .unwrap_or(pasted);
    let mut params = Vec::new();
    for part in after_path.split('#') {
        params.extend(parse_query(part));
    }
    let get = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    if get("state").as_deref() != Some(expected_state) {
        return Err(PasteError::StateMismatch);
    }
    if let Some(error) = get("error") {
        return Err(PasteError::Denied {
            error,
            description: get("error_description").unwrap_or_default(),
        });
    }
    get("code")
        .filter(|c| !c.is_empty())
        .ok_or(PasteError::NoCode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pasted_address_must_carry_our_state() {
        let url = "https://localhost/postflow/callback?code=eyJabc%2B1&state=s123";
        assert_eq!(code_from_paste(url, "s123"), Ok("eyJabc+1".to_string()));
        assert_eq!(
            code_from_paste(&format!("  {url}\n"), "other"),
            Err(PasteError::StateMismatch)
        );
        let no_state = "https://localhost/postflow/callback?code=abc";
        assert_eq!(
            code_from_paste(no_state, "s"),
            Err(PasteError::StateMismatch)
        );
        assert_eq!(code_from_paste("code=abc&state=s", "s"), Ok("abc".into()));
        assert_eq!(
            code_from_paste("https://localhost/cb#code=abc&state=s", "s"),
            Ok("abc".into())
        );
    }

    #[test]
    fn a_bare_code_is_accepted_and_errors_are_read() {
        assert_eq!(
            code_from_paste(" eyJ0eXAi.abc \n", "s"),
            Ok("eyJ0eXAi.abc".into())
        );
        assert_eq!(code_from_paste("abc+/9==", "s"), Ok("abc+/9==".into()));
        assert_eq!(code_from_paste("  \n", "s"), Err(PasteError::Empty));
        let denied =
            "https://localhost/cb?error=access_denied&error_description=user+said+no&state=s";
        let e = code_from_paste(denied, "s").unwrap_err();
        assert_eq!(
            e,
            PasteError::Denied {
                error: "access_denied".into(),
                description: "user said no".into()
            }
        );
        assert!(e.to_string().contains("access_denied: user said no"));
        assert_eq!(
            code_from_paste("https://localhost/cb?state=s", "s"),
            Err(PasteError::NoCode)
        );
    }

    #[test]
    fn token_responses_are_read_whatever_shape_expires_in_has() {
        let g = parse_token_response(
            200,
            r#"{"access_token":"a","refresh_token":"r","expires_in":86399,"token_type":"bearer"}"#,
        )
        .ok()
        .unwrap();
        assert_eq!(
            (g.expires_in, g.refresh_token.as_deref()),
            (86399, Some("r"))
        );
        let g = parse_token_response(200, r#"{"access_token":"a","expires_in":"3"}"#)
            .ok()
            .unwrap();
        assert_eq!((g.expires_in, g.refresh_token), (3, None));
        assert!(matches!(
            parse_token_response(400, r#"{"error":"invalid_grant","error_description":"used"}"#),
            Err(ImsFailure::InvalidGrant(d)) if d == "used"
        ));
        assert!(matches!(
            parse_token_response(
                401,
                r#"{"error":"invalid_client","error_description":"bad"}"#
            ),
            Err(ImsFailure::Other(AuthError::InvalidClient(_)))
        ));
        assert!(matches!(
            parse_token_response(503, "<html>busy</html>"),
            Err(ImsFailure::Other(AuthError::Ims { status: 503, .. }))
        ));
    }

    #[test]
    fn freshness_uses_five_minutes_or_half_the_lifetime() {
        let now = SystemTime::now();
        let set = |left: u64, lifetime: u64| TokenSet {
            access_token: String::new(),
            refresh_token: String::new(),
            expires_at: now + Duration::from_secs(left),
            lifetime: Duration::from_secs(lifetime),
        };
        assert!(set(3600, 86399).is_fresh(now));
        assert!(!set(299, 86399).is_fresh(now));
        assert!(set(2, 3).is_fresh(now), "2 s left of 3: more than half");
        assert!(!set(1, 3).is_fresh(now));
        assert!(!set(0, 3).is_fresh(now));
    }

    #[test]
    fn tokens_are_saved_atomically_with_mode_0600_and_read_back() {
        let dir = std::env::temp_dir().join(format!("postflow-auth-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("tokens.json");
        let set = TokenSet {
            access_token: "acc".into(),
            refresh_token: "ref".into(),
            expires_at: SystemTime::now() + Duration::from_secs(100),
            lifetime: Duration::from_secs(100),
        };
        let stamp = save_tokens(&path, &set).unwrap();
        let (back, read_stamp) = read_tokens(&path).unwrap().unwrap();
        assert_eq!(stamp, read_stamp);
        assert_eq!(
            (back.access_token.as_str(), back.refresh_token.as_str()),
            ("acc", "ref")
        );
        assert!(
            back.lifetime <= Duration::from_secs(100) && back.lifetime >= Duration::from_secs(98)
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(!crate::private_file::readable_by_others(&path));
        let leftovers: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temp file left behind");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_tokens_file_replaced_with_the_same_size_and_mtime_is_still_noticed() {
        let dir = crate::testutil::TempDir::new();
        let path = dir.0.join("tokens.json");
        let set = TokenSet {
            access_token: "acc".into(),
            refresh_token: "ref".into(),
            expires_at: SystemTime::now() + Duration::from_secs(100),
            lifetime: Duration::from_secs(100),
        };
        let ours = save_tokens(&path, &set).unwrap();
        // Another process writes the same bytes beside it, with the same mtime, and renames
        // it over: only the file's identity tells.
        let other = dir.0.join("other.json");
        std::fs::write(&other, std::fs::read(&path).unwrap()).unwrap();
        let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
        File::options()
            .write(true)
            .open(&other)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        std::fs::rename(&other, &path).unwrap();
        let (_, theirs) = read_tokens(&path).unwrap().unwrap();
        assert_eq!((theirs.len, theirs.modified), (ours.len, ours.modified));
        assert_ne!(theirs, ours);
    }
}
