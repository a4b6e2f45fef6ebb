//! The documentation agrees with the code, and holds together:
//!
//! - the configuration reference (the table in docs/guide.md) names every key the code reads,
//!   and only keys the code accepts; the keys come from the parser itself (`Config::keys`),
//!   so neither side can drift alone;
//! - the shipped config.json loads, shows every key, and its values are the code's defaults
//!   and the reference's; the demo's config uses only documented keys and sends each file it
//!   drops to the project and folder its check expects;
//! - every relative link and `#anchor` in the Markdown files resolves;
//! - the README stays a front door: short, with install and the demo on its first screen.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use postflow::config::Config;
use serde_json::{json, Map, Value};

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const REFERENCE: &str = "docs/guide.md";
const REFERENCE_HEADING: &str = "## Configuration reference";

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(REPO).join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// A fresh folder under target/tmp holding `inbox/` (the shipped config's watch root).
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("inbox")).unwrap();
    dir
}

fn load(dir: &Path, file: &str, config: &Value) -> Result<Config, String> {
    let path = dir.join(file);
    std::fs::write(&path, serde_json::to_vec_pretty(config).unwrap()).unwrap();
    Config::load_with_env(&path, None).map_err(|e| e.to_string())
}

/// The reference table's rows: (the keys of the first cell, the default cell).
fn reference_rows() -> Vec<(Vec<String>, String)> {
    let guide = read(REFERENCE);
    let section = guide
        .split_once(&format!("\n{REFERENCE_HEADING}\n"))
        .unwrap_or_else(|| panic!("{REFERENCE} has no {REFERENCE_HEADING:?} section"))
        .1;
    let section = section.split("\n## ").next().unwrap();
    let rows: Vec<(Vec<String>, String)> = section
        .lines()
        .skip_while(|l| !l.starts_with("| key |"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|row| {
            let cells: Vec<&str> = row.split(" | ").collect();
            let keys = code_spans(cells[0].trim_start_matches("| "));
            assert!(!keys.is_empty(), "a reference row without a key: {row}");
            (keys, cells[1].trim().to_string())
        })
        .collect();
    assert!(
        rows.len() > 10,
        "the reference table was not found in {REFERENCE}"
    );
    rows
}

fn reference_keys() -> Vec<String> {
    reference_rows()
        .into_iter()
        .flat_map(|(keys, _)| keys)
        .collect()
}

/// The contents of every `code span` in `s`.
fn code_spans(s: &str) -> Vec<String> {
    s.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// A key of a `projects` entry (`projects[].root`).
fn is_project_key(key: &str) -> bool {
    key.starts_with("projects[].")
}

/// `{"a": {"b": v}}` from "a.b" and v.
fn nested(key: &str, v: Value) -> Value {
    key.rsplit('.')
        .fold(v, |inner, part| json!({ part: inner }))
}

/// Every key of a config file, dotted: objects are sections, anything else is a value.
fn leaf_keys(v: &Value) -> BTreeMap<String, Value> {
    fn walk(prefix: &str, map: &Map<String, Value>, out: &mut BTreeMap<String, Value>) {
        for (k, v) in map {
            let key = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match v {
                Value::Object(inner) => walk(&key, inner, out),
                other => {
                    out.insert(key, other.clone());
                }
            }
        }
    }
    let mut out = BTreeMap::new();
    walk("", v.as_object().expect("a config is an object"), &mut out);
    out
}

#[test]
fn the_configuration_reference_names_exactly_the_keys_the_code_reads() {
    let documented = reference_keys();
    let unique: BTreeSet<String> = documented.iter().cloned().collect();
    assert_eq!(
        unique.len(),
        documented.len(),
        "a key is listed twice in the reference: {documented:?}"
    );

    let dir = scratch("docs-keys");
    let config = load(
        &dir,
        "config.json",
        &json!({ "watch": { "root": "inbox" } }),
    )
    .expect("a minimal config loads");
    let read: BTreeSet<String> = config.keys.iter().cloned().collect();
    assert_eq!(read.len(), config.keys.len(), "the parser read a key twice");
    let undocumented: Vec<_> = read.difference(&unique).collect();
    let unknown: Vec<_> = unique.difference(&read).collect();
    assert!(
        undocumented.is_empty() && unknown.is_empty(),
        "the code reads keys the reference does not list: {undocumented:?}; \
         the reference lists keys the code does not read: {unknown:?}"
    );
}

#[test]
fn every_documented_key_is_accepted_and_an_undocumented_one_is_refused() {
    let dir = scratch("docs-accepted");
    // `null` means "not set", so every optional key takes it: what is left to refuse is the
    // name itself. watch.root is the one key that must be set.
    for key in reference_keys() {
        if key == "watch.root" {
            continue;
        }
        // A key of a `projects` entry, in an entry that has the required ones.
        if let Some(entry_key) = key.strip_prefix("projects[].") {
            let mut entry = json!({ "name": "p", "root": "inbox", "project_id": "x" });
            if entry.get(entry_key).is_none() {
                entry[entry_key] = Value::Null;
            }
            let config = json!({ "projects": [entry] });
            if let Err(e) = load(&dir, "config.json", &config) {
                panic!("the reference documents {key}, which the code refuses: {e}");
            }
            continue;
        }
        let mut config = nested(&key, Value::Null);
        if let Some(watch) = config.get_mut("watch") {
            watch["root"] = json!("inbox");
        } else {
            config["watch"] = json!({ "root": "inbox" });
        }
        if let Err(e) = load(&dir, "config.json", &config) {
            panic!("the reference documents {key}, which the code refuses: {e}");
        }
    }
    // The same check refuses a key that is not documented: the check can fail.
    let bogus = json!({ "watch": { "root": "inbox", "settle_seconds": null } });
    let e = load(&dir, "config.json", &bogus).expect_err("an undocumented key");
    assert!(e.contains("watch.settle_seconds: unknown key"), "{e}");
}

#[test]
fn the_shipped_config_json_loads_shows_every_key_with_its_default() {
    let shipped: Value = serde_json::from_str(&read("config.json")).expect("config.json is JSON");
    let shipped_keys = leaf_keys(&shipped);
    // config.json is the one-folder example: the keys of a `projects` entry are not in it.
    let documented: BTreeSet<String> = reference_keys()
        .into_iter()
        .filter(|k| !is_project_key(k))
        .collect();
    let listed: BTreeSet<String> = shipped_keys.keys().cloned().collect();
    assert_eq!(
        listed, documented,
        "config.json should hold every documented key, and only those"
    );

    // It loads as it is (its watch root is `inbox` beside it), and what it sets is what the
    // code does by default: the example never changes behaviour by being copied.
    let dir = scratch("docs-shipped");
    let from_file = load(&dir, "config.json", &shipped).expect("config.json loads");
    let defaults = load(
        &dir,
        "minimal.json",
        &json!({ "watch": { "root": "inbox" } }),
    )
    .unwrap();
    let same = |what: &str, a: String, b: String| {
        assert_eq!(a, b, "config.json's {what} differs from the code's default");
    };
    // The sections compared whole, by their Debug form.
    macro_rules! same_sections {
        ($($section:ident),*) => {$(
            same(
                stringify!($section),
                format!("{:?}", from_file.$section),
                format!("{:?}", defaults.$section),
            );
        )*};
    }
    same_sections!(watch, layout, upload, serve, tunnel, notify);
    same(
        "dashboard",
        from_file.dashboard.listen.to_string(),
        defaults.dashboard.listen.to_string(),
    );
    same(
        "state_dir",
        from_file.state_dir.display().to_string(),
        defaults.state_dir.display().to_string(),
    );
    same("log_level", from_file.log_level, defaults.log_level);
    let (f, d) = (&from_file.frameio, &defaults.frameio);
    same("frameio.scopes", f.scopes.clone(), d.scopes.clone());
    same("frameio.folder", f.folder.clone(), d.folder.clone());
    same(
        "frameio.upload",
        format!("{:?}", f.upload),
        format!("{:?}", d.upload),
    );
    same("frameio.api_base", f.api_base.clone(), d.api_base.clone());
    same("frameio.ims_base", f.ims_base.clone(), d.ims_base.clone());

    // And the reference's default column says the same, wherever it is one JSON value.
    for (keys, default) in reference_rows() {
        if keys.iter().any(|k| is_project_key(k)) {
            continue;
        }
        let spans = code_spans(&default);
        let Ok(value) = serde_json::from_str::<Value>(spans.first().map_or("", |s| s)) else {
            continue;
        };
        if spans.len() != 1 || !default.starts_with('`') {
            continue;
        }
        for key in keys {
            assert_eq!(
                shipped_keys[&key], value,
                "{key}: the reference says the default is {default}, config.json holds {}",
                shipped_keys[&key]
            );
        }
    }
}

#[test]
fn the_demo_config_uses_only_documented_keys() {
    let mut demo: Value =
        serde_json::from_str(&read("scripts/demo.config.json")).expect("the demo config is JSON");
    let documented: BTreeSet<String> = reference_keys().into_iter().collect();
    let mut keys: Vec<String> = Vec::new();
    // Inside a `projects` entry a key is `projects[].K`, and an object such as its `layout`
    // holds the top-level object's keys (`layout.pattern`).
    if let Some(Value::Array(entries)) = demo.as_object_mut().and_then(|m| m.remove("projects")) {
        for entry in &entries {
            for (k, v) in entry.as_object().expect("a projects entry is an object") {
                keys.push(format!("projects[].{k}"));
                if v.is_object() {
                    keys.extend(leaf_keys(&json!({ k: v })).into_keys());
                }
            }
        }
    }
    keys.extend(leaf_keys(&demo).into_keys());
    for key in keys {
        assert!(
            documented.contains(&key),
            "scripts/demo.config.json sets {key}, undocumented"
        );
    }
}

/// The demo's two projects, filled in as scripts/demo.sh does, send each file it drops to the
/// project and folder its arrival check expects (its `EXPECTED` list), and nothing else.
#[test]
fn the_demo_sends_each_dropped_file_to_the_project_and_folder_it_expects() {
    use postflow::layout::Destination;
    let script = read("scripts/demo.sh");
    let dir = scratch("demo-config");
    let filled = read("scripts/demo.config.json")
        .replace("@NIGHTFALL_PROJECT_ID@", "p-nightfall")
        .replace("@PROMO_PROJECT_ID@", "p-promo")
        .replace("@SERVE_PORT@", "18081")
        .replace("@DASHBOARD_PORT@", "18080")
        .replace("@SIM_URL@", "http://127.0.0.1:19090")
        .replace("@REDIRECT_URI@", "https://localhost/postflow/callback");
    let filled: Value = serde_json::from_str(&filled).unwrap();
    for entry in filled["projects"]
        .as_array()
        .expect("the demo has a projects list")
    {
        std::fs::create_dir_all(dir.join(entry["root"].as_str().unwrap())).unwrap();
    }
    let config = load(&dir, "config.json", &filled).expect("the demo config loads");
    let names: Vec<&str> = config.projects.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["nightfall", "promo"]);
    assert_eq!(
        config
            .projects
            .iter()
            .map(|p| p.project_id.as_str())
            .collect::<Vec<_>>(),
        ["p-nightfall", "p-promo"]
    );

    // "project:path under its Frame.io root", from the EXPECTED=( … ) list.
    let expected: BTreeSet<String> = script
        .split_once("\nEXPECTED=(\n")
        .expect("demo.sh has an EXPECTED list")
        .1
        .split_once("\n)")
        .unwrap()
        .0
        .lines()
        .map(|l| l.trim().to_string())
        .collect();
    // Every `drop PROJECT/PATH SIZE` and `slow_mov PROJECT/PATH MIB` of the script.
    let mut arrives = BTreeSet::new();
    for line in script.lines().map(str::trim) {
        let Some(rel) = line
            .strip_prefix("drop ")
            .or_else(|| line.strip_prefix("slow_mov "))
            .and_then(|rest| rest.split_whitespace().next())
        else {
            continue;
        };
        let Some((project, path)) = rel.split_once('/').filter(|_| !rel.contains('$')) else {
            continue;
        };
        let p = config
            .projects
            .iter()
            .find(|p| p.name == project)
            .unwrap_or_else(|| panic!("demo.sh drops {rel} into no project's folder"));
        let name = path.rsplit('/').next().unwrap();
        match p.layout().destination(path) {
            Destination::Folder(folder) if folder.is_empty() => {
                arrives.insert(format!("{project}:{name}"))
            }
            Destination::Folder(folder) => arrives.insert(format!("{project}:{folder}/{name}")),
            Destination::Skip(why) => panic!("{rel} would be skipped: {why}"),
        };
    }
    assert!(arrives.len() >= 10, "the drops were not found: {arrives:?}");
    assert_eq!(arrives, expected);
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------- links

/// The Markdown files a reader follows links through.
fn markdown_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = [
        "README.md",
        "CONTRIBUTING.md",
        "BENCHMARKS.md",
        "sim/README.md",
    ]
    .iter()
    .map(|f| Path::new(REPO).join(f))
    .collect();
    for entry in std::fs::read_dir(Path::new(REPO).join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            files.push(path);
        }
    }
    files
}

/// The text outside fenced code blocks, with inline code spans blanked out. A span may run
/// over a line break (not a blank line); it is closed by a run of as many backticks as opened
/// it, as in CommonMark, so ``a `b` c`` is one span.
fn prose(markdown: &str) -> Vec<String> {
    let mut fenced = false;
    let mut kept = String::new();
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced {
            kept.push_str(line);
        }
        kept.push('\n');
    }
    let b = kept.as_bytes();
    let run = |from: usize| b[from..].iter().take_while(|c| **c == b'`').count();
    let (mut out, mut copied, mut i) = (String::new(), 0, 0);
    while i < b.len() {
        if b[i] != b'`' {
            i += 1;
            continue;
        }
        let n = run(i);
        let mut j = i + n;
        let mut close = None;
        while j < b.len() && !(b[j] == b'\n' && b.get(j + 1) == Some(&b'\n')) {
            if b[j] == b'`' {
                let m = run(j);
                if m == n {
                    close = Some(j + m);
                    break;
                }
                j += m;
            } else {
                j += 1;
            }
        }
        match close {
            Some(end) => {
                out.push_str(&kept[copied..i]);
                out.extend(kept[i..end].chars().filter(|c| *c == '\n'));
                copied = end;
                i = end;
            }
            None => i += n,
        }
    }
    out.push_str(&kept[copied..]);
    out.lines().map(str::to_string).collect()
}

/// GitHub's anchors for a file's headings: lower case, punctuation dropped, spaces to `-`, a
/// repeated heading numbered.
fn anchors(markdown: &str) -> BTreeSet<String> {
    let mut fenced = false;
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = BTreeSet::new();
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        }
        if fenced || !line.starts_with('#') {
            continue;
        }
        let text = line.trim_start_matches('#').trim();
        let slug: String = text
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let n = seen.entry(slug.clone()).or_insert(0);
        out.insert(if *n == 0 {
            slug.clone()
        } else {
            format!("{slug}-{n}")
        });
        *n += 1;
    }
    out
}

/// The targets of `[text](target)` and `![alt](target)` links in `line`.
fn link_targets(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(i) = rest.find("](") {
        let after = &rest[i + 2..];
        let Some(end) = after.find(')') else { break };
        out.push(after[..end].to_string());
        rest = &after[end..];
    }
    out
}

#[test]
fn every_relative_link_and_anchor_in_the_docs_resolves() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in markdown_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        let name = file.strip_prefix(REPO).unwrap().display().to_string();
        for line in prose(&text) {
            for target in link_targets(&line) {
                if target.contains("://") || target.starts_with("mailto:") {
                    continue;
                }
                checked += 1;
                let (path, anchor) = match target.split_once('#') {
                    Some((p, a)) => (p, Some(a)),
                    None => (target.as_str(), None),
                };
                let dest = if path.is_empty() {
                    file.clone()
                } else {
                    file.parent().unwrap().join(path)
                };
                if !dest.exists() {
                    broken.push(format!("{name}: {target}: no such file"));
                    continue;
                }
                if let Some(anchor) = anchor {
                    let dest_text = std::fs::read_to_string(&dest).unwrap_or_default();
                    if !anchors(&dest_text).contains(anchor) {
                        broken.push(format!("{name}: {target}: no such heading"));
                    }
                }
            }
        }
    }
    assert!(
        checked > 50,
        "only {checked} links found: is the parser broken?"
    );
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn the_link_checker_finds_a_broken_anchor() {
    let text = "# Title\n\n## Two words: `code`\n\n```\n## not a heading\n```\n";
    let a = anchors(text);
    assert!(a.contains("title") && a.contains("two-words-code"), "{a:?}");
    assert!(!a.contains("not-a-heading"));
    assert_eq!(
        link_targets("see [a](b.md#c) and ![d](e.png), not `[f](g)`"),
        ["b.md#c", "e.png", "g"]
    );
    assert_eq!(prose("see `[f](g)` here"), ["see  here"]);
    assert_eq!(prose("a `x\ny` [l](m)"), ["a ", " [l](m)"]);
    assert_eq!(prose("``a `b` c`` [l](m)"), [" [l](m)"]);
    assert_eq!(prose("x\n```\n[l](m)\n```\ny"), ["x", "", "", "", "y"]);
}

#[test]
fn the_readme_is_a_front_door() {
    let readme = read("README.md");
    assert!(
        readme.len() < 15_000,
        "README.md is {} bytes; the manual lives in docs/ (limit 15 000)",
        readme.len()
    );
    // The first screen: what it is, how to install it, how to see it run.
    let first_screen: String = readme.lines().take(24).collect::<Vec<_>>().join("\n");
    for needed in ["](#install)", "make demo", "](#the-demo)"] {
        assert!(
            first_screen.contains(needed),
            "the README's first 24 lines should point at {needed}"
        );
    }
    // The commands CI runs are the ones the README and CONTRIBUTING name.
    let ci = read(".ci/run");
    let contributing = read("CONTRIBUTING.md");
    for command in [
        "make lint",
        "make test",
        "make test-windows",
        "make test-browser",
        "make soak-ci",
    ] {
        assert!(
            ci.lines().any(|l| l.trim() == command),
            ".ci/run does not run {command}"
        );
        assert!(
            contributing.contains(&format!("`{command}`")),
            "CONTRIBUTING.md does not name {command}"
        );
    }
    assert!(
        readme.contains("\nmake test "),
        "the README's demo section names `make test`"
    );
}
