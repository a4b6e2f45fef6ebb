//! Frame.io v4 stand-in: envelopes, paging, auth, rate limits and injected faults.

mod common;

use common::{delete, get, post_json};
use serde_json::json;
use sim::{FrameIo, Options, RetryHint};
use std::time::Duration;

fn start() -> (FrameIo, String) {
    let sim = FrameIo::start(Options::default()).unwrap();
    let token = sim.login_tokens().access_token;
    (sim, token)
}

#[test]
fn the_seeded_world_is_reachable_from_me_down_to_the_root_folder() {
    let sim = FrameIo::start(Options {
        extra_accounts: 2,
        ..Options::default()
    })
    .unwrap();
    let t = sim.login_tokens().access_token;
    let b = sim.base_url();
    let me = get(b, &t, "/v4/me").json();
    assert_eq!(me["data"]["id"], sim.user_id());
    assert!(me["data"]["avatar_url"].is_null());

    let accounts = get(b, &t, "/v4/accounts").json();
    assert_eq!(accounts["data"].as_array().unwrap().len(), 3);
    assert!(accounts["links"]["next"].is_null());
    assert!(accounts["total_count"].is_null());
    let a = sim.account_id();
    assert_eq!(accounts["data"][0]["id"], a);

    let ws = get(b, &t, &format!("/v4/accounts/{a}/workspaces")).json();
    let w = ws["data"][0]["id"].as_str().unwrap().to_string();
    let projects = get(b, &t, &format!("/v4/accounts/{a}/workspaces/{w}/projects")).json();
    assert_eq!(projects["data"][0]["id"], sim.project_id());
    let p = get(
        b,
        &t,
        &format!("/v4/accounts/{a}/projects/{}", sim.project_id()),
    )
    .json();
    assert_eq!(p["data"]["root_folder_id"], sim.root_folder_id());

    let root = get(
        b,
        &t,
        &format!("/v4/accounts/{a}/folders/{}", sim.root_folder_id()),
    )
    .json();
    assert_eq!(root["data"]["type"], "folder");
    assert!(root["data"]["parent_id"].is_null());
    let created = root["data"]["created_at"].as_str().unwrap();
    assert_eq!(
        created.len(),
        "2025-06-26T20:14:33.796116Z".len(),
        "{created}"
    );
    assert!(created.ends_with('Z'));

    let other = accounts["data"][1]["id"].as_str().unwrap();
    let r = get(
        b,
        &t,
        &format!("/v4/accounts/{other}/projects/{}", sim.project_id()),
    );
    assert_eq!(r.status, 404, "the project is not in the other account");
    assert!(r.json()["errors"][0]["detail"].is_string());
    let r = get(
        b,
        &t,
        "/v4/accounts/00000000-0000-4000-8000-000000000000/folders/x",
    );
    assert_eq!(r.status, 404);
}

#[test]
fn missing_wrong_or_expired_tokens_get_401() {
    let sim = FrameIo::start(Options::default()).unwrap();
    sim.set_faults(|f| f.access_token_lifetime_secs = 1);
    let t = sim.login_tokens();
    assert_eq!(t.expires_in, 1);
    let b = sim.base_url();
    assert_eq!(get(b, &t.access_token, "/v4/me").status, 200);
    let none = get(b, "", "/v4/me");
    assert_eq!(none.status, 401);
    assert_eq!(
        none.json(),
        json!({"errors":[{"detail":"Invalid or missing authorization token","title":"Unauthorized"}]})
    );
    assert!(none.header("x-ratelimit-limit").is_some());
    assert_eq!(get(b, "not-a-token", "/v4/me").status, 401);
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(get(b, &t.access_token, "/v4/me").status, 401, "expired");

    sim.set_faults(|f| f.access_token_lifetime_secs = 3600);
    let t2 = sim.login_tokens().access_token;
    assert_eq!(get(b, &t2, "/v4/me").status, 200);
    sim.expire_access_tokens_now();
    assert_eq!(get(b, &t2, "/v4/me").status, 401);
}

#[test]
fn paging_230_children_follows_links_next() {
    let (sim, t) = start();
    let root = sim.root_folder_id();
    for i in 0..230 {
        if i % 2 == 0 {
            sim.add_folder(&root, &format!("folder {i:03}"));
        } else {
            sim.add_file(&root, &format!("clip {i:03}.mov"), i);
        }
    }
    let a = sim.account_id();
    let first =
        format!("/v4/accounts/{a}/folders/{root}/children?page_size=100&include_total_count=true");
    let mut url = Some(first);
    let mut names = Vec::new();
    let mut pages = Vec::new();
    while let Some(u) = url {
        let j = get(sim.base_url(), &t, &u).json();
        let data = j["data"].as_array().unwrap();
        pages.push(data.len());
        names.extend(data.iter().map(|d| d["name"].as_str().unwrap().to_string()));
        if pages.len() == 1 {
            assert_eq!(j["total_count"], 230);
        } else {
            assert!(j["total_count"].is_null(), "next carries only `after`");
        }
        url = match &j["links"]["next"] {
            serde_json::Value::String(next) => {
                assert!(
                    next.starts_with(&format!("/v4/accounts/{a}/folders/{root}/children?after="))
                );
                assert!(!next.contains("page_size"));
                Some(next.clone())
            }
            _ => None,
        };
    }
    // page_size is not carried by links.next, so later pages use the default 50.
    assert_eq!(pages, [100, 50, 50, 30]);
    assert_eq!(names.len(), 230);
    let mut dedup = names.clone();
    dedup.dedup();
    assert_eq!(dedup.len(), 230, "no repeats");
    assert_eq!(names[0], "folder 000");
    assert_eq!(names[229], "clip 229.mov");

    // The client re-adding page_size gets pages of 100 throughout.
    let mut url = Some(format!(
        "/v4/accounts/{a}/folders/{root}/children?page_size=100"
    ));
    let mut sizes = Vec::new();
    while let Some(u) = url {
        let j = get(sim.base_url(), &t, &u).json();
        sizes.push(j["data"].as_array().unwrap().len());
        url = j["links"]["next"]
            .as_str()
            .map(|n| format!("{n}&page_size=100"));
    }
    assert_eq!(sizes, [100, 100, 30]);

    // Filtered listings page too.
    let j = get(
        sim.base_url(),
        &t,
        &format!("/v4/accounts/{a}/folders/{root}/folders?page_size=100&include_total_count=true"),
    )
    .json();
    assert_eq!(j["total_count"], 115);
    assert!(j["data"]
        .as_array()
        .unwrap()
        .iter()
        .all(|d| d["type"] == "folder"));
}

#[test]
fn page_size_over_100_and_bad_cursors_are_422() {
    let (sim, t) = start();
    let base = format!(
        "/v4/accounts/{}/folders/{}/children",
        sim.account_id(),
        sim.root_folder_id()
    );
    assert_eq!(
        get(sim.base_url(), &t, &format!("{base}?page_size=101")).status,
        422
    );
    assert_eq!(
        get(sim.base_url(), &t, &format!("{base}?page_size=0")).status,
        422
    );
    assert_eq!(
        get(sim.base_url(), &t, &format!("{base}?page_size=100")).status,
        200
    );
    assert_eq!(
        get(sim.base_url(), &t, &format!("{base}?after=garbage")).status,
        422
    );
}

#[test]
fn folders_are_created_201_and_duplicates_are_allowed_and_counted() {
    let (sim, t) = start();
    sim.set_faults(|f| f.rate_limits = false);
    let a = sim.account_id();
    let root = sim.root_folder_id();
    let path = format!("/v4/accounts/{a}/folders/{root}/folders");
    let r = post_json(sim.base_url(), &t, &path, &json!({"data":{"name":"SQ01"}}));
    assert_eq!(r.status, 201, "{}", r.body);
    let sq = r.json()["data"]["id"].as_str().unwrap().to_string();
    assert_eq!(r.json()["data"]["parent_id"], root);
    let r2 = post_json(sim.base_url(), &t, &path, &json!({"data":{"name":"SQ01"}}));
    assert_eq!(r2.status, 201);
    let sub = format!("/v4/accounts/{a}/folders/{sq}/folders");
    assert_eq!(
        post_json(
            sim.base_url(),
            &t,
            &sub,
            &json!({"data":{"name":"UNDLM_00412"}})
        )
        .status,
        201
    );

    assert_eq!(sim.create_count("", "SQ01", "folder"), 2);
    assert_eq!(sim.create_count("SQ01", "UNDLM_00412", "folder"), 1);
    assert_eq!(sim.folder_copies()["SQ01"], 2);
    assert_eq!(sim.request_count("create_folder", Some(201)), 3);

    let bad = post_json(
        sim.base_url(),
        &t,
        &path,
        &json!({"data":{"name":"x","color":"red"}}),
    );
    assert_eq!(bad.status, 422);
    assert_eq!(bad.json()["errors"][0]["detail"], "Unexpected field: color");
    assert_eq!(
        post_json(sim.base_url(), &t, &path, &json!({"data":{}})).status,
        422
    );

    // Deleting a folder takes its contents along.
    assert_eq!(
        delete(
            sim.base_url(),
            &t,
            &format!("/v4/accounts/{a}/folders/{sq}")
        )
        .status,
        204
    );
    assert_eq!(
        get(
            sim.base_url(),
            &t,
            &format!("/v4/accounts/{a}/folders/{sq}")
        )
        .status,
        404
    );
    assert_eq!(sim.folder_copies().get("SQ01/UNDLM_00412"), None);
    assert_eq!(
        delete(
            sim.base_url(),
            &t,
            &format!("/v4/accounts/{a}/folders/{root}")
        )
        .status,
        422
    );
}

#[test]
fn local_upload_rejects_media_type_and_describes_the_file() {
    let (sim, t) = start();
    let path = format!(
        "/v4/accounts/{}/folders/{}/files/local_upload",
        sim.account_id(),
        sim.root_folder_id()
    );
    let r = post_json(
        sim.base_url(),
        &t,
        &path,
        &json!({"data":{"name":"a.mov","file_size":10,"media_type":"video/quicktime"}}),
    );
    assert_eq!(r.status, 422);
    assert_eq!(
        r.json()["errors"][0]["detail"],
        "Unexpected field: media_type"
    );
    assert_eq!(
        r.json()["errors"][0]["source"]["pointer"],
        "/data/media_type"
    );

    let r = post_json(
        sim.base_url(),
        &t,
        &path,
        &json!({"data":{"name":"A001_C002.mxf","file_size":10}}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let d = &r.json()["data"];
    for k in [
        "id",
        "name",
        "parent_id",
        "project_id",
        "view_url",
        "created_at",
        "updated_at",
        "file_size",
        "media_type",
        "status",
    ] {
        assert!(d.get(k).is_some(), "missing {k}");
    }
    assert_eq!(d["type"], "file");
    assert_eq!(d["media_type"], "application/mxf");
    assert_eq!(d["status"], "created");
    assert_eq!(d["upload_urls"].as_array().unwrap().len(), 1);
    let id = d["id"].as_str().unwrap();
    let st = get(
        sim.base_url(),
        &t,
        &format!("/v4/accounts/{}/files/{id}/status", sim.account_id()),
    )
    .json();
    assert_eq!(st["data"]["upload_complete"], false);
    assert_eq!(st["data"]["upload_failed"], false);
    assert!(st["data"]["upload_completed_at"].is_null());
    assert!(st["data"]["uploaded_at"].is_string());

    assert_eq!(
        delete(
            sim.base_url(),
            &t,
            &format!("/v4/accounts/{}/files/{id}", sim.account_id())
        )
        .status,
        204
    );
    assert_eq!(
        get(
            sim.base_url(),
            &t,
            &format!("/v4/accounts/{}/files/{id}", sim.account_id())
        )
        .status,
        404
    );
    assert_eq!(
        sim.create_count("", "A001_C002.mxf", "file"),
        1,
        "creates stay counted after delete"
    );
}

#[test]
fn every_answer_carries_rate_limit_headers_and_the_bucket_leaks() {
    let (sim, t) = start();
    let a = sim.account_id();
    let r = get(sim.base_url(), &t, "/v4/me");
    assert_eq!(r.header("x-ratelimit-limit"), Some("100"));
    assert_eq!(r.header("x-ratelimit-remaining"), Some("99"));
    assert_eq!(r.header("x-ratelimit-window"), Some("60000"));

    // Create folder: 3 per second.
    let path = format!("/v4/accounts/{a}/folders/{}/folders", sim.root_folder_id());
    let statuses: Vec<u16> = (0..4)
        .map(|i| {
            post_json(
                sim.base_url(),
                &t,
                &path,
                &json!({"data":{"name":format!("f{i}")}}),
            )
            .status
        })
        .collect();
    assert_eq!(statuses, [201, 201, 201, 429]);
    let r = post_json(sim.base_url(), &t, &path, &json!({"data":{"name":"f4"}}));
    assert_eq!(r.status, 429);
    assert_eq!(r.header("x-ratelimit-limit"), Some("3"));
    assert_eq!(r.header("x-ratelimit-window"), Some("1000"));
    assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.json()["errors"][0]["title"], "Too Many Requests");
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(
        post_json(sim.base_url(), &t, &path, &json!({"data":{"name":"f5"}})).status,
        201,
        "leaked one"
    );
    assert_eq!(
        sim.create_count("", "f3", "folder"),
        0,
        "a 429 created nothing"
    );
}

#[test]
fn a_429_burst_carries_the_configured_hint() {
    let (sim, t) = start();
    let b = sim.base_url();
    sim.set_faults(|f| {
        f.burst_429 = 3;
        f.retry_hint = RetryHint::RetryAfter;
    });
    let r = get(b, &t, "/v4/me");
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.header("x-ratelimit-window"), Some("60000"));

    sim.set_faults(|f| f.retry_hint = RetryHint::WindowOnly);
    let r = get(b, &t, "/v4/me");
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), None);
    assert_eq!(r.header("x-ratelimit-window"), Some("60000"));
    assert_eq!(r.header("x-ratelimit-remaining"), Some("0"));

    sim.set_faults(|f| f.retry_hint = RetryHint::None);
    let r = get(b, &t, "/v4/me");
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), None);
    assert_eq!(r.header("x-ratelimit-window"), None);
    assert_eq!(r.json()["errors"][0]["title"], "Too Many Requests");

    assert_eq!(get(b, &t, "/v4/me").status, 200, "burst over");
    assert_eq!(sim.faults().burst_429, 0);
    assert_eq!(sim.request_count("me", Some(429)), 3);
}

#[test]
fn injected_5xx_before_or_after_the_effect() {
    let (sim, t) = start();
    let path = format!(
        "/v4/accounts/{}/folders/{}/folders",
        sim.account_id(),
        sim.root_folder_id()
    );
    sim.set_faults(|f| f.error_5xx_fraction = 1.0);
    let r = get(sim.base_url(), &t, "/v4/me");
    assert!([500, 502, 503].contains(&r.status), "{}", r.status);
    assert!(r.json()["errors"][0]["detail"].is_string());
    let r = post_json(sim.base_url(), &t, &path, &json!({"data":{"name":"lost"}}));
    assert!(r.status >= 500);
    assert_eq!(sim.create_count("", "lost", "folder"), 0);

    sim.set_faults(|f| f.error_5xx_after_commit = true);
    let r = post_json(sim.base_url(), &t, &path, &json!({"data":{"name":"ghost"}}));
    assert!(r.status >= 500);
    assert_eq!(
        sim.create_count("", "ghost", "folder"),
        1,
        "the create went through"
    );

    sim.set_faults(|f| f.error_5xx_fraction = 0.0);
    assert_eq!(get(sim.base_url(), &t, "/v4/me").status, 200);
}

#[test]
fn inspection_endpoints_and_faults_over_http() {
    let (sim, _t) = start();
    let b = sim.base_url();
    let info = get(b, "", "/_sim/info").json();
    assert_eq!(info["project_id"], sim.project_id());
    let r = common::post_form(
        &format!("{b}/_sim/faults"),
        &[],
        r#"{"burst_429":2,"fetch_mode":"ranges"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(sim.faults().burst_429, 2);
    assert_eq!(sim.faults().fetch_mode, sim::FetchMode::Ranges);
    let r = common::post_form(&format!("{b}/_sim/faults"), &[], r#"{"no_such_knob":1}"#);
    assert_eq!(r.status, 400);
    let login = common::post_form(&format!("{b}/_sim/login"), &[], "").json();
    assert!(login["refresh_token"].is_string());
    let state = get(b, "", "/_sim/state").json();
    for k in [
        "tree", "paths", "creates", "tokens", "counters", "s3_puts", "fetches", "faults",
    ] {
        assert!(state.get(k).is_some(), "missing {k}");
    }
}

#[test]
fn slow_responses_are_slow_but_served_in_parallel() {
    let (sim, t) = start();
    sim.set_faults(|f| {
        f.response_delay_ms = 300;
        f.rate_limits = false;
    });
    let began = std::time::Instant::now();
    std::thread::scope(|s| {
        for _ in 0..8 {
            s.spawn(|| assert_eq!(get(sim.base_url(), &t, "/v4/me").status, 200));
        }
    });
    let took = began.elapsed();
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(
        took < Duration::from_millis(2000),
        "not one at a time: {took:?}"
    );
}
