//! Adobe IMS stand-in: authorize (auto-approve), token (code + refresh with rotation),
//! revoke, discovery.

use super::options::{take_one, Faults};
use super::state::{AccessToken, AuthCode, RefreshToken, State};
use super::{Meta, Reply, Shared};
use crate::util::{base64_decode, base64url, parse_query, percent_encode, query_get, unix_ms};
use serde_json::json;
use std::time::{Duration, SystemTime};

/// Scopes of tokens minted by `FrameIo::login_tokens`.
pub(crate) const DEFAULT_SCOPES: &[&str] = &[
    "openid",
    "email",
    "profile",
    "offline_access",
    "additional_info.roles",
];

/// IMS does not document the code lifetime; ten minutes is the common OAuth choice.
const CODE_LIFETIME: Duration = Duration::from_secs(600);

pub(crate) fn handle(
    shared: &Shared,
    meta: &Meta,
    rest: &str,
    body: &[u8],
) -> (&'static str, Reply) {
    match (meta.method.as_str(), rest) {
        ("GET", ".well-known/openid-configuration") => ("ims_openid", discovery(shared)),
        ("GET", "authorize/v2") => ("ims_authorize", authorize(shared, meta)),
        ("POST", "token/v3") => ("ims_token", token(shared, meta, body)),
        ("POST", "revoke") => ("ims_revoke", revoke(shared, meta, body)),
        _ => ("ims_unknown", Reply::text(404, "not found")),
    }
}

fn discovery(shared: &Shared) -> Reply {
    let b = &shared.base_url;
    Reply::json(
        200,
        &json!({
            "issuer": format!("{b}"),
            "authorization_endpoint": format!("{b}/ims/authorize/v2"),
            "token_endpoint": format!("{b}/ims/token/v3"),
            "userinfo_endpoint": format!("{b}/ims/userinfo/v2"),
            "revocation_endpoint": format!("{b}/ims/revoke"),
            "jwks_uri": format!("{b}/ims/keys"),
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "grant_types_supported": ["authorization_code", "implicit_grant", "refresh_token"],
            "response_types_supported": ["code", "token", "id_token", "id_token token", "code id_token"],
            "scopes_supported": ["openid", "email", "profile", "offline_access", "AdobeID", "additional_info.roles"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
        }),
    )
}

/// Scopes are space- or comma-separated (IMS accepts both).
pub(crate) fn split_scopes(s: &str) -> Vec<String> {
    s.split([' ', ','])
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect()
}

fn authorize(shared: &Shared, meta: &Meta) -> Reply {
    let q = &meta.query;
    let Some(client_id) = query_get(q, "client_id") else {
        return Reply::text(400, "missing client_id");
    };
    if client_id != shared.client_id {
        return Reply::text(400, &format!("unknown client_id {client_id:?}"));
    }
    // IMS redirects to the default URI when none is given; a given one must match.
    let redirect = query_get(q, "redirect_uri").unwrap_or(&shared.redirect_uri);
    if redirect != shared.redirect_uri {
        return Reply::text(
            400,
            &format!(
                "redirect_uri {redirect:?} does not match the credential's registered redirect URI"
            ),
        );
    }
    match query_get(q, "response_type") {
        None | Some("code") => {}
        Some(other) => {
            return Reply::text(
                400,
                &format!("unsupported response_type {other:?} (this credential uses \"code\")"),
            )
        }
    }
    let state = query_get(q, "state").unwrap_or("");
    if state.len() > 4096 {
        return Reply::text(400, "state longer than 4096 characters");
    }
    let scopes = split_scopes(query_get(q, "scope").unwrap_or(""));
    let code = {
        let mut st = shared.lock();
        let code = format!("eyJ{}", st.rng.hex(24));
        st.codes.insert(
            code.clone(),
            AuthCode {
                client_id: client_id.to_string(),
                redirect_uri: redirect.to_string(),
                scopes,
                expires_at: SystemTime::now() + CODE_LIFETIME,
                used: false,
            },
        );
        code
    };
    let sep = if redirect.contains('?') { '&' } else { '?' };
    let mut location = format!("{redirect}{sep}code={}", percent_encode(&code));
    if query_get(q, "state").is_some() {
        location.push_str(&format!("&state={}", percent_encode(state)));
    }
    Reply::text(302, "redirecting").with_header("Location", &location)
}

fn oauth_error(status: u16, error: &str, description: &str) -> Reply {
    Reply::json(
        status,
        &json!({"error": error, "error_description": description}),
    )
}

/// Params from the query string and the form body (body wins), as IMS allows both.
fn params(meta: &Meta, body: &[u8]) -> Vec<(String, String)> {
    let mut p = parse_query(&String::from_utf8_lossy(body));
    p.extend(meta.query.iter().cloned());
    p
}

/// `client_secret_basic` or `client_secret_post`. `Err` is the 401 to send.
fn client_auth(shared: &Shared, meta: &Meta, p: &[(String, String)]) -> Result<String, Reply> {
    let bad = |why: &str| oauth_error(401, "invalid_client", why);
    let (id, secret) = match meta.header("authorization") {
        Some(h) => {
            let Some(b64) = h
                .strip_prefix("Basic ")
                .or_else(|| h.strip_prefix("basic "))
            else {
                return Err(bad("unsupported Authorization scheme"));
            };
            let decoded = base64_decode(b64.trim())
                .and_then(|d| String::from_utf8(d).ok())
                .ok_or_else(|| bad("malformed Basic credentials"))?;
            let (i, s) = decoded
                .split_once(':')
                .ok_or_else(|| bad("malformed Basic credentials"))?;
            (i.to_string(), s.to_string())
        }
        None => (
            query_get(p, "client_id").unwrap_or("").to_string(),
            query_get(p, "client_secret").unwrap_or("").to_string(),
        ),
    };
    if id.is_empty() {
        return Err(bad("client_id missing"));
    }
    if id != shared.client_id || secret != shared.client_secret {
        return Err(bad("invalid client_id or client_secret"));
    }
    if let Some(body_id) = query_get(p, "client_id") {
        if body_id != id {
            return Err(bad(
                "client_id parameter does not match the Basic credentials",
            ));
        }
    }
    Ok(id)
}

fn token(shared: &Shared, meta: &Meta, body: &[u8]) -> Reply {
    let limited = {
        let mut f = shared.faults();
        take_one(&mut f.ims_429_next).then_some(f.ims_retry_after_secs)
    };
    if let Some(secs) = limited {
        return oauth_error(429, "too_many_requests", "Too many requests, retry later")
            .with_header("Retry-After", &secs.to_string());
    }
    let p = params(meta, body);
    let client_id = match client_auth(shared, meta, &p) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let faults = shared.faults_now();
    let now = SystemTime::now();
    let mut st = shared.lock();
    let scopes = match query_get(&p, "grant_type") {
        Some("authorization_code") => {
            let Some(code) = query_get(&p, "code") else {
                return oauth_error(400, "invalid_request", "code is required");
            };
            let Some(c) = st.codes.get_mut(code) else {
                return oauth_error(400, "invalid_grant", "invalid authorization code");
            };
            if c.used {
                return oauth_error(400, "invalid_grant", "authorization code already used");
            }
            if c.expires_at <= now {
                return oauth_error(400, "invalid_grant", "authorization code expired");
            }
            if c.client_id != client_id {
                return oauth_error(400, "invalid_grant", "code was issued to another client");
            }
            if let Some(r) = query_get(&p, "redirect_uri") {
                if r != c.redirect_uri {
                    return oauth_error(400, "invalid_grant", "redirect_uri mismatch");
                }
            }
            c.used = true;
            (c.scopes.clone(), "authorization_code")
        }
        Some("refresh_token") => {
            let Some(rt) = query_get(&p, "refresh_token") else {
                return oauth_error(400, "invalid_request", "refresh_token is required");
            };
            let Some(r) = st.refresh.get_mut(rt) else {
                return oauth_error(400, "invalid_grant", "invalid refresh token");
            };
            if r.revoked {
                return oauth_error(400, "invalid_grant", "refresh token revoked");
            }
            if r.expires_at <= now {
                return oauth_error(400, "invalid_grant", "refresh token expired");
            }
            if r.used && !faults.rotation_reuse_allowed {
                return oauth_error(400, "invalid_grant", "refresh token already used");
            }
            if r.client_id != client_id {
                return oauth_error(
                    400,
                    "invalid_grant",
                    "refresh token issued to another client",
                );
            }
            r.used = true;
            (r.scopes.clone(), "refresh_token")
        }
        Some(other) => {
            return oauth_error(
                400,
                "unsupported_grant_type",
                &format!("unsupported grant_type {other:?}"),
            )
        }
        None => return oauth_error(400, "invalid_request", "grant_type is required"),
    };
    let (scopes, grant) = scopes;
    let want_id_token = scopes.iter().any(|s| s == "openid");
    let (access, refresh) = issue_pair(&mut st, &client_id, scopes, &faults, grant);
    let mut out = json!({
        "access_token": access,
        "token_type": "bearer",
        "expires_in": faults.access_token_lifetime_secs,
    });
    if let Some(r) = refresh {
        out["refresh_token"] = json!(r);
    }
    if want_id_token {
        let user = st.user.id.clone();
        out["id_token"] = json!(jwt(&mut st, "id_token", &client_id, &user, 86_400));
        out["sub"] = json!(format!("{user}@AdobeID"));
    }
    Reply::json(200, &out)
}

/// Mints an access token and, if `offline_access` was granted, a refresh token.
pub(crate) fn issue_pair(
    st: &mut State,
    client_id: &str,
    scopes: Vec<String>,
    faults: &Faults,
    grant: &'static str,
) -> (String, Option<String>) {
    let now = SystemTime::now();
    let user = st.user.id.clone();
    let access = jwt(
        st,
        "access_token",
        client_id,
        &user,
        faults.access_token_lifetime_secs,
    );
    let access_exp = now + Duration::from_secs(faults.access_token_lifetime_secs);
    st.access.insert(
        access.clone(),
        AccessToken {
            user_id: user.clone(),
            expires_at: access_exp,
            revoked: false,
        },
    );
    st.log_token("access", &access, grant, access_exp);
    if !scopes.iter().any(|s| s == "offline_access") {
        return (access, None);
    }
    let refresh = jwt(
        st,
        "refresh_token",
        client_id,
        &user,
        faults.refresh_token_lifetime_secs,
    );
    let refresh_exp = now + Duration::from_secs(faults.refresh_token_lifetime_secs);
    st.refresh.insert(
        refresh.clone(),
        RefreshToken {
            client_id: client_id.to_string(),
            scopes,
            expires_at: refresh_exp,
            used: false,
            revoked: false,
        },
    );
    st.log_token("refresh", &refresh, grant, refresh_exp);
    (access, Some(refresh))
}

/// JWT-shaped opaque token: claims as Adobe's tokens carry them (`created_at`/`expires_in`
/// in milliseconds, as strings), signature random. Clients must treat it as opaque.
fn jwt(st: &mut State, kind: &str, client_id: &str, user: &str, lifetime_secs: u64) -> String {
    let header = json!({"alg": "RS256", "x5u": "ims_na1-key-at-1.cer", "kid": "ims_na1-key-at-1", "itt": "at"});
    let claims = json!({
        "id": st.rng.uuid(),
        "type": kind,
        "client_id": client_id,
        "user_id": format!("{user}@AdobeID"),
        "as": "ims-na1",
        "created_at": unix_ms(SystemTime::now()).to_string(),
        "expires_in": (lifetime_secs.saturating_mul(1000)).to_string(),
    });
    let sig = st.rng.bytes(48);
    format!(
        "{}.{}.{}",
        base64url(header.to_string().as_bytes()),
        base64url(claims.to_string().as_bytes()),
        base64url(&sig)
    )
}

fn revoke(shared: &Shared, meta: &Meta, body: &[u8]) -> Reply {
    let p = params(meta, body);
    // Revocation is lenient about client auth when none is sent, strict when it is wrong.
    let has_auth = meta.header("authorization").is_some() || query_get(&p, "client_id").is_some();
    if has_auth {
        if let Err(r) = client_auth(shared, meta, &p) {
            return r;
        }
    }
    let Some(token) = query_get(&p, "token") else {
        return oauth_error(400, "invalid_request", "token is required");
    };
    let mut st = shared.lock();
    if let Some(a) = st.access.get_mut(token) {
        a.revoked = true;
    }
    if let Some(r) = st.refresh.get_mut(token) {
        r.revoked = true;
    }
    Reply::empty(200)
}

/// Checks a `Bearer` token for `/v4`. `Ok(user id)`.
pub(crate) fn check_bearer(st: &State, meta: &Meta) -> Result<String, ()> {
    let h = meta.header("authorization").ok_or(())?;
    let token = h
        .strip_prefix("Bearer ")
        .or_else(|| h.strip_prefix("bearer "))
        .ok_or(())?
        .trim();
    let a = st.access.get(token).ok_or(())?;
    if a.revoked || a.expires_at <= SystemTime::now() {
        return Err(());
    }
    Ok(a.user_id.clone())
}
