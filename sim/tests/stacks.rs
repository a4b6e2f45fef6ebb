//! Version stacks as `reference/frameio_v4_features.md` §(a) describes them: create from
//! files of one folder (oldest first), move a file in or out, show and list, the stack in
//! place of its files in folder listings, and the experimental reorder.

mod common;

use common::{delete, get, patch_json, post_json};
use serde_json::{json, Value};
use sim::{FrameIo, Options};

struct World {
    sim: FrameIo,
    token: String,
    account: String,
    folder: String,
}

impl World {
    fn new() -> World {
        let sim = FrameIo::start(Options::default()).unwrap();
        let token = sim.login_tokens().access_token;
        let account = sim.account_id();
        let folder = sim.add_folder(&sim.root_folder_id(), "UNDLM_00412");
        World {
            sim,
            token,
            account,
            folder,
        }
    }

    fn file(&self, name: &str) -> String {
        self.sim.add_file(&self.folder, name, 1000)
    }

    fn get(&self, path: &str) -> common::Answer {
        get(
            self.sim.base_url(),
            &self.token,
            &format!("/v4/accounts/{}{path}", self.account),
        )
    }

    fn create(&self, folder: &str, ids: &[&str]) -> common::Answer {
        post_json(
            self.sim.base_url(),
            &self.token,
            &format!(
                "/v4/accounts/{}/folders/{folder}/version_stacks",
                self.account
            ),
            &json!({"data": {"file_ids": ids}}),
        )
    }

    fn move_to(&self, file: &str, parent: &str) -> common::Answer {
        patch_json(
            self.sim.base_url(),
            &self.token,
            &format!("/v4/accounts/{}/files/{file}/move", self.account),
            &[],
            &json!({"data": {"parent_id": parent}}),
        )
    }

    fn reorder(&self, stack: &str, headers: &[(&str, &str)], data: Value) -> common::Answer {
        patch_json(
            self.sim.base_url(),
            &self.token,
            &format!(
                "/v4/accounts/{}/version_stacks/{stack}/versions",
                self.account
            ),
            headers,
            &json!({ "data": data }),
        )
    }

    /// The only stack's file names, bottom first.
    fn order(&self) -> Vec<String> {
        let stacks = self.sim.stacks();
        assert_eq!(stacks.len(), 1, "{stacks:?}");
        stacks[0].versions.clone()
    }
}

const EXPERIMENTAL: &[(&str, &str)] = &[("api-version", "experimental")];

#[test]
fn two_files_become_one_stack_that_the_folder_lists_in_their_place() {
    let w = World::new();
    let v1 = w.file("SH010_v001.mov");
    let v2 = w.file("SH010_v002.mov");
    let other = w.file("notes.pdf");

    let r = w.create(&w.folder, &[&v1, &v2]);
    assert_eq!(r.status, 201, "{}", r.body);
    let stack = r.json()["data"].clone();
    let id = stack["id"].as_str().unwrap().to_string();
    assert_eq!(stack["type"], "version_stack");
    assert_eq!(stack["parent_id"], w.folder);
    assert_eq!(stack["head_version"]["id"], v2, "the last id is the top");
    assert_eq!(w.order(), ["SH010_v001.mov", "SH010_v002.mov"]);

    // The folder lists the stack (with its head) instead of its files.
    let children = w.get(&format!("/folders/{}/children", w.folder)).json();
    let listed: Vec<(String, String)> = children["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["type"].as_str().unwrap().to_string(),
                c["id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            ("file".into(), other.clone()),
            ("version_stack".into(), id.clone())
        ]
    );
    assert_eq!(
        children["data"][1]["head_version"]["name"],
        "SH010_v002.mov"
    );
    let files = w.get(&format!("/folders/{}/files", w.folder)).json();
    assert_eq!(files["data"].as_array().unwrap().len(), 1, "only notes.pdf");

    // A stacked file's parent is the stack; the stack is not a folder.
    assert_eq!(
        w.get(&format!("/files/{v1}")).json()["data"]["parent_id"],
        id
    );
    let r = w.get(&format!("/folders/{id}/children"));
    assert_eq!(r.status, 422);
    assert!(r.json()["errors"][0]["detail"]
        .as_str()
        .unwrap()
        .contains("is not a folder"));

    // Show, list the folder's stacks, list the versions.
    let shown = w.get(&format!("/version_stacks/{id}")).json();
    assert_eq!(shown["data"]["head_version"]["id"], v2);
    let stacks = w
        .get(&format!("/folders/{}/version_stacks", w.folder))
        .json();
    assert_eq!(stacks["data"][0]["id"], id);
    let versions = w.get(&format!("/version_stacks/{id}/children")).json();
    let versions = versions["data"].as_array().unwrap();
    assert_eq!(versions.len(), 2);
    assert!(versions.iter().all(|v| v["parent_id"] == id.as_str()));
    assert!(versions.iter().all(|v| v["version_number"].is_null()));
    assert_eq!(w.get("/version_stacks/nope").status, 404);

    // Paths do not change: a stacked file is still in its folder.
    let paths = w.sim.by_path();
    assert_eq!(paths["UNDLM_00412/SH010_v001.mov"].copies, 1);
    assert_eq!(
        w.sim.file(&v1).unwrap().stack_id.as_deref(),
        Some(id.as_str())
    );
    assert_eq!(w.sim.file(&other).unwrap().stack_id, None);
}

#[test]
fn a_stack_needs_two_to_ten_files_of_that_very_folder() {
    let w = World::new();
    let ids: Vec<String> = (1..=11).map(|i| w.file(&format!("v{i:03}.mov"))).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let elsewhere = w.sim.add_file(&w.sim.root_folder_id(), "v900.mov", 1);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec![refs[0]], "one file"),
        (refs.clone(), "eleven files"),
        (vec![refs[0], refs[0]], "the same file twice"),
        (
            vec![refs[0], elsewhere.as_str()],
            "a file of another folder",
        ),
        (vec![refs[0], "no-such-file"], "an unknown file"),
    ];
    for (ids, what) in cases {
        let r = w.create(&w.folder, &ids);
        assert_eq!(r.status, 422, "{what}: {}", r.body);
    }
    assert!(w.sim.stacks().is_empty());
    assert_eq!(w.create(&w.folder, &refs[..10]).status, 201);
    // Stacked files are no longer in the folder itself.
    let r = w.create(&w.folder, &[refs[0], refs[10]]);
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(r.body.contains("parent directory"), "{}", r.body);
}

#[test]
fn stack_creation_is_limited_to_ten_a_minute() {
    let w = World::new();
    let mut statuses = Vec::new();
    for i in 0..11 {
        let a = w.file(&format!("a{i}.mov"));
        let b = w.file(&format!("b{i}.mov"));
        let r = w.create(&w.folder, &[&a, &b]);
        assert_eq!(r.header("x-ratelimit-limit"), Some("10"));
        statuses.push(r.status);
    }
    assert_eq!(statuses[..10], [201; 10]);
    assert_eq!(statuses[10], 429);
    assert_eq!(w.sim.stacks().len(), 10);
}

#[test]
fn a_file_moved_into_a_stack_becomes_its_head_and_can_be_moved_out_again() {
    let w = World::new();
    let v1 = w.file("v001.mov");
    let v2 = w.file("v002.mov");
    let v3 = w.file("v003.mov");
    let stack = w.create(&w.folder, &[&v1, &v2]).json()["data"]["id"]
        .as_str()
        .unwrap()
        .to_string();

    let r = w.move_to(&v3, &stack);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["data"]["parent_id"], stack);
    assert_eq!(w.order(), ["v001.mov", "v002.mov", "v003.mov"]);
    let head = w.get(&format!("/version_stacks/{stack}")).json();
    assert_eq!(head["data"]["head_version"]["id"], v3);
    // Moving it where it already is changes nothing.
    assert_eq!(w.move_to(&v3, &stack).status, 200);
    assert_eq!(w.order(), ["v001.mov", "v002.mov", "v003.mov"]);

    // Out again, into the folder.
    assert_eq!(w.move_to(&v3, &w.folder).status, 200);
    assert_eq!(w.order(), ["v001.mov", "v002.mov"]);
    assert_eq!(w.sim.file(&v3).unwrap().stack_id, None);
    // Into a file, or nowhere: refused.
    assert_eq!(w.move_to(&v3, &v1).status, 422);
    assert_eq!(w.move_to(&v3, "nowhere").status, 404);

    // Where a moved-in file lands is not documented: the knob puts it at the bottom.
    w.sim.set_faults(|f| f.stacks.moved_in_at_bottom = true);
    w.move_to(&v3, &stack);
    assert_eq!(w.order(), ["v003.mov", "v001.mov", "v002.mov"]);

    // A stack whose files all leave is gone; deleting a stacked file takes it out.
    delete(
        w.sim.base_url(),
        &w.token,
        &format!("/v4/accounts/{}/files/{v3}", w.account),
    );
    assert_eq!(w.order(), ["v001.mov", "v002.mov"]);
    w.move_to(&v1, &w.folder);
    w.move_to(&v2, &w.folder);
    assert!(w.sim.stacks().is_empty());
    assert_eq!(w.get(&format!("/version_stacks/{stack}")).status, 404);
}

#[test]
fn the_reorder_exists_only_with_the_experimental_header() {
    let w = World::new();
    let v1 = w.file("v001.mov");
    let v2 = w.file("v002.mov");
    let v3 = w.file("v003.mov");
    let stack = w.create(&w.folder, &[&v1, &v3]).json()["data"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    w.move_to(&v2, &stack);
    assert_eq!(w.order(), ["v001.mov", "v003.mov", "v002.mov"]);

    let below_v3 = json!({"target_file_id": v2, "move_below_file_id": v3});
    let r = w.reorder(&stack, &[], below_v3.clone());
    assert_eq!(r.status, 404, "no such route on the stable API");
    assert_eq!(w.order(), ["v001.mov", "v003.mov", "v002.mov"]);

    let r = w.reorder(&stack, EXPERIMENTAL, below_v3.clone());
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(w.order(), ["v001.mov", "v002.mov", "v003.mov"]);
    let names: Vec<Value> = r.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].clone())
        .collect();
    assert_eq!(
        names,
        [json!("v001.mov"), json!("v002.mov"), json!("v003.mov")]
    );

    let r = w.reorder(
        &stack,
        EXPERIMENTAL,
        json!({"target_file_id": v1, "move_to": "top"}),
    );
    assert_eq!(r.status, 200);
    assert_eq!(w.order(), ["v002.mov", "v003.mov", "v001.mov"]);
    let r = w.reorder(
        &stack,
        EXPERIMENTAL,
        json!({"target_file_id": v1, "move_above_file_id": v2}),
    );
    assert_eq!(r.status, 200);
    assert_eq!(w.order(), ["v002.mov", "v001.mov", "v003.mov"]);

    for bad in [
        json!({"target_file_id": v1}),
        json!({"target_file_id": v1, "move_to": "middle"}),
        json!({"target_file_id": v1, "move_to": "top", "move_below_file_id": v2}),
        json!({"target_file_id": "stranger", "move_to": "top"}),
    ] {
        assert_eq!(
            w.reorder(&stack, EXPERIMENTAL, bad.clone()).status,
            422,
            "{bad}"
        );
    }

    w.sim.set_faults(|f| f.stacks.reorder_unavailable = true);
    assert_eq!(w.reorder(&stack, EXPERIMENTAL, below_v3).status, 404);
}

#[test]
fn a_stack_shows_in_the_inspection_views() {
    let w = World::new();
    let v1 = w.file("v001.mov");
    let v2 = w.file("v002.mov");
    let by_hand = w.sim.add_stack(&w.folder, &[&v1, &v2]);
    let state = w.sim.state_json();
    assert_eq!(state["stacks"][0]["id"], by_hand);
    assert_eq!(state["stacks"][0]["folder"], "UNDLM_00412");
    assert_eq!(
        state["stacks"][0]["versions"],
        json!(["v001.mov", "v002.mov"])
    );
    let tree = w.sim.tree();
    let folder = &tree.folders[0];
    assert_eq!(folder.stacks.len(), 1);
    assert_eq!(
        folder.files.len(),
        2,
        "stacked files are still the folder's files"
    );
    let r = get(w.sim.base_url(), "", "/_sim/stacks").json();
    assert_eq!(r[0]["file_ids"], json!([v1, v2]));
}
