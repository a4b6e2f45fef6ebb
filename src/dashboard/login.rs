//! "Connect Frame.io" from the page, on the token owner (`frameio::Auth`): the same store as
//! `postflow auth`, so waiting jobs resume the same way (the `auth-watch` thread sees the new
//! tokens and tells the queue).
//!
//! Each `/oauth/start` makes a fresh `state`; the few most recent ones are remembered for a
//! while, so a person who clicked twice can paste either tab's address.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use super::{AuthStatus, FrameioLogin};
use crate::frameio::auth::{code_from_paste, PasteError};
use crate::frameio::{random_hex, Auth, AuthState};

/// Sign-ins started and not finished that are still accepted.
const PENDING: usize = 8;
/// How long a started sign-in may take.
const PENDING_FOR: Duration = Duration::from_secs(30 * 60);

pub struct AuthLogin {
    auth: Auth,
    pending: Mutex<Vec<(String, Instant)>>,
}

impl AuthLogin {
    pub fn new(auth: Auth) -> AuthLogin {
        AuthLogin {
            auth,
            pending: Mutex::new(Vec::new()),
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Vec<(String, Instant)>> {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        p.retain(|(_, at)| at.elapsed() < PENDING_FOR);
        p
    }
}

impl FrameioLogin for AuthLogin {
    fn status(&self) -> AuthStatus {
        let needs_login = match self.auth.state() {
            AuthState::Connected => None,
            AuthState::NeedsLogin { reason } => Some(reason),
        };
        let logged_in = needs_login.is_none();
        let expires_at = self.auth.expires_in().map(|left| {
            (SystemTime::now() + left)
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        });
        AuthStatus {
            logged_in,
            needs_login,
            account: None,
            expires_at,
        }
    }

    fn authorize_url(&self) -> Result<String, String> {
        let state =
            random_hex(16).map_err(|e| format!("cannot make the sign-in's state value: {e}"))?;
        let mut p = self.pending();
        if p.len() == PENDING {
            p.remove(0);
        }
        p.push((state.clone(), Instant::now()));
        Ok(self.auth.authorize_url(&state))
    }

    fn complete(&self, redirected: &str) -> Result<(), String> {
        let states: Vec<String> = self.pending().iter().map(|(s, _)| s.clone()).collect();
        let mut last = PasteError::StateMismatch;
        let mut code = None;
        for state in &states {
            match code_from_paste(redirected, state) {
                Ok(c) => {
                    self.pending().retain(|(s, _)| s != state);
                    code = Some(c);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let code = match (code, states.is_empty()) {
            (Some(c), _) => c,
            (None, true) => {
                return Err(
                    "no sign-in was started here (or it is over 30 minutes old): click \
                     \"Connect Frame.io\" again"
                        .into(),
                )
            }
            (None, false) => {
                return Err(match last {
                    PasteError::StateMismatch => "the pasted address is not from a sign-in \
                        started on this page: click \"Connect Frame.io\" again and paste the \
                        address that tab ends on"
                        .to_string(),
                    other => other.to_string(),
                })
            }
        };
        self.auth
            .login_with_code(&code)
            .map_err(|e| e.to_string())?;
        log::info!("Frame.io: signed in from the dashboard");
        Ok(())
    }
}
