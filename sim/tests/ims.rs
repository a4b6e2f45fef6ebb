//! Adobe IMS stand-in: the authorization-code flow with both client-auth styles, refresh
//! rotation, and the errors a client must handle.

mod common;

use common::{get, post_form};
use sim::{FrameIo, Options};

/// Standard base64 with padding, for `Authorization: Basic`.
fn b64(s: &str) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|c| {
            if c.is_ascii_alphanumeric() || b"-_.~".contains(&c) {
                (c as char).to_string()
            } else {
                format!("%{c:02X}")
            }
        })
        .collect()
}

/// Runs the browser half: returns the `code` from the redirect, checking `state` came back.
fn authorize(sim: &FrameIo, scope: &str) -> String {
    let url = format!(
        "/ims/authorize/v2?client_id={}&redirect_uri={}&scope={}&state=xyz%2F42&response_type=code",
        sim.client_id(),
        enc(sim.redirect_uri()),
        enc(scope)
    );
    let a = get(sim.base_url(), "", &url);
    assert_eq!(a.status, 302, "{}", a.body);
    let loc = a.header("location").expect("Location header").to_string();
    let prefix = format!("{}?code=", sim.redirect_uri());
    assert!(loc.starts_with(&prefix), "{loc}");
    assert!(loc.ends_with("&state=xyz%2F42"), "state echoed: {loc}");
    let code = &loc[prefix.len()..loc.find("&state=").unwrap()];
    code.to_string()
}

fn token_url(sim: &FrameIo) -> String {
    format!("{}/ims/token/v3", sim.base_url())
}

#[test]
fn code_flow_with_basic_client_auth_then_refresh_rotates() {
    let sim = FrameIo::start(Options::default()).unwrap();
    let code = authorize(
        &sim,
        "openid,AdobeID,email,profile,offline_access,additional_info.roles",
    );
    let basic = format!(
        "Basic {}",
        b64(&format!("{}:{}", sim.client_id(), sim.client_secret()))
    );
    let a = post_form(
        &token_url(&sim),
        &[("Authorization", &basic)],
        &format!("grant_type=authorization_code&code={}", enc(&code)),
    );
    assert_eq!(a.status, 200, "{}", a.body);
    let j = a.json();
    assert_eq!(j["token_type"], "bearer");
    assert_eq!(j["expires_in"], 86399);
    assert!(j["id_token"].is_string(), "openid asked => id_token");
    let access = j["access_token"].as_str().unwrap().to_string();
    let refresh = j["refresh_token"].as_str().unwrap().to_string();
    assert!(access.starts_with("eyJ"), "JWT-shaped");

    // The access token works on Frame.io.
    assert_eq!(get(sim.base_url(), &access, "/v4/me").status, 200);

    // A code is single-use.
    let again = post_form(
        &token_url(&sim),
        &[("Authorization", &basic)],
        &format!("grant_type=authorization_code&code={}", enc(&code)),
    );
    assert_eq!(again.status, 400);
    assert_eq!(again.json()["error"], "invalid_grant");

    // Refresh: a new pair, and the used refresh token stops working.
    let r1 = post_form(
        &token_url(&sim),
        &[("Authorization", &basic)],
        &format!("grant_type=refresh_token&refresh_token={}", enc(&refresh)),
    );
    assert_eq!(r1.status, 200, "{}", r1.body);
    let new_refresh = r1.json()["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(new_refresh, refresh);
    assert_ne!(r1.json()["access_token"].as_str().unwrap(), access);

    let reuse = post_form(
        &token_url(&sim),
        &[("Authorization", &basic)],
        &format!("grant_type=refresh_token&refresh_token={}", enc(&refresh)),
    );
    assert_eq!(reuse.status, 400);
    assert_eq!(reuse.json()["error"], "invalid_grant");

    let r2 = post_form(
        &token_url(&sim),
        &[("Authorization", &basic)],
        &format!(
            "grant_type=refresh_token&refresh_token={}",
            enc(&new_refresh)
        ),
    );
    assert_eq!(r2.status, 200, "the rotated token works");

    let kinds: Vec<_> = sim.tokens().iter().map(|t| (t.kind, t.grant)).collect();
    assert_eq!(
        kinds,
        [
            ("access", "authorization_code"),
            ("refresh", "authorization_code"),
            ("access", "refresh_token"),
            ("refresh", "refresh_token"),
            ("access", "refresh_token"),
            ("refresh", "refresh_token"),
        ]
    );
}

#[test]
fn code_flow_with_client_secret_post_and_space_separated_scopes() {
    let sim = FrameIo::start(Options::default()).unwrap();
    let code = authorize(
        &sim,
        "openid email profile offline_access additional_info.roles",
    );
    let form = format!(
        "grant_type=authorization_code&client_id={}&client_secret={}&code={}&redirect_uri={}",
        sim.client_id(),
        sim.client_secret(),
        enc(&code),
        enc(sim.redirect_uri())
    );
    let a = post_form(&token_url(&sim), &[], &form);
    assert_eq!(a.status, 200, "{}", a.body);
    let refresh = a.json()["refresh_token"].as_str().unwrap().to_string();

    // Refresh with body credentials, parameters in the query string this time.
    let url = format!(
        "{}?grant_type=refresh_token&client_id={}&client_secret={}&refresh_token={}",
        token_url(&sim),
        sim.client_id(),
        sim.client_secret(),
        enc(&refresh)
    );
    let r = post_form(&url, &[], "");
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn without_offline_access_there_is_no_refresh_token() {
    let sim = FrameIo::start(Options::default()).unwrap();
    let code = authorize(&sim, "openid,email");
    let form = format!(
        "grant_type=authorization_code&client_id={}&client_secret={}&code={}",
        sim.client_id(),
        sim.client_secret(),
        enc(&code)
    );
    let j = post_form(&token_url(&sim), &[], &form).json();
    assert!(j["access_token"].is_string());
    assert!(j.get("refresh_token").is_none());
}

#[test]
fn wrong_client_credentials_are_invalid_client_401() {
    let sim = FrameIo::start(Options::default()).unwrap();
    let code = authorize(&sim, "offline_access");
    let bad_basic = format!("Basic {}", b64(&format!("{}:nope", sim.client_id())));
    let a = post_form(
        &token_url(&sim),
        &[("Authorization", &bad_basic)],
        &format!("grant_type=authorization_code&code={}", enc(&code)),
    );
    assert_eq!(a.status, 401);
    assert_eq!(a.json()["error"], "invalid_client");
    assert!(a.json()["error_description"].is_string());

    let form = format!(
        "grant_type=authorization_code&client_id={}&client_secret=nope&code={}",
        sim.client_id(),
        enc(&code)
    );
    assert_eq!(post_form(&token_url(&sim), &[], &form).status, 401);
    // The code was not burnt by the failed attempts.
    let form = format!(
        "grant_type=authorization_code&client_id={}&client_secret={}&code={}",
        sim.client_id(),
        sim.client_secret(),
        enc(&code)
    );
    assert_eq!(post_form(&token_url(&sim), &[], &form).status, 200);
}

#[test]
fn authorize_rejects_unknown_client_and_foreign_redirect() {
    let sim = FrameIo::start(Options::default()).unwrap();
    let a = get(
        sim.base_url(),
        "",
        "/ims/authorize/v2?client_id=other&scope=openid&response_type=code",
    );
    assert_eq!(a.status, 400);
    assert!(a.body.contains("client_id"), "{}", a.body);
    let a = get(
        sim.base_url(),
        "",
        &format!(
            "/ims/authorize/v2?client_id={}&redirect_uri={}&response_type=code",
            sim.client_id(),
            enc("http://127.0.0.1:8080/oauth/callback")
        ),
    );
    assert_eq!(a.status, 400);
    assert!(a.body.contains("redirect_uri"), "{}", a.body);
    // No redirect_uri: IMS falls back to the default one.
    let a = get(
        sim.base_url(),
        "",
        &format!(
            "/ims/authorize/v2?client_id={}&scope=openid",
            sim.client_id()
        ),
    );
    assert_eq!(a.status, 302);
    assert!(a
        .header("location")
        .unwrap()
        .starts_with(sim.redirect_uri()));
}

#[test]
fn a_mismatched_redirect_uri_at_exchange_is_invalid_grant() {
    let sim = FrameIo::start(Options::default()).unwrap();
    let code = authorize(&sim, "offline_access");
    let form = format!(
        "grant_type=authorization_code&client_id={}&client_secret={}&code={}&redirect_uri={}",
        sim.client_id(),
        sim.client_secret(),
        enc(&code),
        enc("https://elsewhere/cb")
    );
    let a = post_form(&token_url(&sim), &[], &form);
    assert_eq!(a.status, 400);
    assert_eq!(a.json()["error"], "invalid_grant");
}

#[test]
fn rotation_reuse_knob_and_expire_refresh_tokens_now() {
    let sim = FrameIo::start(Options::default()).unwrap();
    sim.set_faults(|f| f.rotation_reuse_allowed = true);
    let t = sim.login_tokens();
    let form = |rt: &str| {
        format!(
            "grant_type=refresh_token&client_id={}&client_secret={}&refresh_token={}",
            sim.client_id(),
            sim.client_secret(),
            enc(rt)
        )
    };
    assert_eq!(
        post_form(&token_url(&sim), &[], &form(&t.refresh_token)).status,
        200
    );
    assert_eq!(
        post_form(&token_url(&sim), &[], &form(&t.refresh_token)).status,
        200,
        "reuse allowed"
    );
    sim.expire_refresh_tokens_now();
    let a = post_form(&token_url(&sim), &[], &form(&t.refresh_token));
    assert_eq!(a.status, 400);
    assert_eq!(a.json()["error"], "invalid_grant");
    assert!(a.json()["error_description"]
        .as_str()
        .unwrap()
        .contains("expired"));
}

#[test]
fn revoked_refresh_token_is_refused() {
    let sim = FrameIo::start(Options::default()).unwrap();
    let t = sim.login_tokens();
    let a = post_form(
        &format!("{}/ims/revoke", sim.base_url()),
        &[],
        &format!("token={}", enc(&t.refresh_token)),
    );
    assert_eq!(a.status, 200);
    assert!(a.body.is_empty());
    let form = format!(
        "grant_type=refresh_token&client_id={}&client_secret={}&refresh_token={}",
        sim.client_id(),
        sim.client_secret(),
        enc(&t.refresh_token)
    );
    assert_eq!(
        post_form(&token_url(&sim), &[], &form).json()["error"],
        "invalid_grant"
    );
}

#[test]
fn discovery_document_points_at_the_simulator() {
    let sim = FrameIo::start(Options::default()).unwrap();
    let j = get(sim.base_url(), "", "/ims/.well-known/openid-configuration").json();
    assert_eq!(
        j["token_endpoint"],
        format!("{}/ims/token/v3", sim.base_url())
    );
    assert_eq!(
        j["authorization_endpoint"],
        format!("{}/ims/authorize/v2", sim.base_url())
    );
    assert_eq!(
        j["token_endpoint_auth_methods_supported"],
        serde_json::json!(["client_secret_basic", "client_secret_post"])
    );
}
