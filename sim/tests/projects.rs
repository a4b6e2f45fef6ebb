//! Several Frame.io projects in one simulator: in the main account and in extra accounts,
//! each with its own root folder, listed and shown as Frame.io does, with nodes kept to their
//! account and rate limits per account.

mod common;

use common::{get, patch_json, post_json, put};
use serde_json::json;
use sha2::{Digest, Sha256};
use sim::{FrameIo, Options, ProjectView, SimProject};
use std::time::Duration;

/// The main project, "Show B" beside it in the main account, "Show C" in extra account 1.
fn studio() -> (FrameIo, String) {
    let sim = FrameIo::start(Options {
        extra_accounts: 1,
        projects: vec![
            SimProject {
                name: "Show B".into(),
                account: 0,
            },
            SimProject {
                name: "Show C".into(),
                account: 1,
            },
        ],
        ..Options::default()
    })
    .unwrap();
    let t = sim.login_tokens().access_token;
    (sim, t)
}

fn named(sim: &FrameIo, name: &str) -> ProjectView {
    sim.project_named(name)
        .unwrap_or_else(|| panic!("no project {name}"))
}

fn ids(list: &serde_json::Value) -> Vec<String> {
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn two_projects_in_one_account_and_one_in_an_extra_account_are_listed_and_shown() {
    let (sim, t) = studio();
    let b = sim.base_url();
    let projects = sim.projects();
    let names: Vec<&str> = projects.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["Sim Project", "Show B", "Show C"]);
    assert_eq!(projects[0].id, sim.project_id());
    assert_eq!(projects[0].root_folder_id, sim.root_folder_id());
    let (main, show_b, show_c) = (&projects[0], &projects[1], &projects[2]);
    assert_eq!(show_b.account_id, main.account_id);
    assert_eq!(show_b.workspace_id, main.workspace_id);
    assert_ne!(show_c.account_id, main.account_id);
    assert_ne!(show_c.workspace_id, main.workspace_id);
    let roots = [
        &main.root_folder_id,
        &show_b.root_folder_id,
        &show_c.root_folder_id,
    ];
    assert!(roots[0] != roots[1] && roots[1] != roots[2] && roots[0] != roots[2]);

    let accounts = ids(&get(b, &t, "/v4/accounts").json());
    assert_eq!(
        accounts,
        [main.account_id.as_str(), show_c.account_id.as_str()]
    );

    // Main account: one workspace holding the main project and Show B.
    let a0 = &main.account_id;
    let ws = ids(&get(b, &t, &format!("/v4/accounts/{a0}/workspaces")).json());
    assert_eq!(ws, [main.workspace_id.as_str()]);
    let listed = get(
        b,
        &t,
        &format!("/v4/accounts/{a0}/workspaces/{}/projects", ws[0]),
    )
    .json();
    assert_eq!(ids(&listed), [main.id.as_str(), show_b.id.as_str()]);
    assert_eq!(listed["data"][1]["name"], "Show B");
    assert_eq!(listed["data"][1]["root_folder_id"], *show_b.root_folder_id);

    // Paged like the other lists.
    let first = get(
        b,
        &t,
        &format!(
            "/v4/accounts/{a0}/workspaces/{}/projects?page_size=1&include_total_count=true",
            ws[0]
        ),
    )
    .json();
    assert_eq!(ids(&first), [main.id.as_str()]);
    assert_eq!(first["total_count"], 2);
    let next = first["links"]["next"].as_str().unwrap();
    let second = get(b, &t, next).json();
    assert_eq!(ids(&second), [show_b.id.as_str()]);
    assert!(second["links"]["next"].is_null());

    // Extra account 1: its own workspace with Show C only.
    let a1 = &show_c.account_id;
    let ws1 = ids(&get(b, &t, &format!("/v4/accounts/{a1}/workspaces")).json());
    assert_eq!(ws1, [show_c.workspace_id.as_str()]);
    let listed = get(
        b,
        &t,
        &format!("/v4/accounts/{a1}/workspaces/{}/projects", ws1[0]),
    )
    .json();
    assert_eq!(ids(&listed), [show_c.id.as_str()]);
    let r = get(
        b,
        &t,
        &format!(
            "/v4/accounts/{a1}/workspaces/{}/projects",
            main.workspace_id
        ),
    );
    assert_eq!(r.status, 404, "the main workspace is not in account 1");

    for p in &projects {
        let shown = get(
            b,
            &t,
            &format!("/v4/accounts/{}/projects/{}", p.account_id, p.id),
        );
        assert_eq!(shown.status, 200, "{}", shown.body);
        let d = &shown.json()["data"];
        assert_eq!(d["name"], *p.name);
        assert_eq!(d["root_folder_id"], *p.root_folder_id);
        assert_eq!(d["workspace_id"], *p.workspace_id);
        let root = get(
            b,
            &t,
            &format!("/v4/accounts/{}/folders/{}", p.account_id, p.root_folder_id),
        );
        assert_eq!(root.status, 200, "{}", root.body);
        assert_eq!(root.json()["data"]["project_id"], *p.id);
    }
    let r = get(b, &t, &format!("/v4/accounts/{a0}/projects/{}", show_c.id));
    assert_eq!(r.status, 404, "Show C is not in the main account");

    // The inspection API lists them too.
    let info = get(b, "", "/_sim/info").json();
    assert_eq!(info["project_id"], *main.id);
    assert_eq!(info["projects"][2]["name"], "Show C");
    assert_eq!(info["projects"][2]["account_id"], *show_c.account_id);
    let listed = get(b, "", "/_sim/projects").json();
    assert_eq!(listed[1]["root_folder_id"], *show_b.root_folder_id);
    let state = sim.state_json();
    assert_eq!(state["projects"].as_array().unwrap().len(), 3);
    assert_eq!(state["projects"][1]["id"], *show_b.id);
    assert_eq!(state["projects"][1]["tree"]["id"], *show_b.root_folder_id);
    assert!(sim.project_named("Show D").is_none());
}

/// A local upload of `data` into `folder` (one part), its id.
fn upload(sim: &FrameIo, t: &str, account: &str, folder: &str, name: &str, data: &[u8]) -> String {
    let r = post_json(
        sim.base_url(),
        t,
        &format!("/v4/accounts/{account}/folders/{folder}/files/local_upload"),
        &json!({"data": {"name": name, "file_size": data.len()}}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let d = r.json()["data"].clone();
    let urls = d["upload_urls"].as_array().unwrap();
    assert_eq!(urls.len(), 1);
    let r = put(
        urls[0]["url"].as_str().unwrap(),
        &[
            ("Content-Type", "video/quicktime"),
            ("x-amz-acl", "private"),
        ],
        data,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    d["id"].as_str().unwrap().to_string()
}

fn create_folder(sim: &FrameIo, t: &str, account: &str, parent: &str, name: &str) -> String {
    let r = post_json(
        sim.base_url(),
        t,
        &format!("/v4/accounts/{account}/folders/{parent}/folders"),
        &json!({"data": {"name": name}}),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    r.json()["data"]["id"].as_str().unwrap().to_string()
}

#[test]
fn a_file_created_in_project_b_lands_in_bs_tree_with_bs_id_and_not_in_the_main_tree() {
    let (sim, t) = studio();
    let main = sim.project_id();
    let show_b = named(&sim, "Show B");
    let a0 = sim.account_id();
    let data = b"show b, reel 1".to_vec();

    let sq = create_folder(&sim, &t, &a0, &show_b.root_folder_id, "SQ01");
    let id = upload(&sim, &t, &a0, &sq, "SQ01_UNDLM_00412_v001.mov", &data);
    let f = sim.wait_for_file(&id, Duration::from_secs(10)).unwrap();
    assert!(f.upload_complete);
    assert_eq!(f.project_id, show_b.id);
    assert_eq!(
        f.path, "SQ01/SQ01_UNDLM_00412_v001.mov",
        "relative to B's root"
    );
    let want = Sha256::digest(&data)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect::<String>();
    assert_eq!(f.sha256.as_deref(), Some(want.as_str()));

    // Frame.io's answer names B too.
    let shown = get(sim.base_url(), &t, &format!("/v4/accounts/{a0}/files/{id}")).json();
    assert_eq!(shown["data"]["project_id"], *show_b.id);

    let tree = sim.tree_of(&show_b.id);
    assert_eq!(tree.id, show_b.root_folder_id);
    assert_eq!(tree.folders[0].name, "SQ01");
    assert_eq!(tree.folders[0].files[0].id, id);
    let in_b = sim.by_path_in(&show_b.id);
    assert_eq!(in_b["SQ01/SQ01_UNDLM_00412_v001.mov"].copies, 1);
    assert_eq!(in_b["SQ01/SQ01_UNDLM_00412_v001.mov"].complete, 1);
    assert_eq!(sim.create_count_in(&show_b.id, "", "SQ01", "folder"), 1);
    assert_eq!(
        sim.create_count_in(&show_b.id, "SQ01", "SQ01_UNDLM_00412_v001.mov", "file"),
        1
    );

    // Nothing of it in the main project.
    assert!(sim.tree().folders.is_empty() && sim.tree().files.is_empty());
    assert!(sim.by_path().is_empty());
    assert!(sim.files_in(&main).is_empty());
    assert!(sim.folder_copies().is_empty());
    assert_eq!(sim.create_count("", "SQ01", "folder"), 0);
    assert_eq!(sim.files_in(&show_b.id).len(), 1);
    assert_eq!(sim.files().len(), 1, "files() lists every project");

    // The same path in the main project is another file, counted there.
    let sq_main = create_folder(&sim, &t, &a0, &sim.root_folder_id(), "SQ01");
    let other = upload(
        &sim,
        &t,
        &a0,
        &sq_main,
        "SQ01_UNDLM_00412_v001.mov",
        b"main",
    );
    sim.wait_for_file(&other, Duration::from_secs(10)).unwrap();
    assert_eq!(sim.by_path()["SQ01/SQ01_UNDLM_00412_v001.mov"].copies, 1);
    assert_eq!(
        sim.by_path_in(&show_b.id)["SQ01/SQ01_UNDLM_00412_v001.mov"].copies,
        1
    );
    assert_eq!(sim.create_count("", "SQ01", "folder"), 1);
    assert_eq!(sim.create_count_in(&show_b.id, "", "SQ01", "folder"), 1);

    // And over HTTP: /_sim/paths is the main project's unless asked for another.
    let b = sim.base_url();
    let paths = get(b, "", "/_sim/paths").json();
    assert_eq!(paths["SQ01/SQ01_UNDLM_00412_v001.mov"]["size"], 4);
    let paths = get(b, "", &format!("/_sim/paths?project={}", show_b.id)).json();
    assert_eq!(
        paths["SQ01/SQ01_UNDLM_00412_v001.mov"]["size"],
        data.len() as u64
    );
    let tree = get(b, "", &format!("/_sim/tree?project={}", show_b.id)).json();
    assert_eq!(tree["folders"][0]["files"][0]["id"], *id);
    assert_eq!(get(b, "", "/_sim/paths?project=nope").status, 404);
    let state = sim.state_json();
    assert_eq!(
        state["projects"][1]["paths"]["SQ01/SQ01_UNDLM_00412_v001.mov"]["complete"],
        1
    );
}

#[test]
fn a_folder_of_account_1_addressed_under_account_0_is_a_404() {
    let (sim, t) = studio();
    let b = sim.base_url();
    let a0 = sim.account_id();
    let show_c = named(&sim, "Show C");
    let a1 = &show_c.account_id;
    let c_root = &show_c.root_folder_id;
    let c_file = upload(&sim, &t, a1, c_root, "c.mov", b"show c");
    let main_file = sim.add_file(&sim.root_folder_id(), "main.mov", 10);

    let unknown = get(
        b,
        &t,
        &format!("/v4/accounts/{a0}/folders/00000000-0000-4000-8000-000000000000"),
    );
    assert_eq!(unknown.status, 404);
    let foreign = get(b, &t, &format!("/v4/accounts/{a0}/folders/{c_root}"));
    assert_eq!(foreign.status, 404);
    assert_eq!(
        foreign.body, unknown.body,
        "as unknown as an id that is not there"
    );
    assert_eq!(
        get(b, &t, &format!("/v4/accounts/{a1}/folders/{c_root}")).status,
        200
    );

    for path in [
        format!("/v4/accounts/{a0}/folders/{c_root}/children"),
        format!("/v4/accounts/{a0}/folders/{c_root}/folders"),
        format!("/v4/accounts/{a0}/folders/{c_root}/files"),
        format!("/v4/accounts/{a0}/folders/{c_root}/version_stacks"),
        format!("/v4/accounts/{a0}/files/{c_file}"),
        format!("/v4/accounts/{a0}/files/{c_file}/status"),
        format!("/v4/accounts/{a1}/files/{main_file}"),
        format!("/v4/accounts/{a1}/folders/{}", sim.root_folder_id()),
    ] {
        assert_eq!(get(b, &t, &path).status, 404, "{path}");
    }
    let r = post_json(
        b,
        &t,
        &format!("/v4/accounts/{a0}/folders/{c_root}/folders"),
        &json!({"data": {"name": "SQ01"}}),
    );
    assert_eq!(r.status, 404, "{}", r.body);
    let r = post_json(
        b,
        &t,
        &format!("/v4/accounts/{a0}/folders/{c_root}/files/local_upload"),
        &json!({"data": {"name": "x.mov", "file_size": 3}}),
    );
    assert_eq!(r.status, 404, "{}", r.body);
    // A file cannot be moved into another account's folder either.
    let r = patch_json(
        b,
        &t,
        &format!("/v4/accounts/{a0}/files/{main_file}/move"),
        &[],
        &json!({"data": {"parent_id": c_root}}),
    );
    assert_eq!(r.status, 404, "{}", r.body);
    let r = common::delete(b, &t, &format!("/v4/accounts/{a0}/files/{c_file}"));
    assert_eq!(r.status, 404);

    assert_eq!(
        sim.files_in(&show_c.id).len(),
        1,
        "Show C's file is still there"
    );
    assert!(sim.tree_of(&show_c.id).folders.is_empty());
    assert_eq!(
        sim.file(&main_file).unwrap().parent_id,
        sim.root_folder_id()
    );
}

fn create_status(sim: &FrameIo, t: &str, account: &str, parent: &str, name: &str) -> u16 {
    post_json(
        sim.base_url(),
        t,
        &format!("/v4/accounts/{account}/folders/{parent}/folders"),
        &json!({"data": {"name": name}}),
    )
    .status
}

#[test]
fn two_projects_in_one_account_share_the_create_bucket_two_accounts_do_not() {
    let (sim, t) = studio();
    let a0 = sim.account_id();
    let main_root = sim.root_folder_id();
    let show_b = named(&sim, "Show B");
    let show_c = named(&sim, "Show C");

    // create_folder is 3/s per user and account. Three in the main project fill the
    // account's bucket; Show B's three come on top of them (all six would pass only if they
    // took more than a second).
    for i in 0..3 {
        assert_eq!(
            create_status(&sim, &t, &a0, &main_root, &format!("M{i}")),
            201
        );
    }
    let b: Vec<u16> = (0..3)
        .map(|i| create_status(&sim, &t, &a0, &show_b.root_folder_id, &format!("B{i}")))
        .collect();
    assert!(
        b.contains(&429),
        "Show B shares the main account's bucket: {b:?}"
    );

    // Show C is in another account: a bucket of its own, so three at once all pass.
    for i in 0..3 {
        let s = create_status(
            &sim,
            &t,
            &show_c.account_id,
            &show_c.root_folder_id,
            &format!("C{i}"),
        );
        assert_eq!(s, 201, "account 1 has its own bucket");
    }
    assert_eq!(sim.tree_of(&show_c.id).folders.len(), 3);

    // Without enforcement the same burst passes (headers still sent).
    sim.set_faults(|f| f.rate_limits = false);
    let r = post_json(
        sim.base_url(),
        &t,
        &format!(
            "/v4/accounts/{a0}/folders/{}/folders",
            show_b.root_folder_id
        ),
        &json!({"data": {"name": "late"}}),
    );
    assert_eq!(r.status, 201);
    assert_eq!(r.header("x-ratelimit-limit"), Some("3"));
}

#[test]
fn a_project_in_an_account_that_does_not_exist_stops_the_start() {
    let err = FrameIo::start(Options {
        extra_accounts: 1,
        projects: vec![SimProject {
            name: "Show D".into(),
            account: 2,
        }],
        ..Options::default()
    })
    .err()
    .expect("start refused");
    let msg = err.to_string();
    assert!(
        msg.contains("Show D") && msg.contains("extra_accounts"),
        "{msg}"
    );
}
