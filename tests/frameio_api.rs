//! The Frame.io client and the token owner against the simulator: refreshes, paging, rate
//! limits, server errors, and the calls the uploader makes.

mod common;
mod frameio_support;

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use frameio_support::{client, config_for, load, seed_tokens, start_sim, token_requests};
use postflow::frameio::api::Child;
use postflow::frameio::{ApiError, RetryPolicy};
use sim::RetryHint;

use common::Sandbox;

fn quick_retry(tries: u32) -> RetryPolicy {
    RetryPolicy {
        tries,
        first_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(400),
        ..RetryPolicy::default()
    }
}

#[test]
fn ten_threads_hitting_401_together_cause_one_refresh() {
    let sb = Sandbox::new("fio-ten-threads");
    let sim = start_sim(|_| {});
    let config = load(&sb, &config_for(&sb, &sim));
    seed_tokens(&sim, &config.state_dir, None);
    let (_auth, api) = client(&config);
    api.me().expect("first call with the saved token");

    // Frame.io stops accepting the token while postflow still thinks it has hours left.
    sim.expire_access_tokens_now();
    let before = token_requests(&sim);
    let barrier = Arc::new(Barrier::new(10));
    let threads: Vec<_> = (0..10)
        .map(|_| {
            let (api, barrier) = (api.clone(), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                api.me()
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap().expect("every thread gets through");
    }
    assert!(sim.request_count("me", Some(401)) >= 1, "the 401s happened");
    assert_eq!(token_requests(&sim) - before, 1, "exactly one refresh");
}

#[test]
fn a_rotated_refresh_token_is_saved_and_the_spent_one_is_refused() {
    let sb = Sandbox::new("fio-rotation");
    let sim = start_sim(|_| {});
    let config = load(&sb, &config_for(&sb, &sim));
    let first = seed_tokens(&sim, &config.state_dir, None);
    {
        let (_auth, api) = client(&config);
        sim.expire_access_tokens_now();
        api.me().expect("refreshes after the 401");
        // The owner is dropped here, as if the process were killed right after the refresh.
    }
    let saved = frameio_support::saved_tokens(&config.state_dir);
    let second = saved["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(second, first, "the rotated refresh token is on disk");
    assert_eq!(
        frameio_support::try_refresh(&sim, &first),
        (400, "invalid_grant".to_string()),
        "IMS refuses the spent refresh token"
    );

    // A new owner (a restart) starts from the file and refreshes with the saved token.
    let (auth, api) = client(&config);
    sim.expire_access_tokens_now();
    api.me()
        .expect("the next start refreshes with the saved token");
    assert_eq!(auth.state(), postflow::frameio::AuthState::Connected);
    let third = frameio_support::saved_tokens(&config.state_dir)["refresh_token"].clone();
    assert_ne!(third.as_str(), Some(second.as_str()));
}

/// Sixty seconds of 3 s tokens: twenty whole token lifetimes, each ending in either a
/// proactive refresh (at half the lifetime) or a 401 on a token that expired in flight, from
/// three threads at once; every call must still succeed.
#[test]
fn three_second_tokens_over_sixty_seconds_of_calls_never_surface_a_401() {
    let sb = Sandbox::new("fio-short-tokens");
    let sim = start_sim(|o| o.faults.access_token_lifetime_secs = 3);
    let config = load(&sb, &config_for(&sb, &sim));
    seed_tokens(&sim, &config.state_dir, None);
    let (_auth, api) = client(&config);
    let root = sim.root_folder_id();
    let file_id = sim.add_file(&root, "A001.mov", 100);
    let account = sim.account_id();
    let end = Instant::now() + Duration::from_secs(60);
    let threads: Vec<_> = (0..3)
        .map(|i| {
            let (api, account, file_id) = (api.clone(), account.clone(), file_id.clone());
            std::thread::spawn(move || {
                let mut calls = 0;
                while Instant::now() < end {
                    let result = match i {
                        0 => api.file(&account, &file_id).map(drop),
                        1 => api.file_status(&account, &file_id).map(drop),
                        _ => api.me().map(drop),
                    };
                    if let Err(e) = result {
                        panic!("call {calls} of thread {i} failed: {e}");
                    }
                    calls += 1;
                }
                calls
            })
        })
        .collect();
    let calls: u32 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    let refreshes = sim
        .tokens()
        .iter()
        .filter(|t| t.kind == "access" && t.grant == "refresh_token")
        .count();
    assert!(calls > 300, "only {calls} calls in 60 s");
    assert!(
        refreshes >= 18,
        "only {refreshes} refreshes in 60 s of 3 s tokens"
    );
}

#[test]
fn invalid_grant_means_needs_login_and_a_new_sign_in_resumes_without_a_restart() {
    let sb = Sandbox::new("fio-needs-login");
    let sim = start_sim(|_| {});
    let config = load(&sb, &config_for(&sb, &sim));
    seed_tokens(&sim, &config.state_dir, None);
    let (hub, inbox) = postflow::events::Hub::new();
    let events = hub.subscribe(100);
    std::thread::spawn(move || postflow::events::run_hub(inbox));
    let auth = postflow::frameio::Auth::new(&config.frameio, &config.state_dir, Some(hub));
    let api = postflow::frameio::Api::new(&config.frameio, auth.clone());
    api.me().unwrap();

    sim.expire_refresh_tokens_now();
    sim.expire_access_tokens_now();
    match api.me() {
        Err(ApiError::NeedsLogin(reason)) => assert!(reason.contains("refresh token"), "{reason}"),
        other => panic!("expected NeedsLogin, got {other:?}"),
    }
    assert_eq!(auth.state().as_str(), "needs_login");
    wait_for_auth_event(&events, "needs_login");
    let before = token_requests(&sim);
    assert!(matches!(api.me(), Err(ApiError::NeedsLogin(_))));
    assert_eq!(
        token_requests(&sim),
        before,
        "no refresh is retried with a dead token"
    );

    // A worker waits; a person runs `postflow auth` meanwhile; the worker carries on.
    let (_stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
    let worker = {
        let api = api.clone();
        std::thread::spawn(move || {
            assert!(api
                .auth()
                .wait_for_login(&stop_rx, Duration::from_millis(50)));
            api.me()
        })
    };
    let (status, _out, err) = frameio_support::run_auth(&sb, |location| location);
    assert!(status.success(), "postflow auth failed: {err}");
    worker
        .join()
        .unwrap()
        .expect("the worker resumes with the new tokens");
    wait_for_auth_event(&events, "connected");
}

/// Skips events until an `AuthChanged` to `state` arrives (the owner also announces the
/// state it starts in).
fn wait_for_auth_event(
    events: &crossbeam_channel::Receiver<Arc<postflow::events::Event>>,
    state: &str,
) {
    loop {
        let event = events
            .recv_timeout(Duration::from_secs(5))
            .unwrap_or_else(|_| panic!("no AuthChanged({state}) event"));
        if let postflow::events::Event::AuthChanged(s) = &*event {
            if s.as_str() == state {
                return;
            }
        }
    }
}

#[test]
fn folder_children_follow_links_next_through_230_entries() {
    let sb = Sandbox::new("fio-paging");
    let sim = start_sim(|_| {});
    let config = load(&sb, &config_for(&sb, &sim));
    seed_tokens(&sim, &config.state_dir, None);
    let (_auth, api) = client(&config);
    let root = sim.root_folder_id();
    for i in 0..229 {
        sim.add_file(&root, &format!("shot_{i:03}.mov"), i);
    }
    sim.add_folder(&root, "SQ01");
    let children = api.folder_children(&sim.account_id(), &root).unwrap();
    assert_eq!(children.len(), 230);
    let mut names: Vec<&str> = children.iter().map(Child::name).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 230, "no entry twice");
    assert_eq!(
        children
            .iter()
            .filter(|c| matches!(c, Child::Folder(_)))
            .count(),
        1
    );
    assert_eq!(
        sim.request_count("list_children", Some(200)),
        3,
        "three pages of at most 100"
    );
}

/// Two 429s in a row with the given hint; returns how long the call took.
fn two_429s(hint: RetryHint) -> Duration {
    let sb = Sandbox::new(&format!("fio-429-{hint:?}"));
    let sim = start_sim(|_| {});
    let config = load(&sb, &config_for(&sb, &sim));
    seed_tokens(&sim, &config.state_dir, None);
    let (_auth, api) = client(&config);
    sim.set_faults(|f| {
        f.burst_429 = 2;
        f.retry_hint = hint;
    });
    let started = Instant::now();
    api.me().expect("gets through after the 429s");
    assert_eq!(sim.request_count("me", Some(429)), 2);
    assert_eq!(sim.request_count("me", Some(200)), 1);
    started.elapsed()
}

#[test]
fn a_429_with_retry_after_waits_that_many_seconds() {
    let took = two_429s(RetryHint::RetryAfter);
    // Retry-After: 1, twice.
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

#[test]
fn a_429_with_only_the_window_waits_one_leak_doubling() {
    let took = two_429s(RetryHint::WindowOnly);
    // /v4/me: 100 per 60 000 ms, so 600 ms, then 1 200 ms.
    assert!(
        took >= Duration::from_millis(1800) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

#[test]
fn a_429_without_any_hint_backs_off_from_one_second() {
    let took = two_429s(RetryHint::None);
    // 1 s, then 2 s.
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(6),
        "{took:?}"
    );
}

#[test]
fn server_errors_are_retried_then_surfaced_with_frameios_detail() {
    let sb = Sandbox::new("fio-5xx");
    let sim = start_sim(|_| {});
    let config = load(&sb, &config_for(&sb, &sim));
    seed_tokens(&sim, &config.state_dir, None);
    let (_auth, api) = client(&config);
    let api = api.with_retry(quick_retry(3));

    sim.set_faults(|f| f.error_5xx_fraction = 1.0);
    let e = api.me().unwrap_err();
    match &e {
        ApiError::Status {
            method,
            path,
            status,
            detail,
            maybe_committed,
        } => {
            assert_eq!((*method, path.as_str()), ("GET", "/v4/me"));
            assert!((500..=503).contains(status));
            assert_eq!(detail, "injected server error");
            assert!(!maybe_committed);
        }
        other => panic!("expected a Status error, got {other:?}"),
    }
    assert!(
        e.to_string().contains("GET /v4/me") && e.to_string().contains("injected server error")
    );
    assert_eq!(sim.request_count("me", None), 3, "three tries");

    // A create is not sent twice: it may have gone through.
    let before = sim.request_count("create_folder", None);
    let e = api
        .create_folder(&sim.account_id(), &sim.root_folder_id(), "SQ01")
        .unwrap_err();
    assert!(e.maybe_committed(), "{e:?}");
    assert_eq!(sim.request_count("create_folder", None) - before, 1);

    // Frame.io recovering during the backoff: the caller never sees the errors.
    let api = api.with_retry(RetryPolicy {
        first_backoff: Duration::from_millis(300),
        ..quick_retry(5)
    });
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(200));
            sim.set_faults(|f| f.error_5xx_fraction = 0.0);
        });
        api.me().expect("succeeds once the server recovers");
    });
}

#[test]
fn client_errors_carry_the_call_the_status_and_the_detail() {
    let sb = Sandbox::new("fio-4xx");
    let sim = start_sim(|_| {});
    let config = load(&sb, &config_for(&sb, &sim));
    seed_tokens(&sim, &config.state_dir, None);
    let (_auth, api) = client(&config);
    let e = api
        .project(&sim.account_id(), "no-such-project")
        .unwrap_err();
    assert_eq!(e.status(), Some(404));
    assert!(!e.is_transient());
    let text = e.to_string();
    assert!(
        text.contains("GET /v4/accounts/")
            && text.contains("404")
            && text.contains("Project not found"),
        "{text}"
    );
}

#[test]
fn the_calls_the_uploader_makes_work_against_the_simulator() {
    let sb = Sandbox::new("fio-uploader-calls");
    let sim = start_sim(|o| o.faults.media_type_null = true);
    let config = load(&sb, &config_for(&sb, &sim));
    seed_tokens(&sim, &config.state_dir, None);
    let (_auth, api) = client(&config);
    let account = sim.account_id();

    let accounts = api.accounts().unwrap();
    assert!(accounts.iter().any(|a| a.id == account));
    let workspaces = api.workspaces(&account).unwrap();
    let projects = api.projects(&account, &workspaces[0].id).unwrap();
    assert!(projects.iter().any(|p| p.id == sim.project_id()));
    let project = api.project(&account, &sim.project_id()).unwrap();
    assert_eq!(project.root_folder_id, sim.root_folder_id());

    let folder = api
        .create_folder(&account, &project.root_folder_id, "SQ01")
        .unwrap();
    assert_eq!(folder.name, "SQ01");
    let local = api
        .local_upload(&account, &folder.id, "A001.mov", 1000)
        .unwrap();
    assert_eq!(local.upload_urls.len(), 1);
    assert_eq!(local.upload_urls[0].size, 1000);
    assert_eq!(local.file.media_type, None, "null media_type is tolerated");
    let shown = api.file(&account, &local.file.id).unwrap();
    assert_eq!(shown.file_size, Some(1000));
    let status = api.file_status(&account, &local.file.id).unwrap();
    assert!(!status.upload_complete && !status.upload_failed);

    // Nothing listens on port 1: the fetch fails and the status says so.
    let remote = api
        .remote_upload(
            &account,
            &folder.id,
            "B001.mov",
            "http://127.0.0.1:1/f/x/B001.mov",
        )
        .unwrap();
    assert!(remote
        .status_path
        .ends_with(&format!("/files/{}/status", remote.file.id)));
    sim.wait_for_file(&remote.file.id, Duration::from_secs(10));
    assert!(api.status_at(&remote.status_path).unwrap().upload_failed);

    api.delete_file(&account, &local.file.id).unwrap();
    assert_eq!(
        api.file(&account, &local.file.id).unwrap_err().status(),
        Some(404)
    );
    let names: Vec<String> = api
        .folder_children(&account, &folder.id)
        .unwrap()
        .iter()
        .map(|c| c.name().to_string())
        .collect();
    assert_eq!(names, ["B001.mov"]);
}

#[test]
fn a_stop_signal_ends_a_rate_limit_wait_at_once() {
    let sb = Sandbox::new("fio-stop");
    let sim = start_sim(|_| {});
    let config = load(&sb, &config_for(&sb, &sim));
    seed_tokens(&sim, &config.state_dir, None);
    let (_auth, api) = client(&config);
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
    let api = api.with_stop(stop_rx);
    sim.set_faults(|f| {
        f.burst_429 = 100;
        f.retry_hint = RetryHint::None;
    });
    let started = Instant::now();
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(300));
            drop(stop_tx);
        });
        assert_eq!(api.me().unwrap_err(), ApiError::Stopped);
    });
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[test]
fn an_early_refresh_that_cannot_reach_ims_keeps_using_the_current_token() {
    let sb = Sandbox::new("fio-ims-down");
    let sim = start_sim(|_| {});
    let mut config = config_for(&sb, &sim);
    // Nothing listens on port 1: IMS is unreachable, Frame.io is fine.
    config["frameio"]["ims_base"] = "http://127.0.0.1:1".into();
    let config = load(&sb, &config);
    // A day-long token written a day ago with four minutes left: inside the five-minute
    // refresh margin, not expired.
    seed_tokens(&sim, &config.state_dir, Some(240));
    std::fs::File::options()
        .write(true)
        .open(config.state_dir.join("tokens.json"))
        .unwrap()
        .set_modified(std::time::SystemTime::now() - Duration::from_secs(86_000))
        .unwrap();
    let (auth, api) = client(&config);
    let started = Instant::now();
    api.me().expect("the current token still works");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "IMS was tried (with retries)"
    );
    assert_eq!(auth.state().as_str(), "connected");
}

#[test]
fn without_tokens_calls_wait_for_a_sign_in_instead_of_failing() {
    let sb = Sandbox::new("fio-no-tokens");
    let sim = start_sim(|_| {});
    let config = load(&sb, &config_for(&sb, &sim));
    let (auth, api) = client(&config);
    assert!(matches!(api.me(), Err(ApiError::NeedsLogin(_))));
    assert_eq!(auth.state().as_str(), "needs_login");
    assert_eq!(
        sim.request_count("me", None),
        0,
        "nothing was sent without a token"
    );
    let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
    drop(stop_tx);
    assert!(
        !auth.wait_for_login(&stop_rx, Duration::from_millis(10)),
        "a stop ends the wait"
    );
    seed_tokens(&sim, &config.state_dir, None);
    api.me()
        .expect("a tokens.json written by someone else is picked up");
}
