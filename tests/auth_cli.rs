//! `postflow auth` and `postflow check` on the real binary, against the simulator.

mod common;
mod frameio_support;

use frameio_support::{config_for, run_auth, saved_tokens, seed_tokens, start_sim, try_refresh};

use common::Sandbox;
use common::SpawnExt;

#[test]
fn auth_signs_in_with_the_pasted_address_and_saves_the_tokens() {
    let sb = Sandbox::new("auth-paste");
    let sim = start_sim(|_| {});
    sb.write_config(&config_for(&sb, &sim));
    let (status, out, err) = run_auth(&sb, |location| location);
    assert!(status.success(), "stdout: {out}\nstderr: {err}");
    assert!(
        out.contains("Connected to Frame.io as") && out.contains("tokens.json"),
        "{out}"
    );
    let url_line = out
        .lines()
        .find(|l| l.contains("/ims/authorize/v2"))
        .unwrap();
    for part in [
        "client_id=",
        "redirect_uri=",
        "scope=",
        "state=",
        "response_type=code",
    ] {
        assert!(url_line.contains(part), "{part} missing in {url_line}");
    }
    let tokens = saved_tokens(&sb.state_dir());
    let issued = sim.tokens();
    assert!(
        issued
            .iter()
            .any(|t| t.kind == "refresh"
                && Some(t.token.as_str()) == tokens["refresh_token"].as_str())
    );
    assert!(tokens["expires_at"].as_u64().unwrap() > 1_700_000_000);
    // Owner-only. On Windows that is an ACL, which Wine does not model: the unit tests of the
    // code that writes it cover it there.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(sb.state_dir().join("tokens.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let access = tokens["access_token"].as_str().unwrap();
    assert!(
        !out.contains(access) && !err.contains(access),
        "a token was printed"
    );
}

#[test]
fn auth_works_while_run_is_running() {
    let sb = Sandbox::new("auth-while-running");
    let sim = start_sim(|_| {});
    let config = sb.write_config(&config_for(&sb, &sim));
    let mut run = sb.spawn_run(&config);
    sb.wait_for_lock_owner(run.id());
    let (status, out, err) = run_auth(&sb, |location| location);
    assert!(status.success(), "stdout: {out}\nstderr: {err}");
    assert!(sb.state_dir().join("tokens.json").exists());
    common::signal(run.id(), "TERM");
    assert!(common::wait_exit(&mut run, std::time::Duration::from_secs(20)).success());
}

#[test]
fn auth_accepts_the_bare_code() {
    let sb = Sandbox::new("auth-bare-code");
    let sim = start_sim(|_| {});
    sb.write_config(&config_for(&sb, &sim));
    let (status, out, err) = run_auth(&sb, |location| {
        let query = location.split_once('?').unwrap().1;
        postflow::frameio::parse_query(query)
            .into_iter()
            .find(|(k, _)| k == "code")
            .unwrap()
            .1
    });
    assert!(status.success(), "stdout: {out}\nstderr: {err}");
}

#[test]
fn auth_refuses_an_address_from_another_sign_in() {
    let sb = Sandbox::new("auth-wrong-state");
    let sim = start_sim(|_| {});
    sb.write_config(&config_for(&sb, &sim));
    let (status, out, err) = run_auth(&sb, |location| {
        let (before, _) = location.split_once("state=").unwrap();
        format!("{before}state=someone-elses-state")
    });
    assert_eq!(status.code(), Some(1), "stdout: {out}\nstderr: {err}");
    assert!(err.contains("state does not match"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one clear sentence: {err}");
    assert_eq!(
        sim.request_count("ims_token", None),
        0,
        "the code was never sent"
    );
    assert!(!sb.state_dir().join("tokens.json").exists());
}

#[test]
fn auth_explains_a_wrong_client_secret() {
    let sb = Sandbox::new("auth-bad-secret");
    let sim = start_sim(|_| {});
    let mut config = config_for(&sb, &sim);
    config["frameio"]["client_secret"] = "not-the-secret".into();
    sb.write_config(&config);
    let (status, _out, err) = run_auth(&sb, |location| location);
    assert_eq!(status.code(), Some(1));
    assert!(
        err.contains("invalid_client") && err.contains("frameio.client_secret"),
        "{err}"
    );
    assert!(
        !err.contains("not-the-secret"),
        "the secret was printed: {err}"
    );
}

#[test]
fn auth_reports_a_denied_sign_in() {
    let sb = Sandbox::new("auth-denied");
    let sim = start_sim(|_| {});
    sb.write_config(&config_for(&sb, &sim));
    let (status, _out, err) = run_auth(&sb, |location| {
        let state = location.split_once("state=").unwrap().1.to_string();
        format!("https://localhost/postflow/callback?error=access_denied&state={state}")
    });
    assert_eq!(status.code(), Some(1));
    assert!(err.contains("access_denied"), "{err}");
}

#[test]
fn check_passes_against_the_simulator() {
    let sb = Sandbox::new("check-ok");
    let sim = start_sim(|_| {});
    let config = sb.write_config(&config_for(&sb, &sim));
    seed_tokens(&sim, &sb.state_dir(), None);
    let out = sb
        .postflow()
        .arg("check")
        .arg(&config)
        .output_retrying()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    for line in [
        "are fresh",
        "/v4/me works: signed in as",
        &format!("account {}", sim.account_id()),
        &format!("project {}", sim.project_id()),
        &format!("root folder {} is reachable", sim.root_folder_id()),
    ] {
        assert!(stdout.contains(line), "{line:?} missing in:\n{stdout}");
    }
    assert!(!stdout.contains("[FAIL]"), "{stdout}");
}

#[test]
fn check_lists_accounts_and_projects_when_the_ids_are_missing() {
    let sb = Sandbox::new("check-no-ids");
    let sim = start_sim(|o| o.extra_accounts = 1);
    let mut config = config_for(&sb, &sim);
    config["frameio"]["account_id"] = "".into();
    config["frameio"]["project_id"] = "".into();
    let path = sb.write_config(&config);
    seed_tokens(&sim, &sb.state_dir(), None);
    let out = sb
        .postflow()
        .arg("check")
        .arg(&path)
        .output_retrying()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("frameio.account_id is not set"), "{stdout}");
    for id in [sim.account_id(), sim.workspace_id(), sim.project_id()] {
        assert!(stdout.contains(&id), "{id} not listed in:\n{stdout}");
    }
    assert!(
        stdout.matches("-> frameio.account_id").count() == 2,
        "both accounts listed:\n{stdout}"
    );

    // The right account but a wrong project: the account's projects are listed.
    config["frameio"]["account_id"] = sim.account_id().into();
    config["frameio"]["project_id"] = "not-a-project".into();
    let path = sb.write_config(&config);
    let out = sb
        .postflow()
        .arg("check")
        .arg(&path)
        .output_retrying()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("frameio.project_id \"not-a-project\""),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("project {}", sim.project_id())),
        "{stdout}"
    );
}

#[test]
fn check_without_tokens_says_to_run_auth() {
    let sb = Sandbox::new("check-no-tokens");
    let sim = start_sim(|_| {});
    let path = sb.write_config(&config_for(&sb, &sim));
    let out = sb
        .postflow()
        .arg("check")
        .arg(&path)
        .output_retrying()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout.contains("[FAIL] no Frame.io tokens") && stdout.contains("postflow auth"),
        "{stdout}"
    );
}

/// Each `check` is a whole process that refreshes and exits: the second one can only work if
/// the first saved the rotated refresh token before it ended.
#[test]
fn a_refresh_in_one_process_is_what_the_next_process_uses() {
    let sb = Sandbox::new("check-rotation");
    let sim = start_sim(|_| {});
    let path = sb.write_config(&config_for(&sb, &sim));
    let first = seed_tokens(&sim, &sb.state_dir(), Some(0));
    let check = || {
        let out = sb
            .postflow()
            .arg("check")
            .arg(&path)
            .output_retrying()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{stdout}");
        assert!(stdout.contains("were refreshed"), "{stdout}");
        saved_tokens(&sb.state_dir())["refresh_token"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let second = check();
    assert_ne!(second, first);
    assert_eq!(try_refresh(&sim, &first), (400, "invalid_grant".into()));

    // Make the saved access token stale again so the next process must refresh.
    let mut tokens = saved_tokens(&sb.state_dir());
    tokens["expires_at"] = 0.into();
    std::fs::write(
        sb.state_dir().join("tokens.json"),
        serde_json::to_vec(&tokens).unwrap(),
    )
    .unwrap();
    let third = check();
    assert_ne!(third, second);
    assert_eq!(try_refresh(&sim, &second), (400, "invalid_grant".into()));
}

#[test]
fn check_says_to_sign_in_again_when_adobe_refuses_the_refresh_token() {
    let sb = Sandbox::new("check-invalid-grant");
    let sim = start_sim(|_| {});
    let path = sb.write_config(&config_for(&sb, &sim));
    seed_tokens(&sim, &sb.state_dir(), Some(0));
    sim.expire_refresh_tokens_now();
    let out = sb
        .postflow()
        .arg("check")
        .arg(&path)
        .output_retrying()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout.contains("needs a new sign-in") && stdout.contains("postflow auth"),
        "{stdout}"
    );
}
